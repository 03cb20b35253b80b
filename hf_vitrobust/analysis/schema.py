"""The ``analysis.json`` contract: what ``recipes/analyze.py`` writes and the only way to read it.

Top-level fields (``schema`` and ``schema_version`` first):

- ``definitions``: {name: the exact definition of each reported number};
- ``models``: {"base" | model key: {name_or_path, role (base | clean_control |
  random_view_control | adversarial | unknown), num_layers, num_heads}};
- ``conditions``: ["clean", <corruption group>, ...]: the keys of every per-condition section;
- ``statistics``: {n_resamples, confidence, seed, comparison_test} of every CI and test;
- ``logit_lens[condition]``: {models[name]: {n_images, accuracy[l], true_class_probability[l]
  (l = 0..L), first_correct_layer {n_images, count (correct at L), never_correct {count,
  share}, histogram_layers [1..L], first | stable {value, ci_low, ci_high, histogram}},
  last_layer_max_abs_diff}, common: {n_images (correct at L for every model), models[name]:
  {first | stable: {value, ci_low, ci_high}}}, comparisons[fine-tuned]: {accuracy[l] (McNemar),
  true_class_probability[l] (paired bootstrap)} against the base};
- ``attention_entropy[condition]``: {models[name]: {all_queries[l][h], cls_query[l][h]}} (mean
  nats; row l - 1 is block l);
- ``cka[condition][fine-tuned]``: {cls[l], patch_mean[l]} against the base (null where
  undefined);
- ``patching[condition][fine-tuned]``: {n_images, accuracy_a, accuracy_b, gain (McNemar),
  ci_method, zero_gain_resamples, per_layer[l]: {layer, accuracy_patched, recovered, ci_low,
  ci_high}};
- ``comparisons``: flat paired-comparison records (`analysis.comparisons`): {model, reference,
  reference_role, metric, scope (a condition), qualifiers, **stats.PairedComparison.to_dict()};
  metric ``first_correct_layer`` | ``first_always_correct_layer`` (qualifiers n_images,
  model_mean, reference_mean) or ``attention_entropy`` | ``attention_entropy_cls``
  (qualifiers layer 1..L, head 0..H-1 or null = mean over heads);
- written by the recipe only: ``data`` {dataset, split, max_examples, selection
  (``data.selection_record``), classes, severity,
  corruption_groups, note}, ``bad_images``, ``seed``, ``figures`` [file names].

Per-layer entries are ``{layer, value, ci_low, ci_high}``; tests are
``stats.PairedComparison.to_dict()``. A section switched off in the recipe is an empty object.
Version 2 (this one) added ``comparisons``, ``models[*].role``, ``logit_lens[*].common`` and
counts first correct layers from layer 1; version 1 files are refused (rerun the stage).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hf_vitrobust.analysis.comparisons import QUALIFIERS, REFERENCE_ROLES
from hf_vitrobust.io import SchemaMismatch, read_stage_output

SCHEMA = "hf_vitrobust.analysis"
SCHEMA_VERSION = 2
RERUN = "rerun recipes/analyze.py to rewrite it"

#: The per-condition sections of analysis.json (each present; empty when switched off).
SECTIONS = ("logit_lens", "attention_entropy", "cka", "patching")

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "models": dict,
    "conditions": list,
    "logit_lens": dict,
    "attention_entropy": dict,
    "cka": dict,
    "patching": dict,
    "comparisons": list,
}

#: What each per-condition entry holds, by section: {sub-object: fields of each model's entry}.
#: "models" is keyed by every model ("base" included); every other sub-object (and the entry
#: itself, key "") by fine-tuned model. "common" is one object with these fields.
_CONDITION_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "logit_lens": {
        "models": ("accuracy", "true_class_probability", "first_correct_layer"),
        "comparisons": ("accuracy", "true_class_probability"),
    },
    "attention_entropy": {"models": ("all_queries", "cls_query")},
    "cka": {"": ("cls", "patch_mean")},
    "patching": {"": ("accuracy_a", "accuracy_b", "gain", "per_layer")},
}

#: Fields of every comparison record (the metric's qualifiers: `comparisons.QUALIFIERS`).
_RECORD_FIELDS = ("model", "reference", "reference_role", "metric", "scope", "estimate",
                  "ci_low", "ci_high", "p_value", "test", "n")  # fmt: skip


def header() -> dict[str, Any]:
    """The first two keys of every analysis.json."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}


