"""`make demo`: the whole study offline on Fashion-MNIST with tiny ViTs, stage by stage.

Each stage runs the recipe a user would run (`recipes/finetune.py`, `recipes/evaluate.py`, ...) as
a subprocess, so every stage's memory is released when it ends and the commands printed are the
ones to copy. The sizes of every stage are in `recipes/fashion-mnist-tiny/demo.yaml` (one mapping
of recipe flags per stage); `DemoArguments` says only where, with which seed and threads, within
which budget, and which stages. A stage is skipped when its completion marker
(`.stages/<name>.json`, written only after the stage succeeded) and its outputs exist, so a rerun
after an interruption continues where it stopped. Peak memory is sampled over the whole process
tree (recipe + DataLoader workers) and checked against the budget; the time of every stage is
printed at the end and written to `stages.json` (its contract: `hf_vitrobust.runtime`), which
the report shows.

- `config.py`: `DemoArguments`, the sizes file (`read_sizes`, `recipe_flags`).
- `stages.py`: the stage list (`Stage`, `build_stages`), the cards stage.
- `runner.py`: running stages (subprocesses, memory sampler, markers, budgets), `run_demo`, `main`.

"""

from hf_vitrobust.demo.config import SIZES_FILE, DemoArguments, read_sizes, recipe_flags
from hf_vitrobust.demo.runner import main, run_demo, summarize
from hf_vitrobust.demo.stages import Stage, build_stages

__all__ = [
    "SIZES_FILE",
    "DemoArguments",
    "Stage",
    "build_stages",
    "main",
    "read_sizes",
    "recipe_flags",
    "run_demo",
    "summarize",
]
