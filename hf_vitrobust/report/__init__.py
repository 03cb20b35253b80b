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

Every claim is judged against each adversarial fine-tune's clean control, from the stage outputs'
`comparisons` records, by the rules in `verdicts` (numbers in `rules.VerdictRules`), and each rule
is printed beside its verdict: supported / not supported / inconclusive.

Modules: `model` (verdicts, Section, Table, Figure, Report), `inputs` (finding and reading stage
outputs), `comparisons` (the records and the study's roles), `rules` (`VerdictRules`),
`verdicts` (the verdict rules), `readings` (sentences from paired differences), `sections/` (one
module per topic), `render` (HTML, Markdown), `browser` (headless Chromium check),
`corruption_table` (the README's table), `build` (`build_report`, the CLI).
"""

from __future__ import annotations

from .browser import BrowserCheck, check_in_browser, find_chromium
from .build import QUESTION, ReportArguments, build_report, build_section, main
from .comparisons import Record, Records, StudyRoles, load_records, study_roles
from .corruption_table import corruption_table, corruption_table_markdown
from .inputs import SOURCES, SectionUnavailable, StudyOutputs, find_output
from .model import (
    INCONCLUSIVE,
    INFO,
    MISSING,
    NOT_SUPPORTED,
    SUPPORTED,
    VERDICTS,
    Figure,
    Report,
    ReportPaths,
    Section,
    Table,
)
from .readings import Comparison, as_comparison, describe_change
from .render import render_html, render_markdown, write_report
from .rules import VerdictRules
from .sections import SECTION_SPECS, SectionSpec, describe_setup
from .verdicts import (
    Cell,
    Judgement,
    combine,
    judge_changed,
    judge_equivalence,
    judge_floor,
    judge_sae,
    judge_transfer,
    sae_quality_failures,
    transfer_margin,
)

__all__ = [
    "INCONCLUSIVE",
    "INFO",
    "MISSING",
    "NOT_SUPPORTED",
    "QUESTION",
    "SECTION_SPECS",
    "SOURCES",
    "SUPPORTED",
    "VERDICTS",
    "BrowserCheck",
    "Cell",
    "Comparison",
    "Figure",
    "Judgement",
    "Record",
    "Records",
    "Report",
    "ReportArguments",
    "ReportPaths",
    "Section",
    "SectionSpec",
    "SectionUnavailable",
    "StudyOutputs",
    "StudyRoles",
    "Table",
    "VerdictRules",
    "as_comparison",
    "build_report",
    "build_section",
    "check_in_browser",
    "combine",
    "corruption_table",
    "corruption_table_markdown",
    "describe_change",
    "describe_setup",
    "find_chromium",
    "find_output",
    "judge_changed",
    "judge_equivalence",
    "judge_floor",
    "judge_sae",
    "judge_transfer",
    "load_records",
    "main",
    "render_html",
    "render_markdown",
    "sae_quality_failures",
    "study_roles",
    "transfer_margin",
    "write_report",
]
