"""What the claim sections share: the records of a stage output with the study's roles, each
adversarial model's judged (vs clean control) and reference comparisons, and the decomposition
of its change over the base into "trained longer", "saw corruptions" and "adversarial selection".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hf_vitrobust.formatting import fmt, fmt_ci
from hf_vitrobust.roles import BASE, CLEAN_CONTROL, RANDOM_VIEW_CONTROL

from ..comparisons import Record, Records, StudyRoles, load_records, study_roles
from ..inputs import StudyOutputs
from ..model import Section, Table
from ..verdicts import (
    CHANGED,
    INCONCLUSIVE,
    NO_CONTROL,
    Cell,
    Judgement,
    VerdictRules,
    judge_changed,
)

#: Qualifiers that make two records comparisons of the same quantity (metric and scope aside).
IDENTITY = ("layer", "head", "sae_id", "token")


def decomposition_columns(rules: VerdictRules) -> list[str]:
    """The headers of the four `decomposition` cells (the CI level from the rules)."""
    return [
        f"vs base [{rules.ci_label}]",
        "trained longer (clean control − base)",
        "saw corruptions (random-view − clean control)",
        f"adversarial selection (adversarial − random-view) [{rules.ci_label}]",
    ]


DECOMPOSITION_COLUMNS = decomposition_columns(VerdictRules())
DECOMPOSITION_NOTE = (
    "Decomposition of the change over the base: trained longer = clean control − base, saw "
    "corruptions = random-view control − clean control, adversarial selection = adversarial − "
    "random-view control; the three add up to the change over the base. A value marked ≈ is a "
    "difference of two recorded estimates (the stages record no paired test of that pair, so it "
    "has no CI; for first-correct-layer numbers the two estimates use different image sets)."
)


@dataclass
class ClaimInputs:
    """A stage's comparison records, the study's roles and the verdict rules."""

    records: Records
    roles: StudyRoles
    rules: VerdictRules

    @property
    def adversarial(self) -> list[str]:
        return self.roles.adversarial

    def control(self, model: str) -> str | None:
        """The clean control claims about `model` are judged against (None: the study has none)."""
        found = self.roles.controls.get(model)
        return found.primary if found is not None else None

    def random_view(self, model: str) -> str | None:
        found = self.roles.controls.get(model)
        return found.random_view if found is not None else None

    def against(self, model: str, role: str, **match: Any) -> Record | None:
        """`model`'s record against its base / clean / random-view reference."""
        if role == BASE:
            return self.records.one(model=model, reference_role=BASE, **match)
        reference = self.control(model) if role == CLEAN_CONTROL else self.random_view(model)
        if reference is None:
            return None
        return self.records.one(model=model, reference=reference, **match)

    def judged(self, model: str, **match: Any) -> Record | None:
        """`model` − its clean control (None when there is no control or no record)."""
        return self.against(model, CLEAN_CONTROL, **match)


def claim_inputs(study: StudyOutputs, source: str) -> ClaimInputs:
    records = load_records(study, source)
    return ClaimInputs(records, study_roles(study, records), study.rules)


def identity(record: Record) -> dict[str, Any]:
    """The selection that finds the same quantity in another pair's records."""
    match = {"metric": record.metric, "scope": record.scope}
    match.update({k: record.get(k) for k in IDENTITY if k in record.qualifiers})
    return match


def _key(record: Record) -> tuple:
    return tuple(sorted(identity(record).items(), key=lambda kv: kv[0]))


def missing_cells(
    inputs: ClaimInputs, model: str, family: Sequence[Record], **match: Any
) -> list[str]:
    """The cells of a judged family (`model` − its control, `match` selects it) that the stage
    compared for `model` against another reference, or for the control against the base, but
    not against the control: each an expected comparison with no record (`where` of each)."""
    have = {_key(r) for r in family}
    control = inputs.control(model)
    candidates = inputs.records.select(model=model, **match)
    if control is not None:
        candidates += inputs.records.select(model=control, **match)
    expected: dict[tuple, Record] = {}
    for r in candidates:
        expected.setdefault(_key(r), r)
    return [where(r) for key, r in expected.items() if key not in have]


def judge_family(
    inputs: ClaimInputs,
    model: str,
    control: str,
    floor: float,
    unit: str,
    what: str,
    readings: list[str],
    **match: Any,
) -> tuple[Judgement, list[Record]]:
    """A "changed" claim for one model: its family against the control (`match` selects it),
    the expected cells without a record among it, and the reading that counts what changed."""
    family = inputs.records.select(model=model, reference=control, **match)
    missing = missing_cells(inputs, model, family, **match)
    judgement = judge_changed(family, floor, inputs.rules, unit, missing)
    changed = sum(c.state == CHANGED for c in judgement.cells)
    readings.append(
        f"{model} − {control}: {changed} of {len(judgement.cells)} ({what}) cells changed → "
        f"{judgement.verdict}"
        + (f" ({judgement.reason})" if judgement.reason else "")
        + "."
        + (f" No record for: {'; '.join(missing)}." if missing else "")
    )
    return judgement, family


def ci_label(records: Sequence[Any], rules: VerdictRules) -> str:
    """``95% CI``, from the confidence the shown records carry (records or dicts), else the
    rules'."""
    levels = {
        getattr(r, "confidence", None) if not isinstance(r, dict) else r.get("confidence")
        for r in records
    } - {None}
    return f"{levels.pop():.0%} CI" if len(levels) == 1 else rules.ci_label


