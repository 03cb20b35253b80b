"""`make demo`: stage orchestration (skip, resume, failure, memory) and a reduced end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hf_vitrobust import demo
from hf_vitrobust import report as rp

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


def _fake_stages(out: Path, fail: set[str] = frozenset()) -> list[demo.Stage]:
    def stage(name: str, requires: tuple[str, ...] = (), always: bool = False) -> demo.Stage:
        target = out / name / "done.txt"
        cmd = [sys.executable, "-c", "raise SystemExit(3)"] if name in fail else _write(target)
        return demo.Stage(name, name, [target], [cmd], requires=requires, always=always)

    return [
        stage("a"),
        stage("b", ("a",)),
        stage("c", ("a",)),
        stage("d", ("b",)),
        stage("report", ("a", "b", "c", "d"), always=True),
    ]


def _run(monkeypatch, tmp_path: Path, fail: set[str] = frozenset(), **kw) -> dict[str, str]:
    out = tmp_path / "demo"
    monkeypatch.setattr(demo, "build_stages", lambda args: _fake_stages(out, fail))
    results = demo.run_demo(demo.DemoArguments(output_dir=str(out), **kw))
    return {r.name: r.status for r in results}


def test_stages_run_then_skip_on_rerun(monkeypatch, tmp_path, capsys):
    assert set(_run(monkeypatch, tmp_path).values()) == {"ran"}
    summary = json.loads((tmp_path / "demo" / "stages.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["a", "b", "c", "d", "report"]
    assert all(s["seconds"] > 0 and s["cpu_seconds"] >= 0 for s in summary["stages"])
    # The sampled process tree includes the child and its 64 MB buffer.
    assert all(s["peak_memory_bytes"] > 64 * 2**20 for s in summary["stages"])
    assert summary["within_memory_budget"] is True
    assert set(_run(monkeypatch, tmp_path).values()) == {"skipped"}
    printed = capsys.readouterr().out
    assert "done earlier, skipped" in printed and "(earlier run)" in printed
    # The study's time still counts the stages that ran earlier.
    rerun = json.loads((tmp_path / "demo" / "stages.json").read_text())
    assert rerun["study_seconds"] == pytest.approx(summary["study_seconds"], rel=1e-6)


def test_failed_stage_blocks_its_dependants_only(monkeypatch, tmp_path):
    statuses = _run(monkeypatch, tmp_path, fail={"b"})
    assert statuses == {
        "a": "ran",
        "b": "failed",
        "c": "ran",
        "d": "blocked",
        "report": "ran",
    }
    # Rerun after the fix: finished stages are skipped, the failed one and its dependants run,
    # and the report is rebuilt because its inputs changed.
    statuses = _run(monkeypatch, tmp_path)
    assert statuses == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran", "report": "ran"}


def test_force_and_only(monkeypatch, tmp_path):
    _run(monkeypatch, tmp_path)
    statuses = _run(monkeypatch, tmp_path, force=["c"])
    assert statuses["c"] == "ran" and statuses["a"] == "skipped"
    assert statuses["report"] == "ran"  # c is one of its inputs
    assert _run(monkeypatch, tmp_path, only=["a"]) == {"a": "skipped"}
    with pytest.raises(ValueError, match="unknown stage"):
        _run(monkeypatch, tmp_path, only=["nope"])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="finetune_steps"):
        demo.DemoArguments(finetune_steps=0)
    with pytest.raises(ValueError, match="finetune_families"):
        demo.DemoArguments(finetune_families=[])


def test_stage_commands_are_the_recipes_a_user_runs():
    args = demo.DemoArguments(output_dir="outputs/demo")
    stages = demo.build_stages(args)
    names = [s.name for s in stages]
    assert names == [
        "base",
        "finetune_low_frequency",
        "finetune_high_frequency",
        "evaluate",
        "analyze",
        "sae",
        "cards",
        "report",
    ]
    scripts = {s.name: Path(s.commands[0][1]).name for s in stages if s.commands}
    assert scripts == {
        "base": "finetune.py",
        "finetune_low_frequency": "finetune.py",
        "finetune_high_frequency": "finetune.py",
        "evaluate": "evaluate.py",
        "analyze": "analyze.py",
        "sae": "train_sae.py",
    }
    for stage in stages:
        for cmd in stage.commands:
            recipe = Path(cmd[2])
            if recipe.suffix == ".yaml":
                assert (REPO / recipe).is_file() or recipe.is_file(), recipe


# Reduced sizes: every stage runs for real on tiny data, in about two minutes on 2 idle cores.
REDUCED = [
    "--base_max_steps", "40",
    "--base_eval_examples", "200",
    "--finetune_steps", "4",
    "--finetune_views", "2",
    "--finetune_batch_size", "32",
    "--finetune_eval_examples", "64",
    "--eval_examples", "48",
    "--eval_severities", "2", "4",
    "--eval_corruptions", "gaussian_noise", "sharpen", "defocus_blur", "motion_blur",
    "contrast", "brightness",
    "--analysis_examples", "48",
    "--analysis_corruptions", "gaussian_noise,defocus_blur,contrast",
    "--sae_training_tokens", "4096",
    "--sae_train_examples", "400",
    "--sae_eval_images", "32",
    "--sae_layers", "5",
    "--sae_eval_corruptions", "blur",
]  # fmt: skip


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "recipes/demo.py", "--output_dir", str(out), *REDUCED]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "[demo] stage timings" in run.stdout

    summary = json.loads((out / "stages.json").read_text())
    ran = {s["name"]: s["status"] for s in summary["stages"]}
    assert set(ran.values()) == {"ran"}, ran
    assert summary["within_memory_budget"]

    # Models load with plain from_pretrained, and carry their cards.
    from transformers import ViTForImageClassification

    for fam in ("low_frequency", "high_frequency"):
        model = ViTForImageClassification.from_pretrained(out / fam)
        assert model.config.robustness["train_family"] == fam
        card = (out / fam / "README.md").read_text()
        assert "model-index" in card
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
    assert verdicts["accuracy"] in (rp.SUPPORTED, rp.PARTLY, rp.NOT_SUPPORTED)
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
