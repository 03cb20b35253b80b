"""Building and training SAEs with sae-lens' own ``SAETrainer``, on activations streamed from a ViT.

``StandardTrainingSAE`` (ReLU + L1, "vanilla") or ``BatchTopKTrainingSAE``. The training images are
clean images plus corrupted views (``data.CorruptionViews``, training stream of draws); their
activations flow through :class:`~hf_vitrobust.analysis.sae.activations.ActivationStream`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list

from hf_vitrobust.analysis.sae.activations import (
    CacheWriter,
    cached_activation_chunks,
    read_cache_manifest,
)
from hf_vitrobust.analysis.sae.config import SAEStudyArguments, SAETrainConfig
from hf_vitrobust.analysis.sae.io import to_inference_sae
from hf_vitrobust.analysis.sae.saelens import import_sae_lens
from hf_vitrobust.analysis.sae.stream import (
    TrainingImages,
    activation_rounds,
    layer_chunks,
    serve_rounds,
)

logger = logging.getLogger(__name__)


def sae_metadata(
    model_name: str,
    layer: int,
    tokens: str,
    training_data: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Metadata stored in the SAE's cfg.json: model, layer (hook), token choice, training data."""
    return {
        "model_name": model_name,
        "hook_name": f"vit.layers.{layer}",
        "hook_description": f"residual stream: output of model.vit.layers[{layer}]",
        "layer": int(layer),
        "tokens": tokens,
        "training_data": training_data,
        **extra,
    }


def build_training_sae(
    d_in: int, config: SAETrainConfig, metadata: dict[str, Any] | None = None
) -> Any:
    """A fresh sae-lens training SAE (``StandardTrainingSAE`` or ``BatchTopKTrainingSAE``).

    Activations are normalised to mean norm sqrt(d_in) during training
    (``expected_average_only_in``); sae-lens folds the factor into the weights at the end.
    """
    sl = import_sae_lens()
    metadata_cls = import_sae_lens("sae_lens.saes.sae").SAEMetadata
    common = dict(
        d_in=int(d_in),
        d_sae=int(d_in) * int(config.expansion_factor),
        device=config.device,
        normalize_activations="expected_average_only_in",
        metadata=metadata_cls(**(metadata or {})),
    )
    torch.manual_seed(config.seed)
    if config.sae_type == "standard":
        cfg = sl.StandardTrainingSAEConfig(
            l1_coefficient=config.l1_coefficient,
            l1_warm_up_steps=int(config.l1_warm_up_fraction * config.total_steps),
            **common,
        )
        return sl.StandardTrainingSAE(cfg)
    cfg = sl.BatchTopKTrainingSAEConfig(k=float(config.k), **common)
    return sl.BatchTopKTrainingSAE(cfg)


@torch.no_grad()
def init_from_activations(sae: Any, batches: Sequence[torch.Tensor]) -> float:
    """Set ``b_dec`` to the activation mean; return the norm scaling factor sqrt(d_in)/E‖x‖.

    The factor is what sae-lens' ``ActivationScaler`` would estimate; b_dec lives in the scaled
    space during training, so it is the mean times that factor.
    """
    x = torch.cat([b.float() for b in batches])
    scaling = math.sqrt(x.shape[-1]) / float(x.norm(dim=-1).mean().clamp_min(1e-12))
    sae.b_dec.data.copy_((x.mean(0) * scaling).to(sae.b_dec.dtype))
    return scaling


