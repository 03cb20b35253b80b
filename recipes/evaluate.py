"""Corruption benchmark: base vs fine-tuned ViTs, clean and corrupted, with CIs and paired tests.

    python recipes/evaluate.py recipes/fashion-mnist-tiny/evaluate.yaml
    python recipes/evaluate.py --models BASE FT1 FT2 --dataset_name fashion_mnist \
        --eval_split test --output_dir outputs/eval

Writes <output_dir>/results.json, the PNG figures, and cells/ (per-image records; a rerun
resumes from them).
"""

from __future__ import annotations

import logging

from hf_vitrobust.configs import DataArguments, parse_recipe
from hf_vitrobust.evaluation import EvaluationArguments, run_evaluation


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, eval_args = parse_recipe((DataArguments, EvaluationArguments), argv)
    results = run_evaluation(data_args, eval_args)
    print(f"Wrote {eval_args.output_dir}/results.json ({len(results['cells'])} cell rows).")
    tm = results["transfer_matrix"]
    for key, row in zip(tm["rows"], tm["cells"]):
        shown = ", ".join(
            f"{col}{'*' if c['seen'] else ''} {100 * c['estimate']:+.1f} "
            f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
            for col, c in zip(tm["columns"], row)
        )
        print(f"top-1 change vs base, {key}: {shown}")


if __name__ == "__main__":
    main()
