"""Sharding and gathering across real processes (2 CPU processes over gloo) equals one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from accelerate_cpu import accelerate_launch

from hf_vitrobust.distributed import gather_records, shard_for_process

REPO = Path(__file__).resolve().parents[1]
ONE_PROCESS = {"num_processes": 1, "process_index": 0, "is_main_process": True}
SCRIPT = REPO / "tests" / "scripts" / "distributed_helpers.py"


@pytest.mark.slow
def test_two_processes_gather_exactly_what_one_process_sees(tmp_path):
    """#16: map-style data and streams of 4, 3 and 1 shards (and a shuffled, taken subset) over
    2 real processes: every process gets a non-empty share, the shares are disjoint and
    complete, and the gathered records equal one process's."""
    sys.path.insert(0, str(SCRIPT.parent))
    import distributed_helpers  # the same code, run here as one process

    distributed_helpers.main(str(tmp_path / "one.json"), SimpleNamespace(**ONE_PROCESS))
    one = json.loads((tmp_path / "one.json").read_text())
    accelerate_launch(SCRIPT, [tmp_path / "two.json"])
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    for name in ("map", "stream_4_shards", "stream_3_shards", "stream_1_shard"):
        assert two[name] == one[name]
        assert two[name]["example_ids"] == list(range(23))
        shares = two["shares"][name]
        assert set(shares) == {"0", "1"} and all(shares.values()), (name, shares)
    assert two["stream_subset"] == one["stream_subset"]
    assert len(two["stream_subset"]["example_ids"]) == 11
    # The bad-image limit, crossed only by both processes' images together, stops both at the
    # same check, with the same whole-run figures.
    (alone,) = one["trackers"]
    assert not alone["raised"] and alone["summary"]["seen"] == 8
    assert [t["raised"] for t in two["trackers"]] == [True, True]
    summaries = [t["summary"] for t in two["trackers"]]
    assert summaries[0] == summaries[1]
    assert (summaries[0]["seen"], summaries[0]["bad"]) == (16, 2)
    assert summaries[0]["first_bad"][0] == {"id": 0, "path": "/data/0.jpg", "reason": "undecodable"}


def test_gather_records_sorts_by_example_id_and_refuses_overlaps():
    rec = gather_records({"example_ids": np.array([3, 1, 2]), "v": np.array([30, 10, 20])})
    assert rec["example_ids"].tolist() == [1, 2, 3] and rec["v"].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="twice"):
        gather_records({"example_ids": np.array([1, 1]), "v": np.array([0, 0])})
    with pytest.raises(ValueError, match="rows"):
        gather_records({"example_ids": np.array([1, 2]), "v": np.array([0])})
    with pytest.raises(ValueError, match="example_ids"):
        gather_records({"v": np.array([0])})


def test_one_process_keeps_the_whole_dataset():
    import datasets

    table = datasets.Dataset.from_dict({"example_id": [0, 1, 2]})
    assert shard_for_process(table) is table


def test_gather_records_takes_empty_shares_of_any_shape(monkeypatch):
    """A process that got no images may hold (0,) arrays where others hold (n, d)."""
    from hf_vitrobust import distributed

    parts = [
        {"example_ids": np.array([2, 1]), "v": np.ones((2, 3))},
        {"example_ids": np.array([]), "v": np.array([])},
    ]
    monkeypatch.setattr(distributed, "gather_object", lambda obj, state=None: parts)
    rec = gather_records(parts[0], SimpleNamespace(num_processes=2, is_main_process=True))
    assert rec["example_ids"].tolist() == [1, 2] and rec["v"].shape == (2, 3)
