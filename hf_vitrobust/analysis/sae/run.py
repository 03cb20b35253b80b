"""The SAE study behind ``recipes/train_sae.py``: train SAEs on the base model (and on each
fine-tuned model), calibrate BatchTopK thresholds, compare every model with the base through the
base SAEs on held-out images, and write ``sae.json``, the SAE folders and the figures.

Steps, one function each: load the models and their roles; train every SAE of the plan (the
activations made by every process, the SAEs trained on the main one); calibrate and save the
SAEs; stream the held-out images (each process its shard) through every model and base SAE;
gather; summarise the distributions and the comparison records; match dictionaries; draw the
figures; write ``sae.json``. Under ``accelerate launch`` every process runs this function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_vitrobust import __version__
from hf_vitrobust.analysis.sae.activations import (
    ActivationStream,
    resolve_layers,
    tokens_per_image,
)
from hf_vitrobust.analysis.sae.calibrate import ThresholdCalibrator, l0_check
from hf_vitrobust.analysis.sae.compare import (
    DEFINITIONS,
    FlagPolicy,
    match_dictionaries,
    random_directions,
    summarize,
    token_slices,
)
from hf_vitrobust.analysis.sae.comparison import (
    ComparedSAE,
    HeldOutPass,
    StudySummaries,
    calibrate_saes,
    gather_condition,
)
from hf_vitrobust.analysis.sae.config import SAE_TYPE_LABELS, SAEStudyArguments, config_dict
from hf_vitrobust.analysis.sae.heldout import (
    ReferenceImages,
    compared_batches,
    compared_example_ids,
    heldout_conditions,
)
from hf_vitrobust.analysis.sae.io import load_sae, sae_id, save_sae
from hf_vitrobust.analysis.sae.saelens import import_sae_lens
from hf_vitrobust.analysis.sae.schema import header
from hf_vitrobust.analysis.sae.train import (
    TrainedSAE,
    activation_source,
    sae_metadata,
    train_sae,
    training_images,
)
from hf_vitrobust.constants import SAE_FILE
from hf_vitrobust.data import (
    BadImageTracker,
    ProcessorSpec,
    load_dataset_split,
    selection_record,
)
from hf_vitrobust.distributed import process_state
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.models import load_model_and_processor, weights_fingerprint
from hf_vitrobust.plots.sae import plot_cosine_histograms, plot_dictionary_matching
from hf_vitrobust.roles import (
    BASE,
    comparison_pairs,
    match_controls,
    model_keys,
    read_robustness,
    role_of,
)

#: (role, fine-tuned model key or None, SAE type, layer); role: base, seed_baseline, finetuned.
SAEKey = tuple[str, str | None, str, int]


@dataclass
class StudyModels:
    """The base model and the fine-tuned models, on the study's device, with the layers to use.

    Fine-tuned models are keyed by ``roles.model_keys``; ``roles`` gives each key's role
    (``base`` for the base) from its ``config.robustness``, never from its name or order.
    """

    base: Any
    base_name: str
    processor: Any
    finetuned: dict[str, Any]
    finetuned_paths: dict[str, str]
    layers: list[int]
    d_in: int
    device: str
    spec: ProcessorSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = ProcessorSpec.from_processor(self.processor)

    def model(self, name: str | None) -> Any:
        return self.base if name is None else self.finetuned[name]

    def model_name(self, name: str | None) -> str:
        return self.base_name if name is None else self.finetuned_paths[name]

    @property
    def robustness(self) -> dict[str, dict[str, Any]]:
        return {key: read_robustness(m.config) for key, m in self.finetuned.items()}

    @property
    def roles(self) -> dict[str, str]:
        return {BASE: BASE, **{k: role_of(r) for k, r in self.robustness.items()}}


def study_device(device: str, state: Any) -> str:
    """``auto``: this process's accelerate device (``cuda:<local rank>`` or ``cpu``)."""
    if device != "auto":
        return device
    chosen = torch.device(state.device)
    # Under several CPU processes accelerate says "cpu:<rank>", which safetensors refuses.
    return "cpu" if chosen.type == "cpu" else str(chosen)


