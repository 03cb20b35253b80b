"""Adversarial fine-tuning as a `transformers.Trainer` subclass: the only module that knows the
Trainer's hooks.

`AdversarialTrainer` builds the adversarial batch in `training_step` (the attack runs in eval
mode, through the unwrapped module under DDP and the wrapped one under FSDP/DeepSpeed), evaluates
clean / seen / unseen corruptions with one collator each, resumes through `from_pretrained`, keeps
its statistics across resumed segments (`tally.TrainingTally`, saved in every checkpoint), and
saves weights, processor, `config.robustness` and `adversary_stats.json`. It never writes a model
card or pushes: `recipes/finetune.py` does that through `hf_vitrobust.hub`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType, gather_object
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_vitrobust.data import (
    BAD_IMAGES_FILE,
    COLLATOR_EXTRA_KEYS,
    BadImageCallback,
    BadImageTracker,
)
from hf_vitrobust.io import read_json, write_json_atomic
from hf_vitrobust.training.adversary import (
    eval_mode,
    fgsm,
    gather_views,
    parse_adversary,
    pgd,
    step_generator,
    worst_of_k,
)
from hf_vitrobust.training.checkpoints import TRAINER_STATE, last_complete_checkpoint
from hf_vitrobust.training.config import AdversarialTrainingArguments
from hf_vitrobust.training.tally import STATS_FILE, TrainingTally

logger = logging.getLogger(__name__)

#: Batch keys produced by `CorruptionCollator` that the model must not see.
EXTRA_BATCH_KEYS: tuple[str, ...] = COLLATOR_EXTRA_KEYS
_CLEAN_KEY = "_clean_pixel_values"


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN/Inf; the last saved checkpoint is left untouched."""


