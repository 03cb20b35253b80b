"""Mechanistic analysis of fine-tuned ViTs against their base model and their controls.

    python recipes/analyze.py recipes/fashion-mnist-tiny/analyze.yaml [--flag value ...]
    accelerate launch recipes/analyze.py recipes/vit-base-imagenet/analyze.yaml   # many GPUs

Writes `analysis.json` (logit lens, attention entropy, CKA, activation patching, each with its
definition and statistics, and the paired comparisons against the base and the matched
controls), `attention_panel.npz` and PNG figures into `--output_dir`. Under `accelerate launch`
each process analyses its share of the images and the main process writes the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runs from a checkout without `pip install -e .` too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vitrobust.analysis import AnalysisArguments, run_analysis  # noqa: E402
from hf_vitrobust.configs import DataArguments, parse_recipe  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args, data_args = parse_recipe((AnalysisArguments, DataArguments), argv)
    result = run_analysis(args, data_args)
    if result is not None:  # the main process
        print(f"Wrote {args.output_dir}/analysis.json and {len(result['figures'])} figures.")


if __name__ == "__main__":
    main()
