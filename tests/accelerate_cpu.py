"""Helpers for tests that run a script on several real CPU processes under `accelerate launch`.

Without a GPU, `--multi_gpu --num_processes N` starts N processes joined over gloo (docs/data.md,
"Distributed"); each gets one thread, like a single-process run it is compared with.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for accelerate's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(script: str | os.PathLike, args: Sequence[str], processes: int = 2) -> list[str]:
    """`python -m accelerate.commands.launch ... script args` on `processes` CPU processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(script), *map(str, args),
    ]  # fmt: skip


def accelerate_launch(
    script: str | os.PathLike,
    args: Sequence[str],
    processes: int = 2,
    timeout: int = 600,
    **env: str,
) -> subprocess.CompletedProcess:
    """Run `script args` on `processes` CPU processes; assert success (stderr tail on failure)."""
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    proc = subprocess.run(
        launch_command(script, args, processes),
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def assert_same_json(a: Any, b: Any, where: str = "", rel: float = 1e-9) -> None:
    """Equal structure and strings; floats equal to `rel` (sums over processes add in another
    order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_json(a[key], b[key], f"{where}[{key!r}]", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)
