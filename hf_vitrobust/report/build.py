"""Building the report of a study folder, and the `recipes/report.py` command line."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hf_vitrobust.configs import parse_recipe
from hf_vitrobust.io import StageOutputError

from .browser import check_in_browser
from .corruption_table import corruption_table_markdown
from .inputs import SOURCES, StudyOutputs
from .model import MISSING, Report, ReportPaths, Section
from .render import write_report
from .rules import VerdictRules
from .sections import SECTION_SPECS, SectionSpec, describe_setup

logger = logging.getLogger(__name__)

QUESTION = (
    "Does adversarial fine-tuning of a Vision Transformer against image corruptions make it "
    "robust to new instances of the corruptions it was trained on, does that robustness transfer "
    "to corruption classes it never saw, and what changes inside the model (layer-wise knowledge, "
    "attention, representations, sparse features)? This report answers each claim of the paper "
    "(arXiv 2606.07593) with the numbers of this run, their 95% bootstrap CIs and paired tests."
)


def build_section(spec: SectionSpec, study: StudyOutputs) -> Section:
    """One section; "missing" when its stage has not run or its output cannot give what it needs
    (`StageOutputError`, which includes `SectionUnavailable`). Any other error is a bug and
    propagates."""
    section = Section(key=spec.key, title=spec.title, claim=spec.claim)
    path = study.paths[spec.source]
    if path is None:
        source = SOURCES[spec.source]
        section.verdict = MISSING
        section.readings = [
            f"Missing: {source.producer} has not been run ({source.file} not found under "
            f"{study.study_dir})."
        ]
        return section
    try:
        spec.build(study, section)
    except StageOutputError as err:
        logger.warning("report section %s: %s: %s", spec.key, type(err).__name__, err)
        return Section(
            key=spec.key,
            title=spec.title,
            claim=spec.claim,
            verdict=MISSING,
            readings=[
                f"Missing: {path} could not be read for this section ({type(err).__name__}: {err})."
            ],
        )
    return section


def build_report(
    study_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    results: str | os.PathLike | None = None,
    analysis: str | os.PathLike | None = None,
    sae: str | os.PathLike | None = None,
    title: str | None = None,
    rules: VerdictRules | None = None,
) -> ReportPaths:
    """Read a study's outputs and write `index.html`, `report.md` and `figures/` to `output_dir`
    (default: `<study_dir>/report`); claims are judged by `rules` (default: `VerdictRules()`)."""
    study = StudyOutputs.discover(study_dir, results=results, analysis=analysis, sae=sae)
    study.rules = rules or VerdictRules()
    output_dir = Path(output_dir) if output_dir is not None else study.study_dir / "report"
    study.generated_dir = output_dir / ".generated"
    sections = [build_section(spec, study) for spec in SECTION_SPECS]
    setup, setup_tables = describe_setup(study)
    sources = {name: str(path or "not found") for name, path in study.paths.items()}
    report = Report(
        title=title or f"Adversarial fine-tuning of ViTs: study report ({study.study_dir.name})",
        question=QUESTION,
        setup=setup,
        setup_tables=setup_tables,
        sections=sections,
        sources=sources,
    )
    paths = write_report(report, output_dir)
    # The generated figures now live in figures/ (and inside index.html).
    shutil.rmtree(study.generated_dir, ignore_errors=True)
    return paths


@dataclass
class ReportArguments:
    """Build the report of any study's output folder (the demo's or a full-scale GPU run's); the
    verdict rules' numbers are `VerdictRules` arguments of the same command."""

    study_dir: str | None = field(
        default=None,
        metadata={"help": "Output folder of a study; results/analysis/sae JSONs are found in it."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Default: <study_dir>/report."})
    results: str | None = field(default=None, metadata={"help": "Explicit results.json path."})
    analysis: str | None = field(default=None, metadata={"help": "Explicit analysis.json path."})
    sae: str | None = field(default=None, metadata={"help": "Explicit sae.json path."})
    title: str | None = field(default=None)
    check_browser: bool = field(
        default=False,
        metadata={"help": "Load the page in headless Chromium, count images, take a screenshot."},
    )
    corruption_table: bool = field(
        default=False, metadata={"help": "Print the registry's corruption table (Markdown), exit."}
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `recipes/report.py`."""
    args, rules = parse_recipe((ReportArguments, VerdictRules), argv)
    if args.corruption_table:
        print(corruption_table_markdown())
        return 0
    if not args.study_dir:
        raise ValueError("Pass --study_dir (e.g. outputs/demo), or --corruption_table true.")
    paths = build_report(
        args.study_dir,
        args.output_dir,
        results=args.results,
        analysis=args.analysis,
        sae=args.sae,
        title=args.title,
        rules=rules,
    )
    for section in paths.report.sections:
        print(f"{section.verdict_text:>17}  {section.title}")
    print(f"wrote {paths.html} and {paths.markdown}")
    if args.check_browser:
        check = check_in_browser(paths.html, paths.html.with_name("screenshot.png"))
        print(
            f"Chromium: {check.images_loaded}/{check.images} images loaded"
            + (f" (broken: {check.broken})" if check.broken else "")
            + f"; screenshot {check.screenshot}"
        )
        return 0 if check.ok else 1
    return 0


__all__ = ["QUESTION", "ReportArguments", "build_report", "build_section", "main"]
