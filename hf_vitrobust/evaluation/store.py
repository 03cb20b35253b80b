"""Finished grid cells on disk: per-image records of one model on one cell, for resuming.

``<root>/<model key>/<cell file>.npz`` holds a ``CellRecord``; ``<root>/manifest.json`` holds
the fingerprint of the evaluation (dataset, label names, corruption seed, registry version), so
cells of another evaluation are refused instead of mixed in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.io import atomic_path, read_json, write_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class CellRecord:
    """Per-image results of one model on one cell (arrays aligned on `example_ids`)."""

    example_ids: np.ndarray
    labels: np.ndarray
    rank: np.ndarray
    p_true: np.ndarray
    nll: np.ndarray
    confidence: np.ndarray

    FIELDS = ("example_ids", "labels", "rank", "p_true", "nll", "confidence")

    def correct(self, k: int, num_classes: int) -> np.ndarray:
        return self.rank < min(int(k), int(num_classes))

    def save(self, path: Path) -> None:
        """Atomic .npz write (a crash never leaves a half-written cell)."""
        with atomic_path(path) as tmp:
            np.savez(tmp, **{f: getattr(self, f) for f in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        with np.load(path) as data:
            return cls(**{f: data[f] for f in cls.FIELDS})

    @classmethod
    def concat(cls, parts: Sequence[dict[str, np.ndarray]]) -> CellRecord:
        """Join batches, sorted by example id (so a stream's order never breaks the pairing)."""
        joined = {f: np.concatenate([p[f] for p in parts]) for f in cls.FIELDS}
        order = np.argsort(joined["example_ids"], kind="stable")
        return cls(**{f: v[order] for f, v in joined.items()})


class CellStore:
    """Finished cells on disk, for resuming: `<root>/<model key>/<cell key>.npz` + a manifest.

    Cells are addressed by the grid's cell keys (``"clean"``, ``"fog@3"``).
    """

    def __init__(self, root: str | os.PathLike, fingerprint: dict[str, Any], resume: bool = True):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if manifest.exists() and resume:
            old = read_json(manifest)
            if old != fingerprint:
                diff = sorted(
                    k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k)
                )
                raise ValueError(
                    f"{self.root} holds cells of a different evaluation (differs in {diff}). "
                    "Use a new output_dir, or pass --resume false to recompute every cell."
                )
        write_json_atomic(fingerprint, manifest)
        self.resume = resume

    def path(self, model_key: str, cell_key: str) -> Path:
        return self.root / model_key / f"{cell_key.replace('@', '__s')}.npz"

    def get(self, model_key: str, cell_key: str) -> CellRecord | None:
        path = self.path(model_key, cell_key)
        if not self.resume or not path.exists():
            return None
        try:
            return CellRecord.load(path)
        except Exception as error:  # a damaged file is recomputed, not trusted
            logger.warning("Recomputing %s: could not read %s (%s).", cell_key, path, error)
            return None

    def put(self, model_key: str, cell_key: str, record: CellRecord) -> None:
        record.save(self.path(model_key, cell_key))


__all__ = ["CellRecord", "CellStore"]
