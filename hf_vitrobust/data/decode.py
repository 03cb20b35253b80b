"""Files and bytes -> RGB uint8: the file side of the one RGB policy, and batch decoding.

This module knows only about encoded images: it opens what a ``datasets`` Image column holds
(or bytes, a path, a PIL image), decodes it fully so that a truncated file fails here, applies
the EXIF orientation, and lets PIL convert the modes only PIL understands (CMYK, YCbCr, LAB,
palette, bilevel, ...). The pixel rules themselves (grey, alpha composited on white, 16-bit by
its actual range, float) are ``hf_vitrobust.images.as_rgb_uint8``'s, the same for arrays and PIL
images everywhere in the package. Colour images with 16 bits per channel (PNG, TIFF), which PIL
silently truncates to their high bytes (a 16-bit PNG of 0..255 values becomes black), are read
at full depth with OpenCV first. Anything that cannot become an image raises
``BadImageError``.

``decode_examples`` is the one decode-a-batch loop of the package (training collator, analysis
collator, evaluation, pre-flight check): undecodable examples come back as ``BadImage(path,
reason)`` keyed by example id, for a ``BadImageTracker`` in the main process to count.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from hf_vitrobust.images import as_rgb_uint8, to_uint8_range

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
# Errors PIL, OpenCV (and as_rgb_uint8) raise for broken or unusable input.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    EOFError,
    PILImage.DecompressionBombError,
    cv2.error,
)
# PIL names an in-memory file by its repr, which says nothing to a user.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
# numpy equivalents of the EXIF orientations 2..8 (what ImageOps.exif_transpose does).
_ORIENT: dict[int, Any] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 1)[::-1],
    8: lambda a: np.rot90(a, 1),
}


class BadImageError(ValueError):
    """An image that cannot be decoded (corrupt, truncated, empty, unsupported mode)."""


class BadImage(NamedTuple):
    """Why one example could not be decoded: its file path (None for in-memory bytes)."""

    path: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


def _source(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) of what an Image column (or a user) holds."""
    if isinstance(value, Mapping):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, (str, os.PathLike)):
        return None, os.fspath(value)
    if value is None:
        raise BadImageError("the image is missing (None).")
    raise BadImageError(f"cannot decode an image from a {type(value).__name__}.")


def image_path(value: Any) -> str | None:
    """The file path an image value names (a ``{"bytes", "path"}`` dict or a path), else None."""
    if isinstance(value, Mapping):
        path = value.get("path")
        return str(path) if path else None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return None


def _deep_colour(image: PILImage.Image, data: bytes | None, path: str | None) -> np.ndarray | None:
    """A 16-bit-per-channel colour image at full depth (RGB[A] uint16), or None for others."""
    tile = getattr(image, "tile", None) or []
    rawmode = (
        str(tile[0].args[0] if isinstance(tile[0].args, tuple) else tile[0].args) if tile else ""
    )
    if image.mode not in ("RGB", "RGBA", "LA") or ";16" not in rawmode:
        return None
    if data is None:
        with open(path, "rb") as handle:  # type: ignore[arg-type]
            data = handle.read()
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise BadImageError(f"OpenCV could not decode this 16-bit {image.format} image.")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # OpenCV is BGR(A)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        # Colour and alpha each by their own range: an opaque alpha (65535) must not make
        # 0..255 colour values look like 16-bit ones.
        array = np.dstack([to_uint8_range(array[..., :-1]), to_uint8_range(array[..., -1])])
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(array))


def _open(value: Any) -> PILImage.Image | np.ndarray:
    """The image ``value`` holds, fully decoded (a truncated file fails here)."""
    if isinstance(value, PILImage.Image):
        image = value
    else:
        data, path = _source(value)
        if data:
            image = PILImage.open(io.BytesIO(data))
        elif path:
            image = PILImage.open(path)
        else:
            raise BadImageError("the image has neither bytes nor a path.")
        deep = _deep_colour(image, data or None, path)
        if deep is not None:
            return deep
    image.load()
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # rotate/flip as a viewer displays it
        image = ImageOps.exif_transpose(image)
    return image


def decode_image(value: Any) -> np.ndarray:
    """Decode one image to RGB uint8 ``(H, W, 3)``; raise ``BadImageError`` when it cannot be.

    Accepts what a ``datasets`` Image column holds (a ``{"bytes", "path"}`` dict, decoded or not),
    raw bytes, a file path, a PIL image or a numpy array. Grayscale, palette, CMYK, 16-bit (grey
    and colour, scaled by their actual range), transparent (composited on white, like
    transformers' ``convert_to_rgb``) and EXIF-rotated images are all converted (by
    ``hf_vitrobust.images.as_rgb_uint8``'s rules); truncated or corrupt files, and arrays that
    policy refuses, raise ``BadImageError``.
    """
    try:
        image = value if isinstance(value, np.ndarray) else _open(value)
        return as_rgb_uint8(image)
    except BadImageError:
        raise
    except _DECODE_ERRORS as error:
        message = _BUFFER_REPR.sub("in-memory bytes", str(error))
        raise BadImageError(f"{type(error).__name__}: {message}") from error


def _rows(examples: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[Mapping]:
    """Examples as a list of rows (``datasets``' ``iter(batch_size)`` gives a dict of columns)."""
    if isinstance(examples, Mapping):
        columns = list(examples)
        return [dict(zip(columns, values)) for values in zip(*(examples[c] for c in columns))]
    return list(examples)


def decode_examples(
    examples: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    spec: Any = None,
    *,
    num_labels: int | None = None,
) -> tuple[list[np.ndarray], list[int], list[int], dict[int, BadImage]]:
    """Decode a batch: ``(images, labels, example_ids, bad)``.

    ``examples``: rows with ``image``, ``label`` and ``example_id`` (the position in the batch
    when absent), or ``datasets``' dict of columns. ``images`` are RGB uint8 ``(H, W, 3)``,
    resized (and centre-cropped) to the model's input by ``spec`` (a ``ProcessorSpec``) when
    given, else at their own size; ``labels`` and ``example_ids`` are aligned with them. ``bad``
    maps the id of every undecodable example to ``BadImage(path, reason)``; it is skipped with a
    warning naming its file. A label outside ``[0, num_labels)`` (or missing) is a
    ``ValueError`` naming the example, not a bad image: the data is wrong, not the file.
    """
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[int] = []
    bad: dict[int, BadImage] = {}
    for position, example in enumerate(_rows(examples)):
        example_id = int(example.get("example_id", position))
        value = example["image"]
        try:
            image = decode_image(value)
        except BadImageError as error:
            bad[example_id] = BadImage(image_path(value), str(error))
            logger.warning(
                "Skipping undecodable image %s (example id %d): %s",
                bad[example_id].path or "(in-memory bytes)",
                example_id,
                error,
            )
            continue
        label = example.get("label")
        if label is None or not 0 <= int(label) < (num_labels or sys.maxsize):
            raise ValueError(
                f"Example {example_id} ({image_path(value) or 'no file path'}) has label "
                f"{label!r}, outside [0, {num_labels or 'num_labels'}) (the model's num_labels); "
                "check the label column and the model's classes."
            )
        images.append(spec.resize_uint8(image) if spec is not None else image)
        labels.append(int(label))
        ids.append(example_id)
    return images, labels, ids, bad


__all__ = ["BadImage", "BadImageError", "decode_examples", "decode_image", "image_path"]
