"""SAE figures: code-cosine histograms (the paper's Figs. 9 and 10) and dictionary matching."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.plots import plt, save_figure


def plot_cosine_histograms(
    by_layer: Mapping[int, Mapping[str, Mapping[str, Any]]],
    title: str,
    path: str | os.PathLike,
    bins: int = 40,
) -> Path:
    """Histograms of per-image code cosines: one row per layer, one column per condition.

    ``by_layer[layer][condition]`` holds ``same_input`` (base vs fine-tuned code cosine per
    image), ``different_image`` (the baseline under the base model), ``summary`` (with
    ``median`` and ``median_ci``) and ``flagged``. The baseline is drawn as a grey outline;
    the median of the comparison as a line, with its 95% bootstrap CI in the panel title.
    Flagged SAEs (explained variance below threshold) are labelled in red.
    """
    layers = sorted(by_layer)
    conditions = list(next(iter(by_layer.values())))
    n_rows, n_cols = len(layers), len(conditions)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols + 0.6, 2.2 * n_rows + 0.8), squeeze=False
    )
    edges = np.linspace(-0.05, 1.0, bins + 1)
    for r, layer in enumerate(layers):
        for c, cond in enumerate(conditions):
            ax = axes[r][c]
            cell = by_layer[layer][cond]
            same = np.clip(np.asarray(cell["same_input"], dtype=float), edges[0], edges[-1])
            diff = np.clip(np.asarray(cell["different_image"], dtype=float), edges[0], edges[-1])
            ax.hist(same, bins=edges, color="tab:blue", alpha=0.75, label="base vs fine-tuned")
            ax.hist(diff, bins=edges, histtype="step", color="0.4", label="different images")
            summary = cell.get("summary", {})
            median = summary.get("median")
            label = cond
            if median is not None:
                ax.axvline(median, color="tab:red", lw=1)
                lo, hi = summary.get("median_ci", (median, median))
                label = f"{cond}\nmedian {median:.3f} [{lo:.3f}, {hi:.3f}]"
            ax.set_title(label, fontsize=7, color="tab:red" if cell.get("flagged") else "black")
            ax.tick_params(labelsize=6)
            if c == 0:
                flag = " FLAGGED" if cell.get("flagged") else ""
                ax.set_ylabel(f"layer {layer}{flag}\nimages", fontsize=7)
            if r == n_rows - 1:
                ax.set_xlabel("cosine of SAE codes", fontsize=7)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_dictionary_matching(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    bins: int = 40,
) -> Path:
    """Distributions of Hungarian-matched decoder cosines, one panel per SAE id.

    ``curves[sae_id][label]`` is an array of matched cosines (e.g. ``fine-tuned: x``,
    ``base, other seed``, ``random directions``).
    """
    ids = list(curves)
    fig, axes = plt.subplots(1, len(ids), figsize=(3.2 * len(ids), 2.8), squeeze=False)
    edges = np.linspace(-0.2, 1.0, bins + 1)
    for ax, sid in zip(axes[0], ids):
        for label, values in curves[sid].items():
            v = np.clip(np.asarray(values, dtype=float), edges[0], edges[-1])
            ax.hist(
                v, bins=edges, histtype="step", lw=1.2, label=f"{label} (med {np.median(v):.2f})"
            )
        ax.set_title(sid, fontsize=8)
        ax.set_xlabel("matched decoder cosine", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, loc="upper left")
    axes[0][0].set_ylabel("features", fontsize=7)
    fig.suptitle("SAE dictionaries matched to the base SAE (Hungarian assignment)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
