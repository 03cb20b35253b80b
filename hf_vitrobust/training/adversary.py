"""Adversaries for corruption fine-tuning: worst-of-k view selection, random views, PGD/FGSM.

Pure functions of (model, batch): no Trainer, no optimizer, no parameter gradients.
They do not change the model's train/eval mode; callers wrap them in `eval_mode(model)`
(the trainer does). Every tensor the model sees is *normalised* pixel values (what the
image processor produces); perturbation budgets are given in [0, 1] pixel units and
converted through the processor's mean/std.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hf_vitrobust.seeding import stream_seed

ADVERSARIES: tuple[str, ...] = (
    "none",
    "random_view",
    "worst_of_k",
    "pgd",
    "fgsm",
    "worst_of_k+pgd",
    "worst_of_k+fgsm",
)
BANDS: tuple[str, ...] = ("all", "low", "high")
# The name of the random stream of PGD random starts (`step_generator`).
PGD_START_STREAM = "pgd_start"


@dataclass(frozen=True)
class AdversaryPlan:
    """What an adversary name means: how a view is chosen and which perturbation follows.

    `select_worst`: score k corrupted views and train on the highest-loss one (`worst_of_k*`);
    `random_view`: train on one random corrupted view, never scored (the random-view control);
    `perturbation`: None, "pgd" or "fgsm", applied to the chosen (or clean) view.
    """

    select_worst: bool
    perturbation: str | None
    random_view: bool = False


def parse_adversary(name: str) -> AdversaryPlan:
    """Split an adversary name (`none`, `random_view`, `worst_of_k`, `pgd`, `worst_of_k+pgd`, ...)."""
    if name not in ADVERSARIES:
        raise ValueError(
            f"Unknown adversary {name!r}; choose one of {list(ADVERSARIES)} "
            "(`worst_of_k+pgd` runs PGD on top of the worst corrupted view; `random_view` "
            "trains on one random corrupted view, the random-view control)."
        )
    select_worst = name.startswith("worst_of_k")
    perturbation = name.split("+")[-1] if name in ("pgd", "fgsm") or "+" in name else None
    return AdversaryPlan(
        select_worst=select_worst, perturbation=perturbation, random_view=name == "random_view"
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode (no dropout) for an attack and restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=pixel_values)
    return out.logits if hasattr(out, "logits") else out[0]


def per_example_loss(
    model: nn.Module, pixel_values: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy per image [B], computed in float32 (autocast logits may be bf16/fp16)."""
    return F.cross_entropy(_logits(model, pixel_values).float(), labels, reduction="none")


