"""hf_vitrobust.evaluation: metric definitions, pairing, label checks, resume, results.json,
the recipe."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate_cpu import accelerate_launch

from hf_vitrobust import stats
from hf_vitrobust.configs import DataArguments, parse_recipe
from hf_vitrobust.constants import RESULTS_FILE
from hf_vitrobust.evaluation import (
    CLEAN,
    Cell,
    CellRecord,
    EvalModel,
    EvaluationArguments,
    EvaluationSettings,
    build_grid,
    ece_bin_sums,
    ece_statistic,
    evaluate_robustness,
    expected_calibration_error,
    load_eval_models,
    load_top_k_metric,
    per_image_outputs,
    read_results,
    run_grid,
)
from hf_vitrobust.evaluation.store import model_dir_name
from hf_vitrobust.io import SchemaMismatch

GRID = dict(corruptions=["gaussian_noise", "defocus_blur"], severities=[1, 3])
FAST = dict(n_resamples=1000, progress=False)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one intra-op thread is fastest and immune to a busy machine's contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def test_images(fashion_mnist_dir):
    from hf_vitrobust.data import load_image_dataset

    return load_image_dataset("fashion_mnist", "test", max_examples=200)


@pytest.fixture(scope="module")
def class_names(test_images):
    from hf_vitrobust.data import label_names

    return label_names(test_images)


def _tiny(tiny_vit_kwargs, names, seed, **overrides):
    from hf_vitrobust.models import tiny_vit

    kw = {k: v for k, v in tiny_vit_kwargs.items() if k != "num_labels"}
    kw.update(overrides)
    kw.setdefault("id2label", dict(enumerate(names)))
    model, processor = tiny_vit(seed=seed, **kw)
    return model.eval(), processor


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_vit_kwargs, class_names):
    """A base and a 'fine-tuned' tiny ViT saved like the trainer saves them."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for seed, name in ((0, "base"), (1, "noise_ft")):
        model, processor = _tiny(tiny_vit_kwargs, class_names, seed)
        if name != "base":
            model.config.robustness = {
                "adversary": "worst_of_k",
                "train_family": "noise",
                "train_corruptions": ["gaussian_noise"],
                "severities": [1, 2, 3, 4, 5],
            }
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        paths.append(str(root / name))
    return paths


@pytest.fixture(scope="module")
def loaded(saved_models):
    return load_eval_models(saved_models[0], saved_models[1:], device="cpu")


# ---------------------------------------------------------------------------------------------
# Definitions against hand-computed values
# ---------------------------------------------------------------------------------------------

LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 3.0, 2.0], [1.0, 1.0, 0.0]])
LABELS = np.array([0, 2, 0, 1])


def test_per_image_outputs_match_hand_values():
    out = per_image_outputs(torch.tensor(LOGITS), torch.tensor(LABELS))
    # Ranks: strictly larger logits than the true one. The tie in row 4 counts for the label.
    assert out["rank"].tolist() == [0, 0, 2, 0]
    z = [math.exp(2) + math.exp(1) + 1, 2 + math.exp(3), math.exp(1) + math.exp(3) + math.exp(2)]
    p_true = [math.exp(2) / z[0], math.exp(3) / z[1], math.exp(1) / z[2], math.e / (2 * math.e + 1)]
    np.testing.assert_allclose(out["p_true"], p_true, rtol=1e-6)
    np.testing.assert_allclose(out["nll"], [-math.log(p) for p in p_true], rtol=1e-6)
    conf = [math.exp(2) / z[0], math.exp(3) / z[1], math.exp(3) / z[2], math.e / (2 * math.e + 1)]
    np.testing.assert_allclose(out["confidence"], conf, rtol=1e-6)


def test_top_k_metric_module_loads_by_path_and_agrees():
    metric = load_top_k_metric()
    result = metric.compute(predictions=LOGITS.tolist(), references=LABELS.tolist(), k=[1, 2, 10])
    assert result["top_1_accuracy"] == pytest.approx(3 / 4)
    assert result["top_2_accuracy"] == pytest.approx(3 / 4)
    assert result["top_10_accuracy"] == 1.0  # capped at 3 classes
    assert result["k_effective"] == {1: 1, 2: 2, 10: 3}
    # The evaluation's per-image ranks give the same accuracies as the shipped metric.
    rank = per_image_outputs(LOGITS, LABELS)["rank"]
    for k in (1, 2):
        assert result[f"top_{k}_accuracy"] == pytest.approx(float(np.mean(rank < k)))


def test_ece_matches_hand_computation():
    conf = np.array([0.95, 0.95, 0.55, 0.15, 1 / 15])
    correct = np.array([1, 0, 1, 0, 0])
    # Bins (lo, hi] of width 1/15: 0.95 -> bin 14, 0.55 -> bin 8, 0.15 -> bin 2, 1/15 -> bin 0.
    expected = (2 / 5) * abs(0.5 - 0.95) + (1 / 5) * 0.45 + (1 / 5) * 0.15 + (1 / 5) * (1 / 15)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    sums = ece_bin_sums(conf, correct)
    assert sums.shape == (15, 5) and np.count_nonzero(sums[:, 4]) == 1 and sums[0, 4] != 0
    # Averaging two cells' bin sums per image gives the ECE of the pooled predictions.
    conf2, correct2 = np.array([0.3, 0.8, 0.6, 0.99, 0.5]), np.array([0, 1, 1, 1, 0])
    pooled = ece_statistic((sums + ece_bin_sums(conf2, correct2)) / 2)
    both = expected_calibration_error(np.r_[conf, conf2], np.r_[correct, correct2])
    assert pooled == pytest.approx(both)


