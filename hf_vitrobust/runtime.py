"""The ``stages.json`` contract: the demo's per-stage time and memory record.

Written by ``demo`` (the top layer) and read by the report, so it lives below both.
"""

from __future__ import annotations

import os
from typing import Any

from hf_vitrobust.io import read_stage_output

SCHEMA = "hf_vitrobust.stages"
SCHEMA_VERSION = 1
RERUN = "rerun recipes/demo.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "stages": list,
    "study_seconds": (int, float),
    "peak_memory_bytes": int,
    "time_budget_seconds": (int, float),
    "memory_budget_bytes": int,
}


def header() -> dict[str, Any]:
    """The first two keys of every stages.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def read_stages(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``stages.json``."""
    return read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
