"""What the demo is told: `DemoArguments` (where, seed, threads, budgets, which stages) and the
study's sizes, read from `recipes/fashion-mnist-tiny/demo.yaml` (one mapping per stage, passed
to that stage's recipe as flags)."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_vitrobust.configs import RENAMED_KEYS

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "recipes"
TINY_RECIPES = RECIPES / "fashion-mnist-tiny"
#: The sizes of `make demo` (defaults fit 15 minutes and 6 GB on 2 CPU cores; docs/demo.md).
SIZES_FILE = TINY_RECIPES / "demo.yaml"

#: Sections of the sizes file: one per stage of recipe overrides (`finetune` applies to every
#: fine-tune and control, so they share data, steps, optimizer and seed), plus `finetunes` (the
#: adversarial fine-tune recipes) and `controls` (the control recipes).
STAGE_SECTIONS = ("base", "finetune", "evaluate", "analyze", "sae")
#: Flags the demo sets itself (where each stage reads and writes, and the seed).
WIRED_KEYS = {
    "output_dir",
    "seed",
    "model_name_or_path",
    "base_model",
    "finetuned_models",
    "finetuned_names",
    "cache_dir",
    "dataloader_num_workers",
}
#: Sizes that must be at least 1.
POSITIVE = {
    "finetune": ("max_steps", "num_views", "per_device_train_batch_size"),
    "evaluate": ("max_eval_examples",),
    "analyze": ("max_eval_examples",),
    "sae": ("training_tokens", "num_eval_images"),
}


@dataclass
class DemoArguments:
    """How to run the offline study; its sizes are in the sizes file (`SIZES_FILE`)."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where every stage writes."})
    seed: int = field(
        default=0, metadata={"help": "Seed of every stage (training, corruptions, bootstrap)."}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads per stage (OMP_NUM_THREADS); 0 = the cores not already busy "
            "(load average), at least 1: oversubscribed threads spin and run many times slower."
        },
    )
    parallel: int = field(
        default=0,
        metadata={
            "help": "Stages run at once when they do not depend on each other (fine-tunes; "
            "evaluation, analysis and SAEs); 0 = one per CPU core."
        },
    )
    memory_budget_gb: float = field(default=6.0, metadata={"help": "Peak memory budget (GB)."})
    time_budget_min: float = field(default=15.0, metadata={"help": "Wall-clock budget (minutes)."})
    strict_budget: bool = field(
        default=False, metadata={"help": "Exit non-zero when time or memory exceeds the budget."}
    )
    only: list[str] | None = field(
        default=None, metadata={"help": "Run only these stages (names as printed)."}
    )
    force: list[str] | None = field(
        default=None, metadata={"help": "Rerun these stages even if their outputs exist ('all')."}
    )
    check_browser: bool = field(
        default=False,
        metadata={"help": "After the report, load it in headless Chromium and take a screenshot."},
    )


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _check_section(name: str, section: Any, where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ValueError(f"{where}: '{name}' must be a mapping of recipe flags to values.")
    for key, value in section.items():
        here = f"{where}: {name}.{key}"
        if key in WIRED_KEYS:
            raise ValueError(f"{here} is set by the demo itself; leave it out.")
        old = "models" if key == "models" else key if key in RENAMED_KEYS else None
        if old:
            new = "base_model + finetuned_models" if old == "models" else RENAMED_KEYS[old][0]
            raise ValueError(f"{here}: {old!r} is a deprecated recipe key; write {new!r}.")
        if value is None or isinstance(value, dict) or value == []:
            raise ValueError(
                f"{here}: give a value, a non-empty list or leave the key out (the recipe's "
                "own value is then used)."
            )
        if key in POSITIVE.get(name, ()) and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{here} must be an integer >= 1; got {value!r}.")
    return dict(section)


def read_sizes(path: str | os.PathLike = SIZES_FILE) -> dict[str, Any]:
    """The sizes file: `{"finetunes": [recipe names], "controls": [recipe names], <stage>:
    {flag: value}, ...}`, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Demo sizes file {str(path)!r} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    where = f"Demo sizes {str(path)!r}"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a YAML mapping of stage names to flags.")
    known = ["finetunes", "controls", *STAGE_SECTIONS]
    unknown = [k for k in data if k not in known]
    if unknown:
        parts = [f"{k!r}{_did_you_mean(str(k), known)}" for k in unknown]
        raise ValueError(f"{where} has unknown section(s) {', '.join(parts)}; known: {known}.")
    finetunes = data.get("finetunes")
    if not isinstance(finetunes, list) or not finetunes:
        raise ValueError(f"{where}: 'finetunes' needs at least one fine-tune recipe name.")
    controls = data.get("controls") or []
    if not isinstance(controls, list):
        raise ValueError(f"{where}: 'controls' must be a list of control recipe names.")
    for name in [*finetunes, *controls]:
        if not (TINY_RECIPES / f"{name}.yaml").is_file():
            raise ValueError(f"{where}: no fine-tune recipe {str(TINY_RECIPES / name)!r}.yaml.")
    repeated = sorted({n for n in [*finetunes, *controls] if [*finetunes, *controls].count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: {repeated} listed twice (each recipe trains one model).")
    sizes: dict[str, Any] = {
        "finetunes": [str(n) for n in finetunes],
        "controls": [str(n) for n in controls],
    }
    for name in STAGE_SECTIONS:
        sizes[name] = _check_section(name, data.get(name) or {}, where)
    return sizes


def recipe_flags(overrides: dict[str, Any]) -> list[str]:
    """`{"max_steps": 100, "corruptions": ["all"], "seed_baseline": True}` ->
    `["--max_steps", "100", "--corruptions", "all", "--seed_baseline", "true"]`."""
    flags: list[str] = []
    for key, value in overrides.items():
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return flags


__all__ = ["DemoArguments", "SIZES_FILE", "read_sizes", "recipe_flags"]
