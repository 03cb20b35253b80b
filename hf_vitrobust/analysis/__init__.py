"""Mechanistic analysis of fine-tuned ViTs against their base model.

- ``capture``: one forward per model per batch, reduced inside hooks (``ActivationCapture``);
- ``lens``: logit lens and first correct layer; ``attention``: entropy, rollout, Grad-CAM;
  ``similarity``: exact streaming linear CKA; ``patching``: activation patching;
- ``conditions``: clean and one condition per corruption group, and the pixels each sees (the
  evaluation's ``corrupt_examples`` path);
- ``run``: ``analyze_models`` over a dataset and ``run_analysis`` (``recipes/analyze.py``);
- ``schema``: the ``analysis.json`` contract (``read_analysis``).

``analysis.sae`` (sparse autoencoders, on sae-lens) is imported on its own: this package does not
load it.
"""

from __future__ import annotations

from hf_vitrobust.analysis.attention import (
    EntropyRecorder,
    RolloutAccumulator,
    attention_entropy,
    compare_entropy,
    grad_cam,
    rollout_matrix,
)
from hf_vitrobust.analysis.capture import ActivationCapture, BatchCapture, capture_batch
from hf_vitrobust.analysis.conditions import (
    ConditionCollator,
    DatasetBatches,
    condition_groups,
    corrupt_condition,
    group_corruption,
)
from hf_vitrobust.analysis.lens import (
    LensRecorder,
    compare_lens,
    first_correct_layers,
    lens_logits,
    summarize_lens,
)
from hf_vitrobust.analysis.patching import (
    PatchingRecorder,
    patched_logits,
    patched_logits_by_hook,
    recovery_fraction,
)
from hf_vitrobust.analysis.run import (
    DEFINITIONS,
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
    "compare_entropy",
    "compare_lens",
    "condition_groups",
    "corrupt_condition",
    "first_correct_layers",
    "grad_cam",
    "group_corruption",
    "lens_logits",
    "linear_cka",
    "patched_logits",
    "patched_logits_by_hook",
    "read_analysis",
    "recovery_fraction",
    "rollout_matrix",
    "run_analysis",
    "summarize_lens",
]
