"""Linear CKA between two models' representations, exact over any number of images.

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with Xc, Yc column-centred
(Kornblith et al. 2019). Every term is a function of the float64 sums n, sum x, sum y,
sum x x^T, sum y y^T and sum y x^T, so the streaming value equals the formula on the
full matrices (it is not the minibatch CKA estimator). Memory is O(D^2) per layer,
independent of the number of images.

Under several processes each one sums its own images; `StreamingLinearCKA.reduce_across`
re-expresses every process's sums about the common mean of all images (Chan et al.'s pairwise
update: centred co-moments plus n_p (m_p - m)(m_p - m)^T) and adds them up, so the merged sums
are those of one process that saw every image.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object, reduce

__all__ = ["linear_cka", "StreamingLinearCKA"]


def _common_mean(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """The mean over all images of x and of y, from each part's (n, mean x, mean y)."""
    n = sum(p[0] for p in parts)
    return tuple(
        sum(torch.as_tensor(p[0] * p[i], dtype=torch.float64) for p in parts) / n for i in (1, 2)
    )


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-layer outer products: [K, D] x [K, E] -> [K, D, E]."""
    return torch.einsum("kd,ke->kde", a, b)


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

    def reduce_across(self, state: PartialState) -> None:
        """Replace this process's sums by the sums over every process's images (a collective:
        every process calls it). Afterwards each process holds the merged sums."""
        if state.num_processes == 1:
            return
        parts = gather_object([self._means()])
        if any(p is None for p in parts):
            raise ValueError(
                "A process saw no image for CKA: use fewer processes than images (and at least "
                "one batch per process)."
            )
        mean_x, mean_y = _common_mean(parts)
        sums = self._sums_about(mean_x, mean_y)
        self._set(sum(p[0] for p in parts), mean_x, mean_y,
                  [reduce(t.contiguous(), reduction="sum") for t in sums])  # fmt: skip

    @classmethod
    def merged(cls, parts: list[StreamingLinearCKA]) -> StreamingLinearCKA:
        """One accumulator holding the sums of all `parts` (in one process): what
        `reduce_across` computes over processes."""
        means = [p._means() for p in parts]
        if any(m is None for m in means):
            raise ValueError("Every part must have seen at least one image.")
        mean_x, mean_y = _common_mean(means)
        sums = [p._sums_about(mean_x, mean_y) for p in parts]
        out = cls()
        out._set(sum(m[0] for m in means), mean_x, mean_y, [sum(t) for t in zip(*sums)])
        return out

    def _means(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(n, mean of x [K, D], mean of y [K, E]) of this accumulator's images (None: none)."""
        if self._shift_x is None:
            return None
        mean_x = self._shift_x[:, 0] + self.sx / self.n
        mean_y = self._shift_y[:, 0] + self.sy / self.n
        return self.n, mean_x.cpu().numpy(), mean_y.cpu().numpy()

    def _sums_about(self, mean_x: torch.Tensor, mean_y: torch.Tensor) -> list[torch.Tensor]:
        """[sx, sy, sxx, syy, syx] of this accumulator's images shifted by the given means
        instead of its own shift: x - m = (x - s) + d with d = s - m."""
        dx = self._shift_x[:, 0] - mean_x.to(self.sx.device)
        dy = self._shift_y[:, 0] - mean_y.to(self.sy.device)
        n = self.n
        return [
            self.sx + n * dx,
            self.sy + n * dy,
            self.sxx + _outer(self.sx, dx) + _outer(dx, self.sx) + n * _outer(dx, dx),
            self.syy + _outer(self.sy, dy) + _outer(dy, self.sy) + n * _outer(dy, dy),
            self.syx + _outer(self.sy, dx) + _outer(dy, self.sx) + n * _outer(dy, dx),
        ]

    def _set(
        self, n: int, mean_x: torch.Tensor, mean_y: torch.Tensor, sums: list[torch.Tensor]
    ) -> None:
        self.n = int(n)
        self.sx, self.sy, self.sxx, self.syy, self.syx = sums
        self._shift_x = mean_x.to(self.sx.device)[:, None]
        self._shift_y = mean_y.to(self.sy.device)[:, None]

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
