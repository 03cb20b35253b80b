"""Measurements of a corruption's effect: PSNR and the low-frequency share of the perturbation.

The tests use them to check the registry's declared numbers (``lf_share``, ``band``, the PSNR
gap to the reference implementation); docs/corruptions.md gives the definitions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hf_vitrobust.corruptions import kernels
from hf_vitrobust.io import read_json

MEASUREMENTS_PATH = Path(__file__).with_name("measurements.json")
"""Stored measurements of the registry: fidelity to the reference, speeds (package data; written
by ``python -m hf_vitrobust.corruptions.fidelity --write`` and ``bench/corruptions.py
--record``)."""

LF_CUTOFF = 0.5 / 8
"""1/8 of Nyquist, in cycles per pixel (Nyquist is 0.5)."""


def psnr(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``corrupted`` against ``clean`` (uint8 scale)."""
    mse = float(np.mean((corrupted.astype(np.float64) - clean.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def lf_share(clean: np.ndarray, corrupted: np.ndarray, cutoff: float = LF_CUTOFF) -> float:
    """Fraction of the perturbation's spectral energy below ``cutoff`` cycles/pixel.

    The perturbation is ``corrupted - clean`` (float, per channel); its 2-D FFT power, summed over
    channels, is split at radial frequency ``cutoff`` (default 1/8 Nyquist; the DC term counts as
    low). White noise gives the disk's area fraction, pi * 0.0625**2 = 0.012.
    """
    d = corrupted.astype(np.float64) - clean.astype(np.float64)
    if d.ndim == 2:
        d = d[:, :, None]
    power = (np.abs(np.fft.fft2(d, axes=(0, 1))) ** 2).sum(axis=2)
    fy = np.fft.fftfreq(d.shape[0])[:, None]
    fx = np.fft.fftfreq(d.shape[1])[None, :]
    total = float(power.sum())
    if total == 0.0:
        return float("nan")
    return float(power[fy**2 + fx**2 < cutoff**2].sum() / total)


SSIM_SIGMA = 1.5
"""Gaussian window of SSIM (Wang et al. 2004), in pixels; truncated at 3.5 sigma (11 taps)."""


def ssim(clean: np.ndarray, corrupted: np.ndarray) -> float:
    """Mean structural similarity of ``corrupted`` to ``clean`` (uint8 scale, mean over channels).

    Wang et al. (2004): Gaussian window sigma 1.5 (11 taps, reflected borders), K1 0.01, K2 0.03,
    data range 255, population covariances; the mean skips the 5-pixel border where the window
    leaves the image. Equal to ``skimage.metrics.structural_similarity(clean, corrupted,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    channel_axis=2)`` up to float32 rounding (tested), several times faster.
    """
    x = clean.astype(np.float32)
    y = corrupted.astype(np.float32)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]

    def blur(a: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(a, (11, 11), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)
        return out.reshape(a.shape)

    moments = [blur(m) for m in (x, y, x * x, y * y, x * y)]
    return float(kernels.ssim_mean(*moments, 5))


def resize_short_side_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` resized so its short side is ``size`` (area when shrinking, bilinear when
    enlarging), then centre-cropped to ``size`` x ``size``."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def read_measurements(path: str | Path = MEASUREMENTS_PATH) -> dict[str, Any]:
    """The stored measurements (:data:`MEASUREMENTS_PATH`), or ``{}`` when there is no file."""
    path = Path(path)
    if not path.is_file():
        return {}
    return read_json(path, what="corruption measurements")


__all__ = [
    "MEASUREMENTS_PATH",
    "read_measurements",
    "LF_CUTOFF",
    "SSIM_SIGMA",
    "lf_share",
    "psnr",
    "resize_short_side_center_crop",
    "ssim",
]