def _fail(source: str, message: str) -> SchemaMismatch:
    return SchemaMismatch(f"{source}: {message}; {RERUN}.")


def _check_models(where: str, by_model: Any, names: set[str], fields: tuple[str, ...]) -> None:
    if not isinstance(by_model, Mapping):
        raise ValueError(f"{where} should be an object of models")
    unknown = sorted(set(by_model) - names)
    if unknown:
        raise ValueError(f"{where} names models {unknown} that are not in 'models'")
    for model, entry in by_model.items():
        missing = [f for f in fields if not isinstance(entry, Mapping) or f not in entry]
        if missing:
            raise ValueError(f"{where}[{model!r}] lacks {missing}")


def _check_section(section: str, data: Mapping[str, Any], conditions: set[str]) -> None:
    names = set(data["models"])
    for condition, entry in data[section].items():
        where = f"{section}[{condition!r}]"
        if condition not in conditions:
            raise ValueError(f"{where} is not one of the conditions {sorted(conditions)}")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} should be an object")
        for key, fields in _CONDITION_FIELDS[section].items():
            allowed = names if key == "models" else names - {"base"}
            if not key:
                _check_models(where, entry, allowed, fields)
            elif key not in entry:
                raise ValueError(f"{where} lacks {key!r}")
            else:
                _check_models(f"{where}[{key!r}]", entry[key], allowed, fields)
        if section == "logit_lens":  # the side-by-side means on common images (the figure)
            common = entry.get("common")
            if not isinstance(common, Mapping) or "n_images" not in common:
                raise ValueError(f"{where} lacks 'common' {{n_images, models}}")
            _check_models(f"{where}['common']", common.get("models"), names, ("first", "stable"))


def _check_record(index: int, record: Any, names: set[str], conditions: set[str]) -> None:
    where = f"comparisons[{index}]"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} should be an object")
    metric = record.get("metric")
    if metric not in QUALIFIERS:
        raise ValueError(f"{where} has metric {metric!r}, not one of {list(QUALIFIERS)}")
    missing = [f for f in (*_RECORD_FIELDS, *QUALIFIERS[metric]) if f not in record]
    if missing:
        raise ValueError(f"{where} ({metric}) lacks {missing}")
    for key in ("model", "reference"):
        if record[key] not in names:
            raise ValueError(f"{where} names {key} {record[key]!r}, not one of 'models'")
    if record["reference_role"] not in REFERENCE_ROLES:
        raise ValueError(f"{where} has reference_role {record['reference_role']!r}")
    if record["scope"] not in conditions:
        raise ValueError(f"{where} has scope {record['scope']!r}, not one of the conditions")


def check_analysis(data: dict[str, Any], source: str = "analysis.json") -> dict[str, Any]:
    """Validate the per-condition sections and the comparison records of an analysis dict
    (header already checked).

    Every condition key (and record scope) is one of ``conditions``, every model name one of
    ``models`` (which holds ``base``), and each entry has the fields the report and the plots
    read.
    """
    if "base" not in data["models"]:
        raise _fail(source, "'models' has no 'base' entry")
    conditions = data["conditions"]
    if not all(isinstance(c, str) for c in conditions):
        raise _fail(source, "'conditions' should be a list of names")
    try:
        for section in _CONDITION_FIELDS:
            _check_section(section, data, set(conditions))
        for index, record in enumerate(data["comparisons"]):
            _check_record(index, record, set(data["models"]), set(conditions))
    except ValueError as error:
        raise _fail(source, str(error)) from None
    return data


def read_analysis(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``analysis.json``; ``io.SchemaMismatch`` names the file on drift."""
    data = read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
    return check_analysis(data, f"{SCHEMA} output {str(path)!r}")


__all__ = [
    "REQUIRED",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SECTIONS",
    "check_analysis",
    "header",
    "read_analysis",
]
