"""Training throughput on one GPU: plain vs worst-of-4 vs PGD-3, through `AdversarialTrainer`.

The model is ViT-B/16 built locally from a ViTConfig (random weights, 224 px, 1000 classes): no
Hub, no data set. Each step is the real `AdversarialTrainer.training_step` (the attack in eval
mode under the accelerator's bf16 autocast, sdpa attention, then the forward/backward on the
chosen images) plus the optimizer step, with the batch (and its k views) already on the device,
so the figures are the GPU's. `--compile` adds `torch_compile` (the training model and the
attack's view of it).

Model FLOPs utilisation counts the FLOPs the model executes (attack included), from the
matmul/attention shapes: forward F per image; a training forward+backward 3F; a worst-of-k
attack k·F (one no-grad forward of B·k views); a PGD step 2F (forward + backward to the input
only). Peak: bf16 dense tensor throughput of the card (H100/H200 SXM: 989 TFLOP/s) or
--peak-tflops.

The corrupted views come from the CPU (DataLoader workers). At the measured images/s, a GPU
needs `images/s x views per image / views per core-second` cores for the corruptions, plus
`images/s / decodes per core-second` for decoding and resizing. Views per core-second of each
training family are measured here on natural photos at 224 px, one thread (as
bench/corruptions.py measures them), unless --views-per-core-s gives them.

Targets on an H100/H200: plain MFU >= 40%; worst-of-4 >= 0.4x plain images/s.

    python bench/gpu_train.py [--batch-size 128] [--steps 20] [--compile] [--json out.json]
    python bench/gpu_train.py --device cpu --tiny   # proves the bench runs (no GPU figures)
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as photos  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

from hf_vitrobust.corruptions import FAMILIES, corrupt  # noqa: E402
from hf_vitrobust.data import ProcessorSpec, decode_image  # noqa: E402
from hf_vitrobust.models import tiny_image_processor  # noqa: E402
from hf_vitrobust.training import AdversarialTrainer, AdversarialTrainingArguments  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
MODES = {"plain": ("none", 0), "worst_of_4": ("worst_of_k", 4), "pgd_3": ("pgd", 0)}
PGD_STEPS = 3
TARGET_MFU, TARGET_WORST_OF_4 = 0.40, 0.40


def forward_flops_per_image(cfg: ViTConfig) -> float:
    """Matmul + attention FLOPs of one ViT forward (multiply-add = 2 FLOPs)."""
    n = (cfg.image_size // cfg.patch_size) ** 2 + 1
    d, m = cfg.hidden_size, cfg.intermediate_size
    per_layer = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * m + 2 * 2 * n * n * d
    patch = 2 * (n - 1) * (cfg.num_channels * cfg.patch_size**2) * d
    head = 2 * d * cfg.num_labels
    return cfg.num_hidden_layers * per_layer + patch + head


def flops_per_image(mode: str, f: float) -> float:
    """FLOPs one training image costs in `mode` (see the module docstring)."""
    return {"plain": 3 * f, "worst_of_4": 3 * f + 4 * f, "pgd_3": 3 * f + PGD_STEPS * 2 * f}[mode]


def build(mode: str, cfg: ViTConfig, args: argparse.Namespace):
    """A trainer for `mode` on a fresh model, prepared by its accelerator (bf16 autocast,
    optionally compiled), its optimizer, and one batch on the device."""
    adversary, k = MODES[mode]
    on_gpu = args.device == "cuda"
    training_args = AdversarialTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench_gpu_train_"),
        adversary=adversary,
        num_views=max(k, 1),
        # The views are synthetic (this times the GPU); a family is named only so that the
        # arguments ask for k views.
        corruptions=["low_frequency"] if k else [],
        pgd_steps=PGD_STEPS,
        pgd_epsilon=2 / 255,
        per_device_train_batch_size=args.batch_size,
        bf16=True,
        use_cpu=not on_gpu,
        torch_compile=args.compile,
        report_to="none",
        disable_tqdm=True,
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg)
    model.set_attn_implementation("sdpa")
    trainer = AdversarialTrainer(
        model=model,
        args=training_args,
        processing_class=tiny_image_processor(cfg.image_size, 0.5, 0.5),
    )
    # What Trainer.train does before its loop: prepare (device, autocast, compile), optimizer.
    trainer.model_wrapped = trainer.accelerator.prepare_model(trainer.model)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    g = torch.Generator(device=args.device).manual_seed(0)
    b, size = args.batch_size, cfg.image_size
    shape = (b, 3, size, size)
    batch = {
        "pixel_values": torch.randn(shape, device=args.device, generator=g),
        "labels": torch.randint(0, cfg.num_labels, (b,), device=args.device, generator=g),
    }
    if k:
        noise = torch.randn((b, k, 3, size, size), device=args.device, generator=g)
        batch["views"] = batch["pixel_values"][:, None] + 0.3 * noise
    return trainer, batch


def time_mode(mode: str, cfg: ViTConfig, args: argparse.Namespace) -> dict[str, float]:
    trainer, batch = build(mode, cfg, args)
    model, optimizer = trainer.model_wrapped, trainer.optimizer
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def step() -> None:
        trainer.training_step(model, dict(batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    return {"step_s": seconds, "images_per_s": args.batch_size / seconds, "peak_gib": peak}


def _photos_224() -> list[np.ndarray]:
    spec = ProcessorSpec(size=(224, 224), mean=(0.0,) * 3, std=(1.0,) * 3, resize_to=(224, 224))
    return [spec.resize_uint8(p()) for p in (photos.astronaut, photos.coffee, photos.chelsea)]


def views_per_core_second(family: str, seconds: float) -> float:
    """Corrupted views per CPU-second of one thread for `family`: views drawn uniformly over its
    corruptions and severities 1-5, so the mean time per view is the mean over (corruption,
    severity) of each one's time."""
    cv2.setNumThreads(1)
    images = _photos_224()
    per_view = []
    for name in FAMILIES[family]:
        for severity in range(1, 6):
            corrupt(images[0], name, severity, seed=0)  # build and cache the transform
            n, start = 0, time.process_time()
            while n < 3 or time.process_time() - start < seconds / 5:
                corrupt(images[n % len(images)], name, severity, seed=n)
                n += 1
            per_view.append((time.process_time() - start) / n)
    return 1.0 / float(np.mean(per_view))


