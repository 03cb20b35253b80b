"""Logit lens over the residual stream of a ViT classifier, and "first correct layer".

For hidden state l = 0..L (0 = embeddings; L = last block, before the final layernorm),
logits_l = classifier(final_layernorm(h_l[:, 0])): the CLS token is sliced first, then
normalised (`lens_logits`, one batched matmul over layers). At l = L this is the
model's own logits; `LensRecorder` records the largest deviation seen so that every
report can show the check.

First correct layer, over the images the model gets right at the last layer:
(a) "first": the first l whose top-1 is correct;
(b) "stable": the earliest l from which every later layer is correct.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hf_vitrobust.stats import (
    bootstrap_ci,
    bootstrap_ci_many,
    mcnemar_test,
    paired_bootstrap,
    wilcoxon_test,
)

__all__ = [
    "lens_logits",
    "LensRecorder",
    "first_correct_layers",
    "summarize_lens",
    "compare_lens",
]


def lens_logits(model: nn.Module, cls_states: torch.Tensor) -> torch.Tensor:
    """Logit lens: classifier(final_layernorm(h_l[:, 0])) for every l at once.

    `cls_states` is [L+1, B, D] (the CLS token of hidden states 0..L, before the final
    layernorm). LayerNorm and Linear act on the last dimension, so this is one batched
    matmul over all layers, not a loop.
    """
    return model.classifier(model.vit.layernorm(cls_states))


class LensRecorder:
    """Per-image lens outcomes of one model on one condition, accumulated over batches."""

    def __init__(self) -> None:
        self._correct: list[np.ndarray] = []
        self._prob: list[np.ndarray] = []
        self.max_abs_diff_last_layer = 0.0

    def update(
        self, lens_logits: torch.Tensor, labels: torch.Tensor, model_logits: torch.Tensor
    ) -> None:
        """Add a batch: lens logits [L+1, B, C], labels [B], the model's logits [B, C]."""
        labels = labels.to(lens_logits.device)
        correct = lens_logits.argmax(dim=-1) == labels.unsqueeze(0)  # [L+1, B]
        probs = torch.softmax(lens_logits.float(), dim=-1)
        index = labels.view(1, -1, 1).expand(lens_logits.shape[0], -1, 1)
        true_prob = probs.gather(-1, index).squeeze(-1)  # [L+1, B]
        self._correct.append(correct.T.cpu().numpy())
        self._prob.append(true_prob.T.cpu().numpy())
        diff = (lens_logits[-1].float() - model_logits.float()).abs().max().item()
        self.max_abs_diff_last_layer = max(self.max_abs_diff_last_layer, diff)

    @property
    def correct(self) -> np.ndarray:
        """[N, L+1] bool: top-1 of the lens at each layer is the true class."""
        return np.concatenate(self._correct) if self._correct else np.zeros((0, 0), bool)

    @property
    def true_prob(self) -> np.ndarray:
        """[N, L+1] float32: lens softmax probability of the true class."""
        return np.concatenate(self._prob) if self._prob else np.zeros((0, 0), np.float32)


def first_correct_layers(correct: np.ndarray) -> dict[str, np.ndarray]:
    """Both first-correct-layer statistics for images correct at the last layer.

    `correct` is [N, L+1] bool. Returns `mask` [N] (correct at layer L), `first` and
    `stable` (layer indices, one per masked image).
    """
    correct = np.asarray(correct, dtype=bool)
    mask = correct[:, -1]
    rows = correct[mask]
    num_states = correct.shape[1]
    first = rows.argmax(axis=1)
    # Length of the run of correct layers that ends at L, read from the end.
    trailing = np.cumprod(rows[:, ::-1], axis=1).sum(axis=1)
    stable = num_states - trailing
    return {"mask": mask, "first": first, "stable": stable}


def _mean_ci(values: np.ndarray, n_resamples: int, seed: int, confidence: float) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        mean = float(values.mean()) if values.size else None
        return {"value": mean, "ci_low": None, "ci_high": None}
    low, high = bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"value": float(values.mean()), "ci_low": float(low), "ci_high": float(high)}


def _per_layer_ci(values: np.ndarray, n_resamples: int, seed: int, confidence: float) -> list:
    """Mean and CI of each column of [N, L+1], one shared set of resampled images."""
    values = np.asarray(values, dtype=np.float64)
    ci = bootstrap_ci_many(values.T, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return [
        {"layer": layer, "value": float(values[:, layer].mean()), "ci_low": lo, "ci_high": hi}
        for layer, (lo, hi) in enumerate(ci.tolist())
    ]


def summarize_lens(
    recorder: LensRecorder, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Per-layer accuracy and true-class probability (with bootstrap CIs) and both
    first-correct-layer statistics (mean with CI, histogram over layers, count)."""
    correct, prob = recorder.correct, recorder.true_prob
    num_states = correct.shape[1]
    acc = _per_layer_ci(correct, n_resamples, seed, confidence)
    tp = _per_layer_ci(prob, n_resamples, seed, confidence)
    fc = first_correct_layers(correct)
    first_correct: dict[str, Any] = {"count": int(fc["mask"].sum()), "n_images": len(correct)}
    for key in ("first", "stable"):
        first_correct[key] = {
            **_mean_ci(fc[key], n_resamples, seed, confidence),
            "histogram": np.bincount(fc[key], minlength=num_states).tolist(),
        }
    return {
        "n_images": len(correct),
        "accuracy": acc,
        "true_class_probability": tp,
        "first_correct_layer": first_correct,
        "last_layer_max_abs_diff": recorder.max_abs_diff_last_layer,
    }


def compare_lens(
    base: LensRecorder,
    other: LensRecorder,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired (same images) other − base per layer: McNemar on accuracy, paired bootstrap
    on true-class probability; first-correct layers over images both models get right
    at the last layer (paired bootstrap of the mean difference and a Wilcoxon test)."""
    ca, cb = base.correct, other.correct
    if ca.shape != cb.shape:
        raise ValueError(f"Lens records differ in shape: {ca.shape} vs {cb.shape}.")
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    out: dict[str, Any] = {
        "accuracy": [
            {"layer": layer, **mcnemar_test(ca[:, layer], cb[:, layer], **boot).to_dict()}
            for layer in range(ca.shape[1])
        ],
        "true_class_probability": [
            {
                "layer": layer,
                **paired_bootstrap(
                    base.true_prob[:, layer].astype(np.float64),
                    other.true_prob[:, layer].astype(np.float64),
                    **boot,
                ).to_dict(),
            }
            for layer in range(ca.shape[1])
        ],
    }
    both = ca[:, -1] & cb[:, -1]
    fa, fb = first_correct_layers(ca[both]), first_correct_layers(cb[both])
    first: dict[str, Any] = {"count": int(both.sum())}
    for key in ("first", "stable"):
        a = fa[key].astype(np.float64)
        b = fb[key].astype(np.float64)
        if len(a) < 2:
            first[key] = None
            continue
        first[key] = {
            "paired_bootstrap": paired_bootstrap(a, b, **boot).to_dict(),
            "wilcoxon": wilcoxon_test(a, b, **boot).to_dict(),
        }
    out["first_correct_layer"] = first
    return out
