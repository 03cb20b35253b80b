"""The corruption benchmark: base vs fine-tuned ViTs on a grid of corruptions × severities.

Paired by design: each batch is decoded and corrupted once (a per-image seed makes the corrupted
image a pure function of (seed, example id, corruption, severity)), and every model sees the
identical pixels. Per-image results are kept, so every fine-tuned-vs-base difference gets a
bootstrap CI over images and a paired test (`hf_vitrobust.stats`).

Definitions (DESIGN.md section 4) are in `DEFINITIONS` and are written into `results.json` next
to the numbers. The per-image records of each (model, corruption, severity) cell are saved as
they finish (`<output_dir>/cells/`), so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust import stats
from hf_vitrobust.io import read_json, write_json_atomic

logger = logging.getLogger(__name__)

SCHEMA = "hf_vitrobust.evaluation/1"
#: The shipped `evaluate` metric module (load with `load_top_k_metric()`).
TOP_K_METRIC_PATH = Path(__file__).parent / "metrics" / "top_k_accuracy.py"
CLEAN = "clean"
ECE_BINS = 15

#: AlexNet's top-1 error on ImageNet-C, averaged over severities 1-5 (Hendrycks & Dietterich
#: 2019), the reference of the corruption error on ImageNet.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
#: AlexNet's clean ImageNet top-1 error (Hendrycks & Dietterich 2019, Table 1: 43.5%), used only
#: by the relative mCE against AlexNet.
ALEXNET_CLEAN_ERROR = 0.435

CORRUPTION_NOTE = (
    "Corruptions are applied on the fly (hf_vitrobust.corruptions, Albumentations) at the model's "
    "input resolution; they are not the published ImageNet-C JPEGs, so CE/mCE against AlexNet "
    "are comparable to the literature only approximately."
)

DEFINITIONS: dict[str, str] = {
    "top_1_accuracy": "Fraction of images whose true label is among the 1 largest logits.",
    "top_5_accuracy": "Fraction of images whose true label is among the 5 largest logits "
    "(k capped at the number of classes).",
    "top_10_accuracy": "Fraction of images whose true label is among the 10 largest logits "
    "(k capped at the number of classes).",
    "p_true": "Certainty: mean softmax probability of the true class.",
    "nll": "Mean negative log-likelihood of the true class (natural log).",
    "ece": "Expected calibration error: 15 equal-width bins (lo, hi] on the top-1 softmax "
    "confidence, sum over bins of (bin count / n) * |accuracy - mean confidence|; for an "
    "aggregate of several cells, the ECE of all their predictions pooled.",
    "aggregate": "Aggregates (per corruption, group, seen/unseen) average each image over the "
    "cells first, then average over images (equal weight per cell); CIs resample images.",
    "ce": "Corruption error CE_c = sum_s E(model,c,s) / sum_s E(ref,c,s), E = top-1 error; "
    "against AlexNet, the published severity-averaged error times the number of severities.",
    "mce": "mCE: mean of CE_c over the corruptions that have a reference error.",
    "relative_ce": "Relative CE_c = sum_s (E(model,c,s) - E(model,clean)) / "
    "sum_s (E(ref,c,s) - E(ref,clean)); relative mCE is its mean over corruptions.",
    "ci": "95% bootstrap CI over images (BCa up to 5000 images, percentile above), seeded.",
    "vs_base": "Paired difference fine-tuned minus base on the same images: McNemar's exact "
    "test for the accuracy of a single cell, paired bootstrap test otherwise; CI by paired "
    "bootstrap over images.",
    "seen": "A corruption is seen by a model when it is in config.robustness.train_corruptions "
    "(written by the adversarial trainer); every other corruption is unseen.",
}

MEAN_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy", "p_true", "nll")
ACCURACY_KS = {"top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10}


# --------------------------------------------------------------------------------------------
# Metric definitions on per-image records
# --------------------------------------------------------------------------------------------


def load_top_k_metric() -> Any:
    """The shipped top-k accuracy `evaluate` metric, loaded by path (works offline)."""
    import evaluate

    return evaluate.load(str(TOP_K_METRIC_PATH))


def per_image_outputs(logits: Any, labels: Any) -> dict[str, np.ndarray]:
    """Per-image quantities from logits [B, C] and labels [B] (torch or numpy), in float32.

    `rank`: number of classes with a strictly larger logit than the true class (top-k correct
    iff rank < k, the shipped metric's definition); `p_true`; `nll` = -log softmax[true];
    `confidence` = top-1 softmax probability; `correct` = top-1 correct (argmax ties broken
    toward the true label, consistent with rank).
    """
    import torch

    logits = torch.as_tensor(logits).float()
    labels = torch.as_tensor(labels).long().to(logits.device)
    log_probs = torch.log_softmax(logits, dim=-1)
    true_logit = logits.gather(1, labels[:, None])
    rank = (logits > true_logit).sum(dim=1)
    log_p_true = log_probs.gather(1, labels[:, None])[:, 0]
    return {
        "rank": rank.to(torch.int32).cpu().numpy(),
        "p_true": log_p_true.exp().cpu().numpy(),
        "nll": (-log_p_true).cpu().numpy(),
        "confidence": log_probs.max(dim=1).values.exp().cpu().numpy(),
    }


def ece_bin_sums(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """[n_bins, n] per-image contributions: (correct - confidence) in the image's bin, else 0.

    ECE = sum_b |mean_i x[b, i]|; averaging x over cells gives the pooled ECE of the cells.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    # Bins are (lo, hi]: a confidence of exactly 1 is in the last bin, 1/15 in the first.
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    out = np.zeros((n_bins, confidence.size))
    out[index, np.arange(confidence.size)] = correct - confidence
    return out


def ece_statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """ECE from `ece_bin_sums` (bins on axis 0, images on `axis`), vectorised for the bootstrap."""
    return np.abs(np.mean(x, axis=axis)).sum(axis=0)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE with `n_bins` equal-width bins on the top-1 confidence."""
    return float(ece_statistic(ece_bin_sums(confidence, correct, n_bins)))


# --------------------------------------------------------------------------------------------
# Models, labels and the shared input geometry
# --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name.rstrip("/")).name or name).strip("-.")
    return f"{base[:40] or 'model'}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


@dataclass
class EvalModel:
    """A model under evaluation: its name (Hub id or path), the model, and its processor."""

    name: str
    model: Any
    processor: Any
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = _slug(self.name)

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
        if rob.get("train_family"):
            from hf_vitrobust.corruptions import resolve_corruptions

            return tuple(resolve_corruptions(rob["train_family"]))
        return ()


def load_eval_models(
    names: Sequence[str], attn_implementation: str = "sdpa", device: str | None = None
) -> list[EvalModel]:
    """Load each Hub id / checkpoint folder as it was saved (its own head and id2label)."""
    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.models import load_model_and_processor

    if not names:
        raise ValueError("No models given: pass --models BASE [FINE_TUNED ...] (base first).")
    if len(set(names)) != len(names):
        raise ValueError(f"Models are listed more than once: {list(names)}.")
    out = []
    for name in names:
        model, processor = load_model_and_processor(
            ModelArguments(model_name_or_path=name, attn_implementation=attn_implementation)
        )
        out.append(
            EvalModel(name=name, model=model.eval().to(_device(device)), processor=processor)
        )
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
    from hf_vitrobust.data import check_labels

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


def _geometry(spec: Any) -> tuple:
    return (spec.size, spec.resample, spec.do_resize, spec.shortest_edge, spec.crop_size)


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------
# The grid and its per-image records
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
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    include_clean: bool = True,
) -> list[Cell]:
    """Clean first, then every corruption × severity (corruptions: family names or names)."""
    from hf_vitrobust.corruptions import check_severity, resolve_corruptions

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


@dataclass
class CellRecord:
    """Per-image results of one model on one cell (arrays aligned on `example_ids`)."""

    example_ids: np.ndarray
    labels: np.ndarray
    rank: np.ndarray
    p_true: np.ndarray
    nll: np.ndarray
    confidence: np.ndarray

    FIELDS = ("example_ids", "labels", "rank", "p_true", "nll", "confidence")

    def correct(self, k: int, num_classes: int) -> np.ndarray:
        return self.rank < min(int(k), int(num_classes))

    def save(self, path: Path) -> None:
        """Atomic .npz write (a crash never leaves a half-written cell)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **{f: getattr(self, f) for f in self.FIELDS})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        with np.load(path) as data:
            return cls(**{f: data[f] for f in cls.FIELDS})

    @classmethod
    def concat(cls, parts: Sequence[dict[str, np.ndarray]]) -> CellRecord:
        """Join batches, sorted by example id (so a stream's order never breaks the pairing)."""
        joined = {f: np.concatenate([p[f] for p in parts]) for f in cls.FIELDS}
        order = np.argsort(joined["example_ids"], kind="stable")
        return cls(**{f: v[order] for f, v in joined.items()})


