"""The corruption registry: one ``Corruption(...)`` row per corruption, its families and look-ups.

Severity parameters follow ImageNet-C (Hendrycks & Dietterich 2019; the reference implementation
is the ``imagecorruptions`` package) on the [0, 1] pixel scale; ``severity s`` always means
ImageNet-C's severity ``s`` (:data:`hf_vitrobust.constants.SEVERITIES`). Each row names the
builder of its Albumentations transform (:mod:`hf_vitrobust.corruptions.transforms`) and the five
severities' keyword arguments for it.

``lf_share`` is measured by tests/test_corruptions.py::test_lf_share_matches_declared (severity 3,
mean over scikit-image photographs) and ``band`` follows from it (:func:`band_of`);
``reference_gap_db`` is measured by tests/test_corruptions.py::test_reference_psnr.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import numpy as np

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions.rng import seeded_compose
from hf_vitrobust.corruptions.transforms import (
    FallingSnow,
    HSVSaturation,
    PlasmaFog,
    PoissonShotNoise,
    ProceduralFrost,
    ScaledElasticTransform,
    SpeckleNoise,
    brightness,
    contrast,
    defocus,
    gauss_noise,
    gaussian_blur,
    glass_blur,
    jpeg,
    motion_blur,
    pixelate,
    salt_and_pepper,
    sharpen,
    spatter,
    unsharp_mask,
    zoom_blur,
)

REGISTRY_VERSION = "1.0"
"""Bumped whenever a corruption's parameters or algorithm change (stored in fine-tuned configs)."""

GROUPS: tuple[str, ...] = ("noise", "blur", "weather", "digital", "sharpen", "extra")
BANDS: tuple[str, ...] = ("low", "mid", "high")
FIDELITIES: tuple[str, ...] = ("port", "calibrated", "different", "procedural", "new")
IMAGENET_C_GROUPS: tuple[str, ...] = ("noise", "blur", "weather", "digital")

MIN_SIDE = 8
"""Smallest image side accepted; every corruption is tested at 8x8."""

# Thresholds on the measured LF share that define ``band`` (see docs/corruptions.md). They sit in
# the two wide gaps of the measured values (.05 -> .10 and .51 -> .84), so no corruption is near one.
LOW_BAND_MIN_LF = 0.65
HIGH_BAND_MAX_LF = 0.075


def band_of(lf_share: float) -> str:
    """The band implied by an LF share (fraction of perturbation energy below 1/8 Nyquist)."""
    if lf_share >= LOW_BAND_MIN_LF:
        return "low"
    if lf_share < HIGH_BAND_MAX_LF:
        return "high"
    return "mid"


def check_severity(severity: Any) -> int:
    """``severity`` as an int in :data:`SEVERITIES`, or a ValueError saying what is allowed."""
    allowed = f"{SEVERITIES[0]}..{SEVERITIES[-1]}"
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ValueError(
            f"severity must be an int in {allowed}, got {type(severity).__name__} {severity!r}"
        )
    if int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be in {allowed}, got {severity}")
    return int(severity)


