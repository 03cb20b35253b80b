"""The whole study offline, in one command: `python recipes/demo.py --output_dir outputs/demo`.

Stages (each skipped when its outputs exist): base model, worst-of-k fine-tunes, evaluation,
analysis, SAEs, model cards, report. Their sizes are in recipes/fashion-mnist-tiny/demo.yaml; give
another sizes file first to change them: `python recipes/demo.py my_sizes.yaml --output_dir ...`.
Flags (`hf_vitrobust.demo.DemoArguments`): output_dir, seed, threads, only, force,
time_budget_min, memory_budget_gb, strict_budget, check_browser.
"""

import sys
from pathlib import Path

# Runs from a clone without installation too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vitrobust.demo.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