class CellStore:
    """Finished cells on disk, for resuming: `<root>/<model key>/<cell key>.npz` + a manifest."""

    def __init__(self, root: str | os.PathLike, fingerprint: dict[str, Any], resume: bool = True):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if manifest.exists() and resume:
            old = read_json(manifest)
            if old != fingerprint:
                diff = sorted(
                    k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)
                )
                raise ValueError(
                    f"{self.root} holds cells of a different evaluation (differs in {diff}). "
                    "Use a new output_dir, or pass --resume false to recompute every cell."
                )
        write_json_atomic(fingerprint, manifest)
        self.resume = resume

    def path(self, model_key: str, cell: Cell) -> Path:
        return self.root / model_key / f"{cell.key.replace('@', '__s')}.npz"

    def get(self, model_key: str, cell: Cell) -> CellRecord | None:
        path = self.path(model_key, cell)
        if not self.resume or not path.exists():
            return None
        try:
            return CellRecord.load(path)
        except Exception as error:  # a damaged file is recomputed, not trusted
            logger.warning("Recomputing %s: could not read %s (%s).", cell.key, path, error)
            return None

    def put(self, model_key: str, cell: Cell, record: CellRecord) -> None:
        record.save(self.path(model_key, cell))


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
        from hf_vitrobust.data import BadImageError, decode_image

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


