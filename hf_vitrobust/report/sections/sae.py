"""Sections on sparse autoencoders (Figs. 9, 10): base-vs-fine-tuned SAE codes on the same input,
SAE quality, and the matching of base and fine-tuned SAE dictionaries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hf_vitrobust.analysis.sae.config import SAE_TYPE_LABELS
from hf_vitrobust.formatting import finite, fmt

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Figure, Section, Table
from ..readings import median_text
from ..rules import VerdictRules
from ..verdicts import (
    Cell,
    Judgement,
    combine_judgements,
    judge_sae,
    sae_quality_failures,
    sae_rule,
)
from .claims import ClaimInputs, apply_judgement, claim_inputs, no_control

#: The metric of the SAE comparison records.
METRIC = "code_cosine_to_base"


def _judged_columns(rules: VerdictRules) -> list[str]:
    return [
        "adversarial model",
        "SAE",
        "layer",
        "token",
        "condition",
        f"code cosine to base: adversarial − control [{rules.ci_label}] (test)",
        "images excluded (no token left)",
        "state",
    ]


def _quality_table(entries: list[Mapping[str, Any]], failures: Mapping[str, list[str]]) -> Table:
    rows = []
    for e in entries:
        m = e["metrics"]["base"]
        rows.append(
            [
                e["sae_id"],
                str(e["layer"]),
                f"{e['d_in']}→{e['d_sae']}",
                fmt((e.get("l0_vs_k") or {}).get("k", e.get("k")), 0),
                fmt(m.get("inference_l0", m.get("l0")), 1),
                fmt(m.get("explained_variance")),
                fmt(m.get("dead_fraction", m.get("dead_features")), 3),
                "passes" if not failures[e["sae_id"]] else "; ".join(failures[e["sae_id"]]),
            ]
        )
    return Table(
        ["SAE", "layer", "d_in→d_sae", "k", "L0 (inference)", "explained var.", "dead", "quality"],
        rows,
        caption="SAE quality on held-out base activations (the bar a judged SAE must pass)",
    )


def _distributions_table(data: Mapping[str, Any], sae_ids: Mapping[str, Any]) -> Table | None:
    """Each model's code cosine to the base with its baselines (medians [CI]), as measured."""
    rows = []
    for model, by_sae in (data.get("distributions") or {}).items():
        for sid, entry in by_sae.items():
            if sid not in sae_ids:
                continue
            for condition, cell in entry.get("conditions", {}).items():
                for token, summaries in cell.get("tokens", {}).items():
                    rows.append(
                        [
                            model,
                            sid,
                            condition,
                            token,
                            median_text(summaries.get("code_cosine")),
                            median_text(summaries.get("code_cosine_different_image")),
                            median_text(summaries.get("raw_cosine")),
                            str(summaries.get("both_zero_tokens", "n/a")),
                        ]
                    )
    if not rows:
        return None
    return Table(
        [
            "model",
            "SAE",
            "condition",
            "token",
            "code cosine to base, median [CI]",
            "different images",
            "raw activations (centred)",
            "both-zero tokens excluded",
        ],
        rows,
        caption="Each model's codes against the base model's on the same input (medians with "
        "95% CIs), with the different-image baseline",
    )


def _through_base_table(entries: list[Mapping[str, Any]]) -> Table | None:
    """Each model's activations through the base SAE: a second line of evidence."""
    rows = []
    for e in entries:
        for who, m in e["metrics"].items():
            if isinstance(m, Mapping):
                name = who.removeprefix("finetuned:")
                rows.append(
                    [e["sae_id"], name, fmt(m.get("explained_variance")), fmt(m.get("l0"), 1)]
                )
    if len(rows) <= len(entries):
        return None
    return Table(
        ["SAE", "activations of", "explained variance", "L0"],
        rows,
        caption="Each model's held-out activations through the base SAE",
    )


def _figures(study: StudyOutputs, data: Mapping[str, Any], sae_type: str, label: str) -> list:
    figures = []
    for name in data.get("figures", []):
        if f"sae_cosine_{sae_type}_" in Path(name).name:
            model = Path(name).stem.removeprefix(f"sae_cosine_{sae_type}_")
            figures.append(
                Figure(
                    f"{label} SAE code cosines, base vs {model}",
                    study.figure("sae", name),
                    missing=f"{name} not found",
                )
            )
    return figures


def _matching_table(data: Mapping[str, Any], sae_ids: Mapping[str, Any]) -> Table | None:
    rows = []
    for sid, row in data.get("dictionary_matching", {}).items():
        if sid in sae_ids:
            rows.extend([sid, who, median_text(summary)] for who, summary in row.items())
    if not rows:
        return None
    return Table(
        ["SAE", "dictionary matched against", "matched decoder cosine, median [CI]"],
        rows,
        caption="Dictionary matching (Hungarian assignment)",
    )


def _expected_cells(
    inputs: ClaimInputs, data: Mapping[str, Any], model: str, control: str, sae_id: str
) -> set[tuple[str, str]]:
    """The (condition, token) cells of one SAE the study has for `model` or its control: those
    recorded against any reference and those in either model's distributions (token sets may
    differ per model; a cell either has is expected)."""
    cells = {
        (r.scope, str(r.get("token")))
        for r in inputs.records.select(model=model, metric=METRIC, sae_id=sae_id)
    }
    distributions = data.get("distributions") or {}
    for who in (model, control):
        entry = (distributions.get(who) or {}).get(sae_id) or {}
        for condition, cell in (entry.get("conditions") or {}).items():
            cells |= {(condition, str(token)) for token in cell.get("tokens") or {}}
    return cells


