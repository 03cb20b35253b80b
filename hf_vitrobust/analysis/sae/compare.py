"""Base-vs-fine-tuned comparisons through SAEs, SAE quality metrics, and their summaries.

Every comparison encodes with the *inference* SAE loaded back from sae-lens' on-disk format: for
BatchTopK that is a JumpReLU SAE with the calibrated global threshold (``calibrate``), so a code
never depends on which other images share its batch. Everything is computed per batch of images
and per token type (CLS, patches); only per-image values and running sums are kept.

:data:`DEFINITIONS` (written into ``sae.json``) says exactly what each figure is.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from hf_vitrobust.analysis.sae.calibrate import l0_check

DEFINITIONS = {
    "code_cosine": "per image and token type (CLS; patches): mean over its tokens of cos(SAE code "
    "of the base model's activation, SAE code of the other model's activation), same input, same "
    "token, the base model's SAE; tokens whose two codes are both all zero are excluded and "
    "counted (both_zero), an image with no token left is excluded; cos(0, v) = 0 for v != 0",
    "raw_cosine": "per image and token type: mean over tokens of cos(a - mu, b - mu), a and b "
    "the two residual activations, mu the base model's mean activation of that token type on "
    "the reference images under the same condition (centred)",
    "different_image_baseline": "the same figures between a compared image and its partner, a "
    "reference image (disjoint from the compared ones) picked by a seeded hash of the example "
    "id, both under the base model",
    "topk_jaccard": "per image and token type: mean over the tokens kept for the code cosine of "
    "|A∩B|/|A∪B|, A and B the k largest active features of each code",
    "l0_through_base": "per image and token type: mean number of active features per token "
    "when the model's activations go through the base model's SAE",
    "matched_dictionary_cosine": "cosines of unit decoder rows paired by the Hungarian "
    "assignment (scipy linear_sum_assignment, maximise total cosine)",
    "l0": "mean number of non-zero features per token on held-out activations (all conditions)",
    "explained_variance": "1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 over held-out tokens "
    "(all conditions), mean(x) the mean of the same activations",
    "mse": "mean over all elements of (x - x_hat)^2 on held-out tokens",
    "dead_fraction": "share of features never non-zero on the held-out tokens",
    "batchtopk_codes": "BatchTopK codes come from the inference JumpReLU SAE "
    "(save_inference_model), never from the batch-dependent training top-k; its global "
    "threshold is calibrated after training so that the inference L0 on the reference images' "
    "activations (all conditions) equals k (sae-lens' running estimate is reported beside it)",
    "quality_bar": "an SAE is flagged when its held-out explained variance is below "
    "min_explained_variance, or (BatchTopK) its held-out inference L0 is outside k ± 10%",
    "condition": "clean, or a corruption group: image e gets the group's corruption "
    "analysis.conditions.group_corruption(seed, e, group, members) at the stage's severity, "
    "corrupted by corruptions.corrupt_examples with seed seeding.image_seed(seed, e, c, s) (the "
    "evaluation's and the analysis' pixels)",
    "code_cosine_to_base": "comparison record: per image, the model's code cosine to the base "
    "minus the reference control's (same SAE, images, token type, condition); images excluded "
    "for either model are dropped; mean with a paired bootstrap CI and p-value "
    "(hf_vitrobust.stats.paired_bootstrap)",
    "summaries": "median and mean over images with percentile bootstrap CIs (seeded, "
    "n_resamples resamples of the images), and quantiles; excluded images (NaN) are counted "
    "as n_excluded",
}


@torch.no_grad()
def encode(sae: Any, acts: torch.Tensor, chunk_size: int = 8192) -> torch.Tensor:
    """SAE codes of ``[..., d_in]`` activations (inference SAE), computed in chunks."""
    shape = acts.shape
    flat = acts.reshape(-1, shape[-1])
    out = [
        sae.encode(flat[i : i + chunk_size].to(sae.device)).cpu()
        for i in range(0, len(flat), chunk_size)
    ]
    return torch.cat(out).reshape(*shape[:-1], -1)


class MetricsAccumulator:
    """Streaming L0, explained variance, MSE and dead fraction of one SAE over activation chunks."""

    def __init__(self, sae: Any, chunk_size: int = 8192) -> None:
        self.sae = sae
        self.chunk_size = chunk_size
        self.n = 0
        self.d: int | None = None
        self.sum_x: torch.Tensor | None = None
        self.sum_x2 = torch.zeros((), dtype=torch.float64)
        self.sq_err = torch.zeros((), dtype=torch.float64)
        self.l0 = torch.zeros((), dtype=torch.float64)
        self.fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool)

    @torch.no_grad()
    def update(self, acts: torch.Tensor, codes: torch.Tensor | None = None) -> None:
        """Add ``[..., d]`` activations (and, when already computed, their ``[..., F]`` codes)."""
        x_all = acts.reshape(-1, acts.shape[-1])
        c_all = None if codes is None else codes.reshape(-1, codes.shape[-1])
        if self.sum_x is None:
            self.d = x_all.shape[1]
            self.sum_x = torch.zeros(self.d, dtype=torch.float64)
        for i in range(0, len(x_all), self.chunk_size):
            x = x_all[i : i + self.chunk_size].to(self.sae.device).float()
            feats = self.sae.encode(x) if c_all is None else c_all[i : i + self.chunk_size]
            feats = feats.to(self.sae.device)
            recon = self.sae.decode(feats)
            active = feats != 0
            self.sum_x += x.double().sum(0).cpu()
            self.sum_x2 += x.double().pow(2).sum().cpu()
            self.sq_err += (recon - x).double().pow(2).sum().cpu()
            self.l0 += active.sum().double().cpu()
            self.fired |= active.any(0).cpu()
            self.n += x.shape[0]

    def state(self) -> dict[str, Any]:
        """The running sums (to gather from other processes and :meth:`merge`)."""
        return {
            "n": self.n,
            "d": self.d,
            "sum_x": self.sum_x,
            "sum_x2": self.sum_x2,
            "sq_err": self.sq_err,
            "l0": self.l0,
            "fired": self.fired,
        }

    def merge(self, state: dict[str, Any]) -> None:
        """Add another accumulator's :meth:`state` (same SAE, other images)."""
        if state["n"] == 0:
            return
        if self.sum_x is None:
            self.d = state["d"]
            self.sum_x = torch.zeros(self.d, dtype=torch.float64)
        self.n += state["n"]
        self.sum_x += state["sum_x"]
        self.sum_x2 += state["sum_x2"]
        self.sq_err += state["sq_err"]
        self.l0 += state["l0"]
        self.fired |= state["fired"]

    def result(self) -> dict[str, float]:
        if self.n == 0 or self.sum_x is None:
            raise ValueError("no activations to compute SAE metrics on.")
        # Total variance from running sums (float64): sum ||x||^2 - ||sum x||^2 / n.
        total_var = self.sum_x2 - self.sum_x.pow(2).sum() / self.n
        return {
            "l0": float(self.l0 / self.n),
            "explained_variance": float(1 - self.sq_err / total_var.clamp_min(1e-30)),
            "mse": float(self.sq_err / (self.n * self.d)),
            "dead_fraction": float((~self.fired).double().mean()),
            "n_tokens": int(self.n),
            "d_sae": int(self.sae.cfg.d_sae),
        }


