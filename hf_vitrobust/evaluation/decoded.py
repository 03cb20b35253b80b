"""The evaluated images, decoded once: resized uint8 batches with their ids and labels.

Decoding happens once per run when the images fit in the cache; otherwise every cell re-reads
them from the dataset (same order, same images). Undecodable images are skipped, and counted
only on the first complete pass (``BadImageTally``: one entry per example id, with its file
path), however many times the data is re-read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hf_vitrobust.data import BadImageError, BadImageTracker, decode_image
from hf_vitrobust.evaluation.store import BadImageTally

logger = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # images [B, H, W, 3] uint8, ids, labels


def _path_of(value: Any) -> str | None:
    """The file path an undecoded ``datasets`` Image value points at, if any."""
    if isinstance(value, Mapping) and value.get("path"):
        return str(value["path"])
    return None


def _track(
    tracker: BadImageTracker, ok_ids: list[int], bad: dict[int, tuple[str | None, str]], check: bool
) -> None:
    """Feed one batch to the run's tracker, which stops an unhealthy run early when `check`.

    `bad`: example id -> (file path or None, reason)."""
    if hasattr(tracker, "state_dict"):  # the id-keyed tracker (issue #15)
        tracker.record(ok_ids, bad)
    else:
        tracker.record(num_ok=len(ok_ids), bad_ids=list(bad))
    if check:
        tracker.check()


class DecodedImages:
    """Batches of decoded, resized images of `dataset`, in dataset order.

    `tally` is None until one pass over the data has completed, then the undecodable images
    of that pass; later passes neither count nor log them again. `check_each_batch`: stop as
    soon as the tracker's limit is exceeded (one process; with several, a process stopping
    alone would leave the others waiting, so the limit is judged on the gathered count).
    """

    def __init__(
        self,
        dataset: Any,
        spec: Any,
        batch_size: int,
        tracker: BadImageTracker,
        cache_bytes: int,
        check_each_batch: bool = True,
    ) -> None:
        self.dataset = dataset
        self.check_each_batch = check_each_batch
        self.spec = spec
        self.batch_size = int(batch_size)
        self.tracker = tracker
        self.cache_bytes = int(cache_bytes)
        self.tally: BadImageTally | None = None
        self._cache: list[Batch] | None = None
        self._cache_failed = False
        self.num_batches: int | None = None
        try:
            self.num_batches = math.ceil(len(dataset) / self.batch_size)
        except TypeError:
            pass

    def _decode(self) -> Iterator[Batch]:
        counting = self.tally is None
        tally = BadImageTally()
        for batch in self.dataset.iter(batch_size=self.batch_size):
            images, ids, labels = [], [], []
            bad: dict[int, tuple[str | None, str]] = {}
            for value, eid, label in zip(batch["image"], batch["example_id"], batch["label"]):
                try:
                    images.append(self.spec.resize_uint8(decode_image(value)))
                except BadImageError as error:
                    bad[int(eid)] = (_path_of(value), str(error))
                    if counting:
                        where = f" ({bad[int(eid)][0]})" if bad[int(eid)][0] else ""
                        logger.warning("Skipping example %s%s: %s", eid, where, error)
                    continue
                ids.append(int(eid))
                labels.append(int(label))
            if counting:
                tally.seen += len(ids) + len(bad)
                tally.bad.update({i: path for i, (path, _) in bad.items()})
                _track(self.tracker, ids, bad, self.check_each_batch)
            if images:
                yield np.stack(images), np.asarray(ids, np.int64), np.asarray(labels, np.int64)
        if counting:
            self.tally = tally

    def __iter__(self) -> Iterator[Batch]:
        if self._cache is not None:
            yield from self._cache
            return
        keep: list[Batch] | None = [] if not self._cache_failed else None
        size = 0
        for item in self._decode():
            if keep is not None:
                size += item[0].nbytes
                if size > self.cache_bytes:
                    keep, self._cache_failed = None, True
                else:
                    keep.append(item)
            yield item
        if keep is not None:
            self._cache = keep
            self.num_batches = len(keep)

    def count_only(self) -> BadImageTally:
        """One decoding pass without models, when no cell needs computing but no tally is known."""
        if self.tally is None:
            for _ in self:
                pass
        assert self.tally is not None
        return self.tally


__all__ = ["DecodedImages"]
