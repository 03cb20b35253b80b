"""What the SAE stage trains and compares: SAE types, one training run's hyperparameters, and the
arguments of ``recipes/train_sae.py``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hf_vitrobust.analysis.sae.activations import check_tokens
from hf_vitrobust.configs import ComparisonArguments, name_list
from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions import check_severities, resolve_corruptions

#: SAE type -> its label in figures, tables and the report (the one table of SAE types).
SAE_TYPE_LABELS: dict[str, str] = {
    "standard": "vanilla (ReLU + L1)",
    "batchtopk": "BatchTopK",
}
SAE_TYPES: tuple[str, ...] = tuple(SAE_TYPE_LABELS)


def check_sae_type(sae_type: str) -> str:
    """Validate an SAE type name: ``standard`` (vanilla ReLU + L1) or ``batchtopk``."""
    if sae_type not in SAE_TYPES:
        raise ValueError(f"sae_type={sae_type!r} is not one of {SAE_TYPES}; pick one of them.")
    return sae_type


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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


def config_dict(config: SAETrainConfig) -> dict[str, Any]:
    """A JSON-able copy of a training config (for metadata and sae.json)."""
    return asdict(config)


@dataclass
class SAEStudyArguments(ComparisonArguments):
    """What ``recipes/train_sae.py`` trains and compares (YAML and/or CLI flags).

    From ``ComparisonArguments``: ``base_model``, ``finetuned_models``, ``finetuned_names``,
    ``corruptions`` (held-out conditions: clean plus one per corruption group),
    ``severities`` (exactly one, for now), ``seed``, ``n_resamples``, ``confidence``,
    ``batch_size`` (images per forward pass), ``num_workers``, ``device``, ``progress``.
    """

    severities: list[int] = field(
        default_factory=lambda: [3],
        metadata={"help": "The one ImageNet-C severity of the held-out corruptions."},
    )
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})
    output_dir: str = field(
        default="outputs/fashion-mnist-tiny/sae",
        metadata={"help": "Where sae.json, saes/<sae_id>/ folders and figures go."},
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
    buffer_mb: float = field(default=64.0, metadata={"help": "Shuffle-buffer memory budget."})
    max_tokens_per_image: int | None = field(
        default=None, metadata={"help": "Random tokens kept per image (None: all)."}
    )
    train_corruptions: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={
            "help": "Families and/or corruptions of the corrupted training views (empty or "
            "'none': clean images only)."
        },
    )
    train_views: int = field(default=1, metadata={"help": "Corrupted views per training image."})
    train_severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    num_eval_images: int = field(
        default=256, metadata={"help": "Held-out images (eval split) for metrics and comparisons."}
    )
    reference_images: int = field(
        default=64,
        metadata={
            "help": "Further eval images, disjoint from the compared ones: BatchTopK threshold "
            "calibration, the centre of the raw cosine, different-image partners."
        },
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

    def __post_init__(self) -> None:
        if not self.base_model:
            raise ValueError("base_model is required: the checkpoint whose activations train SAEs.")
        self.severities = check_severities(self.severities, exactly_one="the SAE stage")
        self.train_severities = check_severities(self.train_severities, key="train_severities")
        self.tokens = check_tokens(self.tokens)
        for sae_type in self.sae_types:
            check_sae_type(sae_type)
        self.corruptions = name_list(self.corruptions)
        self.train_corruptions = name_list(self.train_corruptions)
        for key in ("corruptions", "train_corruptions"):
            if getattr(self, key):  # unknown names fail here, with "did you mean"
                resolve_corruptions(getattr(self, key), key=key)
        if self.num_eval_images < 2:
            raise ValueError("num_eval_images must be >= 2 (bootstrap CIs need two images).")
        if self.reference_images < 2:
            raise ValueError(
                "reference_images must be >= 2 (calibration and the different-image baseline)."
            )

    @property
    def severity(self) -> int:
        """The one severity of the held-out corruptions."""
        return int(self.severities[0])

    def train_config(
        self, sae_type: str, seed: int | None = None, device: str | None = None
    ) -> SAETrainConfig:
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
            device=device or resolve_device(self.device),
        )


__all__ = [
    "SAEStudyArguments",
    "SAETrainConfig",
    "SAE_TYPES",
    "SAE_TYPE_LABELS",
    "check_sae_type",
    "config_dict",
    "resolve_device",
]
