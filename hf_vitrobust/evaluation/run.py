"""The whole evaluation: run the grid (resuming), summarise, write ``results.json``.

``evaluate_robustness`` works on loaded models and a dataset; ``run_evaluation`` is what
``recipes/evaluate.py`` calls with its parsed ``DataArguments`` and ``EvaluationArguments``.
Under ``accelerate launch`` every process scores its shard of the images; the main process
gathers the per-image records, runs the statistics once and writes the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust import stats
from hf_vitrobust.configs import ComparisonArguments, DataArguments
from hf_vitrobust.constants import RESULTS_FILE
from hf_vitrobust.data import label_names, load_dataset_split, selection_record
from hf_vitrobust.distributed import process_state
from hf_vitrobust.evaluation.grid import build_grid, run_grid
from hf_vitrobust.evaluation.identity import data_fingerprint, example_ids_digest
from hf_vitrobust.evaluation.models import (
    EvalModel,
    base_of,
    label_permutation,
    load_eval_models,
)
from hf_vitrobust.evaluation.store import CellStore
from hf_vitrobust.evaluation.summary import summarize
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.plots.evaluation import plot_all

REFERENCES = ("auto", "alexnet", "base")


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
        default=True,
        metadata={
            "help": "Reuse finished cells in output_dir/cells (only those computed from the "
            "same weights, processor, images and seed)."
        },
    )
    decode_cache_mb: int = field(
        default=2048,
        metadata={
            "help": "Keep the decoded images in memory up to this size (MiB, per process); "
            "above it every cell decodes them again."
        },
    )

    def __post_init__(self) -> None:
        """Check every setting before any model or image is loaded; errors name the key."""
        try:
            build_grid(self.corruptions, self.severities, self.include_clean)
        except ValueError as error:
            key = "severities" if "severity" in str(error) else "corruptions"
            raise ValueError(
                f"`{key}: {getattr(self, key)}` in the recipe (--{key}): {error}"
            ) from None
        checks = (
            ("batch_size", self.batch_size >= 1, "an int >= 1"),
            ("n_resamples", self.n_resamples >= stats.MIN_RESAMPLES, f">= {stats.MIN_RESAMPLES}"),
            ("confidence", 0.0 < self.confidence < 1.0, "in (0, 1)"),
            ("reference", self.reference in REFERENCES, f"one of {', '.join(REFERENCES)}"),
            ("decode_cache_mb", self.decode_cache_mb >= 0, ">= 0"),
        )
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(
                    f"`{key}: {getattr(self, key)!r}` in the recipe (--{key}) must be {allowed}."
                )


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
) -> dict[str, Any] | None:
    """Run the grid (resuming from `output_dir/cells`), summarise, write `results.json`.

    The base model is the one marked ``base=True`` (`load_eval_models` marks it), else the one
    without ``config.robustness`` (`models.base_of`); models without a key get one from
    `roles.model_keys`. Undecodable images are skipped and counted once each;
    above `max_bad_fraction` the run stops (finished cells are kept). Returns the results on
    the main process and None on the others (under `accelerate launch`).
    """
    st = settings or EvaluationSettings()
    base_of(models)  # the base is known before any image is scored
    names = label_names(dataset)
    for m in models:  # labels are checked before the store or the grid is touched
        label_permutation(names, m.model.config)
    cells = build_grid(st.corruptions, st.severities, st.include_clean)
    info = dict(dataset_info or {})
    info.setdefault("label_names", names)
    info["fingerprint"] = data_fingerprint(info, names, example_ids_digest(dataset))
    output_dir = Path(output_dir)
    grid = run_grid(
        models,
        dataset,
        cells,
        batch_size=st.batch_size,
        seed=st.seed,
        device=st.device,
        store=CellStore(
            output_dir / "cells", resume=st.resume, writable=process_state().is_main_process
        ),
        data_fp=info["fingerprint"],
        max_bad_fraction=max_bad_fraction,
        cache_bytes=st.decode_cache_mb * 1024**2,
        progress=st.progress,
    )
    if grid is None:  # another process than the main one: the main one writes everything
        return None
    results = summarize(
        grid.records,
        models,
        cells,
        num_classes=len(names),
        dataset_info=info,
        reference=st.reference,
        n_resamples=st.n_resamples,
        confidence=st.confidence,
        seed=st.seed,
        progress=st.progress,
        fingerprints=grid.fingerprints,
    )
    results["settings"]["corruption_seed"] = st.seed
    results["settings"]["batch_size"] = st.batch_size
    results["bad_images"] = grid.bad_images
    write_json_atomic(results, output_dir / RESULTS_FILE)
    return results


def run_evaluation(
    data_args: DataArguments, eval_args: EvaluationArguments
) -> dict[str, Any] | None:
    """Load the models and the held-out split, evaluate, write results.json and the figures
    (on the main process; returns None on the others)."""
    dataset = load_dataset_split(data_args, "eval")
    models = load_eval_models(
        eval_args.base_model, eval_args.finetuned_models, eval_args.finetuned_names
    )
    info = {
        "name": data_args.dataset_name,
        "config": data_args.dataset_config_name,
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
        "selection": selection_record(dataset, data_args, "eval"),
    }
    results = evaluate_robustness(
        models, dataset, eval_args.output_dir, eval_args, info, data_args.max_bad_fraction
    )
    if results is not None and eval_args.plots:
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
