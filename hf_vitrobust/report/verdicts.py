"""The verdict rules: how comparison records become supported / not supported / inconclusive.

What adversarial fine-tuning does is judged against the model's clean control (its change beyond
the control's, paired on the same images: the ``model − reference`` records with
``reference_role == "clean_control"``), never against "no change". The rules (defaults in
`VerdictRules`, every number configurable from `recipes/report.py`):

- **gain** (C1 accuracy, Fig. 4 certainty): supported when the CI of adversarial − control on
  the seen corruptions lies above a floor, not supported when it lies below it, else
  inconclusive.
- **no transfer** (C2), per unseen corruption group: "no transfer" when the CI lies inside
  ±margin (margin = max(1 pp, 20% of the model's seen gain over the control)), "transfers" above
  it, "negative transfer" below it, else inconclusive; supported only if every group is
  "no transfer".
- **changed** (C3 attention entropy, C4 first correct layer): the family of per-cell differences
  is corrected (Holm by default, or Benjamini–Hochberg); "changed" when a cell's adjusted p is
  below α and its |difference| reaches the effect floor. Not supported (unchanged) when every
  cell's CI lies inside ±floor; otherwise inconclusive.
- **unchanged** (C5 SAE codes): equivalence of the code-cosine difference within ±margin, per
  SAE, token kind and condition, for SAEs that pass the quality bar only.

A CI "inside" a band is an equivalence statement (with 95% CIs: two one-sided tests at 2.5%
each). A claim made for several adversarial fine-tunes (or groups, or SAEs) holds when it holds
for each (an intersection–union rule, which needs no multiplicity correction): any "not
supported" makes the claim not supported, else any "inconclusive" makes it inconclusive. With
fewer images a CI widens and a cell can only move towards "inconclusive".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_vitrobust.formatting import finite, fmt
from hf_vitrobust.stats import (
    ABOVE,
    BELOW,
    CORRECTIONS,
    INSIDE,
    adjust_p_values,
    images_to_resolve,
    interval_position,
)

from .comparisons import Record
from .model import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from .rules import VerdictRules

NO_CONTROL = "no control fine-tune"
NO_RECORD = "no comparison with the control recorded"
BELOW_QUALITY_BAR = "SAE below the quality bar"


@dataclass
class Cell:
    """One judged comparison: its record, its state in words, and its own verdict."""

    record: Record | None
    state: str
    verdict: str
    #: Images that would decide an undecided cell at the observed spread (None: decided, or no
    #: number of images can).
    needed_images: int | None = None
    adjusted_p: float | None = None


@dataclass
class Judgement:
    """A verdict with its reason (when the numbers alone do not say) and the cells behind it."""

    verdict: str
    reason: str | None = None
    cells: list[Cell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judgement_of(cell: Cell) -> Judgement:
    """A one-cell judgement; a cell without a record says why in its state (the reason)."""
    return Judgement(cell.verdict, cell.state if cell.record is None else None, [cell])


def combine(verdicts: Sequence[str]) -> str:
    """Intersection–union: supported only if every part is; not supported if any part is."""
    if not verdicts:
        return INCONCLUSIVE
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE


def combine_judgements(judgements: Sequence[Judgement]) -> Judgement:
    """One claim over several models; the reason is kept when every inconclusive part shares it."""
    verdict = combine([j.verdict for j in judgements])
    reasons = {j.reason for j in judgements if j.verdict == INCONCLUSIVE}
    reason = reasons.pop() if verdict == INCONCLUSIVE and len(reasons) == 1 else None
    if not judgements:
        reason = "no adversarial fine-tune in this study"
    notes = list(dict.fromkeys(n for j in judgements for n in j.notes))
    return Judgement(verdict, reason, [c for j in judgements for c in j.cells], notes)


def _undecided(record: Record, low: float, high: float, what: str) -> Cell:
    needed = images_to_resolve(record.estimate, record.ci_low, record.ci_high, record.n, low, high)
    state = f"{what}: ~{needed:,} images would decide it" if needed else what
    return Cell(record, state, INCONCLUSIVE, needed)


def judge_floor(record: Record | None, floor: float, scale: float = 1.0, unit: str = "") -> Cell:
    """C1 / certainty for one model: CI above `floor` → supported, below → not supported."""
    if record is None:
        return Cell(None, NO_CONTROL, INCONCLUSIVE)
    if not record.has_ci:
        return Cell(record, "no CI recorded", INCONCLUSIVE)
    where = interval_position(record.ci_low, record.ci_high, floor, floor)
    text = f"{fmt(floor, 1 if scale == 100 else 3, scale)}{unit}"
    if where == ABOVE:
        return Cell(record, f"gain above the {text} floor", SUPPORTED)
    if where == BELOW:
        return Cell(record, f"below the {text} floor", NOT_SUPPORTED)
    return _undecided(record, floor, floor, f"CI reaches across the {text} floor")


def transfer_margin(seen_gain: Record | None, rules: VerdictRules) -> float:
    """C2's margin: max(minimum, share × the model's seen gain over the control (≥ 0))."""
    gain = seen_gain.estimate if seen_gain is not None and seen_gain.estimate is not None else 0.0
    return max(rules.transfer_margin_min, rules.transfer_margin_share * max(gain, 0.0))


NO_TRANSFER = "no transfer"
TRANSFERS = "transfers"
NEGATIVE_TRANSFER = "negative transfer"


def judge_equivalence(record: Record | None, margin: float, labels: tuple[str, str, str]) -> Cell:
    """One cell against ±margin; `labels` name the states inside, above and below the band."""
    if record is None:
        return Cell(None, NO_CONTROL, INCONCLUSIVE)
    if not record.has_ci:
        return Cell(record, "no CI recorded", INCONCLUSIVE)
    where = interval_position(record.ci_low, record.ci_high, -margin, margin)
    if where == INSIDE:
        return Cell(record, labels[0], SUPPORTED)
    if where == ABOVE:
        return Cell(record, labels[1], NOT_SUPPORTED)
    if where == BELOW:
        return Cell(record, labels[2], NOT_SUPPORTED)
    return _undecided(record, -margin, margin, "inconclusive")


def judge_transfer(groups: Sequence[Record], margin: float) -> Judgement:
    """C2 for one model: each unseen group against ±margin; supported only if all are inside."""
    if not groups:
        return Judgement(INCONCLUSIVE, "no unseen corruption group was evaluated")
    labels = (NO_TRANSFER, TRANSFERS, NEGATIVE_TRANSFER)
    cells = [judge_equivalence(r, margin, labels) for r in groups]
    return Judgement(combine([c.verdict for c in cells]), None, cells)


def judge_changed(
    records: Sequence[Record], floor: float, rules: VerdictRules, unit: str = ""
) -> Judgement:
    """C3 / C4 for one model: one family of cells, corrected; "changed" needs a corrected
    p below α and |difference| ≥ floor; "unchanged" needs every CI inside ±floor."""
    if not records:  # a control exists (the caller checks) but the stage compared nothing
        return Judgement(INCONCLUSIVE, NO_RECORD)
    p = np.array([r.p_value if r.p_value is not None else 1.0 for r in records])
    adjusted = adjust_p_values(p, rules.correction)
    # The same correction applied to the smallest p each test can give: if none of these passes,
    # no outcome of the data could have passed (e.g. bootstrap p-values with too few resamples).
    attainable = adjust_p_values(np.array([r.p_floor for r in records]), rules.correction)
    cells = []
    for r, adj in zip(records, adjusted):
        significant = adj < rules.alpha
        big = r.estimate is not None and abs(r.estimate) >= floor
        inside = r.has_ci and interval_position(r.ci_low, r.ci_high, -floor, floor) == INSIDE
        if significant and big:
            state, verdict = "changed", SUPPORTED
        elif inside:
            state, verdict = f"unchanged (CI within ±{fmt(floor, 2)}{unit})", NOT_SUPPORTED
        elif significant:
            state, verdict = f"significant but below the {fmt(floor, 2)}{unit} floor", INCONCLUSIVE
        else:
            state, verdict = "not significant after correction", INCONCLUSIVE
        cells.append(Cell(r, state, verdict, adjusted_p=float(adj)))
    if any(c.verdict == SUPPORTED for c in cells):
        verdict = SUPPORTED
    elif all(c.verdict == NOT_SUPPORTED for c in cells):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    judgement = Judgement(verdict, None, cells)
    if not (attainable < rules.alpha).any():
        smallest = min(r.p_floor for r in records)
        judgement.notes.append(
            f"No cell could pass the corrected test: the smallest p-value the recorded test "
            f"gives is {smallest:.2g} and {len(records)} cells are corrected together; record "
            f"p-values from a rank test or with at least {int(np.ceil(len(records) / rules.alpha))}"
            " bootstrap resamples."
        )
        if verdict == INCONCLUSIVE:
            judgement.reason = "p-values too coarse for the correction"
    return judgement


def sae_quality_failures(entry: Mapping[str, Any], rules: VerdictRules) -> list[str]:
    """Why an SAE fails the quality bar (empty: it passes): held-out explained variance below
    the minimum; for BatchTopK, inference L0 further than the tolerance from k (or k unknown)."""
    base = (entry.get("metrics") or {}).get("base") or {}
    failures = []
    ev = finite(base.get("explained_variance"))
    if ev is None or ev < rules.sae_min_explained_variance:
        failures.append(
            f"explained variance {fmt(ev)} < {rules.sae_min_explained_variance}"
            if ev is not None
            else "explained variance not recorded"
        )
    if entry.get("sae_type") == "batchtopk":
        k = finite((entry.get("l0_vs_k") or {}).get("k", entry.get("k")))
        l0 = finite(base.get("inference_l0", base.get("l0")))
        if k is None or l0 is None:
            failures.append("inference L0 or k not recorded")
        elif abs(l0 - k) > rules.sae_l0_tolerance * k:
            failures.append(
                f"inference L0 {l0:.1f} is not within ±{rules.sae_l0_tolerance:.0%} of k = {k:g}"
            )
    return failures


def judge_sae(
    records_by_sae: Mapping[str, Sequence[Record]],
    failures_by_sae: Mapping[str, Sequence[str]],
    margin: float,
) -> Judgement:
    """C5 for one model and SAE type: every SAE must pass the quality bar, and each of its cells
    (layer × token × condition) must be equivalent within ±margin."""
    cells: list[Cell] = []
    below_bar = False
    for sae_id, failures in failures_by_sae.items():
        records = records_by_sae.get(sae_id, [])
        if failures:
            below_bar = True
            state = f"not judged: {BELOW_QUALITY_BAR} ({'; '.join(failures)})"
            cells += [Cell(r, state, INCONCLUSIVE) for r in records] or [
                Cell(None, state, INCONCLUSIVE)
            ]
            continue
        if not records:
            cells.append(Cell(None, f"{sae_id}: {NO_RECORD}", INCONCLUSIVE))
            continue
        labels = ("unchanged", "closer to the base than the control", "changed")
        cells += [judge_equivalence(r, margin, labels) for r in records]
    verdict = combine([c.verdict for c in cells])
    reason = None
    if verdict == INCONCLUSIVE:
        if below_bar:
            reason = BELOW_QUALITY_BAR
        elif all(c.record is None for c in cells):
            reason = NO_RECORD
    return Judgement(verdict, reason, cells)


# ---------------------------------------------------------------------------------------------
# Each rule in words, with its numbers (printed beside the verdict and in docs/definitions.md)
# ---------------------------------------------------------------------------------------------

_REFERENCE = (
    "Judged against each adversarial fine-tune's clean control (same base, data, steps, "
    "optimiser and seed, clean images), paired on the same images: the estimate is "
    "adversarial − control."
)
_MANY = (
    " With several adversarial fine-tunes the claim is supported only if it is for each, and "
    "not supported if it is not for any; without a clean control: inconclusive (no control "
    "fine-tune)."
)


def gain_rule(metric: str, floor: float, scale: float, unit: str) -> str:
    digits = 1 if scale == 100 else 3
    text = f"{fmt(floor, digits, scale)}{unit}"
    return (
        f"{_REFERENCE} Supported when the 95% CI of the {metric} difference on the model's seen "
        f"corruptions lies above the floor of {text}; not supported when it lies below {text}; "
        "otherwise inconclusive, with the number of images that would decide it at the observed "
        f"spread.{_MANY}"
    )


def transfer_rule(rules: VerdictRules) -> str:
    return (
        f"{_REFERENCE} For each unseen corruption group (pooled over its corruptions and "
        "severities), the top-1 accuracy difference is 'no transfer' when its whole 95% CI lies "
        "inside ±margin, 'transfers' when the CI lies above +margin, 'negative transfer' when "
        "below −margin, and otherwise inconclusive (with the images that would decide it). "
        f"Margin = max({fmt(rules.transfer_margin_min, 1, 100)} pp, "
        f"{rules.transfer_margin_share:.0%} of the same model's seen top-1 gain over the "
        "control). Supported only if every unseen group is 'no transfer'; not supported if any "
        f"group transfers (or falls beyond the margin).{_MANY} The probability of the true class "
        "is shown beside it and not judged."
    )


def changed_rule(rules: VerdictRules, cells: str, floor: float, unit: str) -> str:
    return (
        f"{_REFERENCE} The family of {cells} is corrected together with "
        f"{CORRECTIONS[rules.correction]}. Supported ('changed') when at least one cell's "
        f"corrected p-value is below {rules.alpha} and its difference is at least "
        f"{fmt(floor, 2)}{unit} in size (the effect floor); not supported ('unchanged') when "
        f"every cell's 95% CI lies inside ±{fmt(floor, 2)}{unit}; otherwise inconclusive.{_MANY}"
    )


def sae_rule(rules: VerdictRules) -> str:
    return (
        "Judged against each adversarial fine-tune's clean control: per image, the cosine "
        "between the base SAE's code of the base model's activation and of the fine-tuned "
        "model's activation on the same input, adversarial minus control (same SAE, same "
        "images), for CLS and patch tokens separately. 'Unchanged' when the 95% CI of that "
        f"difference lies inside ±{fmt(rules.sae_margin, 2)}; supported only if every cell "
        "(SAE layer × token × condition) is unchanged; not supported if any cell lies outside "
        "the margin. Only SAEs that pass the quality bar are judged — held-out explained "
        f"variance ≥ {rules.sae_min_explained_variance} and, for BatchTopK, inference L0 "
        f"within ±{rules.sae_l0_tolerance:.0%} of k — otherwise inconclusive ("
        f"{BELOW_QUALITY_BAR}).{_MANY}"
    )


__all__ = [
    "BELOW_QUALITY_BAR",
    "NEGATIVE_TRANSFER",
    "NO_CONTROL",
    "NO_RECORD",
    "NO_TRANSFER",
    "TRANSFERS",
    "Cell",
    "Judgement",
    "VerdictRules",
    "changed_rule",
    "combine",
    "combine_judgements",
    "gain_rule",
    "judge_changed",
    "judge_equivalence",
    "judge_floor",
    "judge_sae",
    "judge_transfer",
    "judgement_of",
    "sae_quality_failures",
    "sae_rule",
    "transfer_margin",
    "transfer_rule",
]
