"""Calibrating a BatchTopK SAE's inference (JumpReLU) threshold on held-out activations.

sae-lens' ``BatchTopKTrainingSAE`` keeps the threshold its saved JumpReLU SAE uses as a running
average of each batch's smallest kept activation, starting at 0 with rate ``topk_threshold_lr``
(0.01): after ``s`` steps the start still weighs ``0.99**s`` (37% after 100 steps), so a short run
saves a threshold far below its target and the JumpReLU SAE fires many more than ``k`` features.

The calibrated threshold is the one that makes the inference L0 on held-out activations equal to
``k``: over ``N`` held-out tokens, the pre-activations (the JumpReLU SAE's ``hidden_pre``,
decoder norms folded in) above it number ``k·N`` — the batch top-k threshold of one batch holding
all ``N`` tokens. It is found exactly by streaming: :class:`LargestValues` keeps the ``k·N + 1``
largest pre-activations seen, and the threshold is the midpoint of the two smallest of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: The tolerance of the quality bar: held-out inference L0 within ±10% of k.
L0_TOLERANCE = 0.10
#: Largest number of pre-activations held at once (k · calibration tokens); ~4 bytes each.
MAX_KEPT_VALUES = 200_000_000


class LargestValues:
    """The ``count`` largest values of a stream of tensors (exact; memory ``O(count)``)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count={count} must be >= 1.")
        if count > MAX_KEPT_VALUES:
            raise ValueError(
                f"calibration would keep {count:,} values (k x calibration tokens); lower "
                f"calibration_images (or k) so that it stays under {MAX_KEPT_VALUES:,}."
            )
        self.count = int(count)
        self.values = torch.empty(0)

    def update(self, values: torch.Tensor) -> None:
        flat = values.detach().reshape(-1).float().cpu()
        if self.values.numel() >= self.count:
            # Only values above the current count-th largest can enter.
            flat = flat[flat > self.values.min()]
        if flat.numel() == 0:
            return
        merged = torch.cat([self.values, flat])
        if merged.numel() > self.count:
            merged = merged.topk(self.count, sorted=False).values
        self.values = merged


@torch.no_grad()
def pre_activations(inference_sae: Any, x: torch.Tensor) -> torch.Tensor:
    """The JumpReLU SAE's ``hidden_pre`` of ``[n, d_in]`` activations (what its threshold cuts)."""
    sae_in = inference_sae.process_sae_in(x.to(inference_sae.device))
    return sae_in @ inference_sae.W_enc + inference_sae.b_enc


def set_threshold(training_sae: Any, inference_sae: Any, threshold: float) -> None:
    """Give both forms of a BatchTopK SAE the same global threshold.

    The training SAE's ``topk_threshold`` (decoder norms and the activation scaling already folded
    in by ``fit``) is what ``save_inference_model`` writes as the JumpReLU threshold, so saving
    the training SAE afterwards gives the calibrated inference SAE.
    """
    training_sae.topk_threshold = torch.tensor(
        float(threshold), dtype=training_sae.topk_threshold.dtype, device=training_sae.device
    )
    inference_sae.threshold.data.fill_(float(threshold))


class ThresholdCalibrator:
    """Calibrates one BatchTopK SAE's inference threshold from streamed held-out activations.

    ``update`` takes ``[..., d_in]`` activations, ``n_tokens`` in all (known in advance: the exact
    search keeps ``k·n_tokens + 1`` values); ``finish`` sets the threshold on both forms of the SAE
    and returns the running threshold sae-lens learned, the calibrated one, and the L0 of each
    on these tokens.
    """

    def __init__(
        self, training_sae: Any, inference_sae: Any, k: float, n_tokens: int, chunk_size: int = 8192
    ) -> None:
        self.training_sae = training_sae
        self.inference_sae = inference_sae
        self.k = float(k)
        self.n_tokens = int(n_tokens)
        self.target = int(round(self.k * self.n_tokens))
        if self.target < 1:
            raise ValueError(f"k={k} x {n_tokens} calibration tokens keeps no feature active.")
        self.chunk_size = int(chunk_size)
        self.running = float(inference_sae.threshold.detach().flatten()[0])
        self.top = LargestValues(self.target + 1)
        self.seen = 0
        self.above_running = 0

    @torch.no_grad()
    def update(self, acts: torch.Tensor) -> None:
        flat = acts.reshape(-1, acts.shape[-1])
        for i in range(0, len(flat), self.chunk_size):
            hidden = pre_activations(self.inference_sae, flat[i : i + self.chunk_size]).relu()
            self.above_running += int((hidden > self.running).sum())
            self.top.update(hidden)
            self.seen += hidden.shape[0]

    def finish(self) -> dict[str, Any]:
        if self.seen != self.n_tokens:
            raise ValueError(f"calibration saw {self.seen} tokens, expected {self.n_tokens}.")
        kept = self.top.values.sort(descending=True).values
        if kept.numel() <= self.target or float(kept[self.target]) <= 0:
            # No more than k·N positive pre-activations: every positive one fires.
            threshold = 0.0
        else:
            threshold = float((kept[self.target - 1] + kept[self.target]) / 2)
        set_threshold(self.training_sae, self.inference_sae, threshold)
        return {
            "k": self.k,
            "running_threshold": self.running,
            "calibrated_threshold": threshold,
            "calibration_tokens": self.n_tokens,
            "l0_running_threshold": self.above_running / self.n_tokens,
            "l0_calibrated": float(int((kept > threshold).sum())) / self.n_tokens,
        }


def calibrate_threshold(
    training_sae: Any,
    inference_sae: Any,
    activation_chunks: Iterable[torch.Tensor],
    n_tokens: int,
    k: float,
) -> dict[str, Any]:
    """:class:`ThresholdCalibrator` over ``activation_chunks`` (``n_tokens`` in all)."""
    calibrator = ThresholdCalibrator(training_sae, inference_sae, k, n_tokens)
    for chunk in activation_chunks:
        calibrator.update(chunk)
    return calibrator.finish()


def l0_check(l0: float, k: float | None, tolerance: float = L0_TOLERANCE) -> dict[str, Any]:
    """Held-out inference L0 against ``k``: the ratio and whether it is within ``±tolerance``."""
    if k is None:
        return {"k": None, "l0_over_k": None, "l0_within_tolerance": None}
    ratio = float(l0) / float(k)
    return {
        "k": float(k),
        "l0_over_k": ratio,
        "l0_tolerance": tolerance,
        "l0_within_tolerance": bool(abs(ratio - 1) <= tolerance),
    }


__all__ = [
    "L0_TOLERANCE",
    "LargestValues",
    "ThresholdCalibrator",
    "calibrate_threshold",
    "l0_check",
    "pre_activations",
    "set_threshold",
]
