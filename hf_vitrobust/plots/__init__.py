"""Figures (matplotlib, headless). One module per topic; `save_figure` is the shared way out."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from hf_vitrobust.io import atomic_path  # noqa: E402

#: What a figure that can mark significant cells says when drawn without marks (a stage's own
#: figure): the marks are the report's corrected decision, drawn when it redraws the figure.
UNMARKED = "no significance marks: the report marks cells by its corrected rule"


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (atomically: a crash never leaves half an image) and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)
