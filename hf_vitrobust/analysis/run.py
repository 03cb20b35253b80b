"""The analysis stage: every analysis of fine-tuned models against their base, over a dataset.

``analyze_models`` streams each condition's batches through one capture per model
(`analysis.records`), gathers the per-image records on the main process and summarises them
with their statistics and the paired comparisons against the base and the matched controls
(`analysis.summary`, `analysis.comparisons`). ``run_analysis`` is what ``recipes/analyze.py``
runs, on one process or under ``accelerate launch`` (each process analyses its share of the
images; the main process writes): load the models and the data, analyse, draw the figures and
write ``analysis.json`` (read it back with ``analysis.schema.read_analysis``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from hf_vitrobust.analysis.attention import grad_cam
from hf_vitrobust.analysis.capture import capture_batch
from hf_vitrobust.analysis.comparisons import WILCOXON
from hf_vitrobust.analysis.conditions import DatasetBatches
from hf_vitrobust.analysis.definitions import CORRUPTION_NOTE, DEFINITIONS
from hf_vitrobust.analysis.records import Sections, stream_condition
from hf_vitrobust.analysis.schema import SECTIONS, header
from hf_vitrobust.analysis.summary import summarize_condition
from hf_vitrobust.configs import ComparisonArguments, ModelArguments
from hf_vitrobust.constants import ANALYSIS_FILE
from hf_vitrobust.corruptions import check_severities, resolve_corruptions
from hf_vitrobust.data import (
    ProcessorSpec,
    check_labels,
    label_names,
    load_dataset_split,
    selection_record,
)
from hf_vitrobust.distributed import process_state
from hf_vitrobust.io import atomic_path, write_json_atomic
from hf_vitrobust.models import load_model_and_processor
from hf_vitrobust.plots.analysis import plot_all
from hf_vitrobust.roles import BASE, comparison_pairs, model_keys, read_robustness, role_of
from hf_vitrobust.vit import ViTLayout, check_vit_classifier

__all__ = [
    "DEFINITIONS",
    "UNKNOWN_ROLE",
    "AnalysisArguments",
    "analyze_models",
    "attention_panel",
    "check_same_task",
    "run_analysis",
]

#: The role of a fine-tuned model whose config has no ``robustness`` record (compared with the
#: base only).
UNKNOWN_ROLE = "unknown"


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
    if BASE in finetuned:
        raise ValueError(f"{BASE!r} is the base model's key; rename that fine-tuned model.")
    layouts = {BASE: check_vit_classifier(base, "base model")}
    layout = layouts[BASE]
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
# Every condition: stream this process's images, gather, summarise on the main process
# ---------------------------------------------------------------------------------------------


def _model_entries(
    models: dict[str, nn.Module],
    layouts: dict[str, ViTLayout],
    robustness: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    entries = {}
    for name, model in models.items():
        role = BASE if name == BASE else role_of(robustness[name])
        if name != BASE and not robustness[name]:
            role = UNKNOWN_ROLE
        entries[name] = {
            "name_or_path": getattr(model.config, "_name_or_path", "") or name,
            "role": role,
            "num_layers": layouts[name].num_layers,
            "num_heads": layouts[name].num_heads,
        }
    return entries


def analyze_models(
    base: nn.Module,
    finetuned: dict[str, nn.Module],
    batches: Callable[[str], Iterable[tuple]],
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
    state: PartialState | None = None,
) -> dict[str, Any] | None:
    """Run every analysis of `finetuned` models ({model key: model}) against `base`.

    `batches(condition)` yields this process's `(pixel_values, labels, example_ids)` (or
    `(pixel_values, labels)`, numbered in order) for each condition ("clean", "noise", ...),
    the same images for every call. Each model does one capture forward per batch; patching
    adds base-model block calls on the fine-tuned hidden states. Each model's role and matched
    controls come from its ``config.robustness`` (`roles`).

    Every process must call it; the main process returns a JSON-ready dict (the analysis.json
    layout of `analysis.schema`; sections switched off are empty), the others ``None``. With
    `summarize=False` the statistics are skipped and `result["records"][condition]` holds the
    gathered per-image records and CKA sums instead.
    """
    state = state or process_state()
    layouts = _check_models(base, finetuned, patching)
    on = Sections(lens=lens, attention=attention, cka=cka, patching=patching)
    torch.manual_seed(seed)
    device = torch.device(device)
    models = {BASE: base, **finetuned}
    for model in models.values():
        model.to(device)
    robustness = {name: read_robustness(model.config) for name, model in finetuned.items()}
    pairs = comparison_pairs(robustness)
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    result: dict[str, Any] = {
        **header(),
        "definitions": DEFINITIONS,
        "models": _model_entries(models, layouts, robustness),
        "conditions": list(conditions),
        "statistics": {**boot, "comparison_test": WILCOXON},
        **{section: {} for section in SECTIONS},
        "comparisons": [],
    }
    for condition in conditions:
        records = stream_condition(models, batches, condition, on, device, progress)
        gathered = records.gather(state)
        if gathered is None:
            continue
        if gathered["n_images"] < 2:
            raise ValueError(
                f"Condition {condition!r} produced {gathered['n_images']} image(s); the analysis "
                "needs at least 2 (check the dataset split and max_eval_examples)."
            )
        if not summarize:
            result.setdefault("records", {})[condition] = gathered
            continue
        sections, comparisons = summarize_condition(gathered, condition, pairs, boot)
        for section, entry in sections.items():
            result[section][condition] = entry
        result["comparisons"] += comparisons
    return result if state.is_main_process else None


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
        self.severities = check_severities(self.severities, exactly_one="the analysis")
        if self.corruptions:  # unknown names fail here, before anything loads
            resolve_corruptions(",".join(self.corruptions), key="corruptions")

    @property
    def severity(self) -> int:
        """The one severity of the analysis."""
        return int(self.severities[0])


def _finetuned_keys(args: AnalysisArguments) -> list[str]:
    if not args.base_model:
        raise ValueError("Set base_model (a Hub id or a local checkpoint folder).")
    if not args.finetuned_models:
        raise ValueError("Set finetuned_models (one or more fine-tuned checkpoints to compare).")
    return model_keys(args.finetuned_models, args.finetuned_names or None)


def _device(device: str, state: PartialState) -> torch.device:
    """'auto': this process's accelerator (each process its own GPU), else the CPU."""
    if device == "auto":
        return torch.device(state.device)
    return torch.device(device)


