"""SAE training throughput: sae-lens' SAETrainer vs a minimal hand-written loop (issue 7).

For vanilla (ReLU + L1) and BatchTopK SAEs at d_in 96 / d_sae 768 (the tiny ViT) and
d_in 768 / d_sae 6144 (ViT-B/16), it times ``SAETrainer.fit()`` and a hand-written loop of the
same math (same initialisation, forward, losses, backward, grad-norm clipping at 1, Adam,
cosine LR schedule; BatchTopK's batch-wide top-k and threshold update) on the same in-memory
batches, alternating the two and keeping each one's best of ``--repeats`` runs, and prints
activations/s and the ratio sae-lens / loop (target >= 0.8). Activation normalisation is off in
both (it is a per-batch multiply). It also streams activations of a tiny ViT through
``ActivationStream`` and reports the shuffle buffer's peak (exact accounting) and the process's
peak RSS growth, against the size of everything streamed.

``--heldout`` measures the held-out comparison's memory instead (issue 16): the streamed pass
(``comparison.HeldOutPass``) of a base and a fine-tuned ViT of ViT-B/16 width and token count
(224 px, patch 16, 197 tokens, d 768; 2 layers keep it cheap on a CPU) through one BatchTopK SAE,
on N and on 10 x N synthetic images, each in a fresh process; it prints each run's peak RSS
growth over the pass (sampled every 5 ms) beside what holding the activations would take
(N x 197 x 768 float32 per model, layer and condition), and the ratio of the two growths.

Absolute numbers depend on the machine's load; the ratios come from one run.
Run: ``python bench/sae.py`` (a few minutes on 2 cores; ``--quick`` for a smoke run),
``python bench/sae.py --heldout`` (a few minutes; ``--images N``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_vitrobust.analysis.sae import SAETrainConfig, build_training_sae  # noqa: E402


def make_sae(sae_type: str, d_in: int, d_sae: int, k: float, steps: int, batch: int, seed: int):
    cfg = SAETrainConfig(
        sae_type=sae_type,
        expansion_factor=d_sae // d_in,
        k=k,
        total_training_samples=steps * batch,
        batch_size=batch,
        seed=seed,
        l1_warm_up_fraction=0.0,
    )
    sae = build_training_sae(d_in, cfg)
    sae.cfg.normalize_activations = "none"
    return sae, cfg


def run_sae_lens(sae, cfg: SAETrainConfig, batches: list[torch.Tensor]) -> float:
    """Seconds for SAETrainer.fit() over len(batches) steps."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    tcfg = SAETrainerConfig(
        total_training_samples=len(batches) * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_factor,
        lr_scheduler_name="cosineannealing",
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(batches))
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def run_loop(sae, cfg: SAETrainConfig, batches: list[torch.Tensor]) -> float:
    """Seconds for a minimal loop of the same math, on the SAE's own parameters."""
    params = {n: p for n, p in sae.named_parameters()}
    w_enc, b_enc, w_dec, b_dec = params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"]
    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=len(batches), eta_min=cfg.lr * cfg.lr_end_factor
    )
    batchtopk = cfg.sae_type == "batchtopk"
    threshold = torch.zeros((), dtype=torch.float64)
    since_fired = torch.zeros(w_dec.shape[0])
    start = time.perf_counter()
    for x in batches:
        hidden = (x - b_dec) @ w_enc + b_enc
        if batchtopk:
            norm = w_dec.norm(dim=-1)
            hidden = hidden * norm
            acts = hidden.relu().flatten()
            top = acts.topk(int(cfg.k * x.shape[0]))
            feats = torch.zeros_like(acts).scatter(-1, top.indices, top.values).view_as(hidden)
            recon = (feats / norm) @ w_dec + b_dec
            loss = (recon - x).pow(2).sum(-1).mean()
        else:
            feats = hidden.relu()
            recon = feats @ w_dec + b_dec
            sparsity = (feats * w_dec.norm(dim=1)).norm(p=1, dim=-1)
            loss = (recon - x).pow(2).sum(-1).mean() + (cfg.l1_coefficient * sparsity).mean()
        with torch.no_grad():  # dead-feature bookkeeping, as the trainer does
            fired = (feats != 0).any(0)
            since_fired += 1
            since_fired[fired] = 0
            if batchtopk:
                pos = feats[feats > 0]
                if pos.numel():
                    threshold = 0.99 * threshold + 0.01 * pos.min().double()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
    return time.perf_counter() - start


