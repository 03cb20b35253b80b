"""The verdict rules: how comparison records become supported / not supported / inconclusive.

What adversarial fine-tuning does is judged against the model's clean control (its change beyond
the control's, paired on the same images: the ``model − reference`` records with
``reference_role == "clean_control"``), never against "no change". The rules (defaults in
`VerdictRules`, every number configurable from `recipes/report.py`):

- **gain** (C1 accuracy, Fig. 4 certainty): supported when the CI of adversarial − control on
  the seen corruptions lies above a floor, not supported when it lies below it, else
  inconclusive.
- **no transfer** (C2), per unseen corruption group: "no transfer" when the CI lies inside
  ±margin (margin = max(1 pp, 20% of the lower CI bound of the model's seen gain over the
  control)), "transfers" above the outer margin (the same share of the upper bound), "negative
  transfer" below its negative, else inconclusive; supported only if every group is "no
  transfer".
- **changed** (C3 attention entropy, C4 first correct layer): per cell two p-values, the
  recorded test of a zero difference and the minimum-effect test of |δ| ≤ floor
  (`stats.min_effect_p`), each corrected over the family (Holm by default, or
  Benjamini–Hochberg); "changed" when a cell passes both at α. Not supported (unchanged) when
  every cell's CI lies inside ±floor; otherwise inconclusive.
- **unchanged** (C5 SAE codes): equivalence of the code-cosine difference within ±margin, per
  SAE, token kind and condition, for SAEs that pass the quality bar only.

Before any rule, a comparison must have a CI at the rules' confidence (1 − α), from at least
`min_images` images; otherwise, and when an expected comparison has no record (`NO_RECORD`), its
cell is inconclusive — a missing or tiny cell never lets a claim be supported.

A CI "inside" a band is an equivalence statement (with 95% CIs: two one-sided tests at 2.5%
each). A claim made for several adversarial fine-tunes (or groups, or SAEs) holds when it holds
for each (an intersection–union rule, which needs no multiplicity correction): any "not
supported" makes the claim not supported, else any "inconclusive" makes it inconclusive. With
fewer images a CI widens, p-values grow and a cell can only move towards "inconclusive".
"""

from __future__ import annotations

import math
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
    min_effect_p,
)

from .comparisons import Record
from .model import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from .rules import VerdictRules

NO_CONTROL = "no control fine-tune"
NO_RECORD = "no comparison with the control recorded"
BELOW_QUALITY_BAR = "SAE below the quality bar"
TOO_FEW_IMAGES = "too few images"
NO_CI = "no CI recorded"
OTHER_CONFIDENCE = "CI at another confidence than the rules'"
CHANGED = "changed"
_DEFAULT_RULES = VerdictRules()


@dataclass
class Cell:
    """One judged comparison: its record, its state in words, and its own verdict."""

    record: Record | None
    state: str
    verdict: str
    #: Images that would decide an undecided cell at the observed spread (None: decided, or no
    #: number of images can).
    needed_images: int | None = None
    #: Corrected p-value of the recorded test of a zero difference ("changed" rules).
    adjusted_p: float | None = None
    #: Corrected p-value of the minimum-effect test of |difference| ≤ floor ("changed" rules).
    floor_p: float | None = None
    #: Why the cell could not be judged (NO_RECORD, TOO_FEW_IMAGES, ...), when it could not.
    reason: str | None = None
    #: Which expected comparison a cell without a record stands for (a scope, a layer, ...).
    where: str | None = None


