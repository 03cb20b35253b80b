"""Base-vs-fine-tuned comparisons through SAEs, SAE quality metrics, and their summaries.

Every comparison encodes with the *inference* SAE loaded back from sae-lens' on-disk format: for
BatchTopK that is a JumpReLU SAE with the learned global threshold, so a code never depends on
which other images share its batch.

Definitions (also written into ``sae.json`` as :data:`DEFINITIONS`):

- code cosine: for an image, the mean over its selected tokens of cos(f(a_base), f(a_ft)), where
  f is the base SAE's encoder and a_* the residual activation of the same token of the same input
  under each model; cos(0, 0) = 1 and cos(0, v≠0) = 0 (an all-zero code matches only itself).
- raw cosine: the same on the raw residual activations (no SAE).
- different-image baseline: the same cosine between image i and image π(i) under one model, π a
  seeded permutation without fixed points.
- top-k Jaccard: |A ∩ B| / |A ∪ B| of the k largest *active* (> 0) features of the two codes, mean
  over tokens; two empty sets give 1.
- matched dictionary cosine: decoder rows of two SAEs (unit-normalised) paired one-to-one by the
  Hungarian assignment maximising total cosine; the distribution of the paired cosines.
- SAE metrics on held-out activations X (N tokens × d): L0 = mean count of non-zero features per
  token; explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²; MSE = mean over all elements of
  (x − x̂)²; dead fraction = share of features never non-zero on X.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from hf_vitrobust.stats import bootstrap_ci, paired_bootstrap

DEFINITIONS = {
    "code_cosine": "per image: mean over selected tokens of cos(SAE code of base activation, SAE "
    "code of fine-tuned activation), same input, same token, base model's SAE; cos(0,0)=1, "
    "cos(0,v)=0",
    "raw_cosine": "per image: mean over tokens of cos(base activation, fine-tuned activation)",
    "different_image_baseline": "the same cosine between image i and image pi(i) under one model "
    "(pi: seeded permutation without fixed points)",
    "topk_jaccard": "per image: mean over tokens of |A∩B|/|A∪B|, A and B the k largest active "
    "features of each code; two empty sets give 1",
    "matched_dictionary_cosine": "cosines of unit decoder rows paired by the Hungarian assignment "
    "(scipy linear_sum_assignment, maximise total cosine)",
    "l0": "mean number of non-zero features per token on held-out activations",
    "explained_variance": "1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 over held-out tokens",
    "mse": "mean over all elements of (x - x_hat)^2 on held-out tokens",
    "dead_fraction": "share of features never non-zero on the held-out tokens",
    "batchtopk_codes": "BatchTopK codes come from the inference JumpReLU SAE "
    "(save_inference_model), never from the batch-dependent training top-k",
    "corruption_group": "per image: mean over the group's corruptions of the per-image value; "
    "every corruption is applied to every held-out image",
    "corruption_seed": "held-out image with example id e under corruption c at severity s: "
    "corruptions.corrupt_examples, seed seeding.image_seed(seed, e, c, s) (the evaluation's "
    "and the analysis' seed)",
    "ci": "bootstrap CI over images at the run's confidence (default 95%; "
    "hf_vitrobust.stats.bootstrap_ci)",
}

#: Per-image comparisons summarised for every condition.
COMPARED = ("code_cosine", "raw_cosine", "topk_jaccard")


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
    def update(self, acts: torch.Tensor) -> None:
        x_all = acts.reshape(-1, acts.shape[-1])
        if self.sum_x is None:
            self.d = x_all.shape[1]
            self.sum_x = torch.zeros(self.d, dtype=torch.float64)
        for i in range(0, len(x_all), self.chunk_size):
            x = x_all[i : i + self.chunk_size].to(self.sae.device).float()
            feats = self.sae.encode(x)
            recon = self.sae.decode(feats)
            active = feats != 0
            self.sum_x += x.double().sum(0).cpu()
            self.sum_x2 += x.double().pow(2).sum().cpu()
            self.sq_err += (recon - x).double().pow(2).sum().cpu()
            self.l0 += active.sum().double().cpu()
            self.fired |= active.any(0).cpu()
            self.n += x.shape[0]

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


def sae_metrics(sae: Any, acts: torch.Tensor, chunk_size: int = 8192) -> dict[str, float]:
    """L0, explained variance, MSE and dead-feature fraction of an inference SAE on ``[..., d]``."""
    acc = MetricsAccumulator(sae, chunk_size)
    acc.update(acts)
    return acc.result()


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


def topk_jaccard(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Jaccard overlap of the k largest active (> 0) features of matching rows of ``[..., F]``."""
    if k < 1:
        raise ValueError(f"k={k} must be >= 1 for the top-k feature overlap.")
    k = min(k, a.shape[-1])

    def active_topk(x: torch.Tensor) -> torch.Tensor:
        values, idx = x.topk(k, dim=-1)
        mask = torch.zeros_like(x, dtype=torch.bool)
        return mask.scatter(-1, idx, values > 0)

    ma, mb = active_topk(a), active_topk(b)
    inter = (ma & mb).sum(-1).double()
    union = (ma | mb).sum(-1).double()
    return torch.where(union == 0, torch.ones_like(inter), inter / union.clamp_min(1))


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of range(n) without fixed points (pairs each image with another)."""
    if n < 2:
        raise ValueError(f"the different-image baseline needs at least 2 images, got {n}.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # Shifting a random order by one is a cyclic derangement of it.
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.roll(perm, -1)
    return out


@torch.no_grad()
def compare_codes(
    sae: Any,
    acts_a: torch.Tensor,
    acts_b: torch.Tensor,
    topk: int = 16,
    chunk_images: int = 64,
) -> dict[str, np.ndarray]:
    """Per-image comparisons of two activation sets ``[N, T, d]`` (same images, same tokens).

    Returns per-image arrays ``code_cosine``, ``raw_cosine``, ``topk_jaccard`` (each a mean over
    tokens), and ``l0_a``, ``l0_b`` (mean active features per token). Codes are computed chunk by
    chunk, so only ``chunk_images`` images' codes are in memory at once.
    """
    if acts_a.shape != acts_b.shape:
        raise ValueError(
            f"activation sets differ in shape {tuple(acts_a.shape)} vs {tuple(acts_b.shape)}; "
            "compare the same images and tokens."
        )
    if acts_a.dim() == 2:
        acts_a, acts_b = acts_a[:, None], acts_b[:, None]
    out: dict[str, list[np.ndarray]] = {k: [] for k in (*COMPARED, "l0_a", "l0_b")}
    for i in range(0, acts_a.shape[0], chunk_images):
        xa, xb = acts_a[i : i + chunk_images], acts_b[i : i + chunk_images]
        ca, cb = encode(sae, xa), encode(sae, xb)
        out["code_cosine"].append(row_cosine(ca, cb).mean(-1).numpy())
        out["raw_cosine"].append(row_cosine(xa, xb).mean(-1).numpy())
        out["topk_jaccard"].append(topk_jaccard(ca, cb, topk).mean(-1).numpy())
        out["l0_a"].append((ca != 0).sum(-1).double().mean(-1).numpy())
        out["l0_b"].append((cb != 0).sum(-1).double().mean(-1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


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


def summarize(
    values: np.ndarray | Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Median and mean with bootstrap CIs (over the given per-image values), and quantiles."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {"n": int(v.size), "median": float(v[0]) if v.size else None}
    ci = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    med_lo, med_hi = bootstrap_ci(v, statistic=np.median, **ci)
    mean_lo, mean_hi = bootstrap_ci(v, statistic=np.mean, **ci)
    q = np.quantile(v, [0.05, 0.25, 0.75, 0.95])
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "median_ci": [float(med_lo), float(med_hi)],
        "mean": float(v.mean()),
        "mean_ci": [float(mean_lo), float(mean_hi)],
        "q05": float(q[0]),
        "q25": float(q[1]),
        "q75": float(q[2]),
        "q95": float(q[3]),
        "confidence": float(confidence),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


def group_values(
    by_corruption: Mapping[str, Mapping[str, np.ndarray]], names: Sequence[str], key: str
) -> np.ndarray:
    """Per image: the mean over a group's corruptions (one value per image keeps the CI honest)."""
    return np.mean([by_corruption[c][key] for c in names], axis=0)


