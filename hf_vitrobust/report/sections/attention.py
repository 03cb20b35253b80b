"""Section on attention (Fig. 8): per-layer attention-entropy differences against the clean
control, corrected for multiplicity, with an effect floor."""

from __future__ import annotations

from collections.abc import Sequence

from hf_vitrobust.formatting import fmt
from hf_vitrobust.plots.analysis import plot_entropy_difference

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Figure, Section, Table
from ..verdicts import (
    CHANGED,
    Cell,
    Judgement,
    changed_rule,
    combine_judgements,
    judge_changed,
)
from .claims import (
    ClaimInputs,
    apply_judgement,
    claim_inputs,
    decomposition_table,
    judge_family,
    no_control,
)

LAYER_MEAN = "attention_entropy"
CLS_ROW = "attention_entropy_cls"


def _pivot(cells: Sequence[Cell]) -> tuple[list[int], list[list[str]]]:
    """Rows per condition, columns per layer: the difference in nats, * where "changed"."""
    layers = sorted({int(c.record.get("layer")) for c in cells if c.record is not None})
    by_condition: dict[str, dict[int, str]] = {}
    for c in cells:
        if c.record is None:
            continue
        mark = "*" if c.state == CHANGED else ""
        text = fmt(c.record.estimate, 3, sign=True) + mark
        by_condition.setdefault(c.record.scope, {})[int(c.record.get("layer"))] = text
    rows = [
        [condition, *(values.get(layer, "n/a") for layer in layers)]
        for condition, values in by_condition.items()
    ]
    return layers, rows


def _secondary(inputs: ClaimInputs, model: str, control: str) -> list[str]:
    """Counts of the families shown but not judged: layer × head, and the CLS-query row."""
    floor, out = inputs.rules.entropy_floor, []
    for label, match in (
        (
            "layer × head cells (all queries)",
            {"metric": LAYER_MEAN, "head": lambda h: h is not None},
        ),
        ("per-layer cells of the CLS-query row", {"metric": CLS_ROW, "head": None}),
    ):
        family = inputs.records.select(model=model, reference=control, **match)
        if family:
            judged = judge_changed(family, floor, inputs.rules, " nats")
            changed = sum(c.state == CHANGED for c in judged.cells)
            out.append(
                f"{model}: {changed} of {len(family)} {label} changed (corrected within that "
                "family, same floor; shown, not judged)."
            )
    return out


def _marks(inputs: ClaimInputs, metric: str) -> dict[tuple[str, str, str], list]:
    """The layer × head cells of `metric` that the report's rule calls changed, per (model,
    reference, condition): each pair's cells are one family (all conditions), judged by
    `judge_changed` with the entropy floor, as `_secondary` counts them."""
    family_of: dict[tuple[str, str], list] = {}
    for r in inputs.records.select(metric=metric, head=lambda h: h is not None):
        family_of.setdefault((r.model, r.reference), []).append(r)
    marks: dict[tuple[str, str, str], list] = {}
    for (model, reference), family in family_of.items():
        judged = judge_changed(family, inputs.rules.entropy_floor, inputs.rules, " nats")
        for c in judged.cells:
            if c.state == CHANGED and c.record is not None:
                key = (model, reference, c.record.scope)
                marks.setdefault(key, []).append(
                    (int(c.record.get("layer")), int(c.record.get("head")))
                )
    return marks


def _figures(study: StudyOutputs, inputs: ClaimInputs) -> list[Figure]:
    """The layer × head figures, redrawn by the report with its own "changed" cells marked."""
    data = study.load("analysis")
    rules = inputs.rules
    text = (
        f"• changed: {rules.correction}-corrected p < {rules.alpha} for a zero difference and "
        f"for |difference| ≤ {fmt(rules.entropy_floor, 2)} nats, within each pair"
    )
    figures = []
    for metric, kind, label in (
        (LAYER_MEAN, "all_queries", "all queries"),
        (CLS_ROW, "cls_query", "CLS query"),
    ):
        if inputs.records.select(metric=metric, head=lambda h: h is not None):
            path = study.generated(f"entropy_difference_{kind}.png")
            plot_entropy_difference(data, path, kind, _marks(inputs, metric), text)
            figures.append(Figure(f"Attention-entropy difference (layer × head, {label})", path))
    return figures or study.figures_or_missing(
        "analysis", "Attention-entropy difference (layer × head)", "entropy"
    )


def _judge_model(
    inputs: ClaimInputs, model: str, control: str, section: Section, readings: list[str]
) -> Judgement:
    """C3 for one adversarial model: its per-layer family against the control, with a table."""
    rules, floor = inputs.rules, inputs.rules.entropy_floor
    what = "condition × layer"
    match = {"metric": LAYER_MEAN, "head": None}
    judgement, family = judge_family(
        inputs, model, control, floor, " nats", what, readings, **match
    )
    if family:
        top = max(family, key=lambda r: abs(r.estimate or 0.0))
        readings.append(
            f"Largest: {top.scope}, layer {top.get('layer')}: {top.format(3, unit=' nats')}"
            f" ({'more diffuse' if (top.estimate or 0) > 0 else 'sharper'} attention than"
            " the control)."
        )
    layers, rows = _pivot(judgement.cells)
    section.tables.append(
        Table(
            ["condition", *(f"layer {layer}" for layer in layers)],
            rows,
            caption=f"{model} − {control}: attention entropy (nats, mean over heads and "
            f"queries), paired on the same images; * changed ({rules.correction}-corrected p "
            f"below {rules.alpha} for a zero difference and for |difference| ≤ "
            f"{fmt(floor, 2)} nats)",
        )
    )
    readings += _secondary(inputs, model, control)
    return judgement


def build_entropy(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    inputs = claim_inputs(study, "analysis")
    rules = study.rules
    floor = rules.entropy_floor
    if not inputs.records.select(metric=LAYER_MEAN):
        raise SectionUnavailable("analysis.json has no attention-entropy comparisons")
    judgements, readings = [], []
    for model in inputs.adversarial:
        control = inputs.control(model)
        if control is None:
            judgements.append(no_control(model, readings))
        else:
            judgements.append(_judge_model(inputs, model, control, section, readings))
        section.tables.append(
            decomposition_table(inputs, model, floor, " nats", metric=LAYER_MEAN, head=None)
        )
    apply_judgement(
        section,
        combine_judgements(judgements),
        changed_rule(
            rules,
            "per-layer differences (mean over heads; every condition × layer)",
            floor,
            " nats",
        ),
        readings,
    )
    section.figures += _figures(study, inputs)
    section.figures += study.figures_if_any("analysis", "Attention maps", "attention_map")
    section.definition = a.get("definitions", {}).get("attention_entropy")
