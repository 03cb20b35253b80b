"""ViT-B/16 training throughput on one GPU: plain vs worst-of-4 vs PGD-3 (bf16 autocast).

The model is built locally from a ViTConfig (random weights, 224 px, 1000 classes): no Hub,
no data set. Each step does what `AdversarialTrainer` does: the attack in eval mode under
autocast (worst-of-k: one no-grad forward of B·k views; PGD: n forward + input-gradient
passes), then a forward/backward on the chosen images and an AdamW step.

Model FLOPs utilisation counts the FLOPs the model executes (attack included), from the
matmul/attention shapes: forward F per image; a training forward+backward 3F; a worst-of-k
attack k·F; a PGD step 2F (forward + backward to the input only, no weight gradients).
Peak: bf16 dense tensor throughput of the card (H100/H200 SXM: 989 TFLOP/s) or --peak-tflops.

    python bench/gpu_train.py [--batch-size 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

from hf_vitrobust.training.adversary import eval_mode, gather_views, pgd, worst_of_k  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def forward_flops_per_image(cfg: ViTConfig) -> float:
    """Matmul + attention FLOPs of one ViT forward (multiply-add = 2 FLOPs)."""
    n = (cfg.image_size // cfg.patch_size) ** 2 + 1
    d, m = cfg.hidden_size, cfg.intermediate_size
    per_layer = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * m + 2 * 2 * n * n * d
    patch = 2 * (n - 1) * (cfg.num_channels * cfg.patch_size**2) * d
    head = 2 * d * cfg.num_labels
    return cfg.num_hidden_layers * per_layer + patch + head


def run(mode: str, model, optimizer, batch, views, steps: int, warmup: int, k: int, n_pgd: int):
    x, y = batch

    def step() -> None:
        chosen = x
        with eval_mode(model), torch.autocast("cuda", dtype=torch.bfloat16):
            if mode == "worst_of_4":
                index, _ = worst_of_k(model, views, y)
                chosen = gather_views(views, index)
            elif mode == "pgd_3":
                generator = torch.Generator(device="cuda").manual_seed(0)
                chosen = pgd(
                    model,
                    x,
                    y,
                    mean=MEAN,
                    std=STD,
                    epsilon=2 / 255,
                    steps=n_pgd,
                    generator=generator,
                )
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(pixel_values=chosen).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, torch.cuda.max_memory_allocated() / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_train.py needs a CUDA GPU; none is visible.")
        return 1
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = ViTConfig(image_size=224, patch_size=16, num_labels=1000)  # ViT-B/16 defaults
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg).cuda()
    model.set_attn_implementation("sdpa")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    b, k, n_pgd = args.batch_size, 4, 3
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, 3, 224, 224, device="cuda", generator=g)
    y = torch.randint(0, 1000, (b,), device="cuda", generator=g)
    views = x[:, None] + 0.3 * torch.randn(b, k, 3, 224, 224, device="cuda", generator=g)
    f = forward_flops_per_image(cfg)
    flops = {"plain": 3 * f, "worst_of_4": 3 * f + k * f, "pgd_3": 3 * f + n_pgd * 2 * f}
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name}; ViT-B/16 {params:.1f} M params, 224 px, bf16 autocast, batch {b}, "
          f"{args.steps} timed steps after {args.warmup}; forward {f / 1e9:.1f} GFLOP/image; "
          f"peak {peak or 'unknown'} TFLOP/s")  # fmt: skip
    print(
        f"{'mode':<11} {'step ms':>8} {'images/s':>9} {'vs plain':>8} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}"
    )
    base = None
    for mode in ("plain", "worst_of_4", "pgd_3"):
        sec, mem = run(mode, model, optimizer, (x, y), views, args.steps, args.warmup, k, n_pgd)
        base = base or sec
        tflops = flops[mode] * b / sec / 1e12
        mfu = f"{tflops / peak:.1%}" if peak else "n/a"
        print(
            f"{mode:<11} {sec * 1e3:>8.1f} {b / sec:>9.0f} {sec / base:>8.2f} {tflops:>8.1f} {mfu:>6} {mem:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
