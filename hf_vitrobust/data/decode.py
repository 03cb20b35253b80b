"""Files and bytes -> RGB uint8: the file side of the one RGB policy.

This module knows only about encoded images: it opens what a ``datasets`` Image column holds
(or bytes, a path, a PIL image), decodes it fully so that a truncated file fails here, applies
the EXIF orientation, and lets PIL convert the modes only PIL understands (CMYK, YCbCr, LAB,
palette, bilevel, ...). The pixel rules themselves (grey, alpha composited on white, 16-bit,
float) are ``hf_vitrobust.images.as_rgb_uint8``'s, the same for arrays and PIL images
everywhere in the package. Anything that cannot become an image raises ``BadImageError``, which
the collator counts and skips.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from hf_vitrobust.images import as_rgb_uint8

_EXIF_ORIENTATION = 0x0112
# Errors PIL (and as_rgb_uint8) raise for broken or unusable input.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    EOFError,
    PILImage.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image that cannot be decoded (corrupt, truncated, empty, unsupported mode)."""


def _open(value: Any) -> PILImage.Image:
    """The PIL image ``value`` holds, fully decoded (a truncated file fails here)."""
    if isinstance(value, PILImage.Image):
        image = value
    else:
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, path = bytes(value), None
        elif isinstance(value, (str, os.PathLike)):
            data, path = None, os.fspath(value)
        elif value is None:
            raise BadImageError("the image is missing (None).")
        else:
            raise BadImageError(f"cannot decode an image from a {type(value).__name__}.")
        if data:
            image = PILImage.open(io.BytesIO(data))
        elif path:
            image = PILImage.open(path)
        else:
            raise BadImageError("the image has neither bytes nor a path.")
    image.load()
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # rotate/flip as a viewer displays it
        image = ImageOps.exif_transpose(image)
    return image


def decode_image(value: Any) -> np.ndarray:
    """Decode one image to RGB uint8 ``(H, W, 3)``; raise ``BadImageError`` when it cannot be.

    Accepts what a ``datasets`` Image column holds (a ``{"bytes", "path"}`` dict, decoded or not),
    raw bytes, a file path, a PIL image or a numpy array. Grayscale, palette, CMYK, 16-bit,
    transparent (composited on white, like transformers' ``convert_to_rgb``) and EXIF-rotated
    images are all converted (by ``hf_vitrobust.images.as_rgb_uint8``'s rules); truncated or
    corrupt files, and arrays that policy refuses, raise ``BadImageError``.
    """
    try:
        image = value if isinstance(value, np.ndarray) else _open(value)
        return as_rgb_uint8(image)
    except BadImageError:
        raise
    except _DECODE_ERRORS as error:
        raise BadImageError(f"{type(error).__name__}: {error}") from error


__all__ = ["BadImageError", "decode_image"]