def _load(path: str) -> tuple[nn.Module, Any]:
    # sdpa: the capture switches to eager only for the passes that read attention weights.
    model, processor = load_model_and_processor(ModelArguments(model_name_or_path=path))
    return model.eval(), processor


def _data_section(
    data_args: Any, dataset: Any, batches: DatasetBatches, classes: list[str]
) -> dict[str, Any]:
    return {
        "dataset": str(data_args.dataset_name),
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
        "selection": selection_record(dataset, data_args, "eval"),
        "classes": classes,
        "severity": batches.severity,
        "corruption_groups": {g: list(m) for g, m in batches.group_members.items()},
        "note": CORRUPTION_NOTE,
    }


def run_analysis(args: AnalysisArguments, data_args: Any) -> dict[str, Any] | None:
    """Load the models and data, run every analysis, write `analysis.json`, the attention
    panel (`attention_panel.npz`) and the figures into `args.output_dir`.

    Under ``accelerate launch`` every process analyses its share of the images and the main
    process writes the same files as a single process would; it returns the result there and
    ``None`` on the other processes.
    """
    keys = _finetuned_keys(args)
    state = process_state()
    torch.manual_seed(args.seed)
    device = _device(args.device, state)
    base, processor = _load(args.base_model)
    finetuned = {key: _load(path)[0] for key, path in zip(keys, args.finetuned_models)}
    models = {BASE: base, **finetuned}

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
        state=state,
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
        progress=args.progress and state.is_main_process,
        state=state,
    )
    bad_images = batches.finish_bad_images(state)
    if result is None:
        return None
    result["bad_images"] = bad_images
    result["data"] = _data_section(data_args, dataset, batches, classes)
    result["models"][BASE]["name_or_path"] = args.base_model
    for key, path in zip(keys, args.finetuned_models):
        result["models"][key]["name_or_path"] = path
    result["seed"] = args.seed

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    panel = None
    if args.num_panel_images > 0:
        panel = _panel(models, batches, processor, args.num_panel_images, device)
        with atomic_path(out / "attention_panel.npz") as tmp:
            np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in panel.items()})
    result["figures"] = [p.name for p in plot_all(result, out, panel)]
    write_json_atomic(result, out / ANALYSIS_FILE)
    return result
