"""Adversarial fine-tuning: arguments (`config`), adversaries as pure functions of model and
batch (`adversary`), the Trainer subclass (`trainer`), run totals across resumed segments
(`tally`), which checkpoint to resume from (`checkpoints`), and the steps the fine-tuning recipe
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
from hf_vitrobust.training.checkpoints import (
    FinishedRun,
    checkpoint_problem,
    finished_run,
    last_complete_checkpoint,
)
from hf_vitrobust.training.config import AdversarialTrainingArguments
from hf_vitrobust.training.run import (
    TrainingOutcome,
    bad_image_verdict,
    build_collators,
    check_finished_run,
    load_datasets,
    load_model_for_dataset,
    pixel_statistics,
    record_train_results,
    resume_checkpoint,
    run_provenance,
    save_trained_model,
    train_or_resume,
)
from hf_vitrobust.training.tally import TrainingTally
from hf_vitrobust.training.trainer import AdversarialTrainer, NonFiniteLossError

__all__ = [
    "ADVERSARIES",
    "AdversarialTrainer",
    "AdversarialTrainingArguments",
    "FinishedRun",
    "NonFiniteLossError",
    "TrainingOutcome",
    "TrainingTally",
    "bad_image_verdict",
    "build_collators",
    "check_finished_run",
    "checkpoint_problem",
    "eval_mode",
    "fgsm",
    "finished_run",
    "gather_views",
    "last_complete_checkpoint",
    "load_datasets",
    "load_model_for_dataset",
    "parse_adversary",
    "pgd",
    "pixel_statistics",
    "record_train_results",
    "resume_checkpoint",
    "run_provenance",
    "save_trained_model",
    "train_or_resume",
    "worst_of_k",
]
