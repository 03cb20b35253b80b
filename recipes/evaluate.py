"""Corruption benchmark: base vs fine-tuned ViTs, clean and corrupted, with CIs and paired tests.

    python recipes/evaluate.py recipes/fashion-mnist-tiny/evaluate.yaml
    python recipes/evaluate.py --base_model BASE --finetuned_models FT1 FT2 \
        --dataset_name fashion_mnist --eval_split test --output_dir outputs/eval

Writes <output_dir>/results.json (read it with `hf_vitrobust.evaluation.read_results`), the PNG
figures, and cells/ (per-image records; a rerun resumes from them).
"""

from __future__ import annotations

import logging

from hf_vitrobust.configs import DataArguments, parse_recipe
from hf_vitrobust.evaluation import EvaluationArguments, run_evaluation, transfer_lines


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, eval_args = parse_recipe((DataArguments, EvaluationArguments), argv)
    # Held-out split -> base and fine-tuned models -> grid (resumable) -> results.json -> figures
    results = run_evaluation(data_args, eval_args)
    print(f"Wrote {eval_args.output_dir}/results.json ({len(results['cells'])} cell rows).")
    print("\n".join(transfer_lines(results)))


if __name__ == "__main__":
    main()
