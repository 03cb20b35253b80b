"""The ``sae.json`` contract: what ``recipes/train_sae.py`` writes and the only way to read it."""

from __future__ import annotations

import os
from typing import Any

from hf_vitrobust.io import read_stage_output

SCHEMA = "hf_vitrobust.sae"
SCHEMA_VERSION = 1
RERUN = "rerun recipes/train_sae.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "base_model": str,
    "finetuned_models": dict,
    "layers": list,
    "saes": list,
    "comparisons": dict,
}


def header() -> dict[str, Any]:
    """The first two keys of every sae.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def read_sae_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``sae.json``."""
    return read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
