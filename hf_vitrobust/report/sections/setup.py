"""The report's setup lines: models, data, sizes and seeds, read from whatever outputs exist."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_vitrobust.corruptions import FAMILY_DEFINITIONS, family_definition
from hf_vitrobust.io import StageOutputError
from hf_vitrobust.roles import match_controls, read_robustness, role_of

from ..inputs import SOURCES, StudyOutputs
from ..model import Table


def _evaluation_line(r: Mapping[str, Any]) -> str:
    ds = r.get("dataset", {})
    grid = r["grid"] if isinstance(r["grid"], Mapping) else {}
    st = r.get("settings", {})
    return (
        f"Evaluation: {ds.get('n_images', '?')} held-out images of "
        f"{ds.get('name', '?')} ({ds.get('split', '?')}, {ds.get('num_classes', '?')} "
        f"classes); {len(grid.get('corruptions', []))} corruptions × severities "
        f"{grid.get('severities', '?')}"
        + (" plus clean" if grid.get("clean") else "")
        + f"; corruption seed {st.get('corruption_seed', '?')} (training used its own); "
        f"{st.get('n_resamples', '?')} bootstrap resamples, "
        f"{st.get('ci_method', '?')} intervals."
    )


def _family(robustness: Mapping[str, Any]) -> tuple[str, str | None]:
    """The recipe's family spec and the definition of low/high frequency it follows."""
    spec = robustness.get("corruptions")
    if not spec or not robustness.get("train_corruptions"):
        return "—", None
    names = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    definition = family_definition(names)
    return f"{', '.join(names)} ({definition})", definition


def _models_table(r: Mapping[str, Any]) -> Table | None:
    """Every model by its unique key, with its role (from its config.robustness, never from its
    name or position) and, for an adversarial fine-tune, the controls it is judged against."""
    robustness = {m["key"]: read_robustness(m.get("robustness") or {}) for m in r["models"]}
    controls = match_controls(robustness)
    rows = []
    used = set()
    for m in r.get("models", []):
        rb = robustness[m["key"]]
        family, definition = _family(rb)
        used.add(definition)
        found = controls.get(m["key"])
        rows.append(
            [
                m["key"],
                str(m.get("name", "")),
                role_of(rb) if m.get("role") != "base" else "base",
                rb.get("adversary") or "—",
                family,
                ", ".join(rb.get("train_corruptions") or m.get("train_corruptions") or []) or "—",
                ", ".join(str(v) for v in rb.get("severities") or []) or "—",
                (found.clean or "none") if found else "—",
                (found.random_view or "none") if found else "—",
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "model (key)",
            "checkpoint",
            "role",
            "adversary",
            "training family (definition)",
            "training corruptions",
            "severities",
            "clean control",
            "random-view control",
        ],
        rows,
        caption="Models compared; roles come from each checkpoint's config.robustness"
        + "".join(f"; {key}: {FAMILY_DEFINITIONS[key]}" for key in sorted(used - {None})),
    )


def _analysis_line(a: Mapping[str, Any]) -> str:
    data = a.get("data", {})
    return (
        f"Analysis: {data.get('max_examples', '?')} images of {data.get('dataset', '?')} "
        f"({data.get('split', '?')}), corruptions at severity {data.get('severity', '?')}, "
        f"conditions {', '.join(a.get('conditions', []))}."
    )


def _sae_line(s: Mapping[str, Any]) -> str:
    td = s.get("training_data", {})
    return (
        f"SAEs: trained on {td.get('training_tokens', '?')} activations of the base model "
        f"(layers {s.get('layers', '?')}, tokens {s.get('tokens', '?')}, training images "
        f"from {td.get('dataset', '?')} {td.get('split', '?')} with corruption family "
        f"{td.get('corruption_family', '?')}); compared on "
        f"{s.get('eval', {}).get('num_images', '?')} held-out images."
    )


def bad_images_text(summary: Any) -> str:
    """A stage's bad-image record (``data.BadImageTracker.summary()``) in words."""
    if not isinstance(summary, Mapping) or "bad" not in summary:
        return "not recorded"
    limit = summary.get("limit")
    shown = "?" if limit is None else f"{100 * float(limit):g}%"
    if not summary["bad"]:
        return f"none (limit {shown})"
    return (
        f"{summary['bad']} of {summary.get('seen', '?')} images could not be decoded and were "
        f"skipped (limit {shown})"
    )


def _bad_images_sentence(record: Mapping[str, Any], source: str) -> str:
    """Where each stage output records its bad images, as one sentence for its setup line."""
    if source == "sae":
        training = (record.get("training_data") or {}).get("bad_images")
        held_out = (record.get("eval") or {}).get("bad_images")
        return (
            f" Bad images: training {bad_images_text(training)}; held-out "
            f"{bad_images_text(held_out)}."
        )
    return f" Bad images: {bad_images_text(record.get('bad_images'))}."


def _missing_line(study: StudyOutputs, source: str, what: str, error: StageOutputError) -> str:
    if study.paths[source] is None:
        return f"{what}: missing ({SOURCES[source].file} not found)."
    return f"{what}: missing ({error})"


def describe_setup(study: StudyOutputs) -> tuple[list[str], list[Table]]:
    """Setup lines (models, data, sizes, seeds) read from whatever outputs exist."""
    lines: list[str] = []
    tables: list[Table] = []
    for source, what, describe in (
        ("results", "Evaluation", _evaluation_line),
        ("analysis", "Analysis", _analysis_line),
        ("sae", "SAEs", _sae_line),
    ):
        try:
            data = study.load(source)
        except StageOutputError as error:
            lines.append(_missing_line(study, source, what, error))
            continue
        lines.append(describe(data) + _bad_images_sentence(data, source))
        if source == "results":
            table = _models_table(data)
            if table is not None:
                tables.append(table)
    lines.append(
        "Every base-vs-fine-tuned number is paired (same images, same corruption draws) and "
        "carries a 95% bootstrap CI over images; definitions: docs/definitions.md."
    )
    return lines, tables
