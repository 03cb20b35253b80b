"""The study report: one page (HTML + Markdown) that answers the paper's claims from a study's outputs.

`build_report(study_dir, output_dir)` reads what the other stages wrote — `results.json`
(evaluation), `analysis.json` (logit lens, attention, CKA, patching), `sae.json` (sparse
autoencoders) and the demo's `stages.json`, each through its typed reader — and writes
`index.html` (figures embedded as base64, so the file stands alone) and `report.md` (figures
copied beside it in `figures/`).

Every sentence that interprets a number is generated from that number (e.g. whether a 95% CI
excludes zero); nothing is hard-coded. A stage that has not run, or whose output cannot be read
or is of another schema (`io.StageOutputError`), is reported as missing; any other error is a bug
and is raised.

Modules: `model` (verdicts, Section, Table, Figure, Report), `inputs` (finding and reading stage
outputs), `readings` (sentences from paired differences), `verdicts` (the verdict rules),
`sections/` (one module per topic), `render` (HTML, Markdown), `browser` (headless Chromium
check), `corruption_table` (the README's table), `build` (`build_report`, the CLI).
"""

from __future__ import annotations

from .browser import BrowserCheck, check_in_browser, find_chromium
from .build import QUESTION, ReportArguments, build_report, build_section, main
from .corruption_table import corruption_table, corruption_table_markdown
from .inputs import SOURCES, SectionUnavailable, StudyOutputs, find_output
from .model import (
    INFO,
    MISSING,
    NOT_SUPPORTED,
    PARTLY,
    SUPPORTED,
    Figure,
    Report,
    ReportPaths,
    Section,
    Table,
)
from .readings import Comparison, as_comparison, describe_change
from .render import render_html, render_markdown, write_report
from .sections import SECTION_SPECS, SectionSpec, describe_setup
from .verdicts import changed_verdict, excess_over_chance, verdict_from_directions

__all__ = [
    "INFO",
    "MISSING",
    "NOT_SUPPORTED",
    "PARTLY",
    "QUESTION",
    "SECTION_SPECS",
    "SOURCES",
    "SUPPORTED",
    "BrowserCheck",
    "Comparison",
    "Figure",
    "Report",
    "ReportArguments",
    "ReportPaths",
    "Section",
    "SectionSpec",
    "SectionUnavailable",
    "StudyOutputs",
    "Table",
    "as_comparison",
    "build_report",
    "build_section",
    "changed_verdict",
    "check_in_browser",
    "corruption_table",
    "corruption_table_markdown",
    "describe_change",
    "describe_setup",
    "excess_over_chance",
    "find_chromium",
    "find_output",
    "main",
    "render_html",
    "render_markdown",
    "verdict_from_directions",
    "write_report",
]
