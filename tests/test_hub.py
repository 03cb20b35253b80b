"""Model cards (parse back, YAML-safe) and pushing to a local Hub-protocol server.

The push and load steps run the real `huggingface_hub` / `transformers` / `sae_lens` client
code in subprocesses, because `huggingface_hub` binds `HF_ENDPOINT` and `HF_HUB_OFFLINE` when it
is imported (conftest sets offline mode for this process).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_vitrobust.hub import (
    CardInputError,
    PushError,
    eval_results_for_model,
    eval_results_from_rows,
    load_results,
    push_robust_model,
    template_path,
    write_robust_model_card,
    write_sae_card,
)
from hf_vitrobust.hub import cards as cards_module
from hf_vitrobust.hub.common import inline, one_line
from hf_vitrobust.hub.provenance import looks_like_path

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_planted" + secrets.token_hex(12)
ROBUSTNESS = {
    "adversary": "worst_of_k",
    "train_family": "low_frequency",
    "train_corruptions": ["defocus_blur", "gaussian_blur", "motion_blur"],
    "severities": [1, 2, 3, 4, 5],
    "k": 4,
    "pgd": {"epsilon": 0.0039, "step_size": 0.001, "steps": 3},
    "registry_version": "1",
    "base_model": "google/vit-base-patch16-224",
    "dataset": "fashion_mnist",
    "max_steps": 50,
    "seed": 0,
}


def _results() -> dict:
    rows = [
        dict(group="clean", metric="top1", value=0.8125, ci_low=0.79, ci_high=0.83, n=512),
        dict(group="clean", metric="top5", value=0.9863, ci_low=0.97, ci_high=0.99, n=512),
        dict(group="blur", metric="top1", value=0.6016, ci_low=0.58, ci_high=0.62, n=512),
        dict(group="blur", metric="top5", value=0.9102, n=512, seen=True),
        dict(group="noise", metric="top1", value=0.4531, ci_low=0.43, ci_high=0.47, seen=False),
    ]
    eval_results = eval_results_from_rows(
        rows, dataset_type="fashion_mnist", dataset_name="Fashion-MNIST", dataset_split="test"
    )
    return {
        "eval_results": eval_results,
        "transfer_matrix": {
            "metric": "top-1 accuracy",
            "rows": ["low_frequency"],
            "columns": ["blur", "noise"],
            "values": [[0.2031, -0.0117]],
            "ci_low": [[0.17, -0.04]],
            "ci_high": [[0.23, 0.02]],
            "p_value": [[1e-6, 0.41]],
        },
    }


def _save_checkpoint(folder: Path, tiny_vit_kwargs: dict) -> Path:
    from hf_vitrobust.models import tiny_vit

    model, processor = tiny_vit(seed=3, **tiny_vit_kwargs)
    model.config.robustness = dict(ROBUSTNESS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Cards (in process, no network)


def test_card_parses_back_with_same_results(tmp_path, tiny_vit_kwargs):
    from huggingface_hub import EvalResult, ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    folder = _save_checkpoint(tmp_path / "ckpt", tiny_vit_kwargs)
    results = _results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    figure = tmp_path / "transfer_matrix.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    path = write_robust_model_card(folder, tmp_path / "results.json", figures=[figure])

    card = ModelCard.load(path)
    expected = [
        EvalResult(
            **{
                k: v
                for k, v in entry.items()
                if k not in ("ci_low", "ci_high", "n", "group", "seen")
            }
        )
        for entry in results["eval_results"]
    ]
    assert card.data.eval_results == expected
    name, parsed = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "ckpt" and parsed == expected
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert card.data.license == "apache-2.0"
    assert "robustness" in card.data.tags
    # Human-readable part: CIs, transfer matrix, figure, recipe, limitations, how to load.
    text = card.text
    assert "0.8125 [0.7900, 0.8300]" in text
    assert "+0.2031 [+0.1700, +0.2300]" in text
    assert (
        "(figures/transfer_matrix.png)" in text
        and (folder / "figures/transfer_matrix.png").is_file()
    )
    assert "defocus_blur, gaussian_blur, motion_blur" in text and "epsilon=0.0039" in text
    assert "not the published ImageNet-C files" in text
    assert 'ViTForImageClassification.from_pretrained("<repo-id>")' in text


@pytest.mark.slow
def test_card_from_evaluation_results_json(tmp_path, tiny_vit_kwargs, fashion_mnist_dir):
    """The whole results.json of recipes/evaluate.py goes into the card of its fine-tuned model."""
    from huggingface_hub import EvalResult, ModelCard

    from hf_vitrobust.data import load_image_dataset
    from hf_vitrobust.evaluation import EvalModel, EvaluationSettings, evaluate_robustness
    from hf_vitrobust.models import tiny_vit

    folder = _save_checkpoint(tmp_path / "run-blur", tiny_vit_kwargs)
    base, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    tuned, _ = tiny_vit(seed=3, **tiny_vit_kwargs)
    tuned.config.robustness = dict(ROBUSTNESS)
    models = [
        EvalModel("base", base.eval(), processor),
        EvalModel(str(folder), tuned.eval(), processor),
    ]
    dataset = load_image_dataset("fashion_mnist", split="test", max_examples=16)
    settings = EvaluationSettings(
        corruptions=["gaussian_blur", "gaussian_noise"],
        severities=[1],
        n_resamples=1000,
        progress=False,
    )
    evaluate_robustness(
        models,
        dataset,
        tmp_path / "eval",
        settings,
        dataset_info={"name": "fashion_mnist", "split": "test"},
    )
    results_path = tmp_path / "eval" / "results.json"
    card = ModelCard.load(write_robust_model_card(folder, results_path))
    expected = [EvalResult(**e) for e in load_results(results_path, folder=folder)["eval_results"]]
    assert card.data.eval_results == expected
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    # Clean and per-group top-1/top-5 with their CIs, each subset its own dataset entry.
    configs = {r.dataset_config for r in expected}
    assert {"clean", "group=noise"} <= configs
    clean_top1 = next(
        r for r in expected if r.dataset_config == "clean" and r.metric_type == "accuracy"
    )
    assert f"{clean_top1.metric_value:.4f} [{clean_top1.metric_args['ci_low']:.4f}," in card.text
    assert "### Changes against the base model and the controls" in card.text
    assert "| vs base model |" in card.text
    assert len(card.data.to_dict()["model-index"][0]["results"]) == len(configs)


def _evaluation_results(finetuned: str) -> dict:
    """A small results.json of recipes/evaluate.py (schema v3): the base, one adversarial
    fine-tune and its clean control, with comparison records against both."""
    from hf_vitrobust.evaluation.schema import header

    def block(value: float) -> dict:
        return {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "n": 16}

    def metrics(shift: float) -> dict:
        names = ("top_1_accuracy", "top_5_accuracy", "p_true", "ece")
        return {m: block(0.5 + shift + i / 10) for i, m in enumerate(names)}

    keys = {"base": 0.0, "ft": 0.1, "ctrl": 0.05}
    diff = {"estimate": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.01, "seen": True}

    def comparison(reference: str, role: str, scope: str, estimate: float, **extra) -> dict:
        return {
            "model": "ft",
            "reference": reference,
            "reference_role": role,
            "metric": "top_1_accuracy",
            "scope": scope,
            "estimate": estimate,
            "ci_low": estimate - 0.03,
            "ci_high": estimate + 0.03,
            "p_value": 0.02,
            "test": "mcnemar_exact",
            "n": 16,
            **extra,
        }

    comparisons = [
        comparison(ref, role, scope, estimate, **extra)
        for ref, role, shift in (("base", "base", 0.0), ("ctrl", "clean_control", -0.05))
        for scope, estimate, extra in (
            ("clean", 0.04 + shift, {}),
            ("group:noise", 0.1 + shift, {"seen": True, "seen_fraction": 1.0}),
            ("seen", 0.1 + shift, {}),
        )
    ]
    control = {"key": "ctrl", "name": "outputs/control", "role": "clean_control"}
    return {
        **header(),
        "dataset": {"name": "fashion_mnist", "split": "test", "n_images": 16, "num_classes": 10},
        "models": [
            {"key": "base", "name": "outputs/base", "role": "base", "robustness": None},
            {
                "key": "ft",
                "name": finetuned,
                "role": "adversarial",
                "controls": {"clean": "ctrl", "random_view": None},
                "robustness": ROBUSTNESS,
            },
            {**control, "robustness": {**ROBUSTNESS, "adversary": "none", "corruptions": []}},
        ],
        "grid": {
            "cells": ["clean", "gaussian_noise@1"],
            "severities": [1],
            "clean": True,
            "groups": {"gaussian_noise": "noise"},
        },
        "settings": {"n_resamples": 1000, "confidence": 0.95, "bootstrap_seed": 0},
        "cells": [
            {"model": k, "corruption": "clean", "severity": 0, "metrics": metrics(v)}
            for k, v in keys.items()
        ],
        "all_corruptions": [{"model": k, "metrics": metrics(v - 0.2)} for k, v in keys.items()],
        "per_group": [
            {"model": k, "group": "noise", "metrics": metrics(v - 0.2)} for k, v in keys.items()
        ],
        "per_corruption": [
            {"model": k, "corruption": "gaussian_noise", "metrics": metrics(v - 0.2)}
            for k, v in keys.items()
        ],
        "per_family": [
            {
                "model": "ft",
                "family": "seen",
                "corruptions": ["gaussian_noise"],
                "metrics": metrics(0),
                "base_metrics": metrics(-0.1),
                "vs_base": {"top_1_accuracy": diff},
            }
        ],
        "corruption_error": {
            "reference": "base",
            "corruptions": ["gaussian_noise"],
            "models": {k: {"mce": block(1.0 - v)} for k, v in keys.items()},
        },
        "transfer_matrix": {
            "metric": "top_1_accuracy",
            "rows": ["ft", "ctrl"],
            "columns": ["clean", "noise"],
            "cells": [[diff, diff], [diff, diff]],
        },
        "comparisons": comparisons,
    }


def test_model_index_rows_from_results_json(tmp_path, tiny_vit_kwargs):
    """eval_results_for_model reads results.json through the evaluation stage's reader."""
    from huggingface_hub import EvalResult, ModelCard

    from hf_vitrobust.io import SchemaMismatch

    folder = _save_checkpoint(tmp_path / "run-noise", tiny_vit_kwargs)
    results = _evaluation_results(str(folder))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    rows = eval_results_for_model(path, "ft")
    assert rows == eval_results_for_model(results, str(folder))
    configs = {r["metric_config"] for r in rows}
    assert configs == {
        "clean",
        "corrupted",
        "group=noise",
        "seen_corruptions",
        "mce_reference=base",
    }
    objs = [EvalResult(**r) for r in rows]
    assert all(o.task_type == "image-classification" for o in objs)
    clean = next(
        r for r in rows if r["metric_config"] == "clean" and r["metric_type"] == "accuracy"
    )
    assert clean["metric_value"] == 0.6 and clean["metric_args"]["ci_low"] == pytest.approx(0.55)
    assert clean["metric_args"]["n_resamples"] == 1000 and clean["metric_args"]["n"] == 16
    per_corruption = eval_results_for_model(path, "ft", level="corruption")
    assert "corruption=gaussian_noise" in {r["metric_config"] for r in per_corruption}
    with pytest.raises(ValueError, match="not in these results"):
        eval_results_for_model(results, "nope")
    with pytest.raises(ValueError, match="level must be"):
        eval_results_for_model(results, "ft", level="cell")

    # The card of the checkpoint takes its own model's rows (top-1/top-5), and its changes
    # against the base and against its clean control (model minus reference, per group).
    card = ModelCard.load(write_robust_model_card(folder, path))
    expected = [EvalResult(**e) for e in load_results(path, folder=folder)["eval_results"]]
    assert card.data.eval_results == expected and len(expected) == 9
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert "| | clean | noise (seen) |" in card.text
    assert (
        "| vs base model | +0.0400 [+0.0100, +0.0700] (p=0.02) | +0.1000 [+0.0700, +0.1300] "
        "(p=0.02) |" in card.text
    )
    assert "| vs clean control (control) | -0.0100 [-0.0400, +0.0200] (p=0.02) |" in card.text
    # The control's card: changes against the base only (the records are the adversarial
    # model's), and it says it is a control.
    control = _card_for(tmp_path / "control", {**CLEAN}, tiny_vit_kwargs, results=path)
    assert "vs clean control" not in control.text and "Clean fine-tuning" in control.text

    # A results.json of another schema version is refused by the reader, naming the fix.
    path.write_text(json.dumps({**results, "schema_version": 1}))
    with pytest.raises(SchemaMismatch, match="(?i)rerun recipes/evaluate.py"):
        write_robust_model_card(folder, path)
    with pytest.raises(SchemaMismatch, match="schema version"):
        eval_results_for_model({**results, "schema_version": 1}, "ft")


