"""The analysis's paired comparisons and statistics on simulated data with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vitrobust.analysis.comparisons import (
    entropy_records,
    first_correct_records,
    paired_wilcoxon_many,
)
from hf_vitrobust.analysis.patching import (
    NO_GAIN,
    PatchingRecorder,
    recovery_bootstrap,
    summarize_patching,
)
from hf_vitrobust.analysis.similarity import StreamingLinearCKA, linear_cka
from hf_vitrobust.roles import Pair
from hf_vitrobust.stats import wilcoxon_test

BOOT = dict(n_resamples=1000, confidence=0.95, seed=0)


def test_vectorised_cells_equal_wilcoxon_test_cell_by_cell():
    rng = np.random.default_rng(0)
    ref = np.round(rng.normal(size=(40, 5)) * 8) / 8  # + 0.5 below is exact
    model = ref + rng.normal(0.2, 1.0, size=(40, 5))
    model[:, 3] = ref[:, 3]  # no difference at all: p = 1, CI (0, 0)
    model[:, 4] = ref[:, 4] + 0.5  # a constant shift: a point CI
    cells = paired_wilcoxon_many(ref, model, **BOOT)
    for j, cell in enumerate(cells):
        direct = wilcoxon_test(ref[:, j], model[:, j], **BOOT).to_dict()
        mine = cell.to_dict()
        assert mine.pop("details") == pytest.approx(direct.pop("details"))
        assert mine == pytest.approx(direct)
    assert cells[3].p_value == 1.0 and (cells[3].ci_low, cells[3].ci_high) == (0.0, 0.0)
    assert cells[4].ci_low == cells[4].ci_high == pytest.approx(0.5)


def _correlated_study(rng, n, cells, rho, effect=None):
    """Per-image values of a reference and a model: a shared image factor makes the cells
    correlated (rho); `effect` = (cell, shift) adds a true difference to one cell."""

    def draw():
        shared = rng.normal(size=(n, 1))
        return np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(size=(n, cells))

    ref, model = draw(), draw()
    if effect is not None:
        model[:, effect[0]] += effect[1]
    return ref, model


def test_null_cells_are_called_at_the_nominal_rate_and_an_injected_effect_is_found():
    rng = np.random.default_rng(1)
    studies, cells, n = 30, 40, 20  # small n: Wilcoxon's exact null distribution
    rates = []
    for _ in range(studies):
        ref, model = _correlated_study(rng, n, cells, rho=0.6)
        rates.append(np.mean([c.p_value < 0.05 for c in paired_wilcoxon_many(ref, model, **BOOT)]))
    # Cells within a study are correlated: the study is the unit of the sampling error.
    rate, error = np.mean(rates), np.std(rates, ddof=1) / np.sqrt(studies)
    assert rate <= 0.05 + 3 * error, (rate, error)
    ref, model = _correlated_study(rng, 60, cells, rho=0.6, effect=(7, 1.0))
    result = paired_wilcoxon_many(ref, model, **BOOT)
    hit = result[7]
    assert hit.p_value < 1e-4 and hit.ci_low > 0 and hit.ci_low <= 1.0 <= hit.ci_high + 0.3
    assert hit.estimate == pytest.approx(np.mean(model[:, 7] - ref[:, 7]))
    assert hit.p_value == min(c.p_value for c in result)


def test_first_correct_records_pair_images_correct_for_both_at_the_last_layer():
    n, layers = 30, 6  # hidden states 0..6
    ref = np.zeros((n, layers + 1), bool)
    ref[:, 3:] = True  # first = stable = 3 for every image
    model = np.zeros_like(ref)
    model[:, 4:] = True  # one layer later everywhere...
    model[:5, -1] = False  # ...but wrong at the last layer on 5 images: not paired
    model[5:10, 2] = True  # a blip at layer 2: first = 2, stable still 4
    model[:, 0] = True  # right at l = 0 (the constant embedding): must not count
    records = first_correct_records({"base": ref, "ft": model}, [Pair("ft", "base", "base")],
                                    "clean", BOOT)  # fmt: skip
    by_metric = {r["metric"]: r for r in records}
    stable = by_metric["first_always_correct_layer"]
    assert stable["n_images"] == stable["n"] == 25
    assert stable["estimate"] == 1.0 and (stable["ci_low"], stable["ci_high"]) == (1.0, 1.0)
    assert (stable["model_mean"], stable["reference_mean"]) == (4.0, 3.0)
    first = by_metric["first_correct_layer"]
    assert first["estimate"] == pytest.approx((20 * 1 + 5 * -1) / 25)
    assert first["model"] == "ft" and first["reference_role"] == "base"
    assert first["test"] == "wilcoxon_signed_rank" and first["p_value"] < 0.05
    # Fewer than two images correct for both: no record (the claim cannot be judged there).
    model[2:, -1] = False
    assert first_correct_records({"base": ref, "ft": model}, [Pair("ft", "base", "base")],
                                 "clean", BOOT) == []  # fmt: skip


def test_entropy_records_find_the_changed_head_per_layer_and_per_head():
    rng = np.random.default_rng(2)
    n, layers, heads = 50, 3, 4
    base = rng.normal(2.0, 0.3, size=(n, layers, heads)).astype(np.float32)
    ft = base + rng.normal(0.0, 0.05, size=base.shape).astype(np.float32)
    ft[:, 1, 2] += 0.4  # block 2, head 2 more diffuse
    entropy = {"base": {"all_queries": base, "cls_query": base},
               "ft": {"all_queries": ft, "cls_query": base}}  # fmt: skip
    records = entropy_records(entropy, [Pair("ft", "base", "base")], "noise", BOOT)
    assert len(records) == 2 * (layers + layers * heads)
    cells = {(r["metric"], r["layer"], r["head"]): r for r in records}
    changed = cells[("attention_entropy", 2, 2)]
    assert changed["ci_low"] > 0.35 and changed["p_value"] < 1e-6
    per_layer = cells[("attention_entropy", 2, None)]
    assert per_layer["estimate"] == pytest.approx(np.mean((ft - base)[:, 1].mean(axis=1)), 1e-6)
    assert per_layer["estimate"] == pytest.approx(0.1, abs=0.02)
    unchanged = cells[("attention_entropy_cls", 2, 2)]
    assert unchanged["estimate"] == 0.0 and unchanged["p_value"] == 1.0
    assert all(r["scope"] == "noise" for r in records)


def test_patching_ci_is_finite_when_resamples_have_no_gain():
    # B gets one image more right than A: a third of the resamples never draw it (zero gain).
    n = 12
    a = np.zeros(n, bool)
    b = a.copy()
    b[0] = True
    patched = np.column_stack([a, b, np.arange(n) < 1])  # recovers 0, all, all
    boot = recovery_bootstrap(a, b, patched, **BOOT)
    assert 200 < boot["zero_gain_resamples"] < 500
    assert np.isfinite(boot["ci_low"]).all() and np.isfinite(boot["ci_high"]).all()
    assert boot["ci_low"].tolist() == [0.0, 1.0, 1.0] and boot["ci_high"].tolist() == [0, 1, 1]
    # The ratio of means in each resample, by hand, on the same seeded draws.
    rng = np.random.default_rng(BOOT["seed"])
    index = rng.integers(0, n, (1000, n))
    rng_a = np.random.default_rng(3)
    a2, b2 = rng_a.random(n) < 0.3, rng_a.random(n) < 0.6
    p2 = rng_a.random((n, 2)) < 0.45
    gains = b2[index].mean(1) - a2[index].mean(1)
    kept = gains != 0
    ratios = (p2[index].mean(1)[kept] - a2[index].mean(1)[kept, None]) / gains[kept, None]
    boot2 = recovery_bootstrap(a2, b2, p2, **BOOT)
    np.testing.assert_allclose(boot2["ci_low"], np.quantile(ratios, 0.025, axis=0))
    np.testing.assert_allclose(boot2["ci_high"], np.quantile(ratios, 0.975, axis=0))
    assert boot2["zero_gain_resamples"] == int((~kept).sum())
    # Through the recorder, from logits (the path the analysis takes), at a site that is
    # neither A nor B (before: NaN CI whenever a resample had no gain).
    labels = torch.zeros(n, dtype=torch.long)

    def logits(correct):  # class 0 (the label) wins where correct, class 1 elsewhere
        return torch.nn.functional.one_hot(torch.as_tensor(~correct).long(), 2).float()

    a3, b3, half = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    a3[0], b3[1:3], half[1] = True, True, True  # B: 2 right where A had 1 right
    recorder = PatchingRecorder()
    sites = torch.stack([logits(a3), logits(b3), logits(half)])
    recorder.update(logits(a3), logits(b3), sites, labels)
    summary = recorder.summary(**BOOT)
    assert summary["zero_gain_resamples"] > 100
    # B's gain (1 image of 12) is not distinguishable from zero: no gain to recover, so the
    # fractions have no CI (null, with the reason), whatever the resamples gave.
    assert not summary["gain"]["excludes_zero"]
    assert summary["ci_reason"].startswith(NO_GAIN)
    for site in summary["per_layer"]:
        assert site["ci_low"] is None and site["ci_high"] is None
        assert site["ci_reason"] == summary["ci_reason"]
    # No gain at all: the fraction and its CI are undefined (null), never NaN.
    none = summarize_patching({"correct_a": a, "correct_b": a, "correct_patched": patched}, **BOOT)
    assert none["per_layer"][2]["recovered"] is None and none["per_layer"][2]["ci_low"] is None


def test_patching_ci_is_null_without_a_gain_and_covers_the_truth_with_one():
    """Simulated patching with known truth on 400 images. No gain (B = A on every image but a
    few flips each way): the old CI was finite (a ratio of near-zero gains, hundreds wide); now
    it is null with "no gain to recover". A 30 pp gain of which site 1 carries half: its CI
    holds 0.5, site 0 (nothing) holds 0 and site 2 (all) holds 1."""
    rng = np.random.default_rng(4)
    n = 400
    a = rng.uniform(size=n) < 0.5
    flips = rng.uniform(size=n) < 0.03
    b = a ^ flips  # ~6 images each way: no gain
    patched = np.column_stack([a, a ^ (flips & (rng.uniform(size=n) < 0.5)), b])
    summary = summarize_patching(
        {"correct_a": a, "correct_b": b, "correct_patched": patched}, **BOOT
    )
    assert not summary["gain"]["excludes_zero"]
    assert summary["ci_reason"].startswith(NO_GAIN)
    assert all(s["ci_low"] is None and s["ci_high"] is None for s in summary["per_layer"])
    # A real gain: B right on 60% more of A's errors; patching site 1 recovers half of them.
    gained = ~a & (rng.uniform(size=n) < 0.6)
    b = a | gained
    half = gained & (rng.uniform(size=n) < 0.5)
    patched = np.column_stack([a, a | half, b])
    summary = summarize_patching(
        {"correct_a": a, "correct_b": b, "correct_patched": patched}, **BOOT
    )
    assert summary["gain"]["excludes_zero"] and summary["ci_reason"] is None
    for site, truth in zip(summary["per_layer"], (0.0, 0.5, 1.0)):
        assert site["ci_reason"] is None
        assert site["ci_low"] <= truth <= site["ci_high"], (site, truth)


def test_cka_sums_of_several_parts_merge_exactly():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 300, 12, generator=gen) * 3 + 40.0  # large means, as in ViT streams
    y = torch.stack([x[0] @ torch.randn(12, 6, generator=gen), torch.randn(300, 6, generator=gen)])
    y = y + torch.randn(2, 300, 6, generator=gen) - 25.0
    whole, parts = StreamingLinearCKA(), []
    for start, stop in ((0, 7), (7, 180), (180, 300)):  # uneven shards, each its own shift
        part = StreamingLinearCKA()
        for s in range(start, stop, 50):
            part.update(x[:, s : min(s + 50, stop)], y[:, s : min(s + 50, stop)])
            whole.update(x[:, s : min(s + 50, stop)], y[:, s : min(s + 50, stop)])
        parts.append(part)
    merged = StreamingLinearCKA.merged(parts)
    assert merged.n == 300
    np.testing.assert_allclose(merged.compute(), whole.compute(), rtol=1e-10)
    for layer in range(2):
        assert merged.compute()[layer] == pytest.approx(linear_cka(x[layer], y[layer]), rel=1e-9)
    with pytest.raises(ValueError, match="at least one image"):
        StreamingLinearCKA.merged([parts[0], StreamingLinearCKA()])
