"""SAE figures: code-cosine histograms (the paper's Figs. 9 and 10) and dictionary matching."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.plots import plt, save_figure


def plot_cosine_histograms(
    by_layer: Mapping[int, Mapping[str, Mapping[str, Mapping[str, Any]]]],
    title: str,
    path: str | os.PathLike,
    bins: int = 40,
) -> Path:
    """Histograms of per-image code cosines to the base: one row per layer and token type (CLS,
    patches), one column per condition, one outline per model.

    ``by_layer[layer][condition][token]`` holds ``models`` (model key -> per-image code cosine
    with the base; NaN for an image whose codes were all zero under both, left out and counted
    in the legend), ``different_image`` (the baseline under the base model, grey) and
    ``flagged``. Flagged SAEs (below the quality bar) are labelled in red.
    """
    rows = [(layer, token) for layer in sorted(by_layer) for token in _tokens(by_layer[layer])]
    conditions = list(next(iter(by_layer.values())))
    n_rows, n_cols = len(rows), len(conditions)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.4 * n_cols + 1.0, 1.9 * n_rows + 1.2), squeeze=False
    )
    edges = np.linspace(-0.05, 1.0, bins + 1)
    colors = plt.get_cmap("tab10").colors
    for r, (layer, token) in enumerate(rows):
        for c, cond in enumerate(conditions):
            ax = axes[r][c]
            cell = by_layer[layer][cond][token]
            ax.hist(
                _finite(cell["different_image"], edges), bins=edges, color="0.8",
                label="different images (base)",
            )  # fmt: skip
            for i, (model, values) in enumerate(cell["models"].items()):
                excluded = int(np.isnan(np.asarray(values, dtype=float)).sum())
                label = model + (f" ({excluded} all-zero left out)" if excluded else "")
                ax.hist(
                    _finite(values, edges), bins=edges, histtype="step", lw=1.1,
                    color=colors[i % len(colors)], label=label,
                )  # fmt: skip
            flagged = bool(cell.get("flagged"))
            ax.set_title(cond, fontsize=7, color="tab:red" if flagged else "black")
            ax.tick_params(labelsize=6)
            if c == 0:
                flag = " FLAGGED" if flagged else ""
                ax.set_ylabel(f"layer {layer}, {token}{flag}\nimages", fontsize=7)
            if r == n_rows - 1:
                ax.set_xlabel("cosine of SAE codes", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="lower center", ncol=min(4, len(labels)))
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.16, hspace=0.5, wspace=0.3)
    return save_figure(fig, path)


def _tokens(by_condition: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return list(next(iter(by_condition.values())))


def _finite(values: Any, edges: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.clip(v[np.isfinite(v)], edges[0], edges[-1])


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