def test_card_reads_the_new_and_old_training_names(tmp_path, tiny_vit_kwargs):
    """config.robustness `corruptions` (new) or `train_family` (older checkpoints)."""
    from huggingface_hub import ModelCard

    folder = _save_checkpoint(tmp_path / "ckpt", tiny_vit_kwargs)
    card = ModelCard.load(write_robust_model_card(folder))
    assert "| Training family | low_frequency |" in card.text
    config = json.loads((folder / "config.json").read_text())
    robustness = {k: v for k, v in config["robustness"].items() if k != "train_family"}
    config["robustness"] = {**robustness, "corruptions": ["low_frequency"]}
    (folder / "config.json").write_text(json.dumps(config))
    card = ModelCard.load(write_robust_model_card(folder))
    assert "| Training family | low_frequency |" in card.text
    assert "| Corruptions |" not in card.text  # shown once, in its own row
    # Which meaning of "low frequency" the family follows: the paper's, or the measured band.
    assert "| Family definition | image_content: the paper's definition" in card.text
    config["robustness"]["corruptions"] = ["band_low"]
    (folder / "config.json").write_text(json.dumps(config))
    card = ModelCard.load(write_robust_model_card(folder))
    assert "| Family definition | perturbation_band: by the measured band" in card.text


def test_card_without_results_and_packaged_templates(tmp_path, tiny_vit_kwargs, monkeypatch):
    from huggingface_hub import ModelCard

    folder = _save_checkpoint(tmp_path / "ckpt", tiny_vit_kwargs)
    # The trainer's own layout: flat pgd_* keys, steps from trainer_state.json.
    config = json.loads((folder / "config.json").read_text())
    config["robustness"] = {"adversary": "pgd", "pgd_epsilon": 0.01, "pgd_steps": 2, "num_views": 1}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 123}))
    card = ModelCard.load(write_robust_model_card(folder))
    assert card.data.eval_results is None and "No evaluation results yet" in card.text
    assert "| PGD settings | epsilon=0.0100, steps=2 |" in card.text
    assert "| Steps | 123 |" in card.text and "| Training family | not recorded |" in card.text
    # One copy of the templates, `model_cards/` at the top of the checkout; the package's
    # `hub/templates` is a link to it (package data, read through importlib.resources), so a
    # checkout, an editable and a wheel install use the same files.
    for name in ("robust_model.md", "sae.md"):
        assert template_path(name).resolve() == ROOT / "model_cards" / name
    assert (ROOT / "hf_vitrobust" / "hub" / "templates").is_symlink()
    monkeypatch.setattr(cards_module, "TEMPLATE_PACKAGE", "hf_vitrobust.demo")  # no templates/
    with pytest.raises(FileNotFoundError, match="reinstall hf_vitrobust"):
        template_path("sae.md")


