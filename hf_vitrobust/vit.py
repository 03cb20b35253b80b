"""The ViT layout the analyses rely on, checked up front, and eager attention on demand.

`check_vit_classifier` refuses any model that is not a CLS-token ViT classifier in the
transformers 5 layout (`model.vit.embeddings`, `model.vit.layers[i]` with
`attention.{q,k,v,o}_proj` and `layernorm_before`, `model.vit.layernorm`, one linear
`model.classifier`), so an analysis never produces silently wrong numbers on another layout.

Attention weights only exist under eager attention (transformers 5 ViTs default to sdpa, which
returns none); `eager_attention` switches a model to eager for a block and restores it after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

__all__ = ["ViTLayout", "check_vit_classifier", "eager_attention"]


@dataclass(frozen=True)
class ViTLayout:
    """Shape facts of a checked ViT classifier."""

    num_layers: int
    num_heads: int
    hidden_size: int
    num_labels: int
    grid: tuple[int, int]  # patch grid (rows, cols)

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid[0] * self.grid[1]


def check_vit_classifier(model: nn.Module, name: str = "model") -> ViTLayout:
    """Check that `model` is a CLS-token ViT classifier in the transformers 5 layout.

    The analyses read the CLS token (lens, rollout), the final layernorm and a linear
    classifier on it, and per-head attention weights; anything else is refused here
    rather than producing silently wrong numbers.
    """
    config = getattr(model, "config", None)
    vit = getattr(model, "vit", None)
    fix = (
        "Analysis supports transformers' ViTForImageClassification (CLS token, final "
        "layernorm, one linear classifier on the CLS token), e.g. google/vit-base-patch16-224 "
        "or a checkpoint fine-tuned from it."
    )
    if config is None or vit is None:
        raise ValueError(f"{name} ({type(model).__name__}) has no `.vit` backbone. {fix}")
    embeddings = getattr(vit, "embeddings", None)
    if embeddings is None or getattr(embeddings, "cls_token", None) is None:
        raise ValueError(f"{name} ({type(model).__name__}) has no CLS token. {fix}")
    extra_tokens = [t for t in ("distillation_token", "register_tokens") if hasattr(embeddings, t)]
    if extra_tokens:
        raise ValueError(
            f"{name} ({type(model).__name__}) has extra tokens {extra_tokens}: its head does not "
            f"read the CLS token alone. {fix}"
        )
    layers = getattr(vit, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"{name} ({type(model).__name__}) has no `vit.layers` (transformers 5 layout; older "
            f"code's `vit.encoder.layer` is not supported). {fix}"
        )
    for i, layer in enumerate(layers):
        attn = getattr(layer, "attention", None)
        if attn is None or not all(
            hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            raise ValueError(
                f"{name}: layer {i} has no `attention.{{q,k,v,o}}_proj` (different head layout). "
                f"{fix}"
            )
        if not isinstance(getattr(layer, "layernorm_before", None), nn.LayerNorm):
            raise ValueError(f"{name}: layer {i} has no `layernorm_before`. {fix}")
    if not isinstance(getattr(vit, "layernorm", None), nn.LayerNorm):
        raise ValueError(f"{name} has no final `vit.layernorm`. {fix}")
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"{name}: `classifier` is {type(classifier).__name__}, not one nn.Linear on the CLS "
            f"token (different head layout). {fix}"
        )
    if classifier.in_features != config.hidden_size:
        raise ValueError(
            f"{name}: the classifier reads {classifier.in_features} features, not the CLS token's "
            f"{config.hidden_size} (different head layout). {fix}"
        )
    heads = int(config.num_attention_heads)
    if int(layers[0].attention.num_attention_heads) != heads:
        raise ValueError(f"{name}: attention modules disagree with config.num_attention_heads.")
    patch = embeddings.patch_embeddings
    grid = (
        patch.image_size[0] // patch.patch_size[0],
        patch.image_size[1] // patch.patch_size[1],
    )
    return ViTLayout(
        num_layers=len(layers),
        num_heads=heads,
        hidden_size=int(config.hidden_size),
        num_labels=int(classifier.out_features),
        grid=grid,
    )


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with eager attention (which returns weights) and restore it afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous != "eager"
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if switch and previous is not None:
            model.set_attn_implementation(previous)
