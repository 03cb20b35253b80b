"""The corruptions as functions of an image and its random draws: ports of ImageNet-C.

Each function follows the reference implementation (the ``imagecorruptions`` package, the code
ImageNet-C was made with) step by step; its docstring names any departure. The transforms in
:mod:`hf_vitrobust.corruptions.transforms` draw the random inputs (uniforms, normals, angles,
offsets) from their seeded generator and call these. Images are (H, W, 3) uint8 in and out; the
reference's [0, 1] float arithmetic is done on the 0..255 scale, and results are truncated to
uint8 as the reference truncates them (:func:`to_uint8`).

``scale`` arguments are the image's short side over ImageNet-C's 224 px
(:func:`size_scale`): pixel-unit parameters (blur radii, displacements, the frost crop, layer
sizes) are multiplied by it, so a 28-px image is corrupted like a 224-px image seen at 28 px. At
``scale == 1`` every function is the reference's algorithm with its own parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import cv2
import numpy as np

from hf_vitrobust.corruptions import kernels

REFERENCE_SIZE = 224
"""ImageNet-C's image side in pixels: the size its pixel-unit parameters are given for."""


def size_scale(shape: Sequence[int], reference_size: int | None) -> float:
    """``min(H, W) / reference_size``, or 1 when ``reference_size`` is None (no scaling)."""
    if reference_size is None:
        return 1.0
    return min(int(shape[0]), int(shape[1])) / float(reference_size)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to 0..255 and truncate, as the reference's ``np.uint8`` of its float result (values
    within :data:`kernels.TRUNCATION_TOLERANCE` below an integer count as it, so float error
    does not turn an unchanged pixel into its lower neighbour)."""
    return np.clip(x + kernels.TRUNCATION_TOLERANCE, 0, 255).astype(np.uint8)


def gaussian_taps(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy/scikit-image's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / max(sigma, 1e-12)) ** 2)
    return (w / w.sum()).astype(np.float32)


def gaussian_filter(
    img: np.ndarray, sigma: float, border: int = cv2.BORDER_REPLICATE, truncate: float = 4.0
) -> np.ndarray:
    """``skimage.filters.gaussian`` over the two spatial axes, as float32 (0..255 if uint8).

    ``border``: scikit-image's default ``mode='nearest'`` is ``cv2.BORDER_REPLICATE``.
    """
    taps = gaussian_taps(sigma, truncate)
    return cv2.sepFilter2D(img, cv2.CV_32F, taps, taps, borderType=border)


# ------------------------------------------------------------------------------------- noise


@functools.lru_cache(maxsize=16)
def poisson_tables(photons: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cdf, guide, values) for sampling ``poisson(v / 255 * photons)`` at every level v.

    ``cdf[v, k]`` is P(count <= k); ``guide[v, j]`` the first k with ``cdf[v, k] > j / 64``
    (where the search starts); ``values[k] = round(min(k / photons, 1) * 255)``.
    """
    lam = np.arange(256, dtype=np.float64) * (photons / 255.0)
    kmax = int(math.ceil(photons + 12.0 * math.sqrt(photons) + 20.0))
    k = np.arange(kmax + 1, dtype=np.float64)
    # log pmf = k log(lam) - lam - log(k!), computed stably; level 0 has all mass at k = 0.
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kmax + 1)))])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = k[None, :] * np.log(lam[:, None]) - lam[:, None] - log_fact[None, :]
    log_pmf[0] = -np.inf
    log_pmf[0, 0] = 0.0
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0 + 1e-12  # the search always stops
    guide_cols = 64
    u = np.arange(guide_cols) / guide_cols
    guide = np.stack([np.searchsorted(row, u, side="right") for row in cdf]).astype(np.int32)
    values = to_uint8(np.minimum(k / photons, 1.0) * 255.0)
    return np.ascontiguousarray(cdf), guide, values


def shot_noise(img: np.ndarray, photons: float, uniforms: np.ndarray) -> np.ndarray:
    """ImageNet-C shot noise: ``poisson(x * photons) / photons`` on the [0, 1] scale, clipped.

    Exact Poisson draws by inverse transform of one uniform per element (``uniforms``,
    float64, one per element) through per-level tables.
    """
    cdf, guide, values = poisson_tables(float(photons))
    out = kernels.inverse_cdf_lookup(img.ravel(), uniforms.ravel(), cdf, guide, values)
    return out.reshape(img.shape)


