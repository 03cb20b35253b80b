"""``BadImageCallback``: the bad-image tally through a ``transformers.Trainer`` run.

It persists the tally with every checkpoint (``bad_images.json`` in the checkpoint folder) and
loads it on resume, so resumed segments accumulate; checks the limit during training (all
processes together, after sharing the new ids) so an unhealthy dataset stops the run within
minutes, with its figures in ``<output_dir>/bad_images.json``; and at the end writes the whole
run's figures there too without raising, so the caller saves its model before judging ``tracker.summary()["passed"]``
(or calling ``tracker.check(final=True)``). The training step records each batch it consumes:
``tracker.record_batch(batch)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_vitrobust.data.bad_images import BAD_IMAGES_FILE, BadImageTracker, TooManyBadImagesError
from hf_vitrobust.distributed import process_state
from hf_vitrobust.io import read_json, write_text_atomic

logger = logging.getLogger(__name__)


class BadImageCallback(TrainerCallback):
    """Saves, restores and checks a ``BadImageTracker`` through a Trainer run.

    ``resume_from_checkpoint``: the folder ``trainer.train(resume_from_checkpoint=...)`` gets,
    when it is not ``args.resume_from_checkpoint`` or ``<output_dir>/checkpoint-<step>``.
    ``check_every_steps``: how often several processes share their new ids and check (one
    process checks every step).
    """

    def __init__(
        self,
        tracker: BadImageTracker,
        resume_from_checkpoint: str | os.PathLike | None = None,
        check_every_steps: int = 10,
    ) -> None:
        self.tracker = tracker
        self.resume_from_checkpoint = resume_from_checkpoint
        self.check_every_steps = max(1, int(check_every_steps))

    def _resume_folder(self, args: Any, state: Any) -> Path | None:
        explicit = self.resume_from_checkpoint or args.resume_from_checkpoint
        if isinstance(explicit, (str, os.PathLike)):
            return Path(explicit)
        if state.global_step > 0:
            return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        return None

    def on_train_begin(self, args, state, control, **kwargs):
        folder = self._resume_folder(args, state)
        if folder is None:
            return
        path = folder / BAD_IMAGES_FILE
        if not path.is_file():
            logger.warning(
                "Resuming from %s, which has no %s: bad images are counted from this segment "
                "on only.",
                folder,
                BAD_IMAGES_FILE,
            )
            return
        self.tracker.load_state_dict(read_json(path))
        logger.info("Bad-image tally restored from %s: %s", path, self.tracker.describe())

    def on_step_end(self, args, state, control, **kwargs):
        if process_state().num_processes == 1 or state.global_step % self.check_every_steps == 0:
            self.tracker.sync()
            try:
                self.tracker.check()
            except TooManyBadImagesError:
                # The run stops here: leave its verdict where a finished run leaves it.
                if state.is_world_process_zero:
                    _write_state(self.tracker, Path(args.output_dir) / BAD_IMAGES_FILE)
                raise

    def on_save(self, args, state, control, **kwargs):
        self.tracker.sync()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            _write_state(self.tracker, folder / BAD_IMAGES_FILE)

    def on_train_end(self, args, state, control, **kwargs):
        self.tracker.sync()
        if state.is_world_process_zero:
            _write_state(self.tracker, Path(args.output_dir) / BAD_IMAGES_FILE)
            self.tracker.finish()


def _write_state(tracker: BadImageTracker, path: Path) -> None:
    # Compact: the id ranges of a large run are many short lists.
    write_text_atomic(json.dumps(tracker.state_dict(), separators=(",", ":")) + "\n", path)


__all__ = ["BadImageCallback"]
