"""The corruption benchmark: base vs fine-tuned ViTs on a grid of corruptions × severities.

Paired by design: each batch is decoded and corrupted once (``corruptions.corrupt_examples``:
a per-image seed makes the corrupted image a pure function of (seed, example id, corruption,
severity)), and every model sees the identical pixels. Per-image results are kept, so every
fine-tuned-vs-base difference gets a bootstrap CI over images and a paired test
(``hf_vitrobust.stats``).

- ``metrics``: per-image outputs, ECE, the definitions written beside the numbers, and the
  shipped top-k ``evaluate`` module.
- ``models``: the models under evaluation: keys, roles, matched controls, label mapping.
- ``grid``: grid cells and ``run_grid`` (sharded across processes under ``accelerate launch``).
- ``decoded``: the evaluated images, decoded once, bad images counted once.
- ``identity``: fingerprints of models and data selections, so stale cells are recomputed.
- ``store``: per-image records of finished cells on disk (``<output_dir>/cells/``), so an
  interrupted evaluation resumes where it stopped.
- ``summary``: every figure with its CI and paired test, corruption errors, the transfer matrix.
- ``comparisons``: the paired comparison records (against the base and the matched controls).
- ``schema``: the ``results.json`` contract and its reader, ``read_results``.
- ``run``: ``evaluate_robustness`` (loaded models) and ``run_evaluation`` (the recipe's).
"""

from hf_vitrobust.constants import CLEAN
from hf_vitrobust.evaluation.comparisons import (
    COMPARISON_METRICS,
    build_comparisons,
    reference_pairs,
)
from hf_vitrobust.evaluation.grid import Cell, GridResult, build_grid, run_grid
from hf_vitrobust.evaluation.identity import (
    cell_fingerprint,
    data_fingerprint,
    model_fingerprint,
)
from hf_vitrobust.evaluation.metrics import (
    ACCURACY_KS,
    CORRUPTION_NOTE,
    DEFINITIONS,
    ECE_BINS,
    MEAN_METRICS,
    TOP_K_METRIC_PATH,
    ece_bin_sums,
    ece_statistic,
    expected_calibration_error,
    load_top_k_metric,
    per_image_outputs,
)
from hf_vitrobust.evaluation.models import (
    EvalModel,
    assign_keys,
    base_first,
    base_of,
    label_permutation,
    load_eval_models,
    model_controls,
    model_roles,
    resolve_device,
)
from hf_vitrobust.evaluation.run import (
    EvaluationArguments,
    EvaluationSettings,
    evaluate_robustness,
    run_evaluation,
    transfer_lines,
)
from hf_vitrobust.evaluation.schema import SCHEMA, SCHEMA_VERSION, header, read_results
from hf_vitrobust.evaluation.store import CellRecord, CellStore
from hf_vitrobust.evaluation.summary import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    SummarySettings,
    corruption_errors,
    summarize,
)

__all__ = [
    "ACCURACY_KS",
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "CLEAN",
    "COMPARISON_METRICS",
    "CORRUPTION_NOTE",
    "DEFINITIONS",
    "ECE_BINS",
    "MEAN_METRICS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TOP_K_METRIC_PATH",
    "Cell",
    "CellRecord",
    "CellStore",
    "EvalModel",
    "EvaluationArguments",
    "EvaluationSettings",
    "GridResult",
    "SummarySettings",
    "assign_keys",
    "base_first",
    "base_of",
    "build_comparisons",
    "build_grid",
    "cell_fingerprint",
    "corruption_errors",
    "data_fingerprint",
    "ece_bin_sums",
    "ece_statistic",
    "evaluate_robustness",
    "expected_calibration_error",
    "header",
    "label_permutation",
    "load_eval_models",
    "load_top_k_metric",
    "model_controls",
    "model_fingerprint",
    "model_roles",
    "per_image_outputs",
    "read_results",
    "reference_pairs",
    "resolve_device",
    "run_evaluation",
    "run_grid",
    "summarize",
    "transfer_lines",
]