# What the trainer records for an adversarial fine-tune, a clean control and a random-view control
# (same base, data, steps and seed): `config.robustness`.
PROVENANCE = {  # as `training.run.run_provenance` records it
    "base_model": "google/vit-base-patch16-224",
    "dataset": {
        "name": "fashion_mnist",
        "source": "debian_idx_files",
        "config": None,
        "streaming": False,
        "split": "train",
        "rule": "stratified",
        "description": "a class-stratified random sample of 512 examples (seed 0)",
        "seed": 0,
        "requested": 512,
        "n": 512,
        "per_class": {"T-shirt/top": 52, "Trouser": 51},
        "shuffle_buffer_size": None,
        "example_ids_sha256": "5f" * 32,
    },
    "seed": 7,
    "max_steps": 40,
    "registry_version": "2",
    "optimization": {"learning_rate": 0.0005, "lr_scheduler_type": "cosine"},
}
ADVERSARIAL = {
    **PROVENANCE,
    "adversary": "worst_of_k",
    "corruptions": ["low_frequency"],
    "train_corruptions": ["defocus_blur", "gaussian_blur"],
    "severities": [1, 3],
    "num_views": 4,
}
CLEAN = {**PROVENANCE, "adversary": "none", "corruptions": [], "train_corruptions": []}
CLEAN.update(severities=[], num_views=0)
RANDOM_VIEW = {**ADVERSARIAL, "adversary": "random_view", "num_views": 1}


