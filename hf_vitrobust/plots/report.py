"""The report's own figure: base vs fine-tuned on seen and unseen corruptions (the paper's
Fig. 2 / Fig. 4 layout), drawn from results.json rows the report has already picked."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.formatting import finite
from hf_vitrobust.plots import plt, save_figure


def _bars(entries: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values and error-bar lengths below/above from `{"value", "ci_low", "ci_high"}` entries."""
    v = np.array([finite(e["value"]) or 0.0 for e in entries])
    lo = np.array([finite(e.get("ci_low")) or finite(e["value"]) or 0.0 for e in entries])
    hi = np.array([finite(e.get("ci_high")) or finite(e["value"]) or 0.0 for e in entries])
    return v, np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)


def plot_seen_unseen(
    panels: Mapping[str, Mapping[str, Mapping[str, Any]]],
    metrics: Sequence[str],
    path: str | os.PathLike,
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One panel per fine-tuned model: base vs fine-tuned per metric, on its seen and unseen
    corruptions, 95% CIs as error bars.

    `panels` maps a model's display name to its results.json `per_family` rows keyed by family
    (`"seen"`, `"unseen"`); each row has `metrics` and `base_metrics` with value and CI per metric.
    """
    labels = labels or {}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 0.5, 3.4), squeeze=False, sharey=True
    )
    width = 0.2
    for ax, (name, rows) in zip(axes[0], panels.items()):
        x = np.arange(len(metrics))
        offset = -1.5
        for fam in ("seen", "unseen"):
            row = rows.get(fam)
            if row is None:
                offset += 2
                continue
            for who, key, hatch in (("base", "base_metrics", ""), ("fine-tuned", "metrics", "//")):
                v, below, above = _bars([row[key][m] for m in metrics])
                ax.bar(
                    x + offset * width,
                    v,
                    width,
                    yerr=[below, above],
                    capsize=2,
                    color="tab:blue" if fam == "seen" else "tab:orange",
                    alpha=0.55 if who == "base" else 0.95,
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.4,
                    label=f"{fam}, {who}",
                )
                offset += 1
        ax.set_xticks(x, [labels.get(m, m) for m in metrics], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean over images (95% CI)", fontsize=8)
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


__all__ = ["plot_seen_unseen"]
