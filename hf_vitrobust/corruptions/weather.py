"""Layer corruptions (fog, frost, snow, spatter): ports of ImageNet-C's, as functions of draws.

Each adds or blends a random layer into the image. Layers with pixel-unit structure (snow
flakes and their motion blur, spatter drops, the frost crop) are made at ImageNet-C's scale
(``side / scale`` pixels) and resized to the image, so ``scale == 1`` is the reference exactly.

Frost blends crops of ImageNet-C's six frost photographs. They ship with the reference package
(``imagecorruptions``, the ``imagecorruptions-imaug`` distribution), and are read from its
folder when it is installed (found without importing it); otherwise a procedural ice texture
stands in (:func:`procedural_frost_texture`), whose measured gap to the reference is recorded in
the registry.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np

from hf_vitrobust.corruptions import kernels
from hf_vitrobust.corruptions.functional import (
    correlate_line,
    gaussian_filter,
    motion_taps,
    to_uint8,
)

FROST_FILES: tuple[str, ...] = (
    "frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg",
)  # fmt: skip
"""ImageNet-C's frost photographs, in the reference's order (its draw picks an index)."""

#: Mean RGB of ImageNet-C's frost photographs (measured), for the procedural fallback.
FROST_TINT = np.array([0.52, 0.61, 0.65], dtype=np.float32)
FROST_LF_STD = 0.08
FROST_HF_STD = 0.08

SPATTER_WATER_RGB = np.array([175, 238, 238], np.float32) / 255.0
"""ImageNet-C's rain drops: pale turquoise, in RGB."""
SPATTER_MUD_RGB = np.array([63, 42, 20], np.float32) / 255.0
"""ImageNet-C's mud: brown, in RGB."""


