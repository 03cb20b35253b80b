"""The one RGB policy: any in-memory image -> (H, W, 3) uint8, C-contiguous.

Used by the corruptions (arrays a user passes) and by ``data.decode`` (files and bytes, after
PIL has opened them), so the same input becomes the same pixels everywhere:

- grey (H, W) / (H, W, 1) is replicated to three channels; RGBA and LA are composited on white
  (transformers' ``convert_to_rgb`` rule), never silently dropped;
- uint8 is kept; other integer images are read as 0..255 when their values fit, otherwise
  scaled by 255 / 65535 (16-bit); bool is 0/255; float in [0, 1] is scaled by 255, float in
  [0, 255] is rounded;
- anything else (negative values, NaN, channels-first arrays, other shapes) is a ``ValueError``
  that says how to fix the input.

A leaf: imports nothing from the package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as PILImage


def composite_on_white(image: PILImage.Image) -> PILImage.Image:
    """An RGB copy of ``image`` with transparent pixels over a white background."""
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def to_uint8_range(array: np.ndarray) -> np.ndarray:
    """Integer, bool or float pixel values -> uint8 by the rules in the module docstring."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("float image contains NaN or infinity.")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 255.0:
            raise ValueError(
                f"float image values lie in [{lo:.3g}, {hi:.3g}]; expected [0, 1] (or 0..255)."
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0:
            raise ValueError(f"integer image of dtype {array.dtype} has negative values ({lo}).")
        if hi <= 255:  # 8-bit values stored in a wider type (e.g. a 16-bit PNG of 0..255)
            return array.astype(np.uint8)
        if hi > 65535:
            raise ValueError(
                f"integer image of dtype {array.dtype} has values up to {hi}, above 16-bit; "
                "rescale it to uint8 (0..255) first."
            )
        # 16-bit data spans 0..65535: divide by 257 so 65535 -> 255 exactly.
        return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}; use uint8 or float in [0, 1].")


def as_rgb_uint8(image: Any, min_side: int = 1) -> np.ndarray:
    """``image`` (numpy array or PIL image) as an (H, W, 3) uint8 C-contiguous array.

    Raises ``ValueError`` naming the problem and the fix; ``min_side`` is the smallest height
    and width accepted.
    """
    if isinstance(image, PILImage.Image):
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            image.mode == "P" and "transparency" in image.info
        ):
            image = composite_on_white(image)
        elif image.mode.startswith("I;16") or image.mode in ("I", "F"):
            image = np.asarray(image)
        elif image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(
            f"image must be a numpy array (H, W[, C]) or a PIL image, got {type(image).__name__}."
        )
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image has shape {array.shape}, which looks channels-first (C, H, W); "
            "pass (H, W, C), e.g. image.transpose(1, 2, 0)."
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}."
        )
    h, w = array.shape[:2]
    if h < max(min_side, 1) or w < max(min_side, 1):
        raise ValueError(
            f"image is {h}x{w}; at least {max(min_side, 1)}x{max(min_side, 1)} pixels are needed "
            "(resize it first)."
        )
    array = to_uint8_range(array)
    if array.shape[2] == 4:
        array = np.asarray(
            composite_on_white(PILImage.fromarray(np.ascontiguousarray(array), "RGBA"))
        )
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array, dtype=np.uint8)


__all__ = ["as_rgb_uint8", "composite_on_white", "to_uint8_range"]
