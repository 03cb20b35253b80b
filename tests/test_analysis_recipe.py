"""recipes/analyze.py end to end on real Fashion-MNIST images, offline."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_vitrobust.analysis.schema import read_analysis
from hf_vitrobust.models import tiny_vit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe():
    spec = importlib.util.spec_from_file_location("analyze_recipe", ROOT / "recipes" / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save_models(tmp_path: Path, kwargs: dict) -> tuple[Path, Path]:
    model, processor = tiny_vit(seed=0, **kwargs)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for param in other.vit.layers.parameters():
            param.add_(0.05 * torch.randn_like(param))
    paths = tmp_path / "base", tmp_path / "ft"
    for m, path in zip((model, other), paths):
        m.save_pretrained(path)
        processor.save_pretrained(path)
    return paths


@pytest.mark.slow
def test_analyze_recipe_writes_json_and_figures(tmp_path, tiny_vit_kwargs, fashion_mnist_dir):
    base, ft = _save_models(tmp_path, tiny_vit_kwargs)
    out = tmp_path / "analysis"
    argv = [
        str(ROOT / "recipes" / "fashion-mnist-tiny" / "analyze.yaml"),
        "--base_model", str(base),
        "--finetuned_models", str(ft),
        "--max_eval_examples", "48",
        "--batch_size", "24",
        "--corruptions", "gaussian_noise,defocus_blur",
        "--num_panel_images", "2",
        "--progress", "false",
        "--output_dir", str(out),
    ]  # fmt: skip
    _recipe().main(argv)
    result = read_analysis(out / "analysis.json")  # the typed reader validates it
    assert list(result)[:2] == ["schema", "schema_version"]
    assert result["conditions"] == ["clean", "noise", "blur"]
    assert result["data"]["corruption_groups"] == {
        "noise": ["gaussian_noise"],
        "blur": ["defocus_blur"],
    }
    lens = result["logit_lens"]["clean"]["models"]["base"]
    assert lens["n_images"] == 48 and len(lens["accuracy"]) == 3
    assert lens["last_layer_max_abs_diff"] <= 1e-5
    assert set(result["attention_entropy"]["blur"]["differences"]) == {"ft"}
    assert len(result["cka"]["noise"]["ft"]["patch_mean"]) == 3
    assert len(result["patching"]["noise"]["ft"]["per_layer"]) == 3
    for name in result["figures"]:
        assert (out / name).stat().st_size > 1000
    assert "attention_maps.png" in result["figures"]
    panel = np.load(out / "attention_panel.npz")
    assert panel["rollout"].shape == (2, 2, 2, 4, 4)  # images, views, models, grid
    assert panel["images"].shape == (2, 2, 28, 28, 3)
    # Seeded and repeatable: a second run writes the same numbers.
    _recipe().main([*argv[:-1], str(tmp_path / "again"), "--num_panel_images", "0"])
    again = read_analysis(tmp_path / "again" / "analysis.json")
    for key in ("logit_lens", "attention_entropy", "cka", "patching"):
        assert again[key] == result[key]


def test_analyze_recipe_refuses_mismatched_labels(tmp_path, tiny_vit_kwargs, fashion_mnist_dir):
    base, _ = _save_models(tmp_path, tiny_vit_kwargs)
    wrong, processor = tiny_vit(seed=1, **{**tiny_vit_kwargs, "num_labels": 7})
    wrong.save_pretrained(tmp_path / "wrong")
    processor.save_pretrained(tmp_path / "wrong")
    argv = [
        "--base_model", str(base),
        "--finetuned_models", str(tmp_path / "wrong"),
        "--dataset_name", "fashion_mnist",
        "--eval_split", "test",
        "--max_eval_examples", "8",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="wrong model: The model has 7 output classes"):
        _recipe().main(argv)
    assert not (tmp_path / "out" / "analysis.json").exists()


def test_analyze_recipe_needs_models(tmp_path):
    with pytest.raises(ValueError, match="base_model"):
        _recipe().main(["--output_dir", str(tmp_path)])
