"""The Albumentations transforms of the registry: ImageNet-C ports, and builders of stock ones.

Each port is an ``ImageOnlyTransform`` holding one severity's parameters. It draws its random
inputs (uniforms, normals, angles, offsets, the frost crop) from its own seeded generator in
``get_params_dependent_on_data`` and calls :mod:`hf_vitrobust.corruptions.functional` or
:mod:`hf_vitrobust.corruptions.weather`. ``reference_size`` (default ImageNet-C's 224 px) makes
pixel-unit parameters scale with the image's short side; ``None`` turns scaling off.

The stock Albumentations ``Sharpen`` serves where there is no reference; its range parameters
are ``(v, v)`` 2-tuples (:func:`fixed`), because Albumentations turns a scalar into a random
range.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

from hf_vitrobust.corruptions import functional as F
from hf_vitrobust.corruptions import weather as W
from hf_vitrobust.corruptions.functional import REFERENCE_SIZE, size_scale


class ImageNetCTransform(A.ImageOnlyTransform):
    """Base of the ports: one severity's parameters (:attr:`param_names`, keyword arguments),
    ``reference_size`` and the image's :meth:`scale`."""

    #: Names of the severity parameters, stored as attributes (and shown in repr).
    param_names: tuple[str, ...] = ()

    def __init__(self, reference_size: int | None = REFERENCE_SIZE, p: float = 1.0, **params: Any):
        super().__init__(p=p)
        if set(params) != set(self.param_names):
            raise ValueError(
                f"{type(self).__name__} takes {', '.join(self.param_names)}; got {sorted(params)}"
            )
        for name in self.param_names:
            setattr(self, name, params[name])
        if reference_size is not None and (
            isinstance(reference_size, bool) or not isinstance(reference_size, (int, np.integer))
            or reference_size < 1
        ):  # fmt: skip
            raise ValueError(
                f"reference_size must be a positive int (pixels) or None, got {reference_size!r}"
            )
        self.reference_size = None if reference_size is None else int(reference_size)

    def scale(self, shape: tuple[int, ...]) -> float:
        """Short side over ``reference_size`` (1 when scaling is off)."""
        return size_scale(shape, self.reference_size)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (*self.param_names, "reference_size")


# ------------------------------------------------------------------------------------- noise


class ElementNoise(ImageNetCTransform):
    """Base of the noises: one random draw per element of the image (float32 standard normals,
    or uniforms in [0, 1) of ``uniform_dtype``), then ``noise(img, level, draws)``."""

    normal = False
    uniform_dtype: type = np.float32

    @property
    def level(self) -> float:
        return getattr(self, self.param_names[0])

    #: ``noise(img, level, draws)``: the functional form of the corruption.
    noise: Any = None

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        shape = params["shape"][:2] + (3,)
        rng = self.random_generator
        if self.normal:
            return {"draws": rng.standard_normal(shape, dtype=np.float32)}
        return {"draws": rng.random(shape, dtype=self.uniform_dtype)}

    def apply(self, img: np.ndarray, draws: np.ndarray, **params: Any) -> np.ndarray:
        return self.noise(img, self.level, draws)


class GaussianNoise(ElementNoise):
    """ImageNet-C Gaussian noise: ``x + N(0, sigma)`` per element ([0, 1] scale)."""

    param_names = ("sigma",)
    normal = True
    noise = staticmethod(F.gaussian_noise)


class ShotNoise(ElementNoise):
    """ImageNet-C shot noise: ``poisson(x * photons) / photons`` (exact Poisson draws)."""

    param_names = ("photons",)
    uniform_dtype = np.float64
    noise = staticmethod(F.shot_noise)


class ImpulseNoise(ElementNoise):
    """ImageNet-C impulse noise: salt and pepper per element of each channel."""

    param_names = ("amount",)
    noise = staticmethod(F.impulse_noise)


class SpeckleNoise(ElementNoise):
    """ImageNet-C speckle noise: ``x + x * N(0, sigma)``."""

    param_names = ("sigma",)
    normal = True
    noise = staticmethod(F.speckle_noise)


# ------------------------------------------------------------------------------------- blurs


class DefocusBlur(ImageNetCTransform):
    """ImageNet-C defocus blur: disk of ``radius``, anti-aliased by ``alias_blur`` (both px)."""

    param_names = ("radius", "alias_blur")

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        f = self.scale(img.shape)
        return F.defocus_blur(img, self.radius * f, self.alias_blur * f)


