"""The evaluated images, decoded once: resized uint8 batches with their ids and labels.

Decoding happens once per run when the images fit in the cache; otherwise every cell re-reads
them from the dataset (same order, same images). Undecodable images are skipped
(``data.decode_examples``) and recorded in the run's ``BadImageTracker`` during the first
complete pass only; the tracker counts example ids, so each bad file counts once, with its path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from hf_vitrobust.data import BadImageTracker, decode_examples

logger = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # images [B, H, W, 3] uint8, ids, labels


class DecodedImages:
    """Batches of decoded, resized images of `dataset`, in dataset order.

    `counted` becomes True once a pass over the data has completed: from then on `tracker`
    holds this process's decoded and undecodable example ids, and later passes record nothing.
    `check_each_batch`: stop as soon as the tracker's limit is exceeded (one process; with
    several, a process stopping alone would leave the others waiting, so the caller checks
    after syncing the trackers).
    """

    def __init__(
        self,
        dataset: Any,
        spec: Any,
        batch_size: int,
        tracker: BadImageTracker,
        cache_bytes: int,
        num_labels: int,
        check_each_batch: bool = True,
    ) -> None:
        self.dataset = dataset
        self.spec = spec
        self.batch_size = int(batch_size)
        self.tracker = tracker
        self.cache_bytes = int(cache_bytes)
        self.num_labels = int(num_labels)
        self.check_each_batch = check_each_batch
        self.counted = False
        self.images_in_shard = 0  # looked at in the first pass, decodable or not
        self._cache: list[Batch] | None = None
        self._cache_failed = False
        self.num_batches: int | None = None
        try:
            self.num_batches = math.ceil(len(dataset) / self.batch_size)
        except TypeError:
            pass

    def _decode(self) -> Iterator[Batch]:
        counting = not self.counted
        seen = 0
        for batch in self.dataset.iter(batch_size=self.batch_size):
            images, labels, ids, bad = decode_examples(batch, self.spec, num_labels=self.num_labels)
            if counting:
                seen += len(ids) + len(bad)
                self.tracker.record(ids, bad)
                if self.check_each_batch:
                    self.tracker.check()
            if images:
                yield np.stack(images), np.asarray(ids, np.int64), np.asarray(labels, np.int64)
        if counting:
            self.counted, self.images_in_shard = True, seen

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

    def count_only(self) -> None:
        """One decoding pass without models, when no cell needs computing but the bad images of
        the stored cells are not known."""
        if not self.counted:
            for _ in self:
                pass


__all__ = ["DecodedImages"]
