"""The ``results.json`` contract: what ``recipes/evaluate.py`` writes and the only way to read it.

The report, the model-index builder and the plots read results through ``read_results``; a file
of another schema or version, or one that lacks a field they read, raises ``SchemaMismatch``
naming the file and the fix.

Schema ``hf_vitrobust.evaluation``, version 2 (version 1 wrote ``"schema":
"hf_vitrobust.evaluation/1"`` and no ``schema_version``). Fields, in the order written:

- ``schema``, ``schema_version``: ``header()``.
- ``definitions``: metric name -> its definition (text); ``corruption_note``: how the corrupted
  images were made.
- ``dataset``: ``name``, ``config``, ``split``, ``max_examples``, ``label_names``,
  ``n_images``, ``num_classes``.
- ``models``: one row per model, the base model first: ``key`` (names the model in every other
  section), ``name`` (Hub id or path), ``label`` (display name), ``role`` (``"base"`` or
  ``"fine_tuned"``), ``seen_corruptions`` (training corruptions that are in the grid),
  ``train_corruptions``, ``robustness`` (the checkpoint's ``config.robustness`` or null).
- ``grid``: ``cells`` (cell keys: ``"clean"``, ``"<corruption>@<severity>"``),
  ``corruptions``, ``severities``, ``clean``, ``groups`` (corruption -> group),
  ``registry_version``.
- ``settings``: ``n_resamples``, ``confidence``, ``bootstrap_seed``, ``ece_bins``,
  ``ci_method``, ``top_k`` (metric -> k capped at the class count), ``corruption_seed``,
  ``batch_size``.
- ``cells``, ``per_corruption``, ``per_group``, ``all_corruptions``: one row per model and set
  of cells, with ``model``, the set's fields (``corruption`` + ``severity`` for a cell,
  ``corruption`` + ``group`` per corruption, ``group`` per group), ``n_cells``, ``metrics``
  and, for fine-tuned models, ``vs_base``; rows of single cells and corruptions carry ``seen``.
- ``per_family``: per fine-tuned model with ``config.robustness``, a ``"seen"`` and an
  ``"unseen"`` row (``family``) with ``corruptions``, ``n_cells``, ``metrics``,
  ``base_metrics`` (the base model on the same cells) and ``vs_base``.
- ``corruption_error``: ``reference`` (``"alexnet"`` or ``"base"``), ``corruptions``,
  ``models`` (model key -> ``ce``, ``mce``, ``relative_ce``, ``relative_mce``).
- ``transfer_matrix``: ``metric``, ``definition``, ``rows`` (fine-tuned model keys),
  ``columns`` (``"clean"`` and groups), ``cells`` (rows x columns: ``estimate``, ``ci_low``,
  ``ci_high``, ``p_value``, ``test``, ``n``, ``seen``, ``seen_fraction``).
- ``bad_images``: undecodable images skipped; ``figures``: PNG names written beside the file.

A metric block (``metrics[...]``) is ``{value, ci_low, ci_high, n}``; a ``vs_base[...]`` entry
is a ``stats.PairedComparison`` as a dict (``estimate``, ``ci_low``, ``ci_high``, ``p_value``,
``test``, ``n``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hf_vitrobust.io import SchemaMismatch, read_stage_output

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

#: Fields every row of a section must have (the ones the report, the model index and the plots
#: read); sections marked optional are checked only when present.
ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "models": ("key", "name", "role"),
    "cells": ("model", "corruption", "severity", "metrics"),
    "per_group": ("model", "group", "metrics"),
    "per_family": ("model", "family", "metrics", "base_metrics", "vs_base"),
    "per_corruption": ("model", "corruption", "metrics"),  # optional
    "all_corruptions": ("model", "metrics"),  # optional
}
TRANSFER_FIELDS = ("rows", "columns", "cells")
TRANSFER_CELL_FIELDS = ("estimate", "ci_low", "ci_high", "seen")
FAMILIES = ("seen", "unseen")
ROLES = ("base", "fine_tuned")


def header() -> dict[str, Any]:
    """The first two keys of every results.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def _fail(source: str, problem: str) -> SchemaMismatch:
    return SchemaMismatch(f"{source}: {problem}; {RERUN}.")


def _check_rows(data: dict[str, Any], section: str, fields: Sequence[str], source: str) -> None:
    rows = data.get(section, [])
    if not isinstance(rows, list):
        raise _fail(source, f"field {section!r} should be list, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _fail(source, f"{section}[{i}] should be an object, got {type(row).__name__}")
        missing = [f for f in fields if f not in row]
        if missing:
            raise _fail(
                source, f"{section}[{i}] lacks the field(s) {', '.join(map(repr, missing))}"
            )


def _check_models(data: dict[str, Any], source: str) -> set[str]:
    models = data["models"]
    if not models:
        raise _fail(source, "'models' is empty")
    roles = [m["role"] for m in models]
    if roles[0] != "base" or roles.count("base") != 1 or not set(roles) <= set(ROLES):
        raise _fail(
            source, f"'models' must list the base model first, then fine-tuned ones; roles {roles}"
        )
    return {m["key"] for m in models}


def _check_transfer(data: dict[str, Any], keys: set[str], source: str) -> None:
    tm = data["transfer_matrix"]
    missing = [f for f in TRANSFER_FIELDS if f not in tm]
    if missing:
        raise _fail(source, f"transfer_matrix lacks the field(s) {', '.join(map(repr, missing))}")
    rows, columns, cells = tm["rows"], tm["columns"], tm["cells"]
    if not set(rows) <= keys:
        raise _fail(source, f"transfer_matrix rows {sorted(set(rows) - keys)} are not models")
    if len(cells) != len(rows) or any(len(row) != len(columns) for row in cells):
        raise _fail(source, "transfer_matrix cells are not rows x columns")
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            absent = [f for f in TRANSFER_CELL_FIELDS if f not in cell]
            if absent:
                raise _fail(
                    source,
                    f"transfer_matrix cells[{i}][{j}] lacks the field(s) "
                    f"{', '.join(map(repr, absent))}",
                )


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``results.json``: header, top-level fields, and the row fields of the
    sections the report, the model index and the plots read."""
    data = read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
    source = f"{SCHEMA} output {str(path)!r}"
    for section, fields in ROW_FIELDS.items():
        _check_rows(data, section, fields, source)
    keys = _check_models(data, source)
    for i, row in enumerate(data["per_family"]):
        if row["family"] not in FAMILIES:
            raise _fail(source, f"per_family[{i}] has family {row['family']!r}, not seen/unseen")
        if row["model"] not in keys:
            raise _fail(source, f"per_family[{i}] names the unknown model {row['model']!r}")
    _check_transfer(data, keys, source)
    return data


__all__ = ["SCHEMA", "SCHEMA_VERSION", "header", "read_results"]