def _card_for(folder: Path, robustness: dict, tiny_vit_kwargs: dict, **options):
    _save_checkpoint(folder, tiny_vit_kwargs)
    config = json.loads((folder / "config.json").read_text())
    config["robustness"] = robustness
    (folder / "config.json").write_text(json.dumps(config))
    return ModelCard.load(write_robust_model_card(folder, **options))


def test_cards_record_provenance_and_say_how_the_model_was_trained(tmp_path, tiny_vit_kwargs):
    """Base model, dataset, seed, adversary, corruptions and steps come from config.robustness;
    a clean run's card says clean fine-tuning, a control's says it is a control."""
    cards = {
        name: _card_for(tmp_path / name, robustness, tiny_vit_kwargs)
        for name, robustness in [("adv", ADVERSARIAL), ("clean", CLEAN), ("rv", RANDOM_VIEW)]
    }
    for name, card in cards.items():
        assert "not recorded" not in card.text, name  # everything is recorded
        assert "| Base model | google/vit-base-patch16-224 |" in card.text
        data = "| Training data | zalando-datasets/fashion_mnist: a class-stratified random "
        assert data + "sample of 512 examples (seed 0) (source=debian_idx_files," in card.text
        assert "split=train" in card.text and "per_class=T-shirt/top=52, Trouser=51" in card.text
        assert "| Optimization | learning_rate=0.0005, lr_scheduler_type=cosine |" in card.text
        assert "| Seed | 7 |" in card.text and "| Steps | 40 |" in card.text
        assert card.data.base_model == "google/vit-base-patch16-224"
        assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    adv, clean, rv = cards["adv"], cards["clean"], cards["rv"]
    assert "fine-tuned adversarially" in adv.text and "| Role | adversarial fine-tune |" in adv.text
    assert "| Training corruptions | defocus_blur, gaussian_blur |" in adv.text
    assert "| Adversary | worst_of_k |" in adv.text and "| Views per image | 4 |" in adv.text
    assert "adversarial-training" in adv.data.tags and "control" not in adv.data.tags
    # The clean run: clean fine-tuning, a control; nothing about adversaries or corruptions.
    assert "Clean fine-tuning" in clean.text and "clean control" in clean.text
    assert "fine-tuned adversarially" not in clean.text and "worst" not in clean.text
    assert "| Training corruptions | none (clean images) |" in clean.text
    assert "| Views per image |" not in clean.text and "| Severities |" not in clean.text
    assert "control" in clean.data.tags and "adversarial-training" not in clean.data.tags
    assert "random-view control" in rv.text and "no worst-of selection" in rv.text
    assert "| Adversary | random_view |" in rv.text and "| Views per image | 1 |" in rv.text
    assert "control" in rv.data.tags and "adversarial-training" not in rv.data.tags
    # A model trained from scratch (no base model) says so.
    scratch = {**CLEAN, "base_model": "model_config", "model_config": {"hidden_size": 96}}
    card = _card_for(tmp_path / "scratch", scratch, tiny_vit_kwargs)
    assert "trained from scratch" in card.text
    assert "| Base model | none (trained from scratch) |" in card.text
    assert "| Model config | hidden_size=96 |" in card.text
    assert card.data.base_model is None


