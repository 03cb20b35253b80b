"""Section on certainty (Fig. 4): the probability of the true class, with NLL and ECE."""

from __future__ import annotations

from ..inputs import StudyOutputs
from ..model import Section
from ..verdicts import verdict_from_directions
from .results import (
    claim_rows,
    claim_rows_or_unavailable,
    pp_readings,
    seen_unseen_figure,
    seen_unseen_table,
)


def build_certainty(study: StudyOutputs, section: Section) -> None:
    results = study.load("results")
    seen = claim_rows_or_unavailable(results, "seen", "p_true")
    for fam in ("seen", "unseen"):
        section.readings += pp_readings(
            claim_rows(results, fam, "p_true"), f"certainty on {fam} corruptions"
        )
    section.verdict = verdict_from_directions([c.direction for _, c in seen if c], +1)
    section.tables.append(seen_unseen_table(results, ("p_true", "nll", "ece"), 1))
    section.figures.append(
        seen_unseen_figure(
            study,
            ("p_true",),
            "seen_unseen_certainty.png",
            "Certainty on seen vs unseen corruptions, base vs fine-tuned",
            "Probability of the true class on seen and unseen corruptions",
        )
    )
    section.figures += study.figures_or_missing(
        "results", "Probability of the true class", "p_true", "certainty", "fig4"
    )
    section.definition = results.get("definitions", {}).get("p_true")
