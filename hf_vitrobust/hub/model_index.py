"""Model-index rows: evaluation results as `huggingface_hub.EvalResult`-ready dicts.

`eval_results_for_model` turns a `results.json` of `recipes/evaluate.py` (read through
`hf_vitrobust.evaluation.schema.read_results`) into one model's rows; `load_results` normalises
whatever a card is given (a path, a whole `results.json`, a list of rows, the card format) and
validates every row, so the Hub shows the numbers and `model_index_to_eval_results` reads them
back unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from hf_vitrobust.constants import CLEAN
from hf_vitrobust.evaluation import schema as results_schema
from hf_vitrobust.hub.common import (
    CardInputError,
    one_line,
    read_config,
    read_input_json,
)
from hf_vitrobust.hub.provenance import (
    LOCAL_DATASET_TYPE,
    dataset_ref,
    local_name,
    looks_like_path,
    public,
)
from hf_vitrobust.io import check_schema, to_jsonable

# results.json metric name -> (model-index metric type, human-readable name).
_METRIC_TYPES = {
    "top_1_accuracy": ("accuracy", "Top-1 accuracy"),
    "top_5_accuracy": ("top_5_accuracy", "Top-5 accuracy"),
    "top_10_accuracy": ("top_10_accuracy", "Top-10 accuracy"),
    "p_true": ("p_true", "Probability of the true class"),
    "nll": ("nll", "Negative log-likelihood"),
    "ece": ("ece", "Expected calibration error (15 bins)"),
}

RESULT_FIELDS = (
    "task_type",
    "dataset_type",
    "dataset_name",
    "metric_type",
    "metric_value",
    "task_name",
    "dataset_config",
    "dataset_split",
    "dataset_revision",
    "dataset_args",
    "metric_name",
    "metric_config",
    "metric_args",
    "verified",
    "verify_token",
    "source_name",
    "source_url",
)
_REQUIRED_FIELDS = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
# Card-only keys: shown in the human-readable table, kept out of `model-index`.
CARD_ONLY_FIELDS = ("ci_low", "ci_high", "n", "group", "seen", "confidence")


def _read_evaluation(results: Any) -> dict[str, Any]:
    """A `results.json` (path or dict) validated by the evaluation stage's contract."""
    if isinstance(results, (str, os.PathLike)):
        return results_schema.read_results(results)
    return check_schema(
        dict(results),
        schema=results_schema.SCHEMA,
        versions=(results_schema.SCHEMA_VERSION,),
        required=results_schema.REQUIRED,
        source="results (a dict)",
        rerun=results_schema.RERUN,
    )


def _is_evaluation(results: Mapping[str, Any]) -> bool:
    """A whole results.json of `recipes/evaluate.py` (any version: the reader checks which)."""
    return str(results.get("schema", "")).startswith(results_schema.SCHEMA)


def eval_results_for_model(
    results: Mapping[str, Any] | str | os.PathLike,
    model: str,
    metrics: Sequence[str] = ("top_1_accuracy", "top_5_accuracy", "p_true", "ece"),
    level: str = "group",
) -> list[dict[str, Any]]:
    """`huggingface_hub.EvalResult(**d)`-ready dicts of one model (its key or name).

    `results`: a `results.json` path or its contents. Clean, all corruptions, each group
    (`level="group"`) or each corruption (`level="corruption"`), the seen/unseen split of a
    fine-tuned model, and mCE. `metric_config` names the subset; `metric_args` carries the CI, n
    and the bootstrap settings.
    """
    results = _read_evaluation(results)
    entry = next((m for m in results["models"] if model in (m["key"], m["name"])), None)
    if entry is None:
        known = [m["name"] for m in results["models"]]
        raise ValueError(f"Model {model!r} is not in these results; known: {known}.")
    key = entry["key"]
    if level not in ("group", "corruption"):
        raise ValueError(f"level must be 'group' or 'corruption'; got {level!r}.")
    ds = results["dataset"]
    sev = results["grid"]["severities"]
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": ds.get("name"),
        "dataset_name": ds.get("pretty_name") or ds.get("name"),
        "dataset_config": ds.get("config"),
        "dataset_split": ds.get("split"),
    }
    settings = results["settings"]
    out: list[dict[str, Any]] = []
    for config, label, block, args in _subsets(results, key, level, sev):
        for metric in metrics:
            mtype, mname = _METRIC_TYPES[metric]
            out.append(
                {
                    **common,
                    "dataset_args": args or None,
                    "metric_type": mtype,
                    "metric_name": f"{mname} ({label})",
                    "metric_config": config,
                    "metric_value": round(float(block[metric]["value"]), 6),
                    "metric_args": {
                        **_ci_args(block[metric], settings),
                        "n_resamples": settings["n_resamples"],
                        "bootstrap_seed": settings["bootstrap_seed"],
                    },
                }
            )
    ce = results["corruption_error"]
    if key in ce.get("models", {}) and "mce" in ce["models"][key]:
        ref = ce["reference"]
        block = ce["models"][key]["mce"]
        out.append(
            {
                **common,
                "dataset_args": {"corruptions": ce["corruptions"], "severities": sev},
                "metric_type": "mce",
                "metric_name": f"mCE (reference: {'AlexNet' if ref == 'alexnet' else 'base model'})",
                "metric_config": f"mce_reference={ref}",
                "metric_value": round(float(block["value"]), 6),
                "metric_args": _ci_args(block, settings),
            }
        )
    return out


