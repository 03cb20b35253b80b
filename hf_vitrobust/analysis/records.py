"""One condition streamed through every model: per-image records and CKA sums, then gathered.

Each process streams its own share of the images (`distributed.shard_for_process`). Per batch,
every model does one capture forward (`ActivationCapture`, activations reduced inside hooks);
what is kept is per image and small (lens correctness and true-class probability per hidden
state, attention entropy per layer x head, patched correctness per site: O(L x H) numbers per
image and model, never an activation) plus CKA's float64 sums (O(D^2) per layer, independent
of the number of images). `ConditionRecords.gather` then joins every process's per-image
records on the main process, sorted by example id (`distributed.gather_records`), and sums the
CKA statistics exactly across processes, so the statistics that follow see what one process
would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch import nn
from tqdm.auto import tqdm

from hf_vitrobust.analysis.attention import EntropyRecorder
from hf_vitrobust.analysis.capture import ActivationCapture
from hf_vitrobust.analysis.lens import LensRecorder
from hf_vitrobust.analysis.patching import PatchingRecorder, patched_logits
from hf_vitrobust.analysis.similarity import StreamingLinearCKA
from hf_vitrobust.distributed import EXAMPLE_IDS, gather_records

__all__ = ["CKA_KINDS", "ConditionRecords", "Sections", "stream_condition"]

#: The representations CKA compares, as named in analysis.json.
CKA_KINDS = ("cls", "patch_mean")
_SEP = "\t"  # joins section, model key and field in the flat records (keys may hold "/")


@dataclass(frozen=True)
class Sections:
    """Which analyses run."""

    lens: bool = True
    attention: bool = True
    cka: bool = True
    patching: bool = True


class ConditionRecords:
    """Per-image records (lens, entropy, patching) and CKA sums of every model on one condition,
    for this process's images."""

    def __init__(self, names: Iterable[str], on: Sections) -> None:
        names = list(names)
        self.finetuned = [n for n in names if n != "base"]
        self.on = on
        self.n_images = 0
        self._ids: list[np.ndarray] = []
        self.recorders: dict[str, dict[str, Any]] = {
            "lens": {name: LensRecorder() for name in names} if on.lens else {},
            "entropy": {name: EntropyRecorder() for name in names} if on.attention else {},
            "patching": {n: PatchingRecorder() for n in self.finetuned} if on.patching else {},
        }
        self.cka = {
            name: {kind: StreamingLinearCKA() for kind in CKA_KINDS} for name in self.finetuned
        }

    def update(
        self,
        base: nn.Module,
        captures: dict[str, ActivationCapture],
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        example_ids: torch.Tensor,
    ) -> None:
        """Capture one batch through every model and record it."""
        self.n_images += len(labels)
        self._ids.append(np.asarray(example_ids.cpu(), dtype=np.int64))
        base_out = captures["base"](pixel_values)
        outs = {"base": base_out}
        for name in self.finetuned:
            out = outs[name] = captures[name](pixel_values)
            if self.on.cka:
                for kind in CKA_KINDS:
                    self.cka[name][kind].update(getattr(base_out, kind), getattr(out, kind))
            if self.on.patching:
                patched = patched_logits(base, out.hidden)
                self.recorders["patching"][name].update(
                    base_out.logits, out.logits, patched, labels
                )
                out.hidden = None  # free the batch's hidden states now
        for name, out in outs.items():
            if self.on.lens:
                self.recorders["lens"][name].update(out.lens_logits, labels, out.logits)
            if self.on.attention:
                self.recorders["entropy"][name].update(out.entropy, out.cls_entropy)

    def _flat(self) -> dict[str, np.ndarray]:
        flat = {EXAMPLE_IDS: np.concatenate(self._ids)}
        for section, by_model in self.recorders.items():
            for name, recorder in by_model.items():
                for field, values in recorder.arrays().items():
                    flat[_SEP.join((section, name, field))] = values
        return flat

    def gather(self, state: PartialState) -> dict[str, Any] | None:
        """Every process's records, joined on the main process (a collective: every process
        calls it). Returns, on the main process, ``{"example_ids": [N], "n_images": N,
        "lens" | "entropy" | "patching": {model: {field: per-image array}}, "cka": {model:
        {kind: StreamingLinearCKA over all images}}}``; ``None`` on the others."""
        counts = [self.n_images] if state.num_processes == 1 else gather_object([self.n_images])
        if min(counts) == 0:
            raise ValueError(
                f"Images per process: {counts}. Every process needs at least one image: run "
                "fewer processes, or analyse more images."
            )
        if self.on.cka:
            for by_kind in self.cka.values():
                for acc in by_kind.values():
                    acc.reduce_across(state)
        flat = gather_records(self._flat(), state)
        if flat is None:
            return None
        out: dict[str, Any] = {
            EXAMPLE_IDS: flat.pop(EXAMPLE_IDS),
            "lens": {},
            "entropy": {},
            "patching": {},
            "cka": self.cka if self.on.cka else {},
        }
        out["n_images"] = len(out[EXAMPLE_IDS])
        for key, values in flat.items():
            section, name, field = key.split(_SEP)
            out[section].setdefault(name, {})[field] = values
        return out


def stream_condition(
    models: dict[str, nn.Module],
    batches: Callable[[str], Iterable[tuple]],
    condition: str,
    on: Sections,
    device: torch.device,
    progress: bool,
) -> ConditionRecords:
    """Stream this process's batches of `condition` through every model.

    `batches(condition)` yields `(pixel_values, labels)` or `(pixel_values, labels,
    example_ids)`; without ids, images are numbered in the order they come.
    """
    records = ConditionRecords(models, on)
    with ExitStack() as stack:
        captures = {
            name: stack.enter_context(
                ActivationCapture(
                    model,
                    entropy=on.attention,
                    keep_hidden=on.patching and name != "base",
                    name=name,
                )
            )
            for name, model in models.items()
        }
        for batch in tqdm(
            batches(condition),
            desc=f"analysis [{condition}]",
            unit="batch",
            disable=not progress,
        ):
            pixel_values, labels = batch[0], batch[1]
            if len(batch) > 2:
                example_ids = torch.as_tensor(batch[2])
            else:
                example_ids = torch.arange(records.n_images, records.n_images + len(labels))
            records.update(
                models["base"],
                captures,
                pixel_values.to(device),
                labels.to(device),
                example_ids,
            )
    return records