def _estimate(value: float | None, digits: int, scale: float, unit: str, approx: bool) -> str:
    if value is None:
        return "n/a"
    return ("≈" if approx else "") + fmt(value, digits, scale, sign=True) + unit


def decomposition(
    inputs: ClaimInputs, model: str, match: dict[str, Any], digits: int, scale: float, unit: str
) -> list[str]:
    """The four DECOMPOSITION_COLUMNS cells of `model` for the quantity `match` selects."""

    def est(record: Record | None) -> float | None:
        return record.estimate if record is not None else None

    vs_base = inputs.against(model, BASE, **match)
    vs_clean = inputs.against(model, CLEAN_CONTROL, **match)
    vs_random = inputs.against(model, RANDOM_VIEW_CONTROL, **match)

    def ci(record: Record | None) -> str:
        if record is None:
            return "n/a"
        text = fmt_ci(record.estimate, record.ci_low, record.ci_high, digits, scale, sign=True)
        return text + unit

    clean = inputs.control(model)
    direct = inputs.records.one(model=clean, reference_role=BASE, **match) if clean else None
    if direct is not None:
        longer = ci(direct)
    else:
        a_base, a_clean = est(vs_base), est(vs_clean)
        diff = a_base - a_clean if a_base is not None and a_clean is not None else None
        longer = _estimate(diff, digits, scale, unit, approx=True)
    a_clean, a_random = est(vs_clean), est(vs_random)
    saw = a_clean - a_random if a_clean is not None and a_random is not None else None
    return [ci(vs_base), longer, _estimate(saw, digits, scale, unit, approx=True), ci(vs_random)]


def apply_judgement(
    section: Section, judgement: Judgement, rule: str, readings: Sequence[str] = ()
) -> None:
    """The verdict, its reason and its rule onto the section, with the notes it raised."""
    section.verdict = judgement.verdict
    section.verdict_reason = judgement.reason
    section.rules.append(rule)
    section.readings.extend(readings)
    section.notes.extend(judgement.notes)


def cell_text(cell: Cell, digits: int, scale: float = 1.0, unit: str = "") -> str:
    """`+1.2 [+0.3, +2.0] pp (p=…, test, n=…)` of a judged cell, or why there is none."""
    if cell.record is None:
        return "n/a"
    return cell.record.format(digits, scale, unit)


def family_decomposition(
    inputs: ClaimInputs, model: str, floor: float, unit: str, **match: Any
) -> list[list[str]]:
    """Rows (comparison, cells changed after correction, largest |difference|) of one family of
    cells (`match` selects it) for `model` against each reference, and for its clean control
    against the base — the decomposition of a "changed" claim."""
    clean, random_view = inputs.control(model), inputs.random_view(model)
    pairs = [
        ("adversarial − base", {"model": model, "reference_role": BASE}),
        ("trained longer: clean control − base", {"model": clean, "reference_role": BASE}),
        (
            "adversarial selection: adversarial − random-view",
            {"model": model, "reference": random_view},
        ),
        ("judged: adversarial − clean control", {"model": model, "reference": clean}),
    ]
    rows = []
    for label, who in pairs:
        if who.get("model") is None or ("reference" in who and who["reference"] is None):
            rows.append([label, "no such model in this study", "n/a"])
            continue
        family = inputs.records.select(**who, **match)
        if not family:
            rows.append([label, "not recorded", "n/a"])
            continue
        judged = judge_changed(family, floor, inputs.rules, unit)
        changed = sum(c.state == CHANGED for c in judged.cells)
        largest = max(family, key=lambda r: abs(r.estimate or 0.0))
        rows.append(
            [
                label,
                f"{changed} of {len(family)}",
                f"{fmt(largest.estimate, 3, sign=True)}{unit} ({where(largest)})",
            ]
        )
    return rows


def where(record: Record) -> str:
    """Which cell a record is, in words (scope, layer, head, statistic, SAE, token)."""
    parts = [record.scope]
    if record.get("layer") is not None:
        parts.append(f"layer {record.get('layer')}")
    if record.get("head") is not None:
        parts.append(f"head {record.get('head')}")
    if record.metric.startswith("first"):
        parts.append(record.metric.replace("_", " "))
    for key in ("sae_id", "token"):
        if record.get(key) is not None:
            parts.append(f"{key.replace('_id', '')} {record.get(key)}")
    return ", ".join(parts)


def no_control(model: str, readings: list[str]) -> Judgement:
    """The judgement of a model the study has no clean control for (and the reading)."""
    readings.append(f"{model}: no clean control fine-tune, so no judged comparison.")
    return Judgement(INCONCLUSIVE, NO_CONTROL)


def decomposition_table(
    inputs: ClaimInputs, model: str, floor: float, unit: str, **match: Any
) -> Table:
    """`family_decomposition` of `model` as a table."""
    return Table(
        ["comparison", "cells changed (corrected, above the floor)", "largest difference"],
        family_decomposition(inputs, model, floor, unit, **match),
        caption=f"{model}: the same rule on each comparison (decomposition of the change over "
        "the base)",
    )


__all__ = [
    "DECOMPOSITION_COLUMNS",
    "DECOMPOSITION_NOTE",
    "decomposition_columns",
    "IDENTITY",
    "ClaimInputs",
    "apply_judgement",
    "cell_text",
    "ci_label",
    "claim_inputs",
    "decomposition",
    "decomposition_table",
    "family_decomposition",
    "identity",
    "judge_family",
    "missing_cells",
    "no_control",
    "where",
]