def _corrupt_batch(images: np.ndarray, ids: np.ndarray, cell: Cell, seed: int) -> np.ndarray:
    if cell.corruption == CLEAN:
        return images
    from hf_vitrobust.corruptions import corrupt_examples

    return corrupt_examples(images, ids, cell.corruption, cell.severity, seed)


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
    import torch
    from tqdm.auto import tqdm

    from hf_vitrobust.data import BadImageTracker, ProcessorSpec, label_names

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
    dev = _device(device)
    for m in models:
        m.model.eval().to(dev)
        if getattr(m.model.config, "_attn_implementation", "sdpa") != "sdpa":
            # Evaluation only needs logits: sdpa is the fast path.
            m.model.set_attn_implementation("sdpa")
    dtypes = [next(m.model.parameters()).dtype for m in models]
    bad_images = BadImageTracker(max_bad_fraction=max_bad_fraction)
    clean = _CleanImages(dataset, specs[0], batch_size, bad_images, cache_bytes)
    records: dict[str, dict[str, CellRecord]] = {k: {} for k in keys}
    todo: list[tuple[Cell, list[int]]] = []
    for cell in cells:
        pending = []
        for i, m in enumerate(models):
            rec = store.get(m.key, cell) if store is not None else None
            if rec is not None:
                records[m.key][cell.key] = rec
            else:
                pending.append(i)
        if pending:
            todo.append((cell, pending))
    if len(todo) < len(cells):
        logger.info("Resuming: %d of %d cells already done.", len(cells) - len(todo), len(cells))
    bar = tqdm(total=len(todo), desc="evaluation grid", unit="cell", disable=not progress)
    for cell, pending in todo:
        bar.set_postfix_str(cell.key)
        parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in pending}
        for images, ids, labels in clean:
            corrupted = _corrupt_batch(images, ids, cell, seed)
            # One transfer per batch; each model then normalises the same pixels its own way.
            x01 = torch.from_numpy(corrupted).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
            for i in pending:
                with torch.inference_mode():
                    pixels = specs[i].normalize(x01).to(dtypes[i])
                    logits = models[i].model(pixel_values=pixels).logits.float()
                    if perms[i] is not None:
                        logits = logits[:, torch.as_tensor(perms[i], device=logits.device)]
                    out = per_image_outputs(logits, labels)
                out.update(example_ids=ids, labels=labels)
                parts[i].append(out)
        for i in pending:
            if not parts[i]:
                raise ValueError("The dataset yielded no decodable images.")
            rec = CellRecord.concat(parts[i])
            records[models[i].key][cell.key] = rec
            if store is not None:
                store.put(models[i].key, cell, rec)
        bar.update(1)
    bar.close()
    # All models must be scored on the same images in the same order (pairing).
    ref = next(iter(records[keys[0]].values()))
    for k in keys:
        for cell_key, rec in records[k].items():
            if not np.array_equal(rec.example_ids, ref.example_ids):
                raise RuntimeError(
                    f"Cell {cell_key} of {k} holds other images than the rest; the stored cells "
                    "come from a different dataset. Rerun with --resume false."
                )
    bad = bad_images.finish() if bad_images.seen else {"seen": 0, "bad": 0}
    return records, bad


# --------------------------------------------------------------------------------------------
# Summaries with CIs and paired tests
# --------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    num_classes: int
    n_resamples: int
    confidence: float
    seed: int
    ece_bins: int = ECE_BINS


def _per_image(records: dict[str, CellRecord], cell_keys: Sequence[str], s: _Settings) -> dict:
    """Per-image averages over cells of each metric, and the pooled-ECE bin sums."""
    recs = [records[k] for k in cell_keys]
    out: dict[str, np.ndarray] = {}
    for name, k in ACCURACY_KS.items():
        out[name] = np.mean([r.correct(k, s.num_classes) for r in recs], axis=0)
    out["p_true"] = np.mean([r.p_true for r in recs], axis=0, dtype=np.float64)
    out["nll"] = np.mean([r.nll for r in recs], axis=0, dtype=np.float64)
    out["ece"] = np.mean(
        [ece_bin_sums(r.confidence, r.correct(1, s.num_classes), s.ece_bins) for r in recs], axis=0
    )
    return out


