"""The report's verdicts on the golden study edited to known truth: missing cells, the rules'
numbers and confidence, figures marked by the report's own decisions, patching without a gain."""

from __future__ import annotations

import matplotlib.axes
import pytest

from hf_vitrobust import report as rp
from hf_vitrobust.plots.evaluation import plot_transfer_matrix
from hf_vitrobust.report.sections import accuracy, attention
from hf_vitrobust.report.sections.claims import claim_inputs
from hf_vitrobust.report.verdicts import NO_RECORD, OTHER_CONFIDENCE
from hf_vitrobust.stats import significant
from tests.test_report import _edit, _golden, _section

A, B = "runA/final", "runB/final"


def _no_transfer(tmp_path):
    """The golden study with every unseen group of both fine-tunes equal to the control's (runB
    transferred to blur, runA was undecided on weather): "no transfer" holds."""
    study = _golden(tmp_path)

    def edit(data):
        for r in data["comparisons"]:
            unseen = r["scope"].startswith("group:") and r.get("seen") is False
            if r["reference"] == "clean" and r["metric"] == "top_1_accuracy" and unseen:
                r.update(estimate=0.0, ci_low=-0.01, ci_high=0.01)

    _edit(study / "eval" / "results.json", edit)
    return study


def _drop(study, source, keep):
    path = {"results": "eval/results.json", "analysis": "analysis/analysis.json"}.get(source)
    path = study / (path or "sae/sae.json")
    _edit(path, lambda d: d.update(comparisons=[r for r in d["comparisons"] if keep(r)]))


def test_a_missing_unseen_group_makes_no_transfer_inconclusive(tmp_path):
    study = _no_transfer(tmp_path)
    assert _section(study, "transfer").verdict == rp.SUPPORTED  # every group is no transfer
    # The record against the control of one unseen group is gone (the one against the base is
    # still there): that group is an inconclusive cell, not a group fewer.
    _drop(
        study,
        "results",
        lambda r: (r["model"], r["reference"], r["scope"]) != (A, "clean", "group:digital"),
    )
    section = _section(study, "transfer")
    assert (section.verdict, section.verdict_reason) == (rp.INCONCLUSIVE, NO_RECORD)
    rows = {row[1]: row for row in section.tables[0].rows if row[0] == A}
    assert rows["digital"][4] == NO_RECORD and rows["digital"][3] == "n/a"
    assert "digital: " + NO_RECORD in " ".join(section.readings)


def test_a_missing_first_correct_layer_cell_makes_unchanged_inconclusive(tmp_path):
    study = _golden(tmp_path)
    assert _section(study, "first_correct_layer").verdict == rp.NOT_SUPPORTED
    gone = ("first_correct_layer", "blur")
    _drop(
        study,
        "analysis",
        lambda r: not (r["reference"] == "clean" and (r["metric"], r["scope"]) == gone),
    )
    section = _section(study, "first_correct_layer")
    assert (section.verdict, section.verdict_reason) == (rp.INCONCLUSIVE, NO_RECORD)
    missing = [row for row in section.tables[0].rows if row[-1] == NO_RECORD]
    assert [row[:2] for row in missing] == [
        [A, "blur, first correct layer"],
        [B, "blur, first correct layer"],
    ]


def test_a_missing_sae_cell_makes_unchanged_inconclusive(tmp_path):
    study = _golden(tmp_path)
    assert _section(study, "sae_vanilla").verdict == rp.SUPPORTED
    cell = (A, "clean", "layer2_standard", "blur", "patches")
    _drop(
        study,
        "sae",
        lambda r: (r["model"], r["reference"], r["sae_id"], r["scope"], r["token"]) != cell,
    )
    section = _section(study, "sae_vanilla")
    assert (section.verdict, section.verdict_reason) == (rp.INCONCLUSIVE, NO_RECORD)
    judged = section.tables[0]
    assert judged.columns[6] == "images excluded (no token left)"
    assert [A, "layer2_standard: blur, patches tokens"] in [row[:2] for row in judged.rows]
    assert all(row[6] == "0" for row in judged.rows if row[1] == "layer2_standard")


def test_the_rules_numbers_and_confidence_come_from_the_rules(tmp_path):
    """Rules at α = 0.1 read 90% CIs; the golden records are 95% CIs, so no claim is judged
    (CI at another confidence), and no rule, table or reading of a claim says 95%, 20% or 1 pp
    where the rules say otherwise."""
    study = _golden(tmp_path)
    rules = rp.VerdictRules(alpha=0.1, transfer_margin_share=0.3, transfer_margin_min=0.02)
    for key in ("accuracy", "transfer", "first_correct_layer", "attention_entropy", "sae_vanilla"):
        section = _section(study, key, rules)
        assert (section.verdict, section.verdict_reason) == (rp.INCONCLUSIVE, OTHER_CONFIDENCE)
        rule = section.rules[0]
        assert "90% CI" in rule and "95%" not in rule, key
        judged = [t for t in section.tables if "clean control" in " ".join(t.columns)]
        assert all("95%" not in c for t in judged for c in t.columns), key
    transfer = _section(study, "transfer", rules)
    assert "max(2.0 pp, 30%" in transfer.rules[0]
    readings = " ".join(transfer.readings)
    assert "20%" not in readings and "30% of the CI bounds of its seen gain" in readings
    assert "at least 2.0 pp" in readings


