"""Where a checkpoint came from, as a card shows it: base model, dataset, how it was trained.

Everything is read from the checkpoint's `config.robustness` (through `roles.read_robustness`
and `roles.role_of`). Local paths never reach a card: a local dataset or model is shown as
"local (<folder name>)", and the model-index gets `dataset.type: local` for it (a Hub id
otherwise), so a card pushed from `/home/someone/photos` does not publish that path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from hf_vitrobust.corruptions import FAMILY_DEFINITIONS, family_definition
from hf_vitrobust.hub.common import DATASET_HUB_IDS, HUB_ID, MISSING, cell, inline
from hf_vitrobust.roles import (
    ADVERSARIAL,
    BASE,
    CLEAN_CONTROL,
    RANDOM_VIEW_CONTROL,
    role_of,
)

#: model-index `dataset.type` of data that is not on the Hub.
LOCAL_DATASET_TYPE = "local"
#: How the trainer and the evaluation name a local folder (`data.source_label`): never its path.
LOCAL_PREFIX = "local:"
#: `config.robustness["base_model"]` of a model built from `model_config` (trained from scratch).
FROM_SCRATCH = "model_config"
NOT_RECORDED = "not recorded"
# A folder named like a split says little on its own: show its parent too ("photos/train").
_SPLIT_FOLDERS = {"train", "test", "val", "valid", "validation", "eval", "dev", "data"}
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
# Keys of a recorded dataset dict that hold a location, never shown.
_PATH_KEYS = ("path", "data_dir", "data_files", "folder", "local_path", "cache_dir")
_NAME_KEYS = ("hub_id", "repo_id", "id", "name", "dataset_name", *_PATH_KEYS)


def looks_like_path(text: str) -> bool:
    """A local file-system path (or a `local:<name>` label) rather than a Hub id or a name."""
    if text.startswith(("/", "./", "../", "~", "\\", LOCAL_PREFIX)) or _WINDOWS_DRIVE.match(text):
        return True
    if "\\" in text or text.count("/") > 1:
        return True
    return Path(text).expanduser().exists()


def local_name(path: str) -> str:
    """The folder name of a local path (with its parent when the folder is a split's)."""
    path = path.removeprefix(LOCAL_PREFIX)
    parts = [p for p in PurePath(path.replace("\\", "/")).parts if p not in ("/", ".", "..")]
    if not parts:
        return "."
    if len(parts) > 1 and parts[-1].lower() in _SPLIT_FOLDERS:
        return "/".join(parts[-2:])
    return parts[-1]


def public(value: Any) -> Any:
    """`value` with every local path replaced by "local (<folder name>)" (lists and dicts too)."""
    if isinstance(value, str):
        return f"local ({local_name(value)})" if looks_like_path(value) else value
    if isinstance(value, Mapping):
        return {k: public(v) for k, v in value.items() if k not in _PATH_KEYS}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as a card shows it."""

    text: str  # for people: a Hub id, a recipe name, or "local (<folder>)"
    hub_id: str | None  # for the card's `datasets:` metadata (None: not on the Hub)
    index_type: str  # model-index `dataset.type`: the Hub id / name, or "local"
    index_name: str  # model-index `dataset.name`
    description: str | None = None  # how the examples were selected (a sentence)
    details: tuple[tuple[str, Any], ...] = ()  # split, per-class counts, ... (no paths)


# Keys of a recorded dataset shown otherwise (the name, the description) or implied by the text.
_NOT_DETAILS = {*_NAME_KEYS, "description", "rule", "which", "dataset", "local", "kind"}


def dataset_ref(value: Any) -> DatasetRef | None:
    """How a recorded dataset is shown: a name (`fashion_mnist`), a Hub id, a local path or
    `local:<folder>` label, or the dict the trainer records (`training.run.dataset_provenance`:
    `name`, `source` hub | local | debian_idx_files, `split`, the selection rule and counts)."""
    if value is None or value == "" or value == {}:
        return None
    details: dict[str, Any] = {}
    description = None
    local = False
    if isinstance(value, Mapping):
        name = next((value[k] for k in _NAME_KEYS if value.get(k)), None)
        source = str(value.get("source") or value.get("kind") or "").lower()
        local = source in ("local", "folder", "imagefolder", "files") or bool(value.get("local"))
        description = value.get("description")
        details = {
            str(k): public(v)
            for k, v in value.items()
            if k not in _NOT_DETAILS
            and not (k == "source" and source in ("hub", "local"))
            and v is not None
            and v is not False
        }
        if name is None:
            return None
    else:
        name = value
    name = str(name)
    extra = {"description": str(description) if description else None}
    extra["details"] = tuple(details.items())
    if local or looks_like_path(name):
        folder = local_name(name)
        return DatasetRef(
            f"local ({folder})", None, LOCAL_DATASET_TYPE, f"{folder} (local)", **extra
        )
    hub_id = DATASET_HUB_IDS.get(name, name)
    hub_id = hub_id if HUB_ID.match(hub_id) else None
    shown = hub_id or name
    return DatasetRef(shown, hub_id, shown, shown, **extra)


def model_text(name: Any) -> str | None:
    """A base model as a card shows it: its Hub id, or "local (<folder>)" for a local folder
    (a path or the trainer's `local:<folder>` label)."""
    if not name:
        return None
    return str(public(str(name)))


# ---------------------------------------------------------------------------------------------
# How the model was trained


def training_role(robustness: Mapping[str, Any]) -> str:
    """`roles.role_of`, plus "scratch" for a clean run that started from no base model (a model
    built from `model_config`, e.g. the demo's base)."""
    role = role_of(robustness)
    base = robustness.get("base_model")
    if role == CLEAN_CONTROL and (
        base == FROM_SCRATCH or (not base and "model_config" in robustness)
    ):
        return "scratch"
    return role


ROLE_NAMES = {
    ADVERSARIAL: "adversarial fine-tune",
    CLEAN_CONTROL: "clean control (clean fine-tuning)",
    RANDOM_VIEW_CONTROL: "random-view control",
    "scratch": "trained from scratch (clean images)",
    BASE: "not fine-tuned here (no config.robustness)",
}


def training_summary(robustness: Mapping[str, Any], base_text: str | None) -> str:
    """The card's opening paragraph: what kind of training made this model."""
    role = training_role(robustness)
    start = f"starting from {base_text}" if base_text else "from a base model that is not recorded"
    corruptions = cell(robustness.get("train_corruptions") or robustness.get("corruptions"))
    if role == ADVERSARIAL:
        return (
            f"A ViT image classifier fine-tuned adversarially against image corruptions with "
            f"hf_vitrobust, {start}. At every training step the trainer picks, for each image, "
            "the corruption (and/or PGD perturbation) that hurts the current model most, and "
            "trains on it."
        )
    if role == RANDOM_VIEW_CONTROL:
        return (
            f"A random-view control, fine-tuned with hf_vitrobust {start}: each training image "
            f"gets one randomly drawn corrupted view (from {corruptions}), with no worst-of "
            "selection. With the same base, data, steps, optimizer and seed as an adversarial "
            'fine-tune, it separates "saw corruptions" from "adversarial selection".'
        )
    if role == CLEAN_CONTROL:
        return (
            f"Clean fine-tuning with hf_vitrobust, {start}: clean images only, no corruptions "
            "and no adversary. It is the clean control of adversarial fine-tunes with the same "
            'base, data, steps, optimizer and seed: it separates "trained longer" from the '
            "effect of corruptions."
        )
    if role == "scratch":
        return (
            "A ViT image classifier trained from scratch with hf_vitrobust on clean images (no "
            "corruptions, no adversary); the adversarial fine-tunes and controls start from it."
        )
    return f"A ViT image classifier ({start}); its config records no hf_vitrobust training."


# config.robustness keys shown in their own rows (or deliberately not at all).
_OWN_ROWS = {
    "base_model",
    "dataset",
    "adversary",
    "corruptions",
    "train_corruptions",
    "severities",
    "k",
    "num_views",
    "pgd",
    "max_steps",
    "steps",
    "seed",
    "registry_version",
    "run_name",
    "model_config",
    "base_model_sha256",
}


def _recorded(robustness: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` that the checkpoint records (a recorded 0 or [] counts)."""
    for key in keys:
        if robustness.get(key) is not None:
            return robustness[key]
    return None


def _data_cell(dataset: DatasetRef | None) -> str:
    if dataset is None:
        return NOT_RECORDED
    text = inline(dataset.text)
    if dataset.description:
        text += f": {inline(dataset.description)}"
    if dataset.details:
        text += " (" + ", ".join(f"{inline(k)}={cell(v)}" for k, v in dataset.details) + ")"
    return text


def _family_definition(robustness: Mapping[str, Any]) -> str | None:
    """Which meaning of low/high frequency the recorded family follows, in words."""
    spec = robustness.get("corruptions")
    if not spec:
        return None
    key = family_definition([spec] if isinstance(spec, str) else list(spec))
    return f"{key}: {FAMILY_DEFINITIONS[key]}"


def recipe_rows(
    robustness: Mapping[str, Any],
    base_text: str | None,
    dataset: DatasetRef | None,
    trainer_state: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """The card's "Training recipe" table: (setting, value) rows, values card-safe.

    "not recorded" means the checkpoint does not record it; a clean run shows its corruptions
    as "none (clean images)" and has no severity, views or PGD rows.
    """
    role = training_role(robustness)
    pgd = dict(robustness.get("pgd") or {})
    pgd.update({k[len("pgd_") :]: v for k, v in robustness.items() if k.startswith("pgd_")})
    clean = role in (CLEAN_CONTROL, "scratch")
    steps = _recorded(robustness, "max_steps", "steps")
    if steps is None:
        steps = trainer_state.get("max_steps") or trainer_state.get("global_step")
    rows: list[tuple[str, Any]] = [
        ("Role", ROLE_NAMES.get(role, role)),
        ("Base model", "none (trained from scratch)" if role == "scratch" else base_text),
        ("Base model weights (sha256)", robustness.get("base_model_sha256")),
        ("Training data", _data_cell(dataset)),
        ("Adversary", _recorded(robustness, "adversary")),
    ]
    if clean:
        rows.append(("Training corruptions", "none (clean images)"))
    else:
        rows += [
            ("Training family", _recorded(robustness, "corruptions")),
            ("Family definition", _family_definition(robustness)),
            ("Training corruptions", _recorded(robustness, "train_corruptions")),
            ("Severities", _recorded(robustness, "severities")),
            ("Views per image", _recorded(robustness, "num_views", "k")),
        ]
        if pgd:
            rows.append(("PGD settings", pgd))
    rows += [
        ("Steps", steps),
        ("Seed", _recorded(robustness, "seed")),
        ("Corruption registry version", _recorded(robustness, "registry_version")),
    ]
    if robustness.get("model_config"):
        rows.append(("Model config", robustness["model_config"]))
    if robustness.get("base_model_sha256") is None:
        rows = [row for row in rows if row[0] != "Base model weights (sha256)"]
    # Whatever else the trainer recorded is shown too, so the card never hides a setting.
    rows += [
        (str(key).replace("_", " ").capitalize(), public(value))
        for key, value in robustness.items()
        if key not in _OWN_ROWS and not key.startswith("pgd_")
    ]
    out = []
    for name, value in rows:
        if name == "Training data":
            out.append((name, value))
        else:
            out.append((inline(name), NOT_RECORDED if value is None else cell(value)))
    return [(name, value or MISSING) for name, value in out]


__all__ = [
    "FROM_SCRATCH",
    "LOCAL_DATASET_TYPE",
    "LOCAL_PREFIX",
    "NOT_RECORDED",
    "DatasetRef",
    "dataset_ref",
    "local_name",
    "looks_like_path",
    "model_text",
    "public",
    "recipe_rows",
    "training_role",
    "training_summary",
]
