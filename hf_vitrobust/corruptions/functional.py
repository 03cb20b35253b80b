"""NumPy / OpenCV kernels of the custom corruptions: pure functions of an image and its draws.

The transforms in :mod:`hf_vitrobust.corruptions.transforms` draw their random parameters from
their seeded generator and call these functions; nothing here keeps state. Images are (H, W, 3)
uint8 in and out; intermediate arithmetic is float32 on the 0..255 or [0, 1] scale, as each
docstring says.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as albumentations_geometric
from albumentations.augmentations.pixel import functional as albumentations_pixel

#: Mean RGB of ImageNet-C's frost photographs (measured; see docs/corruptions.md).
FROST_TINT = np.array([0.52, 0.61, 0.65], dtype=np.float32)
#: Standard deviation of the frost texture's low-frequency density field.
FROST_LF_STD = 0.08
#: Standard deviation of the frost texture's high-frequency ice needles.
FROST_HF_STD = 0.08


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round (not truncate) and clip to uint8, so that a zero perturbation is an exact identity."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def standardise(a: np.ndarray) -> np.ndarray:
    """``a`` with zero mean and unit standard deviation (zeros when ``a`` is constant)."""
    std = float(a.std())
    return (a - a.mean()) / std if std > 1e-8 else np.zeros_like(a)


# ------------------------------------------------------------------------------------- noise


def shot_noise(img: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C shot noise: ``poisson(x * photons) / photons`` on the [0, 1] scale."""
    x = img.astype(np.float32) * (photons / 255.0)
    y = rng.poisson(x).astype(np.float32) * (255.0 / photons)
    return to_uint8(y)


def speckle_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C speckle noise: ``x + x * N(0, sigma)`` per pixel and channel."""
    x = img.astype(np.float32)
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    noise *= sigma
    noise += 1.0
    return to_uint8(x * noise)


# ------------------------------------------------------------------------------------ weather


def plasma(height: int, width: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """A (height, width) plasma fractal in [0, 1]: Albumentations' diamond-square generator.

    ImageNet-C divides its noise amplitude by ``wibbledecay**2`` per octave; Albumentations
    renormalises each octave and scales its noise by ``roughness**i``, so
    ``roughness = 1 / wibbledecay**2`` gives the same spectrum slope.
    """
    pattern = albumentations_pixel.generate_plasma_pattern(
        (max(height, 3), max(width, 3)), 1.0 / wibbledecay**2, rng
    )
    return pattern[:height, :width]


def fog(img: np.ndarray, plasma_field: np.ndarray, strength: float) -> np.ndarray:
    """ImageNet-C fog: ``(x + strength * plasma) * max(x) / (max(x) + strength)``."""
    x = img.astype(np.float32) / 255.0
    max_val = float(x.max())
    x += strength * plasma_field[..., None]
    x *= max_val / (max_val + strength)
    return to_uint8(x * 255.0)


def line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A (length, length) kernel with a one-pixel line through its centre at ``angle_deg``."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    p0 = (round(c - dx * c), round(c - dy * c))
    p1 = (round(c + dx * c), round(c + dy * c))
    cv2.line(kernel, p0, p1, 1.0, 1)
    return kernel


def frost_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 3) float32 frost texture in [0, 1].

    A low-frequency density field (blurred white noise at two scales) plus thin ice needles at
    four random orientations, grown from seeds whose density follows the field, tinted pale
    blue-white (:data:`FROST_TINT`, contrasts :data:`FROST_LF_STD` and :data:`FROST_HF_STD`).
    """
    side = max(height, width)
    # Low-frequency density: blurred noise at two scales, normalised to zero mean, unit std.
    coarse = cv2.GaussianBlur(
        rng.standard_normal((height, width)).astype(np.float32), (0, 0), max(side / 6, 1.0)
    )
    medium = cv2.GaussianBlur(
        rng.standard_normal((height, width)).astype(np.float32), (0, 0), max(side / 24, 1.0)
    )
    density = standardise(coarse) + 0.5 * standardise(medium)
    density = standardise(density)
    # Ice needles: sparse seeds (denser where the field is high) convolved with oriented line
    # kernels; a few orientations per image, like the dominant crystal directions of real frost.
    seed_prob = 0.02 * (1.0 + np.tanh(density))
    needles = np.zeros((height, width), np.float32)
    length = int(np.clip(round(side / 16), 3, 15)) | 1
    angles = rng.uniform(0.0, 180.0, size=4)
    for angle in angles:
        seeds = (rng.random((height, width)) < seed_prob / len(angles)).astype(np.float32)
        seeds *= rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
        needles += cv2.filter2D(seeds, -1, line_kernel(length, float(angle)))
    needles = cv2.GaussianBlur(needles, (0, 0), 0.6)
    texture = FROST_LF_STD * density + FROST_HF_STD * standardise(needles)
    out = FROST_TINT[None, None, :] + texture[..., None] * np.array([1.0, 0.95, 0.9], np.float32)
    return np.clip(out, 0.0, 1.0)