def test_build_grid_and_cells():
    cells = build_grid(["noise", "fog"], [2], include_clean=True)
    assert cells[0] == Cell(CLEAN, 0)
    assert [c.key for c in cells[1:]] == [
        "gaussian_noise@2", "shot_noise@2", "impulse_noise@2", "fog@2"
    ]  # fmt: skip
    assert Cell.from_key("fog@2") == Cell("fog", 2)
    with pytest.raises(ValueError):
        build_grid(["not_a_corruption"])
    # The one recipe-list normaliser: comma items split, `none` means no corruptions.
    assert [c.key for c in build_grid(["fog, contrast"], [1], include_clean=False)] == [
        "fog@1", "contrast@1"
    ]  # fmt: skip
    assert build_grid(["none"], [1]) == [Cell(CLEAN, 0)]
    with pytest.raises(ValueError, match="at least one severity"):
        build_grid(["fog"], [])


# ---------------------------------------------------------------------------------------------
# Pairing, labels, resume
# ---------------------------------------------------------------------------------------------


def _record_inputs(model):
    seen = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True
    )
    return seen, handle


def test_models_see_identical_corrupted_images(tiny_vit_kwargs, class_names, test_images):
    from hf_vitrobust.data import ProcessorSpec
    from hf_vitrobust.models import tiny_image_processor

    a, pa = _tiny(tiny_vit_kwargs, class_names, 0)
    b, _ = _tiny(tiny_vit_kwargs, class_names, 1)
    pb = tiny_image_processor(28, mean=0.5, std=0.25)  # other normalisation, same pixels
    models = [EvalModel("a", a, pa, key="a"), EvalModel("b", b, pb, key="b")]
    hooks = [_record_inputs(m.model) for m in models]
    cells = [Cell(CLEAN), Cell("gaussian_noise", 3)]
    records = run_grid(models, test_images, cells, batch_size=64, progress=False).records
    for _, handle in hooks:
        handle.remove()
    xa = ProcessorSpec.from_processor(pa).denormalize(torch.cat(hooks[0][0]))
    xb = ProcessorSpec.from_processor(pb).denormalize(torch.cat(hooks[1][0]))
    assert xa.shape == (2 * 200, 3, 28, 28)
    torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
    # The noise cell really differs from the clean one, and ids are aligned across models.
    assert (xa[:200] - xa[200:]).abs().mean() > 0.01
    for cell in ("clean", "gaussian_noise@3"):
        assert np.array_equal(records["a"][cell].example_ids, records["b"][cell].example_ids)
    # A separate evaluation of one model sees the same corrupted images (per-image seeds).
    solo = run_grid(
        [EvalModel("a", a, pa, key="a")], test_images, cells, batch_size=50, progress=False
    ).records
    for cell in ("clean", "gaussian_noise@3"):
        np.testing.assert_array_equal(solo["a"][cell].rank, records["a"][cell].rank)
        np.testing.assert_allclose(solo["a"][cell].p_true, records["a"][cell].p_true, atol=1e-6)


def test_label_count_and_name_mismatch_fail_before_work(
    tmp_path, tiny_vit_kwargs, class_names, test_images
):
    base = EvalModel("base", *_tiny(tiny_vit_kwargs, class_names, 0), base=True)
    five = EvalModel("five", *_tiny(tiny_vit_kwargs, class_names[:5], 0))
    with pytest.raises(ValueError, match="5 output classes"):
        evaluate_robustness([base, five], test_images, tmp_path / "a", EvaluationSettings(**FAST))
    renamed = list(class_names)
    renamed[3] = "Spaceship"
    other = EvalModel("other", *_tiny(tiny_vit_kwargs, renamed, 0))
    with pytest.raises(ValueError, match="class names differ"):
        evaluate_robustness([base, other], test_images, tmp_path / "b", EvaluationSettings(**FAST))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_id2label_in_another_order_is_mapped_by_name(tiny_vit_kwargs, class_names, test_images):
    model, processor = _tiny(tiny_vit_kwargs, class_names, 0)
    perm = np.random.default_rng(0).permutation(len(class_names))  # new index i = old perm[i]
    shuffled, _ = _tiny(
        tiny_vit_kwargs, class_names, 0, id2label={i: class_names[p] for i, p in enumerate(perm)}
    )
    shuffled.load_state_dict(model.state_dict())
    with torch.no_grad():
        shuffled.classifier.weight.copy_(model.classifier.weight[perm])
        shuffled.classifier.bias.copy_(model.classifier.bias[perm])
    models = [
        EvalModel("orig", model, processor, key="orig"),
        EvalModel("shuffled", shuffled, processor, key="shuffled"),
    ]
    records = run_grid(models, test_images, [Cell(CLEAN)], progress=False).records
    np.testing.assert_array_equal(records["orig"]["clean"].rank, records["shuffled"]["clean"].rank)
    np.testing.assert_allclose(
        records["orig"]["clean"].p_true, records["shuffled"]["clean"].p_true, atol=1e-6
    )


@contextlib.contextmanager
def _forward_calls(models):
    """Model keys, one per forward pass, while the block runs."""
    calls: list[str] = []
    handles = [
        m.model.register_forward_pre_hook(lambda *a, k=m.key: calls.append(k)) for m in models
    ]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def test_resume_skips_finished_cells(tmp_path, loaded, test_images):
    settings = EvaluationSettings(**GRID, **FAST)
    first = evaluate_robustness(loaded, test_images, tmp_path, settings, {"name": "fashion_mnist"})
    cells_dir = tmp_path / "cells" / model_dir_name(loaded[1].key)
    missing = cells_dir / "defocus_blur__s3.npz"
    missing.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.npz")}
    with _forward_calls(loaded) as calls:
        second = evaluate_robustness(
            loaded, test_images, tmp_path, settings, {"name": "fashion_mnist"}
        )
    # Only the missing cell of the fine-tuned model ran again: one batch of 128 + one of 72.
    assert calls == [loaded[1].key] * 2
    assert missing.exists()
    assert {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.npz") if p != missing} == kept
    assert second["per_group"] == first["per_group"]
    assert second["comparisons"] == first["comparisons"]
    # Cells of another corruption seed are recomputed rather than mixed in: every model, cell.
    with _forward_calls(loaded) as calls:
        evaluate_robustness(
            loaded, test_images, tmp_path, EvaluationSettings(**GRID, **FAST, seed=1), {}
        )
    assert len(calls) == 2 * 5 * 2


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, loaded, test_images):
    """(results, output folder) of one evaluation of the saved base and fine-tuned models."""
    out = tmp_path_factory.mktemp("evaluated")
    settings = EvaluationSettings(**GRID, **FAST)
    return evaluate_robustness(loaded, test_images, out, settings, {"name": "fm"}), out