class GlassBlur(ImageNetCTransform):
    """ImageNet-C glass blur: blur, ``iterations`` rounds of local swaps within ``max_delta``
    px, blur. Scaled, ``max_delta`` is rounded to whole pixels (half up)."""

    param_names = ("sigma", "max_delta", "iterations")

    def delta(self, shape: tuple[int, ...]) -> int:
        f = self.scale(shape)
        return self.max_delta if f == 1.0 else int(np.floor(self.max_delta * f + 0.5))

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        d = self.delta((h, w))
        if d == 0 or h <= 2 * d or w <= 2 * d:
            return {"shifts": None}
        size = (self.iterations, h - 2 * d, w - 2 * d, 2)
        return {"shifts": self.random_generator.integers(-d, d, size=size, dtype=np.int16)}

    def apply(self, img: np.ndarray, shifts: np.ndarray | None, **params: Any) -> np.ndarray:
        f = self.scale(img.shape)
        return F.glass_blur(img, self.sigma * f, self.delta(img.shape), shifts)


class MotionBlur(ImageNetCTransform):
    """ImageNet-C motion blur: a half-Gaussian line (``radius``, ``sigma`` px) at an angle
    drawn in [-45, 45] degrees."""

    param_names = ("radius", "sigma")

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        return {"angle": float(self.random_generator.uniform(-45.0, 45.0))}

    def apply(self, img: np.ndarray, angle: float, **params: Any) -> np.ndarray:
        return F.motion_blur(img, self.radius, self.sigma, angle, self.scale(img.shape))


class ZoomBlur(ImageNetCTransform):
    """ImageNet-C zoom blur: mean over zooms ``arange(1, max_factor, step)`` (relative factors:
    nothing to scale)."""

    param_names = ("max_factor", "step")

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.zoom_blur(img, np.arange(1, self.max_factor, self.step))


class GaussianBlur(ImageNetCTransform):
    """ImageNet-C Gaussian blur of ``sigma`` px (scikit-image's: edges replicated, 4 sigma)."""

    param_names = ("sigma",)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.gaussian_blur(img, self.sigma * self.scale(img.shape))


class UnsharpMask(ImageNetCTransform):
    """``x + alpha (x - G_sigma * x)``, ``sigma`` in px (no ImageNet-C counterpart)."""

    param_names = ("sigma", "alpha")

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.unsharp_mask(img, self.sigma * self.scale(img.shape), self.alpha)


# ----------------------------------------------------------------------------------- weather


class Snow(ImageNetCTransform):
    """ImageNet-C snow: a zoomed, thresholded, motion-blurred flake layer added twice, over a
    brightened image. Scaled, the layer is made at ImageNet-C's scale and resized."""

    param_names = ("loc", "spread", "zoom", "threshold", "radius", "sigma", "image_weight")

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rh, rw = W.reference_shape(h, w, self.scale((h, w)))
        normals = self.random_generator.standard_normal((rh, rw), dtype=np.float32)
        angle = float(self.random_generator.uniform(-135.0, -45.0))
        layer_params = {k: getattr(self, k) for k in self.param_names if k != "image_weight"}
        layer = W.snow_layer(normals, angle=angle, **layer_params)
        return {"layer": W.resize_layer(layer, h, w)}

    def apply(self, img: np.ndarray, layer: np.ndarray, **params: Any) -> np.ndarray:
        return W.snow(img, layer, self.image_weight)


class Frost(ImageNetCTransform):
    """ImageNet-C frost: ``image_weight x + frost_weight crop``, the crop drawn from one of
    ImageNet-C's six frost photographs (resized by ``1.1 scale``), or from a procedural texture
    when they are not installed (``source="procedural"`` forces it)."""

    param_names = ("image_weight", "frost_weight")

    def __init__(self, source: str = "auto", **kw: Any):
        super().__init__(**kw)
        if source not in ("auto", "reference", "procedural"):
            raise ValueError(f"frost source must be auto, reference or procedural, not {source!r}")
        if source == "reference" and W.frost_textures() is None:
            raise ValueError(
                "frost source 'reference' needs ImageNet-C's frost photographs: "
                "pip install imagecorruptions-imaug"
            )
        self.source = source

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (*super().get_transform_init_args_names(), "source")

    @property
    def uses_reference_textures(self) -> bool:
        return self.source != "procedural" and W.frost_textures() is not None

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        if not self.uses_reference_textures:
            return {"texture": W.procedural_frost_texture(h, w, rng)}
        index = int(rng.integers(len(W.FROST_FILES)))
        tex = W.frost_texture_for(index, h, w, self.scale((h, w)))
        top = int(rng.integers(0, max(1, tex.shape[0] - h)))
        left = int(rng.integers(0, max(1, tex.shape[1] - w)))
        return {"texture": tex[top : top + h, left : left + w]}

    def apply(self, img: np.ndarray, texture: np.ndarray, **params: Any) -> np.ndarray:
        return W.frost(img, texture, self.image_weight, self.frost_weight)


