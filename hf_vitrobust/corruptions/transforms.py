"""The Albumentations transforms of the registry: custom ports of ImageNet-C, and builders.

Custom ``ImageOnlyTransform`` subclasses stand in where Albumentations has no equivalent of an
ImageNet-C corruption (or only a different algorithm). Each draws its random parameters from its
own seeded generator in ``get_params_dependent_on_data`` and calls a kernel of
:mod:`hf_vitrobust.corruptions.functional`.

The builders below them make stock Albumentations transforms with fixed parameters: every range
parameter is a ``(v, v)`` 2-tuple (:func:`fixed`), because Albumentations turns a scalar into a
random range, so a severity is one fixed strength and only the random draws depend on the seed.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
import numpy as np

from hf_vitrobust.corruptions import functional as F

# ------------------------------------------------------------------------ custom transforms


class _PerCallSeed(A.ImageOnlyTransform):
    """A transform whose ``apply`` draws from a NumPy generator seeded once per call."""

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(2**63 - 1))}


class PoissonShotNoise(_PerCallSeed):
    """ImageNet-C shot noise: ``poisson(x * photons) / photons`` on the [0, 1] scale.

    Albumentations' ``ShotNoise`` works in gamma-linearised space, a different noise level per
    intensity; this is the exact ImageNet-C formula, drawn from the transform's seeded generator.
    """

    def __init__(self, photons: float = 60.0, p: float = 1.0):
        super().__init__(p=p)
        self.photons = float(photons)

    def apply(self, img: np.ndarray, seed: int = 0, **params: Any) -> np.ndarray:
        return F.shot_noise(img, self.photons, np.random.default_rng(seed))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("photons",)


class SpeckleNoise(_PerCallSeed):
    """ImageNet-C speckle noise: ``x + x * N(0, sigma)`` per pixel and channel (exact port).

    Albumentations' ``MultiplicativeNoise`` draws uniform multipliers; this keeps ImageNet-C's
    Gaussian.
    """

    def __init__(self, sigma: float = 0.15, p: float = 1.0):
        super().__init__(p=p)
        self.sigma = float(sigma)

    def apply(self, img: np.ndarray, seed: int = 0, **params: Any) -> np.ndarray:
        return F.speckle_noise(img, self.sigma, np.random.default_rng(seed))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


class PlasmaFog(A.ImageOnlyTransform):
    """ImageNet-C fog: ``(x + strength * plasma) * max(x) / (max(x) + strength)``.

    The plasma fractal is Albumentations' diamond-square generator (:func:`functional.plasma`).
    ``PlasmaBrightnessContrast`` cannot express ImageNet-C's division, and ``RandomFog`` is a
    different effect (fog blobs), hence this transform.
    """

    def __init__(self, strength: float = 1.5, wibbledecay: float = 2.0, p: float = 1.0):
        super().__init__(p=p)
        self.strength = float(strength)
        self.wibbledecay = float(wibbledecay)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        return {"plasma": F.plasma(h, w, self.wibbledecay, self.random_generator)}

    def apply(self, img: np.ndarray, plasma: np.ndarray | None = None, **params: Any) -> np.ndarray:
        return F.fog(img, plasma, self.strength)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("strength", "wibbledecay")


class ProceduralFrost(A.ImageOnlyTransform):
    """Frost: ``image_weight * x + frost_weight * texture`` with a procedural ice texture.

    ImageNet-C blends crops of six frost photographs, which are not redistributable with this
    package and have no Albumentations counterpart. This generates the texture instead
    (:func:`functional.frost_texture`), its mean colour and its low/high-frequency contrast
    matched to the statistics of ImageNet-C's frost photographs (mean RGB about (.52, .61, .65),
    std about .14); the blend weights are ImageNet-C's. It is not the ImageNet-C algorithm: its
    measured PSNR gap to the reference is recorded in the registry.
    """

    def __init__(self, image_weight: float = 1.0, frost_weight: float = 0.4, p: float = 1.0):
        super().__init__(p=p)
        self.image_weight = float(image_weight)
        self.frost_weight = float(frost_weight)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        return {"texture": F.frost_texture(h, w, self.random_generator)}

    def apply(
        self, img: np.ndarray, texture: np.ndarray | None = None, **params: Any
    ) -> np.ndarray:
        return F.frost(img, texture, self.image_weight, self.frost_weight)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("image_weight", "frost_weight")


class FallingSnow(A.ImageOnlyTransform):
    """ImageNet-C snow: a zoomed, thresholded noise layer of flakes, motion-blurred, added twice.

    Steps (ImageNet-C's, on the [0, 1] scale): flakes ~ N(loc, scale) per pixel, zoomed by
    ``zoom`` about the centre, zeroed below ``threshold``, blurred along a random direction in
    [-135, -45] degrees by a one-sided Gaussian-weighted line (``radius``, ``sigma``); the image
    is brightened towards ``max(x, 1.5 gray + 0.5)`` with weight ``1 - image_weight``, and the
    layer plus its 180-degree rotation are added. Albumentations' ``RandomSnow`` is another
    effect (its texture mode also tints some images green), hence this port.
    """

    def __init__(
        self,
        loc: float = 0.1,
        scale: float = 0.3,
        zoom: float = 3.0,
        threshold: float = 0.5,
        radius: int = 10,
        sigma: float = 4.0,
        image_weight: float = 0.8,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.loc, self.scale, self.zoom, self.threshold = loc, scale, zoom, threshold
        self.radius, self.sigma, self.image_weight = int(radius), float(sigma), image_weight

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        flakes = F.snow_flakes(
            h,
            w,
            loc=self.loc,
            scale=self.scale,
            zoom=self.zoom,
            threshold=self.threshold,
            radius=self.radius,
            sigma=self.sigma,
            rng=self.random_generator,
        )
        return {"flakes": flakes}

    def apply(self, img: np.ndarray, flakes: np.ndarray | None = None, **params: Any) -> np.ndarray:
        return F.snow(img, flakes, self.image_weight)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("loc", "scale", "zoom", "threshold", "radius", "sigma", "image_weight")


class HSVSaturation(A.ImageOnlyTransform):
    """ImageNet-C saturate: in HSV, ``S <- clip(S * scale + shift, 0, 1)`` (exact port).

    Albumentations' ``ColorJitter`` blends with the grey image instead and has no additive shift.
    """

    def __init__(self, scale: float = 1.0, shift: float = 0.0, p: float = 1.0):
        super().__init__(p=p)
        self.scale = float(scale)
        self.shift = float(shift)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.saturate(img, self.scale, self.shift)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "shift")


class ScaledElasticTransform(A.ElasticTransform):
    """ImageNet-C (imagecorruptions) elastic transform: parameters scale with the image size.

    Albumentations' ``ElasticTransform`` with uniform noise gives ImageNet-C's field with
    ``alpha' = 0.005 H alpha`` and ``sigma' = 0.01 H`` (:func:`functional.elastic_maps`); this
    subclass computes them from each image's height.
    """

    def __init__(self, imagenet_c_alpha: float = 12.5, p: float = 1.0):
        super().__init__(
            alpha=1.0,
            sigma=1.0,
            noise_distribution="uniform",
            border_mode=cv2.BORDER_REFLECT_101,
            p=p,
        )
        self.imagenet_c_alpha = float(imagenet_c_alpha)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        map_x, map_y = F.elastic_maps(height, width, self.imagenet_c_alpha, self.random_generator)
        return {"map_x": map_x, "map_y": map_y}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("imagenet_c_alpha",)


# ------------------------------------------------------- builders of stock transforms (p=1)


def fixed(value: float) -> tuple[float, float]:
    """``(value, value)``: Albumentations turns a scalar into a range, so always pass a pair."""
    return (value, value)


def gauss_noise(sigma: float) -> A.BasicTransform:
    return A.GaussNoise(std_range=fixed(sigma), mean_range=(0.0, 0.0), per_channel=True, p=1.0)


def salt_and_pepper(amount: float) -> A.BasicTransform:
    return A.SaltAndPepper(amount=fixed(amount), salt_vs_pepper=(0.5, 0.5), p=1.0)


def defocus(radius: int, alias_blur: float) -> A.BasicTransform:
    return A.Defocus(radius=(radius, radius), alias_blur=fixed(alias_blur), p=1.0)


def glass_blur(sigma: float, max_delta: int, iterations: int) -> A.BasicTransform:
    return A.GlassBlur(sigma=sigma, max_delta=max_delta, iterations=iterations, mode="exact", p=1.0)


def motion_blur(kernel: int) -> A.BasicTransform:
    # ImageNet-C blurs along one side of a random direction in [-45, 45] degrees; Albumentations
    # wants angles in [0, 360], so take the opposite half-line: angles [135, 225], backward only.
    return A.MotionBlur(
        blur_limit=(kernel, kernel),
        angle_range=(135.0, 225.0),
        direction_range=(-1.0, -1.0),
        allow_shifted=False,
        p=1.0,
    )


def zoom_blur(max_factor: float, step: float) -> A.BasicTransform:
    return A.ZoomBlur(max_factor=fixed(max_factor), step_factor=fixed(step), p=1.0)


def gaussian_blur(sigma: float) -> A.BasicTransform:
    return A.GaussianBlur(blur_limit=0, sigma_limit=fixed(sigma), p=1.0)


def brightness(value: float) -> A.BasicTransform:
    # For uint8 images Albumentations shifts V on the 0..255 scale.
    shift = value * 255.0
    return A.HueSaturationValue(
        hue_shift_limit=(0, 0), sat_shift_limit=(0, 0), val_shift_limit=fixed(shift), p=1.0
    )


def contrast(factor: float) -> A.BasicTransform:
    # (x - mean) * c + mean == x * c + (1 - c) * mean: alpha = c, beta = (1 - c) * mean(image).
    return A.RandomBrightnessContrast(
        brightness_limit=fixed(1.0 - factor),
        contrast_limit=fixed(factor - 1.0),
        brightness_by_max=False,
        p=1.0,
    )


def pixelate(scale: float) -> A.BasicTransform:
    # ImageNet-C: PIL BOX down, NEAREST up. INTER_AREA is OpenCV's box filter; NEAREST_EXACT
    # samples pixel centres like PIL (plain INTER_NEAREST is shifted by half a pixel).
    return A.Downscale(
        scale_range=fixed(scale),
        interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_NEAREST_EXACT},
        p=1.0,
    )


def jpeg(quality: int) -> A.BasicTransform:
    return A.ImageCompression(compression_type="jpeg", quality_range=(quality, quality), p=1.0)


def spatter(
    mean: float,
    std: float,
    gauss_sigma: float,
    cutout_threshold: float,
    intensity: float,
    mode: str,
) -> A.BasicTransform:
    return A.Spatter(
        mean=fixed(mean),
        std=fixed(std),
        gauss_sigma=fixed(gauss_sigma),
        cutout_threshold=fixed(cutout_threshold),
        intensity=fixed(intensity),
        mode=mode,
        p=1.0,
    )


def sharpen(alpha: float) -> A.BasicTransform:
    return A.Sharpen(alpha=fixed(alpha), lightness=(1.0, 1.0), method="kernel", p=1.0)


def unsharp_mask(sigma: float, alpha: float) -> A.BasicTransform:
    # UnsharpMask does not derive the kernel from sigma (0 becomes 3): use a +-3 sigma kernel.
    k = 2 * math.ceil(3 * sigma) + 1
    return A.UnsharpMask(
        blur_limit=(k, k), sigma_limit=fixed(sigma), alpha=fixed(alpha), threshold=0, p=1.0
    )


__all__ = [
    "FallingSnow",
    "HSVSaturation",
    "PlasmaFog",
    "PoissonShotNoise",
    "ProceduralFrost",
    "ScaledElasticTransform",
    "SpeckleNoise",
    "brightness",
    "contrast",
    "defocus",
    "fixed",
    "gauss_noise",
    "gaussian_blur",
    "glass_blur",
    "jpeg",
    "motion_blur",
    "pixelate",
    "salt_and_pepper",
    "sharpen",
    "spatter",
    "unsharp_mask",
    "zoom_blur",
]
