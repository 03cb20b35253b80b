"""Running the demo's stages, several at once: subprocesses in their own process groups, their
output prefixed with the stage's name, each stage's CPU time (`os.wait4`) and the memory of the
whole process tree, sampled.

A stage starts when every stage it waits for has finished and a slot is free (`parallel` slots,
one per core by default); a stage whose required stage failed is blocked. The memory that
counts against the budget is the peak of the sum over everything running at once (`peak_bytes`
of the sampler over the demo's own process tree), not the largest single stage.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hf_vitrobust.demo.stages import Stage


class TreeMemorySampler:
    """Samples the summed RSS of a process and all its descendants in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2, children: bool = True) -> None:
        self.pid = pid
        self.interval = interval
        self.children = children
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *(root.children(recursive=True) if self.children else [])]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "skipped" (done earlier), "failed", "blocked"
    seconds: float
    peak_memory_bytes: int
    commands: list[str]
    earlier_seconds: float | None = None  # a skipped stage's time when it last ran
    cpu_seconds: float = 0.0  # user + system CPU time of its processes (load-independent)
    threads: int | None = None  # torch threads it ran with
    # When it ran: seconds from the start of the demo invocation `invocation` (a Unix time).
    invocation: float | None = None
    started: float | None = None
    ended: float | None = None


def display(cmd: Sequence[str]) -> str:
    """The command as a user types it (`python`, not this interpreter's full path)."""
    head = ["python"] if cmd and cmd[0] == sys.executable else list(cmd[:1])
    return shlex.join([*head, *cmd[1:]])


class Console:
    """Prints stages' output lines, each prefixed with its stage, to the terminal and the log."""

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, text: str | bytes, prefix: str = "") -> None:
        data = text.encode() if isinstance(text, str) else text
        if prefix:  # every line (split on "\n" only: a progress bar's "\r" stays in its line)
            head = prefix.encode()
            *lines, rest = data.split(b"\n")
            data = b"".join(head + line + b"\n" for line in lines) + (head + rest if rest else b"")
        with self._lock:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            self._log.write(data)
            self._log.flush()

    def close(self) -> None:
        self._log.close()


class ProcessGroups:
    """The process groups of the running commands, to stop them all on Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._lock = threading.Lock()

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def stop_all(self) -> None:
        with self._lock:
            pids = list(self._pids)
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline and psutil.pid_exists(pid):
                time.sleep(0.1)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_command(
    cmd: Sequence[str], env: dict[str, str], console: Console, prefix: str, groups: ProcessGroups
) -> tuple[int, int, float]:
    """Run one command, its output prefixed on the console; (exit code, peak RSS of its process
    tree, CPU seconds of it and the children it waited for)."""
    console.write(f"$ {shlex.join(cmd)}\n", prefix)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    groups.add(proc.pid)
    try:
        with TreeMemorySampler(proc.pid) as sampler:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                console.write(line, prefix)
            # wait4: the exit status and the rusage of this command alone (a concurrent stage's
            # children are not counted, as RUSAGE_CHILDREN would).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        groups.discard(proc.pid)
    return proc.returncode, sampler.peak_bytes, usage.ru_utime + usage.ru_stime


def run_stage(
    stage: Stage,
    env: dict[str, str],
    threads: int,
    console: Console,
    groups: ProcessGroups,
    clock: Callable[[], float],
) -> StageResult:
    """Run a stage's commands with `threads` torch threads, then its in-process function."""
    started = clock()
    t0, cpu0 = time.perf_counter(), time.process_time()
    env = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    prefix = f"[{stage.name}] "
    peak, status, cmds, cpu = 0, "ran", [], 0.0
    for cmd in stage.commands:
        cmds.append(display(cmd))
        code, cmd_peak, cmd_cpu = run_command(cmd, env, console, prefix, groups)
        peak, cpu = max(peak, cmd_peak), cpu + cmd_cpu
        if code != 0:
            console.write(f"command exited with status {code}\n", prefix)
            status = "failed"
            break
    if status == "ran" and stage.function is not None:
        # In-process work (cards, report): its CPU time is this process's, measured in this
        # thread alone when nothing else runs in-process at the same time.
        # This process alone: stages running beside it are counted in their own results.
        with TreeMemorySampler(os.getpid(), children=False) as sampler:
            try:
                stage.function()
            except Exception as error:  # noqa: BLE001 - reported; later stages go on
                console.write(f"{type(error).__name__}: {error}\n", prefix)
                status = "failed"
        peak = max(peak, sampler.peak_bytes)
        cpu += time.process_time() - cpu0
    seconds = time.perf_counter() - t0
    return StageResult(
        stage.name,
        status,
        seconds,
        peak,
        cmds,
        cpu_seconds=cpu,
        threads=threads,
        started=started,
        ended=clock(),
    )