def condition_summary(
    same_input: Mapping[str, np.ndarray],
    different_image: Mapping[str, np.ndarray],
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """The summaries of one condition: base vs fine-tuned on the same input, the different-image
    baseline, and the paired bootstrap of their code-cosine difference."""

    def s(values: np.ndarray) -> dict[str, Any]:
        return summarize(values, n_resamples, seed, confidence)

    out = {key: s(same_input[key]) for key in COMPARED}
    out.update({f"{key}_different_image": s(different_image[key]) for key in COMPARED})
    out["code_cosine_minus_different_image"] = paired_bootstrap(
        different_image["code_cosine"],
        same_input["code_cosine"],
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    ).to_dict()
    return out


@dataclass
class FlagPolicy:
    """An SAE whose held-out explained variance is below ``min_explained_variance`` is flagged."""

    min_explained_variance: float = 0.7
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, metrics: dict[str, float]) -> str | None:
        ev = metrics.get("explained_variance", float("nan"))
        if not ev >= self.min_explained_variance:
            reason = (
                f"{name}: held-out explained variance {ev:.3f} < {self.min_explained_variance}; "
                "its codes are compared but marked flagged"
            )
            self.notes.append(reason)
            warnings.warn(reason, stacklevel=2)
            return reason
        return None


__all__ = [
    "COMPARED",
    "DEFINITIONS",
    "FlagPolicy",
    "MetricsAccumulator",
    "compare_codes",
    "condition_summary",
    "decoder_directions",
    "derangement",
    "encode",
    "group_values",
    "match_dictionaries",
    "random_directions",
    "row_cosine",
    "sae_metrics",
    "summarize",
    "topk_jaccard",
]