def _row(model: str, cell: Cell) -> list[str]:
    r = cell.record
    if r is None:
        return [model, cell.where or "", "", "", "", "n/a", "n/a", cell.state]
    return [
        model,
        str(r.get("sae_id")),
        str(r.get("layer")),
        str(r.get("token")),
        r.scope,
        r.format(3),
        str(r.get("n_excluded_images", "n/a")),
        cell.state,
    ]


def _judge(
    inputs: ClaimInputs,
    data: Mapping[str, Any],
    entries: list[Mapping[str, Any]],
    failures: Mapping[str, list[str]],
) -> tuple[list[Judgement], list[list[str]], list[str]]:
    judgements, rows, readings = [], [], []
    for model in inputs.adversarial:
        control = inputs.control(model)
        if control is None:
            judgements.append(no_control(model, readings))
            continue
        by_sae, missing = {}, {}
        for e in entries:
            sid = e["sae_id"]
            by_sae[sid] = inputs.records.select(
                model=model, reference=control, metric=METRIC, sae_id=sid
            )
            have = {(r.scope, str(r.get("token"))) for r in by_sae[sid]}
            expected = _expected_cells(inputs, data, model, control, sid)
            missing[sid] = [f"{c}, {t} tokens" for c, t in sorted(expected - have)]
        judgement = judge_sae(by_sae, failures, inputs.rules.sae_margin, inputs.rules, missing)
        judgements.append(judgement)
        rows += [_row(model, cell) for cell in judgement.cells]
        states = Counter(c.state.split(":")[0].split(" (")[0] for c in judgement.cells)
        excluded = sum(
            int(c.record.get("n_excluded_images") or 0) for c in judgement.cells if c.record
        )
        readings.append(
            f"{model} − {control}: "
            + ", ".join(f"{n} {state}" for state, n in states.items())
            + f" → {judgement.verdict}"
            + (f" ({judgement.reason})" if judgement.reason else "")
            + f"; {excluded} image(s) excluded over its cells (no token left with a non-zero "
            "code in either model)."
        )
    return judgements, rows, readings


def _build_sae(study: StudyOutputs, section: Section, sae_type: str) -> None:
    data = study.load("sae")
    entries = [e for e in data["saes"] if e["sae_type"] == sae_type]
    if not entries:
        raise SectionUnavailable(f"no {sae_type} SAE in sae.json")
    inputs = claim_inputs(study, "sae")
    failures = {e["sae_id"]: sae_quality_failures(e, study.rules) for e in entries}
    judgements, rows, readings = _judge(inputs, data, entries, failures)
    apply_judgement(section, combine_judgements(judgements), sae_rule(study.rules), readings)
    label = SAE_TYPE_LABELS.get(sae_type, sae_type)
    below = [sid for sid, f in failures.items() if f]
    if below:
        section.readings.append(
            f"{len(below)} of {len(entries)} {label} SAEs are below the quality bar and are not "
            f"judged: {', '.join(below)}."
        )
    section.tables.append(
        Table(
            _judged_columns(study.rules),
            rows,
            caption="Per image: the cosine between the base SAE's codes of the base model's and "
            "the fine-tuned model's activations (same input); adversarial minus control, paired "
            "on the same images",
        )
    )
    section.tables.append(_quality_table(entries, failures))
    for extra in (_through_base_table(entries), _distributions_table(data, failures)):
        if extra is not None:
            section.tables.append(extra)
    section.figures += _figures(study, data, sae_type, label)
    matching = _matching_table(data, failures)
    if matching is not None:
        section.tables.append(matching)
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


def sae_section(sae_type: str) -> Callable[[StudyOutputs, Section], None]:
    """The section builder for one SAE type (`standard` = vanilla, `batchtopk`)."""

    def build(study: StudyOutputs, section: Section) -> None:
        _build_sae(study, section, sae_type)

    return build


def _matching_reading(sid: str, row: Mapping[str, Any]) -> list[str]:
    """How well each fine-tuned model's SAE matches the base SAE, against the two baselines."""
    readings = []
    seed, rand = row.get("base_other_seed"), row.get("random_directions")
    for who, summary in row.items():
        if not who.startswith("finetuned:"):
            continue
        med = finite(summary.get("median"))
        ref = finite(seed.get("median")) if isinstance(seed, Mapping) else None
        chance = finite(rand.get("median")) if isinstance(rand, Mapping) else None
        if med is None:
            continue
        text = f"{sid}: the SAE trained on {who.split(':', 1)[1]} matches the base SAE's "
        text += f"dictionary with median decoder cosine {med:.3f}"
        if ref is not None:
            text += f" (a base SAE with another seed: {ref:.3f}"
            text += f"; random directions: {chance:.3f})" if chance is not None else ")"
        readings.append(text + ".")
    return readings


def build_dictionary_matching(study: StudyOutputs, section: Section) -> None:
    data = study.load("sae")
    matching = study.field("sae", "dictionary_matching")
    rows = []
    for sid, row in matching.items():
        for who, summary in row.items():
            rows.append([sid, who.replace("finetuned:", "fine-tuned: "), median_text(summary)])
        section.readings += _matching_reading(sid, row)
    if not rows:
        raise SectionUnavailable("sae.json has no dictionary matching")
    section.tables.append(
        Table(["base SAE", "matched against", "median matched decoder cosine [95% CI]"], rows)
    )
    section.figures += study.figures_or_missing(
        "sae", "Dictionary matching (Hungarian assignment)", "matching"
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
