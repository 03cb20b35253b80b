"""The report's sections, in the order they appear: one module per topic, each a builder
`build(study, section)` that fills a Section from one stage output (or raises
`SectionUnavailable` / `io.StageOutputError` when that output lacks what it needs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..inputs import StudyOutputs
from ..model import Section
from .accuracy import build_accuracy, build_certainty, build_transfer
from .attention import build_entropy
from .cka import build_cka
from .corruption_error import build_corruption_error
from .logit_lens import build_first_correct
from .patching import build_patching
from .runtime import build_runtime
from .sae import build_dictionary_matching, sae_section
from .setup import describe_setup


@dataclass(frozen=True)
class SectionSpec:
    """One section: its key, title, the paper's claim it tests (None: a measurement only), the
    stage output it reads (a key of `inputs.SOURCES`) and its builder."""

    key: str
    title: str
    claim: str | None
    source: str
    build: Callable[[StudyOutputs, Section], None]


SECTION_SPECS: list[SectionSpec] = [
    SectionSpec(
        "accuracy",
        "Accuracy on seen corruptions (Fig. 2)",
        "Adversarial fine-tuning raises top-1 accuracy on new instances of the corruptions it "
        "was trained on, beyond what the same fine-tuning on clean images gives (the control).",
        "results",
        build_accuracy,
    ),
    SectionSpec(
        "transfer",
        "Transfer to unseen corruptions (Fig. 2, transfer matrix)",
        "The gain does not transfer: on every corruption group not seen in training, top-1 "
        "accuracy is the control's, within a stated margin.",
        "results",
        build_transfer,
    ),
    SectionSpec(
        "certainty",
        "Certainty: probability of the true class (Fig. 4)",
        "Adversarial fine-tuning raises the model's certainty (mean probability of the true "
        "class) on the seen corruptions beyond the control's.",
        "results",
        build_certainty,
    ),
    SectionSpec(
        "first_correct_layer",
        "Layer-wise knowledge: first correct layer (Fig. 5)",
        "Adversarial fine-tuning changes where in the network the correct class emerges (logit "
        "lens), beyond what the control's fine-tuning changes.",
        "analysis",
        build_first_correct,
    ),
    SectionSpec(
        "attention_entropy",
        "Attention entropy difference (Fig. 8)",
        "Adversarial fine-tuning changes the model's attention (attention entropy per layer), "
        "beyond what the control's fine-tuning changes.",
        "analysis",
        build_entropy,
    ),
    SectionSpec(
        "sae_vanilla",
        "Sparse features, vanilla SAE (Fig. 9)",
        "Adversarial fine-tuning does not change the sparse representation beyond what the "
        "control's fine-tuning does: vanilla SAE codes stay as close to the base's as the "
        "control's, within a stated margin.",
        "sae",
        sae_section("standard"),
    ),
    SectionSpec(
        "sae_batchtopk",
        "Sparse features, BatchTopK SAE (Fig. 10)",
        "Adversarial fine-tuning does not change the sparse representation beyond what the "
        "control's fine-tuning does: BatchTopK SAE codes stay as close to the base's as the "
        "control's, within a stated margin.",
        "sae",
        sae_section("batchtopk"),
    ),
    SectionSpec("cka", "Representation similarity (linear CKA)", None, "analysis", build_cka),
    SectionSpec(
        "patching",
        "Activation patching: which layers carry the gain",
        None,
        "analysis",
        build_patching,
    ),
    SectionSpec(
        "dictionary_matching",
        "SAE dictionaries: base vs fine-tuned",
        None,
        "sae",
        build_dictionary_matching,
    ),
    SectionSpec(
        "corruption_error", "Corruption error (mCE)", None, "results", build_corruption_error
    ),
    SectionSpec("runtime", "Runtime and memory of this run", None, "stages", build_runtime),
]

__all__ = ["SECTION_SPECS", "SectionSpec", "describe_setup"]
