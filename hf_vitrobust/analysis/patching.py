"""Activation patching between two ViTs of the same architecture.

Patching site l (hidden-state index, 0 = embeddings, L = last block) runs model A with
the output of that site replaced by model B's on the same input. Since everything
before site l is then overwritten, the patched logits are model A's blocks l+1..L, final
layernorm and classifier applied to B's h_l, which is how `patched_logits` computes them
(exactly the hooked forward, at about half the cost of L+1 full forwards).

The reported number is the fraction of B's accuracy gain recovered:
(acc(A patched at l) - acc(A)) / (acc(B) - acc(A)).
Site L recovers everything when A and B share the final layernorm and classifier; any
remainder there is what B's head changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_vitrobust.stats import bootstrap_ci, mcnemar_test
from hf_vitrobust.vit import check_vit_classifier

__all__ = [
    "patched_logits",
    "patched_logits_by_hook",
    "recovery_fraction",
    "PatchingRecorder",
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


class PatchingRecorder:
    """Per-image correctness of A, B and A patched at every site, on one condition."""

    def __init__(self) -> None:
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._patched: list[np.ndarray] = []

    def update(
        self,
        logits_a: torch.Tensor,
        logits_b: torch.Tensor,
        logits_patched: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Add a batch: logits [B, C] of A and B, [S, B, C] of A patched at S sites."""
        labels = labels.cpu()
        self._a.append((logits_a.argmax(-1).cpu() == labels).numpy())
        self._b.append((logits_b.argmax(-1).cpu() == labels).numpy())
        self._patched.append((logits_patched.argmax(-1).cpu() == labels).T.numpy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(correct_a [N], correct_b [N], correct_patched [N, S])."""
        return np.concatenate(self._a), np.concatenate(self._b), np.concatenate(self._patched)

    def summary(
        self, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
    ) -> dict[str, Any]:
        """B's gain over A (McNemar) and, per site, the fraction recovered with a bootstrap CI
        over images (the same resampled images in numerator and denominator)."""
        a, b, patched = self.arrays()
        per_site = []
        for site in range(patched.shape[1]):
            p = patched[:, site]

            def ratio(index: np.ndarray, axis: int = -1, p: np.ndarray = p) -> np.ndarray:
                # `index` holds resampled image indices, one resample per row (scipy batches).
                index = np.asarray(index).astype(np.int64)
                base = a[index].mean(axis=axis)
                gain = b[index].mean(axis=axis) - base
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(gain != 0, (p[index].mean(axis=axis) - base) / gain, np.nan)

            value = recovery_fraction(a, b, p)
            low = high = float("nan")
            if np.array_equal(p, b) or np.array_equal(p, a):
                # Every resample gives exactly 1 (or 0): a degenerate, exact interval.
                low = high = value
            elif np.isfinite(value):
                # Resampling image indices lets one statistic see the same resample of A,
                # B and the patched run; resamples where B gains nothing are dropped (NaN).
                low, high = bootstrap_ci(
                    np.arange(len(a)),
                    statistic=ratio,
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                )
            per_site.append(
                {
                    "layer": site,
                    "accuracy_patched": float(p.mean()),
                    "recovered": value,
                    "ci_low": float(low),
                    "ci_high": float(high),
                }
            )
        return {
            "n_images": len(a),
            "accuracy_a": float(a.mean()),
            "accuracy_b": float(b.mean()),
            "gain": mcnemar_test(
                a, b, n_resamples=n_resamples, confidence=confidence, seed=seed
            ).to_dict(),
            "per_layer": per_site,
        }
