"""Dataclass arguments shared by the recipe scripts, parsed from YAML and/or CLI flags."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    """Which ViT to start from: a Hub id, a local checkpoint folder, or a tiny local config."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of a ViTForImageClassification checkpoint."},
    )
    model_config: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Build a fresh ViT locally from these ViTConfig fields (e.g. a tiny model); "
            "used when model_name_or_path is not given."
        },
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "'sdpa' for training/evaluation, 'eager' for analysis."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Never needed for ViT; off by default."}
    )


@dataclass
class DataArguments:
    """Which images to use: a Hub id (streamed), a local folder/files, or `fashion_mnist`."""

    dataset_name: str = field(
        default="ILSVRC/imagenet-1k",
        metadata={
            "help": "Hub id, local imagefolder, parquet/arrow file(s), or 'fashion_mnist' "
            "(Debian's IDX files)."
        },
    )
    dataset_config_name: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str = field(default="validation")
    image_column: str = field(default="image")
    label_column: str = field(default="label")
    streaming: bool | None = field(
        default=None, metadata={"help": "Stream the dataset; default: True for Hub ids."}
    )
    max_train_examples: int | None = field(default=None)
    max_eval_examples: int | None = field(default=None)
    max_bad_fraction: float = field(
        default=0.01,
        metadata={
            "help": "Undecodable images are skipped and counted; above this fraction the run stops."
        },
    )


def parse_recipe(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse dataclasses from `[recipe.yaml] [--flag value ...]`; CLI flags override the YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe = Path(argv.pop(0))
        if not recipe.is_file():
            raise FileNotFoundError(f"Recipe {str(recipe)!r} does not exist.")
        values = yaml.safe_load(recipe.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"Recipe {str(recipe)!r} must be a YAML mapping of argument names.")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Recipe {str(recipe)!r} has unknown keys {unknown}.")
        parser.set_defaults(**values)
        # A value given in the YAML satisfies a required flag.
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    return parser.parse_args_into_dataclasses(args=argv)
