"""Figures of the corruption benchmark, drawn from `results.json` (with their CIs).

`results` is what `evaluation.evaluate_robustness` returns or `evaluation.read_results` reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.constants import CLEAN
from hf_vitrobust.formatting import fmt
from hf_vitrobust.plots import UNMARKED, plt, save_figure

_K_METRICS = (
    ("top_1_accuracy", "Top-1"),
    ("top_5_accuracy", "Top-5"),
    ("top_10_accuracy", "Top-10"),
)


def _labels(results: dict[str, Any]) -> dict[str, str]:
    """Short display names for the models (their label, else folder name or Hub id), unique."""
    out: dict[str, str] = {}
    for m in results["models"]:
        name = m.get("label") or Path(m["name"].rstrip("/")).name or m["name"]
        if name in out.values():
            name = m["key"]
        base = m["role"] == "base" and "base" not in name.lower()
        out[m["key"]] = f"{name} (base)" if base else name
    return out


def _group_blocks(results: dict[str, Any]) -> tuple[list[str], dict[tuple[str, str], dict]]:
    """Columns (clean, each group) and their metric blocks per (model, column)."""
    columns: list[str] = []
    blocks: dict[tuple[str, str], dict] = {}
    for row in results["cells"]:
        if row["corruption"] == CLEAN:
            blocks[(row["model"], CLEAN)] = row["metrics"]
            if CLEAN not in columns:
                columns.append(CLEAN)
    for row in results["per_group"]:
        blocks[(row["model"], row["group"])] = row["metrics"]
        if row["group"] not in columns:
            columns.append(row["group"])
    return columns, blocks


def _bars(ax: Any, results: dict[str, Any], metric: str, columns: list[str], blocks: dict) -> None:
    labels = _labels(results)
    keys = [m["key"] for m in results["models"]]
    width = 0.8 / len(keys)
    x = np.arange(len(columns))
    for i, k in enumerate(keys):
        vals = np.array([blocks[(k, c)][metric]["value"] for c in columns])
        low = np.array([blocks[(k, c)][metric]["ci_low"] for c in columns])
        high = np.array([blocks[(k, c)][metric]["ci_high"] for c in columns])
        ax.bar(
            x + (i - (len(keys) - 1) / 2) * width,
            vals,
            width,
            yerr=np.stack([vals - low, high - vals]),
            capsize=2,
            label=labels[k],
        )
    ax.set_xticks(x)
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def plot_topk_by_group(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Top-1/5/10 accuracy per model on clean images and per corruption group (paper Fig. 2)."""
    columns, blocks = _group_blocks(results)
    top_k = results["settings"]["top_k"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (metric, title) in zip(axes, _K_METRICS):
        _bars(ax, results, metric, columns, blocks)
        k = top_k.get(metric)
        ax.set_title(
            f"{title} accuracy" + (f" (k capped at {k})" if k and title != f"Top-{k}" else "")
        )
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("accuracy (mean over severities; 95% CI)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Accuracy by corruption group — {results['dataset'].get('name')}", y=1.02)
    return save_figure(fig, path)


def plot_p_true_by_group(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Mean probability of the true class per model and group (paper Fig. 4)."""
    columns, blocks = _group_blocks(results)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    _bars(ax, results, "p_true", columns, blocks)
    ax.set_ylabel("mean softmax probability of the true class (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Certainty by corruption group — {results['dataset'].get('name')}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_accuracy_vs_severity(
    results: dict[str, Any], path: str | os.PathLike, metric: str = "top_1_accuracy"
) -> Path:
    """Accuracy against severity (0 = clean), one panel per corruption, CI bands."""
    labels = _labels(results)
    keys = [m["key"] for m in results["models"]]
    corruptions = results["grid"]["corruptions"]
    clean = {r["model"]: r["metrics"][metric] for r in results["cells"] if r["corruption"] == CLEAN}
    cols = min(5, max(1, len(corruptions)))
    rows = int(np.ceil(len(corruptions) / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False, sharey=True
    )
    for ax, name in zip(axes.flat, corruptions):
        for k in keys:
            pts = sorted(
                (r["severity"], r["metrics"][metric])
                for r in results["cells"]
                if r["model"] == k and r["corruption"] == name
            )
            if k in clean:
                pts = [(0, clean[k])] + pts
            sev = [p[0] for p in pts]
            val = np.array([p[1]["value"] for p in pts])
            (line,) = ax.plot(sev, val, marker="o", ms=3, label=labels[k])
            low = [p[1]["ci_low"] for p in pts]
            high = [p[1]["ci_high"] for p in pts]
            ax.fill_between(sev, low, high, alpha=0.2, color=line.get_color())
        seen = any(r["seen"] for r in results["per_corruption"] if r["corruption"] == name)
        ax.set_title(name + (" (seen by a fine-tuned model)" if seen else ""), fontsize=8)
        ax.set_xticks(range(0, 6))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(corruptions) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric.replace("_", " "))
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Accuracy vs severity (95% CI bands)", y=1.0)
    fig.tight_layout()
    return save_figure(fig, path)


def _heatmap(
    matrix: dict[str, Any], results: dict[str, Any], path: str | os.PathLike,
    empty: str, title: str, colorbar: str, marks: Mapping[tuple[str, str], str] | None = None,
) -> Path:  # fmt: skip
    """Models × columns of paired differences with their CIs; seen cells boxed (`matrix`:
    rows, columns, cells as in results.json's `transfer_matrix`; `empty`: the text without rows;
    `marks`: {(row, column): text after the estimate}, the decision of whoever draws it)."""
    marks = marks or {}
    rows, columns, cells = matrix["rows"], matrix["columns"], matrix["cells"]
    if not rows:
        return _nothing(path, empty)
    labels = _labels(results)
    est = np.array([[np.nan if c["estimate"] is None else c["estimate"] for c in r] for r in cells])
    lim = max(float(np.nanmax(np.abs(est))) if np.isfinite(est).any() else 0.0, 1e-3)
    fig, ax = plt.subplots(figsize=(1.5 * len(columns) + 2.5, 0.9 * len(rows) + 1.8))
    image = ax.imshow(est, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            star = marks.get((rows[i], columns[j]), "")
            ax.text(
                j,
                i,
                f"{fmt(cell['estimate'], 1, 100, sign=True)}{star}\n"
                f"[{fmt(cell['ci_low'], 1, 100, sign=True)}, {fmt(cell['ci_high'], 1, 100, sign=True)}]",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(est[i, j]) > 0.6 * lim else "black",
            )
            if cell["seen"]:
                ax.add_patch(
                    plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black")
                )
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([labels[k] for k in rows])
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _nothing(path: str | os.PathLike, text: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, text, ha="center")
    ax.axis("off")
    return save_figure(fig, path)


def plot_transfer_matrix(
    results: dict[str, Any],
    path: str | os.PathLike,
    marks: Mapping[tuple[str, str], str] | None = None,
    marks_text: str = UNMARKED,
) -> Path:
    """Heatmap of the top-1 change vs base (models × groups), CI in each cell, seen cells boxed;
    `marks` ({(model, column): mark}, explained by `marks_text`) come from the report's corrected
    decision, and the stage draws none."""
    return _heatmap(
        results["transfer_matrix"],
        results,
        path,
        "No fine-tuned model: nothing to compare with the base.",
        "Transfer: top-1 change vs base, % points [CI]\n"
        f"boxed = group contains a training corruption; {marks_text}",
        "top-1 accuracy change vs base (fraction)",
        marks,
    )


def control_matrix(results: dict[str, Any], metric: str = "top_1_accuracy") -> dict[str, Any]:
    """Adversarial models × [clean, groups] of the change beyond the matched clean control,
    from the comparison records (rows, columns, cells as in `transfer_matrix`)."""
    records = [
        r
        for r in results.get("comparisons", [])
        if r["reference_role"] == "clean_control" and r["metric"] == metric
        and (r["scope"] == CLEAN or r["scope"].startswith("group:"))
    ]  # fmt: skip
    rows = list(dict.fromkeys(r["model"] for r in records))
    columns = list(dict.fromkeys(r["scope"].removeprefix("group:") for r in records))
    at = {(r["model"], r["scope"].removeprefix("group:")): r for r in records}
    missing = {"estimate": None, "ci_low": None, "ci_high": None}  # a cell with no record
    cells = [
        [{**at.get((m, c), missing), "seen": bool(at.get((m, c), {}).get("seen"))} for c in columns]
        for m in rows
    ]
    return {"rows": rows, "columns": columns, "cells": cells}


def plot_transfer_vs_control(
    results: dict[str, Any],
    path: str | os.PathLike,
    marks: Mapping[tuple[str, str], str] | None = None,
    marks_text: str = UNMARKED,
) -> Path:
    """Heatmap of each adversarial model's top-1 change beyond its clean control (`marks` as in
    `plot_transfer_matrix`)."""
    return _heatmap(
        control_matrix(results),
        results,
        path,
        "No adversarial model with a matched clean control.",
        "Beyond the clean control: top-1 of the adversarial model minus its control,\n"
        f"% points [CI], same images; boxed = seen group; {marks_text}",
        "top-1 accuracy change vs clean control (fraction)",
        marks,
    )


def plot_all(results: dict[str, Any], output_dir: str | os.PathLike) -> list[Path]:
    """All evaluation figures as PNGs in `output_dir`; returns their paths."""
    out = Path(output_dir)
    return [
        plot_topk_by_group(results, out / "accuracy_topk_by_group.png"),
        plot_p_true_by_group(results, out / "p_true_by_group.png"),
        plot_accuracy_vs_severity(results, out / "accuracy_vs_severity.png"),
        plot_transfer_matrix(results, out / "transfer_matrix.png"),
        *(
            [plot_transfer_vs_control(results, out / "transfer_vs_control.png")]
            if control_matrix(results)["rows"]
            else []
        ),
    ]
