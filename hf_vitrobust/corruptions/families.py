"""Corruption families: the paper's (by image content), by measured band, by group; look-ups.

A family is a tuple of registered corruption names, defined once here. The paper's training
families ``low_frequency`` / ``high_frequency`` are the defaults; ``band_*`` follow each
corruption's measured band (:mod:`hf_vitrobust.corruptions.registry`); :func:`family_definition`
says which definition a family follows, for reports and model cards.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from hf_vitrobust.corruptions.registry import (
    BANDS,
    CORRUPTIONS,
    GROUPS,
    Corruption,
    get_corruption,
    severity_summary,
)


def _names_where(predicate: Callable[[Corruption], bool]) -> tuple[str, ...]:
    return tuple(name for name, c in CORRUPTIONS.items() if predicate(c))


FAMILIES: dict[str, tuple[str, ...]] = {
    # The paper's training families (the default): by the image content a corruption leaves.
    # low_frequency: corruptions that leave only low-frequency content (the blurs);
    # high_frequency: corruptions that add high-frequency content (noise and sharpening).
    "low_frequency": (
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur",
    ),
    "high_frequency": (
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "sharpen", "unsharp_mask",
    ),
    # By the measured band of the perturbation's energy (Yin et al. 2019): fog and contrast are
    # low, the blurs mid, noise high.
    **{f"band_{band}": _names_where(lambda c, b=band: c.band == b) for band in BANDS},
    # One family per group, ImageNet-C's 15, and everything.
    **{group: _names_where(lambda c, g=group: c.group == g) for group in GROUPS},
    "imagenet_c": _names_where(lambda c: c.is_imagenet_c),
    "all": tuple(CORRUPTIONS),
}  # fmt: skip

FAMILY_DEFINITIONS: dict[str, str] = {
    "image_content": "the paper's definition: by the image content a corruption leaves (blurs "
    "leave low frequencies; noise and sharpening add high ones)",
    "perturbation_band": "by the measured band of the perturbation's energy (share below 1/8 "
    "Nyquist: low from 0.65, high below 0.075; Yin et al. 2019)",
    "imagenet_c_group": "an ImageNet-C corruption group",
    "all": "every registered corruption (or ImageNet-C's 15)",
    "custom": "a list of corruptions chosen by the user",
}
"""What each kind of family definition means (:func:`family_definition` returns the key)."""


def family_definition(spec: str | Sequence[str]) -> str:
    """Which definition a family follows: a key of :data:`FAMILY_DEFINITIONS`.

    ``low_frequency``/``high_frequency`` -> ``image_content`` (the paper's), ``band_*`` ->
    ``perturbation_band``, a group name -> ``imagenet_c_group``, ``all``/``imagenet_c`` ->
    ``all``; anything else (a corruption, a list) -> ``custom``.
    """
    if not isinstance(spec, str):
        spec = list(spec)
        if len(spec) != 1 or not isinstance(spec[0], str):
            return "custom"
        spec = spec[0]
    if spec in ("low_frequency", "high_frequency"):
        return "image_content"
    if spec.startswith("band_") and spec in FAMILIES:
        return "perturbation_band"
    if spec in GROUPS:
        return "imagenet_c_group"
    if spec in ("all", "imagenet_c"):
        return "all"
    return "custom"


def resolve_corruptions(spec: str | Sequence[str], key: str | None = None) -> tuple[str, ...]:
    """Corruption names for a family name, a corruption name, ``"a,b"``, or a list of names.

    Lists may mix family and corruption names; duplicates are dropped, order kept. Errors name
    ``key``, the recipe key the names came from, when given.
    """
    try:
        return _resolve_names(spec)
    except ValueError as error:
        if key is None:
            raise
        raise ValueError(f"{key}: {error}") from error


def _resolve_names(spec: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, Sequence):
        items = list(spec)
    else:
        raise ValueError(
            f"corruption family must be a family name or a list of corruption names, got {spec!r}"
        )
    if not items:
        raise ValueError(f"empty corruption family {spec!r}; families: {', '.join(FAMILIES)}")
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item in FAMILIES:
            names: Sequence[str] = FAMILIES[item]
        elif isinstance(item, str) and item not in CORRUPTIONS:
            close = difflib.get_close_matches(item, [*FAMILIES, *CORRUPTIONS], n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"{item!r} is neither a corruption family nor a corruption.{hint} "
                f"Families: {', '.join(FAMILIES)}."
            )
        else:
            names = (get_corruption(item).name,)
        out.extend(n for n in names if n not in out)
    return tuple(out)


def registry_rows(
    family_names: Sequence[str] = ("low_frequency", "high_frequency"),
) -> list[dict[str, Any]]:
    """One dict per registered corruption, in registry order, for tables (report, README).

    Keys: ``name``, ``group``, ``band``, ``lf_share``, ``lf_share_sd``, ``families`` (those of
    ``family_names`` that contain it), ``fidelity``, ``severity_params``
    (:func:`severity_summary`), ``scaling``, ``known_gap``, ``fallback_gap``, ``notes``.
    """
    return [
        {
            "name": name,
            "group": c.group,
            "band": c.band,
            "lf_share": c.lf_share,
            "lf_share_sd": c.lf_share_sd,
            "families": tuple(f for f in family_names if name in FAMILIES.get(f, ())),
            "fidelity": c.fidelity,
            "severity_params": severity_summary(c.params),
            "scaling": c.scaling,
            "known_gap": c.known_gap,
            "fallback_gap": c.fallback_gap,
            "notes": c.notes,
        }
        for name, c in CORRUPTIONS.items()
    ]


__all__ = [
    "FAMILIES",
    "FAMILY_DEFINITIONS",
    "family_definition",
    "registry_rows",
    "resolve_corruptions",
]
