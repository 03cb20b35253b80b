"""Section on representation similarity: linear CKA per layer, base vs fine-tuned."""

from __future__ import annotations

from hf_vitrobust.formatting import finite, fmt

from ..inputs import SectionUnavailable, StudyOutputs
from ..model import Section, Table


def build_cka(study: StudyOutputs, section: Section) -> None:
    a = study.load("analysis")
    cka = a["cka"]
    rows = []
    for cond, by_model in cka.items():
        for model, kinds in by_model.items():
            for kind, values in kinds.items():
                vals = [finite(v) for v in values]
                present = [(i, v) for i, v in enumerate(vals) if v is not None]
                if not present:
                    continue
                low_layer, low = min(present, key=lambda t: t[1])
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
    lows = [finite(r[4].split()[0]) for r in rows]
    overall = min(range(len(rows)), key=lambda i: lows[i])
    section.readings.append(
        f"Across all conditions the lowest CKA is {rows[overall][4]} for {rows[overall][0]} on "
        f"{rows[overall][1]} ({rows[overall][2]}). CKA is computed exactly over all images "
        "(no bootstrap CI)."
    )
    section.tables.append(
        Table(["model", "condition", "tokens", "CKA per layer (0 = embeddings)", "lowest"], rows)
    )
    section.figures += study.figures_or_missing("analysis", "Linear CKA per layer", "cka")
    section.definition = a.get("definitions", {}).get("cka")
