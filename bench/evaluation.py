"""Shared corrupted stream vs separate evaluations (issue 5); costs of identity and statistics.

    python bench/evaluation.py [--quick] [--full-scale-costs]

Three tiny ViTs at 32 px (Fashion-MNIST test images resized from 28 px) on a grid of
corruptions × severities: once on one shared stream (each batch decoded and corrupted once,
fed to all three models; `run_grid` with three models) and as three separate evaluations (each
decodes and corrupts again). Prints the time ratio separate / shared (target >= 1.5x). Both
are measured in this run, interleaved, and the medians are compared, so machine load cancels.

Two model sizes: the test-size ViT (hidden 32, 2 layers), where decoding and corrupting are
most of the cost (the case the shared stream is for, and what a GPU makes of any small model),
and the study's 0.7 M ViT (hidden 96, 6 layers), whose CPU forward costs about as much as
a corruption, so sharing saves less there.

`--full-scale-costs` adds what the paper-scale evaluation (recipes/vit-base-imagenet/
evaluate.yaml) spends outside the forward passes: the fingerprint of one ViT-B/16 (hashing its
344 MB state dict, once per model and run) and one paired comparison on 50,000 images (McNemar
and paired bootstrap, 2000 resamples), times the number of comparison records of that recipe.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hf_vitrobust.data import find_fashion_mnist_dir, label_names, load_image_dataset  # noqa: E402
from hf_vitrobust.evaluation import EvalModel, build_grid, run_grid  # noqa: E402
from hf_vitrobust.models import tiny_vit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and one repeat")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--full-scale-costs", action="store_true", help="ViT-B/16 and 50k images")
    args = parser.parse_args()
    if args.full_scale_costs:
        _full_scale_costs()
    if find_fashion_mnist_dir() is None:
        sys.exit("Fashion-MNIST files not found (make install); nothing to benchmark.")
    torch.set_num_threads(1)  # tiny models: one thread, and no contention noise between runs
    n_images = args.images or (300 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    dataset = load_image_dataset("fashion_mnist", "test", max_examples=n_images)
    id2label = dict(enumerate(label_names(dataset)))
    sizes = {
        "test-size ViT (hidden 32, 2 layers)": dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        ),
        "study ViT (0.7 M: hidden 96, 6 layers)": dict(
            hidden_size=96, num_hidden_layers=6, num_attention_heads=3, intermediate_size=384
        ),
    }
    # A representative mix: noise, blur, weather and digital corruptions, two severities.
    cells = build_grid(["gaussian_noise", "zoom_blur", "fog", "jpeg_compression"], [1, 3])
    ratios = {}
    for label, arch in sizes.items():
        models = []
        for seed in range(3):
            model, processor = tiny_vit(
                seed=seed, image_size=32, patch_size=8, id2label=id2label, **arch
            )
            models.append(EvalModel(f"tiny-{seed}", model.eval(), processor, key=f"m{seed}"))
        ratios[label] = _compare(models, dataset, cells, n_images, repeats, label, args.device)
    print("summary: " + "; ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()))


def _compare(models, dataset, cells, n_images: int, repeats: int, label: str, device: str) -> float:
    def shared() -> dict:
        return run_grid(
            models, dataset, cells, batch_size=250, device=device, progress=False
        ).records

    def separate() -> dict:
        out = {}
        for m in models:
            out.update(
                run_grid([m], dataset, cells, batch_size=250, device=device, progress=False).records
            )
        return out

    times: dict[str, list[float]] = {"shared": [], "separate": []}
    results = {}
    for _ in range(repeats):
        for name, fn in (("shared", shared), ("separate", separate)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    # Same numbers either way: the shared stream changes the cost, not the result.
    for key in results["shared"]:
        for cell, rec in results["shared"][key].items():
            assert (rec.rank == results["separate"][key][cell].rank).all(), (key, cell)
    t_shared, t_sep = statistics.median(times["shared"]), statistics.median(times["separate"])
    n_evals = len(cells) * n_images
    print(
        f"== {label} on {device}: 3 models, 32 px, {len(cells)} cells x {n_images} images, {repeats} repeat(s)"
    )
    print(
        f"shared stream:        {t_shared:7.2f} s  ({3 * n_evals / t_shared:7.0f} model-images/s)"
    )
    print(f"separate evaluations: {t_sep:7.2f} s  ({3 * n_evals / t_sep:7.0f} model-images/s)")
    ratio = t_sep / t_shared
    verdict = "OK" if ratio >= 1.5 else "below target"
    print(f"time ratio separate/shared: {ratio:.2f}x (target >= 1.5x: {verdict})")
    return ratio


def _full_scale_costs() -> None:
    import numpy as np

    from hf_vitrobust import stats
    from hf_vitrobust.evaluation import model_fingerprint
    from hf_vitrobust.models import tiny_image_processor

    model, _ = tiny_vit(
        seed=0, image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, num_labels=1000,
    )  # fmt: skip
    start = time.perf_counter()
    model_fingerprint(model, tiny_image_processor(224))
    t_fp = time.perf_counter() - start
    rng = np.random.default_rng(0)
    n = 50_000
    a, b = rng.random(n) < 0.75, rng.random(n) < 0.78
    timings = {}
    for name, fn, args in (
        ("mcnemar (one cell)", stats.mcnemar_test, (a, b)),
        ("paired bootstrap (pooled)", stats.paired_bootstrap, (a * 0.9, b * 0.9)),
    ):
        start = time.perf_counter()
        fn(*args, n_resamples=2000)
        timings[name] = time.perf_counter() - start
    # The recipe: 2 adversarial models x (base + 2 controls) + 3 controls x base = 9 pairs;
    # scopes clean, seen, unseen and 6 groups; 2 metrics.
    records = 9 * 9 * 2
    print("== full-scale costs (1 CPU thread; machine shared, figures noisy)")
    print(f"fingerprint of a ViT-B/16 (344 MB state dict): {t_fp:.2f} s per model and run")
    for name, t in timings.items():
        print(f"{name} on {n} images, 2000 resamples: {t:.2f} s")
    worst = max(timings.values())
    print(f"{records} comparison records: <= {records * worst / 60:.1f} min of statistics")


if __name__ == "__main__":
    main()