@dataclass
class Plan:
    """What the scheduler needs to know about the demo invocation."""

    parallel: int  # stages at once
    threads: int  # torch threads in all (the cores not busy with other work)
    force: set[str]
    only: set[str] | None


def threads_for(stage: Stage, plan: Plan, running: int, waiting: int) -> int:
    """Torch threads of a stage starting now: its own choice (training: 1, with its DataLoader
    worker on the other core), all free threads when it runs alone, else an equal share."""
    if stage.threads is not None:
        return stage.threads
    if running == 0 and waiting == 0:
        return plan.threads
    return max(1, plan.threads // plan.parallel)


def schedule(
    stages: list[Stage],
    plan: Plan,
    start: Callable[[Stage, int], Any],
    skip: Callable[[Stage, bool], StageResult | None],
    done: queue.Queue[StageResult],
    on_result: Callable[[StageResult], None],
) -> list[StageResult]:
    """Run the stages in dependency order, up to `plan.parallel` at once.

    `start(stage, threads)` runs a stage in the background and puts its `StageResult` on `done`;
    `skip(stage, upstream_ran)` returns the result of a stage done earlier (None: run it). A
    stage waits for its `requires` and `refresh_after` stages; it is blocked when a required
    one failed (unless `always`). Results come back in the stages' order.
    """
    selected = [s for s in stages if plan.only is None or s.name in plan.only]
    chosen = {s.name for s in selected}

    def waits_for(stage: Stage) -> list[str]:
        return [n for n in (*stage.requires, *stage.refresh_after) if n in chosen]

    finished: dict[str, StageResult] = {}
    pending = list(selected)
    running: set[str] = set()

    def finish(result: StageResult) -> None:
        finished[result.name] = result
        on_result(result)

    while pending or running:
        progress = True
        while progress:
            progress = False
            for stage in list(pending):
                waits = waits_for(stage)
                if any(n not in finished for n in waits):
                    continue
                failed = [n for n in stage.requires if n in finished and finished[n].status in
                          ("failed", "blocked")]  # fmt: skip
                if failed and not stage.always:
                    pending.remove(stage)
                    finish(StageResult(stage.name, "blocked", 0.0, 0, []))
                    progress = True
                    continue
                upstream_ran = any(finished[n].status == "ran" for n in waits)
                earlier = None if stage.name in plan.force else skip(stage, upstream_ran)
                if earlier is not None:
                    pending.remove(stage)
                    finish(earlier)
                    progress = True
                    continue
                if len(running) >= plan.parallel:
                    continue
                pending.remove(stage)
                ready = sum(all(n in finished for n in waits_for(s)) for s in pending)
                start(stage, threads_for(stage, plan, len(running), ready))
                running.add(stage.name)
                progress = True
        if running:
            result = done.get()
            running.discard(result.name)
            finish(result)
        elif pending:  # nothing runs and nothing can start: a dependency cycle
            raise ValueError(f"stages {[s.name for s in pending]} wait for each other.")
    return [finished[s.name] for s in selected]


__all__ = [
    "Console",
    "Plan",
    "ProcessGroups",
    "StageResult",
    "TreeMemorySampler",
    "display",
    "run_command",
    "run_stage",
    "schedule",
    "threads_for",
]
