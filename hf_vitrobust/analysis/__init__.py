"""Mechanistic analysis of fine-tuned ViTs against their base model and their controls.

- ``capture``: one forward per model per batch, reduced inside hooks (``ActivationCapture``);
- ``lens``: logit lens and first correct layer; ``attention``: entropy, rollout, Grad-CAM;
  ``similarity``: exact streaming linear CKA; ``patching``: activation patching;
- ``conditions``: clean and one condition per corruption group, and the pixels each sees (the
  evaluation's ``corrupt_examples`` path);
- ``records``: one condition streamed through every model, gathered across processes;
  ``summary``: its statistics; ``comparisons``: the paired comparisons against the base and the
  matched controls (the flat records of ``analysis.json["comparisons"]``);
- ``run``: ``analyze_models`` over a dataset and ``run_analysis`` (``recipes/analyze.py``);
- ``schema``: the ``analysis.json`` contract (``read_analysis``); ``definitions``: the exact
  definition of each number.

``analysis.sae`` (sparse autoencoders, on sae-lens) is imported on its own: this package does not
load it.
"""

from __future__ import annotations

from hf_vitrobust.analysis.attention import (
    EntropyRecorder,
    RolloutAccumulator,
    attention_entropy,
    grad_cam,
    rollout_matrix,
    summarize_entropy,
)
from hf_vitrobust.analysis.capture import ActivationCapture, BatchCapture, capture_batch
from hf_vitrobust.analysis.comparisons import (
    entropy_records,
    first_correct_records,
    paired_wilcoxon_many,
)
from hf_vitrobust.analysis.conditions import (
    ConditionCollator,
    DatasetBatches,
    condition_groups,
    corrupt_condition,
    group_corruption,
)
from hf_vitrobust.analysis.definitions import DEFINITIONS
from hf_vitrobust.analysis.lens import (
    LensRecorder,
    common_first_correct,
    compare_lens,
    first_correct_layers,
    lens_logits,
    summarize_lens,
)
from hf_vitrobust.analysis.patching import (
    PatchingRecorder,
    patched_logits,
    patched_logits_by_hook,
    recovery_bootstrap,
    recovery_fraction,
    summarize_patching,
)
from hf_vitrobust.analysis.run import (
    AnalysisArguments,
    analyze_models,
    attention_panel,
    check_same_task,
    run_analysis,
)
from hf_vitrobust.analysis.schema import read_analysis
from hf_vitrobust.analysis.similarity import StreamingLinearCKA, linear_cka

__all__ = [
    "DEFINITIONS",
    "ActivationCapture",
    "AnalysisArguments",
    "BatchCapture",
    "ConditionCollator",
    "DatasetBatches",
    "EntropyRecorder",
    "LensRecorder",
    "PatchingRecorder",
    "RolloutAccumulator",
    "StreamingLinearCKA",
    "analyze_models",
    "attention_entropy",
    "attention_panel",
    "capture_batch",
    "check_same_task",
    "common_first_correct",
    "compare_lens",
    "condition_groups",
    "corrupt_condition",
    "entropy_records",
    "first_correct_layers",
    "first_correct_records",
    "grad_cam",
    "group_corruption",
    "lens_logits",
    "linear_cka",
    "paired_wilcoxon_many",
    "patched_logits",
    "patched_logits_by_hook",
    "read_analysis",
    "recovery_bootstrap",
    "recovery_fraction",
    "rollout_matrix",
    "run_analysis",
    "summarize_entropy",
    "summarize_lens",
    "summarize_patching",
]
