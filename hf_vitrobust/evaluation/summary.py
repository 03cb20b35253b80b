"""Summaries of the grid's per-image records: every figure with its CI, n and paired test.

``summarize`` turns ``records[model key][cell key]`` into the body of ``results.json``: per
cell, per corruption, per group, over all corruptions, seen / unseen per fine-tuned model, the
corruption errors (CE, mCE, relative CE/mCE) and the transfer matrix. CIs resample images
(``hf_vitrobust.stats``); differences to the base model are paired on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_vitrobust import stats
from hf_vitrobust.constants import CLEAN, SEVERITIES
from hf_vitrobust.corruptions import CORRUPTIONS, GROUPS, REGISTRY_VERSION
from hf_vitrobust.evaluation.comparisons import build_comparisons, paired_test
from hf_vitrobust.evaluation.grid import Cell
from hf_vitrobust.evaluation.metrics import (
    ACCURACY_KS,
    CORRUPTION_NOTE,
    DEFINITIONS,
    ECE_BINS,
    MEAN_METRICS,
    ece_bin_sums,
    ece_statistic,
)
from hf_vitrobust.evaluation.models import (
    EvalModel,
    base_first,
    model_controls,
    model_roles,
)
from hf_vitrobust.evaluation.schema import header
from hf_vitrobust.evaluation.store import CellRecord

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

Records = dict[str, dict[str, CellRecord]]


@dataclass
class SummarySettings:
    """What every CI and test of a summary shares."""

    num_classes: int
    n_resamples: int
    confidence: float
    seed: int
    ece_bins: int = ECE_BINS

    def ci(self, values: Any, statistic: Any = np.mean) -> tuple[float, float]:
        return stats.bootstrap_ci(values, statistic, self.n_resamples, self.confidence, self.seed)


# --------------------------------------------------------------------------------------------
# Metrics of a set of cells, and their differences to the base model
# --------------------------------------------------------------------------------------------


def _per_image(
    records: dict[str, CellRecord], cell_keys: Sequence[str], s: SummarySettings
) -> dict[str, np.ndarray]:
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


def _metric_block(values: dict[str, np.ndarray], s: SummarySettings) -> dict[str, dict[str, Any]]:
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
    low, high = s.ci(ece, ece_statistic)
    out["ece"] = {"value": float(ece_statistic(ece)), "ci_low": low, "ci_high": high, "n": n}
    return out


def _vs_base(
    base: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    single_cell: bool,
    s: SummarySettings,
) -> dict[str, dict[str, Any]]:
    out = {
        m: paired_test(base[m], other[m], m, single_cell, s.n_resamples, s.confidence, s.seed)
        for m in MEAN_METRICS
    }
    bins = _occupied_bins(base["ece"], other["ece"])
    out["ece"] = stats.paired_bootstrap(
        base["ece"][bins],
        other["ece"][bins],
        statistic=ece_statistic,
        n_resamples=s.n_resamples,
        confidence=s.confidence,
        seed=s.seed,
    ).to_dict()
    return out


def _summarize_set(
    records: Records,
    model_keys: Sequence[str],
    base_key: str,
    cell_keys: Sequence[str],
    s: SummarySettings,
) -> dict[str, Any]:
    per = {k: _per_image(records[k], cell_keys, s) for k in model_keys}
    out: dict[str, Any] = {}
    for k in model_keys:
        entry: dict[str, Any] = {"metrics": _metric_block(per[k], s)}
        if k != base_key:
            entry["vs_base"] = _vs_base(per[base_key], per[k], len(cell_keys) == 1, s)
        out[k] = entry
    return out


# --------------------------------------------------------------------------------------------
# Corruption error (docs/definitions.md, "Corruption error")
# --------------------------------------------------------------------------------------------


def _ratio_ci(x: np.ndarray, s: SummarySettings) -> tuple[float, float]:
    """CI of mean_c [mean_i x[1,c,i] / mean_i x[0,c,i]] over images (x: [2, C, n])."""

    def statistic(v: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (v[1].mean(axis=axis) / v[0].mean(axis=axis)).mean(axis=0)

    return s.ci(x, statistic)


def _value_ci(value: float, ci: tuple[float, float], n: int) -> dict[str, Any]:
    out = {"value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n)}
    if not (math.isfinite(out["ci_low"]) and math.isfinite(out["ci_high"])):
        out["note"] = (
            "CI undefined: the reference's error (or its increase over clean) is near 0 in some "
            "resamples, so the ratio is unstable."
        )
    return out


def _mean_ci(per_image: np.ndarray, s: SummarySettings) -> dict[str, Any]:
    """Mean of per-image values with its bootstrap CI."""
    return _value_ci(per_image.mean(), s.ci(per_image), per_image.size)


def _against_alexnet(
    sums: np.ndarray,
    counts: np.ndarray,
    usable: Sequence[str],
    clean_err: np.ndarray | None,
    s: SummarySettings,
) -> dict[str, Any]:
    """CE_c, mCE (and relative ones with clean images) against AlexNet's published errors.

    `sums`: [C, n] per-image top-1 errors summed over severities; `counts`: severities per c.
    """
    ref = np.array([ALEXNET_ERRORS[c] for c in usable]) * counts
    ce = sums / ref[:, None]
    n = sums.shape[1]
    entry: dict[str, Any] = {
        "ce": {c: _value_ci(sums[j].mean() / ref[j], s.ci(ce[j]), n) for j, c in enumerate(usable)},
        "relative_ce": {},
        "mce": _mean_ci(ce.mean(0), s),
    }
    if clean_err is not None:
        rel_ref = (np.array([ALEXNET_ERRORS[c] for c in usable]) - ALEXNET_CLEAN_ERROR) * counts
        rel = (sums - np.outer(counts, clean_err)) / rel_ref[:, None]
        entry["relative_ce"] = {c: _mean_ci(rel[j], s) for j, c in enumerate(usable)}
        entry["relative_mce"] = _mean_ci(rel.mean(0), s)
    return entry


def _ratios(pairs: np.ndarray, usable: Sequence[str], s: SummarySettings) -> tuple[dict, dict]:
    """Per-corruption ratios model / base and their mean, from [2, C, n] per-image errors."""
    n = pairs.shape[-1]
    per_c = {}
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero reference error: null
        for j, c in enumerate(usable):
            x = pairs[:, j : j + 1]
            per_c[c] = _value_ci(x[1].mean() / x[0].mean(), _ratio_ci(x, s), n)
        mean = float(np.mean(pairs[1].mean(-1) / pairs[0].mean(-1)))
    return per_c, _value_ci(mean, _ratio_ci(pairs, s), n)


def _against_base(
    pairs: np.ndarray,
    counts: np.ndarray,
    usable: Sequence[str],
    clean: np.ndarray | None,
    s: SummarySettings,
) -> dict[str, Any]:
    """CE_c, mCE (and relative ones with clean images) against the base model.

    `pairs`: [2, C, n] per-image errors summed over severities (base, model); `clean`: [2, n].
    """
    entry: dict[str, Any] = {"ce": {}, "relative_ce": {}}
    entry["ce"], entry["mce"] = _ratios(pairs, usable, s)
    if clean is not None:
        rel = pairs - counts[None, :, None] * clean[:, None, :]
        entry["relative_ce"], entry["relative_mce"] = _ratios(rel, usable, s)
    return entry


def _base_against_itself(usable: Sequence[str], n: int, has_clean: bool) -> dict[str, Any]:
    """The reference against itself: exactly 1 by definition."""
    one = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": n}
    entry: dict[str, Any] = {"ce": {c: dict(one) for c in usable}, "relative_ce": {}}
    entry["mce"] = dict(one)
    if has_clean:
        entry["relative_ce"] = {c: dict(one) for c in usable}
        entry["relative_mce"] = dict(one)
    return entry


def corruption_errors(
    records: Records,
    model_keys: Sequence[str],
    base_key: str,
    cells: Sequence[Cell],
    reference: str,
    s: SummarySettings,
) -> dict[str, Any]:
    """CE_c, mCE, relative CE_c and relative mCE of every model (docs/definitions.md)."""
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
        if sevs != list(SEVERITIES):
            out["note"] = f"AlexNet errors average severities 1-5; this grid has {sevs}."
    else:
        usable = list(by_c)
    if not usable:
        out["models"] = {}
        return out

    def error(k: str, cell_key: str) -> np.ndarray:
        return 1.0 - records[k][cell_key].correct(1, s.num_classes)

    # Per-image top-1 errors summed over severities, [C, n] per model.
    sums = {k: np.stack([sum(error(k, ck) for ck in by_c[c]) for c in usable]) for k in model_keys}
    clean_err = {k: error(k, CLEAN) for k in model_keys} if has_clean else {}
    counts = np.array([len(by_c[c]) for c in usable])
    n = next(iter(sums.values())).shape[1]
    models_out = {}
    for k in model_keys:
        if reference == "alexnet":
            models_out[k] = _against_alexnet(sums[k], counts, usable, clean_err.get(k), s)
        elif k == base_key:
            models_out[k] = _base_against_itself(usable, n, has_clean)
        else:
            pairs = np.stack([sums[base_key], sums[k]])
            clean = np.stack([clean_err[base_key], clean_err[k]]) if has_clean else None
            models_out[k] = _against_base(pairs, counts, usable, clean, s)
    out["corruptions"] = usable
    out["models"] = models_out
    return out


# --------------------------------------------------------------------------------------------
# Sections of results.json
# --------------------------------------------------------------------------------------------

#: (section name, identifying fields, cell keys) of one summarised set of cells.
Job = tuple[str, dict[str, Any], list[str]]


def _jobs(cells: Sequence[Cell], group_of: dict[str, str], groups: Sequence[str]) -> list[Job]:
    """Every set of cells summarised: each cell, corruption, group, and all corruptions."""
    corrupted = [c for c in cells if c.corruption != CLEAN]
    jobs: list[Job] = []
    for c in cells:
        jobs.append(("cells", {"corruption": c.corruption, "severity": c.severity}, [c.key]))
    for n in group_of:
        ks = [c.key for c in corrupted if c.corruption == n]
        jobs.append(("per_corruption", {"corruption": n, "group": group_of[n]}, ks))
    for g in groups:
        ks = [c.key for c in corrupted if group_of[c.corruption] == g]
        jobs.append(("per_group", {"group": g}, ks))
    if corrupted:
        jobs.append(("all_corruptions", {}, [c.key for c in corrupted]))
    return jobs


def _sections(
    records: Records,
    keys: Sequence[str],
    base: str,
    jobs: Sequence[Job],
    seen: dict[str, list[str]],
    s: SummarySettings,
    bar: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Rows of `cells`, `per_corruption`, `per_group` and `all_corruptions`, one per model."""
    sections: dict[str, list[dict[str, Any]]] = {
        "cells": [], "per_corruption": [], "per_group": [], "all_corruptions": []
    }  # fmt: skip
    for section, ident, ks in jobs:
        summary = _summarize_set(records, keys, base, ks, s)
        for k in keys:
            row = {"model": k, **ident, "n_cells": len(ks), **summary[k]}
            if section in ("per_corruption", "cells"):
                row["seen"] = ident["corruption"] in seen[k]
            sections[section].append(row)
        bar.update(1)
    return sections


