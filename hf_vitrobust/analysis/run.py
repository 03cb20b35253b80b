"""The analysis stage: every analysis of fine-tuned models against their base, over a dataset.

``analyze_models`` streams batches of each condition through one capture per model and keeps
per-image records (lens, attention entropy, patching) and exact CKA sums; it then summarises
them with their statistics. ``run_analysis`` is what ``recipes/analyze.py`` runs: load the
models and the data, analyse, draw the figures and write ``analysis.json`` (read it back with
``analysis.schema.read_analysis``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hf_vitrobust.analysis.attention import EntropyRecorder, compare_entropy, grad_cam
from hf_vitrobust.analysis.capture import ActivationCapture, capture_batch
from hf_vitrobust.analysis.conditions import Batch, DatasetBatches
from hf_vitrobust.analysis.lens import LensRecorder, compare_lens, summarize_lens
from hf_vitrobust.analysis.patching import PatchingRecorder, patched_logits
from hf_vitrobust.analysis.schema import header
from hf_vitrobust.analysis.similarity import StreamingLinearCKA
from hf_vitrobust.configs import ComparisonArguments, ModelArguments
from hf_vitrobust.constants import ANALYSIS_FILE
from hf_vitrobust.corruptions import check_severity
from hf_vitrobust.data import ProcessorSpec, check_labels, label_names, load_dataset_split
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.models import load_model_and_processor
from hf_vitrobust.plots.analysis import plot_all
from hf_vitrobust.vit import ViTLayout, check_vit_classifier

__all__ = [
    "DEFINITIONS",
    "SECTIONS",
    "AnalysisArguments",
    "analyze_models",
    "attention_panel",
    "check_same_task",
    "run_analysis",
]

DEFINITIONS = {
    "logit_lens": "logits_l = classifier(final_layernorm(h_l[:, 0])) for hidden states "
    "l = 0..L (0 = embeddings, L = last block before the final layernorm); at l = L it is "
    "the model's logits (last_layer_max_abs_diff).",
    "first_correct_layer": "Over images correct at the last layer (count given): 'first' = "
    "first l whose top-1 is correct; 'stable' = earliest l from which every later layer is "
    "correct.",
    "attention_entropy": "Per layer and head, mean over queries of -sum_j A_ij ln A_ij "
    "(nats, fp32); 'cls_query' = the CLS query row alone. Differences are fine-tuned minus "
    "base on the same images, paired bootstrap CI.",
    "rollout": "Heads averaged, A~ = 0.5 A + 0.5 I, rows normalised, R <- A~ R over layers; "
    "map = R[CLS, patches].",
    "grad_cam": "At the input of the last block's layernorm_before, CLS dropped, channels "
    "weighted by the token-mean gradient of the true-class logit, ReLU.",
    "cka": "Linear CKA ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), base (X) vs "
    "fine-tuned (Y), exact over all images from streamed float64 sums; on the CLS token and "
    "on the mean of the patch tokens of every hidden state 0..L.",
    "patching": "Base model run with hidden state l (0 = embeddings, L = last block) replaced "
    "by the fine-tuned model's on the same input; recovered = (acc(patched) - acc(base)) / "
    "(acc(fine-tuned) - acc(base)), bootstrap CI over images.",
    "statistics": "95% bootstrap CIs over images (seeded); McNemar for accuracy, paired "
    "bootstrap / Wilcoxon for continuous values.",
}

#: The per-condition sections of analysis.json (each present; empty when switched off).
SECTIONS = ("logit_lens", "attention_entropy", "cka", "patching")

CORRUPTION_NOTE = (
    "Corruptions are generated on the fly (hf_vitrobust.corruptions), not the published "
    "ImageNet-C JPEGs. In a group's condition each image gets one corruption of the group, drawn "
    "from (seed, example id, group) (analysis.conditions.group_corruption), corrupted by "
    "corruptions.corrupt_examples with seeding.image_seed(seed, example id, corruption, "
    "severity): the same pixels as the evaluation's cell for that image."
)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_same_task(base: nn.Module, other: nn.Module, other_name: str) -> None:
    """Refuse comparing two models whose classes differ (the comparison would be meaningless)."""
    a = {int(k): str(v) for k, v in base.config.id2label.items()}
    b = {int(k): str(v) for k, v in other.config.id2label.items()}
    if a != b:
        raise ValueError(
            f"{other_name} predicts different classes than the base model "
            f"({len(b)} vs {len(a)} labels, e.g. {sorted(b.items())[:3]} vs "
            f"{sorted(a.items())[:3]}). Compare a fine-tuned model with the model it was "
            "fine-tuned from."
        )


def _check_models(
    base: nn.Module, finetuned: dict[str, nn.Module], patching: bool
) -> dict[str, ViTLayout]:
    """Layouts of every model ("base" first), after checking they can be compared."""
    if not finetuned:
        raise ValueError("analyze_models needs at least one fine-tuned model to compare.")
    layouts = {"base": check_vit_classifier(base, "base model")}
    layout = layouts["base"]
    for name, model in finetuned.items():
        other = layouts[name] = check_vit_classifier(model, name)
        check_same_task(base, model, name)
        if patching and (other.num_layers, other.hidden_size) != (
            layout.num_layers,
            layout.hidden_size,
        ):
            raise ValueError(
                f"{name} has {other.num_layers} layers of width {other.hidden_size}, the base "
                f"model {layout.num_layers} of width {layout.hidden_size}: activation patching "
                "needs the same architecture (set patching to false to skip it)."
            )
    return layouts


# ---------------------------------------------------------------------------------------------
# One condition: stream its batches, then summarise
# ---------------------------------------------------------------------------------------------


@dataclass
class _Sections:
    lens: bool = True
    attention: bool = True
    cka: bool = True
    patching: bool = True


class _ConditionRecords:
    """Per-image records (lens, entropy, patching) and CKA sums of every model on one condition."""

    def __init__(self, names: Iterable[str], on: _Sections) -> None:
        names = list(names)
        self.finetuned = [n for n in names if n != "base"]
        self.on = on
        self.n_images = 0
        self.lens = {name: LensRecorder() for name in names}
        self.entropy = {name: EntropyRecorder() for name in names}
        self.cka = {
            name: {"cls": StreamingLinearCKA(), "patch_mean": StreamingLinearCKA()}
            for name in self.finetuned
        }
        self.patching = {name: PatchingRecorder() for name in self.finetuned}

    def update(self, base: nn.Module, captures: dict[str, ActivationCapture], batch: Batch) -> None:
        """Capture one batch through every model and record it."""
        pixel_values, labels = batch
        self.n_images += len(labels)
        base_out = captures["base"](pixel_values)
        outs = {"base": base_out}
        for name in self.finetuned:
            out = outs[name] = captures[name](pixel_values)
            if self.on.cka:
                self.cka[name]["cls"].update(base_out.cls, out.cls)
                self.cka[name]["patch_mean"].update(base_out.patch_mean, out.patch_mean)
            if self.on.patching:
                patched = patched_logits(base, out.hidden)
                self.patching[name].update(base_out.logits, out.logits, patched, labels)
                out.hidden = None  # free the batch's hidden states now
        for name, out in outs.items():
            if self.on.lens:
                self.lens[name].update(out.lens_logits, labels, out.logits)
            if self.on.attention:
                self.entropy[name].update(out.entropy, out.cls_entropy)

    def recorders(self) -> dict[str, Any]:
        return {
            "lens": self.lens,
            "entropy": self.entropy,
            "cka": self.cka,
            "patching": self.patching,
        }

    def summary(self, boot: dict[str, Any]) -> dict[str, Any]:
        """Section -> this condition's entry, for the sections that are on."""
        out: dict[str, Any] = {}
        if self.on.lens:
            out["logit_lens"] = {
                "models": {name: summarize_lens(rec, **boot) for name, rec in self.lens.items()},
                "comparisons": {
                    name: compare_lens(self.lens["base"], self.lens[name], **boot)
                    for name in self.finetuned
                },
            }
        if self.on.attention:
            out["attention_entropy"] = {
                "models": {name: rec.summary() for name, rec in self.entropy.items()},
                "differences": {
                    name: compare_entropy(self.entropy["base"], self.entropy[name], **boot)
                    for name in self.finetuned
                },
            }
        if self.on.cka:
            out["cka"] = {
                name: {kind: acc.compute().tolist() for kind, acc in recs.items()}
                for name, recs in self.cka.items()
            }
        if self.on.patching:
            out["patching"] = {name: rec.summary(**boot) for name, rec in self.patching.items()}
        return out


