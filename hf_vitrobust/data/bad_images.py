"""Bad-image accounting: unique undecodable example ids over the whole run, and the limit.

Collators only *report* (each batch carries the ``example_ids`` it decoded and the
``skipped_images`` it could not, ``{example_id: BadImage(path, reason)}``); a
``BadImageTracker`` in the main process records what the run actually consumed. Counting
example ids as sets makes the figures exact under everything that used to inflate them: a
DataLoader prefetching batches that are never used, an image read again every epoch or every
evaluation cell, a resumed run re-reading its last batches, several processes. The state is
JSON-able and travels with checkpoints (``BadImageCallback``), so resumed segments accumulate.

The verdict is data (``summary()["passed"]``): nothing here raises at the end of a run, so a
caller saves its model and outputs first and then calls ``check(final=True)``. During the run,
``check()`` stops it as soon as ``min_examples`` unique images were seen with too many bad.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch.distributed

from hf_vitrobust.data.decode import BadImage
from hf_vitrobust.distributed import gather_object, process_state

logger = logging.getLogger(__name__)

#: The file a run's tracker state is saved in (checkpoints, training output, evaluation cells).
BAD_IMAGES_FILE = "bad_images.json"
STATE_FORMAT = "hf_vitrobust.bad_images"
STATE_VERSION = 1
# Paths and reasons kept for the smallest bad ids (every bad id is counted regardless).
MAX_DETAILS = 100
_CONSOLIDATE_EVERY = 65_536


class TooManyBadImagesError(RuntimeError):
    """More undecodable images than ``max_bad_fraction`` allows."""


def _as_ids(ids: Any) -> np.ndarray:
    if hasattr(ids, "detach"):  # a torch tensor
        ids = ids.detach().cpu().numpy()
    return np.asarray(list(ids) if isinstance(ids, (set, frozenset)) else ids, np.int64).ravel()


class _IdSet:
    """A set of int64 ids: a sorted array plus a small pending set (8 bytes per id, not ~70)."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.int64)
        self._pending: set[int] = set()

    def add(self, ids: np.ndarray) -> None:
        if not ids.size:
            return
        ids = np.sort(ids)
        ids = ids[np.concatenate([[True], ids[1:] != ids[:-1]])]
        if self._sorted.size:
            pos = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.size - 1)
            ids = ids[self._sorted[pos] != ids]
        self._pending.update(ids.tolist())
        if len(self._pending) >= _CONSOLIDATE_EVERY:
            self._consolidate()

    def _consolidate(self) -> None:
        if self._pending:
            # Pending ids are never in `_sorted`: a stable sort of the two sorted runs merges
            # them in linear time (numpy's hash-based `union1d` takes seconds at 1 M ids).
            pending = np.sort(np.fromiter(self._pending, np.int64, len(self._pending)))
            self._sorted = np.sort(np.concatenate([self._sorted, pending]), kind="stable")
            self._pending.clear()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._pending)

    def array(self) -> np.ndarray:
        self._consolidate()
        return self._sorted

    def to_ranges(self) -> list[list[int]]:
        """Runs of consecutive ids as ``[start, stop)`` pairs (compact for whole epochs)."""
        ids = self.array()
        if not ids.size:
            return []
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        starts = ids[np.concatenate([[0], breaks])]
        stops = ids[np.concatenate([breaks - 1, [ids.size - 1]])] + 1
        return np.stack([starts, stops], axis=1).tolist()

    @staticmethod
    def from_ranges(ranges: Iterable[Iterable[int]]) -> np.ndarray:
        pairs = np.asarray(list(ranges), np.int64).reshape(-1, 2)
        lengths = pairs[:, 1] - pairs[:, 0]
        if (lengths < 0).any():
            raise ValueError("an id range [start, stop) has stop < start.")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return np.repeat(pairs[:, 0] - starts, lengths) + np.arange(int(lengths.sum()))


def _as_bad_image(value: Any) -> BadImage:
    """A ``BadImage`` from what a caller reports: a BadImage, (path, reason), a mapping, or a
    string: a file path when it is one word with a slash, else the reason."""
    if isinstance(value, BadImage):
        return value
    if isinstance(value, Mapping):
        return BadImage(value.get("path"), str(value.get("reason") or "undecodable"))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return BadImage(value[0], str(value[1]))
    text = str(value) if value else ""
    if text and not any(c.isspace() for c in text) and ("/" in text or "\\" in text):
        return BadImage(text, "undecodable")  # a file path
    return BadImage(None, text or "undecodable")


