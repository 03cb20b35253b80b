"""What the evaluation sections share: results.json rows per fine-tuned model, display names and
the base-vs-fine-tuned table of seen and unseen corruptions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hf_vitrobust.formatting import fmt_ci
from hf_vitrobust.plots.report import plot_seen_unseen

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Figure, Table
from ..readings import as_comparison

ACC_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy")
METRIC_LABEL = {
    "top_1_accuracy": "top-1",
    "top_5_accuracy": "top-5",
    "top_10_accuracy": "top-10",
    "p_true": "certainty (p of true class)",
    "nll": "NLL",
    "ece": "ECE",
}


def family_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """per_family rows keyed [model key][seen|unseen]."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in results["per_family"]:
        out.setdefault(row["model"], {})[row["family"]] = row
    if not out:
        raise SectionUnavailable(
            "results.json has no seen/unseen rows (no fine-tuned model with a training family "
            "was evaluated)"
        )
    return out


def top_k_note(results: Mapping[str, Any]) -> str | None:
    """The note for top-k metrics with k at or above the number of classes: with C classes, top-k
    for k >= C contains every class, so that accuracy is 1 for every model by construction."""
    caps = results.get("settings", {}).get("top_k", {})
    num = results.get("dataset", {}).get("num_classes")
    trivial = [
        m
        for m, k in caps.items()
        if (num is not None and int(m.split("_")[1]) >= int(num)) or int(m.split("_")[1]) > int(k)
    ]
    if not trivial:
        return None
    labels = ", ".join(METRIC_LABEL.get(m, m) for m in trivial)
    return (
        f"With {num} classes, {labels} accuracy counts every class as a hit: it is 100% for every "
        "model by construction (k is capped at the number of classes) and says nothing about "
        "the models."
    )


def seen_unseen_table(results: Mapping[str, Any], metrics: Sequence[str], scale: float) -> Table:
    digits = 1 if scale == 100 else 3  # percentages vs probabilities, NLL, ECE
    rows = []
    for model, fams in family_rows(results).items():
        for fam in ("seen", "unseen"):
            row = fams.get(fam)
            if row is None:
                continue
            for m in metrics:
                b, f = row["base_metrics"][m], row["metrics"][m]
                comp = as_comparison(row["vs_base"][m])
                rows.append(
                    [
                        model,
                        fam,
                        METRIC_LABEL.get(m, m),
                        fmt_ci(b["value"], b.get("ci_low"), b.get("ci_high"), digits, scale),
                        fmt_ci(f["value"], f.get("ci_low"), f.get("ci_high"), digits, scale),
                        comp.format(digits, scale) if comp else "n/a",
                        str(row.get("n_cells", "")),
                    ]
                )
    unit = "%" if scale == 100 else ""
    return Table(
        [
            "fine-tuned model",
            "corruptions",
            "metric",
            f"base{unit and ' (%)'}",
            f"fine-tuned{unit and ' (%)'}",
            f"difference{unit and ' (pp)'} [95% CI] (test)",
            "cells",
        ],
        rows,
        caption="Held-out test images, fresh corruption seeds; seen = the model's training "
        "family; values with 95% bootstrap CIs over images",
    )


def seen_unseen_figure(
    study: StudyOutputs, metrics: Sequence[str], name: str, caption: str, title: str
) -> Figure:
    """The report's own seen-vs-unseen bar chart of `metrics` (drawn into the generated folder)."""
    panels = dict(family_rows(study.load("results")))
    path = plot_seen_unseen(panels, metrics, study.generated(name), title, labels=METRIC_LABEL)
    return Figure(caption, path)
