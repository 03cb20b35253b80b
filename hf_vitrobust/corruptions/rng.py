"""How a corruption transform is seeded: fast, deterministic reseeding of Albumentations' generators.

This module says *how* a seed drives a transform; *which* seed an image gets is decided by
:mod:`hf_vitrobust.seeding` (``image_seed``, keyed on the example id) and applied by
:mod:`hf_vitrobust.corruptions.apply`.

Albumentations' ``set_random_seed`` builds a new ``default_rng`` (SeedSequence hashing) and a new
MT19937 ``random.Random`` per call, which costs more than a fast corruption on a small image.
:func:`reseed` instead sets the PCG64 state from a splitmix64 hash of the seed and uses a
:class:`SplitMixRandom` for the Python-side draws: a few microseconds per image.
"""

from __future__ import annotations

import os
import random
from typing import Any

import albumentations as A
import numpy as np

_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
_PCG_INC = 0x5851F42D4C957F2D14057B7EF767814F | 1  # any odd increment; fixed for reproducibility
_TWO_POW_M53 = 1.0 / (1 << 53)


def _splitmix64(x: int) -> tuple[int, int]:
    """One splitmix64 step: (next state, output word)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x, z ^ (z >> 31)


class SplitMixRandom(random.Random):
    """A ``random.Random`` driven by splitmix64: seeding costs ~0.5 us instead of MT19937's ~12 us.

    Albumentations draws a handful of Python-side parameters per call (angles, the ``p`` test);
    all of ``random.Random``'s methods derive from ``random()`` and ``getrandbits()`` here.
    """

    def seed(self, a: Any = None, version: int = 2) -> None:  # noqa: D102
        if a is None:
            a = int.from_bytes(os.urandom(8), "little")
        elif not isinstance(a, int):
            a = hash(a)
        self._state = a & _MASK64
        self.gauss_next = None

    def _next64(self) -> int:
        self._state, z = _splitmix64(self._state)
        return z

    def random(self) -> float:  # noqa: D102
        # splitmix64 inlined: Albumentations calls this a few times per image.
        x = self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((z ^ (z >> 31)) >> 11) * _TWO_POW_M53

    def getrandbits(self, k: int) -> int:  # noqa: D102
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        out, bits = 0, 0
        while bits < k:
            out = (out << 64) | self._next64()
            bits += 64
        return out >> (bits - k)

    def getstate(self) -> tuple[int, float | None]:  # noqa: D102
        return (self._state, self.gauss_next)

    def setstate(self, state: tuple[int, float | None]) -> None:  # noqa: D102
        self._state, self.gauss_next = state


def reseed(transform: A.BasicTransform, seed: int, python: bool = True) -> None:
    """Seed a transform's NumPy and Python generators from ``seed`` in a few microseconds.

    Sets the PCG64 generator's state from a splitmix64 hash of the seed (distinct seeds give
    unrelated, well-separated states) and uses a :class:`SplitMixRandom` for the Python-side
    draws. ``python=False`` leaves the Python generator alone, for transforms whose Python-side
    draws are all from fixed (v, v) ranges (only the NumPy draws vary).
    """
    seed = int(seed) & _MASK128
    x, hi = _splitmix64(seed & _MASK64)
    _, lo = _splitmix64(x ^ (seed >> 64))
    gen = transform.random_generator
    if not isinstance(gen.bit_generator, np.random.PCG64):  # not ours: give it one
        gen = transform.random_generator = np.random.Generator(np.random.PCG64(0))
    gen.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (hi << 64) | lo, "inc": _PCG_INC},
        "has_uint32": 0,
        "uinteger": 0,
    }
    if not python:
        return
    if isinstance(transform.py_random, SplitMixRandom):
        transform.py_random.seed(seed)
    else:
        transform.py_random = SplitMixRandom(seed)


def fresh_seed() -> int:
    """A seed from OS entropy, so forked data-loader workers never repeat draws."""
    return int.from_bytes(os.urandom(8), "little")


def seeded_compose(transform: A.BasicTransform, seed: int | None) -> A.Compose:
    """``A.Compose([transform], p=1, seed=seed)`` with ``transform`` seeded by :func:`reseed`.

    With an int ``seed`` it produces exactly what ``corrupt(image, name, severity, seed)``
    produces with the same transform; ``seed=None`` leaves Albumentations' own random seeding.
    """
    compose = A.Compose([transform], p=1.0, seed=seed)
    if seed is not None:
        reseed(transform, seed)
    return compose


__all__ = ["SplitMixRandom", "fresh_seed", "reseed", "seeded_compose"]
