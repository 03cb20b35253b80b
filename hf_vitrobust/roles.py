"""Which model is which in a comparison: base, controls and adversarial fine-tunes, and their keys.

A fine-tuned checkpoint says how it was trained in ``config.robustness`` (written by
``training``). From that record alone this module tells its role and pairs every adversarial
fine-tune with its controls — the same base, data, steps, optimizer and seed:

- ``clean_control``: fine-tuned on clean images only (``adversary: none``, no corruptions);
  separates "trained longer" from everything else.
- ``random_view_control``: one random corrupted view per image from the same corruptions, no
  worst-of selection (``adversary: random_view``, or ``worst_of_k`` with one view); separates
  "saw corruptions" from "adversarial selection".
- ``adversarial``: anything else that trained on corruptions or perturbations.

Layer 3: reads plain dicts; imports only ``configs`` (for the old key names) and ``io`` (which
model names are local paths).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, NamedTuple

from hf_vitrobust.configs import RENAMED_KEYS
from hf_vitrobust.io import looks_local

BASE = "base"
CLEAN_CONTROL = "clean_control"
RANDOM_VIEW_CONTROL = "random_view_control"
ADVERSARIAL = "adversarial"
ROLES = (BASE, CLEAN_CONTROL, RANDOM_VIEW_CONTROL, ADVERSARIAL)
CONTROL_ROLES = (CLEAN_CONTROL, RANDOM_VIEW_CONTROL)

# The facts that must agree for a control to be the control of an adversarial fine-tune
# (dotted keys look inside a nested record). A fact one side does not record matches anything.
_MATCH_KEYS = (
    "base_model",
    "base_model_sha256",
    "seed",
    "max_steps",
    "optimization",
    "dataset.name",
    "dataset.split",
)


#: Keys older checkpoints wrote into ``config.robustness``, renamed since.
OLD_ROBUSTNESS_KEYS = ("train_family", "eval_unseen_group")


def read_robustness(config: Any) -> dict[str, Any]:
    """A model's ``config.robustness`` (a config object or the dict) with old keys renamed.

    ``train_family`` -> ``corruptions`` and ``eval_unseen_group`` -> ``unseen_corruptions`` (as
    lists). ``{}`` for a model that has none (e.g. a base model).
    """
    value = config if isinstance(config, Mapping) else getattr(config, "robustness", None)
    if not isinstance(value, Mapping):
        return {}
    out = dict(value)
    for old in OLD_ROBUSTNESS_KEYS:
        if old in out:
            new, convert = RENAMED_KEYS[old]
            out.setdefault(new, convert(out.pop(old)))
    return out


def role_of(robustness: Mapping[str, Any] | None) -> str:
    """The role of a model from its ``config.robustness`` (``None``: a model never fine-tuned here)."""
    if not robustness:
        return BASE
    adversary = str(robustness.get("adversary") or "none")
    corruptions = robustness.get("train_corruptions") or []
    if adversary == "none":
        return CLEAN_CONTROL if not corruptions else RANDOM_VIEW_CONTROL
    if adversary == "random_view" or (
        adversary == "worst_of_k" and int(robustness.get("num_views") or 0) == 1
    ):
        return RANDOM_VIEW_CONTROL
    return ADVERSARIAL


@dataclass(frozen=True)
class Controls:
    """The controls of one adversarial fine-tune (keys; ``None`` when the study has none)."""

    clean: str | None
    random_view: str | None

    @property
    def primary(self) -> str | None:
        """The control claims are judged against: the clean one (same training, no corruptions)."""
        return self.clean


def _fact(record: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        record = record.get(part) if isinstance(record, Mapping) else None
    return record


def _agree(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    pairs = ((_fact(a, k), _fact(b, k)) for k in _MATCH_KEYS)
    return all(x is None or y is None or x == y for x, y in pairs)


def match_controls(
    robustness_by_key: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, Controls]:
    """``{adversarial key: Controls}`` for every adversarial model among ``robustness_by_key``.

    A clean control matches when base model, seed and steps agree (where recorded); a
    random-view control must also have trained on the same corruptions. The first match in
    the given order wins.
    """
    roles = {key: role_of(r) for key, r in robustness_by_key.items()}
    out: dict[str, Controls] = {}
    for key, role in roles.items():
        if role != ADVERSARIAL:
            continue
        mine = robustness_by_key[key] or {}
        clean = random_view = None
        for other, other_role in roles.items():
            theirs = robustness_by_key[other] or {}
            if other_role == CLEAN_CONTROL and clean is None and _agree(mine, theirs):
                clean = other
            if (
                other_role == RANDOM_VIEW_CONTROL
                and random_view is None
                and _agree(mine, theirs)
                and sorted(theirs.get("train_corruptions") or [])
                == sorted(mine.get("train_corruptions") or [])
            ):
                random_view = other
        out[key] = Controls(clean=clean, random_view=random_view)
    return out


class Pair(NamedTuple):
    """One paired comparison: ``model`` minus ``reference`` (model keys), and the reference's
    role (``base``, ``clean_control`` or ``random_view_control``)."""

    model: str
    reference: str
    reference_role: str


def comparison_pairs(
    robustness_by_key: Mapping[str, Mapping[str, Any] | None], base: str = BASE
) -> list[Pair]:
    """Every comparison of a study, the one pairing every stage uses, in the given model order.

    ``robustness_by_key``: each fine-tuned model's ``config.robustness`` (``None`` or ``{}`` for
    a fine-tune that records none). Every fine-tuned model is compared with ``base``; an
    adversarial one also with its clean control, then its random-view control, when the study
    has them (``match_controls``).
    """
    controls = match_controls(robustness_by_key)
    pairs = []
    for key in robustness_by_key:
        pairs.append(Pair(key, base, BASE))
        matched = controls.get(key)
        if matched is None:
            continue
        for reference, role in (
            (matched.clean, CLEAN_CONTROL),
            (matched.random_view, RANDOM_VIEW_CONTROL),
        ):
            if reference is not None:
                pairs.append(Pair(key, reference, role))
    return pairs


def _is_local(name: str) -> bool:
    return looks_local(name) or Path(name).expanduser().exists()


def check_listed_once(names: Sequence[str]) -> None:
    """Raise a ValueError naming both spellings when one model is listed twice: local paths are
    compared resolved (``/x/a/final`` and ``/x/a/final/``, ``./a`` and ``a`` are one folder),
    Hub ids as given."""
    first: dict[str, str] = {}
    for name in map(str, names):
        same = str(Path(name).expanduser().resolve()) if _is_local(name) else name
        if same in first:
            raise ValueError(
                f"One model is listed twice: {first[same]!r} and {name!r} ({same}). List each "
                "model once."
            )
        first[same] = name


def _key_parts(name: str) -> tuple[str, ...]:
    """The components a path key is a suffix of: a local path's absolute, normalised ones (so
    ``./base`` and ``../x/final`` can be told apart by their folders), a Hub id's as given."""
    if _is_local(name):
        name = os.path.normpath(os.path.abspath(os.path.expanduser(name)))
    return PurePath(name.rstrip("/")).parts or (name,)


