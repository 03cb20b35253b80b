"""`make demo`: the whole study offline on Fashion-MNIST with tiny ViTs, stage by stage.

Each stage runs the recipe a user would run (`recipes/finetune.py`, `recipes/evaluate.py`, ...) as
a subprocess, so every stage's memory is released when it ends and the commands printed are the
ones to copy. A stage is skipped when its completion marker (`.stages/<name>.json`, written only
after the stage succeeded) and its outputs exist, so a rerun after an interruption continues where
it stopped. Peak memory is sampled over the whole process tree (recipe + DataLoader workers) and
checked against the budget; the time of every stage is printed at the end and written to
`stages.json`, which the report shows.
"""

from __future__ import annotations

import os
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust.io import read_json, write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "recipes"
GIB = 1024**3


@dataclass
class DemoArguments:
    """Sizes of the offline study. Defaults fit 15 minutes and 6 GB on 2 cores (docs/demo.md)."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where every stage writes."})
    # Stage 1: the clean base model (recipes/fashion-mnist-tiny/base.yaml).
    base_epochs: float = field(default=2.0, metadata={"help": "Epochs of clean base training."})
    base_max_steps: int = field(
        default=-1, metadata={"help": "If > 0, optimizer steps of the base (overrides epochs)."}
    )
    base_train_examples: int | None = field(
        default=None, metadata={"help": "Cap on training images for the base (None: all 60k)."}
    )
    base_eval_examples: int = field(
        default=2000, metadata={"help": "Test images for the base's per-epoch evaluation."}
    )
    # Stage 2: worst-of-k fine-tunes (recipes/fashion-mnist-tiny/<family>.yaml).
    finetune_families: list[str] = field(
        default_factory=lambda: ["low_frequency", "high_frequency"],
        metadata={
            "help": "Training families; one fine-tune each (recipes in fashion-mnist-tiny/)."
        },
    )
    finetune_steps: int = field(default=100, metadata={"help": "Optimizer steps per fine-tune."})
    finetune_views: int = field(default=4, metadata={"help": "k: corrupted views per image."})
    finetune_batch_size: int = field(default=128, metadata={"help": "Images per step."})
    finetune_eval_examples: int = field(
        default=1000, metadata={"help": "Test images for the fine-tunes' final evaluation."}
    )
    # Stage 3: evaluation (recipes/evaluate.py).
    eval_examples: int = field(
        default=300, metadata={"help": "Held-out test images per corruption cell."}
    )
    eval_severities: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5], metadata={"help": "Severities evaluated."}
    )
    eval_corruptions: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": "Corruptions evaluated: a family name or corruption names."},
    )
    # Stage 4: analysis (recipes/fashion-mnist-tiny/analyze.yaml).
    analysis_examples: int = field(default=500, metadata={"help": "Test images analysed."})
    analysis_corruptions: str = field(
        default="all", metadata={"help": "Family or comma-separated corruptions analysed."}
    )
    # Stage 5: SAEs (recipes/fashion-mnist-tiny/sae.yaml).
    sae_training_tokens: int = field(
        default=100_000, metadata={"help": "Activations each SAE trains on."}
    )
    sae_train_examples: int = field(
        default=20_000, metadata={"help": "Training images the SAE activations come from."}
    )
    sae_eval_images: int = field(default=300, metadata={"help": "Test images compared."})
    sae_layers: list[int] = field(
        default_factory=list, metadata={"help": "Layers (default: the middle one and the last)."}
    )
    sae_eval_corruptions: str = field(
        default="all", metadata={"help": "Corruption family compared per group."}
    )
    sae_finetuned_dictionaries: bool = field(
        default=True,
        metadata={
            "help": "Also train SAEs on the fine-tuned models and a second base seed "
            "(dictionary matching)."
        },
    )
    # Common.
    seed: int = field(default=0)
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads per stage (OMP_NUM_THREADS); 0 = the cores not already busy "
            "(load average), at least 1: oversubscribed threads spin and run many times slower."
        },
    )
    memory_budget_gb: float = field(default=6.0, metadata={"help": "Peak memory budget (GB)."})
    time_budget_min: float = field(default=15.0, metadata={"help": "Wall-clock budget (minutes)."})
    strict_budget: bool = field(
        default=False, metadata={"help": "Exit non-zero when time or memory exceeds the budget."}
    )
    only: list[str] | None = field(
        default=None, metadata={"help": "Run only these stages (names as printed)."}
    )
    force: list[str] | None = field(
        default=None, metadata={"help": "Rerun these stages even if their outputs exist ('all')."}
    )
    check_browser: bool = field(
        default=False,
        metadata={"help": "After the report, load it in headless Chromium and take a screenshot."},
    )

    def __post_init__(self) -> None:
        for name in (
            "finetune_steps",
            "finetune_views",
            "finetune_batch_size",
            "eval_examples",
            "analysis_examples",
            "sae_training_tokens",
            "sae_eval_images",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        if not self.finetune_families:
            raise ValueError("--finetune_families needs at least one family.")


# ---------------------------------------------------------------------------------------------
# Memory sampling
# ---------------------------------------------------------------------------------------------


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
        import psutil

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


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """A named step: commands to run and the files whose presence means it is done."""

    name: str
    description: str
    outputs: list[Path]
    commands: list[list[str]] = field(default_factory=list)
    # In-process work (cheap stages: model cards, the report), run after `commands`.
    function: Callable[[], Any] | None = None
    # Stages whose failure makes this one pointless (it is then reported as blocked).
    requires: tuple[str, ...] = ()
    # Run even when a required stage failed (the report says what is missing).
    always: bool = False
    # Rerun when one of these ran in this invocation (its inputs changed), besides `requires`.
    refresh_after: tuple[str, ...] = ()
    # Torch threads for this stage (None: the demo's choice). Training stages use one: their
    # DataLoader worker prepares the next batch on the other core.
    threads: int | None = None


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


def _recipes() -> Path:
    """The recipes folder, relative when run from the repository (commands read as typed)."""
    try:
        return RECIPES.relative_to(Path.cwd().resolve())
    except ValueError:
        return RECIPES


def _py(script: str, *args: Any) -> list[str]:
    return [sys.executable, str(_recipes() / script), *(str(a) for a in args)]


def _model_done(folder: Path) -> list[Path]:
    return [folder / "config.json", folder / "model.safetensors"]


def build_stages(args: DemoArguments) -> list[Stage]:
    """The seven stages of the offline study, each with the command a user would type."""
    out = Path(args.output_dir)
    tiny = _recipes() / "fashion-mnist-tiny"
    base = out / "base"
    finetuned = {fam: out / fam for fam in args.finetune_families}
    ft_stages = tuple(f"finetune_{fam}" for fam in finetuned)
    base_len = (
        ["--max_steps", args.base_max_steps]
        if args.base_max_steps > 0
        else ["--num_train_epochs", args.base_epochs]
    )
    return [
        Stage(
            "base",
            "train the base tiny ViT on clean Fashion-MNIST",
            _model_done(base),
            [
                _py(
                    "finetune.py",
                    tiny / "base.yaml",
                    "--output_dir",
                    base,
                    *base_len,
                    "--max_eval_examples",
                    args.base_eval_examples,
                    "--dataloader_num_workers",
                    1,
                    "--seed",
                    args.seed,
                    *(
                        ["--max_train_examples", args.base_train_examples]
                        if args.base_train_examples
                        else []
                    ),
                )
            ],
            threads=1,
        ),
        *[
            Stage(
                f"finetune_{fam}",
                f"worst-of-{args.finetune_views} fine-tune of the base on {fam}",
                _model_done(folder),
                [
                    _py(
                        "finetune.py",
                        tiny / f"{fam}.yaml",
                        "--model_name_or_path",
                        base,
                        "--output_dir",
                        folder,
                        "--max_steps",
                        args.finetune_steps,
                        "--num_views",
                        args.finetune_views,
                        "--per_device_train_batch_size",
                        args.finetune_batch_size,
                        "--max_eval_examples",
                        args.finetune_eval_examples,
                        "--seed",
                        args.seed,
                    )
                ],
                requires=("base",),
                threads=1,
            )
            for fam, folder in finetuned.items()
        ],
        Stage(
            "evaluate",
            "all models on every corruption group (held-out test images, fresh corruption seeds)",
            [out / "eval" / "results.json"],
            [
                _py(
                    "evaluate.py",
                    tiny / "evaluate.yaml",
                    "--models",
                    base,
                    *finetuned.values(),
                    "--max_eval_examples",
                    args.eval_examples,
                    "--severities",
                    *args.eval_severities,
                    "--corruptions",
                    *args.eval_corruptions,
                    "--output_dir",
                    out / "eval",
                )
            ],
            requires=("base", *ft_stages),
        ),
        Stage(
            "analyze",
            "logit lens, attention entropy, CKA and activation patching",
            [out / "analysis" / "analysis.json"],
            [
                _py(
                    "analyze.py",
                    tiny / "analyze.yaml",
                    "--base_model",
                    base,
                    "--finetuned_models",
                    *finetuned.values(),
                    "--max_eval_examples",
                    args.analysis_examples,
                    "--corruptions",
                    args.analysis_corruptions,
                    "--seed",
                    args.seed,
                    "--output_dir",
                    out / "analysis",
                )
            ],
            requires=("base", *ft_stages),
        ),
        Stage(
            "sae",
            "vanilla and BatchTopK SAEs on the base model, compared across models",
            [out / "sae" / "sae.json"],
            [
                _py(
                    "train_sae.py",
                    tiny / "sae.yaml",
                    "--base_model",
                    base,
                    "--finetuned_models",
                    *finetuned.values(),
                    "--training_tokens",
                    args.sae_training_tokens,
                    "--max_train_examples",
                    args.sae_train_examples,
                    "--num_eval_images",
                    args.sae_eval_images,
                    "--eval_corruption_family",
                    args.sae_eval_corruptions,
                    *(["--layers", *args.sae_layers] if args.sae_layers else []),
                    "--train_finetuned_saes",
                    args.sae_finetuned_dictionaries,
                    "--seed_baseline",
                    args.sae_finetuned_dictionaries,
                    # Activations are computed once per model and layer and reused by both SAE
                    # types (and by a rerun).
                    "--cache_dir",
                    out / "sae" / "activation_cache",
                    "--seed",
                    args.seed,
                    "--output_dir",
                    out / "sae",
                )
            ],
            requires=("base", *ft_stages),
        ),
        Stage(
            "cards",
            "model cards (with evaluation results) and SAE folders ready to push",
            [f / "README.md" for f in finetuned.values()],
            function=lambda: write_cards(args),
            requires=ft_stages,
            refresh_after=("evaluate", "sae"),
        ),
        Stage(
            "report",
            "the report (HTML and Markdown)",
            [out / "report" / "index.html", out / "report" / "report.md"],
            function=lambda: build_demo_report(args),
            requires=("base", *ft_stages, "evaluate", "analyze", "sae", "cards"),
            always=True,
        ),
    ]


def write_cards(args: DemoArguments) -> list[Path]:
    """Stage 6: each fine-tuned model's card (with its evaluation results and figures) and the
    SAE folder's card, written locally so `recipes/push.py` can push them as they are."""
    from hf_vitrobust import hub

    out = Path(args.output_dir)
    results = out / "eval" / "results.json"
    figures = [
        out / "eval" / name
        for name in ("accuracy_topk_by_group.png", "p_true_by_group.png", "transfer_matrix.png")
        if (out / "eval" / name).is_file()
    ]
    written = []
    for fam in args.finetune_families:
        written.append(
            hub.write_robust_model_card(
                out / fam,
                results=results if results.is_file() else None,
                figures=figures or None,
            )
        )
    sae_dir = out / "sae" / "saes"
    if sae_dir.is_dir():
        written.append(hub.write_sae_card(sae_dir))
    for path in written:
        print(f"  wrote {path}", flush=True)
    return written


