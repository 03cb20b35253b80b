"""Sparse autoencoders (sae-lens) on ViT residual streams, and base-vs-fine-tuned comparisons.

Training uses sae-lens' own ``SAETrainer`` with ``StandardTrainingSAE`` (ReLU + L1, "vanilla")
or ``BatchTopKTrainingSAE``. Every comparison encodes with the *inference* SAE loaded back from
sae-lens' on-disk format: for BatchTopK that is a JumpReLU SAE with the learned global threshold,
so a code never depends on which other images share its batch.

Definitions (also written into ``sae.json``):

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

import dataclasses
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SAE_TYPES = ("standard", "batchtopk")
SAE_TYPE_LABELS = {"standard": "vanilla (ReLU + L1)", "batchtopk": "BatchTopK"}
SPARSITY_FILENAME = "sparsity.safetensors"

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
    "ci": "95% bootstrap CI over images (hf_vitrobust.stats.bootstrap_ci)",
}


def _lazy_sae_lens() -> Any:
    # sae_lens takes ~8 s to import and warns (transformer_lens); only load it when needed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sae_lens

    return sae_lens


def check_sae_type(sae_type: str) -> str:
    """Validate an SAE type name: ``standard`` (vanilla ReLU + L1) or ``batchtopk``."""
    if sae_type not in SAE_TYPES:
        raise ValueError(f"sae_type={sae_type!r} is not one of {SAE_TYPES}; pick one of them.")
    return sae_type


@dataclass
class SAETrainConfig:
    """Hyperparameters of one SAE training run (sae-lens ``SAETrainer``)."""

    sae_type: str = "standard"
    expansion_factor: int = 8
    l1_coefficient: float = 3.0
    l1_warm_up_fraction: float = 0.05
    k: float = 16.0
    lr: float = 1e-3
    lr_end_factor: float = 0.1
    lr_warm_up_fraction: float = 0.02
    total_training_samples: int = 300_000
    batch_size: int = 1024
    n_init_batches: int = 16
    # Steps without firing before a feature counts as dead; BatchTopK's auxiliary loss then
    # revives it. sae-lens' default (1000) exceeds a few-hundred-step run, where it would never act.
    dead_feature_window: int = 50
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_sae_type(self.sae_type)
        if self.total_training_samples < self.batch_size:
            raise ValueError(
                f"total_training_samples={self.total_training_samples} is below "
                f"batch_size={self.batch_size}; raise it or lower the batch size."
            )
        if not 0 <= self.lr_end_factor <= 1:
            raise ValueError(f"lr_end_factor={self.lr_end_factor} must be in [0, 1].")

    @property
    def total_steps(self) -> int:
        return self.total_training_samples // self.batch_size


def sae_metadata(
    model_name: str,
    layer: int,
    tokens: str,
    training_data: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Metadata stored in the SAE's cfg.json: model, layer (hook), token choice, training data."""
    return {
        "model_name": model_name,
        "hook_name": f"vit.layers.{layer}",
        "hook_description": f"residual stream: output of model.vit.layers[{layer}]",
        "layer": int(layer),
        "tokens": tokens,
        "training_data": training_data,
        **extra,
    }


def build_training_sae(
    d_in: int, config: SAETrainConfig, metadata: dict[str, Any] | None = None
) -> Any:
    """A fresh sae-lens training SAE (``StandardTrainingSAE`` or ``BatchTopKTrainingSAE``).

    Activations are normalised to mean norm sqrt(d_in) during training
    (``expected_average_only_in``); sae-lens folds the factor into the weights at the end.
    """
    sl = _lazy_sae_lens()
    from sae_lens.saes.sae import SAEMetadata

    common = dict(
        d_in=int(d_in),
        d_sae=int(d_in) * int(config.expansion_factor),
        device=config.device,
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(**(metadata or {})),
    )
    torch.manual_seed(config.seed)
    if config.sae_type == "standard":
        cfg = sl.StandardTrainingSAEConfig(
            l1_coefficient=config.l1_coefficient,
            l1_warm_up_steps=int(config.l1_warm_up_fraction * config.total_steps),
            **common,
        )
        return sl.StandardTrainingSAE(cfg)
    cfg = sl.BatchTopKTrainingSAEConfig(k=float(config.k), **common)
    return sl.BatchTopKTrainingSAE(cfg)


