"""The SAE study behind ``recipes/train_sae.py``: train SAEs on the base model (and on each
fine-tuned model), compare base vs fine-tuned through the base SAEs on held-out images, and write
``sae.json``, the SAE folders and the figures.

Steps, one function each: load the models; train every SAE of the plan; encode the held-out
images (clean, then each corruption) under every model; save the SAEs with their held-out metrics;
summarise the comparisons per condition; match dictionaries; draw the figures; write ``sae.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_vitrobust import __version__
from hf_vitrobust.analysis.sae.activations import (
    ActivationStream,
    collect_activations,
    resolve_layers,
)
from hf_vitrobust.analysis.sae.compare import (
    COMPARED,
    DEFINITIONS,
    FlagPolicy,
    MetricsAccumulator,
    compare_codes,
    condition_summary,
    derangement,
    group_values,
    match_dictionaries,
    random_directions,
    summarize,
)
from hf_vitrobust.analysis.sae.config import (
    SAE_TYPE_LABELS,
    SAEStudyArguments,
    config_dict,
    resolve_device,
)
from hf_vitrobust.analysis.sae.heldout import (
    condition_pixels,
    heldout_conditions,
    load_heldout_images,
)
from hf_vitrobust.analysis.sae.io import sae_id, save_sae
from hf_vitrobust.analysis.sae.saelens import import_sae_lens
from hf_vitrobust.analysis.sae.schema import header
from hf_vitrobust.analysis.sae.train import (
    TrainedSAE,
    activation_source,
    sae_metadata,
    train_sae,
    training_batches,
)
from hf_vitrobust.constants import CLEAN, SAE_FILE
from hf_vitrobust.data import ProcessorSpec, load_dataset_split
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.models import load_model_and_processor
from hf_vitrobust.plots.sae import plot_cosine_histograms, plot_dictionary_matching
from hf_vitrobust.roles import BASE, model_keys

#: (role, fine-tuned model name or None, SAE type, layer); role: base, seed_baseline, finetuned.
SAEKey = tuple[str, str | None, str, int]


@dataclass
class StudyModels:
    """The base model and the fine-tuned models, on the study's device, with the layers to use."""

    base: Any
    base_name: str
    processor: Any
    finetuned: dict[str, Any]
    finetuned_paths: dict[str, str]
    layers: list[int]
    d_in: int
    spec: ProcessorSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = ProcessorSpec.from_processor(self.processor)

    def model(self, name: str | None) -> Any:
        return self.base if name is None else self.finetuned[name]

    def model_name(self, name: str | None) -> str:
        return self.base_name if name is None else self.finetuned_paths[name]


def load_study_models(model_args: Any, args: SAEStudyArguments) -> StudyModels:
    """Load ``args.base_model`` and ``args.finetuned_models`` with ``model_args``' loading options.

    The base model is ``args.base_model`` only: ``model_args`` supplies how to load
    (``attn_implementation``, ``trust_remote_code``), never which model.
    """
    if model_args.model_name_or_path or model_args.model_config:
        raise ValueError(
            "the SAE stage takes its base model from 'base_model', not from "
            "'model_name_or_path'/'model_config'; write base_model: <checkpoint>."
        )
    names = model_keys(args.finetuned_models, args.finetuned_names)
    device = resolve_device(args.device)

    def load(path: str) -> tuple[Any, Any]:
        model, processor = load_model_and_processor(
            dataclasses.replace(model_args, model_name_or_path=path)
        )
        return model.eval().to(device), processor

    base, processor = load(args.base_model)
    finetuned = {}
    for name, path in zip(names, args.finetuned_models):
        model, _ = load(path)
        if model.config.hidden_size != base.config.hidden_size or len(model.vit.layers) != len(
            base.vit.layers
        ):
            raise ValueError(
                f"fine-tuned model {path!r} does not match the base model's architecture "
                "(hidden size / layers); compare a model with its own fine-tuned version."
            )
        finetuned[name] = model
    return StudyModels(
        base=base,
        base_name=args.base_model,
        processor=processor,
        finetuned=finetuned,
        finetuned_paths=dict(zip(names, args.finetuned_models)),
        layers=resolve_layers(base, args.layers),
        d_in=int(base.config.hidden_size),
    )


def base_keys(args: SAEStudyArguments, layers: list[int]) -> list[tuple[str, int]]:
    """(SAE type, layer) of every base SAE, in the order they are trained and reported."""
    return [(t, layer) for t in args.sae_types for layer in layers]


