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
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust.io import read_json, write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES = REPO_ROOT / "recipes"
TINY = RECIPES / "fashion-mnist-tiny"
GIB = 1024**3


@dataclass
class DemoArguments:
    """Sizes of the offline study. Defaults fit 15 minutes and 6 GB on 2 cores (docs/demo.md)."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where every stage writes."})
    # Stage 1: the clean base model (recipes/fashion-mnist-tiny/base.yaml).
    base_epochs: float = field(default=3.0, metadata={"help": "Epochs of clean base training."})
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
        metadata={"help": "Training families; one fine-tune each (recipes in fashion-mnist-tiny/)."},
    )
    finetune_steps: int = field(default=150, metadata={"help": "Optimizer steps per fine-tune."})
    finetune_views: int = field(default=4, metadata={"help": "k: corrupted views per image."})
    finetune_batch_size: int = field(default=128, metadata={"help": "Images per step."})
    finetune_eval_examples: int = field(
        default=1000, metadata={"help": "Test images for the fine-tunes' final evaluation."}
    )
    # Stage 3: evaluation (recipes/evaluate.py).
    eval_examples: int = field(
        default=500, metadata={"help": "Held-out test images per corruption cell."}
    )
    eval_severities: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5], metadata={"help": "Severities evaluated."}
    )
    # Stage 4: analysis (recipes/fashion-mnist-tiny/analyze.yaml).
    analysis_examples: int = field(default=1000, metadata={"help": "Test images analysed."})
    # Stage 5: SAEs (recipes/fashion-mnist-tiny/sae.yaml).
    sae_training_tokens: int = field(
        default=200_000, metadata={"help": "Activations each SAE trains on."}
    )
    sae_train_examples: int = field(
        default=20_000, metadata={"help": "Training images the SAE activations come from."}
    )
    sae_eval_images: int = field(default=500, metadata={"help": "Test images compared."})
    # Common.
    seed: int = field(default=0)
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
        for name in ("finetune_steps", "finetune_views", "finetune_batch_size", "eval_examples",
                     "analysis_examples", "sae_training_tokens", "sae_eval_images"):
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


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "skipped", "failed"
    seconds: float
    peak_memory_bytes: int
    commands: list[str]
    earlier_seconds: float | None = None  # a skipped stage's time when it last ran


def _py(script: str, *args: Any) -> list[str]:
    return [sys.executable, str(RECIPES / script), *(str(a) for a in args)]


def _model_done(folder: Path) -> list[Path]:
    return [folder / "config.json", folder / "model.safetensors"]


def build_stages(args: DemoArguments) -> list[Stage]:
    """The seven stages of the offline study with the commands a user would type."""
    out = Path(args.output_dir)
    base = out / "base"
    finetuned = {fam: out / fam for fam in args.finetune_families}
    models = [base, *finetuned.values()]
    stages = [
        Stage(
            "base",
            "train the base tiny ViT on clean Fashion-MNIST",
            _model_done(base),
            [
                _py(
                    "finetune.py",
                    TINY / "base.yaml",
                    "--output_dir",
                    base,
                    "--num_train_epochs",
                    args.base_epochs,
                    "--seed",
                    args.seed,
                    *(
                        ["--max_train_examples", args.base_train_examples]
                        if args.base_train_examples
                        else []
                    ),
                )
            ],
        ),
        Stage(
            "finetune",
            "worst-of-k fine-tunes of the base on " + ", ".join(args.finetune_families),
            [p for f in finetuned.values() for p in _model_done(f)],
            [
                _py(
                    "finetune.py",
                    TINY / f"{fam}.yaml",
                    "--model_name_or_path",
                    base,
                    "--output_dir",
                    folder,
                    "--max_steps",
                    args.finetune_steps,
                    "--k",
                    args.finetune_k,
                    "--seed",
                    args.seed,
                )
                for fam, folder in finetuned.items()
            ],
        ),
        Stage(
            "evaluate",
            "all models on every corruption group (held-out test images, fresh corruption seeds)",
            [out / "eval" / "results.json"],
            [
                _py(
                    "evaluate.py",
                    "--models",
                    *models,
                    "--dataset_name",
                    "fashion_mnist",
                    "--eval_split",
                    "test",
                    "--max_eval_examples",
                    args.eval_examples,
                    "--output_dir",
                    out / "eval",
                )
            ],
        ),
        Stage(
            "analyze",
            "logit lens, attention entropy, CKA and activation patching",
            [out / "analysis" / "analysis.json"],
            [
                _py(
                    "analyze.py",
                    "--base_model",
                    base,
                    "--finetuned_models",
                    *finetuned.values(),
                    "--max_eval_examples",
                    args.analysis_examples,
                    "--output_dir",
                    out / "analysis",
                )
            ],
        ),
        Stage(
            "sae",
            "vanilla and BatchTopK SAEs on the base model, compared across models",
            [out / "sae" / "sae.json"],
            [
                _py(
                    "train_sae.py",
                    "--base_model",
                    base,
                    "--finetuned_models",
                    *finetuned.values(),
                    "--training_tokens",
                    args.sae_training_tokens,
                    "--output_dir",
                    out / "sae",
                )
            ],
        ),
        Stage(
            "cards",
            "model cards and SAE folders ready to push",
            [f / "README.md" for f in finetuned.values()],
            function=lambda: write_cards(args),
        ),
        Stage(
            "report",
            "the report (HTML and Markdown)",
            [out / "report" / "index.html", out / "report" / "report.md"],
            function=lambda: build_demo_report(args),
        ),
    ]
    return stages


def write_cards(args: DemoArguments) -> list[Path]:
    """Stage 6: cards for each fine-tuned model (with its evaluation results) and the SAE folder."""
    from hf_vitrobust import hub

    out = Path(args.output_dir)
    results = out / "eval" / "results.json"
    written = []
    for fam in args.finetune_families:
        folder = out / fam
        written.append(
            hub.write_robust_model_card(
                folder, results=results if results.is_file() else None, base_model=None
            )
        )
    sae_dir = out / "sae" / "saes"
    if sae_dir.is_dir():
        written.append(hub.write_sae_card(sae_dir))
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


def _run_command(cmd: Sequence[str], log: Path, env: dict[str, str]) -> tuple[int, int]:
    """Run one command, streaming its output to the terminal and to `log`; (exit code, peak RSS)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as log_file:
        log_file.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        with TreeMemorySampler(proc.pid) as sampler:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log_file.write(chunk)
            code = proc.wait()
    return code, sampler.peak_bytes


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
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    results: list[StageResult] = []
    start_all = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        header = f"[demo {i}/{len(stages)}] {stage.name}: {stage.description}"
        if args.only and stage.name not in args.only:
            continue
        if stage.name not in force and _is_done(out, stage):
            earlier = read_json(_marker(out, stage.name)).get("seconds")
            print(f"{header} — done earlier, skipped", flush=True)
            results.append(StageResult(stage.name, "skipped", 0.0, 0, [], earlier))
            continue
        print(header, flush=True)
        t0 = time.perf_counter()
        peak, status, cmds = 0, "ran", []
        for cmd in stage.commands:
            cmds.append(shlex.join(cmd))
            print(f"  $ {shlex.join(cmd)}", flush=True)
            code, cmd_peak = _run_command(cmd, out / "demo_stages.log", env)
            peak = max(peak, cmd_peak)
            if code != 0:
                status = "failed"
                break
        if status == "ran" and stage.function is not None:
            try:
                stage.function()
            except Exception as error:  # noqa: BLE001 - reported, then the demo stops
                print(f"  stage {stage.name} failed: {type(error).__name__}: {error}", flush=True)
                status = "failed"
        seconds = time.perf_counter() - t0
        results.append(StageResult(stage.name, status, seconds, peak, cmds))
        if status == "failed":
            print(f"[demo] stage {stage.name!r} failed after {seconds:.0f} s; see the output above "
                  f"and {out / 'demo_stages.log'}. Rerun `make demo` to continue from it.", flush=True)
            break
        write_json_atomic(asdict(results[-1]), _marker(out, stage.name))
    total = time.perf_counter() - start_all
    summary = summarize(results, total, args)
    write_json_atomic(summary, out / "stages.json")
    print_summary(summary)
    return results