def per_severity(**columns: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """One keyword dict per severity from per-parameter sequences (one value per severity)."""
    for key, values in columns.items():
        if len(values) != len(SEVERITIES):
            raise ValueError(f"{key}: {len(values)} values for {len(SEVERITIES)} severities")
    return tuple({k: v[i] for k, v in columns.items()} for i in range(len(SEVERITIES)))


@dataclass(frozen=True, kw_only=True)
class Corruption:
    """One corruption: a name, its group and band, and a severity -> transform map.

    Attributes:
        name: registry name (ImageNet-C's where it has one).
        group: ``noise``, ``blur``, ``weather``, ``digital`` (ImageNet-C's 15), ``extra``
            (ImageNet-C's 4 held-out corruptions) or ``sharpen``.
        band: ``low``/``mid``/``high``, derived from ``lf_share`` by :func:`band_of`.
        lf_share: measured fraction of the perturbation's spectral energy below 1/8 Nyquist at
            severity 3 (docs/corruptions.md; checked by tests/test_corruptions.py).
        imagenet_c_group: the ImageNet-C group (extras included), or ``sharpen``; defaults to
            ``group``.
        albumentations: the Albumentations class that implements it.
        fidelity: ``port`` (ImageNet-C's algorithm), ``calibrated`` (a close Albumentations
            algorithm whose strengths are calibrated to ImageNet-C's PSNR) -- both tested to be
            within 2 dB of the reference --, ``different`` (another algorithm, strengths chosen
            near ImageNet-C's), ``procedural`` (frost) or ``new`` (no ImageNet-C counterpart).
        params: the five severities' keyword arguments of ``builder``.
        builder: makes the bare Albumentations transform from one severity's ``params``.
        reference_gap_db: for non-ported corruptions, the measured mean PSNR (registry minus
            reference, dB) per severity on scikit-image photographs; ``None`` when ported or
            when there is no reference.
        reference_severity: the ImageNet-C severity each severity is compared with (saturate's
            are reordered).
        stochastic: False when the output does not depend on the seed (a fixed filter), so
            :func:`~hf_vitrobust.corruptions.corrupt` skips reseeding.
        python_draws: True when the transform draws a varying value from its Python generator
            (not only from fixed (v, v) ranges), so reseeding must seed that one too.
        notes: how it differs from ImageNet-C, if at all.
    """

    name: str
    group: str
    band: str = field(init=False)
    lf_share: float
    imagenet_c_group: str = ""
    albumentations: str
    fidelity: str
    params: tuple[dict[str, Any], ...]
    builder: Callable[..., A.BasicTransform] = field(repr=False, compare=False)
    reference_gap_db: tuple[float, ...] | None = None
    reference_severity: tuple[int, ...] = SEVERITIES
    stochastic: bool = True
    python_draws: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", band_of(self.lf_share))
        if not self.imagenet_c_group:
            object.__setattr__(self, "imagenet_c_group", self.group)
        if self.group not in GROUPS or self.fidelity not in FIDELITIES:
            raise ValueError(f"{self.name}: group {self.group!r}, fidelity {self.fidelity!r}")
        if len(self.params) != len(SEVERITIES):
            raise ValueError(f"{self.name}: {len(self.params)} parameter sets")

    def build(self, severity: int) -> A.BasicTransform:
        """The bare Albumentations transform (p=1) for one severity, unseeded."""
        return self.builder(**self.params[SEVERITIES.index(check_severity(severity))])

    def transform(self, severity: int, seed: int | None = None) -> A.Compose:
        """A seeded ``A.Compose([...], p=1)`` for this severity: same seed, same output.

        With an int ``seed`` it produces exactly what ``corrupt(image, name, severity, seed)``
        produces (its transform is seeded by :func:`~hf_vitrobust.corruptions.rng.reseed`).
        """
        return seeded_compose(self.build(severity), seed)

    @property
    def is_imagenet_c(self) -> bool:
        """True for ImageNet-C's 15 benchmark corruptions."""
        return self.group in IMAGENET_C_GROUPS


_ROWS: tuple[Corruption, ...] = (
    # --- noise ---------------------------------------------------------------------------------
    Corruption(
        name="gaussian_noise",
        group="noise",
        lf_share=0.031,
        albumentations="GaussNoise",
        fidelity="port",
        builder=gauss_noise,
        params=per_severity(sigma=[0.08, 0.12, 0.18, 0.26, 0.38]),
    ),
    Corruption(
        name="shot_noise",
        group="noise",
        lf_share=0.021,
        albumentations="PoissonShotNoise (custom ImageOnlyTransform)",
        fidelity="port",
        builder=PoissonShotNoise,
        params=per_severity(photons=[60, 25, 12, 5, 3]),
    ),
    Corruption(
        name="impulse_noise",
        group="noise",
        lf_share=0.03,
        albumentations="SaltAndPepper",
        fidelity="port",
        builder=salt_and_pepper,
        params=per_severity(amount=[0.03, 0.06, 0.09, 0.17, 0.27]),
    ),
    # --- blur ----------------------------------------------------------------------------------
    Corruption(
        name="defocus_blur",
        group="blur",
        lf_share=0.111,
        albumentations="Defocus",
        fidelity="port",
        builder=defocus,
        params=per_severity(radius=[3, 4, 6, 8, 10], alias_blur=[0.1, 0.5, 0.5, 0.5, 0.5]),
        stochastic=False,
    ),
    Corruption(
        name="glass_blur",
        group="blur",
        lf_share=0.285,
        albumentations="GlassBlur(mode='exact')",
        fidelity="port",
        builder=glass_blur,
        # ImageNet-C's (sigma, delta, iterations) are not monotone in PSNR (severity 2 is as mild
        # as 1, and 4 milder than 3): delta 3 at severity 2 and one more iteration at 4 and 5
        # restore the order, within 1.4 dB of ImageNet-C's PSNR.
        params=per_severity(
            sigma=[0.7, 0.9, 1.0, 1.1, 1.5],
            max_delta=[1, 3, 2, 3, 4],
            iterations=[2, 1, 3, 3, 3],
        ),
        notes="delta 3 at severity 2, iterations 3 at 4 and 5 (ImageNet-C: 2; 2, 2) so that "
        "PSNR falls with severity",
    ),
    Corruption(
        name="motion_blur",
        group="blur",
        lf_share=0.393,
        albumentations="MotionBlur",
        fidelity="calibrated",
        builder=motion_blur,
        # ImageNet-C's kernel is a one-sided half-Gaussian (radius, sigma) =
        # (10,3) (15,5) (15,8) (15,12) (20,15); Albumentations' is a uniform line. The line
        # lengths are calibrated to give the reference's PSNR (tests/test_corruptions.py).
        params=per_severity(kernel=[7, 11, 17, 25, 31]),
        python_draws=True,  # the blur angle
        notes="uniform line kernel with length calibrated to ImageNet-C's half-Gaussian",
    ),
    Corruption(
        name="zoom_blur",
        group="blur",
        lf_share=0.512,
        albumentations="ZoomBlur",
        fidelity="port",
        builder=zoom_blur,
        params=per_severity(
            max_factor=[1.11, 1.16, 1.21, 1.26, 1.31], step=[0.01, 0.01, 0.02, 0.02, 0.03]
        ),
        stochastic=False,
    ),
    # --- weather -------------------------------------------------------------------------------
    Corruption(
        name="snow",
        group="weather",
        lf_share=0.92,
        albumentations="FallingSnow (custom ImageOnlyTransform)",
        fidelity="port",
        builder=FallingSnow,
        params=per_severity(
            loc=[0.1, 0.2, 0.55, 0.55, 0.55],
            scale=[0.3, 0.3, 0.3, 0.3, 0.3],
            zoom=[3.0, 2.0, 4.0, 4.5, 2.5],
            threshold=[0.5, 0.5, 0.9, 0.85, 0.85],
            radius=[10, 12, 12, 12, 12],
            sigma=[4.0, 4.0, 8.0, 8.0, 12.0],
            image_weight=[0.8, 0.7, 0.7, 0.65, 0.55],
        ),
    ),
    Corruption(
        name="frost",
        group="weather",
        lf_share=0.971,
        albumentations="ProceduralFrost (custom ImageOnlyTransform)",
        fidelity="procedural",
        builder=ProceduralFrost,
        reference_gap_db=(-0.9, -1.1, -1.1, -1.8, -1.7),
        params=per_severity(
            image_weight=[1.0, 0.8, 0.7, 0.65, 0.6],
            frost_weight=[0.4, 0.6, 0.7, 0.75, 0.8],
        ),
        notes="procedural ice texture instead of ImageNet-C's frost photographs; frost weight "
        "0.75, 0.8 at severities 4, 5 (ImageNet-C: 0.7, 0.75, not monotone in PSNR)",
    ),
    Corruption(
        name="fog",
        group="weather",
        lf_share=0.908,
        albumentations="PlasmaFog (custom ImageOnlyTransform over Albumentations' plasma)",
        fidelity="port",
        builder=PlasmaFog,
        params=per_severity(
            strength=[1.5, 2.0, 2.5, 3.0, 4.0], wibbledecay=[2.0, 2.0, 1.7, 1.5, 1.4]
        ),
        notes="strength 3.0, 4.0 at severities 4, 5 (ImageNet-C: 2.5, 3.0, not monotone in PSNR)",
    ),
    Corruption(
        name="brightness",
        group="weather",
        lf_share=0.976,
        albumentations="HueSaturationValue",
        fidelity="port",
        builder=brightness,
        params=per_severity(value=[0.1, 0.2, 0.3, 0.4, 0.5]),
        stochastic=False,
    ),
    # --- digital -------------------------------------------------------------------------------
    Corruption(
        name="contrast",
        group="digital",
        lf_share=0.839,
        albumentations="RandomBrightnessContrast",
        fidelity="port",
        builder=contrast,
        params=per_severity(factor=[0.4, 0.3, 0.2, 0.1, 0.05]),
        stochastic=False,
        notes="image mean over all channels (ImageNet-C: per channel)",
    ),
    Corruption(
        name="elastic_transform",
        group="digital",
        lf_share=0.104,
        albumentations="ElasticTransform (size-scaled subclass)",
        fidelity="port",
        builder=ScaledElasticTransform,
        params=per_severity(imagenet_c_alpha=[12.5, 16.25, 21.25, 25.0, 30.0]),
    ),
    Corruption(
        name="pixelate",
        group="digital",
        lf_share=0.023,
        albumentations="Downscale(INTER_AREA down, INTER_NEAREST_EXACT up)",
        fidelity="port",
        builder=pixelate,
        params=per_severity(scale=[0.6, 0.5, 0.4, 0.3, 0.25]),
        stochastic=False,
    ),
    Corruption(
        name="jpeg_compression",
        group="digital",
        lf_share=0.162,
        albumentations="ImageCompression",
        fidelity="port",
        builder=jpeg,
        params=per_severity(quality=[25, 18, 15, 10, 7]),
        stochastic=False,
    ),
    # --- ImageNet-C extras ---------------------------------------------------------------------
    Corruption(
        name="speckle_noise",
        group="extra",
        imagenet_c_group="noise",
        lf_share=0.027,
        albumentations="SpeckleNoise (custom ImageOnlyTransform)",
        fidelity="port",
        builder=SpeckleNoise,
        params=per_severity(sigma=[0.15, 0.2, 0.35, 0.45, 0.6]),
    ),
    Corruption(
        name="gaussian_blur",
        group="extra",
        imagenet_c_group="blur",
        lf_share=0.113,
        albumentations="GaussianBlur",
        fidelity="port",
        builder=gaussian_blur,
        params=per_severity(sigma=[1.0, 2.0, 3.0, 4.0, 6.0]),
        stochastic=False,
    ),
    Corruption(
        name="spatter",
        group="extra",
        imagenet_c_group="digital",
        lf_share=0.485,
        albumentations="Spatter",
        fidelity="calibrated",
        builder=spatter,
        params=per_severity(
            mean=[0.65, 0.65, 0.65, 0.65, 0.67],
            std=[0.3, 0.3, 0.3, 0.3, 0.4],
            gauss_sigma=[4, 3, 2, 1, 1],
            cutout_threshold=[0.69, 0.68, 0.68, 0.65, 0.65],
            # ImageNet-C: .6 .6 .5 (rain) and a mask blur of 1.5 (mud). Albumentations' port
            # differs in its drop rendering and mud mask, so intensities are calibrated to
            # the reference's PSNR.
            intensity=[0.35, 0.45, 0.5, 0.5, 0.6],
            mode=["rain", "rain", "rain", "mud", "mud"],
        ),
        notes="intensities .35 .45 .5 .5 .6 calibrated to ImageNet-C's PSNR",
    ),
    Corruption(
        name="saturate",
        group="extra",
        imagenet_c_group="digital",
        lf_share=0.908,
        albumentations="HSVSaturation (custom ImageOnlyTransform)",
        fidelity="port",
        builder=HSVSaturation,
        # ImageNet-C's five settings, reordered by measured PSNR: its severity order
        # (x.3, x.1, x2, x5+.1, x20+.2) is not monotone (x2 is the mildest).
        params=per_severity(scale=[2.0, 0.3, 5.0, 0.1, 20.0], shift=[0.0, 0.0, 0.1, 0.0, 0.2]),
        reference_severity=(3, 1, 4, 2, 5),
        stochastic=False,
        notes="ImageNet-C severities reordered 3,1,4,2,5 so that PSNR falls with severity",
    ),
    # --- sharpening (not in ImageNet-C) --------------------------------------------------------
    Corruption(
        name="sharpen",
        group="sharpen",
        lf_share=0.026,
        albumentations="Sharpen(method='kernel')",
        fidelity="new",
        builder=sharpen,
        params=per_severity(alpha=[0.2, 0.4, 0.6, 0.8, 1.0]),
        stochastic=False,
        notes="3x3 Laplacian sharpening blended with the image by alpha",
    ),
    Corruption(
        name="unsharp_mask",
        group="sharpen",
        lf_share=0.046,
        albumentations="UnsharpMask",
        fidelity="new",
        builder=unsharp_mask,
        params=per_severity(sigma=[1.0, 1.5, 2.0, 2.5, 3.0], alpha=[0.4, 0.55, 0.7, 0.85, 1.0]),
        stochastic=False,
        notes="x + alpha (x - G_sigma * x), soft-masked, threshold 0",
    ),
)

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _ROWS}