def test_cards_never_publish_local_paths(tmp_path, tiny_vit_kwargs):
    """A local dataset (and base model) is "local (<folder name>)" in the card and `local` as
    the model-index dataset type: never an absolute path, in the text or in the metadata."""
    photos = tmp_path / "private" / "my_photos"
    photos.mkdir(parents=True)
    base = tmp_path / "private" / "runs" / "base"
    base.mkdir(parents=True)
    robustness = {**ADVERSARIAL, "dataset": str(photos), "base_model": str(base)}
    results = _results()
    for row in results["eval_results"]:
        row["dataset_type"] = row["dataset_name"] = str(photos / "test")
    card = _card_for(tmp_path / "run", robustness, tiny_vit_kwargs, results=results)
    readme = (tmp_path / "run" / "README.md").read_text()
    assert str(tmp_path) not in readme and "private" not in readme
    assert "| Training data | local (my_photos) |" in card.text
    assert "| Base model | local (base) |" in card.text
    assert card.data.datasets is None and card.data.base_model is None
    assert {r.dataset_type for r in card.data.eval_results} == {"local"}
    assert {r.dataset_name for r in card.data.eval_results} == {"my_photos/test (local)"}

    # As the trainer records a local folder (`local:<name>`, with the base model's weights hash).
    labels = {**ADVERSARIAL, "base_model": "local:base", "base_model_sha256": "ab" * 32}
    labels["dataset"] = {"name": "my_photos", "source": "local", "split": "train"}
    card = _card_for(tmp_path / "run", labels, tiny_vit_kwargs)
    assert "| Training data | local (my_photos) (split=train) |" in card.text
    assert "| Base model | local (base) |" in card.text and "ab" * 32 in card.text
    assert card.data.datasets is None and card.data.base_model is None

    # The same from a results.json of recipes/evaluate.py on a local folder (a path, or the
    # `local:<name>` label the data layer writes).
    for name in (str(photos), "local:my_photos"):
        evaluation = _evaluation_results(str(tmp_path / "run"))
        evaluation["dataset"]["name"] = name
        card = _card_for(tmp_path / "run", robustness, tiny_vit_kwargs, results=evaluation)
        assert str(tmp_path) not in (tmp_path / "run" / "README.md").read_text()
        assert {r.dataset_type for r in card.data.eval_results} == {"local"}
        assert {r.dataset_name for r in card.data.eval_results} == {"my_photos (local)"}


_card_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda s: s.strip() and not looks_like_path(one_line(s)))


@pytest.fixture(scope="module")
def unicode_checkpoint(tmp_path_factory, tiny_vit_kwargs):
    return _save_checkpoint(tmp_path_factory.mktemp("unicode") / "ckpt", tiny_vit_kwargs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_card_text, dataset=_card_text, description=_card_text)
def test_card_yaml_round_trips_any_unicode(unicode_checkpoint, name, dataset, description):
    """Any unicode in the model name, dataset and description comes back from ModelCard.load:
    the same values in the YAML metadata (as one line) and inert text in the body."""
    rows = [dict(group="clean", metric="top1", value=0.5, ci_low=0.4, ci_high=0.6, n=8)]
    results = {"eval_results": eval_results_from_rows(rows, dataset_type=dataset)}
    path = write_robust_model_card(
        unicode_checkpoint, results, model_name=name, description=description, dataset=dataset
    )
    card = ModelCard.load(path)
    assert card.data.model_name == one_line(name)
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    (result,) = card.data.eval_results
    assert result.dataset_type == one_line(dataset)
    assert result.dataset_name == one_line(f"{dataset} (clean)")
    assert result.metric_value == 0.5
    assert model_index_to_eval_results(card.data.to_dict()["model-index"])[0] == one_line(name)
    assert inline(description) in card.text and inline(name) in card.text


def test_templates_are_package_data():
    """pyproject.toml's package-data ships every template (the wheel test builds one)."""
    import fnmatch

    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hf_vitrobust"]
    templates = sorted((ROOT / "hf_vitrobust" / "hub" / "templates").iterdir())
    assert {p.name for p in templates} == {"robust_model.md", "sae.md"}
    for path in templates:
        rel = path.relative_to(ROOT / "hf_vitrobust").as_posix()
        assert any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns), rel


