"""The paired comparisons of results.json: every fine-tuned model against its references.

One flat record per (model, reference, metric, scope), the contract every stage output shares
(``docs/architecture.md``): ``model`` and ``reference`` (model keys), ``reference_role``
(``base``, ``clean_control`` or ``random_view_control``), ``metric`` (``top_1_accuracy``,
``p_true``), ``scope`` and its qualifiers, and ``stats.PairedComparison.to_dict()``: the
estimate is model minus reference, per image, on the same images and the same cells.

Pairs (``roles.comparison_pairs``, the pairing every stage uses): every adversarial model
against the base and against each of its matched controls; every control (and any other
fine-tuned model) against the base.
A missing control gives no record. Scopes, from the *model's* training corruptions (its
``config.robustness``), so a record against a control covers the adversarial model's seen
corruptions:

- ``clean``: the clean images (one cell);
- ``seen``: the model's training corruptions in the grid, pooled over their cells;
- ``unseen``: every other corruption in the grid, pooled;
- ``group:<g>``: one corruption group, pooled over its cells, with ``seen`` (the group holds a
  training corruption of the model) and ``seen_fraction``.

Pooling averages each image over the scope's cells first (equal weight per cell), so images,
not image-cell pairs, are the unit of resampling. Tests: McNemar's exact test for the accuracy
of one cell; for several cells (per-image accuracy is then a fraction) and for ``p_true``, the
paired bootstrap test. CIs: paired bootstrap over images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_vitrobust import roles, stats
from hf_vitrobust.constants import CLEAN
from hf_vitrobust.corruptions import GROUPS
from hf_vitrobust.evaluation.grid import Cell
from hf_vitrobust.evaluation.models import EvalModel, base_of, model_roles
from hf_vitrobust.evaluation.store import CellRecord

COMPARISON_METRICS = ("top_1_accuracy", "p_true")
ACCURACY_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy")
REFERENCE_ROLES = (roles.BASE, *roles.CONTROL_ROLES)
GROUP_SCOPE = "group:"


def paired_test(
    reference: np.ndarray,
    model: np.ndarray,
    metric: str,
    single_cell: bool,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """model − reference on per-image values, with its CI and the test for `metric`:
    McNemar's exact test for the accuracy of one cell, else the paired bootstrap test."""
    kw = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    if metric in ACCURACY_METRICS and single_cell:
        return stats.mcnemar_test(reference, model, **kw).to_dict()
    return stats.paired_bootstrap(reference, model, **kw).to_dict()


def reference_pairs(models: Sequence[EvalModel]) -> list[roles.Pair]:
    """(model, reference, reference role) of every comparison, in model order
    (`roles.comparison_pairs` over the fine-tuned models' ``config.robustness``)."""
    base = base_of(models)
    robustness = {m.key: m.robustness for m in models if m is not base}
    return roles.comparison_pairs(robustness, base.key)


def scopes(
    cells: Sequence[Cell], group_of: Mapping[str, str], seen: Sequence[str]
) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(scope, qualifiers, cell keys) of one model: clean, seen, unseen, every group."""
    corrupted = [c for c in cells if c.corruption != CLEAN]
    out: list[tuple[str, dict[str, Any], list[str]]] = []
    if any(c.corruption == CLEAN for c in cells):
        out.append((CLEAN, {}, [CLEAN]))
    for scope, chosen in (
        ("seen", [c for c in corrupted if c.corruption in seen]),
        ("unseen", [c for c in corrupted if c.corruption not in seen]),
    ):
        if chosen:
            out.append((scope, {}, [c.key for c in chosen]))
    for group in [g for g in GROUPS if g in group_of.values()]:
        members = [n for n, g in group_of.items() if g == group]
        n_seen = sum(n in seen for n in members)
        qualifiers = {"seen": n_seen > 0, "seen_fraction": n_seen / len(members)}
        keys = [c.key for c in corrupted if group_of[c.corruption] == group]
        out.append((f"{GROUP_SCOPE}{group}", qualifiers, keys))
    return out


class _PerImage:
    """Per-image values of a model on a set of cells (mean over the cells), cached."""

    def __init__(self, records: Mapping[str, Mapping[str, CellRecord]], num_classes: int):
        self.records = records
        self.num_classes = num_classes
        self._cache: dict[tuple[str, str, tuple[str, ...]], np.ndarray] = {}

    def __call__(self, key: str, metric: str, cell_keys: Sequence[str]) -> np.ndarray:
        at = (key, metric, tuple(cell_keys))
        if at not in self._cache:
            recs = [self.records[key][c] for c in cell_keys]
            if metric == "top_1_accuracy":
                values = [r.correct(1, self.num_classes) for r in recs]
            else:
                values = [getattr(r, metric) for r in recs]
            self._cache[at] = np.mean(values, axis=0, dtype=np.float64)
        return self._cache[at]

    def ids(self, key: str, cell_keys: Sequence[str]) -> list[np.ndarray]:
        return [self.records[key][c].example_ids for c in cell_keys]


def build_comparisons(
    records: Mapping[str, Mapping[str, CellRecord]],
    models: Sequence[EvalModel],
    cells: Sequence[Cell],
    group_of: Mapping[str, str],
    *,
    num_classes: int,
    n_resamples: int,
    confidence: float,
    seed: int,
    metrics: Sequence[str] = COMPARISON_METRICS,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every comparison record of results.json (see the module docstring)."""
    role = model_roles(models)
    names = {c.corruption for c in cells if c.corruption != CLEAN}
    seen = {m.key: [c for c in m.seen_corruptions() if c in names] for m in models}
    jobs = [
        (pair, scope)
        for pair in reference_pairs(models)
        for scope in scopes(cells, group_of, seen[pair[0]])
    ]
    values = _PerImage(records, num_classes)
    out = []
    for (model, reference, reference_role), (scope, qualifiers, cell_keys) in tqdm(
        jobs, desc="comparisons", unit="set", disable=not progress
    ):
        for a, b in zip(values.ids(reference, cell_keys), values.ids(model, cell_keys)):
            if not np.array_equal(a, b):  # _check_pairing makes this unreachable
                raise RuntimeError(f"{model} and {reference} are not paired on {scope}.")
        for metric in metrics:
            test = paired_test(
                values(reference, metric, cell_keys),
                values(model, metric, cell_keys),
                metric,
                len(cell_keys) == 1,
                n_resamples,
                confidence,
                seed,
            )
            out.append(
                {
                    "model": model,
                    "reference": reference,
                    "reference_role": reference_role,
                    "metric": metric,
                    "scope": scope,
                    **qualifiers,
                    "model_role": role[model],
                    "n_cells": len(cell_keys),
                    "corruptions": sorted(
                        {Cell.from_key(k).corruption for k in cell_keys} - {CLEAN}
                    ),
                    **test,
                }
            )
    return out


__all__ = [
    "COMPARISON_METRICS",
    "GROUP_SCOPE",
    "REFERENCE_ROLES",
    "build_comparisons",
    "paired_test",
    "reference_pairs",
    "scopes",
]