def resize_layer(layer: np.ndarray, height: int, width: int) -> np.ndarray:
    """A layer made at another size, resized to (height, width): area when shrinking."""
    if layer.shape[:2] == (height, width):
        return layer
    shrink = layer.shape[0] > height or layer.shape[1] > width
    out = cv2.resize(
        layer, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return out.reshape((height, width) + layer.shape[2:])


def reference_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """The image's size at ImageNet-C's scale (``side / scale``, at least 1 pixel)."""
    if scale == 1.0:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


# ---------------------------------------------------------------------------------------- fog


def next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def plasma(height: int, width: int, wibbledecay: float, uniforms: np.ndarray) -> np.ndarray:
    """ImageNet-C's plasma fractal on a ``next_power_of_2(max side)`` map, cropped to the image.

    ``uniforms``: at least ``map_size**2`` floats in [0, 1) (:func:`plasma_draws`).
    """
    size = next_power_of_2(max(height, width))
    return kernels.diamond_square(size, float(wibbledecay), uniforms)[:height, :width]


def plasma_draws(height: int, width: int) -> int:
    """How many uniforms :func:`plasma` consumes for an image of this size."""
    return next_power_of_2(max(height, width)) ** 2


def fog(img: np.ndarray, plasma_field: np.ndarray, strength: float) -> np.ndarray:
    """ImageNet-C fog: ``(x + strength * plasma) * max(x) / (max(x) + strength)``."""
    max_val = float(img.max()) / 255.0
    x = img.astype(np.float32)
    x += (255.0 * strength) * plasma_field[..., None]
    x *= max_val / (max_val + strength)
    return to_uint8(x)


# -------------------------------------------------------------------------------------- frost


def frost_folder() -> Path | None:
    """The reference package's frost folder, when ``imagecorruptions`` is installed."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    return folder if all((folder / f).is_file() for f in FROST_FILES) else None


@functools.lru_cache(maxsize=1)
def frost_textures() -> tuple[np.ndarray, ...] | None:
    """ImageNet-C's six frost photographs as RGB uint8, or None when they are not installed."""
    folder = frost_folder()
    if folder is None:
        return None
    out = []
    for name in FROST_FILES:
        bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return tuple(out)


def frost_resize_factor(texture_shape: tuple[int, ...], height: int, width: int, scale: float):
    """The reference's texture scale: ``1.1 * max(scale, H / th, W / tw)`` (covers the image)."""
    th, tw = texture_shape[:2]
    return 1.1 * max(scale, height / th, width / tw)


@functools.lru_cache(maxsize=24)
def resized_texture(index: int, new_width: int, new_height: int) -> np.ndarray:
    """Frost photograph ``index`` resized (bicubic as the reference; area when shrinking)."""
    textures = frost_textures()
    assert textures is not None
    tex = textures[index]
    shrink = new_width < tex.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(tex, (new_width, new_height), interpolation=interp)


def frost_texture_for(index: int, height: int, width: int, scale: float) -> np.ndarray:
    """The resized frost photograph a (height, width) image crops from."""
    textures = frost_textures()
    assert textures is not None
    tex = textures[index]
    factor = frost_resize_factor(tex.shape, height, width, scale)
    return resized_texture(
        index, int(math.ceil(tex.shape[1] * factor)), int(math.ceil(tex.shape[0] * factor))
    )


def frost(img: np.ndarray, texture: np.ndarray, image_weight: float, frost_weight: float):
    """ImageNet-C's frost blend ``image_weight * x + frost_weight * texture`` (uint8 texture)."""
    x = img.astype(np.float32) * np.float32(image_weight)
    x += texture.astype(np.float32) * np.float32(frost_weight)
    return to_uint8(x)


def standardise(a: np.ndarray) -> np.ndarray:
    """``a`` with zero mean and unit standard deviation (zeros when ``a`` is constant)."""
    std = float(a.std())
    return (a - a.mean()) / std if std > 1e-8 else np.zeros_like(a)


def line_taps(length: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-pixel line of ``length`` through the origin at ``angle_deg``, as unit-weight taps."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    p0 = (round(c - dx * c), round(c - dy * c))
    p1 = (round(c + dx * c), round(c + dy * c))
    cv2.line(kernel, p0, p1, 1.0, 1)
    ys, xs = np.nonzero(kernel)
    centre = length // 2
    return (ys - centre).astype(np.int64), (xs - centre).astype(np.int64), kernel[ys, xs]


def smooth_noise(height: int, width: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (height, width) with features about ``scale`` pixels across:
    white noise on a grid of that spacing, bicubically interpolated (a cheap stand-in for
    Gaussian-blurred noise of sigma ``scale``)."""
    gh = max(2, int(math.ceil(height / scale)) + 1)
    gw = max(2, int(math.ceil(width / scale)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def procedural_frost_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 3) uint8 ice texture: the fallback when ImageNet-C's photographs are
    not installed.

    A low-frequency density field (smooth noise at two scales, relative to the image side) plus
    thin ice needles at four random orientations, seeded more densely where the field is high,
    tinted like ImageNet-C's frost photographs (mean RGB :data:`FROST_TINT`, contrasts
    :data:`FROST_LF_STD`, :data:`FROST_HF_STD`).
    """
    side = max(height, width)
    coarse = smooth_noise(height, width, side / 4, rng)
    medium = smooth_noise(height, width, side / 16, rng)
    density = standardise(standardise(coarse) + 0.5 * standardise(medium))
    seed_prob = 0.02 * (1.0 + np.tanh(density))
    needles = np.zeros((height, width), np.float32)
    length = int(np.clip(round(side / 16), 3, 15)) | 1
    angles = rng.uniform(0.0, 180.0, size=4)
    for angle in angles:
        seeds = (rng.random((height, width), dtype=np.float32) < seed_prob / len(angles)) * (
            rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
        )
        taps = line_taps(length, float(angle))
        needles += correlate_line(seeds[..., None], taps, cv2.BORDER_CONSTANT)[..., 0]
    needles = cv2.GaussianBlur(needles, (0, 0), 0.6)
    texture = FROST_LF_STD * density + FROST_HF_STD * standardise(needles)
    out = FROST_TINT[None, None, :] + texture[..., None] * np.array([1.0, 0.95, 0.9], np.float32)
    return to_uint8(np.clip(out, 0.0, 1.0) * 255.0)


# --------------------------------------------------------------------------------------- snow


def clipped_zoom_2d(layer: np.ndarray, zoom: float) -> np.ndarray:
    """ImageNet-C's ``clipped_zoom`` of a 2-D layer, uncropped: scipy's ``zoom(order=1)`` of the
    central ``ceil(side / zoom)`` crop, ``round(crop * zoom)`` pixels (may exceed the layer)."""
    h, w = layer.shape
    ch0, ch1 = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top0, top1 = (h - ch0) // 2, (w - ch1) // 2
    out0, out1 = int(round(ch0 * zoom)), int(round(ch1 * zoom))
    sy = (ch0 - 1) / (out0 - 1) if out0 > 1 else 0.0
    sx = (ch1 - 1) / (out1 - 1) if out1 > 1 else 0.0
    m = np.array([[sx, 0.0, top1], [0.0, sy, top0]], np.float64)
    return cv2.warpAffine(layer, m, (out1, out0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def snow_layer(
    normals: np.ndarray,
    loc: float,
    spread: float,
    zoom: float,
    threshold: float,
    radius: int,
    sigma: float,
    angle: float,
) -> np.ndarray:
    """ImageNet-C's snow layer (H, W) float32 in [0, 1] from standard normals (H, W).

    Flakes ~ N(loc, spread), zoomed about the centre, zeroed below ``threshold``, motion-blurred
    along ``angle`` (drawn in [-135, -45] degrees) with the reference's kernel, quantised to
    1/255 and cropped to the top-left H x W.
    """
    h, w = normals.shape
    flakes = clipped_zoom_2d(normals * np.float32(spread) + np.float32(loc), zoom)
    flakes[flakes < threshold] = 0
    np.clip(flakes, 0, 1, out=flakes)
    taps = motion_taps(radius, sigma, angle, 1.0, flakes.shape)
    blurred = correlate_line(np.ascontiguousarray(flakes), taps)[..., 0]
    blurred = np.round(blurred * 255.0) * np.float32(1 / 255.0)
    return np.ascontiguousarray(blurred[:h, :w])


def snow(img: np.ndarray, layer: np.ndarray, image_weight: float) -> np.ndarray:
    """Brighten towards ``max(x, 1.5 gray + 0.5)`` by ``1 - image_weight``; add the layer and its
    180-degree rotation, as in ImageNet-C."""
    x = img.astype(np.float32) * np.float32(1 / 255.0)
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    bright = np.maximum(x, gray * 1.5 + 0.5)
    x = image_weight * x + (1.0 - image_weight) * bright
    x += (layer + layer[::-1, ::-1])[..., None]
    return to_uint8(x * 255.0)


# ------------------------------------------------------------------------------------ spatter


def liquid_layer(normals: np.ndarray, mean: float, std: float, blur: float, threshold: float):
    """ImageNet-C's liquid layer: N(mean, std) blurred (scikit-image Gaussian of ``blur`` px),
    zero below ``threshold``."""
    layer = gaussian_filter(normals * np.float32(std) + np.float32(mean), blur)
    layer[layer < threshold] = 0
    return layer


def rain_drops(liquid: np.ndarray, intensity: float) -> np.ndarray:
    """ImageNet-C's rain spatter: the (H, W, 3) float32 colour added to the [0, 1] image.

    Drop edges (Canny), a distance transform truncated at 20 px, equalised and embossed, times
    the liquid, normalised to its maximum and ``intensity``, in pale turquoise.
    """
    liquid8 = (liquid * 255).astype(np.uint8)
    dist = 255 - cv2.Canny(liquid8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = liquid8.astype(np.float32) * dist
    top = float(m.max())
    if top > 0:
        m *= intensity / top
    return m[..., None] * SPATTER_WATER_RGB


def mud_mask(liquid: np.ndarray, threshold: float, blur: float) -> np.ndarray:
    """ImageNet-C's mud mask (H, W) float32: liquid above ``threshold``, blurred, zero below 0.8."""
    mask = gaussian_filter((liquid > threshold).astype(np.float32), blur)
    mask[mask < 0.8] = 0
    return mask


def add_rain(img: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """``clip(x + drops)`` on the [0, 1] scale."""
    return to_uint8(img.astype(np.float32) + drops * 255.0)


def add_mud(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x (1 - mask) + mud * mask``."""
    m = mask[..., None]
    return to_uint8(img.astype(np.float32) * (1.0 - m) + (255.0 * m) * SPATTER_MUD_RGB)


__all__ = [
    "FROST_FILES",
    "SPATTER_MUD_RGB",
    "SPATTER_WATER_RGB",
    "add_mud",
    "add_rain",
    "clipped_zoom_2d",
    "fog",
    "frost",
    "frost_folder",
    "frost_resize_factor",
    "frost_texture_for",
    "frost_textures",
    "liquid_layer",
    "mud_mask",
    "plasma",
    "plasma_draws",
    "procedural_frost_texture",
    "rain_drops",
    "reference_shape",
    "resize_layer",
    "snow",
    "smooth_noise",
    "snow_layer",
]
