"""The evaluation's metric definitions on per-image records, and the shipped `evaluate` module.

Every number in ``results.json`` is built from four per-image quantities (``per_image_outputs``:
the true label's rank, its probability, its NLL and the top-1 confidence), so aggregates and
their bootstrap CIs resample images. ``DEFINITIONS`` (docs/definitions.md, "Accuracy and
certainty") is written into ``results.json`` beside the numbers.

``top_k_accuracy.py`` in this folder is the same top-k definition as an ``evaluate`` metric,
shipped inside the package and loaded by path (``load_top_k_metric``), so it works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The shipped `evaluate` metric module (load with `load_top_k_metric()`).
TOP_K_METRIC_PATH = Path(__file__).parent / "top_k_accuracy.py"
ECE_BINS = 15
MEAN_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy", "p_true", "nll")
ACCURACY_KS = {"top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10}

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


def load_top_k_metric() -> Any:
    """The shipped top-k accuracy `evaluate` metric, loaded by path (works offline)."""
    import evaluate  # ~4 s (it imports transformers' pipelines): only when the metric is used

    return evaluate.load(str(TOP_K_METRIC_PATH))


def per_image_outputs(logits: Any, labels: Any) -> dict[str, np.ndarray]:
    """Per-image quantities from logits [B, C] and labels [B] (torch or numpy), in float32.

    `rank`: number of classes with a strictly larger logit than the true class (top-k correct
    iff rank < k, the shipped metric's definition); `p_true`; `nll` = -log softmax[true];
    `confidence` = top-1 softmax probability.
    """
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


__all__ = [
    "ACCURACY_KS",
    "CORRUPTION_NOTE",
    "DEFINITIONS",
    "ECE_BINS",
    "MEAN_METRICS",
    "TOP_K_METRIC_PATH",
    "ece_bin_sums",
    "ece_statistic",
    "expected_calibration_error",
    "load_top_k_metric",
    "per_image_outputs",
]
