"""Reproducible corruption views for training: which corruption, severity and seed per view.

The draw of a view is ``hf_vitrobust.seeding.view_words(seed, epoch, example_id, view_index,
stage)``, the package's one seed derivation for training views: a pure function, so a resumed,
multi-worker or distributed run draws the same views as an uninterrupted single-process one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_vitrobust.constants import EVAL_STAGE, SEVERITIES, TRAIN_STAGE
from hf_vitrobust.corruptions import check_severities, corrupt, resolve_corruptions
from hf_vitrobust.seeding import view_words

_STAGES = (TRAIN_STAGE, EVAL_STAGE)


class CorruptionViews:
    """Draws a (corruption, severity, seed) per view as a pure function of its arguments.

    ``corruptions``: family or corruption names (a list, or one comma-separated string), as
    ``corruptions.resolve_corruptions`` reads them. The draw for (epoch, example_id,
    view_index) depends only on those, ``seed`` and ``stage``: ``"train"`` and ``"eval"`` give
    independent draws for the same seed, so the trainer's in-loop evaluation (its ``seen`` and
    ``unseen`` collators) sees new instances of the corruptions.
    """

    def __init__(
        self,
        corruptions: str | Sequence[str],
        severities: Sequence[int] = SEVERITIES,
        seed: int = 0,
        stage: str = TRAIN_STAGE,
    ) -> None:
        self.corruptions = corruptions
        self.names: tuple[str, ...] = tuple(resolve_corruptions(corruptions))
        if not self.names:
            raise ValueError(f"Corruptions {corruptions!r} name no corruption.")
        self.severities: tuple[int, ...] = tuple(check_severities(severities))
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {list(_STAGES)}, not {stage!r}.")
        self.seed = int(seed)
        self.stage = stage

    def for_eval(self) -> CorruptionViews:
        """The same corruptions and severities with the evaluation stream of draws."""
        return CorruptionViews(self.names, self.severities, self.seed, stage=EVAL_STAGE)

    def draw(self, epoch: int, example_id: int, view_index: int) -> tuple[str, int, int]:
        """(corruption name, severity, seed in [0, 2**32) for the corruption's own randomness).

        Arguments must be integers in [0, 2**64) (``ValueError`` / ``TypeError`` otherwise).
        """
        name_word, severity_word, seed_word = view_words(
            self.seed, epoch, example_id, view_index, stage=self.stage
        )
        name = self.names[name_word % len(self.names)]
        severity = self.severities[severity_word % len(self.severities)]
        return name, severity, seed_word >> 32

    def apply(
        self, image: np.ndarray, epoch: int, example_id: int, view_index: int
    ) -> tuple[np.ndarray, str, int]:
        """Corrupt an RGB uint8 image with this view's draw: (image, name, severity)."""
        name, severity, draw_seed = self.draw(epoch, example_id, view_index)
        return corrupt(image, name, severity, seed=draw_seed), name, severity

    def __repr__(self) -> str:
        return (
            f"CorruptionViews({len(self.names)} corruptions, severities={self.severities}, "
            f"seed={self.seed}, stage={self.stage!r})"
        )


__all__ = ["CorruptionViews"]
