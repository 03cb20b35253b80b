"""Bootstrap confidence intervals and paired tests for base-vs-fine-tuned comparisons.

Every comparison in the toolkit is paired: both models see the same images, so the unit of
resampling is the image and the difference is taken per image before resampling. All functions
are built on `scipy.stats` (`bootstrap`, `wilcoxon`, `binomtest`) and are seeded, so the same
inputs always give the same interval.

Interval method: BCa (bias-corrected and accelerated) up to `BCA_MAX_N` values; above that the
jackknife inside BCa costs O(n²) and the percentile interval is used (at that size the two agree
to well within the Monte Carlo error). The method used is recorded in every result.

A sample whose paired differences are all zero has no bootstrap spread; for values in [0, 1]
(correctness, accuracy fractions, probabilities) its interval is the exact bound
±(1 − (α/2)^(1/n)) on the share of images that differ (`no_difference_interval`), never [0, 0].

Primitives of the report's verdict rules live here too: multiple-comparison corrections
(`holm`, `benjamini_hochberg`), where a CI lies relative to a margin (`interval_position`), the
minimum-effect test of |δ| ≤ floor from a CI (`min_effect_p`), the smallest p-value a recorded
test can give (`smallest_attainable_p`), and how many images would decide an undecided CI
(`images_to_resolve`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _st

from hf_vitrobust.formatting import finite

#: Largest sample for which the BCa interval is used (its jackknife is O(n²)).
BCA_MAX_N = 5000
#: Upper bound on resample-matrix elements held at once (memory ~ 8 bytes each).
_MAX_BATCH_ELEMENTS = 20_000_000
#: The toolkit's floor on resamples (docs/definitions.md, Statistics).
MIN_RESAMPLES = 1000
#: `ci_method` of the exact interval of a sample whose paired differences are all zero.
NO_DIFFERENCE_CI = "exact_no_difference"
#: Default level and correction of every significance decision (the report's `VerdictRules`).
ALPHA = 0.05
CORRECTION = "holm"


@dataclass
class PairedComparison:
    """A paired difference (b − a, per image) with its CI and a paired test."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0
    ci_method: str = "BCa"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def excludes_zero(self) -> bool:
        """True when the confidence interval lies entirely on one side of zero."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats), with `excludes_zero` included."""
        out = asdict(self)
        out["excludes_zero"] = self.excludes_zero
        return out


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per image); got {arr.shape}.")
    if arr.size < 2:
        raise ValueError(f"{name} needs at least 2 values for a bootstrap CI; got {arr.size}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or fix them first.")
    return arr