def training_data_summary(data_args: Any, args: SAEStudyArguments) -> dict[str, Any]:
    """What the SAEs were trained on (sae.json ``training_data``, each SAE's cfg.json metadata)."""
    train = list(args.train_corruptions)
    return {
        "dataset": data_args.dataset_name,
        "split": data_args.train_split,
        "max_examples": data_args.max_train_examples,
        "corruption_family": (train[0] if len(train) == 1 else train) if train else "none",
        "views_per_image": args.train_views,
        "severities": list(args.train_severities),
        "tokens": args.tokens,
        "max_tokens_per_image": args.max_tokens_per_image,
        "training_tokens": args.training_tokens,
    }


def training_plan(args: SAEStudyArguments, models: StudyModels) -> list[tuple[SAEKey, int]]:
    """Every SAE to train, with its seed: the base SAEs (compared), a second base SAE per type and
    layer with seed + 1 (the dictionary-matching noise floor), and one per fine-tuned model."""
    keys = base_keys(args, models.layers)
    plan = [(("base", None, t, layer), args.seed) for t, layer in keys]
    if args.seed_baseline:
        plan += [(("seed_baseline", None, t, layer), args.seed + 1) for t, layer in keys]
    if args.train_finetuned_saes:
        plan += [
            (("finetuned", name, t, layer), args.seed)
            for name in models.finetuned
            for t, layer in keys
        ]
    return plan


def train_study_saes(
    models: StudyModels, data_args: Any, args: SAEStudyArguments, training_data: dict[str, Any]
) -> dict[SAEKey, TrainedSAE]:
    """Train every SAE of :func:`training_plan` on activations streamed from its model."""
    train_ds = load_dataset_split(data_args, "train")
    batches = training_batches(train_ds, models.processor, args)
    trained: dict[SAEKey, TrainedSAE] = {}
    plan = training_plan(args, models)
    for key, seed in tqdm(plan, desc="SAEs", disable=not args.progress):
        role, name, sae_type, layer = key
        model_name = models.model_name(name)
        meta = sae_metadata(
            model_name,
            layer,
            args.tokens,
            training_data,
            hf_vitrobust_version=__version__,
            role=role,
        )
        # The cache holds one model's activations at one layer; both SAE types (and the seed
        # baseline) reuse it.
        cache_key = {
            "model": model_name,
            "layer": layer,
            "tokens": args.tokens,
            "max_tokens_per_image": args.max_tokens_per_image,
            "training_data": training_data,
        }
        tag = "base" if role != "finetuned" else f"finetuned-{name}"
        chunks = activation_source(models.model(name), batches, layer, args, seed, cache_key, tag)
        stream = ActivationStream(
            chunks, models.d_in, args.sae_batch_size, buffer_mb=args.buffer_mb, seed=seed
        )
        sae, trainer = train_sae(stream, models.d_in, args.train_config(sae_type, seed), meta)
        trained[key] = TrainedSAE.from_training(sae, trainer, stream.peak_buffer_bytes)
    return trained


@dataclass
class HeldOutComparison:
    """Per-image comparisons and streamed SAE metrics on the held-out images.

    ``per_image[ft][sae_id][corruption]`` and ``baseline[sae_id][corruption]`` hold the arrays of
    :func:`~hf_vitrobust.analysis.sae.compare.compare_codes`; ``metrics[(who, type, layer)]``
    accumulates the base SAE's metrics on model ``who``'s activations (``who`` = ``"base"`` or a
    fine-tuned model's name).
    """

    conditions: dict[str, list[str]]
    example_ids: np.ndarray
    metrics: dict[tuple[str, str, int], MetricsAccumulator]
    per_image: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]]
    baseline: dict[str, dict[str, dict[str, np.ndarray]]]


def compare_heldout(
    models: StudyModels,
    trained: dict[SAEKey, TrainedSAE],
    data_args: Any,
    args: SAEStudyArguments,
) -> HeldOutComparison:
    """Encode the held-out images (clean, then each corruption) under every model, one condition
    at a time so memory holds one condition's activations."""
    images, ids = load_heldout_images(data_args, args.num_eval_images, models.spec)
    conditions = heldout_conditions(args.corruptions)
    perm = derangement(len(images), seed=args.seed)
    keys = base_keys(args, models.layers)
    sids = [sae_id(t, layer, args.tokens) for t, layer in keys]
    held = HeldOutComparison(
        conditions=conditions,
        example_ids=ids,
        metrics={
            (who, t, layer): MetricsAccumulator(trained[("base", None, t, layer)].inference)
            for who in [BASE, *models.finetuned]
            for t, layer in keys
        },
        per_image={ft: {sid: {} for sid in sids} for ft in models.finetuned},
        baseline={sid: {} for sid in sids},
    )
    corruptions = [c for names in conditions.values() for c in names]
    for corruption in tqdm(corruptions, desc="held-out conditions", disable=not args.progress):
        pixels = condition_pixels(images, ids, corruption, args.severity, args.seed, models.spec)
        batches = [pixels[i : i + args.batch_size] for i in range(0, len(pixels), args.batch_size)]
        acts = {BASE: collect_activations(models.base, batches, models.layers, args.tokens)}
        for ft, model in models.finetuned.items():
            acts[ft] = collect_activations(model, batches, models.layers, args.tokens)
        for (t, layer), sid in zip(keys, sids):
            sae = trained[("base", None, t, layer)].inference
            for who in acts:
                held.metrics[(who, t, layer)].update(acts[who][layer])
            xb = acts[BASE][layer]
            held.baseline[sid][corruption] = compare_codes(
                sae, xb, xb[perm], topk=args.topk_overlap_k
            )
            for ft in models.finetuned:
                held.per_image[ft][sid][corruption] = compare_codes(
                    sae, xb, acts[ft][layer], topk=args.topk_overlap_k
                )
        del acts, pixels, batches
    return held


