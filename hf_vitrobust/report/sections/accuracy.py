"""Sections on accuracy (Fig. 2) and certainty (Fig. 4): the gain on seen corruptions over the
clean control, and whether it transfers to unseen corruption groups (equivalence per group)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_vitrobust.formatting import fmt, fmt_ci
from hf_vitrobust.plots.evaluation import (
    control_matrix,
    plot_transfer_matrix,
    plot_transfer_vs_control,
)
from hf_vitrobust.roles import BASE
from hf_vitrobust.stats import CORRECTIONS, significant

from ..comparisons import Record
from ..inputs import StudyOutputs
from ..model import Figure, Section, Table
from ..rules import VerdictRules
from ..verdicts import (
    INCONCLUSIVE,
    NEGATIVE_TRANSFER,
    NO_CONTROL,
    NO_RECORD,
    NO_TRANSFER,
    TRANSFERS,
    Cell,
    Judgement,
    combine_judgements,
    gain_rule,
    judge_floor,
    judge_transfer,
    judgement_of,
    missing_cell,
    transfer_margins,
    transfer_rule,
)
from .claims import (
    DECOMPOSITION_NOTE,
    ClaimInputs,
    apply_judgement,
    cell_text,
    ci_label,
    claim_inputs,
    decomposition,
    decomposition_columns,
)
from .results import (
    ACC_METRICS,
    METRIC_LABEL,
    seen_unseen_figure,
    seen_unseen_table,
    top_k_note,
)

GROUP = "group:"


def _gain_claim(
    inputs: ClaimInputs, metric: str, floor: float, digits: int, scale: float, unit: str
) -> tuple[Judgement, Table, list[str]]:
    """C1 / certainty: each adversarial model's seen gain over its clean control vs `floor`."""
    label = METRIC_LABEL.get(metric, metric)
    judgements, rows, readings = [], [], []
    for model in inputs.adversarial:
        match = {"metric": metric, "scope": "seen"}
        control = inputs.control(model)
        record = inputs.judged(model, **match)
        if control is not None and record is None:
            cell = missing_cell("seen")
        else:
            cell = judge_floor(record, floor, scale, unit, inputs.rules)
        judgements.append(judgement_of(cell))
        rows.append(
            [
                model,
                control or "none",
                cell_text(cell, digits, scale, unit),
                f"{cell.verdict}: {cell.state}",
                *decomposition(inputs, model, match, digits, scale, unit),
            ]
        )
        if control is None:
            readings.append(
                f"{model}: the study has no clean control fine-tune for it, so its {label} gain "
                "on seen corruptions cannot be told apart from further training: inconclusive."
            )
        elif cell.record is None:
            readings.append(f"{model}: {NO_RECORD} on its seen corruptions: inconclusive.")
        else:
            readings.append(
                f"{model}: {label} on its seen corruptions, minus its clean control ({control}): "
                f"{cell_text(cell, digits, scale, unit)}; {cell.state} ({cell.verdict})."
            )
    table = Table(
        ["adversarial model", "clean control", "vs clean control (judged)", "verdict"]
        + decomposition_columns(inputs.rules),
        rows,
        caption=f"{label} on each model's seen corruptions (pooled over their cells), paired "
        f"on the same images. {DECOMPOSITION_NOTE}",
    )
    return combine_judgements(judgements), table, readings


