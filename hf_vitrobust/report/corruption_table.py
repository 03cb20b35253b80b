"""The corruption table, generated from the registry and its stored measurements (README:
`python recipes/report.py --corruption_table true`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hf_vitrobust.corruptions import CORRUPTIONS, FAMILIES, REGISTRY_VERSION
from hf_vitrobust.corruptions.measure import MEASUREMENTS_PATH, read_measurements

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


def _max_gaps(sizes: Mapping[str, Any], name: str) -> tuple[str, str]:
    """Largest |mean PSNR gap| (dB) and |mean SSIM gap| over severities, per fidelity size."""
    psnr, ssim = [], []
    for size in sorted(sizes, key=int):
        cells = sizes[size].get(name, {})
        pairs = [(c["registry"], c["reference"]) for c in cells.values() if c.get("reference")]
        if not pairs:
            return "—", "—"
        psnr.append(max(abs(r["psnr"] - f["psnr"]) for r, f in pairs))
        ssim.append(max(abs(r["ssim"] - f["ssim"]) for r, f in pairs))
    return " / ".join(f"{p:.2f}" for p in psnr), " / ".join(f"{s:.3f}" for s in ssim)


def corruption_table(family_names: Sequence[str] = ("low_frequency", "high_frequency")) -> Table:
    """Every registered corruption: group, measured band, training family, fidelity to
    ImageNet-C (largest measured gaps at 224 / 299 px), speed against the reference, what scales
    with the image size, and the severity parameters."""
    measured = read_measurements()
    sizes = measured.get("fidelity", {}).get("sizes", {})
    speed = measured.get("speed", {}).get("corruptions", {})
    rows = []
    for name, c in CORRUPTIONS.items():
        families = [f for f in family_names if name in FAMILIES.get(f, ())]
        psnr_gap, ssim_gap = _max_gaps(sizes, name)
        ratio = speed.get(name, {}).get("ratio")
        gap_note = f" (recorded: {c.known_gap.reason})" if c.known_gap else ""
        if c.fallback_gap:
            gap_note += (
                f"; fallback without imagecorruptions: ≤ {c.fallback_gap.psnr_db:.2f} dB / "
                f"≤ {c.fallback_gap.ssim:.3f}"
            )
        rows.append(
            [
                name,
                c.group,
                c.band,
                f"{c.lf_share:.2f}",
                ", ".join(families) or "—",
                f"{c.lf_share_sd:.2f}",
                c.fidelity + gap_note,
                psnr_gap,
                ssim_gap,
                f"{ratio:.1f}×" if ratio is not None and math.isfinite(ratio) else "—",
                c.scaling or "—",
                _severity_params(c.params),
            ]
        )
    size_note = "/".join(sorted(sizes, key=int)) or "224/299"
    return Table(
        [
            "corruption",
            "group",
            "band",
            "LF share",
            "training family",
            "LF sd",
            "vs ImageNet-C",
            f"max |ΔPSNR| dB ({size_note} px)",
            f"max |ΔSSIM| ({size_note} px)",
            "speed vs reference",
            "scales with image size",
            "severity 1→5",
        ],
        rows,
        caption=f"Corruption registry {REGISTRY_VERSION}: band from the mean share of perturbation "
        "energy below 1/8 Nyquist at severity 3 over 30 natural photos at 224 px (LF share, its "
        "standard deviation LF sd); gaps are registry minus reference (imagecorruptions) in mean "
        "PSNR and SSIM over the same photos; speed is images/s at 224 px over the reference's, "
        f"one core ({MEASUREMENTS_PATH.name}, bench/corruptions.py)",
    )


def corruption_table_markdown() -> str:
    """The corruption table as Markdown (README: `python recipes/report.py --corruption_table`)."""
    return markdown_table(corruption_table())


__all__ = ["corruption_table", "corruption_table_markdown"]
