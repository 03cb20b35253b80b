"""Corruption benchmark: base, controls and fine-tuned ViTs, clean and corrupted, paired tests.

    python recipes/evaluate.py recipes/fashion-mnist-tiny/evaluate.yaml
    python recipes/evaluate.py --base_model BASE --finetuned_models FT1 FT2 \
        --dataset_name fashion_mnist --eval_split test --output_dir outputs/eval
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml \
        recipes/evaluate.py recipes/vit-base-imagenet/evaluate.yaml

Writes <output_dir>/results.json (read it with `hf_vitrobust.evaluation.read_results`), the PNG
figures, and cells/ (per-image records; a rerun resumes from them). Under `accelerate launch`
each process scores its share of the images and the main process writes the same files.
"""

from __future__ import annotations

import logging

from hf_vitrobust.configs import DataArguments, parse_recipe
from hf_vitrobust.evaluation import EvaluationArguments, run_evaluation, transfer_lines


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Arguments (corruptions, severities and flags checked here, before anything loads)
    data_args, eval_args = parse_recipe((DataArguments, EvaluationArguments), argv)
    # Held-out split -> base, controls, fine-tunes -> grid (resumable, sharded) -> results.json
    results = run_evaluation(data_args, eval_args)
    if results is not None:  # the main process
        print(
            f"Wrote {eval_args.output_dir}/results.json ({len(results['comparisons'])} comparisons)."
        )
        print("\n".join(transfer_lines(results)))


if __name__ == "__main__":
    main()
