"""Sharding the held-out images of a comparison stage across processes, and gathering results.

Evaluation, analysis and SAE activation generation run under ``accelerate launch`` as plain
loops (no Trainer): each process takes its own share of the images, computes per-image records,
and the main process gathers them, sorted by ``example_id``, so the files it writes are the
same as a single process's. Corrupted pixels depend only on ``(seed, example_id, corruption,
severity)`` (``seeding.image_seed``), so the paired design holds on any number of processes.

Layer 1: imports accelerate and datasets, nothing above the leaf modules.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object as _accelerate_gather_object
from datasets import Features, IterableDataset
from datasets.distributed import split_dataset_by_node
from datasets.io.generator import GeneratorDatasetInputStream

logger = logging.getLogger(__name__)

EXAMPLE_IDS = "example_ids"
# Stream operations whose output depends on the order examples are read in: a stream holding
# one of them is read by a single reader and split example by example (see shard_for_process).
_ORDER_DEPENDENT = ("Take", "Skip", "BufferShuffled", "Step")


def process_state() -> PartialState:
    """The accelerate state of this process (one process when not launched by accelerate).

    Without a GPU, ``accelerate launch --multi_gpu`` starts the processes but only ``cpu=True``
    joins them into one gloo group; otherwise each would run alone.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and not _CLOSE_AT_EXIT:
        # A process that exits with its gloo group still open can die in C++ teardown
        # ("terminate called without an active exception") after its work is done.
        atexit.register(_close_process_group)
        _CLOSE_AT_EXIT.append(True)
    return state


_CLOSE_AT_EXIT: list[bool] = []


def _close_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard_for_process(dataset: Any, state: PartialState | None = None) -> Any:
    """This process's share of ``dataset``: non-empty, disjoint from the others', and together
    complete (every process must hold at least one example for "non-empty").

    Map-style: a contiguous block of rows (sizes differ by at most one), so one process reads
    what a single-process run reads, in the same order. Streams: whole shards (data sources)
    per process when there are at least as many shards as processes, whether or not they
    divide evenly (a process may get one shard more); otherwise one example in
    ``num_processes``. A stream whose content depends on its read order (``take``, ``skip``,
    ``shuffle``: e.g. a ``max_eval_examples`` subset) is first made a single-reader stream and
    then split example by example, so every process count (and DataLoader worker count) sees
    exactly the single-process subset.
    """
    state = state or process_state()
    world, rank = state.num_processes, state.process_index
    if world == 1:
        return dataset
    if isinstance(dataset, IterableDataset):
        if order_dependent(dataset):
            return split_dataset_by_node(
                single_reader(dataset), rank=rank, world_size=world, strategy="examples"
            )
        strategy = "shards" if dataset.n_shards >= world else "examples"
        if strategy == "shards" and dataset.n_shards % world:
            logger.info(
                "%d stream shards over %d processes: some processes read one shard more.",
                dataset.n_shards,
                world,
            )
        return split_dataset_by_node(dataset, rank=rank, world_size=world, strategy=strategy)
    if len(dataset) < world:
        logger.warning(
            "%d examples for %d processes: %d processes get none.",
            len(dataset),
            world,
            world - len(dataset),
        )
    # Contiguous blocks whose sizes differ by at most one (`Dataset.shard`'s rule, which fails
    # instead of giving an empty block when there are fewer rows than processes).
    size, extra = divmod(len(dataset), world)
    start, length = rank * size + min(rank, extra), size + (rank < extra)
    return dataset.select(range(start, start + length) if length else [])


def order_dependent(stream: IterableDataset) -> bool:
    """Whether a stream's examples depend on its read order (shuffled, taken, skipped).

    Looks through the stream's pipeline (``datasets`` internals); when it cannot, answers True,
    the exact (slower) choice.
    """
    if getattr(stream, "_shuffling", None) is not None:
        return True
    node = getattr(stream, "_ex_iterable", None)
    if node is None:
        return True
    while node is not None:
        if type(node).__name__.startswith(_ORDER_DEPENDENT):
            return True
        node = getattr(node, "ex_iterable", None)
    return False


