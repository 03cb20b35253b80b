"""Sentences from numbers: paired fine-tuned − base differences read from any stage's JSON, and
the plain-language reading of each. Every sentence that interprets a number is generated here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hf_vitrobust.formatting import finite, fmt_ci, fmt_p


@dataclass
class Comparison:
    """A paired fine-tuned − base difference read from any stage's JSON (see `as_comparison`)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None
    test: str | None = None
    n: int | None = None
    confidence: float = 0.95

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    @property
    def direction(self) -> int:
        """+1 when the CI lies above zero, -1 below, 0 when it contains zero (or is absent)."""
        if not self.has_ci:
            return 0
        if self.ci_low > 0:
            return 1
        if self.ci_high < 0:
            return -1
        return 0

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        text = fmt_ci(self.estimate, self.ci_low, self.ci_high, digits, scale, sign=True) + unit
        extra = []
        if self.p_value is not None:
            extra.append(f"{fmt_p(self.p_value)}" + (f", {self.test}" if self.test else ""))
        if self.n is not None:
            extra.append(f"n={self.n}")
        return text + (f" ({'; '.join(extra)})" if extra else "")


_ESTIMATE_KEYS = ("estimate", "difference", "diff", "delta", "mean_difference", "value", "mean")
_LOW_KEYS = ("ci_low", "low", "lower", "ci_lower")
_HIGH_KEYS = ("ci_high", "high", "upper", "ci_upper")


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def as_comparison(obj: Any) -> Comparison | None:
    """Read a `PairedComparison.to_dict()`-like mapping (or a `ci: [lo, hi]` pair) as a Comparison."""
    if not isinstance(obj, Mapping):
        return None
    low, high = _first(obj, _LOW_KEYS), _first(obj, _HIGH_KEYS)
    ci = obj.get("ci")
    if (low is None or high is None) and isinstance(ci, (list, tuple)) and len(ci) == 2:
        low, high = ci
    estimate = _first(obj, _ESTIMATE_KEYS)
    if estimate is None and low is None:
        return None
    n = finite(obj.get("n"))
    return Comparison(
        estimate=finite(estimate),
        ci_low=finite(low),
        ci_high=finite(high),
        p_value=finite(_first(obj, ("p_value", "p", "pvalue"))),
        test=obj.get("test") if isinstance(obj.get("test"), str) else None,
        n=int(n) if n is not None else None,
        confidence=finite(obj.get("confidence")) or 0.95,
    )


def describe_change(
    comp: Comparison | None,
    subject: str,
    *,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 3,
    up: str = "higher",
    down: str = "lower",
) -> str:
    """One plain sentence from a paired difference: its value, CI and whether the CI excludes zero."""
    if comp is None or comp.estimate is None:
        return f"{subject}: no number available."
    level = f"{round(comp.confidence * 100)}%"
    number = comp.format(digits, scale, unit)
    if not comp.has_ci:
        return f"{subject}: {number}; no confidence interval was reported, so no conclusion."
    if comp.direction > 0:
        return f"{subject} is {up} after fine-tuning: {number}; the {level} CI excludes zero."
    if comp.direction < 0:
        return f"{subject} is {down} after fine-tuning: {number}; the {level} CI excludes zero."
    return (
        f"{subject} shows no clear change: {number}; the {level} CI includes zero, "
        "so the data cannot tell a difference from none."
    )


def median_text(summary: Mapping[str, Any] | None) -> str:
    """`0.950 [0.940, 0.960]` from a `{"median": m, "median_ci": [lo, hi]}` summary."""
    if not isinstance(summary, Mapping):
        return "n/a"
    ci = summary.get("median_ci") or [None, None]
    return fmt_ci(summary.get("median"), ci[0], ci[1])


__all__ = ["Comparison", "as_comparison", "describe_change", "median_text"]
