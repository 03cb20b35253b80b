"""Which examples a run uses: seeded, class-stratified subsets, shuffled streams, and the record.

``max_train_examples`` / ``max_eval_examples`` never take the first N rows (an imagefolder is
sorted by class, so the first N rows are a few classes):

- map-style data: a seeded random sample, stratified by class: each class gets its share of N
  by largest remainder (ties broken by the seed), its examples drawn without replacement; the
  rows keep their dataset order and their ``example_id``;
- streams: the first N examples out of a seeded shuffle buffer
  (``IterableDataset.shuffle(seed, buffer_size)``, which also shuffles the shard order), read by
  a single reader so that the subset does not depend on DataLoader workers or processes.

Streamed training data is always shuffled through the buffer (``shuffle_buffer_size``, 0 = off)
and reshuffled every epoch by ``set_epoch`` (the Trainer calls it through accelerate's
DataLoader). ``selection_record`` describes the selection for a stage's outputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_vitrobust.distributed import single_reader

# Selection rules, as recorded in stage outputs.
ALL = "all"
STRATIFIED = "stratified_random"
STREAM_ALL = "stream_all"
STREAM_SHUFFLED = "stream_shuffled"
STREAM_FIRST_N = "stream_first_n"
STREAM_FIRST_N_SHUFFLED = "stream_first_n_after_shuffle"


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded, class-stratified random sample of ``n`` of ``labels``.

    Class ``c`` with ``n_c`` of the ``N`` rows gets ``floor(n * n_c / N)`` rows, and the rows
    left over go to the largest remainders (ties in seeded random order).
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    if n <= 0:
        return np.empty(0, np.int64)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    left = n - int(quota.sum())
    if left:
        tie_break = rng.random(len(classes))
        order = np.lexsort((tie_break, -(exact - quota)))  # largest remainder first
        quota[order[:left]] += 1
    chosen = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
        if q
    ]
    return np.sort(np.concatenate(chosen))


def select_rows(dataset: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded class-stratified sample of ``n`` rows (all rows when ``n`` is None or >= len)."""
    if n is None or n >= len(dataset):
        return dataset
    labels = np.asarray(dataset.select_columns(["label"]).with_format("numpy")["label"])
    return dataset.select(stratified_indices(labels, n, seed))


def select_stream(
    stream: datasets.IterableDataset,
    n: int | None,
    seed: int,
    buffer_size: int,
    shuffle: bool,
) -> datasets.IterableDataset:
    """Shuffle a stream through a buffer (``shuffle``, or when taking ``n``) and take ``n``.

    A taken subset is made a single-reader stream (``distributed.single_reader``): its examples
    are then the same with any number of DataLoader workers or processes. A shuffled training
    stream keeps its shards (parallel workers) and is reshuffled by ``set_epoch``.
    """
    if buffer_size > 0 and (shuffle or n is not None):
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    if n is None:
        return stream
    return single_reader(stream.take(n))


def source_label(dataset_name: str) -> str:
    """The dataset as outputs name it: a Hub id as is, a local path as ``local:<folder name>``
    (never an absolute path, which names someone's disk)."""
    text = str(dataset_name)
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")):
        return f"local:{path.resolve().name}"
    return text


def _rule(dataset: Any, requested: int | None, which: str, buffer_size: int) -> str:
    if isinstance(dataset, datasets.IterableDataset):
        shuffled = buffer_size > 0 and (which == "train" or requested is not None)
        if requested is None:
            return STREAM_SHUFFLED if shuffled else STREAM_ALL
        return STREAM_FIRST_N_SHUFFLED if shuffled else STREAM_FIRST_N
    if requested is not None and len(dataset) >= requested:
        return STRATIFIED
    return ALL


_DESCRIPTIONS = {
    ALL: "every example of the split",
    STRATIFIED: "a class-stratified random sample of {n} examples (seed {seed})",
    STREAM_ALL: "every example of the stream, in stream order",
    STREAM_SHUFFLED: "every example of the stream through a shuffle buffer of {buffer} (seed "
    "{seed}, reshuffled every epoch)",
    STREAM_FIRST_N: "the first {n} examples of the stream, in stream order (no shuffle buffer: "
    "a class-sorted source gives few classes)",
    STREAM_FIRST_N_SHUFFLED: "the first {n} examples out of a shuffle buffer of {buffer} (seed "
    "{seed})",
}


def selection_record(dataset: Any, data_args: Any, which: str) -> dict[str, Any]:
    """How ``dataset`` (as ``load_dataset_split(data_args, which)`` returned it) was selected.

    Keys: ``dataset`` (``source_label``), ``split``, ``which``, ``rule`` (one of this module's
    rule names), ``description`` (a sentence), ``seed``, ``requested`` (``max_<which>_examples``),
    ``n`` (examples selected; None for a stream without a limit), ``per_class`` ({class name:
    count}; None for streams, which are not read to count), ``shuffle_buffer_size`` (streams),
    ``example_ids_sha256`` (sha256 of the sorted int64 example ids; None for streams).
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', got {which!r}.")
    requested = getattr(data_args, f"max_{which}_examples")
    buffer = int(data_args.shuffle_buffer_size)
    seed = int(data_args.subset_seed)
    rule = _rule(dataset, requested, which, buffer)
    record: dict[str, Any] = {
        "dataset": source_label(data_args.dataset_name),
        "split": data_args.train_split if which == "train" else data_args.eval_split,
        "which": which,
        "rule": rule,
        "seed": seed,
        "requested": requested,
        "n": None,
        "per_class": None,
        "shuffle_buffer_size": None,
        "example_ids_sha256": None,
    }
    if isinstance(dataset, datasets.IterableDataset):
        record["n"] = requested
        record["shuffle_buffer_size"] = buffer if rule.endswith(("shuffled", "shuffle")) else 0
    else:
        columns = dataset.select_columns(["label", "example_id"]).with_format("numpy")
        labels, ids = np.asarray(columns["label"]), np.asarray(columns["example_id"], np.int64)
        names = dataset.features["label"].names
        counts = np.bincount(labels, minlength=len(names)) if len(labels) else [0] * len(names)
        record["n"] = len(dataset)
        record["per_class"] = {name: int(c) for name, c in zip(names, counts)}
        record["example_ids_sha256"] = hashlib.sha256(np.sort(ids).tobytes()).hexdigest()
    record["description"] = _DESCRIPTIONS[rule].format(n=record["n"], seed=seed, buffer=buffer)
    return record


__all__ = [
    "ALL",
    "STRATIFIED",
    "STREAM_ALL",
    "STREAM_FIRST_N",
    "STREAM_FIRST_N_SHUFFLED",
    "STREAM_SHUFFLED",
    "select_rows",
    "select_stream",
    "selection_record",
    "source_label",
    "stratified_indices",
]