def summarize(results: list[StageResult], total: float, args: DemoArguments) -> dict[str, Any]:
    """The timing/memory record written to stages.json (read by the report)."""
    peak = max([r.peak_memory_bytes for r in results] + [0])
    # A stage skipped now ran in an earlier invocation: the study's time includes it.
    study_seconds = sum(r.seconds if r.status == "ran" else (r.earlier_seconds or 0) for r in results)
    return {
        "stages": [asdict(r) for r in results],
        "wall_seconds_this_run": total,
        "study_seconds": study_seconds,
        "peak_memory_bytes": peak,
        "memory_budget_bytes": int(args.memory_budget_gb * GIB),
        "time_budget_seconds": args.time_budget_min * 60,
        "within_memory_budget": peak <= args.memory_budget_gb * GIB,
        "within_time_budget": study_seconds <= args.time_budget_min * 60,
        "cpu_count": os.cpu_count(),
        "settings": asdict(args),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print("\n[demo] stage timings", flush=True)
    print(f"  {'stage':<10} {'status':<8} {'seconds':>8} {'peak GB':>8}")
    for r in summary["stages"]:
        secs = r["seconds"] if r["status"] != "skipped" else (r["earlier_seconds"] or 0)
        note = " (earlier run)" if r["status"] == "skipped" else ""
        print(
            f"  {r['name']:<10} {r['status']:<8} {secs:>8.1f} "
            f"{r['peak_memory_bytes'] / GIB:>8.2f}{note}"
        )
    print(
        f"  total this run {summary['wall_seconds_this_run']:.1f} s; whole study "
        f"{summary['study_seconds']:.1f} s (budget {summary['time_budget_seconds']:.0f} s: "
        f"{'OK' if summary['within_time_budget'] else 'OVER'}); peak memory "
        f"{summary['peak_memory_bytes'] / GIB:.2f} GB (budget "
        f"{summary['memory_budget_bytes'] / GIB:.1f} GB: "
        f"{'OK' if summary['within_memory_budget'] else 'OVER'})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/demo.py`."""
    from hf_vitrobust.configs import parse_recipe

    (args,) = parse_recipe((DemoArguments,), argv)
    results = run_demo(args)
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
