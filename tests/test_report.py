"""The report: generated readings, missing stages, rendering, and the page in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hf_vitrobust import report as rp


def test_as_comparison_reads_paired_comparison_dicts():
    from hf_vitrobust.stats import paired_bootstrap

    comp = paired_bootstrap([0.0, 1.0, 0.0, 1.0] * 10, [1.0, 1.0, 1.0, 1.0] * 10, seed=0)
    read = rp.as_comparison(comp.to_dict())
    assert read is not None
    assert read.estimate == pytest.approx(comp.estimate)
    assert (read.ci_low, read.ci_high) == pytest.approx((comp.ci_low, comp.ci_high))
    assert read.direction == (1 if comp.excludes_zero and comp.ci_low > 0 else 0)
    # A bare `ci: [lo, hi]` pair is read too; non-mappings and empty dicts are None.
    alt = rp.as_comparison({"mean": 0.1, "ci": [-0.2, 0.3]})
    assert alt is not None and alt.direction == 0
    assert rp.as_comparison([1, 2]) is None
    assert rp.as_comparison({}) is None


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 0.05, "higher"), (-0.05, -0.01, "lower"), (-0.01, 0.05, "no clear change")],
)
def test_describe_change_follows_the_interval(low, high, expected):
    comp = rp.Comparison(estimate=(low + high) / 2, ci_low=low, ci_high=high, p_value=0.02, n=100)
    text = rp.describe_change(comp, "Top-1 accuracy", scale=100, unit=" pp", digits=1)
    assert expected in text
    assert ("excludes zero" in text) == (expected != "no clear change")
    # The numbers in the sentence are the numbers given.
    assert f"{low * 100:+.1f}" in text and f"{high * 100:+.1f}" in text


def test_describe_change_without_numbers_says_so():
    assert "no number" in rp.describe_change(None, "x")
    no_ci = rp.Comparison(estimate=0.3, ci_low=None, ci_high=None)
    assert "no confidence interval" in rp.describe_change(no_ci, "x")


def test_fmt_handles_missing_and_non_finite_values():
    assert rp.fmt(None) == "n/a"
    assert rp.fmt(float("nan")) == "n/a"
    assert rp.fmt("abc") == "n/a"
    assert rp.fmt(0.1234, 1, scale=100, sign=True) == "+12.3"
    assert rp.fmt_ci(0.5, 0.4, 0.6, 2) == "0.50 [0.40, 0.60]"
    assert rp.fmt_ci(0.5, None, 0.6, 2) == "0.50"


def test_empty_study_reports_every_stage_as_missing(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    paths = rp.build_report(study, study / "report")
    text = paths.markdown.read_text()
    page = paths.html.read_text()
    sections = paths.report.sections
    claims = [s for s in sections if s.claim]
    assert len(claims) >= 6
    assert all(s.verdict == rp.MISSING for s in sections)
    for section in sections:
        assert section.title in text
        assert section.readings and "missing" in section.readings[0].lower()
    assert "not been run" in text
    assert page.count("<section ") == len(sections)
    assert "data:image/png" not in page


def test_corrupt_json_is_reported_not_raised(tmp_path):
    study = tmp_path / "study"
    (study / "eval").mkdir(parents=True)
    (study / "eval" / "results.json").write_text("{ not json")
    (study / "analysis").mkdir()
    (study / "analysis" / "analysis.json").write_text(json.dumps({"unexpected": [1, 2, 3]}))
    paths = rp.build_report(study, study / "report")
    assert all(s.verdict == rp.MISSING for s in paths.report.sections)
    assert "could not be read" in paths.markdown.read_text()


def test_find_output_prefers_the_shallowest_and_skips_checkpoints(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "checkpoint-5").mkdir()
    (tmp_path / "a" / "checkpoint-5" / "results.json").write_text("{}")
    (tmp_path / "a" / "b" / "results.json").write_text("{}")
    assert rp.find_output(tmp_path, "results.json") == tmp_path / "a" / "b" / "results.json"
    (tmp_path / "results.json").write_text("{}")
    assert rp.find_output(tmp_path, "results.json") == tmp_path / "results.json"
    assert rp.find_output(tmp_path, "sae.json") is None


def test_explicit_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results"):
        rp.StudyOutputs.discover(tmp_path, results=tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="study_dir"):
        rp.StudyOutputs.discover(tmp_path / "absent")


def _png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_vitrobust.plots import save_figure

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    return save_figure(fig, path)


def _small_report(tmp_path: Path) -> rp.Report:
    fig_a = _png(tmp_path / "src" / "a.png")
    fig_b = _png(tmp_path / "src2" / "a.png")  # same file name: must not collide in figures/
    section = rp.Section(
        key="demo",
        title="A <claim> & more",
        claim="Something changes.",
        verdict=rp.SUPPORTED,
        readings=["Reading | with a pipe"],
        tables=[rp.Table(["x", "y"], [["1", "2"]])],
        figures=[rp.Figure("first", fig_a), rp.Figure("second", fig_b), rp.Figure("gone")],
    )
    return rp.Report("T", "Q?", ["setup line"], [], [section], {"results": "r.json"})


def test_write_report_embeds_and_copies_figures(tmp_path):
    paths = rp.write_report(_small_report(tmp_path), tmp_path / "out")
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "A &lt;claim&gt; &amp; more" in page  # escaped, never raw HTML
    copies = sorted(p.name for p in paths.figures_dir.iterdir())
    assert len(copies) == 2 and len(set(copies)) == 2
    md = paths.markdown.read_text()
    for name in copies:
        assert f"figures/{name}" in md
    assert "Figure missing: gone" in md and "Figure missing: gone" in page
    assert "Reading \\| with a pipe" in md


@pytest.fixture(scope="module")
def chromium() -> str:
    path = rp.find_chromium()
    if path is None and shutil.which("apt-get"):
        # The check must run where Chromium can be had; `make install` installs it.
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600, check=False
        )
        path = rp.find_chromium()
    if path is None:
        reason = "Chromium is not installed and `apt-get install -y chromium` did not provide it"
        print(f"SKIP browser check: {reason}")
        pytest.skip(reason)
    return path


def test_report_page_loads_in_chromium(tmp_path, chromium):
    paths = rp.write_report(_small_report(tmp_path), tmp_path / "out")
    check = rp.check_in_browser(paths.html, tmp_path / "out" / "screenshot.png", chromium=chromium)
    assert check.images == 2 and check.images_loaded == 2 and check.ok, check
    assert check.sections == 1
    assert (
        check.screenshot is not None and check.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )


def test_browser_check_catches_a_broken_image(tmp_path, chromium):
    paths = rp.write_report(_small_report(tmp_path), tmp_path / "out")
    page = paths.html.read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    paths.html.write_text(page)
    check = rp.check_in_browser(paths.html, chromium=chromium)
    assert check.images == 2 and check.images_loaded == 1 and not check.ok
    assert check.broken == ["first"]


def _metric(v: float) -> dict:
    return {"value": v, "ci_low": v - 0.02, "ci_high": v + 0.02, "n": 200}


def _results(seen_gain: tuple[float, float], unseen_gain: tuple[float, float]) -> dict:
    """A results.json of the evaluation schema with the given CIs of the top-1 changes."""

    def comp(ci: tuple[float, float]) -> dict:
        return {
            "estimate": sum(ci) / 2,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "p_value": 0.01 if ci[0] > 0 or ci[1] < 0 else 0.5,
            "test": "paired_bootstrap",
            "n": 200,
        }

    metrics = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy", "p_true", "nll", "ece")
    rows = []
    for fam, ci in (("seen", seen_gain), ("unseen", unseen_gain)):
        rows.append(
            {
                "model": "lf",
                "family": fam,
                "n_cells": 5,
                "metrics": {m: _metric(0.6) for m in metrics},
                "base_metrics": {m: _metric(0.5) for m in metrics},
                "vs_base": {m: comp(ci) for m in metrics},
            }
        )
    return {
        "schema": "hf_vitrobust.evaluation/1",
        "models": [
            {"key": "base", "name": "/x/base", "role": "base"},
            {"key": "lf", "name": "/x/low_frequency", "role": "fine_tuned"},
        ],
        "dataset": {"name": "fashion_mnist", "num_classes": 10, "n_images": 200},
        "settings": {"top_k": {"top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10}},
        "definitions": {"top_1_accuracy": "top-1 definition", "p_true": "certainty def"},
        "per_family": rows,
        "transfer_matrix": {
            "rows": ["lf"],
            "columns": ["clean", "noise", "blur"],
            "cells": [
                [
                    {**comp((-0.01, 0.01)), "seen": False},
                    {**comp(unseen_gain), "seen": False},
                    {**comp(seen_gain), "seen": True},
                ]
            ],
        },
    }


@pytest.mark.parametrize(
    ("seen", "unseen", "accuracy", "transfer"),
    [
        ((0.05, 0.15), (-0.03, 0.02), rp.SUPPORTED, rp.SUPPORTED),
        ((0.05, 0.15), (0.02, 0.08), rp.SUPPORTED, rp.NOT_SUPPORTED),
        ((-0.03, 0.04), (-0.03, 0.02), rp.NOT_SUPPORTED, rp.NOT_SUPPORTED),
    ],
)
def test_verdicts_follow_the_numbers(tmp_path, seen, unseen, accuracy, transfer):
    study = tmp_path / "study"
    (study / "eval").mkdir(parents=True)
    (study / "eval" / "results.json").write_text(json.dumps(_results(seen, unseen)))
    paths = rp.build_report(study)
    by_key = {s.key: s for s in paths.report.sections}
    assert by_key["accuracy"].verdict == accuracy
    assert by_key["transfer"].verdict == transfer
    assert by_key["certainty"].verdict == accuracy  # same CIs for every metric here
    text = " ".join(by_key["accuracy"].readings)
    assert f"{seen[0] * 100:+.1f}" in text and f"{seen[1] * 100:+.1f}" in text
    assert "low_frequency" in text  # the checkpoint's folder name, not its path
    # The report drew its own seen-vs-unseen figures and embedded them.
    page = paths.html.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert not (study / "report" / ".generated").exists()
    # Sections whose stage did not run say so.
    assert by_key["attention_entropy"].verdict == rp.MISSING


def test_changed_rule_uses_the_chance_rate():
    # 1 of 20 CIs excluding zero is what chance gives at 95%: not evidence of a change.
    verdict, reading = rp._changed_verdict(1, 20, "differences")
    assert verdict == rp.NOT_SUPPORTED and "1 of 20" in reading
    verdict, reading = rp._changed_verdict(8, 20, "differences")
    assert verdict == rp.SUPPORTED and "8 of 20" in reading


def test_corruption_table_is_generated_from_the_registry():
    from hf_vitrobust.corruptions import CORRUPTIONS, FAMILIES

    table = rp.corruption_table()
    assert [row[0] for row in table.rows] == list(CORRUPTIONS)
    for name, group, band, lf, fams, *_ in table.rows:
        c = CORRUPTIONS[name]
        assert (group, band, float(lf)) == (c.group, c.band, round(c.lf_share, 2))
        assert ("low_frequency" in fams) == (name in FAMILIES["low_frequency"])
    md = rp.corruption_table_markdown()
    assert md.count("\n|") == len(CORRUPTIONS) + 2  # header, separator, one row each
