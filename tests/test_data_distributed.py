"""Two real CPU processes (accelerate + gloo) split a stream disjointly and completely."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from accelerate_cpu import accelerate_launch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "data_coverage.py"
SIZES = (10, 10, 11)  # 31 examples: the last dispatched batch needs padding
BAD = (1, 3)  # (file, row) of the corrupt image in the sharded run


def _write_files(folder: Path, bad: tuple[int, int] | None) -> list[int]:
    """Three parquet shards; returns the stream ids of the decodable examples."""
    import datasets

    folder.mkdir()
    ids = []
    for shard, n in enumerate(SIZES):
        images = []
        for row in range(n):
            buffer = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 10 * shard + row, np.uint8)).save(buffer, "PNG")
            value = buffer.getvalue()
            if (shard, row) == bad:
                value = value[:30]  # truncated: header only
            else:
                ids.append(shard * 2**32 + row)
            images.append({"bytes": value, "path": None})
        features = datasets.Features(
            image=datasets.Image(), label=datasets.ClassLabel(names=["a", "b", "c"])
        )
        ds = datasets.Dataset.from_dict(
            {"image": images, "label": [r % 3 for r in range(n)]}, features=features
        )
        ds.to_parquet(str(folder / f"part-{shard}.parquet"))
    return ids


@pytest.mark.slow
def test_two_processes_cover_the_stream_disjointly(tmp_path):
    clean_ids = _write_files(tmp_path / "clean", bad=None)
    good_ids = _write_files(tmp_path / "with_bad", bad=BAD)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--out", out, "--num-workers", "2", "--dispatch-dir", tmp_path / "clean"]
    accelerate_launch(SCRIPT, [*args, "--shard-dir", tmp_path / "with_bad"], timeout=240)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["shard"]["rank"] for r in ranks] == [0, 1]
    assert all(r["shard"]["num_processes"] == 2 for r in ranks)

    # Sharded (dispatch_batches=False): each process reads its own files; exact partition.
    shard = [set(r["shard"]["ids"]) for r in ranks]
    assert all(len(s) == len(r["shard"]["ids"]) and s for s, r in zip(shard, ranks))
    assert not shard[0] & shard[1]
    assert sorted(shard[0] | shard[1]) == sorted(good_ids)
    bad_id = BAD[0] * 2**32 + BAD[1]
    for r in ranks:  # the corrupt image is skipped and counted once over both processes
        assert r["shard"]["tracker"]["seen"] == 31 and r["shard"]["tracker"]["bad"] == 1
        assert [b["id"] for b in r["shard"]["tracker"]["first_bad"]] == [bad_id]
        reason = r["shard"]["tracker"]["first_bad"][0]["reason"]
        assert reason.startswith("UnidentifiedImageError") and "in-memory bytes" in reason
    assert sum(r["shard"]["skipped_in_batches"] for r in ranks) == 1

    # Dispatched (rank 0 reads, accelerate slices): disjoint except accelerate's end padding
    # (repeats of the first examples, < num_processes of them), complete, and
    # gather_for_metrics returns every example exactly once.
    dispatched = [r["dispatch"]["ids"] for r in ranks]
    assert len(dispatched[0]) == len(dispatched[1]) > 0
    counts = Counter(dispatched[0] + dispatched[1])
    assert set(counts) == set(clean_ids)
    repeats = sum(c - 1 for c in counts.values())
    assert repeats == (-len(clean_ids)) % 2
    assert all(i in clean_ids[:2] for i, c in counts.items() if c > 1)
    for r in ranks:
        assert sorted(r["dispatch"]["gathered"]) == sorted(clean_ids)
        assert r["dispatch"]["tracker"]["bad"] == 0
