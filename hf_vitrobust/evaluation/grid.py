"""The corruption grid: which images every model sees, and the per-image records it produces.

Paired by design: each batch is decoded once (kept in memory when it fits) and corrupted once by
``corruptions.corrupt_examples`` (per-image seed ``seeding.image_seed(seed, example_id,
corruption, severity)``, the same images analysis and the SAE stage see), and every model sees
those identical pixels, normalised its own way. Labels and input geometry are checked for every
model before any image is decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from hf_vitrobust.configs import name_list
from hf_vitrobust.constants import CLEAN, SEVERITIES
from hf_vitrobust.corruptions import (
    REGISTRY_VERSION,
    check_severities,
    corrupt_examples,
    resolve_corruptions,
)
from hf_vitrobust.data import BadImageTracker, ProcessorSpec, label_names
from hf_vitrobust.data.bad_images import MAX_DETAILS
from hf_vitrobust.distributed import gather_records, process_state, shard_for_process
from hf_vitrobust.evaluation.decoded import DecodedImages
from hf_vitrobust.evaluation.identity import (
    cell_fingerprint,
    data_fingerprint,
    example_ids_digest,
    model_fingerprint,
)
from hf_vitrobust.evaluation.metrics import per_image_outputs
from hf_vitrobust.evaluation.models import (
    EvalModel,
    assign_keys,
    label_permutation,
    resolve_device,
)
from hf_vitrobust.evaluation.store import CellRecord, CellStore

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
    specs = name_list(corruptions)
    names = list(resolve_corruptions(specs)) if specs else []
    sevs = check_severities(severities) if names else []
    cells = [Cell(CLEAN, 0)] if include_clean else []
    cells += [Cell(name, s) for name in names for s in sevs]
    if not cells:
        raise ValueError("The evaluation grid is empty: give corruptions/severities or clean.")
    return cells


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
    fingerprints: list[str]
    device: str

    @classmethod
    def prepare(cls, models: Sequence[EvalModel], dataset: Any, device: str | None) -> _Runner:
        """Check keys, labels and input geometry of every model; fingerprint them; move them
        to the device."""
        assign_keys(models)
        names = label_names(dataset)
        perms = [label_permutation(names, m.model.config) for m in models]
        specs = [ProcessorSpec.from_processor(m.processor) for m in models]
        if len({_geometry(s) for s in specs}) > 1:
            sizes = {m.name: s.size for m, s in zip(models, specs)}
            raise ValueError(
                "The models resize images differently, so they cannot see identical corrupted "
                f"images ({sizes}). Evaluate models with the same input size and resizing together."
            )
        fingerprints = [model_fingerprint(m.model, m.processor) for m in models]
        dev = resolve_device(device)
        for m in models:
            m.model.eval().to(dev)
            if getattr(m.model.config, "_attn_implementation", "sdpa") != "sdpa":
                # Evaluation only needs logits: sdpa is the fast path.
                m.model.set_attn_implementation("sdpa")
        dtypes = [next(m.model.parameters()).dtype for m in models]
        return cls(models, perms, specs, dtypes, fingerprints, dev)

    def run_cell(
        self, images: DecodedImages, cell: Cell, pending: Sequence[int], seed: int
    ) -> dict[int, CellRecord]:
        """Every image of `cell`, corrupted once and fed to the models `pending` (indices)."""
        parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in pending}
        for batch, ids, labels in images:
            if cell.corruption != CLEAN:
                batch = corrupt_examples(batch, ids, cell.corruption, cell.severity, seed)
            # One transfer per batch; each model then normalises the same pixels its own way.
            x01 = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            for i in pending:
                with torch.inference_mode():
                    pixels = self.specs[i].normalize(x01).to(self.dtypes[i])
                    logits = self.models[i].model(pixel_values=pixels).logits.float()
                    if self.perms[i] is not None:
                        logits = logits[:, torch.as_tensor(self.perms[i], device=logits.device)]
                    out = per_image_outputs(logits, labels)
                out.update(example_ids=ids, labels=labels)
                parts[i].append(out)
        return {i: CellRecord.concat(parts[i]) for i in pending}


def _check_pairing(records: dict[str, dict[str, CellRecord]], keys: Sequence[str]) -> None:
    """All models must be scored on the same images in the same order."""
    ref = next(iter(records[keys[0]].values()))
    if ref.example_ids.size == 0:
        raise ValueError("The dataset yielded no decodable images.")
    for k in keys:
        for cell_key, rec in records[k].items():
            if not np.array_equal(rec.example_ids, ref.example_ids):
                raise RuntimeError(
                    f"Cell {cell_key} of {k} holds other images than the rest although their "
                    "fingerprints match; rerun with --resume false."
                )


@dataclass
class GridResult:
    """What `run_grid` returns on the main process."""

    records: dict[str, dict[str, CellRecord]]  # [model key][cell key]
    bad_images: dict[str, Any]  # BadImageTracker.summary() of the evaluated images
    fingerprints: dict[str, str]  # model key -> model_fingerprint
    data_fingerprint: str
    computed: list[tuple[str, str]] = field(default_factory=list)  # (model, cell) run now


def _stored_cells(
    store: CellStore | None, keys: Sequence[str], cells: Sequence[Cell], cell_fp: dict
) -> tuple[dict[str, dict[str, CellRecord]], list[tuple[Cell, list[int]]]]:
    """(records of the reusable stored cells, [(cell, indices of the models still missing it)])."""
    records: dict[str, dict[str, CellRecord]] = {k: {} for k in keys}
    todo: list[tuple[Cell, list[int]]] = []
    for cell in cells:
        pending = []
        for i, k in enumerate(keys):
            rec = store.get(k, cell.key, cell_fp[(k, cell.key)]) if store is not None else None
            if rec is not None:
                records[k][cell.key] = rec
            else:
                pending.append(i)
        if pending:
            todo.append((cell, pending))
    if len(todo) < len(cells):
        logger.info("Resuming: %d of %d cells already done.", len(cells) - len(todo), len(cells))
    return records, todo


def _count_bad_images(
    images: DecodedImages,
    store: CellStore | None,
    data_fp: str,
    state: PartialState,
) -> dict[str, Any]:
    """The bad images of the whole evaluation, the same on every process; stops every process
    at once above the limit (after the cells are stored).

    From this run's pass over the images when there was one (joined over processes), else from
    the state stored with the cells, else from a decoding pass without models."""
    tracker = images.tracker
    stored = store.get_bad_images(data_fp) if store is not None else None
    if not images.counted and stored is not None:
        tracker.load_state_dict(stored)
    else:
        images.count_only()
        if state.num_processes > 1:
            logger.info(
                "Process %d of %d: %d images in its shard.",
                state.process_index + 1,
                state.num_processes,
                images.images_in_shard,
            )
        tracker.sync(state)
        if store is not None:
            store.put_bad_images(data_fp, tracker.state_dict())
    summary = tracker.finish() if state.is_main_process else tracker.summary()
    tracker.check(final=True)
    return summary


def run_grid(
    models: Sequence[EvalModel],
    dataset: Any,
    cells: Sequence[Cell],
    *,
    batch_size: int = 128,
    seed: int = 0,
    device: str | None = None,
    store: CellStore | None = None,
    data_fp: str | None = None,
    max_bad_fraction: float = 0.01,
    cache_bytes: int = 2 * 1024**3,
    progress: bool = True,
) -> GridResult | None:
    """Evaluate every model on every cell; returns a `GridResult` on the main process, None on
    the others.

    Labels and input geometry are checked for every model before any image is decoded. Under
    `accelerate launch` each process scores its shard of the images (`shard_for_process`) and
    the main process gathers the per-image records, sorted by example id, so the records equal
    a single process's. Each batch is corrupted once and fed to all models still missing that
    cell; cells stored with the same fingerprint (`data_fp`: the images, see `identity`) are
    read from `store` instead, and only the main process writes. Undecodable images are
    counted once each; above `max_bad_fraction` every process stops (`TooManyBadImagesError`).
    """
    state = process_state()
    runner = _Runner.prepare(models, dataset, device)
    keys = [m.key for m in models]
    names = label_names(dataset)
    if data_fp is None:
        data_fp = data_fingerprint({}, names, example_ids_digest(dataset))
    images = DecodedImages(
        shard_for_process(dataset, state),
        runner.specs[0],
        batch_size,
        BadImageTracker(max_bad_fraction=max_bad_fraction, max_listed=MAX_DETAILS),
        cache_bytes,
        num_labels=len(names),
        check_each_batch=state.num_processes == 1,
    )
    cell_fp = {
        (k, c.key): cell_fingerprint(fp, data_fp, c.key, seed, REGISTRY_VERSION)
        for k, fp in zip(keys, runner.fingerprints)
        for c in cells
    }
    records, todo = _stored_cells(store, keys, cells, cell_fp)
    show = progress and state.is_main_process
    computed = []
    for cell, pending in tqdm(todo, desc="evaluation grid", unit="cell", disable=not show):
        for i, rec in runner.run_cell(images, cell, pending, seed).items():
            merged = gather_records(rec.as_dict(), state)
            if merged is not None:
                rec = CellRecord(**merged)
                records[keys[i]][cell.key] = rec
                computed.append((keys[i], cell.key))
                if store is not None:
                    store.put(keys[i], cell.key, rec, cell_fp[(keys[i], cell.key)])
        if state.num_processes > 1:  # the limit on the joined counts, on every process at once
            images.tracker.sync(state)
            images.tracker.check()
    bad_images = _count_bad_images(images, store, data_fp, state)
    if not state.is_main_process:
        return None
    _check_pairing(records, keys)
    return GridResult(
        records=records,
        bad_images=bad_images,
        fingerprints=dict(zip(keys, runner.fingerprints)),
        data_fingerprint=data_fp,
        computed=computed,
    )


__all__ = ["Cell", "GridResult", "build_grid", "run_grid"]