def load_study_models(model_args: Any, args: SAEStudyArguments, state: Any = None) -> StudyModels:
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
    device = study_device(args.device, state or process_state())

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
        device=device,
    )


def base_keys(args: SAEStudyArguments, layers: list[int]) -> list[tuple[str, int]]:
    """(SAE type, layer) of every base SAE, in the order they are trained and reported."""
    return [(t, layer) for t in args.sae_types for layer in layers]


def training_data_summary(
    data_args: Any, args: SAEStudyArguments, train_ds: Any = None
) -> dict[str, Any]:
    """What the SAEs were trained on (sae.json ``training_data``, each SAE's cfg.json metadata);
    with ``train_ds``, its ``selection`` (``data.selection_record``)."""
    train = list(args.train_corruptions)
    selection = None if train_ds is None else selection_record(train_ds, data_args, "train")
    return {
        "dataset": data_args.dataset_name,
        "split": data_args.train_split,
        "max_examples": data_args.max_train_examples,
        "selection": selection,
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
    models: StudyModels,
    data_args: Any,
    args: SAEStudyArguments,
    training_data: dict[str, Any],
    state: Any,
    train_ds: Any = None,
) -> tuple[dict[SAEKey, TrainedSAE], BadImageTracker]:
    """Train every SAE of :func:`training_plan` on activations streamed from its model.

    Every process makes activations; the SAEs are trained on the main process (the others get
    ``{}``). Also returns the training images' bad-image tracker, synced over all processes
    (never judged here: the caller writes its outputs, then ``check(final=True)``).
    """
    if train_ds is None:
        train_ds = load_dataset_split(data_args, "train")
    images = training_images(train_ds, models.processor, args, data_args, state)
    trained: dict[SAEKey, TrainedSAE] = {}
    plan = training_plan(args, models)
    show = args.progress and state.is_main_process
    for key, seed in tqdm(plan, desc="SAEs", disable=not show):
        role, name, sae_type, layer = key
        model_name = models.model_name(name)
        # A cache holds one model's activations at one layer; both SAE types (and the seed
        # baseline) reuse it, and one pass over the images fills every layer's.
        cache_keys = {
            cached: {
                "model": model_name,
                "weights": weights_fingerprint(models.model(name)),
                "layer": cached,
                "tokens": args.tokens,
                "max_tokens_per_image": args.max_tokens_per_image,
                "training_data": training_data,
                "seed": args.seed,
                "batch_size": args.batch_size,
            }
            for cached in models.layers
        }
        tag = "base" if role != "finetuned" else f"finetuned-{name}".replace("/", "_")
        # A cache is one stream of the data (args.seed), shared by the seed baseline; a live
        # stream subsamples tokens with the SAE's own seed.
        data_seed = args.seed if args.cache_dir else seed
        model = models.model(name)
        chunks = activation_source(model, images, layer, args, data_seed, cache_keys, tag)
        if chunks is None:  # another process's SAE: its activations were served
            continue
        meta = sae_metadata(
            model_name,
            layer,
            args.tokens,
            training_data,
            hf_vitrobust_version=__version__,
            role=role,
        )
        stream = ActivationStream(
            chunks, models.d_in, args.sae_batch_size, buffer_mb=args.buffer_mb, seed=seed
        )
        try:
            config = args.train_config(sae_type, seed, device=models.device)
            sae, trainer = train_sae(stream, models.d_in, config, meta)
        finally:
            stream.close()
        trained[key] = TrainedSAE.from_training(sae, trainer, stream.peak_buffer_bytes)
    images.bad_images.sync(state)
    return trained, images.bad_images