@dataclass
class Judgement:
    """A verdict with its reason (when the numbers alone do not say) and the cells behind it."""

    verdict: str
    reason: str | None = None
    cells: list[Cell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judgement_of(cell: Cell) -> Judgement:
    """A one-cell judgement; a cell that could not be judged says why (the reason)."""
    reason = cell.reason or (cell.state if cell.record is None else None)
    return Judgement(cell.verdict, reason if cell.verdict == INCONCLUSIVE else None, [cell])


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


def shared_reason(cells: Sequence[Cell]) -> str | None:
    """The reason every inconclusive cell shares (None when they differ or one has none)."""
    reasons = {c.reason for c in cells if c.verdict == INCONCLUSIVE}
    return reasons.pop() if len(reasons) == 1 else None


def missing_cell(where: str | None = None) -> Cell:
    """An expected comparison with the control that no stage recorded: inconclusive."""
    return Cell(None, NO_RECORD, INCONCLUSIVE, reason=NO_RECORD, where=where)


def unjudgeable(record: Record, rules: VerdictRules) -> Cell | None:
    """The inconclusive cell of a record no rule may judge (None when it may be judged): no CI,
    fewer than `rules.min_images` images, or a CI at another confidence than 1 − alpha."""
    if not record.has_ci:
        return Cell(record, NO_CI, INCONCLUSIVE, reason=NO_CI)
    if record.n < rules.min_images:
        state = f"{TOO_FEW_IMAGES} (n = {record.n} < {rules.min_images})"
        return Cell(record, state, INCONCLUSIVE, reason=TOO_FEW_IMAGES)
    if not math.isclose(record.confidence, rules.confidence, abs_tol=1e-9):
        state = f"CI at {record.confidence:.1%} confidence; the rules read {rules.ci_label}s"
        return Cell(record, state, INCONCLUSIVE, reason=OTHER_CONFIDENCE)
    return None


def _undecided(record: Record, low: float, high: float, what: str) -> Cell:
    needed = images_to_resolve(record.estimate, record.ci_low, record.ci_high, record.n, low, high)
    state = f"{what}: ~{needed:,} images would decide it" if needed else what
    return Cell(record, state, INCONCLUSIVE, needed)


def judge_floor(
    record: Record | None,
    floor: float,
    scale: float = 1.0,
    unit: str = "",
    rules: VerdictRules = _DEFAULT_RULES,
) -> Cell:
    """C1 / certainty for one model: CI above `floor` → supported, below → not supported."""
    if record is None:
        return Cell(None, NO_CONTROL, INCONCLUSIVE, reason=NO_CONTROL)
    skipped = unjudgeable(record, rules)
    if skipped is not None:
        return skipped
    where = interval_position(record.ci_low, record.ci_high, floor, floor)
    text = f"{fmt(floor, 1 if scale == 100 else 3, scale)}{unit}"
    if where == ABOVE:
        return Cell(record, f"gain above the {text} floor", SUPPORTED)
    if where == BELOW:
        return Cell(record, f"below the {text} floor", NOT_SUPPORTED)
    return _undecided(record, floor, floor, f"CI reaches across the {text} floor")


def transfer_margins(seen_gain: Record | None, rules: VerdictRules) -> tuple[float, float]:
    """C2's (inner, outer) margins: max(minimum, share × the lower / upper CI bound of the
    model's seen gain over the control, 0 when negative or not recorded).

    "No transfer" needs the CI inside ±inner and "transfers" the CI beyond ±outer: the seen
    gain's uncertainty counts against each conclusion, so a noisy seen gain can make neither
    easier, and fewer images (a wider seen CI) only make both harder."""
    gains = (0.0, 0.0)
    if seen_gain is not None and seen_gain.has_ci:
        gains = (max(seen_gain.ci_low, 0.0), max(seen_gain.ci_high, 0.0))
    low, high = (max(rules.transfer_margin_min, rules.transfer_margin_share * g) for g in gains)
    return low, high


def transfer_margin(seen_gain: Record | None, rules: VerdictRules) -> float:
    """C2's margin of "no transfer" (the inner one of `transfer_margins`)."""
    return transfer_margins(seen_gain, rules)[0]


NO_TRANSFER = "no transfer"
TRANSFERS = "transfers"
NEGATIVE_TRANSFER = "negative transfer"


def judge_equivalence(
    record: Record | None,
    margin: float,
    labels: tuple[str, str, str],
    rules: VerdictRules = _DEFAULT_RULES,
    outer: float | None = None,
) -> Cell:
    """One cell against ±margin; `labels` name the states inside ±margin, above +outer and below
    −outer (`outer`, default `margin`: the band beyond which the cell is not equivalent)."""
    if record is None:
        return Cell(None, NO_CONTROL, INCONCLUSIVE, reason=NO_CONTROL)
    skipped = unjudgeable(record, rules)
    if skipped is not None:
        return skipped
    outer = margin if outer is None else max(outer, margin)
    if interval_position(record.ci_low, record.ci_high, -margin, margin) == INSIDE:
        return Cell(record, labels[0], SUPPORTED)
    where = interval_position(record.ci_low, record.ci_high, -outer, outer)
    if where == ABOVE:
        return Cell(record, labels[1], NOT_SUPPORTED)
    if where == BELOW:
        return Cell(record, labels[2], NOT_SUPPORTED)
    band = margin if abs(record.estimate) < margin else outer
    return _undecided(record, -band, band, "inconclusive")


def _transfer_needed(record: Record, seen: Record, rules: VerdictRules) -> int | None:
    """Images that would decide an undecided group when its CI and the seen gain's (the same
    images) both shrink as 1/√n around their estimates, margins moving with the seen CI; None
    when no practical number does (the group's estimate sits on the margin)."""
    share, least = rules.transfer_margin_share, rules.transfer_margin_min

    def decided(r: float) -> bool:  # r = √(n / n'): each half-width scaled by r
        g_low = record.estimate - (record.estimate - record.ci_low) * r
        g_high = record.estimate + (record.ci_high - record.estimate) * r
        s_low = seen.estimate - (seen.estimate - seen.ci_low) * r
        s_high = seen.estimate + (seen.ci_high - seen.estimate) * r
        inner, outer = (max(least, share * max(v, 0.0)) for v in (s_low, s_high))
        return -inner < g_low and g_high < inner or g_low > outer or g_high < -outer

    low, high = 1e-7, 1.0  # decided at `low` (~10¹⁴ × the images), not at `high`
    if decided(high) or not decided(low):
        return None
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if decided(mid) else (low, mid)
    return max(record.n + 1, math.ceil(record.n / low**2))


def judge_transfer(
    groups: Sequence[Record | None],
    margin: float,
    rules: VerdictRules = _DEFAULT_RULES,
    names: Sequence[str] | None = None,
    outer: float | None = None,
    seen: Record | None = None,
) -> Judgement:
    """C2 for one model: each unseen group inside ±margin ("no transfer") or beyond ±outer
    (`transfer_margins` of the `seen` gain); supported only if all are inside. A group without
    a record (None; `names` say which) is inconclusive (NO_RECORD). With `seen`, an undecided
    group's images to decide it let the seen CI (and so the margins) shrink too."""
    if not groups:
        return Judgement(INCONCLUSIVE, "no unseen corruption group was evaluated")
    labels = (NO_TRANSFER, TRANSFERS, NEGATIVE_TRANSFER)
    names = list(names) if names is not None else [None] * len(groups)
    cells = [
        judge_equivalence(r, margin, labels, rules, outer) if r is not None else missing_cell(name)
        for r, name in zip(groups, names)
    ]
    for cell in cells:
        undecided = cell.verdict == INCONCLUSIVE and cell.reason is None
        if undecided and seen is not None and seen.has_ci and cell.record is not None:
            cell.needed_images = _transfer_needed(cell.record, seen, rules)
            cell.state = "inconclusive" + (
                f": ~{cell.needed_images:,} images would decide it" if cell.needed_images else ""
            )
    verdict = combine([c.verdict for c in cells])
    return Judgement(verdict, shared_reason(cells) if verdict == INCONCLUSIVE else None, cells)


def _changed_cell(
    record: Record, adjusted: float, floor_p: float, floor: float, rules: VerdictRules, unit: str
) -> Cell:
    """One cell of a "changed" family from its two corrected p-values."""
    skipped = unjudgeable(record, rules)
    if skipped is not None:
        cell = skipped
    elif adjusted < rules.alpha and floor_p < rules.alpha:
        cell = Cell(record, CHANGED, SUPPORTED)
    elif interval_position(record.ci_low, record.ci_high, -floor, floor) == INSIDE:
        cell = Cell(record, f"unchanged (CI within ±{fmt(floor, 2)}{unit})", NOT_SUPPORTED)
    elif adjusted < rules.alpha:
        state = f"significant, but not shown to exceed the {fmt(floor, 2)}{unit} floor"
        cell = Cell(record, state, INCONCLUSIVE)
    else:
        cell = Cell(record, "not significant after correction", INCONCLUSIVE)
    cell.adjusted_p, cell.floor_p = float(adjusted), float(floor_p)
    return cell


def judge_changed(
    records: Sequence[Record],
    floor: float,
    rules: VerdictRules,
    unit: str = "",
    missing: Sequence[str] = (),
) -> Judgement:
    """C3 / C4 for one model: one family of cells. "Changed" needs both the recorded test of a
    zero difference and the minimum-effect test of |difference| ≤ floor (`stats.min_effect_p`)
    to pass α after the family's correction; "unchanged" needs every CI inside ±floor and no
    expected cell missing (`missing`: the cells with no record, each inconclusive)."""
    if not records and not missing:  # a control exists (the caller checks) but nothing compared
        return Judgement(INCONCLUSIVE, NO_RECORD)
    p = np.array([r.p_value if r.p_value is not None else 1.0 for r in records])
    adjusted = adjust_p_values(p, rules.correction)
    with_ci = [r if r.has_ci else None for r in records]
    p_floor = np.array(
        [
            min_effect_p(r.estimate, r.ci_low, r.ci_high, floor, r.confidence).item()
            if r is not None
            else 1.0
            for r in with_ci
        ]
    )
    floor_adjusted = adjust_p_values(p_floor, rules.correction)
    cells = [
        _changed_cell(r, adj, fp, floor, rules, unit)
        for r, adj, fp in zip(records, adjusted, floor_adjusted)
    ]
    cells += [missing_cell(where) for where in missing]
    if any(c.verdict == SUPPORTED for c in cells):
        verdict = SUPPORTED
    elif all(c.verdict == NOT_SUPPORTED for c in cells):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    judgement = Judgement(verdict, shared_reason(cells) if verdict == INCONCLUSIVE else None, cells)
    if records:
        _coarse_note(judgement, records, rules)
    return judgement


def _coarse_note(judgement: Judgement, records: Sequence[Record], rules: VerdictRules) -> None:
    """A note (and the reason) when no outcome of the data could have passed the correction."""
    # The same correction applied to the smallest p each test can give: if none of these passes,
    # no outcome of the data could have passed (e.g. bootstrap p-values with too few resamples).
    attainable = adjust_p_values(np.array([r.p_floor for r in records]), rules.correction)
    if (attainable < rules.alpha).any():
        return
    smallest = min(r.p_floor for r in records)
    judgement.notes.append(
        f"No cell could pass the corrected test: the smallest p-value the recorded test "
        f"gives is {smallest:.2g} and {len(records)} cells are corrected together; record "
        f"p-values from a rank test on more images or with at least "
        f"{int(np.ceil(len(records) / rules.alpha))} bootstrap resamples."
    )
    if judgement.verdict == INCONCLUSIVE:
        judgement.reason = "p-values too coarse for the correction"


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


SAE_LABELS = ("unchanged", "closer to the base than the control", "changed")


def judge_sae(
    records_by_sae: Mapping[str, Sequence[Record]],
    failures_by_sae: Mapping[str, Sequence[str]],
    margin: float,
    rules: VerdictRules = _DEFAULT_RULES,
    missing_by_sae: Mapping[str, Sequence[str]] | None = None,
) -> Judgement:
    """C5 for one model and SAE type: every SAE must pass the quality bar, and each of its cells
    (layer × token × condition) must be equivalent within ±margin; an expected cell with no
    record (`missing_by_sae`: per SAE, which cells) is inconclusive."""
    cells: list[Cell] = []
    missing_by_sae = missing_by_sae or {}
    for sae_id, failures in failures_by_sae.items():
        records = records_by_sae.get(sae_id, [])
        if failures:
            state = f"not judged: {BELOW_QUALITY_BAR} ({'; '.join(failures)})"
            cells += [Cell(r, state, INCONCLUSIVE, reason=BELOW_QUALITY_BAR) for r in records] or [
                Cell(None, state, INCONCLUSIVE, reason=BELOW_QUALITY_BAR)
            ]
            continue
        missing = [f"{sae_id}: {where}" for where in missing_by_sae.get(sae_id, ())]
        if not records and not missing:
            missing = [sae_id]
        cells += [judge_equivalence(r, margin, SAE_LABELS, rules) for r in records]
        cells += [missing_cell(where) for where in missing]
    verdict = combine([c.verdict for c in cells])
    reason = None
    if verdict == INCONCLUSIVE:
        below_bar = any(c.reason == BELOW_QUALITY_BAR for c in cells)
        reason = BELOW_QUALITY_BAR if below_bar else shared_reason(cells)
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


def checks_rule(rules: VerdictRules) -> str:
    """What every rule asks of a comparison before judging it."""
    return (
        f" Every judged comparison must come from at least {rules.min_images} images (else "
        f"inconclusive: {TOO_FEW_IMAGES}) and carry a {rules.ci_label} (1 − α, α = "
        f"{rules.alpha}; a CI at another confidence is inconclusive); an expected comparison "
        f"that no stage recorded is inconclusive ({NO_RECORD}), never left out."
    )


def gain_rule(
    metric: str, floor: float, scale: float, unit: str, rules: VerdictRules = _DEFAULT_RULES
) -> str:
    digits = 1 if scale == 100 else 3
    text = f"{fmt(floor, digits, scale)}{unit}"
    return (
        f"{_REFERENCE} Supported when the {rules.ci_label} of the {metric} difference on the "
        f"model's seen corruptions lies above the floor of {text}; not supported when it lies "
        f"below {text}; otherwise inconclusive, with the number of images that would decide it "
        f"at the observed spread.{checks_rule(rules)}{_MANY}"
    )


def transfer_rule(rules: VerdictRules) -> str:
    return (
        f"{_REFERENCE} For each unseen corruption group (pooled over its corruptions and "
        "severities), the top-1 accuracy difference is 'no transfer' when its whole "
        f"{rules.ci_label} lies inside ±margin, 'transfers' when the CI lies above +outer "
        "margin, 'negative transfer' when below −outer margin, and otherwise inconclusive (with "
        "the images that would decide it). Margin = "
        f"max({fmt(rules.transfer_margin_min, 1, 100)} pp, {rules.transfer_margin_share:.0%} of "
        f"the lower {rules.ci_label} bound of the same model's seen top-1 gain over the control, "
        "0 when negative): the bound, not the estimate, so that a noisy seen gain cannot widen "
        "it; the outer margin takes the upper bound instead, so that it cannot narrow the band "
        "beyond which a group transfers either. Supported only if every unseen group is 'no "
        "transfer'; not supported if any group transfers (or falls beyond the outer margin)."
        f"{checks_rule(rules)}{_MANY} The probability of the true class is shown beside it and "
        "not judged."
    )


def changed_rule(rules: VerdictRules, cells: str, floor: float, unit: str) -> str:
    text = f"{fmt(floor, 2)}{unit}"
    return (
        f"{_REFERENCE} The family of {cells} is corrected together with "
        f"{CORRECTIONS[rules.correction]}, for two tests per cell: the recorded test of a zero "
        f"difference, and the minimum-effect test of |difference| ≤ {text} (the effect floor; "
        "one-sided p from the CI, normal approximation: z = (|estimate| − floor) / se, se from "
        "the CI's half-width on the side facing the floor, plus the far tail, so that at floor 0 "
        "it is the two-sided test of zero). Supported ('changed') when at least "
        f"one cell passes both at α = {rules.alpha} after correction; not supported "
        f"('unchanged') when every cell's {rules.ci_label} lies inside ±{text}; otherwise "
        f"inconclusive.{checks_rule(rules)}{_MANY}"
    )


def sae_rule(rules: VerdictRules) -> str:
    margin = fmt(rules.sae_margin, 2)
    return (
        "Judged against each adversarial fine-tune's clean control: per image, the cosine "
        "between the base SAE's code of the base model's activation and of the fine-tuned "
        "model's activation on the same input, for CLS and patch tokens separately (tokens "
        "whose two codes are both all zero are left out and counted; an image with no token "
        "left is excluded, and the count is shown per cell); then adversarial − control, paired "
        f"on the images both keep (same SAE). Per cell: 'unchanged' when the {rules.ci_label} "
        f"of that difference lies inside ±{margin} (equivalence), 'closer to the base than the "
        f"control' when it lies above +{margin}, 'changed' when it lies below −{margin}, "
        "otherwise inconclusive (with the images that would decide it). Supported only if "
        "every cell (SAE layer × token × condition) is unchanged; not supported if any cell "
        "lies wholly outside the margin. Only SAEs that pass the quality bar are judged — "
        f"held-out explained variance ≥ {rules.sae_min_explained_variance} and, for "
        f"BatchTopK, inference L0 within ±{rules.sae_l0_tolerance:.0%} of k — otherwise "
        f"inconclusive ({BELOW_QUALITY_BAR}).{checks_rule(rules)}{_MANY}"
    )


__all__ = [
    "BELOW_QUALITY_BAR",
    "CHANGED",
    "NO_CI",
    "OTHER_CONFIDENCE",
    "SAE_LABELS",
    "TOO_FEW_IMAGES",
    "NEGATIVE_TRANSFER",
    "NO_CONTROL",
    "NO_RECORD",
    "NO_TRANSFER",
    "TRANSFERS",
    "Cell",
    "Judgement",
    "VerdictRules",
    "changed_rule",
    "checks_rule",
    "combine",
    "combine_judgements",
    "gain_rule",
    "judge_changed",
    "judge_equivalence",
    "judge_floor",
    "judge_sae",
    "judge_transfer",
    "judgement_of",
    "missing_cell",
    "sae_quality_failures",
    "sae_rule",
    "shared_reason",
    "transfer_margin",
    "transfer_margins",
    "transfer_rule",
    "unjudgeable",
]