def save_study_saes(
    models: StudyModels,
    trained: dict[SAEKey, TrainedSAE],
    held: HeldOutComparison,
    args: SAEStudyArguments,
    out: Path,
) -> tuple[list[dict[str, Any]], dict[str, bool], list[str]]:
    """Save every SAE (base SAEs with their held-out metrics and flag); return the ``saes``
    entries of sae.json, the flag of each base SAE id, and the flag notes."""
    policy = FlagPolicy(args.min_explained_variance)
    entries, flagged = [], {}
    for t, layer in base_keys(args, models.layers):
        sid = sae_id(t, layer, args.tokens)
        sae = trained[("base", None, t, layer)]
        metrics = {"base": held.metrics[(BASE, t, layer)].result()}
        for ft in models.finetuned:
            metrics[f"finetuned:{ft}"] = held.metrics[(ft, t, layer)].result()
        reason = policy.check(sid, metrics["base"])
        flagged[sid] = reason is not None
        folder = save_sae(
            sae.training_sae,
            out / "saes" / sid,
            sae.trainer,
            extra_metadata={
                "heldout_metrics": metrics["base"],
                "flagged": flagged[sid],
                "flag_reason": reason,
                "train_config": config_dict(args.train_config(t)),
            },
        )
        entries.append(
            {
                "sae_id": sid,
                "sae_type": t,
                "label": SAE_TYPE_LABELS[t],
                "layer": layer,
                "tokens": args.tokens,
                "folder": str(folder),
                "d_in": models.d_in,
                "d_sae": int(sae.inference.cfg.d_sae),
                "metrics": metrics,
                "flagged": flagged[sid],
                "flag_reason": reason,
                "peak_buffer_mb": sae.peak_buffer_bytes / 2**20,
            }
        )
    for (role, ft, t, layer), sae in trained.items():
        if role == "base":
            continue
        sub = out / ("saes_seed_baseline" if role == "seed_baseline" else f"saes_finetuned/{ft}")
        save_sae(sae.training_sae, sub / sae_id(t, layer, args.tokens), sae.trainer)
    return entries, flagged, policy.notes


def summarize_comparisons(
    models: StudyModels, held: HeldOutComparison, flagged: dict[str, bool], args: SAEStudyArguments
) -> tuple[dict[str, Any], dict[str, dict[int, dict[str, Any]]]]:
    """sae.json ``comparisons`` per fine-tuned model, SAE and condition (clean, each corruption
    group), and the per-image values the cosine figures draw (keyed ``"<type>|<model>"``)."""
    stats = dict(n_resamples=args.n_resamples, seed=args.seed, confidence=args.confidence)
    comparisons: dict[str, Any] = {}
    figure_data: dict[str, dict[int, dict[str, Any]]] = {}
    for ft in models.finetuned:
        comparisons[ft] = {}
        for t, layer in base_keys(args, models.layers):
            sid = sae_id(t, layer, args.tokens)
            cells: dict[str, Any] = {}
            for cond, names in held.conditions.items():
                same = {k: group_values(held.per_image[ft][sid], names, k) for k in COMPARED}
                other = {k: group_values(held.baseline[sid], names, k) for k in COMPARED}
                cells[cond] = {
                    "corruptions": names,
                    "severity": None if cond == CLEAN else args.severity,
                    **condition_summary(same, other, **stats),
                }
                figure_data.setdefault(f"{t}|{ft}", {}).setdefault(layer, {})[cond] = {
                    "same_input": same["code_cosine"],
                    "different_image": other["code_cosine"],
                    "summary": cells[cond]["code_cosine"],
                    "flagged": flagged[sid],
                }
            comparisons[ft][sid] = {"flagged": flagged[sid], "conditions": cells}
    return comparisons, figure_data


