"""`make demo`: stage orchestration (skip, resume, failure, memory) and a reduced end-to-end run."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from hf_vitrobust import demo
from hf_vitrobust import report as rp
from hf_vitrobust.configs import RENAMED_KEYS, parse_recipe
from hf_vitrobust.demo import runner
from hf_vitrobust.demo import stages as demo_stages
from hf_vitrobust.roles import (
    ADVERSARIAL,
    CLEAN_CONTROL,
    RANDOM_VIEW_CONTROL,
    read_robustness,
    role_of,
)
from hf_vitrobust.runtime import read_stages

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str = "x") -> list[str]:
    """A command that writes `path` (a stand-in for a recipe)."""
    # Holds ~64 MB for a moment, so that the memory sampler has something to see.
    code = (
        "import pathlib, time; buf = bytearray(64 * 2**20); time.sleep(0.6); "
        f"p = pathlib.Path({str(path)!r}); p.parent.mkdir(parents=True, exist_ok=True); "
        f"p.write_text({text!r})"
    )
    return [sys.executable, "-c", code]


def _fake_stages(out: Path, fail: set[str] = frozenset()) -> list[demo_stages.Stage]:
    def stage(name: str, requires: tuple[str, ...] = (), always: bool = False) -> demo_stages.Stage:
        target = out / name / "done.txt"
        cmd = [sys.executable, "-c", "raise SystemExit(3)"] if name in fail else _write(target)
        return demo_stages.Stage(name, name, [target], [cmd], requires=requires, always=always)

    return [
        stage("a"),
        stage("b", ("a",)),
        stage("c", ("a",)),
        stage("d", ("b",)),
        stage("report", ("a", "b", "c", "d"), always=True),
    ]


def _run(tmp_path: Path, fail: set[str] = frozenset(), **kw) -> dict[str, str]:
    out = tmp_path / "demo"
    args = demo.DemoArguments(output_dir=str(out), **kw)
    results = runner.run_demo(args, sizes={}, stages=_fake_stages(out, fail))
    return {r.name: r.status for r in results}


def test_stages_run_then_skip_on_rerun(tmp_path, capsys):
    assert set(_run(tmp_path).values()) == {"ran"}
    summary = read_stages(tmp_path / "demo" / "stages.json")
    assert list(summary)[:2] == ["schema", "schema_version"]
    assert [s["name"] for s in summary["stages"]] == ["a", "b", "c", "d", "report"]
    assert all(s["seconds"] > 0 and s["cpu_seconds"] >= 0 for s in summary["stages"])
    # The sampled process tree includes the child and its 64 MB buffer.
    assert all(s["peak_memory_bytes"] > 64 * 2**20 for s in summary["stages"])
    assert summary["within_memory_budget"] is True
    assert set(_run(tmp_path).values()) == {"skipped"}
    printed = capsys.readouterr().out
    assert "done earlier, skipped" in printed and "(earlier run)" in printed
    # The study's time still counts the stages that ran earlier.
    rerun = read_stages(tmp_path / "demo" / "stages.json")
    assert rerun["study_seconds"] == pytest.approx(summary["study_seconds"], rel=1e-6)


def test_independent_stages_run_at_once_and_their_memory_adds_up(tmp_path):
    """b and c (both after a) overlap with two slots: the study's wall time is shorter than the
    sum of its stages, and the peak memory counts both 64 MB buffers at once. One slot runs
    them one after the other."""
    _run(tmp_path, parallel=2)
    summary = read_stages(tmp_path / "demo" / "stages.json")
    at = {s["name"]: s for s in summary["stages"]}
    assert at["c"]["started"] < at["b"]["ended"] and at["b"]["started"] < at["c"]["ended"]
    assert at["b"]["started"] >= at["a"]["ended"] and at["d"]["started"] >= at["b"]["ended"]
    assert at["report"]["started"] >= max(at[n]["ended"] for n in "abcd")
    assert summary["study_seconds"] < sum(s["seconds"] for s in summary["stages"])
    assert summary["peak_memory_bytes"] > 2 * 64 * 2**20
    assert summary["parallel"] == 2

    _run(tmp_path / "serial", parallel=1)
    serial = read_stages(tmp_path / "serial" / "demo" / "stages.json")
    at = {s["name"]: s for s in serial["stages"]}
    assert at["c"]["started"] >= at["b"]["ended"]
    assert serial["study_seconds"] == pytest.approx(
        at["report"]["ended"] - at["a"]["started"], rel=1e-6
    )


def test_a_stage_waits_for_the_stages_it_refreshes_after(tmp_path):
    """The cards stage needs only the fine-tunes but must not start before the evaluation it
    reads has finished (refresh_after), even with a free slot."""
    out = tmp_path / "demo"
    stages = _fake_stages(out)
    stages.insert(
        4,
        demo_stages.Stage(
            "cards", "cards", [out / "cards" / "done.txt"], [_write(out / "cards" / "done.txt")],
            requires=("a",), refresh_after=("d",),
        ),
    )  # fmt: skip
    args = demo.DemoArguments(output_dir=str(out), parallel=2)
    results = {r.name: r for r in runner.run_demo(args, sizes={}, stages=stages)}
    assert results["cards"].started >= results["d"].ended


def test_failed_stage_blocks_its_dependants_only(tmp_path):
    statuses = _run(tmp_path, fail={"b"})
    assert statuses == {
        "a": "ran",
        "b": "failed",
        "c": "ran",
        "d": "blocked",
        "report": "ran",
    }
    # Rerun after the fix: finished stages are skipped, the failed one and its dependants run,
    # and the report is rebuilt because its inputs changed.
    statuses = _run(tmp_path)
    assert statuses == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran", "report": "ran"}


def test_force_and_only(tmp_path):
    _run(tmp_path)
    statuses = _run(tmp_path, force=["c"])
    assert statuses["c"] == "ran" and statuses["a"] == "skipped"
    assert statuses["report"] == "ran"  # c is one of its inputs
    assert _run(tmp_path, only=["a"]) == {"a": "skipped"}
    with pytest.raises(ValueError, match="unknown stage"):
        _run(tmp_path, only=["nope"])


def _sizes_file(tmp_path: Path, **changes) -> Path:
    """The demo's sizes file with some sections changed (mappings are merged)."""
    sizes = yaml.safe_load(demo.SIZES_FILE.read_text())
    for section, values in changes.items():
        if isinstance(values, dict):
            sizes[section] = {**sizes.get(section, {}), **values}
        else:
            sizes[section] = values
    path = tmp_path / "sizes.yaml"
    path.write_text(yaml.safe_dump(sizes))
    return path


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="finetune.max_steps must be an integer >= 1"):
        demo.read_sizes(_sizes_file(tmp_path, finetune={"max_steps": 0}))
    with pytest.raises(ValueError, match="finetunes"):
        demo.read_sizes(_sizes_file(tmp_path, finetunes=[]))
    with pytest.raises(ValueError, match="no fine-tune recipe"):
        demo.read_sizes(_sizes_file(tmp_path, finetunes=["nowhere"]))
    with pytest.raises(ValueError, match="no fine-tune recipe"):
        demo.read_sizes(_sizes_file(tmp_path, controls=["nowhere"]))
    with pytest.raises(ValueError, match="listed twice"):
        demo.read_sizes(_sizes_file(tmp_path, controls=["control", "low_frequency"]))
    with pytest.raises(ValueError, match="did you mean 'evaluate'"):
        demo.read_sizes(_sizes_file(tmp_path, evalute={"max_eval_examples": 3}))
    # Old recipe key names are refused here (the recipes still read them, with a warning).
    with pytest.raises(ValueError, match="'eval_corruption_family' is a deprecated"):
        demo.read_sizes(_sizes_file(tmp_path, sae={"eval_corruption_family": "all"}))
    with pytest.raises(ValueError, match="'models' is a deprecated"):
        demo.read_sizes(_sizes_file(tmp_path, evaluate={"models": ["a"]}))
    with pytest.raises(ValueError, match="set by the demo itself"):
        demo.read_sizes(_sizes_file(tmp_path, analyze={"output_dir": "x"}))
    with pytest.raises(ValueError, match="leave the key out"):
        demo.read_sizes(_sizes_file(tmp_path, sae={"layers": []}))