def single_reader(stream: IterableDataset) -> IterableDataset:
    """``stream`` as one shard read in full by whichever worker or process holds it.

    ``datasets`` splits a stream's shards among DataLoader workers (and re-seeds each worker's
    shuffle buffer), so a shuffled or taken stream yields different examples with a different
    number of workers; this wrapper reads ``stream`` through ``.iter`` (which never splits), so
    its content is the single-process one everywhere.
    """
    return stream_from_generator(_read_all, {"sources": [stream]}, stream.features)


def stream_from_generator(
    generator: Any, gen_kwargs: Mapping[str, Any], features: Features
) -> IterableDataset:
    """``IterableDataset.from_generator`` without hashing ``gen_kwargs`` (which pickles every
    dataset passed in, seconds for an in-memory table); list arguments are its shards."""
    name = getattr(generator, "__qualname__", "generator")
    return GeneratorDatasetInputStream(
        generator=generator,
        features=features,
        gen_kwargs=dict(gen_kwargs),
        streaming=True,
        fingerprint=f"hf_vitrobust-{name}",
    ).read()


def _read_all(sources: Sequence[IterableDataset]) -> Iterator[dict[str, Any]]:
    for source in sources:
        for batch in source.iter(batch_size=64):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                yield dict(zip(columns, values))


def gather_object(obj: Any, state: Any = None) -> list[Any]:
    """``obj`` from every process, in process order (a list of one without accelerate).

    Every process must call it. ``state``: an accelerate state or ``Accelerator``.
    """
    state = state or process_state()
    if state.num_processes == 1:
        return [obj]
    return list(_accelerate_gather_object([obj]))


def gather_records(
    records: Mapping[str, np.ndarray], state: PartialState | None = None
) -> dict[str, np.ndarray] | None:
    """Per-image arrays of every process, concatenated and sorted by ``example_ids``.

    ``records`` maps names to arrays whose first axis is the image; it must hold
    ``example_ids``. Returns the gathered dict on the main process and ``None`` elsewhere
    (every process must call it). Duplicate example ids (a shard read twice) are an error.
    """
    state = state or process_state()
    if EXAMPLE_IDS not in records:
        raise ValueError(f"records must hold {EXAMPLE_IDS!r} to be gathered in a fixed order.")
    local = {k: np.asarray(v) for k, v in records.items()}
    n = len(local[EXAMPLE_IDS])
    for key, value in local.items():
        if len(value) != n:
            raise ValueError(f"records[{key!r}] has {len(value)} rows, example_ids has {n}.")
    parts = gather_object(local, state)
    if not state.is_main_process:
        return None
    # A process with no images may hold arrays of another shape (e.g. (0,) for (0, d)).
    filled = [p for p in parts if len(p[EXAMPLE_IDS])] or parts[:1]
    merged = {k: np.concatenate([p[k] for p in filled]) for k in local}
    order = np.argsort(merged[EXAMPLE_IDS], kind="stable")
    ids = merged[EXAMPLE_IDS][order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError("the same example id was processed twice: shards overlap.")
    return {k: v[order] for k, v in merged.items()}


def gather_counts(counts: Mapping[str, int], state: PartialState | None = None) -> dict[str, int]:
    """Integer counters (e.g. bad images) summed over processes; the same on every process."""
    state = state or process_state()
    if state.num_processes == 1:
        return dict(counts)
    total: dict[str, int] = {}
    for part in gather_object(dict(counts), state):
        for key, value in part.items():
            total[key] = total.get(key, 0) + int(value)
    return total


__all__ = [
    "EXAMPLE_IDS",
    "gather_counts",
    "gather_object",
    "gather_records",
    "order_dependent",
    "process_state",
    "shard_for_process",
    "single_reader",
    "stream_from_generator",
]
