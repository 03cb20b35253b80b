"""Applying corruptions to images: ``corrupt`` (one image), ``corrupt_batch``, ``corrupt_examples``.

Seeds: an image corrupted with ``seed=s`` is the same pixels wherever it is corrupted. Per-image
seeds of a batch come only from :func:`hf_vitrobust.seeding.image_seed`, keyed on the example id
(``corrupt_examples``; ``corrupt_batch`` with one int seed uses the batch index as the id).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np

from hf_vitrobust.corruptions.functional import REFERENCE_SIZE
from hf_vitrobust.corruptions.registry import (
    CORRUPTIONS,
    MIN_SIDE,
    check_reference_size,
    check_severity,
    get_corruption,
)
from hf_vitrobust.corruptions.rng import fresh_seed, reseed
from hf_vitrobust.images import as_rgb_uint8
from hf_vitrobust.seeding import image_seed

# Built transforms, cached per thread and (name, severity, reference_size): building an
# Albumentations transform runs validation, more than many corruptions take on a small image. A
# call reseeds the cached transform with reseed(), which costs a few microseconds.
_CACHE = threading.local()


def _entry(name: str, severity: int, reference_size: int | None) -> tuple[A.BasicTransform, bool]:
    """(cached transform, stochastic) for a validated name, severity and reference size."""
    cache: dict[tuple[str, int, int | None], tuple] | None = getattr(_CACHE, "transforms", None)
    if cache is None:
        cache = _CACHE.transforms = {}
    key = (name, severity, reference_size)
    entry = cache.get(key)
    if entry is None:
        corruption = CORRUPTIONS[name]
        t = corruption.build(severity, reference_size)
        t.set_random_seed(0)  # own generators, not shared with anything else
        entry = cache[key] = (t, corruption.stochastic)
    return entry


def check_seed(seed: Any) -> int | None:
    """``seed`` as an int (or None), or a ValueError: floats, strings and bools are refused,
    so ``7.9`` or ``"7"`` never silently become seed 7."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(
            f"seed must be an int (or None for fresh randomness), got {type(seed).__name__} "
            f"{seed!r}; pass int(seed) if that is what you mean"
        )
    return int(seed)


def corrupt(
    image: Any,
    name: str,
    severity: int,
    seed: int | None = None,
    reference_size: int | None = REFERENCE_SIZE,
) -> np.ndarray:
    """Corrupt one image: an (H, W, 3) uint8 array.

    ``image`` is converted by :func:`hf_vitrobust.images.as_rgb_uint8` (sides of at least
    :data:`MIN_SIDE`). Same ``seed`` (an int), same output; ``seed=None`` draws fresh randomness.
    Pixel-unit parameters scale with the image's short side over ``reference_size`` (ImageNet-C's
    224 px; ``None``: no scaling). Equal to ``get_corruption(name).transform(severity, seed,
    reference_size)`` applied to the converted image.
    """
    # The data pipeline calls this per image, so the common case (registered name, int
    # severity, HxWx3 uint8 C-contiguous image) takes a path of a few dict/attribute look-ups.
    cache = getattr(_CACHE, "transforms", None)
    entry = (
        cache.get((name, severity, reference_size))
        if cache is not None and type(severity) is int
        else None
    )
    if entry is None:
        entry = _entry(
            get_corruption(name).name,
            check_severity(severity),
            check_reference_size(reference_size),
        )
    if seed is not None and type(seed) is not int:
        seed = check_seed(seed)
    t, stochastic = entry
    if (
        type(image) is np.ndarray
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.flags.c_contiguous
        and image.shape[0] >= MIN_SIDE
        and image.shape[1] >= MIN_SIDE
    ):
        img = image
    else:
        img = as_rgb_uint8(image, min_side=MIN_SIDE)
    # Calling the bare transform skips Compose's per-call bookkeeping (p=1, one image target).
    if stochastic:
        # seed=None: fresh OS entropy per call, so forked data-loader workers never repeat draws.
        seed = fresh_seed() if seed is None else seed
        # Every random draw comes from the NumPy generator; Python-side draws are fixed (v, v)
        # ranges and the p test, so the Python generator is left alone (a transform that did
        # draw from it would fail the determinism tests).
        reseed(t, seed, python=False)
    out = t(image=img)["image"]
    if out.dtype != np.uint8 or out.shape != img.shape:  # guard against library changes
        raise RuntimeError(f"{name} returned {out.dtype} {out.shape} for {img.shape} uint8 input")
    return out


def corrupt_batch(
    images: np.ndarray | Sequence[Any],
    name: str,
    severity: int,
    seed: int | Sequence[int] | None = None,
    reference_size: int | None = REFERENCE_SIZE,
) -> np.ndarray | list[np.ndarray]:
    """Corrupt many images with one corruption and severity.

    ``images``: an (N, H, W[, C]) array (returns an (N, H, W, 3) uint8 array) or a sequence of
    images (returns a list). ``seed``:

    - one int: image ``i`` gets ``seeding.image_seed(seed, i, name, severity)``, i.e. the batch
      index stands in for the example id. So ``corrupt_batch(images, name, s, seed)`` equals
      ``corrupt_examples(images, range(len(images)), name, s, seed)``; pass the dataset's
      example ids to :func:`corrupt_examples` when images must match across stages;
    - one seed per image: used as given (``corrupt(images[i], ..., seed=seed[i])``);
    - None: fresh randomness for every image.

    ``reference_size`` as in :func:`corrupt`.
    """
    corruption = get_corruption(name)
    severity = check_severity(severity)
    reference_size = check_reference_size(reference_size)
    is_array = isinstance(images, np.ndarray)
    if is_array and images.ndim not in (3, 4):
        raise ValueError(
            f"a batch array must have shape (N, H, W) or (N, H, W, C); got {images.shape}"
        )
    n = len(images)
    if seed is None:
        seeds: list[int | None] = [None] * n
    elif isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence | np.ndarray):
        one = check_seed(seed)
        seeds = [image_seed(one, i, corruption.name, severity) for i in range(n)]
    else:
        seeds = [check_seed(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} images")
    out = [
        corrupt(img, corruption.name, severity, s, reference_size) for img, s in zip(images, seeds)
    ]
    return np.stack(out) if is_array else out


def corrupt_examples(
    images: np.ndarray | Sequence[Any],
    example_ids: Sequence[int],
    name: str,
    severity: int,
    seed: int,
    reference_size: int | None = REFERENCE_SIZE,
) -> np.ndarray:
    """Corrupt dataset examples, each with ``seeding.image_seed(seed, example_id, name, severity)``.

    The one path by which evaluation, analysis and the SAE stage corrupt held-out images: the
    same ``(seed, example_id, name, severity)`` gives byte-identical pixels in all three. ``name``
    may be any spelling :func:`get_corruption` accepts; the seed is keyed on the registered name.
    ``reference_size`` as in :func:`corrupt`.
    """
    if len(images) != len(example_ids):
        raise ValueError(f"got {len(example_ids)} example ids for {len(images)} images")
    name = get_corruption(name).name
    severity = check_severity(severity)
    seed = check_seed(seed)
    reference_size = check_reference_size(reference_size)
    return np.stack(
        [
            corrupt(
                image,
                name,
                severity,
                seed=image_seed(seed, int(eid), name, severity),
                reference_size=reference_size,
            )
            for image, eid in zip(images, example_ids)
        ]
    )


__all__ = ["check_seed", "corrupt", "corrupt_batch", "corrupt_examples"]
