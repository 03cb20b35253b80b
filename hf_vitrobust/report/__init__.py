"""The study report: one page (HTML + Markdown) that answers the paper's claims from a study's outputs.

`build_report(study_dir, output_dir)` reads what the other stages wrote — `results.json` (evaluation),
`analysis.json` (logit lens, attention, CKA, patching), `sae.json` (sparse autoencoders), the models'
configs and the demo's `stages.json` — and writes `index.html` (figures embedded as base64, so the
file stands alone) and `report.md` (figures copied beside it in `figures/`).

Every sentence that interprets a number is generated from that number here (e.g. whether a 95% CI
excludes zero); nothing is hard-coded. A stage that has not run, or whose file cannot be read, is
reported as missing instead of crashing the report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Verdicts a paper claim can receive. "missing" = the stage that measures it has not run.
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
PARTLY = "partly supported"
MISSING = "missing"
INFO = "measured"  # sections that test no claim of the paper (CKA, patching, ...)

_VERDICT_STYLE = {
    SUPPORTED: "#1a7f37",
    NOT_SUPPORTED: "#b42318",
    PARTLY: "#9a6700",
    MISSING: "#6e7781",
    INFO: "#0969da",
}

# File names the stages write (docs/architecture.md).
RESULTS_FILE = "results.json"
ANALYSIS_FILE = "analysis.json"
SAE_FILE = "sae.json"
STAGES_FILE = "stages.json"


# ---------------------------------------------------------------------------------------------
# Report structure
# ---------------------------------------------------------------------------------------------


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
    readings: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    definition: str | None = None
    notes: list[str] = field(default_factory=list)


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


# ---------------------------------------------------------------------------------------------
# Number formatting and generated readings
# ---------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float or None (JSON null, NaN, strings and missing values become None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 3, scale: float = 1.0, sign: bool = False) -> str:
    """Format a number (None → 'n/a')."""
    v = _num(value)
    if v is None:
        return "n/a"
    return f"{v * scale:{'+' if sign else ''}.{digits}f}"


def fmt_ci(
    estimate: Any,
    low: Any,
    high: Any,
    digits: int = 3,
    scale: float = 1.0,
    sign: bool = False,
) -> str:
    """`0.812 [0.790, 0.833]`; the CI part is dropped when it is absent."""
    text = fmt(estimate, digits, scale, sign)
    if _num(low) is None or _num(high) is None:
        return text
    return f"{text} [{fmt(low, digits, scale, sign)}, {fmt(high, digits, scale, sign)}]"


def fmt_p(p: Any) -> str:
    """`p=0.012`, `p<0.001` or `p=n/a`."""
    v = _num(p)
    if v is None:
        return "p=n/a"
    return "p<0.001" if v < 0.001 else f"p={v:.3f}"


@dataclass
class Comparison:
    """A paired fine-tuned − base difference read from any stage's JSON (see `as_comparison`)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None
    test: str | None = None
    n: int | None = None
    confidence: float = 0.95

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    @property
    def direction(self) -> int:
        """+1 when the CI lies above zero, -1 below, 0 when it contains zero (or is absent)."""
        if not self.has_ci:
            return 0
        if self.ci_low > 0:
            return 1
        if self.ci_high < 0:
            return -1
        return 0

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        text = fmt_ci(self.estimate, self.ci_low, self.ci_high, digits, scale, sign=True) + unit
        extra = []
        if self.p_value is not None:
            extra.append(f"{fmt_p(self.p_value)}" + (f", {self.test}" if self.test else ""))
        if self.n is not None:
            extra.append(f"n={self.n}")
        return text + (f" ({'; '.join(extra)})" if extra else "")


_ESTIMATE_KEYS = ("estimate", "difference", "diff", "delta", "mean_difference", "value", "mean")
_LOW_KEYS = ("ci_low", "low", "lower", "ci_lower")
_HIGH_KEYS = ("ci_high", "high", "upper", "ci_upper")


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def as_comparison(obj: Any) -> Comparison | None:
    """Read a `PairedComparison.to_dict()`-like mapping (or a `ci: [lo, hi]` pair) as a Comparison."""
    if not isinstance(obj, Mapping):
        return None
    low, high = _first(obj, _LOW_KEYS), _first(obj, _HIGH_KEYS)
    ci = obj.get("ci")
    if (low is None or high is None) and isinstance(ci, (list, tuple)) and len(ci) == 2:
        low, high = ci
    estimate = _first(obj, _ESTIMATE_KEYS)
    if estimate is None and low is None:
        return None
    n = _num(obj.get("n"))
    return Comparison(
        estimate=_num(estimate),
        ci_low=_num(low),
        ci_high=_num(high),
        p_value=_num(_first(obj, ("p_value", "p", "pvalue"))),
        test=obj.get("test") if isinstance(obj.get("test"), str) else None,
        n=int(n) if n is not None else None,
        confidence=_num(obj.get("confidence")) or 0.95,
    )


def describe_change(
    comp: Comparison | None,
    subject: str,
    *,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 3,
    up: str = "higher",
    down: str = "lower",
) -> str:
    """One plain sentence from a paired difference: its value, CI and whether the CI excludes zero."""
    if comp is None or comp.estimate is None:
        return f"{subject}: no number available."
    level = f"{round(comp.confidence * 100)}%"
    number = comp.format(digits, scale, unit)
    if not comp.has_ci:
        return f"{subject}: {number}; no confidence interval was reported, so no conclusion."
    if comp.direction > 0:
        return f"{subject} is {up} after fine-tuning: {number}; the {level} CI excludes zero."
    if comp.direction < 0:
        return f"{subject} is {down} after fine-tuning: {number}; the {level} CI excludes zero."
    return (
        f"{subject} shows no clear change: {number}; the {level} CI includes zero, "
        "so the data cannot tell a difference from none."
    )


# ---------------------------------------------------------------------------------------------
# Reading a study folder
# ---------------------------------------------------------------------------------------------