def _ci_args(block: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ci_low": block["ci_low"],
        "ci_high": block["ci_high"],
        "confidence": settings["confidence"],
        "n": block["n"],
    }


def _subsets(
    results: Mapping[str, Any], key: str, level: str, sev: list[int]
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(metric_config, label, metrics block, dataset_args) of each subset of one model."""
    subsets: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    for row in results["cells"]:
        if row["model"] == key and row["corruption"] == CLEAN:
            subsets.append(("clean", "clean", row["metrics"], {}))
    for row in results["all_corruptions"]:
        if row["model"] == key:
            subsets.append(("corrupted", "all corruptions", row["metrics"], {"severities": sev}))
    if level == "group":
        for row in results["per_group"]:
            if row["model"] == key:
                g = row["group"]
                args = {"group": g, "severities": sev}
                subsets.append((f"group={g}", f"{g} corruptions", row["metrics"], args))
    else:
        for row in results["per_corruption"]:
            if row["model"] == key:
                c = row["corruption"]
                args = {"corruption": c, "severities": sev}
                subsets.append((f"corruption={c}", c, row["metrics"], args))
    for row in results["per_family"]:
        if row["model"] == key:
            f = row["family"]
            args = {"corruptions": row["corruptions"], "severities": sev}
            subsets.append((f"{f}_corruptions", f"{f} corruptions", row["metrics"], args))
    return subsets


# ---------------------------------------------------------------------------------------------
# Card results


def load_results(
    results: Any, *, folder: str | os.PathLike | None = None, model: str | None = None
) -> dict[str, Any]:
    """Normalise card results: `None`, a path to a JSON file, a list of result dicts, or a dict.

    A dict (or the file a path names) is either the card format (`eval_results`, optional
    `transfer_matrix`, `definitions`) or a whole `results.json` of `recipes/evaluate.py`, read
    through `hf_vitrobust.evaluation.schema`; from the latter, the results of `model` (a name or
    key) or of the evaluated model that is the checkpoint `folder` are taken.

    Returns `{"eval_results": [dict, ...], "transfer_matrix": dict | None, "definitions": dict,
    "dataset": str | None, "base_model": str | None}`,
    with each result dict validated (required `EvalResult` fields, finite numeric value) and
    given its own `dataset_config` where the Hub would otherwise merge different subsets.
    """
    if results is None:
        return {
            "eval_results": [],
            "transfer_matrix": None,
            "definitions": {},
            "dataset": None,
            "base_model": None,
        }
    if isinstance(results, (str, os.PathLike)):
        data = read_input_json(results, "results")
        if isinstance(data, Mapping) and _is_evaluation(data):
            data = _read_evaluation(results)
        results = data
    if isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        results = {"eval_results": list(results)}
    if not isinstance(results, Mapping):
        raise CardInputError(
            f"results must be None, a path to results.json, a list or a dict; got "
            f"{type(results).__name__}."
        )
    if _is_evaluation(results):
        results = _from_evaluation(results, folder, model)
    entries = results.get("eval_results")
    if entries is None:
        raise CardInputError(
            "results has no 'eval_results' list (see docs/publishing.md); "
            f"its keys are {sorted(results)}."
        )
    checked = _separate_subsets([_check_result(entry, i) for i, entry in enumerate(entries)])
    transfer = results.get("transfer_matrix")
    if transfer is not None:
        _check_transfer(transfer)
    definitions = results.get("definitions") or {}
    if not isinstance(definitions, Mapping):
        raise CardInputError("results['definitions'] must be a mapping of name -> text.")
    dataset, base = results.get("dataset"), results.get("base_model")
    return {
        "eval_results": checked,
        "transfer_matrix": to_jsonable(transfer),
        "definitions": {str(k): str(v) for k, v in definitions.items()},
        "dataset": dataset if isinstance(dataset, str) else None,
        "base_model": base if isinstance(base, str) else None,
    }


def _pick_model(results: Mapping[str, Any], folder: Path | None, model: str | None) -> dict:
    models = list(results.get("models") or [])
    if model is not None:
        found = [m for m in models if model in (m.get("key"), m.get("name"))]
    else:
        found = []
        if folder is not None:
            here = folder.resolve()
            found = [m for m in models if Path(str(m.get("name"))).resolve() == here]
            if not found:
                found = [m for m in models if Path(str(m.get("name"))).name == here.name]
            if not found:
                robustness = read_config(folder).get("robustness")
                found = [m for m in models if robustness and m.get("robustness") == robustness]
        if not found:  # the one fine-tuned model, whatever its role (v3: adversarial, ...)
            found = [m for m in models if m.get("role") != "base"]
    if len(found) != 1:
        names = [m.get("name") for m in models]
        raise CardInputError(
            f"Cannot tell which evaluated model this card is for (models: {names}); pass "
            "results_model=<name> (recipes/push.py: --results_model)."
        )
    return found[0]


def _from_evaluation(results: Mapping[str, Any], folder: Any, model: str | None) -> dict:
    """Card results from a whole `results.json` of `recipes/evaluate.py`."""
    results = _read_evaluation(results)
    entry = _pick_model(results, Path(folder) if folder is not None else None, model)
    eval_results = eval_results_for_model(
        results, entry["key"], metrics=("top_1_accuracy", "top_5_accuracy")
    )
    ref = dataset_ref((results.get("dataset") or {}).get("name"))
    for item in eval_results:  # the model-index wants Hub dataset ids, and no local paths
        if ref is not None:
            item["dataset_type"] = ref.index_type
            if item["dataset_name"] == (results.get("dataset") or {}).get("name"):
                item["dataset_name"] = ref.index_name
    transfer = _changes_table(results, entry) or _transfer_row(results, entry)
    definitions = dict(results.get("definitions") or {})
    if results.get("corruption_note"):
        definitions["on_the_fly_corruptions"] = results["corruption_note"]
    dataset = (results.get("dataset") or {}).get("name")
    base = next((m["name"] for m in results["models"] if m.get("role") == "base"), None)
    return {
        "eval_results": eval_results,
        "transfer_matrix": transfer,
        "definitions": definitions,
        "dataset": dataset,
        "base_model": base,
    }


# Changes-table key -> comparison record field.
_CELL_FIELDS = {
    "values": "estimate",
    "ci_low": "ci_low",
    "ci_high": "ci_high",
    "p_value": "p_value",
}


# A comparison's reference role -> the row label of the card's changes table.
_REFERENCE_LABELS = {
    "base": "vs base model",
    "clean_control": "vs clean control",
    "random_view_control": "vs random-view control",
}


def _changes_table(results: Mapping[str, Any], entry: Mapping[str, Any]) -> dict | None:
    """The card's changes table from `results.json`'s comparison records (schema v3): one row
    per reference (the base, then the model's matched controls), one column per scope (clean,
    then each corruption group, "(seen)" when the model trained on it); top-1 accuracy, model
    minus reference, paired on the same images."""
    mine = [
        c
        for c in results.get("comparisons") or []
        if c.get("model") == entry["key"]
        and c.get("metric") == "top_1_accuracy"
        and (c.get("scope") == CLEAN or str(c.get("scope", "")).startswith("group:"))
    ]
    if not mine:
        return None
    names = {m["key"]: Path(str(m["name"])).name or m["key"] for m in results["models"]}
    rows: list[tuple[str, str]] = []
    columns: list[str] = []
    for c in mine:
        label = _REFERENCE_LABELS.get(c["reference_role"], f"vs {c['reference_role']}")
        if c["reference_role"] != "base":
            label += f" ({names.get(c['reference'], c['reference'])})"
        if (c["reference"], label) not in rows:
            rows.append((c["reference"], label))
        column = c["scope"].removeprefix("group:") + (" (seen)" if c.get("seen") else "")
        if column not in columns:
            columns.append(column)
    grid = {key: [[None] * len(columns) for _ in rows] for key in _CELL_FIELDS}
    for c in mine:
        i = [r for r, _ in rows].index(c["reference"])
        column = c["scope"].removeprefix("group:") + (" (seen)" if c.get("seen") else "")
        for key, field in _CELL_FIELDS.items():
            grid[key][i][columns.index(column)] = c.get(field)
    return {
        "metric": "top-1 accuracy",
        "rows": [label for _, label in rows],
        "columns": columns,
        **grid,
    }


# Changes-table key -> comparison record field.
_CELL_FIELDS = {
    "values": "estimate",
    "ci_low": "ci_low",
    "ci_high": "ci_high",
    "p_value": "p_value",
}


def _transfer_row(results: Mapping[str, Any], entry: Mapping[str, Any]) -> dict | None:
    """The model's row of `results.json`'s transfer matrix (versions without comparisons)."""
    transfer = results.get("transfer_matrix")
    if not transfer or entry["key"] not in (transfer.get("rows") or []):
        return None
    row = transfer["cells"][transfer["rows"].index(entry["key"])]
    return {
        "metric": str(transfer.get("metric", "top_1_accuracy")).replace("_", "-"),
        "rows": [_REFERENCE_LABELS["base"]],
        "columns": list(transfer["columns"]),
        **{key: [[cell.get(field) for cell in row]] for key, field in _CELL_FIELDS.items()},
    }


def _separate_subsets(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each subset its own `dataset_config` where the Hub would merge different ones.

    The Hub groups results by (task, dataset type, config, split) and keeps one set of dataset
    fields per group; results that share that key but differ in dataset name or args (e.g.
    corruption groups told apart only by `metric_config`) would lose their dataset args.
    """
    dataset_fields = ("dataset_name", "dataset_args", "task_name", "source_name", "source_url")
    group_key = ("task_type", "dataset_type", "dataset_config", "dataset_split", "dataset_revision")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(tuple(entry.get(k) for k in group_key), []).append(entry)
    for members in groups.values():
        first = members[0]
        if all(all(m.get(f) == first.get(f) for f in dataset_fields) for m in members):
            continue
        for m in members:
            subset = m.get("metric_config") or m.get("dataset_name")
            base = m.get("dataset_config")
            m["dataset_config"] = f"{base}/{subset}" if base else str(subset)
    return entries


def _check_result(entry: Any, index: int) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise CardInputError(f"eval_results[{index}] must be a dict, got {type(entry).__name__}.")
    missing = [key for key in _REQUIRED_FIELDS if entry.get(key) is None]
    if missing:
        raise CardInputError(
            f"eval_results[{index}] lacks {missing} (required: {list(_REQUIRED_FIELDS)})."
        )
    unknown = sorted(set(entry) - set(RESULT_FIELDS) - set(CARD_ONLY_FIELDS))
    if unknown:
        raise CardInputError(
            f"eval_results[{index}] has unknown keys {unknown}; allowed: EvalResult fields "
            f"{list(RESULT_FIELDS)} and card-only {list(CARD_ONLY_FIELDS)}."
        )
    value = to_jsonable(entry["metric_value"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CardInputError(
            f"eval_results[{index}]['metric_value'] must be a number, got {value!r}."
        )
    clean = {key: to_jsonable(entry[key]) for key in entry if entry[key] is not None}
    for key in ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_name"):
        if key in clean:
            clean[key] = one_line(clean[key])
    clean["metric_value"] = value
    _hide_local_paths(clean)
    return clean


def _hide_local_paths(entry: dict[str, Any]) -> None:
    """A row's local dataset paths as `dataset.type: local` and the folder name (in place)."""
    dataset_type = str(entry["dataset_type"])
    if dataset_type != LOCAL_DATASET_TYPE and looks_like_path(dataset_type):
        entry["dataset_type"] = LOCAL_DATASET_TYPE
        if str(entry["dataset_name"]) == dataset_type:
            entry["dataset_name"] = f"{local_name(dataset_type)} (local)"
    if looks_like_path(str(entry["dataset_name"])):
        entry["dataset_name"] = f"{local_name(str(entry['dataset_name']))} (local)"
    for key in ("dataset_args", "dataset_config", "dataset_revision"):
        if key in entry:
            entry[key] = public(entry[key])


def _check_transfer(transfer: Any) -> None:
    if not isinstance(transfer, Mapping):
        raise CardInputError("results['transfer_matrix'] must be a dict.")
    for key in ("rows", "columns", "values"):
        if key not in transfer:
            raise CardInputError(f"results['transfer_matrix'] lacks {key!r}.")
    shape = (len(transfer["rows"]), len(transfer["columns"]))
    for key in ("values", "ci_low", "ci_high", "p_value"):
        grid = transfer.get(key)
        if grid is None:
            continue
        if len(grid) != shape[0] or any(len(row) != shape[1] for row in grid):
            raise CardInputError(
                f"results['transfer_matrix'][{key!r}] must be {shape[0]}x{shape[1]} "
                "(rows x columns)."
            )


def eval_results_from_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    dataset_type: str,
    dataset_name: str | None = None,
    dataset_split: str | None = None,
    task_type: str = "image-classification",
) -> list[dict[str, Any]]:
    """Build `eval_results` dicts from simple rows.

    Each row: `group` ("clean" or a corruption group), `metric` ("top1"/"top5"/...), `value`,
    optional `ci_low`, `ci_high`, `n`, `seen`, `corruptions`, `severities`, `config` (the dataset's
    own config). Each group gets its own `dataset_config` so the Hub keeps them apart.
    """
    ref = dataset_ref(dataset_type)
    if ref is not None:
        dataset_name = dataset_name or ref.index_name
        dataset_type = ref.index_type
    out = []
    for row in rows:
        group = str(row["group"])
        base_config = row.get("config")
        if group == CLEAN:
            config = base_config or CLEAN
        else:
            config = f"{base_config}-corrupted-{group}" if base_config else f"corrupted-{group}"
        metric = str(row["metric"])
        k = re.fullmatch(r"top[-_]?(\d+)(?:_accuracy)?", metric)
        args: dict[str, Any] = {"corruption_group": group}
        if row.get("corruptions") is not None:
            args["corruptions"] = list(row["corruptions"])
        if row.get("severities") is not None:
            args["severities"] = list(row["severities"])
        result = {
            "task_type": task_type,
            "task_name": "Image Classification",
            "dataset_type": dataset_type,
            "dataset_name": f"{dataset_name or dataset_type} ({group})",
            "dataset_config": config,
            "dataset_split": dataset_split or row.get("split"),
            "dataset_args": args,
            "metric_type": "accuracy" if k else metric,
            "metric_name": f"Top-{k.group(1)} accuracy" if k else metric,
            "metric_value": row["value"],
        }
        if k:
            result["metric_args"] = {"k": int(k.group(1))}
        for key in CARD_ONLY_FIELDS:
            if row.get(key) is not None:
                result[key] = row[key]
        result["group"] = group
        out.append({k_: v for k_, v in result.items() if v is not None})
    return out


def eval_result_objects(entries: list[dict[str, Any]]) -> list[EvalResult]:
    """`EvalResult`s of validated rows (card-only keys dropped)."""
    return [EvalResult(**{key: e[key] for key in RESULT_FIELDS if key in e}) for e in entries]


__all__ = [
    "CARD_ONLY_FIELDS",
    "RESULT_FIELDS",
    "eval_result_objects",
    "eval_results_for_model",
    "eval_results_from_rows",
    "load_results",
]
