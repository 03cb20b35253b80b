"""The GPU training benchmark runs (on CPU, tiny model): it is ready for a GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_train_bench_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_train.py"), "--device", "cpu", "--tiny",
         "--steps", "2", "--json", str(out)],
        check=True, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert set(figures["modes"]) == {"plain", "worst_of_4", "pgd_3"}
    for row in figures["modes"].values():
        assert row["images_per_s"] > 0
    assert figures["modes"]["plain"]["images_per_s_vs_plain"] == pytest.approx(1.0)
    assert set(figures["cpu_cores_per_gpu"]) == {"low_frequency", "high_frequency"}