def _cell_path(out: Path, model_key: str, cell_key: str) -> Path:
    return out / "cells" / model_dir_name(model_key) / f"{cell_key.replace('@', '__s')}.npz"


def test_summary_statistics_are_paired_and_consistent(evaluated, loaded):
    results, out = evaluated
    base_key, ft_key = loaded[0].key, loaded[1].key
    rec = {k: CellRecord.load(_cell_path(out, k, "gaussian_noise@3")) for k in (base_key, ft_key)}
    row = next(
        r for r in results["cells"] if r["model"] == ft_key and r["corruption"] == "gaussian_noise"
        and r["severity"] == 3
    )  # fmt: skip
    acc = (rec[ft_key].rank < 1).mean()
    assert row["metrics"]["top_1_accuracy"]["value"] == pytest.approx(acc)
    m = row["metrics"]["top_1_accuracy"]
    assert m["ci_low"] <= acc <= m["ci_high"] and m["n"] == 200
    expected = stats.mcnemar_test(rec[base_key].rank < 1, rec[ft_key].rank < 1, n_resamples=1000)
    assert row["vs_base"]["top_1_accuracy"]["p_value"] == pytest.approx(expected.p_value)
    assert row["vs_base"]["top_1_accuracy"]["test"] == "mcnemar_exact"
    assert row["seen"] is True
    # Seen / unseen: the fine-tuned model trained on gaussian_noise only.
    fam = {r["family"]: r for r in results["per_family"] if r["model"] == ft_key}
    assert fam["seen"]["corruptions"] == ["gaussian_noise"]
    assert fam["unseen"]["corruptions"] == ["defocus_blur"]
    # Transfer matrix: the noise column is seen, blur and clean are not.
    tm = results["transfer_matrix"]
    assert tm["rows"] == [ft_key] and tm["columns"] == ["clean", "noise", "blur"]
    assert [c["seen"] for c in tm["cells"][0]] == [False, True, False]
    # CE against the base model: 1 for the base, ratio of summed errors for the other.
    ce = results["corruption_error"]
    assert ce["reference"] == "base" and ce["models"][base_key]["mce"]["value"] == 1.0
    err = {
        k: sum(
            1 - (CellRecord.load(_cell_path(out, k, f"gaussian_noise@{s}")).rank < 1).mean()
            for s in (1, 3)
        )
        for k in (base_key, ft_key)
    }  # noqa: E501
    assert ce["models"][ft_key]["ce"]["gaussian_noise"]["value"] == pytest.approx(
        err[ft_key] / err[base_key]
    )


# ---------------------------------------------------------------------------------------------
# results.json: the writer's output reads back through its reader; drift is refused
# ---------------------------------------------------------------------------------------------


def test_results_json_reads_back_through_read_results(evaluated, loaded):
    results, out = evaluated
    data = read_results(out / RESULTS_FILE)
    assert list(data)[:2] == ["schema", "schema_version"]
    assert (data["schema"], data["schema_version"]) == ("hf_vitrobust.evaluation", 3)
    assert data == json.loads(json.dumps(data))  # plain JSON
    assert data["per_family"] == results["per_family"]
    assert data["transfer_matrix"] == results["transfer_matrix"]
    assert data["grid"]["cells"] == results["grid"]["cells"]
    assert [m["role"] for m in data["models"]] == ["base", "adversarial"]
    assert [m["key"] for m in data["models"]] == ["base", "noise_ft"]
    assert [m["label"] for m in data["models"]] == ["base", "noise_ft"]
    assert data["comparisons"] == results["comparisons"]


def _broken(data: dict, change) -> dict:
    copy = json.loads(json.dumps(data))
    change(copy)
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="hf_vitrobust.evaluation/1"), "hf_vitrobust.evaluation/1"),
        (lambda d: d.update(schema_version=1), "schema version 1"),
        (lambda d: d.pop("schema_version"), "schema version None"),
        (lambda d: d.pop("per_family"), "'per_family'"),
        (lambda d: d["per_family"][0].pop("vs_base"), r"per_family\[0\] lacks .*'vs_base'"),
        (lambda d: d["per_family"][1].update(family="other"), "not seen/unseen"),
        (lambda d: d["cells"][2].pop("metrics"), r"cells\[2\] lacks .*'metrics'"),
        (lambda d: d["models"].reverse(), "base model first"),
        (lambda d: d["transfer_matrix"].pop("columns"), "transfer_matrix lacks .*'columns'"),
        (lambda d: d["transfer_matrix"]["cells"][0].pop(), "not rows x columns"),
        (lambda d: d["transfer_matrix"]["cells"][0][1].pop("seen"), r"cells\[0\]\[1\] lacks"),
    ],
)
def test_read_results_refuses_other_schemas_and_missing_fields(
    tmp_path, evaluated, change, message
):
    results, out = evaluated
    path = tmp_path / "old" / RESULTS_FILE
    path.parent.mkdir()
    path.write_text(json.dumps(_broken(json.loads((out / RESULTS_FILE).read_text()), change)))
    with pytest.raises(SchemaMismatch, match=message) as error:
        read_results(path)
    assert str(path) in str(error.value) and "recipes/evaluate.py" in str(error.value)


