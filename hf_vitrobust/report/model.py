"""What a report is made of: the verdict vocabulary, figures, tables, sections and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Verdicts a paper claim can receive (report/verdicts.py has the rules). "missing" = the stage
# that measures it has not run, or its output could not be read (`io.StageOutputError`).
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
MISSING = "missing"
INFO = "measured"  # sections that test no claim of the paper (CKA, patching, ...)

VERDICT_STYLE = {
    SUPPORTED: "#1a7f37",
    NOT_SUPPORTED: "#b42318",
    INCONCLUSIVE: "#9a6700",
    MISSING: "#6e7781",
    INFO: "#0969da",
}


@dataclass
class Figure:
    """A PNG shown in a section. `path` is None (with `missing`) when the stage did not write it."""

    caption: str
    path: Path | None = None
    missing: str | None = None


@dataclass
class Table:
    """A small table of already formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """One claim (or one measurement) of the study with its verdict, readings, numbers and figures."""

    key: str
    title: str
    claim: str | None = None
    verdict: str = INFO
    # Why a verdict is what it is when the numbers alone do not say (e.g. "no control fine-tune").
    verdict_reason: str | None = None
    # Each verdict rule in words, with its margin, floor, correction and reference model.
    rules: list[str] = field(default_factory=list)
    readings: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    definition: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict_text(self) -> str:
        """The verdict with its reason: ``inconclusive (no control fine-tune)``."""
        return f"{self.verdict} ({self.verdict_reason})" if self.verdict_reason else self.verdict


@dataclass
class Report:
    """Everything rendered into index.html and report.md."""

    title: str
    question: str
    setup: list[str]
    setup_tables: list[Table]
    sections: list[Section]
    sources: dict[str, str]


@dataclass
class ReportPaths:
    """Where `build_report` wrote the report."""

    html: Path
    markdown: Path
    figures_dir: Path
    report: Report


__all__ = [
    "INFO",
    "MISSING",
    "INCONCLUSIVE",
    "NOT_SUPPORTED",
    "SUPPORTED",
    "VERDICTS",
    "VERDICT_STYLE",
    "Figure",
    "Report",
    "ReportPaths",
    "Section",
    "Table",
]
