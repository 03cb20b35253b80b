"""The corruption table, generated from the registry (README: `python recipes/report.py
--corruption_table true`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hf_vitrobust.corruptions import CORRUPTIONS, FAMILIES, REGISTRY_VERSION

from .model import Table
from .render import markdown_table


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
    return markdown_table(corruption_table())


__all__ = ["corruption_table", "corruption_table_markdown"]
