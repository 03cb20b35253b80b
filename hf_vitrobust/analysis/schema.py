"""The ``analysis.json`` contract: what ``recipes/analyze.py`` writes and the only way to read it.

Top-level fields (``schema`` and ``schema_version`` first):

- ``definitions``: {name: the exact definition of each reported number};
- ``models``: {"base" | fine-tuned name: {name_or_path, num_layers, num_heads}};
- ``conditions``: ["clean", <corruption group>, ...]: the keys of every per-condition section;
- ``statistics``: {n_resamples, confidence, seed} of every CI and test;
- ``logit_lens[condition]``: {models[name]: {n_images, accuracy[l], true_class_probability[l],
  first_correct_layer, last_layer_max_abs_diff}, comparisons[fine-tuned]: {accuracy[l]
  (McNemar), true_class_probability[l] (paired bootstrap), first_correct_layer}};
- ``attention_entropy[condition]``: {models[name]: {all_queries[l][h], cls_query[l][h]},
  differences[fine-tuned]: {all_queries | cls_query: {difference[l][h], tests[l][h]}}};
- ``cka[condition][fine-tuned]``: {cls[l], patch_mean[l]} (null where undefined);
- ``patching[condition][fine-tuned]``: {n_images, accuracy_a, accuracy_b, gain (McNemar),
  per_layer[l]: {layer, accuracy_patched, recovered, ci_low, ci_high}};
- written by the recipe only: ``data`` {dataset, split, max_examples, classes, severity,
  corruption_groups, note}, ``bad_images``, ``seed``, ``figures`` [file names].

Per-layer entries are ``{layer, value, ci_low, ci_high}``; tests are
``stats.PairedComparison.to_dict()``. A section switched off in the recipe is an empty object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hf_vitrobust.io import SchemaMismatch, read_stage_output

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

#: What each per-condition entry holds, by section: {sub-object: fields of each model's entry}.
#: "models" is keyed by every model ("base" included); every other sub-object (and the entry
#: itself, key "") by fine-tuned model.
_CONDITION_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "logit_lens": {
        "models": ("accuracy", "true_class_probability", "first_correct_layer"),
        "comparisons": ("accuracy", "true_class_probability", "first_correct_layer"),
    },
    "attention_entropy": {
        "models": ("all_queries", "cls_query"),
        "differences": ("all_queries", "cls_query"),
    },
    "cka": {"": ("cls", "patch_mean")},
    "patching": {"": ("accuracy_a", "accuracy_b", "gain", "per_layer")},
}


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


def check_analysis(data: dict[str, Any], source: str = "analysis.json") -> dict[str, Any]:
    """Validate the per-condition sections of an analysis dict (header already checked).

    Every condition key is one of ``conditions``, every model name one of ``models`` (which holds
    ``base``), and each entry has the fields the report and the plots read.
    """
    if "base" not in data["models"]:
        raise _fail(source, "'models' has no 'base' entry")
    conditions = data["conditions"]
    if not all(isinstance(c, str) for c in conditions):
        raise _fail(source, "'conditions' should be a list of names")
    for section in _CONDITION_FIELDS:
        try:
            _check_section(section, data, set(conditions))
        except ValueError as error:
            raise _fail(source, str(error)) from None
    return data


def read_analysis(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``analysis.json``; ``io.SchemaMismatch`` names the file on drift."""
    data = read_stage_output(
        path, schema=SCHEMA, versions=(SCHEMA_VERSION,), required=REQUIRED, rerun=RERUN
    )
    return check_analysis(data, f"{SCHEMA} output {str(path)!r}")


__all__ = ["REQUIRED", "SCHEMA", "SCHEMA_VERSION", "check_analysis", "header", "read_analysis"]
