"""The corruption grid: which images every model sees, and the per-image records it produces.

Paired by design: each batch is decoded once (kept in memory when it fits) and corrupted once by
``corruptions.corrupt_examples`` (per-image seed ``seeding.image_seed(seed, example_id,
corruption, severity)``, the same images analysis and the SAE stage see), and every model sees
those identical pixels, normalised its own way. Labels and input geometry are checked for every
model before any image is decoded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_vitrobust.configs import ModelArguments
from hf_vitrobust.constants import CLEAN, SEVERITIES
from hf_vitrobust.corruptions import check_severity, corrupt_examples, resolve_corruptions
from hf_vitrobust.data import (
    BadImageError,
    BadImageTracker,
    ProcessorSpec,
    check_labels,
    decode_image,
    label_names,
)
from hf_vitrobust.evaluation.metrics import per_image_outputs
from hf_vitrobust.evaluation.store import CellRecord, CellStore
from hf_vitrobust.models import load_model_and_processor

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Grid cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One grid point: a corruption at a severity, or the clean images (severity 0)."""

    corruption: str
    severity: int = 0

    @property
    def key(self) -> str:
        return CLEAN if self.corruption == CLEAN else f"{self.corruption}@{self.severity}"

    @classmethod
    def from_key(cls, key: str) -> Cell:
        if key == CLEAN:
            return cls(CLEAN, 0)
        name, sev = key.rsplit("@", 1)
        return cls(name, int(sev))


def build_grid(
    corruptions: str | Sequence[str] = "all",
    severities: Sequence[int] = SEVERITIES,
    include_clean: bool = True,
) -> list[Cell]:
    """Clean first, then every corruption × severity (corruptions: family names or names)."""
    if isinstance(corruptions, str):
        names = list(resolve_corruptions(corruptions))
    else:
        names = []
        for spec in corruptions:
            for name in resolve_corruptions(spec):
                if name not in names:
                    names.append(name)
    sevs = [check_severity(s) for s in severities]
    cells = [Cell(CLEAN, 0)] if include_clean else []
    cells += [Cell(name, s) for name in names for s in sevs]
    if not cells:
        raise ValueError("The evaluation grid is empty: give corruptions/severities or clean.")
    return cells


# --------------------------------------------------------------------------------------------
# Models and their labels
# --------------------------------------------------------------------------------------------


