"""Mechanistic analysis: capture (hooks that reduce on the fly), lens, attention, similarity,
patching, sae. Submodules load on first use so that importing the package stays light."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ActivationCapture": "hf_vitrobust.analysis.capture",
    "AnalysisArguments": "hf_vitrobust.analysis.capture",
    "analyze_models": "hf_vitrobust.analysis.capture",
    "capture_batch": "hf_vitrobust.analysis.capture",
    "run_analysis": "hf_vitrobust.analysis.capture",
    "linear_cka": "hf_vitrobust.analysis.similarity",
    "StreamingLinearCKA": "hf_vitrobust.analysis.similarity",
    "patched_logits": "hf_vitrobust.analysis.patching",
    "grad_cam": "hf_vitrobust.analysis.attention",
    "rollout_matrix": "hf_vitrobust.analysis.attention",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_vitrobust.analysis' has no attribute {name!r}")


__all__ = list(_LAZY)