@torch.no_grad()
def worst_of_k(
    model: nn.Module,
    views: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every corrupted view and pick, per image, the one with the highest loss.

    Args:
        model: a classifier taking `pixel_values`.
        views: normalised views [B, k, C, H, W].
        labels: [B] class indices.
        chunk_size: score at most this many views per forward (default: all B·k at once,
            one batched forward; set it to bound memory on large models).

    Returns:
        `(index [B], losses [B, k])`: the chosen view per image and every view's loss.
    """
    if views.dim() != 5:
        raise ValueError(f"views must be [B, k, C, H, W], got shape {tuple(views.shape)}.")
    b, k = views.shape[:2]
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}.")
    flat = views.reshape(b * k, *views.shape[2:])
    flat_labels = labels.repeat_interleave(k)
    step = flat.shape[0] if not chunk_size else int(chunk_size)
    losses = torch.cat(
        [
            per_example_loss(model, flat[i : i + step], flat_labels[i : i + step])
            for i in range(0, flat.shape[0], step)
        ]
    ).reshape(b, k)
    return losses.argmax(dim=1), losses


def gather_views(views: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`views[b, index[b]]` for every b: [B, k, C, H, W] → [B, C, H, W]."""
    return views[torch.arange(views.shape[0], device=views.device), index.to(views.device)]


def band_mask(
    height: int,
    width: int,
    band: str,
    cutoff: float = 0.125,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Boolean rfft2 mask [H, W//2+1] keeping the `low` or `high` band (None for `all`).

    Radial frequency is measured as a fraction of Nyquist; `low` keeps frequencies at or below
    `cutoff` (DC included), `high` those above it. The default 1/8 of Nyquist matches the
    "LF share" definition used by the corruption registry.
    """
    if band not in BANDS:
        raise ValueError(f"Unknown frequency band {band!r}; choose one of {list(BANDS)}.")
    if band == "all":
        return None
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"band cutoff must be in (0, 1) (a fraction of Nyquist), got {cutoff}.")
    fy = torch.fft.fftfreq(height, device=device).abs()[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5
    low = radius <= cutoff
    return low if band == "low" else ~low


def project_band(delta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Keep only the frequencies in `mask` of a perturbation [..., H, W] (identity for None)."""
    if mask is None:
        return delta
    # FFTs in at least float32 (half-precision FFTs need power-of-two sizes).
    work = delta if delta.dtype == torch.float64 else delta.float()
    spectrum = torch.fft.rfft2(work)
    out = torch.fft.irfft2(spectrum * mask, s=delta.shape[-2:])
    return out.to(delta.dtype)


def project_band_box(
    delta: torch.Tensor,
    mask: torch.Tensor | None,
    low: torch.Tensor,
    high: torch.Tensor,
    iterations: int = 10,
) -> torch.Tensor:
    """A perturbation inside the box `low <= delta <= high` and (nearly) inside the band.

    The box is the ε-ball intersected with the valid pixel range (`-x <= delta <= 1 - x`). A
    band projection followed by one clip puts energy back out of band wherever the clip binds
    (dark or bright pixels: ~70% in band on Fashion-MNIST); alternating the two projections
    (POCS; both sets are convex and δ = 0 lies in both) converges to a point in their
    intersection. The last projection is the clip, so the result is always a valid image within
    budget; ~10 iterations leave > 99% of its energy in band on dark-background images.
    """
    delta = torch.minimum(torch.maximum(delta, low), high)
    if mask is None:
        return delta
    for _ in range(max(1, int(iterations))):
        delta = torch.minimum(torch.maximum(project_band(delta, mask), low), high)
    return delta


def band_energy_fraction(delta: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Share of a perturbation's spectral energy inside the band `mask` (1.0 for no mask)."""
    if mask is None:
        return 1.0
    power = torch.fft.rfft2(delta.double()).abs() ** 2
    # rfft2 stores the non-redundant half: columns other than 0 (and W/2) stand for two bins.
    weight = torch.full(power.shape[-1:], 2.0, dtype=power.dtype, device=power.device)
    weight[0] = 1.0
    if delta.shape[-1] % 2 == 0:
        weight[-1] = 1.0
    total = (power * weight).sum()
    inside = (power * weight)[..., mask].sum()
    return float(inside / total) if total > 0 else 1.0


def _stats(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=like.device)
    if t.dim() == 0:
        t = t.repeat(like.shape[1])
    return t.view(1, -1, 1, 1)


def pgd(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    epsilon: float,
    steps: int = 3,
    step_size: float | None = None,
    band: str = "all",
    band_cutoff: float = 0.125,
    random_start: bool = True,
    loss_scale: float = 1.0,
    generator: torch.Generator | None = None,
    band_iterations: int = 10,
) -> torch.Tensor:
    """L∞ PGD in [0, 1] pixel space, optionally restricted to a frequency band.

    The perturbation δ lives in [0, 1] pixel units: each step adds `step_size·sign(∇)`, then
    projects δ onto the ε-ball intersected with the valid pixel range (x + δ in [0, 1]). For
    `band="all"` that is one clamp. For a band, projections onto the band (FFT mask) and clamps
    alternate `band_iterations` times (`project_band_box`), ending with the clamp: δ stays within
    budget and x + δ a valid image, with its energy in band (≥ 99% measured on Fashion-MNIST's
    dark backgrounds, where one project-then-clip left ~70%).

    Args:
        pixel_values: normalised inputs [B, C, H, W] (e.g. the chosen corrupted view).
        mean, std: the processor's normalisation ([0, 1] scale), per channel or scalar.
        epsilon: L∞ budget in [0, 1] pixel units (0 returns the input unchanged).
        step_size: per-step size in pixel units (default 2.5·ε/steps, Madry et al.).
        loss_scale: multiplies the loss before `autograd.grad` (fp16: use the grad scaler's scale
            so small input gradients do not underflow; the sign step is scale-invariant).
        generator: seeds the random start (resumed runs draw the same start).

    Returns:
        Normalised adversarial pixel values [B, C, H, W], detached, in the input's dtype.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0 (pixel units in [0, 1]), got {epsilon}.")
    if steps < 1:
        raise ValueError(f"PGD needs steps >= 1, got {steps}.")
    if epsilon == 0:
        return pixel_values.detach()
    step_size = 2.5 * epsilon / steps if step_size is None else float(step_size)
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}.")
    mean_t, std_t = _stats(mean, pixel_values), _stats(std, pixel_values)
    x01 = (pixel_values.detach().float() * std_t + mean_t).clamp(0.0, 1.0)
    mask = band_mask(*x01.shape[-2:], band=band, cutoff=band_cutoff, device=x01.device)
    # The box: the ε-ball and a valid image (x + δ in [0, 1]).
    low, high = (-x01).clamp(min=-epsilon), (1.0 - x01).clamp(max=epsilon)

    def project(delta: torch.Tensor) -> torch.Tensor:
        return project_band_box(delta, mask, low, high, band_iterations)

    if random_start:
        # Draw on the generator's device (the input's when none is given): a CPU draw of a
        # ViT-B batch and its copy cost more than a PGD step on a GPU.
        where = generator.device if generator is not None else x01.device
        noise = torch.rand(x01.shape, generator=generator, device=where, dtype=torch.float32)
        delta = project((noise.to(x01.device) * 2 - 1) * epsilon)
    else:
        delta = torch.zeros_like(x01)
    for _ in range(steps):
        delta.requires_grad_(True)
        adv = ((x01 + delta - mean_t) / std_t).to(pixel_values.dtype)
        loss = per_example_loss(model, adv, labels).sum() * loss_scale
        (grad,) = torch.autograd.grad(loss, delta)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                "PGD input gradient is not finite; lower loss_scale or check the model for NaNs."
            )
        delta = project(delta.detach() + step_size * grad.sign())
    return ((x01 + delta - mean_t) / std_t).to(pixel_values.dtype).detach()


def fgsm(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    epsilon: float,
    band: str = "all",
    band_cutoff: float = 0.125,
    loss_scale: float = 1.0,
    band_iterations: int = 10,
) -> torch.Tensor:
    """One signed-gradient step of size ε from the input (PGD with one step, no random start)."""
    return pgd(
        model,
        pixel_values,
        labels,
        mean=mean,
        std=std,
        epsilon=epsilon,
        steps=1,
        step_size=epsilon if epsilon > 0 else None,
        band=band,
        band_cutoff=band_cutoff,
        random_start=False,
        loss_scale=loss_scale,
        band_iterations=band_iterations,
    )


def step_generator(
    seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded from (seed, step, rank): PGD random starts repeat after a resume.

    The seed is ``seeding.stream_seed(seed, "pgd_start", step, rank)``, the package's one
    derivation of a named random stream.
    """
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, PGD_START_STREAM, step, rank))
    return g


def linf_pixels(adv: torch.Tensor, ref: torch.Tensor, std: Sequence[float] | torch.Tensor) -> float:
    """‖adv − ref‖∞ in [0, 1] pixel units (both normalised); used by tests and logging."""
    diff = (adv.float() - ref.float()) * _stats(std, ref)
    value = diff.abs().max().item()
    return 0.0 if math.isnan(value) else value