def train_sae(
    data_provider: Iterator[torch.Tensor],
    d_in: int,
    config: SAETrainConfig,
    metadata: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Train one SAE with sae-lens' ``SAETrainer`` on ``[batch, d_in]`` batches.

    Returns ``(training_sae, trainer)``. The first ``n_init_batches`` batches set ``b_dec`` (the
    activation mean) and the normalisation factor, and are not trained on.
    """
    sl = import_sae_lens()
    sl_config = import_sae_lens("sae_lens.config")
    sae = build_training_sae(d_in, config, metadata)
    init = [next(data_provider) for _ in range(max(1, config.n_init_batches))]
    for batch in init:
        if batch.shape != (config.batch_size, d_in):
            raise ValueError(
                f"the data provider yields batches of shape {tuple(batch.shape)}; the trainer "
                f"needs ({config.batch_size}, {d_in})."
            )
    scaling = init_from_activations(sae, init)
    steps = config.total_steps
    trainer_cfg = sl_config.SAETrainerConfig(
        total_training_samples=steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr * config.lr_end_factor,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=int(config.lr_warm_up_fraction * steps),
        device=config.device,
        dead_feature_window=config.dead_feature_window,
        feature_sampling_window=max(1, min(2000, steps)),
        logger=sl_config.LoggingConfig(log_to_wandb=False),
    )
    trainer = sl.SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data_provider)
    # fit() keeps a preset factor (it only estimates when None) and folds it in at the end.
    trainer.activation_scaler.scaling_factor = scaling
    torch.manual_seed(config.seed)
    trainer.fit()
    return sae, trainer


@dataclass
class TrainedSAE:
    """One trained SAE of the study: the training SAE, its trainer, its inference SAE."""

    training_sae: Any
    trainer: Any
    inference: Any
    peak_buffer_bytes: int

    @classmethod
    def from_training(cls, sae: Any, trainer: Any, peak_buffer_bytes: int) -> TrainedSAE:
        """Bundle a trained SAE with its inference SAE (the one every comparison encodes with)."""
        return cls(sae, trainer, to_inference_sae(sae), int(peak_buffer_bytes))


def training_images(
    train_ds: Any, processor: Any, args: SAEStudyArguments, data_args: Any, state: Any
) -> TrainingImages:
    """The SAE training images: clean plus ``args.train_views`` corrupted views per image, drawn
    from ``args.train_corruptions`` at ``args.train_severities`` (new draws every epoch), in a
    seeded order reshuffled every epoch (streams: ``data_args.shuffle_buffer_size``)."""
    return TrainingImages(
        train_ds,
        processor,
        batch_size=args.batch_size,
        corruptions=list(args.train_corruptions),
        views=args.train_views,
        severities=list(args.train_severities),
        seed=args.seed,
        num_workers=args.num_workers,
        shuffle_buffer_size=int(getattr(data_args, "shuffle_buffer_size", 0) or 0),
        max_bad_fraction=float(data_args.max_bad_fraction),
        state=state,
    )


def _cache_holds(path: Path, needed: int, key: dict[str, Any]) -> bool:
    """Whether the cache at ``path`` is complete, large enough and made from ``key``'s model and
    data; one made from other weights (a checkpoint retrained in place) or data is remade."""
    manifest = read_cache_manifest(path)
    if manifest is None or manifest.get("n_activations", 0) < needed:
        return False
    same = json.loads(json.dumps(key)) == {k: manifest.get(k) for k in key}
    if not same:
        logger.warning("activation cache %s was made from another model or data: remaking it", path)
    return same


def activation_source(
    model: Any,
    images: TrainingImages,
    layer: int,
    args: SAEStudyArguments,
    seed: int,
    cache_keys: dict[int, dict[str, Any]],
    tag: str,
) -> Iterator[torch.Tensor] | None:
    """Activation chunks of one model at ``layer``: streamed live, or through ``args.cache_dir``.

    Every process calls it, in the same order; the chunks are made by all of them
    (``stream.activation_rounds``) and returned on the main process only (``None`` elsewhere,
    after serving them). A live stream must be closed by its consumer.

    With a cache, the folder of each layer is ``<cache_dir>/<tag>-layer<L>-<tokens>``, and one
    pass over the images fills every layer of ``cache_keys`` (the study's layers) whose cache
    holds fewer activations than one SAE needs or was made from other weights or data (its
    manifest differs from its key).
    """
    state = images.state
    tokens, max_tokens = args.tokens, args.max_tokens_per_image
    if not args.cache_dir:
        if state.is_main_process:
            return layer_chunks(
                activation_rounds(model, images, [layer], tokens, max_tokens, seed), layer
            )
        serve_rounds(model, images, [layer], tokens, max_tokens, seed)
        return None
    paths = {at: Path(args.cache_dir) / f"{tag}-layer{at}-{tokens}" for at in cache_keys}
    # The init batches (b_dec, norm) come first, then training; one spare batch.
    needed = args.training_tokens + (args.n_init_batches + 1) * args.sae_batch_size
    todo: list[list[int]] = [[]]
    if state.is_main_process:
        complete = {at: _cache_holds(paths[at], needed, cache_keys[at]) for at in paths}
        todo = [[at for at in paths if not complete[at]] if not complete[layer] else []]
    if state.num_processes > 1:
        todo = broadcast_object_list(todo)
    if not state.is_main_process:
        if todo[0]:
            serve_rounds(model, images, todo[0], tokens, max_tokens, seed)
        return None
    if todo[0]:
        writers = {at: CacheWriter(paths[at], needed, metadata=cache_keys[at]) for at in todo[0]}
        rounds = activation_rounds(model, images, todo[0], tokens, max_tokens, seed)
        try:
            for chunks in rounds:
                for at, writer in writers.items():
                    if not writer.full:
                        writer.add(chunks[at])
                if all(w.full for w in writers.values()):
                    break
        finally:
            rounds.close()
        for writer in writers.values():
            writer.finish()
    return cached_activation_chunks(paths[layer], cycle=True, expect=cache_keys[layer])


__all__ = [
    "TrainedSAE",
    "activation_source",
    "build_training_sae",
    "init_from_activations",
    "sae_metadata",
    "train_sae",
    "training_images",
]
