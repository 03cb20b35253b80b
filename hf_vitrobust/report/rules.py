"""The numbers of the report's verdict rules (`VerdictRules`); the rules are in `verdicts`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitrobust.stats import ALPHA, CORRECTION, CORRECTIONS


@dataclass(frozen=True)
class VerdictRules:
    """The numbers of every verdict rule; the report prints each next to its verdict. Also the
    verdict arguments of `recipes/report.py` (``--seen_floor 0.02``, ``--correction bh``, ...)."""

    alpha: float = field(
        default=ALPHA,
        metadata={
            "help": "Level of every verdict test; judged CIs must be recorded at 1 − alpha "
            "confidence (0.05: 95% CIs)."
        },
    )
    correction: str = field(
        default=CORRECTION,
        metadata={"help": "Multiple-comparison correction of the 'changed' rules: holm or bh."},
    )
    seen_floor: float = field(
        default=0.01,
        metadata={"help": "C1: smallest top-1 gain over the control that counts (0.01 = 1 pp)."},
    )
    certainty_floor: float = field(
        default=0.01,
        metadata={"help": "Fig. 4: smallest gain in p(true class) over the control that counts."},
    )
    transfer_margin_min: float = field(
        default=0.01, metadata={"help": "C2: smallest equivalence margin (top-1, 0.01 = 1 pp)."}
    )
    transfer_margin_share: float = field(
        default=0.2,
        metadata={"help": "C2: margin as a share of the model's seen gain over the control."},
    )
    entropy_floor: float = field(
        default=0.05,
        metadata={"help": "C3: smallest attention-entropy difference that counts (nats)."},
    )
    layer_floor: float = field(
        default=0.25,
        metadata={"help": "C4: smallest first-correct-layer difference that counts (layers)."},
    )
    sae_margin: float = field(
        default=0.05,
        metadata={"help": "C5: equivalence margin of the code-cosine difference (adv. − control)."},
    )
    sae_min_explained_variance: float = field(
        default=0.7, metadata={"help": "C5 quality bar: held-out explained variance of an SAE."}
    )
    sae_l0_tolerance: float = field(
        default=0.1,
        metadata={"help": "C5 quality bar: BatchTopK inference L0 within this share of k."},
    )
    min_images: int = field(
        default=20,
        metadata={
            "help": "Every rule: a comparison of fewer images is inconclusive (too few images); "
            "below ~20 a bootstrap CI does not hold its level."
        },
    )

    @property
    def confidence(self) -> float:
        """The confidence of the CIs the rules read: 1 − alpha (a CI inside a band is then the
        two one-sided tests at alpha/2 each)."""
        return 1.0 - self.alpha

    @property
    def ci_label(self) -> str:
        """``95% CI`` at the default alpha."""
        return f"{self.confidence:.0%} CI"

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(
                f"correction={self.correction!r}; use one of {sorted(CORRECTIONS)} "
                "(Holm: family-wise error; bh: false discovery rate)."
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must be in (0, 1).")
        for name in (
            "seen_floor",
            "certainty_floor",
            "transfer_margin_min",
            "transfer_margin_share",
            "entropy_floor",
            "layer_floor",
            "sae_margin",
            "sae_l0_tolerance",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0.")
        if not self.min_images >= 2:
            raise ValueError(f"min_images={self.min_images} must be >= 2 (a CI needs two images).")


__all__ = ["VerdictRules"]