def test_demo_arguments_hold_no_sizes():
    names = [f.name for f in dataclasses.fields(demo.DemoArguments)]
    assert sorted(names) == sorted(
        [
            "output_dir",
            "seed",
            "threads",
            "parallel",
            "only",
            "force",
            "time_budget_min",
            "memory_budget_gb",
            "strict_budget",
            "check_browser",
        ]
    )
    assert demo.recipe_flags({"max_steps": 4, "corruptions": ["a", "b"], "seed_baseline": True}) == [
        "--max_steps", "4", "--corruptions", "a", "b", "--seed_baseline", "true"
    ]  # fmt: skip


def test_stage_commands_are_the_recipes_a_user_runs():
    args = demo.DemoArguments(output_dir="outputs/demo", seed=7)
    stages = demo_stages.build_stages(args, demo.read_sizes())
    names = [s.name for s in stages]
    controls = [
        "finetune_control",
        "finetune_control_random_view_low_frequency",
        "finetune_control_random_view_high_frequency",
    ]
    assert names == [
        "base",
        "finetune_low_frequency",
        "finetune_high_frequency",
        *controls,
        "sae",
        "evaluate",
        "analyze",
        "cards",
        "report",
    ]
    scripts = {s.name: Path(s.commands[0][1]).name for s in stages if s.commands}
    assert scripts == {
        "base": "finetune.py",
        "finetune_low_frequency": "finetune.py",
        "finetune_high_frequency": "finetune.py",
        **dict.fromkeys(controls, "finetune.py"),
        "evaluate": "evaluate.py",
        "analyze": "analyze.py",
        "sae": "train_sae.py",
    }
    for stage in stages:
        for cmd in stage.commands:
            recipe = Path(cmd[2])
            if recipe.suffix == ".yaml":
                assert (REPO / recipe).is_file() or recipe.is_file(), recipe

    # The command lines: the demo's wiring, then demo.yaml's sizes under the new key names.
    tail = {s.name: " ".join(s.commands[0][3:]) for s in stages if s.commands}
    sizes = demo.read_sizes()
    finetune_flags = " ".join(demo.recipe_flags(sizes["finetune"]))
    for name in ("low_frequency", "high_frequency", *(c[len("finetune_") :] for c in controls)):
        # Every fine-tune and control: the same base, seed and flags (so the controls match).
        assert tail[f"finetune_{name}"] == (
            f"--model_name_or_path outputs/demo/base --output_dir outputs/demo/{name} "
            f"--seed 7 {finetune_flags}"
        )
    models = (
        "--base_model outputs/demo/base --finetuned_models outputs/demo/low_frequency "
        "outputs/demo/high_frequency outputs/demo/control "
        "outputs/demo/control_random_view_low_frequency "
        "outputs/demo/control_random_view_high_frequency --seed 7"
    )
    assert tail["evaluate"].startswith(f"{models} --output_dir outputs/demo/eval ")
    assert tail["analyze"].startswith(f"{models} --output_dir outputs/demo/analysis ")
    assert tail["sae"].startswith(
        f"{models} --cache_dir outputs/demo/sae/activation_cache --output_dir outputs/demo/sae "
    )
    assert tail["base"].startswith("--output_dir outputs/demo/base --seed 7 ")
    for name, section in (("evaluate", "evaluate"), ("analyze", "analyze"), ("sae", "sae")):
        assert tail[name].endswith(" ".join(demo.recipe_flags(sizes[section])))
    descriptions = {s.name: s.description for s in stages}
    assert descriptions["finetune_low_frequency"].startswith("worst-of-4 fine-tune")
    assert descriptions["finetune_control"].startswith("clean control")
    assert descriptions["finetune_control_random_view_high_frequency"].startswith(
        "random-view control on high_frequency"
    )
    # No deprecated recipe key in any command (configs.RENAMED_KEYS would warn about it).
    flags = {a[2:] for s in stages for cmd in s.commands for a in cmd if a.startswith("--")}
    assert not flags & ({"models"} | set(RENAMED_KEYS)), flags & set(RENAMED_KEYS)


