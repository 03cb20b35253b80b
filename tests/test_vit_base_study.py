"""The whole study at ViT-B/16 geometry, stage after stage, through the full-scale recipes.

A randomly initialised ViT with ViT-B/16's geometry (224 px, patch 16 so 197 tokens, 12 layers x
12 heads, 1000 labels; width 192 instead of 768 so the chain runs in about a minute on 2 cores:
the per-stage ViT-B/16 tests in test_analysis_vit_base.py, test_sae.py, test_evaluation.py and
test_recipes.py run the real width) is the base; the `recipes/vit-base-imagenet/*.yaml` recipes run as a user runs them, with only sizes
and paths overridden: a worst-of-k fine-tune and its clean control, the evaluation, the
analysis, SAE activation generation and training, the model card and the report. Each stage
reads what the previous one wrote, so nothing may assume the tiny study's 28 px, 10 classes or
6 layers anywhere along the chain. The images are natural photos of odd sizes (resized to
224 px by non-whole factors) with 1000-class labels.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import _jpeg, natural_photos

from hf_vitrobust.analysis.sae.schema import read_sae_results
from hf_vitrobust.analysis.schema import read_analysis
from hf_vitrobust.evaluation.schema import read_results
from hf_vitrobust.report import build_report

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
STUDY = RECIPES / "vit-base-imagenet"
NUM_LABELS = 1000
WIDTH = 192


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _base_and_data(root: Path) -> tuple[Path, Path]:
    """A random ViT of ViT-B/16 geometry with its processor, and 8 photos (odd sizes) saved as a dataset."""
    import datasets
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    names = [f"class_{i}" for i in range(NUM_LABELS)]
    config = ViTConfig(
        image_size=224, patch_size=16, hidden_size=WIDTH, intermediate_size=4 * WIDTH,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
    torch.manual_seed(0)
    base = root / "base"
    ViTForImageClassification(config).save_pretrained(base)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(base)
    photos = list(natural_photos().values())
    images = [_jpeg(photos[i % len(photos)][: 173 + 29 * i, : 301 - 11 * i]) for i in range(8)]
    features = datasets.Features(
        image=datasets.Image(decode=False), label=datasets.ClassLabel(names=names)
    )
    rows = {
        "image": [{"bytes": b, "path": None} for b in images],
        "label": [0, 3, 17, 512, 998, 999, 3, 17],
    }
    data = root / "photos"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(data))
    return base, data


def _finetune(root: Path, base: Path, data: Path, recipe: str, extra: list[str]) -> Path:
    out = root / recipe
    _recipe("finetune")(
        [
            str(STUDY / f"{recipe}.yaml"),
            "--model_name_or_path",
            str(base),
            "--dataset_name",
            str(data),
            "--streaming",
            "false",
            "--train_split",
            "train",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--dataloader_num_workers",
            "0",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--disable_tqdm",
            "true",
            "--report_to",
            "none",
            *extra,
        ]  # fmt: skip
    )
    return out


@pytest.mark.slow
def test_the_study_runs_stage_after_stage_at_vit_b16_shapes(tmp_path, two_torch_threads):
    _study(tmp_path)


def _study(root: Path) -> None:
    base, data = _base_and_data(root)
    adversarial = _finetune(
        root, base, data, "low_frequency",
        ["--corruptions", "defocus_blur", "gaussian_blur", "--num_views", "2",
         "--unseen_corruptions", "none"],
    )  # fmt: skip
    control = _finetune(root, base, data, "control", ["--unseen_corruptions", "none"])
    card = (adversarial / "README.md").read_text()
    assert "worst_of_k" in card and str(root) not in card  # provenance, never a local path

    models = ["--base_model", str(base), "--finetuned_models", str(adversarial), str(control)]
    data_flags = ["--dataset_name", str(data), "--streaming", "false", "--eval_split", "train"]
    _recipe("evaluate")(
        [
            str(STUDY / "evaluate.yaml"),
            *models,
            *data_flags,
            "--corruptions",
            "gaussian_blur",
            "gaussian_noise",
            "--severities",
            "3",
            "--batch_size",
            "4",
            "--decode_cache_mb",
            "64",
            "--n_resamples",
            "1000",
            "--output_dir",
            str(root / "evaluation"),
        ]  # fmt: skip
    )
    results = read_results(root / "evaluation" / "results.json")
    assert results["dataset"]["num_classes"] == NUM_LABELS
    roles = {m["key"]: m["role"] for m in results["models"]}
    assert roles == {"base": "base", "low_frequency": "adversarial", "control": "clean_control"}
    against_control = [
        r for r in results["comparisons"]
        if r["model"] == "low_frequency" and r["reference"] == "control"
    ]  # fmt: skip
    assert {r["scope"] for r in against_control} >= {"clean", "seen", "unseen"}

    _recipe("analyze")(
        [
            str(STUDY / "analyze.yaml"),
            *models,
            *data_flags,
            "--max_eval_examples",
            "8",
            "--corruptions",
            "gaussian_noise",
            "--batch_size",
            "4",
            "--num_workers",
            "0",
            "--num_panel_images",
            "2",
            "--progress",
            "false",
            "--device",
            "cpu",
            "--output_dir",
            str(root / "analysis"),
        ]  # fmt: skip
    )
    analysis = read_analysis(root / "analysis" / "analysis.json")
    assert analysis["models"]["base"]["num_layers"] == 12
    entropy = [r for r in analysis["comparisons"] if r["metric"] == "attention_entropy"]
    assert {r["layer"] for r in entropy} == set(range(1, 13))

    _recipe("train_sae")(
        [
            str(STUDY / "sae.yaml"),
            *models,
            *data_flags,
            "--train_split",
            "train",
            "--max_train_examples",
            "8",
            "--layers",
            "11",
            "--sae_types",
            "batchtopk",
            "--expansion_factor",
            "2",
            "--k",
            "16",
            "--training_tokens",
            "1024",
            "--sae_batch_size",
            "128",
            "--n_init_batches",
            "1",
            "--buffer_mb",
            "4",
            "--max_tokens_per_image",
            "64",
            "--batch_size",
            "4",
            "--num_workers",
            "0",
            "--train_corruptions",
            "gaussian_noise",
            "--corruptions",
            "gaussian_noise",
            "--num_eval_images",
            "6",
            "--reference_images",
            "2",
            "--train_finetuned_saes",
            "false",
            "--seed_baseline",
            "false",
            "--progress",
            "false",
            "--device",
            "cpu",
            "--output_dir",
            str(root / "sae"),
        ]  # fmt: skip
    )
    sae = read_sae_results(root / "sae" / "sae.json")
    assert [entry["d_in"] for entry in sae["saes"]] == [WIDTH]
    assert any(r["metric"] == "code_cosine_to_base" for r in sae["comparisons"])

    paths = build_report(root)
    sections = {s.key: s for s in paths.report.sections}
    for key in ("accuracy", "transfer", "attention_entropy", "sae_batchtopk", "cka"):
        assert sections[key].verdict != "missing", (key, sections[key].readings)
    assert len(json.loads((adversarial / "config.json").read_text())["id2label"]) == NUM_LABELS
