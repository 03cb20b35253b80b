"""Adversarial fine-tuning: adversaries (pure functions of model and batch) and the Trainer."""

from hf_vitrobust.training.adversary import eval_mode, fgsm, gather_views, pgd, worst_of_k
from hf_vitrobust.training.trainer import (
    AdversarialTrainer,
    AdversarialTrainingArguments,
    build_collators,
    run_finetune,
)

__all__ = [
    "AdversarialTrainer",
    "AdversarialTrainingArguments",
    "build_collators",
    "eval_mode",
    "fgsm",
    "gather_views",
    "pgd",
    "run_finetune",
    "worst_of_k",
]