class _Parsed(Exception):
    """Raised by the recording parse_recipe: the recipe parsed its flags and stops there."""


def test_every_stage_command_parses_in_its_recipe(monkeypatch):
    """Each command line, as the demo writes it, parses with its recipe's own arguments, with no
    deprecated key (a FutureWarning would be an error here)."""
    monkeypatch.chdir(REPO)
    stages = demo_stages.build_stages(demo.DemoArguments(seed=3), demo.read_sizes())
    for stage in stages:
        for cmd in stage.commands:
            spec = importlib.util.spec_from_file_location(f"_demo_{stage.name}", cmd[1])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            parsed = []

            def recording(types, argv, parsed=parsed):
                with warnings.catch_warnings():
                    warnings.simplefilter("error", FutureWarning)
                    parsed.extend(parse_recipe(types, argv))
                raise _Parsed

            monkeypatch.setattr(module, "parse_recipe", recording)
            with pytest.raises(_Parsed):
                module.main(cmd[2:])
            values = {k: v for args in parsed for k, v in vars(args).items()}
            assert values["seed"] == 3, stage.name
            assert str(values["output_dir"]).startswith("outputs/demo"), stage.name
            if stage.name in ("evaluate", "analyze", "sae"):
                assert values["base_model"] == "outputs/demo/base"
                assert len(values["finetuned_models"]) == 5
                assert values["corruptions"] == ["all"]


def test_sizes_file_is_given_first(tmp_path, monkeypatch):
    """`python recipes/demo.py sizes.yaml --flags`: the YAML is the sizes, the flags the demo's."""
    seen = {}

    def fake_run(args, sizes):
        seen.update(args=args, sizes=sizes)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_demo", fake_run)
    monkeypatch.setattr(runner.signal, "signal", lambda *a: None)
    path = _sizes_file(tmp_path, finetunes=["low_frequency"], evaluate={"severities": [2]})
    assert runner.main([str(path), "--output_dir", str(tmp_path / "o"), "--seed", "3"]) == 130
    assert seen["sizes"]["finetunes"] == ["low_frequency"]
    assert seen["sizes"]["evaluate"]["severities"] == [2]
    assert seen["args"].seed == 3 and seen["args"].output_dir == str(tmp_path / "o")
    assert runner.main(["--only", "report"]) == 130
    assert seen["sizes"] == demo.read_sizes(demo.SIZES_FILE)


