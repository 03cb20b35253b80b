"""What the card, model-index and push modules share: the input error, Hub ids, safe card text,
and reading a checkpoint's `config.json`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_vitrobust.formatting import fmt
from hf_vitrobust.io import StageOutputError, read_json

# Dataset names used by the recipes -> their Hub dataset ids (for `datasets:` and EvalResults).
DATASET_HUB_IDS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "imagenet-1k": "ILSVRC/imagenet-1k",
    "imagenet": "ILSVRC/imagenet-1k",
}

#: `owner/name` on the Hub.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
MISSING = "–"


class CardInputError(ValueError):
    """Bad input for a model card (results, figures, folder)."""


def inline(value: Any) -> str:
    """A user string made safe for one Markdown line or table cell (no newlines, pipes or HTML)."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def one_line(value: Any) -> str:
    """A user string for a YAML value: a single line (YAML quoting is left to the dumper)."""
    return " ".join(str(value).split())


def cell(value: Any, digits: int = 4) -> str:
    """A value as a card table cell: numbers via `formatting.fmt`, booleans as yes/no, lists and
    mappings joined, user strings made inert (`inline`), missing values as '–'."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt(value, digits, missing=MISSING)
    if isinstance(value, (list, tuple)):
        return ", ".join(inline(v) for v in value) if value else MISSING
    if isinstance(value, Mapping):
        return ", ".join(f"{inline(k)}={cell(v)}" for k, v in value.items()) if value else MISSING
    return inline(value)


def is_hub_id(name: Any) -> bool:
    """`owner/name` that is not also a local path."""
    return isinstance(name, str) and bool(HUB_ID.match(name)) and not Path(name).exists()


def read_input_json(path: str | os.PathLike, what: str) -> Any:
    """`io.read_json`, with its errors (missing file, bad JSON) raised as `CardInputError`."""
    try:
        return read_json(path, what)
    except StageOutputError as error:
        raise CardInputError(str(error)) from None


def require_folder(folder: str | os.PathLike, what: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise CardInputError(f"{what} {str(path)!r} is not a folder.")
    return path


def read_config(folder: Path) -> dict[str, Any]:
    """A checkpoint's `config.json` (written by `save_pretrained`)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CardInputError(
            f"{str(folder)!r} has no config.json: pass a folder written by `save_pretrained` "
            "(the trainer's output_dir)."
        )
    config = read_input_json(config_path, "checkpoint config")
    if not isinstance(config, dict):
        raise CardInputError(f"{str(config_path)!r} is not a JSON object.")
    return config
