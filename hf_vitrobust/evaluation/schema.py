"""The ``results.json`` contract: what ``recipes/evaluate.py`` writes and the only way to read it.

The report, the model-index builder and the plots read results through ``read_results``; a file
of another schema or version raises ``SchemaMismatch`` naming the file and the fix.
"""

from __future__ import annotations

import os
from typing import Any

from hf_vitrobust.io import read_stage_output

SCHEMA = "hf_vitrobust.evaluation"
SCHEMA_VERSION = 2
RERUN = "rerun recipes/evaluate.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "dataset": dict,
    "models": list,
    "grid": (dict, list),
    "settings": dict,
    "cells": list,
    "per_group": list,
    "per_family": list,
    "transfer_matrix": dict,
}


def header() -> dict[str, Any]:
    """The first two keys of every results.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``results.json``."""
    return read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
