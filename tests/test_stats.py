"""hf_vitrobust.stats: bootstrap CIs against known distributions, exact paired tests by hand,
symmetry properties (hypothesis), multiple-comparison corrections and equivalence primitives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst
from scipy.stats import false_discovery_control

from hf_vitrobust.stats import (
    ABOVE,
    BELOW,
    INSIDE,
    NO_DIFFERENCE_CI,
    UNDECIDED,
    PairedComparison,
    adjust_p_values,
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_ci_many,
    holm,
    interval_position,
    mcnemar_test,
    min_effect_p,
    no_difference_interval,
    paired_bootstrap,
    significant,
    smallest_attainable_p,
    wilcoxon_test,
)


def _coverage(method_n: int, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for t in range(trials):
        # Exponential(1): skewed, true mean 1.
        x = rng.exponential(1.0, size=method_n)
        low, high = bootstrap_ci(x, n_resamples=1000, seed=t)
        hits += low <= 1.0 <= high
    return hits / trials


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    # 200 trials: a 95% interval's coverage has binomial sd ~1.5%, so [0.89, 0.99] is ~4 sd wide;
    # a broken interval (e.g. the sd instead of the standard error) fails by a wide margin.
    coverage = _coverage(method_n=60, trials=200, seed=123)
    assert 0.89 <= coverage <= 0.99, coverage


def test_bootstrap_ci_percentile_branch_width_matches_normal_theory():
    # Above BCA_MAX_N the percentile interval is used; its width must match 2·1.96·σ/√n.
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=6000)
    low, high = bootstrap_ci(x, seed=1)
    expected = 2 * 1.959964 * x.std(ddof=1) / math.sqrt(x.size)
    assert low < x.mean() < high
    assert abs((high - low) - expected) / expected < 0.1


def test_bootstrap_ci_is_seeded_and_degenerate_is_a_point():
    x = np.random.default_rng(5).normal(size=100)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0)


def test_bootstrap_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="minimum of 1000"):
        bootstrap_ci([1.0, 2.0, 3.0], n_resamples=100)


def test_bootstrap_ci_many_matches_rowwise():
    rng = np.random.default_rng(2)
    rows = np.stack([rng.normal(size=80), rng.integers(0, 2, 80).astype(float), np.full(80, 0.5)])
    many = bootstrap_ci_many(rows, seed=4)
    assert many.shape == (3, 2)
    assert tuple(many[2]) == (0.5, 0.5)
    for i in range(2):
        low, high = bootstrap_ci(rows[i], seed=4)
        assert many[i, 0] <= rows[i].mean() <= many[i, 1]
        # Same seed, same first-row resamples; the others share indices so agree closely.
        assert abs(many[i, 0] - low) < 0.1 and abs(many[i, 1] - high) < 0.1


def test_mcnemar_matches_hand_computed_binomial():
    # 3 images both right, a_only = 1 (a right, b wrong), b_only = 5 (b right, a wrong), 1 both wrong.
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    b = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0], dtype=bool)
    result = mcnemar_test(a, b)
    # Exact two-sided binomial, 6 discordant pairs, 5 of them for b:
    # P = 2 · P(X ≤ 1 | n=6, p=½) = 2 · (1 + 6) / 64 = 14/64.
    assert result.p_value == pytest.approx(14 / 64)
    assert result.details == {"a_only": 1, "b_only": 5}
    assert result.estimate == pytest.approx(0.4)  # 8/10 − 4/10
    assert result.ci_low <= 0.4 <= result.ci_high
    assert result.test == "mcnemar_exact" and result.n == 10


def test_mcnemar_no_discordant_pairs_and_errors():
    a = np.array([1, 0, 1, 1])
    r = mcnemar_test(a, a)
    bound = 1 - 0.025 ** (1 / 4)  # exact upper bound on the discordant rate at 0 of 4
    assert r.p_value == 1.0 and r.estimate == 0.0
    assert (r.ci_low, r.ci_high) == pytest.approx((-bound, bound))
    assert r.ci_method == NO_DIFFERENCE_CI and not r.excludes_zero
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_test([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="paired"):
        mcnemar_test([1, 0, 1], [1, 0])


def test_paired_bootstrap_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(3)
    base = rng.normal(size=400)
    shifted = base + 0.2 + rng.normal(scale=0.1, size=400)
    r = paired_bootstrap(base, shifted, seed=0)
    assert isinstance(r, PairedComparison)
    assert r.estimate == pytest.approx(float(np.mean(shifted - base)))
    assert r.excludes_zero and r.ci_low > 0.1 and r.p_value < 0.01
    # Pairing matters: the per-image noise of `base` cancels, so the paired CI is far narrower
    # than the unpaired spread of either sample.
    assert (r.ci_high - r.ci_low) < 0.1
    null = paired_bootstrap(base, base + rng.normal(scale=0.1, size=400), seed=0)
    assert null.p_value > 0.01 and not null.excludes_zero
    d = r.to_dict()
    assert d["excludes_zero"] is True and d["n_resamples"] == 2000 and d["seed"] == 0


def test_wilcoxon_matches_scipy_and_hand_value():
    # Differences 1..6 all positive: exact two-sided p = 2 / 2^6.
    a = np.zeros(6)
    b = np.arange(1, 7, dtype=float)
    r = wilcoxon_test(a, b)
    assert r.p_value == pytest.approx(2 / 64)
    assert r.estimate == pytest.approx(3.5)
    assert r.ci_low < 3.5 < r.ci_high
    assert wilcoxon_test(a, a).p_value == 1.0


def test_custom_statistic_on_stacked_per_image_values():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(3, 150))  # 3 per-image quantities, images on the last axis
    b = a + 0.5

    def mean_of_rows(x, axis=-1):
        return x.mean(axis=axis).mean(axis=0)

    r = paired_bootstrap(a, b, statistic=mean_of_rows, seed=1)
    assert r.estimate == pytest.approx(0.5) and r.ci_low == r.ci_high == pytest.approx(0.5)
    b = a + rng.normal(0.3, 0.2, size=a.shape)
    r = paired_bootstrap(a, b, statistic=mean_of_rows, seed=1)
    assert r.ci_low < float((b - a).mean()) < r.ci_high and r.p_value < 0.01
    low, high = bootstrap_ci(a, mean_of_rows, seed=1)
    assert low < a.mean() < high


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis): swapping the models negates a difference; the CI holds the estimate
# ---------------------------------------------------------------------------------------------

_values = st.floats(-100, 100, allow_nan=False, width=32)


def _paired(draw_values, data, size_min=2, size_max=60):
    a = data.draw(st.lists(draw_values, min_size=size_min, max_size=size_max))
    b = data.draw(st.lists(draw_values, min_size=len(a), max_size=len(a)))
    return np.array(a, dtype=float), np.array(b, dtype=float)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_swapping_models_negates_a_paired_difference(data, seed):
    a, b = _paired(_values, data)
    for test in (paired_bootstrap, wilcoxon_test):
        ab = test(a, b, n_resamples=1000, seed=seed)
        ba = test(b, a, n_resamples=1000, seed=seed)
        tolerance = 1e-6 * (1 + abs(ab.ci_low) + abs(ab.ci_high))
        assert ba.estimate == pytest.approx(-ab.estimate, abs=1e-9)
        assert ba.p_value == pytest.approx(ab.p_value)
        assert abs(ba.ci_low + ab.ci_high) <= tolerance and abs(ba.ci_high + ab.ci_low) <= tolerance
        assert ab.ci_low - tolerance <= ab.estimate <= ab.ci_high + tolerance, ab


@settings(max_examples=60, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_swapping_models_negates_an_accuracy_difference(data, seed):
    a, b = _paired(st.booleans(), data, size_max=120)
    ab = mcnemar_test(a, b, n_resamples=1000, seed=seed)
    ba = mcnemar_test(b, a, n_resamples=1000, seed=seed)
    assert ba.estimate == -ab.estimate and ba.p_value == ab.p_value
    assert ba.details == {"a_only": ab.details["b_only"], "b_only": ab.details["a_only"]}
    assert (ba.ci_low, ba.ci_high) == pytest.approx((-ab.ci_high, -ab.ci_low))
    assert ab.ci_low <= ab.estimate <= ab.ci_high


# ---------------------------------------------------------------------------------------------
# Multiple-comparison corrections and equivalence primitives
# ---------------------------------------------------------------------------------------------


def test_holm_matches_the_hand_computed_step_down():
    # Sorted: .01 .03 .04 .5 -> x4 x3 x2 x1 = .04 .09 .08 .5 -> running max .04 .09 .09 .5.
    assert holm([0.04, 0.01, 0.5, 0.03]) == pytest.approx([0.09, 0.04, 0.5, 0.09])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]).shape == (0,)
    # Each row of a 2-D array is its own family.
    rows = np.array([[0.04, 0.01, 0.5, 0.03], [0.2, 0.2, 0.2, 0.2]])
    assert holm(rows)[0] == pytest.approx(holm(rows[0])) and holm(rows)[1] == pytest.approx(0.8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_corrections_are_monotone_and_bounded(p):
    p = np.array(p)
    for adjusted in (holm(p), benjamini_hochberg(p)):
        assert np.all(adjusted >= p - 1e-15) and np.all(adjusted <= 1)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adjusted[order]) >= -1e-15)  # same order as the raw p-values
    # Holm is never more lenient than BH, nor than Bonferroni on the smallest p-value.
    assert np.all(holm(p) >= benjamini_hochberg(p) - 1e-12)
    assert holm(p).min() == pytest.approx(min(1.0, p.min() * p.size))


def test_benjamini_hochberg_is_scipys_and_bad_input_is_named():
    p = [0.01, 0.04, 0.03, 0.5]
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh"))
    assert adjust_p_values(p, "bh") == pytest.approx(benjamini_hochberg(p))
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p_values(p, "bonferroni")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.2])
    assert smallest_attainable_p("paired_bootstrap", 999) == pytest.approx(1e-3)
    assert smallest_attainable_p("wilcoxon_signed_rank", 999) == 0.0  # nothing known: 0


def test_interval_position():
    assert interval_position(-0.01, 0.01, -0.02, 0.02) == INSIDE
    assert interval_position(0.03, 0.05, -0.02, 0.02) == ABOVE
    assert interval_position(-0.05, -0.03, -0.02, 0.02) == BELOW
    assert interval_position(0.0, 0.03, -0.02, 0.02) == UNDECIDED
    assert interval_position(-0.02, 0.01, -0.02, 0.02) == UNDECIDED  # touching is not inside
    assert interval_position(0.02, 0.03, 0.01, 0.01) == ABOVE  # a floor is a band of width 0
    with pytest.raises(ValueError, match="finite"):
        interval_position(float("nan"), 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="low <= high"):
        interval_position(0.2, 0.1, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Tiny samples: no zero-width intervals, true smallest p-values, the minimum-effect test
# ---------------------------------------------------------------------------------------------


def test_no_discordant_pairs_give_an_interval_that_covers_the_truth():
    """Simulated studies of 10 images with a true accuracy gain of 0.1 (b right wherever a is,
    and on 10% more images): a third of them see no discordant pair. Their old CI [0, 0]
    excluded the truth; the exact interval ±(1 − 0.025^(1/10)) = ±0.31 covers it."""
    rng = np.random.default_rng(0)
    zero_width, covered = 0, 0
    for study in range(300):
        a = rng.uniform(size=10) < 0.5
        b = a | (rng.uniform(size=10) < 0.2)  # gains an image w.p. 0.2 · P(a wrong) = 0.1
        r = mcnemar_test(a, b, n_resamples=1000, seed=study)
        if r.details["a_only"] + r.details["b_only"] == 0:
            zero_width += r.ci_low == r.ci_high
            covered += r.ci_low <= 0.1 <= r.ci_high
            assert r.ci_method == NO_DIFFERENCE_CI
            assert r.ci_high == pytest.approx(no_difference_interval(10)[1])
    assert zero_width == 0 and covered >= 60  # P(no discordant pair) = 0.9^10 ≈ 0.35
    # Pooled accuracies (per-image fractions) with no difference get the same bound.
    pooled = paired_bootstrap(np.full(3, 0.5), np.full(3, 0.5))
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx(no_difference_interval(3))
    assert pooled.ci_high == pytest.approx(1 - 0.025 ** (1 / 3))


def test_smallest_attainable_p_of_exact_and_rank_tests():
    # McNemar with d discordant pairs all one way: 2 · 0.5^d.
    a = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    b = np.array([1, 1, 1, 1, 1, 1, 1, 1])
    r = mcnemar_test(a, b)
    assert r.p_value == pytest.approx(0.25)  # 3 discordant pairs, all for b: the extreme
    assert smallest_attainable_p(r.test, r.n_resamples, r.details, r.n) == pytest.approx(0.25)
    # From the counts alone (records written before `smallest_p` was recorded).
    counts = {"a_only": 0, "b_only": 3}
    assert smallest_attainable_p("mcnemar_exact", details=counts) == pytest.approx(0.25)
    assert smallest_attainable_p("mcnemar_exact", details={"a_only": 0, "b_only": 0}) == 1.0
    # Wilcoxon, exact: 2 / 2^m with m non-zero differences; the test reaches it.
    w = wilcoxon_test(np.zeros(6), np.arange(1, 7.0))
    assert w.details["smallest_p"] == pytest.approx(2 / 64) == w.p_value
    m6 = {"nonzero_differences": 6}
    assert smallest_attainable_p("wilcoxon_signed_rank", details=m6, n=6) == pytest.approx(2 / 64)
    # Ties and zeros (the normal approximation): the recorded value is what scipy gives for the
    # most extreme signs, and the bound from the counts never exceeds it.
    d = np.repeat([0.0, 1.0, 2.0], [30, 20, 10])
    tied = wilcoxon_test(np.zeros(60), d)
    extreme = tied.details["smallest_p"]
    assert extreme == pytest.approx(wilcoxon_test(np.zeros(60), d).p_value)
    counts = {"nonzero_differences": 30}
    assert 0 < smallest_attainable_p("wilcoxon_signed_rank", details=counts, n=60) <= extreme


def test_min_effect_p_by_hand_and_at_the_floor():
    se = 0.01
    half = 1.959964 * se
    # Far above the floor: Φ((f − a)/se) + Φ(−(a + f)/se).
    p = min_effect_p(0.1, 0.1 - half, 0.1 + half, 0.05)
    assert p == pytest.approx(sst.norm.cdf(-5.0) + sst.norm.cdf(-15.0), rel=1e-6)
    # Floor 0: the two-sided test of a zero difference.
    assert min_effect_p(0.03, 0.03 - half, 0.03 + half, 0.0) == pytest.approx(
        2 * sst.norm.sf(3.0), rel=1e-6
    )
    # Symmetric in the sign; inside the floor p ≥ 0.5; the side facing the floor is used.
    assert min_effect_p(-0.1, -0.1 - half, -0.1 + half, 0.05) == pytest.approx(p)
    assert min_effect_p(0.02, 0.0, 0.04, 0.05) > 0.5
    wide_below = min_effect_p(0.1, 0.1 - 2 * half, 0.1 + half, 0.05)
    assert wide_below > p  # a wider lower side (towards the floor) weakens the evidence
    # Simulated estimates at δ = floor: rejected at rate α (one-sided), not half the time.
    rng = np.random.default_rng(1)
    est = 0.05 + se * rng.standard_normal(20_000)
    rate = float((min_effect_p(est, est - half, est + half, 0.05) < 0.05).mean())
    assert 0.04 < rate < 0.06, rate


def test_significant_is_the_corrected_decision():
    p = [0.01, 0.2, None, 0.001, float("nan")]
    # Holm over 5: 0.001·5 = 0.005 < .05 passes, 0.01·4 = 0.04 < .05 passes.
    assert significant(p).tolist() == [True, False, False, True, False]
    assert significant(p, alpha=0.01).tolist() == [False, False, False, True, False]
    assert significant([]).shape == (0,)
