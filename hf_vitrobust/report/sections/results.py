"""What the evaluation sections share: results.json rows per fine-tuned model, display names and
the base-vs-fine-tuned table of seen and unseen corruptions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_vitrobust.formatting import fmt_ci
from hf_vitrobust.plots.report import plot_seen_unseen

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Figure, Table
from ..readings import Comparison, as_comparison, describe_change

ACC_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy")
METRIC_LABEL = {
    "top_1_accuracy": "top-1",
    "top_5_accuracy": "top-5",
    "top_10_accuracy": "top-10",
    "p_true": "certainty (p of true class)",
    "nll": "NLL",
    "ece": "ECE",
}


def short_name(name: str) -> str:
    """A model's display name: a local checkpoint's folder name, or the Hub id as is."""
    path = Path(str(name).rstrip("/"))
    return path.name if (path.is_absolute() or path.exists() or len(path.parts) > 2) else str(name)


def model_names(results: Mapping[str, Any]) -> dict[str, str]:
    return {m["key"]: short_name(m.get("name") or m["key"]) for m in results.get("models", [])}


def family_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """per_family rows keyed [model][seen|unseen]."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in results["per_family"]:
        out.setdefault(row["model"], {})[row["family"]] = row
    if not out:
        raise SectionUnavailable(
            "results.json has no seen/unseen rows (no fine-tuned model with a training family "
            "was evaluated)"
        )
    return out


def claim_rows(
    results: Mapping[str, Any], family: str, metric: str
) -> list[tuple[str, Comparison | None]]:
    """(display name, paired fine-tuned − base difference) of `metric` on `family` per model."""
    names = model_names(results)
    out = []
    for model, fams in family_rows(results).items():
        if family in fams:
            out.append((names.get(model, model), as_comparison(fams[family]["vs_base"][metric])))
    return out


def claim_rows_or_unavailable(
    results: Mapping[str, Any], family: str, metric: str
) -> list[tuple[str, Comparison | None]]:
    """`claim_rows`, or `SectionUnavailable` when no fine-tuned model has `family` corruptions."""
    rows = claim_rows(results, family, metric)
    if not rows:
        raise SectionUnavailable(f"no fine-tuned model has {family} corruptions in results.json")
    return rows


def pp_readings(rows: list[tuple[str, Comparison | None]], subject: str) -> list[str]:
    """One `describe_change` sentence in percentage points per (model name, difference) row."""
    return [
        describe_change(comp, f"{name}: {subject}", scale=100, unit=" pp", digits=1)
        for name, comp in rows
    ]


def top_k_note(results: Mapping[str, Any]) -> str | None:
    caps = results.get("settings", {}).get("top_k", {})
    capped = [m for m, k in caps.items() if int(m.split("_")[1]) > int(k)]
    if not capped:
        return None
    num = results.get("dataset", {}).get("num_classes")
    return (
        f"With {num} classes, k is capped at {num}: "
        + ", ".join(METRIC_LABEL.get(m, m) for m in capped)
        + " accuracy is 1 for every model by construction, so only top-1 and top-5 can differ."
    )


def seen_unseen_table(results: Mapping[str, Any], metrics: Sequence[str], scale: float) -> Table:
    names = model_names(results)
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
                        names.get(model, model),
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
    results = study.load("results")
    names = model_names(results)
    panels = {names.get(m, m): rows for m, rows in family_rows(results).items()}
    path = plot_seen_unseen(panels, metrics, study.generated(name), title, labels=METRIC_LABEL)
    return Figure(caption, path)
