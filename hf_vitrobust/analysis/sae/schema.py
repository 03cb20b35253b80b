"""The ``sae.json`` contract: what ``recipes/train_sae.py`` writes and the only way to read it.

Top level (after ``schema`` and ``schema_version``): ``definitions``, ``base_model``,
``finetuned_models`` (name -> path), ``layers``, ``tokens``, ``eval`` (``dataset``, ``split``,
``num_images``, ``severity``, ``seed``, ``conditions``: condition -> corruptions), ``training_data``,
``config`` (the recipe's arguments), ``saes`` (one entry per base SAE: ``sae_id``, ``sae_type``,
``label``, ``layer``, ``tokens``, ``folder``, ``d_in``, ``d_sae``, ``metrics`` (``base`` and
``finetuned:<name>``: ``l0``, ``explained_variance``, ``mse``, ``dead_fraction``, ``n_tokens``,
``d_sae``), ``flagged``, ``flag_reason``, ``peak_buffer_mb``), ``flags``, ``comparisons``
(fine-tuned name -> SAE id -> ``flagged``, ``conditions``: condition -> ``corruptions``,
``severity`` and the summaries ``code_cosine``, ``raw_cosine``, ``topk_jaccard``, their
``*_different_image`` baselines and ``code_cosine_minus_different_image``),
``dictionary_matching`` (SAE id -> what it was matched against -> summary), ``figures``,
``versions``. A summary holds ``n``, ``median`` and, from two values on, ``median_ci``, ``mean``,
``mean_ci``, quantiles ``q05``..``q95``, ``confidence``, ``n_resamples``, ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hf_vitrobust.analysis.sae.config import SAE_TYPES
from hf_vitrobust.io import SchemaMismatch, read_stage_output

SCHEMA = "hf_vitrobust.sae"
SCHEMA_VERSION = 1
RERUN = "rerun recipes/train_sae.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "definitions": dict,
    "base_model": str,
    "finetuned_models": dict,
    "layers": list,
    "tokens": str,
    "eval": dict,
    "training_data": dict,
    "config": dict,
    "saes": list,
    "comparisons": dict,
    "dictionary_matching": dict,
    "figures": list,
}

#: Fields of each ``saes`` entry and their types.
SAE_ENTRY: dict[str, type | tuple[type, ...]] = {
    "sae_id": str,
    "sae_type": str,
    "layer": int,
    "d_in": int,
    "d_sae": int,
    "metrics": dict,
    "flagged": bool,
}

#: Summaries every comparison condition carries.
CONDITION_SUMMARIES = ("code_cosine", "raw_cosine", "topk_jaccard", "code_cosine_different_image")


def header() -> dict[str, Any]:
    """The first two keys of every sae.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def _expect(value: Any, kind: type | tuple[type, ...], where: str, source: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SchemaMismatch(
            f"{source}: {where} should be {names}, got {type(value).__name__}; {RERUN}."
        )
    return value


def _check_saes(data: Mapping[str, Any], source: str) -> set[str]:
    ids = set()
    for i, entry in enumerate(data["saes"]):
        _expect(entry, dict, f"saes[{i}]", source)
        for key, kind in SAE_ENTRY.items():
            if key not in entry:
                raise SchemaMismatch(f"{source}: saes[{i}] lacks {key!r}; {RERUN}.")
            _expect(entry[key], kind, f"saes[{i}].{key}", source)
        if entry["sae_type"] not in SAE_TYPES:
            raise SchemaMismatch(
                f"{source}: saes[{i}].sae_type is {entry['sae_type']!r}, not one of {SAE_TYPES}; "
                f"{RERUN}."
            )
        _expect(entry["metrics"].get("base"), dict, f"saes[{i}].metrics.base", source)
        ids.add(entry["sae_id"])
    return ids


def _check_comparisons(data: Mapping[str, Any], ids: set[str], source: str) -> None:
    for model, by_sae in data["comparisons"].items():
        if model not in data["finetuned_models"]:
            raise SchemaMismatch(
                f"{source}: comparisons has model {model!r}, not in finetuned_models; {RERUN}."
            )
        for sid, comparison in _expect(by_sae, dict, f"comparisons.{model}", source).items():
            where = f"comparisons.{model}.{sid}"
            if sid not in ids:
                raise SchemaMismatch(f"{source}: {where} names no SAE of 'saes'; {RERUN}.")
            conditions = _expect(
                _expect(comparison, dict, where, source).get("conditions"),
                dict,
                f"{where}.conditions",
                source,
            )
            for cond, cell in conditions.items():
                _expect(cell, dict, f"{where}.conditions.{cond}", source)
                for key in CONDITION_SUMMARIES:
                    _expect(cell.get(key), dict, f"{where}.conditions.{cond}.{key}", source)


def read_sae_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``sae.json``: header, top-level fields, the SAE entries and the nesting
    of the comparisons (``io.SchemaMismatch`` names the first field that does not fit)."""
    data = read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
    source = f"{SCHEMA} output {str(path)!r}"
    ids = _check_saes(data, source)
    _check_comparisons(data, ids, source)
    for sid, row in data["dictionary_matching"].items():
        _expect(row, dict, f"dictionary_matching.{sid}", source)
    return data


__all__ = ["SCHEMA", "SCHEMA_VERSION", "header", "read_sae_results"]