def row_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine of matching rows of ``[..., F]`` tensors; cos(0, 0) = 1, cos(0, v≠0) = 0."""
    a = a.double()
    b = b.double()
    na = a.norm(dim=-1)
    nb = b.norm(dim=-1)
    cos = (a * b).sum(-1) / (na * nb).clamp_min(eps)
    a_zero = na <= eps
    b_zero = nb <= eps
    cos = torch.where(a_zero | b_zero, (a_zero & b_zero).double(), cos)
    return cos.clamp(-1.0, 1.0)


def active_topk(codes: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k largest *active* (> 0) features of each row of ``[..., F]`` codes."""
    if k < 1:
        raise ValueError(f"k={k} must be >= 1 for the top-k feature overlap.")
    values, idx = codes.topk(min(k, codes.shape[-1]), dim=-1)
    return torch.zeros_like(codes, dtype=torch.bool).scatter(-1, idx, values > 0)


def mask_jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A ∩ B| / |A ∪ B| of matching rows of two boolean masks; two empty sets give 1."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union == 0, torch.ones_like(inter), inter / union.clamp_min(1))


def topk_jaccard(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Jaccard overlap of the k largest active (> 0) features of matching rows of ``[..., F]``."""
    return mask_jaccard(active_topk(a, k), active_topk(b, k))


def token_slices(tokens: str) -> dict[str, slice]:
    """Token type -> its positions in the selected tokens: the CLS token and the patch tokens
    are compared separately, so the many patches never drown the one CLS token."""
    if tokens == "all":
        return {"cls": slice(0, 1), "patches": slice(1, None)}
    if tokens == "cls":
        return {"cls": slice(0, 1)}
    if tokens == "patches":
        return {"patches": slice(0, None)}
    raise ValueError(f"tokens={tokens!r} is not one of ('cls', 'patches', 'all').")


def code_cosines(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine of matching rows of two code tensors ``[..., F]``; NaN where both rows are all
    zero (excluded, see :data:`DEFINITIONS`), 0 where exactly one is."""
    cos = row_cosine(a, b, eps)
    both_zero = (a.double().norm(dim=-1) <= eps) & (b.double().norm(dim=-1) <= eps)
    return cos.masked_fill(both_zero, float("nan"))


def _nanmean_tokens(values: torch.Tensor) -> np.ndarray:
    """Per image: the mean over tokens of the finite values (NaN when there is none)."""
    finite = torch.isfinite(values)
    total = torch.where(finite, values, torch.zeros_like(values)).sum(-1)
    count = finite.sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan).numpy()