def decodes_per_core_second(seconds: float) -> float:
    """JPEG decodes + resizes to 224 px per CPU-second (an ImageNet-sized 500x375 photo)."""
    cv2.setNumThreads(1)
    buf = io.BytesIO()
    Image.fromarray(photos.astronaut()).resize((500, 375)).save(buf, "JPEG", quality=90)
    encoded = {"bytes": buf.getvalue(), "path": None}
    spec = ProcessorSpec(size=(224, 224), mean=(0.0,) * 3, std=(1.0,) * 3, resize_to=(224, 224))
    n, start = 0, time.process_time()
    while n < 3 or time.process_time() - start < seconds:
        spec.resize_uint8(decode_image(encoded))
        n += 1
    return n / (time.process_time() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch_compile the model")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a small ViT (proves the bench runs)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--families", nargs="+", default=["low_frequency", "high_frequency"])
    parser.add_argument("--views-per-core-s", type=float, default=None,
                        help="corrupted views per core-second (default: measured per family)")  # fmt: skip
    parser.add_argument("--corruption-seconds", type=float, default=2.0,
                        help="CPU seconds spent measuring each family's corruptions")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu_train.py: no CUDA GPU is visible; run with --device cpu --tiny to check it."
        )
        return 1
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peak = args.peak_tflops or next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.tiny:
        cfg = ViTConfig(image_size=64, patch_size=16, hidden_size=192, num_hidden_layers=2,
                        num_attention_heads=3, intermediate_size=768, num_labels=1000)  # fmt: skip
    else:
        cfg = ViTConfig(image_size=224, patch_size=16, num_labels=1000)  # ViT-B/16 defaults
    f = forward_flops_per_image(cfg)
    print(f"{name}; ViT {cfg.hidden_size}x{cfg.num_hidden_layers} {cfg.image_size} px patch "
          f"{cfg.patch_size}, bf16 autocast, sdpa, compile={args.compile}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}; forward {f / 1e9:.2f} GFLOP/image; peak "
          f"{peak or 'unknown'} TFLOP/s")  # fmt: skip
    rows = {}
    for mode in MODES:
        rows[mode] = time_mode(mode, cfg, args)
        gc.collect()  # the previous mode's model and optimizer leave the GPU
        if args.device == "cuda":
            torch.cuda.empty_cache()
    plain = rows["plain"]
    print(f"{'mode':<11} {'step ms':>8} {'images/s':>9} {'img/s vs plain':>15} {'step vs plain':>14} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}")  # fmt: skip
    for mode, row in rows.items():
        row["images_per_s_vs_plain"] = row["images_per_s"] / plain["images_per_s"]
        row["step_time_vs_plain"] = row["step_s"] / plain["step_s"]
        row["tflops"] = flops_per_image(mode, f) * row["images_per_s"] / 1e12
        row["mfu"] = row["tflops"] / peak if peak else float("nan")
        print(f"{mode:<11} {row['step_s'] * 1e3:>8.1f} {row['images_per_s']:>9.0f} "
              f"{row['images_per_s_vs_plain']:>15.2f} {row['step_time_vs_plain']:>14.2f} "
              f"{row['tflops']:>8.1f} {row['mfu']:>6.1%} {row['peak_gib']:>9.1f}")  # fmt: skip
    # CPU cores each GPU needs for its views (and decoding) at the measured rates.
    decode_rate = decodes_per_core_second(args.corruption_seconds / 4)
    cores: dict[str, dict[str, float]] = {}
    for family in args.families:
        rate = args.views_per_core_s or views_per_core_second(family, args.corruption_seconds)
        cores[family] = {"views_per_core_s": rate}
        for mode, views in (("worst_of_4", 4), ("pgd_3", 1)):
            ips = rows[mode]["images_per_s"]
            cores[family][mode] = ips * views / rate + ips / decode_rate
        print(f"{family}: {rate:.0f} views/core-s (224 px, 1 thread), decode+resize "
              f"{decode_rate:.0f} images/core-s -> CPU cores per GPU: worst_of_4 "
              f"{cores[family]['worst_of_4']:.1f}, one view per image (random_view, pgd on a view) "
              f"{cores[family]['pgd_3']:.1f}")  # fmt: skip
    mfu, ratio = plain["mfu"], rows["worst_of_4"]["images_per_s_vs_plain"]
    print(f"plain MFU {mfu:.1%} (target >= {TARGET_MFU:.0%}); worst_of_4 images/s = {ratio:.2f}x "
          f"plain (target >= {TARGET_WORST_OF_4:.2f}); pgd_3 step = "
          f"{rows['pgd_3']['step_time_vs_plain']:.2f}x plain")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"device": name, "compile": args.compile, "batch_size":
                                         args.batch_size, "tiny": args.tiny, "peak_tflops": peak,
                                         "modes": rows, "cpu_cores_per_gpu": cores,
                                         "decodes_per_core_s": decode_rate}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