def build_demo_report(args: DemoArguments) -> Path:
    """Stage 7: the report from everything under `output_dir`."""
    from hf_vitrobust.report import build_report

    out = Path(args.output_dir)
    paths = build_report(out, out / "report")
    return paths.html


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _marker(out: Path, name: str) -> Path:
    return out / ".stages" / f"{name}.json"


def _is_done(out: Path, stage: Stage) -> bool:
    return _marker(out, stage.name).is_file() and all(p.exists() for p in stage.outputs)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_command(cmd: Sequence[str], log: Path, env: dict[str, str]) -> tuple[int, int]:
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


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(args: DemoArguments) -> list[StageResult]:
    """Run (or skip) every stage, then print and save the timing and memory summary."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = build_stages(args)
    names = [s.name for s in stages]
    for option in ("only", "force"):
        unknown = sorted(set(getattr(args, option) or []) - set(names) - {"all"})
        if unknown:
            raise ValueError(f"--{option}: unknown stage(s) {unknown}; stages are {names}.")
    force = set(args.force or [])
    if "all" in force:
        force = set(names)
    env = dict(os.environ)
    threads = args.threads = args.threads or choose_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    print(
        f"[demo] {threads} CPU thread(s) for evaluation/analysis/SAE stages, 1 (+1 DataLoader "
        f"worker) for training ({os.cpu_count()} cores)",
        flush=True,
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    results: list[StageResult] = []
    failed: set[str] = set()
    start_all = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        header = f"[demo {i}/{len(stages)}] {stage.name}: {stage.description}"
        if args.only and stage.name not in args.only:
            continue
        blocked = [] if stage.always else sorted(failed & set(stage.requires))
        if blocked:
            print(f"{header} — blocked by failed stage(s) {blocked}", flush=True)
            failed.add(stage.name)
            results.append(StageResult(stage.name, "blocked", 0.0, 0, []))
            continue
        upstream = set(stage.requires) | set(stage.refresh_after)
        upstream_ran = any(r.status == "ran" and r.name in upstream for r in results)
        if stage.name not in force and not upstream_ran and _is_done(out, stage):
            earlier = read_json(_marker(out, stage.name))
            print(f"{header} — done earlier, skipped", flush=True)
            results.append(
                StageResult(
                    stage.name,
                    "skipped",
                    0.0,
                    int(earlier.get("peak_memory_bytes", 0)),
                    earlier.get("commands", []),
                    earlier.get("seconds"),
                    earlier.get("cpu_seconds", 0.0),
                )
            )
            continue
        print(header, flush=True)
        _marker(out, stage.name).unlink(missing_ok=True)
        t0, cpu0 = time.perf_counter(), _children_cpu_seconds() + time.process_time()
        peak, status, cmds = 0, "ran", []
        for cmd in stage.commands:
            cmds.append(_display(cmd))
            print(f"  $ {_display(cmd)}", flush=True)
            stage_env = env
            if stage.threads is not None:
                stage_env = {**env, "OMP_NUM_THREADS": str(stage.threads)}
                stage_env["MKL_NUM_THREADS"] = stage_env["OMP_NUM_THREADS"]
            code, cmd_peak = _run_command(cmd, out / "demo_stages.log", stage_env)
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
        results.append(StageResult(stage.name, status, seconds, peak, cmds, cpu_seconds=cpu))
        if status == "failed":
            failed.add(stage.name)
            print(
                f"[demo] stage {stage.name!r} failed after {seconds:.0f} s (output above and in "
                f"{out / 'demo_stages.log'}); rerun `make demo` to retry from this stage.",
                flush=True,
            )
            continue
        write_json_atomic(asdict(results[-1]), _marker(out, stage.name))
        # Written after every stage, so an interrupted demo still leaves its timings.
        write_json_atomic(
            summarize(results, time.perf_counter() - start_all, args), out / "stages.json"
        )
    total = time.perf_counter() - start_all
    summary = summarize(results, total, args)
    write_json_atomic(summary, out / "stages.json")
    print_summary(summary)
    return results


def summarize(results: list[StageResult], total: float, args: DemoArguments) -> dict[str, Any]:
    """The timing/memory record written to stages.json (read by the report).

    A stage skipped now ran in an earlier invocation: the study's time and peak memory include
    what was measured then.
    """
    peak = max([r.peak_memory_bytes for r in results] + [0])
    study_seconds = sum(
        r.seconds if r.status != "skipped" else (r.earlier_seconds or 0.0) for r in results
    )
    return {
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/demo.py`."""
    from hf_vitrobust.configs import parse_recipe

    (args,) = parse_recipe((DemoArguments,), argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        results = run_demo(args)
    except KeyboardInterrupt:
        print("\n[demo] interrupted; rerun the same command to continue.", flush=True)
        return 130
    if any(r.status == "failed" for r in results):
        return 1
    summary = read_json(Path(args.output_dir) / "stages.json")
    report = Path(args.output_dir) / "report" / "index.html"
    if report.is_file():
        print(f"[demo] report: {report.resolve()}", flush=True)
        if args.check_browser:
            from hf_vitrobust.report import check_in_browser

            check = check_in_browser(report, Path(args.output_dir) / "report" / "screenshot.png")
            print(
                f"[demo] Chromium: {check.images_loaded}/{check.images} images loaded, "
                f"screenshot {check.screenshot}",
                flush=True,
            )
    over = not (summary["within_time_budget"] and summary["within_memory_budget"])
    return 1 if (over and args.strict_budget) else 0
