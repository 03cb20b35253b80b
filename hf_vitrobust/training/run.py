"""The small steps `recipes/finetune.py` calls, each testable on its own: datasets with checked
labels, the model for a dataset (normalisation of a fresh model from the data), provenance, the
collators, training or resuming (never past `max_steps`), and saving with the bad-image verdict.
The workflow itself (their order) is the recipe.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_vitrobust.corruptions import resolve_corruptions
from hf_vitrobust.data import (
    BAD_IMAGES_FILE,
    BadImageError,
    BadImageTracker,
    CorruptionCollator,
    CorruptionViews,
    ProcessorSpec,
    TooManyBadImagesError,
    check_labels,
    decode_image,
    find_fashion_mnist_dir,
    label_names,
    load_dataset_split,
    selection_record,
    source_label,
    validate_labels,
)
from hf_vitrobust.io import read_json, write_json_atomic
from hf_vitrobust.models import load_model_and_processor, tiny_vit_config
from hf_vitrobust.training.checkpoints import (
    TRAIN_RESULTS,
    FinishedRun,
    finished_run,
    global_step,
    last_complete_checkpoint,
)
from hf_vitrobust.training.config import AdversarialTrainingArguments

logger = logging.getLogger(__name__)

#: Training images whose pixels give a fresh model's normalisation (a seeded sample).
PIXEL_STATISTICS_IMAGES = 1000
#: Recipe names of Fashion-MNIST (`data.load_image_dataset` reads Debian's files for them).
FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist")


def load_datasets(data_args: Any, training_args: AdversarialTrainingArguments) -> tuple[Any, Any]:
    """The training split and, when the run evaluates, the eval split (else None).

    A streamed training split needs `max_steps`; `AdversarialTrainer` says so when it is built.
    """
    train_dataset = load_dataset_split(data_args, "train")
    eval_dataset = None
    if training_args.eval_strategy != "no" or training_args.do_eval:
        eval_dataset = load_dataset_split(data_args, "eval")
    return train_dataset, eval_dataset


def pixel_statistics(
    dataset: Any, image_size: int, max_images: int = PIXEL_STATISTICS_IMAGES, seed: int = 0
) -> tuple[list[float], list[float], int]:
    """Per-channel mean and std ([0, 1] scale) of training images resized to `image_size`.

    Map-style data: a seeded random sample of `max_images` rows; a stream: its first
    `max_images` examples (after its shuffle buffer). Undecodable images are left out.
    Returns `(mean[3], std[3], images used)`.
    """
    if isinstance(dataset, datasets.IterableDataset):
        rows = itertools.islice(iter(dataset), max_images)
    else:
        n = len(dataset)
        chosen = np.random.default_rng(seed).choice(n, size=min(n, max_images), replace=False)
        rows = (dataset[int(i)] for i in np.sort(chosen))
    size = (int(image_size), int(image_size))
    spec = ProcessorSpec(size=size, mean=(0.0,) * 3, std=(1.0,) * 3, resize_to=size)
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for row in rows:
        try:
            image = spec.resize_uint8(decode_image(row["image"]))
        except BadImageError:
            continue
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += 1
    if count == 0:
        raise ValueError("No training image could be decoded to compute image_mean/image_std.")
    pixels_seen = count * size[0] * size[1]
    mean = total / pixels_seen
    std = np.sqrt(np.maximum(squares / pixels_seen - mean**2, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-6)), 6) for v in std], count


def load_model_for_dataset(model_args: Any, *datasets_: Any, seed: int = 0) -> tuple[Any, Any]:
    """The model and processor, checked against the first dataset's classes.

    A model built from `model_config` gets the dataset's class names as its head and, for each
    of `image_mean`/`image_std` that `model_config` does not give, the statistic of a seeded
    sample of the first dataset's images; the log states each value as saved in
    `preprocessor_config.json` and where it came from. The model's classes
    must match the dataset's (`data.check_labels`) and every label of each dataset must be
    inside `[0, num_labels)` (`data.validate_labels`), so a bad label fails before training.
    """
    names = label_names(datasets_[0])
    fresh = model_args.model_name_or_path is None
    id2label = dict(enumerate(names)) if fresh else None
    computed: dict[str, Any] = {}
    source = given = "given in model_config"
    config = dict(model_args.model_config or {})
    if fresh and ("image_mean" not in config or "image_std" not in config):
        size = int(config.get("image_size", tiny_vit_config().image_size))
        mean, std, n = pixel_statistics(datasets_[0], size, seed=seed)
        computed = {k: v for k, v in (("image_mean", mean), ("image_std", std)) if k not in config}
        source = f"computed from {n} training images (seeded sample, resized to {size} px)"
    model, processor = load_model_and_processor(model_args, id2label=id2label, **computed)
    if fresh:
        (logger.warning if computed else logger.info)(
            "The fresh model's normalisation (saved in preprocessor_config.json): image_mean=%s "
            "(%s), image_std=%s (%s).",
            list(processor.image_mean),
            source if "image_mean" in computed else given,
            list(processor.image_std),
            source if "image_std" in computed else given,
        )
    check_labels(names, model.config)
    for dataset in datasets_:
        if dataset is not None:
            validate_labels(dataset, model.config.num_labels)
    return model, processor


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_provenance(data_args: Any, train_dataset: Any) -> dict[str, Any]:
    """The training data as `config.robustness["dataset"]` records it (no absolute path).

    `name`: the Hub id, `fashion_mnist`, or a local folder's (file's) name; `source`: `hub`,
    `local`, or `debian_idx_files` (Fashion-MNIST read from Debian's files); `config`, `split`,
    `streaming`; and the selection (`data.selection_record`): `rule`, `description`, `seed`,
    `requested`, `n`, `per_class`, `shuffle_buffer_size`, `example_ids_sha256`.
    """
    name = str(data_args.dataset_name)
    if name.lower() in FASHION_MNIST_NAMES:
        name, source = (
            "fashion_mnist",
            "hub" if find_fashion_mnist_dir() is None else "debian_idx_files",
        )
    else:
        label = source_label(name)
        source = "local" if label.startswith("local:") else "hub"
        name = label.removeprefix("local:")
    selection = selection_record(train_dataset, data_args, "train")
    record = {
        "name": name,
        "source": source,
        "config": data_args.dataset_config_name,
        "streaming": isinstance(train_dataset, datasets.IterableDataset),
    }
    record.update({k: v for k, v in selection.items() if k not in ("dataset", "which")})
    return record


def run_provenance(
    model_args: Any, data_args: Any, train_dataset: Any, eval_dataset: Any = None
) -> dict[str, Any]:
    """What `config.robustness` records about where a fine-tune starts and what it reads.

    `base_model`: the Hub id, `local:<folder name>` for a local checkpoint (never the absolute
    path; with `base_model_sha256`, the hash of its weights, so two folders of the same name
    are told apart), or `model_config` for a fresh model (with `model_config` as given).
    `dataset`: `dataset_provenance`. `eval_selection`: the eval split's selection
    (`data.selection_record`, `max_eval_examples`) when the run evaluates.
    """
    out: dict[str, Any] = {}
    name = model_args.model_name_or_path
    if name is None:
        out["base_model"] = "model_config"
        out["model_config"] = dict(model_args.model_config or {})
    else:
        out["base_model"] = source_label(name)
        weights = Path(name).expanduser() / "model.safetensors"
        if weights.is_file():
            out["base_model_sha256"] = _sha256(weights)
    out["dataset"] = dataset_provenance(data_args, train_dataset)
    if eval_dataset is not None:
        out["eval_selection"] = selection_record(eval_dataset, data_args, "eval")
    return out


def build_collators(
    processor: Any, args: AdversarialTrainingArguments, num_labels: int | None = None
) -> tuple[Callable, dict[str, Callable]]:
    """The training collator (k views of the training corruptions) and the evaluation
    collators: `clean`, `seen` (training corruptions, held-out seed) and `unseen`."""
    names = args.train_corruptions
    severities = tuple(args.severities)
    train_views = (
        CorruptionViews(names, severities=severities, seed=args.corruption_seed) if names else None
    )
    train = CorruptionCollator(
        processor, views=train_views, k=args.views_needed, num_labels=num_labels
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
    """`resume_from_checkpoint` when given, else the newest *complete* checkpoint in
    `output_dir` (a rerun of the same command resumes; half-written checkpoints are skipped
    with a warning), else None."""
    resume = training_args.resume_from_checkpoint
    if resume is None:
        found = last_complete_checkpoint(training_args.output_dir)
        resume = str(found) if found else None
    if resume:
        logger.warning("Resuming from %s", resume)
    return resume


@dataclass
class TrainingOutcome:
    """What `train_or_resume` did: trained (or restored a checkpoint at `max_steps`), or found
    the run finished (`finished`, with its recorded metrics)."""

    max_steps: int
    finished: FinishedRun | None = None


def train_or_resume(trainer: Any) -> TrainingOutcome:
    """Train up to `max_steps` and never past it.

    - `output_dir` already holds a model trained to `max_steps` (`checkpoints.finished_run`):
      nothing is trained; the outcome says so.
    - The newest complete checkpoint is at `max_steps` (a run stopped between its last
      checkpoint and its final save): its weights, state and statistics are restored, untrained.
    - Otherwise: train, resuming from the newest complete checkpoint when there is one.
    """
    args = trainer.args
    planned = trainer.planned_max_steps()
    done = finished_run(args.output_dir, planned) if args.resume_from_checkpoint is None else None
    if done is not None:
        logger.warning(done.message())
        return TrainingOutcome(planned, finished=done)
    resume = resume_checkpoint(args)
    steps = global_step(resume) if resume else 0
    if resume and steps > planned:
        raise ValueError(
            f"Checkpoint {resume} is at step {steps}, past max_steps={planned}: its schedule was "
            "planned for more steps. Raise max_steps, or choose a new output_dir."
        )
    if resume and steps == planned:
        logger.warning(
            "Checkpoint %s already reached max_steps=%d: saving it without training.", resume, steps
        )
        trainer.restore_checkpoint(resume)
    else:
        trainer.train(resume_from_checkpoint=resume)
    return TrainingOutcome(planned)


def train_metrics(trainer: Any, tally: Any, max_steps: int) -> dict[str, Any]:
    """`train_results.json`'s figures for the whole run (every resumed segment together)."""
    metrics = tally.train_metrics()
    metrics.update(
        epoch=trainer.state.epoch, total_flos=trainer.state.total_flos, max_steps=max_steps
    )
    return metrics


def bad_image_verdict(bad_images: BadImageTracker, trainer: Any) -> dict[str, Any]:
    """The whole run's bad-image summary (unique ids, all processes, all resumed segments) with
    its verdict (`passed`), written to `bad_images.json` by the main process. Never raises: the
    caller saves the model and records this first, then fails the run when it did not pass
    (`bad_images.check(final=True)`). Every process must call it."""
    summary = dict(bad_images.gather(trainer.accelerator))
    if trainer.is_world_process_zero():
        # The tracker's own state (BadImageCallback writes the same at the end of training;
        # a run restored from a finished checkpoint has not trained, so it is written here).
        write_json_atomic(bad_images.state_dict(), Path(trainer.args.output_dir) / BAD_IMAGES_FILE)
    return summary


def save_trained_model(
    trainer: Any, outcome: TrainingOutcome, bad_images: BadImageTracker | None
) -> dict[str, Any]:
    """Save the trained model, then judge the bad images: weights, processor,
    `config.robustness`, `adversary_stats.json` and `bad_images.json` are written before any
    verdict, so a run never loses its model to the check. Returns the run's train metrics (all
    segments) with the bad-image figures; when the verdict failed, `train_results.json` is
    written too and `TooManyBadImagesError` raised."""
    status = trainer.save_robust_model(trainer.args.output_dir)
    metrics = train_metrics(trainer, status["tally"], outcome.max_steps)
    if bad_images is not None:
        verdict = bad_image_verdict(bad_images, trainer)
        metrics.update(
            images_seen=verdict["seen"],
            images_skipped=verdict["bad"],
            bad_images_passed=bool(verdict["passed"]),
        )
        if not verdict["passed"]:
            record_train_results(trainer, metrics)
            bad_images.check(final=True)
    return metrics


def record_train_results(trainer: Any, metrics: dict[str, Any]) -> None:
    """Write `trainer_state.json`, then `train_results.json` (last: a run is finished once it
    exists, `checkpoints.finished_run`)."""
    trainer.save_state()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)