# Reduced sizes: every stage runs for real on tiny data, in about three minutes on 2 cores.
REDUCED = {
    # One family with both its controls: every kind of training run, at the least cost.
    "finetunes": ["low_frequency"],
    "controls": ["control", "control_random_view_low_frequency"],
    "base": {"max_steps": 40, "max_eval_examples": 200},
    "finetune": {
        "max_steps": 4,
        "num_views": 2,
        "per_device_train_batch_size": 32,
        "max_eval_examples": 64,
    },
    "evaluate": {
        "max_eval_examples": 48,
        "severities": [2, 4],
        "corruptions": [
            "gaussian_noise", "sharpen", "defocus_blur", "motion_blur", "contrast", "brightness"
        ],
    },
    "analyze": {
        "max_eval_examples": 48,
        "corruptions": ["gaussian_noise", "defocus_blur", "contrast"],
    },
    "sae": {
        "training_tokens": 4096,
        "max_train_examples": 400,
        "num_eval_images": 32,
        "layers": [5],
        "corruptions": ["blur"],
        "train_finetuned_saes": True,
        "seed_baseline": True,
    },
}  # fmt: skip


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    sizes = tmp_path / "reduced.yaml"
    sizes.write_text(yaml.safe_dump(REDUCED))
    cmd = [sys.executable, "recipes/demo.py", str(sizes), "--output_dir", str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "[demo] stage timings" in run.stdout

    summary = read_stages(out / "stages.json")
    ran = {s["name"]: s["status"] for s in summary["stages"]}
    assert set(ran.values()) == {"ran"}, ran
    assert summary["within_memory_budget"]

    # Models load with plain from_pretrained, and carry their cards.
    from transformers import ViTForImageClassification

    for fam in REDUCED["finetunes"]:
        model = ViTForImageClassification.from_pretrained(out / fam)
        assert read_robustness(model.config)["corruptions"] == [fam]
        assert role_of(read_robustness(model.config)) == ADVERSARIAL
        card = (out / fam / "README.md").read_text()
        assert "model-index" in card and "fine-tuned adversarially" in card
        control = read_robustness(
            ViTForImageClassification.from_pretrained(out / f"control_random_view_{fam}").config
        )
        assert role_of(control) == RANDOM_VIEW_CONTROL and control["corruptions"] == [fam]
        assert control["max_steps"] == read_robustness(model.config)["max_steps"]
    clean = ViTForImageClassification.from_pretrained(out / "control")
    assert role_of(read_robustness(clean.config)) == CLEAN_CONTROL
    assert "Clean fine-tuning" in (out / "control" / "README.md").read_text()
    sae_cards = list((out / "sae").rglob("README.md"))
    assert sae_cards, "the SAE folder has no card"

    # The report: every section has real numbers (nothing missing), the readings are generated.
    page = (out / "report" / "index.html").read_text()
    md = (out / "report" / "report.md").read_text()
    for key in (
        "accuracy",
        "transfer",
        "certainty",
        "first_correct_layer",
        "attention_entropy",
        "sae_vanilla",
        "sae_batchtopk",
        "cka",
        "patching",
        "runtime",
    ):
        assert f'data-section="{key}"' in page
    verdicts = dict(
        (k, v)
        for k, v in __import__("re").findall(r'data-section="(\w+)" data-verdict="([^"]+)"', page)
    )
    assert rp.MISSING not in verdicts.values(), verdicts
    assert verdicts["accuracy"] in (rp.SUPPORTED, rp.INCONCLUSIVE, rp.NOT_SUPPORTED)
    # Claims are judged against the clean control the demo trained (and not "no control").
    assert "low_frequency: top-1 on its seen corruptions, minus its clean control" in md
    for text in ("Fig. 2", "Fig. 4", "Fig. 5", "Fig. 8", "Fig. 9", "Fig. 10", "CI"):
        assert text in md
    assert page.count("data:image/png;base64,") >= 8
    assert len(list((out / "report" / "figures").glob("*.png"))) >= 8

    # A rerun skips every stage.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:]
    assert again.stdout.count("done earlier, skipped") == len(ran)

    # The page in a real browser: every image decodes, a screenshot is written.
    if rp.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium); browser check skipped")
    check = rp.check_in_browser(out / "report" / "index.html", out / "report" / "screenshot.png")
    assert check.ok and check.images >= 8, check
    assert check.screenshot.stat().st_size > 10_000