class Fog(ImageNetCTransform):
    """ImageNet-C fog: a plasma fractal on the next power-of-two map of the image's long side
    (already relative to the image: nothing to scale)."""

    param_names = ("strength", "wibbledecay")

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        uniforms = self.random_generator.random(W.plasma_draws(h, w))
        return {"plasma": W.plasma(h, w, self.wibbledecay, uniforms)}

    def apply(self, img: np.ndarray, plasma: np.ndarray, **params: Any) -> np.ndarray:
        return W.fog(img, plasma, self.strength)


class Brightness(ImageNetCTransform):
    """ImageNet-C brightness: HSV ``V <- clip(V + value)``."""

    param_names = ("value",)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.brightness(img, self.value)


# ----------------------------------------------------------------------------------- digital


class Contrast(ImageNetCTransform):
    """ImageNet-C contrast: ``(x - m) * factor + m``, ``m`` each channel's mean."""

    param_names = ("factor",)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.contrast(img, self.factor)


class ElasticTransform(ImageNetCTransform):
    """ImageNet-C (imagecorruptions) elastic transform; its displacement (0.5% of the height)
    and smoothing (1% of each side) are relative to the image already."""

    param_names = ("alpha",)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        m = np.float32(0.005 * h)
        rng = self.random_generator
        noise_x = rng.random((h, w), dtype=np.float32) * (2 * m) - m
        noise_y = rng.random((h, w), dtype=np.float32) * (2 * m) - m
        return {"noise_x": noise_x, "noise_y": noise_y}

    def apply(self, img: np.ndarray, noise_x: np.ndarray, noise_y: np.ndarray, **params: Any):
        return F.elastic(img, self.alpha, noise_x, noise_y)


class Pixelate(ImageNetCTransform):
    """ImageNet-C pixelate: box down to ``factor`` of the size (explicit output size), nearest
    up. Scaled, the blocks grow with the image (the image at 224 px would be ``factor``)."""

    param_names = ("factor",)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.pixelate(img, self.factor, self.scale(img.shape))


class JpegCompression(ImageNetCTransform):
    """ImageNet-C JPEG compression of the RGB image at ``quality``."""

    param_names = ("quality",)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.jpeg(img, self.quality)


class Spatter(ImageNetCTransform):
    """ImageNet-C spatter: rain drops (severities 1-3) or mud (4-5) from a thresholded liquid
    layer, in ImageNet-C's RGB colours. Scaled, the layer is made at ImageNet-C's scale."""

    param_names = ("mean", "std", "blur", "threshold", "intensity", "mode")

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        if self.mode not in ("rain", "mud"):
            raise ValueError(f"spatter mode must be 'rain' or 'mud', not {self.mode!r}")

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rh, rw = W.reference_shape(h, w, self.scale((h, w)))
        normals = self.random_generator.standard_normal((rh, rw), dtype=np.float32)
        liquid = W.liquid_layer(normals, self.mean, self.std, self.blur, self.threshold)
        if self.mode == "rain":
            layer = W.rain_drops(liquid, self.intensity)
        else:
            layer = W.mud_mask(liquid, self.threshold, self.intensity)
        return {"layer": W.resize_layer(layer, h, w)}

    def apply(self, img: np.ndarray, layer: np.ndarray, **params: Any) -> np.ndarray:
        return W.add_rain(img, layer) if self.mode == "rain" else W.add_mud(img, layer)


class Saturate(ImageNetCTransform):
    """ImageNet-C saturate: in HSV, ``S <- clip(S * factor + shift, 0, 1)``."""

    param_names = ("factor", "shift")

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return F.saturate(img, self.factor, self.shift)


# ------------------------------------------------------- builders of stock transforms (p=1)


def fixed(value: float) -> tuple[float, float]:
    """``(value, value)``: Albumentations turns a scalar into a range, so always pass a pair."""
    return (value, value)


def sharpen(alpha: float, reference_size: int | None = None) -> A.BasicTransform:
    """3 x 3 Laplacian sharpening blended by ``alpha`` (a fixed stencil: not scaled)."""
    return A.Sharpen(alpha=fixed(alpha), lightness=(1.0, 1.0), method="kernel", p=1.0)


__all__ = [
    "Brightness",
    "Contrast",
    "DefocusBlur",
    "ElasticTransform",
    "ElementNoise",
    "Fog",
    "Frost",
    "GaussianBlur",
    "GaussianNoise",
    "GlassBlur",
    "ImageNetCTransform",
    "ImpulseNoise",
    "JpegCompression",
    "MotionBlur",
    "Pixelate",
    "Saturate",
    "ShotNoise",
    "Snow",
    "SpeckleNoise",
    "Spatter",
    "UnsharpMask",
    "ZoomBlur",
    "fixed",
    "sharpen",
]
