"""The corruption registry: one ``Corruption(...)`` row per corruption, its families and look-ups.

Severity parameters are ImageNet-C's (Hendrycks & Dietterich 2019; the reference implementation
is the ``imagecorruptions`` package), and ``severity s`` always means ImageNet-C's severity ``s``
(:data:`hf_vitrobust.constants.SEVERITIES`), never reordered: where the reference is not
monotone in PSNR (glass blur, fog, frost, saturate), neither is the registry. Each row names the
builder of its Albumentations transform (:mod:`hf_vitrobust.corruptions.transforms`) and the five
severities' keyword arguments for it.

Pixel-unit parameters are given for ImageNet-C's 224-px images and scale with the image's short
side (``scaling`` says which; ``reference_size=None`` turns scaling off). ``lf_share`` and
``lf_share_sd`` are the mean and standard deviation over the fidelity photos (224 px, severity 3)
of the share of the perturbation's energy below 1/8 Nyquist, and ``band`` follows from the mean;
``tests/test_corruption_fidelity.py`` checks them, and every (corruption, severity) against the
reference at 224 and 299 px.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import numpy as np

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions import transforms as T
from hf_vitrobust.corruptions.functional import REFERENCE_SIZE
from hf_vitrobust.corruptions.rng import seeded_compose

REGISTRY_VERSION = "2.0"
"""Bumped whenever a corruption's parameters or algorithm change (stored in fine-tuned configs).
2.0: every ImageNet-C corruption a port of the reference (severity order kept), resolution-aware
parameters."""

GROUPS: tuple[str, ...] = ("noise", "blur", "weather", "digital", "sharpen", "extra")
BANDS: tuple[str, ...] = ("low", "mid", "high")
FIDELITIES: tuple[str, ...] = ("port", "new")
IMAGENET_C_GROUPS: tuple[str, ...] = ("noise", "blur", "weather", "digital")

MIN_SIDE = 8
"""Smallest image side accepted; every corruption is tested at 8x8."""

# Thresholds on the mean LF share that define ``band`` (docs/corruptions.md). They sit in the two
# widest gaps of the measured means (0.053 -> 0.109 and 0.618 -> 0.791), each more than 2.5
# standard errors of the mean from the nearest corruption.
LOW_BAND_MIN_LF = 0.70
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


def check_severities(
    severities: Sequence[Any], exactly_one: str | None = None, key: str = "severities"
) -> list[int]:
    """Every severity checked (:func:`check_severity`); at least one, or exactly one when
    ``exactly_one`` names the stage that compares at a single severity. Errors name ``key``,
    the recipe key the values came from."""
    values = list(severities)
    if exactly_one is not None and len(values) != 1:
        raise ValueError(
            f"{key}={values}: {exactly_one} takes exactly one severity; give one value, "
            f"e.g. {key}: [3]."
        )
    if not values:
        raise ValueError(
            f"{key} must list at least one severity in {SEVERITIES[0]}..{SEVERITIES[-1]}."
        )
    checked = []
    for value in values:
        try:
            checked.append(check_severity(value))
        except ValueError as error:
            raise ValueError(f"{key}={values}: {error}") from error
    return checked


def check_reference_size(reference_size: Any) -> int | None:
    """``reference_size`` as a positive int or None, or a ValueError naming the input."""
    if reference_size is None:
        return None
    if isinstance(reference_size, bool) or not isinstance(reference_size, (int, np.integer)):
        raise ValueError(
            "reference_size must be a positive int (the image side its pixel parameters are "
            f"for, {REFERENCE_SIZE}) or None (no scaling), got {reference_size!r}"
        )
    if reference_size < 1:
        raise ValueError(f"reference_size must be at least 1 pixel, got {reference_size}")
    return int(reference_size)


def per_severity(**columns: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """One keyword dict per severity from per-parameter sequences (one value per severity)."""
    for key, values in columns.items():
        if len(values) != len(SEVERITIES):
            raise ValueError(f"{key}: {len(values)} values for {len(SEVERITIES)} severities")
    return tuple({k: v[i] for k, v in columns.items()} for i in range(len(SEVERITIES)))


@dataclass(frozen=True)
class Gap:
    """A recorded departure from the reference: the largest mean-PSNR and mean-SSIM gaps
    (absolute, over severities and fidelity sizes) and why."""

    psnr_db: float
    ssim: float
    reason: str


FROST_FALLBACK_GAP = Gap(
    psnr_db=0.6,
    ssim=0.065,
    reason="without imagecorruptions installed, a procedural ice texture replaces ImageNet-C's "
    "frost photographs: same colour, slightly stronger (PSNR up to 0.51 dB lower), smoother "
    "(SSIM up to 0.056 higher), measured on the fidelity photos at 224 and 299 px",
)


@dataclass(frozen=True, kw_only=True)
class Corruption:
    """One corruption: a name, its group and band, and a severity -> transform map.

    Attributes:
        name: registry name (ImageNet-C's where it has one).
        group: ``noise``, ``blur``, ``weather``, ``digital`` (ImageNet-C's 15), ``extra``
            (ImageNet-C's 4 held-out corruptions) or ``sharpen``.
        band: ``low``/``mid``/``high``, from the mean ``lf_share`` by :func:`band_of`.
        lf_share, lf_share_sd: mean and standard deviation over the fidelity photos of the
            fraction of the perturbation's energy below 1/8 Nyquist at severity 3.
        imagenet_c_group: the ImageNet-C group (extras included), or ``sharpen``.
        fidelity: ``port`` (ImageNet-C's algorithm and parameters, checked against the
            reference) or ``new`` (no ImageNet-C counterpart).
        params: the five severities' keyword arguments of ``builder``.
        builder: makes the bare Albumentations transform from one severity's ``params`` and
            ``reference_size``.
        scaling: which pixel-unit parameters scale with the short side / 224 ("" if none).
        stochastic: False when the output does not depend on the seed (a fixed filter).
        known_gap: a measured gap beyond the fidelity bar, with its reason (None: within it).
        fallback_gap: the gap when the reference package's data is not installed (frost).
        notes: anything else a user comparing with ImageNet-C should know.
    """

    name: str
    group: str
    band: str = field(init=False)
    lf_share: float
    lf_share_sd: float
    imagenet_c_group: str = ""
    fidelity: str = "port"
    params: tuple[dict[str, Any], ...]
    builder: Callable[..., A.BasicTransform] = field(repr=False, compare=False)
    scaling: str = ""
    stochastic: bool = True
    known_gap: Gap | None = None
    fallback_gap: Gap | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", band_of(self.lf_share))
        if not self.imagenet_c_group:
            object.__setattr__(self, "imagenet_c_group", self.group)
        if self.group not in GROUPS or self.fidelity not in FIDELITIES:
            raise ValueError(f"{self.name}: group {self.group!r}, fidelity {self.fidelity!r}")
        if len(self.params) != len(SEVERITIES):
            raise ValueError(f"{self.name}: {len(self.params)} parameter sets")

    def build(self, severity: int, reference_size: int | None = REFERENCE_SIZE) -> A.BasicTransform:
        """The bare Albumentations transform (p=1) for one severity, unseeded."""
        params = self.params[SEVERITIES.index(check_severity(severity))]
        return self.builder(**params, reference_size=check_reference_size(reference_size))

    def transform(
        self, severity: int, seed: int | None = None, reference_size: int | None = REFERENCE_SIZE
    ) -> A.Compose:
        """A seeded ``A.Compose([...], p=1)`` for this severity: same seed, same output.

        With an int ``seed`` it produces exactly what ``corrupt(image, name, severity, seed,
        reference_size=...)`` produces (seeded by :func:`~hf_vitrobust.corruptions.rng.reseed`).
        """
        return seeded_compose(self.build(severity, reference_size), seed)

    @property
    def albumentations(self) -> str:
        """The Albumentations class of the transform."""
        return type(self.build(SEVERITIES[0])).__name__

    @property
    def is_imagenet_c(self) -> bool:
        """True for ImageNet-C's 15 benchmark corruptions."""
        return self.group in IMAGENET_C_GROUPS


_ROWS: tuple[Corruption, ...] = (
    # --- noise: per-element draws, nothing in pixel units --------------------------------------
    Corruption(
        name="gaussian_noise",
        group="noise",
        lf_share=0.044,
        lf_share_sd=0.035,
        builder=T.GaussianNoise,
        params=per_severity(sigma=[0.08, 0.12, 0.18, 0.26, 0.38]),
    ),
    Corruption(
        name="shot_noise",
        group="noise",
        lf_share=0.028,
        lf_share_sd=0.014,
        builder=T.ShotNoise,
        params=per_severity(photons=[60, 25, 12, 5, 3]),
    ),
    Corruption(
        name="impulse_noise",
        group="noise",
        lf_share=0.033,
        lf_share_sd=0.008,
        builder=T.ImpulseNoise,
        params=per_severity(amount=[0.03, 0.06, 0.09, 0.17, 0.27]),
        notes="salt and pepper per element of each channel, as scikit-image's s&p",
    ),
    # --- blur ----------------------------------------------------------------------------------
    Corruption(
        name="defocus_blur",
        group="blur",
        lf_share=0.109,
        lf_share_sd=0.047,
        builder=T.DefocusBlur,
        params=per_severity(radius=[3, 4, 6, 8, 10], alias_blur=[0.1, 0.5, 0.5, 0.5, 0.5]),
        scaling="radius, alias_blur",
        stochastic=False,
    ),
    Corruption(
        name="glass_blur",
        group="blur",
        lf_share=0.307,
        lf_share_sd=0.108,
        builder=T.GlassBlur,
        params=per_severity(
            sigma=[0.7, 0.9, 1.0, 1.1, 1.5], max_delta=[1, 2, 2, 3, 4], iterations=[2, 1, 3, 2, 2]
        ),
        scaling="sigma, max_delta (rounded to whole pixels)",
        notes="sequential swaps as the reference, compiled; not monotone in PSNR (2 is milder "
        "than 1, 4 than 3), as in ImageNet-C",
    ),
    Corruption(
        name="motion_blur",
        group="blur",
        lf_share=0.523,
        lf_share_sd=0.148,
        builder=T.MotionBlur,
        params=per_severity(radius=[10, 15, 15, 15, 20], sigma=[3.0, 5.0, 8.0, 12.0, 15.0]),
        scaling="radius (kernel length), sigma",
    ),
    Corruption(
        name="zoom_blur",
        group="blur",
        lf_share=0.618,
        lf_share_sd=0.153,
        builder=T.ZoomBlur,
        params=per_severity(
            max_factor=[1.11, 1.16, 1.21, 1.26, 1.31], step=[0.01, 0.01, 0.02, 0.02, 0.03]
        ),
        stochastic=False,
        notes="zoom factors are relative to the image: nothing to scale",
    ),
    # --- weather -------------------------------------------------------------------------------
    Corruption(
        name="snow",
        group="weather",
        lf_share=0.919,
        lf_share_sd=0.025,
        builder=T.Snow,
        params=per_severity(
            loc=[0.1, 0.2, 0.55, 0.55, 0.55],
            spread=[0.3, 0.3, 0.3, 0.3, 0.3],
            zoom=[3.0, 2.0, 4.0, 4.5, 2.5],
            threshold=[0.5, 0.5, 0.9, 0.85, 0.85],
            radius=[10, 12, 12, 12, 12],
            sigma=[4.0, 4.0, 8.0, 8.0, 12.0],
            image_weight=[0.8, 0.7, 0.7, 0.65, 0.55],
        ),
        scaling="flake layer made at 224-px scale (zoom, blur radius, sigma) and resized",
    ),
    Corruption(
        name="frost",
        group="weather",
        lf_share=0.922,
        lf_share_sd=0.082,
        builder=T.Frost,
        params=per_severity(
            image_weight=[1.0, 0.8, 0.7, 0.65, 0.6], frost_weight=[0.4, 0.6, 0.7, 0.7, 0.75]
        ),
        scaling="frost photograph resized by 1.1 x short side / 224 before the crop",
        fallback_gap=FROST_FALLBACK_GAP,
        notes="crops of ImageNet-C's frost photographs, read from the installed "
        "imagecorruptions package; without it a procedural texture (fallback_gap)",
    ),
    Corruption(
        name="fog",
        group="weather",
        lf_share=0.944,
        lf_share_sd=0.032,
        builder=T.Fog,
        params=per_severity(
            strength=[1.5, 2.0, 2.5, 2.5, 3.0], wibbledecay=[2.0, 2.0, 1.7, 1.5, 1.4]
        ),
        notes="ImageNet-C's diamond-square plasma (compiled); map size follows the image",
    ),
    Corruption(
        name="brightness",
        group="weather",
        lf_share=0.978,
        lf_share_sd=0.014,
        builder=T.Brightness,
        params=per_severity(value=[0.1, 0.2, 0.3, 0.4, 0.5]),
        stochastic=False,
    ),
    # --- digital -------------------------------------------------------------------------------
    Corruption(
        name="contrast",
        group="digital",
        lf_share=0.791,
        lf_share_sd=0.185,
        builder=T.Contrast,
        params=per_severity(factor=[0.4, 0.3, 0.2, 0.1, 0.05]),
        stochastic=False,
        notes="around each channel's mean, as the reference (channel means kept)",
    ),
    Corruption(
        name="elastic_transform",
        group="digital",
        lf_share=0.146,
        lf_share_sd=0.044,
        builder=T.ElasticTransform,
        params=per_severity(alpha=[12.5, 16.25, 21.25, 25.0, 30.0]),
        notes="displacement and smoothing relative to the image size, as in imagecorruptions "
        "(the same at every reference_size)",
    ),
    Corruption(
        name="pixelate",
        group="digital",
        lf_share=0.006,
        lf_share_sd=0.002,
        builder=T.Pixelate,
        params=per_severity(factor=[0.6, 0.5, 0.4, 0.3, 0.25]),
        scaling="block size (down to factor x 224 px on the short side; none below that)",
        stochastic=False,
    ),
    Corruption(
        name="jpeg_compression",
        group="digital",
        lf_share=0.174,
        lf_share_sd=0.072,
        builder=T.JpegCompression,
        params=per_severity(quality=[25, 18, 15, 10, 7]),
        stochastic=False,
        notes="8 x 8 JPEG blocks are in pixels of the image at any size",
    ),
    # --- ImageNet-C extras ---------------------------------------------------------------------
    Corruption(
        name="speckle_noise",
        group="extra",
        imagenet_c_group="noise",
        lf_share=0.038,
        lf_share_sd=0.021,
        builder=T.SpeckleNoise,
        params=per_severity(sigma=[0.15, 0.2, 0.35, 0.45, 0.6]),
    ),
    Corruption(
        name="gaussian_blur",
        group="extra",
        imagenet_c_group="blur",
        lf_share=0.113,
        lf_share_sd=0.049,
        builder=T.GaussianBlur,
        params=per_severity(sigma=[1.0, 2.0, 3.0, 4.0, 6.0]),
        scaling="sigma",
        stochastic=False,
    ),
    Corruption(
        name="spatter",
        group="extra",
        imagenet_c_group="digital",
        lf_share=0.371,
        lf_share_sd=0.014,
        builder=T.Spatter,
        params=per_severity(
            mean=[0.65, 0.65, 0.65, 0.65, 0.67],
            std=[0.3, 0.3, 0.3, 0.3, 0.4],
            blur=[4, 3, 2, 1, 1],
            threshold=[0.69, 0.68, 0.68, 0.65, 0.65],
            intensity=[0.6, 0.6, 0.5, 1.5, 1.5],
            mode=["rain", "rain", "rain", "mud", "mud"],
        ),
        scaling="liquid layer made at 224-px scale (blurs, drop edges) and resized",
        notes="rain drops pale turquoise, mud brown (ImageNet-C's RGB colours); intensity is the "
        "mud mask's blur at severities 4-5",
    ),
    Corruption(
        name="saturate",
        group="extra",
        imagenet_c_group="digital",
        lf_share=0.869,
        lf_share_sd=0.179,
        builder=T.Saturate,
        params=per_severity(factor=[0.3, 0.1, 2.0, 5.0, 20.0], shift=[0.0, 0.0, 0.0, 0.1, 0.2]),
        stochastic=False,
        notes="ImageNet-C's severity order, not monotone in PSNR (x2 at severity 3 is the mildest)",
    ),
    # --- sharpening (not in ImageNet-C) --------------------------------------------------------
    Corruption(
        name="sharpen",
        group="sharpen",
        lf_share=0.026,
        lf_share_sd=0.016,
        fidelity="new",
        builder=T.sharpen,
        params=per_severity(alpha=[0.2, 0.4, 0.6, 0.8, 1.0]),
        stochastic=False,
        notes="3x3 Laplacian sharpening blended with the image by alpha (a fixed 3x3 stencil)",
    ),
    Corruption(
        name="unsharp_mask",
        group="sharpen",
        lf_share=0.053,
        lf_share_sd=0.029,
        fidelity="new",
        builder=T.UnsharpMask,
        params=per_severity(sigma=[1.0, 1.5, 2.0, 2.5, 3.0], alpha=[0.4, 0.55, 0.7, 0.85, 1.0]),
        scaling="sigma",
        stochastic=False,
        notes="x + alpha (x - G_sigma * x)",
    ),
)

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _ROWS}


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


__all__ = [
    "BANDS",
    "CORRUPTIONS",
    "FIDELITIES",
    "GROUPS",
    "HIGH_BAND_MAX_LF",
    "IMAGENET_C_GROUPS",
    "LOW_BAND_MIN_LF",
    "MIN_SIDE",
    "REGISTRY_VERSION",
    "Corruption",
    "Gap",
    "band_of",
    "check_reference_size",
    "check_severities",
    "check_severity",
    "get_corruption",
    "per_severity",
    "severity_summary",
]
