"""Sections on sparse autoencoders (Figs. 9, 10): base-vs-fine-tuned SAE codes on the same input,
SAE quality, and the matching of base and fine-tuned SAE dictionaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hf_vitrobust.analysis.sae.config import SAE_TYPE_LABELS
from hf_vitrobust.formatting import finite, fmt

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Figure, Section, Table
from ..readings import as_comparison, median_text
from ..verdicts import SAE_UNCHANGED_MEDIAN, sae_code_unchanged, sae_unchanged_verdict

_COMPARISON_COLUMNS = [
    "fine-tuned model",
    "SAE",
    "condition",
    "code cosine, median [CI]",
    "different images",
    "raw activations",
    "top-k Jaccard",
]


def _quality_table(entries: list[Mapping[str, Any]]) -> Table:
    rows = []
    for e in entries:
        m = e["metrics"]["base"]
        rows.append(
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
    return Table(
        ["SAE", "layer", "d_in→d_sae", "L0", "explained var.", "dead fraction", "quality"],
        rows,
        caption="SAE quality on held-out base activations",
    )


def _compare(
    data: Mapping[str, Any], flagged: Mapping[str, bool]
) -> tuple[list[list[str]], int, int, tuple[float, str] | None]:
    """Comparison rows of the SAEs in `flagged`, how many unflagged comparisons count as
    unchanged, how many were judged, and the lowest median code cosine (with where)."""
    rows, unchanged, judged = [], 0, 0
    worst: tuple[float, str] | None = None
    for model, by_sae in data["comparisons"].items():
        for sid, comp in by_sae.items():
            if sid not in flagged:
                continue
            for cond, cell in comp["conditions"].items():
                code = cell["code_cosine"]
                gap = as_comparison(cell.get("code_cosine_minus_different_image"))
                median = finite(code.get("median"))
                rows.append(
                    [
                        model,
                        sid,
                        cond,
                        median_text(code),
                        median_text(cell.get("code_cosine_different_image")),
                        median_text(cell.get("raw_cosine")),
                        median_text(cell.get("topk_jaccard")),
                    ]
                )
                if flagged[sid]:
                    continue
                judged += 1
                low = finite((code.get("median_ci") or [None])[0])
                unchanged += sae_code_unchanged(low, gap.direction if gap else 0)
                if median is not None and (worst is None or median < worst[0]):
                    worst = (median, f"{model}, {sid}, {cond}")
    return rows, unchanged, judged, worst


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


def _matching_table(data: Mapping[str, Any], sae_ids: Mapping[str, bool]) -> Table | None:
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


def _build_sae(study: StudyOutputs, section: Section, sae_type: str) -> None:
    data = study.load("sae")
    entries = [e for e in data["saes"] if e["sae_type"] == sae_type]
    if not entries:
        raise SectionUnavailable(f"no {sae_type} SAE in sae.json")
    flagged = {e["sae_id"]: bool(e.get("flagged")) for e in entries}
    rows, unchanged, judged, worst = _compare(data, flagged)
    label = SAE_TYPE_LABELS.get(sae_type, sae_type)
    n_flag = sum(flagged.values())
    section.verdict = sae_unchanged_verdict(unchanged, judged)
    if judged == 0:
        section.readings.append(
            f"Every {label} SAE is flagged for low explained variance, so its codes cannot "
            "show whether the sparse representation changed: not supported at this scale."
        )
    else:
        section.readings.append(
            f"In {unchanged} of {judged} comparisons (fine-tuned model × SAE × condition) the "
            f"median cosine between the {label} SAE codes of the base and fine-tuned activations "
            f"has a 95% CI at or above {SAE_UNCHANGED_MEDIAN} and lies above the different-image "
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
            _COMPARISON_COLUMNS,
            rows,
            caption="Base vs fine-tuned on the same held-out input (medians with 95% CIs)",
        )
    )
    section.tables.append(_quality_table(entries))
    section.figures += _figures(study, data, sae_type, label)
    matching = _matching_table(data, flagged)
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
