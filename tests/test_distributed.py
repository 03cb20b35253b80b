"""Sharding and gathering across real processes (2 CPU processes over gloo) equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_vitrobust.distributed import gather_records, shard_for_process

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "distributed_helpers.py"


def _launch(out: Path, processes: int, port: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT), str(out)]
    else:
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), str(SCRIPT), str(out),
        ]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_gather_exactly_what_one_process_sees(tmp_path):
    one = _launch(tmp_path / "one.json", 1, 0)
    two = _launch(tmp_path / "two.json", 2, 29731)
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    for name in ("map", "stream"):
        assert two[name] == one[name]
        assert two[name]["example_ids"] == list(range(23))
    assert two["counts"] == one["counts"] == {"seen": 23}


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
