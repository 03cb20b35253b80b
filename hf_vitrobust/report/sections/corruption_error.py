"""Section on corruption error: mCE and relative mCE per model against the reference model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_vitrobust.formatting import finite, fmt_ci

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table


def _mce_rows(ce: Any) -> list[list[str]]:
    rows = []
    for model, entry in ce.get("models", ce).items() if isinstance(ce, Mapping) else []:
        if not isinstance(entry, Mapping):
            continue
        mce, rel = entry.get("mce"), entry.get("relative_mce")
        if not isinstance(mce, Mapping):
            continue
        rows.append(
            [
                model,
                fmt_ci(mce.get("value"), mce.get("ci_low"), mce.get("ci_high")),
                fmt_ci(rel.get("value"), rel.get("ci_low"), rel.get("ci_high"))
                if isinstance(rel, Mapping)
                else "n/a",
            ]
        )
    return rows


def build_corruption_error(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    ce = study.field("results", "corruption_error")
    rows = _mce_rows(ce)
    if not rows:
        raise SectionUnavailable("results.json has no mCE per model")
    ref = ce.get("reference", "base") if isinstance(ce, Mapping) else "base"
    for model, entry in ce.get("models", {}).items():
        mce = entry.get("mce") if isinstance(entry, Mapping) else None
        if not isinstance(mce, Mapping) or (ref == "base" and model == results["models"][0]["key"]):
            continue
        lo, hi = finite(mce.get("ci_low")), finite(mce.get("ci_high"))
        if lo is None or hi is None:
            continue
        where = (
            "fewer corruption errors than"
            if hi < 1
            else "more corruption errors than"
            if lo > 1
            else "no clear difference in corruption error from"
        )
        section.readings.append(
            f"{model}: mCE {fmt_ci(mce.get('value'), lo, hi)}: {where} the "
            f"{ref} model (CI {'excludes' if hi < 1 or lo > 1 else 'includes'} 1)."
        )
    section.tables.append(
        Table(
            ["model", "mCE [95% CI]", "relative mCE [95% CI]"],
            rows,
            caption=f"Reference model: {ref}",
        )
    )
    section.readings.append(
        f"mCE is relative to the {ref} model (1.0 = as many errors as the reference); lower is "
        "more robust."
    )
    section.figures += study.figures_if_any("results", "Accuracy vs severity", "severity")
    section.definition = results.get("definitions", {}).get("ce")
