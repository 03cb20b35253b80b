"""Text for people: slugs and number formats shared by the report, the model cards and logs.
A leaf: imports nothing from the package."""

from __future__ import annotations

import math
import re
from typing import Any


def finite(value: Any) -> float | None:
    """A finite float, or None (JSON null, NaN, bools, strings and missing values)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def slug(text: str) -> str:
    """Lower-case ASCII words joined by '-' (for anchors, file names and ids)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def fmt(
    value: Any, digits: int = 3, scale: float = 1.0, sign: bool = False, missing: str = "n/a"
) -> str:
    """``value * scale`` with ``digits`` decimals (``missing`` when not a finite number)."""
    v = finite(value)
    if v is None:
        return missing
    return f"{v * scale:{'+' if sign else ''}.{digits}f}"


def fmt_ci(
    estimate: Any, low: Any, high: Any, digits: int = 3, scale: float = 1.0, sign: bool = False
) -> str:
    """``0.812 [0.790, 0.833]``; the interval is dropped when either bound is missing."""
    text = fmt(estimate, digits, scale, sign)
    if finite(low) is None or finite(high) is None:
        return text
    return f"{text} [{fmt(low, digits, scale, sign)}, {fmt(high, digits, scale, sign)}]"


def fmt_p(p: Any) -> str:
    """``p=0.012``, ``p<0.001`` or ``p=n/a``."""
    v = finite(p)
    if v is None:
        return "p=n/a"
    return "p<0.001" if v < 0.001 else f"p={v:.3f}"


__all__ = ["finite", "fmt", "fmt_ci", "fmt_p", "slug"]
