"""What a training run counts over all its segments: winning views, images, loss and time.

`TrainingTally` holds the totals of the segments before the current one (restored from the
checkpoint a rerun resumes from); the trainer adds the current segment's counts. The sum is
written as `adversary_stats.json` into every checkpoint (before the Trainer writes
`trainer_state.json`, so a complete checkpoint always has it) and into the final output folder,
and it is what `train_results.json` reports: a run killed and resumed reports the same totals
as an uninterrupted one (the steps redone after the checkpoint count once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_vitrobust.io import read_json

STATS_FILE = "adversary_stats.json"


@dataclass
class TrainingTally:
    """Totals of a training run (all processes together).

    `loss_sum` is the sum over optimizer steps of the step's training loss (what the Trainer
    averages into `train_loss`), averaged over processes; `train_runtime_s` adds up the
    segments' training time up to their last checkpoint (work lost to a kill is not counted);
    `segments` lists `{"from_step", "to_step", "train_runtime_s"}` per training call.
    """

    winning_corruptions: Counter[str] = field(default_factory=Counter)
    winning_severities: Counter[int] = field(default_factory=Counter)
    images_used: int = 0
    images_skipped: int = 0
    loss_sum: float = 0.0
    train_runtime_s: float = 0.0
    global_step: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.winning_corruptions.values())
        return {
            "winning_corruptions": dict(self.winning_corruptions.most_common()),
            "winning_corruption_fraction": {
                k: v / total for k, v in self.winning_corruptions.most_common()
            }
            if total
            else {},
            "winning_severities": {int(k): v for k, v in sorted(self.winning_severities.items())},
            "images_used": int(self.images_used),
            "images_skipped": int(self.images_skipped),
            "global_step": int(self.global_step),
            "loss_sum": float(self.loss_sum),
            "train_runtime_s": float(self.train_runtime_s),
            "segments": [dict(s) for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingTally:
        return cls(
            winning_corruptions=Counter(
                {str(k): int(v) for k, v in data.get("winning_corruptions", {}).items()}
            ),
            winning_severities=Counter(
                {int(k): int(v) for k, v in data.get("winning_severities", {}).items()}
            ),
            images_used=int(data.get("images_used", 0)),
            images_skipped=int(data.get("images_skipped", 0)),
            loss_sum=float(data.get("loss_sum") or 0.0),
            train_runtime_s=float(data.get("train_runtime_s") or 0.0),
            global_step=int(data.get("global_step", 0)),
            segments=[dict(s) for s in data.get("segments", [])],
        )

    @classmethod
    def read(cls, folder: str | Path | None) -> TrainingTally:
        """The tally saved in a checkpoint folder; an empty one when there is none (a fresh run,
        or a checkpoint written before tallies were saved)."""
        path = Path(folder) / STATS_FILE if folder else None
        if path is None or not path.is_file():
            return cls()
        return cls.from_dict(read_json(path, "training statistics"))

    def plus(self, other: TrainingTally) -> TrainingTally:
        """Counts of both (loss sums and runtimes added; step and segments from `other`)."""
        return TrainingTally(
            winning_corruptions=self.winning_corruptions + other.winning_corruptions,
            winning_severities=self.winning_severities + other.winning_severities,
            images_used=self.images_used + other.images_used,
            images_skipped=self.images_skipped + other.images_skipped,
            loss_sum=self.loss_sum + other.loss_sum,
            train_runtime_s=self.train_runtime_s + other.train_runtime_s,
            global_step=other.global_step,
            segments=self.segments + other.segments,
        )

    def train_metrics(self) -> dict[str, float | int]:
        """The whole run's `train_*` figures (all segments), for `train_results.json`."""
        steps = max(self.global_step, 1)
        runtime = self.train_runtime_s
        return {
            "train_loss": self.loss_sum / steps,
            "train_runtime": round(runtime, 4),
            "train_samples": self.images_used,
            "train_samples_per_second": round(self.images_used / runtime, 3) if runtime else 0.0,
            "train_steps_per_second": round(self.global_step / runtime, 3) if runtime else 0.0,
            "train_segments": len(self.segments),
            "global_step": self.global_step,
            "images_skipped": self.images_skipped,
        }


__all__ = ["STATS_FILE", "TrainingTally"]
