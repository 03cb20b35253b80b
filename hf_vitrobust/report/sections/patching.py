"""Section on activation patching: which layers carry the fine-tuned model's accuracy gain."""

from __future__ import annotations

from hf_vitrobust.analysis.patching import NO_GAIN
from hf_vitrobust.formatting import finite, fmt, fmt_ci

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table
from ..readings import as_comparison

_COLUMNS = [
    "model",
    "condition",
    "base acc. (%)",
    "fine-tuned acc. (%)",
    "gain (pp) [CI] (McNemar)",
    "fraction recovered per patched layer (0 = embeddings)",
]


def build_patching(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    patching = a["patching"]
    rows = []
    for cond, by_model in patching.items():
        for model, s in by_model.items():
            gain = as_comparison(s["gain"])
            per = s["per_layer"]
            best = max(
                (p for p in per if finite(p.get("recovered")) is not None),
                key=lambda p: p["recovered"],
                default=None,
            )
            no_gain = gain is None or gain.direction <= 0
            reason = s.get("ci_reason") or (NO_GAIN if no_gain else None)
            rows.append(
                [
                    model,
                    cond,
                    fmt(s["accuracy_a"], 1, 100),
                    fmt(s["accuracy_b"], 1, 100),
                    gain.format(1, 100) if gain else "n/a",
                    f"n/a: {reason}"
                    if reason
                    else " ".join(fmt(p.get("recovered"), 2) for p in per),
                ]
            )
            if reason:
                section.readings.append(
                    f"{model} on {cond}: no accuracy gain over the base with a CI above zero "
                    f"({gain.format(1, 100, ' pp') if gain else 'n/a'}), so there is no gain to "
                    "attribute to a layer (the recovered fractions and their CIs are undefined)."
                )
            elif best is not None:
                ci = fmt_ci(best["recovered"], best.get("ci_low"), best.get("ci_high"), 2)
                section.readings.append(
                    f"{model} on {cond}: gain {gain.format(1, 100, ' pp')}; patching layer "
                    f"{best['layer']} alone recovers the largest fraction of it, {ci}."
                )
    if not rows:
        raise SectionUnavailable("analysis.json has no patching results")
    section.tables.append(Table(_COLUMNS, rows))
    section.figures += study.figures_or_missing(
        "analysis", "Activation patching: fraction of the gain recovered", "patching"
    )
    section.definition = a.get("definitions", {}).get("patching")
