"""Sections on accuracy (Fig. 2): the gain on seen corruptions and its transfer to unseen ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_vitrobust.formatting import fmt_ci

from ..inputs import StudyOutputs
from ..model import Section, Table
from ..readings import as_comparison
from ..verdicts import no_transfer_verdict, verdict_from_directions
from .results import (
    ACC_METRICS,
    claim_rows,
    claim_rows_or_unavailable,
    model_names,
    pp_readings,
    seen_unseen_figure,
    seen_unseen_table,
    top_k_note,
)


def build_accuracy(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    seen = claim_rows_or_unavailable(results, "seen", "top_1_accuracy")
    section.readings += pp_readings(seen, "top-1 accuracy on its seen corruptions")
    section.readings += pp_readings(
        claim_rows(results, "seen", "top_5_accuracy"), "top-5 accuracy on seen corruptions"
    )
    section.verdict = verdict_from_directions([c.direction for _, c in seen if c], +1)
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
    section.definition = (
        results.get("definitions", {}).get("top_1_accuracy", "")
        + " "
        + (results.get("definitions", {}).get("seen", ""))
    )
    note = top_k_note(results)
    if note:
        section.notes.append(note)
    if results.get("corruption_note"):
        section.notes.append(results["corruption_note"])


def _transfer_matrix(results: Mapping[str, Any], section: Section) -> None:
    """The transfer matrix as a table, and how many unseen (model, group) cells gain."""
    tm = results["transfer_matrix"]
    names = model_names(results)
    rows, gains, n_unseen = [], [], 0
    for model, cells in zip(tm["rows"], tm["cells"]):
        row = [names.get(model, model)]
        for col, cell in zip(tm["columns"], cells):
            comp = as_comparison(cell)
            mark = " (seen)" if cell.get("seen") else ""
            star = "*" if comp is not None and comp.direction else ""
            text = fmt_ci(comp.estimate, comp.ci_low, comp.ci_high, 1, 100, True) if comp else "n/a"
            row.append(text + star + mark)
            if col != "clean" and not cell.get("seen"):
                n_unseen += 1
                if comp and comp.direction > 0:
                    gains.append(f"{names.get(model, model)} on {col}")
        rows.append(row)
    section.tables.append(
        Table(
            ["model", *tm["columns"]],
            rows,
            caption="Transfer matrix: top-1 accuracy change vs base (pp) with 95% CI; "
            "* the CI excludes zero; (seen) marks groups that contain training corruptions",
        )
    )
    if gains:
        section.readings.append(
            f"{len(gains)} of {n_unseen} unseen (model, group) cells gain accuracy with a CI "
            "above zero: " + "; ".join(gains) + "."
        )
    else:
        section.readings.append(
            f"None of the {n_unseen} unseen (model, group) cells of the transfer matrix gains "
            "accuracy with a CI above zero."
        )


def build_transfer(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    unseen = claim_rows_or_unavailable(results, "unseen", "top_1_accuracy")
    section.readings += pp_readings(unseen, "top-1 accuracy on unseen corruptions")
    seen = dict(claim_rows(results, "seen", "top_1_accuracy"))
    gained = [n for n, c in seen.items() if c is not None and c.direction > 0]
    judged = [c.direction for n, c in unseen if n in gained and c is not None]
    section.verdict, rule = no_transfer_verdict(gained, judged)
    section.readings.insert(0, rule)
    tm = results["transfer_matrix"]
    if tm and tm.get("cells"):
        _transfer_matrix(results, section)
    section.tables.append(seen_unseen_table(results, ("top_1_accuracy",), 100))
    section.figures += study.figures_or_missing(
        "results", "Transfer matrix (top-1 change vs base)", "transfer"
    )
    section.definition = tm.get("definition") if tm else None
