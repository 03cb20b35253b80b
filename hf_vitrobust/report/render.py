"""Rendering a Report: index.html (figures embedded as base64, so the page stands alone) and
report.md (figures copied beside it in figures/)."""

from __future__ import annotations

import base64
import html
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_vitrobust.formatting import slug
from hf_vitrobust.io import write_bytes_atomic

from .model import MISSING, VERDICT_STYLE, Report, ReportPaths, Table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.5}
h1{border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.9em;color:#57606a}
.verdict{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-size:.85em;
font-weight:600}
.claim{font-style:italic}
.rule{font-size:.9em;background:#f6f8fa;border-left:3px solid #d0d7de;padding:.3em .6em}
.definition{font-size:.9em;color:#57606a}
.missing{color:#6e7781}
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines.append(f"*{table.caption}*\n")
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _verdict_badge(verdict: str, text: str | None = None) -> str:
    color = VERDICT_STYLE.get(verdict, "#6e7781")
    label = html.escape(text or verdict)
    return f'<span class="verdict" style="background:{color}">{label}</span>'


def figure_names(report: Report) -> dict[int, str]:
    """A unique file name in figures/ for every figure that exists, keyed by id(figure)."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for section in report.sections:
        for fig in section.figures:
            if fig.path is None:
                continue
            stem = slug(f"{section.key}-{fig.path.stem}") or "figure"
            name, i = f"{stem}.png", 1
            while name in used:
                i += 1
                name = f"{stem}-{i}.png"
            used.add(name)
            names[id(fig)] = name
    return names


def _summary_table(report: Report) -> Table:
    rows = [
        [s.title, s.verdict_text, s.readings[0] if s.readings else ""]
        for s in report.sections
        if s.claim is not None
    ]
    return Table(["Claim (paper figure)", "Verdict at this scale", "First reading"], rows)


def render_markdown(report: Report, figure_names: Mapping[int, str]) -> str:
    """report.md (figures referenced in `figures/`)."""
    out = [f"# {report.title}", "", "## The question", "", report.question, "", "## Setup", ""]
    out.extend(f"- {line}" for line in report.setup)
    for table in report.setup_tables:
        out += ["", markdown_table(table)]
    out += ["", "## Claims at a glance", ""]
    out.append(markdown_table(_summary_table(report)))
    for section in report.sections:
        out += ["", f"## {section.title}", "", f"**Verdict: {section.verdict_text}**", ""]
        if section.claim:
            out += [f"*Claim:* {section.claim}", ""]
        out.extend(f"*Rule:* {rule}\n" for rule in section.rules)
        out.extend(f"- {r}" for r in section.readings)
        for table in section.tables:
            out += ["", markdown_table(table)]
        for fig in section.figures:
            out.append("")
            if fig.path is None:
                out.append(f"*Figure missing: {fig.caption} — {fig.missing or 'not written'}.*")
            else:
                out.append(f"![{fig.caption}](figures/{figure_names[id(fig)]})")
                out.append(f"*{fig.caption}*")
        if section.definition:
            out += ["", f"> Definition: {section.definition}"]
        for note in section.notes:
            out += ["", f"Note: {note}"]
    out += ["", "## Sources", ""]
    out.extend(f"- {k}: `{v}`" for k, v in report.sources.items())
    return "\n".join(out) + "\n"


def _html_head(report: Report) -> list[str]:
    """The page up to and including the 'Claims at a glance' table."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        "<h2>The question</h2>",
        f"<p>{esc(report.question)}</p>",
        "<h2>Setup</h2><ul>",
        *[f"<li>{esc(line)}</li>" for line in report.setup],
        "</ul>",
        *[html_table(t) for t in report.setup_tables],
        "<h2>Claims at a glance</h2>",
    ]
    summary = _summary_table(report)
    claims = [s for s in report.sections if s.claim is not None]
    rows = "".join(
        f'<tr><td><a href="#{slug(r[0])}">{esc(r[0])}</a></td>'
        f"<td>{_verdict_badge(s.verdict, s.verdict_text)}</td><td>{esc(r[2])}</td></tr>"
        for r, s in zip(summary.rows, claims)
    )
    head = "".join(f"<th>{esc(c)}</th>" for c in summary.columns)
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return parts


def render_html(report: Report, figure_names: Mapping[int, str], embed: dict[int, str]) -> str:
    """index.html; `embed` maps id(figure) to its base64 PNG."""
    esc = html.escape
    parts = _html_head(report)
    for section in report.sections:
        parts.append(
            f'<section id="{slug(section.title)}" data-section="{esc(section.key)}" '
            f'data-verdict="{esc(section.verdict)}">'
        )
        badge = _verdict_badge(section.verdict, section.verdict_text)
        parts.append(f"<h2>{esc(section.title)} {badge}</h2>")
        if section.claim:
            parts.append(f'<p class="claim">Claim: {esc(section.claim)}</p>')
        parts.extend(f'<p class="rule"><b>Rule:</b> {esc(rule)}</p>' for rule in section.rules)
        if section.readings:
            cls = ' class="missing"' if section.verdict == MISSING else ""
            parts.append(f"<ul{cls}>" + "".join(f"<li>{esc(r)}</li>" for r in section.readings))
            parts.append("</ul>")
        parts.extend(html_table(t) for t in section.tables)
        for fig in section.figures:
            if fig.path is None:
                parts.append(
                    f'<p class="missing">Figure missing: {esc(fig.caption)} — '
                    f"{esc(fig.missing or 'not written')}.</p>"
                )
            else:
                parts.append(
                    f'<figure><img alt="{esc(fig.caption)}" '
                    f'src="data:image/png;base64,{embed[id(fig)]}">'
                    f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
                )
        if section.definition:
            parts.append(f'<p class="definition">Definition: {esc(section.definition)}</p>')
        parts.extend(f'<p class="definition">Note: {esc(n)}</p>' for n in section.notes)
        parts.append("</section>")
    parts.append("<h2>Sources</h2><ul>")
    parts.extend(f"<li>{esc(k)}: <code>{esc(v)}</code></li>" for k, v in report.sources.items())
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: Report, output_dir: str | os.PathLike) -> ReportPaths:
    """Write index.html (figures embedded), report.md and figures/ (copies) into `output_dir`."""
    output_dir = Path(output_dir)
    figures_dir = output_dir / "figures"
    if figures_dir.exists():
        shutil.rmtree(figures_dir)  # stale figures from an earlier build would mislead
    figures_dir.mkdir(parents=True)
    names = figure_names(report)
    embed: dict[int, str] = {}
    for section in report.sections:
        for fig in section.figures:
            if fig.path is None:
                continue
            data = fig.path.read_bytes()
            (figures_dir / names[id(fig)]).write_bytes(data)
            embed[id(fig)] = base64.b64encode(data).decode("ascii")
    html_path, md_path = output_dir / "index.html", output_dir / "report.md"
    write_bytes_atomic(render_html(report, names, embed).encode("utf-8"), html_path)
    write_bytes_atomic(render_markdown(report, names).encode("utf-8"), md_path)
    return ReportPaths(html=html_path, markdown=md_path, figures_dir=figures_dir, report=report)


__all__ = [
    "figure_names",
    "html_table",
    "markdown_table",
    "render_html",
    "render_markdown",
    "write_report",
]
