"""Fidelity to ImageNet-C: the photo set, the reference implementation, and the measured gaps.

A corruption at severity ``s`` must be ImageNet-C's corruption at severity ``s``. This module
measures that, distribution-level (not seed-matched pixels): for every (corruption, severity) the
mean PSNR and mean SSIM of the corrupted photo against the clean one, over :func:`photo_set`
(the RGB natural photographs that ship with scikit-image, centre crops plus seeded random crops,
at any size), through the registry and through the reference implementation (the
``imagecorruptions`` package, installed as ``imagecorruptions-imaug``).

The reference statistics are stored in :data:`MEASUREMENTS_PATH` (written by ``python -m
hf_vitrobust.corruptions measure``) with the registry's, so tests and the README table read them
without rerunning the slow reference; ``tests/test_corruption_fidelity.py`` measures the
registry live against them, and regenerates a sample of the reference numbers to check the file.

scikit-image and ``imagecorruptions`` are development dependencies: they are imported only by
the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hf_vitrobust.constants import SEVERITIES
from hf_vitrobust.corruptions.apply import corrupt
from hf_vitrobust.corruptions.families import resolve_corruptions
from hf_vitrobust.corruptions.functional import REFERENCE_SIZE
from hf_vitrobust.corruptions.measure import (
    MEASUREMENTS_PATH,
    lf_share,
    psnr,
    read_measurements,
    resize_short_side_center_crop,
    ssim,
)
from hf_vitrobust.corruptions.registry import CORRUPTIONS, REGISTRY_VERSION
from hf_vitrobust.io import write_json_atomic

# Development dependencies: the photos (scikit-image) and the reference implementation.
try:
    from skimage import data as skimage_data
except ImportError:  # pragma: no cover - scikit-image is a dev dependency
    skimage_data = None
try:
    from imagecorruptions import corrupt as reference_implementation
except ImportError:  # pragma: no cover - imagecorruptions-imaug is a dev dependency
    reference_implementation = None

PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
"""The RGB natural photographs shipped with scikit-image (``skimage.data.<name>()``)."""

N_PHOTOS = 30
"""Photos per fidelity measurement: the 7 centre crops and 23 seeded random crops."""

FIDELITY_SIZES: tuple[int, ...] = (224, 299)
"""ImageNet-C's size, and one where its scale factors (pixelate's, the frost crop) are not whole."""

MAX_PSNR_GAP_DB = 0.5
"""The bar: |mean PSNR(registry) - mean PSNR(reference)| per (corruption, severity, size), dB."""

MAX_SSIM_GAP = 0.03
"""The bar: |mean SSIM(registry) - mean SSIM(reference)| per (corruption, severity, size)."""

DRAWS: dict[str, int] = {
    "frost": 24,
    "spatter": 16,
    "fog": 16,
    "motion_blur": 8,
    "snow": 3,
    "elastic_transform": 2,
}
"""Seeded draws per photo where one draw's PSNR varies a lot (frost's photograph, fog's plasma
mean, the motion direction on oriented textures, the number of spatter drops and snow flakes),
so that a gap's standard error is at most about 0.2 dB (spatter at severity 1, whose draws vary
by 2.9 dB), mostly under 0.1 dB; 1 elsewhere."""

PSNR_CAP_DB = 100.0
"""PSNR of an unchanged image (infinite) counts as this in means."""


# Names whose reference function takes the seed as an argument (numba's or scikit-image's own
# generator) instead of drawing from numpy's global state.
_REFERENCE_SEED_ARGUMENT = ("glass_blur", "impulse_noise")


def photo_crops(n: int = N_PHOTOS, seed: int = 0) -> list[tuple[str, float, float, float]]:
    """``n`` crops ``(photo name, top, left, side)`` in units of the photo's short side.

    The first ones are the centre crops of :data:`PHOTO_NAMES`; the rest are square crops of a
    side drawn uniformly in [0.55, 0.95] of the short side at a uniform position, cycling through
    the photos, from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    crops: list[tuple[str, float, float, float]] = []
    for i in range(n):
        name = PHOTO_NAMES[i % len(PHOTO_NAMES)]
        if i < len(PHOTO_NAMES):
            crops.append((name, -1.0, -1.0, 1.0))  # centre crop of the whole short side
            continue
        side = float(rng.uniform(0.55, 0.95))
        crops.append((name, float(rng.uniform()), float(rng.uniform()), side))
    return crops