def bench_training(sizes, steps_for, batch_for, repeats: int, k: float) -> list[dict]:
    rows = []
    for (d_in, d_sae), sae_type in itertools.product(sizes, ("standard", "batchtopk")):
        steps, batch = steps_for[d_in], batch_for[d_in]
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(batch, d_in, generator=g) for _ in range(steps)]
        best = {"sae_lens": float("inf"), "loop": float("inf")}
        for r in range(repeats + 1):  # repeat 0 warms up allocators and kernels
            for name, fn in (("sae_lens", run_sae_lens), ("loop", run_loop)):
                sae, cfg = make_sae(sae_type, d_in, d_sae, k, steps, batch, seed=0)
                seconds = fn(sae, cfg, batches)
                if r > 0:
                    best[name] = min(best[name], seconds)
        n = steps * batch
        row = {
            "sae_type": sae_type,
            "d_in": d_in,
            "d_sae": d_sae,
            "batch": batch,
            "steps": steps,
            "sae_lens_acts_per_s": n / best["sae_lens"],
            "loop_acts_per_s": n / best["loop"],
            "ratio": best["loop"] / best["sae_lens"],
        }
        rows.append(row)
        print(
            f"{sae_type:9s} d_in {d_in:4d} d_sae {d_sae:5d} batch {batch:5d}: "
            f"sae-lens {row['sae_lens_acts_per_s']:10.0f} act/s  loop "
            f"{row['loop_acts_per_s']:10.0f} act/s  ratio {row['ratio']:.2f} "
            f"({'ok' if row['ratio'] >= 0.8 else 'BELOW 0.8'})",
            flush=True,
        )
    return rows


def bench_stream(n_activations: int, buffer_mb: float) -> dict:
    """Peak memory of the streaming activation source over a tiny ViT (hidden 96)."""
    import psutil

    from hf_vitrobust.analysis.sae.activations import ActivationStream, activation_chunks
    from hf_vitrobust.models import tiny_vit

    model, _ = tiny_vit(seed=0)
    g = torch.Generator().manual_seed(0)
    images = [{"pixel_values": torch.randn(256, 3, 28, 28, generator=g)} for _ in range(8)]
    chunks = activation_chunks(model.eval(), images, layer=5, tokens="all")
    stream = ActivationStream(chunks, 96, batch_size=1024, buffer_mb=buffer_mb)
    proc = psutil.Process()
    # Baseline before the buffer fills, so the growth includes the buffer itself.
    rss0 = peak = proc.memory_info().rss
    next(stream)
    served = 1024
    start = time.perf_counter()
    while served < n_activations:
        next(stream)
        served += 1024
        peak = max(peak, proc.memory_info().rss)
    seconds = time.perf_counter() - start
    row = {
        "activations": served,
        "streamed_mb": served * 96 * 4 / 2**20,
        "buffer_budget_mb": buffer_mb,
        "peak_buffer_mb": stream.peak_buffer_bytes / 2**20,
        "rss_growth_mb": (peak - rss0) / 2**20,
        "acts_per_s": served / seconds,
    }
    print(
        f"stream: {served} activations ({row['streamed_mb']:.0f} MB if held) through a "
        f"{buffer_mb:.0f} MB buffer: peak buffer {row['peak_buffer_mb']:.1f} MB, RSS growth "
        f"{row['rss_growth_mb']:.1f} MB, {row['acts_per_s']:.0f} act/s (tiny ViT forward included)"
    )
    return row


