"""Section on attention (Fig. 8): paired per-head attention-entropy differences."""

from __future__ import annotations

from typing import Any

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table
from ..readings import Comparison, as_comparison
from ..verdicts import changed_verdict


def _largest(
    tests: list[list[Any]], where: str, largest: tuple[float, str, Comparison] | None
) -> tuple[float, str, Comparison] | None:
    """The (|estimate|, place, comparison) of the largest change among `tests` and `largest`."""
    for li, layer in enumerate(tests):
        for hi, t in enumerate(layer):
            comp = as_comparison(t)
            if (
                comp
                and comp.estimate is not None
                and (largest is None or abs(comp.estimate) > largest[0])
            ):
                largest = (abs(comp.estimate), f"{where}, layer {li} head {hi}", comp)
    return largest


def build_entropy(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    ent = a["attention_entropy"]
    rows, n_ex, n_tot = [], 0, 0
    largest: tuple[float, str, Comparison] | None = None
    for cond, block in ent.items():
        for model, diff in block["differences"].items():
            cells = [model, cond]
            for kind in ("all_queries", "cls_query"):
                tests = [as_comparison(t) for layer in diff[kind]["tests"] for t in layer]
                tests = [t for t in tests if t is not None and t.has_ci]
                up = sum(t.direction > 0 for t in tests)
                down = sum(t.direction < 0 for t in tests)
                cells.append(f"{up + down}/{len(tests)} (↑{up} ↓{down})")
                if kind == "all_queries":
                    n_ex += up + down
                    n_tot += len(tests)
                    largest = _largest(diff[kind]["tests"], f"{model} on {cond}", largest)
            rows.append(cells)
    if n_tot == 0:
        raise SectionUnavailable("analysis.json has no attention-entropy tests")
    section.verdict, reading = changed_verdict(
        n_ex, n_tot, "(model × condition × layer × head) entropy differences"
    )
    section.readings.append(reading)
    if largest is not None:
        section.readings.append(
            f"Largest change: {largest[1]}: {largest[2].format(3)} nats "
            f"({'more diffuse' if largest[2].estimate > 0 else 'sharper'} attention after "
            "fine-tuning)."
        )
    section.tables.append(
        Table(
            [
                "model",
                "condition",
                "heads with CI excluding zero (all queries)",
                "same, CLS query row",
            ],
            rows,
            caption="Paired fine-tuned − base entropy per layer × head; ↑ higher entropy (more "
            "diffuse), ↓ lower (sharper)",
        )
    )
    section.figures += study.figures_or_missing(
        "analysis", "Attention-entropy difference (layer × head)", "entropy"
    )
    section.figures += study.figures_if_any("analysis", "Attention maps", "attention_map")
    section.definition = a.get("definitions", {}).get("attention_entropy")