def active_count(codes: torch.Tensor) -> np.ndarray:
    """Per image: the mean number of active features per token of ``[B, T, F]`` codes."""
    return (codes != 0).sum(-1).double().mean(-1).numpy()


@torch.no_grad()
def pair_values(
    codes_a: torch.Tensor,
    codes_b: torch.Tensor,
    acts_a: torch.Tensor,
    acts_b: torch.Tensor,
    centre: torch.Tensor,
    topk: int,
    topk_a: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Per image, over the tokens of ``[B, T, ·]`` codes and activations of two inputs or models:

    ``code_cosine`` (mean over tokens whose two codes are not both all zero; NaN when none is),
    ``both_zero`` (how many tokens were excluded so), ``raw_cosine`` (mean cosine of the
    activations minus ``centre``, the base model's mean activation) and ``topk_jaccard`` (over
    the same tokens as the code cosine). ``topk_a``: ``active_topk(codes_a, topk)``, when the
    caller compares ``codes_a`` with several others.
    """
    cos = code_cosines(codes_a, codes_b)
    excluded = torch.isnan(cos)
    mask_a = active_topk(codes_a, topk) if topk_a is None else topk_a
    jaccard = mask_jaccard(mask_a, active_topk(codes_b, topk))
    jaccard = jaccard.masked_fill(excluded, float("nan"))
    centre = centre.to(acts_a.dtype)
    return {
        "code_cosine": _nanmean_tokens(cos),
        "both_zero": excluded.sum(-1).numpy().astype(np.int64),
        "raw_cosine": row_cosine(acts_a - centre, acts_b - centre).mean(-1).numpy(),
        "topk_jaccard": _nanmean_tokens(jaccard),
    }


def decoder_directions(sae: Any) -> torch.Tensor:
    """Unit-norm decoder rows ``[d_sae, d_in]`` of an SAE."""
    w = sae.W_dec.detach().double().cpu()
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def match_dictionaries(sae_a: Any, sae_b: Any | torch.Tensor) -> np.ndarray:
    """Cosines of decoder directions paired one-to-one by the Hungarian assignment.

    ``sae_b`` may be an SAE or a ``[d_sae, d_in]`` matrix of directions (e.g. a random baseline).
    """
    wa = decoder_directions(sae_a)
    wb = sae_b if isinstance(sae_b, torch.Tensor) else decoder_directions(sae_b)
    wb = wb.double() / wb.double().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(f"dictionaries differ in d_in: {wa.shape[1]} vs {wb.shape[1]}.")
    sim = (wa @ wb.T).numpy()
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return sim[rows, cols]


def random_directions(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``n`` random unit directions in ``d`` dimensions: the chance level of dictionary matching."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    return w / w.norm(dim=-1, keepdim=True)


class Summarizer:
    """Median and mean of per-image values with percentile bootstrap CIs, and quantiles.

    ``n_resamples`` seeded resamples (with replacement) of the ``n`` values; the draws for one
    ``n`` are made once, with each resample's indices sorted, so that on sorted values a
    resample's median is its middle element and the hundreds of distributions of a study cost
    a sort and a gather each. NaN values (excluded images) are dropped first and counted.
    """

    def __init__(self, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> None:
        if n_resamples < 1000:
            raise ValueError(f"n_resamples={n_resamples} is below the toolkit's minimum of 1000.")
        self.n_resamples = int(n_resamples)
        self.seed = int(seed)
        self.confidence = float(confidence)
        self._indices: dict[int, np.ndarray] = {}

    def _resamples(self, n: int) -> np.ndarray:
        """``[n_resamples, n]`` indices drawn with replacement, each row sorted."""
        if n not in self._indices:
            rng = np.random.default_rng([self.seed, n])
            self._indices[n] = np.sort(rng.integers(0, n, size=(self.n_resamples, n)), axis=1)
        return self._indices[n]

    def _ci(self, statistics: np.ndarray) -> list[float]:
        alpha = (1 - self.confidence) / 2
        lo, hi = np.quantile(statistics, [alpha, 1 - alpha])
        return [float(lo), float(hi)]

    def __call__(self, values: np.ndarray | Sequence[float]) -> dict[str, Any]:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.sort(v[np.isfinite(v)])
        n = finite.size
        out: dict[str, Any] = {"n": int(n), "n_excluded": int(v.size - n)}
        if n < 2:
            out["median"] = float(finite[0]) if n else None
            return out
        idx = self._resamples(n)
        # Sorted values at sorted indices: each row is a sorted resample.
        middle = (finite[idx[:, (n - 1) // 2]] + finite[idx[:, n // 2]]) / 2
        q = np.quantile(finite, [0.05, 0.25, 0.75, 0.95])
        out.update(
            median=float(np.median(finite)),
            median_ci=self._ci(middle),
            mean=float(finite.mean()),
            mean_ci=self._ci(finite[idx].mean(axis=1)),
            q05=float(q[0]),
            q25=float(q[1]),
            q75=float(q[2]),
            q95=float(q[3]),
            confidence=self.confidence,
            n_resamples=self.n_resamples,
            seed=self.seed,
            ci_method="percentile",
        )
        return out

    def difference(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        """Mean of ``b − a`` over the images where both are finite, with its CI."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        d = (b - a)[np.isfinite(a) & np.isfinite(b)]
        out: dict[str, Any] = {"n": int(d.size), "n_excluded": int(a.size - d.size)}
        if d.size < 2:
            out["estimate"] = float(d[0]) if d.size else None
            return out
        means = d[self._resamples(d.size)].mean(axis=1)
        ci = self._ci(means)
        return {
            **out,
            "estimate": float(d.mean()),
            "ci_low": ci[0],
            "ci_high": ci[1],
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "ci_method": "percentile",
        }


def summarize(
    values: np.ndarray | Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """One :class:`Summarizer` summary (median, mean, their CIs, quantiles) of ``values``."""
    return Summarizer(n_resamples, seed, confidence)(values)


@dataclass
class FlagPolicy:
    """The quality bar: an SAE is flagged when its held-out explained variance is below
    ``min_explained_variance``, or when it has a ``k`` (BatchTopK) and its held-out inference L0
    is outside ``k`` ± ``l0_tolerance`` (relative)."""

    min_explained_variance: float = 0.7
    l0_tolerance: float = 0.10
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, metrics: dict[str, float], k: float | None = None) -> str | None:
        reasons = []
        ev = metrics.get("explained_variance", float("nan"))
        if not ev >= self.min_explained_variance:
            reasons.append(f"held-out explained variance {ev:.3f} < {self.min_explained_variance}")
        if k is not None:
            check = l0_check(metrics.get("l0", float("nan")), k, self.l0_tolerance)
            if not check["l0_within_tolerance"]:
                reasons.append(
                    f"held-out inference L0 {metrics.get('l0', float('nan')):.2f} is "
                    f"{check['l0_over_k']:.2f} x k={k:g}, outside ±{self.l0_tolerance:.0%}"
                )
        if not reasons:
            return None
        reason = f"{name}: " + "; ".join(reasons) + "; its codes are compared but marked flagged"
        self.notes.append(reason)
        warnings.warn(reason, stacklevel=2)
        return reason


__all__ = [
    "DEFINITIONS",
    "FlagPolicy",
    "MetricsAccumulator",
    "Summarizer",
    "active_count",
    "active_topk",
    "code_cosines",
    "decoder_directions",
    "encode",
    "mask_jaccard",
    "match_dictionaries",
    "pair_values",
    "random_directions",
    "row_cosine",
    "summarize",
    "token_slices",
    "topk_jaccard",
]
