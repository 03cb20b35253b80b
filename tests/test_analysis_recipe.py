"""recipes/analyze.py end to end on real Fashion-MNIST images, offline."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate_cpu import accelerate_launch, assert_same_json

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
    assert {r["model"] for r in result["comparisons"]} == {"ft"}
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
    for key in ("logit_lens", "attention_entropy", "cka", "patching", "comparisons"):
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


# ---------------------------------------------------------------------------------------------
# A user's own photos (class-sorted, planted bad files), a control, and two `final` folders;
# then the same run on 2 processes
# ---------------------------------------------------------------------------------------------

ROBUSTNESS = {"base_model": "base", "seed": 0, "max_steps": 100}


def _save_study(root: Path, kwargs: dict) -> dict[str, Path]:
    """A base, an adversarial fine-tune and its clean control, both saved in a `final` folder."""
    base, processor = tiny_vit(seed=0, **kwargs)
    paths = {
        "base": root / "base",
        "adv": root / "runA" / "final",
        "clean": root / "runB" / "final",
    }
    robustness = {
        "adv": {**ROBUSTNESS, "adversary": "worst_of_k", "num_views": 4,
                "train_corruptions": ["gaussian_noise"]},
        "clean": {**ROBUSTNESS, "adversary": "none", "train_corruptions": []},
    }  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    for name, path in paths.items():
        model = copy.deepcopy(base)
        if name != "base":
            with torch.no_grad():
                for param in model.vit.layers.parameters():
                    param.add_(0.3 * torch.randn(param.shape, generator=gen) * param.std())
            model.config.robustness = robustness[name]
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return paths


def _photo_argv(paths: dict[str, Path], data: Path, out: Path) -> list[str]:
    return [
        "--base_model", str(paths["base"]),
        "--finetuned_models", str(paths["adv"]), str(paths["clean"]),
        "--dataset_name", str(data),
        "--eval_split", "train",
        "--max_bad_fraction", "0.1",
        "--corruptions", "gaussian_noise,defocus_blur",
        "--severities", "3",
        "--batch_size", "16",
        "--num_panel_images", "1",
        "--progress", "false",
        "--output_dir", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def photo_study(tmp_path_factory, photo_folder, tiny_vit_kwargs):
    """(paths, photo root, files, one-process output folder): the recipe run once, in-process."""
    root, files = photo_folder
    tmp = tmp_path_factory.mktemp("photo_study")
    paths = _save_study(tmp, {**tiny_vit_kwargs, "num_labels": 6})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _recipe().main(_photo_argv(paths, root, tmp / "one"))
    finally:
        torch.set_num_threads(threads)
    return paths, root, files, tmp / "one"


def test_photo_folder_analysis_counts_bad_files_once_and_compares_with_the_control(photo_study):
    _, _, files, out = photo_study
    result = read_analysis(out / "analysis.json")
    total = sum(len(v) for v in files.values())
    good = total - len(files["bad"])
    assert result["bad_images"]["bad"] == len(files["bad"]) == 2  # once each, not per condition
    assert result["bad_images"]["seen"] == total
    assert result["models"]["runA/final"]["role"] == "adversarial"
    assert result["models"]["runB/final"]["role"] == "clean_control"
    assert result["conditions"] == ["clean", "noise", "blur"]
    records = result["comparisons"]
    assert {(r["model"], r["reference"], r["reference_role"]) for r in records} == {
        ("runA/final", "base", "base"),
        ("runA/final", "runB/final", "clean_control"),
        ("runB/final", "base", "base"),
    }
    entropy = [r for r in records if r["metric"] == "attention_entropy"]
    assert len(entropy) == 3 * 3 * (2 + 2 * 2)  # pairs x conditions x (layers + layer x head)
    assert all(r["n"] == good for r in entropy)
    for condition in result["conditions"]:
        lens = result["logit_lens"][condition]
        assert lens["models"]["base"]["n_images"] == good
        assert set(lens["common"]["models"]) == {"base", "runA/final", "runB/final"}
    assert "first_correct_layer.png" in result["figures"]


@pytest.mark.slow
def test_two_processes_write_the_same_analysis_as_one(photo_study):
    paths, root, _, one = photo_study
    two = one.parent / "two"
    accelerate_launch(ROOT / "recipes" / "analyze.py", _photo_argv(paths, root, two), timeout=300)
    single = json.loads((one / "analysis.json").read_text())
    double = json.loads((two / "analysis.json").read_text())
    first_bad = (single["bad_images"].pop("first_bad"), double["bad_images"].pop("first_bad"))
    assert sorted(first_bad[0], key=str) == sorted(first_bad[1], key=str)
    for key in ("output_dir",):
        single.pop(key, None), double.pop(key, None)
    assert_same_json(single, double)
    np.testing.assert_allclose(
        np.load(one / "attention_panel.npz")["rollout"],
        np.load(two / "attention_panel.npz")["rollout"],
    )


def test_photo_folder_analysis_records_its_selection(photo_study):
    """analysis.json `data.selection` is the evaluation's selection record (rule, seed, counts)."""
    _, _, files, out = photo_study
    selection = read_analysis(out / "analysis.json")["data"]["selection"]
    assert selection["rule"] == "all" and selection["seed"] == 0
    assert selection["n"] == sum(len(v) for v in files.values())
    assert selection["per_class"]["rocket"] == 10 and selection["example_ids_sha256"]