@pytest.mark.slow
def test_wheel_ships_the_templates(tmp_path):
    """A built wheel holds the templates, and an installed (unzipped) wheel renders from them."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "hf_vitrobust", src / "hf_vitrobust", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = f"from setuptools import build_meta as b; print(b.build_wheel({str(tmp_path)!r}))"
    made = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr[-3000:]
    wheel = tmp_path / made.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("robust_model.md", "sae.md"):
        assert f"hf_vitrobust/hub/templates/{name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "import hf_vitrobust.hub as h; print(h.template_path('sae.md'))"
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(found.stdout.strip()) == site / "hf_vitrobust" / "hub" / "templates" / "sae.md"


def test_user_strings_cannot_break_yaml_header(tmp_path, tiny_vit_kwargs):
    from huggingface_hub import ModelCard

    folder = _save_checkpoint(tmp_path / "ckpt", tiny_vit_kwargs)
    evil = 'vit "robust": yes\n---\nlicense: mit\nlibrary_name: evil # {{ card_data }} | <b>'
    results = _results()
    results["eval_results"][0]["dataset_name"] = evil
    results["eval_results"][0]["metric_name"] = "top-1: 'acc'\n- pwned"
    path = write_robust_model_card(
        folder,
        results,
        model_name=evil,
        description=evil,
        dataset=evil,
        tags=[evil],
        base_model=evil,
    )
    card = ModelCard.load(path)
    one_line = " ".join(evil.split())
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert card.data.model_name == one_line
    assert card.data.base_model is None  # not a Hub id: kept out of the metadata
    assert card.data.eval_results[0].dataset_name == one_line
    assert card.data.eval_results[0].metric_name == "top-1: 'acc' - pwned"
    assert one_line in card.data.tags
    assert set(card.data.to_dict()) <= {
        "base_model",
        "datasets",
        "library_name",
        "license",
        "metrics",
        "pipeline_tag",
        "tags",
        "model-index",
    }
    # In the Markdown body the strings are inert: one line, pipes escaped, no HTML.
    assert "<b>" not in card.text and "\\|" in card.text
    assert "{{" in card.text  # rendered literally, not as a template


def test_bad_results_give_clear_errors(tmp_path):
    with pytest.raises(CardInputError, match=r"eval_results\[0\] lacks \['metric_value'\]"):
        load_results(
            [{"task_type": "t", "dataset_type": "d", "dataset_name": "n", "metric_type": "m"}]
        )
    with pytest.raises(CardInputError, match="unknown keys"):
        load_results(
            [
                dict(
                    task_type="t",
                    dataset_type="d",
                    dataset_name="n",
                    metric_type="m",
                    metric_value=1,
                    x=2,
                )
            ]
        )
    with pytest.raises(CardInputError, match="does not exist"):
        load_results(tmp_path / "missing.json")
    with pytest.raises(CardInputError, match="no config.json"):
        write_robust_model_card(tmp_path)


def test_push_without_token_fails_before_network(tmp_path, tiny_vit_kwargs, monkeypatch):
    from huggingface_hub import constants

    folder = _save_checkpoint(tmp_path / "ckpt", tiny_vit_kwargs)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(PushError, match="No Hugging Face token found"):
        push_robust_model(folder, "someone/model")


# ---------------------------------------------------------------------------------------------
# Against the local Hub server (subprocesses)


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


def _env(endpoint: str, hf_home: Path, token: str | None = TOKEN) -> dict:
    env = dict(os.environ)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        # The test Hub speaks git-LFS, not Xet (see hub_server.py): large files take LFS.
        HF_HUB_DISABLE_XET="1",
        PYTHONPATH=str(ROOT),
    )
    if token:
        env["HF_TOKEN"] = token
    return env


def _run(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# Runs `recipes/push.py`'s `main(argv)` for each request read from stdin, in one process (the
# imports take most of a push's time): {"argv": [...], "endpoint": url} -> "RESULT {code, ...}".
_PUSH_SESSION = r"""
import contextlib, io, json, runpy, sys
from huggingface_hub import constants
main = runpy.run_path("recipes/push.py", run_name="push_session")["main"]
endpoint = constants.ENDPOINT  # HF_ENDPOINT
for line in sys.stdin:
    request = json.loads(line)
    constants.ENDPOINT = request["endpoint"] or endpoint
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(request["argv"])
    result = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    print("RESULT " + json.dumps(result), flush=True)