def check_finished_run(
    finished: FinishedRun, max_bad_fraction: float | None = None, main_process: bool = True
) -> dict[str, Any]:
    """The recorded metrics of a finished run.

    When its recorded bad-image verdict failed, the unique seen/bad counts it recorded
    (`bad_images.json`) are judged again against `max_bad_fraction` (this rerun's limit): within
    it, the new verdict is recorded (`bad_images.json` with `passed` true and the limit used;
    `bad_images_passed` in `train_results.json`, by the main process) and the run passes;
    otherwise (or with no limit or no `bad_images.json`) `TooManyBadImagesError` is raised again.
    """
    metrics = dict(finished.metrics)
    if metrics.get("bad_images_passed") is False:
        metrics.update(_rejudge_bad_images(finished, max_bad_fraction, main_process))
    evaluated = finished.output_dir / "eval_results.json"
    if evaluated.is_file():
        metrics.update(read_json(evaluated, "evaluation results"))
    metrics["finished_before"] = True
    return metrics


def _rejudge_bad_images(
    finished: FinishedRun, max_bad_fraction: float | None, main_process: bool
) -> dict[str, Any]:
    """A failed run's bad-image figures judged against `max_bad_fraction`: the new figures when
    they pass (recorded), else `TooManyBadImagesError`."""
    metrics = finished.metrics
    path = finished.output_dir / BAD_IMAGES_FILE
    tracker = None
    if max_bad_fraction is not None and path.is_file():
        tracker = BadImageTracker(max_bad_fraction=max_bad_fraction)
        tracker.load_state_dict(read_json(path, "bad-image record"))
    if tracker is None or not tracker.passed:
        figures = (
            f"{tracker.bad} of {tracker.seen} unique images ({tracker.fraction:.2%}, above "
            f"max_bad_fraction={max_bad_fraction:g})"
            if tracker is not None
            else f"{metrics.get('images_skipped')} of {metrics.get('images_seen')} unique images"
        )
        raise TooManyBadImagesError(
            f"{finished.output_dir} finished training but failed the bad-image check: {figures} "
            f"could not be decoded (see {BAD_IMAGES_FILE} there). Fix the dataset and train "
            "again in a new output_dir, or raise max_bad_fraction."
        )
    new = {"images_seen": tracker.seen, "images_skipped": tracker.bad, "bad_images_passed": True}
    if main_process:
        write_json_atomic(tracker.state_dict(), path)
        results = finished.output_dir / TRAIN_RESULTS
        write_json_atomic({**read_json(results, "training results"), **new}, results)
    logger.warning(
        "%s: its recorded bad-image verdict failed; judged again with max_bad_fraction=%g: "
        "%d of %d unique images (%.2f%%) could not be decoded, within the limit: passed "
        "(recorded in %s and %s). The run was not evaluated: its verdict had stopped it first.",
        finished.output_dir,
        max_bad_fraction,
        tracker.bad,
        tracker.seen,
        100 * tracker.fraction,
        BAD_IMAGES_FILE,
        TRAIN_RESULTS,
    )
    return new


__all__ = [
    "BAD_IMAGES_FILE",
    "PIXEL_STATISTICS_IMAGES",
    "TrainingOutcome",
    "bad_image_verdict",
    "build_collators",
    "dataset_provenance",
    "check_finished_run",
    "load_datasets",
    "load_model_for_dataset",
    "pixel_statistics",
    "record_train_results",
    "resume_checkpoint",
    "run_provenance",
    "save_trained_model",
    "train_metrics",
    "train_or_resume",
]
