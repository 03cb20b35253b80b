"""Preview grids and the command line: ``python -m hf_vitrobust.corruptions preview|list``.

``hf-vitrobust-preview IMAGE --out grid.png`` (the console script) is the same command with
``preview`` implied. A grid has one row per corruption and the columns clean and each severity.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, UnidentifiedImageError

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions.apply import corrupt
from hf_vitrobust.corruptions.families import FAMILIES, resolve_corruptions
from hf_vitrobust.corruptions.measure import resize_short_side_center_crop as resize_to_square
from hf_vitrobust.corruptions.registry import CORRUPTIONS, MIN_SIDE
from hf_vitrobust.images import as_rgb_uint8
from hf_vitrobust.plots import save_figure

COMMANDS = ("preview", "list")


def resize_short_side_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """:func:`hf_vitrobust.images.resize_short_side_center_crop`, refusing sizes under 8 px."""
    if size < MIN_SIDE:
        raise ValueError(f"--size must be at least {MIN_SIDE}, got {size}")
    return resize_to_square(img, size)


def preview_grid(
    image: Any,
    names: Sequence[str] | str = "all",
    size: int | None = 224,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A corruptions x (clean + 5 severities) mosaic as one uint8 array, and the row names."""
    names = resolve_corruptions(names)
    img = as_rgb_uint8(image, min_side=MIN_SIDE)
    if size is not None:
        img = resize_short_side_center_crop(img, int(size))
    tiles = []
    for name in names:
        row = [img] + [corrupt(img, name, s, seed=seed) for s in SEVERITIES]
        tiles.append(np.concatenate(row, axis=1))
    return np.concatenate(tiles, axis=0), names


def save_preview(
    image: Any,
    out: str | Path,
    names: Sequence[str] | str = "all",
    size: int | None = 224,
    seed: int = 0,
) -> Path:
    """Write a labelled preview grid (rows: corruptions; columns: clean, severities) to PNG."""
    grid, names = preview_grid(image, names, size=size, seed=seed)
    rows, cols = len(names), 1 + len(SEVERITIES)
    tile_h, tile_w = grid.shape[0] // rows, grid.shape[1] // cols
    fig_w = 1.2 + cols * 1.6
    fig_h = 0.4 + rows * 1.6 * tile_h / tile_w
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([tile_w * (i + 0.5) for i in range(cols)])
    ax.set_xticklabels(["clean"] + [f"severity {s}" for s in SEVERITIES], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([tile_h * (i + 0.5) for i in range(rows)])
    ax.set_yticklabels(list(names), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return save_figure(fig, out)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 (the package's RGB policy), or a ValueError."""
    try:
        with Image.open(path) as im:
            return as_rgb_uint8(im, min_side=MIN_SIDE)
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot decode {path} as an image (PNG/JPEG/...)") from None


def _add_preview_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="input image file (any format Pillow reads)")
    p.add_argument("--out", default="corruption_preview.png", help="output PNG path")
    p.add_argument(
        "--corruptions",
        nargs="+",
        default=["all"],
        help="family names and/or corruption names (default: all). "
        f"Families: {', '.join(FAMILIES)}",
    )
    p.add_argument("--size", type=int, default=224, help="tile side in pixels (short side + crop)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random draws")


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Corruption previews and the registry listing."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_preview_arguments(
        sub.add_parser(
            "preview",
            help="write a preview grid PNG",
            description="Write a corruptions x severities preview grid of IMAGE to a PNG.",
        )
    )
    sub.add_parser("list", help="print the registry")
    return parser


def _run_preview(args: argparse.Namespace) -> int:
    try:
        image = load_image(args.image)
        spec = args.corruptions[0] if len(args.corruptions) == 1 else args.corruptions
        out = save_preview(image, args.out, names=spec, size=args.size, seed=args.seed)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out}")
    return 0


def _run_list() -> int:
    for c in CORRUPTIONS.values():
        print(
            f"{c.name:18s} {c.group:8s} band={c.band:4s} lf_share={c.lf_share:.3f} "
            f"{c.fidelity:10s} {c.albumentations}"
        )
    print("families: " + "; ".join(f"{k}={','.join(v)}" for k, v in FAMILIES.items()))
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``preview IMAGE [--out ...]`` or ``list``; without a command, ``preview`` is implied.

    So ``hf-vitrobust-preview photo.jpg --out grid.png`` (the console script) and
    ``python -m hf_vitrobust.corruptions preview photo.jpg --out grid.png`` are the same.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "preview")
    args = _parser(prog).parse_args(argv)
    return _run_preview(args) if args.command == "preview" else _run_list()


__all__ = ["load_image", "main", "preview_grid", "resize_short_side_center_crop", "save_preview"]
