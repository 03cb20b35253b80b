"""Figures of the mechanistic analysis, drawn from `analysis.json` (and the attention panel).

Every function takes the dict that `recipes/analyze.py` writes, so figures can be redrawn
from the JSON alone; `plot_attention_panel` also needs the arrays saved in
`attention_panel.npz`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.plots import UNMARKED, plt, save_figure

__all__ = [
    "plot_lens_accuracy",
    "plot_first_correct_layer",
    "plot_entropy_difference",
    "plot_cka",
    "plot_patching",
    "plot_attention_panel",
    "plot_all",
]


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _series(rows: list[dict], key: str = "value") -> np.ndarray:
    return np.array([_nan(r.get(key)) for r in rows])


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def plot_lens_accuracy(result: dict, path: str | os.PathLike) -> Path:
    """Logit-lens top-1 accuracy per layer, one panel per condition, one line per model (95% CI)."""
    lens = result["logit_lens"]
    conditions = list(lens)
    rows, cols = _grid(len(conditions))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, condition in zip(axes.flat, conditions):
        for name, summary in lens[condition]["models"].items():
            acc = summary["accuracy"]
            layers = [r["layer"] for r in acc]
            ax.plot(layers, _series(acc), marker="o", ms=3, label=name)
            ax.fill_between(layers, _series(acc, "ci_low"), _series(acc, "ci_high"), alpha=0.2)
        ax.set_title(condition)
        ax.set_xlabel("hidden state (0 = embeddings)")
        ax.set_ylabel("lens top-1 accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(conditions) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Logit lens: classifier(final layernorm(CLS of h_l))")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_first_correct_layer(result: dict, path: str | os.PathLike) -> Path:
    """Mean first-correct layer per condition and model (paper Fig. 5), both definitions, with
    95% CIs, side by side over the same images: those every model classifies correctly at the
    last layer (n per condition). Layers count from 1 (the first block's output)."""
    lens = result["logit_lens"]
    conditions = list(lens)
    models = list(lens[conditions[0]]["models"])
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(conditions) * 2), 3.4))
    width = 0.8 / len(models)
    x = np.arange(len(conditions))
    titles = {
        "first": "(a) first correct layer",
        "stable": "(b) correct from this layer on",
    }
    for ax, key in zip(axes, ("first", "stable")):
        for i, name in enumerate(models):
            entries = [lens[c]["common"]["models"][name][key] for c in conditions]
            means = np.array([_nan(e["value"]) for e in entries])
            low = np.array([_nan(e["ci_low"]) for e in entries])
            high = np.array([_nan(e["ci_high"]) for e in entries])
            err = np.nan_to_num(np.vstack([means - low, high - means]), nan=0.0)
            ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=err, capsize=2, label=name)
        labels = [f"{c}\nn={lens[c]['common']['n_images']}" for c in conditions]
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("layer (1 = first block)")
        ax.set_title(titles[key])
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("First correct layer, same images for every model (all correct at the last layer)")
    fig.tight_layout()
    return save_figure(fig, path)


def _entropy_panels(result: dict, metric: str) -> dict[tuple[str, str, str], np.ndarray]:
    """{(model, reference, condition): [2, L, H] (difference, raw p-value)} from the
    per-layer x head comparison records of `metric`."""
    panels: dict[tuple[str, str, str], np.ndarray] = {}
    num_layers = {name: m["num_layers"] for name, m in result["models"].items()}
    num_heads = {name: m["num_heads"] for name, m in result["models"].items()}
    for r in result.get("comparisons", []):
        if r["metric"] != metric or r["head"] is None:
            continue
        key = (r["model"], r["reference"], r["scope"])
        if key not in panels:
            shape = (2, num_layers[r["model"]], num_heads[r["model"]])
            panels[key] = np.full(shape, np.nan)
        panels[key][:, r["layer"] - 1, r["head"]] = (_nan(r["estimate"]), _nan(r["p_value"]))
    return panels


