"""Which checkpoint a rerun resumes from, and whether a run is already finished.

A checkpoint folder (`checkpoint-<step>`) is complete when it has `trainer_state.json` (the
Trainer writes it after the weights, optimizer and RNG states) and whole weights (a safetensors
file whose header and data fit the file, or a sharded index whose shards do). A rerun resumes
from the newest complete checkpoint and skips incomplete ones with a warning; a run whose saved
output or newest checkpoint already reached `max_steps` is not trained again (transformers 5.24
would resume a finished checkpoint and take one more optimizer step).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_vitrobust.io import read_json

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
TRAIN_RESULTS = "train_results.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (None when its header and data fit the file)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len <= 0 or 8 + header_len > size:
                return f"{path.name} is truncated (header of {header_len} bytes, file {size})"
            header = json.loads(handle.read(header_len))
    except (OSError, struct.error, ValueError) as error:
        return f"{path.name} cannot be read ({type(error).__name__}: {error})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + header_len + max(ends, default=0) > size:
        return f"{path.name} is truncated (its tensors need more bytes than the file has)"
    return None


def weights_problem(folder: str | Path) -> str | None:
    """Why `folder` has no whole safetensors weights (None when it has them)."""
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        return _safetensors_problem(folder / WEIGHTS)
    if (folder / WEIGHTS_INDEX).is_file():
        try:
            shards = sorted(set(read_json(folder / WEIGHTS_INDEX)["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as error:
            return f"{WEIGHTS_INDEX} cannot be read ({error})"
        for shard in shards:
            if not (folder / shard).is_file():
                return f"weight shard {shard} is missing"
            problem = _safetensors_problem(folder / shard)
            if problem:
                return problem
        return None
    # FSDP sharded state dicts and DeepSpeed engines save weights in their own folders.
    if any(folder.glob("pytorch_model_fsdp_*")) or any(folder.glob("global_step*")):
        return None
    return f"no {WEIGHTS}"


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete)."""
    folder = Path(folder)
    if not (folder / TRAINER_STATE).is_file():
        return f"no {TRAINER_STATE} (saving was interrupted)"
    try:
        int(read_json(folder / TRAINER_STATE)["global_step"])
    except (ValueError, KeyError, TypeError) as error:
        return f"{TRAINER_STATE} cannot be read ({error})"
    return weights_problem(folder)


def global_step(folder: str | Path) -> int:
    """The optimizer steps a checkpoint (or a finished output folder) was saved after."""
    return int(read_json(Path(folder) / TRAINER_STATE, "trainer state")["global_step"])


def checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-<step>` folders in `output_dir`, newest (highest step) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, key=lambda item: item[0], reverse=True) if p.is_dir()]


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in `output_dir`; incomplete newer ones are skipped with a
    warning naming what is missing."""
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Skipping incomplete checkpoint %s: %s.", folder, problem)
    return None


@dataclass(frozen=True)
class FinishedRun:
    """A run already trained to (at least) `max_steps`: its step count and recorded metrics."""

    output_dir: Path
    global_step: int
    max_steps: int
    metrics: dict[str, Any]

    def message(self) -> str:
        return (
            f"{self.output_dir} already holds a model trained for {self.global_step} steps "
            f"(max_steps {self.max_steps}): nothing to train. Raise max_steps to continue "
            "training, or choose a new output_dir."
        )


def finished_run(output_dir: str | Path, max_steps: int) -> FinishedRun | None:
    """The finished run in `output_dir` when its saved model reached `max_steps`, else None.

    Finished means: whole weights, `trainer_state.json` at `global_step >= max_steps`, and
    `train_results.json` (written last, after the model). Anything less is not finished, and
    the rerun resumes from the newest complete checkpoint.
    """
    folder = Path(output_dir)
    if not (folder / TRAIN_RESULTS).is_file() or checkpoint_problem(folder) is not None:
        return None
    steps = global_step(folder)
    if steps < max_steps:
        return None
    metrics = read_json(folder / TRAIN_RESULTS, "training results")
    return FinishedRun(folder, steps, int(max_steps), dict(metrics))


__all__ = [
    "FinishedRun",
    "TRAINER_STATE",
    "TRAIN_RESULTS",
    "checkpoint_problem",
    "checkpoints",
    "finished_run",
    "global_step",
    "last_complete_checkpoint",
    "weights_problem",
]
