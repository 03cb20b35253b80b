"""Adversarial fine-tuning of a ViT against image corruptions.

    accelerate launch recipes/finetune.py recipes/fashion-mnist-tiny/low_frequency.yaml
    python recipes/finetune.py recipes/fashion-mnist-tiny/base.yaml --max_steps 2

Arguments: `ModelArguments`, `DataArguments` (hf_vitrobust.configs) and
`AdversarialTrainingArguments` (hf_vitrobust.training), from the YAML recipe and/or CLI flags
(CLI wins). A rerun with the same output_dir resumes from its newest complete checkpoint, and
does nothing (and says so) when the run already reached max_steps.

The workflow: datasets -> model + processor -> collators -> trainer -> train (or resume) -> save
-> bad-image verdict -> model card -> evaluate -> train_results.json -> push (with --push_to_hub).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import set_seed  # noqa: E402

from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe  # noqa: E402
from hf_vitrobust.data import BadImageTracker  # noqa: E402
from hf_vitrobust.hub import push_robust_model, write_robust_model_card  # noqa: E402
from hf_vitrobust.training import (  # noqa: E402
    AdversarialTrainer,
    AdversarialTrainingArguments,
    build_collators,
    check_finished_run,
    load_datasets,
    load_model_for_dataset,
    record_train_results,
    run_provenance,
    save_trained_model,
    train_or_resume,
)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe(
        (ModelArguments, DataArguments, AdversarialTrainingArguments), argv
    )
    set_seed(training_args.seed)
    output_dir = training_args.output_dir

    # Datasets: the training split, and the eval split when the run evaluates.
    train_dataset, eval_dataset = load_datasets(data_args, training_args)

    # Model and processor, checked against the dataset's classes and labels (a fresh model's
    # normalisation comes from model_config or from the training images).
    model, processor = load_model_for_dataset(
        model_args, train_dataset, eval_dataset, seed=data_args.subset_seed
    )

    # Collators: k corrupted views per training image; clean / seen / unseen for evaluation.
    train_collator, eval_collators = build_collators(
        processor, training_args, num_labels=model.config.num_labels
    )
    # Undecodable training images: unique ids over the whole run, saved with each checkpoint.
    bad_images = BadImageTracker(max_bad_fraction=data_args.max_bad_fraction)

    trainer = AdversarialTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=None if eval_dataset is None else dict.fromkeys(eval_collators, eval_dataset),
        data_collator=train_collator,
        eval_collators=eval_collators,
        processing_class=processor,
        max_bad_fraction=data_args.max_bad_fraction,
        bad_images=bad_images,
        provenance=run_provenance(model_args, data_args, train_dataset, eval_dataset),
    )

    # Train up to max_steps, resuming from the newest complete checkpoint; a finished run is
    # not trained again (a failed bad-image verdict is judged again with this max_bad_fraction).
    outcome = train_or_resume(trainer)
    if outcome.finished is not None:
        metrics = check_finished_run(
            outcome.finished, data_args.max_bad_fraction, trainer.is_world_process_zero()
        )
        # A run its verdict had stopped has no card yet.
        if trainer.is_world_process_zero() and not (Path(output_dir) / "README.md").is_file():
            metrics["model_card"] = str(write_robust_model_card(output_dir))
        return metrics

    # Save (weights, processor, config.robustness, adversary_stats.json), then the bad-image
    # verdict (bad_images.json): a failed verdict stops the run here, with the model saved.
    metrics = save_trained_model(trainer, outcome, bad_images)

    # Model card, written once by the main process.
    metrics["model_card"] = None
    if trainer.is_world_process_zero():
        metrics["model_card"] = str(write_robust_model_card(output_dir))

    # Evaluate: clean, seen and unseen corruptions.
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    # train_results.json last: from now on a rerun finds the run finished.
    record_train_results(
        trainer,
        {k: v for k, v in metrics.items() if k != "model_card" and not k.startswith("eval_")},
    )

    # Push the model and its card in one commit (--push_to_hub).
    if training_args.push_robust_model and trainer.is_world_process_zero():
        repo_id = training_args.hub_model_id or Path(output_dir).name
        metrics["pushed"] = push_robust_model(
            output_dir, repo_id=repo_id, private=training_args.hub_private_repo
        )
    return metrics


if __name__ == "__main__":
    main()