def model_keys(paths: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
    """Unique, readable keys for fine-tuned models: ``names`` when given, else path suffixes.

    Two checkpoints that share a folder name (``runA/final``, ``runB/final``) get the shortest
    path suffixes that tell them apart, never the same key; ``"base"`` is the base model's, so a
    fine-tune in a folder named ``base`` gets a longer suffix (``exp1/base``). A model listed
    twice, however spelled, is an error (`check_listed_once`).
    """
    check_listed_once(paths)
    if names:
        if len(names) != len(paths):
            raise ValueError(f"finetuned_names has {len(names)} names for {len(paths)} models.")
        keys = [str(n) for n in names]
    else:
        parts = [_key_parts(str(p)) for p in paths]
        depth = [1] * len(paths)
        while True:
            keys = ["/".join(pp[-d:]) for pp, d in zip(parts, depth)]
            clashes = [
                i
                for i, k in enumerate(keys)
                if (keys.count(k) > 1 or k == BASE) and depth[i] < len(parts[i])
            ]
            if not clashes:
                break
            for i in clashes:
                depth[i] += 1
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(
            f"model keys {duplicates} are not unique; give finetuned_names to tell them apart."
        )
    if BASE in keys:
        raise ValueError(f"{BASE!r} is reserved for the base model; rename that fine-tuned model.")
    return keys


__all__ = [
    "ADVERSARIAL",
    "BASE",
    "CLEAN_CONTROL",
    "CONTROL_ROLES",
    "Controls",
    "Pair",
    "RANDOM_VIEW_CONTROL",
    "ROLES",
    "check_listed_once",
    "comparison_pairs",
    "match_controls",
    "read_robustness",
    "model_keys",
    "role_of",
]