def accuracy_metrics(eval_pred: Any) -> dict[str, float]:
    """`compute_metrics` for the Trainer: top-1 accuracy."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def processor_mean_std(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's normalisation ([0, 1] pixel scale); identity when it does not normalise."""
    if not getattr(processor, "do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = processor.image_mean, processor.image_std
    mean = (float(mean),) * 3 if np.isscalar(mean) else tuple(float(v) for v in mean)
    std = (float(std),) * 3 if np.isscalar(std) else tuple(float(v) for v in std)
    return mean, std


class _CorruptionEpochCallback(TrainerCallback):
    """Tells the training collator which epoch it is, so corrupted views change per epoch and a
    resumed run draws the same views as an uninterrupted one."""

    def __init__(self, trainer: AdversarialTrainer) -> None:
        self.trainer = trainer
        self.epoch = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D401
        # On resume `state` is the checkpoint's: its epoch is "epochs done + fraction".
        self.epoch = int(math.floor(state.epoch or 0.0))
        # The planned total of optimizer steps is known now (epoch-based runs included).
        self.trainer.record_robustness(max_steps=state.max_steps)

    def on_epoch_begin(self, args, state, control, **kwargs):
        collator = self.trainer.data_collator
        if hasattr(collator, "set_epoch"):
            collator.set_epoch(self.epoch)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch += 1


class AdversarialTrainer(Trainer):
    """A `Trainer` that trains on the worst corrupted view and/or a PGD/FGSM perturbation.

    Extra arguments:
        eval_collators: collator per evaluation dataset name (`clean`, `seen`, `unseen`); a
            collator producing `views` evaluates on `views[:, 0]`.
        max_bad_fraction: stop when more than this fraction of images failed to decode (for
            collators without a `BadImageTracker`; with one, the tracker decides).
        provenance: what `config.robustness` records beside the training settings: the base
            model and the dataset (`training.run.run_provenance`).
        bad_images: a `data.BadImageTracker`: every training batch is recorded in it (unique
            example ids); `data.BadImageCallback` checks it early (`min_examples`), saves it in
            each checkpoint and restores it on resume.
    """

    def __init__(
        self,
        *args: Any,
        eval_collators: Mapping[str, Callable] | None = None,
        max_bad_fraction: float = 0.01,
        provenance: Mapping[str, Any] | None = None,
        bad_images: BadImageTracker | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("compute_metrics", accuracy_metrics)
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, AdversarialTrainingArguments):
            raise TypeError("AdversarialTrainer needs AdversarialTrainingArguments.")
        self.plan = parse_adversary(self.args.adversary)
        self.eval_collators = dict(eval_collators or {})
        self.max_bad_fraction = float(max_bad_fraction)
        self.mean, self.std = processor_mean_std(self.processing_class)
        needed = self.args.views_needed
        k = getattr(self.data_collator, "k", None)
        if needed and k is not None and k < needed:
            raise ValueError(
                f"adversary {self.args.adversary!r} with corruptions {self.args.corruptions} "
                f"needs {needed} corrupted view(s) per image but the collator produces k={k}; "
                f"build it with CorruptionCollator(..., k={needed}) (see hf_vitrobust.training.build_collators)."
            )
        if self.train_dataset is not None and not hasattr(self.train_dataset, "__len__"):
            if self.args.max_steps is None or self.args.max_steps <= 0:
                raise ValueError(
                    "The training dataset is streamed (no length): set max_steps (e.g. "
                    "--max_steps 10000); num_train_epochs cannot be used with a stream."
                )
        self.add_callback(_CorruptionEpochCallback(self))
        self.bad_images = bad_images
        if bad_images is not None:
            self.add_callback(BadImageCallback(bad_images))
        self.provenance = dict(provenance or {})
        # Totals of earlier segments (restored on resume) and this segment's counters.
        self.prior = TrainingTally()
        self._reset_segment()
        self._window_wins: Counter[str] = Counter()
        self._window_severities: list[int] = []
        self._step_seen = -1
        self._micro = 0
        self._compiled_attack: torch.nn.Module | None = None
        self._max_steps: int | None = None
        if getattr(self.model.config, "_attn_implementation", None) == "eager":
            logger.warning(
                "Training with eager attention; sdpa (ModelArguments.attn_implementation, the "
                "default) is several times faster. Eager is only needed to capture attention "
                "weights (analysis)."
            )
        self.record_robustness(max_steps=self.args.max_steps if self.args.max_steps > 0 else None)

    def _reset_segment(self) -> None:
        self.win_counts: Counter[str] = Counter()
        self.win_severities: Counter[int] = Counter()
        self.images_skipped = 0
        self.images_used = 0
        self._loss_sum: torch.Tensor | float = 0.0
        self._segment_start = time.perf_counter()
        self._segment_from_step = 0

    # ---- what the model records -------------------------------------------------------------
    def robustness(self, max_steps: int | None = None) -> dict[str, Any]:
        """`config.robustness`: the training settings (`AdversarialTrainingArguments`), the seed,
        the planned optimizer steps and the provenance (base model, dataset)."""
        record = self.args.robustness_config()
        record.update(seed=self.args.seed, max_steps=max_steps)
        if self.args.data_seed is not None:
            record["data_seed"] = self.args.data_seed
        record.update(self.provenance)
        return record

    def record_robustness(self, max_steps: int | None = None) -> None:
        """Write `config.robustness` into the model's config (saved with every checkpoint); a
        base model's own record (it may be a fine-tune itself) is replaced."""
        if max_steps is not None:
            self._max_steps = int(max_steps)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.config.robustness = self.robustness(self._max_steps)

    def planned_max_steps(self) -> int:
        """The optimizer steps this run trains in total: `max_steps`, or what the Trainer computes
        from the epochs and the training set's length."""
        if self.args.max_steps > 0:
            return int(self.args.max_steps)
        dataloader = self.get_train_dataloader()
        return int(self.set_initial_training_values(self.args, dataloader)[-1])

    # ---- training -------------------------------------------------------------------------
    def _attack_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # FSDP/DeepSpeed shard parameters: only the wrapped module can run a forward. DDP's
        # wrapper would register the attack's forward for gradient sync: use the module.
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return model
        # keep_torch_compile=False: unwrapping a compiled DDP model with the compile wrapper
        # kept would re-point that wrapper at the bare module (accelerate mutates it). The
        # attack gets its own compiled view of the same weights instead.
        bare = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        if not self.args.torch_compile:
            return bare
        if self._compiled_attack is None or self._compiled_attack._orig_mod is not bare:
            self._compiled_attack = torch.compile(
                bare, backend=self.args.torch_compile_backend or "inductor",
                mode=self.args.torch_compile_mode,
            )  # fmt: skip
        return self._compiled_attack

    def _attack_loss_scale(self) -> float:
        # fp16: input gradients of a small loss underflow; scale like the grad scaler does.
        scaler = getattr(self.accelerator, "scaler", None)
        if self.args.fp16 and scaler is not None:
            return float(scaler.get_scale())
        return 1.0

    def _account_skipped(self, num_skipped: Any, batch_size: int) -> None:
        if torch.is_tensor(num_skipped):  # tensors_only collators: the count sits on row 0
            num_skipped = int(num_skipped.sum())
        self.images_skipped += int(num_skipped or 0)
        self.images_used += int(batch_size)
        if self.bad_images is not None:
            return  # the BadImageTracker enforces the limit (unique ids, all segments)
        skipped = self.prior.images_skipped + self.images_skipped
        total = skipped + self.prior.images_used + self.images_used
        # Judge the fraction once enough images were seen that one bad file is not 1 %.
        if skipped and total >= 100:
            fraction = skipped / total
            if fraction > self.max_bad_fraction:
                raise ValueError(
                    f"{skipped} of {total} training images could not be decoded "
                    f"({fraction:.2%} > max_bad_fraction {self.max_bad_fraction:.2%}); fix the "
                    "dataset or raise --max_bad_fraction."
                )

    def _record_wins(self, index: torch.Tensor, extras: Mapping[str, Any]) -> None:
        names = extras.get("view_corruptions")
        severities = extras.get("view_severities")
        idx = index.tolist()
        if names is not None:
            won = [names[b][i] for b, i in enumerate(idx)]
            self.win_counts.update(won)
            self._window_wins.update(won)
        if severities is not None:
            sev = torch.as_tensor(severities)
            won_sev = [int(sev[b, i]) for b, i in enumerate(idx)]
            self.win_severities.update(won_sev)
            self._window_severities.extend(won_sev)

    def _micro_index(self) -> int:
        if self.state.global_step != self._step_seen:
            self._step_seen, self._micro = self.state.global_step, 0
        else:
            self._micro += 1
        return self.state.global_step * self.args.gradient_accumulation_steps + self._micro

    def adversarial_inputs(
        self, model: torch.nn.Module, inputs: dict[str, Any], extras: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace `pixel_values` by the training view: worst/random corrupted view, then PGD/FGSM."""
        args = self.args
        clean, labels = inputs["pixel_values"], inputs["labels"]
        chosen = clean
        needed = args.views_needed
        attack_model = self._attack_model(model)
        if needed:
            views = extras.get("views")
            if views is None or views.dim() != 5 or views.shape[1] < needed:
                got = None if views is None else tuple(views.shape)
                raise ValueError(
                    f"adversary {args.adversary!r} needs `views` [B, {needed}, C, H, W] in each "
                    f"batch, got {got}: use CorruptionCollator(..., k={needed})."
                )
            # Pinned by the DataLoader (dataloader_pin_memory): the copy overlaps compute.
            views = views[:, :needed].to(device=clean.device, dtype=clean.dtype, non_blocking=True)
            if self.plan.select_worst:
                with eval_mode(attack_model), self.compute_loss_context_manager():
                    index, _ = worst_of_k(
                        attack_model, views, labels, chunk_size=args.worst_of_k_chunk_size
                    )
                self._record_wins(index, extras)
                chosen = gather_views(views, index)
            else:
                # random_view (and pgd/fgsm on a corrupted view): the first view is a random
                # draw of the training corruptions (CorruptionViews), never scored.
                chosen = views[:, 0]
        if self.plan.perturbation:
            kwargs = dict(
                mean=self.mean,
                std=self.std,
                epsilon=args.pgd_epsilon,
                band=args.pgd_band,
                band_cutoff=args.pgd_band_cutoff,
                band_iterations=args.pgd_band_iterations,
            )
            generator = step_generator(
                args.corruption_seed, self._micro_index(), args.process_index, device=clean.device
            )
            for scale in dict.fromkeys((self._attack_loss_scale(), 1.0)):
                try:
                    with eval_mode(attack_model), self.compute_loss_context_manager():
                        if self.plan.perturbation == "fgsm":
                            chosen = fgsm(attack_model, chosen, labels, loss_scale=scale, **kwargs)
                        else:
                            chosen = pgd(
                                attack_model,
                                chosen,
                                labels,
                                steps=args.pgd_steps,
                                step_size=args.pgd_step_size,
                                random_start=args.pgd_random_start,
                                loss_scale=scale,
                                generator=generator,
                                **kwargs,
                            )
                    break
                except FloatingPointError:
                    if scale == 1.0:
                        raise
        out = dict(inputs)
        out["pixel_values"] = chosen
        if args.clean_loss_weight > 0:
            out[_CLEAN_KEY] = clean
        return out

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        inputs = dict(inputs)
        if self.bad_images is not None:
            # What this process consumed (unique ids); BadImageCallback shares the ids among
            # processes and checks the limit once min_examples were seen.
            self.bad_images.record_batch(inputs)
        extras = {key: inputs.pop(key) for key in EXTRA_BATCH_KEYS if key in inputs}
        self._account_skipped(extras.get("num_skipped"), len(inputs["labels"]))
        inputs = self._prepare_inputs(inputs)
        if self.args.views_needed or self.plan.perturbation:
            inputs = self.adversarial_inputs(model, inputs, extras)
        # The base step puts the model back in train mode, runs the loss under autocast and
        # scales it for gradient accumulation.
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The same sum the Trainer averages into train_loss, kept on the device (no sync).
        self._loss_sum = self._loss_sum + loss.detach()
        return loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        clean = inputs.pop(_CLEAN_KEY, None)
        if clean is None:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            result = self._mixed_loss(model, inputs, clean, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if model.training and not bool(torch.isfinite(loss.detach()).all()):
            step = self.state.global_step + 1
            raise NonFiniteLossError(
                f"Training loss is {loss.detach().float().item()} at step {step}; stopping. The "
                f"last saved checkpoint in {self.args.output_dir} is intact: lower the learning "
                "rate (or use bf16 instead of fp16) and rerun the same command to resume."
            )
        return result

    def _mixed_loss(self, model, inputs, clean, return_outputs, num_items_in_batch):
        """(1-w)·CE(adversarial) + w·CE(clean) in one forward, reduced like the Trainer's loss."""
        w = self.args.clean_loss_weight
        adv, labels = inputs["pixel_values"], inputs["labels"]
        b = labels.shape[0]
        outputs = model(pixel_values=torch.cat([adv, clean.to(adv.dtype)]))
        ce = F.cross_entropy(outputs.logits.float(), torch.cat([labels, labels]), reduction="none")
        total = (1 - w) * ce[:b].sum() + w * ce[b:].sum()
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # Normalised over the whole accumulated batch, as the model's own loss would be.
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
                n = self.accelerator.num_processes // tp
                loss = loss * (n if self.args.n_gpu <= 1 else self.args.n_gpu)
        else:
            loss = total / b
        if return_outputs:
            outputs.logits = outputs.logits[:b]
            return loss, outputs
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            n = sum(self._window_wins.values())
            for name, count in sorted(self._window_wins.items()):
                logs[f"win_frac/{name}"] = round(count / n, 4)
            if self._window_severities:
                logs["win_severity_mean"] = round(float(np.mean(self._window_severities)), 4)
            if self.images_skipped:
                logs["images_skipped"] = self.images_skipped
            self._window_wins.clear()
            self._window_severities.clear()
        super().log(logs, start_time)

    # ---- statistics over all segments ----------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """`Trainer.train`, counting statistics on top of those of the resumed checkpoint."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"No complete checkpoint to resume from in {self.args.output_dir}."
                )
        folder = str(resume_from_checkpoint) if resume_from_checkpoint else None
        self.prior = TrainingTally.read(folder)
        self._reset_segment()
        if folder:
            self._segment_from_step = int(TrainerState.load_from_json(
                str(Path(folder) / TRAINER_STATE)
            ).global_step)  # fmt: skip
        return super().train(resume_from_checkpoint=folder, **kwargs)

    def tally(self) -> TrainingTally:
        """The run's totals: earlier segments plus this one, summed over processes (a collective
        call under several processes: every process must make it)."""
        local = {
            "wins": dict(self.win_counts),
            "severities": {int(k): v for k, v in self.win_severities.items()},
            "used": self.images_used,
            "skipped": self.images_skipped,
            "loss": float(self._loss_sum),
        }
        parts = gather_object([local]) if self.accelerator.num_processes > 1 else [local]
        step = int(self.state.global_step)
        runtime = time.perf_counter() - self._segment_start
        segment = TrainingTally(
            winning_corruptions=sum((Counter(p["wins"]) for p in parts), Counter()),
            winning_severities=sum((Counter(p["severities"]) for p in parts), Counter()),
            images_used=sum(p["used"] for p in parts),
            images_skipped=sum(p["skipped"] for p in parts),
            # Each process's loss is the mean over its own images: average the processes.
            loss_sum=sum(p["loss"] for p in parts) / len(parts),
            train_runtime_s=runtime,
            global_step=step,
            segments=[{"from_step": self._segment_from_step, "to_step": step,
                       "train_runtime_s": round(runtime, 4)}],
        )  # fmt: skip
        return self.prior.plus(segment)

    def adversary_stats(self) -> dict[str, Any]:
        """The run's totals as `adversary_stats.json` holds them (see `tally`)."""
        return self.tally().to_dict()

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        # The tally goes in first: the Trainer writes trainer_state.json last, so a checkpoint
        # that has it (a complete one) also has its statistics.
        stats = self.adversary_stats()
        if self.args.should_save:
            folder = (
                Path(self._get_output_dir(trial))
                / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            write_json_atomic(stats, folder / STATS_FILE)
        super()._save_checkpoint(model, trial)

    def restore_checkpoint(self, folder: str | Path) -> None:
        """Load a checkpoint's weights, state and statistics without training (a run whose newest
        checkpoint already reached `max_steps`)."""
        self._load_from_checkpoint(str(folder))
        self.state = TrainerState.load_from_json(str(Path(folder) / TRAINER_STATE))
        self.prior = TrainingTally.read(folder)
        saved_bad_images = Path(folder) / BAD_IMAGES_FILE
        if self.bad_images is not None and saved_bad_images.is_file():
            self.bad_images.load_state_dict(read_json(saved_bad_images, "bad-image tally"))
        self._reset_segment()
        self._segment_from_step = self.state.global_step
        self.record_robustness(max_steps=self.state.max_steps)

    # ---- evaluation -----------------------------------------------------------------------
    def get_eval_dataloader(self, eval_dataset: Any = None):
        collator = self.eval_collators.get(eval_dataset) if isinstance(eval_dataset, str) else None
        if collator is None:
            return super().get_eval_dataloader(eval_dataset)
        saved = self.data_collator
        self.data_collator = collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = saved

    def evaluate(self, eval_dataset: Any = None, ignore_keys=None, metric_key_prefix: str = "eval"):
        # A dict of datasets keyed like `eval_collators` is evaluated by name so that each
        # gets its own collator (clean / seen / unseen corruptions).
        if isinstance(eval_dataset, dict) and set(eval_dataset) <= set(self.eval_collators):
            saved = self.eval_dataset
            self.eval_dataset = eval_dataset
            try:
                return super().evaluate(None, ignore_keys, metric_key_prefix)
            finally:
                self.eval_dataset = saved
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = dict(inputs)
        extras = {key: inputs.pop(key) for key in EXTRA_BATCH_KEYS if key in inputs}
        views = extras.get("views")
        if views is not None and views.dim() == 5 and views.shape[1] > 0:
            inputs["pixel_values"] = views[:, 0]
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    # ---- loading checkpoints --------------------------------------------------------------
    def _plain_checkpoint(self, folder: str | None) -> bool:
        if not folder or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return False
        has_weights = any(
            (Path(folder) / name).is_file()
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        return has_weights and isinstance(
            self.accelerator.unwrap_model(self.model), PreTrainedModel
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # transformers 5 saves ViT weights under the legacy key names (vit.encoder.layer.*) and
        # converts them back only in from_pretrained; the Trainer's resume path loads the raw file
        # with strict=False, which silently leaves every transformer layer at its initial value.
        # Load through from_pretrained instead.
        if not self._plain_checkpoint(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        load_converted_weights(target, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if not self._plain_checkpoint(best):
            return super()._load_best_model()
        logger.info("Loading best model from %s (score: %s).", best, self.state.best_metric)
        load_converted_weights(self.accelerator.unwrap_model(self.model), best)

    # ---- saving ---------------------------------------------------------------------------
    def save_robust_model(self, output_dir: str | None = None) -> dict[str, Any]:
        """Save weights (safetensors), processor and `config.robustness` on every process (the
        Trainer writes on the main one), and `adversary_stats.json` (the run's `tally`, all
        segments) on the main process. Every process must call it (the tally is gathered).

        No model card and no push: the recipe writes the card (`hf_vitrobust.hub`) afterwards.
        Returns `{"output_dir", "adversary_stats", "tally"}` (the stats path, None off the main
        process).
        """
        output_dir = str(output_dir or self.args.output_dir)
        self.record_robustness()
        self.save_model(output_dir)
        tally = self.tally()
        status: dict[str, Any] = {"output_dir": output_dir, "adversary_stats": None, "tally": tally}
        if self.is_world_process_zero():
            path = write_json_atomic(tally.to_dict(), Path(output_dir) / STATS_FILE)
            status["adversary_stats"] = str(path)
        return status


def load_converted_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a saved checkpoint's weights into `model` in place, through `from_pretrained` (which
    maps transformers 5's on-disk key names to the module layout), strictly."""
    fresh = type(model).from_pretrained(
        str(folder),
        config=model.config,
        use_safetensors=True,
        attn_implementation=getattr(model.config, "_attn_implementation", None),
    )
    model.load_state_dict(fresh.state_dict(), strict=True)