def match_study_dictionaries(
    models: StudyModels, trained: dict[SAEKey, TrainedSAE], args: SAEStudyArguments
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Each base SAE's dictionary matched against random directions (chance), the other-seed
    base SAE (noise floor) and each fine-tuned model's SAE; summaries and the matched cosines."""
    stats = dict(n_resamples=args.n_resamples, seed=args.seed, confidence=args.confidence)
    matching: dict[str, Any] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for t, layer in base_keys(args, models.layers):
        sid = sae_id(t, layer, args.tokens)
        base_sae = trained[("base", None, t, layer)].inference
        against = {
            ("random directions", "random_directions"): random_directions(
                int(base_sae.cfg.d_sae), models.d_in, seed=args.seed
            )
        }
        if ("seed_baseline", None, t, layer) in trained:
            other = trained[("seed_baseline", None, t, layer)].inference
            against[("base, other seed", "base_other_seed")] = other
        for ft in models.finetuned:
            if ("finetuned", ft, t, layer) in trained:
                other = trained[("finetuned", ft, t, layer)].inference
                against[(f"fine-tuned: {ft}", f"finetuned:{ft}")] = other
        curves[sid], matching[sid] = {}, {}
        for (label, key), target in against.items():
            curves[sid][label] = match_dictionaries(base_sae, target)
            matching[sid][key] = summarize(curves[sid][label], **stats)
    return matching, curves


def write_figures(
    figure_data: dict[str, dict[int, dict[str, Any]]],
    curves: dict[str, dict[str, np.ndarray]],
    args: SAEStudyArguments,
    out: Path,
) -> list[str]:
    """The paper's Figs. 9 and 10 (code-cosine histograms per SAE type and fine-tuned model) and
    the dictionary-matching figure; returns their paths."""
    figures = []
    for key, by_layer in figure_data.items():
        t, ft = key.split("|", 1)
        # A key told apart by its path suffix (roles.model_keys: runA/final) stays one file.
        path = out / f"sae_cosine_{t}_{ft.replace('/', '_')}.png"
        plot_cosine_histograms(
            by_layer,
            title=f"{SAE_TYPE_LABELS[t]} SAE codes: base vs {ft} (same input) "
            f"vs different images ({args.tokens} tokens)",
            path=path,
        )
        figures.append(str(path))
    if curves:
        path = out / "sae_dictionary_matching.png"
        plot_dictionary_matching(curves, path=path)
        figures.append(str(path))
    return figures


def run_sae_study(model_args: Any, data_args: Any, args: SAEStudyArguments) -> dict[str, Any]:
    """Train base (and fine-tuned) SAEs, compute metrics and comparisons, write outputs.

    Writes ``sae.json``, ``saes/<sae_id>/`` (base SAEs, sae-lens format, uploadable as is),
    ``saes_finetuned/<name>/<sae_id>/``, ``saes_seed_baseline/<sae_id>/`` and PNG figures into
    ``args.output_dir``; returns the ``sae.json`` content.
    """
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = load_study_models(model_args, args)
    training_data = training_data_summary(data_args, args)
    trained = train_study_saes(models, data_args, args, training_data)
    held = compare_heldout(models, trained, data_args, args)
    entries, flagged, notes = save_study_saes(models, trained, held, args, out)
    comparisons, figure_data = summarize_comparisons(models, held, flagged, args)
    matching, curves = match_study_dictionaries(models, trained, args)
    figures = write_figures(figure_data, curves, args, out)
    result = {
        **header(),
        "definitions": DEFINITIONS,
        "base_model": models.base_name,
        "finetuned_models": dict(models.finetuned_paths),
        "layers": models.layers,
        "tokens": args.tokens,
        "eval": {
            "dataset": data_args.dataset_name,
            "split": data_args.eval_split,
            "num_images": len(held.example_ids),
            "severity": args.severity,
            "seed": args.seed,
            "conditions": held.conditions,
            "note": "corruptions applied on the fly (hf_vitrobust.corruptions), not published "
            "ImageNet-C files; per-image seeds keyed on example_id, shared with the evaluation",
        },
        "training_data": training_data,
        "config": asdict(args),
        "saes": entries,
        "flags": notes,
        "comparisons": comparisons,
        "dictionary_matching": matching,
        "figures": figures,
        "versions": {"hf_vitrobust": __version__, "sae_lens": import_sae_lens().__version__},
    }
    write_json_atomic(result, out / SAE_FILE)
    return result


__all__ = [
    "HeldOutComparison",
    "SAEKey",
    "StudyModels",
    "base_keys",
    "compare_heldout",
    "load_study_models",
    "match_study_dictionaries",
    "run_sae_study",
    "save_study_saes",
    "summarize_comparisons",
    "train_study_saes",
    "training_data_summary",
    "training_plan",
    "write_figures",
]
