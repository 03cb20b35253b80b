"""The report: generated readings, missing stages, rendering, the page in a real browser, and every
section and verdict on the golden study (tests/data/golden)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from hf_vitrobust import report as rp
from hf_vitrobust.configs import parse_recipe
from hf_vitrobust.formatting import fmt, fmt_ci
from hf_vitrobust.io import StageOutputError
from hf_vitrobust.report import build as report_build


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
    """Debian's chromium (installed by `make install`, never by a test); a missing browser
    skips locally and fails in CI (tests/conftest.py)."""
    path = rp.find_chromium()
    if path is None:
        pytest.skip("Chromium is not installed (make install installs Debian's chromium)")
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


# ---------------------------------------------------------------------------------------------
# The golden study (tests/data/golden): every section and every verdict, from records with known
# truth (see tests/data/golden/make_golden.py for what was planted)
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "golden" / "study"
CLAIMS = ("accuracy", "transfer", "certainty", "first_correct_layer", "attention_entropy")
SAE_SECTIONS = ("sae_vanilla", "sae_batchtopk", "dictionary_matching")


def _golden(root: Path) -> Path:
    study = root / "study"
    shutil.copytree(GOLDEN, study)
    return study


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _sections(study: Path, **kw) -> dict[str, rp.Section]:
    return {s.key: s for s in rp.build_report(study, **kw).report.sections}


def _section(study: Path, key: str, rules: rp.VerdictRules | None = None) -> rp.Section:
    """One section, built alone (no page written)."""
    outputs = rp.StudyOutputs.discover(study)
    outputs.generated_dir = study / ".generated"
    outputs.rules = rules or rp.VerdictRules()
    return rp.build_section(next(s for s in rp.SECTION_SPECS if s.key == key), outputs)


def test_the_golden_study_fills_every_section_with_the_planted_verdicts(tmp_path):
    paths = rp.build_report(_golden(tmp_path))
    by_key = {s.key: s for s in paths.report.sections}
    verdicts = {k: s.verdict for k, s in by_key.items() if k not in SAE_SECTIONS}
    assert verdicts == {
        "accuracy": rp.SUPPORTED,  # both fine-tunes gain ~12 pp over the control
        "transfer": rp.NOT_SUPPORTED,  # runB/final transfers to blur
        "certainty": rp.INCONCLUSIVE,  # runB/final's gain straddles the floor
        "first_correct_layer": rp.NOT_SUPPORTED,  # unchanged within ±0.25 layers
        "attention_entropy": rp.SUPPORTED,  # 0.12 nats at one layer, each fine-tune
        "cka": rp.INFO,
        "patching": rp.INFO,
        "corruption_error": rp.INFO,
        "runtime": rp.INFO,
    }
    # Every judged claim states its rule next to its verdict, with its numbers.
    md, page = paths.markdown.read_text(), paths.html.read_text()
    for key in CLAIMS:
        assert len(by_key[key].rules) == 1 and "clean control" in by_key[key].rules[0]
    assert "1.0 pp" in by_key["accuracy"].rules[0]
    assert "max(1.0 pp, 20%" in by_key["transfer"].rules[0]
    assert (
        "Holm" in by_key["attention_entropy"].rules[0]
        and "0.05 nats" in by_key["attention_entropy"].rules[0]
    )
    assert "0.25 layers" in by_key["first_correct_layer"].rules[0]
    assert md.count("*Rule:*") >= len(CLAIMS) and page.count('class="rule"') >= len(CLAIMS)
    assert "Figure missing" not in md
    # The inconclusive group says how many images would decide it.
    transfer = " ".join(by_key["transfer"].readings)
    assert "weather: inconclusive: ~" in transfer and "images would decide it" in transfer
    # The decomposition: trained longer, saw corruptions, adversarial selection.
    accuracy = by_key["accuracy"].tables[0]
    assert "trained longer (clean control − base)" in accuracy.columns
    assert accuracy.rows[0][0] == "runA/final" and accuracy.rows[0][6].startswith("≈+")
    assert accuracy.rows[1][7] == "n/a"  # runB/final has no random-view control


def test_the_golden_study_judges_the_sae_claims(tmp_path):
    by_key = _sections(_golden(tmp_path))
    assert by_key["sae_vanilla"].verdict == rp.SUPPORTED
    batchtopk = by_key["sae_batchtopk"]
    assert (batchtopk.verdict, batchtopk.verdict_reason) == (
        rp.INCONCLUSIVE,
        "SAE below the quality bar",
    )
    assert "not within ±10% of k = 8" in " ".join(row[-1] for row in batchtopk.tables[1].rows)
    assert by_key["dictionary_matching"].verdict == rp.INFO


def test_models_sharing_a_folder_name_are_judged_apart(tmp_path):
    # Issue #15.7: both fine-tunes are checkpoints named `final`; keyed by folder name they
    # clashed and one model's transfer flipped the other's verdict.
    readings = _section(_golden(tmp_path), "transfer").readings
    assert any(r.startswith("runA/final:") and r.endswith("→ inconclusive.") for r in readings)
    assert any(r.startswith("runB/final:") and r.endswith("→ not supported.") for r in readings)


def _drop_controls(study: Path) -> None:
    """The study without its control fine-tunes (models and every record that names them)."""
    controls = {"clean", "random_lf"}

    def results(data):
        data["models"] = [m for m in data["models"] if m["key"] not in controls]
        for m in data["models"]:
            if m.get("controls"):
                m["controls"] = {"clean": None, "random_view": None}
        keep = [i for i, k in enumerate(data["transfer_matrix"]["rows"]) if k not in controls]
        tm = data["transfer_matrix"]
        tm["rows"] = [tm["rows"][i] for i in keep]
        tm["cells"] = [tm["cells"][i] for i in keep]

    def analysis(data):
        for key in controls:
            data["models"].pop(key)
        for section in ("logit_lens", "attention_entropy"):
            for block in data[section].values():
                for part in (*block.values(), block.get("common", {}).get("models", {})):
                    for key in controls:
                        part.pop(key, None)
        for section in ("cka", "patching"):
            for block in data[section].values():
                for key in controls:
                    block.pop(key, None)

    for path, change in (
        (study / "eval" / "results.json", results),
        (study / "analysis" / "analysis.json", analysis),
    ):

        def without(data, change=change):
            change(data)
            data["comparisons"] = [
                r
                for r in data["comparisons"]
                if r["model"] not in controls and r["reference"] not in controls
            ]

        _edit(path, without)


def test_without_a_control_every_claim_is_inconclusive_and_says_why(tmp_path):
    study = _golden(tmp_path)
    _drop_controls(study)
    paths = rp.build_report(study)
    by_key = {s.key: s for s in paths.report.sections}
    for key in CLAIMS:
        assert (by_key[key].verdict, by_key[key].verdict_reason) == (
            rp.INCONCLUSIVE,
            "no control fine-tune",
        ), key
    assert "inconclusive (no control fine-tune)" in paths.markdown.read_text()
    # The comparison with the base is still shown.
    assert by_key["accuracy"].tables[0].rows[0][4].startswith("+")


def test_a_record_without_its_fields_makes_the_section_unavailable_naming_it(tmp_path):
    study = _golden(tmp_path)
    path = study / "eval" / "results.json"
    _edit(path, lambda d: d["comparisons"][3].pop("estimate"))
    accuracy = _section(study, "accuracy")
    assert accuracy.verdict == rp.MISSING
    assert "comparisons[3]" in accuracy.readings[0] and "'estimate'" in accuracy.readings[0]


def test_the_rules_numbers_come_from_the_recipe(tmp_path):
    study = _golden(tmp_path)
    # A 20 pp floor is above both fine-tunes' whole CIs (~+10 to +15 pp).
    argv = ["--study_dir", str(study), "--seen_floor", "0.2"]
    args, rules = parse_recipe((rp.ReportArguments, rp.VerdictRules), argv)
    assert args.study_dir == str(study)
    assert rules.seen_floor == 0.2 and rules.correction == "holm"
    accuracy = _section(study, "accuracy", rules)
    assert accuracy.verdict == rp.NOT_SUPPORTED
    assert "20.0 pp" in accuracy.rules[0]
    bh = _section(study, "attention_entropy", rp.VerdictRules(correction="bh"))
    assert "Benjamini–Hochberg" in bh.rules[0]
    assert rp.main(["--study_dir", str(study), "--correction", "bh"]) == 0


def test_top_k_note_when_k_reaches_the_number_of_classes(tmp_path):
    # Top-10 of 10 classes is 100% by construction; the note used to need k > classes.
    study = _golden(tmp_path)
    notes = " ".join(_section(study, "accuracy").notes)
    assert "top-10 accuracy counts every class" in notes and "by construction" in notes
    _edit(study / "eval" / "results.json", lambda d: d["dataset"].update(num_classes=1000))
    assert "by construction" not in " ".join(_section(study, "accuracy").notes)


def test_transfer_matrix_marks_are_corrected_for_multiplicity(tmp_path):
    study = _golden(tmp_path)

    def p_values(data):
        cells = [c for row in data["transfer_matrix"]["cells"] for c in row]
        for c in cells:
            c["p_value"] = 0.5
        cells[1]["p_value"] = 0.01  # significant alone, not after Holm over 20 cells
        cells[2]["p_value"] = 0.001  # 20 × 0.001 = 0.02: still significant

    _edit(study / "eval" / "results.json", p_values)
    table = next(
        t for t in _section(study, "transfer").tables if t.caption.startswith("Transfer matrix")
    )
    assert "Holm" in table.caption and "20 cells" in table.caption and "(1 marked;" in table.caption
    assert not table.rows[0][2].endswith("*") and "*" in table.rows[0][3]


def _buggy_build(study, section):
    section.readings.append("half-built")
    return {}["typo"]


@pytest.mark.parametrize("key", ["accuracy", "runtime"])
def test_a_bug_in_a_section_builder_is_raised_not_reported_as_missing(tmp_path, monkeypatch, key):
    study = _golden(tmp_path)
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
        rp.build_report(_golden(tmp_path))


def test_wrong_schema_version_makes_its_sections_unavailable_naming_the_file(tmp_path):
    study = _golden(tmp_path)
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
    study = _golden(tmp_path)
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
    study = rp.StudyOutputs.discover(_golden(tmp_path))
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


# ---------------------------------------------------------------------------------------------
# The report on what the real writers write (evaluation and analysis recipes, tiny models)
# ---------------------------------------------------------------------------------------------


def _recipe(name: str):
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save_study_models(root: Path, kwargs: dict) -> dict[str, Path]:
    """A base, two adversarial fine-tunes in folders both named `final`, and their clean control
    (nudged copies of one tiny ViT) with the config.robustness records the trainer writes."""
    import torch

    from hf_vitrobust.models import tiny_vit

    common = {"base_model": "base", "seed": 0, "max_steps": 10}
    spec = {
        "base": None,
        "runA/final": ("worst_of_k", ["defocus_blur"]),
        "runB/final": ("worst_of_k", ["gaussian_noise"]),
        "control": ("none", []),
    }
    model, processor = tiny_vit(seed=0, **kwargs)
    paths = {}
    for i, (name, training) in enumerate(spec.items()):
        other = copy.deepcopy(model)
        if training is not None:
            generator = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for param in other.vit.layers.parameters():
                    param.add_(0.05 * torch.randn(param.shape, generator=generator))
            adversary, corruptions = training
            other.config.robustness = {
                "adversary": adversary,
                "num_views": 4,
                "corruptions": corruptions,
                "train_corruptions": corruptions,
                **common,
            }
        other.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.mark.slow
def test_the_report_reads_the_real_stage_outputs(tmp_path, tiny_vit_kwargs, fashion_mnist_dir):
    paths = _save_study_models(tmp_path / "models", tiny_vit_kwargs)
    fine_tuned = [str(paths[k]) for k in ("runA/final", "runB/final", "control")]
    models = ["--base_model", str(paths["base"]), "--finetuned_models", *fine_tuned]
    study = tmp_path / "study"
    _recipe("evaluate").main([
        *models, "--dataset_name", "fashion_mnist", "--eval_split", "test",
        "--max_eval_examples", "60", "--corruptions", "gaussian_noise,defocus_blur,fog",
        "--severities", "3", "--batch_size", "60", "--n_resamples", "1000",
        "--output_dir", str(study / "eval"),
    ])  # fmt: skip
    _recipe("analyze").main([
        str(REPO / "recipes" / "fashion-mnist-tiny" / "analyze.yaml"), *models,
        "--max_eval_examples", "48", "--batch_size", "48",
        "--corruptions", "gaussian_noise,defocus_blur", "--num_panel_images", "0",
        "--progress", "false", "--output_dir", str(study / "analysis"),
    ])  # fmt: skip
    _recipe("train_sae").main([
        str(REPO / "recipes" / "fashion-mnist-tiny" / "sae.yaml"), *models,
        "--max_train_examples", "500", "--training_tokens", "4000", "--num_eval_images", "40",
        "--reference_images", "16", "--corruptions", "gaussian_noise", "defocus_blur",
        "--layers", "1", "--k", "4", "--train_finetuned_saes", "false",
        "--seed_baseline", "false", "--output_dir", str(study / "sae"),
    ])  # fmt: skip
    by_key = _sections(study)
    for key in (*CLAIMS, "sae_vanilla", "sae_batchtopk"):
        section = by_key[key]
        assert section.verdict in rp.VERDICTS, (key, section.readings)
        assert section.rules and "clean control" in section.rules[0]
    # Keys from the checkpoints' paths (both folders are named `final`), judged against the
    # clean control the roles module matched from config.robustness.
    rows = by_key["accuracy"].tables[0].rows
    assert [row[:2] for row in rows] == [["runA/final", "control"], ["runB/final", "control"]]
    assert by_key["attention_entropy"].tables[0].columns[1:] == ["layer 1", "layer 2"]
    for key in ("cka", "patching", "corruption_error"):
        assert by_key[key].verdict == rp.INFO, (key, by_key[key].readings)
    # The report's quality bar and the SAE stage's flag agree (same EV and L0-vs-k bounds).
    for entry in json.loads((study / "sae" / "sae.json").read_text())["saes"]:
        assert bool(rp.sae_quality_failures(entry, rp.VerdictRules())) == entry["flagged"], entry


def test_models_table_says_which_definition_each_family_follows():
    from hf_vitrobust.report.sections.setup import _models_table

    def model(key, corruptions):
        robustness = {"adversary": "worst_of_k", "corruptions": corruptions, "num_views": 4}
        robustness["train_corruptions"] = ["gaussian_blur"]
        return {"key": key, "name": key, "robustness": robustness}

    table = _models_table({"models": [model("a", ["low_frequency"]), model("b", "band_low")]})
    column = table.columns.index("training family (definition)")
    assert [row[column] for row in table.rows] == [
        "low_frequency (image_content)",
        "band_low (perturbation_band)",
    ]
    assert "image_content: the paper's definition" in table.caption
    assert "perturbation_band: by the measured band" in table.caption


@pytest.mark.parametrize("parallel", [None, 2])
def test_runtime_says_what_the_peak_memory_covers(tmp_path, parallel):
    study = _golden(tmp_path)
    stages = json.loads((study / "stages.json").read_text())
    stages["parallel"] = parallel
    (study / "stages.json").write_text(json.dumps(stages))
    reading = _section(study, "runtime").readings[0]
    if parallel:
        assert "whole process tree, up to 2 stages running at once" in reading
    else:
        assert "largest stage's process tree" in reading


def test_setup_lines_say_how_many_images_each_stage_skipped(tmp_path):
    """Each stage's setup line says how many images could not be decoded (or none), with the
    limit, from where that stage records them."""
    study = _golden(tmp_path)
    record = {"seen": 57, "bad": 2, "fraction": 2 / 57, "limit": 0.05, "passed": True}
    _edit(study / "eval" / "results.json", lambda d: d.update(bad_images=record))
    _edit(study / "analysis" / "analysis.json", lambda d: d.update(bad_images={**record, "bad": 0}))

    def sae(d):
        d["training_data"]["bad_images"] = {**record, "limit": 0.005}
        d["eval"]["bad_images"] = {**record, "bad": 0, "limit": 0.01}

    _edit(study / "sae" / "sae.json", sae)
    lines = rp.build_report(study).report.setup
    by_stage = {line.split(":", 1)[0]: line for line in lines}
    skipped = "2 of 57 images could not be decoded and were skipped"
    assert by_stage["Evaluation"].endswith(f"Bad images: {skipped} (limit 5%).")
    assert by_stage["Analysis"].endswith("Bad images: none (limit 5%).")
    assert by_stage["SAEs"].endswith(
        f"Bad images: training {skipped} (limit 0.5%); held-out none (limit 1%)."
    )
    # Outputs that predate the record say so rather than claiming none.
    plain = rp.build_report(_golden(tmp_path / "plain")).report.setup
    assert "Bad images: not recorded." in plain[0]


def test_accuracy_readings_name_the_control_in_parentheses(tmp_path):
    """A control whose key is "control" must not read "clean control control"."""
    readings = _section(_golden(tmp_path), "accuracy").readings
    judged = [r for r in readings if "minus its clean control" in r]
    assert judged and all("minus its clean control (" in r for r in judged)
    assert not any("control control" in r for r in readings)
