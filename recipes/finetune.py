"""Adversarial fine-tuning of a ViT against a corruption family.

    accelerate launch recipes/finetune.py recipes/fashion-mnist-tiny/low_frequency.yaml
    python recipes/finetune.py recipes/fashion-mnist-tiny/base.yaml --max_steps 2

Arguments: `ModelArguments`, `DataArguments` (hf_vitrobust.configs) and
`AdversarialTrainingArguments` (hf_vitrobust.training.trainer), from the YAML recipe and/or CLI flags
(CLI wins). A rerun with the same output_dir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe  # noqa: E402
from hf_vitrobust.training.trainer import AdversarialTrainingArguments, run_finetune  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe(
        (ModelArguments, DataArguments, AdversarialTrainingArguments), argv
    )
    return run_finetune(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