def _stream_condition(
    models: dict[str, nn.Module],
    batches: Callable[[str], Iterable[Batch]],
    condition: str,
    on: _Sections,
    device: torch.device,
    progress: bool,
) -> _ConditionRecords:
    records = _ConditionRecords(models, on)
    with ExitStack() as stack:
        captures = {
            name: stack.enter_context(
                ActivationCapture(
                    model,
                    entropy=on.attention,
                    keep_hidden=on.patching and name != "base",
                    name=name,
                )
            )
            for name, model in models.items()
        }
        for pixel_values, labels in tqdm(
            batches(condition),
            desc=f"analysis [{condition}]",
            unit="batch",
            disable=not progress,
        ):
            records.update(models["base"], captures, (pixel_values.to(device), labels.to(device)))
    if records.n_images < 2:
        raise ValueError(
            f"Condition {condition!r} produced {records.n_images} image(s); the analysis needs at "
            "least 2 (check the dataset split and max_eval_examples)."
        )
    return records


def analyze_models(
    base: nn.Module,
    finetuned: dict[str, nn.Module],
    batches: Callable[[str], Iterable[Batch]],
    conditions: list[str],
    *,
    lens: bool = True,
    attention: bool = True,
    cka: bool = True,
    patching: bool = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    summarize: bool = True,
) -> dict[str, Any]:
    """Run every analysis of `finetuned` models against `base`, streaming over batches.

    `batches(condition)` yields `(pixel_values, labels)` for each condition (e.g. "clean",
    "noise", ...), the same images in the same order for every call. Each model does one
    capture forward per batch; patching adds base-model block calls on the fine-tuned
    hidden states. Returns a JSON-ready dict (the analysis.json layout of
    `analysis.schema`; sections switched off are empty). With `summarize=False` the
    statistics are skipped and `result["recorders"][condition]` holds the per-image
    recorders (lens, entropy, patching) and the CKA accumulators instead.
    """
    layouts = _check_models(base, finetuned, patching)
    on = _Sections(lens=lens, attention=attention, cka=cka, patching=patching)
    torch.manual_seed(seed)
    device = torch.device(device)
    models = {"base": base, **finetuned}
    for model in models.values():
        model.to(device)
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    result: dict[str, Any] = {
        **header(),
        "definitions": DEFINITIONS,
        "models": {
            name: {
                "name_or_path": getattr(m.config, "_name_or_path", "") or name,
                "num_layers": layouts[name].num_layers,
                "num_heads": layouts[name].num_heads,
            }
            for name, m in models.items()
        },
        "conditions": list(conditions),
        "statistics": boot,
        **{section: {} for section in SECTIONS},
    }
    for condition in conditions:
        records = _stream_condition(models, batches, condition, on, device, progress)
        if not summarize:
            result.setdefault("recorders", {})[condition] = records.recorders()
            continue
        for section, entry in records.summary(boot).items():
            result[section][condition] = entry
    return result