def plot_entropy_difference(
    result: dict,
    path: str | os.PathLike,
    kind: str = "all_queries",
    marks: Mapping[tuple[str, str, str], Any] | None = None,
    marks_text: str = UNMARKED,
) -> Path:
    """Model − reference attention entropy per layer × head (paper Fig. 8), from the paired
    comparison records: one row per (model, reference) pair (the base and each matched control),
    one column per condition. `marks` ({(model, reference, condition): (layer, head) pairs,
    layers from 1}) are drawn as '•' and explained by `marks_text`: the report passes the cells
    its corrected rule calls changed; the stage draws none."""
    metric = "attention_entropy" if kind == "all_queries" else "attention_entropy_cls"
    marks = marks or {}
    panels = _entropy_panels(result, metric)
    conditions = [c for c in result["conditions"] if any(k[2] == c for k in panels)]
    pairs = list(dict.fromkeys(k[:2] for k in panels))
    vmax = max(float(np.nanmax(np.abs(v[0]))) for v in panels.values()) or 1.0
    fig, axes = plt.subplots(
        len(pairs),
        len(conditions),
        figsize=(2.2 * len(conditions) + 1, 2.4 * len(pairs) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for r, (model, reference) in enumerate(pairs):
        for c_i, condition in enumerate(conditions):
            ax = axes[r, c_i]
            diff = panels[(model, reference, condition)][0]
            image = ax.imshow(diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
            for layer, head in marks.get((model, reference, condition), ()):
                ax.text(head, layer - 1, "•", ha="center", va="center", fontsize=8)
            ax.set_title(f"{model} − {reference}\n{condition}", fontsize=8)
            ax.set_xlabel("head", fontsize=7)
            ax.set_ylabel("layer", fontsize=7)
            ax.set_xticks(range(diff.shape[1]))
            ax.set_yticks(range(diff.shape[0]), [str(i + 1) for i in range(diff.shape[0])])
            ax.tick_params(labelsize=6)
    fig.colorbar(image, ax=axes, shrink=0.8, label="Δ entropy (nats)")
    label = "all queries" if kind == "all_queries" else "CLS query"
    fig.suptitle(f"Attention entropy difference ({label}); {marks_text}")
    return save_figure(fig, path)


def plot_cka(result: dict, path: str | os.PathLike) -> Path:
    """Linear CKA (base vs fine-tuned) per layer: CLS and mean-pooled patches, one line per
    condition, one row per fine-tuned model."""
    cka = result["cka"]
    conditions = list(cka)
    models = list(cka[conditions[0]])
    fig, axes = plt.subplots(len(models), 2, figsize=(8, 3 * len(models)), squeeze=False)
    for r, m in enumerate(models):
        for ax, kind in zip(axes[r], ("cls", "patch_mean")):
            for c in conditions:
                values = np.array([_nan(v) for v in cka[c][m][kind]])
                ax.plot(range(len(values)), values, marker="o", ms=3, label=c)
            ax.set_title(f"{m} vs base: {'CLS token' if kind == 'cls' else 'mean of patches'}")
            ax.set_xlabel("hidden state (0 = embeddings)")
            ax.set_ylabel("linear CKA")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_patching(result: dict, path: str | os.PathLike) -> Path:
    """Fraction of the fine-tuned model's accuracy gain recovered by patching each layer into
    the base model (95% CI), one line per condition, one panel per fine-tuned model."""
    patching = result["patching"]
    conditions = list(patching)
    models = list(patching[conditions[0]])
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.3), squeeze=False)
    for ax, m in zip(axes[0], models):
        for c in conditions:
            s = patching[c][m]
            rows = s["per_layer"]
            layers = [r["layer"] for r in rows]
            gain = s["gain"]["estimate"]
            line = ax.plot(
                layers,
                _series(rows, "recovered"),
                marker="o",
                ms=3,
                label=f"{c} (gain {gain:+.3f})",
            )
            ax.fill_between(
                layers,
                _series(rows, "ci_low"),
                _series(rows, "ci_high"),
                alpha=0.15,
                color=line[0].get_color(),
            )
        ax.axhline(0, color="k", lw=0.5)
        ax.axhline(1, color="k", lw=0.5, ls="--")
        ax.set_title(f"patching {m} into base")
        ax.set_xlabel("patched hidden state (0 = embeddings)")
        ax.set_ylabel("fraction of gain recovered")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def _overlay(ax: Any, image: np.ndarray, heat: np.ndarray) -> None:
    ax.imshow(image, interpolation="nearest")
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    h, w = image.shape[:2]
    ax.imshow(
        heat, cmap="jet", alpha=0.5, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attention_panel(panel: dict[str, Any], path: str | os.PathLike) -> Path:
    """Rows: each image clean then corrupted; columns: the input, then per model its
    attention rollout and Grad-CAM (each map scaled to its own maximum)."""
    images = np.asarray(panel["images"])  # [k, 2, H, W, 3] in [0, 1]
    rollout = np.asarray(panel["rollout"])  # [k, 2, M, gh, gw]
    cam = np.asarray(panel["grad_cam"])
    models = list(panel["models"])
    names = list(panel["corruptions"])
    k = images.shape[0]
    cols = 1 + 2 * len(models)
    fig, axes = plt.subplots(2 * k, cols, figsize=(1.6 * cols, 1.6 * 2 * k), squeeze=False)
    for i in range(k):
        for v, view in enumerate(("clean", names[i])):
            row = axes[2 * i + v]
            row[0].imshow(np.clip(images[i, v], 0, 1), interpolation="nearest")
            row[0].set_xticks([])
            row[0].set_yticks([])
            row[0].set_ylabel(view, fontsize=6)
            for m, model in enumerate(models):
                _overlay(row[1 + 2 * m], np.clip(images[i, v], 0, 1), rollout[i, v, m])
                _overlay(row[2 + 2 * m], np.clip(images[i, v], 0, 1), cam[i, v, m])
                if i == 0 and v == 0:
                    row[1 + 2 * m].set_title(f"{model}\nrollout", fontsize=7)
                    row[2 + 2 * m].set_title(f"{model}\nGrad-CAM", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_all(
    result: dict, output_dir: str | os.PathLike, panel: dict[str, Any] | None = None
) -> list[Path]:
    """Every figure whose data is in `result` (and the panel when given) into `output_dir`.

    A section that was switched off (absent or empty) draws nothing."""
    out = Path(output_dir)
    written = []
    if result.get("logit_lens"):
        written.append(plot_lens_accuracy(result, out / "lens_accuracy.png"))
        written.append(plot_first_correct_layer(result, out / "first_correct_layer.png"))
    if any(r["metric"] == "attention_entropy" for r in result.get("comparisons", [])):
        written.append(plot_entropy_difference(result, out / "entropy_difference.png"))
        written.append(
            plot_entropy_difference(result, out / "entropy_difference_cls.png", kind="cls_query")
        )
    if result.get("cka"):
        written.append(plot_cka(result, out / "cka.png"))
    if result.get("patching"):
        written.append(plot_patching(result, out / "patching.png"))
    if panel is not None:
        written.append(plot_attention_panel(panel, out / "attention_maps.png"))
    return written
