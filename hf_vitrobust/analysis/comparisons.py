"""Paired comparisons of the analysis: every model against the base and its matched controls.

The pairs are `roles.comparison_pairs` (the pairing every stage uses): every fine-tune against
the base; an adversarial one also against each matched control (from ``config.robustness``). On each condition:

- ``first_correct_layer`` / ``first_always_correct_layer``: per image, over the images both
  models classify correctly at the last layer (qualifier ``n_images``), layers 1..L;
- ``attention_entropy`` / ``attention_entropy_cls`` (all queries / the CLS-query row): per
  layer (qualifier ``layer``, block 1..L; ``head: null`` = the per-image mean over heads) and per
  layer x head.

Every cell is ``model - reference`` on the same images: the mean per-image difference with a
seeded bootstrap CI over images (BCa up to ``stats.BCA_MAX_N`` images, else percentile) and the
two-sided Wilcoxon signed-rank p-value of the per-image differences (zeros dropped; p = 1 when
all are zero). The p-values are raw: the report corrects them for multiplicity. Wilcoxon rather
than a bootstrap test because a bootstrap p-value cannot go below 1 / (resamples + 1), which
a Holm correction over hundreds of cells could never call significant.

Each record is flat: ``{model, reference, reference_role, metric, scope, <qualifiers>,
**stats.PairedComparison.to_dict()}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hf_vitrobust.analysis.lens import FIRST_CORRECT_METRICS, first_correct_layers
from hf_vitrobust.roles import BASE, CLEAN_CONTROL, RANDOM_VIEW_CONTROL, Pair
from hf_vitrobust.stats import PairedComparison, bootstrap_ci_many, ci_method_for, wilcoxon_p

__all__ = [
    "ENTROPY_METRICS",
    "METRICS",
    "QUALIFIERS",
    "REFERENCE_ROLES",
    "WILCOXON",
    "entropy_records",
    "first_correct_records",
    "paired_wilcoxon_many",
]

#: metric name -> the EntropyRecorder kind it compares.
ENTROPY_METRICS = {"attention_entropy": "all_queries", "attention_entropy_cls": "cls_query"}
#: metric -> the qualifiers its records carry besides PairedComparison's fields.
QUALIFIERS = {
    **{m: ("n_images", "model_mean", "reference_mean") for m in FIRST_CORRECT_METRICS.values()},
    **{m: ("layer", "head") for m in ENTROPY_METRICS},
}
METRICS = tuple(QUALIFIERS)
REFERENCE_ROLES = (BASE, CLEAN_CONTROL, RANDOM_VIEW_CONTROL)
#: The test name in every record (as `stats.wilcoxon_test` names it).
WILCOXON = "wilcoxon_signed_rank"


def paired_wilcoxon_many(
    reference: np.ndarray,
    model: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[PairedComparison]:
    """`stats.wilcoxon_test(reference[:, j], model[:, j])` for every column j of [N, M] arrays,
    with the CIs of all columns from one shared set of resampled images (the same numbers as
    the column-by-column calls, at a fraction of the cost)."""
    reference = np.asarray(reference, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    if reference.shape != model.shape or reference.ndim != 2:
        raise ValueError(
            f"paired cells must be two [images, cells] arrays of one shape; got "
            f"{reference.shape} and {model.shape}."
        )
    differences = model - reference
    n = len(differences)
    cis = bootstrap_ci_many(
        differences.T, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    out = []
    for column, (low, high) in zip(differences.T, cis):
        p_value, details = wilcoxon_p(column)
        out.append(
            PairedComparison(
                estimate=float(column.mean()),
                ci_low=float(low),
                ci_high=float(high),
                p_value=p_value,
                test=WILCOXON,
                n=n,
                confidence=float(confidence),
                n_resamples=int(n_resamples),
                seed=int(seed),
                ci_method=ci_method_for(n),
                details=details,
            )
        )
    return out


def _record(pair: Pair, metric: str, scope: str, comparison: PairedComparison, **qualifiers):
    return {
        "model": pair.model,
        "reference": pair.reference,
        "reference_role": pair.reference_role,
        "metric": metric,
        "scope": scope,
        **qualifiers,
        **comparison.to_dict(),
    }


def first_correct_records(
    correct: Mapping[str, np.ndarray],
    pairs: list[Pair],
    scope: str,
    boot: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Both first-correct-layer statistics of every pair on one condition.

    `correct` is {model key: [N, L+1] bool lens correctness, same images in the same order}.
    Paired over the images both models get right at the last layer; a pair with fewer than two
    such images has no record. Each record also carries the two models' means over those images
    (`model_mean`, `reference_mean`: the side-by-side numbers).
    """
    out = []
    for pair in pairs:
        ref, mod = np.asarray(correct[pair.reference]), np.asarray(correct[pair.model])
        both = ref[:, -1] & mod[:, -1]
        if both.sum() < 2:
            continue
        fr, fm = first_correct_layers(ref[both]), first_correct_layers(mod[both])
        cells = paired_wilcoxon_many(
            np.column_stack([fr[k] for k in FIRST_CORRECT_METRICS]),
            np.column_stack([fm[k] for k in FIRST_CORRECT_METRICS]),
            **boot,
        )
        for (key, metric), comparison in zip(FIRST_CORRECT_METRICS.items(), cells):
            out.append(
                _record(
                    pair,
                    metric,
                    scope,
                    comparison,
                    n_images=int(both.sum()),
                    model_mean=float(fm[key].mean()),
                    reference_mean=float(fr[key].mean()),
                )
            )
    return out


def entropy_records(
    entropy: Mapping[str, Mapping[str, np.ndarray]],
    pairs: list[Pair],
    scope: str,
    boot: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Attention-entropy cells of every pair on one condition: per layer (mean over heads,
    ``head: None``) then per layer x head, for all queries and for the CLS-query row.

    `entropy` is {model key: {"all_queries" | "cls_query": [N, L, H] nats}, same images}.
    """
    out = []
    for pair in pairs:
        for metric, kind in ENTROPY_METRICS.items():
            ref = np.asarray(entropy[pair.reference][kind], dtype=np.float64)
            mod = np.asarray(entropy[pair.model][kind], dtype=np.float64)
            if ref.shape != mod.shape:
                raise ValueError(
                    f"{pair.model} and {pair.reference} have attention of shapes {mod.shape[1:]} "
                    f"and {ref.shape[1:]} (layers, heads): entropy cells cannot be paired."
                )
            n, num_layers, num_heads = ref.shape
            cells = paired_wilcoxon_many(
                np.concatenate([ref.mean(axis=2), ref.reshape(n, -1)], axis=1),
                np.concatenate([mod.mean(axis=2), mod.reshape(n, -1)], axis=1),
                **boot,
            )
            where = [(layer, None) for layer in range(1, num_layers + 1)] + [
                (layer, head) for layer in range(1, num_layers + 1) for head in range(num_heads)
            ]
            for (layer, head), comparison in zip(where, cells):
                out.append(_record(pair, metric, scope, comparison, layer=layer, head=head))
    return out