def impulse_noise(img: np.ndarray, amount: float, uniforms: np.ndarray) -> np.ndarray:
    """ImageNet-C impulse noise (scikit-image's ``s&p``): each element of each channel is set to
    0 with probability ``amount / 2`` and to 255 with probability ``amount / 2``."""
    return kernels.salt_and_pepper(img, uniforms.ravel(), float(amount))


def gaussian_noise(img: np.ndarray, sigma: float, normals: np.ndarray) -> np.ndarray:
    """ImageNet-C Gaussian noise: ``x + N(0, sigma)`` per element ([0, 1] scale)."""
    return kernels.add_noise(img, normals.ravel(), float(sigma), False)


def speckle_noise(img: np.ndarray, sigma: float, normals: np.ndarray) -> np.ndarray:
    """ImageNet-C speckle noise: ``x + x * N(0, sigma)`` per element."""
    return kernels.add_noise(img, normals.ravel(), float(sigma), True)


# ------------------------------------------------------------------------------------ blurs


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """ImageNet-C Gaussian blur: scikit-image's ``gaussian`` (edge replicated, 4 sigma)."""
    if int(4.0 * sigma + 0.5) == 0:
        return img.copy()
    return to_uint8(gaussian_filter(img, sigma))


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A sparse kernel: (row offsets, column offsets, weights)."""


@functools.lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> tuple[np.ndarray, int, np.ndarray, Taps]:
    """ImageNet-C's defocus kernel as (row half-widths, disk area, alias-blur taps, correction).

    The reference draws an aliased disk ``x^2 + y^2 <= r^2`` on a grid of at least 17 x 17 and
    blurs that grid with a 3 x 3 (5 x 5 beyond radius 8) Gaussian of ``alias_blur``, reflecting
    at the grid's edge. Here the disk is summed as row segments and the Gaussian applied to the
    sums; where the disk touches the grid's edge (radius 8 and 10) the reflection adds mass that
    the sparse ``correction`` taps put back, so the kernel is the reference's.
    """
    reach = max(8, int(math.ceil(radius)))
    rows = np.arange(-reach, reach + 1)
    half = np.full(len(rows), -1, np.int32)
    inside = radius * radius - rows.astype(np.float64) ** 2
    ok = inside >= 0
    half[ok] = np.floor(np.sqrt(inside[ok]) + 1e-9).astype(np.int32)
    area = int((2 * half[ok] + 1).sum())
    ksize = 3 if radius <= 8 else 5
    taps = cv2.getGaussianKernel(ksize, alias_blur).astype(np.float64).ravel()
    # The reference's kernel, and the one the segments and the separable blur make.
    grid_x, grid_y = np.meshgrid(rows, rows)
    disk = ((grid_x**2 + grid_y**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    reference = cv2.GaussianBlur(disk, (ksize, ksize), sigmaX=alias_blur).astype(np.float64)
    g = ksize // 2
    full = cv2.filter2D(
        np.pad(disk.astype(np.float64), g), -1, np.outer(taps, taps),
        borderType=cv2.BORDER_CONSTANT,
    )  # fmt: skip
    delta = -full
    delta[g:-g, g:-g] += reference
    # Keep the largest corrections until what is left moves no output by 0.1 grey level.
    order = np.argsort(-np.abs(delta), axis=None)
    tail = np.cumsum(np.abs(delta).ravel()[order][::-1])[::-1]
    keep = order[tail * 255.0 >= 0.1]
    ys, xs = np.unravel_index(keep, delta.shape)
    centre = reach + g
    correction = (
        (ys - centre).astype(np.int64), (xs - centre).astype(np.int64),
        delta[ys, xs].astype(np.float32),
    )  # fmt: skip
    # Rows of the grid the disk does not reach cost nothing: keep only the disk's rows.
    used = int(half.max())
    middle = len(rows) // 2
    return half[middle - used : middle + used + 1].copy(), area, taps.astype(np.float32), correction


def defocus_blur(img: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C defocus blur: the image filtered by :func:`disk_kernel` (reflected borders)."""
    half, area, taps, correction = disk_kernel(float(radius), float(alias_blur))
    r = len(half) // 2
    g = len(taps) // 2
    h, w = img.shape[:2]
    pad = r + g
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    sums = kernels.disk_sums(padded, half, h + 2 * g, w + 2 * g)
    blurred = cv2.sepFilter2D(sums, -1, taps, taps, borderType=cv2.BORDER_CONSTANT)
    out = blurred[g : g + h, g : g + w] * np.float32(1.0 / area)
    if len(correction[2]):
        out += correlate_line(img, correction, cv2.BORDER_REFLECT_101)
    return to_uint8(out)