"""


class PushSession:
    """Several `recipes/push.py` runs against the test Hub in one subprocess."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.output: list[str] = []

    def __enter__(self) -> PushSession:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PUSH_SESSION],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def push(self, argv: list[str], endpoint: str | None = None) -> dict:
        self.proc.stdin.write(json.dumps({"argv": argv, "endpoint": endpoint}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
                self.output += [result["stdout"], result["stderr"]]
                return result
        raise AssertionError(f"push session ended: {self.proc.stderr.read()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        self.output.append(self.proc.stderr.read())
        self.proc.wait(timeout=60)


def _make_saes(folder: Path, d_in: int) -> dict[str, list]:
    """Two tiny sae-lens SAEs (standard and JumpReLU) with real metrics in metadata.json."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    acts = torch.randn(256, d_in)
    probe = torch.randn(8, d_in)
    references = {}
    for sae_id, sae in {
        "standard-layer1-cls": StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=2 * d_in)),
        "jumprelu-layer1-all": JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=4 * d_in)),
    }.items():
        with torch.no_grad():
            for param in sae.parameters():
                param.copy_(torch.randn_like(param) * 0.3)
            if hasattr(sae, "threshold"):
                sae.threshold.abs_()
            codes = sae.encode(acts)
            recon = sae.decode(codes)
            explained = 1 - (recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
            references[sae_id] = [probe.tolist(), sae.decode(sae.encode(probe)).tolist()]
        sae.save_model(folder / sae_id)
        metadata = {
            "architecture": sae.cfg.architecture(),
            "model": "google/vit-base-patch16-224",
            "layer": 1,
            "hook": "vit.layers.1",
            "tokens": sae_id.rsplit("-", 1)[1],
            "d_in": d_in,
            "d_sae": sae.cfg.d_sae,
            "training_tokens": acts.shape[0],
            "l0": float((codes > 0).sum(-1).float().mean()),
            "explained_variance": float(explained),
            "dead_features": float((~(codes > 0).any(0)).float().mean()),
        }
        (folder / sae_id / "metadata.json").write_text(json.dumps(metadata))
    return references


_LOAD_SCRIPT = r"""
import json, sys, torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import ViTForImageClassification
from sae_lens import SAE

model_repo, sae_repo, local, refs_path = sys.argv[1:5]
remote = ViTForImageClassification.from_pretrained(model_repo)
ours = ViTForImageClassification.from_pretrained(local)
a, b = remote.state_dict(), ours.state_dict()
weights_equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
out = {"weights_equal": weights_equal, "robustness": remote.config.robustness, "saes": {}}
for sae_id, (probe, expected) in json.load(open(refs_path)).items():
    sae = SAE.from_pretrained(sae_repo, sae_id)
    with torch.no_grad():
        got = sae.decode(sae.encode(torch.tensor(probe)))
    out["saes"][sae_id] = [type(sae).__name__, torch.allclose(got, torch.tensor(expected), atol=1e-6)]
card = ModelCard.load(model_repo)
out["model_name"], results = model_index_to_eval_results(card.data.to_dict()["model-index"])
out["eval_results"] = [r.__dict__ for r in results]
out["sae_card"] = ModelCard.load(sae_repo).data.to_dict()
out["files"] = sorted(HfApi().list_repo_files(model_repo))
out["whoami"] = HfApi().whoami()["name"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_push_and_load_back_without_leaking_the_token(hub, tmp_path, tiny_vit_kwargs):
    from huggingface_hub import EvalResult

    ckpt = _save_checkpoint(tmp_path / "run-blur", tiny_vit_kwargs)
    (ckpt / "training_args.bin").write_bytes(b"pickle, never pushed")
    results = _results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    sae_dir = tmp_path / "saes"
    references = _make_saes(sae_dir, tiny_vit_kwargs["hidden_size"])
    (tmp_path / "refs.json").write_text(json.dumps(references))
    env = _env(hub.endpoint, tmp_path / "hf_home")

    push = _run(
        [
            "recipes/push.py",
            "--checkpoint",
            str(ckpt),
            "--saes",
            str(sae_dir),
            "--results",
            str(tmp_path / "results.json"),
            "--repo_id",
            "test-user/tiny-robust",
        ],
        env,
    )
    assert push.returncode == 0, push.stderr[-3000:]
    urls = json.loads(push.stdout[push.stdout.index("{") :])
    assert urls["checkpoint"].startswith(f"{hub.endpoint}/test-user/tiny-robust/commit/")
    assert urls["saes"].startswith(f"{hub.endpoint}/test-user/tiny-robust-saes/commit/")
    model_repo = hub.repos[("model", "test-user/tiny-robust")]
    sae_repo = hub.repos[("model", "test-user/tiny-robust-saes")]
    # Private by default; one commit per artifact set (after the repo's initial commit).
    assert model_repo.private and sae_repo.private
    assert len(model_repo.commits) == 2 and len(sae_repo.commits) == 2
    assert "run-blur" in model_repo.commits[-1].message
    assert "training_args.bin" not in model_repo.commits[-1].files
    assert {"standard-layer1-cls/cfg.json", "jumprelu-layer1-all/sae_weights.safetensors"} <= set(
        sae_repo.commits[-1].files
    )
    readme = model_repo.commits[-1].files["README.md"].decode()
    assert 'from_pretrained("test-user/tiny-robust")' in readme

    load = _run(
        [
            "-c",
            _LOAD_SCRIPT,
            "test-user/tiny-robust",
            "test-user/tiny-robust-saes",
            str(ckpt),
            str(tmp_path / "refs.json"),
        ],
        env,
    )
    assert load.returncode == 0, load.stderr[-3000:]
    out = json.loads(load.stdout.split("RESULT ", 1)[1])
    assert out["weights_equal"]
    assert out["robustness"] == ROBUSTNESS
    assert out["saes"] == {
        "standard-layer1-cls": ["StandardSAE", True],
        "jumprelu-layer1-all": ["JumpReLUSAE", True],
    }
    card_only = ("ci_low", "ci_high", "n", "group", "seen")
    expected = [
        EvalResult(**{k: v for k, v in e.items() if k not in card_only})
        for e in results["eval_results"]
    ]
    assert out["model_name"] == "run-blur"
    assert [EvalResult(**r) for r in out["eval_results"]] == expected
    assert out["sae_card"]["library_name"] == "saelens"
    assert "model.safetensors" in out["files"] and "README.md" in out["files"]
    assert out["whoami"] == "test-user"
    # The safetensors went through git-LFS, as on the Hub: preupload said "lfs", the batch API
    # gave signed storage URLs, the commit named them by sha256; the download was redirected to
    # the storage origin. The token never went to the storage origin.
    sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert hub.lfs_files("test-user/tiny-robust") == {"model.safetensors": sha}
    assert {f"{i}/sae_weights.safetensors" for i in references} == set(
        hub.lfs_files("test-user/tiny-robust-saes")
    )
    storage = [r for r in hub.requests if r["host"].startswith("localhost:")]
    assert {r["method"] for r in storage} == {"PUT", "GET"}
    assert all(r["authorization"] is None for r in storage)
    assert any(r["path"].endswith(".git/info/lfs/objects/batch") for r in hub.requests)

    # The token reached the server, and nothing else: not files, cache, logs or output.
    assert any(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    leaks = [str(p) for p in written if TOKEN.encode() in p.read_bytes()]
    leaks += [
        name
        for name, text in [("push", push.stdout + push.stderr), ("load", load.stdout + load.stderr)]
        if TOKEN in text
    ]
    assert not leaks


@pytest.mark.slow
def test_failed_push_leaves_folder_intact_and_retry_succeeds(hub, tmp_path, tiny_vit_kwargs):
    """A push that fails (storage, commit, network) leaves the folder byte for byte as it was
    (no card or figure written before the commit succeeds) and says so; a rerun succeeds,
    skipping the LFS upload the failed commit had already done, then writes the pushed card."""
    ckpt = _save_checkpoint(tmp_path / "run-retry", tiny_vit_kwargs)  # no README.md yet
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    figure = tmp_path / "transfer_matrix.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    before = _tree_hash(ckpt)
    weights = (ckpt / "model.safetensors").read_bytes()
    # A bare repo name goes to the token owner's namespace (test-user).
    argv = ["--checkpoint", str(ckpt), "--repo_id", "retry", "--results"]
    argv += [str(tmp_path / "results.json"), "--figures", str(figure)]

    def assert_failed(result: dict, *reason: str) -> None:
        assert result["code"] == 1
        stderr = result["stderr"]
        assert "push failed: Pushing checkpoint" in stderr and "rerun the same" in stderr
        assert "the local folder is unchanged" in stderr
        assert all(text in stderr for text in reason), stderr[-2000:]
        assert _tree_hash(ckpt) == before and not (ckpt / "README.md").exists()

    with PushSession(_env(hub.endpoint, tmp_path / "hf_home")) as session:
        # 1. The storage refuses the LFS upload (an expired signed URL): nothing stored.
        hub.fail(r"^PUT /__lfs/test-user/retry/", status=403, times=1)
        assert_failed(session.push(argv), hub.endpoint, "403", "Error while uploading")
        assert set(hub.files("test-user/retry")) == {".gitattributes"}
        repo = hub.repos[("model", "test-user/retry")]
        assert not repo.lfs_objects

        # 2. The weights reach LFS storage, then the commit fails: nothing committed.
        hub.fail(r"^POST /api/models/test-user/retry/commit/", status=500, times=1)
        assert_failed(session.push(argv), "500")
        assert set(hub.files("test-user/retry")) == {".gitattributes"}
        assert list(repo.lfs_objects.values()) == [weights]

        # 3. The server is unreachable (nothing listens on that port).
        with HubServer() as gone:
            dead_endpoint = gone.endpoint
        assert_failed(session.push(argv, endpoint=dead_endpoint), dead_endpoint, "ConnectError")

        # 4. Retried later, the same command succeeds without uploading the weights again.
        puts = sum(r["method"] == "PUT" for r in hub.requests)
        retried = session.push(argv)
    assert retried["code"] == 0, retried["stderr"][-3000:]
    assert sum(r["method"] == "PUT" for r in hub.requests) == puts
    files = hub.files("test-user/retry")
    assert files["model.safetensors"] == weights
    sha = hashlib.sha256(weights).hexdigest()
    assert hub.lfs_files("test-user/retry") == {"model.safetensors": sha}
    assert files["figures/transfer_matrix.png"] == figure.read_bytes()
    # Only now are the card (with the real repo id) and its figure written locally: the same
    # bytes as pushed.
    assert (ckpt / "README.md").read_bytes() == files["README.md"]
    assert files["README.md"].decode().count("test-user/retry") >= 2
    assert (ckpt / "figures" / "transfer_matrix.png").read_bytes() == figure.read_bytes()
    assert TOKEN not in "".join(session.output)


def test_sae_card(tmp_path):
    from huggingface_hub import ModelCard

    pytest.importorskip("sae_lens")
    _make_saes(tmp_path / "saes", 16)
    card = ModelCard.load(write_sae_card(tmp_path / "saes"))
    assert card.data.library_name == "saelens"
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert "`standard-layer1-cls`" in card.text and "`jumprelu-layer1-all`" in card.text
    assert 'SAE.from_pretrained("<repo-id>", "jumprelu-layer1-all")' in card.text
    assert "vit.layers.1" in card.text and "16 → 64" in card.text
