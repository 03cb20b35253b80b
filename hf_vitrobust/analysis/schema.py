"""The ``analysis.json`` contract: what ``recipes/analyze.py`` writes and the only way to read it."""

from __future__ import annotations

import os
from typing import Any

from hf_vitrobust.io import read_stage_output

SCHEMA = "hf_vitrobust.analysis"
SCHEMA_VERSION = 1
RERUN = "rerun recipes/analyze.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "models": dict,
    "conditions": list,
    "logit_lens": dict,
    "attention_entropy": dict,
    "cka": dict,
    "patching": dict,
}


def header() -> dict[str, Any]:
    """The first two keys of every analysis.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def read_analysis(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``analysis.json``."""
    return read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
