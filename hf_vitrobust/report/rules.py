"""The numbers of the report's verdict rules (`VerdictRules`); the rules are in `verdicts`."""

from __future__ import annotations

from dataclasses import dataclass

from hf_vitrobust.stats import CORRECTIONS


@dataclass(frozen=True)
class VerdictRules:
    """The numbers of every verdict rule; the report prints each next to its verdict."""

    alpha: float = 0.05
    #: Multiple-comparison correction for "changed" rules: "holm" or "bh".
    correction: str = "holm"
    #: C1: smallest gain in top-1 accuracy over the control that counts (fraction: 0.01 = 1 pp).
    seen_floor: float = 0.01
    #: Fig. 4: smallest gain in the mean probability of the true class that counts.
    certainty_floor: float = 0.01
    #: C2: the equivalence margin is max(transfer_margin_min, transfer_margin_share × seen gain).
    transfer_margin_min: float = 0.01
    transfer_margin_share: float = 0.2
    #: C3: smallest attention-entropy difference that counts as a change (nats).
    entropy_floor: float = 0.05
    #: C4: smallest first-correct-layer difference that counts as a change (layers).
    layer_floor: float = 0.25
    #: C5: equivalence margin of the code-cosine difference (adversarial − control, vs base).
    sae_margin: float = 0.05
    #: C5 quality bar: held-out explained variance, and BatchTopK inference L0 within ±tol·k.
    sae_min_explained_variance: float = 0.7
    sae_l0_tolerance: float = 0.1

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


__all__ = ["VerdictRules"]
