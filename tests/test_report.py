"""The report: generated readings, missing stages, rendering, and the page in a real browser."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hf_vitrobust import report as rp
from hf_vitrobust.analysis.sae.schema import header as sae_header
from hf_vitrobust.analysis.schema import header as analysis_header
from hf_vitrobust.evaluation.schema import header as results_header
from hf_vitrobust.formatting import fmt, fmt_ci
from hf_vitrobust.io import StageOutputError
from hf_vitrobust.report import build as report_build
from hf_vitrobust.runtime import header as stages_header


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
    # The report formats every number through hf_vitrobust.formatting.
    assert fmt(None) == "n/a"
    assert fmt(float("nan")) == "n/a"
    assert fmt("abc") == "n/a"
    assert fmt(0.1234, 1, scale=100, sign=True) == "+12.3"
    assert fmt_ci(0.5, 0.4, 0.6, 2) == "0.50 [0.40, 0.60]"
    assert fmt_ci(0.5, None, 0.6, 2) == "0.50"


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


def _comp(ci: tuple[float, float]) -> dict:
    """A paired difference (stats.PairedComparison.to_dict() layout) with the given CI."""
    return {
        "estimate": sum(ci) / 2,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "p_value": 0.01 if ci[0] > 0 or ci[1] < 0 else 0.5,
        "test": "paired_bootstrap",
        "n": 200,
    }


def _results(seen_gain: tuple[float, float], unseen_gain: tuple[float, float]) -> dict:
    """A results.json of the evaluation schema with the given CIs of the top-1 changes."""
    comp = _comp
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
        **results_header(),
        "models": [
            {"key": "base", "name": "/x/base", "role": "base"},
            {"key": "lf", "name": "/x/low_frequency", "role": "fine_tuned"},
        ],
        "dataset": {"name": "fashion_mnist", "num_classes": 10, "n_images": 200},
        "grid": {"corruptions": ["gaussian_noise", "defocus_blur"], "severities": [1, 2, 3, 4, 5]},
        "settings": {"top_k": {"top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10}},
        "definitions": {"top_1_accuracy": "top-1 definition", "p_true": "certainty def"},
        "cells": [],
        "per_group": [],
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
    verdict, reading = rp.changed_verdict(1, 20, "differences")
    assert verdict == rp.NOT_SUPPORTED and "1 of 20" in reading
    verdict, reading = rp.changed_verdict(8, 20, "differences")
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


def _full_study(root: Path) -> Path:
    """A study folder with every stage output, shaped like the writers' (numbers made up)."""
    png = _png(root / "template.png")

    def figures(folder: Path, *names: str) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(png, folder / name)
        return list(names)

    def write(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    study = root / "study"
    results = _results((0.05, 0.15), (-0.03, 0.02))
    results["settings"].update(corruption_seed=7, n_resamples=1000, ci_method="bca")
    results["grid"]["clean"] = True
    results["dataset"]["split"] = "test"
    results["models"][1]["robustness"] = {
        "adversary": "worst_of_k",
        "train_family": "low_frequency",
        "severities": [1, 2, 3],
    }
    results["models"][1]["train_corruptions"] = ["defocus_blur", "gaussian_blur"]
    results["corruption_note"] = "On-the-fly corruptions, not the ImageNet-C JPEGs."
    results["definitions"].update(seen="seen def", ce="ce def")
    results["corruption_error"] = {
        "reference": "base",
        "models": {
            "base": {"mce": _metric(1.0), "relative_mce": _metric(1.0)},
            "lf": {"mce": _metric(0.8), "relative_mce": None},
        },
    }
    results["figures"] = figures(
        study / "eval", "accuracy_top1.png", "transfer_matrix.png", "p_true.png", "severity.png"
    )
    write(study / "eval" / "results.json", results)

    def lens_model(first: float) -> dict:
        return {
            "n_images": 64,
            "accuracy": [_metric(0.1), _metric(0.5), _metric(0.8)],
            "true_class_probability": [_metric(0.1), _metric(0.4), _metric(0.7)],
            "first_correct_layer": {"first": _metric(first), "stable": _metric(first + 1)},
            "last_layer_max_abs_diff": 3e-7,
        }

    def lens_comparison() -> dict:
        return {
            "accuracy": [_comp((-0.01, 0.01))] * 3,
            "true_class_probability": [_comp((-0.01, 0.01))] * 3,
            "first_correct_layer": {
                "count": 50,
                "first": {"paired_bootstrap": _comp((-1.5, -0.5))},
                "stable": {"paired_bootstrap": _comp((-0.5, 0.5))},
            },
        }

    entropy = {"all_queries": [[1.0] * 3] * 2, "cls_query": [[1.0] * 3] * 2}

    def entropy_tests(shift: float) -> dict:
        layers = [[_comp((shift - 0.01, shift + 0.02)) for _head in range(3)] for _ in range(2)]
        kind = {"difference": [[shift] * 3] * 2, "tests": layers}
        return {"all_queries": kind, "cls_query": kind}

    analysis = {
        **analysis_header(),
        "models": {
            "base": {"name_or_path": "/x/base", "num_layers": 2, "num_heads": 3},
            "lf": {"name_or_path": "/x/low_frequency", "num_layers": 2, "num_heads": 3},
        },
        "conditions": ["clean", "blur"],
        "data": {"max_examples": 64, "dataset": "fashion_mnist", "split": "test", "severity": 3},
        "definitions": {
            "first_correct_layer": "fcl def",
            "attention_entropy": "entropy def",
            "cka": "cka def",
            "patching": "patching def",
        },
        "logit_lens": {
            cond: {
                "models": {"base": lens_model(3.0), "lf": lens_model(2.0)},
                "comparisons": {"lf": lens_comparison()},
            }
            for cond in ("clean", "blur")
        },
        "attention_entropy": {
            cond: {
                "models": {"base": entropy, "lf": entropy},
                "differences": {"lf": entropy_tests(shift)},
            }
            for cond, shift in (("clean", 0.0), ("blur", 0.05))
        },
        "cka": {
            "clean": {"lf": {"cls": [1.0, 0.97, 0.93], "patch_mean": [1.0, 0.8, 0.85]}},
            "blur": {"lf": {"cls": [1.0, 0.9, None], "patch_mean": [None, None, None]}},
        },
        "patching": {
            "blur": {
                "lf": {
                    "gain": _comp((0.02, 0.08)),
                    "accuracy_a": 0.5,
                    "accuracy_b": 0.55,
                    "per_layer": [
                        {"layer": 0, "recovered": 0.1, "ci_low": 0.0, "ci_high": 0.2},
                        {"layer": 1, "recovered": 0.6, "ci_low": 0.4, "ci_high": 0.8},
                    ],
                }
            },
            "clean": {
                "lf": {
                    "gain": _comp((-0.01, 0.01)),
                    "accuracy_a": 0.8,
                    "accuracy_b": 0.8,
                    "per_layer": [{"layer": 0, "recovered": None}],
                }
            },
        },
        "figures": figures(
            study / "analysis",
            "first_correct_layer.png",
            "logit_lens.png",
            "attention_entropy.png",
            "attention_maps.png",
            "cka.png",
            "patching.png",
        ),
    }
    write(study / "analysis" / "analysis.json", analysis)

    def median(m: float) -> dict:
        return {"median": m, "median_ci": [m - 0.01, m + 0.01]}

    def sae_entry(sae_id: str, sae_type: str, flagged: bool) -> dict:
        return {
            "sae_id": sae_id,
            "sae_type": sae_type,
            "layer": 2,
            "d_in": 96,
            "d_sae": 384,
            "metrics": {"base": {"l0": 12.0, "explained_variance": 0.8, "dead_fraction": 0.01}},
            "flagged": flagged,
            "flag_reason": "explained variance 0.41 < 0.7" if flagged else None,
        }

    def cell(code: float) -> dict:
        return {
            "code_cosine": median(code),
            "code_cosine_minus_different_image": _comp((0.3, 0.5)),
            "code_cosine_different_image": median(0.5),
            "raw_cosine": median(0.97),
            "topk_jaccard": median(0.6),
        }

    sae = {
        **sae_header(),
        "base_model": "/x/base",
        "finetuned_models": {"lf": "/x/low_frequency"},
        "layers": [2],
        "tokens": "cls",
        "training_data": {
            "training_tokens": 20000,
            "dataset": "fashion_mnist",
            "split": "train",
            "corruption_family": "all",
        },
        "eval": {"num_images": 128, "dataset": "fashion_mnist", "split": "test", "severity": 3},
        "config": {"train_finetuned_saes": True, "seed_baseline": True, "seed": 0},
        "definitions": {
            "code_cosine": "code cosine def",
            "batchtopk_codes": "batchtopk note",
            "matched_dictionary_cosine": "matching def",
        },
        "saes": [
            sae_entry("layer2_standard", "standard", False),
            sae_entry("layer2_batchtopk", "batchtopk", True),
        ],
        "comparisons": {
            "lf": {
                "layer2_standard": {"conditions": {"clean": cell(0.95), "blur": cell(0.85)}},
                "layer2_batchtopk": {"conditions": {"clean": cell(0.7)}},
            }
        },
        "dictionary_matching": {
            "layer2_standard": {
                "finetuned:lf": median(0.8),
                "base_other_seed": median(0.75),
                "random_directions": median(0.1),
            }
        },
        "figures": figures(
            study / "sae",
            "sae_cosine_standard_lf.png",
            "sae_cosine_batchtopk_lf.png",
            "sae_dictionary_matching.png",
        ),
    }
    write(study / "sae" / "sae.json", sae)

    def stage(name: str, status: str) -> dict:
        return {
            "name": name,
            "status": status,
            "seconds": 0.0 if status == "skipped" else 42.0,
            "earlier_seconds": 40.0 if status == "skipped" else None,
            "cpu_seconds": 80.0,
            "peak_memory_bytes": 2 * 1024**3,
            "commands": [f"python recipes/{name}.py"],
        }

    stages = {
        **stages_header(),
        "stages": [stage("base", "skipped"), stage("evaluate", "ran")],
        "study_seconds": 600.0,
        "peak_memory_bytes": 2 * 1024**3,
        "time_budget_seconds": 900.0,
        "memory_budget_bytes": 6 * 1024**3,
        "within_time_budget": True,
        "within_memory_budget": True,
        "cpu_count": 2,
        "threads": 2,
        "load_average_at_end": [1.5, 1.2, 1.0],
    }
    write(study / "stages.json", stages)
    return study


def test_a_full_study_fills_every_section(tmp_path):
    study = _full_study(tmp_path)
    paths = rp.build_report(study)
    verdicts = {s.key: s.verdict for s in paths.report.sections}
    assert verdicts == {
        "accuracy": rp.SUPPORTED,
        "transfer": rp.SUPPORTED,
        "certainty": rp.SUPPORTED,
        "first_correct_layer": rp.SUPPORTED,
        "attention_entropy": rp.SUPPORTED,
        "sae_vanilla": rp.NOT_SUPPORTED,  # 1 of 2 comparisons unchanged: not more than half
        "sae_batchtopk": rp.NOT_SUPPORTED,  # every BatchTopK SAE flagged
        "cka": rp.INFO,
        "patching": rp.INFO,
        "dictionary_matching": rp.INFO,
        "corruption_error": rp.INFO,
        "runtime": rp.INFO,
    }
    by_key = {s.key: s for s in paths.report.sections}
    assert "6 of 12" in by_key["attention_entropy"].readings[0]
    assert "2 of 4" in by_key["first_correct_layer"].readings[0]
    assert "1 of 2 comparisons" in by_key["sae_vanilla"].readings[0]
    assert "patching layer 1 alone" in " ".join(by_key["patching"].readings)
    assert "fewer corruption errors" in by_key["corruption_error"].readings[0]
    assert "within the 15-minute budget" in by_key["runtime"].readings[0]
    md = paths.markdown.read_text()
    assert "Figure missing" not in md and "Missing" not in md
    assert paths.report.setup[0].startswith("Evaluation: 200 held-out images of fashion_mnist")
    assert paths.report.setup_tables[0].rows[1][:4] == [
        "low_frequency",
        "fine_tuned",
        "worst_of_k",
        "low_frequency",
    ]
    # 13 stage figures copied, plus the report's own two seen-vs-unseen figures.
    assert len(list(paths.figures_dir.iterdir())) == 15


def _buggy_build(study, section):
    section.readings.append("half-built")
    return {}["typo"]


@pytest.mark.parametrize("key", ["accuracy", "runtime"])
def test_a_bug_in_a_section_builder_is_raised_not_reported_as_missing(tmp_path, monkeypatch, key):
    study = _full_study(tmp_path)
    specs = [
        dataclasses.replace(spec, build=_buggy_build) if spec.key == key else spec
        for spec in rp.SECTION_SPECS
    ]
    monkeypatch.setattr(report_build, "SECTION_SPECS", specs)
    with pytest.raises(KeyError, match="typo"):
        rp.build_report(study)


def test_a_bug_deep_inside_a_section_is_raised(tmp_path, monkeypatch):
    from hf_vitrobust.report.sections import cka

    def broken(value):
        raise TypeError("bug in a helper")

    monkeypatch.setattr(cka, "finite", broken)
    with pytest.raises(TypeError, match="bug in a helper"):
        rp.build_report(_full_study(tmp_path))


def test_wrong_schema_version_makes_its_sections_unavailable_naming_the_file(tmp_path):
    study = _full_study(tmp_path)
    path = study / "eval" / "results.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    path.write_text(json.dumps(data))
    paths = rp.build_report(study)
    by_key = {s.key: s for s in paths.report.sections}
    for key in ("accuracy", "transfer", "certainty", "corruption_error"):
        section = by_key[key]
        assert section.verdict == rp.MISSING
        assert str(path) in section.readings[0] and "SchemaMismatch" in section.readings[0]
        assert "schema version 1" in section.readings[0]
        assert "recipes/evaluate.py" in section.readings[0]  # says how to fix it
    # The other stages' sections are unaffected, and the setup says why evaluation is missing.
    assert by_key["attention_entropy"].verdict == rp.SUPPORTED
    assert by_key["runtime"].verdict == rp.INFO
    assert (
        paths.report.setup[0].startswith("Evaluation: missing (")
        and str(path) in (paths.report.setup[0])
    )
    assert str(path) in paths.markdown.read_text()


def test_an_absent_optional_field_is_unavailable_naming_the_file(tmp_path):
    assert issubclass(rp.SectionUnavailable, StageOutputError)
    study = _full_study(tmp_path)
    # corruption_error is optional in results.json (its reader does not require it).
    path = next(study.rglob("results.json"))
    data = json.loads(path.read_text())
    del data["corruption_error"]
    path.write_text(json.dumps(data))
    by_key = {s.key: s for s in rp.build_report(study).report.sections}
    reading = by_key["corruption_error"].readings[0]
    assert by_key["corruption_error"].verdict == rp.MISSING
    assert str(path) in reading and "'corruption_error'" in reading
    assert "SectionUnavailable" in reading
    assert by_key["accuracy"].verdict != rp.MISSING  # the same file's other sections still build


def test_stage_outputs_are_read_once_through_their_readers(tmp_path, monkeypatch):
    study = rp.StudyOutputs.discover(_full_study(tmp_path))
    calls = []
    reader = rp.SOURCES["analysis"].reader
    source = dataclasses.replace(
        rp.SOURCES["analysis"], reader=lambda p: calls.append(p) or reader(p)
    )
    monkeypatch.setitem(rp.SOURCES, "analysis", source)
    assert study.load("analysis")["schema"] == "hf_vitrobust.analysis"
    assert study.load("analysis") is study.load("analysis") and len(calls) == 1
    (tmp_path / "study" / "stages.json").unlink()
    empty = rp.StudyOutputs.discover(tmp_path / "study")
    with pytest.raises(StageOutputError, match="has not been run"):
        empty.load("stages")