@torch.no_grad()
def init_from_activations(sae: Any, batches: Sequence[torch.Tensor]) -> float:
    """Set ``b_dec`` to the activation mean; return the norm scaling factor sqrt(d_in)/E‖x‖.

    The factor is what sae-lens' ``ActivationScaler`` would estimate; b_dec lives in the scaled
    space during training, so it is the mean times that factor.
    """
    x = torch.cat([b.float() for b in batches])
    scaling = math.sqrt(x.shape[-1]) / float(x.norm(dim=-1).mean().clamp_min(1e-12))
    sae.b_dec.data.copy_((x.mean(0) * scaling).to(sae.b_dec.dtype))
    return scaling


def train_sae(
    data_provider: Iterator[torch.Tensor],
    d_in: int,
    config: SAETrainConfig,
    metadata: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Train one SAE with sae-lens' ``SAETrainer`` on ``[batch, d_in]`` batches.

    Returns ``(training_sae, trainer)``. The first ``n_init_batches`` batches set ``b_dec`` (the
    activation mean) and the normalisation factor, and are not trained on.
    """
    sl = _lazy_sae_lens()
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    sae = build_training_sae(d_in, config, metadata)
    init = [next(data_provider) for _ in range(max(1, config.n_init_batches))]
    for batch in init:
        if batch.shape != (config.batch_size, d_in):
            raise ValueError(
                f"the data provider yields batches of shape {tuple(batch.shape)}; the trainer "
                f"needs ({config.batch_size}, {d_in})."
            )
    scaling = init_from_activations(sae, init)
    steps = config.total_steps
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr * config.lr_end_factor,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=int(config.lr_warm_up_fraction * steps),
        device=config.device,
        dead_feature_window=config.dead_feature_window,
        feature_sampling_window=max(1, min(2000, steps)),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = sl.SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data_provider)
    # fit() keeps a preset factor (it only estimates when None) and folds it in at the end.
    trainer.activation_scaler.scaling_factor = scaling
    torch.manual_seed(config.seed)
    trainer.fit()
    return sae, trainer


def save_sae(
    training_sae: Any,
    folder: str | os.PathLike,
    trainer: Any | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Save an SAE in sae-lens' inference format (``cfg.json`` + ``sae_weights.safetensors``).

    BatchTopK goes through ``save_inference_model`` and loads back as a JumpReLU SAE (an inference
    SAE is saved with ``save_model``). With the
    trainer, its log10 feature sparsity is written as ``sparsity.safetensors`` (sae-lens' name,
    uploaded by ``upload_saes_to_huggingface``). ``extra_metadata`` (e.g. ``heldout_metrics``) is
    recorded in the config's metadata, and a flat ``metadata.json`` summary (model, layer, hook,
    tokens, training data, L0, explained variance, dead features) is written for model cards.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    for key, value in (extra_metadata or {}).items():
        training_sae.cfg.metadata[key] = value
    if hasattr(training_sae, "save_inference_model"):
        training_sae.save_inference_model(folder)
    else:  # already an inference SAE (e.g. loaded back): its own format is the inference one
        training_sae.save_model(folder)
    if trainer is not None and trainer.n_frac_active_samples > 0:
        save_file({"sparsity": trainer.log_feature_sparsity}, str(folder / SPARSITY_FILENAME))
    cfg = json.loads((folder / "cfg.json").read_text())
    meta = cfg.get("metadata") or {}
    metrics = meta.get("heldout_metrics") or {}
    training_data = meta.get("training_data") or {}
    d_sae = int(cfg["d_sae"])
    dead = metrics.get("dead_fraction")
    summary = {
        "architecture": cfg.get("architecture"),
        "training_architecture": meta.get("training_architecture"),
        "model": meta.get("model_name"),
        "layer": meta.get("layer"),
        "hook": meta.get("hook_name"),
        "tokens": meta.get("tokens"),
        "d_in": int(cfg["d_in"]),
        "d_sae": d_sae,
        "training_tokens": training_data.get("training_tokens"),
        "images": _describe_training_data(training_data),
        "training_data": training_data,
        "l0": metrics.get("l0"),
        "explained_variance": metrics.get("explained_variance"),
        "mse": metrics.get("mse"),
        "dead_features": dead,
        "dead_features_count": None if dead is None else round(dead * d_sae),
        "heldout_tokens": metrics.get("n_tokens"),
        "flagged": bool(meta.get("flagged", False)),
        "flag_reason": meta.get("flag_reason"),
        "sae_lens_version": meta.get("sae_lens_version"),
    }
    from hf_vitrobust.io import write_json_atomic

    write_json_atomic(summary, folder / "metadata.json")
    return folder


def _describe_training_data(training_data: dict[str, Any]) -> str | None:
    if not training_data:
        return None
    text = f"{training_data.get('dataset')} ({training_data.get('split')})"
    family = training_data.get("corruption_family")
    if family and family != "none":
        text += f", clean + {training_data.get('views_per_image', 1)} corrupted view(s) per image "
        text += f"from '{family}'"
    else:
        text += ", clean images"
    return text


def load_sae(folder: str | os.PathLike, device: str = "cpu") -> Any:
    """Load an inference SAE saved by :func:`save_sae` (``SAE.load_from_disk``)."""
    sl = _lazy_sae_lens()
    folder = Path(folder)
    if not (folder / "cfg.json").is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not an SAE folder (no cfg.json); expected sae-lens' layout "
            "(cfg.json + sae_weights.safetensors), as written by save_sae()."
        )
    sae = sl.SAE.load_from_disk(folder, device=device)
    return sae.eval()


def to_inference_sae(training_sae: Any) -> Any:
    """The inference SAE of a training SAE, by a save/load round trip through sae-lens' format."""
    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        return load_sae(tmp, device=str(training_sae.device))


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
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("code_cosine", "raw_cosine", "topk_jaccard", "l0_a", "l0_b")
    }
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
    from scipy.optimize import linear_sum_assignment

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
    values: np.ndarray | Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Median and mean with 95% bootstrap CIs (over the given per-image values), and quantiles."""
    from hf_vitrobust.stats import bootstrap_ci

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {"n": int(v.size), "median": float(v[0]) if v.size else None}
    med_lo, med_hi = bootstrap_ci(v, statistic=np.median, n_resamples=n_resamples, seed=seed)
    mean_lo, mean_hi = bootstrap_ci(v, statistic=np.mean, n_resamples=n_resamples, seed=seed)
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
        "confidence": 0.95,
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


def sae_id(sae_type: str, layer: int, tokens: str) -> str:
    """The folder name (and Hub ``sae_id``) of an SAE: ``<type>-layer<L>-<tokens>``."""
    return f"{check_sae_type(sae_type)}-layer{int(layer)}-{tokens}"


def list_saes(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The SAEs in a folder laid out like ``upload_saes_to_huggingface`` (one sub-folder per id).

    Each entry is the SAE's ``metadata.json`` (see :func:`save_sae`: ``architecture``,
    ``training_architecture``, ``model``, ``layer``, ``hook``, ``tokens``, ``d_in``, ``d_sae``,
    ``training_tokens``, ``images``, ``training_data``, held-out ``l0``, ``explained_variance``,
    ``mse``, ``dead_features`` (fraction), ``dead_features_count``, ``flagged``, ``flag_reason``)
    plus ``sae_id`` and ``path``. Folders without ``metadata.json`` get what ``cfg.json`` holds.
    Reads JSON only (no sae-lens import), sorted by id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"SAE folder {str(root)!r} does not exist.")
    out = []
    for cfg_path in sorted(root.glob("*/cfg.json")):
        sae_folder = cfg_path.parent
        meta_path = sae_folder / "metadata.json"
        if meta_path.is_file():
            entry = json.loads(meta_path.read_text())
        else:
            cfg = json.loads(cfg_path.read_text())
            meta = cfg.get("metadata") or {}
            entry = {
                "architecture": cfg.get("architecture"),
                "training_architecture": meta.get("training_architecture"),
                "model": meta.get("model_name"),
                "layer": meta.get("layer"),
                "hook": meta.get("hook_name"),
                "tokens": meta.get("tokens"),
                "d_in": cfg.get("d_in"),
                "d_sae": cfg.get("d_sae"),
            }
        out.append({"sae_id": sae_folder.name, "path": str(sae_folder), **entry})
    if not out:
        raise FileNotFoundError(
            f"{str(root)!r} holds no SAE folders (<sae_id>/cfg.json); train some with "
            "recipes/train_sae.py."
        )
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


def config_dict(config: SAETrainConfig) -> dict[str, Any]:
    """A JSON-able copy of a training config (for metadata and sae.json)."""
    return asdict(config)


# ---------------------------------------------------------------------------------------------
# The study: train SAEs on the base model, compare base vs fine-tuned (recipes/train_sae.py).
# ---------------------------------------------------------------------------------------------


@dataclass
class SAEStudyArguments:
    """What `recipes/train_sae.py` trains and compares (YAML and/or CLI flags)."""

    output_dir: str = field(
        default="outputs/fashion-mnist-tiny/sae",
        metadata={"help": "Where sae.json, saes/<sae_id>/ folders and figures go."},
    )
    finetuned_models: list[str] = field(
        default_factory=list,
        metadata={"help": "Checkpoint folders (or Hub ids) of fine-tuned models to compare."},
    )
    finetuned_names: list[str] = field(
        default_factory=list,
        metadata={"help": "Names of the fine-tuned models (default: their folder names)."},
    )
    layers: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Indices into model.vit.layers (default: the middle layer and the last)."
        },
    )
    tokens: str = field(default="all", metadata={"help": "cls, patches or all."})
    sae_types: list[str] = field(default_factory=lambda: list(SAE_TYPES))
    expansion_factor: int = 8
    l1_coefficient: float = field(default=3.0, metadata={"help": "Vanilla SAE sparsity penalty."})
    k: float = field(default=16.0, metadata={"help": "BatchTopK: mean active features per token."})
    lr: float = 1e-3
    lr_end_factor: float = field(default=0.1, metadata={"help": "lr_end = lr * this (cosine)."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base checkpoint folder or Hub id (overrides model_name_or_path)."},
    )
    training_tokens: int = field(
        default=300_000, metadata={"help": "Activations (tokens) each SAE trains on."}
    )
    sae_batch_size: int = 1024
    n_init_batches: int = field(
        default=16, metadata={"help": "Batches that set b_dec (activation mean) and the norm."}
    )
    dead_feature_window: int = field(
        default=50, metadata={"help": "Steps before a silent feature is dead (BatchTopK aux loss)."}
    )
    image_batch_size: int = 256
    buffer_mb: float = field(default=64.0, metadata={"help": "Shuffle-buffer memory budget."})
    max_tokens_per_image: int | None = field(
        default=None, metadata={"help": "Random tokens kept per image (None: all)."}
    )
    train_corruption_family: str = field(
        default="all",
        metadata={
            "help": "Family of corrupted views added to training ('' or 'none': clean only)."
        },
    )
    train_views: int = field(default=1, metadata={"help": "Corrupted views per training image."})
    train_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    eval_corruption_family: str = field(
        default="all",
        metadata={"help": "Family (or comma-separated corruptions) compared per group, held out."},
    )
    eval_severity: int = 3
    num_eval_images: int = field(
        default=256, metadata={"help": "Held-out images (eval split) for metrics and comparisons."}
    )
    min_explained_variance: float = field(
        default=0.7, metadata={"help": "SAEs below this held-out explained variance are flagged."}
    )
    topk_overlap_k: int = 16
    train_finetuned_saes: bool = field(
        default=True, metadata={"help": "Also train SAEs on each fine-tuned model and match them."}
    )
    seed_baseline: bool = field(
        default=True,
        metadata={
            "help": "Train a second base SAE (seed + 1) as the dictionary-matching baseline."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache streamed activations here and reuse them."}
    )
    n_resamples: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        from hf_vitrobust.analysis.sae.activations import check_tokens

        self.tokens = check_tokens(self.tokens)
        for t in self.sae_types:
            check_sae_type(t)
        if self.finetuned_names and len(self.finetuned_names) != len(self.finetuned_models):
            raise ValueError(
                f"finetuned_names has {len(self.finetuned_names)} entries but finetuned_models "
                f"has {len(self.finetuned_models)}; give one name per model or none."
            )
        if self.num_eval_images < 2:
            raise ValueError(
                "num_eval_images must be >= 2 (the different-image baseline pairs images)."
            )

    def train_config(self, sae_type: str, seed: int | None = None) -> SAETrainConfig:
        return SAETrainConfig(
            sae_type=sae_type,
            expansion_factor=self.expansion_factor,
            l1_coefficient=self.l1_coefficient,
            k=self.k,
            lr=self.lr,
            lr_end_factor=self.lr_end_factor,
            total_training_samples=self.training_tokens,
            batch_size=self.sae_batch_size,
            n_init_batches=self.n_init_batches,
            dead_feature_window=self.dead_feature_window,
            seed=self.seed if seed is None else seed,
            device=self.device,
        )


def _train_batches(train_ds: Any, processor: Any, args: SAEStudyArguments) -> Any:
    """A function of the epoch returning collated training batches (clean + corrupted views)."""
    from torch.utils.data import DataLoader

    from hf_vitrobust.data import CorruptionCollator, CorruptionViews

    family = _family_spec(args.train_corruption_family)
    use_views = family is not None and args.train_views > 0
    views = (
        CorruptionViews(family, severities=tuple(args.train_severities), seed=args.seed)
        if use_views
        else None
    )
    collator = CorruptionCollator(processor, views=views, k=args.train_views if use_views else 0)
    iterable = not hasattr(train_ds, "__len__")

    def batches(epoch: int) -> Any:
        collator.set_epoch(epoch)
        generator = torch.Generator().manual_seed(args.seed + epoch)
        return DataLoader(
            train_ds,
            batch_size=args.image_batch_size,
            shuffle=not iterable,
            generator=None if iterable else generator,
            collate_fn=collator,
        )

    return batches


def _model_chunks(
    model: Any,
    batches: Any,
    layer: int,
    args: SAEStudyArguments,
    seed: int,
    cache_key: dict[str, Any] | None,
    role: str,
) -> Iterator[torch.Tensor]:
    from hf_vitrobust.analysis.sae.activations import (
        activation_chunks,
        cache_activations,
        cached_activation_chunks,
        read_cache_manifest,
    )

    def live(epochs: int | None) -> Iterator[torch.Tensor]:
        return activation_chunks(
            model,
            batches,
            layer,
            args.tokens,
            max_tokens_per_image=args.max_tokens_per_image,
            epochs=epochs,
            seed=seed,
        )

    if not args.cache_dir:
        return live(None)
    path = Path(args.cache_dir) / f"{role}-layer{layer}-{args.tokens}"
    # The init batches (b_dec, norm) come first, then training; one spare batch.
    needed = args.training_tokens + (args.n_init_batches + 1) * args.sae_batch_size
    manifest = read_cache_manifest(path)
    if manifest is None or manifest.get("n_activations", 0) < needed:
        cache_activations(live(None), path, needed, metadata=cache_key)
    return cached_activation_chunks(path, cycle=True, expect=cache_key)


def _eval_images(data_args: Any, args: SAEStudyArguments, processor: Any) -> list[np.ndarray]:
    """Held-out images as RGB uint8 at the model's input size (corruptions apply at that size)."""
    from hf_vitrobust.data import ProcessorSpec, decode_image, load_image_dataset

    ds = load_image_dataset(
        data_args.dataset_name,
        split=data_args.eval_split,
        streaming=data_args.streaming,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        max_examples=args.num_eval_images,
    )
    spec = ProcessorSpec.from_processor(processor)
    images = [spec.resize_uint8(decode_image(ex["image"])) for ex in ds]
    if len(images) < 2:
        raise ValueError(
            f"the eval split {data_args.eval_split!r} of {data_args.dataset_name!r} gave "
            f"{len(images)} images; the comparison needs at least 2."
        )
    return images[: args.num_eval_images]