def calibrate_study_saes(
    models: StudyModels,
    trained: dict[SAEKey, TrainedSAE],
    reference: ReferenceImages,
    conditions: list[str],
    args: SAEStudyArguments,
) -> dict[SAEKey, dict[str, Any]]:
    """Calibrate every BatchTopK SAE's inference threshold on its own model's activations of the
    reference images under every condition (inference L0 = k there)."""
    n_tokens = len(reference) * len(conditions) * tokens_per_image(models.base, args.tokens)
    by_model: dict[str | None, dict[SAEKey, tuple[int, ThresholdCalibrator]]] = {}
    for key, sae in trained.items():
        _, name, sae_type, layer = key
        if sae_type == "batchtopk":
            calibrator = ThresholdCalibrator(sae.training_sae, sae.inference, args.k, n_tokens)
            by_model.setdefault(name, {})[key] = (layer, calibrator)
    out: dict[SAEKey, dict[str, Any]] = {}
    for name, calibrators in by_model.items():
        out.update(
            calibrate_saes(
                models.model(name), reference, conditions, calibrators, args.tokens, args.batch_size
            )
        )
    return out


def heldout_pass(
    models: StudyModels,
    saes: list[ComparedSAE],
    reference: ReferenceImages,
    compared_ds: Any,
    conditions: dict[str, list[str]],
    data_args: Any,
    args: SAEStudyArguments,
    state: Any,
) -> tuple[dict[str, Any] | None, dict | None, dict[str, Any]]:
    """Stream this process's compared images under every condition through every model and SAE;
    returns (on the main process) the gathered records per condition and the SAE metrics, and
    the bad-image summary of the compared and the reference images (``data.BadImageTracker``)."""
    passes = HeldOutPass(
        models.base,
        models.finetuned,
        saes,
        reference,
        args.tokens,
        args.topk_overlap_k,
        args.batch_size,
        state=state,
    )
    batches = compared_batches(
        compared_ds, models.processor, args, data_args.max_bad_fraction, state
    )
    # The reference images are eval images too: their undecodable ones count (once each).
    batches.bad_images.record(reference.example_ids, reference.skipped_images)
    records: dict[str, Any] = {}
    show = args.progress and state.is_main_process
    for condition in tqdm(batches.conditions, desc="held-out conditions", disable=not show):
        gathered = gather_condition(passes.condition(condition, batches.images(condition, False)))
        if gathered is not None:
            records[condition] = gathered
    bad_images = batches.finish_bad_images(state)
    metrics = passes.gather_metrics()
    return (records if state.is_main_process else None), metrics, bad_images