def _texts(monkeypatch) -> list[str]:
    drawn: list[str] = []
    original = matplotlib.axes.Axes.text

    def text(self, x, y, s, *args, **kwargs):
        drawn.append(str(s))
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", text)
    return drawn


def test_figures_mark_the_cells_the_report_decides(tmp_path, monkeypatch):
    """A cell significant alone but not after the correction: the stage's figure used to star
    it (its CI excludes 0); the report's figure and table star the same corrected cells."""
    study = _golden(tmp_path)

    def p_values(data):
        cells = [c for row in data["transfer_matrix"]["cells"] for c in row]
        for c in cells:
            c.update(p_value=0.5, ci_low=-0.01, ci_high=0.01)
        cells[1].update(p_value=0.01, ci_low=0.005, ci_high=0.03)  # excludes 0; not after Holm
        cells[2]["p_value"] = 0.001  # 20 × 0.001 = 0.02: significant after Holm

    _edit(study / "eval" / "results.json", p_values)
    outputs = rp.StudyOutputs.discover(study)
    results = outputs.load("results")
    drawn = _texts(monkeypatch)
    plot_transfer_matrix(results, tmp_path / "stage.png")  # the stage's figure: no marks
    assert not any("*" in t for t in drawn)
    drawn.clear()
    section = _section(study, "transfer")
    stars = [t for t in drawn if "*" in t]
    table = next(t for t in section.tables if t.caption.startswith("Transfer matrix"))
    marked = [cell for row in table.rows for cell in row[1:] if "*" in cell]
    assert len(stars) == len(marked) == 1
    assert stars[0].split("*")[0] == marked[0].split(" ")[0]  # the same cell's estimate
    tm = results["transfer_matrix"]
    flat = [c["p_value"] for row in tm["cells"] for c in row]
    assert accuracy._matrix_marks(tm, rp.VerdictRules()) == {
        (m, col): "*"
        for (m, col), ok in zip(
            [(m, col) for m in tm["rows"] for col in tm["columns"]], significant(flat)
        )
        if ok
    }
    figure = next(f for f in section.figures if f.caption.startswith("Transfer matrix"))
    assert figure.path is not None and ".generated" in str(figure.path)


def test_the_entropy_figure_marks_the_changed_cells(tmp_path, monkeypatch):
    study = _golden(tmp_path)
    outputs = rp.StudyOutputs.discover(study)
    inputs = claim_inputs(outputs, "analysis")
    marks = attention._marks(inputs, "attention_entropy")
    cls_marks = attention._marks(inputs, "attention_entropy_cls")
    drawn = _texts(monkeypatch)
    section = _section(study, "attention_entropy")
    # Each mark is a layer x head cell that judge_changed calls changed in its pair's family.
    for (model, reference, condition), cells in marks.items():
        family = inputs.records.select(
            model=model,
            reference=reference,
            metric="attention_entropy",
            head=lambda h: h is not None,
        )
        judged = rp.judge_changed(family, 0.05, rp.VerdictRules(), " nats")
        changed = {
            (c.record.scope, c.record.get("layer"), c.record.get("head"))
            for c in judged.cells
            if c.state == "changed"
        }
        assert {(condition, layer, head) for layer, head in cells} <= changed
    assert marks and drawn.count("•") == sum(len(v) for m in (marks, cls_marks) for v in m.values())
    assert any(".generated" in str(f.path) for f in section.figures)


def test_patching_without_a_gain_shows_no_fractions(tmp_path):
    study = _golden(tmp_path)

    def no_gain(data):
        s = data["patching"]["blur"][A]
        s["gain"].update(ci_low=-0.01, excludes_zero=False)
        s["ci_reason"] = "no gain to recover (the gain's CI includes 0)"
        for site in s["per_layer"]:
            site.update(ci_low=None, ci_high=None, ci_reason=s["ci_reason"])

    _edit(study / "analysis" / "analysis.json", no_gain)
    section = _section(study, "patching")
    row = next(r for r in section.tables[0].rows if r[0] == A)
    assert row[-1].startswith("n/a: no gain to recover")
    assert "undefined" in " ".join(section.readings)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_rules_state_their_confidence(alpha):
    rules = rp.VerdictRules(alpha=alpha)
    assert rules.confidence == pytest.approx(1 - alpha)
    assert rules.ci_label == f"{1 - alpha:.0%} CI"
