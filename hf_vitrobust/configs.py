"""Argument dataclasses shared by the recipe scripts, and ``parse_recipe`` (YAML, then CLI).

One name per concept across every recipe: ``corruptions`` (a list of family or corruption
names), ``severities`` (a list of ints), ``base_model`` + ``finetuned_models``. Stage-specific
arguments live beside their stage (``training.config``, ``evaluation``, ``analysis``, ...) and
extend these classes instead of copying their fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.models import check_model_config


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

    def __post_init__(self) -> None:
        # Checked when the recipe is parsed, before any data or model is loaded.
        if self.model_config and self.model_name_or_path:
            raise ValueError(
                f"model_name_or_path ({self.model_name_or_path!r}) and model_config are both "
                "set; give one: model_name_or_path to start from a checkpoint, model_config to "
                "build a fresh model."
            )
        if self.model_config:
            check_model_config(self.model_config)


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
    max_train_examples: int | None = field(
        default=None,
        metadata={
            "help": "Use a seeded class-stratified random sample of this many training examples "
            "(streams: the first N out of the shuffle buffer); never the first N rows."
        },
    )
    max_eval_examples: int | None = field(
        default=None,
        metadata={"help": "As max_train_examples, for the evaluation split."},
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={
            "help": "Undecodable images are skipped and counted once each (unique example ids); "
            "above this fraction of the unique images seen the run stops (checked from 1000 "
            "images on, and on the whole run after the model is saved)."
        },
    )
    subset_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the random (class-stratified where labels are known) subset that "
            "max_train_examples / max_eval_examples select, and of stream shuffling."
        },
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={
            "help": "Examples in the shuffle buffer of a streamed training set (reshuffled every "
            "epoch) and of a streamed subset; 0 turns shuffling off. The buffer holds undecoded "
            "images in every DataLoader worker (ImageNet: ~1 GB per worker at 10,000)."
        },
    )


@dataclass
class ComparisonArguments:
    """What the comparison stages (evaluation, analysis, SAEs) compare, and on which images.

    The corrupted image for (``seed``, image, corruption, severity) is the same in all three
    stages (``hf_vitrobust.seeding.image_seed``), so their per-image results can be joined.
    """

    base_model: str = field(
        default="", metadata={"help": "Hub id or local folder of the base ViT classifier."}
    )
    finetuned_models: list[str] = field(
        default_factory=list,
        metadata={"help": "Hub ids or local folders of the fine-tuned models to compare."},
    )
    finetuned_names: list[str] = field(
        default_factory=list,
        metadata={"help": "Display names of the fine-tuned models (default: from their paths)."},
    )
    corruptions: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": "Family names (e.g. all, imagenet_c, blur) and/or corruption names."},
    )
    severities: list[int] = field(
        default_factory=lambda: list(SEVERITIES),
        metadata={"help": "ImageNet-C severities (1..5)."},
    )
    seed: int = field(default=0, metadata={"help": "Corruption and bootstrap seed."})
    n_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples (>= 1000)."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the CIs."})
    batch_size: int = field(default=128, metadata={"help": "Images per forward pass."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for decoding."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


# ---------------------------------------------------------------------------------------------
# Old recipe keys, accepted for one release with a FutureWarning
# ---------------------------------------------------------------------------------------------


def name_list(values: Any) -> list[Any]:
    """A recipe's list value: comma strings split (inside lists too), blanks and ``none`` (any
    case: "no corruptions") dropped; None is ``[]`` and any other scalar a one-item list."""
    items = (
        list(values) if isinstance(values, (list, tuple)) else [] if values is None else [values]
    )
    out: list[Any] = []
    for item in items:
        if not isinstance(item, str):
            out.append(item)
            continue
        parts = (part.strip() for part in item.split(","))
        out.extend(part for part in parts if part and part.lower() != "none")
    return out


#: old key -> (new key, converter of the old value). Applied only when the recipe's dataclasses
#: do not know the old key and do know the new one.
RENAMED_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "train_family": ("corruptions", name_list),
    "eval_unseen_group": ("unseen_corruptions", name_list),
    "groups": ("corruptions", name_list),
    "severity": ("severities", name_list),
    "eval_severity": ("severities", name_list),
    "eval_corruption_family": ("corruptions", name_list),
    "train_corruption_family": ("train_corruptions", name_list),
    "image_batch_size": ("batch_size", int),
}
REMOVED_IN = "0.3"


def _split_models(value: Any) -> dict[str, Any]:
    models = name_list(value)
    if not models:
        raise ValueError("'models' (deprecated) needs at least the base model.")
    return {"base_model": models[0], "finetuned_models": models[1:]}


def _rename_deprecated(values: dict[str, Any], known: set[str], where: str) -> dict[str, Any]:
    out = dict(values)
    if "models" in out and "models" not in known and {"base_model", "finetuned_models"} <= known:
        warnings.warn(
            f"{where}: 'models' is deprecated and will be removed in {REMOVED_IN}; write "
            "'base_model' and 'finetuned_models'.",
            FutureWarning,
            stacklevel=3,
        )
        out.update(_split_models(out.pop("models")))
    for old, (new, convert) in RENAMED_KEYS.items():
        if old in out and old not in known and new in known:
            if new in out:
                raise ValueError(f"{where}: give {new!r} only, not also the deprecated {old!r}.")
            warnings.warn(
                f"{where}: {old!r} is deprecated and will be removed in {REMOVED_IN}; write "
                f"{new!r} instead.",
                FutureWarning,
                stacklevel=3,
            )
            out[new] = convert(out.pop(old))
    return out


def _unknown_key_error(keys: Sequence[str], known: set[str], where: str) -> ValueError:
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        parts.append(
            f"{key!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
        )
    return ValueError(f"{where} has unknown key(s) {', '.join(parts)}.")


def _list_fields(dataclass_types: Sequence[type]) -> set[str]:
    names = set()
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name)
            args = typing.get_args(hint) if typing.get_origin(hint) is not list else (hint,)
            if typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in args):
                names.add(f.name)
    return names


def _cli_to_mapping(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Pull ``--old value ...`` flags of renamed keys out of argv (``--a=b`` too)."""
    renamed = set(RENAMED_KEYS) | {"models"}
    taken: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        name = name.replace("-", "_")
        if name in renamed:
            values = [inline] if eq else []
            i += 1
            while not eq and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            taken[name] = values
            continue
        rest.append(token)
        i += 1
    return taken, rest


