"""Attention analyses: per-head entropy, attention rollout and Grad-CAM for ViT.

Definitions (docs/definitions.md):

- entropy of a head = mean over queries i of -sum_j A_ij ln A_ij (nats, fp32); the
  CLS-query row alone (i = 0) is reported beside it;
- rollout: average the heads, A~ = 0.5 A + 0.5 I, row-normalise, R <- A~ R over layers;
  the map is R[CLS, patches] on the patch grid;
- Grad-CAM: activations and gradients at the input of the last block's first layernorm
  (tokens after the last block get no gradient to the patches), CLS dropped, channels
  weighted by the token-mean gradient of the true-class logit, ReLU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_vitrobust.vit import check_vit_classifier

__all__ = [
    "attention_entropy",
    "rollout_step",
    "rollout_matrix",
    "RolloutAccumulator",
    "grad_cam",
    "EntropyRecorder",
    "summarize_entropy",
]


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in nats (fp32) of each attention row: [..., T_q, T_k] -> [..., T_q].

    Uses xlogy so that a zero weight contributes 0 (the limit of p ln p), not NaN.
    """
    p = weights.float()
    return -torch.special.xlogy(p, p).sum(dim=-1)


def rollout_step(weights: torch.Tensor) -> torch.Tensor:
    """One layer's rollout factor: heads averaged, 0.5 A + 0.5 I, rows normalised.

    `weights` is [B, H, T, T]; returns [B, T, T] in fp32.
    """
    a = weights.float().mean(dim=1)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    a = 0.5 * a + 0.5 * eye
    return a / a.sum(dim=-1, keepdim=True)


def rollout_matrix(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout R = A~_L ... A~_1 from per-layer weights [B, H, T, T]: [B, T, T]."""
    acc = RolloutAccumulator()
    for weights in attentions:
        acc.update(weights)
    if acc.matrix is None:
        raise ValueError("rollout_matrix needs at least one layer of attention weights.")
    return acc.matrix


class RolloutAccumulator:
    """R <- A~ R, one layer at a time (the product lives only as long as its batch)."""

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None

    def update(self, weights: torch.Tensor) -> None:
        step = rollout_step(weights)
        self.matrix = step if self.matrix is None else torch.bmm(step, self.matrix)

    def cls_map(self, grid: tuple[int, int]) -> torch.Tensor:
        """R[CLS, patches] reshaped to the patch grid: [B, rows, cols]."""
        if self.matrix is None:
            raise RuntimeError("No attention layer was seen.")
        return self.matrix[:, 0, 1:].reshape(-1, *grid)


def grad_cam(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Grad-CAM of the `labels` logit at the input of the last block's `layernorm_before`.

    Returns [B, rows, cols] (fp32, >= 0, not normalised). Works under any attention
    implementation; the model is put in eval mode for the pass and restored.
    """
    layout = check_vit_classifier(model)
    grid = grid or layout.grid
    target = model.vit.layers[-1].layernorm_before
    store: dict[str, torch.Tensor] = {}

    def keep_input(_module: nn.Module, args: tuple) -> None:
        store["act"] = args[0]

    was_training = model.training
    model.eval()
    handle = target.register_forward_pre_hook(keep_input)
    try:
        with torch.enable_grad():
            # A leaf that needs grad guarantees a graph even if parameters are frozen.
            x = pixel_values.detach().clone().requires_grad_(True)
            logits = model(pixel_values=x).logits
            chosen = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
            act = store["act"]
            (grad,) = torch.autograd.grad(chosen, act)
    finally:
        handle.remove()
        model.train(was_training)
    act = act.detach()[:, 1:].float()  # drop CLS
    grad = grad.detach()[:, 1:].float()
    alpha = grad.mean(dim=1, keepdim=True)  # [B, 1, D]: token-mean gradient per channel
    cam = torch.relu((act * alpha).sum(dim=-1))  # [B, N]
    return cam.reshape(-1, *grid)


class EntropyRecorder:
    """Per-image attention entropies of one model on one condition, accumulated over batches.

    `arrays()`: `all_queries` and `cls_query`, each [N, L, H] float32 nats (one row per image;
    gathered across processes by the caller).
    """

    KINDS = ("all_queries", "cls_query")

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in self.KINDS}

    def update(self, entropy: torch.Tensor, cls_entropy: torch.Tensor) -> None:
        """Add a batch of [B, L, H] entropies (all queries, CLS-query row)."""
        self._parts["all_queries"].append(entropy.float().cpu().numpy())
        self._parts["cls_query"].append(cls_entropy.float().cpu().numpy())

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-image records so far (see the class docstring)."""
        if not self._parts["all_queries"]:
            raise ValueError("EntropyRecorder has seen no batch.")
        return {kind: np.concatenate(parts) for kind, parts in self._parts.items()}

    def values(self, kind: str) -> np.ndarray:
        """`kind` "all_queries" or "cls_query": [N, L, H] float32."""
        return self.arrays()[kind]


def summarize_entropy(records: Mapping[str, np.ndarray] | EntropyRecorder) -> dict[str, Any]:
    """Mean entropy per layer x head (nats; rows = blocks 1..L) for both kinds."""
    if isinstance(records, EntropyRecorder):
        records = records.arrays()
    return {
        kind: records[kind].astype(np.float64).mean(axis=0).tolist()
        for kind in EntropyRecorder.KINDS
    }