def _check_args(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < MIN_RESAMPLES:
        raise ValueError(
            f"n_resamples={n_resamples} is below the toolkit's minimum of {MIN_RESAMPLES}."
        )
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")


def ci_method_for(n: int) -> str:
    """The interval method used for a sample of size `n` ("BCa" or "percentile")."""
    return "BCa" if n <= BCA_MAX_N else "percentile"


def no_difference_interval(n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The CI of a mean paired difference in [−1, 1] when all `n` observed differences are zero.

    The share of images that differ has the exact (Clopper–Pearson) upper bound
    u = 1 − (α/2)^(1/n) at 0 of n (α = 1 − confidence), and |mean difference| ≤ that share, so
    the interval is (−u, u): ±0.71 at n = 3, ±0.07 at n = 50 — never the zero-width [0, 0].
    """
    upper = 1.0 - ((1.0 - float(confidence)) / 2) ** (1.0 / int(n))
    return -upper, upper


def _bootstrap(
    data: np.ndarray,
    statistic: Callable[..., Any],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> Any:
    """scipy.stats.bootstrap over the last axis of `data` (1-D or [m, n]); seeded, batched."""
    n = data.shape[-1]
    batch = max(1, _MAX_BATCH_ELEMENTS // (n * max(1, data.size // n)))
    with warnings.catch_warnings():
        # BCa on discrete (0/1) data can warn about ties; the interval is still valid.
        warnings.simplefilter("ignore", RuntimeWarning)
        return _st.bootstrap(
            (data,),
            statistic,
            n_resamples=int(n_resamples),
            confidence_level=float(confidence),
            method=ci_method_for(n),
            axis=-1,
            batch=min(batch, int(n_resamples)),
            rng=np.random.default_rng(seed),
        )


def _as_images_last(values: Any, name: str) -> np.ndarray:
    """Any-rank array with images on the last axis (for statistics that reduce the rest)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return _as_1d(arr, name)
    if arr.ndim == 0 or arr.shape[-1] < 2:
        raise ValueError(f"{name} needs images on its last axis (at least 2); got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or fix them first.")
    return arr


def bootstrap_ci(
    values: Any,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Seeded bootstrap confidence interval of `statistic(values)` over images.

    `values` is one value per image (1-D), or an array with images on the last axis when
    `statistic` combines several per-image quantities itself: it is called as
    `statistic(x, axis=-1)` with x of shape `values.shape[:-1] + (resamples..., images)` and must
    return one number per resample (reduce the last axis, then the leading axes). A constant
    sample has the degenerate interval (v, v).
    """
    arr = _as_images_last(values, "values")
    _check_args(n_resamples, confidence)
    if np.ptp(arr, axis=-1).max() == 0:
        v = float(statistic(arr, axis=-1))
        return v, v
    res = _bootstrap(arr, statistic, n_resamples, confidence, seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_ci_many(
    values: Any,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> np.ndarray:
    """CIs of the mean of each row of an [m, n] array, sharing one set of resampled images.

    Returns an [m, 2] array of (low, high). Equivalent to calling `bootstrap_ci` on each row with
    the same seed, but draws the resample indices once (the evaluation computes several metrics
    per cell on the same images).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"values must be [metrics, images]; got shape {arr.shape}.")
    if arr.shape[1] < 2:
        raise ValueError(f"values needs at least 2 images per row; got {arr.shape[1]}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values contains NaN or infinite values; drop or fix them first.")
    _check_args(n_resamples, confidence)
    out = np.empty((arr.shape[0], 2))
    constant = np.ptp(arr, axis=1) == 0
    out[constant] = arr[constant, :1]
    if (~constant).any():
        res = _bootstrap(arr[~constant], np.mean, n_resamples, confidence, seed)
        out[~constant, 0] = res.confidence_interval.low
        out[~constant, 1] = res.confidence_interval.high
    return out


def _paired(a_arr: np.ndarray, b_arr: np.ndarray, names: tuple[str, str]) -> None:
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must be paired (same images, same order); "
            f"got shapes {a_arr.shape} and {b_arr.shape}."
        )


def _comparison(
    estimate: float,
    ci: tuple[float, float],
    p_value: float,
    test: str,
    n: int,
    n_resamples: int,
    confidence: float,
    seed: int,
    details: dict[str, Any] | None = None,
    ci_method: str | None = None,
) -> PairedComparison:
    return PairedComparison(
        estimate=float(estimate),
        ci_low=float(ci[0]),
        ci_high=float(ci[1]),
        p_value=float(p_value),
        test=test,
        n=int(n),
        confidence=float(confidence),
        n_resamples=int(n_resamples),
        seed=int(seed),
        ci_method=ci_method or ci_method_for(n),
        details=details or {},
    )


def _in_unit_interval(*arrays: np.ndarray) -> bool:
    return all(bool(np.all((arr >= 0) & (arr <= 1))) for arr in arrays)


def paired_bootstrap(
    a: Any,
    b: Any,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: Callable[..., Any] | None = None,
) -> PairedComparison:
    """statistic(b) − statistic(a) (default: difference of means) with a paired bootstrap CI.

    Pairing: the same resampled images are used for a and b. With the default mean, this is the
    bootstrap of per-image differences. A custom `statistic` follows `bootstrap_ci`'s convention
    (images on the last axis, called with `axis=-1`), e.g. ECE on stacked (confidence, correct).

    The p-value is the two-sided bootstrap test of a zero difference: the bootstrap distribution
    is shifted to mean zero (the null) and p = (1 + #{|diff*| ≥ |observed|}) / (1 + resamples)
    (Efron & Tibshirani 1993, section 16.4). Values in [0, 1] whose per-image differences are
    all zero get `no_difference_interval` (ci_method `NO_DIFFERENCE_CI`).
    """
    as_array = _as_1d if statistic is None else _as_images_last
    a_arr, b_arr = as_array(a, "a"), as_array(b, "b")
    _paired(a_arr, b_arr, ("a", "b"))
    _check_args(n_resamples, confidence)
    n = int(a_arr.shape[-1])
    if statistic is None:
        data = b_arr - a_arr
        stat: Callable[..., Any] = np.mean
    else:
        # One stacked sample keeps a and b on the same resampled images.
        data = np.stack([a_arr, b_arr])

        def stat(x: np.ndarray, axis: int = -1) -> Any:
            return statistic(x[1], axis=axis) - statistic(x[0], axis=axis)

    estimate = float(stat(data, axis=-1))
    args = ("paired_bootstrap", n, n_resamples, confidence, seed)
    # A point: no image varies, or the statistic's difference does not vary over resamples
    # (e.g. b = a + c). Its p-value is 1 when it is zero, else the smallest p the bootstrap
    # test can give (never an exact 0).
    point_p = 1.0 if estimate == 0 else 1.0 / (1 + int(n_resamples))
    if np.ptp(data, axis=-1).max() == 0:
        if statistic is None and estimate == 0 and _in_unit_interval(a_arr, b_arr):
            ci = no_difference_interval(n, confidence)
            return _comparison(0.0, ci, 1.0, *args, ci_method=NO_DIFFERENCE_CI)
        return _comparison(estimate, (estimate, estimate), point_p, *args)
    res = _bootstrap(data, stat, n_resamples, confidence, seed)
    if np.ptp(res.bootstrap_distribution) <= 1e-12 * max(1.0, abs(estimate)):
        return _comparison(estimate, (estimate, estimate), point_p, *args)
    null = res.bootstrap_distribution - estimate
    p_value = (1 + np.count_nonzero(np.abs(null) >= abs(estimate))) / (1 + null.size)
    ci = (res.confidence_interval.low, res.confidence_interval.high)
    return _comparison(estimate, ci, min(1.0, p_value), *args)


def _difference_test(
    a: Any,
    b: Any,
    names: tuple[str, str],
    test: Callable[[np.ndarray, np.ndarray], tuple[str, float, dict[str, Any]]],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> PairedComparison:
    """A paired test on per-image values: mean(b − a), its bootstrap CI, and `test`'s p-value.

    `test(a, b)` returns (the test's name, its p-value, details).
    """
    a_arr, b_arr = _as_1d(a, names[0]), _as_1d(b, names[1])
    _paired(a_arr, b_arr, names)
    _check_args(n_resamples, confidence)
    name, p_value, details = test(a_arr, b_arr)
    d = b_arr - a_arr
    method = None
    if not d.any() and _in_unit_interval(a_arr, b_arr):
        ci, method = no_difference_interval(d.size, confidence), NO_DIFFERENCE_CI
    elif np.ptp(d) == 0:
        ci = (float(d[0]), float(d[0]))
    else:
        res = _bootstrap(d, np.mean, n_resamples, confidence, seed)
        ci = (res.confidence_interval.low, res.confidence_interval.high)
    args = (name, d.size, n_resamples, confidence, seed, details, method)
    return _comparison(d.mean(), ci, p_value, *args)


def mcnemar_test(
    correct_a: Any,
    correct_b: Any,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """McNemar's exact test of paired correctness, with a bootstrap CI of the accuracy change.

    Estimate: accuracy(b) − accuracy(a). p-value: exact two-sided binomial test (scipy
    `binomtest`, p = 0.5) on the discordant pairs; 1.0 when there are none. The counts of
    discordant pairs are in `details` (`a_only`: a right, b wrong; `b_only`: b right, a wrong;
    their sum d gives the smallest attainable p, 2 · 0.5^d). With no discordant pair the CI is
    the exact ±(1 − (α/2)^(1/n)) (`no_difference_interval`).
    """

    def exact(a: np.ndarray, b: np.ndarray) -> tuple[str, float, dict[str, Any]]:
        for name, arr in (("correct_a", a), ("correct_b", b)):
            if not np.isin(arr, (0.0, 1.0)).all():
                raise ValueError(f"{name} must be per-image correctness (0/1 or bool).")
        a_only = int(np.count_nonzero((a == 1) & (b == 0)))
        b_only = int(np.count_nonzero((a == 0) & (b == 1)))
        discordant = a_only + b_only
        p_value = 1.0 if discordant == 0 else float(_st.binomtest(b_only, discordant, 0.5).pvalue)
        return "mcnemar_exact", p_value, {"a_only": a_only, "b_only": b_only}

    return _difference_test(
        correct_a, correct_b, ("correct_a", "correct_b"), exact, n_resamples, confidence, seed
    )


def wilcoxon_test(
    a: Any,
    b: Any,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Wilcoxon signed-rank test of b − a (scipy), with a bootstrap CI of the mean difference.

    Estimate: mean(b − a) (the same quantity the CI covers); the Wilcoxon p-value tests a
    zero-centred distribution of the per-image differences. Zero differences are dropped
    (`zero_method="wilcox"`); with no non-zero difference the p-value is 1.0.
    """

    def signed_rank(a: np.ndarray, b: np.ndarray) -> tuple[str, float, dict[str, Any]]:
        return ("wilcoxon_signed_rank", *wilcoxon_p(b - a))

    return _difference_test(a, b, ("a", "b"), signed_rank, n_resamples, confidence, seed)


def wilcoxon_p(differences: Any) -> tuple[float, dict[str, Any]]:
    """Two-sided Wilcoxon signed-rank p-value of per-image differences (scipy, zeros dropped;
    1.0 when all are zero) and its details: `nonzero_differences`, `median_difference` and
    `smallest_p`, the p-value of the most extreme outcome with the same |differences| (all of
    one sign; scipy picks the same exact, permutation or normal method for it)."""
    d = np.asarray(differences, dtype=np.float64)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        p_value = smallest = 1.0
    else:
        p_value = float(_st.wilcoxon(d, zero_method="wilcox").pvalue)
        smallest = float(_st.wilcoxon(np.abs(d), zero_method="wilcox").pvalue)
    details = {
        "nonzero_differences": nonzero,
        "median_difference": float(np.median(d)),
        "smallest_p": smallest,
    }
    return p_value, details


# ---------------------------------------------------------------------------------------------
# Multiple comparisons and equivalence: the primitives of the report's verdict rules
# ---------------------------------------------------------------------------------------------

#: Corrections for a family of tests, by the name a recipe uses, with what each controls.
CORRECTIONS = {
    "holm": "Holm's step-down correction (controls the family-wise error rate under any "
    "dependence between the tests)",
    "bh": "the Benjamini–Hochberg correction (controls the false discovery rate for "
    "independent or positively dependent tests)",
}


def _p_values(p_values: Any) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim == 0:
        raise ValueError("p_values must be an array (a family of tests on the last axis).")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p_values must be finite numbers in [0, 1]; drop missing tests first.")
    return p


def holm(p_values: Any) -> np.ndarray:
    """Holm-adjusted p-values; the family of tests is the last axis (earlier axes: independent
    families, e.g. simulated studies).

    Sorted p-values p_(1) ≤ … ≤ p_(m) are adjusted to max_{j≤i} min(1, (m − j + 1)·p_(j));
    a test is rejected at level α when its adjusted p-value is < α. scipy has no Holm
    correction (`false_discovery_control` is BH/BY only).
    """
    p = _p_values(p_values)
    m = p.shape[-1]
    if m == 0:
        return p.copy()
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (`scipy.stats.false_discovery_control`), family on
    the last axis."""
    p = _p_values(p_values)
    if p.shape[-1] == 0:
        return p.copy()
    return np.asarray(_st.false_discovery_control(p, axis=-1, method="bh"), dtype=np.float64)


def adjust_p_values(p_values: Any, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by `method` (a key of `CORRECTIONS`)."""
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown correction {method!r}; use one of {sorted(CORRECTIONS)}.")


def significant(p_values: Any, alpha: float = ALPHA, correction: str = CORRECTION) -> np.ndarray:
    """Which tests of a family pass `alpha` after `correction` (a missing p-value, None or NaN,
    counts as 1: it stays in the family and never passes). The one decision behind every
    significance mark (tables and figures)."""
    p = np.array([1.0 if v is None else float(v) for v in np.ravel(p_values)])
    p = np.where(np.isfinite(p), p, 1.0)
    return adjust_p_values(p, correction) < alpha if p.size else np.zeros(0, dtype=bool)


def _mcnemar_floor(discordant: int) -> float:
    """The smallest exact two-sided McNemar p-value with d discordant pairs: 2 · 0.5^d."""
    return 1.0 if discordant == 0 else min(1.0, 2.0 * 0.5**discordant)


def _wilcoxon_floor(nonzero: int, n: int | None) -> float:
    """A lower bound on the two-sided Wilcoxon p-value with m non-zero differences of n.

    Exact and permutation p-values (scipy's choice up to 13 images, or without ties and zeros
    up to 50) cannot go below 2/2^m; the normal approximation (no continuity correction) is
    largest when every |difference| is tied, where z = √m, so p ≥ 2Φ(−√m) whatever the ties.
    """
    if nonzero == 0:
        return 1.0
    exact = min(1.0, 2.0 * 0.5**nonzero)
    if n is not None and n <= 13:
        return exact
    return min(exact, float(2 * _st.norm.sf(math.sqrt(nonzero))))


def smallest_attainable_p(
    test: str,
    n_resamples: int | None = None,
    details: dict[str, Any] | None = None,
    n: int | None = None,
) -> float:
    """The smallest p-value a recorded test can give.

    Paired bootstrap: 1/(1 + resamples). Otherwise the `smallest_p` its details record, else
    from its counts: exact McNemar with d discordant pairs 2 · 0.5^d; Wilcoxon with m non-zero
    differences (of `n`) 2/2^m for an exact test, or the bound of `_wilcoxon_floor`. 0 when
    nothing about the test is known.
    """
    if test == "paired_bootstrap" and n_resamples:
        return 1.0 / (1 + int(n_resamples))
    details = details or {}
    recorded = finite(details.get("smallest_p"))
    if recorded is not None:
        return recorded
    if test == "mcnemar_exact" and {"a_only", "b_only"} <= details.keys():
        return _mcnemar_floor(int(details["a_only"]) + int(details["b_only"]))
    nonzero = finite(details.get("nonzero_differences"))
    if test == "wilcoxon_signed_rank" and nonzero is not None:
        return _wilcoxon_floor(int(nonzero), n)
    return 0.0


def min_effect_p(
    estimate: Any, ci_low: Any, ci_high: Any, floor: float, confidence: Any = 0.95
) -> np.ndarray:
    """p-values of the minimum-effect test H0: |δ| ≤ floor, from each CI (normal approximation).

    With a = |estimate|, the standard error is each side's half-width / z₍₁₋α/2₎ of the CI's
    `confidence`: the side facing +floor (towards zero when a ≥ floor) for the near term, the
    side towards zero for the far one. p = Φ((floor − a)/se_near) + Φ(−(a + floor)/se_far): the
    chance of an |estimate| at least a when δ = ±floor, the worst case of H0. With floor 0 this is
    the two-sided test of a zero difference; at δ = floor it rejects at rate α (one-sided), and
    far above the floor it agrees with the zero-null test. A zero-width side gives p 0 (beyond the
    floor) or 1.
    """
    est, low, high = (np.asarray(v, dtype=np.float64) for v in (estimate, ci_low, ci_high))
    z = _st.norm.ppf(1 - (1 - np.asarray(confidence, dtype=np.float64)) / 2)
    flip = est < 0
    a = np.abs(est)
    towards_zero = np.where(flip, high - est, est - low) / z
    away = np.where(flip, est - low, high - est) / z
    near = np.where(a >= floor, towards_zero, away)
    with np.errstate(all="ignore"):  # both branches of each `where` are evaluated
        z_near = np.where(near > 0, (floor - a) / near, np.sign(floor - a) * np.inf)
        z_far = np.where(towards_zero > 0, -(a + floor) / towards_zero, -np.inf)
    # A zero-width CI exactly on the floor is no evidence of exceeding it.
    z_near = np.where(np.isnan(z_near), np.inf, z_near)
    return np.minimum(1.0, _st.norm.cdf(z_near) + _st.norm.cdf(z_far))


INSIDE = "inside"
ABOVE = "above"
BELOW = "below"
UNDECIDED = "undecided"


def interval_position(ci_low: float, ci_high: float, low: float, high: float) -> str:
    """Where a confidence interval lies relative to the band (low, high).

    `INSIDE`: low < ci_low and ci_high < high (an equivalence statement: with a 95% CI this is
    the two one-sided tests at α = 0.025 each); `ABOVE`: ci_low > high; `BELOW`: ci_high < low;
    `UNDECIDED` otherwise (the CI reaches across a bound). A floor is the band (f, f), which has
    no inside.
    """
    values = [finite(v) for v in (ci_low, ci_high, low, high)]
    if any(v is None for v in values):
        raise ValueError(
            f"interval_position needs finite numbers; got CI ({ci_low}, {ci_high}), band "
            f"({low}, {high})."
        )
    ci_low, ci_high, low, high = values
    if ci_low > ci_high or low > high:
        raise ValueError(
            f"an interval needs low <= high; got CI ({ci_low}, {ci_high}), band ({low}, {high})."
        )
    if ci_low > high:
        return ABOVE
    if ci_high < low:
        return BELOW
    if low < ci_low and ci_high < high:
        return INSIDE
    return UNDECIDED


def images_to_resolve(
    estimate: float, ci_low: float, ci_high: float, n: int, low: float, high: float
) -> int | None:
    """How many images would decide an `UNDECIDED` interval at the observed spread.

    Assumes the estimate stays where it is and each side of the CI shrinks as 1/√n (a mean over
    images): the smallest n' whose CI would lie inside (low, high) when the estimate is inside,
    above `high` when it is above, below `low` when it is below. None when the interval is
    already decided, or when no practical number of images decides it (the estimate sits on a
    bound, or within rounding of one).
    """
    if interval_position(ci_low, ci_high, low, high) != UNDECIDED:
        return None
    below, above = estimate - ci_low, ci_high - estimate  # the CI's two half-widths
    with np.errstate(over="ignore", divide="ignore"):
        if low < estimate < high:
            shrink = max(below / np.float64(estimate - low), above / np.float64(high - estimate))
        elif estimate > high:
            shrink = below / np.float64(estimate - high)
        elif estimate < low:
            shrink = above / np.float64(low - estimate)
        else:
            return None
        ratio = float(shrink) ** 2 if shrink < 1e100 else math.inf
    if not ratio * n < 1e15:  # on a bound, or within rounding of one
        return None
    # The smallest n' with n' > n·ratio (the tolerance keeps an exact boundary outside).
    return max(int(n) + 1, math.floor(int(n) * ratio * (1 + 1e-12)) + 1)
