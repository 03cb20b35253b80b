"""Sharding the held-out images of a comparison stage across processes, and gathering results.

Evaluation, analysis and SAE activation generation run under ``accelerate launch`` as plain
loops (no Trainer): each process takes its own share of the images, computes per-image records,
and the main process gathers them, sorted by ``example_id``, so the files it writes are the
same as a single process's. Corrupted pixels depend only on ``(seed, example_id, corruption,
severity)`` (``seeding.image_seed``), so the paired design holds on any number of processes.

Layer 1: imports accelerate and datasets, nothing above the leaf modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node

EXAMPLE_IDS = "example_ids"


def process_state() -> PartialState:
    """The accelerate state of this process (one process when not launched by accelerate).

    Without a GPU, ``accelerate launch --multi_gpu`` starts the processes but only ``cpu=True``
    joins them into one gloo group; otherwise each would run alone.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def shard_for_process(dataset: Any, state: PartialState | None = None) -> Any:
    """This process's share of ``dataset``.

    Streams: ``split_dataset_by_node`` (whole shards per process when they divide evenly, else
    every n-th example). Map-style: a contiguous block of rows, so one process reads what a
    single-process run reads, in the same order.
    """
    state = state or process_state()
    if state.num_processes == 1:
        return dataset
    if isinstance(dataset, IterableDataset):
        return split_dataset_by_node(
            dataset, rank=state.process_index, world_size=state.num_processes
        )
    return dataset.shard(num_shards=state.num_processes, index=state.process_index, contiguous=True)


def gather_records(
    records: Mapping[str, np.ndarray], state: PartialState | None = None
) -> dict[str, np.ndarray] | None:
    """Per-image arrays of every process, concatenated and sorted by ``example_ids``.

    ``records`` maps names to arrays whose first axis is the image; it must hold
    ``example_ids``. Returns the gathered dict on the main process and ``None`` elsewhere
    (every process must call it). Duplicate example ids (a shard read twice) are an error.
    """
    state = state or process_state()
    if EXAMPLE_IDS not in records:
        raise ValueError(f"records must hold {EXAMPLE_IDS!r} to be gathered in a fixed order.")
    local = {k: np.asarray(v) for k, v in records.items()}
    n = len(local[EXAMPLE_IDS])
    for key, value in local.items():
        if len(value) != n:
            raise ValueError(f"records[{key!r}] has {len(value)} rows, example_ids has {n}.")
    parts = [local] if state.num_processes == 1 else gather_object([local])
    if not state.is_main_process:
        return None
    merged = {k: np.concatenate([p[k] for p in parts]) for k in local}
    order = np.argsort(merged[EXAMPLE_IDS], kind="stable")
    ids = merged[EXAMPLE_IDS][order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError("the same example id was processed twice: shards overlap.")
    return {k: v[order] for k, v in merged.items()}


def gather_counts(counts: Mapping[str, int], state: PartialState | None = None) -> dict[str, int]:
    """Integer counters (e.g. bad images) summed over processes; the same on every process."""
    state = state or process_state()
    if state.num_processes == 1:
        return dict(counts)
    total: dict[str, int] = {}
    for part in gather_object([dict(counts)]):
        for key, value in part.items():
            total[key] = total.get(key, 0) + int(value)
    return total


__all__ = ["EXAMPLE_IDS", "gather_counts", "gather_records", "process_state", "shard_for_process"]
