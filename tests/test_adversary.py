"""Adversaries on synthetic tensors with a tiny ViT: selection, budgets, bands, purity."""

from __future__ import annotations

import pytest
import torch

from hf_vitrobust.seeding import stream_seed
from hf_vitrobust.training.adversary import (
    band_energy_fraction,
    band_mask,
    eval_mode,
    fgsm,
    gather_views,
    linf_pixels,
    parse_adversary,
    per_example_loss,
    pgd,
    project_band,
    step_generator,
    worst_of_k,
)

MEAN, STD = (0.286,) * 3, (0.353,) * 3


def _normalise(x01: torch.Tensor) -> torch.Tensor:
    return (x01 - MEAN[0]) / STD[0]


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    # Mid-range pixels: no [0, 1] clipping, so band projections are exact.
    x01 = 0.3 + 0.4 * torch.rand(6, 3, 28, 28, generator=g)
    labels = torch.randint(0, 10, (6,), generator=g)
    return _normalise(x01), labels


def test_worst_of_k_picks_highest_loss_view(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    g = torch.Generator().manual_seed(1)
    views = torch.stack([x + 0.5 * i * torch.randn(x.shape, generator=g) for i in range(4)], 1)
    index, losses = worst_of_k(model, views, labels)
    assert index.shape == (6,) and losses.shape == (6, 4)
    for j in range(4):
        expected = per_example_loss(model, views[:, j], labels).detach()
        torch.testing.assert_close(losses[:, j], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(index, losses.argmax(1))
    chosen = gather_views(views, index)
    torch.testing.assert_close(chosen[2], views[2, index[2]])
    # Chunked scoring gives the same answer.
    index2, losses2 = worst_of_k(model, views, labels, chunk_size=5)
    assert torch.equal(index, index2)
    torch.testing.assert_close(losses, losses2, rtol=1e-4, atol=1e-5)


def test_worst_of_k_rejects_bad_shapes(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    with pytest.raises(ValueError, match="B, k, C, H, W"):
        worst_of_k(model, x, labels)
    with pytest.raises(ValueError, match="labels"):
        worst_of_k(model, x[:, None], labels[:3])


@pytest.mark.parametrize("steps", [1, 3])
def test_pgd_respects_budget_and_raises_loss(tiny_model, batch, steps):
    model, _ = tiny_model
    x, labels = batch
    eps = 8 / 255
    adv = pgd(
        model,
        x,
        labels,
        mean=MEAN,
        std=STD,
        epsilon=eps,
        steps=steps,
        generator=step_generator(0, 0),
    )
    assert adv.shape == x.shape and not adv.requires_grad
    assert linf_pixels(adv, x, STD) <= eps + 1e-5
    x01 = adv * STD[0] + MEAN[0]
    assert x01.min() >= -1e-6 and x01.max() <= 1 + 1e-6
    clean = per_example_loss(model, x, labels).sum()
    attacked = per_example_loss(model, adv, labels).sum()
    assert attacked > clean
    # Inputs-only gradients: no parameter gradient is left behind.
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_is_one_full_signed_step(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    eps = 4 / 255
    adv = fgsm(model, x, labels, mean=MEAN, std=STD, epsilon=eps)
    delta = (adv - x) * STD[0]
    # Every pixel moves by exactly ±ε (no clipping for mid-range pixels).
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, eps), atol=1e-5, rtol=0)
    assert per_example_loss(model, adv, labels).sum() > per_example_loss(model, x, labels).sum()


@pytest.mark.parametrize("band", ["low", "high"])
def test_band_limited_pgd_stays_in_band(tiny_model, batch, band):
    model, _ = tiny_model
    x, labels = batch
    eps = 8 / 255
    adv = pgd(
        model, x, labels, mean=MEAN, std=STD, epsilon=eps, steps=3, band=band, band_cutoff=0.25
    )
    delta = (adv - x) * STD[0]
    assert linf_pixels(adv, x, STD) <= eps + 1e-5
    assert delta.abs().max() > eps / 4  # it did move
    assert band_energy_fraction(delta, band_mask(28, 28, band, cutoff=0.25)) > 0.99


@pytest.fixture(scope="module")
def dark_images(fashion_mnist_dir):
    """Fashion-MNIST test images: garments on black (~60% of pixels at 0), normalised."""
    from hf_vitrobust.data import decode_image, load_image_dataset

    rows = load_image_dataset("fashion_mnist", "test", max_examples=16)
    x01 = torch.stack(
        [torch.from_numpy(decode_image(r["image"]).copy()).permute(2, 0, 1) / 255.0 for r in rows]
    )
    assert (x01 < 0.01).float().mean() > 0.4
    return _normalise(x01), torch.tensor(rows["label"])


@pytest.mark.parametrize("band", ["low", "high"])
def test_band_limited_pgd_stays_in_band_after_clipping_dark_images(tiny_model, dark_images, band):
    """Clipping to [0, 1] binds on every black pixel; the final perturbation keeps >= 95% of its
    energy in band (the former project, rescale, then clip update kept 92% of it, high band)."""
    model, _ = tiny_model
    x, labels = dark_images
    eps = 8 / 255
    mask = band_mask(28, 28, band, cutoff=0.125)
    adv = pgd(model, x, labels, mean=MEAN, std=STD, epsilon=eps, steps=3, band=band,
              generator=step_generator(0, 0))  # fmt: skip
    x01, adv01 = x * STD[0] + MEAN[0], adv * STD[0] + MEAN[0]
    assert adv01.min() >= -1e-6 and adv01.max() <= 1 + 1e-6  # a valid image
    assert linf_pixels(adv, x, STD) <= eps + 1e-5
    delta = adv01 - x01
    assert delta.abs().max() > eps / 8  # it did move
    assert band_energy_fraction(delta, mask) >= 0.95


def test_band_energy_fraction_counts_the_whole_spectrum():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(2, 3, 28, 27, generator=g, dtype=torch.float64)
    low, high = band_mask(28, 27, "low"), band_mask(28, 27, "high")
    a, b = band_energy_fraction(d, low), band_energy_fraction(d, high)
    assert a + b == pytest.approx(1.0)
    # Parseval: the in-band share equals that of the band-projected signal's energy.
    assert a == pytest.approx(float((project_band(d, low) ** 2).sum() / (d**2).sum()))


def test_band_mask_partitions_the_spectrum():
    low, high = band_mask(28, 28, "low"), band_mask(28, 28, "high")
    assert torch.equal(low, ~high) and low[0, 0] and not high[0, 0]
    assert band_mask(28, 28, "all") is None
    d = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(project_band(d, low) + project_band(d, high), d)
    with pytest.raises(ValueError, match="band"):
        band_mask(28, 28, "mid")
    with pytest.raises(ValueError, match="cutoff"):
        band_mask(28, 28, "low", cutoff=1.5)


def test_pgd_is_deterministic_given_generator(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    kw = dict(mean=MEAN, std=STD, epsilon=4 / 255, steps=2)
    a = pgd(model, x, labels, generator=step_generator(3, 10), **kw)
    b = pgd(model, x, labels, generator=step_generator(3, 10), **kw)
    c = pgd(model, x, labels, generator=step_generator(3, 11), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_step_generator_uses_the_package_stream_seed():
    expected = torch.Generator().manual_seed(stream_seed(3, "pgd_start", 10, 1))
    got = step_generator(3, 10, rank=1)
    assert torch.equal(torch.rand(4, generator=got), torch.rand(4, generator=expected))
    other_rank = step_generator(3, 10, rank=0)
    assert not torch.equal(torch.rand(4, generator=other_rank), torch.rand(4, generator=expected))


def test_pgd_rejects_bad_settings_and_zero_epsilon_is_identity(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    with pytest.raises(ValueError, match="epsilon"):
        pgd(model, x, labels, mean=MEAN, std=STD, epsilon=-0.1)
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, labels, mean=MEAN, std=STD, epsilon=0.1, steps=0)
    assert torch.equal(pgd(model, x, labels, mean=MEAN, std=STD, epsilon=0.0), x)


def test_loss_scale_does_not_change_the_attack(tiny_model, batch):
    model, _ = tiny_model
    x, labels = batch
    kw = dict(mean=MEAN, std=STD, epsilon=4 / 255, steps=2, random_start=False)
    a = pgd(model, x, labels, **kw)
    b = pgd(model, x, labels, loss_scale=1024.0, **kw)
    torch.testing.assert_close(a, b)


def test_eval_mode_restores_training_mode(tiny_model):
    model, _ = tiny_model
    model.train()
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_parse_adversary():
    assert parse_adversary("none").perturbation is None
    random_view = parse_adversary("random_view")
    assert random_view.random_view and not random_view.select_worst
    assert random_view.perturbation is None
    assert parse_adversary("worst_of_k").select_worst
    plan = parse_adversary("worst_of_k+pgd")
    assert plan.select_worst and plan.perturbation == "pgd"
    assert parse_adversary("fgsm").perturbation == "fgsm"
    with pytest.raises(ValueError, match="Unknown adversary"):
        parse_adversary("cw")
