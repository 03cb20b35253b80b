"""Running the demo: which stages run or are skipped (completion markers), threads, the
environment of every stage, and the time and memory record (`stages.json`) checked against
the budget. The stages themselves run through `schedule` (several at once)."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hf_vitrobust.configs import parse_recipe
from hf_vitrobust.constants import STAGES_FILE
from hf_vitrobust.demo.config import REPO_ROOT, SIZES_FILE, DemoArguments, read_sizes
from hf_vitrobust.demo.schedule import (
    Console,
    Plan,
    ProcessGroups,
    StageResult,
    TreeMemorySampler,
    run_stage,
    schedule,
)
from hf_vitrobust.demo.stages import Stage, build_stages
from hf_vitrobust.io import read_json, write_json_atomic
from hf_vitrobust.report import check_in_browser
from hf_vitrobust.runtime import header, read_stages

GIB = 1024**3
LOG_FILE = "demo_stages.log"


def _marker(out: Path, name: str) -> Path:
    return out / ".stages" / f"{name}.json"


def _is_done(out: Path, stage: Stage) -> bool:
    return _marker(out, stage.name).is_file() and all(p.exists() for p in stage.outputs)


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
        earlier.get("threads"),
        earlier.get("invocation"),
        earlier.get("started"),
        earlier.get("ended"),
    )


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
    """Run (or skip) every stage, up to `args.parallel` at once, then print and save the timing
    and memory summary.

    `sizes`: the sizes file's contents (default: `read_sizes()`); `stages`: the stages to run
    (default: `build_stages(args, sizes)`).
    """
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = read_sizes() if sizes is None else sizes
    stages = build_stages(args, sizes) if stages is None else stages
    force = _stage_names(args, stages)
    threads = args.threads = args.threads or choose_threads()
    parallel = args.parallel = args.parallel or (os.cpu_count() or 1)
    print(
        f"[demo] up to {parallel} stage(s) at once on {os.cpu_count()} cores; training stages: "
        f"1 torch thread + 1 DataLoader worker each; other stages share {threads} thread(s); "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    env = _stage_env(threads)
    if parallel > 1:  # progress bars of stages running at once would interleave
        env["TQDM_DISABLE"] = "1"
    plan = Plan(parallel, threads, force, set(args.only) if args.only else None)
    invocation, t0 = time.time(), time.perf_counter()
    console, groups = Console(out / LOG_FILE), ProcessGroups()
    done: queue.Queue[StageResult] = queue.Queue()
    results: list[StageResult] = []
    titles = {s.name: f"{s.name}: {s.description}" for s in stages}

    def clock() -> float:
        return time.perf_counter() - t0

    def start(stage: Stage, stage_threads: int) -> None:
        console.write(f"[demo] start {titles[stage.name]} ({stage_threads} thread(s))\n")
        _marker(out, stage.name).unlink(missing_ok=True)

        def work() -> None:
            result = run_stage(stage, env, stage_threads, console, groups, clock)
            result.invocation = invocation
            if result.status == "ran":
                write_json_atomic(asdict(result), _marker(out, stage.name))
            done.put(result)

        threading.Thread(target=work, name=stage.name, daemon=True).start()

    def skip(stage: Stage, upstream_ran: bool) -> StageResult | None:
        return None if upstream_ran or not _is_done(out, stage) else _skipped(out, stage)

    def on_result(result: StageResult) -> None:
        results.append(result)
        what = {
            "ran": f"done in {result.seconds:.0f} s",
            "skipped": "done earlier, skipped",
            "blocked": "blocked by a failed stage it needs",
            "failed": f"FAILED after {result.seconds:.0f} s (output above and in "
            f"{out / LOG_FILE}); rerun the same command to retry from this stage",
        }[result.status]
        console.write(f"[demo] {titles[result.name]} — {what}\n")
        # Written after every stage, so an interrupted demo still leaves its timings.
        summary = summarize(results, clock(), args, sizes, sampler.peak_bytes)
        write_json_atomic(summary, out / STAGES_FILE)

    try:
        with TreeMemorySampler(os.getpid()) as sampler:
            ordered = schedule(stages, plan, start, skip, done, on_result)
    except BaseException:
        groups.stop_all()
        raise
    finally:
        console.close()
    summary = summarize(ordered, clock(), args, sizes, sampler.peak_bytes)
    write_json_atomic(summary, out / STAGES_FILE)
    print_summary(summary)
    return ordered


def study_seconds(results: list[StageResult]) -> float:
    """The study's wall time: per demo invocation, from its first stage's start to its last
    stage's end (stages run at once overlap); stages without timestamps add their seconds."""
    spans: dict[float, tuple[float, float]] = {}
    loose = 0.0
    for r in results:
        seconds = r.earlier_seconds if r.status == "skipped" else r.seconds
        if r.invocation is None or r.started is None or r.ended is None:
            loose += seconds or 0.0
            continue
        first, last = spans.get(r.invocation, (r.started, r.ended))
        spans[r.invocation] = (min(first, r.started), max(last, r.ended))
    return loose + sum(last - first for first, last in spans.values())


def summarize(
    results: list[StageResult],
    total: float,
    args: DemoArguments,
    sizes: dict[str, Any],
    peak_bytes: int = 0,
) -> dict[str, Any]:
    """The timing/memory record written to stages.json (read by the report).

    A stage skipped now ran in an earlier invocation: the study's time and peak memory include
    what was measured then. `peak_bytes`: the peak of this invocation's whole process tree
    (stages running at once add up).
    """
    peak = max([r.peak_memory_bytes for r in results] + [peak_bytes, 0])
    seconds = study_seconds(results)
    return {
        **header(),
        "stages": [asdict(r) for r in results],
        "wall_seconds_this_run": total,
        "study_seconds": seconds,
        "study_cpu_seconds": sum(r.cpu_seconds for r in results),
        "peak_memory_bytes": peak,
        "memory_budget_bytes": int(args.memory_budget_gb * GIB),
        "time_budget_seconds": args.time_budget_min * 60,
        "within_memory_budget": peak <= args.memory_budget_gb * GIB,
        "within_time_budget": seconds <= args.time_budget_min * 60,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "parallel": args.parallel,
        "load_average_at_end": list(os.getloadavg()),
        "settings": asdict(args),
        "sizes": sizes,
    }


def print_summary(summary: dict[str, Any]) -> None:
    """The per-stage table printed at the end of `make demo`."""
    print("\n[demo] stage timings", flush=True)
    print(
        f"  {'stage':<44} {'status':<8} {'start s':>8} {'wall s':>8} {'CPU s':>8} {'threads':>7} "
        f"{'peak GB':>8}"
    )
    for r in summary["stages"]:
        skipped = r["status"] == "skipped"
        secs = (r["earlier_seconds"] or 0.0) if skipped else r["seconds"]
        started = "" if skipped or r.get("started") is None else f"{r['started']:.1f}"
        print(
            f"  {r['name']:<44} {r['status']:<8} {started:>8} {secs:>8.1f} "
            f"{r['cpu_seconds']:>8.1f} {r.get('threads') or '':>7} "
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
    "choose_threads",
    "main",
    "print_summary",
    "run_demo",
    "study_seconds",
    "summarize",
]
