"""The models under evaluation: keys, roles, controls, labels, devices.

Every model has a unique key (``roles.model_keys``: ``"base"`` for the base model, readable path
suffixes or ``finetuned_names`` for the others, so two checkpoints both named ``final`` become
``runA/final`` and ``runB/final``), a role read from its own ``config.robustness``
(``roles.role_of``; never from the order or the folder name) and, for an adversarial
fine-tune, its matched controls (``roles.match_controls``). The base model is the one marked
``base=True`` (``load_eval_models`` marks its ``base_model``), else the only model without a
``config.robustness`` (``base_of``); never the first in a list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_vitrobust import roles
from hf_vitrobust.configs import ModelArguments
from hf_vitrobust.corruptions import resolve_corruptions
from hf_vitrobust.data import check_labels
from hf_vitrobust.distributed import process_state
from hf_vitrobust.models import load_model_and_processor

logger = logging.getLogger(__name__)

#: The role of a fine-tuned model whose checkpoint has no ``config.robustness`` (trained
#: elsewhere): compared with the base only, with no seen corruptions and no controls.
UNRECORDED = "fine_tuned"


@dataclass
class EvalModel:
    """A model under evaluation: its name (Hub id or path), the model, and its processor.

    `key` names its cells and its rows in results.json (default: assigned by `assign_keys`);
    `label` is its display name (default: the key, or the base model's folder name or Hub id);
    `base` marks the base model (see `base_of`).
    """

    name: str
    model: Any
    processor: Any
    key: str = ""
    label: str = ""
    base: bool = False

    @property
    def robustness(self) -> dict[str, Any] | None:
        """`config.robustness` with old keys renamed and `train_corruptions` resolved; None
        when the checkpoint has none."""
        rob = roles.read_robustness(self.model.config)
        if not rob:
            return None
        if not rob.get("train_corruptions") and rob.get("corruptions"):
            rob["train_corruptions"] = list(resolve_corruptions(rob["corruptions"]))
        return rob

    def seen_corruptions(self) -> tuple[str, ...]:
        """Corruptions this model was fine-tuned on (`config.robustness`), () for a base model."""
        rob = self.robustness or {}
        return tuple(rob.get("train_corruptions") or ())


def _candidates(models: Sequence[EvalModel]) -> list[EvalModel]:
    marked = [m for m in models if m.base]
    if len(marked) > 1:
        raise ValueError(f"Only one model can be the base; marked: {[m.name for m in marked]}.")
    return marked or [m for m in models if roles.role_of(m.robustness) == roles.BASE]


def base_of(models: Sequence[EvalModel]) -> EvalModel:
    """The base model: the one marked ``base=True``, else the only model whose checkpoint has
    no ``config.robustness`` (``roles.role_of`` calls it the base). Never chosen by position."""
    if not models:
        raise ValueError("No models to evaluate.")
    found = _candidates(models)
    if len(found) != 1:
        raise ValueError(
            f"Cannot tell the base model from config.robustness ({len(found)} of the models "
            "have none): mark it with EvalModel(..., base=True), or load the models with "
            "load_eval_models(base_model, finetuned_models)."
        )
    return found[0]


def base_first(models: Sequence[EvalModel]) -> list[EvalModel]:
    """The models with the base (`base_of`) first, the others in their given order."""
    base = base_of(models)
    return [base, *(m for m in models if m is not base)]


def assign_keys(models: Sequence[EvalModel]) -> None:
    """Give keyless models their keys (`roles.model_keys`) and labels; keys must be unique.

    The base model (`base_of`) is keyed ``"base"`` unless it has a key; when the models do not
    tell their base (the grid alone needs none), every keyless model gets a path key.
    """
    if not models:
        raise ValueError("No models to evaluate.")
    found = _candidates(models)
    base = found[0] if len(found) == 1 else None
    if base is not None and not base.key:
        base.key = roles.BASE
    keyless = [m for m in models if not m.key]
    for m, key in zip(keyless, roles.model_keys([m.name for m in keyless])):
        m.key = key
    keys = [m.key for m in models]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Model keys must be unique; got {keys}. Give finetuned_names.")
    for m in models:
        if not m.label:
            m.label = (Path(m.name.rstrip("/")).name or m.name) if m is base else m.key


def model_roles(models: Sequence[EvalModel]) -> dict[str, str]:
    """Model key -> role: ``base`` for the base model (`base_of`), else
    `roles.role_of(config.robustness)` (`UNRECORDED` for a fine-tuned checkpoint without one)."""
    base = base_of(models)
    out = {}
    for m in models:
        rob = m.robustness
        out[m.key] = roles.BASE if m is base else roles.role_of(rob) if rob else UNRECORDED
    return out


def model_controls(models: Sequence[EvalModel]) -> dict[str, roles.Controls]:
    """Adversarial model key -> its matched controls among the fine-tuned models."""
    base = base_of(models)
    return roles.match_controls(
        {m.key: m.robustness for m in models if m is not base and m.robustness}
    )


def load_eval_models(
    base_model: str,
    finetuned_models: Sequence[str] = (),
    finetuned_names: Sequence[str] = (),
    *,
    attn_implementation: str = "sdpa",
    device: str | None = None,
) -> list[EvalModel]:
    """Load the base model, then each fine-tuned one, as saved (own head and id2label).

    Returns them base first, the base marked ``base=True``, keyed by
    `roles.model_keys(finetuned_models, finetuned_names)`. Models stay on the CPU unless
    `device` is given (the grid moves them).
    """
    names = [base_model, *finetuned_models]
    if not base_model:
        raise ValueError("No base model given: set base_model (and finetuned_models).")
    roles.check_listed_once(names)
    if finetuned_names and len(finetuned_names) != len(finetuned_models):
        raise ValueError(
            f"finetuned_names has {len(finetuned_names)} names for "
            f"{len(finetuned_models)} finetuned_models."
        )
    keys = [roles.BASE, *roles.model_keys(list(finetuned_models), list(finetuned_names) or None)]
    out = []
    for name, key in zip(names, keys):
        model, processor = load_model_and_processor(
            ModelArguments(model_name_or_path=name, attn_implementation=attn_implementation)
        )
        model = model.eval()
        if device:
            model = model.to(resolve_device(device))
        out.append(EvalModel(name=name, model=model, processor=processor, key=key, base=not out))
    assign_keys(out)
    return out


def _model_label_names(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(int(config.num_labels))]


def label_permutation(dataset_labels: Sequence[str], config: Any) -> np.ndarray | None:
    """Column order that maps a model's logits onto the dataset's labels; None when identical.

    The class count must match, and real class names must match the dataset's: in the same
    order (None), or in another order (a permutation by name, logged). Anything else raises
    a ValueError before any work is done.
    """
    names = list(dataset_labels)
    try:
        check_labels(names, config)
        return None
    except ValueError:
        model_names = _model_label_names(config)
        if len(model_names) != len(names) or sorted(model_names) != sorted(names):
            raise
        if len(set(model_names)) != len(model_names):
            raise
    perm = np.array([model_names.index(n) for n in names], dtype=np.int64)
    logger.warning(
        "The model's id2label lists the dataset's classes in another order; logits are mapped "
        "by class name (model index %s for dataset labels 0..%d).",
        perm.tolist()[:10],
        len(names) - 1,
    )
    return perm


def resolve_device(device: str | None) -> str:
    """`device`; for None / "auto" this process's accelerator (under `accelerate launch`, the
    process's own GPU), else the CPU. A bare "cuda" also means the process's own GPU."""
    if device in (None, "", "auto", "cuda") and torch.cuda.is_available():
        return str(process_state().device)
    return "cpu" if device in (None, "", "auto") else str(device)


__all__ = [
    "UNRECORDED",
    "EvalModel",
    "assign_keys",
    "base_first",
    "base_of",
    "label_permutation",
    "load_eval_models",
    "model_controls",
    "model_roles",
    "resolve_device",
]
