"""Running the stages: subprocesses in their own process group, the process-tree memory
sampler, skip/resume markers, thread choice, and the time and memory budget (`stages.json`)."""

from __future__ import annotations

import os
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from hf_vitrobust.configs import parse_recipe
from hf_vitrobust.constants import STAGES_FILE
from hf_vitrobust.demo.config import REPO_ROOT, SIZES_FILE, DemoArguments, read_sizes
from hf_vitrobust.demo.stages import Stage, build_stages
from hf_vitrobust.io import read_json, write_json_atomic
from hf_vitrobust.report import check_in_browser
from hf_vitrobust.runtime import header, read_stages

GIB = 1024**3
LOG_FILE = "demo_stages.log"


class TreeMemorySampler:
    """Samples the summed RSS of a process and all its descendants in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
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
                procs = [root, *root.children(recursive=True)]
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


def _display(cmd: Sequence[str]) -> str:
    """The command as a user types it (`python`, not this interpreter's full path)."""
    head = ["python"] if cmd and cmd[0] == sys.executable else list(cmd[:1])
    return shlex.join([*head, *cmd[1:]])


def _marker(out: Path, name: str) -> Path:
    return out / ".stages" / f"{name}.json"


def _is_done(out: Path, stage: Stage) -> bool:
    return _marker(out, stage.name).is_file() and all(p.exists() for p in stage.outputs)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(cmd: Sequence[str], log: Path, env: dict[str, str]) -> tuple[int, int]:
    """Run one command, streaming its output to the terminal and to `log`; (exit code, peak RSS).

    The command runs in its own process group, so that an interrupted demo (Ctrl-C, SIGTERM)
    takes the recipe and its DataLoader workers down with it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as log_file:
        log_file.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            with TreeMemorySampler(proc.pid) as sampler:
                assert proc.stdout is not None
                for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    log_file.write(chunk)
                code = proc.wait()
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            raise
    return code, sampler.peak_bytes


def choose_threads() -> int:
    """Threads for the stages: the cores not busy with other work (1-minute load average).

    Torch's OpenMP threads spin while waiting for each other; with more threads than free cores
    a step can run several times slower than with one thread.
    """
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0]
    return max(1, min(cores, round(cores - busy)))


def _stage_env(threads: int) -> dict[str, str]:
    """The environment of every stage: offline, `threads` torch threads, this checkout first."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _skipped(out: Path, stage: Stage) -> StageResult:
    """A stage done in an earlier invocation, with the time and memory measured then."""
    earlier = read_json(_marker(out, stage.name))
    return StageResult(
        stage.name,
        "skipped",
        0.0,
        int(earlier.get("peak_memory_bytes", 0)),
        earlier.get("commands", []),
        earlier.get("seconds"),
        earlier.get("cpu_seconds", 0.0),
    )


def _run_stage(stage: Stage, out: Path, env: dict[str, str]) -> StageResult:
    """Run a stage's commands, then its in-process function; time and peak memory."""
    _marker(out, stage.name).unlink(missing_ok=True)
    t0, cpu0 = time.perf_counter(), _children_cpu_seconds() + time.process_time()
    peak, status, cmds = 0, "ran", []
    if stage.threads is not None:
        env = {**env, "OMP_NUM_THREADS": str(stage.threads), "MKL_NUM_THREADS": str(stage.threads)}
    for cmd in stage.commands:
        cmds.append(_display(cmd))
        print(f"  $ {_display(cmd)}", flush=True)
        code, cmd_peak = run_command(cmd, out / LOG_FILE, env)
        peak = max(peak, cmd_peak)
        if code != 0:
            print(f"  command exited with status {code}", flush=True)
            status = "failed"
            break
    if status == "ran" and stage.function is not None:
        with TreeMemorySampler(os.getpid()) as sampler:
            try:
                stage.function()
            except Exception as error:  # noqa: BLE001 - reported; later stages go on
                print(f"  {type(error).__name__}: {error}", flush=True)
                status = "failed"
        peak = max(peak, sampler.peak_bytes)
    seconds = time.perf_counter() - t0
    cpu = _children_cpu_seconds() + time.process_time() - cpu0
    return StageResult(stage.name, status, seconds, peak, cmds, cpu_seconds=cpu)


def _stage_names(args: DemoArguments, stages: list[Stage]) -> set[str]:
    """The stages forced to rerun; unknown names in --only/--force are an error."""
    names = [s.name for s in stages]
    for option in ("only", "force"):
        unknown = sorted(set(getattr(args, option) or []) - set(names) - {"all"})
        if unknown:
            raise ValueError(f"--{option}: unknown stage(s) {unknown}; stages are {names}.")
    force = set(args.force or [])
    return set(names) if "all" in force else force


def run_demo(
    args: DemoArguments, sizes: dict[str, Any] | None = None, stages: list[Stage] | None = None
) -> list[StageResult]:
    """Run (or skip) every stage, then print and save the timing and memory summary.

    `sizes`: the sizes file's contents (default: `read_sizes()`); `stages`: the stages to run
    (default: `build_stages(args, sizes)`).
    """
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = read_sizes() if sizes is None else sizes
    stages = build_stages(args, sizes) if stages is None else stages
    force = _stage_names(args, stages)
    threads = args.threads = args.threads or choose_threads()
    print(
        f"[demo] {threads} CPU thread(s) for evaluation/analysis/SAE stages, 1 (+1 DataLoader "
        f"worker) for training ({os.cpu_count()} cores)",
        flush=True,
    )
    env = _stage_env(threads)
    results: list[StageResult] = []
    failed: set[str] = set()
    start_all = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        title = f"[demo {i}/{len(stages)}] {stage.name}: {stage.description}"
        if args.only and stage.name not in args.only:
            continue
        blocked = [] if stage.always else sorted(failed & set(stage.requires))
        if blocked:
            print(f"{title} — blocked by failed stage(s) {blocked}", flush=True)
            failed.add(stage.name)
            results.append(StageResult(stage.name, "blocked", 0.0, 0, []))
            continue
        upstream = set(stage.requires) | set(stage.refresh_after)
        upstream_ran = any(r.status == "ran" and r.name in upstream for r in results)
        if stage.name not in force and not upstream_ran and _is_done(out, stage):
            print(f"{title} — done earlier, skipped", flush=True)
            results.append(_skipped(out, stage))
            continue
        print(title, flush=True)
        results.append(_run_stage(stage, out, env))
        if results[-1].status == "failed":
            failed.add(stage.name)
            print(
                f"[demo] stage {stage.name!r} failed after {results[-1].seconds:.0f} s (output "
                f"above and in {out / LOG_FILE}); rerun `make demo` to retry from this stage.",
                flush=True,
            )
            continue
        write_json_atomic(asdict(results[-1]), _marker(out, stage.name))
        # Written after every stage, so an interrupted demo still leaves its timings.
        summary = summarize(results, time.perf_counter() - start_all, args, sizes)
        write_json_atomic(summary, out / STAGES_FILE)
    summary = summarize(results, time.perf_counter() - start_all, args, sizes)
    write_json_atomic(summary, out / STAGES_FILE)
    print_summary(summary)
    return results


def summarize(
    results: list[StageResult], total: float, args: DemoArguments, sizes: dict[str, Any]
) -> dict[str, Any]:
    """The timing/memory record written to stages.json (read by the report).

    A stage skipped now ran in an earlier invocation: the study's time and peak memory include
    what was measured then.
    """
    peak = max([r.peak_memory_bytes for r in results] + [0])
    study_seconds = sum(
        r.seconds if r.status != "skipped" else (r.earlier_seconds or 0.0) for r in results
    )
    return {
        **header(),
        "stages": [asdict(r) for r in results],
        "wall_seconds_this_run": total,
        "study_seconds": study_seconds,
        "study_cpu_seconds": sum(r.cpu_seconds for r in results),
        "peak_memory_bytes": peak,
        "memory_budget_bytes": int(args.memory_budget_gb * GIB),
        "time_budget_seconds": args.time_budget_min * 60,
        "within_memory_budget": peak <= args.memory_budget_gb * GIB,
        "within_time_budget": study_seconds <= args.time_budget_min * 60,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average_at_end": list(os.getloadavg()),
        "settings": asdict(args),
        "sizes": sizes,
    }


def print_summary(summary: dict[str, Any]) -> None:
    """The per-stage table printed at the end of `make demo`."""
    print("\n[demo] stage timings", flush=True)
    print(f"  {'stage':<24} {'status':<8} {'wall s':>8} {'CPU s':>8} {'peak GB':>8}")
    for r in summary["stages"]:
        skipped = r["status"] == "skipped"
        secs = (r["earlier_seconds"] or 0.0) if skipped else r["seconds"]
        print(
            f"  {r['name']:<24} {r['status']:<8} {secs:>8.1f} {r['cpu_seconds']:>8.1f} "
            f"{r['peak_memory_bytes'] / GIB:>8.2f}{' (earlier run)' if skipped else ''}"
        )
    load = summary.get("load_average_at_end") or [float("nan")]
    print(
        f"  whole study {summary['study_seconds']:.1f} s wall, "
        f"{summary['study_cpu_seconds']:.1f} s CPU on {summary['cpu_count']} cores "
        f"(time budget {summary['time_budget_seconds']:.0f} s: "
        f"{'OK' if summary['within_time_budget'] else 'OVER'}); peak memory "
        f"{summary['peak_memory_bytes'] / GIB:.2f} GB (budget "
        f"{summary['memory_budget_bytes'] / GIB:.1f} GB: "
        f"{'OK' if summary['within_memory_budget'] else 'OVER'}); this invocation "
        f"{summary['wall_seconds_this_run']:.1f} s; load average {load[0]:.1f}",
        flush=True,
    )


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/demo.py`: `[sizes.yaml] [--flag value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sizes_file = argv.pop(0) if argv and argv[0].endswith((".yaml", ".yml")) else SIZES_FILE
    sizes = read_sizes(sizes_file)
    (args,) = parse_recipe((DemoArguments,), argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        results = run_demo(args, sizes)
    except KeyboardInterrupt:
        print("\n[demo] interrupted; rerun the same command to continue.", flush=True)
        return 130
    if any(r.status == "failed" for r in results):
        return 1
    summary = read_stages(Path(args.output_dir) / STAGES_FILE)
    report = Path(args.output_dir) / "report" / "index.html"
    if report.is_file():
        print(f"[demo] report: {report.resolve()}", flush=True)
        if args.check_browser:
            check = check_in_browser(report, Path(args.output_dir) / "report" / "screenshot.png")
            print(
                f"[demo] Chromium: {check.images_loaded}/{check.images} images loaded, "
                f"screenshot {check.screenshot}",
                flush=True,
            )
    over = not (summary["within_time_budget"] and summary["within_memory_budget"])
    return 1 if (over and args.strict_budget) else 0


__all__ = [
    "StageResult",
    "TreeMemorySampler",
    "choose_threads",
    "main",
    "print_summary",
    "run_command",
    "run_demo",
    "summarize",
]
