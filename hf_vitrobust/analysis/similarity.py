"""Linear CKA between two models' representations, exact over any number of images.

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with Xc, Yc column-centred
(Kornblith et al. 2019). Every term is a function of the float64 sums n, sum x, sum y,
sum x x^T, sum y y^T and sum y x^T, so the streaming value equals the formula on the
full matrices (it is not the minibatch CKA estimator). Memory is O(D^2) per layer,
independent of the number of images.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["linear_cka", "StreamingLinearCKA"]


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA of two [N, D] / [N, E] representations of the same N inputs (float64)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs [N, D] and [N, E] arrays, got {x.shape}, {y.shape}.")
    xc = x - x.mean(dim=0)
    yc = y - y.mean(dim=0)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else float("nan")


class StreamingLinearCKA:
    """Accumulate CKA sums for K layers at once; `update` with [K, B, D] and [K, B, E].

    Each side is shifted by its first batch's mean before summing: CKA is invariant to the
    shift, and it keeps sum x x^T - n m m^T free of cancellation when features have large
    means (ViT residual streams do).
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift_x: torch.Tensor | None = None
        self._shift_y: torch.Tensor | None = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch: x [K, B, D] (model A), y [K, B, E] (model B), same images in order."""
        if x.ndim == 2:
            x, y = x.unsqueeze(0), y.unsqueeze(0)
        if x.shape[:2] != y.shape[:2]:
            raise ValueError(f"CKA batches disagree in layers/images: {x.shape} vs {y.shape}.")
        # Sums stay on the inputs' device (float64 matmuls are cheap next to the forward).
        x = x.detach().to(torch.float64)
        y = y.detach().to(torch.float64)
        if self._shift_x is None:
            self._shift_x = x.mean(dim=1, keepdim=True)
            self._shift_y = y.mean(dim=1, keepdim=True)
            k, d, e = x.shape[0], x.shape[2], y.shape[2]
            z = dict(dtype=torch.float64, device=x.device)
            self.sx = torch.zeros(k, d, **z)
            self.sy = torch.zeros(k, e, **z)
            self.sxx = torch.zeros(k, d, d, **z)
            self.syy = torch.zeros(k, e, e, **z)
            self.syx = torch.zeros(k, e, d, **z)
        x = x - self._shift_x
        y = y - self._shift_y
        self.n += x.shape[1]
        self.sx += x.sum(dim=1)
        self.sy += y.sum(dim=1)
        self.sxx += x.transpose(1, 2) @ x
        self.syy += y.transpose(1, 2) @ y
        self.syx += y.transpose(1, 2) @ x

    def compute(self) -> np.ndarray:
        """CKA per layer, [K] float64 (NaN where a representation is constant)."""
        if self.n < 2:
            raise ValueError("CKA needs at least two images.")
        n = self.n
        cxx = self.sxx - torch.einsum("kd,ke->kde", self.sx, self.sx) / n
        cyy = self.syy - torch.einsum("kd,ke->kde", self.sy, self.sy) / n
        cyx = self.syx - torch.einsum("kd,ke->kde", self.sy, self.sx) / n
        cross = torch.linalg.matrix_norm(cyx) ** 2
        denom = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
        out = torch.where(denom > 0, cross / denom, torch.full_like(denom, float("nan")))
        return out.cpu().numpy()
