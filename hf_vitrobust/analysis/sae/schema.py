"""The ``sae.json`` contract: what ``recipes/train_sae.py`` writes and the only way to read it.

Top level (after ``schema`` and ``schema_version``): ``definitions``, ``base_model``,
``finetuned_models`` (key -> path), ``models`` (key -> ``path``, ``role``; ``base`` included),
``controls`` (adversarial key -> ``clean_control``, ``random_view_control``: keys or null),
``layers``, ``tokens``, ``token_types`` (``cls`` and/or ``patches``), ``eval`` (``dataset``,
``split``, ``num_images``, ``selection`` (of the compared images, ``data.selection_record``),
``reference_images``, ``severity``, ``seed``, ``conditions``: condition
-> corruptions, ``bad_images``, ``processes``), ``training_data`` (with its ``selection``),
``config``, ``saes`` (one entry
per base SAE: ``sae_id``, ``sae_type``, ``label``, ``layer``, ``tokens``, ``folder``, ``d_in``,
``d_sae``, ``metrics`` (``base`` and each model key: ``l0``, ``explained_variance``, ``mse``,
``dead_fraction``, ``n_tokens``, ``d_sae`` of that model's activations through this base SAE),
``l0_vs_k`` (``k``, ``l0_over_k``, ``l0_tolerance``, ``l0_within_tolerance``; nulls for vanilla
SAEs), ``threshold_calibration`` (BatchTopK: ``k``, ``running_threshold``,
``calibrated_threshold``, ``calibration_tokens``, ``l0_running_threshold``, ``l0_calibrated``;
null for vanilla), ``flagged``, ``flag_reason``, ``peak_buffer_mb``), ``flags``,
``comparisons`` (flat records, see below), ``distributions`` (model key -> SAE id ->
``flagged``, ``conditions``: condition -> ``corruptions``, ``severity``, ``tokens``: token type ->
summaries ``code_cosine``, ``raw_cosine``, ``topk_jaccard``, ``l0_through_base``, ``l0_base``,
``code_cosine_different_image``, ``raw_cosine_different_image``,
``topk_jaccard_different_image``, the difference ``code_cosine_minus_different_image``, and the
counts ``both_zero_tokens``, ``both_zero_images``), ``dictionary_matching`` (SAE id -> what it was
matched against -> summary), ``figures``, ``versions``.

A summary holds ``n``, ``n_excluded``, ``median`` and, from two values on, ``median_ci``,
``mean``, ``mean_ci``, quantiles ``q05``..``q95``, ``confidence``, ``n_resamples``, ``seed``,
``ci_method``. A comparison record is ``stats.PairedComparison.to_dict()`` plus ``model``,
``reference``, ``reference_role`` (``clean_control`` | ``random_view_control``), ``metric``
(``code_cosine_to_base`` | ``l0_through_base``), ``scope`` (the condition), ``sae_id``,
``sae_type``, ``layer``, ``token`` (``cls`` | ``patches``), ``flagged`` and
``n_excluded_images``; its estimate is the model's value minus the reference's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hf_vitrobust.analysis.sae.config import SAE_TYPES
from hf_vitrobust.io import SchemaMismatch, read_stage_output
from hf_vitrobust.roles import CONTROL_ROLES

SCHEMA = "hf_vitrobust.sae"
SCHEMA_VERSION = 2
RERUN = "rerun recipes/train_sae.py to rewrite it"

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "definitions": dict,
    "base_model": str,
    "finetuned_models": dict,
    "models": dict,
    "controls": dict,
    "layers": list,
    "tokens": str,
    "token_types": list,
    "eval": dict,
    "training_data": dict,
    "config": dict,
    "saes": list,
    "comparisons": list,
    "distributions": dict,
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
    "l0_vs_k": dict,
    "flagged": bool,
}

#: Fields of every comparison record and their types.
RECORD: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "reference": str,
    "reference_role": str,
    "metric": str,
    "scope": str,
    "sae_id": str,
    "layer": int,
    "token": str,
    "estimate": (int, float),
    "ci_low": (int, float),
    "ci_high": (int, float),
    "p_value": (int, float),
    "test": str,
    "n": int,
}
METRICS = ("code_cosine_to_base", "l0_through_base")
TOKEN_TYPES = ("cls", "patches")

#: Summaries every distribution cell carries.
CELL_SUMMARIES = (
    "code_cosine",
    "raw_cosine",
    "topk_jaccard",
    "l0_through_base",
    "code_cosine_different_image",
)


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


def _check_fields(
    entry: Any, fields: Mapping[str, Any], where: str, source: str
) -> Mapping[str, Any]:
    _expect(entry, dict, where, source)
    for key, kind in fields.items():
        if key not in entry:
            raise SchemaMismatch(f"{source}: {where} lacks {key!r}; {RERUN}.")
        _expect(entry[key], kind, f"{where}.{key}", source)
    return entry


def _one_of(value: Any, allowed: tuple[str, ...], where: str, source: str) -> None:
    if value not in allowed:
        raise SchemaMismatch(f"{source}: {where} is {value!r}, not one of {allowed}; {RERUN}.")


def _check_saes(data: Mapping[str, Any], source: str) -> set[str]:
    ids = set()
    for i, entry in enumerate(data["saes"]):
        _check_fields(entry, SAE_ENTRY, f"saes[{i}]", source)
        _one_of(entry["sae_type"], SAE_TYPES, f"saes[{i}].sae_type", source)
        _expect(entry["metrics"].get("base"), dict, f"saes[{i}].metrics.base", source)
        ids.add(entry["sae_id"])
    return ids


def _check_comparisons(data: Mapping[str, Any], ids: set[str], source: str) -> None:
    models = set(data["models"])
    for i, record in enumerate(data["comparisons"]):
        where = f"comparisons[{i}]"
        _check_fields(record, RECORD, where, source)
        _one_of(record["metric"], METRICS, f"{where}.metric", source)
        _one_of(record["reference_role"], CONTROL_ROLES, f"{where}.reference_role", source)
        _one_of(record["token"], TOKEN_TYPES, f"{where}.token", source)
        for key in ("model", "reference"):
            if record[key] not in models:
                raise SchemaMismatch(
                    f"{source}: {where}.{key} is {record[key]!r}, not in 'models'; {RERUN}."
                )
        if record["sae_id"] not in ids:
            raise SchemaMismatch(f"{source}: {where}.sae_id names no SAE of 'saes'; {RERUN}.")


def _check_distributions(data: Mapping[str, Any], ids: set[str], source: str) -> None:
    for model, by_sae in data["distributions"].items():
        if model not in data["finetuned_models"]:
            raise SchemaMismatch(
                f"{source}: distributions has model {model!r}, not in finetuned_models; {RERUN}."
            )
        for sid, entry in _expect(by_sae, dict, f"distributions.{model}", source).items():
            where = f"distributions.{model}.{sid}"
            if sid not in ids:
                raise SchemaMismatch(f"{source}: {where} names no SAE of 'saes'; {RERUN}.")
            conditions = _expect(
                _expect(entry, dict, where, source).get("conditions"),
                dict,
                f"{where}.conditions",
                source,
            )
            for cond, cell in conditions.items():
                tokens = _expect(
                    _expect(cell, dict, f"{where}.conditions.{cond}", source).get("tokens"),
                    dict,
                    f"{where}.conditions.{cond}.tokens",
                    source,
                )
                for token, summaries in tokens.items():
                    _one_of(token, TOKEN_TYPES, f"{where}.conditions.{cond}.tokens", source)
                    for key in CELL_SUMMARIES:
                        _expect(
                            _expect(summaries, dict, f"{where}.{cond}.{token}", source).get(key),
                            dict,
                            f"{where}.conditions.{cond}.tokens.{token}.{key}",
                            source,
                        )


def read_sae_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``sae.json``: header, top-level fields, the SAE entries, the comparison
    records and the nesting of the distributions (``io.SchemaMismatch`` names the first field
    that does not fit)."""
    data = read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
    source = f"{SCHEMA} output {str(path)!r}"
    ids = _check_saes(data, source)
    _check_comparisons(data, ids, source)
    _check_distributions(data, ids, source)
    for sid, row in data["dictionary_matching"].items():
        _expect(row, dict, f"dictionary_matching.{sid}", source)
    return data


__all__ = ["METRICS", "SCHEMA", "SCHEMA_VERSION", "header", "read_sae_results"]