def heldout_child(n_images: int) -> dict:
    """One held-out pass over ``n_images`` synthetic images; peak RSS growth over the pass."""
    import threading

    import datasets
    import numpy as np
    import psutil
    from PIL import Image

    from hf_vitrobust.analysis.sae import (
        ComparedSAE,
        HeldOutPass,
        ReferenceImages,
        SAEStudyArguments,
        to_inference_sae,
    )
    from hf_vitrobust.analysis.sae.heldout import compared_batches
    from hf_vitrobust.data import ProcessorSpec
    from hf_vitrobust.models import tiny_vit

    vit = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=2,
               num_attention_heads=12, intermediate_size=3072)  # fmt: skip
    base, processor = tiny_vit(seed=0, **vit)
    tuned, _ = tiny_vit(seed=1, **vit)
    rng = np.random.default_rng(0)
    n_ref = 8
    images = [
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
        for _ in range(n_images + n_ref)
    ]
    features = datasets.Features(
        image=datasets.Image(), label=datasets.Value("int64"), example_id=datasets.Value("int64")
    )
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [0] * len(images), "example_id": list(range(len(images)))},
        features=features,
    )
    compared, pool = table.select(range(n_images)), table
    args = SAEStudyArguments(
        base_model="b", corruptions=["pixelate"], num_eval_images=n_images,
        reference_images=n_ref, batch_size=16,
    )  # fmt: skip
    spec = ProcessorSpec.from_processor(processor)
    reference = ReferenceImages([pool[i] for i in range(n_images, n_images + n_ref)], args, spec)
    cfg = SAETrainConfig(sae_type="batchtopk", expansion_factor=2, k=32)
    sae = to_inference_sae(build_training_sae(768, cfg))
    saes = [ComparedSAE("batchtopk-layer1-all", "batchtopk", 1, sae)]
    passes = HeldOutPass(base, {"tuned": tuned}, saes, reference, "all", 16, args.batch_size)
    batches = compared_batches(compared, processor, args, max_bad_fraction=0.0)
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    watcher.start()
    for condition in batches.conditions:
        passes.condition(condition, batches.images(condition, False))
    passes.gather_metrics()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - start
    held = n_images * 197 * 768 * 4 * 2 * 2 / 2**20  # 2 models, 2 conditions, 1 layer
    return {
        "images": n_images,
        "peak_rss_growth_mb": (peak[0] - baseline) / 2**20,
        "activations_if_held_mb": held,
        "seconds": seconds,
    }


def bench_heldout(n_images: int) -> list[dict]:
    """The held-out pass at ``n_images`` and ``10 * n_images``, each in a fresh process."""
    rows = []
    for n in (n_images, 10 * n_images):
        out = subprocess.run(
            [sys.executable, __file__, "--heldout_child", str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"held-out pass, {row['images']:5d} images: peak RSS growth "
            f"{row['peak_rss_growth_mb']:7.1f} MB (holding the activations: "
            f"{row['activations_if_held_mb']:7.1f} MB), {row['seconds']:.0f} s",
            flush=True,
        )
    ratio = rows[1]["peak_rss_growth_mb"] / max(rows[0]["peak_rss_growth_mb"], 1e-9)
    print(f"peak growth at 10x the images / at 1x: {ratio:.2f} (flat: ~1; held: 10)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", action="store_true", help="Held-out pass memory at 1x/10x.")
    parser.add_argument("--images", type=int, default=40, help="--heldout: images at 1x.")
    parser.add_argument("--heldout_child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="Small sizes, one repeat.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="Also write the rows here.")
    parser.add_argument("--steps_small", type=int, default=150, help="Steps at d_in 96.")
    parser.add_argument("--steps_large", type=int, default=12, help="Steps at d_in 768.")
    parser.add_argument("--stream_activations", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.heldout_child is not None:
        print(json.dumps(heldout_child(args.heldout_child)))
        return 0
    if args.heldout:
        rows = bench_heldout(args.images)
        if args.json:
            Path(args.json).write_text(json.dumps({"heldout": rows}, indent=2))
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        sizes = [(96, 768)]
        steps_for, batch_for, repeats, n_stream = {96: 20}, {96: 1024}, 1, 100_000
    else:
        sizes = [(96, 768), (768, 6144)]
        steps_for = {96: args.steps_small, 768: args.steps_large}
        batch_for = {96: 1024, 768: 512}
        repeats, n_stream = args.repeats, args.stream_activations
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = bench_training(sizes, steps_for, batch_for, repeats, k=32.0)
    stream = bench_stream(n_stream, buffer_mb=16.0)
    if args.json:
        Path(args.json).write_text(json.dumps({"training": rows, "stream": stream}, indent=2))
    worst = min(r["ratio"] for r in rows)
    print(f"worst sae-lens / loop ratio: {worst:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
