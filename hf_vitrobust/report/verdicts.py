"""The verdict rules: how a section's numbers become supported / partly supported / not supported.

Each rule is a small function of already-read numbers, stated in the reading it returns or in the
section that calls it, so that a rule can be replaced without touching the sections.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import binomtest

from hf_vitrobust.formatting import fmt_p

from .model import MISSING, NOT_SUPPORTED, PARTLY, SUPPORTED

#: "Essentially unchanged" sparse representation: the median base-vs-fine-tuned code cosine on the
#: same input is at least this high (and clearly above the different-image baseline).
SAE_UNCHANGED_MEDIAN = 0.9


def verdict_from_directions(directions: Sequence[int], want: int) -> str:
    """All comparisons go the claimed way (`want` = +1 / −1 / 0 for "no clear change") → supported;
    some → partly; none → not supported."""
    if not directions:
        return MISSING
    hits = sum(1 for d in directions if d == want)
    if hits == len(directions):
        return SUPPORTED
    return PARTLY if hits else NOT_SUPPORTED


def excess_over_chance(n_excluding: int, n_total: int, alpha: float = 0.05) -> tuple[float, bool]:
    """One-sided binomial test: do more CIs exclude zero than the `alpha` share expected by chance?"""
    if n_total == 0:
        return 1.0, False
    p = binomtest(n_excluding, n_total, alpha, alternative="greater").pvalue
    return float(p), bool(p < alpha)


def changed_verdict(n_excluding: int, n_total: int, what: str) -> tuple[str, str]:
    """Verdict for a claim that something *changed*, over many paired comparisons: supported
    when more CIs exclude zero than the 5% expected by chance (one-sided binomial test)."""
    p, more = excess_over_chance(n_excluding, n_total)
    verdict = SUPPORTED if more else NOT_SUPPORTED
    reading = (
        f"{n_excluding} of {n_total} {what} have a 95% CI that excludes zero; by chance alone "
        f"about {0.05 * n_total:.1f} would (binomial test {fmt_p(p)}), so "
        + ("the change is real at this scale." if more else "this is not more than chance.")
    )
    return verdict, reading


def no_transfer_verdict(gained: Sequence[str], unseen_directions: Sequence[int]) -> tuple[str, str]:
    """ "No transfer" presupposes a gain to transfer: it is judged on the models whose seen gain
    has a CI above zero (`gained`), and holds when their unseen change (`unseen_directions`) is
    not clearly positive. Returns the verdict and the reading that states the rule."""
    if not gained:
        return NOT_SUPPORTED, (
            "No fine-tuned model gains top-1 accuracy on its seen corruptions with a CI above "
            "zero, so there is no gain whose transfer could be tested: not supported at this "
            "scale (the unseen changes below are reported as measured)."
        )
    # A loss on unseen corruptions is still "no transfer"; only a clear gain contradicts it.
    verdict = verdict_from_directions([max(d, 0) for d in unseen_directions], 0)
    return verdict, (
        f"Judged on the models with a seen gain ({', '.join(gained)}): "
        + (
            "none of them gains on unseen corruptions with a CI above zero."
            if verdict == SUPPORTED
            else "some gain on unseen corruptions with a CI above zero."
        )
    )


def sae_code_unchanged(median_ci_low: float | None, gap_direction: int) -> bool:
    """One SAE comparison counts as "unchanged": the median code cosine's CI lies at or above
    `SAE_UNCHANGED_MEDIAN` and the paired gap over the different-image baseline is above zero."""
    return gap_direction > 0 and median_ci_low is not None and median_ci_low >= SAE_UNCHANGED_MEDIAN


def sae_unchanged_verdict(unchanged: int, judged: int) -> str:
    """All judged comparisons unchanged → supported; more than half → partly; else not supported
    (also when no comparison could be judged: every SAE flagged)."""
    if judged == 0:
        return NOT_SUPPORTED
    if unchanged == judged:
        return SUPPORTED
    return PARTLY if unchanged > judged / 2 else NOT_SUPPORTED


__all__ = [
    "SAE_UNCHANGED_MEDIAN",
    "changed_verdict",
    "excess_over_chance",
    "no_transfer_verdict",
    "sae_code_unchanged",
    "sae_unchanged_verdict",
    "verdict_from_directions",
]