def photo_set(size: int, n: int = N_PHOTOS, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct (size, size, 3) uint8 natural photos: :func:`photo_crops` of scikit-image's
    RGB photographs, each resized to ``size`` (the same crops at every size)."""
    if skimage_data is None:
        raise RuntimeError("the fidelity photos need scikit-image: pip install scikit-image")
    originals = {name: getattr(skimage_data, name)() for name in PHOTO_NAMES}
    out = []
    for name, top, left, side in photo_crops(n, seed):
        img = originals[name]
        if side < 1.0:
            h, w = img.shape[:2]
            s = round(side * min(h, w))
            y, x = round(top * (h - s)), round(left * (w - s))
            img = img[y : y + s, x : x + s]
        out.append(resize_short_side_center_crop(img, size))
    return out


def reference_available() -> bool:
    """True when the reference implementation (``imagecorruptions``) is installed."""
    return reference_implementation is not None


def reference_corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """``imagecorruptions.corrupt`` of a uint8 RGB image with numpy's global generator seeded.

    The caller's global numpy state is restored afterwards.
    """
    if reference_implementation is None:
        raise RuntimeError(
            "the reference needs imagecorruptions: pip install imagecorruptions-imaug"
        )
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    kwargs = {"seed": seed} if name in _REFERENCE_SEED_ARGUMENT else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reference_implementation(
                image, severity=severity, corruption_name=name, **kwargs
            )
    finally:
        np.random.set_state(state)


def draw_seeds(name: str, n_photos: int, draws: int | None = None) -> list[tuple[int, int]]:
    """(photo index, seed) pairs of one measurement: ``draws`` (default :data:`DRAWS`) per photo."""
    draws = DRAWS.get(name, 1) if draws is None else draws
    return [(i, 1000 * k + i) for i in range(n_photos) for k in range(draws)]


CorruptFn = Callable[[np.ndarray, str, int, int], np.ndarray]


def registry_corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The registry with scaling off (``reference_size=None``): the reference's semantics at
    every size, which is what the fidelity comparison at 299 px measures."""
    return corrupt(image, name, severity, seed=seed, reference_size=None)


def cell_stats(
    corrupt_fn: CorruptFn,
    photos: Sequence[np.ndarray],
    name: str,
    severity: int,
    draws: int | None = None,
) -> dict[str, float]:
    """Mean and standard deviation over photos of PSNR (dB) and SSIM for one cell.

    A photo's value is the mean over its draws; ``corrupt_fn(image, name, severity, seed)``.
    """
    n = len(photos)
    per_photo_psnr = np.zeros(n)
    per_photo_ssim = np.zeros(n)
    counts = np.zeros(n)
    for i, seed in draw_seeds(name, n, draws):
        out = corrupt_fn(photos[i], name, severity, seed)
        per_photo_psnr[i] += min(psnr(photos[i], out), PSNR_CAP_DB)
        per_photo_ssim[i] += ssim(photos[i], out)
        counts[i] += 1
    per_photo_psnr /= counts
    per_photo_ssim /= counts
    return {
        "psnr": float(per_photo_psnr.mean()),
        "psnr_sd": float(per_photo_psnr.std(ddof=1)) if n > 1 else 0.0,
        "ssim": float(per_photo_ssim.mean()),
        "ssim_sd": float(per_photo_ssim.std(ddof=1)) if n > 1 else 0.0,
        "n": n,
        "draws": int(counts[0]),
    }


def measure(
    corrupt_fn: CorruptFn,
    names: Iterable[str],
    photos: Sequence[np.ndarray],
    severities: Sequence[int] = SEVERITIES,
    draws: int | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{name: {str(severity): cell_stats}}`` for every name and severity."""
    return {
        name: {str(s): cell_stats(corrupt_fn, photos, name, s, draws) for s in severities}
        for name in names
    }


def lf_share_stats(
    corrupt_fn: CorruptFn, photos: Sequence[np.ndarray], name: str, severity: int = 3
) -> dict[str, float]:
    """Mean and standard deviation over photos of the LF share at ``severity`` (seed = index)."""
    values = np.array(
        [lf_share(img, corrupt_fn(img, name, severity, i)) for i, img in enumerate(photos)]
    )
    values = values[np.isfinite(values)]
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "n": len(values)}


def gaps(
    registry: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]
) -> tuple[list[float], list[float]]:
    """Per-severity (PSNR gap dB, SSIM gap), registry minus reference, of one corruption."""
    keys = sorted(registry, key=int)
    return (
        [registry[k]["psnr"] - reference[k]["psnr"] for k in keys],
        [registry[k]["ssim"] - reference[k]["ssim"] for k in keys],
    )


def reference_version() -> str:
    """The installed reference distribution and version."""
    try:
        return f"imagecorruptions-imaug {metadata.version('imagecorruptions-imaug')}"
    except metadata.PackageNotFoundError:
        return "imagecorruptions (version unknown)"


def measure_fidelity(
    names: Sequence[str],
    sizes: Sequence[int] = FIDELITY_SIZES,
    reference: bool = True,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``fidelity`` section: per size, name and severity the registry's and (when
    ``reference``) the reference's :func:`cell_stats`; stored reference cells are kept from
    ``previous`` otherwise."""
    out: dict[str, Any] = {}
    for size in sizes:
        photos = photo_set(size)
        stored = (previous or {}).get(str(size), {})
        cells: dict[str, Any] = {}
        for name in names:
            reg = measure(registry_corrupt, [name], photos)[name]
            if CORRUPTIONS[name].fidelity != "port":
                ref = None
            elif reference:
                ref = measure(reference_corrupt, [name], photos)[name]
            else:
                ref = {k: v["reference"] for k, v in stored.get(name, {}).items()} or None
            cells[name] = {
                str(s): {"registry": reg[str(s)], "reference": ref[str(s)] if ref else None}
                for s in SEVERITIES
            }
            print(f"{size} px {name}", file=sys.stderr, flush=True)
        out[str(size)] = cells
    return out


def write_measurements(section: str, value: Any, path: str | Path = MEASUREMENTS_PATH) -> Path:
    """Replace one section of the measurements file (atomically), keeping the others."""
    data = read_measurements(path)
    data[section] = value
    data["registry_version"] = REGISTRY_VERSION
    write_json_atomic(data, path)
    return Path(path)


def record_speed(speed: dict[str, Any], path: str | Path = MEASUREMENTS_PATH) -> Path:
    """Store ``bench/corruptions.py``'s figures (the README table's speed column)."""
    return write_measurements("speed", speed, path)


def strength_rows(
    families: Sequence[str], size: int, reference_size: int | None, n_photos: int = 12
) -> list[list[str]]:
    """Per family and severity: PSNR of the mean squared error (dB) and mean SSIM, pooled over
    the family's corruptions and ``n_photos`` fidelity photos at ``size`` px (one draw each).

    Pooling the error (not averaging PSNRs) keeps a corruption that leaves a small image
    unchanged (infinite PSNR) from dominating the mean.
    """
    photos = photo_set(size, n=n_photos)
    rows = []
    for family in families:
        names = resolve_corruptions(family)
        cells = []
        for s in SEVERITIES:
            mse, sim = [], []
            for name in names:
                for i, img in enumerate(photos):
                    out = corrupt(img, name, s, seed=i, reference_size=reference_size)
                    diff = out.astype(np.float64) - img.astype(np.float64)
                    mse.append(float(np.mean(diff**2)))
                    sim.append(ssim(img, out))
            pooled = 10 * np.log10(255.0**2 / max(float(np.mean(mse)), 1e-12))
            cells.append(f"{pooled:.1f} / {np.mean(sim):.2f}")
        scaling = "off" if reference_size is None else str(reference_size)
        rows.append([family, str(size), scaling, *cells])
    return rows


def gap_rows(measured: dict[str, Any]) -> list[str]:
    """Markdown rows: per corruption and fidelity size, reference mean PSNR per severity and the
    registry's gap in PSNR and SSIM, from the stored measurements."""
    sizes = measured.get("fidelity", {}).get("sizes", {})
    lines = [
        "| corruption | size | reference PSNR s1..s5 (dB) | ΔPSNR s1..s5 (dB) | ΔSSIM s1..s5 |",
        "|---|---|---|---|---|",
    ]
    for name in CORRUPTIONS:
        for size in sorted(sizes, key=int):
            cells = sizes[size].get(name)
            if not cells or not cells["1"].get("reference"):
                continue
            ref = {k: v["reference"] for k, v in cells.items()}
            reg = {k: v["registry"] for k, v in cells.items()}
            d_psnr, d_ssim = gaps(reg, ref)
            lines.append(
                f"| {name} | {size} | "
                + " ".join(f"{ref[str(s)]['psnr']:.1f}" for s in SEVERITIES)
                + " | "
                + " ".join(f"{d:+.2f}" for d in d_psnr)
                + " | "
                + " ".join(f"{d:+.3f}" for d in d_ssim)
                + " |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_vitrobust.corruptions.fidelity``: measure and store, or print strengths."""
    p = argparse.ArgumentParser(description="Fidelity of the registry to imagecorruptions.")
    p.add_argument("--write", action="store_true", help="measure and store the fidelity section")
    p.add_argument(
        "--registry-only", action="store_true", help="keep the stored reference statistics"
    )
    p.add_argument("--corruptions", nargs="+", default=["all"])
    p.add_argument("--sizes", type=int, nargs="+", default=list(FIDELITY_SIZES))
    p.add_argument("--strength", type=int, nargs="*", help="print family strengths at sizes")
    p.add_argument("--gaps", action="store_true", help="print the stored gaps per severity")
    args = p.parse_args(argv)
    if args.gaps:
        print("\n".join(gap_rows(read_measurements())))
    if args.strength:
        families = ("low_frequency", "high_frequency", "band_low", "band_mid", "band_high")
        print(
            "| family | size | reference_size | " + " | ".join(f"s{s}" for s in SEVERITIES) + " |"
        )
        print("|---|---|---|" + "---|" * len(SEVERITIES))
        for size in args.strength:
            for ref in (REFERENCE_SIZE, None) if size != REFERENCE_SIZE else (REFERENCE_SIZE,):
                for row in strength_rows(families, size, ref):
                    print("| " + " | ".join(row) + " |")
    if args.write:
        names = resolve_corruptions(args.corruptions)
        stored = read_measurements().get("fidelity", {})
        new = measure_fidelity(
            names, args.sizes, reference=not args.registry_only, previous=stored.get("sizes")
        )
        sizes = stored.get("sizes", {})
        for size, cells in new.items():
            sizes.setdefault(size, {}).update(cells)
        section = {
            "reference": reference_version(),
            "photos": {"n": N_PHOTOS, "crop_seed": 0, "names": list(PHOTO_NAMES)},
            "draws": DRAWS,
            "registry_reference_size": None,
            "sizes": sizes,
        }
        print(f"wrote {write_measurements('fidelity', section)}")
    return 0


__all__ = [
    "DRAWS",
    "FIDELITY_SIZES",
    "MAX_PSNR_GAP_DB",
    "MAX_SSIM_GAP",
    "MEASUREMENTS_PATH",
    "N_PHOTOS",
    "PHOTO_NAMES",
    "PSNR_CAP_DB",
    "cell_stats",
    "draw_seeds",
    "gap_rows",
    "gaps",
    "lf_share_stats",
    "measure",
    "photo_crops",
    "photo_set",
    "measure_fidelity",
    "read_measurements",
    "record_speed",
    "reference_available",
    "reference_corrupt",
    "reference_version",
    "registry_corrupt",
    "strength_rows",
    "write_measurements",
]


if __name__ == "__main__":
    sys.exit(main())
