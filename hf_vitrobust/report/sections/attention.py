"""Section on attention (Fig. 8): per-layer attention-entropy differences against the clean
control, corrected for multiplicity, with an effect floor."""

from __future__ import annotations

from collections.abc import Sequence

from hf_vitrobust.formatting import fmt

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table
from ..verdicts import (
    Cell,
    changed_rule,
    combine_judgements,
    judge_changed,
)
from .claims import ClaimInputs, apply_judgement, claim_inputs, decomposition_table, no_control

LAYER_MEAN = "attention_entropy"
CLS_ROW = "attention_entropy_cls"


def _pivot(cells: Sequence[Cell]) -> tuple[list[int], list[list[str]]]:
    """Rows per condition, columns per layer: the difference in nats, * where "changed"."""
    layers = sorted({int(c.record.get("layer")) for c in cells if c.record is not None})
    by_condition: dict[str, dict[int, str]] = {}
    for c in cells:
        if c.record is None:
            continue
        mark = "*" if c.state == "changed" else ""
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
            changed = sum(c.state == "changed" for c in judged.cells)
            out.append(
                f"{model}: {changed} of {len(family)} {label} changed (corrected within that "
                "family, same floor; shown, not judged)."
            )
    return out


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
            family = inputs.records.select(
                model=model, reference=control, metric=LAYER_MEAN, head=None
            )
            judgement = judge_changed(family, floor, rules, " nats")
            judgements.append(judgement)
            changed = [c for c in judgement.cells if c.state == "changed"]
            readings.append(
                f"{model} − {control}: {len(changed)} of {len(family)} (condition × layer) cells "
                f"changed → {judgement.verdict}"
                + (f" ({judgement.reason})" if judgement.reason else "")
                + "."
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
                    "queries), paired on the same images; * changed (corrected p below "
                    f"{rules.alpha} and |difference| ≥ {floor} nats)",
                )
            )
            readings += _secondary(inputs, model, control)
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
    section.figures += study.figures_or_missing(
        "analysis", "Attention-entropy difference (layer × head)", "entropy"
    )
    section.figures += study.figures_if_any("analysis", "Attention maps", "attention_map")
    section.definition = a.get("definitions", {}).get("attention_entropy")
