"""Sparse autoencoders (sae-lens) on ViT residual streams, and base-vs-fine-tuned comparisons.

- ``config``: SAE types and their labels, ``SAETrainConfig``, ``SAEStudyArguments``.
- ``activations``: residual-stream capture, token selection, the bounded shuffle stream, the cache.
- ``train``: building and training SAEs with sae-lens' ``SAETrainer``.
- ``heldout``: the held-out images and their corrupted pixels (the evaluation's per-image seeds).
- ``compare``: SAE metrics, code cosines, top-k Jaccard, dictionary matching, summaries.
- ``io``: SAE folders in sae-lens' layout (``save_sae``, ``load_sae``, ``list_saes``, ``sae_id``).
- ``schema``: the ``sae.json`` contract (``read_sae_results``).
- ``run``: ``run_sae_study``, the study behind ``recipes/train_sae.py``.
- ``saelens``: the one lazy import of sae-lens (~8 s to import).
"""

from __future__ import annotations

from hf_vitrobust.analysis.sae.compare import (
    DEFINITIONS,
    FlagPolicy,
    MetricsAccumulator,
    compare_codes,
    decoder_directions,
    derangement,
    encode,
    match_dictionaries,
    random_directions,
    row_cosine,
    sae_metrics,
    summarize,
    topk_jaccard,
)
from hf_vitrobust.analysis.sae.config import (
    SAE_TYPE_LABELS,
    SAE_TYPES,
    SAEStudyArguments,
    SAETrainConfig,
    check_sae_type,
    config_dict,
)
from hf_vitrobust.analysis.sae.heldout import (
    condition_images,
    heldout_conditions,
    load_heldout_images,
)
from hf_vitrobust.analysis.sae.io import (
    SPARSITY_FILENAME,
    list_saes,
    load_sae,
    sae_id,
    save_sae,
    to_inference_sae,
)
from hf_vitrobust.analysis.sae.run import run_sae_study
from hf_vitrobust.analysis.sae.schema import header, read_sae_results
from hf_vitrobust.analysis.sae.train import (
    build_training_sae,
    init_from_activations,
    sae_metadata,
    train_sae,
)

__all__ = [
    "DEFINITIONS",
    "FlagPolicy",
    "MetricsAccumulator",
    "SAEStudyArguments",
    "SAETrainConfig",
    "SAE_TYPES",
    "SAE_TYPE_LABELS",
    "SPARSITY_FILENAME",
    "build_training_sae",
    "check_sae_type",
    "compare_codes",
    "condition_images",
    "config_dict",
    "decoder_directions",
    "derangement",
    "encode",
    "header",
    "heldout_conditions",
    "init_from_activations",
    "list_saes",
    "load_heldout_images",
    "load_sae",
    "match_dictionaries",
    "random_directions",
    "read_sae_results",
    "row_cosine",
    "run_sae_study",
    "sae_id",
    "sae_metadata",
    "sae_metrics",
    "save_sae",
    "summarize",
    "to_inference_sae",
    "topk_jaccard",
    "train_sae",
]