def parse_recipe(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse dataclasses from ``[recipe.yaml] [--flag value ...]``; CLI flags override the YAML.

    Unknown keys are an error with "did you mean"; the old names in ``RENAMED_KEYS`` still work
    for one release, with a FutureWarning naming the new key.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    known = {action.dest for action in parser._actions} - {"help"}
    list_fields = _list_fields(dataclass_types)
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe = Path(argv.pop(0))
        if not recipe.is_file():
            raise FileNotFoundError(f"Recipe {str(recipe)!r} does not exist.")
        values = yaml.safe_load(recipe.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"Recipe {str(recipe)!r} must be a YAML mapping of argument names.")
        values = _rename_deprecated(values, known, f"Recipe {str(recipe)!r}")
        unknown = sorted(set(values) - known)
        if unknown:
            raise _unknown_key_error(unknown, known, f"Recipe {str(recipe)!r}")
        # A scalar given for a list field is a one-element (or comma-separated) list.
        values = {
            k: name_list(v) if k in list_fields and not isinstance(v, list) else v
            for k, v in values.items()
        }
        parser.set_defaults(**values)
        # A value given in the YAML satisfies a required flag.
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    old_flags, argv = _cli_to_mapping(argv)
    if old_flags:
        cli = {k: v if len(v) != 1 else v[0] for k, v in old_flags.items()}
        for key, value in _rename_deprecated(cli, known, "Command line").items():
            argv += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if remaining:
        flags = [r[2:].split("=")[0].replace("-", "_") for r in remaining if r.startswith("--")]
        raise _unknown_key_error(flags or remaining, known, "Command line")
    return tuple(parsed)


__all__ = [
    "ComparisonArguments",
    "DataArguments",
    "ModelArguments",
    "RENAMED_KEYS",
    "name_list",
    "parse_recipe",
]