def _per_family(
    records: Records,
    models: Sequence[EvalModel],
    base: str,
    cells: Sequence[Cell],
    seen: dict[str, list[str]],
    s: SummarySettings,
    bar: Any,
) -> list[dict[str, Any]]:
    """Seen / unseen rows, relative to each fine-tuned model's own training corruptions (every
    model with config.robustness, controls included: `role` tells them apart); the base model
    is scored on the same sets for the comparison."""
    corrupted = [c for c in cells if c.corruption != CLEAN]
    names = list(dict.fromkeys(c.corruption for c in corrupted))
    role = model_roles(models)
    rows = []
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
            rows.append(
                {
                    "model": m.key,
                    "role": role[m.key],
                    "family": label,
                    "corruptions": chosen,
                    "n_cells": len(ks),
                    "metrics": summary[m.key]["metrics"],
                    "base_metrics": summary[base]["metrics"],
                    "vs_base": summary[m.key]["vs_base"],
                }
            )
    return rows


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
    fields = ("estimate", "ci_low", "ci_high", "p_value", "test", "n")
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
                    **{f: diff[f] for f in fields},
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


def _is_imagenet(dataset_name: str, num_classes: int) -> bool:
    return "imagenet" in dataset_name.lower() and num_classes == 1000


def _model_rows(
    models: Sequence[EvalModel], seen: dict[str, list[str]], fingerprints: dict[str, str]
) -> list[dict[str, Any]]:
    role = model_roles(models)
    controls = model_controls(models)
    rows = []
    for m in models:
        found = controls.get(m.key)
        rows.append(
            {
                "key": m.key,
                "name": m.name,
                "label": m.label,
                "role": role[m.key],
                "controls": None
                if found is None
                else {"clean": found.clean, "random_view": found.random_view},
                "seen_corruptions": seen[m.key],
                "train_corruptions": list(m.seen_corruptions()),
                "robustness": m.robustness,
                "fingerprint": fingerprints.get(m.key),
            }
        )
    return rows