def _occupied_bins(*bin_sums: np.ndarray) -> np.ndarray:
    """Rows (bins) non-zero in any of the arrays: empty bins add nothing to the ECE, and
    dropping them makes its bootstrap several times cheaper."""
    mask = np.zeros(bin_sums[0].shape[0], dtype=bool)
    for x in bin_sums:
        mask |= np.any(x != 0, axis=-1)
    if not mask.any():
        mask[0] = True
    return mask


def _metric_block(values: dict[str, np.ndarray], s: _Settings) -> dict[str, dict[str, Any]]:
    rows = np.stack([values[m] for m in MEAN_METRICS])
    cis = stats.bootstrap_ci_many(rows, s.n_resamples, s.confidence, s.seed)
    n = int(rows.shape[1])
    out = {
        m: {
            "value": float(rows[i].mean()),
            "ci_low": float(cis[i, 0]),
            "ci_high": float(cis[i, 1]),
            "n": n,
        }
        for i, m in enumerate(MEAN_METRICS)
    }
    ece = values["ece"][_occupied_bins(values["ece"])]
    low, high = stats.bootstrap_ci(ece, ece_statistic, s.n_resamples, s.confidence, s.seed)
    out["ece"] = {"value": float(ece_statistic(ece)), "ci_low": low, "ci_high": high, "n": n}
    return out


def _vs_base(
    base: dict[str, np.ndarray], other: dict[str, np.ndarray], single_cell: bool, s: _Settings
) -> dict[str, dict[str, Any]]:
    out = {}
    kw = dict(n_resamples=s.n_resamples, confidence=s.confidence, seed=s.seed)
    for m in MEAN_METRICS:
        if m in ACCURACY_KS and single_cell:
            out[m] = stats.mcnemar_test(base[m], other[m], **kw).to_dict()
        else:
            out[m] = stats.paired_bootstrap(base[m], other[m], **kw).to_dict()
    bins = _occupied_bins(base["ece"], other["ece"])
    out["ece"] = stats.paired_bootstrap(
        base["ece"][bins], other["ece"][bins], statistic=ece_statistic, **kw
    ).to_dict()
    return out


def _summarize_set(
    records: dict[str, dict[str, CellRecord]],
    model_keys: Sequence[str],
    base_key: str,
    cell_keys: Sequence[str],
    s: _Settings,
) -> dict[str, Any]:
    per = {k: _per_image(records[k], cell_keys, s) for k in model_keys}
    out: dict[str, Any] = {}
    for k in model_keys:
        entry: dict[str, Any] = {"metrics": _metric_block(per[k], s)}
        if k != base_key:
            entry["vs_base"] = _vs_base(per[base_key], per[k], len(cell_keys) == 1, s)
        out[k] = entry
    return out


