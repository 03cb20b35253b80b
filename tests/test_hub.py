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
    assert "### Transfer matrix" in card.text and "| run-blur |" in card.text
    assert len(card.data.to_dict()["model-index"][0]["results"]) == len(configs)


def _evaluation_results(finetuned: str) -> dict:
    """A small results.json of recipes/evaluate.py (base + one fine-tuned model)."""
    from hf_vitrobust.evaluation.schema import header

    def block(value: float) -> dict:
        return {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "n": 16}

    def metrics(shift: float) -> dict:
        names = ("top_1_accuracy", "top_5_accuracy", "p_true", "ece")
        return {m: block(0.5 + shift + i / 10) for i, m in enumerate(names)}

    keys = {"base": 0.0, "ft": 0.1}
    diff = {"estimate": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.01, "seen": True}
    return {
        **header(),
        "dataset": {"name": "fashion_mnist", "split": "test", "n_images": 16, "num_classes": 10},
        "models": [
            {"key": "base", "name": "outputs/base", "role": "base", "robustness": None},
            {"key": "ft", "name": finetuned, "role": "fine_tuned", "robustness": ROBUSTNESS},
        ],
        "grid": {"cells": ["clean", "gaussian_noise@1"], "severities": [1], "clean": True},
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
            "models": {"base": {"mce": block(1.0)}, "ft": {"mce": block(0.9)}},
        },
        "transfer_matrix": {
            "metric": "top_1_accuracy",
            "rows": ["ft"],
            "columns": ["clean", "noise"],
            "cells": [[diff, diff]],
        },
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

    # The card of the checkpoint takes its own model's rows (top-1/top-5) and transfer row.
    card = ModelCard.load(write_robust_model_card(folder, path))
    expected = [EvalResult(**e) for e in load_results(path, folder=folder)["eval_results"]]
    assert card.data.eval_results == expected and len(expected) == 9
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert "| run-noise | +0.1000 [+0.0200, +0.1800] (p=0.01)" in card.text

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
    ckpt = _save_checkpoint(tmp_path / "run-retry", tiny_vit_kwargs)
    write_robust_model_card(ckpt, _results())
    before = _tree_hash(ckpt)
    # A bare repo name goes to the token owner's namespace (test-user).
    command = ["recipes/push.py", "--checkpoint", str(ckpt), "--repo_id", "retry"]

    # 1. The server answers the commit with a 500.
    hub.fail(r"^POST /api/models/test-user/retry/commit/", status=500, times=1)
    failed = _run(command, _env(hub.endpoint, tmp_path / "hf_home"))
    assert failed.returncode == 1
    assert "push failed: Pushing checkpoint" in failed.stderr
    assert hub.endpoint in failed.stderr and "rerun the same command" in failed.stderr
    assert "500" in failed.stderr
    assert _tree_hash(ckpt) == before
    assert set(hub.files("test-user/retry")) == {".gitattributes"}  # nothing committed

    # 2. The server is unreachable (nothing listens on that port).
    with HubServer() as gone:
        dead_endpoint = gone.endpoint
    unreachable = _run(command, _env(dead_endpoint, tmp_path / "hf_home"))
    assert unreachable.returncode == 1
    assert dead_endpoint in unreachable.stderr and "ConnectError" in unreachable.stderr
    assert _tree_hash(ckpt) == before

    # 3. Retried later, the same command succeeds.
    retried = _run(command, _env(hub.endpoint, tmp_path / "hf_home"))
    assert retried.returncode == 0, retried.stderr[-3000:]
    files = hub.files("test-user/retry")
    assert files["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
    assert files["README.md"].decode().count("test-user/retry") >= 2
    assert _tree_hash(ckpt) == before
    for proc in (failed, unreachable, retried):
        assert TOKEN not in proc.stdout + proc.stderr


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