def test_recipe_arguments_extend_the_comparison_arguments(tmp_path):
    from hf_vitrobust.configs import ComparisonArguments

    assert issubclass(EvaluationArguments, ComparisonArguments)
    recipe = REPO / "recipes" / "fashion-mnist-tiny" / "evaluate.yaml"
    data_args, args = parse_recipe((DataArguments, EvaluationArguments), [str(recipe)])
    assert args.base_model == "outputs/fashion-mnist-tiny/base"
    assert args.finetuned_models == [
        "outputs/fashion-mnist-tiny/low_frequency", "outputs/fashion-mnist-tiny/high_frequency",
        "outputs/fashion-mnist-tiny/control",
        "outputs/fashion-mnist-tiny/control_random_view_low_frequency",
        "outputs/fashion-mnist-tiny/control_random_view_high_frequency",
    ]  # fmt: skip
    _, full = parse_recipe(
        (DataArguments, EvaluationArguments),
        [str(REPO / "recipes/vit-base-imagenet/evaluate.yaml")],
    )
    assert full.base_model == "google/vit-base-patch16-224" and len(full.finetuned_models) == 5
    assert full.severities == [1, 2, 3, 4, 5] and full.corruptions == ["all"]
    assert data_args.dataset_name == "fashion_mnist" and args.n_resamples == 1000
    # The old `models` list (base first) still parses, with a FutureWarning.
    with pytest.warns(FutureWarning, match="'models' is deprecated"):
        _, old = parse_recipe((DataArguments, EvaluationArguments), ["--models", "b", "f1", "f2"])
    assert (old.base_model, old.finetuned_models) == ("b", ["f1", "f2"])
    with pytest.raises(ValueError, match="No base model"):
        parse_recipe((DataArguments, EvaluationArguments), ["--output_dir", str(tmp_path)])


def test_finetuned_names_label_the_models(saved_models):
    models = load_eval_models(saved_models[0], saved_models[1:], ["noise"], device="cpu")
    assert [m.label for m in models] == ["base", "noise"]
    with pytest.raises(ValueError, match="1 finetuned_models"):
        load_eval_models(saved_models[0], saved_models[1:], ["a", "b"], device="cpu")
    with pytest.raises(ValueError, match="listed twice"):
        load_eval_models(saved_models[0], saved_models[:1], device="cpu")
    with pytest.raises(
        ValueError, match=re.escape(f"listed twice: '{saved_models[1]}' and '{saved_models[1]}/'")
    ):
        load_eval_models(saved_models[0], [saved_models[1], f"{saved_models[1]}/"], device="cpu")


