"""``CorruptionCollator``: the DataLoader ``collate_fn`` of training (and of worst-of-k).

Per example, in the DataLoader workers: decode to RGB uint8 and check the label
(``decode_examples``; undecodable images are skipped and *reported* in the batch), resize with
the model's processor settings, draw and apply ``k`` corruption views on uint8
(``CorruptionViews``), then normalise everything into tensors. Worst-of-k training picks the
worst of the ``k`` views per image (``training.adversary``). The main process counts what it
consumes: ``BadImageTracker.record_batch(batch)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hf_vitrobust.data.decode import decode_examples
from hf_vitrobust.data.preprocess import ProcessorSpec
from hf_vitrobust.data.views import CorruptionViews

#: Batch keys a ``CorruptionCollator`` adds besides ``pixel_values`` and ``labels`` (the model
#: must not see them).
COLLATOR_EXTRA_KEYS: tuple[str, ...] = (
    "views",
    "view_corruptions",
    "view_severities",
    "view_corruption_ids",
    "example_ids",
    "num_skipped",
    "skipped_example_ids",
    "skipped_images",
)


class CorruptionCollator:
    """DataLoader ``collate_fn``: decode, validate, resize, corrupt (uint8), normalise, stack.

    Runs in the DataLoader workers, so decoding and corruptions happen there on uint8 images,
    before normalisation. Output (``B`` = decodable examples in the batch):

    - ``pixel_values`` float [B,3,H,W], ``labels`` long [B], ``example_ids`` long [B];
    - with ``k > 0``: ``views`` float [B,k,3,H,W], ``view_corruptions`` (B×k names),
      ``view_corruption_ids`` long [B,k] (indices into ``views.names``), ``view_severities``
      long [B,k];
    - ``num_skipped``: undecodable images dropped from this batch; ``skipped_example_ids``
      (their ids) and ``skipped_images`` (``{example_id: BadImage(path, reason)}``), which the
      main process gives to ``BadImageTracker.record_batch``.

    ``tensors_only=True`` leaves out the lists and dicts and makes ``num_skipped`` a long tensor
    [B] (the batch's count on its first row), because accelerate's ``dispatch_batches`` mode
    broadcasts and slices tensors only (bad images then cannot be named or counted by id). The epoch reaches workers when the DataLoader iterator
    is created (PyTorch's default non-persistent workers): call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        processor: Any,
        views: CorruptionViews | None = None,
        k: int = 0,
        *,
        num_labels: int | None = None,
        tensors_only: bool = False,
    ) -> None:
        if k < 0:
            raise ValueError(f"k (views per image) must be >= 0, not {k}.")
        if k > 0 and views is None:
            raise ValueError("k > 0 corrupted views need views=CorruptionViews(corruptions, ...).")
        self.spec = ProcessorSpec.from_processor(processor)
        self.views = views
        self.k = int(k)
        self.num_labels = num_labels
        self.tensors_only = tensors_only
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose corruption draws the next batches use."""
        self.epoch = int(epoch)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        clean, labels, ids, bad = decode_examples(examples, self.spec, num_labels=self.num_labels)
        batch: dict[str, Any] = {
            "pixel_values": self.spec.to_tensor(clean),
            "labels": torch.tensor(labels, dtype=torch.long),
            "example_ids": torch.tensor(ids, dtype=torch.long),
        }
        if self.k:
            self._add_views(batch, clean, ids)
        if self.tensors_only:
            skipped = torch.zeros(len(clean), dtype=torch.long)
            if len(clean):
                skipped[0] = len(bad)
            batch["num_skipped"] = skipped
        else:
            batch["num_skipped"] = len(bad)
            batch["skipped_example_ids"] = list(bad)
            batch["skipped_images"] = bad
        return batch

    def _add_views(self, batch: dict[str, Any], clean: list[np.ndarray], ids: list[int]) -> None:
        """Draw, apply and stack ``k`` corrupted views of every clean image into ``batch``."""
        assert self.views is not None
        corrupted, names, name_ids, severities = [], [], [], []
        index = {name: i for i, name in enumerate(self.views.names)}
        for image, example_id in zip(clean, ids):
            row_names, row_sev = [], []
            for view in range(self.k):
                out, name, severity = self.views.apply(image, self.epoch, example_id, view)
                corrupted.append(out)
                row_names.append(name)
                row_sev.append(severity)
            names.append(row_names)
            name_ids.append([index[n] for n in row_names])
            severities.append(row_sev)
        height, width = self.spec.size
        batch["views"] = self.spec.to_tensor(corrupted).view(len(clean), self.k, 3, height, width)
        batch["view_corruption_ids"] = torch.tensor(name_ids, dtype=torch.long).view(-1, self.k)
        batch["view_severities"] = torch.tensor(severities, dtype=torch.long).view(-1, self.k)
        if not self.tensors_only:
            batch["view_corruptions"] = names


__all__ = ["COLLATOR_EXTRA_KEYS", "CorruptionCollator"]