def motion_taps(
    radius: float, sigma: float, angle: float, scale: float, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageNet-C's motion kernel as (row offsets, column offsets, weights) of the taps.

    ``2 radius + 1`` taps (``floor(2 radius scale) + 1`` when scaled) at unit steps along the
    direction ``angle`` (degrees), weighted by a half-Gaussian of ``sigma * scale``; offsets are
    rounded as the reference rounds them, and a tap beyond the image stops the kernel there.
    """
    n_taps = 2 * int(radius) + 1 if scale == 1.0 else int(math.floor(2 * radius * scale)) + 1
    s = sigma * scale
    weights = np.exp(-(np.arange(n_taps, dtype=np.float64) ** 2) / (2 * s * s))
    weights /= weights.sum()
    point = (n_taps * np.sin(np.deg2rad(angle)), n_taps * np.cos(np.deg2rad(angle)))
    hyp = math.hypot(point[0], point[1])
    oy, ox = [], []
    for i in range(n_taps):
        dy = -math.ceil(((i * point[0]) / hyp) - 0.5)
        dx = -math.ceil(((i * point[1]) / hyp) - 0.5)
        if abs(dy) >= shape[0] or abs(dx) >= shape[1]:
            break  # the reference drops the rest of the kernel (no renormalisation)
        oy.append(-dy)
        ox.append(-dx)
    k = len(oy)
    return np.array(oy, np.int64), np.array(ox, np.int64), weights[:k].astype(np.float32)


def correlate_line(img: np.ndarray, taps: Taps, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """``sum_t w_t img(y + oy_t, x + ox_t)`` as float32, outside pixels by ``border``
    (default: the edge replicated, as the reference's shifts)."""
    oy, ox, w = taps
    h, wd = img.shape[:2]
    if img.ndim == 2:
        img = img[:, :, None]
    top, left = max(0, -int(oy.min())), max(0, -int(ox.min()))
    bottom, right = max(0, int(oy.max())), max(0, int(ox.max()))
    padded = cv2.copyMakeBorder(img, top, bottom, left, right, border)
    if padded.ndim == 2:
        padded = padded[:, :, None]
    return kernels.correlate_taps(padded, oy + top, ox + left, w, h, wd)


def motion_blur(
    img: np.ndarray, radius: float, sigma: float, angle: float, scale: float = 1.0
) -> np.ndarray:
    """ImageNet-C motion blur along ``angle`` (drawn in [-45, 45] degrees): :func:`motion_taps`."""
    return to_uint8(correlate_line(img, motion_taps(radius, sigma, angle, scale, img.shape)))


def glass_blur(
    img: np.ndarray, sigma: float, max_delta: int, shifts: np.ndarray | None
) -> np.ndarray:
    """ImageNet-C glass blur: Gaussian blur, local pixel swaps, Gaussian blur.

    The swaps are the reference's sequential ones (:func:`kernels.swap_pixels`, compiled), with
    ``shifts`` (iterations, H - 2d, W - 2d, 2) of (dx, dy) drawn in [-d, d); the first blur is
    truncated to uint8 as in the reference.
    """
    x = gaussian_filter(img, sigma)
    x = (x + 1e-3).astype(np.uint8)  # the reference's np.uint8(): truncation
    if shifts is not None and max_delta > 0 and shifts.size:
        kernels.swap_pixels(x, shifts, int(max_delta))
    return to_uint8(gaussian_filter(x, sigma))


def linear_zoom_samples(side: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy's ``zoom(order=1)`` of the central ``ceil(side / z)`` crop along one axis: for the
    first ``min(side, round(crop z))`` outputs, the source index and the next one's weight."""
    crop = int(math.ceil(side / float(z)))
    top = (side - crop) // 2
    out = int(round(crop * z))
    step = (crop - 1) / (out - 1) if out > 1 else 0.0
    pos = top + np.arange(min(side, out)) * step
    base = np.minimum(np.floor(pos), side - 1)
    return base.astype(np.int64), (pos - base).astype(np.float32)


@functools.lru_cache(maxsize=32)
def zoom_plan(
    height: int, width: int, channels: int, factors: tuple[float, ...]
) -> tuple[np.ndarray, ...]:
    """The arrays :func:`kernels.accumulate_zooms` takes for these zoom factors."""
    z_n = len(factors)
    row_index = np.zeros((z_n, height), np.int64)
    row_weight = np.zeros((z_n, height), np.float32)
    col_weight = np.zeros((z_n, width * channels), np.float32)
    out_rows = np.zeros(z_n, np.int64)
    runs = []
    for i, z in enumerate(factors):
        rows, rw = linear_zoom_samples(height, z)
        row_index[i, : len(rows)], row_weight[i, : len(rows)], out_rows[i] = rows, rw, len(rows)
        cols, cw = linear_zoom_samples(width, z)
        col_weight[i, : len(cols) * channels] = np.repeat(cw, channels)
        # Runs of output columns whose source column advances by one with them.
        breaks = np.flatnonzero(np.diff(cols) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(cols)]])
        runs.append(np.stack([starts, ends, cols[starts]], axis=1))
    segments = np.zeros((z_n, max(len(r) for r in runs), 3), np.int64)
    for i, r in enumerate(runs):
        segments[i, : len(r)] = r
    return row_index, row_weight, segments, col_weight, out_rows


def zoom_blur(img: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """ImageNet-C zoom blur: the mean of the image and its central zooms by ``factors``.

    Each zoom is scipy's ``zoom(order=1)`` of the central ``ceil(side / z)`` crop (corner-aligned
    linear interpolation), keeping its top-left ``H x W``; computed separably (compiled).
    """
    h, w = img.shape[:2]
    plan = zoom_plan(h, w, img.shape[2], tuple(float(z) for z in factors))
    acc = kernels.accumulate_zooms(img, *plan)
    return to_uint8(acc * np.float32(1.0 / (len(factors) + 1)))


# ---------------------------------------------------------------------------------- digital


def brightness(img: np.ndarray, value: float) -> np.ndarray:
    """ImageNet-C brightness: HSV ``V <- clip(V + value)``; equivalently every channel of a
    pixel times ``min(V + value, 1) / V`` (hue and saturation kept; black becomes grey)."""
    return kernels.value_lut(img, brightness_table(float(value)))


@functools.lru_cache(maxsize=16)
def brightness_table(value: float) -> np.ndarray:
    """``table[V, c] = round(c * min(V + 255 value, 255) / V)``; ``table[0, 0]`` the grey."""
    v = np.arange(256, dtype=np.float64)[:, None]
    c = np.arange(256, dtype=np.float64)[None, :]
    new_v = np.minimum(v + 255.0 * value, 255.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = np.where(v > 0, c * new_v / np.maximum(v, 1.0), new_v)
    return to_uint8(table)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """ImageNet-C contrast: ``(x - m) * factor + m`` with ``m`` each channel's mean."""
    means = np.array(cv2.mean(img)[: img.shape[2]])
    v = np.arange(256, dtype=np.float64)[:, None]
    lut = to_uint8((v - means[None, :]) * factor + means[None, :])
    return cv2.LUT(img, lut.reshape(256, 1, -1))


def saturate(img: np.ndarray, factor: float, shift: float) -> np.ndarray:
    """ImageNet-C saturate: in HSV, ``S <- clip(S * factor + shift, 0, 1)`` (float64, compiled)."""
    return kernels.saturate(img, float(factor), float(shift))


@functools.lru_cache(maxsize=64)
def box_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX resampling weights from ``in_size`` to ``out_size`` pixels (downscaling).

    Pillow's ``precompute_coeffs``: output ``j`` averages the input pixels whose centres fall in
    ``((j + 0.5) s - s / 2, (j + 0.5) s + s / 2]`` with ``s = in / out``, each with weight 1 (not
    by area covered, unlike OpenCV's ``INTER_AREA``), as 22-bit fixed point. Returns
    (bounds (out, 2) = first index and count, coefficients (out, K)).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds = np.zeros((out_size, 2), np.int64)
    coeffs = np.zeros((out_size, ksize), np.int64)
    for j in range(out_size):
        center = (j + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = (np.arange(xmax) + xmin - center + 0.5) / filterscale
        w = ((x > -0.5) & (x <= 0.5)).astype(np.float64)
        if w.sum() > 0:
            w /= w.sum()
        coeffs[j, :xmax] = np.floor(0.5 + w * (1 << 22)).astype(np.int64)
        bounds[j] = (xmin, xmax)
    return bounds, coeffs


def pixelate(img: np.ndarray, factor: float, scale: float = 1.0) -> np.ndarray:
    """ImageNet-C pixelate: Pillow's BOX resize to ``int(side * factor / scale)`` pixels
    (explicit sizes), nearest-neighbour back (pixel centres, as Pillow's NEAREST).

    The image is unchanged when that size is not smaller than the image.
    """
    h, w = img.shape[:2]
    nw, nh = (int(w * factor), int(h * factor)) if scale == 1.0 else (
        int(w * factor / scale), int(h * factor / scale))  # fmt: skip
    if nw >= w and nh >= h:
        return img.copy()
    nw, nh = max(1, min(nw, w)), max(1, min(nh, h))
    bx, kx = box_coefficients(w, nw)
    by, ky = box_coefficients(h, nh)
    small = kernels.resample_8bit(img, bx, kx, by, ky)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """ImageNet-C JPEG: encode the RGB image at ``quality`` (4:2:0 chroma) and decode it."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)


def elastic(img: np.ndarray, alpha: float, noise_x: np.ndarray, noise_y: np.ndarray) -> np.ndarray:
    """ImageNet-C (imagecorruptions) elastic transform, size-relative by construction.

    Displacements: ``noise_*`` uniform in ``[-0.005 H, 0.005 H]``, Gaussian-smoothed with sigma
    ``(0.01 H, 0.01 W)`` (reflected, 3 sigma), times ``alpha``; bilinear resampling with
    reflected borders.
    """
    h, w = img.shape[:2]
    ky, kx = gaussian_taps(0.01 * h, truncate=3.0), gaussian_taps(0.01 * w, truncate=3.0)
    dx = cv2.sepFilter2D(noise_x, -1, kx, ky, borderType=cv2.BORDER_REFLECT)
    dy = cv2.sepFilter2D(noise_y, -1, kx, ky, borderType=cv2.BORDER_REFLECT)
    dx *= alpha
    dy *= alpha
    dx += np.arange(w, dtype=np.float32)[None, :]
    dy += np.arange(h, dtype=np.float32)[:, None]
    return cv2.remap(img, dx, dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def unsharp_mask(img: np.ndarray, sigma: float, alpha: float) -> np.ndarray:
    """``x + alpha (x - G_sigma * x)`` (Gaussian of +-3 sigma, reflected borders)."""
    k = 2 * int(math.ceil(3 * sigma)) + 1
    blurred = cv2.GaussianBlur(img.astype(np.float32), (k, k), sigma, sigmaY=sigma)
    return to_uint8(cv2.addWeighted(img.astype(np.float32), 1.0 + alpha, blurred, -alpha, 0.0))


__all__ = [
    "REFERENCE_SIZE",
    "brightness",
    "box_coefficients",
    "brightness_table",
    "contrast",
    "correlate_line",
    "defocus_blur",
    "disk_kernel",
    "elastic",
    "gaussian_blur",
    "gaussian_filter",
    "gaussian_noise",
    "gaussian_taps",
    "glass_blur",
    "impulse_noise",
    "jpeg",
    "motion_blur",
    "motion_taps",
    "pixelate",
    "poisson_tables",
    "saturate",
    "shot_noise",
    "size_scale",
    "speckle_noise",
    "to_uint8",
    "unsharp_mask",
    "linear_zoom_samples",
    "zoom_blur",
    "zoom_plan",
]
