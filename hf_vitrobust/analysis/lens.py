"""Logit lens over the residual stream of a ViT classifier, and "first correct layer".

For hidden state l = 0..L (0 = embeddings; L = last block, before the final layernorm),
logits_l = classifier(final_layernorm(h_l[:, 0])): the CLS token is sliced first, then
normalised (`lens_logits`, one batched matmul over layers). At l = L this is the
model's own logits; `LensRecorder` records each image's largest deviation so that every
report can show the check.

First correct layer, counted over l = 1..L (l = 0 is the CLS embedding, the same vector for
every image: its lens prediction is one constant class, right for ~1/C of the images whatever
the model learnt), over the images the model gets right at the last layer:
(a) "first": the first l >= 1 whose top-1 is correct;
(b) "stable": the earliest l >= 1 from which every later layer is correct.
Beside them: the share of all images never correct at any l = 1..L.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_vitrobust.stats import bootstrap_ci, bootstrap_ci_many, mcnemar_test, paired_bootstrap

__all__ = [
    "FIRST_LENS_LAYER",
    "LensRecorder",
    "common_first_correct",
    "compare_lens",
    "first_correct_layers",
    "lens_logits",
    "summarize_lens",
]

#: The first hidden state the first-correct-layer statistics count (the first block's output).
FIRST_LENS_LAYER = 1
#: The two first-correct-layer statistics: their key in analysis.json -> metric name.
FIRST_CORRECT_METRICS = {
    "first": "first_correct_layer",
    "stable": "first_always_correct_layer",
}


def lens_logits(model: nn.Module, cls_states: torch.Tensor) -> torch.Tensor:
    """Logit lens: classifier(final_layernorm(h_l[:, 0])) for every l at once.

    `cls_states` is [L+1, B, D] (the CLS token of hidden states 0..L, before the final
    layernorm). LayerNorm and Linear act on the last dimension, so this is one batched
    matmul over all layers, not a loop.
    """
    return model.classifier(model.vit.layernorm(cls_states))


class LensRecorder:
    """Per-image lens outcomes of one model on one condition, accumulated over batches.

    `arrays()` holds one row per image (gathered across processes by the caller):
    `correct` [N, L+1] bool, `true_prob` [N, L+1] float32 and `last_layer_abs_diff` [N] (the
    largest |lens logit at L - model logit| of the image).
    """

    FIELDS = ("correct", "true_prob", "last_layer_abs_diff")

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {f: [] for f in self.FIELDS}

    def update(
        self, lens_logits: torch.Tensor, labels: torch.Tensor, model_logits: torch.Tensor
    ) -> None:
        """Add a batch: lens logits [L+1, B, C], labels [B], the model's logits [B, C]."""
        labels = labels.to(lens_logits.device)
        correct = lens_logits.argmax(dim=-1) == labels.unsqueeze(0)  # [L+1, B]
        probs = torch.softmax(lens_logits.float(), dim=-1)
        index = labels.view(1, -1, 1).expand(lens_logits.shape[0], -1, 1)
        true_prob = probs.gather(-1, index).squeeze(-1)  # [L+1, B]
        diff = (lens_logits[-1].float() - model_logits.float()).abs().amax(dim=-1)
        self._parts["correct"].append(correct.T.cpu().numpy())
        self._parts["true_prob"].append(true_prob.T.cpu().numpy())
        self._parts["last_layer_abs_diff"].append(diff.cpu().numpy())

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-image records so far (see the class docstring)."""
        if not self._parts["correct"]:
            raise ValueError("LensRecorder has seen no batch.")
        return {f: np.concatenate(parts) for f, parts in self._parts.items()}

    @property
    def correct(self) -> np.ndarray:
        """[N, L+1] bool: top-1 of the lens at each layer is the true class."""
        return self.arrays()["correct"]

    @property
    def true_prob(self) -> np.ndarray:
        """[N, L+1] float32: lens softmax probability of the true class."""
        return self.arrays()["true_prob"]


def first_correct_layers(correct: np.ndarray) -> dict[str, np.ndarray]:
    """Both first-correct-layer statistics, counted over layers 1..L.

    `correct` is [N, L+1] bool (hidden states 0..L; column 0 is ignored). Returns `mask` [N]
    (correct at layer L), `first` and `stable` (layer numbers in 1..L, one per masked image)
    and `never_correct` [N] (no layer 1..L correct).
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[1] < 2:
        raise ValueError(f"correct must be [images, L+1 >= 2 hidden states]; got {correct.shape}.")
    blocks = correct[:, FIRST_LENS_LAYER:]  # layers 1..L
    num_layers = blocks.shape[1]
    mask = blocks[:, -1]
    rows = blocks[mask]
    first = rows.argmax(axis=1) + FIRST_LENS_LAYER
    # Length of the run of correct layers that ends at L, read from the end.
    trailing = np.cumprod(rows[:, ::-1], axis=1).sum(axis=1)
    stable = num_layers - trailing + FIRST_LENS_LAYER
    return {"mask": mask, "first": first, "stable": stable, "never_correct": ~blocks.any(axis=1)}


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
    records: Mapping[str, np.ndarray] | LensRecorder,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-layer accuracy and true-class probability (l = 0..L, bootstrap CIs) and both
    first-correct-layer statistics over l = 1..L (mean with CI, histogram over layers 1..L,
    count of images correct at L, share never correct)."""
    if isinstance(records, LensRecorder):
        records = records.arrays()
    correct, prob = records["correct"], records["true_prob"]
    num_layers = correct.shape[1] - 1
    boot = (n_resamples, seed, confidence)
    fc = first_correct_layers(correct)
    never = int(fc["never_correct"].sum())
    first_correct: dict[str, Any] = {
        "n_images": len(correct),
        "count": int(fc["mask"].sum()),
        "never_correct": {"count": never, "share": never / len(correct)},
        "histogram_layers": list(range(FIRST_LENS_LAYER, num_layers + 1)),
    }
    for key in FIRST_CORRECT_METRICS:
        counts = np.bincount(fc[key], minlength=num_layers + 1)[FIRST_LENS_LAYER:]
        first_correct[key] = {**_mean_ci(fc[key], *boot), "histogram": counts.tolist()}
    return {
        "n_images": len(correct),
        "accuracy": _per_layer_ci(correct, *boot),
        "true_class_probability": _per_layer_ci(prob, *boot),
        "first_correct_layer": first_correct,
        "last_layer_max_abs_diff": float(np.max(records["last_layer_abs_diff"])),
    }


def common_first_correct(
    correct_by_model: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Side-by-side means of both statistics over the same images: those every model in
    `correct_by_model` ({name: [N, L+1] bool, same images}) gets right at the last layer."""
    both = np.logical_and.reduce([np.asarray(c, bool)[:, -1] for c in correct_by_model.values()])
    out: dict[str, Any] = {"n_images": int(both.sum()), "models": {}}
    for name, correct in correct_by_model.items():
        fc = first_correct_layers(np.asarray(correct, bool)[both])
        out["models"][name] = {
            key: _mean_ci(fc[key], n_resamples, seed, confidence) for key in FIRST_CORRECT_METRICS
        }
    return out


def compare_lens(
    base: Mapping[str, np.ndarray] | LensRecorder,
    other: Mapping[str, np.ndarray] | LensRecorder,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired (same images) other − base per hidden state l = 0..L: McNemar on lens accuracy,
    paired bootstrap on true-class probability. (First correct layers are compared in
    `analysis.comparisons`, against every reference.)"""
    base = base.arrays() if isinstance(base, LensRecorder) else base
    other = other.arrays() if isinstance(other, LensRecorder) else other
    ca, cb = base["correct"], other["correct"]
    if ca.shape != cb.shape:
        raise ValueError(f"Lens records differ in shape: {ca.shape} vs {cb.shape}.")
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    pa, pb = base["true_prob"].astype(np.float64), other["true_prob"].astype(np.float64)
    return {
        "accuracy": [
            {"layer": layer, **mcnemar_test(ca[:, layer], cb[:, layer], **boot).to_dict()}
            for layer in range(ca.shape[1])
        ],
        "true_class_probability": [
            {"layer": layer, **paired_bootstrap(pa[:, layer], pb[:, layer], **boot).to_dict()}
            for layer in range(ca.shape[1])
        ],
    }
