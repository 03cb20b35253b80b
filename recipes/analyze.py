"""Mechanistic analysis of fine-tuned ViTs against their base model.

    python recipes/analyze.py recipes/fashion-mnist-tiny/analyze.yaml [--flag value ...]

Writes `analysis.json` (logit lens, attention entropy, CKA, activation patching, each with its
definition and statistics), `attention_panel.npz` and PNG figures into `--output_dir`.
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
    print(f"Wrote {args.output_dir}/analysis.json and {len(result['figures'])} figures.")


if __name__ == "__main__":
    main()
