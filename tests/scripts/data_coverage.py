"""Launched by tests/test_data_distributed.py under `accelerate launch` with 2 processes.

Streams parquet files through `load_image_dataset(streaming=True)` and `CorruptionCollator` in a
DataLoader prepared by accelerate, in both modes (dispatch_batches True: rank 0 reads and
dispatches; False: each process reads its own shards), and writes the example ids each process
received to `<out>/rank<r>.json`.
Accelerate's dispatcher slices batches evenly, so the sharded run is the one given a corrupt image:
each process records the batches it consumed in a BadImageTracker (main process, not the
workers), and `gather` merges the processes' unique ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from hf_vitrobust.data import BadImageTracker, CorruptionCollator, load_image_dataset
from hf_vitrobust.models import tiny_image_processor


def run(files: list[str], dispatch: bool, batch_size: int, num_workers: int) -> dict:
    # On a machine without GPUs, `--multi_gpu` starts the processes but only `cpu=True` makes
    # accelerate join them (gloo); otherwise each process runs alone.
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(dispatch_batches=dispatch),
    )
    stream = load_image_dataset(files, streaming=True)
    tracker = BadImageTracker(max_bad_fraction=0.5)
    # dispatch_batches broadcasts tensors only (no skipped ids: that run has no bad image).
    collator = CorruptionCollator(tiny_image_processor(8), tensors_only=dispatch)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=batch_size, collate_fn=collator, num_workers=num_workers
    )
    loader = accelerator.prepare(loader)
    ids, gathered, batches, skipped = [], [], 0, 0
    for batch in loader:
        ids += batch["example_ids"].tolist()
        if not dispatch:
            tracker.record_batch(batch)
        num_skipped = batch["num_skipped"]
        skipped += int(num_skipped.sum()) if torch.is_tensor(num_skipped) else int(num_skipped)
        if dispatch:  # equal slices on every process; gather_for_metrics drops the end padding
            gathered += accelerator.gather_for_metrics(batch["example_ids"]).tolist()
        batches += 1
    counts = tracker.gather(accelerator)
    accelerator.wait_for_everyone()
    return {
        "rank": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "ids": ids,
        "gathered": gathered,
        "batches": batches,
        "skipped_in_batches": skipped,
        "tracker": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--dispatch-dir", required=True, help="parquet files for dispatch mode")
    parser.add_argument("--shard-dir", required=True, help="parquet files for sharded mode")
    args = parser.parse_args(argv)
    results = {}
    for mode, folder in (("dispatch", args.dispatch_dir), ("shard", args.shard_dir)):
        files = sorted(str(f) for f in Path(folder).glob("*.parquet"))
        results[mode] = run(files, mode == "dispatch", args.batch_size, args.num_workers)
    rank = results["shard"]["rank"]
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
