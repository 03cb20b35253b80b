"""Activation patching between two ViTs of the same architecture.

Patching site l (hidden-state index, 0 = embeddings, L = last block) runs model A with
the output of that site replaced by model B's on the same input. Since everything
before site l is then overwritten, the patched logits are model A's blocks l+1..L, final
layernorm and classifier applied to B's h_l, which is how `patched_logits` computes them
(exactly the hooked forward, at about half the cost of L+1 full forwards).

The reported number is the fraction of B's accuracy gain recovered:
(acc(A patched at l) - acc(A)) / (acc(B) - acc(A)), with a percentile bootstrap CI over images
of the same ratio of means in each resample; resamples where B gains nothing are left out and
counted (`recovery_bootstrap`), so the CI is finite. When the gain's own CI includes 0 there is
no gain to recover: `summarize_patching` reports the fraction's CI as null, with that reason.
Site L recovers everything when A and B share the final layernorm and classifier; any
remainder there is what B's head changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_vitrobust.stats import MIN_RESAMPLES, mcnemar_test
from hf_vitrobust.vit import check_vit_classifier

__all__ = [
    "patched_logits",
    "patched_logits_by_hook",
    "recovery_bootstrap",
    "recovery_fraction",
    "summarize_patching",
    "PatchingRecorder",
    "NO_GAIN",
]


@torch.no_grad()
def patched_logits(
    model: nn.Module,
    source_hidden: torch.Tensor,
    sites: Sequence[int] | None = None,
) -> torch.Tensor:
    """Logits of `model` with hidden state l replaced by `source_hidden[l]`, for each site.

    `source_hidden` is [L+1, B, T, D] (another model's hidden states on the same batch).
    Returns [len(sites), B, C]. Each site runs only the blocks after it, on B images at a
    time: every allocation has the same size, so memory stays flat over many batches
    (stacking the sites into one growing batch fragments the heap).
    """
    layout = check_vit_classifier(model)
    num_layers = layout.num_layers
    if source_hidden.ndim != 4 or source_hidden.shape[0] != num_layers + 1:
        raise ValueError(
            f"source_hidden must be [L+1={num_layers + 1}, B, T, D], got "
            f"{tuple(source_hidden.shape)}: the two models must have the same number of layers."
        )
    if source_hidden.shape[-1] != layout.hidden_size:
        raise ValueError(
            f"source_hidden has width {source_hidden.shape[-1]}, the model {layout.hidden_size}."
        )
    sites = list(range(num_layers + 1)) if sites is None else [int(s) for s in sites]
    for s in sites:
        if not 0 <= s <= num_layers:
            raise ValueError(f"Patching site {s} is outside 0..{num_layers}.")
    was_training = model.training
    model.eval()
    out = []
    try:
        for site in sites:
            state = source_hidden[site]
            for layer in model.vit.layers[site:]:
                state = layer(state)
            out.append(model.classifier(model.vit.layernorm(state[:, 0])))
    finally:
        model.train(was_training)
    return torch.stack(out)


@torch.no_grad()
def patched_logits_by_hook(
    model: nn.Module, pixel_values: torch.Tensor, site: int, replacement: torch.Tensor
) -> torch.Tensor:
    """Reference implementation: a full forward of `model` whose site output is replaced.

    Slow (one forward per site); used to check `patched_logits`.
    """
    module = model.vit.embeddings if site == 0 else model.vit.layers[site - 1]
    handle = module.register_forward_hook(lambda _m, _a, _o: replacement)
    try:
        return model(pixel_values=pixel_values).logits
    finally:
        handle.remove()


def recovery_fraction(
    correct_a: np.ndarray, correct_b: np.ndarray, correct_patched: np.ndarray
) -> float:
    """(acc(patched) - acc(A)) / (acc(B) - acc(A)); NaN when B gains nothing over A."""
    gain = float(np.mean(correct_b)) - float(np.mean(correct_a))
    if gain == 0:
        return float("nan")
    return (float(np.mean(correct_patched)) - float(np.mean(correct_a))) / gain


#: Resample-count matrix elements held at once by `recovery_bootstrap` (8 bytes each).
_MAX_COUNT_ELEMENTS = 4_000_000


def recovery_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    correct_patched: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap CI of the recovered fraction at every site, over images.

    Each resample draws N images with replacement (seeded) and takes the ratio of means over
    that resample, (mean p* - mean a*) / (mean b* - mean a*), with the same images in all three.
    A resample in which B gains nothing (mean b* = mean a*) has no ratio: it is left out and
    counted (`zero_gain_resamples`), so the interval is finite whenever one resample has a
    gain. Sums of 0/1 values are exact integers, so "no gain" is an exact test.
    Returns `ci_low`, `ci_high` ([S] arrays, NaN where no resample has a gain) and
    `zero_gain_resamples`.
    """
    if int(n_resamples) < MIN_RESAMPLES:
        raise ValueError(f"n_resamples={n_resamples} is below the minimum of {MIN_RESAMPLES}.")
    x = np.column_stack([correct_a, correct_b, correct_patched]).astype(np.float64)  # [N, 2+S]
    n = len(x)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_COUNT_ELEMENTS // n)
    sums = []
    for start in range(0, int(n_resamples), chunk):
        k = min(chunk, int(n_resamples) - start)
        index = rng.integers(0, n, (k, n)) + n * np.arange(k)[:, None]
        counts = np.bincount(index.ravel(), minlength=k * n).reshape(k, n)
        sums.append(counts @ x)  # [k, 2+S]: how often each resample drew each image, summed
    sums = np.concatenate(sums)
    gain = sums[:, 1] - sums[:, 0]
    kept = gain != 0
    ratio = (sums[kept, 2:] - sums[kept, :1]) / gain[kept, None]
    if kept.any():
        tail = (1 - float(confidence)) / 2
        low, high = np.quantile(ratio, [tail, 1 - tail], axis=0)
    else:
        low = high = np.full(x.shape[1] - 2, np.nan)
    return {"ci_low": low, "ci_high": high, "zero_gain_resamples": int((~kept).sum())}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class PatchingRecorder:
    """Per-image correctness of A, B and A patched at every site, on one condition.

    `arrays()`: `correct_a` [N], `correct_b` [N], `correct_patched` [N, S] (bool; one row per
    image, gathered across processes by the caller).
    """

    FIELDS = ("correct_a", "correct_b", "correct_patched")

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {f: [] for f in self.FIELDS}

    def update(
        self,
        logits_a: torch.Tensor,
        logits_b: torch.Tensor,
        logits_patched: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Add a batch: logits [B, C] of A and B, [S, B, C] of A patched at S sites."""
        labels = labels.cpu()
        self._parts["correct_a"].append((logits_a.argmax(-1).cpu() == labels).numpy())
        self._parts["correct_b"].append((logits_b.argmax(-1).cpu() == labels).numpy())
        self._parts["correct_patched"].append((logits_patched.argmax(-1).cpu() == labels).T.numpy())

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-image records so far (see the class docstring)."""
        if not self._parts["correct_a"]:
            raise ValueError("PatchingRecorder has seen no batch.")
        return {f: np.concatenate(parts) for f, parts in self._parts.items()}

    def summary(
        self, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
    ) -> dict[str, Any]:
        """`summarize_patching` of this recorder's images."""
        return summarize_patching(self.arrays(), n_resamples, seed, confidence)


#: Why a recovered fraction has no CI: B's gain over A is not distinguishable from zero.
NO_GAIN = "no gain to recover"


def summarize_patching(
    records: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """B's gain over A (McNemar) and, per site, the fraction recovered with its percentile
    bootstrap CI (`recovery_bootstrap`).

    The ratio is only defined for a gain: when the gain's CI includes 0, resamples with no or a
    negative gain make the ratio unbounded, so each site's CI is null and `ci_reason` says
    "no gain to recover" (`recovered`, the ratio of the whole sample, stays when B's accuracy
    differs from A's, and is null when it does not)."""
    a, b, patched = (np.asarray(records[f]) for f in PatchingRecorder.FIELDS)
    gain = mcnemar_test(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    boot = recovery_bootstrap(a, b, patched, n_resamples, confidence, seed)
    reason = None if gain.excludes_zero else f"{NO_GAIN} (the gain's CI includes 0)"
    per_site = [
        {
            "layer": site,
            "accuracy_patched": float(patched[:, site].mean()),
            "recovered": _finite(recovery_fraction(a, b, patched[:, site])),
            "ci_low": _finite(boot["ci_low"][site]) if reason is None else None,
            "ci_high": _finite(boot["ci_high"][site]) if reason is None else None,
            "ci_reason": reason,
        }
        for site in range(patched.shape[1])
    ]
    return {
        "n_images": len(a),
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "gain": gain.to_dict(),
        "ci_method": "percentile",
        "ci_reason": reason,
        "zero_gain_resamples": boot["zero_gain_resamples"],
        "per_layer": per_site,
    }
