"""Benchmark of the analysis capture: time over plain forwards, and memory flat in #images.

    python bench/analysis.py [--quick]

1. Time of one capture pass with every on-the-fly reduction on (per-head entropies, CLS
   rollout, CLS / mean-patch states, logit lens, CKA sums) over a plain eager forward of the
   same batch (target <= 1.5x), and over the naive `output_attentions=True,
   output_hidden_states=True` forward (which keeps every tokens x tokens map). Measured on a
   ViT-S/16-shaped model at 224 px (197 tokens) and on the tiny Fashion-MNIST ViT; the ratios
   are from interleaved repeats in one run (medians), so machine load cancels out.
2. Peak RSS of the whole streaming analysis (`analyze_models`: lens, entropy, CKA, patching
   and their statistics) on N and 10 N images, each in a fresh process (target ratio <= 1.1).
3. The logit lens is one batched matmul over layers: its time next to a per-layer loop.
4. Activation patching (the analysis's costliest part: L(L+1)/2 block calls per batch) under
   sdpa, as the analysis runs it, next to eager attention (what it would cost if the models
   stayed eager for the whole pass, as they did before the capture switched only its own pass).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hf_vitrobust.analysis.capture import ActivationCapture  # noqa: E402
from hf_vitrobust.analysis.lens import lens_logits  # noqa: E402
from hf_vitrobust.analysis.patching import patched_logits  # noqa: E402
from hf_vitrobust.analysis.run import analyze_models  # noqa: E402
from hf_vitrobust.analysis.similarity import StreamingLinearCKA  # noqa: E402
from hf_vitrobust.models import tiny_vit  # noqa: E402

SHAPES = {
    "vit-s16-224": dict(
        image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12,
        num_attention_heads=6, intermediate_size=1536, num_labels=1000,
    ),
    "tiny-28": dict(
        image_size=28, patch_size=7, hidden_size=96, num_hidden_layers=6,
        num_attention_heads=3, intermediate_size=384, num_labels=10,
    ),
}  # fmt: skip


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_time(shape: str, batch: int, repeats: int) -> dict:
    model, _ = tiny_vit(seed=0, **SHAPES[shape])
    model.eval()
    size = SHAPES[shape]["image_size"]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    cka = {"cls": StreamingLinearCKA(), "patch_mean": StreamingLinearCKA()}

    model.set_attn_implementation("eager")

    def plain() -> None:
        with torch.no_grad():
            model(pixel_values=x)

    def naive() -> None:
        with torch.no_grad():
            model(pixel_values=x, output_attentions=True, output_hidden_states=True)

    capture = ActivationCapture(model, entropy=True, rollout=True)

    def captured() -> None:
        out = capture(x)
        # CKA sums of this model against itself stand in for the base/fine-tuned pair.
        cka["cls"].update(out.cls, out.cls)
        cka["patch_mean"].update(out.patch_mean, out.patch_mean)

    with capture:
        for fn in (plain, naive, captured):  # warm-up
            fn()
        runs: dict[str, list[float]] = {"plain": [], "naive": [], "capture": []}
        for _ in range(repeats):  # interleaved, so load drifts hit all three alike
            runs["plain"] += _timed(plain, 1)
            runs["naive"] += _timed(naive, 1)
            runs["capture"] += _timed(captured, 1)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "shape": shape,
        "batch": batch,
        "seconds": med,
        "capture_over_plain": med["capture"] / med["plain"],
        "capture_over_naive": med["capture"] / med["naive"],
    }


def bench_lens(repeats: int) -> dict:
    model, _ = tiny_vit(seed=0, **SHAPES["vit-s16-224"])
    model.eval()
    cls = torch.randn(13, 256, 384)
    with torch.no_grad():
        batched = _timed(lambda: lens_logits(model, cls), repeats)
        loop = _timed(
            lambda: [model.classifier(model.vit.layernorm(cls[i])) for i in range(13)], repeats
        )
        same = torch.allclose(
            lens_logits(model, cls),
            torch.stack([model.classifier(model.vit.layernorm(c)) for c in cls]),
            atol=1e-5,
        )
    return {
        "batched_s": statistics.median(batched),
        "loop_s": statistics.median(loop),
        "equal": bool(same),
    }


def bench_patching(repeats: int) -> dict:
    model, _ = tiny_vit(seed=0, **SHAPES["vit-s16-224"])
    model.eval()
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = torch.stack(model(pixel_values=x, output_hidden_states=True).hidden_states)
    seconds = {}
    for impl in ("sdpa", "eager", "sdpa", "eager"):  # interleaved
        model.set_attn_implementation(impl)
        patched_logits(model, hidden)  # warm-up
        seconds.setdefault(impl, []).extend(_timed(lambda: patched_logits(model, hidden), repeats))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"seconds": med, "eager_over_sdpa": med["eager"] / med["sdpa"]}


def child_memory(num_images: int, batch: int) -> None:
    """Stream `num_images` synthetic images (clean + one corrupted condition) through the
    analysis; print the peak RSS after streaming, and after the statistics."""
    import copy

    torch.set_num_threads(1)
    model, _ = tiny_vit(seed=0, **SHAPES["tiny-28"])
    model.eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.vit.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def batches(condition: str):
        gen = torch.Generator().manual_seed(0 if condition == "clean" else 1)
        for start in range(0, num_images, batch):
            n = min(batch, num_images - start)
            yield (
                torch.randn(n, 3, 28, 28, generator=gen),
                torch.randint(0, 10, (n,), generator=gen),
            )

    kwargs = dict(progress=False)
    kept = analyze_models(
        model, {"ft": other}, batches, ["clean", "noise"], summarize=False, **kwargs
    )
    streamed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # What grows with the images: per-image scalars (lens / entropy / patching rows).
    per_image = sum(
        values.nbytes
        for records in kept["records"].values()
        for section in ("lens", "entropy", "patching")
        for by_field in records[section].values()
        for values in by_field.values()
    )
    analyze_models(model, {"ft": other}, batches, ["clean", "noise"], **kwargs)
    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"images": num_images, "streamed_kb": streamed, "with_stats_kb": total,
             "per_image_records_kb": per_image / 1024}
        )
    )  # fmt: skip


def bench_memory(num_images: int, batch: int) -> dict:
    peaks = {}
    for n in (num_images, 10 * num_images):
        out = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(n), "--batch", str(batch)],
            check=True,
            capture_output=True,
            text=True,
        )
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = peaks[num_images], peaks[10 * num_images]
    return {
        key: (small[key] / 1024, large[key] / 1024, large[key] / small[key])
        for key in ("streamed_kb", "with_stats_kb", "per_image_records_kb")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and images")
    parser.add_argument("--child-memory", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the timings (1: stable ratios)"
    )
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory, args.batch)
        return 0
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    ok = True
    for shape, batch in (("vit-s16-224", 8), ("tiny-28", 256)):
        r = bench_time(shape, batch, repeats)
        s = r["seconds"]
        print(
            f"capture [{shape}, batch {batch}]: plain eager {s['plain'] * 1e3:.1f} ms, naive "
            f"output_attentions+hidden_states {s['naive'] * 1e3:.1f} ms, capture with all "
            f"reductions {s['capture'] * 1e3:.1f} ms -> {r['capture_over_plain']:.2f}x plain "
            f"(target <= 1.5x), {r['capture_over_naive']:.2f}x naive"
        )
        if shape == "vit-s16-224":
            ok &= r["capture_over_plain"] <= 1.5
    lens = bench_lens(repeats)
    print(
        f"logit lens (13 layers x 256 images, ViT-S width): one batched matmul "
        f"{lens['batched_s'] * 1e3:.2f} ms vs per-layer loop {lens['loop_s'] * 1e3:.2f} ms "
        f"(equal: {lens['equal']})"
    )
    patch = bench_patching(repeats)
    print(
        f"activation patching (ViT-S/16 shape, 8 images, 13 sites): sdpa "
        f"{patch['seconds']['sdpa'] * 1e3:.0f} ms, eager {patch['seconds']['eager'] * 1e3:.0f} ms "
        f"-> eager / sdpa {patch['eager_over_sdpa']:.2f}x (the analysis patches under sdpa)"
    )
    n = 200 if args.quick else 500
    mem = bench_memory(n, args.batch)
    small, large, ratio = mem["streamed_kb"]
    print(
        f"peak RSS of the streaming analysis (capture, lens, entropy, CKA, patching; clean + "
        f"1 corrupted condition): {small:.0f} MB on {n} images, {large:.0f} MB on {10 * n} "
        f"images -> ratio {ratio:.3f} (target <= 1.1)"
    )
    small, large, _ = mem["per_image_records_kb"]
    print(
        f"  of which per-image records (lens, entropy, patching rows; no activation): "
        f"{small:.2f} MB vs {large:.2f} MB"
    )
    small, large, ratio_stats = mem["with_stats_kb"]
    print(
        f"  then with the bootstrap statistics (scipy resamples, capped by "
        f"hf_vitrobust.stats): {small:.0f} MB vs {large:.0f} MB -> ratio {ratio_stats:.3f}"
    )
    ok &= ratio <= 1.1
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