def _ratio_ci(x: np.ndarray, s: _Settings) -> tuple[float, float]:
    """CI of mean_c [mean_i x[1,c,i] / mean_i x[0,c,i]] over images (x: [2, C, n])."""

    def statistic(v: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (v[1].mean(axis=axis) / v[0].mean(axis=axis)).mean(axis=0)

    return stats.bootstrap_ci(x, statistic, s.n_resamples, s.confidence, s.seed)


def _value_ci(value: float, ci: tuple[float, float], n: int) -> dict[str, Any]:
    out = {"value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n)}
    if not (math.isfinite(out["ci_low"]) and math.isfinite(out["ci_high"])):
        out["note"] = (
            "CI undefined: the reference's error (or its increase over clean) is near 0 in some "
            "resamples, so the ratio is unstable."
        )
    return out


def corruption_errors(
    records: dict[str, dict[str, CellRecord]],
    model_keys: Sequence[str],
    base_key: str,
    cells: Sequence[Cell],
    reference: str,
    s: _Settings,
) -> dict[str, Any]:
    """CE_c, mCE, relative CE_c and relative mCE of every model (DESIGN.md section 4)."""
    by_c: dict[str, list[str]] = {}
    for cell in cells:
        if cell.corruption != CLEAN:
            by_c.setdefault(cell.corruption, []).append(cell.key)
    has_clean = any(c.corruption == CLEAN for c in cells)
    out: dict[str, Any] = {"reference": reference}
    if reference == "alexnet":
        usable = [c for c in by_c if c in ALEXNET_ERRORS]
        out["without_reference"] = [c for c in by_c if c not in ALEXNET_ERRORS]
        sevs = sorted({cell.severity for cell in cells if cell.corruption != CLEAN})
        if sevs != [1, 2, 3, 4, 5]:
            out["note"] = f"AlexNet errors average severities 1-5; this grid has {sevs}."
    else:
        usable = list(by_c)
    if not usable:
        out["models"] = {}
        return out
    err = {
        k: {
            c: np.stack([1.0 - records[k][ck].correct(1, s.num_classes) for ck in by_c[c]])
            for c in usable
        }
        for k in model_keys
    }  # [severities, n] per corruption
    clean_err = (
        {k: 1.0 - records[k][CLEAN].correct(1, s.num_classes) for k in model_keys}
        if has_clean
        else {}
    )
    models_out = {}
    for k in model_keys:
        n = next(iter(err[k].values())).shape[1]
        entry: dict[str, Any] = {"ce": {}, "relative_ce": {}}
        if reference == "alexnet":
            sums = np.stack([err[k][c].sum(0) for c in usable])  # [C, n]: per-image error sums
            ref = np.array([ALEXNET_ERRORS[c] * len(by_c[c]) for c in usable])
            for j, c in enumerate(usable):
                ci = stats.bootstrap_ci(
                    sums[j] / ref[j], np.mean, s.n_resamples, s.confidence, s.seed
                )
                entry["ce"][c] = _value_ci(sums[j].mean() / ref[j], ci, n)
            ce_img = (sums / ref[:, None]).mean(0)
            entry["mce"] = _value_ci(
                ce_img.mean(),
                stats.bootstrap_ci(ce_img, np.mean, s.n_resamples, s.confidence, s.seed),
                n,
            )
            if has_clean:
                rel_ref = np.array(
                    [(ALEXNET_ERRORS[c] - ALEXNET_CLEAN_ERROR) * len(by_c[c]) for c in usable]
                )
                rel = (sums - np.outer([len(by_c[c]) for c in usable], clean_err[k])) / rel_ref[
                    :, None
                ]
                for j, c in enumerate(usable):
                    ci = stats.bootstrap_ci(rel[j], np.mean, s.n_resamples, s.confidence, s.seed)
                    entry["relative_ce"][c] = _value_ci(rel[j].mean(), ci, n)
                rel_img = rel.mean(0)
                entry["relative_mce"] = _value_ci(
                    rel_img.mean(),
                    stats.bootstrap_ci(rel_img, np.mean, s.n_resamples, s.confidence, s.seed),
                    n,
                )
        else:
            if k == base_key:
                # The reference against itself: exactly 1 by definition.
                one = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": n}
                entry["ce"] = {c: dict(one) for c in usable}
                entry["mce"] = dict(one)
                if has_clean:
                    entry["relative_ce"] = {c: dict(one) for c in usable}
                    entry["relative_mce"] = dict(one)
                models_out[k] = entry
                continue
            pairs = np.stack(
                [np.stack([err[base_key][c].sum(0), err[k][c].sum(0)]) for c in usable], axis=1
            )  # [2, C, n]
            for j, c in enumerate(usable):
                x = pairs[:, j : j + 1]
                entry["ce"][c] = _value_ci(x[1].mean() / x[0].mean(), _ratio_ci(x, s), n)
            mce = float(np.mean(pairs[1].mean(-1) / pairs[0].mean(-1)))
            entry["mce"] = _value_ci(mce, _ratio_ci(pairs, s), n)
            if has_clean:
                counts = np.array([len(by_c[c]) for c in usable])[None, :, None]
                cl = np.stack([clean_err[base_key], clean_err[k]])[:, None, :]
                rel = pairs - counts * cl
                for j, c in enumerate(usable):
                    x = rel[:, j : j + 1]
                    entry["relative_ce"][c] = _value_ci(
                        x[1].mean() / x[0].mean(), _ratio_ci(x, s), n
                    )
                rmce = float(np.mean(rel[1].mean(-1) / rel[0].mean(-1)))
                entry["relative_mce"] = _value_ci(rmce, _ratio_ci(rel, s), n)
        models_out[k] = entry
    out["corruptions"] = usable
    out["models"] = models_out
    return out


def _is_imagenet(dataset_name: str, num_classes: int) -> bool:
    return "imagenet" in dataset_name.lower() and num_classes == 1000


def summarize(
    records: dict[str, dict[str, CellRecord]],
    models: Sequence[EvalModel],
    cells: Sequence[Cell],
    *,
    num_classes: int,
    dataset_info: dict[str, Any],
    reference: str = "auto",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Every figure of the benchmark, with definitions, CIs, n and paired tests (JSON-ready)."""
    from tqdm.auto import tqdm

    from hf_vitrobust.corruptions import CORRUPTIONS, GROUPS, REGISTRY_VERSION

    s = _Settings(num_classes, int(n_resamples), float(confidence), int(seed))
    keys = [m.key for m in models]
    base = keys[0]
    if reference == "auto":
        reference = "alexnet" if _is_imagenet(dataset_info.get("name", ""), num_classes) else "base"
    if reference not in ("alexnet", "base"):
        raise ValueError(f"reference must be 'auto', 'alexnet' or 'base'; got {reference!r}.")
    corrupted = [c for c in cells if c.corruption != CLEAN]
    names = list(dict.fromkeys(c.corruption for c in corrupted))
    group_of = {n: CORRUPTIONS[n].group for n in names}
    groups = [g for g in GROUPS if g in group_of.values()]
    seen = {m.key: [c for c in m.seen_corruptions() if c in names] for m in models}
    jobs: list[tuple[str, dict[str, Any], list[str]]] = []
    for c in cells:
        jobs.append(("cell", {"corruption": c.corruption, "severity": c.severity}, [c.key]))
    for n in names:
        ks = [c.key for c in corrupted if c.corruption == n]
        jobs.append(("corruption", {"corruption": n, "group": group_of[n]}, ks))
    for g in groups:
        ks = [c.key for c in corrupted if group_of[c.corruption] == g]
        jobs.append(("group", {"group": g}, ks))
    if corrupted:
        jobs.append(("all_corruptions", {}, [c.key for c in corrupted]))
    bar = tqdm(total=len(jobs) + len(models), desc="statistics", unit="set", disable=not progress)
    sections: dict[str, list[dict[str, Any]]] = {
        "cells": [], "per_corruption": [], "per_group": [], "all_corruptions": []
    }  # fmt: skip
    section_of = {"cell": "cells", "corruption": "per_corruption", "group": "per_group"}
    for kind, ident, ks in jobs:
        summary = _summarize_set(records, keys, base, ks, s)
        for k in keys:
            row = {"model": k, **ident, "n_cells": len(ks), **summary[k]}
            if kind in ("corruption", "cell"):
                row["seen"] = ident["corruption"] in seen[k]
            sections[section_of.get(kind, "all_corruptions")].append(row)
        bar.update(1)
    # Seen / unseen split, relative to each fine-tuned model's own training corruptions; the
    # base model is scored on the same sets for the comparison.
    per_family = []
    for m in models:
        bar.update(1)
        if m.key == base or not m.robustness:
            continue
        for label, chosen in (
            ("seen", seen[m.key]),
            ("unseen", [n for n in names if n not in seen[m.key]]),
        ):
            ks = [c.key for c in corrupted if c.corruption in chosen]
            if not ks:
                continue
            summary = _summarize_set(records, [base, m.key], base, ks, s)
            per_family.append(
                {
                    "model": m.key,
                    "family": label,
                    "corruptions": chosen,
                    "n_cells": len(ks),
                    "metrics": summary[m.key]["metrics"],
                    "base_metrics": summary[base]["metrics"],
                    "vs_base": summary[m.key]["vs_base"],
                }
            )
    bar.close()
    transfer = _transfer_matrix(sections, keys, base, groups, group_of, seen, cells)
    n_images = int(next(iter(records[base].values())).example_ids.size)
    return {
        "schema": SCHEMA,
        "definitions": DEFINITIONS,
        "corruption_note": CORRUPTION_NOTE,
        "dataset": {**dataset_info, "n_images": n_images, "num_classes": num_classes},
        "models": [
            {
                "key": m.key,
                "name": m.name,
                "role": "base" if m.key == base else "fine_tuned",
                "seen_corruptions": seen[m.key],
                "train_corruptions": list(m.seen_corruptions()),
                "robustness": m.robustness,
            }
            for m in models
        ],
        "grid": {
            "cells": [c.key for c in cells],
            "corruptions": names,
            "severities": sorted({c.severity for c in corrupted}),
            "clean": any(c.corruption == CLEAN for c in cells),
            "groups": group_of,
            "registry_version": REGISTRY_VERSION,
        },
        "settings": {
            "n_resamples": s.n_resamples,
            "confidence": s.confidence,
            "bootstrap_seed": s.seed,
            "ece_bins": s.ece_bins,
            "ci_method": stats.ci_method_for(n_images),
            "top_k": {m: min(k, num_classes) for m, k in ACCURACY_KS.items()},
        },
        **sections,
        "per_family": per_family,
        "corruption_error": corruption_errors(records, keys, base, cells, reference, s),
        "transfer_matrix": transfer,
    }


def _transfer_matrix(
    sections: dict[str, list[dict[str, Any]]],
    keys: Sequence[str],
    base: str,
    groups: Sequence[str],
    group_of: dict[str, str],
    seen: dict[str, list[str]],
    cells: Sequence[Cell],
) -> dict[str, Any]:
    """Rows: fine-tuned models; columns: clean + groups; cells: top-1 change vs base with CI."""
    columns = ([CLEAN] if any(c.corruption == CLEAN for c in cells) else []) + list(groups)
    lookup = {(r["model"], r["group"]): r for r in sections["per_group"]}
    lookup.update({(r["model"], CLEAN): r for r in sections["cells"] if r["corruption"] == CLEAN})
    rows = []
    for k in keys:
        if k == base:
            continue
        row = []
        for col in columns:
            diff = lookup[(k, col)]["vs_base"]["top_1_accuracy"]
            in_group = [c for c, g in group_of.items() if g == col]
            n_seen = sum(c in seen[k] for c in in_group)
            row.append(
                {
                    **{
                        f: diff[f]
                        for f in ("estimate", "ci_low", "ci_high", "p_value", "test", "n")
                    },
                    "seen": n_seen > 0,
                    "seen_fraction": n_seen / len(in_group) if in_group else 0.0,
                }
            )
        rows.append(row)
    return {
        "metric": "top_1_accuracy",
        "definition": "Top-1 accuracy of the model minus the base model's, on the same images.",
        "rows": [k for k in keys if k != base],
        "columns": columns,
        "cells": rows,
    }


# --------------------------------------------------------------------------------------------
# Whole evaluation and Hub-ready results
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationSettings:
    """What `evaluate_robustness` runs (the recipe's `EvaluationArguments` carry the same)."""

    corruptions: list[str] = field(default_factory=lambda: ["all"])
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    include_clean: bool = True
    batch_size: int = 128
    seed: int = 0
    n_resamples: int = 2000
    confidence: float = 0.95
    reference: str = "auto"
    resume: bool = True
    device: str | None = None
    progress: bool = True


def evaluate_robustness(
    models: Sequence[EvalModel],
    dataset: Any,
    output_dir: str | os.PathLike,
    settings: EvaluationSettings | None = None,
    dataset_info: dict[str, Any] | None = None,
    max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
    """Run the grid (resuming from `output_dir/cells`), summarise, write `results.json`.

    Undecodable images are skipped and counted; above `max_bad_fraction` the run stops.
    """
    from hf_vitrobust.corruptions import REGISTRY_VERSION
    from hf_vitrobust.data import label_names

    st = settings or EvaluationSettings()
    names = label_names(dataset)
    for m in models:  # labels are checked before the store or the grid is touched
        label_permutation(names, m.model.config)
    cells = build_grid(st.corruptions, st.severities, st.include_clean)
    info = dict(dataset_info or {})
    output_dir = Path(output_dir)
    fingerprint = {
        "dataset": {k: info.get(k) for k in ("name", "config", "split", "max_examples")},
        "label_names": names,
        "corruption_seed": st.seed,
        "registry_version": REGISTRY_VERSION,
    }
    store = CellStore(output_dir / "cells", fingerprint, resume=st.resume)
    records, bad = run_grid(
        models,
        dataset,
        cells,
        batch_size=st.batch_size,
        seed=st.seed,
        device=st.device,
        store=store,
        max_bad_fraction=max_bad_fraction,
        progress=st.progress,
    )
    info.setdefault("label_names", names)
    results = summarize(
        records,
        models,
        cells,
        num_classes=len(names),
        dataset_info=info,
        reference=st.reference,
        n_resamples=st.n_resamples,
        confidence=st.confidence,
        seed=st.seed,
        progress=st.progress,
    )
    results["settings"]["corruption_seed"] = st.seed
    results["settings"]["batch_size"] = st.batch_size
    results["bad_images"] = bad
    write_json_atomic(results, output_dir / "results.json")
    return results


_METRIC_TYPES = {
    "top_1_accuracy": ("accuracy", "Top-1 accuracy"),
    "top_5_accuracy": ("top_5_accuracy", "Top-5 accuracy"),
    "top_10_accuracy": ("top_10_accuracy", "Top-10 accuracy"),
    "p_true": ("p_true", "Probability of the true class"),
    "nll": ("nll", "Negative log-likelihood"),
    "ece": ("ece", "Expected calibration error (15 bins)"),
}


def eval_results_for_model(
    results: dict[str, Any],
    model: str,
    metrics: Sequence[str] = ("top_1_accuracy", "top_5_accuracy", "p_true", "ece"),
    level: str = "group",
) -> list[dict[str, Any]]:
    """`huggingface_hub.EvalResult(**d)`-ready dicts of one model (its key or name).

    Clean, all corruptions, each group (`level="group"`) or each corruption
    (`level="corruption"`), the seen/unseen split of a fine-tuned model, and mCE. `metric_config`
    names the subset; `metric_args` carries the CI, n and the bootstrap settings.
    """
    entry = next((m for m in results["models"] if model in (m["key"], m["name"])), None)
    if entry is None:
        known = [m["name"] for m in results["models"]]
        raise ValueError(f"Model {model!r} is not in these results; known: {known}.")
    key = entry["key"]
    if level not in ("group", "corruption"):
        raise ValueError(f"level must be 'group' or 'corruption'; got {level!r}.")
    ds = results["dataset"]
    sev = results["grid"]["severities"]
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": ds.get("name"),
        "dataset_name": ds.get("pretty_name") or ds.get("name"),
        "dataset_config": ds.get("config"),
        "dataset_split": ds.get("split"),
    }
    settings = results["settings"]
    out: list[dict[str, Any]] = []

    def add(config: str, label: str, metric: str, block: dict[str, Any], args: dict) -> None:
        mtype, mname = _METRIC_TYPES[metric]
        out.append(
            {
                **common,
                "dataset_args": args or None,
                "metric_type": mtype,
                "metric_name": f"{mname} ({label})",
                "metric_config": config,
                "metric_value": round(float(block["value"]), 6),
                "metric_args": {
                    "ci_low": block["ci_low"],
                    "ci_high": block["ci_high"],
                    "confidence": settings["confidence"],
                    "n": block["n"],
                    "n_resamples": settings["n_resamples"],
                    "bootstrap_seed": settings["bootstrap_seed"],
                },
            }
        )

    subsets: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    for row in results["cells"]:
        if row["model"] == key and row["corruption"] == CLEAN:
            subsets.append(("clean", "clean", row["metrics"], {}))
    for row in results["all_corruptions"]:
        if row["model"] == key:
            subsets.append(("corrupted", "all corruptions", row["metrics"], {"severities": sev}))
    if level == "group":
        for row in results["per_group"]:
            if row["model"] == key:
                g = row["group"]
                subsets.append(
                    (
                        f"group={g}",
                        f"{g} corruptions",
                        row["metrics"],
                        {"group": g, "severities": sev},
                    )
                )
    else:
        for row in results["per_corruption"]:
            if row["model"] == key:
                c = row["corruption"]
                subsets.append(
                    (f"corruption={c}", c, row["metrics"], {"corruption": c, "severities": sev})
                )
    for row in results["per_family"]:
        if row["model"] == key:
            f = row["family"]
            args = {"corruptions": row["corruptions"], "severities": sev}
            subsets.append((f"{f}_corruptions", f"{f} corruptions", row["metrics"], args))
    for config, label, block, args in subsets:
        for metric in metrics:
            add(config, label, metric, block[metric], args)
    ce = results["corruption_error"]
    if key in ce.get("models", {}) and "mce" in ce["models"][key]:
        ref = ce["reference"]
        block = ce["models"][key]["mce"]
        out.append(
            {
                **common,
                "dataset_args": {"corruptions": ce["corruptions"], "severities": sev},
                "metric_type": "mce",
                "metric_name": f"mCE (reference: {'AlexNet' if ref == 'alexnet' else 'base model'})",
                "metric_config": f"mce_reference={ref}",
                "metric_value": round(float(block["value"]), 6),
                "metric_args": {
                    "ci_low": block["ci_low"],
                    "ci_high": block["ci_high"],
                    "confidence": settings["confidence"],
                    "n": block["n"],
                },
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Recipe entry point
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationArguments(EvaluationSettings):
    """`recipes/evaluate.py` arguments (with `DataArguments` for the dataset)."""

    models: list[str] = field(
        default_factory=list,
        metadata={"help": "Hub ids or checkpoint folders; the first is the base model."},
    )
    output_dir: str = field(
        default="outputs/evaluation", metadata={"help": "results.json, figures and cells/ go here."}
    )
    plots: bool = field(default=True, metadata={"help": "Write the PNG figures."})

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError(
                "No models given: set `models:` in the recipe or pass --models BASE [FINE_TUNED ...]."
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")


def run_evaluation(data_args: Any, eval_args: EvaluationArguments) -> dict[str, Any]:
    """Load the models and the held-out split, evaluate, write results.json and the figures."""
    from hf_vitrobust.data import load_image_dataset

    dataset = load_image_dataset(
        data_args.dataset_name,
        data_args.eval_split,
        streaming=data_args.streaming,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        max_examples=data_args.max_eval_examples,
    )
    models = load_eval_models(eval_args.models, device=eval_args.device)
    settings = EvaluationSettings(
        **{f: getattr(eval_args, f) for f in EvaluationSettings.__dataclass_fields__}
    )
    info = {
        "name": data_args.dataset_name,
        "config": data_args.dataset_config_name,
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
    }
    results = evaluate_robustness(
        models, dataset, eval_args.output_dir, settings, info, data_args.max_bad_fraction
    )
    if eval_args.plots:
        from hf_vitrobust.plots.evaluation import plot_all

        figures = plot_all(results, eval_args.output_dir)
        results["figures"] = [p.name for p in figures]
        write_json_atomic(results, Path(eval_args.output_dir) / "results.json")
    return results
