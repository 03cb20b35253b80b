"""Section on layer-wise knowledge (Fig. 5): the first correct layer under the logit lens."""

from __future__ import annotations

from typing import Any

from hf_vitrobust.formatting import finite, fmt_ci

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table
from ..readings import Comparison, as_comparison
from ..verdicts import changed_verdict

_COLUMNS = [
    "model",
    "condition",
    "images (both correct)",
    "base: first",
    "fine-tuned: first",
    "Δ first [CI]",
    "base: stable from",
    "fine-tuned: stable from",
    "Δ stable [CI]",
]


def _comparison_rows(
    lens: dict[str, Any],
) -> tuple[list[list[str]], int, list[tuple[str, str, str, Comparison]]]:
    """Table rows, the number of paired differences with a CI, and those that exclude zero."""
    rows, n_tot, shifts = [], 0, []
    for cond, block in lens.items():
        base_fc = block["models"]["base"]["first_correct_layer"]
        for model, comp in block["comparisons"].items():
            ft_fc = block["models"][model]["first_correct_layer"]
            fcl = comp["first_correct_layer"]
            cells = [model, cond, str(fcl.get("count", ""))]
            for key in ("first", "stable"):
                b, f = base_fc[key], ft_fc[key]
                entry = fcl.get(key)
                diff = as_comparison(entry["paired_bootstrap"]) if entry else None
                cells += [
                    fmt_ci(b["value"], b.get("ci_low"), b.get("ci_high"), 2),
                    fmt_ci(f["value"], f.get("ci_low"), f.get("ci_high"), 2),
                    diff.format(2) if diff else "n/a",
                ]
                if diff is not None and diff.has_ci:
                    n_tot += 1
                    if diff.direction:
                        shifts.append((model, cond, key, diff))
            rows.append(cells)
    return rows, n_tot, shifts


def build_first_correct(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    lens = a["logit_lens"]
    rows, n_tot, shifts = _comparison_rows(lens)
    if n_tot == 0:
        raise SectionUnavailable("analysis.json has no first-correct-layer comparisons")
    section.verdict, reading = changed_verdict(
        len(shifts), n_tot, "paired first-correct-layer differences (model × condition × statistic)"
    )
    section.readings.append(reading)
    for model, cond, key, diff in shifts[:6]:
        what = "first correct layer" if key == "first" else "layer from which it stays correct"
        section.readings.append(
            f"{model} on {cond}: the {what} moves "
            f"{'later' if diff.direction > 0 else 'earlier'} by {diff.format(2)} layers."
        )
    if len(shifts) > 6:
        section.readings.append(f"… and {len(shifts) - 6} more shifts with CIs excluding zero.")
    section.tables.append(
        Table(
            _COLUMNS,
            rows,
            caption="Layer index (0 = embeddings); means with 95% CIs; Δ = fine-tuned − base, "
            "paired over images both models classify correctly at the last layer",
        )
    )
    section.figures += study.figures_or_missing("analysis", "First correct layer", "first_correct")
    section.figures += study.figures_or_missing("analysis", "Logit-lens accuracy", "lens")
    section.definition = a.get("definitions", {}).get("first_correct_layer")
    checks = [
        m.get("last_layer_max_abs_diff")
        for block in lens.values()
        for m in block["models"].values()
    ]
    checks = [c for c in checks if finite(c) is not None]
    if checks:
        section.notes.append(
            f"Logit lens at the last layer reproduces the model's logits to within "
            f"{max(checks):.2e} (max absolute difference)."
        )
