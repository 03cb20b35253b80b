"""The statistics of one condition, on the main process, from the gathered per-image records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_vitrobust.analysis.attention import summarize_entropy
from hf_vitrobust.analysis.comparisons import entropy_records, first_correct_records
from hf_vitrobust.analysis.lens import common_first_correct, compare_lens, summarize_lens
from hf_vitrobust.analysis.patching import summarize_patching
from hf_vitrobust.roles import Pair

__all__ = ["summarize_condition"]


def summarize_condition(
    gathered: Mapping[str, Any],
    condition: str,
    pairs: list[Pair],
    boot: Mapping[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(section -> this condition's entry, the condition's paired-comparison records).

    `gathered` is `ConditionRecords.gather`'s result; sections with no records are left out.
    """
    lens, entropy = gathered["lens"], gathered["entropy"]
    finetuned = [name for name in lens if name != "base"]
    sections: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    if lens:
        correct = {name: rec["correct"] for name, rec in lens.items()}
        sections["logit_lens"] = {
            "models": {name: summarize_lens(rec, **boot) for name, rec in lens.items()},
            "common": common_first_correct(correct, **boot),
            "comparisons": {
                name: compare_lens(lens["base"], lens[name], **boot) for name in finetuned
            },
        }
        records += first_correct_records(correct, pairs, condition, boot)
    if entropy:
        sections["attention_entropy"] = {
            "models": {name: summarize_entropy(rec) for name, rec in entropy.items()}
        }
        records += entropy_records(entropy, pairs, condition, boot)
    if gathered["cka"]:
        sections["cka"] = {
            name: {kind: acc.compute().tolist() for kind, acc in by_kind.items()}
            for name, by_kind in gathered["cka"].items()
        }
    if gathered["patching"]:
        sections["patching"] = {
            name: summarize_patching(rec, **boot) for name, rec in gathered["patching"].items()
        }
    return sections, records
