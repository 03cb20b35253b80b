"""Finished grid cells on disk: per-image records of one model on one cell, for resuming.

``<root>/<model dir>/<cell file>.npz`` holds a ``CellRecord`` and the fingerprint of what it was
computed from (``identity.cell_fingerprint``: the model's weights, config and processor, the
data selection, the cell, the corruption seed and registry version). A cell whose fingerprint
differs from the current run's is recomputed, never reused. The model dir is the model key made
file-safe, plus a short hash of the key (keys such as ``runA/final`` stay distinct).
``<root>/bad_images.json`` holds the bad-image tracker's state after the first pass over the
images (``BadImageTracker.state_dict``), so a fully resumed run reports the same count.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.data.bad_images import BAD_IMAGES_FILE
from hf_vitrobust.formatting import slug
from hf_vitrobust.io import atomic_path, read_json, write_json_atomic

logger = logging.getLogger(__name__)

_FINGERPRINT = "fingerprint"


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
    DTYPES = (np.int64, np.int64, np.int32, np.float32, np.float32, np.float32)

    def correct(self, k: int, num_classes: int) -> np.ndarray:
        return self.rank < min(int(k), int(num_classes))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def save(self, path: Path, fingerprint: str = "") -> None:
        """Atomic .npz write (a crash never leaves a half-written cell)."""
        with atomic_path(path) as tmp:
            np.savez(tmp, **self.as_dict(), **{_FINGERPRINT: np.array(fingerprint)})

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        with np.load(path) as data:
            return cls(**{f: data[f] for f in cls.FIELDS})

    @staticmethod
    def stored_fingerprint(path: Path) -> str:
        """The fingerprint a cell file was saved with ('' for files without one)."""
        with np.load(path) as data:
            return str(data[_FINGERPRINT]) if _FINGERPRINT in data.files else ""

    @classmethod
    def empty(cls) -> CellRecord:
        return cls(**{f: np.zeros(0, d) for f, d in zip(cls.FIELDS, cls.DTYPES)})

    @classmethod
    def concat(cls, parts: Sequence[Mapping[str, np.ndarray]]) -> CellRecord:
        """Join batches, sorted by example id (so a stream's order never breaks the pairing)."""
        if not parts:
            return cls.empty()
        joined = {f: np.concatenate([p[f] for p in parts]) for f in cls.FIELDS}
        order = np.argsort(joined["example_ids"], kind="stable")
        return cls(**{f: v[order] for f, v in joined.items()})


def model_dir_name(model_key: str) -> str:
    """A file-safe folder name for a model key, distinct for distinct keys."""
    digest = hashlib.sha1(model_key.encode()).hexdigest()[:8]
    return f"{slug(model_key)[:48] or 'model'}-{digest}"


class CellStore:
    """Finished cells on disk, for resuming: `<root>/<model dir>/<cell file>.npz`.

    Cells are addressed by model key and the grid's cell keys (``"clean"``, ``"fog@3"``), and
    reused only when their stored fingerprint equals the one asked for. `resume=False` never
    reuses anything; `writable=False` (processes other than the main one) never writes.
    """

    def __init__(self, root: str | os.PathLike, resume: bool = True, writable: bool = True):
        self.root = Path(root)
        self.resume = resume
        self.writable = writable

    def path(self, model_key: str, cell_key: str) -> Path:
        return self.root / model_dir_name(model_key) / f"{cell_key.replace('@', '__s')}.npz"

    def get(self, model_key: str, cell_key: str, fingerprint: str) -> CellRecord | None:
        """The stored cell when it was computed from the same inputs, else None."""
        path = self.path(model_key, cell_key)
        if not self.resume or not path.exists():
            return None
        try:
            if CellRecord.stored_fingerprint(path) != fingerprint:
                logger.info(
                    "Recomputing %s of %s: the model, its processor or the images changed.",
                    cell_key,
                    model_key,
                )
                return None
            return CellRecord.load(path)
        except Exception as error:  # a damaged file is recomputed, not trusted
            logger.warning("Recomputing %s: could not read %s (%s).", cell_key, path, error)
            return None

    def put(self, model_key: str, cell_key: str, record: CellRecord, fingerprint: str) -> None:
        if self.writable:
            record.save(self.path(model_key, cell_key), fingerprint)

    def get_bad_images(self, data_fingerprint: str) -> dict[str, Any] | None:
        """The bad-image tracker state of a pass over these images, when one was stored."""
        path = self.root / BAD_IMAGES_FILE
        if not self.resume or not path.exists():
            return None
        data = read_json(path)
        if data.get("data_fingerprint") != data_fingerprint:
            return None
        return data["tracker"]

    def put_bad_images(self, data_fingerprint: str, tracker_state: dict[str, Any]) -> None:
        if self.writable:
            record = {"data_fingerprint": data_fingerprint, "tracker": tracker_state}
            write_json_atomic(record, self.root / BAD_IMAGES_FILE)


__all__ = ["CellRecord", "CellStore", "model_dir_name"]