def _family_spec(family: str | Sequence[str] | None) -> str | list[str] | None:
    """A family name, or corruption names (a list or a comma-separated string); None for none."""
    if family is None or (isinstance(family, str) and family.strip().lower() in ("", "none")):
        return None
    if isinstance(family, str):
        parts = [p.strip() for p in family.split(",") if p.strip()]
        return parts[0] if len(parts) == 1 else parts
    return list(family) or None


def _conditions(family: str | Sequence[str]) -> dict[str, list[str]]:
    """``{"clean": ["clean"], group: [corruption, ...]}`` for the held-out comparison."""
    conditions: dict[str, list[str]] = {"clean": ["clean"]}
    names = _family_spec(family)
    if not names:
        return conditions
    from hf_vitrobust.corruptions import get_corruption, resolve_corruptions

    for name in resolve_corruptions(names):
        conditions.setdefault(get_corruption(name).group, []).append(name)
    return conditions


def run_sae_study(
    model_args: Any, data_args: Any, args: SAEStudyArguments, progress: bool = True
) -> dict[str, Any]:
    """Train base (and fine-tuned) SAEs, compute metrics and comparisons, write outputs.

    Writes ``sae.json``, ``saes/<sae_id>/`` (base SAEs, sae-lens format, uploadable as is),
    ``saes_finetuned/<name>/<sae_id>/``, ``saes_seed_baseline/<sae_id>/`` and PNG figures into
    ``args.output_dir``; returns the ``sae.json`` content.
    """
    from tqdm.auto import tqdm

    from hf_vitrobust import __version__
    from hf_vitrobust.analysis.sae.activations import (
        ActivationStream,
        collect_activations,
        resolve_layers,
    )
    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.data import ProcessorSpec, load_image_dataset
    from hf_vitrobust.io import write_json_atomic
    from hf_vitrobust.models import load_model_and_processor
    from hf_vitrobust.plots.sae import plot_cosine_histograms, plot_dictionary_matching

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.base_model:
        model_args = dataclasses.replace(model_args, model_name_or_path=args.base_model)
    base, processor = load_model_and_processor(model_args)
    base.eval().to(args.device)
    base_name = model_args.model_name_or_path or "tiny-vit(model_config)"
    ft_names = list(args.finetuned_names) or [Path(p).name for p in args.finetuned_models]
    if len(set(ft_names)) != len(ft_names):
        raise ValueError(
            f"fine-tuned model names {ft_names} are not unique; set finetuned_names explicitly."
        )
    finetuned = {}
    for name, path in zip(ft_names, args.finetuned_models):
        ft_args = ModelArguments(
            model_name_or_path=path, attn_implementation=model_args.attn_implementation
        )
        model, _ = load_model_and_processor(ft_args)
        if model.config.hidden_size != base.config.hidden_size or len(model.vit.layers) != len(
            base.vit.layers
        ):
            raise ValueError(
                f"fine-tuned model {path!r} does not match the base model's architecture "
                "(hidden size / layers); compare a model with its own fine-tuned version."
            )
        finetuned[name] = model.eval().to(args.device)
    layers = resolve_layers(base, args.layers)
    d_in = int(base.config.hidden_size)

    train_ds = load_image_dataset(
        data_args.dataset_name,
        split=data_args.train_split,
        streaming=data_args.streaming,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        max_examples=data_args.max_train_examples,
    )
    batches = _train_batches(train_ds, processor, args)
    training_data = {
        "dataset": data_args.dataset_name,
        "split": data_args.train_split,
        "max_examples": data_args.max_train_examples,
        "corruption_family": _family_spec(args.train_corruption_family) or "none",
        "views_per_image": args.train_views,
        "severities": list(args.train_severities),
        "tokens": args.tokens,
        "max_tokens_per_image": args.max_tokens_per_image,
        "training_tokens": args.training_tokens,
    }

    def train_one(
        model: Any,
        model_name: str,
        role: str,
        ft_tag: str | None,
        sae_type: str,
        layer: int,
        seed: int,
    ):
        meta = sae_metadata(
            model_name,
            layer,
            args.tokens,
            training_data,
            hf_vitrobust_version=__version__,
            role=role,
        )
        # The cache holds one model's activations at one layer; both SAE types (and the seed
        # baseline) reuse it.
        key = {
            "model": model_name,
            "layer": layer,
            "tokens": args.tokens,
            "max_tokens_per_image": args.max_tokens_per_image,
            "training_data": training_data,
        }
        tag = "base" if role != "finetuned" else f"finetuned-{ft_tag}"
        chunks = _model_chunks(model, batches, layer, args, seed, key, tag)
        stream = ActivationStream(
            chunks, d_in, args.sae_batch_size, buffer_mb=args.buffer_mb, seed=seed
        )
        sae, trainer = train_sae(stream, d_in, args.train_config(sae_type, seed), meta)
        return sae, trainer, stream.peak_buffer_bytes

    # 1. Train the SAEs: base (compared), seed baseline and fine-tuned (dictionary matching).
    plan = [("base", None, t, layer, args.seed) for t in args.sae_types for layer in layers]
    if args.seed_baseline:
        plan += [("seed_baseline", None, t, layer, args.seed + 1) for t, layer in _tl(args, layers)]
    if args.train_finetuned_saes:
        plan += [
            ("finetuned", n, t, layer, args.seed)
            for n in finetuned
            for t, layer in _tl(args, layers)
        ]
    trained: dict[tuple[str, str | None, str, int], dict[str, Any]] = {}
    for role, ft, sae_type, layer, seed in tqdm(plan, desc="SAEs", disable=not progress):
        model = base if ft is None else finetuned[ft]
        name = base_name if ft is None else args.finetuned_models[ft_names.index(ft)]
        sae, trainer, peak = train_one(model, name, role, ft, sae_type, layer, seed)
        trained[(role, ft, sae_type, layer)] = {
            "training_sae": sae,
            "trainer": trainer,
            "inference": to_inference_sae(sae),
            "peak_buffer_bytes": peak,
        }

    # 2. Held-out images: clean and each eval corruption; activations of every model, streamed
    #    one corruption at a time so memory holds one condition's activations.
    images = _eval_images(data_args, args, processor)
    spec = ProcessorSpec.from_processor(processor)
    conditions = _conditions(args.eval_corruption_family)
    perm = derangement(len(images), seed=args.seed)
    base_keys = [(t, layer) for t in args.sae_types for layer in layers]
    accumulators = {
        (who, t, layer): MetricsAccumulator(trained[("base", None, t, layer)]["inference"])
        for who in ["base", *finetuned]
        for t, layer in base_keys
    }
    per_image: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]] = {
        ft: {sae_id(t, layer, args.tokens): {} for t, layer in base_keys} for ft in finetuned
    }
    baseline_per_image: dict[str, dict[str, dict[str, np.ndarray]]] = {
        sae_id(t, layer, args.tokens): {} for t, layer in base_keys
    }
    corruptions = [c for names in conditions.values() for c in names]
    for corruption in tqdm(corruptions, desc="held-out conditions", disable=not progress):
        pixel_values = _condition_pixels(images, corruption, args, spec)
        batches_px = [
            pixel_values[i : i + args.image_batch_size]
            for i in range(0, len(pixel_values), args.image_batch_size)
        ]
        acts = {"base": collect_activations(base, batches_px, layers, args.tokens)}
        for ft, model in finetuned.items():
            acts[ft] = collect_activations(model, batches_px, layers, args.tokens)
        for t, layer in base_keys:
            sid = sae_id(t, layer, args.tokens)
            sae = trained[("base", None, t, layer)]["inference"]
            for who in acts:
                accumulators[(who, t, layer)].update(acts[who][layer])
            xb = acts["base"][layer]
            base_self = compare_codes(sae, xb, xb[perm], topk=args.topk_overlap_k)
            baseline_per_image[sid][corruption] = base_self
            for ft in finetuned:
                per_image[ft][sid][corruption] = compare_codes(
                    sae, xb, acts[ft][layer], topk=args.topk_overlap_k
                )
        del acts, pixel_values, batches_px

    # 3. Metrics, flags, saving.
    policy = FlagPolicy(args.min_explained_variance)
    sae_entries = []
    flagged: dict[str, bool] = {}
    for t, layer in base_keys:
        sid = sae_id(t, layer, args.tokens)
        entry = trained[("base", None, t, layer)]
        metrics = {"base": accumulators[("base", t, layer)].result()}
        for ft in finetuned:
            metrics[f"finetuned:{ft}"] = accumulators[(ft, t, layer)].result()
        reason = policy.check(sid, metrics["base"])
        flagged[sid] = reason is not None
        folder = save_sae(
            entry["training_sae"],
            out / "saes" / sid,
            entry["trainer"],
            extra_metadata={
                "heldout_metrics": metrics["base"],
                "flagged": flagged[sid],
                "flag_reason": reason,
                "train_config": config_dict(args.train_config(t)),
            },
        )
        sae_entries.append(
            {
                "sae_id": sid,
                "sae_type": t,
                "label": SAE_TYPE_LABELS[t],
                "layer": layer,
                "tokens": args.tokens,
                "folder": str(folder),
                "d_in": d_in,
                "d_sae": int(entry["inference"].cfg.d_sae),
                "metrics": metrics,
                "flagged": flagged[sid],
                "flag_reason": reason,
                "peak_buffer_mb": entry["peak_buffer_bytes"] / 2**20,
            }
        )
    for (role, ft, t, layer), entry in trained.items():
        if role == "base":
            continue
        sid = sae_id(t, layer, args.tokens)
        sub = out / ("saes_seed_baseline" if role == "seed_baseline" else f"saes_finetuned/{ft}")
        save_sae(entry["training_sae"], sub / sid, entry["trainer"])

    # 4. Summaries per fine-tuned model, SAE and condition (clean, each corruption group).
    def group_values(table: dict[str, dict[str, np.ndarray]], names: list[str], key: str):
        # Per image: mean over the group's corruptions (one value per image keeps the CI honest).
        return np.mean([table[c][key] for c in names], axis=0)

    from hf_vitrobust.stats import paired_bootstrap

    comparisons: dict[str, Any] = {}
    figure_data: dict[str, dict[str, Any]] = {}
    for ft in finetuned:
        comparisons[ft] = {}
        for t, layer in base_keys:
            sid = sae_id(t, layer, args.tokens)
            comparisons[ft][sid] = {"flagged": flagged[sid], "conditions": {}}
            for cond, names in conditions.items():
                vals = {
                    key: group_values(per_image[ft][sid], names, key)
                    for key in ("code_cosine", "raw_cosine", "topk_jaccard")
                }
                base_vals = {
                    key: group_values(baseline_per_image[sid], names, key)
                    for key in ("code_cosine", "raw_cosine", "topk_jaccard")
                }
                s = lambda v: summarize(v, args.n_resamples, args.seed)  # noqa: E731
                comparisons[ft][sid]["conditions"][cond] = {
                    "corruptions": names,
                    "severity": None if cond == "clean" else args.eval_severity,
                    "code_cosine": s(vals["code_cosine"]),
                    "raw_cosine": s(vals["raw_cosine"]),
                    "topk_jaccard": s(vals["topk_jaccard"]),
                    "code_cosine_different_image": s(base_vals["code_cosine"]),
                    "raw_cosine_different_image": s(base_vals["raw_cosine"]),
                    "topk_jaccard_different_image": s(base_vals["topk_jaccard"]),
                    "code_cosine_minus_different_image": paired_bootstrap(
                        base_vals["code_cosine"],
                        vals["code_cosine"],
                        n_resamples=args.n_resamples,
                        seed=args.seed,
                    ).to_dict(),
                }
                figure_data.setdefault(f"{t}|{ft}", {}).setdefault(layer, {})[cond] = {
                    "same_input": vals["code_cosine"],
                    "different_image": base_vals["code_cosine"],
                    "summary": comparisons[ft][sid]["conditions"][cond]["code_cosine"],
                    "flagged": flagged[sid],
                }

    # 5. Dictionary matching: base SAE vs fine-tuned SAE, seed baseline and random directions.
    matching: dict[str, Any] = {}
    match_fig: dict[str, dict[str, np.ndarray]] = {}
    for t, layer in base_keys:
        sid = sae_id(t, layer, args.tokens)
        base_sae = trained[("base", None, t, layer)]["inference"]
        row: dict[str, Any] = {}
        curves: dict[str, np.ndarray] = {}
        rand = match_dictionaries(
            base_sae, random_directions(int(base_sae.cfg.d_sae), d_in, seed=args.seed)
        )
        curves["random directions"] = rand
        row["random_directions"] = summarize(rand, args.n_resamples, args.seed)
        if ("seed_baseline", None, t, layer) in trained:
            v = match_dictionaries(
                base_sae, trained[("seed_baseline", None, t, layer)]["inference"]
            )
            curves["base, other seed"] = v
            row["base_other_seed"] = summarize(v, args.n_resamples, args.seed)
        for ft in finetuned:
            if ("finetuned", ft, t, layer) in trained:
                v = match_dictionaries(base_sae, trained[("finetuned", ft, t, layer)]["inference"])
                curves[f"fine-tuned: {ft}"] = v
                row[f"finetuned:{ft}"] = summarize(v, args.n_resamples, args.seed)
        matching[sid] = row
        match_fig[sid] = curves

    # 6. Figures (paper Figs. 9 and 10: vanilla and BatchTopK code-cosine distributions).
    figures = []
    for key, by_layer in figure_data.items():
        t, ft = key.split("|", 1)
        path = out / f"sae_cosine_{t}_{ft}.png"
        plot_cosine_histograms(
            by_layer,
            title=f"{SAE_TYPE_LABELS[t]} SAE codes: base vs {ft} (same input) "
            f"vs different images ({args.tokens} tokens)",
            path=path,
        )
        figures.append(str(path))
    if match_fig:
        path = out / "sae_dictionary_matching.png"
        plot_dictionary_matching(match_fig, path=path)
        figures.append(str(path))

    result = {
        "definitions": DEFINITIONS,
        "base_model": base_name,
        "finetuned_models": dict(zip(ft_names, args.finetuned_models)),
        "layers": layers,
        "tokens": args.tokens,
        "eval": {
            "dataset": data_args.dataset_name,
            "split": data_args.eval_split,
            "num_images": len(images),
            "severity": args.eval_severity,
            "conditions": conditions,
            "note": "corruptions applied on the fly (hf_vitrobust.corruptions), not published "
            "ImageNet-C files",
        },
        "training_data": training_data,
        "config": asdict(args),
        "saes": sae_entries,
        "flags": policy.notes,
        "comparisons": comparisons,
        "dictionary_matching": matching,
        "figures": figures,
        "versions": {"hf_vitrobust": __version__, "sae_lens": _lazy_sae_lens().__version__},
    }
    write_json_atomic(result, out / "sae.json")
    return result


def _tl(args: SAEStudyArguments, layers: list[int]) -> list[tuple[str, int]]:
    return [(t, layer) for t in args.sae_types for layer in layers]


def _condition_pixels(
    images: list[np.ndarray], corruption: str, args: SAEStudyArguments, spec: Any
) -> torch.Tensor:
    """Normalised pixel values of the held-out images, clean or under one corruption."""
    if corruption == "clean":
        return spec.to_tensor(images)
    from hf_vitrobust.corruptions import corrupt

    # Seeds depend on the image only: every model sees the very same corrupted image.
    corrupted = [
        corrupt(image, corruption, args.eval_severity, seed=args.seed * 1_000_003 + i)
        for i, image in enumerate(images)
    ]
    return spec.to_tensor(corrupted)
