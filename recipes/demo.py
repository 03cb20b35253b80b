"""The whole study offline, in one command: `python recipes/demo.py --output_dir outputs/demo`.

Stages (each skipped when its outputs exist): base model, worst-of-k fine-tunes, evaluation,
analysis, SAEs, model cards, report. Sizes are flags (see `hf_vitrobust.demo.DemoArguments`) or a
YAML recipe: `python recipes/demo.py recipes/fashion-mnist-tiny/demo.yaml`.
"""

import sys
from pathlib import Path

# Runs from a clone without installation too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vitrobust.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