@pytest.mark.slow
def test_recipe_writes_results_and_figures(tmp_path, saved_models, fashion_mnist_dir):
    out = tmp_path / "eval"
    cmd = [
        sys.executable, str(REPO / "recipes" / "evaluate.py"),
        str(REPO / "recipes" / "fashion-mnist-tiny" / "evaluate.yaml"),
        "--base_model", saved_models[0], "--finetuned_models", *saved_models[1:],
        "--max_eval_examples", "100", "--corruptions", "fog", "gaussian_noise",
        "--severities", "1", "2", "--n_resamples", "1000", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(out / RESULTS_FILE)
    assert results["dataset"]["name"] == "fashion_mnist" and results["dataset"]["n_images"] == 100
    assert sum(results["dataset"]["class_counts"].values()) == 100
    selection = results["dataset"]["selection"]  # how the 100 images were chosen
    assert selection["per_class"] == results["dataset"]["class_counts"]
    assert selection["rule"] and selection["seed"] == 0
    assert results["grid"]["cells"] == [
        "clean", "fog@1", "fog@2", "gaussian_noise@1", "gaussian_noise@2"
    ]  # fmt: skip
    assert set(results["definitions"]) >= {"top_1_accuracy", "p_true", "nll", "ece", "ce"}
    for name in results["figures"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert len(results["figures"]) == 4
    assert "top-1 change vs base" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Roles, controls and the comparison records (issue #13)
# ---------------------------------------------------------------------------------------------

STUDY = {"base_model": "tiny-base", "seed": 0, "max_steps": 100}


def _robust(adversary: str, corruptions: list[str], **extra) -> dict:
    return {
        "adversary": adversary,
        "corruptions": list(corruptions),
        "train_corruptions": list(corruptions),
        "num_views": 4 if adversary == "worst_of_k" else 1,
        **STUDY,
        **extra,
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_vit_kwargs, class_names, test_images):
    """A base, an adversarial fine-tune, its two controls and an unmatched clean run."""
    spec = [
        ("base", None),
        ("adv", _robust("worst_of_k", ["gaussian_noise"])),
        ("rv", _robust("random_view", ["gaussian_noise"])),
        ("clean", _robust("none", [])),
        ("other_seed", _robust("none", [], seed=7)),
    ]
    models = []
    for seed, (name, robustness) in enumerate(spec):
        model, processor = _tiny(tiny_vit_kwargs, class_names, seed)
        if robustness:
            model.config.robustness = robustness
        models.append(EvalModel(f"/runs/{name}", model, processor))
    out = tmp_path_factory.mktemp("study")
    results = evaluate_robustness(
        models, test_images, out, EvaluationSettings(**GRID, **FAST), {"name": "fm"}
    )
    return results, out, models


def test_roles_and_controls_come_from_config_robustness(study):
    results, _, _ = study
    rows = {m["key"]: m for m in results["models"]}
    assert list(rows) == ["base", "adv", "rv", "clean", "other_seed"]
    assert {k: m["role"] for k, m in rows.items()} == {
        "base": "base", "adv": "adversarial", "rv": "random_view_control",
        "clean": "clean_control", "other_seed": "clean_control",
    }  # fmt: skip
    # The clean control trained with another seed does not match the adversarial model.
    assert rows["adv"]["controls"] == {"clean": "clean", "random_view": "rv"}
    assert all(rows[k]["controls"] is None for k in ("base", "rv", "clean"))
    assert len({m["fingerprint"] for m in rows.values()}) == 5
    families = {(r["model"], r["family"]): r["role"] for r in results["per_family"]}
    assert families[("adv", "seen")] == "adversarial"
    assert families[("clean", "unseen")] == "clean_control" and ("clean", "seen") not in families


def test_comparison_records_pair_each_model_with_its_references(study):
    results, out, _ = study
    records = results["comparisons"]
    pairs = sorted({(r["model"], r["reference"], r["reference_role"]) for r in records})
    assert pairs == sorted([
        ("adv", "base", "base"), ("adv", "clean", "clean_control"),
        ("adv", "rv", "random_view_control"), ("rv", "base", "base"),
        ("clean", "base", "base"), ("other_seed", "base", "base"),
    ])  # fmt: skip
    scopes = {r["scope"]: r for r in records if r["model"] == "adv" and r["reference"] == "clean"}
    assert set(scopes) == {"clean", "seen", "unseen", "group:noise", "group:blur"}
    assert (scopes["group:noise"]["seen"], scopes["group:blur"]["seen"]) == (True, False)
    assert "seen" not in scopes["unseen"]
    # A clean control has no seen scope: all its corruptions are unseen.
    clean_scopes = {r["scope"] for r in records if r["model"] == "clean"}
    assert clean_scopes == {"clean", "unseen", "group:noise", "group:blur"}

    def cell(key: str, cell_key: str) -> CellRecord:
        return CellRecord.load(_cell_path(out, key, cell_key))

    # Seen: adversarial minus clean control, per image averaged over the two noise cells.
    seen = [
        r for r in records if (r["model"], r["reference"], r["scope"]) == ("adv", "clean", "seen")
    ]
    top1 = next(r for r in seen if r["metric"] == "top_1_accuracy")
    p_true = next(r for r in seen if r["metric"] == "p_true")
    per = {
        k: np.mean([cell(k, f"gaussian_noise@{s}").rank < 1 for s in (1, 3)], axis=0)
        for k in ("adv", "clean")
    }
    assert top1["estimate"] == pytest.approx(float(np.mean(per["adv"] - per["clean"])))
    assert top1["test"] == "paired_bootstrap" and top1["n"] == 200 and top1["n_cells"] == 2
    expected = stats.paired_bootstrap(per["clean"], per["adv"], n_resamples=1000)
    assert (top1["ci_low"], top1["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
    pt = {k: np.mean([cell(k, f"gaussian_noise@{s}").p_true for s in (1, 3)], axis=0) for k in per}
    assert p_true["estimate"] == pytest.approx(float(np.mean(pt["adv"] - pt["clean"])), rel=1e-6)
    # One cell: McNemar on the same images.
    clean = next(
        r for r in records if (r["model"], r["reference"], r["scope"], r["metric"])
        == ("adv", "rv", "clean", "top_1_accuracy")
    )  # fmt: skip
    mc = stats.mcnemar_test(cell("rv", "clean").rank < 1, cell("adv", "clean").rank < 1)
    assert clean["test"] == "mcnemar_exact" and clean["p_value"] == pytest.approx(mc.p_value)
    # Against the base, a group record is the per_group row's vs_base difference.
    row = next(r for r in results["per_group"] if r["model"] == "adv" and r["group"] == "blur")
    rec = next(
        r for r in records if (r["model"], r["reference"], r["scope"], r["metric"])
        == ("adv", "base", "group:blur", "top_1_accuracy")
    )  # fmt: skip
    assert rec["estimate"] == row["vs_base"]["top_1_accuracy"]["estimate"]
    assert rec["ci_low"] == row["vs_base"]["top_1_accuracy"]["ci_low"]


def test_figure_of_the_change_beyond_the_control(tmp_path, study):
    from hf_vitrobust.plots.evaluation import control_matrix, plot_transfer_vs_control

    results, _, _ = study
    cm = control_matrix(results)
    assert cm["rows"] == ["adv"] and cm["columns"] == ["clean", "noise", "blur"]
    assert [c["seen"] for c in cm["cells"][0]] == [False, True, False]
    assert all(c["reference"] == "clean" for c in cm["cells"][0])
    path = plot_transfer_vs_control(results, tmp_path / "vs_control.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reader_validates_comparison_records(tmp_path, study):
    _, out, _ = study
    data = json.loads((out / RESULTS_FILE).read_text())
    assert read_results(out / RESULTS_FILE)["comparisons"] == data["comparisons"]
    cases = [
        (lambda d: d["comparisons"][0].pop("ci_low"), r"comparisons\[0\] lacks the field 'ci_low'"),
        (lambda d: d["comparisons"][0].update(reference="nobody"), "not in 'models'"),
        (lambda d: d["comparisons"][0].update(reference_role="clean_control"), "but 'base' is"),
        (lambda d: d["comparisons"][0].update(scope="group:space"), "without a grid group"),
        (lambda d: d["comparisons"][0].update(scope="everything"), "unknown scope"),
        (lambda d: d["models"][1].update(controls={"clean": "rv"}), "no such control"),
    ]
    for change, message in cases:
        path = tmp_path / "broken" / RESULTS_FILE
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_broken(data, change)))
        with pytest.raises(SchemaMismatch, match=message):
            read_results(path)


# ---------------------------------------------------------------------------------------------
# Evaluation identity: model and data fingerprints, unique keys (issue #15)
# ---------------------------------------------------------------------------------------------


def _save(folder: Path, tiny_vit_kwargs, names, seed: int, robustness=None) -> str:
    model, processor = _tiny(tiny_vit_kwargs, names, seed)
    if robustness:
        model.config.robustness = robustness
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_a_checkpoint_retrained_in_place_is_evaluated_again(
    tmp_path, tiny_vit_kwargs, class_names, test_images
):
    base = _save(tmp_path / "base", tiny_vit_kwargs, class_names, 0)
    ft = _save(tmp_path / "ft", tiny_vit_kwargs, class_names, 1, _robust("worst_of_k", ["fog"]))
    settings = EvaluationSettings(corruptions=["fog"], severities=[2], **FAST)
    data = test_images.select(range(64))
    first = evaluate_robustness(load_eval_models(base, [ft]), data, tmp_path / "e", settings)
    # Retrain in place: same folder, same config, other weights.
    _save(tmp_path / "ft", tiny_vit_kwargs, class_names, 2, _robust("worst_of_k", ["fog"]))
    models = load_eval_models(base, [ft])
    with _forward_calls(models) as calls:
        second = evaluate_robustness(models, data, tmp_path / "e", settings)
    assert calls == ["ft"] * 2  # both cells of the changed model, none of the base
    fp = {r["key"]: r["fingerprint"] for r in first["models"]}
    assert {r["key"]: r["fingerprint"] for r in second["models"]}["ft"] != fp["ft"]
    assert second["cells"][1]["metrics"] != first["cells"][1]["metrics"]  # the ft clean row
    # Another selection of images recomputes every cell too.
    with _forward_calls(models) as calls:
        third = evaluate_robustness(models, test_images.select(range(32)), tmp_path / "e", settings)
    assert sorted(set(calls)) == ["base", "ft"] and third["dataset"]["n_images"] == 32


def test_checkpoints_with_the_same_folder_name_get_distinct_keys(
    tmp_path, tiny_vit_kwargs, class_names, test_images
):
    base = _save(tmp_path / "base", tiny_vit_kwargs, class_names, 0)
    low = _save(tmp_path / "runA" / "final", tiny_vit_kwargs, class_names, 1,
                _robust("worst_of_k", ["defocus_blur"]))  # fmt: skip
    high = _save(tmp_path / "runB" / "final", tiny_vit_kwargs, class_names, 2,
                 _robust("worst_of_k", ["gaussian_noise"]))  # fmt: skip
    models = load_eval_models(base, [low, high])
    assert [m.key for m in models] == ["base", "runA/final", "runB/final"]
    results = evaluate_robustness(
        models, test_images.select(range(48)), tmp_path / "e", EvaluationSettings(**GRID, **FAST)
    )
    assert results["transfer_matrix"]["rows"] == ["runA/final", "runB/final"]
    seen = {m["key"]: m["seen_corruptions"] for m in results["models"]}
    assert seen == {"base": [], "runA/final": ["defocus_blur"], "runB/final": ["gaussian_noise"]}
    by_model = {}
    for r in results["comparisons"]:
        if r["scope"] == "seen" and r["metric"] == "top_1_accuracy":
            by_model[r["model"]] = r["corruptions"]
    assert by_model == {"runA/final": ["defocus_blur"], "runB/final": ["gaussian_noise"]}
    assert len(list((tmp_path / "e" / "cells").glob("*/clean.npz"))) == 3


# ---------------------------------------------------------------------------------------------
# Bad images: counted once each, with paths, persisted with the cells (issue #15)
# ---------------------------------------------------------------------------------------------


def test_one_bad_image_is_counted_once_when_the_cache_is_exceeded(tmp_path, loaded, test_images):
    import datasets

    rows = test_images.select(range(40))[:]
    rows["image"][7] = {"bytes": b"not an image at all", "path": None}
    data = datasets.Dataset.from_dict(rows, features=test_images.features)
    settings = EvaluationSettings(**GRID, **FAST, decode_cache_mb=0)  # decode again per cell
    first = evaluate_robustness(loaded, data, tmp_path, settings, max_bad_fraction=0.05)
    bad_id = rows["example_id"][7]
    assert [(r["id"], r["path"]) for r in first["bad_images"]["first_bad"]] == [(bad_id, None)]
    assert (first["bad_images"]["bad"], first["bad_images"]["seen"]) == (1, 40)
    assert first["dataset"]["n_images"] == 39
    # A fully resumed rerun decodes nothing and reports the same count.
    with _forward_calls(loaded) as calls:
        second = evaluate_robustness(loaded, data, tmp_path, settings, max_bad_fraction=0.05)
    assert calls == [] and second["bad_images"] == first["bad_images"]


def test_photo_folder_bad_files_counted_once_with_paths(tmp_path, photo_folder, tiny_vit_kwargs):
    from hf_vitrobust.data import label_names, load_image_dataset

    root, files = photo_folder
    data = load_image_dataset(str(root), "train")
    names = label_names(data)
    models = [
        EvalModel("base", *_tiny(tiny_vit_kwargs, names, 0), base=True),
        EvalModel("ft", *_tiny(tiny_vit_kwargs, names, 1)),
    ]
    settings = EvaluationSettings(
        corruptions=["zoom_blur"], severities=[2], decode_cache_mb=0, **FAST
    )
    results = evaluate_robustness(models, data, tmp_path, settings, max_bad_fraction=0.1)
    bad = results["bad_images"]
    assert sorted(Path(r["path"]).name for r in bad["first_bad"]) == sorted(
        p.name for p in files["bad"]
    )
    total = len(files["good"]) + len(files["odd"]) + len(files["bad"])
    assert (bad["bad"], bad["seen"]) == (len(files["bad"]), total)
    assert results["dataset"]["n_images"] == total - len(files["bad"])
    assert sum(results["dataset"]["class_counts"].values()) == total - len(files["bad"])
    # Above the limit, the error names the files (finished cells are kept for a rerun).
    from hf_vitrobust.data import TooManyBadImagesError

    with pytest.raises(TooManyBadImagesError, match="bad_truncated.jpg"):
        evaluate_robustness(models, data, tmp_path / "strict", settings, max_bad_fraction=0.01)
    assert len(list((tmp_path / "strict" / "cells").glob("*/*.npz"))) == 4


# ---------------------------------------------------------------------------------------------
# Early input validation (issue #15)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--corruptions", "gaussian_nois"], r"`corruptions: \['gaussian_nois'\]`.*gaussian_noise"),
        (["--severities", "0", "2"], r"`severities: \[0, 2\]` in the recipe"),
        (["--reference", "resnet"], "`reference: 'resnet'`.*auto, alexnet, base"),
        (["--n_resamples", "10"], "`n_resamples: 10`"),
    ],
)
def test_recipe_checks_inputs_before_loading_anything(monkeypatch, flags, message):
    import hf_vitrobust.evaluation.run as run

    def never(*args, **kwargs):
        raise AssertionError("loaded before the arguments were checked")

    monkeypatch.setattr(run, "load_dataset_split", never)
    monkeypatch.setattr(run, "load_eval_models", never)
    with pytest.raises(ValueError, match=message):
        _run_recipe(1, ["--base_model", "b", "--finetuned_models", "f", *flags])


# ---------------------------------------------------------------------------------------------
# Full scale: ViT-B/16 shapes, several processes (issue #16)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vit_b16_shapes_one_cell(tmp_path):
    """A randomly initialised ViT-B/16 (224 px, 1000 classes) on a handful of natural photos."""
    import datasets
    from PIL import Image

    from hf_vitrobust.models import tiny_image_processor, tiny_vit
    from tests.conftest import natural_photos

    names = [f"class_{i:04d}" for i in range(1000)]
    photos = list(natural_photos().values())[:4]  # native sizes: scale factors not whole
    encoded = []
    for photo in photos:
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format="JPEG", quality=90)
        encoded.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features(
        image=datasets.Image(decode=False),
        label=datasets.ClassLabel(names=names),
        example_id=datasets.Value("int64"),
    )
    data = datasets.Dataset.from_dict(
        {"image": encoded, "label": [3, 500, 998, 999], "example_id": [0, 1, 2, 3]}, features
    )
    vit_b16 = dict(
        image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, id2label=dict(enumerate(names)),
    )  # fmt: skip
    models = []
    for seed, robustness in ((0, None), (1, _robust("worst_of_k", ["gaussian_noise"]))):
        model, _ = tiny_vit(seed=seed, **vit_b16)
        if robustness:
            model.config.robustness = robustness
        models.append(EvalModel(f"vit-b16-{seed}", model.eval(), tiny_image_processor(224)))
    torch.set_num_threads(2)
    settings = EvaluationSettings(
        corruptions=["gaussian_noise"], severities=[3], include_clean=False, batch_size=4, **FAST
    )
    results = evaluate_robustness(models, data, tmp_path, settings, {"name": "imagenet-shaped"})
    assert results["dataset"]["num_classes"] == 1000 and results["dataset"]["n_images"] == 4
    assert results["settings"]["top_k"] == {
        "top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10
    }  # fmt: skip
    rec = CellRecord.load(_cell_path(tmp_path, "vit-b16-1", "gaussian_noise@3"))
    assert rec.rank.max() < 1000 and np.all(rec.p_true > 0) and np.all(rec.p_true < 0.05)
    row = next(r for r in results["cells"] if r["model"] == "vit-b16-1")
    assert row["metrics"]["top_10_accuracy"]["value"] == pytest.approx(np.mean(rec.rank < 10))
    seen = [r for r in results["comparisons"] if r["scope"] == "seen"]
    assert {r["metric"] for r in seen} == {"top_1_accuracy", "p_true"} and seen[0]["n"] == 4
    assert read_results(tmp_path / RESULTS_FILE)["models"][1]["role"] == "adversarial"


def _run_recipe(processes: int, args: list[str]) -> str:
    """recipes/evaluate.py in this process, or under `accelerate launch` on CPU processes
    (returns their stderr)."""
    script = REPO / "recipes" / "evaluate.py"
    if processes == 1:
        spec = importlib.util.spec_from_file_location("evaluate_recipe", script)
        recipe = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(recipe)
        recipe.main(args)
        return ""
    return accelerate_launch(script, args, processes, timeout=300).stderr


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(tmp_path, photo_folder, tiny_vit_kwargs):
    from hf_vitrobust.data import label_names, load_image_dataset

    root, files = photo_folder
    names = label_names(load_image_dataset(str(root), "train"))
    base = _save(tmp_path / "base", tiny_vit_kwargs, names, 0)
    ft = _save(tmp_path / "ft", tiny_vit_kwargs, names, 1, _robust("worst_of_k", ["zoom_blur"]))
    common = [
        "--base_model", base, "--finetuned_models", ft, "--dataset_name", str(root),
        "--eval_split", "train", "--max_bad_fraction", "0.1", "--severities", "2",
        "--batch_size", "8", "--n_resamples", "1000", "--progress", "false", "--plots", "false",
    ]  # fmt: skip
    grid = ["--corruptions", "zoom_blur", "gaussian_noise"]
    _run_recipe(1, [*common, *grid, "--output_dir", str(tmp_path / "one")])
    # Two processes resume the zoom_blur cells (stored with the same fingerprints) and compute
    # the others.
    two = tmp_path / "two"
    for key in ("base", "ft"):
        stored = _cell_path(two, key, "zoom_blur@2")
        stored.parent.mkdir(parents=True)
        shutil.copy2(_cell_path(tmp_path / "one", key, "zoom_blur@2"), stored)
    mtime = stored.stat().st_mtime_ns
    log = _run_recipe(2, [*common, *grid, "--output_dir", str(two)])
    assert stored.stat().st_mtime_ns == mtime  # resumed, not recomputed
    total = sum(len(v) for v in files.values())
    shards = [total - total // 2, total // 2]  # contiguous shards of the rows
    assert f"Process 1 of 2: {shards[0]} images" in log and f"Process 2 of 2: {shards[1]}" in log
    a = read_results(tmp_path / "one" / RESULTS_FILE)
    b = read_results(two / RESULTS_FILE)
    for key in ("base", "ft"):
        for cell in a["grid"]["cells"]:
            x = CellRecord.load(_cell_path(tmp_path / "one", key, cell))
            y = CellRecord.load(_cell_path(two, key, cell))
            for name in ("example_ids", "labels", "rank"):
                np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
            for name in ("p_true", "nll", "confidence"):
                np.testing.assert_allclose(getattr(x, name), getattr(y, name), atol=1e-6)
    assert b["bad_images"] == a["bad_images"] and b["bad_images"]["bad"] == len(files["bad"])
    assert b["dataset"] == a["dataset"]
    assert len(a["comparisons"]) == len(b["comparisons"]) > 0
    for x, y in zip(a["comparisons"], b["comparisons"]):
        assert {k: v for k, v in x.items() if not isinstance(v, float)} == {
            k: v for k, v in y.items() if not isinstance(v, float)
        }
        for field in ("estimate", "ci_low", "ci_high", "p_value"):
            assert y[field] == pytest.approx(x[field], rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# The pooling rule on simulated studies with known truth (correlated cells, small n)
# ---------------------------------------------------------------------------------------------


def _simulated_records(rng, n: int, shift: float) -> dict[str, dict[str, CellRecord]]:
    """Base and model on 5 severities of one corruption. Each image has a difficulty shared by
    both models and, per model, its own effect shared by all its cells (one model is better on
    some images, the other on others, at every severity), so the paired differences of one
    image's cells are correlated. The model's logit is `shift` higher on average."""
    difficulty = rng.normal(0.0, 1.0, n)
    out = {}
    for key, offset in (("base", 0.0), ("ft", shift)):
        own = rng.normal(0.0, 1.5, n)
        out[key] = {}
        for s in range(1, 6):
            p = 1 / (1 + np.exp(-(0.3 + offset + difficulty + own + rng.normal(0, 0.3, n))))
            correct = rng.random(n) < p
            rank = np.where(correct, 0, 3).astype(np.int32)
            ids = np.arange(n, dtype=np.int64)
            values = dict(p_true=p.astype(np.float32), nll=-np.log(p), confidence=p)
            out[key][f"gaussian_noise@{s}"] = CellRecord(ids, ids * 0, rank, **values)
    return out


def _seen_top1(records, models, cells) -> dict:
    from hf_vitrobust.evaluation import build_comparisons

    recs = build_comparisons(
        records, models, cells, {"gaussian_noise": "noise"}, num_classes=10,
        n_resamples=1000, confidence=0.95, seed=0, metrics=("top_1_accuracy",),
    )  # fmt: skip
    return next(r for r in recs if r["scope"] == "seen")


def test_pooled_seen_comparison_holds_its_error_rate_with_correlated_cells():
    from types import SimpleNamespace

    def stand_in(key, robustness):
        return EvalModel(key, SimpleNamespace(config=SimpleNamespace(robustness=robustness)),
                         None, key=key)  # fmt: skip

    models = [stand_in("base", None), stand_in("ft", _robust("worst_of_k", ["gaussian_noise"]))]
    cells = [Cell("gaussian_noise", s) for s in range(1, 6)]
    rng = np.random.default_rng(0)
    null_hits = naive_hits = 0
    studies = 100
    for _ in range(studies):
        records = _simulated_records(rng, 150, 0.0)
        rec = _seen_top1(records, models, cells)
        null_hits += rec["excludes_zero"]
        # The same data pooled as if image-cell pairs were independent: overconfident.
        flat = [np.concatenate([records[k][c.key].rank < 1 for c in cells]) for k in ("base", "ft")]
        d = flat[1].astype(float) - flat[0]
        naive_hits += abs(d.mean()) > 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    # 5% nominal; 3 standard errors of 100 studies allowed.
    assert null_hits / studies <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / studies)
    assert naive_hits >= 2 * max(null_hits, 5)  # the cells really are correlated here
    found = [_seen_top1(_simulated_records(rng, 150, 0.8), models, cells) for _ in range(20)]
    assert sum(r["excludes_zero"] and r["estimate"] > 0 for r in found) >= 16


def test_the_base_comes_from_roles_never_from_the_list_order():
    from types import SimpleNamespace

    from hf_vitrobust.evaluation import assign_keys, base_of, model_roles
    from hf_vitrobust.evaluation.comparisons import reference_pairs

    def stand_in(name, robustness, **kw):
        model = SimpleNamespace(config=SimpleNamespace(robustness=robustness))
        return EvalModel(name, model, None, **kw)

    adv = stand_in("/runs/adv", _robust("worst_of_k", ["gaussian_noise"]))
    clean = stand_in("/runs/clean", _robust("none", []))
    base = stand_in("/hub/vit", None)
    models = [adv, clean, base]  # the base last: found by its missing config.robustness
    assign_keys(models)
    assert base_of(models) is base and base.key == "base" and base.label == "vit"
    assert model_roles(models) == {"adv": "adversarial", "clean": "clean_control", "base": "base"}
    assert reference_pairs(models) == [
        ("adv", "base", "base"), ("adv", "clean", "clean_control"), ("clean", "base", "base")
    ]  # fmt: skip
    # A fine-tune trained elsewhere has no config.robustness either: the base must be marked.
    elsewhere = stand_in("/runs/elsewhere", None, key="elsewhere")
    with pytest.raises(ValueError, match="Cannot tell the base model"):
        base_of([elsewhere, stand_in("/hub/vit", None, key="base")])
    marked = stand_in("/hub/vit", None, key="base", base=True)
    assert model_roles([elsewhere, marked]) == {"elsewhere": "fine_tuned", "base": "base"}
