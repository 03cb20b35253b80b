"""Compiled (numba) inner loops of the corruptions: pure functions of arrays, no randomness.

Every random draw happens in :mod:`hf_vitrobust.corruptions.transforms` from the transform's
seeded NumPy generator and comes in here as an array, so a seed means the same pixels with or
without a compiled kernel. Images are (H, W, C) uint8, C-contiguous; ``cache=True`` keeps the
compiled code between processes (first use compiles in about a second).
"""

from __future__ import annotations

import numpy as np
from numba import njit

TRUNCATION_TOLERANCE = 1e-3
"""Outputs are truncated to uint8 like the reference's ``np.uint8(float)``; values within this of
the next integer (float error) count as that integer, so an unchanged pixel stays unchanged."""


@njit(cache=True)
def inverse_cdf_lookup(
    levels: np.ndarray, uniforms: np.ndarray, cdf: np.ndarray, guide: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Sample ``values[k]`` with ``k ~ cdf[level]`` for every element (inverse transform).

    ``levels`` (uint8) and ``uniforms`` (float64 in [0, 1)) are flat and of one length; ``cdf``
    is (256, K) with ``cdf[:, -1] == 1``; ``guide[v, j]`` is the first k with
    ``cdf[v, k] > j / G`` (G = guide columns), where the search starts.
    """
    n = levels.shape[0]
    g = guide.shape[1]
    out = np.empty(n, np.uint8)
    for i in range(n):
        v = levels[i]
        u = uniforms[i]
        k = guide[v, int(u * g)]
        while cdf[v, k] <= u:
            k += 1
        out[i] = values[k]
    return out


@njit(cache=True)
def salt_and_pepper(img: np.ndarray, uniforms: np.ndarray, amount: float) -> np.ndarray:
    """Per element: 0 where ``u < amount / 2``, 255 where ``amount / 2 <= u < amount``."""
    flat = img.ravel()
    out = flat.copy()
    half = amount * 0.5
    for i in range(flat.shape[0]):
        u = uniforms[i]
        if u < amount:
            out[i] = 0 if u < half else 255
    return out.reshape(img.shape)


@njit(cache=True)
def add_noise(img: np.ndarray, noise: np.ndarray, sigma: float, multiplicative: bool):
    """``x + 255 sigma noise`` (or ``x + x sigma noise``), clipped to 0..255 and truncated as the
    reference's ``np.uint8`` (with :data:`TRUNCATION_TOLERANCE`), per element."""
    flat = img.ravel()
    out = np.empty_like(flat)
    s = np.float32(sigma)
    eps = np.float32(TRUNCATION_TOLERANCE)
    for i in range(flat.shape[0]):
        x = np.float32(flat[i])
        y = x + (x if multiplicative else np.float32(255.0)) * s * noise[i] + eps
        y = min(max(y, np.float32(0.0)), np.float32(255.0))
        out[i] = np.uint8(y)
    return out.reshape(img.shape)


@njit(cache=True)
def value_lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``out[..., c] = table[max over channels, img[..., c]]`` (HSV value shifts)."""
    h, w, ch = img.shape
    out = np.empty_like(img)
    for y in range(h):
        for x in range(w):
            v = img[y, x, 0]
            for c in range(1, ch):
                v = max(v, img[y, x, c])
            for c in range(ch):
                out[y, x, c] = table[v, img[y, x, c]]
    return out


@njit(cache=True)
def saturate(img: np.ndarray, factor: float, shift: float) -> np.ndarray:
    """HSV ``S <- clip(S * factor + shift, 0, 1)`` with hue and value kept, in float64.

    In HSV every channel is ``V (1 - S g(hue))``, so with the hue kept a channel becomes
    ``V - (V - x) S' / S``; a grey pixel (S = 0) has hue 0 (red), as in scikit-image.
    """
    h, w, ch = img.shape
    out = np.empty_like(img)
    eps = TRUNCATION_TOLERANCE
    for y in range(h):
        for x in range(w):
            v = 0.0
            m = 255.0
            for c in range(ch):
                val = np.float64(img[y, x, c])
                v = max(v, val)
                m = min(m, val)
            s = (v - m) / v if v > 0 else 0.0
            s2 = min(max(s * factor + shift, 0.0), 1.0)
            for c in range(ch):
                if s > 0:
                    new = v - (v - np.float64(img[y, x, c])) * s2 / s
                else:
                    new = v if c == 0 else v * (1.0 - s2)
                new = min(max(new + eps, 0.0), 255.0)
                out[y, x, c] = np.uint8(new)
    return out


@njit(cache=True)
def correlate_taps(
    padded: np.ndarray,
    offsets_y: np.ndarray,
    offsets_x: np.ndarray,
    weights: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """``out[y, x] = sum_t weights[t] * padded[y + offsets_y[t], x + offsets_x[t]]`` (float32).

    ``padded`` is (H + ..., W + ..., C) and already bordered so that every offset stays inside;
    offsets are non-negative indices into it. A sparse kernel (a motion-blur line) costs one
    multiply-add per tap and element, with contiguous inner loops.
    """
    ch = padded.shape[2]
    row_len = width * ch
    out = np.zeros((height, row_len), np.float32)
    for y in range(height):
        dst = out[y]
        for t in range(weights.shape[0]):
            wt = np.float32(weights[t])
            start = offsets_x[t] * ch
            # A slice, not src[start + j]: the loop then vectorises (no negative-index checks).
            src = padded[y + offsets_y[t]].ravel()[start : start + row_len]
            for j in range(row_len):
                dst[j] += wt * np.float32(src[j])
    return out.reshape(height, width, ch)


@njit(cache=True)
def disk_sums(padded: np.ndarray, half_widths: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sum of ``padded`` over a disk at every output pixel, as one row segment per disk row.

    Disk row ``r`` (``r = 0..len(half_widths)-1``, centre row ``R = len // 2``) spans columns
    ``-half_widths[r]..half_widths[r]`` (none where negative); output ``(y, x)`` sits at
    ``padded[y + R, x + R]`` with ``R`` also the horizontal padding. int32 prefix sums: exact.
    """
    hp, wp, ch = padded.shape
    prefix = np.zeros((hp, (wp + 1) * ch), np.int32)
    for y in range(hp):
        row = padded[y].ravel()
        acc = prefix[y]
        for j in range(wp * ch):
            acc[j + ch] = acc[j] + np.int32(row[j])
    n_rows = half_widths.shape[0]
    centre = n_rows // 2
    row_len = width * ch
    out = np.empty((height, row_len), np.float32)
    acc = np.empty(row_len, np.int32)
    for y in range(height):
        acc[:] = 0
        for r in range(n_rows):
            hw = half_widths[r]
            if hw < 0:
                continue
            p = prefix[y + r]
            hi = p[(centre + hw + 1) * ch : (centre + hw + 1) * ch + row_len]
            lo = p[(centre - hw) * ch : (centre - hw) * ch + row_len]
            for j in range(row_len):
                acc[j] += hi[j] - lo[j]
        dst = out[y]
        for j in range(row_len):
            dst[j] = np.float32(acc[j])
    return out.reshape(height, width, ch)


@njit(cache=True)
def accumulate_zooms(
    img: np.ndarray,
    row_index: np.ndarray,
    row_weight: np.ndarray,
    segments: np.ndarray,
    col_weight: np.ndarray,
    out_rows: np.ndarray,
) -> np.ndarray:
    """``img`` plus its bilinear zooms, separably (float32 sums, (H, W, C)).

    Zoom ``z``'s output row ``y < out_rows[z]`` interpolates rows ``row_index[z, y]`` and the
    next with weight ``row_weight[z, y]`` on the second. Columns come in runs where the source
    column advances with the output column: ``segments[z, i] = (first x, end x, source column of
    the first x)`` (unused runs have end <= first); ``col_weight[z]`` is the weight of the next
    source column per output element (column x channels). Runs keep the loops contiguous.
    """
    h, w, ch = img.shape
    acc = img.astype(np.float32).reshape(h, w * ch)
    # One replicated column on the right, so the "next column" of the last one exists.
    src = np.empty((h, (w + 1) * ch), np.float32)
    flat = img.reshape(h, w * ch)
    for r in range(h):
        row = src[r]
        for j in range(w * ch):
            row[j] = np.float32(flat[r, j])
        for c in range(ch):
            row[w * ch + c] = row[(w - 1) * ch + c]
    tmp = np.empty((h, w * ch), np.float32)
    for z in range(row_index.shape[0]):
        oh = out_rows[z]
        r0, r1 = row_index[z, 0], min(row_index[z, oh - 1] + 1, h - 1)
        wz = col_weight[z]
        for r in range(r0, r1 + 1):
            s = src[r]
            t = tmp[r]
            for i in range(segments.shape[1]):
                x0, x1, c0 = segments[z, i, 0], segments[z, i, 1], segments[z, i, 2]
                n = (x1 - x0) * ch
                if n <= 0:
                    continue
                a0 = s[c0 * ch : c0 * ch + n]
                a1 = s[c0 * ch + ch : c0 * ch + ch + n]
                wt = wz[x0 * ch : x0 * ch + n]
                out = t[x0 * ch : x0 * ch + n]
                for j in range(n):
                    out[j] = a0[j] + wt[j] * (a1[j] - a0[j])
        ow_ch = segments[z, :, 1].max() * ch
        for y in range(oh):
            y0 = row_index[z, y]
            y1 = min(y0 + 1, h - 1)
            b = row_weight[z, y]
            t0 = tmp[y0][:ow_ch]
            t1 = tmp[y1][:ow_ch]
            d = acc[y][:ow_ch]
            for j in range(ow_ch):
                d[j] += t0[j] + b * (t1[j] - t0[j])
    return acc.reshape(h, w, ch)


@njit(cache=True)
def resample_8bit(
    img: np.ndarray,
    bounds_x: np.ndarray,
    coeffs_x: np.ndarray,
    bounds_y: np.ndarray,
    coeffs_y: np.ndarray,
) -> np.ndarray:
    """Pillow's separable 8-bit resampling: horizontal pass to uint8, then vertical.

    ``bounds_*[j] = (first input index, count)`` and ``coeffs_*[j]`` the fixed-point weights
    (22 fractional bits) of output ``j``; each pass rounds half up and clips to 0..255, as
    Pillow's ``ImagingResampleHorizontal_8bpc`` / ``Vertical_8bpc``.
    """
    h, w, ch = img.shape
    nw = bounds_x.shape[0]
    nh = bounds_y.shape[0]
    half = np.int64(1) << 21
    tmp = np.empty((h, nw, ch), np.uint8)
    for y in range(h):
        for j in range(nw):
            n = bounds_x[j, 1]
            window = img[y, bounds_x[j, 0] : bounds_x[j, 0] + n]
            k = coeffs_x[j]
            for c in range(ch):
                acc = half
                for t in range(n):
                    acc += np.int64(window[t, c]) * k[t]
                v = acc >> 22
                tmp[y, j, c] = 0 if v < 0 else (255 if v > 255 else v)
    out = np.empty((nh, nw, ch), np.uint8)
    acc_row = np.empty(nw * ch, np.int64)
    for i in range(nh):
        n = bounds_y[i, 1]
        k = coeffs_y[i]
        acc_row[:] = half
        for t in range(n):
            src = tmp[bounds_y[i, 0] + t].ravel()
            kt = k[t]
            for j in range(nw * ch):
                acc_row[j] += np.int64(src[j]) * kt
        dst = out[i].ravel()
        for j in range(nw * ch):
            v = acc_row[j] >> 22
            dst[j] = 0 if v < 0 else (255 if v > 255 else v)
    return out


@njit(cache=True)
def ssim_mean(
    mx: np.ndarray, my: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray, pad: int
) -> float:
    """Mean SSIM over the interior from locally weighted moments (H, W, C): means, and the
    local means of x^2, y^2, xy; constants for data range 255."""
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    h, w, ch = mx.shape
    total = 0.0
    for y in range(pad, h - pad):
        for x in range(pad, w - pad):
            for c in range(ch):
                a = np.float64(mx[y, x, c])
                b = np.float64(my[y, x, c])
                vx = np.float64(sxx[y, x, c]) - a * a
                vy = np.float64(syy[y, x, c]) - b * b
                cv = np.float64(sxy[y, x, c]) - a * b
                total += ((2 * a * b + c1) * (2 * cv + c2)) / (
                    (a * a + b * b + c1) * (vx + vy + c2)
                )
    return total / ((h - 2 * pad) * (w - 2 * pad) * ch)


@njit(cache=True)
def swap_pixels(img: np.ndarray, shifts: np.ndarray, max_delta: int) -> None:
    """ImageNet-C's glass-blur "swaps", in place, sequentially in ImageNet-C's order.

    For each iteration ``i``, rows ``h = H - d .. d + 1`` and columns ``w = W - d .. d + 1``
    (descending), pixel ``(h, w)`` takes the value of ``(h + dy, w + dx)`` where
    ``(dx, dy) = shifts[i, H - d - h, W - d - w]`` (drawn in [-d, d)). ImageNet-C writes
    ``x[h, w], x[h2, w2] = x[h2, w2], x[h, w]`` on an (H, W, 3) array, where both sides are
    views of the pixels: the second assignment copies the already-overwritten pixel back, so
    each step is a copy, not a swap (checked against the reference in the tests). Kept, since
    that is what ImageNet-C's images are.
    """
    h_img, w_img, ch = img.shape
    d = max_delta
    for i in range(shifts.shape[0]):
        for a in range(h_img - 2 * d):
            h = h_img - d - a
            for b in range(w_img - 2 * d):
                w = w_img - d - b
                h2 = h + shifts[i, a, b, 1]
                w2 = w + shifts[i, a, b, 0]
                for c in range(ch):
                    img[h, w, c] = img[h2, w2, c]


@njit(cache=True)
def diamond_square(map_size: int, wibbledecay: float, uniforms: np.ndarray) -> np.ndarray:
    """ImageNet-C's plasma fractal (``plasma_fractal``), map_size x map_size, in [0, 1].

    The same diamond-square steps, wrap-around neighbours and amplitudes ``wibble`` (100, divided
    by ``wibbledecay`` per octave) as the reference; ``uniforms`` (in [0, 1), at least
    ``map_size**2`` of them) replace its ``np.random.uniform(-wibble, wibble)`` draws, consumed
    in its order (squares, then the two diamond sets, per octave).
    """
    m = np.zeros((map_size, map_size), np.float32)
    step = map_size
    wibble = 100.0
    pos = 0
    while step >= 2:
        half = step // 2
        n = map_size // step
        # squares: centre = mean of the four corners (wrapping) + noise
        for i in range(n):
            for j in range(n):
                y, x = i * step, j * step
                y1, x1 = (y + step) % map_size, (x + step) % map_size
                s = m[y, x] + m[y1, x] + m[y, x1] + m[y1, x1]
                m[y + half, x + half] = s / 4 + wibble * (2.0 * uniforms[pos] - 1.0) * wibble
                pos += 1
        # diamonds on the corner rows (left-right neighbours are corners, up-down are centres)
        for i in range(n):
            for j in range(n):
                y, x = i * step, j * step
                yu = (y - half) % map_size
                x1 = (x + step) % map_size
                s = m[y + half, x + half] + m[yu, x + half] + m[y, x] + m[y, x1]
                m[y, x + half] = s / 4 + wibble * (2.0 * uniforms[pos] - 1.0) * wibble
                pos += 1
        # diamonds on the corner columns
        for i in range(n):
            for j in range(n):
                y, x = i * step, j * step
                xl = (x - half) % map_size
                y1 = (y + step) % map_size
                s = m[y + half, x + half] + m[y + half, xl] + m[y, x] + m[y1, x]
                m[y + half, x] = s / 4 + wibble * (2.0 * uniforms[pos] - 1.0) * wibble
                pos += 1
        step //= 2
        wibble /= wibbledecay
    lo = m.min()
    m -= lo
    hi = m.max()
    if hi > 0:
        m /= hi
    return m


__all__ = [
    "correlate_taps",
    "diamond_square",
    "disk_sums",
    "inverse_cdf_lookup",
    "TRUNCATION_TOLERANCE",
    "accumulate_zooms",
    "add_noise",
    "resample_8bit",
    "salt_and_pepper",
    "saturate",
    "ssim_mean",
    "swap_pixels",
    "value_lut",
]
