"""Sparse autoencoders (sae-lens) on ViT residual streams, and base-vs-fine-tuned comparisons.

- ``config``: SAE types and their labels, ``SAETrainConfig``, ``SAEStudyArguments``.
- ``activations``: residual-stream capture, token selection, the bounded shuffle stream, the cache.
- ``stream``: the training images dealt to processes and their activations gathered in order.
- ``train``: building and training SAEs with sae-lens' ``SAETrainer``.
- ``calibrate``: the BatchTopK inference threshold calibrated on held-out activations.
- ``heldout``: the compared and reference images and their conditions (the analysis' pixels).
- ``compare``: SAE metrics, code cosines, top-k Jaccard, dictionary matching, summaries.
- ``comparison``: the streamed held-out pass, the distributions and the comparison records.
- ``io``: SAE folders in sae-lens' layout (``save_sae``, ``load_sae``, ``list_saes``, ``sae_id``).
- ``schema``: the ``sae.json`` contract (``read_sae_results``).
- ``run``: ``run_sae_study``, the study behind ``recipes/train_sae.py``.
- ``saelens``: the one lazy import of sae-lens (~8 s to import).
"""

from __future__ import annotations

from hf_vitrobust.analysis.sae.calibrate import (
    L0_TOLERANCE,
    ThresholdCalibrator,
    calibrate_threshold,
    l0_check,
)
from hf_vitrobust.analysis.sae.compare import (
    DEFINITIONS,
    FlagPolicy,
    MetricsAccumulator,
    Summarizer,
    code_cosines,
    decoder_directions,
    encode,
    match_dictionaries,
    pair_values,
    random_directions,
    row_cosine,
    summarize,
    token_slices,
    topk_jaccard,
)
from hf_vitrobust.analysis.sae.comparison import ComparedSAE, HeldOutPass, StudySummaries
from hf_vitrobust.analysis.sae.config import (
    SAE_TYPE_LABELS,
    SAE_TYPES,
    SAEStudyArguments,
    SAETrainConfig,
    check_sae_type,
    config_dict,
)
from hf_vitrobust.analysis.sae.heldout import ReferenceImages, heldout_conditions
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
    "L0_TOLERANCE",
    "ComparedSAE",
    "FlagPolicy",
    "HeldOutPass",
    "MetricsAccumulator",
    "ReferenceImages",
    "SAEStudyArguments",
    "SAETrainConfig",
    "SAE_TYPES",
    "SAE_TYPE_LABELS",
    "SPARSITY_FILENAME",
    "StudySummaries",
    "Summarizer",
    "ThresholdCalibrator",
    "build_training_sae",
    "calibrate_threshold",
    "check_sae_type",
    "code_cosines",
    "config_dict",
    "decoder_directions",
    "encode",
    "header",
    "heldout_conditions",
    "init_from_activations",
    "l0_check",
    "list_saes",
    "load_sae",
    "match_dictionaries",
    "pair_values",
    "random_directions",
    "read_sae_results",
    "row_cosine",
    "run_sae_study",
    "sae_id",
    "sae_metadata",
    "save_sae",
    "summarize",
    "to_inference_sae",
    "token_slices",
    "topk_jaccard",
    "train_sae",
]
