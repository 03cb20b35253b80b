"""`AdversarialTrainingArguments` and what a fine-tuned model records in `config.robustness`.

`config.robustness` (written by `AdversarialTrainer`, read by `roles`, evaluation, the model card
and the report) holds the training settings from `robustness_config`: `adversary`, `corruptions`
(the recipe's spec as given), `train_corruptions` (that spec resolved to corruption names),
`severities`, `num_views` (views per image the adversary uses: k for worst-of-k, 1 for
`random_view` or a perturbation of a corrupted view, 0 for clean images), `clean_loss_weight`,
`corruption_seed`, `unseen_corruptions` (the spec evaluated as unseen), `registry_version`,
`optimization` (optimizer, learning rate, schedule, warm-up, weight decay, batch size per device
and accumulation: what a control must share), and the `pgd_*` settings when a perturbation is
used. The trainer adds `seed`, `max_steps` (the planned total of optimizer steps, computed for
epoch-based runs) and the provenance: `base_model`, `dataset` (`training.run.run_provenance`).
`roles.read_robustness` also reads checkpoints written before the rename (`train_family`,
`eval_unseen_group`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from hf_vitrobust import corruptions as registry
from hf_vitrobust.configs import name_list
from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.training.adversary import BANDS, parse_adversary


def _resolve(spec: list[str], setting: str) -> tuple[str, ...]:
    try:
        return tuple(registry.resolve_corruptions(spec))
    except ValueError as error:
        raise ValueError(f"{setting}: {error}") from error


@dataclass
class AdversarialTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the adversary settings (all budgets in [0, 1] pixel units)."""

    adversary: str = field(
        default="none",
        metadata={
            "help": "none (clean images: the clean control), random_view (one random corrupted "
            "view per image, not scored: the random-view control), worst_of_k, pgd, fgsm, "
            "worst_of_k+pgd, worst_of_k+fgsm."
        },
    )
    num_views: int = field(
        default=4, metadata={"help": "k: corrupted views scored per image by worst_of_k."}
    )
    corruptions: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Corruption family and/or corruption names to train on (e.g. low_frequency); "
            "empty: train on clean images."
        },
    )
    severities: list[int] = field(
        default_factory=lambda: list(SEVERITIES),
        metadata={"help": "Severities drawn for the corrupted views (1..5)."},
    )
    pgd_epsilon: float = field(
        default=2 / 255, metadata={"help": "L-inf budget of pgd/fgsm in [0, 1] pixel units."}
    )
    pgd_steps: int = field(default=3, metadata={"help": "PGD iterations."})
    pgd_step_size: float | None = field(
        default=None, metadata={"help": "PGD step in pixel units (default 2.5·eps/steps)."}
    )
    pgd_band: str = field(
        default="all", metadata={"help": "Frequency band of the perturbation: all, low, high."}
    )
    pgd_band_cutoff: float = field(
        default=0.125, metadata={"help": "Low/high split as a fraction of Nyquist."}
    )
    pgd_band_iterations: int = field(
        default=10,
        metadata={
            "help": "Alternating band projections and clips per PGD step that keep a band-limited "
            "perturbation in band and the image valid."
        },
    )
    pgd_random_start: bool = field(default=True, metadata={"help": "PGD uniform random start."})
    clean_loss_weight: float = field(
        default=0.0,
        metadata={"help": "Weight w of the clean loss: (1-w)·adversarial + w·clean (0..1)."},
    )
    corruption_seed: int = field(default=0, metadata={"help": "Seed of the corrupted views."})
    eval_corruption_seed: int = field(
        default=1_000_003,
        metadata={"help": "Seed of evaluation corruptions (held-out instances of each one)."},
    )
    unseen_corruptions: list[str] | None = field(
        default=None,
        metadata={
            "help": "Corruption family and/or corruption names reported as 'unseen' during "
            "evaluation (default: the first corruption group disjoint from `corruptions`; "
            "'none' or [] to skip)."
        },
    )
    worst_of_k_chunk_size: int | None = field(
        default=None, metadata={"help": "Score at most this many views per forward."}
    )
    # Defaults that differ from TrainingArguments: the collator needs the raw columns, ViT has
    # no unused parameters, and iterable batches carry strings that rank-0 dispatch cannot split.
    remove_unused_columns: bool = field(default=False)
    ddp_find_unused_parameters: bool | None = field(default=False)
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])
    # None: pinned only where it helps (a CUDA device is used); pinning on CPU only warns.
    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={"help": "Pin DataLoader memory (default: only when training on CUDA)."},
    )

    def __post_init__(self) -> None:
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = torch.cuda.is_available() and not self.use_cpu
        if self.accelerator_config is None:
            self.accelerator_config = {"dispatch_batches": False}
        elif isinstance(self.accelerator_config, dict):
            self.accelerator_config.setdefault("dispatch_batches", False)
        super().__post_init__()
        self.corruptions = name_list(self.corruptions)
        if self.unseen_corruptions is not None:
            self.unseen_corruptions = name_list(self.unseen_corruptions)
        # The robust model is pushed once at the end by the recipe (`hub.push_robust_model`:
        # card + weights), not by the Trainer at every checkpoint.
        self.push_robust_model = bool(self.push_to_hub)
        self.push_to_hub = False
        self.validate_adversary()

    def validate_adversary(self) -> None:
        """Check the adversary settings; raise ValueError naming the setting and the fix."""
        plan = parse_adversary(self.adversary)
        if self.num_views < 1:
            raise ValueError(f"num_views (k) must be >= 1, got {self.num_views}.")
        if not 0.0 <= self.clean_loss_weight <= 1.0:
            raise ValueError(f"clean_loss_weight must be in [0, 1], got {self.clean_loss_weight}.")
        if self.pgd_epsilon < 0:
            raise ValueError(
                f"pgd_epsilon must be >= 0 ([0, 1] pixel units, e.g. 2/255), got {self.pgd_epsilon}."
            )
        if self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {self.pgd_steps}.")
        if self.pgd_step_size is not None and self.pgd_step_size <= 0:
            raise ValueError(f"pgd_step_size must be > 0, got {self.pgd_step_size}.")
        if self.pgd_band_iterations < 1:
            raise ValueError(f"pgd_band_iterations must be >= 1, got {self.pgd_band_iterations}.")
        if self.pgd_band not in BANDS:
            raise ValueError(f"pgd_band must be one of {list(BANDS)}, got {self.pgd_band!r}.")
        if not 0.0 < self.pgd_band_cutoff < 1.0:
            raise ValueError(f"pgd_band_cutoff must be in (0, 1), got {self.pgd_band_cutoff}.")
        if self.clean_loss_weight > 0 and self.label_smoothing_factor > 0:
            raise ValueError("clean_loss_weight > 0 does not support label_smoothing_factor.")
        if plan.perturbation is None and self.clean_loss_weight > 0 and not self.corruptions:
            raise ValueError("clean_loss_weight needs corruptions or a pgd/fgsm adversary.")
        names = self.train_corruptions  # raises on unknown names
        if plan.select_worst and not names:
            raise ValueError(
                f"adversary {self.adversary!r} picks the worst corrupted view, so it needs "
                "corruptions (e.g. [low_frequency])."
            )
        if plan.random_view and not names:
            raise ValueError(
                "adversary 'random_view' trains on one random corrupted view per image, so it "
                "needs corruptions (e.g. [low_frequency])."
            )
        if self.adversary == "none" and names:
            raise ValueError(
                f"adversary 'none' trains on clean images, but corruptions {self.corruptions} are "
                "given: write adversary: random_view for one random corrupted view per image "
                "(the random-view control), or corruptions: [] for the clean control."
            )
        if names and self.dataloader_persistent_workers and self.dataloader_num_workers > 0:
            raise ValueError(
                "dataloader_persistent_workers keeps each worker's copy of the collator, so the "
                "corrupted views would stop changing with the epoch: set it to false (workers "
                "then restart each epoch with the new epoch's draws)."
            )
        if names:
            self.severities = registry.check_severities(self.severities)
        if self.unseen_corruptions:
            _resolve(self.unseen_corruptions, "unseen_corruptions")

    @property
    def train_corruptions(self) -> tuple[str, ...]:
        """`corruptions` resolved to corruption names (empty: clean training)."""
        return _resolve(self.corruptions, "corruptions") if self.corruptions else ()

    @property
    def views_needed(self) -> int:
        """How many corrupted views per image the collator must produce (k for worst-of-k, 1
        for random_view or a perturbation of a corrupted view, 0 for clean training)."""
        if not self.train_corruptions:
            return 0
        return self.num_views if parse_adversary(self.adversary).select_worst else 1

    def optimization(self) -> dict[str, Any]:
        """The optimizer and schedule settings a control must share with its fine-tune."""
        return {
            "optim": str(getattr(self.optim, "value", self.optim)),
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": str(
                getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)
            ),
            "warmup_steps": self.warmup_steps,
            "weight_decay": self.weight_decay,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_grad_norm": self.max_grad_norm,
        }

    def unseen_spec(self) -> list[str]:
        """The family/corruption names evaluated as 'unseen': `unseen_corruptions` as given, or
        the first corruption group disjoint from the training corruptions; [] to skip."""
        if self.unseen_corruptions is not None:
            return list(self.unseen_corruptions)
        seen = set(self.train_corruptions)
        for group in registry.GROUPS:
            members = set(registry.FAMILIES.get(group, ()))
            if members and not members & seen:
                return [group]
        return []

    def robustness_config(self) -> dict[str, Any]:
        """What `config.robustness` records (see the module docstring)."""
        names = self.train_corruptions
        plan = parse_adversary(self.adversary)
        out: dict[str, Any] = {
            "adversary": self.adversary,
            "corruptions": list(self.corruptions),
            "train_corruptions": list(names),
            "severities": list(self.severities) if names else [],
            "num_views": self.views_needed,
            "clean_loss_weight": self.clean_loss_weight,
            "corruption_seed": self.corruption_seed,
            "unseen_corruptions": self.unseen_spec() if names else [],
            "registry_version": registry.REGISTRY_VERSION,
            "optimization": self.optimization(),
        }
        if plan.perturbation:
            out.update(
                pgd_epsilon=self.pgd_epsilon,
                pgd_steps=1 if plan.perturbation == "fgsm" else self.pgd_steps,
                pgd_step_size=self.pgd_step_size,
                pgd_band=self.pgd_band,
                pgd_band_cutoff=self.pgd_band_cutoff,
                pgd_band_iterations=self.pgd_band_iterations,
                pgd_random_start=self.pgd_random_start and plan.perturbation == "pgd",
            )
        return out
