"""The small steps `recipes/finetune.py` calls, each testable on its own: datasets with checked
labels, the model for a dataset, the collators, the checkpoint to resume from, the bad-image
count. The workflow itself (their order) is the recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from hf_vitrobust.corruptions import resolve_corruptions
from hf_vitrobust.data import (
    BadImageTracker,
    CorruptionCollator,
    CorruptionViews,
    check_labels,
    label_names,
    load_dataset_split,
    validate_labels,
)
from hf_vitrobust.models import load_model_and_processor
from hf_vitrobust.training.config import AdversarialTrainingArguments

logger = logging.getLogger(__name__)


def load_datasets(data_args: Any, training_args: AdversarialTrainingArguments) -> tuple[Any, Any]:
    """The training split and, when the run evaluates, the eval split (else None).

    A streamed training split needs `max_steps`; `AdversarialTrainer` says so when it is built.
    """
    train_dataset = load_dataset_split(data_args, "train")
    eval_dataset = None
    if training_args.eval_strategy != "no" or training_args.do_eval:
        eval_dataset = load_dataset_split(data_args, "eval")
    return train_dataset, eval_dataset


def load_model_for_dataset(model_args: Any, *datasets: Any) -> tuple[Any, Any]:
    """The model and processor, checked against the first dataset's classes.

    A model built from `model_config` gets the dataset's class names as its head. The model's
    classes must match the dataset's (`data.check_labels`) and every label of each dataset must
    be inside `[0, num_labels)` (`data.validate_labels`), so a bad label fails before training.
    """
    names = label_names(datasets[0])
    fresh = model_args.model_name_or_path is None
    id2label = dict(enumerate(names)) if fresh else None
    model, processor = load_model_and_processor(model_args, id2label=id2label)
    check_labels(names, model.config)
    for dataset in datasets:
        if dataset is not None:
            validate_labels(dataset, model.config.num_labels)
    return model, processor


def build_collators(
    processor: Any,
    args: AdversarialTrainingArguments,
    bad_images: BadImageTracker | None = None,
    num_labels: int | None = None,
) -> tuple[Callable, dict[str, Callable]]:
    """The training collator (k views of the training corruptions) and the evaluation
    collators: `clean`, `seen` (training corruptions, held-out seed) and `unseen`."""
    names = args.train_corruptions
    severities = tuple(args.severities)
    train_views = (
        CorruptionViews(names, severities=severities, seed=args.corruption_seed) if names else None
    )
    train = CorruptionCollator(
        processor,
        views=train_views,
        k=args.views_needed,
        bad_images=bad_images,
        num_labels=num_labels,
    )
    evals: dict[str, Callable] = {
        "clean": CorruptionCollator(processor, views=None, k=0, num_labels=num_labels)
    }
    if not names:
        return train, evals
    # stage="eval": new instances of the training corruptions (held-out draws).
    held_out = {"severities": severities, "seed": args.eval_corruption_seed, "stage": "eval"}
    unseen = args.unseen_spec()
    for split, spec in (("seen", names), ("unseen", unseen)):
        if spec:
            views = CorruptionViews(resolve_corruptions(spec), **held_out)
            evals[split] = CorruptionCollator(processor, views=views, k=1, num_labels=num_labels)
    return train, evals


def resume_checkpoint(training_args: AdversarialTrainingArguments) -> str | None:
    """`resume_from_checkpoint` when given, else the last checkpoint in `output_dir` (a rerun of
    the same command resumes), else None."""
    resume = training_args.resume_from_checkpoint
    if resume is None and Path(training_args.output_dir).is_dir():
        resume = get_last_checkpoint(training_args.output_dir)
    if resume:
        logger.warning("Resuming from %s", resume)
    return resume


def count_bad_images(bad_images: BadImageTracker, trainer: Any) -> int:
    """Undecodable images skipped by every process; the main process logs the total and
    enforces `max_bad_fraction` on the whole run."""
    total = bad_images.gather(trainer.accelerator)
    if trainer.is_world_process_zero():
        bad_images.finish()
    return total["bad"]