def _model_key(name: str) -> str:
    """A file-safe, unique key of a model name: its folder name (or Hub id) + a short hash."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name.rstrip("/")).name or name).strip("-.")
    return f"{base[:40] or 'model'}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


@dataclass
class EvalModel:
    """A model under evaluation: its name (Hub id or path), the model, and its processor.

    `key` names its cells and its rows in results.json; `label` is its display name (default:
    the folder name or Hub id).
    """

    name: str
    model: Any
    processor: Any
    key: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = _model_key(self.name)
        if not self.label:
            self.label = Path(self.name.rstrip("/")).name or self.name

    @property
    def robustness(self) -> dict[str, Any] | None:
        value = getattr(self.model.config, "robustness", None)
        return dict(value) if isinstance(value, dict) else None

    def seen_corruptions(self) -> tuple[str, ...]:
        """Corruptions this model was fine-tuned on (`config.robustness`), () for a base model."""
        rob = self.robustness
        if not rob:
            return ()
        if rob.get("train_corruptions"):
            return tuple(rob["train_corruptions"])
        if rob.get("train_family"):  # checkpoints that recorded only the family name
            return tuple(resolve_corruptions(rob["train_family"]))
        return ()


def load_eval_models(
    base_model: str,
    finetuned_models: Sequence[str] = (),
    finetuned_names: Sequence[str] = (),
    *,
    attn_implementation: str = "sdpa",
    device: str | None = None,
) -> list[EvalModel]:
    """Load the base model, then each fine-tuned one, as saved (own head and id2label).

    Returns them base first (the order `evaluate_robustness` expects). `finetuned_names`, when
    given, are the display labels of the fine-tuned models.
    """
    names = [base_model, *finetuned_models]
    if not base_model:
        raise ValueError("No base model given: set base_model (and finetuned_models).")
    if len(set(names)) != len(names):
        raise ValueError(f"Models are listed more than once: {names}.")
    if finetuned_names and len(finetuned_names) != len(finetuned_models):
        raise ValueError(
            f"finetuned_names has {len(finetuned_names)} names for "
            f"{len(finetuned_models)} finetuned_models."
        )
    labels = ["", *finetuned_names] if finetuned_names else [""] * len(names)
    out = []
    for name, label in zip(names, labels):
        model, processor = load_model_and_processor(
            ModelArguments(model_name_or_path=name, attn_implementation=attn_implementation)
        )
        model = model.eval().to(resolve_device(device))
        out.append(EvalModel(name=name, model=model, processor=processor, label=label))
    return out


def _model_label_names(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(int(config.num_labels))]


def label_permutation(dataset_labels: Sequence[str], config: Any) -> np.ndarray | None:
    """Column order that maps a model's logits onto the dataset's labels; None when identical.

    The class count must match, and real class names must match the dataset's: in the same
    order (None), or in another order (a permutation by name, logged). Anything else raises
    a ValueError before any work is done.
    """
    names = list(dataset_labels)
    try:
        check_labels(names, config)
        return None
    except ValueError:
        model_names = _model_label_names(config)
        if len(model_names) != len(names) or sorted(model_names) != sorted(names):
            raise
        if len(set(model_names)) != len(model_names):
            raise
    perm = np.array([model_names.index(n) for n in names], dtype=np.int64)
    logger.warning(
        "The model's id2label lists the dataset's classes in another order; logits are mapped "
        "by class name (model index %s for dataset labels 0..%d).",
        perm.tolist()[:10],
        len(names) - 1,
    )
    return perm


def resolve_device(device: str | None) -> str:
    """`device`, or the GPU when there is one for None / "auto"."""
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------
# Clean images, decoded once
# --------------------------------------------------------------------------------------------


class _CleanImages:
    """Decoded, resized uint8 images with their ids and labels, batch by batch.

    Decoding happens once: kept in memory when the images fit in `cache_bytes`, else re-read
    from the dataset for every cell (same order, same images).
    """

    def __init__(
        self,
        dataset: Any,
        spec: Any,
        batch_size: int,
        bad_images: Any,
        cache_bytes: int,
    ) -> None:
        self.dataset = dataset
        self.spec = spec
        self.batch_size = int(batch_size)
        self.bad_images = bad_images
        self.cache_bytes = int(cache_bytes)
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._cache_failed = False
        self.num_batches: int | None = None
        try:
            self.num_batches = math.ceil(len(dataset) / self.batch_size)
        except TypeError:
            pass

    def _decode(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for batch in self.dataset.iter(batch_size=self.batch_size):
            images, ids, labels, bad = [], [], [], []
            for value, eid, label in zip(batch["image"], batch["example_id"], batch["label"]):
                try:
                    images.append(self.spec.resize_uint8(decode_image(value)))
                except BadImageError as error:
                    logger.warning("Skipping example %s: %s", eid, error)
                    bad.append(int(eid))
                    continue
                ids.append(int(eid))
                labels.append(int(label))
            self.bad_images.record(num_ok=len(images), bad_ids=bad)
            self.bad_images.check()
            if images:
                yield np.stack(images), np.asarray(ids, np.int64), np.asarray(labels, np.int64)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._cache is not None:
            yield from self._cache
            return
        keep: list | None = [] if not self._cache_failed else None
        size = 0
        for item in self._decode():
            if keep is not None:
                size += item[0].nbytes
                if size > self.cache_bytes:
                    keep, self._cache_failed = None, True
                else:
                    keep.append(item)
            yield item
        if keep is not None:
            self._cache = keep
            self.num_batches = len(keep)


# --------------------------------------------------------------------------------------------
# The grid run
# --------------------------------------------------------------------------------------------


def _geometry(spec: ProcessorSpec) -> tuple:
    return (spec.size, spec.resample, spec.do_resize, spec.shortest_edge, spec.crop_size)


@dataclass
class _Runner:
    """The models of one grid run with what each needs per batch (label map, normaliser)."""

    models: Sequence[EvalModel]
    perms: list[np.ndarray | None]
    specs: list[ProcessorSpec]
    dtypes: list[torch.dtype]
    device: str

    @classmethod
    def prepare(cls, models: Sequence[EvalModel], dataset: Any, device: str | None) -> _Runner:
        """Check keys, labels and input geometry of every model; move them to the device."""
        if not models:
            raise ValueError("No models to evaluate.")
        keys = [m.key for m in models]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Model keys must be unique; got {keys}.")
        names = label_names(dataset)
        perms = [label_permutation(names, m.model.config) for m in models]
        specs = [ProcessorSpec.from_processor(m.processor) for m in models]
        if len({_geometry(s) for s in specs}) > 1:
            sizes = {m.name: s.size for m, s in zip(models, specs)}
            raise ValueError(
                "The models resize images differently, so they cannot see identical corrupted "
                f"images ({sizes}). Evaluate models with the same input size and resizing together."
            )
        dev = resolve_device(device)
        for m in models:
            m.model.eval().to(dev)
            if getattr(m.model.config, "_attn_implementation", "sdpa") != "sdpa":
                # Evaluation only needs logits: sdpa is the fast path.
                m.model.set_attn_implementation("sdpa")
        dtypes = [next(m.model.parameters()).dtype for m in models]
        return cls(models, perms, specs, dtypes, dev)

    def run_cell(
        self, clean: _CleanImages, cell: Cell, pending: Sequence[int], seed: int
    ) -> dict[int, CellRecord]:
        """Every image of `cell`, corrupted once and fed to the models `pending` (indices)."""
        parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in pending}
        for images, ids, labels in clean:
            if cell.corruption != CLEAN:
                images = corrupt_examples(images, ids, cell.corruption, cell.severity, seed)
            # One transfer per batch; each model then normalises the same pixels its own way.
            x01 = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            for i in pending:
                with torch.inference_mode():
                    pixels = self.specs[i].normalize(x01).to(self.dtypes[i])
                    logits = self.models[i].model(pixel_values=pixels).logits.float()
                    if self.perms[i] is not None:
                        logits = logits[:, torch.as_tensor(self.perms[i], device=logits.device)]
                    out = per_image_outputs(logits, labels)
                out.update(example_ids=ids, labels=labels)
                parts[i].append(out)
        if not all(parts.values()):
            raise ValueError("The dataset yielded no decodable images.")
        return {i: CellRecord.concat(parts[i]) for i in pending}


def _check_pairing(records: dict[str, dict[str, CellRecord]], keys: Sequence[str]) -> None:
    """All models must be scored on the same images in the same order."""
    ref = next(iter(records[keys[0]].values()))
    for k in keys:
        for cell_key, rec in records[k].items():
            if not np.array_equal(rec.example_ids, ref.example_ids):
                raise RuntimeError(
                    f"Cell {cell_key} of {k} holds other images than the rest; the stored cells "
                    "come from a different dataset. Rerun with --resume false."
                )


def run_grid(
    models: Sequence[EvalModel],
    dataset: Any,
    cells: Sequence[Cell],
    *,
    batch_size: int = 128,
    seed: int = 0,
    device: str | None = None,
    store: CellStore | None = None,
    max_bad_fraction: float = 0.01,
    cache_bytes: int = 2 * 1024**3,
    progress: bool = True,
) -> tuple[dict[str, dict[str, CellRecord]], dict[str, Any]]:
    """Evaluate every model on every cell; returns (records[model key][cell key], bad-image counts).

    Labels and input geometry are checked for every model before any image is decoded. Each
    batch is corrupted once and fed to all models still missing that cell; finished cells are
    read from `store` instead.
    """
    runner = _Runner.prepare(models, dataset, device)
    keys = [m.key for m in models]
    bad_images = BadImageTracker(max_bad_fraction=max_bad_fraction)
    clean = _CleanImages(dataset, runner.specs[0], batch_size, bad_images, cache_bytes)
    records: dict[str, dict[str, CellRecord]] = {k: {} for k in keys}
    todo: list[tuple[Cell, list[int]]] = []
    for cell in cells:
        pending = []
        for i, k in enumerate(keys):
            rec = store.get(k, cell.key) if store is not None else None
            if rec is not None:
                records[k][cell.key] = rec
            else:
                pending.append(i)
        if pending:
            todo.append((cell, pending))
    if len(todo) < len(cells):
        logger.info("Resuming: %d of %d cells already done.", len(cells) - len(todo), len(cells))
    bar = tqdm(total=len(todo), desc="evaluation grid", unit="cell", disable=not progress)
    for cell, pending in todo:
        bar.set_postfix_str(cell.key)
        for i, rec in runner.run_cell(clean, cell, pending, seed).items():
            records[keys[i]][cell.key] = rec
            if store is not None:
                store.put(keys[i], cell.key, rec)
        bar.update(1)
    bar.close()
    _check_pairing(records, keys)
    bad = bad_images.finish() if bad_images.seen else {"seen": 0, "bad": 0}
    return records, bad


__all__ = [
    "Cell",
    "EvalModel",
    "build_grid",
    "label_permutation",
    "load_eval_models",
    "resolve_device",
    "run_grid",
]