class BadImageTracker:
    """Counts the unique example ids seen and those that failed to decode; enforces a limit.

    ``record(ok_ids, bad)`` after every batch the run uses (``bad``: example id -> file path,
    reason or ``BadImage``); ``check()`` raises ``TooManyBadImagesError`` once ``seen >=
    min_examples`` and ``bad / seen > max_bad_fraction``; ``check(final=True)`` judges whatever
    was seen. ``seen`` is the number of unique images looked at (decoded or not), ``bad`` the
    unique undecodable ones; recording an id again changes nothing.
    """

    def __init__(
        self, max_bad_fraction: float = 0.01, min_examples: int = 1000, max_listed: int = 10
    ) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], not {max_bad_fraction}.")
        if min_examples < 0:
            raise ValueError(f"min_examples must be >= 0, not {min_examples}.")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_examples = int(min_examples)
        self.max_listed = max(1, int(max_listed))
        self._seen = _IdSet()
        self._bad = _IdSet()
        self._details: dict[int, BadImage] = {}
        # What this process recorded since the last `sync` (kept only when distributed).
        self._unsynced: list[tuple[np.ndarray, dict[int, BadImage]]] = []

    # ---- recording ------------------------------------------------------------------------
    def record(self, ok_ids: Any = (), bad: Mapping[int, Any] | None = None) -> None:
        """Record a batch: the example ids decoded, and ``{id: path or reason}`` of the bad ones."""
        bad = {int(k): _as_bad_image(v) for k, v in (bad or {}).items()}
        ok = _as_ids(ok_ids)
        self._add(ok, bad)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self._unsynced.append((ok, bad))

    def _add(self, ok: np.ndarray, bad: Mapping[int, BadImage]) -> None:
        bad_ids = np.fromiter(bad, np.int64, len(bad))
        self._seen.add(np.concatenate([ok, bad_ids]))
        self._bad.add(bad_ids)
        for example_id, detail in bad.items():
            self._add_detail(example_id, detail)

    def record_batch(self, batch: Mapping[str, Any]) -> None:
        """Record a collated batch (``example_ids`` and ``skipped_images``, as collators give)."""
        bad = batch.get("skipped_images")
        if bad is None:
            bad = dict.fromkeys(batch.get("skipped_example_ids") or (), "undecodable")
        self.record(batch.get("example_ids", ()), bad)

    def _add_detail(self, example_id: int, detail: BadImage) -> None:
        if example_id in self._details:
            return
        if len(self._details) >= MAX_DETAILS:
            largest = max(self._details)
            if example_id > largest:
                return
            del self._details[largest]
        self._details[example_id] = detail

    # ---- figures --------------------------------------------------------------------------
    @property
    def seen(self) -> int:
        """Unique images looked at (decoded or not)."""
        return len(self._seen)

    @property
    def bad(self) -> int:
        """Unique images that could not be decoded."""
        return len(self._bad)

    @property
    def fraction(self) -> float:
        seen = self.seen
        return self.bad / seen if seen else 0.0

    @property
    def passed(self) -> bool:
        """The verdict on what was seen: the bad fraction is within ``max_bad_fraction``."""
        return self.fraction <= self.max_bad_fraction

    @property
    def first_bad_ids(self) -> list[int]:
        """The smallest bad example ids (at most ``max_listed``)."""
        return self._bad.array()[: self.max_listed].tolist()

    def first_bad(self) -> list[dict[str, Any]]:
        """``[{id, path, reason}]`` of the smallest bad example ids (at most ``max_listed``)."""
        out = []
        for example_id in self.first_bad_ids:
            detail = self._details.get(example_id, BadImage(None, "undecodable"))
            out.append({"id": example_id, "path": detail.path, "reason": detail.reason})
        return out

    def summary(self) -> dict[str, Any]:
        """``seen``, ``bad``, ``fraction``, ``limit``, ``min_examples``, ``first_bad``, ``passed``."""
        return {
            "seen": self.seen,
            "bad": self.bad,
            "fraction": self.fraction,
            "limit": self.max_bad_fraction,
            "min_examples": self.min_examples,
            "first_bad": self.first_bad(),
            "passed": self.passed,
        }

    def describe(self) -> str:
        """One line for the log."""
        if not self.bad:
            return f"All {self.seen} unique images decoded."
        listed = "; ".join(_describe(d) for d in self.first_bad())
        return (
            f"Skipped {self.bad} undecodable images of {self.seen} unique images seen "
            f"({self.fraction:.2%}, limit {self.max_bad_fraction:.2%}); first: {listed}."
        )

    # ---- the limit ------------------------------------------------------------------------
    def check(self, final: bool = False) -> None:
        """Raise ``TooManyBadImagesError`` when the bad fraction is above the limit.

        Judged once ``min_examples`` unique images were seen (one early bad file must not stop
        a run), or on whatever was seen with ``final=True``.
        """
        if not self.bad or self.passed or not (final or self.seen >= self.min_examples):
            return
        listed = "; ".join(_describe(d) for d in self.first_bad())
        raise TooManyBadImagesError(
            f"{self.bad} of {self.seen} unique images ({self.fraction:.2%}) could not be decoded, "
            f"above max_bad_fraction={self.max_bad_fraction:g}. First bad: {listed}. Fix or "
            "remove those files (`python -m hf_vitrobust.data --check DATASET` lists them all), "
            "or raise max_bad_fraction (DataArguments.max_bad_fraction)."
        )

    def finish(self) -> dict[str, Any]:
        """Log the run's figures and return ``summary()``; never raises (see ``check``)."""
        (logger.warning if self.bad else logger.info)(self.describe())
        return self.summary()

    # ---- persistence and processes --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the seen and bad id sets (as ranges), details, and the figures."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            **self.summary(),
            "seen_ranges": self._seen.to_ranges(),
            "bad_ranges": self._bad.to_ranges(),
            "details": [
                {"id": i, "path": d.path, "reason": d.reason}
                for i, d in sorted(self._details.items())
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the counts by ``state`` (a resumed run); the limits stay this run's.

        Load the same state on every process (it is the whole run's, not one process's).
        """
        self._seen, self._bad, self._details, self._unsynced = _IdSet(), _IdSet(), {}, []
        self.merge(state)

    def merge(self, other: BadImageTracker | Mapping[str, Any]) -> None:
        """Add another tracker's (or state's) ids: the union, so overlaps count once."""
        state = other.state_dict() if isinstance(other, BadImageTracker) else other
        if state.get("format") != STATE_FORMAT or int(state.get("version", 0)) > STATE_VERSION:
            raise ValueError(
                f"Not a bad-image state of version <= {STATE_VERSION}: format "
                f"{state.get('format')!r}, version {state.get('version')!r}."
            )
        self._seen.add(_IdSet.from_ranges(state["seen_ranges"]))
        self._bad.add(_IdSet.from_ranges(state["bad_ranges"]))
        for item in state.get("details", []):
            self._add_detail(int(item["id"]), BadImage(item.get("path"), str(item["reason"])))

    def sync(self, state: Any = None) -> None:
        """Share what each process recorded since the last sync with every other process.

        Afterwards every process holds the same union, so ``check`` raises on all of them at
        once (no process left waiting in a collective). Sends only the new ids, not the sets.
        Every process must call it (``state``: an accelerate state or ``Accelerator``; default
        ``distributed.process_state()``).
        """
        state = state or process_state()
        if state.num_processes == 1:
            self._unsynced.clear()
            return
        mine = self._unsynced
        ok = np.concatenate([o for o, _ in mine]) if mine else np.empty(0, np.int64)
        bad = {k: tuple(v) for _, b in mine for k, v in b.items()}
        self._unsynced = []
        for part in gather_object({"ok": ok, "bad": bad}, state):
            self._add(
                np.asarray(part["ok"], np.int64), {k: BadImage(*v) for k, v in part["bad"].items()}
            )

    def gather(self, state: Any = None) -> dict[str, Any]:
        """``sync`` and return ``summary()``: the whole run's figures, the same on every process."""
        self.sync(state)
        return self.summary()


def _describe(item: Mapping[str, Any]) -> str:
    if item["path"]:
        return f"id {item['id']} ({item['path']}: {item['reason']})"
    return f"id {item['id']} ({item['reason']})"


__all__ = ["BAD_IMAGES_FILE", "STATE_FORMAT", "BadImageTracker", "TooManyBadImagesError"]