# ---------------------------------------------------------------------------------------------
# Attention maps of a few images
# ---------------------------------------------------------------------------------------------


def attention_panel(
    models: dict[str, nn.Module],
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    labels: torch.Tensor,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Rollout and Grad-CAM maps for a few images, clean and corrupted, for every model.

    Returns `rollout` and `grad_cam` arrays [images, 2 (clean, corrupted), models, rows, cols]
    and the model names in column order.
    """
    device = torch.device(device)
    rollouts, cams = [], []
    for name, model in models.items():
        model.to(device)
        per_view_r, per_view_c = [], []
        for view in (clean, corrupted):
            view = view.to(device)
            per_view_r.append(capture_batch(model, view, entropy=False, rollout=True, name=name))
            per_view_c.append(grad_cam(model, view, labels.to(device)))
        rollouts.append(torch.stack([c.rollout for c in per_view_r], dim=1))
        cams.append(torch.stack(per_view_c, dim=1))
    return {
        "models": list(models),
        "rollout": torch.stack(rollouts, dim=2).cpu().numpy(),
        "grad_cam": torch.stack(cams, dim=2).cpu().numpy(),
    }


def _panel(
    models: dict[str, nn.Module],
    batches: DatasetBatches,
    processor: Any,
    num_images: int,
    device: torch.device,
) -> dict[str, Any]:
    """`attention_panel` of the first images, with their [0, 1] pixels and corruption names."""
    sample = batches.panel_batch(num_images)
    panel = attention_panel(
        models, sample["clean"], sample["corrupted"], sample["labels"], device=device
    )
    spec = ProcessorSpec.from_processor(processor)
    views = torch.stack([sample["clean"], sample["corrupted"]], dim=1)  # [k, 2, 3, H, W]
    panel["images"] = spec.denormalize(views).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    panel["corruptions"] = sample["corruptions"]
    panel["labels"] = sample["labels"].numpy()
    return panel


# ---------------------------------------------------------------------------------------------
# The recipe's entry point (recipes/analyze.py)
# ---------------------------------------------------------------------------------------------


@dataclass
class AnalysisArguments(ComparisonArguments):
    """What `recipes/analyze.py` compares, on which corruptions, and which analyses it runs.

    The conditions are clean and one per corruption group present in `corruptions`, each at the
    one severity in `severities`.
    """

    severities: list[int] = field(
        default_factory=lambda: [3],
        metadata={"help": "The corruption severity (1..5): exactly one value."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    output_dir: str = field(default="outputs/analysis")
    lens: bool = field(default=True, metadata={"help": "Logit lens and first correct layer."})
    attention: bool = field(default=True, metadata={"help": "Attention entropy per head."})
    cka: bool = field(default=True, metadata={"help": "Linear CKA per layer."})
    patching: bool = field(default=True, metadata={"help": "Activation patching per layer."})
    num_panel_images: int = field(
        default=4, metadata={"help": "Images in the rollout/Grad-CAM panel (0: no panel)."}
    )

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if len(self.severities) != 1:
            raise ValueError(
                f"severities: the analysis takes exactly one severity, got {self.severities}."
            )
        check_severity(self.severities[0])

    @property
    def severity(self) -> int:
        """The one severity of the analysis."""
        return int(self.severities[0])


def _short_name(path: str) -> str:
    return Path(path.rstrip("/")).name or path


def _finetuned_names(args: AnalysisArguments) -> list[str]:
    if not args.base_model:
        raise ValueError("Set base_model (a Hub id or a local checkpoint folder).")
    if not args.finetuned_models:
        raise ValueError("Set finetuned_models (one or more fine-tuned checkpoints to compare).")
    names = list(args.finetuned_names) or [_short_name(p) for p in args.finetuned_models]
    if len(names) != len(args.finetuned_models) or len(set(names)) != len(names) or "base" in names:
        raise ValueError(
            f"finetuned_names {names} must be unique, not 'base', one per fine-tuned model."
        )
    return names


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load(path: str) -> tuple[nn.Module, Any]:
    model, processor = load_model_and_processor(
        ModelArguments(model_name_or_path=path, attn_implementation="eager")
    )
    return model.eval(), processor


def _data_section(data_args: Any, batches: DatasetBatches, classes: list[str]) -> dict[str, Any]:
    return {
        "dataset": str(data_args.dataset_name),
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
        "classes": classes,
        "severity": batches.severity,
        "corruption_groups": {g: list(m) for g, m in batches.group_members.items()},
        "note": CORRUPTION_NOTE,
    }


def run_analysis(args: AnalysisArguments, data_args: Any) -> dict[str, Any]:
    """Load the models and data, run every analysis, write `analysis.json`, the attention
    panel (`attention_panel.npz`) and the figures into `args.output_dir`."""
    names = _finetuned_names(args)
    torch.manual_seed(args.seed)
    device = _device(args.device)
    base, processor = _load(args.base_model)
    finetuned = {name: _load(path)[0] for name, path in zip(names, args.finetuned_models)}
    models = {"base": base, **finetuned}

    dataset = load_dataset_split(data_args, "eval")
    classes = label_names(dataset)
    for name, model in models.items():
        try:
            check_labels(classes, model.config)
        except ValueError as error:
            raise ValueError(f"{name} model: {error}") from error
    batches = DatasetBatches(
        dataset,
        processor,
        # A comma string inside the list ("a,b", as older recipes wrote it) still works.
        corruptions=",".join(args.corruptions),
        severity=args.severity,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_bad_fraction=data_args.max_bad_fraction,
    )
    result = analyze_models(
        base,
        finetuned,
        batches,
        batches.conditions,
        lens=args.lens,
        attention=args.attention,
        cka=args.cka,
        patching=args.patching,
        n_resamples=args.n_resamples,
        confidence=args.confidence,
        seed=args.seed,
        device=device,
        progress=args.progress,
    )
    result["bad_images"] = batches.bad_images.finish()
    result["data"] = _data_section(data_args, batches, classes)
    result["models"]["base"]["name_or_path"] = args.base_model
    for name, path in zip(names, args.finetuned_models):
        result["models"][name]["name_or_path"] = path
    result["seed"] = args.seed

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    panel = None
    if args.num_panel_images > 0:
        panel = _panel(models, batches, processor, args.num_panel_images, device)
        np.savez_compressed(
            out / "attention_panel.npz", **{k: np.asarray(v) for k, v in panel.items()}
        )
    result["figures"] = [p.name for p in plot_all(result, out, panel)]
    write_json_atomic(result, out / ANALYSIS_FILE)
    return result
