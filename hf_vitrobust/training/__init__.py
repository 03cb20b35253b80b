"""Adversarial fine-tuning: arguments (`config`), adversaries as pure functions of model and
batch (`adversary`), the Trainer subclass (`trainer`), and the steps the fine-tuning recipe
calls (`run`). Training never publishes: model cards and pushing are `hf_vitrobust.hub`'s."""

from hf_vitrobust.training.adversary import (
    ADVERSARIES,
    eval_mode,
    fgsm,
    gather_views,
    parse_adversary,
    pgd,
    worst_of_k,
)
from hf_vitrobust.training.config import AdversarialTrainingArguments
from hf_vitrobust.training.run import (
    build_collators,
    count_bad_images,
    load_datasets,
    load_model_for_dataset,
    resume_checkpoint,
)
from hf_vitrobust.training.trainer import AdversarialTrainer, NonFiniteLossError

__all__ = [
    "ADVERSARIES",
    "AdversarialTrainer",
    "AdversarialTrainingArguments",
    "NonFiniteLossError",
    "build_collators",
    "count_bad_images",
    "eval_mode",
    "fgsm",
    "gather_views",
    "load_datasets",
    "load_model_for_dataset",
    "parse_adversary",
    "pgd",
    "resume_checkpoint",
    "worst_of_k",
]
