"""The one per-image seed derivation of the package.

Every random corruption is seeded from a keyed hash of *what* is corrupted, never of where an
image sits in a batch or list: ``(stage, seed, example_id, corruption, severity)`` for a fixed
corrupted image, ``(stage, seed, epoch, example_id, view)`` for a training view. So evaluation,
analysis and the SAE stage (all ``stage="eval"``) see byte-identical pixels for the same image,
and per-image results can be joined across stages by ``example_id``.
"""

from __future__ import annotations

import hashlib
import operator
import struct

from hf_vitrobust.constants import EVAL_STAGE, TRAIN_STAGE

_U64 = 2**64
_PERSON = b"vitrobust-seed"


def _check_u64(name: str, value: int) -> int:
    """``value`` as a Python int in [0, 2**64); floats, strings and bools are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}.")
    try:
        value = operator.index(value)  # int and numpy integers; never float or str
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}."
        ) from None
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}.")
    return value


def hash_words(stage: str, *parts: int | str, n_words: int = 1) -> tuple[int, ...]:
    """``n_words`` independent uint64 words from a keyed BLAKE2b hash of ``stage`` and ``parts``.

    Pure, platform-independent and ~1 µs per call (cheap enough to run per view in workers).
    Integers must lie in [0, 2**64); strings are hashed by their UTF-8 bytes.
    """
    if not 1 <= n_words <= 8:
        raise ValueError(f"n_words must be in 1..8, got {n_words}.")
    h = hashlib.blake2b(digest_size=8 * n_words, person=_PERSON)
    h.update(stage.encode())
    for i, part in enumerate(parts):
        if isinstance(part, str):
            data = part.encode()
            h.update(b"s" + struct.pack("<Q", len(data)) + data)
        else:
            h.update(b"i" + struct.pack("<Q", _check_u64(f"part {i}", part)))
    return struct.unpack(f"<{n_words}Q", h.digest())


def image_seed(
    seed: int, example_id: int, corruption: str, severity: int, stage: str = EVAL_STAGE
) -> int:
    """The corruption seed (in [0, 2**32)) of one image at one (corruption, severity).

    Evaluation, analysis and the SAE stage use the default ``stage``, so the same
    ``(seed, example_id, corruption, severity)`` gives the same corrupted pixels in all three.
    """
    (word,) = hash_words(
        stage,
        _check_u64("seed", seed),
        _check_u64("example_id", example_id),
        corruption,
        _check_u64("severity", severity),
    )
    return word >> 32


def view_words(
    seed: int, epoch: int, example_id: int, view_index: int, stage: str = TRAIN_STAGE
) -> tuple[int, int, int]:
    """Three uint64 words for one training view: pick the corruption, the severity, the seed.

    A pure function of ``(stage, seed, epoch, example_id, view_index)``, so a resumed or
    distributed run draws the same views as an uninterrupted single-process one.
    """
    return hash_words(  # type: ignore[return-value]
        stage,
        _check_u64("seed", seed),
        _check_u64("epoch", epoch),
        _check_u64("example_id", example_id),
        _check_u64("view_index", view_index),
        n_words=3,
    )


def stream_seed(seed: int, *purpose: int | str) -> int:
    """A seed in [0, 2**32) for a named random stream (a shuffle buffer, a subset draw, ...)."""
    (word,) = hash_words("stream", _check_u64("seed", seed), *purpose)
    return word >> 32


__all__ = ["hash_words", "image_seed", "stream_seed", "view_words"]
