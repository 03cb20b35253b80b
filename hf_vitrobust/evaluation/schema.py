"""The ``results.json`` contract: what ``recipes/evaluate.py`` writes and the only way to read it.

The report, the model-index builder and the plots read results through ``read_results``; a file
of another schema or version, or one that lacks a field they read, raises ``SchemaMismatch``
naming the file and the fix.

Schema ``hf_vitrobust.evaluation``, version 3 (version 2 had no ``comparisons``, no
``controls`` and only the roles ``base``/``fine_tuned``; version 1 wrote ``"schema":
"hf_vitrobust.evaluation/1"``). Fields, in the order written:

- ``schema``, ``schema_version``: ``header()``.
- ``definitions``: metric name -> its definition (text); ``corruption_note``: how the corrupted
  images were made.
- ``dataset``: ``name``, ``config``, ``split``, ``max_examples``, ``selection`` (how the
  images were chosen), ``label_names``, ``fingerprint`` (of the selection, see
  ``identity``), ``n_images``, ``num_classes``, ``class_counts`` (label name -> evaluated
  images).
- ``models``: one row per model, the base model first: ``key`` (``roles.model_keys``; names the
  model in every other section), ``name`` (Hub id or path), ``label`` (display name), ``role``
  (``"base"`` for the first; else ``roles.role_of(config.robustness)``: ``"adversarial"``,
  ``"clean_control"``, ``"random_view_control"``, or ``"fine_tuned"`` for a checkpoint
  without ``config.robustness``), ``controls`` (adversarial models: ``{"clean": key | null,
  "random_view": key | null}`` from ``roles.match_controls``; null otherwise),
  ``seen_corruptions`` (training corruptions that are in the grid), ``train_corruptions``,
  ``robustness`` (the checkpoint's ``config.robustness`` or null), ``fingerprint`` (of its
  weights, config and processor).
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
- ``per_family``: per fine-tuned model with ``config.robustness`` (controls included), a
  ``"seen"`` and an ``"unseen"`` row (``family``) with ``role``, ``corruptions``, ``n_cells``,
  ``metrics``, ``base_metrics`` (the base model on the same cells) and ``vs_base``.
- ``corruption_error``: ``reference`` (``"alexnet"`` or ``"base"``), ``corruptions``,
  ``models`` (model key -> ``ce``, ``mce``, ``relative_ce``, ``relative_mce``).
- ``transfer_matrix``: ``metric``, ``definition``, ``rows`` (fine-tuned model keys),
  ``columns`` (``"clean"`` and groups), ``cells`` (rows x columns: ``estimate``, ``ci_low``,
  ``ci_high``, ``p_value``, ``test``, ``n``, ``seen``, ``seen_fraction``).
- ``comparisons``: one flat record per paired comparison (``comparisons`` module): ``model``,
  ``reference`` (keys), ``reference_role`` (``base``, ``clean_control``,
  ``random_view_control``), ``metric`` (``top_1_accuracy``, ``p_true``), ``scope``
  (``clean``, ``seen``, ``unseen``, ``group:<g>``; group scopes add ``seen`` and
  ``seen_fraction``), ``model_role``, ``n_cells``, ``corruptions``, and a
  ``stats.PairedComparison`` as a dict (``estimate`` = model − reference, ``ci_low``,
  ``ci_high``, ``p_value``, ``test``, ``n``, ``confidence``, ``n_resamples``, ``seed``,
  ``ci_method``, ``details``, ``excludes_zero``).
- ``bad_images``: undecodable images of the evaluated selection, counted once per example id
  (``data.BadImageTracker.summary()``): ``seen`` and ``bad`` (unique images), ``fraction``,
  ``limit``, ``min_examples``, ``first_bad`` (``id``, ``path``, ``reason`` of the smallest 100
  bad ids), ``passed``; ``figures``: PNG names written beside the file.

A metric block (``metrics[...]``) is ``{value, ci_low, ci_high, n}``; a ``vs_base[...]`` entry
is a ``stats.PairedComparison`` as a dict (``estimate``, ``ci_low``, ``ci_high``, ``p_value``,
``test``, ``n``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hf_vitrobust import roles
from hf_vitrobust.io import SchemaMismatch, read_stage_output

SCHEMA = "hf_vitrobust.evaluation"
SCHEMA_VERSION = 3
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
    "comparisons": list,
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
#: Model roles: `roles.ROLES`, and "fine_tuned" for a checkpoint without config.robustness.
ROLES = (*roles.ROLES, "fine_tuned")
REFERENCE_ROLES = (roles.BASE, *roles.CONTROL_ROLES)
_NUMBER = (int, float, type(None))  # null: not finite (e.g. an undefined CI)
#: Fields of every comparison record (the report's verdicts read these).
COMPARISON_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "reference": str,
    "reference_role": str,
    "metric": str,
    "scope": str,
    "estimate": _NUMBER,
    "ci_low": _NUMBER,
    "ci_high": _NUMBER,
    "p_value": _NUMBER,
    "test": str,
    "n": int,
}


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


def _check_models(data: dict[str, Any], source: str) -> dict[str, str]:
    """Model key -> role, after checking the base comes first and controls are models."""
    models = data["models"]
    if not models:
        raise _fail(source, "'models' is empty")
    found = [m["role"] for m in models]
    if found[0] != "base" or found.count("base") != 1 or not set(found) <= set(ROLES):
        raise _fail(
            source, f"'models' must list the base model first, then fine-tuned ones; roles {found}"
        )
    role = {m["key"]: m["role"] for m in models}
    if len(role) != len(models):
        raise _fail(source, "model keys in 'models' are not unique")
    for m in models:
        controls = m.get("controls") or {}
        for kind, key in controls.items():
            if key is not None and role.get(key) != f"{kind}_control":
                raise _fail(source, f"{m['key']}'s {kind} control {key!r} is no such control")
    return role


def _check_comparisons(data: dict[str, Any], role: dict[str, str], source: str) -> None:
    groups = (
        set((data["grid"].get("groups") or {}).values())
        if isinstance(data["grid"], dict)
        else set()
    )
    for i, rec in enumerate(data["comparisons"]):
        where = f"comparisons[{i}]"
        if not isinstance(rec, dict):
            raise _fail(source, f"{where} should be an object")
        for name, kind in COMPARISON_FIELDS.items():
            if name not in rec:
                raise _fail(source, f"{where} lacks the field {name!r}")
            if not isinstance(rec[name], kind) or isinstance(rec[name], bool):
                raise _fail(source, f"{where}[{name!r}] has the wrong type")
        if rec["model"] not in role or rec["reference"] not in role:
            raise _fail(source, f"{where} names a model that is not in 'models'")
        if (
            rec["reference_role"] not in REFERENCE_ROLES
            or role[rec["reference"]] != rec["reference_role"]
        ):
            raise _fail(
                source,
                f"{where} has reference_role {rec['reference_role']!r}, but {rec['reference']!r} "
                f"is {role[rec['reference']]!r}",
            )
        scope = rec["scope"]
        if scope.startswith("group:"):
            if scope[len("group:") :] not in groups or not isinstance(rec.get("seen"), bool):
                raise _fail(source, f"{where} has scope {scope!r} without a grid group or 'seen'")
        elif scope not in ("clean", "seen", "unseen"):
            raise _fail(source, f"{where} has the unknown scope {scope!r}")


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
    role = _check_models(data, source)
    keys = set(role)
    _check_comparisons(data, role, source)
    for i, row in enumerate(data["per_family"]):
        if row["family"] not in FAMILIES:
            raise _fail(source, f"per_family[{i}] has family {row['family']!r}, not seen/unseen")
        if row["model"] not in keys:
            raise _fail(source, f"per_family[{i}] names the unknown model {row['model']!r}")
    _check_transfer(data, keys, source)
    return data


__all__ = [
    "COMPARISON_FIELDS",
    "REFERENCE_ROLES",
    "ROLES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "header",
    "read_results",
]
