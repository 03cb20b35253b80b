"""Measurements of a corruption's effect: PSNR and the low-frequency share of the perturbation.

The tests use them to check the registry's declared numbers (``lf_share``, ``band``, the PSNR
gap to the reference implementation); docs/corruptions.md gives the definitions.
"""

from __future__ import annotations

import math

import numpy as np

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


__all__ = ["LF_CUTOFF", "lf_share", "psnr"]
