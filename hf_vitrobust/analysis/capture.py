"""One forward pass per model per batch that reduces activations inside hooks.

`ActivationCapture` installs forward hooks on the transformers 5 ViT layout
(`model.vit.embeddings`, `model.vit.layers[i]`, `model.vit.layers[i].attention`)
and keeps only small per-batch reductions: the CLS token and the mean of the
patch tokens of every hidden state, per-head attention entropies, the CLS row
of the attention rollout, and (on request, for activation patching) the hidden
states themselves. Attention weights (tokens × tokens) are reduced in the hook
that sees them and never outlive their layer; the rollout product lives only
until the end of its batch.

Attention weights only exist under eager attention (sdpa returns none in
transformers 5), so the capture switches the model to eager for its own forward
pass only, when it reduces attention (entropy or rollout), and restores the
previous implementation right after (`hf_vitrobust.vit.eager_attention`): every
other pass (activation patching, Grad-CAM, a capture without attention) keeps
sdpa.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_vitrobust.analysis.attention import RolloutAccumulator, attention_entropy
from hf_vitrobust.analysis.lens import lens_logits
from hf_vitrobust.vit import check_vit_classifier, eager_attention

__all__ = ["BatchCapture", "ActivationCapture", "capture_batch"]


@dataclass
class BatchCapture:
    """Reductions of one batch through one model (all on CPU unless noted).

    Hidden-state indices follow `output_hidden_states`: 0 = embeddings, l = output of
    block l, L = last block's output (before the final layernorm).
    """

    logits: torch.Tensor  # [B, C] the model's own logits
    cls: torch.Tensor  # [L+1, B, D] CLS token of each hidden state
    patch_mean: torch.Tensor  # [L+1, B, D] mean over patch tokens of each hidden state
    lens_logits: torch.Tensor  # [L+1, B, C]
    entropy: torch.Tensor | None = None  # [B, L, H] nats, mean over all queries
    cls_entropy: torch.Tensor | None = None  # [B, L, H] nats, CLS-query row
    rollout: torch.Tensor | None = None  # [B, gh, gw] rollout R[CLS, patches]
    hidden: torch.Tensor | None = None  # [L+1, B, T, D] (only when keep_hidden)


class ActivationCapture:
    """Hooks that reduce one ViT's activations on the fly; use as a context manager.

    >>> with ActivationCapture(model, rollout=True) as cap:   # doctest: +SKIP
    ...     out = cap(pixel_values)                            # a BatchCapture
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        entropy: bool = True,
        rollout: bool = False,
        keep_hidden: bool = False,
        name: str = "model",
    ) -> None:
        self.model = model
        self.layout = check_vit_classifier(model, name)
        self.entropy = entropy
        self.rollout = rollout
        self.keep_hidden = keep_hidden
        self._handles: list[Any] = []
        self._active = False  # hooks act only inside __call__ (not during patching runs)
        self._was_training = False
        self._reset()

    # -- hook state, reset per batch -------------------------------------------------
    def _reset(self) -> None:
        self._cls: list[torch.Tensor] = []
        self._patch: list[torch.Tensor] = []
        self._hidden: list[torch.Tensor] = []
        self._ent: list[torch.Tensor] = []
        self._cls_ent: list[torch.Tensor] = []
        self._rollout = RolloutAccumulator() if self.rollout else None

    def _on_hidden(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not self._active:
            return
        h = output[0] if isinstance(output, tuple) else output
        h = h.detach()
        self._cls.append(h[:, 0])
        self._patch.append(h[:, 1:].mean(dim=1))
        if self.keep_hidden:
            self._hidden.append(h)

    def _on_attention(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not self._active:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError(
                "Attention weights are unavailable: the model is not running eager attention "
                "(ActivationCapture switches to eager for its own passes; was the hooked "
                "attention module called from somewhere else?)."
            )
        weights = weights.detach()
        if self.entropy:
            per_query = attention_entropy(weights)  # [B, H, T] fp32
            self._ent.append(per_query.mean(dim=-1))
            self._cls_ent.append(per_query[:, :, 0])
        if self._rollout is not None:
            self._rollout.update(weights)
        # `weights` (tokens x tokens) goes out of scope here.

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> ActivationCapture:
        vit = self.model.vit
        self._was_training = self.model.training
        self.model.eval()
        self._handles.append(vit.embeddings.register_forward_hook(self._on_hidden))
        for layer in vit.layers:
            self._handles.append(layer.register_forward_hook(self._on_hidden))
            if self.entropy or self.rollout:
                self._handles.append(layer.attention.register_forward_hook(self._on_attention))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.model.train(self._was_training)
        self._reset()

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> BatchCapture:
        """Run one forward pass on `pixel_values` [B, 3, H, W] and return its reductions."""
        if not self._handles:
            raise RuntimeError("ActivationCapture must be used inside a `with` block.")
        self._reset()
        needs_weights = self.entropy or self.rollout
        self._active = True
        try:
            with eager_attention(self.model) if needs_weights else nullcontext():
                logits = self.model(pixel_values=pixel_values).logits
            self._active = False
            expected = self.layout.num_layers + 1
            if len(self._cls) != expected:
                raise RuntimeError(
                    f"Captured {len(self._cls)} hidden states, expected {expected}: the forward "
                    "pass did not go through every layer once."
                )
            cls = torch.stack(self._cls)
            out = BatchCapture(
                logits=logits.detach(),
                cls=cls,
                patch_mean=torch.stack(self._patch),
                lens_logits=lens_logits(self.model, cls),
            )
            if self.entropy:
                out.entropy = torch.stack(self._ent, dim=1)
                out.cls_entropy = torch.stack(self._cls_ent, dim=1)
            if self._rollout is not None:
                out.rollout = self._rollout.cls_map(self.layout.grid)
            if self.keep_hidden:
                out.hidden = torch.stack(self._hidden)
            return out
        finally:
            self._active = False
            self._reset()


def capture_batch(model: nn.Module, pixel_values: torch.Tensor, **kwargs: Any) -> BatchCapture:
    """One-shot `ActivationCapture` (installs hooks, runs one batch, removes them)."""
    with ActivationCapture(model, **kwargs) as cap:
        return cap(pixel_values)
