"""Sections on accuracy (Fig. 2) and certainty (Fig. 4): the gain on seen corruptions over the
clean control, and whether it transfers to unseen corruption groups (equivalence per group)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hf_vitrobust.formatting import fmt, fmt_ci
from hf_vitrobust.roles import BASE
from hf_vitrobust.stats import CORRECTIONS, adjust_p_values

from ..inputs import StudyOutputs
from ..model import Section, Table
from ..rules import VerdictRules
from ..verdicts import (
    INCONCLUSIVE,
    NO_CONTROL,
    NO_RECORD,
    Cell,
    Judgement,
    combine_judgements,
    gain_rule,
    judge_floor,
    judge_transfer,
    judgement_of,
    transfer_margin,
    transfer_rule,
)
from .claims import (
    DECOMPOSITION_COLUMNS,
    DECOMPOSITION_NOTE,
    ClaimInputs,
    apply_judgement,
    cell_text,
    claim_inputs,
    decomposition,
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
            cell = Cell(None, NO_RECORD, INCONCLUSIVE)
        else:
            cell = judge_floor(record, floor, scale, unit)
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
                f"{model}: {label} on its seen corruptions, minus its clean control {control}: "
                f"{cell_text(cell, digits, scale, unit)}; {cell.state} ({cell.verdict})."
            )
    table = Table(
        ["adversarial model", "clean control", "vs clean control (judged)", "verdict"]
        + DECOMPOSITION_COLUMNS,
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
    apply_judgement(section, judgement, gain_rule("top-1 accuracy", floor, 100, " pp"), readings)
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
        gain_rule("probability of the true class", floor, 1, ""),
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


def _unseen_groups(inputs: ClaimInputs, model: str) -> list[str]:
    """The scopes of the groups that hold none of `model`'s training corruptions."""
    found = inputs.records.select(
        model=model,
        metric="top_1_accuracy",
        scope=lambda s: s.startswith(GROUP),
        seen=False,
    )
    return sorted({r.scope for r in found})


def _transfer_claim(inputs: ClaimInputs) -> tuple[Judgement, Table, list[str]]:
    """C2: per adversarial model and unseen group, equivalence within ±margin vs the control."""
    rules = inputs.rules
    judgements, rows, readings = [], [], []
    for model in inputs.adversarial:
        scopes = _unseen_groups(inputs, model)
        seen_gain = inputs.judged(model, metric="top_1_accuracy", scope="seen")
        margin = transfer_margin(seen_gain, rules)
        if inputs.control(model) is None:
            judgement = Judgement(INCONCLUSIVE, NO_CONTROL)
            cells = [None] * len(scopes)
        else:
            records = [inputs.judged(model, metric="top_1_accuracy", scope=s) for s in scopes]
            judgement = judge_transfer([r for r in records if r is not None], margin)
            by_scope = {c.record.scope: c for c in judgement.cells if c.record is not None}
            cells = [by_scope.get(s) for s in scopes]
        judgements.append(judgement)
        for scope, cell in zip(scopes, cells):
            base = inputs.against(model, BASE, metric="top_1_accuracy", scope=scope)
            certainty = inputs.judged(model, metric="p_true", scope=scope)
            rows.append(
                [
                    model,
                    scope.removeprefix(GROUP),
                    f"±{fmt(margin, 1, 100)}",
                    cell_text(cell, 1, 100, " pp") if cell else "n/a",
                    f"{cell.state}" if cell else NO_CONTROL,
                    base.format(1, 100, " pp") if base else "n/a",
                    certainty.format(3) if certainty else "n/a",
                ]
            )
        states = [c.state for c in judgement.cells]
        readings.append(
            f"{model}: margin ±{fmt(margin, 1, 100)} pp"
            + (
                f" (20% of its seen gain {seen_gain.format(1, 100, ' pp')})"
                if seen_gain is not None and margin > rules.transfer_margin_min
                else f" (the {fmt(rules.transfer_margin_min, 1, 100)} pp minimum)"
            )
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
            "margin (pp)",
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


def _transfer_matrix(results: Mapping[str, Any], section: Section, rules: VerdictRules) -> None:
    """The transfer matrix (vs base) with significance marks corrected across its cells."""
    tm = results["transfer_matrix"]
    cells = [cell for row in tm["cells"] for cell in row]
    p = np.array([c.get("p_value") if c.get("p_value") is not None else 1.0 for c in cells])
    adjusted = adjust_p_values(p, rules.correction) if len(p) else p
    alpha = rules.alpha
    rows, marked, k = [], 0, 0
    for model, row_cells in zip(tm["rows"], tm["cells"]):
        row = [model]
        for cell in row_cells:
            star = "*" if adjusted[k] < alpha else ""
            marked += bool(star)
            k += 1
            text = fmt_ci(
                cell.get("estimate"), cell.get("ci_low"), cell.get("ci_high"), 1, 100, True
            )
            row.append(text + star + (" (seen)" if cell.get("seen") else ""))
        rows.append(row)
    section.tables.append(
        Table(
            ["model", *tm["columns"]],
            rows,
            caption=f"Transfer matrix: top-1 accuracy change vs the base (pp) with 95% CI; * the "
            f"difference is significant at {alpha} after {CORRECTIONS[rules.correction]} across the "
            f"{len(cells)} cells of this matrix ({marked} marked); (seen) marks groups that "
            "contain training corruptions. This matrix compares with the base; the verdict above "
            "compares with the clean control.",
        )
    )


def build_transfer(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    inputs = claim_inputs(study, "results")
    judgement, table, readings = _transfer_claim(inputs)
    apply_judgement(section, judgement, transfer_rule(study.rules), readings)
    section.tables.append(table)
    tm = results["transfer_matrix"]
    if tm and tm.get("cells"):
        _transfer_matrix(results, section, study.rules)
    section.figures += study.figures_or_missing(
        "results", "Transfer matrix (top-1 change vs base)", "transfer"
    )
    section.definition = tm.get("definition") if tm else None
