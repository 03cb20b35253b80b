"""Section on the run itself: wall time, CPU time and peak memory per stage (the demo's
stages.json)."""

from __future__ import annotations

from typing import Any

from hf_vitrobust.formatting import fmt

from ..inputs import StudyOutputs
from ..model import Section, Table


def build_runtime(study: StudyOutputs, section: Section) -> None:
    st = study.load("stages")
    rows = []
    for r in st["stages"]:
        secs = r["seconds"] if r["status"] != "skipped" else r.get("earlier_seconds")
        rows.append(
            [
                r["name"],
                r["status"],
                fmt(secs, 1),
                fmt(r.get("cpu_seconds"), 1),
                fmt(r["peak_memory_bytes"] / 1024**3, 2),
                "; ".join(r.get("commands", [])),
            ]
        )
    section.tables.append(
        Table(
            ["stage", "status", "wall s", "CPU s", "peak memory (GB)", "command"],
            rows,
            caption="Peak memory: summed RSS of the stage's process tree (recipe and DataLoader "
            "workers), sampled every 0.2 s",
        )
    )
    total, budget = st["study_seconds"], st["time_budget_seconds"]
    peak, mem_budget = st["peak_memory_bytes"] / 1024**3, st["memory_budget_bytes"] / 1024**3
    within_time = study.field("stages", "within_time_budget")
    within_memory = study.field("stages", "within_memory_budget")
    section.readings.append(
        f"The study took {total / 60:.1f} minutes in all "
        f"({'within' if within_time else 'over'} the {budget / 60:.0f}-minute "
        f"budget) on {st.get('cpu_count', '?')} CPU cores; peak memory {peak:.2f} GB "
        f"({_peak_words(st.get('parallel'))}; {'within' if within_memory else 'over'} the "
        f"{mem_budget:.0f} GB budget)."
    )
    load = st.get("load_average_at_end")
    if st.get("threads") or load:
        section.notes.append(
            f"Torch threads for the evaluation/analysis/SAE stages: {st.get('threads', '?')}; "
            f"load average when the run ended: {fmt(load[0] if load else None, 1)} (other work on "
            "the machine slows every stage)."
        )
    if any(r["status"] == "skipped" for r in st["stages"]):
        section.notes.append(
            "Skipped stages ran in an earlier invocation; their time is the recorded one and "
            "their memory was measured then."
        )


def _peak_words(parallel: Any) -> str:
    """What the study's peak memory covers: stages running at once add up."""
    if isinstance(parallel, int) and parallel > 1:
        return f"the demo's whole process tree, up to {parallel} stages running at once"
    return "the largest stage's process tree; stages ran one after the other"