def build_accuracy(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    inputs = claim_inputs(study, "results")
    floor = study.rules.seen_floor
    judgement, table, readings = _gain_claim(inputs, "top_1_accuracy", floor, 1, 100, " pp")
    rule = gain_rule("top-1 accuracy", floor, 100, " pp", study.rules)
    apply_judgement(section, judgement, rule, readings)
    section.tables.append(table)
    if results["per_family"]:
        section.tables.append(seen_unseen_table(results, ACC_METRICS, 100))
        section.figures.append(
            seen_unseen_figure(
                study,
                ACC_METRICS,
                "seen_unseen_accuracy.png",
                "Seen vs unseen corruptions, base vs fine-tuned (top-1/5/10)",
                "Accuracy on seen and unseen corruptions (held-out images)",
            )
        )
    section.figures += study.figures_or_missing(
        "results",
        "Top-1/5/10 accuracy per model and corruption group",
        "accuracy_top",
        "topk",
        "fig2",
        "accuracy_groups",
        "accuracy_by_group",
    )
    definitions = results.get("definitions", {})
    section.definition = (
        definitions.get("top_1_accuracy", "") + " " + definitions.get("seen", "")
    ).strip() or None
    note = top_k_note(results)
    if note:
        section.notes.append(note)
    if results.get("corruption_note"):
        section.notes.append(results["corruption_note"])


def build_certainty(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    inputs = claim_inputs(study, "results")
    floor = study.rules.certainty_floor
    judgement, table, readings = _gain_claim(inputs, "p_true", floor, 3, 1, "")
    apply_judgement(
        section,
        judgement,
        gain_rule("probability of the true class", floor, 1, "", study.rules),
        readings,
    )
    section.tables.append(table)
    if results["per_family"]:
        section.tables.append(seen_unseen_table(results, ("p_true", "nll", "ece"), 1))
        section.figures.append(
            seen_unseen_figure(
                study,
                ("p_true",),
                "seen_unseen_certainty.png",
                "Certainty on seen vs unseen corruptions, base vs fine-tuned",
                "Probability of the true class on seen and unseen corruptions",
            )
        )
    section.figures += study.figures_or_missing(
        "results", "Probability of the true class", "p_true", "certainty", "fig4"
    )
    section.definition = results.get("definitions", {}).get("p_true")


def _unseen_groups(inputs: ClaimInputs, model: str, results: Mapping[str, Any]) -> list[str]:
    """The scopes of the groups that hold none of `model`'s training corruptions: every such
    group the stage recorded for it (against any reference) or put in its transfer-matrix row."""
    found = inputs.records.select(
        model=model,
        metric="top_1_accuracy",
        scope=lambda s: s.startswith(GROUP),
        seen=False,
    )
    scopes = {r.scope for r in found}
    tm = results.get("transfer_matrix") or {}
    for row, cells in zip(tm.get("rows", []), tm.get("cells", [])):
        if row == model:
            columns = zip(tm.get("columns", []), cells)
            scopes |= {f"{GROUP}{c}" for c, cell in columns if c != "clean" and not cell["seen"]}
    return sorted(scopes)


def _margin_text(
    seen_gain: Record | None, margins: tuple[float, float], rules: VerdictRules
) -> str:
    """`±2.0 pp (transfers beyond ±2.8 pp; 20% of the CI bounds of its seen gain …)`."""
    inner, outer = margins
    text = f"±{fmt(inner, 1, 100)} pp"
    if outer > inner:
        text += f" (transfers beyond ±{fmt(outer, 1, 100)} pp)"
    if seen_gain is not None and outer > rules.transfer_margin_min:
        return text + (
            f"; {rules.transfer_margin_share:.0%} of the CI bounds of its seen gain "
            f"{seen_gain.format(1, 100, ' pp')}, at least {fmt(rules.transfer_margin_min, 1, 100)}"
            " pp"
        )
    return text + f"; the {fmt(rules.transfer_margin_min, 1, 100)} pp minimum"


def _transfer_claim(
    inputs: ClaimInputs, results: Mapping[str, Any]
) -> tuple[Judgement, Table, list[str]]:
    """C2: per adversarial model and unseen group, equivalence within ±margin vs the control."""
    rules = inputs.rules
    judgements, rows, readings = [], [], []
    for model in inputs.adversarial:
        scopes = _unseen_groups(inputs, model, results)
        seen_gain = inputs.judged(model, metric="top_1_accuracy", scope="seen")
        margins = transfer_margins(seen_gain, rules)
        if inputs.control(model) is None:
            judgement = Judgement(INCONCLUSIVE, NO_CONTROL)
            cells: list[Cell | None] = [None] * len(scopes)
        else:
            records = [inputs.judged(model, metric="top_1_accuracy", scope=s) for s in scopes]
            judgement = judge_transfer(records, margins[0], rules, scopes, margins[1], seen_gain)
            cells = list(judgement.cells)
        judgements.append(judgement)
        for scope, cell in zip(scopes, cells):
            base = inputs.against(model, BASE, metric="top_1_accuracy", scope=scope)
            certainty = inputs.judged(model, metric="p_true", scope=scope)
            rows.append(
                [
                    model,
                    scope.removeprefix(GROUP),
                    f"±{fmt(margins[0], 1, 100)}"
                    + (f" / ±{fmt(margins[1], 1, 100)}" if margins[1] > margins[0] else ""),
                    cell_text(cell, 1, 100, " pp") if cell else "n/a",
                    f"{cell.state}" if cell else NO_CONTROL,
                    base.format(1, 100, " pp") if base else "n/a",
                    certainty.format(3) if certainty else "n/a",
                ]
            )
        states = [c.state for c in judgement.cells]
        readings.append(
            f"{model}: margin {_margin_text(seen_gain, margins, rules)}"
            + f"; {len(scopes)} unseen groups: "
            + (", ".join(f"{s.removeprefix(GROUP)}: {t}" for s, t in zip(scopes, states)) or "none")
            + f" → {judgement.verdict}"
            + (f" ({judgement.reason})" if judgement.reason else "")
            + "."
        )
    table = Table(
        [
            "adversarial model",
            "unseen group",
            "margin / outer margin (pp)",
            "top-1 vs clean control (judged)",
            "state",
            "top-1 vs base",
            "p(true class) vs clean control (not judged)",
        ],
        rows,
        caption="Per unseen corruption group (groups holding none of the model's training "
        "corruptions; pooled over their corruptions and severities), paired on the same images",
    )
    return combine_judgements(judgements), table, readings


def _matrix_marks(tm: Mapping[str, Any], rules: VerdictRules) -> dict[tuple[str, str], str]:
    """'*' on the transfer-matrix cells significant at α after the rules' correction across the
    matrix (`stats.significant`: the one decision of the table and the figure)."""
    keyed = [
        ((model, column), cell)
        for model, row in zip(tm["rows"], tm["cells"])
        for column, cell in zip(tm["columns"], row)
    ]
    passed = significant([c.get("p_value") for _, c in keyed], rules.alpha, rules.correction)
    return {key: "*" for (key, _), ok in zip(keyed, passed) if ok}


def _marks_text(tm: Mapping[str, Any], rules: VerdictRules) -> str:
    cells = sum(len(row) for row in tm["cells"])
    return f"* = significant at {rules.alpha} after {rules.correction} across the {cells} cells"


def _transfer_matrix(results: Mapping[str, Any], section: Section, rules: VerdictRules) -> None:
    """The transfer matrix (vs base) with significance marks corrected across its cells."""
    tm = results["transfer_matrix"]
    marks = _matrix_marks(tm, rules)
    rows = []
    for model, row_cells in zip(tm["rows"], tm["cells"]):
        row = [model]
        for column, cell in zip(tm["columns"], row_cells):
            text = fmt_ci(
                cell.get("estimate"), cell.get("ci_low"), cell.get("ci_high"), 1, 100, True
            )
            seen = " (seen)" if cell.get("seen") else ""
            row.append(text + marks.get((model, column), "") + seen)
        rows.append(row)
    cells = [cell for row in tm["cells"] for cell in row]
    section.tables.append(
        Table(
            ["model", *tm["columns"]],
            rows,
            caption=f"Transfer matrix: top-1 accuracy change vs the base (pp) with "
            f"{ci_label(cells, rules)}; * the difference is significant at {rules.alpha} after "
            f"{CORRECTIONS[rules.correction]} across the {len(cells)} cells of this matrix "
            f"({len(marks)} marked; the figure marks the same cells); (seen) marks groups that "
            "contain training corruptions. This matrix compares with the base; the verdict above "
            "compares with the clean control.",
        )
    )


#: The mark of each C2 state in the figure of the change beyond the clean control.
STATE_MARKS = {NO_TRANSFER: " =", TRANSFERS: " +", NEGATIVE_TRANSFER: " −"}


def _transfer_figures(
    study: StudyOutputs, results: Mapping[str, Any], judgement: Judgement
) -> list[Figure]:
    """The transfer heatmaps, drawn by the report with its own decisions as marks: corrected
    significance vs the base, and each unseen group's C2 state vs the clean control."""
    tm = results["transfer_matrix"]
    path = study.generated("transfer_matrix.png")
    figures = [
        Figure(
            "Transfer matrix (top-1 change vs base)",
            plot_transfer_matrix(
                results, path, _matrix_marks(tm, study.rules), _marks_text(tm, study.rules)
            ),
        )
    ]
    if control_matrix(results)["rows"]:
        marks = {
            (c.record.model, c.record.scope.removeprefix(GROUP)): STATE_MARKS.get(c.state, " ?")
            for c in judgement.cells
            if c.record is not None
        }
        text = "unseen groups: = no transfer, + transfers, − negative transfer, ? inconclusive"
        path = study.generated("transfer_vs_control.png")
        figures.append(
            Figure(
                "Top-1 change beyond the clean control, with each unseen group's state (C2)",
                plot_transfer_vs_control(results, path, marks, text),
            )
        )
    return figures


def build_transfer(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    inputs = claim_inputs(study, "results")
    judgement, table, readings = _transfer_claim(inputs, results)
    apply_judgement(section, judgement, transfer_rule(study.rules), readings)
    section.tables.append(table)
    tm = results["transfer_matrix"]
    if tm and tm.get("cells"):
        _transfer_matrix(results, section, study.rules)
        section.figures += _transfer_figures(study, results, judgement)
    else:
        section.figures += study.figures_or_missing(
            "results", "Transfer matrix (top-1 change vs base)", "transfer"
        )
    section.definition = tm.get("definition") if tm else None