def save_study_saes(
    models: StudyModels,
    trained: dict[SAEKey, TrainedSAE],
    calibration: dict[SAEKey, dict[str, Any]],
    args: SAEStudyArguments,
    out: Path,
    metrics: dict | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Save every SAE (base SAEs with their calibration and, once known, held-out metrics and
    quality flag); return the ``saes`` entries of sae.json and the flag notes."""
    policy = FlagPolicy(args.min_explained_variance)
    entries = []
    for t, layer in base_keys(args, models.layers):
        sid = sae_id(t, layer, args.tokens)
        key = ("base", None, t, layer)
        sae = trained[key]
        k = args.k if t == "batchtopk" else None
        extra: dict[str, Any] = {
            "train_config": config_dict(args.train_config(t, device=models.device)),
            "threshold_calibration": calibration.get(key),
        }
        entry: dict[str, Any] = {
            "sae_id": sid,
            "sae_type": t,
            "label": SAE_TYPE_LABELS[t],
            "layer": layer,
            "tokens": args.tokens,
            "folder": str(out / "saes" / sid),
            "d_in": models.d_in,
            "d_sae": int(sae.inference.cfg.d_sae),
            "threshold_calibration": calibration.get(key),
            "peak_buffer_mb": sae.peak_buffer_bytes / 2**20,
        }
        if metrics is not None:
            by_model = {"base": metrics[(BASE, sid)]}
            by_model.update({m: metrics[(m, sid)] for m in models.finetuned})
            reason = policy.check(sid, by_model["base"], k)
            extra.update(heldout_metrics=by_model["base"], flagged=reason is not None)
            extra["flag_reason"] = reason
            entry.update(
                metrics=by_model,
                l0_vs_k=l0_check(by_model["base"]["l0"], k),
                flagged=reason is not None,
                flag_reason=reason,
            )
        save_sae(sae.training_sae, out / "saes" / sid, sae.trainer, extra_metadata=extra)
        entries.append(entry)
    for (role, ft, t, layer), sae in trained.items():
        if role == "base":
            continue
        sub = out / ("saes_seed_baseline" if role == "seed_baseline" else f"saes_finetuned/{ft}")
        extra = {"threshold_calibration": calibration.get((role, ft, t, layer))}
        save_sae(sae.training_sae, sub / sae_id(t, layer, args.tokens), sae.trainer, extra)
    return entries, policy.notes


def match_study_dictionaries(
    models: StudyModels, trained: dict[SAEKey, TrainedSAE], args: SAEStudyArguments
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each base SAE's dictionary matched against random directions (chance), the other-seed
    base SAE (noise floor) and each fine-tuned model's SAE; summaries and the matched cosines."""
    stats = dict(n_resamples=args.n_resamples, seed=args.seed, confidence=args.confidence)
    matching: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
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
    curves: dict[str, dict[str, Any]],
    out: Path,
) -> list[str]:
    """The paper's Figs. 9 and 10 (code-cosine histograms per SAE type, every model against the
    base, CLS and patch tokens apart) and the dictionary-matching figure; returns their paths."""
    figures = []
    for sae_type, by_layer in figure_data.items():
        path = out / f"sae_cosine_{sae_type}.png"
        plot_cosine_histograms(
            by_layer,
            title=f"{SAE_TYPE_LABELS[sae_type]} SAE codes: base vs each model on the same input, "
            "and base on different images",
            path=path,
        )
        figures.append(str(path))
    if curves:
        path = out / "sae_dictionary_matching.png"
        plot_dictionary_matching(curves, path=path)
        figures.append(str(path))
    return figures


def _calibrate_and_save(
    models: StudyModels,
    trained: Any,
    reference: ReferenceImages,
    conditions: Mapping[str, Sequence[str]],
    args: SAEStudyArguments,
    out: Path,
    state: Any,
) -> dict[SAEKey, dict[str, Any]]:
    """On the main process: calibrate the BatchTopK thresholds and save every SAE; then every
    process waits, so all of them compare with the SAEs as saved."""
    calibration: dict[SAEKey, dict[str, Any]] = {}
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        calibration = calibrate_study_saes(models, trained, reference, list(conditions), args)
        save_study_saes(models, trained, calibration, args, out)
    state.wait_for_everyone()
    return calibration


def _saved_base_saes(models: StudyModels, args: SAEStudyArguments, out: Path) -> list[ComparedSAE]:
    """The base SAEs as saved (sae-lens' inference format): what every process compares with."""
    return [
        ComparedSAE(sid, t, layer, load_sae(out / "saes" / sid, device=models.device))
        for t, layer in base_keys(args, models.layers)
        for sid in [sae_id(t, layer, args.tokens)]
    ]


def _study_results(
    models: StudyModels,
    trained: Any,
    calibration: dict[SAEKey, dict[str, Any]],
    saes: list[ComparedSAE],
    records: Any,
    metrics: Any,
    conditions: Mapping[str, Sequence[str]],
    args: SAEStudyArguments,
    out: Path,
) -> dict[str, Any]:
    """The SAE entries, flags, comparison records, distributions, dictionary matching and
    figures of ``sae.json`` (main process)."""
    entries, notes = save_study_saes(models, trained, calibration, args, out, metrics)
    flagged = {e["sae_id"]: e["flagged"] for e in entries}
    summaries = StudySummaries(
        records,
        saes,
        list(token_slices(args.tokens)),
        flagged,
        n_resamples=args.n_resamples,
        seed=args.seed,
        confidence=args.confidence,
    )
    distributions = summaries.distributions(list(models.finetuned), conditions, args.severity)
    comparisons = summaries.comparisons(comparison_pairs(models.robustness))
    matching, curves = match_study_dictionaries(models, trained, args)
    figures = write_figures(summaries.figure_data(list(models.finetuned)), curves, out)
    return {
        "saes": entries,
        "flags": notes,
        "comparisons": comparisons,
        "distributions": distributions,
        "dictionary_matching": matching,
        "figures": figures,
    }