def frost(
    img: np.ndarray, texture: np.ndarray, image_weight: float, frost_weight: float
) -> np.ndarray:
    """ImageNet-C's frost blend: ``image_weight * x + frost_weight * texture``."""
    x = img.astype(np.float32) * image_weight
    x += texture * (255.0 * frost_weight)
    return to_uint8(x)


def one_sided_gaussian_line(radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageNet-C's motion kernel: weights N(i; 0, sigma), i = 0..2r, along one direction."""
    width = 2 * radius + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    kernel = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    c = width
    dy, dx = math.sin(math.radians(angle_deg)), math.cos(math.radians(angle_deg))
    for i, wgt in enumerate(weights):
        # ImageNet-C sums the image shifted by -round(i d): output(p) gathers input(p + i d),
        # and filter2D correlates, so the weight goes at anchor + i d.
        kernel[c + round(i * dy), c + round(i * dx)] += wgt
    return kernel


def snow_flakes(
    height: int,
    width: int,
    loc: float,
    scale: float,
    zoom: float,
    threshold: float,
    radius: int,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """ImageNet-C's snow layer, (height, width) float32 in [0, 1].

    Flakes ~ N(loc, scale) per pixel, zoomed by ``zoom`` about the centre, zeroed below
    ``threshold``, blurred along a random direction in [-135, -45] degrees by
    :func:`one_sided_gaussian_line`, quantised to 1/255.
    """
    flakes = rng.normal(loc, scale, size=(height, width)).astype(np.float32)
    # Zoom about the centre (crop the central 1/zoom, resize back up, bilinear).
    ch, cw = max(1, math.ceil(height / zoom)), max(1, math.ceil(width / zoom))
    top, left = (height - ch) // 2, (width - cw) // 2
    flakes = cv2.resize(
        flakes[top : top + ch, left : left + cw], (width, height), interpolation=cv2.INTER_LINEAR
    )
    flakes[flakes < threshold] = 0
    np.clip(flakes, 0, 1, out=flakes)
    angle = float(rng.uniform(-135.0, -45.0))
    flakes = cv2.filter2D(
        flakes,
        -1,
        one_sided_gaussian_line(radius, sigma, angle),
        borderType=cv2.BORDER_REPLICATE,
    )
    flakes = np.round(flakes * 255.0) / 255.0
    return flakes.astype(np.float32)


def snow(img: np.ndarray, flakes: np.ndarray, image_weight: float) -> np.ndarray:
    """Brighten towards ``max(x, 1.5 gray + 0.5)`` by ``1 - image_weight``; add the layer twice.

    The second copy of the layer is rotated by 180 degrees, as in ImageNet-C.
    """
    x = img.astype(np.float32) / 255.0
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    bright = np.maximum(x, gray * 1.5 + 0.5)
    x = image_weight * x + (1.0 - image_weight) * bright
    x += (flakes + np.rot90(flakes, 2))[..., None]
    return to_uint8(x * 255.0)


# ------------------------------------------------------------------------------------ digital


def saturate(img: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """ImageNet-C saturate: in HSV, ``S <- clip(S * scale + shift, 0, 1)``."""
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0.0, 1.0)
    return to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


def elastic_maps(
    height: int, width: int, imagenet_c_alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (map_x, map_y) of ImageNet-C's size-scaled elastic displacement.

    Displacements are uniform noise in ``[-0.005 H, 0.005 H]``, Gaussian-smoothed with
    ``sigma = 0.01 H``, times ``alpha``: Albumentations' field with uniform noise in [-1, 1],
    ``alpha' = 0.005 H alpha`` and ``sigma' = 0.01 H``.
    """
    dx, dy = albumentations_geometric.generate_displacement_fields(
        (height, width),
        imagenet_c_alpha * 0.005 * height,
        0.01 * height,
        same_dxdy=False,
        kernel_size=(0, 0),
        random_generator=rng,
        noise_distribution="uniform",
    )
    coords = np.stack(np.meshgrid(np.arange(width), np.arange(height)))
    maps = coords + np.stack([dx, dy])
    return maps[0].astype(np.float32), maps[1].astype(np.float32)


__all__ = [
    "FROST_HF_STD",
    "FROST_LF_STD",
    "FROST_TINT",
    "elastic_maps",
    "fog",
    "frost",
    "frost_texture",
    "line_kernel",
    "one_sided_gaussian_line",
    "plasma",
    "saturate",
    "shot_noise",
    "snow",
    "snow_flakes",
    "speckle_noise",
    "standardise",
    "to_uint8",
]
