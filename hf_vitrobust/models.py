"""Building and loading ViT classifiers: Hub ids, local checkpoints, and tiny local configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification
from transformers.models.vit import ViTImageProcessorPil

# Fashion-MNIST pixel statistics (train split, [0, 1] scale), used by tiny
# local models so that their processor normalises like a real checkpoint's.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


def tiny_vit_config(
    num_labels: int = 10,
    image_size: int = 28,
    patch_size: int = 7,
    hidden_size: int = 96,
    num_hidden_layers: int = 6,
    num_attention_heads: int = 3,
    intermediate_size: int = 384,
    id2label: dict[int, str] | None = None,
    **kwargs: Any,
) -> ViTConfig:
    """A small ViT config built locally (no Hub); defaults are the offline study's 0.7 M model."""
    if id2label is None:
        id2label = {i: str(i) for i in range(num_labels)}
    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        num_labels=len(id2label),
        id2label={int(k): v for k, v in id2label.items()},
        label2id={v: int(k) for k, v in id2label.items()},
        **kwargs,
    )


def tiny_image_processor(
    image_size: int = 28,
    mean: float = FASHION_MNIST_MEAN,
    std: float = FASHION_MNIST_STD,
) -> ViTImageProcessorPil:
    """The image processor saved beside a tiny local model (size, mean and std of its data)."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[mean] * 3,
        image_std=[std] * 3,
    )


def tiny_vit(
    seed: int = 0, **config_kwargs: Any
) -> tuple[ViTForImageClassification, ViTImageProcessorPil]:
    """A randomly initialised tiny ViT and its processor (seeded)."""
    config = tiny_vit_config(**config_kwargs)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    return model, tiny_image_processor(config.image_size)


def hub_unreachable_message(name: str, error: BaseException) -> str:
    """Why a model id could not be loaded, and the offline alternatives."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return (
        f"Could not load {name!r} from the Hugging Face Hub"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {type(error).__name__}: {error}. "
        "Use a local checkpoint folder instead (a path containing config.json and "
        "model.safetensors), or build a tiny local model with `model_config:` in the recipe "
        "(see recipes/fashion-mnist-tiny/base.yaml)."
    )


def load_model_and_processor(
    model_args: Any,
    id2label: dict[int, str] | None = None,
) -> tuple[ViTForImageClassification, Any]:
    """Load (or build) a ViT classifier and its image processor from `ModelArguments`.

    Weights load from safetensors only and never with remote code unless asked.
    """
    name = model_args.model_name_or_path
    if name is None:
        cfg = dict(model_args.model_config or {})
        if id2label is not None:
            cfg["id2label"] = id2label
        seed = int(cfg.pop("seed", 0))
        model, processor = tiny_vit(seed=seed, **cfg)
        model.set_attn_implementation(model_args.attn_implementation)
        return model, processor
    kwargs: dict[str, Any] = dict(
        use_safetensors=True,
        trust_remote_code=bool(getattr(model_args, "trust_remote_code", False)),
        attn_implementation=model_args.attn_implementation,
    )
    if id2label is not None:
        kwargs.update(
            num_labels=len(id2label),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True,
        )
    try:
        model = ViTForImageClassification.from_pretrained(name, **kwargs)
        processor = AutoImageProcessor.from_pretrained(
            name, trust_remote_code=kwargs["trust_remote_code"]
        )
    except OSError as error:
        if Path(name).exists():
            raise
        raise OSError(hub_unreachable_message(name, error)) from error
    return model, processor


__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "hub_unreachable_message",
    "load_model_and_processor",
    "tiny_image_processor",
    "tiny_vit",
    "tiny_vit_config",
]