def _dataset_record(
    first: CellRecord, dataset_info: dict[str, Any], num_classes: int
) -> dict[str, Any]:
    """The ``dataset`` of results.json: the given info, image count and class counts."""
    counts = np.bincount(first.labels, minlength=num_classes).tolist()
    label_names = dataset_info.get("label_names") or [str(i) for i in range(num_classes)]
    return {
        **dataset_info,
        "n_images": int(first.example_ids.size),
        "num_classes": num_classes,
        "class_counts": dict(zip(label_names, counts)),
    }


def _grid_record(
    cells: Sequence[Cell], names: Sequence[str], group_of: Mapping[str, str]
) -> dict[str, Any]:
    """The ``grid`` of results.json: cells, corruptions, severities, groups, registry version."""
    return {
        "cells": [c.key for c in cells],
        "corruptions": list(names),
        "severities": sorted({c.severity for c in cells if c.corruption != CLEAN}),
        "clean": any(c.corruption == CLEAN for c in cells),
        "groups": dict(group_of),
        "registry_version": REGISTRY_VERSION,
    }


def summarize(
    records: Records,
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
    fingerprints: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every figure of the benchmark, with definitions, CIs, n and paired tests (JSON-ready).

    The base model (`models.base_of`, listed first in the output) is the reference of every
    `vs_base` difference (and of the corruption error off ImageNet); `comparisons` pair each
    fine-tuned model with the base and its matched controls. The result is the body of
    `results.json` (see `schema`).
    """
    s = SummarySettings(num_classes, int(n_resamples), float(confidence), int(seed))
    models = base_first(models)
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
    jobs = _jobs(cells, group_of, groups)
    bar = tqdm(total=len(jobs) + len(models), desc="statistics", unit="set", disable=not progress)
    sections = _sections(records, keys, base, jobs, seen, s, bar)
    per_family = _per_family(records, models, base, cells, seen, s, bar)
    bar.close()
    comparisons = build_comparisons(
        records,
        models,
        cells,
        group_of,
        num_classes=num_classes,
        n_resamples=s.n_resamples,
        confidence=s.confidence,
        seed=s.seed,
        progress=progress,
    )
    first = next(iter(records[base].values()))
    n_images = int(first.example_ids.size)
    return {
        **header(),
        "definitions": DEFINITIONS,
        "corruption_note": CORRUPTION_NOTE,
        "dataset": _dataset_record(first, dataset_info, num_classes),
        "models": _model_rows(models, seen, fingerprints or {}),
        "grid": _grid_record(cells, names, group_of),
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
        "transfer_matrix": _transfer_matrix(sections, keys, base, groups, group_of, seen, cells),
        "comparisons": comparisons,
    }


__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "SummarySettings",
    "corruption_errors",
    "summarize",
]
