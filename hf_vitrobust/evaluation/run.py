"""The whole evaluation: run the grid (resuming), summarise, write ``results.json``.

``evaluate_robustness`` works on loaded models and a dataset; ``run_evaluation`` is what
``recipes/evaluate.py`` calls with its parsed ``DataArguments`` and ``EvaluationArguments``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust.configs import ComparisonArguments, DataArguments
from hf_vitrobust.constants import RESULTS_FILE
from hf_vitrobust.corruptions import REGISTRY_VERSION
from hf_vitrobust.data import label_names, load_dataset_split
from hf_vitrobust.evaluation.grid import (
    EvalModel,
    build_grid,
    label_permutation,
    load_eval_models,
    run_grid,
)
from hf_vitrobust.evaluation.store import CellStore
from hf_vitrobust.evaluation.summary import summarize
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.plots.evaluation import plot_all


@dataclass
class EvaluationSettings(ComparisonArguments):
    """What `evaluate_robustness` runs: the shared comparison settings (`corruptions`,
    `severities`, `seed`, `n_resamples`, `confidence`, `batch_size`, `device`, `progress`, ...)
    and the evaluation's own. The models themselves are passed to it loaded."""

    include_clean: bool = field(default=True, metadata={"help": "Also score clean images."})
    reference: str = field(
        default="auto",
        metadata={
            "help": "Reference of the corruption error: 'alexnet', 'base', or 'auto' (AlexNet "
            "on ImageNet with 1000 classes, the base model otherwise)."
        },
    )
    resume: bool = field(
        default=True, metadata={"help": "Reuse finished cells in output_dir/cells."}
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")


@dataclass
class EvaluationArguments(EvaluationSettings):
    """`recipes/evaluate.py` arguments (with `DataArguments` for the dataset): `base_model`,
    `finetuned_models` and `finetuned_names` name the models; results go to `output_dir`."""

    output_dir: str = field(
        default="outputs/evaluation", metadata={"help": "results.json, figures and cells/ go here."}
    )
    plots: bool = field(default=True, metadata={"help": "Write the PNG figures."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_model:
            raise ValueError(
                "No base model given: set `base_model:` (and `finetuned_models:`) in the recipe "
                "or pass --base_model BASE --finetuned_models FT1 FT2."
            )


def evaluate_robustness(
    models: Sequence[EvalModel],
    dataset: Any,
    output_dir: str | os.PathLike,
    settings: EvaluationSettings | None = None,
    dataset_info: dict[str, Any] | None = None,
    max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
    """Run the grid (resuming from `output_dir/cells`), summarise, write `results.json`.

    `models[0]` is the base model (`load_eval_models` returns it first). Undecodable images are
    skipped and counted; above `max_bad_fraction` the run stops.
    """
    st = settings or EvaluationSettings()
    names = label_names(dataset)
    for m in models:  # labels are checked before the store or the grid is touched
        label_permutation(names, m.model.config)
    cells = build_grid(st.corruptions, st.severities, st.include_clean)
    info = dict(dataset_info or {})
    output_dir = Path(output_dir)
    fingerprint = {
        "dataset": {k: info.get(k) for k in ("name", "config", "split", "max_examples")},
        "label_names": names,
        "corruption_seed": st.seed,
        "registry_version": REGISTRY_VERSION,
    }
    store = CellStore(output_dir / "cells", fingerprint, resume=st.resume)
    records, bad = run_grid(
        models,
        dataset,
        cells,
        batch_size=st.batch_size,
        seed=st.seed,
        device=st.device,
        store=store,
        max_bad_fraction=max_bad_fraction,
        progress=st.progress,
    )
    info.setdefault("label_names", names)
    results = summarize(
        records,
        models,
        cells,
        num_classes=len(names),
        dataset_info=info,
        reference=st.reference,
        n_resamples=st.n_resamples,
        confidence=st.confidence,
        seed=st.seed,
        progress=st.progress,
    )
    results["settings"]["corruption_seed"] = st.seed
    results["settings"]["batch_size"] = st.batch_size
    results["bad_images"] = bad
    write_json_atomic(results, output_dir / RESULTS_FILE)
    return results


def run_evaluation(data_args: DataArguments, eval_args: EvaluationArguments) -> dict[str, Any]:
    """Load the models and the held-out split, evaluate, write results.json and the figures."""
    dataset = load_dataset_split(data_args, "eval")
    models = load_eval_models(
        eval_args.base_model,
        eval_args.finetuned_models,
        eval_args.finetuned_names,
        device=eval_args.device,
    )
    info = {
        "name": data_args.dataset_name,
        "config": data_args.dataset_config_name,
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
    }
    results = evaluate_robustness(
        models, dataset, eval_args.output_dir, eval_args, info, data_args.max_bad_fraction
    )
    if eval_args.plots:
        figures = plot_all(results, eval_args.output_dir)
        results["figures"] = [p.name for p in figures]
        write_json_atomic(results, Path(eval_args.output_dir) / RESULTS_FILE)
    return results


def transfer_lines(results: dict[str, Any]) -> list[str]:
    """The transfer matrix as one line per fine-tuned model (`*`: a group the model trained on)."""
    tm = results["transfer_matrix"]
    lines = []
    for key, row in zip(tm["rows"], tm["cells"]):
        shown = ", ".join(
            f"{col}{'*' if c['seen'] else ''} {100 * c['estimate']:+.1f} "
            f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
            for col, c in zip(tm["columns"], row)
        )
        lines.append(f"top-1 change vs base, {key}: {shown}")
    return lines


__all__ = [
    "EvaluationArguments",
    "EvaluationSettings",
    "evaluate_robustness",
    "run_evaluation",
    "transfer_lines",
]