def _models_record(models: StudyModels) -> dict[str, Any]:
    """The ``base_model``, ``finetuned_models``, ``models`` and ``controls`` of ``sae.json``."""
    controls = match_controls(models.robustness)
    return {
        "base_model": models.base_name,
        "finetuned_models": dict(models.finetuned_paths),
        "models": {
            key: {"path": models.model_name(None if key == BASE else key), "role": role}
            for key, role in models.roles.items()
        },
        "controls": {
            key: {"clean_control": c.clean, "random_view_control": c.random_view}
            for key, c in controls.items()
        },
    }


def run_sae_study(model_args: Any, data_args: Any, args: SAEStudyArguments) -> dict[str, Any]:
    """Train base (and fine-tuned) SAEs, calibrate, compare, write outputs.

    Writes ``sae.json``, ``saes/<sae_id>/`` (base SAEs, sae-lens format, uploadable as is),
    ``saes_finetuned/<key>/<sae_id>/``, ``saes_seed_baseline/<sae_id>/`` and PNG figures into
    ``args.output_dir``; returns the ``sae.json`` content (``{}`` on processes other than the
    main one).
    """
    state = process_state()
    out = Path(args.output_dir)
    models = load_study_models(model_args, args, state)
    train_ds = load_dataset_split(data_args, "train")
    training_data = training_data_summary(data_args, args, train_ds)
    trained, training_bad_images = train_study_saes(
        models, data_args, args, training_data, state, train_ds
    )
    compared_data = dataclasses.replace(data_args, max_eval_examples=args.num_eval_images)
    compared_ds = load_dataset_split(compared_data, "eval")
    reference = ReferenceImages.from_eval_split(
        data_args, compared_example_ids(compared_ds), args, models.spec
    )
    conditions = heldout_conditions(args.corruptions)
    calibration = _calibrate_and_save(models, trained, reference, conditions, args, out, state)
    saes = _saved_base_saes(models, args, out)
    records, metrics, bad_images = heldout_pass(
        models, saes, reference, compared_ds, conditions, data_args, args, state
    )
    if not state.is_main_process:
        training_bad_images.check(final=True)
        return {}
    result = {
        **header(),
        "definitions": DEFINITIONS,
        **_models_record(models),
        "layers": models.layers,
        "tokens": args.tokens,
        "token_types": list(token_slices(args.tokens)),
        "eval": {
            "dataset": data_args.dataset_name,
            "split": data_args.eval_split,
            "num_images": len(records["clean"]["example_ids"]),
            "selection": selection_record(compared_ds, compared_data, "eval"),
            "reference_images": len(reference),
            "severity": args.severity,
            "seed": args.seed,
            "conditions": conditions,
            "bad_images": bad_images,
            "processes": state.num_processes,
            "note": "corruptions applied on the fly (hf_vitrobust.corruptions), not published "
            "ImageNet-C files; per-image seeds keyed on example_id, shared with the evaluation "
            "and the analysis (one corruption of the group per image)",
        },
        "training_data": {**training_data, "bad_images": training_bad_images.summary()},
        "config": asdict(args),
        **_study_results(
            models, trained, calibration, saes, records, metrics, conditions, args, out
        ),
        "versions": {"hf_vitrobust": __version__, "sae_lens": import_sae_lens().__version__},
    }
    write_json_atomic(result, out / SAE_FILE)
    # Judged after the outputs are written (as the fine-tune saves its model first).
    training_bad_images.check(final=True)
    return result


__all__ = [
    "SAEKey",
    "StudyModels",
    "base_keys",
    "calibrate_study_saes",
    "heldout_pass",
    "load_study_models",
    "match_study_dictionaries",
    "run_sae_study",
    "save_study_saes",
    "train_study_saes",
    "training_data_summary",
    "training_plan",
    "write_figures",
]
