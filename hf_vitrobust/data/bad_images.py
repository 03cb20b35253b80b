"""Bad-image accounting: undecodable images are skipped, counted across workers, and limited."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from typing import Any

import torch.utils.data
from accelerate.utils import gather_object

logger = logging.getLogger(__name__)


class TooManyBadImagesError(RuntimeError):
    """More undecodable images than ``max_bad_fraction`` allows."""


class BadImageTracker:
    """Counts decoded and undecodable images, across DataLoader workers, and enforces a limit.

    Counters live in shared memory, so the copies in DataLoader workers (fork, spawn or
    forkserver) update the numbers the main process reads. Each worker writes its own slot (no
    lock, hence no multiprocessing-context mismatch); the totals are sums over slots. The run
    stops with ``TooManyBadImagesError`` naming the first bad example ids when the bad fraction
    exceeds ``max_bad_fraction``: during the run once ``min_examples`` images were seen (so
    that one early bad file does not stop it), and at the end (``check(final=True)``) whatever
    the count.
    """

    _SLOTS = 65  # the main process, then DataLoader worker ids modulo 64

    def __init__(
        self, max_bad_fraction: float = 0.01, min_examples: int = 1000, max_listed: int = 10
    ) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], not {max_bad_fraction}.")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_examples = int(min_examples)
        self.max_listed = max(1, int(max_listed))
        # Per slot: [seen, bad]; and the slot's first `max_listed` bad example ids.
        self._counts = multiprocessing.RawArray("q", 2 * self._SLOTS)
        self._ids = multiprocessing.RawArray("q", self._SLOTS * self.max_listed)

    def _slot(self) -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (self._SLOTS - 1)

    @property
    def seen(self) -> int:
        """Images looked at (good and bad)."""
        return int(sum(self._counts[0::2]))

    @property
    def bad(self) -> int:
        """Images skipped as undecodable."""
        return int(sum(self._counts[1::2]))

    @property
    def fraction(self) -> float:
        seen = self.seen
        return self.bad / seen if seen else 0.0

    @property
    def first_bad_ids(self) -> list[int]:
        ids: list[int] = []
        for slot in range(self._SLOTS):
            n = min(int(self._counts[2 * slot + 1]), self.max_listed)
            start = slot * self.max_listed
            ids += [int(v) for v in self._ids[start : start + n]]
        return ids[: self.max_listed]

    def record(self, num_ok: int = 0, bad_ids: Sequence[int] = ()) -> None:
        """Count ``num_ok`` good images and the undecodable ones with these example ids."""
        slot = self._slot()
        for example_id in bad_ids:
            bad = int(self._counts[2 * slot + 1])
            if bad < self.max_listed:
                self._ids[slot * self.max_listed + bad] = int(example_id)
            self._counts[2 * slot + 1] = bad + 1
        self._counts[2 * slot] += int(num_ok) + len(bad_ids)

    def check(self, final: bool = False) -> None:
        """Raise ``TooManyBadImagesError`` when the bad fraction is above the limit."""
        if self.bad and (final or self.seen >= self.min_examples):
            if self.fraction > self.max_bad_fraction:
                raise TooManyBadImagesError(
                    f"{self.bad} of {self.seen} images ({self.fraction:.2%}) could not be decoded, "
                    f"above max_bad_fraction={self.max_bad_fraction:g}; first bad example ids: "
                    f"{self.first_bad_ids}. Fix or remove those files, or raise max_bad_fraction "
                    "(DataArguments.max_bad_fraction)."
                )

    def summary(self) -> str:
        """One line for the end-of-run log."""
        if not self.bad:
            return f"All {self.seen} images decoded."
        return (
            f"Skipped {self.bad} undecodable images of {self.seen} ({self.fraction:.2%}); "
            f"first bad example ids: {self.first_bad_ids}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "bad": self.bad,
            "fraction": self.fraction,
            "first_bad_ids": self.first_bad_ids,
            "max_bad_fraction": self.max_bad_fraction,
        }

    def finish(self) -> dict[str, Any]:
        """Log the summary, enforce the limit on the whole run, and return the counts."""
        (logger.warning if self.bad else logger.info)(self.summary())
        self.check(final=True)
        return self.to_dict()

    def gather(self, accelerator: Any, dispatch_batches: bool = False) -> dict[str, Any]:
        """Counts over all accelerate processes.

        Sharded streams (``dispatch_batches=False``): each process decodes its own shards, so
        counts are summed. Dispatched streams: rank 0 decodes everything that is used (the
        other ranks' DataLoader workers may prefetch batches that are never read), so rank 0's
        counts are the run's.
        """
        parts = [self.to_dict()]
        if accelerator.num_processes > 1:
            parts = gather_object(parts)
        if dispatch_batches:
            parts = parts[:1]
        seen = sum(p["seen"] for p in parts)
        bad = sum(p["bad"] for p in parts)
        first = [i for p in parts for i in p["first_bad_ids"]][: self.max_listed]
        return {
            "seen": seen,
            "bad": bad,
            "fraction": bad / seen if seen else 0.0,
            "first_bad_ids": first,
            "max_bad_fraction": self.max_bad_fraction,
        }


__all__ = ["BadImageTracker", "TooManyBadImagesError"]
