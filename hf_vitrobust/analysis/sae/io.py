"""SAE folders in sae-lens' own layout: saving, loading, listing, and the SAE id that names them.

One folder per SAE id (``<type>-layer<L>-<tokens>``), as ``upload_saes_to_huggingface`` lays them
out: ``cfg.json`` + ``sae_weights.safetensors`` (sae-lens), ``sparsity.safetensors`` (the
trainer's log10 feature sparsity) and ``metadata.json`` (a flat summary for model cards).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from hf_vitrobust.analysis.sae.config import check_sae_type
from hf_vitrobust.analysis.sae.saelens import import_sae_lens
from hf_vitrobust.io import read_json, write_json_atomic

SPARSITY_FILENAME = "sparsity.safetensors"
METADATA_FILENAME = "metadata.json"


def sae_id(sae_type: str, layer: int, tokens: str) -> str:
    """The folder name (and Hub ``sae_id``) of an SAE: ``<type>-layer<L>-<tokens>``."""
    return f"{check_sae_type(sae_type)}-layer{int(layer)}-{tokens}"


def save_sae(
    training_sae: Any,
    folder: str | os.PathLike,
    trainer: Any | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Save an SAE in sae-lens' inference format (``cfg.json`` + ``sae_weights.safetensors``).

    BatchTopK goes through ``save_inference_model`` and loads back as a JumpReLU SAE (an inference
    SAE is saved with ``save_model``). With the trainer, its log10 feature sparsity is written as
    ``sparsity.safetensors`` (sae-lens' name, uploaded by ``upload_saes_to_huggingface``).
    ``extra_metadata`` (e.g. ``heldout_metrics``) is recorded in the config's metadata, and a flat
    ``metadata.json`` summary (model, layer, hook, tokens, training data, L0, explained variance,
    dead features) is written for model cards.
    """
    folder = Path(folder)
    for key, value in (extra_metadata or {}).items():
        training_sae.cfg.metadata[key] = value
    if hasattr(training_sae, "save_inference_model"):
        training_sae.save_inference_model(folder)
    else:  # already an inference SAE (e.g. loaded back): its own format is the inference one
        training_sae.save_model(folder)
    if trainer is not None and trainer.n_frac_active_samples > 0:
        save_file({"sparsity": trainer.log_feature_sparsity}, str(folder / SPARSITY_FILENAME))
    cfg = read_json(folder / "cfg.json", what="SAE config")
    write_json_atomic(_summary(cfg), folder / METADATA_FILENAME)
    return folder


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """What an SAE is, from its sae-lens ``cfg.json``: architecture, model, layer, hook, sizes."""
    meta = cfg.get("metadata") or {}
    return {
        "architecture": cfg.get("architecture"),
        "training_architecture": meta.get("training_architecture"),
        "model": meta.get("model_name"),
        "layer": meta.get("layer"),
        "hook": meta.get("hook_name"),
        "tokens": meta.get("tokens"),
        "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
    }


def _summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """The flat ``metadata.json`` of an SAE from its sae-lens ``cfg.json``."""
    meta = cfg.get("metadata") or {}
    metrics = meta.get("heldout_metrics") or {}
    training_data = meta.get("training_data") or {}
    d_sae = int(cfg["d_sae"])
    dead = metrics.get("dead_fraction")
    return {
        **_identity(cfg),
        "d_in": int(cfg["d_in"]),
        "d_sae": d_sae,
        "training_tokens": training_data.get("training_tokens"),
        "images": describe_training_data(training_data),
        "training_data": training_data,
        "l0": metrics.get("l0"),
        "explained_variance": metrics.get("explained_variance"),
        "mse": metrics.get("mse"),
        "dead_features": dead,
        "dead_features_count": None if dead is None else round(dead * d_sae),
        "heldout_tokens": metrics.get("n_tokens"),
        "flagged": bool(meta.get("flagged", False)),
        "flag_reason": meta.get("flag_reason"),
        "sae_lens_version": meta.get("sae_lens_version"),
    }


def describe_training_data(training_data: dict[str, Any]) -> str | None:
    """One line for people: dataset, split, and which corrupted views were added."""
    if not training_data:
        return None
    text = f"{training_data.get('dataset')} ({training_data.get('split')})"
    family = training_data.get("corruption_family")
    if family and family != "none":
        text += f", clean + {training_data.get('views_per_image', 1)} corrupted view(s) per image "
        text += f"from '{family}'"
    else:
        text += ", clean images"
    return text


def load_sae(folder: str | os.PathLike, device: str = "cpu") -> Any:
    """Load an inference SAE saved by :func:`save_sae` (``SAE.load_from_disk``)."""
    folder = Path(folder)
    if not (folder / "cfg.json").is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not an SAE folder (no cfg.json); expected sae-lens' layout "
            "(cfg.json + sae_weights.safetensors), as written by save_sae()."
        )
    sae = import_sae_lens().SAE.load_from_disk(folder, device=device)
    return sae.eval()


def to_inference_sae(training_sae: Any) -> Any:
    """The inference SAE of a training SAE, by a save/load round trip through sae-lens' format."""
    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        return load_sae(tmp, device=str(training_sae.device))


def list_saes(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The SAEs in a folder laid out like ``upload_saes_to_huggingface`` (one sub-folder per id).

    Each entry is the SAE's ``metadata.json`` (see :func:`save_sae`: ``architecture``,
    ``training_architecture``, ``model``, ``layer``, ``hook``, ``tokens``, ``d_in``, ``d_sae``,
    ``training_tokens``, ``images``, ``training_data``, held-out ``l0``, ``explained_variance``,
    ``mse``, ``dead_features`` (fraction), ``dead_features_count``, ``flagged``, ``flag_reason``)
    plus ``sae_id`` and ``path``. Folders without ``metadata.json`` get what ``cfg.json`` holds.
    Reads JSON only (no sae-lens import), sorted by id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"SAE folder {str(root)!r} does not exist.")
    out = []
    for cfg_path in sorted(root.glob("*/cfg.json")):
        sae_folder = cfg_path.parent
        meta_path = sae_folder / METADATA_FILENAME
        if meta_path.is_file():
            entry = read_json(meta_path, what="SAE metadata")
        else:
            entry = _identity(read_json(cfg_path, what="SAE config"))
        out.append({"sae_id": sae_folder.name, "path": str(sae_folder), **entry})
    if not out:
        raise FileNotFoundError(
            f"{str(root)!r} holds no SAE folders (<sae_id>/cfg.json); train some with "
            "recipes/train_sae.py."
        )
    return out


__all__ = [
    "METADATA_FILENAME",
    "SPARSITY_FILENAME",
    "describe_training_data",
    "list_saes",
    "load_sae",
    "sae_id",
    "save_sae",
    "to_inference_sae",
]
