"""Section on layer-wise knowledge (Fig. 5): the first correct layer under the logit lens,
against the clean control, corrected for multiplicity, with an effect floor."""

from __future__ import annotations

from hf_vitrobust.formatting import finite, fmt, fmt_ci

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table
from ..rules import VerdictRules
from ..verdicts import (
    CHANGED,
    Cell,
    Judgement,
    changed_rule,
    combine_judgements,
)
from .claims import (
    ClaimInputs,
    apply_judgement,
    claim_inputs,
    decomposition_table,
    judge_family,
    no_control,
)

METRICS = ("first_correct_layer", "first_always_correct_layer")
LABELS = {
    "first_correct_layer": "first correct",
    "first_always_correct_layer": "stays correct from",
}


def columns(rules: VerdictRules) -> list[str]:
    """The headers of the judged table (the CI level from the rules)."""
    return [
        "adversarial model",
        "condition",
        "statistic",
        "images (both correct)",
        "adversarial mean",
        "control mean",
        f"adversarial − control [{rules.ci_label}] (test)",
        "corrected p (zero / floor)",
        "state",
    ]


COLUMNS = columns(VerdictRules())


def _counts_table(lens: dict) -> Table | None:
    """Per model and condition: images, those correct at the last layer, the share never correct
    at any layer 1..L, and the side-by-side means over the images every model gets right."""
    rows = []
    for condition, block in lens.items():
        common = block.get("common") or {}
        for model, entry in block.get("models", {}).items():
            fcl = entry.get("first_correct_layer") if isinstance(entry, dict) else None
            never = (fcl or {}).get("never_correct")
            if not isinstance(never, dict):
                continue
            means = (common.get("models") or {}).get(model) or {}
            rows.append(
                [
                    model,
                    condition,
                    str(fcl.get("n_images", "?")),
                    str(fcl.get("count", "?")),
                    f"{fmt(never.get('share'), 1, 100)}% ({never.get('count', '?')})",
                    str(common.get("n_images", "n/a")),
                    *(
                        fmt_ci(m.get("value"), m.get("ci_low"), m.get("ci_high"), 2)
                        for m in (means.get("first") or {}, means.get("stable") or {})
                    ),
                ]
            )
    if not rows:
        return None
    return Table(
        [
            "model",
            "condition",
            "images",
            "correct at the last layer",
            "never correct (1..L)",
            "correct for every model",
            "first correct, mean [CI] (those images)",
            "stays correct from, mean [CI]",
        ],
        rows,
        caption="Logit-lens counts per model; the means side by side use the same images (those "
        "every model classifies correctly at the last layer)",
    )


def _cell_row(model: str, cell: Cell) -> list[str]:
    """One row of the judged table (a cell without a record says which one and why)."""
    r = cell.record
    if r is None:
        return [model, cell.where or "", "", "", "", "", "n/a", "n/a", cell.state]
    corrected = f"{fmt(cell.adjusted_p, 3)} / {fmt(cell.floor_p, 3)}"
    return [
        model,
        r.scope,
        LABELS.get(r.metric, r.metric),
        str(r.get("n_images", r.n)),
        fmt(r.get("model_mean"), 2),
        fmt(r.get("reference_mean"), 2),
        r.format(2),
        corrected,
        cell.state,
    ]


def _judge_model(
    inputs: ClaimInputs, model: str, control: str, rows: list, readings: list[str]
) -> Judgement:
    """C4 for one adversarial model: its condition × statistic family against the control."""
    floor, what = inputs.rules.layer_floor, "condition × statistic"
    in_family = {"metric": lambda m: m in METRICS}
    judgement, _ = judge_family(
        inputs, model, control, floor, " layers", what, readings, **in_family
    )
    for cell in judgement.cells:
        rows.append(_cell_row(model, cell))
        r = cell.record
        if cell.state == CHANGED and r is not None:
            readings.append(
                f"{model} on {r.scope}: the layer where it is {LABELS[r.metric]} moves "
                f"{'later' if r.estimate > 0 else 'earlier'} than in the control by "
                f"{r.format(2, unit=' layers')}."
            )
    return judgement


def build_first_correct(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    inputs = claim_inputs(study, "analysis")
    rules = study.rules
    floor = rules.layer_floor
    in_family = {"metric": lambda m: m in METRICS}
    if not inputs.records.select(**in_family):
        raise SectionUnavailable("analysis.json has no first-correct-layer comparisons")
    judgements, readings, rows = [], [], []
    for model in inputs.adversarial:
        control = inputs.control(model)
        if control is None:
            judgements.append(no_control(model, readings))
        else:
            judgements.append(_judge_model(inputs, model, control, rows, readings))
    for model in inputs.adversarial:
        section.tables.append(decomposition_table(inputs, model, floor, " layers", **in_family))
    apply_judgement(
        section,
        combine_judgements(judgements),
        changed_rule(
            rules, "first-correct-layer differences (condition × statistic)", floor, " layers"
        ),
        readings,
    )
    section.tables.insert(
        0,
        Table(
            columns(rules),
            rows,
            caption="Layers 1..L (block outputs; the embeddings are excluded); means over the "
            "images both models classify correctly at the last layer; corrected p: "
            f"{rules.correction} across each model's cells, for a zero difference / for "
            f"|difference| ≤ {fmt(floor, 2)} layers (the floor)",
        ),
    )
    counts = _counts_table(a["logit_lens"])
    if counts is not None:
        section.tables.append(counts)
    section.figures += study.figures_or_missing("analysis", "First correct layer", "first_correct")
    section.figures += study.figures_or_missing("analysis", "Logit-lens accuracy", "lens")
    section.definition = a.get("definitions", {}).get("first_correct_layer")
    checks = [
        finite(m.get("last_layer_max_abs_diff"))
        for block in a["logit_lens"].values()
        for m in block.get("models", {}).values()
        if isinstance(m, dict)
    ]
    checks = [c for c in checks if c is not None]
    if checks:
        section.notes.append(
            f"Logit lens at the last layer reproduces the model's logits to within "
            f"{max(checks):.2e} (max absolute difference)."
        )