def _load_json(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("could not read %s: %s", path, error)
        return None


def find_output(study_dir: Path, name: str, max_depth: int = 3) -> Path | None:
    """The shallowest `name` under `study_dir` (the report folder itself excluded), or None."""
    study_dir = Path(study_dir)
    best: tuple[int, str] | None = None
    for root, dirs, files in os.walk(study_dir):
        depth = len(Path(root).relative_to(study_dir).parts)
        # Trainer checkpoints and our own output never hold a stage's result.
        dirs[:] = sorted(
            d for d in dirs if not d.startswith((".", "checkpoint-")) and d != "report"
        )
        if depth >= max_depth:
            dirs[:] = []
        if name in files:
            candidate = (depth, str(Path(root) / name))
            best = candidate if best is None or candidate < best else best
    return Path(best[1]) if best else None


@dataclass
class StudyOutputs:
    """The files a report reads; any of them may be None (stage not run)."""

    study_dir: Path
    results_path: Path | None = None
    analysis_path: Path | None = None
    sae_path: Path | None = None
    stages_path: Path | None = None
    results: Any = None
    analysis: Any = None
    sae: Any = None
    stages: Any = None
    # Where the report draws its own figures (set by build_report).
    generated_dir: Path | None = None

    @classmethod
    def discover(
        cls,
        study_dir: str | os.PathLike,
        results: str | os.PathLike | None = None,
        analysis: str | os.PathLike | None = None,
        sae: str | os.PathLike | None = None,
    ) -> StudyOutputs:
        """Find the stage outputs under `study_dir` (explicit paths win over discovery)."""
        study_dir = Path(study_dir)
        if not study_dir.is_dir():
            raise FileNotFoundError(
                f"study_dir {str(study_dir)!r} is not a folder; pass the output folder of a study "
                "(e.g. outputs/demo)."
            )

        def pick(explicit: Any, name: str) -> Path | None:
            if explicit is not None:
                path = Path(explicit)
                if not path.is_file():
                    raise FileNotFoundError(f"{name} file {str(path)!r} does not exist.")
                return path
            return find_output(study_dir, name)

        out = cls(study_dir=study_dir)
        out.results_path = pick(results, RESULTS_FILE)
        out.analysis_path = pick(analysis, ANALYSIS_FILE)
        out.sae_path = pick(sae, SAE_FILE)
        stages = study_dir / STAGES_FILE
        out.stages_path = stages if stages.is_file() else None
        out.results = _load_json(out.results_path)
        out.analysis = _load_json(out.analysis_path)
        out.sae = _load_json(out.sae_path)
        out.stages = _load_json(out.stages_path)
        return out

    def figure(self, source: str, name: str | os.PathLike | None) -> Path | None:
        """Resolve a figure named in a stage's JSON: as written, relative to that JSON's folder,
        or by file name beside it (a study folder may have been moved since it was written)."""
        base = getattr(self, f"{source}_path")
        if base is None or not name:
            return None
        path = Path(name)
        for candidate in (path, base.parent / path, base.parent / path.name):
            if candidate.is_file():
                return candidate
        return None


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_CSS = """
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
.definition{font-size:.9em;color:#57606a}
.missing{color:#6e7781}
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines.append(f"*{table.caption}*\n")
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _verdict_badge(verdict: str) -> str:
    color = _VERDICT_STYLE.get(verdict, "#6e7781")
    return f'<span class="verdict" style="background:{color}">{html.escape(verdict)}</span>'


def _figure_names(report: Report) -> dict[int, str]:
    """A unique file name in figures/ for every figure that exists, keyed by id(figure)."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for section in report.sections:
        for fig in section.figures:
            if fig.path is None:
                continue
            stem = _slug(f"{section.key}-{fig.path.stem}") or "figure"
            name, i = f"{stem}.png", 1
            while name in used:
                i += 1
                name = f"{stem}-{i}.png"
            used.add(name)
            names[id(fig)] = name
    return names


def render_markdown(report: Report, figure_names: Mapping[int, str]) -> str:
    """report.md (figures referenced in `figures/`)."""
    out = [f"# {report.title}", "", "## The question", "", report.question, "", "## Setup", ""]
    out.extend(f"- {line}" for line in report.setup)
    for table in report.setup_tables:
        out += ["", _md_table(table)]
    out += ["", "## Claims at a glance", ""]
    out.append(_md_table(_summary_table(report)))
    for section in report.sections:
        out += ["", f"## {section.title}", "", f"**Verdict: {section.verdict}**", ""]
        if section.claim:
            out += [f"*Claim:* {section.claim}", ""]
        out.extend(f"- {r}" for r in section.readings)
        for table in section.tables:
            out += ["", _md_table(table)]
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


def _summary_table(report: Report) -> Table:
    rows = [
        [s.title, s.verdict, s.readings[0] if s.readings else ""]
        for s in report.sections
        if s.claim is not None
    ]
    return Table(["Claim (paper figure)", "Verdict at this scale", "First reading"], rows)


def render_html(report: Report, figure_names: Mapping[int, str], embed: dict[int, str]) -> str:
    """index.html; `embed` maps id(figure) to its base64 PNG."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        "<h2>The question</h2>",
        f"<p>{esc(report.question)}</p>",
        "<h2>Setup</h2><ul>",
        *[f"<li>{esc(line)}</li>" for line in report.setup],
        "</ul>",
        *[_html_table(t) for t in report.setup_tables],
        "<h2>Claims at a glance</h2>",
    ]
    summary = _summary_table(report)
    rows = "".join(
        f'<tr><td><a href="#{_slug(r[0])}">{esc(r[0])}</a></td><td>{_verdict_badge(r[1])}</td>'
        f"<td>{esc(r[2])}</td></tr>"
        for r in summary.rows
    )
    head = "".join(f"<th>{esc(c)}</th>" for c in summary.columns)
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    for section in report.sections:
        parts.append(
            f'<section id="{_slug(section.title)}" data-section="{esc(section.key)}" '
            f'data-verdict="{esc(section.verdict)}">'
        )
        parts.append(f"<h2>{esc(section.title)} {_verdict_badge(section.verdict)}</h2>")
        if section.claim:
            parts.append(f'<p class="claim">Claim: {esc(section.claim)}</p>')
        if section.readings:
            cls = ' class="missing"' if section.verdict == MISSING else ""
            parts.append(f"<ul{cls}>" + "".join(f"<li>{esc(r)}</li>" for r in section.readings))
            parts.append("</ul>")
        parts.extend(_html_table(t) for t in section.tables)
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
    names = _figure_names(report)
    embed: dict[int, str] = {}
    for section in report.sections:
        for fig in section.figures:
            if fig.path is None:
                continue
            data = fig.path.read_bytes()
            (figures_dir / names[id(fig)]).write_bytes(data)
            embed[id(fig)] = base64.b64encode(data).decode("ascii")
    html_path, md_path = output_dir / "index.html", output_dir / "report.md"
    for path, text in (
        (html_path, render_html(report, names, embed)),
        (md_path, render_markdown(report, names)),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return ReportPaths(html=html_path, markdown=md_path, figures_dir=figures_dir, report=report)


# ---------------------------------------------------------------------------------------------
# Checking the page in a real browser
# ---------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Injected into a copy of the page only (the report itself carries no script): after load, the body
# records how many <img> there are and how many decoded to a non-empty picture.
_IMAGE_PROBE = (
    "<script>window.addEventListener('load',function(){var im=Array.prototype.slice.call("
    "document.images);document.body.setAttribute('data-images',im.length);"
    "document.body.setAttribute('data-images-loaded',im.filter(function(i){"
    "return i.complete&&i.naturalWidth>0;}).length);"
    "document.body.setAttribute('data-broken',im.filter(function(i){return !(i.complete&&"
    "i.naturalWidth>0);}).map(function(i){return i.alt;}).join('|'));});</script>"
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class BrowserCheck:
    """What headless Chromium saw: image counts, broken image alts, screenshot path."""

    images: int
    images_loaded: int
    broken: list[str]
    sections: int
    screenshot: Path | None

    @property
    def ok(self) -> bool:
        return self.images > 0 and self.images == self.images_loaded


def check_in_browser(
    index_html: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    chromium: str | None = None,
    timeout: float = 120.0,
    window_size: str = "1280,2400",
) -> BrowserCheck:
    """Load the report from disk in headless Chromium, count images that decoded, take a screenshot."""
    index_html = Path(index_html).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(
            "No Chromium found; install Debian's `chromium` (apt-get install -y chromium)."
        )
    with tempfile.TemporaryDirectory(prefix="vitrobust-chromium-") as tmp:
        # The probe copy sits beside index.html so that relative image paths resolve the same way.
        probe = index_html.with_name(f".probe-{os.getpid()}-{index_html.name}")
        probe.write_text(
            index_html.read_text(encoding="utf-8").replace("</body>", _IMAGE_PROBE + "</body>"),
            encoding="utf-8",
        )
        try:
            base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile"]
            dom = subprocess.run(
                [*base, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            probe.unlink(missing_ok=True)
        match = re.search(r"<body[^>]*>", dom.stdout)
        if dom.returncode != 0 or match is None:
            raise RuntimeError(
                f"Chromium could not render {index_html} (exit {dom.returncode}): "
                f"{dom.stderr[-2000:]}"
            )
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(0)))
        shot_path = None
        if screenshot is not None:
            shot_path = Path(screenshot).resolve()
            shot_path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    *base[:-1],
                    f"--user-data-dir={tmp}/profile-shot",
                    f"--window-size={window_size}",
                    f"--screenshot={shot_path}",
                    index_html.as_uri(),
                ],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if not shot_path.is_file() or shot_path.stat().st_size == 0:
                raise RuntimeError(f"Chromium wrote no screenshot to {shot_path}.")
    broken = [b for b in html.unescape(attrs.get("data-broken", "")).split("|") if b]
    return BrowserCheck(
        images=int(attrs.get("data-images", 0)),
        images_loaded=int(attrs.get("data-images-loaded", 0)),
        broken=broken,
        sections=dom.stdout.count("<section "),
        screenshot=shot_path,
    )


# ---------------------------------------------------------------------------------------------
# Verdict rules (each states its rule in the report; thresholds are arguments, never hidden)
# ---------------------------------------------------------------------------------------------


def verdict_from_directions(directions: Sequence[int], want: int) -> str:
    """All comparisons go the claimed way (`want` = +1 / −1 / 0 for "no clear change") → supported;
    some → partly; none → not supported."""
    if not directions:
        return MISSING
    hits = sum(1 for d in directions if d == want)
    if hits == len(directions):
        return SUPPORTED
    return PARTLY if hits else NOT_SUPPORTED


def excess_over_chance(n_excluding: int, n_total: int, alpha: float = 0.05) -> tuple[float, bool]:
    """One-sided binomial test: do more CIs exclude zero than the `alpha` share expected by chance?"""
    from scipy.stats import binomtest

    if n_total == 0:
        return 1.0, False
    p = binomtest(n_excluding, n_total, alpha, alternative="greater").pvalue
    return float(p), bool(p < alpha)


# ---------------------------------------------------------------------------------------------
# Building the report
# ---------------------------------------------------------------------------------------------

QUESTION = (
    "Does adversarial fine-tuning of a Vision Transformer against image corruptions make it "
    "robust to new instances of the corruptions it was trained on, does that robustness transfer "
    "to corruption classes it never saw, and what changes inside the model (layer-wise knowledge, "
    "attention, representations, sparse features)? This report answers each claim of the paper "
    "(arXiv 2606.07593) with the numbers of this run, their 95% bootstrap CIs and paired tests."
)


class SectionUnavailable(Exception):
    """A section's input exists but lacks what the section needs (stated in the report)."""


@dataclass
class _Spec:
    key: str
    title: str
    claim: str | None
    source: str  # "results" | "analysis" | "sae" | "stages"
    stage: str  # the demo stage / recipe that writes the source
    build: Callable[[StudyOutputs, Section], None]


_SOURCE_FILES = {
    "results": (RESULTS_FILE, "evaluation (recipes/evaluate.py)"),
    "analysis": (ANALYSIS_FILE, "analysis (recipes/analyze.py)"),
    "sae": (SAE_FILE, "SAE training and comparison (recipes/train_sae.py)"),
    "stages": (STAGES_FILE, "the demo runner (recipes/demo.py)"),
}


def _run_spec(spec: _Spec, study: StudyOutputs) -> Section:
    section = Section(key=spec.key, title=spec.title, claim=spec.claim)
    data = getattr(study, spec.source)
    path = getattr(study, f"{spec.source}_path")
    file_name, producer = _SOURCE_FILES[spec.source]
    if path is None:
        section.verdict = MISSING
        section.readings = [
            f"Missing: {producer} has not been run ({file_name} not found under {study.study_dir})."
        ]
        return section
    if data is None:
        section.verdict = MISSING
        section.readings = [f"Missing: {path} could not be read (not valid JSON)."]
        return section
    try:
        spec.build(study, section)
    except (SectionUnavailable, KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
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
) -> ReportPaths:
    """Read a study's outputs and write `index.html`, `report.md` and `figures/` to `output_dir`
    (default: `<study_dir>/report`)."""
    study = StudyOutputs.discover(study_dir, results=results, analysis=analysis, sae=sae)
    output_dir = Path(output_dir) if output_dir is not None else study.study_dir / "report"
    study.generated_dir = output_dir / ".generated"
    sections = [_run_spec(spec, study) for spec in SECTION_SPECS]
    setup, setup_tables = describe_setup(study)
    sources = {
        name: str(getattr(study, f"{name}_path") or "not found")
        for name in ("results", "analysis", "sae", "stages")
    }
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


# ---------------------------------------------------------------------------------------------
# Sections: sparse autoencoders (sae.json, recipes/train_sae.py)
# ---------------------------------------------------------------------------------------------

#: "Essentially unchanged" sparse representation: the median base-vs-fine-tuned code cosine on the
#: same input is at least this high (and clearly above the different-image baseline).
SAE_UNCHANGED_MEDIAN = 0.9


def _median_text(summary: Mapping[str, Any] | None) -> str:
    if not isinstance(summary, Mapping):
        return "n/a"
    ci = summary.get("median_ci") or [None, None]
    return fmt_ci(summary.get("median"), ci[0], ci[1])


def _sae_section(sae_type: str) -> Callable[[StudyOutputs, Section], None]:
    def build(study: StudyOutputs, section: Section) -> None:
        data = study.sae
        entries = [e for e in data["saes"] if e["sae_type"] == sae_type]
        if not entries:
            raise SectionUnavailable(f"no {sae_type} SAE in sae.json")
        flagged = {e["sae_id"]: bool(e.get("flagged")) for e in entries}
        rows, quality_rows, ok, judged = [], [], 0, 0
        for e in entries:
            m = e["metrics"]["base"]
            quality_rows.append(
                [
                    e["sae_id"],
                    str(e["layer"]),
                    f"{e['d_in']}→{e['d_sae']}",
                    fmt(m.get("l0"), 1),
                    fmt(m.get("explained_variance")),
                    fmt(m.get("dead_fraction", m.get("dead_features")), 3),
                    "FLAGGED: " + str(e.get("flag_reason")) if e.get("flagged") else "ok",
                ]
            )
        worst: tuple[float, str] | None = None
        for model, by_sae in data["comparisons"].items():
            for sid, comp in by_sae.items():
                if sid not in flagged:
                    continue
                for cond, cell in comp["conditions"].items():
                    code = cell["code_cosine"]
                    gap = as_comparison(cell.get("code_cosine_minus_different_image"))
                    median = _num(code.get("median"))
                    low = _num((code.get("median_ci") or [None])[0])
                    rows.append(
                        [
                            model,
                            sid,
                            cond,
                            _median_text(code),
                            _median_text(cell.get("code_cosine_different_image")),
                            _median_text(cell.get("raw_cosine")),
                            _median_text(cell.get("topk_jaccard")),
                        ]
                    )
                    if flagged[sid]:
                        continue
                    judged += 1
                    above_baseline = gap is not None and gap.direction > 0
                    high = low is not None and low >= SAE_UNCHANGED_MEDIAN
                    ok += int(above_baseline and high)
                    if median is not None and (worst is None or median < worst[0]):
                        worst = (median, f"{model}, {sid}, {cond}")
        label = SAE_TYPE_LABELS.get(sae_type, sae_type)
        n_flag = sum(flagged.values())
        if judged == 0:
            section.verdict = NOT_SUPPORTED
            section.readings.append(
                f"Every {label} SAE is flagged for low explained variance, so its codes cannot "
                "show whether the sparse representation changed: not supported at this scale."
            )
        else:
            section.verdict = (
                SUPPORTED if ok == judged else PARTLY if ok > judged / 2 else NOT_SUPPORTED
            )
            section.readings.append(
                f"In {ok} of {judged} comparisons (fine-tuned model × SAE × condition) the median "
                f"cosine between the {label} SAE codes of the base and fine-tuned activations has a "
                f"95% CI at or above {SAE_UNCHANGED_MEDIAN} and lies above the different-image "
                "baseline (paired CI excluding zero)."
            )
            if worst is not None:
                section.readings.append(f"Lowest median code cosine: {worst[0]:.3f} ({worst[1]}).")
        if n_flag:
            section.readings.append(
                f"{n_flag} of {len(flagged)} {label} SAEs are flagged (held-out explained variance "
                "below the threshold) and are left out of the verdict."
            )
        section.tables.append(
            Table(
                [
                    "fine-tuned model",
                    "SAE",
                    "condition",
                    "code cosine, median [CI]",
                    "different images",
                    "raw activations",
                    "top-k Jaccard",
                ],
                rows,
                caption="Base vs fine-tuned on the same held-out input (medians with 95% CIs)",
            )
        )
        section.tables.append(
            Table(
                ["SAE", "layer", "d_in→d_sae", "L0", "explained var.", "dead fraction", "quality"],
                quality_rows,
                caption="SAE quality on held-out base activations",
            )
        )
        for name in data.get("figures", []):
            if f"sae_cosine_{sae_type}_" in Path(name).name:
                model = Path(name).stem.removeprefix(f"sae_cosine_{sae_type}_")
                section.figures.append(
                    Figure(
                        f"{label} SAE code cosines, base vs {model}",
                        study.figure("sae", name),
                        missing=f"{name} not found",
                    )
                )
        matching = data.get("dictionary_matching", {})
        match_rows = []
        for sid, row in matching.items():
            if sid in flagged:
                match_rows.extend([sid, who, _median_text(summary)] for who, summary in row.items())
        if match_rows:
            section.tables.append(
                Table(
                    ["SAE", "dictionary matched against", "matched decoder cosine, median [CI]"],
                    match_rows,
                    caption="Dictionary matching (Hungarian assignment)",
                )
            )
        defs = data.get("definitions", {})
        section.definition = defs.get("code_cosine")
        if defs.get("batchtopk_codes") and sae_type == "batchtopk":
            section.notes.append(defs["batchtopk_codes"])
        ev = data.get("eval", {})
        section.notes.append(
            f"{ev.get('num_images', '?')} held-out images of {ev.get('dataset', '?')} "
            f"({ev.get('split', '?')}), corruptions at severity {ev.get('severity', '?')}; tokens: "
            f"{data.get('tokens', '?')}."
        )

    return build


SAE_TYPE_LABELS = {"standard": "vanilla (ReLU + L1)", "batchtopk": "BatchTopK"}


# ---------------------------------------------------------------------------------------------
# The corruption table (generated from the registry, for the README and the report)
# ---------------------------------------------------------------------------------------------


def _severity_params(params: Sequence[Mapping[str, Any]]) -> str:
    """`sigma .08 .12 .18 .26 .38` from the five severities' parameter dicts."""
    if not params:
        return ""
    parts = []
    for key in params[0]:
        values = [p.get(key) for p in params]
        if len({json.dumps(v, default=str) for v in values}) == 1:
            parts.append(f"{key} {values[0]}")
        else:
            parts.append(f"{key} " + " ".join(str(v) for v in values))
    return "; ".join(parts)


def corruption_table(family_names: Sequence[str] = ("low_frequency", "high_frequency")) -> Table:
    """Every registered corruption with its group, measured band and training family."""
    from hf_vitrobust.corruptions import CORRUPTIONS, FAMILIES, REGISTRY_VERSION

    rows = []
    for name, c in CORRUPTIONS.items():
        families = [f for f in family_names if name in FAMILIES.get(f, ())]
        rows.append(
            [
                name,
                c.group,
                c.band,
                f"{c.lf_share:.2f}",
                ", ".join(families) or "—",
                c.fidelity,
                _severity_params(c.params),
            ]
        )
    return Table(
        [
            "corruption",
            "group",
            "band",
            "LF share",
            "training family",
            "vs ImageNet-C",
            "severity 1→5",
        ],
        rows,
        caption=f"Corruption registry {REGISTRY_VERSION}: band from the measured share of "
        "perturbation energy below 1/8 Nyquist at severity 3 (LF share)",
    )


def corruption_table_markdown() -> str:
    """The corruption table as Markdown (README: `python recipes/report.py --corruption_table`)."""
    return _md_table(corruption_table())


# ---------------------------------------------------------------------------------------------
# Sections: evaluation (results.json, recipes/evaluate.py)
# ---------------------------------------------------------------------------------------------

_ACC_METRICS = ("top_1_accuracy", "top_5_accuracy", "top_10_accuracy")
_METRIC_LABEL = {
    "top_1_accuracy": "top-1",
    "top_5_accuracy": "top-5",
    "top_10_accuracy": "top-10",
    "p_true": "certainty (p of true class)",
    "nll": "NLL",
    "ece": "ECE",
}


def _stage_figures(study: StudyOutputs, source: str, *needles: str) -> list[Path]:
    """PNG figures of a stage whose file name contains any of `needles` (listed in the JSON's
    `figures`, else found beside the JSON)."""
    data = getattr(study, source)
    base = getattr(study, f"{source}_path")
    names: list[str] = []
    listed = data.get("figures") if isinstance(data, Mapping) else None
    if isinstance(listed, Mapping):
        names = [str(v) for v in listed.values()]
    elif isinstance(listed, list):
        names = [str(v) for v in listed]
    elif base is not None:
        names = sorted(p.name for p in base.parent.glob("*.png"))
    out = []
    for name in names:
        if any(n in Path(name).name.lower() for n in needles):
            path = study.figure(source, name)
            if path is not None and path not in out:
                out.append(path)
    return out


def _figures_or_missing(
    study: StudyOutputs, source: str, caption: str, *needles: str
) -> list[Figure]:
    paths = _stage_figures(study, source, *needles)
    if not paths:
        return [Figure(caption, None, missing=f"no figure matching {needles} was written")]
    return [Figure(f"{caption} ({p.stem.replace('_', ' ')})", p) for p in paths]


def _top_k_note(results: Mapping[str, Any]) -> str | None:
    caps = results.get("settings", {}).get("top_k", {})
    capped = [m for m, k in caps.items() if int(m.split("_")[1]) > int(k)]
    if not capped:
        return None
    num = results.get("dataset", {}).get("num_classes")
    return (
        f"With {num} classes, k is capped at {num}: "
        + ", ".join(_METRIC_LABEL.get(m, m) for m in capped)
        + " accuracy is 1 for every model by construction, so only top-1 and top-5 can differ."
    )


def _family_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
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


def _short(name: str) -> str:
    """A model's display name: a local checkpoint's folder name, or the Hub id as is."""
    path = Path(str(name).rstrip("/"))
    return path.name if (path.is_absolute() or path.exists() or len(path.parts) > 2) else str(name)


def _model_names(results: Mapping[str, Any]) -> dict[str, str]:
    return {m["key"]: _short(m.get("name") or m["key"]) for m in results.get("models", [])}


def _seen_unseen_table(results: Mapping[str, Any], metrics: Sequence[str], scale: float) -> Table:
    names = _model_names(results)
    digits = 1 if scale == 100 else 3  # percentages vs probabilities, NLL, ECE
    rows = []
    for model, fams in _family_rows(results).items():
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
                        _METRIC_LABEL.get(m, m),
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


def _claim_rows(
    results: Mapping[str, Any], family: str, metric: str
) -> list[tuple[str, Comparison | None]]:
    names = _model_names(results)
    out = []
    for model, fams in _family_rows(results).items():
        if family in fams:
            out.append((names.get(model, model), as_comparison(fams[family]["vs_base"][metric])))
    return out


def plot_seen_unseen(
    results: Mapping[str, Any], metrics: Sequence[str], path: Path, title: str
) -> Path:
    """Base vs fine-tuned on seen and unseen corruptions, one panel per fine-tuned model (the
    paper's Fig. 2 / Fig. 4 layout), 95% CIs as error bars."""
    import numpy as np

    from hf_vitrobust.plots import plt, save_figure

    names = _model_names(results)
    fams = _family_rows(results)
    fig, axes = plt.subplots(
        1, len(fams), figsize=(4.2 * len(fams) + 0.5, 3.4), squeeze=False, sharey=True
    )
    width = 0.2
    for ax, (model, rows) in zip(axes[0], fams.items()):
        x = np.arange(len(metrics))
        offset = -1.5
        for fam in ("seen", "unseen"):
            row = rows.get(fam)
            if row is None:
                offset += 2
                continue
            for who, key, hatch in (("base", "base_metrics", ""), ("fine-tuned", "metrics", "//")):
                vals = [row[key][m] for m in metrics]
                v = np.array([_num(e["value"]) or 0.0 for e in vals])
                lo = np.array([_num(e.get("ci_low")) or _num(e["value"]) or 0.0 for e in vals])
                hi = np.array([_num(e.get("ci_high")) or _num(e["value"]) or 0.0 for e in vals])
                ax.bar(
                    x + offset * width,
                    v,
                    width,
                    yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)],
                    capsize=2,
                    color="tab:blue" if fam == "seen" else "tab:orange",
                    alpha=0.55 if who == "base" else 0.95,
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.4,
                    label=f"{fam}, {who}",
                )
                offset += 1
        ax.set_xticks(x, [_METRIC_LABEL.get(m, m) for m in metrics], fontsize=8)
        ax.set_title(f"{names.get(model, model)}", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean over images (95% CI)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def _generated(study: StudyOutputs, name: str) -> Path:
    if study.generated_dir is None:
        raise SectionUnavailable("no folder for generated figures")
    study.generated_dir.mkdir(parents=True, exist_ok=True)
    return study.generated_dir / name


def _build_accuracy(study: StudyOutputs, section: Section) -> None:
    results = study.results
    seen = _claim_rows(results, "seen", "top_1_accuracy")
    if not seen:
        raise SectionUnavailable("no fine-tuned model has seen corruptions in results.json")
    for name, comp in seen:
        section.readings.append(
            describe_change(
                comp,
                f"{name}: top-1 accuracy on its seen corruptions",
                scale=100,
                unit=" pp",
                digits=1,
            )
        )
    for name, comp in _claim_rows(results, "seen", "top_5_accuracy"):
        section.readings.append(
            describe_change(
                comp, f"{name}: top-5 accuracy on seen corruptions", scale=100, unit=" pp", digits=1
            )
        )
    section.verdict = verdict_from_directions([c.direction for _, c in seen if c], +1)
    section.tables.append(_seen_unseen_table(results, _ACC_METRICS, 100))
    section.figures.append(
        Figure(
            "Seen vs unseen corruptions, base vs fine-tuned (top-1/5/10)",
            plot_seen_unseen(
                results,
                _ACC_METRICS,
                _generated(study, "seen_unseen_accuracy.png"),
                "Accuracy on seen and unseen corruptions (held-out images)",
            ),
        )
    )
    section.figures += _figures_or_missing(
        study,
        "results",
        "Top-1/5/10 accuracy per model and corruption group",
        "accuracy_top",
        "topk",
        "fig2",
        "accuracy_groups",
        "accuracy_by_group",
    )
    section.definition = (
        results.get("definitions", {}).get("top_1_accuracy", "")
        + " "
        + (results.get("definitions", {}).get("seen", ""))
    )
    note = _top_k_note(results)
    if note:
        section.notes.append(note)
    if results.get("corruption_note"):
        section.notes.append(results["corruption_note"])


def _build_transfer(study: StudyOutputs, section: Section) -> None:
    results = study.results
    unseen = _claim_rows(results, "unseen", "top_1_accuracy")
    if not unseen:
        raise SectionUnavailable("no fine-tuned model has unseen corruptions in results.json")
    for name, comp in unseen:
        section.readings.append(
            describe_change(
                comp,
                f"{name}: top-1 accuracy on unseen corruptions",
                scale=100,
                unit=" pp",
                digits=1,
            )
        )
    # "No transfer" presupposes a gain to transfer: it is judged on the models whose seen gain
    # has a CI above zero, and holds when their unseen change is not clearly positive.
    seen = dict(_claim_rows(results, "seen", "top_1_accuracy"))
    gained = [n for n, c in seen.items() if c is not None and c.direction > 0]
    judged = [c.direction for n, c in unseen if n in gained and c is not None]
    if not gained:
        section.verdict = NOT_SUPPORTED
        section.readings.insert(
            0,
            "No fine-tuned model gains top-1 accuracy on its seen corruptions with a CI above "
            "zero, so there is no gain whose transfer could be tested: not supported at this "
            "scale (the unseen changes below are reported as measured).",
        )
    else:
        # A loss on unseen corruptions is still "no transfer"; only a clear gain contradicts it.
        section.verdict = verdict_from_directions([max(d, 0) for d in judged], 0)
        section.readings.insert(
            0,
            f"Judged on the models with a seen gain ({', '.join(gained)}): "
            + (
                "none of them gains on unseen corruptions with a CI above zero."
                if section.verdict == SUPPORTED
                else "some gain on unseen corruptions with a CI above zero."
            ),
        )
    tm = results.get("transfer_matrix")
    if tm and tm.get("cells"):
        names = _model_names(results)
        rows, gains, n_unseen = [], [], 0
        for model, cells in zip(tm["rows"], tm["cells"]):
            row = [names.get(model, model)]
            for col, cell in zip(tm["columns"], cells):
                comp = as_comparison(cell)
                mark = " (seen)" if cell.get("seen") else ""
                star = "*" if comp is not None and comp.direction else ""
                text = (
                    fmt_ci(comp.estimate, comp.ci_low, comp.ci_high, 1, 100, True)
                    if comp
                    else "n/a"
                )
                row.append(text + star + mark)
                if col != "clean" and not cell.get("seen"):
                    n_unseen += 1
                    if comp and comp.direction > 0:
                        gains.append(f"{names.get(model, model)} on {col}")
            rows.append(row)
        section.tables.append(
            Table(
                ["model", *tm["columns"]],
                rows,
                caption="Transfer matrix: top-1 accuracy change vs base (pp) with 95% CI; "
                "* the CI excludes zero; (seen) marks groups that contain training corruptions",
            )
        )
        if gains:
            section.readings.append(
                f"{len(gains)} of {n_unseen} unseen (model, group) cells gain accuracy with a CI "
                "above zero: " + "; ".join(gains) + "."
            )
        else:
            section.readings.append(
                f"None of the {n_unseen} unseen (model, group) cells of the transfer matrix gains "
                "accuracy with a CI above zero."
            )
    section.tables.append(_seen_unseen_table(results, ("top_1_accuracy",), 100))
    section.figures += _figures_or_missing(
        study, "results", "Transfer matrix (top-1 change vs base)", "transfer"
    )
    section.definition = tm.get("definition") if tm else None


def _build_certainty(study: StudyOutputs, section: Section) -> None:
    results = study.results
    seen = _claim_rows(results, "seen", "p_true")
    if not seen:
        raise SectionUnavailable("no fine-tuned model has seen corruptions in results.json")
    for fam in ("seen", "unseen"):
        for name, comp in _claim_rows(results, fam, "p_true"):
            section.readings.append(
                describe_change(
                    comp, f"{name}: certainty on {fam} corruptions", scale=100, unit=" pp", digits=1
                )
            )
    section.verdict = verdict_from_directions([c.direction for _, c in seen if c], +1)
    section.tables.append(_seen_unseen_table(results, ("p_true", "nll", "ece"), 1))
    section.figures.append(
        Figure(
            "Certainty on seen vs unseen corruptions, base vs fine-tuned",
            plot_seen_unseen(
                results,
                ("p_true",),
                _generated(study, "seen_unseen_certainty.png"),
                "Probability of the true class on seen and unseen corruptions",
            ),
        )
    )
    section.figures += _figures_or_missing(
        study, "results", "Probability of the true class", "p_true", "certainty", "fig4"
    )
    section.definition = results.get("definitions", {}).get("p_true")


def _build_corruption_error(study: StudyOutputs, section: Section) -> None:
    results = study.results
    ce = results["corruption_error"]
    names = _model_names(results)
    rows = []
    for model, entry in ce.get("models", ce).items() if isinstance(ce, Mapping) else []:
        if not isinstance(entry, Mapping):
            continue
        mce, rel = entry.get("mce"), entry.get("relative_mce")
        if not isinstance(mce, Mapping):
            continue
        rows.append(
            [
                names.get(model, model),
                fmt_ci(mce.get("value"), mce.get("ci_low"), mce.get("ci_high")),
                fmt_ci(rel.get("value"), rel.get("ci_low"), rel.get("ci_high"))
                if isinstance(rel, Mapping)
                else "n/a",
            ]
        )
    if not rows:
        raise SectionUnavailable("results.json has no mCE per model")
    ref = ce.get("reference", "base") if isinstance(ce, Mapping) else "base"
    for model, entry in ce.get("models", {}).items():
        mce = entry.get("mce") if isinstance(entry, Mapping) else None
        if not isinstance(mce, Mapping) or (ref == "base" and model == results["models"][0]["key"]):
            continue
        lo, hi = _num(mce.get("ci_low")), _num(mce.get("ci_high"))
        if lo is None or hi is None:
            continue
        where = (
            "fewer corruption errors than"
            if hi < 1
            else "more corruption errors than"
            if lo > 1
            else "no clear difference in corruption error from"
        )
        section.readings.append(
            f"{names.get(model, model)}: mCE {fmt_ci(mce.get('value'), lo, hi)}: {where} the "
            f"{ref} model (CI {'excludes' if hi < 1 or lo > 1 else 'includes'} 1)."
        )
    section.tables.append(
        Table(
            ["model", "mCE [95% CI]", "relative mCE [95% CI]"],
            rows,
            caption=f"Reference model: {ref}",
        )
    )
    section.readings.append(
        f"mCE is relative to the {ref} model (1.0 = as many errors as the reference); lower is "
        "more robust."
    )
    section.figures += [
        f
        for f in _figures_or_missing(study, "results", "Accuracy vs severity", "severity")
        if f.path is not None
    ]
    section.definition = results.get("definitions", {}).get("ce")


# ---------------------------------------------------------------------------------------------
# Sections: analysis (analysis.json, recipes/analyze.py)
# ---------------------------------------------------------------------------------------------


def _changed_verdict(n_excluding: int, n_total: int, what: str) -> tuple[str, str]:
    """Verdict for a claim that something *changed*, over many paired comparisons: supported
    when more CIs exclude zero than the 5% expected by chance (one-sided binomial test)."""
    p, more = excess_over_chance(n_excluding, n_total)
    verdict = SUPPORTED if more else NOT_SUPPORTED
    reading = (
        f"{n_excluding} of {n_total} {what} have a 95% CI that excludes zero; by chance alone "
        f"about {0.05 * n_total:.1f} would (binomial test {fmt_p(p)}), so "
        + ("the change is real at this scale." if more else "this is not more than chance.")
    )
    return verdict, reading


def _analysis_models(analysis: Mapping[str, Any]) -> list[str]:
    return [m for m in analysis["models"] if m != "base"]


def _build_first_correct(study: StudyOutputs, section: Section) -> None:
    a = study.analysis
    lens = a["logit_lens"]
    rows, n_ex, n_tot, shifts = [], 0, 0, []
    for cond, block in lens.items():
        base_fc = block["models"]["base"]["first_correct_layer"]
        for model, comp in block["comparisons"].items():
            ft_fc = block["models"][model]["first_correct_layer"]
            fcl = comp["first_correct_layer"]
            cells = [model, cond, str(fcl.get("count", ""))]
            for key in ("first", "stable"):
                b, f = base_fc[key], ft_fc[key]
                entry = fcl.get(key)
                diff = as_comparison(entry["paired_bootstrap"]) if entry else None
                cells += [
                    fmt_ci(b["value"], b.get("ci_low"), b.get("ci_high"), 2),
                    fmt_ci(f["value"], f.get("ci_low"), f.get("ci_high"), 2),
                    diff.format(2) if diff else "n/a",
                ]
                if diff is not None and diff.has_ci:
                    n_tot += 1
                    if diff.direction:
                        n_ex += 1
                        shifts.append((model, cond, key, diff))
            rows.append(cells)
    if n_tot == 0:
        raise SectionUnavailable("analysis.json has no first-correct-layer comparisons")
    section.verdict, reading = _changed_verdict(
        n_ex, n_tot, "paired first-correct-layer differences (model × condition × statistic)"
    )
    section.readings.append(reading)
    for model, cond, key, diff in shifts[:6]:
        what = "first correct layer" if key == "first" else "layer from which it stays correct"
        section.readings.append(
            f"{model} on {cond}: the {what} moves "
            f"{'later' if diff.direction > 0 else 'earlier'} by {diff.format(2)} layers."
        )
    if len(shifts) > 6:
        section.readings.append(f"… and {len(shifts) - 6} more shifts with CIs excluding zero.")
    section.tables.append(
        Table(
            [
                "model",
                "condition",
                "images (both correct)",
                "base: first",
                "fine-tuned: first",
                "Δ first [CI]",
                "base: stable from",
                "fine-tuned: stable from",
                "Δ stable [CI]",
            ],
            rows,
            caption="Layer index (0 = embeddings); means with 95% CIs; Δ = fine-tuned − base, "
            "paired over images both models classify correctly at the last layer",
        )
    )
    section.figures += _figures_or_missing(
        study, "analysis", "First correct layer", "first_correct"
    )
    section.figures += _figures_or_missing(study, "analysis", "Logit-lens accuracy", "lens")
    section.definition = a.get("definitions", {}).get("first_correct_layer")
    checks = [
        m.get("last_layer_max_abs_diff")
        for block in lens.values()
        for m in block["models"].values()
    ]
    checks = [c for c in checks if _num(c) is not None]
    if checks:
        section.notes.append(
            f"Logit lens at the last layer reproduces the model's logits to within "
            f"{max(checks):.2e} (max absolute difference)."
        )


def _build_entropy(study: StudyOutputs, section: Section) -> None:
    a = study.analysis
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
                    for li, layer in enumerate(diff[kind]["tests"]):
                        for hi, t in enumerate(layer):
                            comp = as_comparison(t)
                            if (
                                comp
                                and comp.estimate is not None
                                and (largest is None or abs(comp.estimate) > largest[0])
                            ):
                                largest = (
                                    abs(comp.estimate),
                                    f"{model} on {cond}, layer {li} head {hi}",
                                    comp,
                                )
            rows.append(cells)
    if n_tot == 0:
        raise SectionUnavailable("analysis.json has no attention-entropy tests")
    section.verdict, reading = _changed_verdict(
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
    section.figures += _figures_or_missing(
        study, "analysis", "Attention-entropy difference (layer × head)", "entropy"
    )
    section.figures += [
        f
        for f in _figures_or_missing(study, "analysis", "Attention maps", "attention_map")
        if f.path is not None
    ]
    section.definition = a.get("definitions", {}).get("attention_entropy")


def _build_cka(study: StudyOutputs, section: Section) -> None:
    a = study.analysis
    cka = a["cka"]
    rows = []
    for cond, by_model in cka.items():
        for model, kinds in by_model.items():
            for kind, values in kinds.items():
                vals = [_num(v) for v in values]
                finite = [(i, v) for i, v in enumerate(vals) if v is not None]
                if not finite:
                    continue
                low_layer, low = min(finite, key=lambda t: t[1])
                rows.append(
                    [
                        model,
                        cond,
                        kind,
                        " ".join(fmt(v, 3) for v in vals),
                        f"{low:.3f} (layer {low_layer})",
                    ]
                )
                if cond == "clean":
                    where = (
                        "nearly unchanged at every layer"
                        if low >= 0.9
                        else f"least similar at layer {low_layer}"
                    )
                    section.readings.append(
                        f"{model}, clean, {kind}: the representation is {where} (lowest linear "
                        f"CKA {low:.3f}; 1 = identical up to rotation and scale)."
                    )
    if not rows:
        raise SectionUnavailable("analysis.json has no CKA values")
    lows = [_num(r[4].split()[0]) for r in rows]
    overall = min(range(len(rows)), key=lambda i: lows[i])
    section.readings.append(
        f"Across all conditions the lowest CKA is {rows[overall][4]} for {rows[overall][0]} on "
        f"{rows[overall][1]} ({rows[overall][2]}). CKA is computed exactly over all images "
        "(no bootstrap CI)."
    )
    section.tables.append(
        Table(["model", "condition", "tokens", "CKA per layer (0 = embeddings)", "lowest"], rows)
    )
    section.figures += _figures_or_missing(study, "analysis", "Linear CKA per layer", "cka")
    section.definition = a.get("definitions", {}).get("cka")


def _build_patching(study: StudyOutputs, section: Section) -> None:
    a = study.analysis
    patching = a["patching"]
    rows = []
    for cond, by_model in patching.items():
        for model, s in by_model.items():
            gain = as_comparison(s["gain"])
            per = s["per_layer"]
            best = max(
                (p for p in per if _num(p.get("recovered")) is not None),
                key=lambda p: p["recovered"],
                default=None,
            )
            rows.append(
                [
                    model,
                    cond,
                    fmt(s["accuracy_a"], 1, 100),
                    fmt(s["accuracy_b"], 1, 100),
                    gain.format(1, 100) if gain else "n/a",
                    " ".join(fmt(p.get("recovered"), 2) for p in per),
                ]
            )
            if gain is None or gain.direction <= 0:
                section.readings.append(
                    f"{model} on {cond}: no accuracy gain over the base with a CI above zero "
                    f"({gain.format(1, 100, ' pp') if gain else 'n/a'}), so there is no gain to "
                    "attribute to a layer."
                )
            elif best is not None:
                ci = fmt_ci(best["recovered"], best.get("ci_low"), best.get("ci_high"), 2)
                section.readings.append(
                    f"{model} on {cond}: gain {gain.format(1, 100, ' pp')}; patching layer "
                    f"{best['layer']} alone recovers the largest fraction of it, {ci}."
                )
    if not rows:
        raise SectionUnavailable("analysis.json has no patching results")
    section.tables.append(
        Table(
            [
                "model",
                "condition",
                "base acc. (%)",
                "fine-tuned acc. (%)",
                "gain (pp) [CI] (McNemar)",
                "fraction recovered per patched layer (0 = embeddings)",
            ],
            rows,
        )
    )
    section.figures += _figures_or_missing(
        study, "analysis", "Activation patching: fraction of the gain recovered", "patching"
    )
    section.definition = a.get("definitions", {}).get("patching")


def _build_dictionary_matching(study: StudyOutputs, section: Section) -> None:
    data = study.sae
    matching = data["dictionary_matching"]
    rows = []
    for sid, row in matching.items():
        for who, summary in row.items():
            rows.append([sid, who.replace("finetuned:", "fine-tuned: "), _median_text(summary)])
        ft = {k: v for k, v in row.items() if k.startswith("finetuned:")}
        seed = row.get("base_other_seed")
        rand = row.get("random_directions")
        for who, summary in ft.items():
            med = _num(summary.get("median"))
            ref = _num(seed.get("median")) if isinstance(seed, Mapping) else None
            chance = _num(rand.get("median")) if isinstance(rand, Mapping) else None
            if med is None:
                continue
            text = f"{sid}: the SAE trained on {who.split(':', 1)[1]} matches the base SAE's "
            text += f"dictionary with median decoder cosine {med:.3f}"
            if ref is not None:
                text += f" (a base SAE with another seed: {ref:.3f}"
                text += f"; random directions: {chance:.3f})" if chance is not None else ")"
            section.readings.append(text + ".")
    if not rows:
        raise SectionUnavailable("sae.json has no dictionary matching")
    section.tables.append(
        Table(["base SAE", "matched against", "median matched decoder cosine [95% CI]"], rows)
    )
    section.figures += _figures_or_missing(
        study, "sae", "Dictionary matching (Hungarian assignment)", "matching"
    )
    section.definition = data.get("definitions", {}).get("matched_dictionary_cosine")
    cfg = data.get("config", {})
    if cfg.get("train_finetuned_saes") and cfg.get("seed_baseline"):
        section.notes.append(
            f"The fine-tuned models' SAEs are trained with the base SAE's seed ({cfg.get('seed')}) "
            "and the 'another seed' baseline with a different one, so part of a fine-tuned "
            "dictionary's match can come from the shared initialisation."
        )
    section.notes.append(
        "A fine-tuned model's dictionary that matches the base about as well as a base SAE "
        "trained with another seed means the fine-tuned model's features are no further from "
        "the base's than SAE training noise."
    )


def _build_runtime(study: StudyOutputs, section: Section) -> None:
    st = study.stages
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
    section.readings.append(
        f"The study took {total / 60:.1f} minutes in all "
        f"({'within' if st['within_time_budget'] else 'over'} the {budget / 60:.0f}-minute "
        f"budget) on {st.get('cpu_count', '?')} CPU cores; peak memory of any stage (process "
        f"tree) {peak:.2f} GB ({'within' if st['within_memory_budget'] else 'over'} the "
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


SECTION_SPECS: list[_Spec] = [
    _Spec(
        "accuracy",
        "Accuracy on seen corruptions (Fig. 2)",
        "Adversarial fine-tuning raises accuracy on new instances of the corruptions it was "
        "trained on (top-1/5/10, seen corruptions).",
        "results",
        "evaluate",
        _build_accuracy,
    ),
    _Spec(
        "transfer",
        "Transfer to unseen corruptions (Fig. 2, transfer matrix)",
        "The gain does not transfer to corruption classes not seen in training.",
        "results",
        "evaluate",
        _build_transfer,
    ),
    _Spec(
        "certainty",
        "Certainty: probability of the true class (Fig. 4)",
        "Fine-tuning raises the model's certainty (mean probability of the true class) on the "
        "seen corruptions.",
        "results",
        "evaluate",
        _build_certainty,
    ),
    _Spec(
        "first_correct_layer",
        "Layer-wise knowledge: first correct layer (Fig. 5)",
        "Fine-tuning changes where in the network the correct class emerges (logit lens).",
        "analysis",
        "analyze",
        _build_first_correct,
    ),
    _Spec(
        "attention_entropy",
        "Attention entropy difference (Fig. 8)",
        "Fine-tuning changes the models' attention (per-head attention entropy).",
        "analysis",
        "analyze",
        _build_entropy,
    ),
    _Spec(
        "sae_vanilla",
        "Sparse features, vanilla SAE (Fig. 9)",
        "Fine-tuning does not fundamentally change the sparse representation: vanilla SAE "
        "codes of base and fine-tuned activations on the same input stay highly similar.",
        "sae",
        "sae",
        _sae_section("standard"),
    ),
    _Spec(
        "sae_batchtopk",
        "Sparse features, BatchTopK SAE (Fig. 10)",
        "Fine-tuning does not fundamentally change the sparse representation: BatchTopK SAE "
        "codes of base and fine-tuned activations on the same input stay highly similar.",
        "sae",
        "sae",
        _sae_section("batchtopk"),
    ),
    _Spec("cka", "Representation similarity (linear CKA)", None, "analysis", "analyze", _build_cka),
    _Spec(
        "patching",
        "Activation patching: which layers carry the gain",
        None,
        "analysis",
        "analyze",
        _build_patching,
    ),
    _Spec(
        "dictionary_matching",
        "SAE dictionaries: base vs fine-tuned",
        None,
        "sae",
        "sae",
        _build_dictionary_matching,
    ),
    _Spec(
        "corruption_error",
        "Corruption error (mCE)",
        None,
        "results",
        "evaluate",
        _build_corruption_error,
    ),
    _Spec("runtime", "Runtime and memory of this run", None, "stages", "demo", _build_runtime),
]


def describe_setup(study: StudyOutputs) -> tuple[list[str], list[Table]]:
    """Setup lines (models, data, sizes, seeds) read from whatever outputs exist."""
    lines: list[str] = []
    tables: list[Table] = []
    r, a, s = study.results, study.analysis, study.sae
    if isinstance(r, Mapping):
        try:
            ds = r.get("dataset", {})
            grid = r.get("grid", {})
            st = r.get("settings", {})
            lines.append(
                f"Evaluation: {ds.get('n_images', '?')} held-out images of "
                f"{ds.get('name', '?')} ({ds.get('split', '?')}, {ds.get('num_classes', '?')} "
                f"classes); {len(grid.get('corruptions', []))} corruptions × severities "
                f"{grid.get('severities', '?')}"
                + (" plus clean" if grid.get("clean") else "")
                + f"; corruption seed {st.get('corruption_seed', '?')} (training used its own); "
                f"{st.get('n_resamples', '?')} bootstrap resamples, "
                f"{st.get('ci_method', '?')} intervals."
            )
            rows = []
            for m in r.get("models", []):
                rb = m.get("robustness") or {}
                rows.append(
                    [
                        _short(m.get("name") or m.get("key")),
                        m.get("role", ""),
                        rb.get("adversary") or "—",
                        rb.get("train_family") or "—",
                        ", ".join(m.get("train_corruptions") or []) or "—",
                        ", ".join(str(v) for v in rb.get("severities") or []) or "—",
                    ]
                )
            if rows:
                tables.append(
                    Table(
                        [
                            "model",
                            "role",
                            "adversary",
                            "training family",
                            "training corruptions",
                            "severities",
                        ],
                        rows,
                        caption="Models compared",
                    )
                )
        except (AttributeError, TypeError) as err:
            lines.append(f"results.json setup could not be read ({err}).")
    else:
        lines.append("Evaluation: missing (results.json not found).")
    if isinstance(a, Mapping):
        data = a.get("data", {})
        lines.append(
            f"Analysis: {data.get('max_examples', '?')} images of {data.get('dataset', '?')} "
            f"({data.get('split', '?')}), corruptions at severity {data.get('severity', '?')}, "
            f"conditions {', '.join(a.get('conditions', []))}."
        )
    else:
        lines.append("Analysis: missing (analysis.json not found).")
    if isinstance(s, Mapping):
        td = s.get("training_data", {})
        lines.append(
            f"SAEs: trained on {td.get('training_tokens', '?')} activations of the base model "
            f"(layers {s.get('layers', '?')}, tokens {s.get('tokens', '?')}, training images "
            f"from {td.get('dataset', '?')} {td.get('split', '?')} with corruption family "
            f"{td.get('corruption_family', '?')}); compared on "
            f"{s.get('eval', {}).get('num_images', '?')} held-out images."
        )
    else:
        lines.append("SAEs: missing (sae.json not found).")
    lines.append(
        "Every base-vs-fine-tuned number is paired (same images, same corruption draws) and "
        "carries a 95% bootstrap CI over images; definitions: docs/definitions.md."
    )
    return lines, tables


# ---------------------------------------------------------------------------------------------
# recipes/report.py
# ---------------------------------------------------------------------------------------------


@dataclass
class ReportArguments:
    """Build the report of any study's output folder (the demo's or a full-scale GPU run's)."""

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
    from hf_vitrobust.configs import parse_recipe

    (args,) = parse_recipe((ReportArguments,), argv)
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
    )
    for section in paths.report.sections:
        print(f"{section.verdict:>17}  {section.title}")
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
