"""Benchmark: corruption throughput at 224 px, against the reference and the bare transform.

In one process, one thread (OpenCV's pool off; run it under ``taskset -c N`` on a shared
machine), CPU time of this process, prints:

1. per training family (``low_frequency``, ``high_frequency``, and the measured bands): corrupted
   views per second on one core, cycling through the family's corruptions and severities 1-5 as
   the training views do (target: >= 500 for the two training families);
2. per corruption: images/s through the registry (``corrupt(img, name, s, seed=i)``) and through
   the reference implementation (``imagecorruptions.corrupt``, numpy seeded), severities 1-5 in
   turn, and their ratio (target: every ratio >= 1), then the geometric mean (target: >= 5);
3. per corruption: the registry's time over the bare Albumentations transform's (a pre-built
   ``A.Compose([transform], seed=0)`` called directly, no input checks or reseeding).

Sides are timed in alternating short chunks over the same photos and the rates are medians of
the chunk rates, so that other load on a shared machine affects both sides alike.

Usage: python bench/corruptions.py [--size 224] [--rounds 8] [--budget 0.05]
       [--corruptions NAME ...] [--record]   # --record stores the figures for the README table
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_vitrobust import corruptions as C  # noqa: E402
from hf_vitrobust.constants import SEVERITIES  # noqa: E402
from hf_vitrobust.corruptions import fidelity  # noqa: E402

FAMILIES = ("low_frequency", "high_frequency", "band_low", "band_mid", "band_high")
TARGET_VIEWS_PER_S = 500.0
TARGET_GEOMEAN = 5.0


def chunk_rate(fn, n: int, start: int) -> float:
    """Calls per CPU second of ``fn(i)`` for i in [start, start + n)."""
    t0 = time.process_time()
    for i in range(start, start + n):
        fn(i)
    return n / max(time.process_time() - t0, 1e-9)


def compare(fns: dict[str, object], rounds: int, budget: float) -> dict[str, float]:
    """Median chunk rate of each function, chunks alternating between them."""
    for fn in fns.values():  # warm up (compilation, caches)
        for i in range(len(SEVERITIES)):
            fn(i)
    sizes = {}
    for key, fn in fns.items():
        t0 = time.process_time()
        for i in range(len(SEVERITIES)):
            fn(i)
        per_call = max((time.process_time() - t0) / len(SEVERITIES), 1e-6)
        sizes[key] = max(len(SEVERITIES), round(budget / per_call / len(SEVERITIES)) * 5)
    rates: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            rates[key].append(chunk_rate(fns[key], sizes[key], start=r * sizes[key]))
    return {k: float(np.median(v)) for k, v in rates.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=8, help="alternating chunks per side")
    p.add_argument("--budget", type=float, default=0.05, help="CPU seconds per chunk")
    p.add_argument("--corruptions", nargs="+", default=["all"])
    p.add_argument("--record", action="store_true", help="store the figures (README table)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    cv2.setNumThreads(1)
    names = C.resolve_corruptions(args.corruptions)
    photos = fidelity.photo_set(args.size, n=8)
    n_photos = len(photos)

    def registry(name: str):
        return lambda i: C.corrupt(photos[i % n_photos], name, SEVERITIES[i % 5], seed=i)

    print(f"corruption benchmark at {args.size} px: one thread, CPU time, severities 1-5 in turn")
    print(f"\n{'family':16s} {'views/s':>9s}  (target >= {TARGET_VIEWS_PER_S:.0f} for the "
          "training families)")  # fmt: skip
    family_rates = {}
    for family in FAMILIES:
        members = C.FAMILIES[family]

        def view(i: int, members=members) -> np.ndarray:
            name = members[i % len(members)]
            return C.corrupt(photos[i % n_photos], name, SEVERITIES[(i // len(members)) % 5], i)

        family_rates[family] = compare({"f": view}, 3, args.budget * 4)["f"]
        ok = family_rates[family] >= TARGET_VIEWS_PER_S or family.startswith("band_")
        print(f"{family:16s} {family_rates[family]:9.0f}  {'' if ok else 'BELOW TARGET'}")

    have_reference = fidelity.reference_available()
    print(f"\n{'corruption':18s} {'registry/s':>11s} {'reference/s':>12s} {'ratio':>7s} "
          f"{'bare/s':>9s} {'overhead':>9s}")  # fmt: skip
    rows = {}
    for name in names:
        corruption = C.get_corruption(name)
        bare = [A.Compose([corruption.build(s)], p=1.0, seed=0) for s in SEVERITIES]
        fns = {
            "registry": registry(name),
            "bare": lambda i, bare=bare: bare[i % 5](image=photos[i % n_photos])["image"],
        }
        if have_reference and corruption.fidelity == "port":
            fns["reference"] = lambda i, name=name: fidelity.reference_corrupt(
                photos[i % n_photos], name, SEVERITIES[i % 5], i
            )
        rates = compare(fns, args.rounds, args.budget)
        ratio = rates["registry"] / rates["reference"] if "reference" in rates else math.nan
        overhead = rates["bare"] / rates["registry"] - 1.0
        rows[name] = {**rates, "ratio": ratio, "overhead": overhead}
        ref = (
            f"{rates['reference']:12.1f} {ratio:7.2f}"
            if "reference" in rates
            else f"{'—':>12s} {'—':>7s}"
        )
        print(f"{name:18s} {rates['registry']:11.1f} {ref} {rates['bare']:9.1f} {overhead:+9.1%}",
              flush=True)  # fmt: skip
    ratios = [r["ratio"] for r in rows.values() if math.isfinite(r["ratio"])]
    geomean = float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan
    slowest = min(rows, key=lambda n: rows[n]["ratio"] if math.isfinite(rows[n]["ratio"]) else 1e9)
    print(f"\ngeometric mean registry/reference: {geomean:.2f} (target >= {TARGET_GEOMEAN:.0f}); "
          f"lowest ratio {rows[slowest]['ratio']:.2f} ({slowest}; target >= 1)")  # fmt: skip
    overheads = [r["overhead"] for r in rows.values()]
    print(f"registry overhead over the bare transform: median {np.median(overheads):+.1%}, "
          f"max {max(overheads):+.1%}")  # fmt: skip
    if args.record:
        path = fidelity.record_speed(
            {
                "size": args.size,
                "command": "python bench/corruptions.py --record",
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "families": family_rates,
                "corruptions": rows,
                "geometric_mean": geomean,
            }
        )
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
