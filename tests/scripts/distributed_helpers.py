"""Run under `accelerate launch`: shard map-style data and streams whose shard count does or
does not divide by the process count (and a shuffled, taken subset), gather per-image records,
and check a BadImageTracker whose limit is crossed only by both processes' images together."""

from __future__ import annotations

import json
import sys

import datasets
import numpy as np

from hf_vitrobust.data import BadImageTracker, TooManyBadImagesError
from hf_vitrobust.distributed import (
    gather_counts,
    gather_object,
    gather_records,
    process_state,
    shard_for_process,
)

N = 23


def _datasets() -> dict[str, object]:
    table = datasets.Dataset.from_dict(
        {"example_id": list(range(N)), "x": [i * i for i in range(N)]}
    )
    return {
        "map": table,
        "stream_4_shards": table.to_iterable_dataset(num_shards=4),
        "stream_3_shards": table.to_iterable_dataset(num_shards=3),
        "stream_1_shard": table.to_iterable_dataset(num_shards=1),
        "stream_subset": table.to_iterable_dataset(num_shards=4)
        .shuffle(seed=5, buffer_size=8)
        .take(11),
    }


def _tracker(state) -> dict:
    """Rank 0 sees 2 bad of 8, rank 1 none of 8: below min_examples alone, 2/16 > 10% together."""
    tracker = BadImageTracker(max_bad_fraction=0.1, min_examples=10)
    base = 100 * state.process_index
    bad = {base: f"/data/{base}.jpg", base + 1: "truncated"} if state.process_index == 0 else {}
    tracker.record([base + i for i in range(8) if base + i not in bad], bad)
    tracker.check()  # alone: 8 < min_examples
    tracker.sync(state)
    try:
        tracker.check()
        raised = False
    except TooManyBadImagesError:
        raised = True
    return {"raised": raised, "summary": tracker.summary()}


def main(out: str, state=None) -> None:
    """Write the gathered results to ``out`` (``state``: default this launch's processes)."""
    state = state or process_state()
    result: dict = {"shares": {}}
    for name, ds in _datasets().items():
        rows = list(shard_for_process(ds, state))
        ids = np.array([r["example_id"] for r in rows], dtype=np.int64)
        result["shares"][name] = gather_counts({str(state.process_index): len(ids)}, state)
        rec = gather_records({"example_ids": ids, "x": np.array([r["x"] for r in rows])}, state)
        if rec is not None:
            result[name] = {k: v.tolist() for k, v in rec.items()}
    trackers = gather_object(_tracker(state), state)
    if state.is_main_process:
        result["trackers"] = trackers
        result["num_processes"] = state.num_processes
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
