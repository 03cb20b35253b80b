"""Run under `accelerate launch`: shard a map-style dataset and a stream, gather per-image records."""

from __future__ import annotations

import json
import sys

import datasets
import numpy as np

from hf_vitrobust.distributed import gather_counts, gather_records, process_state, shard_for_process


def main(out: str) -> None:
    state = process_state()
    table = datasets.Dataset.from_dict(
        {"example_id": list(range(23)), "x": [i * i for i in range(23)]}
    )
    stream = table.to_iterable_dataset(num_shards=4)
    result = {}
    for name, ds in (("map", table), ("stream", stream)):
        rows = list(shard_for_process(ds, state))
        ids = np.array([r["example_id"] for r in rows], dtype=np.int64)
        rec = gather_records({"example_ids": ids, "x": np.array([r["x"] for r in rows])}, state)
        if rec is not None:
            result[name] = {k: v.tolist() for k, v in rec.items()}
    counts = gather_counts({"seen": len(list(shard_for_process(table, state)))}, state)
    if state.is_main_process:
        result["counts"] = counts
        result["num_processes"] = state.num_processes
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
