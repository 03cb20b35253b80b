"""Building and loading ViT classifiers: Hub ids, local checkpoints, and fresh local configs."""

from __future__ import annotations

import difflib
import hashlib
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification
from transformers.models.vit import ViTImageProcessorPil

from hf_vitrobust.io import looks_local

logger = logging.getLogger(__name__)

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


def _three(values: float | Sequence[float], name: str) -> list[float]:
    """A scalar or 1/3 values as three per-channel floats."""
    items = [values] if isinstance(values, (int, float)) else list(values)
    if len(items) not in (1, 3):
        raise ValueError(f"{name} needs 1 or 3 values (RGB channels), got {items}.")
    out = [float(v) for v in items] * (3 if len(items) == 1 else 1)
    if name.endswith("std") and min(out) <= 0:
        raise ValueError(f"{name} must be > 0 on every channel, got {out}.")
    return out


def tiny_image_processor(
    image_size: int = 28,
    mean: float | Sequence[float] = FASHION_MNIST_MEAN,
    std: float | Sequence[float] = FASHION_MNIST_STD,
) -> ViTImageProcessorPil:
    """The image processor saved beside a fresh local model (size, mean and std of its data)."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=_three(mean, "image_mean"),
        image_std=_three(std, "image_std"),
    )


def tiny_vit(
    seed: int = 0, **config_kwargs: Any
) -> tuple[ViTForImageClassification, ViTImageProcessorPil]:
    """A randomly initialised tiny ViT and its processor (seeded)."""
    config = tiny_vit_config(**config_kwargs)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    return model, tiny_image_processor(config.image_size)


#: Keys of `model_config` that are not ViTConfig fields: the init seed and the processor's
#: normalisation ([0, 1] pixel scale, one value or one per RGB channel).
FRESH_MODEL_KEYS = ("seed", "image_mean", "image_std")


def model_config_keys() -> set[str]:
    """Every key `model_config` accepts: ViTConfig's fields, `tiny_vit_config`'s arguments and
    `FRESH_MODEL_KEYS`."""
    known = set(ViTConfig().to_dict()) | set(inspect.signature(tiny_vit_config).parameters)
    return (known | set(FRESH_MODEL_KEYS)) - {"kwargs"}


def check_model_config(config: Mapping[str, Any]) -> None:
    """Refuse unknown `model_config` keys (e.g. `hiden_size`) with a "did you mean"."""
    known = model_config_keys()
    unknown = sorted(set(config) - known)
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.6)
        parts.append(
            repr(key) + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
        )
    raise ValueError(
        f"model_config has unknown key(s) {', '.join(parts)}; it takes ViTConfig fields "
        f"(hidden_size, num_hidden_layers, image_size, patch_size, ...) and {list(FRESH_MODEL_KEYS)}."
    )


def build_fresh_model(
    model_config: Mapping[str, Any],
    id2label: dict[int, str] | None = None,
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
) -> tuple[ViTForImageClassification, ViTImageProcessorPil]:
    """A randomly initialised ViT from `model_config` and its processor.

    The normalisation is `model_config`'s `image_mean`/`image_std` when given, else the
    `image_mean`/`image_std` arguments (e.g. computed from the training data); one of the two
    is required, since no statistics fit every dataset.
    """
    cfg = dict(model_config)
    check_model_config(cfg)
    mean, std = cfg.pop("image_mean", image_mean), cfg.pop("image_std", image_std)
    if mean is None or std is None:
        raise ValueError(
            "A model built from model_config needs its normalisation: give image_mean and "
            "image_std in model_config (e.g. [0.5, 0.5, 0.5]), or let the fine-tuning recipe "
            "compute them from the training data."
        )
    if id2label is not None:
        cfg["id2label"] = id2label
    seed = int(cfg.pop("seed", 0))
    config = tiny_vit_config(**cfg)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    return model, tiny_image_processor(config.image_size, mean=mean, std=std)


def _is_hub_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~"))


def _check_weights(name: str, path: Path) -> None:
    """A checkpoint folder must hold safetensors weights; say which folders inside do."""
    if any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        return
    inside = sorted(
        p.name
        for p in path.iterdir()
        if (p.name == "final" or p.name.startswith("checkpoint-")) and p.is_dir()
    )
    raise FileNotFoundError(
        f"model_name_or_path {name!r}: the folder {str(path.resolve())!r} holds no "
        "model.safetensors (no model weights). Did you mean a checkpoint folder inside a run, "
        f"checkpoint-N or final? {f'It holds {inside}.' if inside else ''}".rstrip()
    )


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
    image_mean: float | Sequence[float] | None = None,
    image_std: float | Sequence[float] | None = None,
) -> tuple[ViTForImageClassification, Any]:
    """Load (or build) a ViT classifier and its image processor from `ModelArguments`.

    Weights load from safetensors only and never with remote code unless asked. A fresh model
    (`model_config`) gets `image_mean`/`image_std` from `model_config`, else from these
    arguments (`build_fresh_model`). A path that does not exist is "no such folder", not a Hub
    error.
    """
    name = model_args.model_name_or_path
    if name is None:
        model, processor = build_fresh_model(
            model_args.model_config or {}, id2label, image_mean=image_mean, image_std=image_std
        )
        model.set_attn_implementation(model_args.attn_implementation)
        return model, processor
    path = Path(name).expanduser()
    if path.is_file():
        raise NotADirectoryError(
            f"model_name_or_path {name!r} is a file; give the checkpoint folder (with config.json "
            "and model.safetensors) or a Hub id."
        )
    if path.is_dir():
        _check_weights(name, path)
    elif looks_local(name) or not _is_hub_id(name):
        raise FileNotFoundError(
            f"model_name_or_path {name!r}: no such folder (resolved to {path.resolve()}). Give "
            "an existing checkpoint folder, e.g. the output_dir of a finished fine-tune, or a "
            "Hub id such as google/vit-base-patch16-224."
        )
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
        if path.exists():
            raise
        message = hub_unreachable_message(name, error)
        raise OSError(f"No such local folder {name!r}, and: {message}") from error
    return model, processor


__all__ = [
    "config_identity",
    "weights_fingerprint",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FRESH_MODEL_KEYS",
    "build_fresh_model",
    "check_model_config",
    "hub_unreachable_message",
    "load_model_and_processor",
    "tiny_image_processor",
    "tiny_vit",
    "tiny_vit_config",
]


#: Config fields that do not change what a model computes from its weights.
_CONFIG_SKIP = ("transformers_version", "torch_dtype", "dtype", "architectures")


def config_identity(config: Any) -> dict[str, Any]:
    """The config fields that define a model (private ``_*`` and version-only keys dropped)."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in values.items() if not k.startswith("_") and k not in _CONFIG_SKIP}


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, digest_bytes: int = 16) -> str:
    """BLAKE2b hex digest of a model's state dict (every tensor's name, dtype, shape and bytes,
    in name order) and its config: what was loaded, whether from a folder, the Hub or memory.

    A checkpoint retrained in place gets another fingerprint (~0.5 s for ViT-B/16 on one core).
    """
    h = hashlib.blake2b(digest_size=digest_bytes)
    h.update(repr(sorted(config_identity(model.config).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