def _names_where(predicate: Callable[[Corruption], bool]) -> tuple[str, ...]:
    return tuple(name for name, c in CORRUPTIONS.items() if predicate(c))


FAMILIES: dict[str, tuple[str, ...]] = {
    # The paper's training families: corruptions that leave only low-frequency content (the
    # blurs) and corruptions that add high-frequency content (noise and sharpening).
    "low_frequency": (
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur",
    ),
    "high_frequency": (
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "sharpen", "unsharp_mask",
    ),
    # One family per group, ImageNet-C's 15, and everything.
    **{group: _names_where(lambda c, g=group: c.group == g) for group in GROUPS},
    "imagenet_c": _names_where(lambda c: c.is_imagenet_c),
    "all": tuple(CORRUPTIONS),
}  # fmt: skip

# ---------------------------------------------------------------------------------- look-ups


def get_corruption(name: str) -> Corruption:
    """The registered corruption ``name``; a ValueError names the closest registered names."""
    if not isinstance(name, str):
        raise ValueError(f"corruption name must be a string, got {type(name).__name__}: {name!r}")
    try:
        return CORRUPTIONS[name]
    except KeyError:
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key in CORRUPTIONS:
            return CORRUPTIONS[key]
        close = difflib.get_close_matches(key, list(CORRUPTIONS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown corruption {name!r}.{hint} Registered: {', '.join(CORRUPTIONS)}."
        ) from None


def resolve_corruptions(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Corruption names for a family name, a corruption name, ``"a,b"``, or a list of names.

    Lists may mix family and corruption names; duplicates are dropped, order kept.
    """
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


def severity_summary(params: Sequence[dict[str, Any]]) -> str:
    """``sigma 0.08 0.12 0.18 0.26 0.38; mode rain`` from the severities' parameter dicts.

    A parameter with one value at every severity is written once.
    """
    parts = []
    for key in params[0] if params else ():
        values = [p.get(key) for p in params]
        if len({repr(v) for v in values}) == 1:
            parts.append(f"{key} {values[0]}")
        else:
            parts.append(f"{key} " + " ".join(str(v) for v in values))
    return "; ".join(parts)


def registry_rows(
    family_names: Sequence[str] = ("low_frequency", "high_frequency"),
) -> list[dict[str, Any]]:
    """One dict per registered corruption, in registry order, for tables (report, README).

    Keys: ``name``, ``group``, ``band``, ``lf_share``, ``families`` (those of ``family_names``
    that contain it), ``fidelity``, ``severity_params`` (:func:`severity_summary`), ``notes``.
    """
    return [
        {
            "name": name,
            "group": c.group,
            "band": c.band,
            "lf_share": c.lf_share,
            "families": tuple(f for f in family_names if name in FAMILIES.get(f, ())),
            "fidelity": c.fidelity,
            "severity_params": severity_summary(c.params),
            "notes": c.notes,
        }
        for name, c in CORRUPTIONS.items()
    ]


__all__ = [
    "BANDS",
    "CORRUPTIONS",
    "FAMILIES",
    "FIDELITIES",
    "GROUPS",
    "HIGH_BAND_MAX_LF",
    "IMAGENET_C_GROUPS",
    "LOW_BAND_MIN_LF",
    "MIN_SIDE",
    "REGISTRY_VERSION",
    "Corruption",
    "band_of",
    "check_severity",
    "get_corruption",
    "per_severity",
    "registry_rows",
    "severity_summary",
    "resolve_corruptions",
]
