"""Every YAML recipe parses; the fine-tuning recipes run 2 steps on local tiny model and data."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shutil
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from accelerate_cpu import accelerate_launch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ACCELERATE_CONFIGS = sorted((RECIPES / "accelerate_configs").glob("*.yaml"))
# demo.yaml holds the demo's per-stage sizes, not one script's arguments (tests/test_demo.py).
YAML_RECIPES = sorted(
    p
    for p in RECIPES.rglob("*.y*ml")
    if p.parent.name != "accelerate_configs" and p.name != "demo.yaml"
)
FINETUNE_RECIPES = [
    f"{study}/{name}.yaml"
    for study in ("fashion-mnist-tiny", "vit-base-imagenet")
    for name in (
        "low_frequency",
        "high_frequency",
        "control",
        "control_random_view_low_frequency",
        "control_random_view_high_frequency",
    )
] + ["fashion-mnist-tiny/base.yaml"]


def _load_script(script: Path):
    name = f"_recipe_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses defined in the script look their module up
    spec.loader.exec_module(module)
    return module


def _script_dataclasses() -> dict[str, tuple[type, ...]]:
    """For each recipe script, the dataclass types it hands to `parse_recipe`."""
    out = {}
    for script in sorted(RECIPES.glob("*.py")):
        source = script.read_text()
        match = re.search(r"parse_recipe\(\s*\(([^)]*)\)", source)
        if not match:
            continue
        names = [n.strip() for n in match.group(1).split(",") if n.strip()]
        origin = {
            alias.asname or alias.name: node.module
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        types = []
        for n in names:
            # Import from the package module the script imports it from (no script side effects).
            if origin.get(n, "").startswith("hf_vitrobust"):
                module = importlib.import_module(origin[n])
            else:
                module = _load_script(script)
            types.append(getattr(module, n))
        types = tuple(types)
        assert all(is_dataclass(t) for t in types), script
        out[script.name] = types
    return out


@pytest.fixture(scope="module")
def scripts():
    return _script_dataclasses()


def test_finetune_recipes_exist():
    for name in FINETUNE_RECIPES:
        assert (RECIPES / name).is_file(), name


@pytest.mark.parametrize("recipe", YAML_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_parses(recipe, scripts):
    from hf_vitrobust.configs import parse_recipe

    values = yaml.safe_load(recipe.read_text())
    assert isinstance(values, dict) and values, recipe
    # The recipe belongs to the script whose dataclasses know all of its keys.
    owners = [
        name
        for name, types in scripts.items()
        if set(values) <= {f.name for t in types for f in fields(t)}
    ]
    assert owners, f"{recipe}: no recipe script accepts all of its keys {sorted(values)}"
    argv = [str(recipe)]
    if values.get("bf16"):
        import torch

        if not torch.cuda.is_available():
            argv += ["--use_cpu", "true"]  # bf16 without a GPU: CPU autocast
    parsed = parse_recipe(scripts[owners[0]], argv)
    by_name = {f.name: getattr(obj, f.name) for obj in parsed for f in fields(obj)}
    from transformers import TrainingArguments

    normalised = {f.name for f in fields(TrainingArguments)}  # enums, report_to lists, ...
    for key, value in values.items():
        if key in normalised or not isinstance(value, (int, float, str, list)):
            continue
        assert by_name[key] == value or str(by_name[key]) == str(value), (recipe, key)


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1 and loaded.mixed_precision == "bf16"
    assert str(loaded.distributed_type).split(".")[-1] in ("MULTI_GPU", "FSDP", "DEEPSPEED")


def test_recipes_reject_bad_settings(tmp_path):
    from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe
    from hf_vitrobust.training import AdversarialTrainingArguments

    types = (ModelArguments, DataArguments, AdversarialTrainingArguments)
    recipe = str(RECIPES / "fashion-mnist-tiny/low_frequency.yaml")
    with pytest.raises(ValueError, match="low_freqency"):
        parse_recipe(
            types, [recipe, "--corruptions", "low_freqency", "--output_dir", str(tmp_path)]
        )
    with pytest.raises(ValueError, match="unseen_corruptions: 'digitl'"):
        parse_recipe(
            types, [recipe, "--unseen_corruptions", "digitl", "--output_dir", str(tmp_path)]
        )
    with pytest.raises(ValueError, match="num_views"):
        parse_recipe(types, [recipe, "--num_views", "0", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="low_freqency"), pytest.warns(FutureWarning):
        parse_recipe(
            types, [recipe, "--train_family", "low_freqency", "--output_dir", str(tmp_path)]
        )
    with pytest.raises(ValueError, match="pgd_epsilon"):
        parse_recipe(
            types,
            [
                recipe,
                "--adversary",
                "worst_of_k+pgd",
                "--pgd_epsilon",
                "-1",
                "--output_dir",
                str(tmp_path),
            ],
        )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, fashion_mnist_dir):
    """A tiny ViT saved like a real checkpoint, with Fashion-MNIST's class names."""
    from hf_vitrobust.data import label_names, load_image_dataset
    from hf_vitrobust.models import tiny_vit

    names = label_names(load_image_dataset("fashion_mnist", "test", max_examples=16))
    model, processor = tiny_vit(
        seed=0,
        id2label=dict(enumerate(names)),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    path = tmp_path_factory.mktemp("tiny_ckpt")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _overrides(recipe: str, tiny: Path, out: Path) -> list[str]:
    args = [
        str(RECIPES / recipe),
        "--output_dir", str(out),
        "--dataset_name", "fashion_mnist", "--train_split", "train", "--eval_split", "test",
        "--max_train_examples", "64", "--max_eval_examples", "32", "--shuffle_buffer_size", "64",
        "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16", "--dataloader_num_workers", "0",
        "--logging_steps", "1", "--disable_tqdm", "true",
    ]  # fmt: skip
    if not recipe.endswith("/base.yaml"):
        args += ["--model_name_or_path", str(tiny)]
    if "imagenet" in recipe:
        args += ["--use_cpu", "true"]  # bf16 kept: CPU autocast runs the same bf16 path here
    return args


@pytest.fixture(scope="module")
def finetune():
    """`recipes/finetune.py` as a module: its `main(argv)` is the whole workflow."""
    return _load_script(RECIPES / "finetune.py")


@pytest.fixture(scope="module")
def finetuned(tiny_checkpoint, tmp_path_factory, finetune):
    """Runs a fine-tuning recipe for 2 steps once per module: recipe -> (output dir, metrics)."""
    runs: dict[str, tuple[Path, dict]] = {}
    root = tmp_path_factory.mktemp("finetuned")

    def run(recipe: str) -> tuple[Path, dict]:
        if recipe not in runs:
            out = root / recipe.replace("/", "__").removesuffix(".yaml")
            runs[recipe] = (out, finetune.main(_overrides(recipe, tiny_checkpoint, out)))
        return runs[recipe]

    return run


def _robustness(out: Path) -> dict:
    from hf_vitrobust.roles import read_robustness

    return read_robustness(json.loads((out / "config.json").read_text())["robustness"])


@pytest.mark.parametrize("recipe", FINETUNE_RECIPES)
def test_finetune_recipe_runs_two_steps(recipe, finetuned):
    import torch
    from transformers import ViTForImageClassification

    out, metrics = finetuned(recipe)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    model = ViTForImageClassification.from_pretrained(out)
    robustness = model.config.robustness
    expected = yaml.safe_load((RECIPES / recipe).read_text())
    assert robustness["adversary"] == expected["adversary"]
    assert robustness["corruptions"] == expected["corruptions"]
    assert robustness["seed"] == expected["seed"] and robustness["max_steps"] == 2
    dataset = robustness["dataset"]
    assert (dataset["name"], dataset["split"], dataset["n"]) == ("fashion_mnist", "train", 64)
    assert dataset["rule"] and dataset["seed"] == 0
    if "imagenet" in recipe:
        assert dataset["streaming"]  # the paper-scale recipes stream; this runs the stream path
        assert next(model.parameters()).dtype == torch.float32  # bf16 autocast, fp32 weights
    if expected["corruptions"]:
        assert robustness["train_corruptions"] and robustness["registry_version"]
        assert robustness["unseen_corruptions"] == expected["unseen_corruptions"]
        assert "eval_seen_accuracy" in metrics and "eval_unseen_accuracy" in metrics
    assert "eval_clean_accuracy" in metrics
    # The recipe (not the trainer) writes the model card, through hf_vitrobust.hub.
    assert metrics["model_card"] == str(out / "README.md")
    assert (out / "adversary_stats.json").is_file()
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 2 and results["train_segments"] == 1
    assert results["images_skipped"] == 0 and results["bad_images_passed"] is True


#: The controls of each adversarial fine-tune: (clean control, random-view control).
CONTROLS = {
    "low_frequency": ("control", "control_random_view_low_frequency"),
    "high_frequency": ("control", "control_random_view_high_frequency"),
}
#: Keys a control may set differently from its adversarial fine-tune.
CONTROL_KEYS = {"adversary", "num_views", "corruptions", "severities", "clean_loss_weight",
                "unseen_corruptions", "output_dir"}  # fmt: skip


@pytest.mark.parametrize("study", ["fashion-mnist-tiny", "vit-base-imagenet"])
def test_control_recipes_change_only_the_adversary(study):
    for adversarial, controls in CONTROLS.items():
        reference = yaml.safe_load((RECIPES / study / f"{adversarial}.yaml").read_text())
        for control in controls:
            values = yaml.safe_load((RECIPES / study / f"{control}.yaml").read_text())
            changed = {k for k in set(reference) | set(values) if reference.get(k) != values.get(k)}
            assert changed <= CONTROL_KEYS, (study, control, changed - CONTROL_KEYS)
            if control.startswith("control_random_view"):
                assert values["corruptions"] == reference["corruptions"]
                assert values["clean_loss_weight"] == reference["clean_loss_weight"]


@pytest.mark.parametrize("study", ["fashion-mnist-tiny", "vit-base-imagenet"])
def test_roles_pair_each_fine_tune_with_its_controls(study, finetuned):
    from hf_vitrobust.roles import (
        ADVERSARIAL,
        CLEAN_CONTROL,
        RANDOM_VIEW_CONTROL,
        match_controls,
        role_of,
    )

    names = ["low_frequency", "high_frequency", "control", *(c for _, c in CONTROLS.values())]
    robustness = {name: _robustness(finetuned(f"{study}/{name}.yaml")[0]) for name in names}
    if study == "fashion-mnist-tiny":
        # Trained from scratch on the same data, seed and steps, but not from the same base:
        # never anyone's control.
        robustness["base"] = _robustness(finetuned(f"{study}/base.yaml")[0])
        assert robustness["base"]["base_model"] == "model_config"
    for name, record in robustness.items():
        assert {"adversary", "train_corruptions", "num_views", "base_model", "seed",
                "max_steps", "dataset"} <= set(record), name  # fmt: skip
    assert robustness["control"]["base_model"].startswith("local:")
    expected_roles = {"low_frequency": ADVERSARIAL, "high_frequency": ADVERSARIAL,
                      "control": CLEAN_CONTROL, "base": CLEAN_CONTROL}  # fmt: skip
    for name, record in robustness.items():
        role = expected_roles.get(name, RANDOM_VIEW_CONTROL)
        assert role_of(record) == role, name
    assert robustness["control_random_view_low_frequency"]["num_views"] == 1
    controls = match_controls(robustness)
    assert set(controls) == set(CONTROLS)
    for adversarial, (clean, random_view) in CONTROLS.items():
        assert (controls[adversarial].clean, controls[adversarial].random_view) == (
            clean,
            random_view,
        )


def _run_files(out: Path) -> dict[str, bytes]:
    names = ("model.safetensors", "trainer_state.json", "adversary_stats.json",
             "train_results.json", "config.json")  # fmt: skip
    return {name: (out / name).read_bytes() for name in names}


def test_rerun_resumes_from_last_checkpoint(tiny_checkpoint, tmp_path, finetune):
    out = tmp_path / "out"
    argv = _overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out)
    argv += ["--save_steps", "1", "--eval_strategy", "no"]
    finetune.main(argv)
    first = json.loads((out / "adversary_stats.json").read_text())
    argv[argv.index("--max_steps") + 1] = "3"
    metrics = finetune.main(argv)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # Only the new step ran: the first run's two steps were restored from checkpoint-2.
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
    # Statistics cover both segments: 3 steps x 8 images, every image's worst view counted.
    stats = json.loads((out / "adversary_stats.json").read_text())
    assert stats["images_used"] == 24 and first["images_used"] == 16
    assert sum(stats["winning_corruptions"].values()) == 24
    assert [(s["from_step"], s["to_step"]) for s in stats["segments"]] == [(0, 2), (2, 3)]
    assert metrics["train_segments"] == 2 and metrics["train_samples"] == 24


def test_rerun_of_a_finished_run_changes_nothing(tiny_checkpoint, tmp_path, finetune, caplog):
    out = tmp_path / "out"
    argv = _overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out)
    argv += ["--save_steps", "1", "--eval_strategy", "no", "--lr_scheduler_type", "constant"]
    finetune.main(argv)
    before = _run_files(out)
    with caplog.at_level("WARNING"):
        metrics = finetune.main(argv)
    assert "nothing to train" in caplog.text
    assert metrics["finished_before"] and metrics["global_step"] == 2
    assert _run_files(out) == before  # weights, state and statistics untouched


@pytest.fixture(scope="module")
def three_step_run(tiny_checkpoint, tmp_path_factory, finetune):
    """An uninterrupted 3-step run with every checkpoint kept: (argv, output dir)."""
    out = tmp_path_factory.mktemp("three_steps") / "reference"
    argv = _overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out)
    argv += ["--max_steps", "3", "--save_steps", "1", "--save_total_limit", "3"]
    argv += ["--eval_strategy", "no"]
    finetune.main(argv)
    return argv, out


@pytest.mark.parametrize("damage", ["no_trainer_state", "truncated_weights", "no_final_save"])
def test_rerun_skips_a_half_written_checkpoint(damage, three_step_run, tmp_path, finetune, caplog):
    argv, reference = three_step_run
    expected = _run_files(reference)
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    argv = list(argv)
    argv[argv.index("--output_dir") + 1] = str(out)
    # The final save did not happen (killed after the last checkpoint) ...
    for name in ("train_results.json", "model.safetensors", "adversary_stats.json"):
        (out / name).unlink()
    newest = out / "checkpoint-3"
    # ... and the newest checkpoint is half-written.
    if damage == "no_trainer_state":
        (newest / "trainer_state.json").unlink()
    elif damage == "truncated_weights":
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1000])
    with caplog.at_level("WARNING"):
        finetune.main(argv)
    if damage == "no_final_save":
        # checkpoint-3 is complete and at max_steps: saved as is, no step trained again.
        assert "saving it without training" in caplog.text
    else:
        assert f"Skipping incomplete checkpoint {newest}" in caplog.text
        assert "Resuming from" in caplog.text and "checkpoint-2" in caplog.text
    after = _run_files(out)
    # The same model as the uninterrupted run, bit for bit, and the same statistics.
    assert after["model.safetensors"] == expected["model.safetensors"]
    stats, reference_stats = (json.loads(f["adversary_stats.json"]) for f in (after, expected))
    for key in ("winning_corruptions", "winning_severities", "images_used", "global_step"):
        assert stats[key] == reference_stats[key], key
    assert stats["loss_sum"] == pytest.approx(reference_stats["loss_sum"], rel=1e-5)
    state = json.loads(after["trainer_state.json"])
    assert state["global_step"] == 3


@pytest.mark.slow
def test_two_process_cpu_launch(tiny_checkpoint, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): two real processes."""
    out = tmp_path / "ddp"
    proc = accelerate_launch(
        RECIPES / "finetune.py",
        [
            *_overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out),
            *("--log_level", "info", "--eval_strategy", "no", "--use_cpu", "true"),
        ],
    )
    log = proc.stdout + proc.stderr
    # 2 processes x 8 images per device.
    assert re.search(r"Total train batch size.*= 16", log), log[-4000:]
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(out)
    assert model.config.robustness["corruptions"] == ["low_frequency"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_old_training_keys_still_parse_with_a_warning(tmp_path):
    from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe
    from hf_vitrobust.training import AdversarialTrainingArguments

    types = (ModelArguments, DataArguments, AdversarialTrainingArguments)
    recipe = tmp_path / "old.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\nadversary: worst_of_k\n"
        "train_family: low_frequency\neval_unseen_group: digital\n"
    )
    with pytest.warns(FutureWarning) as caught:
        *_, args = parse_recipe(types, [str(recipe)])
    messages = " ".join(str(w.message) for w in caught)
    assert "'train_family' is deprecated" in messages and "'unseen_corruptions'" in messages
    assert args.corruptions == ["low_frequency"] and args.unseen_corruptions == ["digital"]
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\ntrain_family: ''\neval_unseen_group: none\n"
    )
    with pytest.warns(FutureWarning):
        *_, args = parse_recipe(types, [str(recipe)])
    assert args.corruptions == [] and args.unseen_corruptions == [] and args.views_needed == 0


def test_collators_follow_the_training_and_unseen_corruptions(tmp_path, tiny_model):
    from hf_vitrobust.corruptions import FAMILIES
    from hf_vitrobust.training import AdversarialTrainingArguments, build_collators

    _, processor = tiny_model

    def collators(**kw):
        args = AdversarialTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **kw)
        return build_collators(processor, args, num_labels=10)

    train, evals = collators(adversary="worst_of_k", num_views=3, corruptions=["low_frequency"])
    assert train.k == 3 and train.views.names == FAMILIES["low_frequency"]
    assert evals["seen"].views.names == FAMILIES["low_frequency"]
    assert evals["seen"].views.stage == "eval" and evals["seen"].views.seed == 1_000_003
    # Default unseen: the first corruption group disjoint from the training corruptions.
    assert evals["unseen"].views.names == FAMILIES["noise"]
    _, evals = collators(
        adversary="random_view", corruptions=["blur"], unseen_corruptions=["fog", "contrast"]
    )
    assert evals["unseen"].views.names == ("fog", "contrast")
    _, evals = collators(adversary="random_view", corruptions=["blur"], unseen_corruptions=["none"])
    assert list(evals) == ["clean", "seen"]
    train, evals = collators()
    assert train.k == 0 and train.views is None and list(evals) == ["clean"]


def test_labels_are_validated_before_training(tiny_vit_kwargs):
    from datasets import ClassLabel, Dataset, Features, Value

    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.training import load_model_for_dataset

    names = [f"class_{i}" for i in range(10)]
    features = Features({"label": ClassLabel(names=names), "example_id": Value("int64")})
    good = Dataset.from_dict({"label": [0, 9, 3], "example_id": [0, 1, 2]}, features=features)
    bad = Dataset.from_dict({"label": [0, -1, 3], "example_id": [0, 1, 2]}, features=features)
    config = {k: v for k, v in tiny_vit_kwargs.items() if k != "num_labels"}
    model_args = ModelArguments(model_config={**config, "image_mean": 0.5, "image_std": 0.25})
    model, _ = load_model_for_dataset(model_args, good)
    assert model.config.id2label[9] == "class_9"  # a fresh head gets the dataset's classes
    with pytest.raises(ValueError, match=r"outside \[0, 10\) \(example ids \[1\]"):
        load_model_for_dataset(model_args, bad)
    with pytest.raises(ValueError, match="outside"):
        load_model_for_dataset(model_args, good, bad)


def test_fresh_model_normalisation_comes_from_model_config_or_the_data(photo_folder, caplog):
    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.data import load_image_dataset
    from hf_vitrobust.models import FASHION_MNIST_MEAN
    from hf_vitrobust.training import load_model_for_dataset

    root, _ = photo_folder
    dataset = load_image_dataset(str(root))
    config = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64)  # fmt: skip
    given = ModelArguments(model_config={**config, "image_mean": [0.4, 0.5, 0.6], "image_std": 0.2})
    _, processor = load_model_for_dataset(given, dataset)
    assert list(processor.image_mean) == [0.4, 0.5, 0.6] and list(processor.image_std) == [0.2] * 3
    with caplog.at_level("WARNING"):
        model, processor = load_model_for_dataset(ModelArguments(model_config=config), dataset)
    # Every decodable photo (fewer than the sample size), stated in the log.
    assert f"from {len(dataset) - 2} training images" in caplog.text
    mean, std = list(processor.image_mean), list(processor.image_std)
    # Natural photos in colour: per-channel statistics, not Fashion-MNIST's grey ones.
    assert len(set(mean)) == 3 and abs(mean[0] - FASHION_MNIST_MEAN) > 0.05
    # Checked against a direct computation on every decodable image.
    from hf_vitrobust.data import BadImageError, ProcessorSpec, decode_image

    spec = ProcessorSpec(size=(32, 32), mean=(0.0,) * 3, std=(1.0,) * 3, resize_to=(32, 32))
    pixels = []
    for row in dataset:
        try:
            pixels.append(spec.resize_uint8(decode_image(row["image"])).reshape(-1, 3) / 255.0)
        except BadImageError:
            continue
    pixels = np.concatenate(pixels)
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-5)
    assert model.config.num_labels == 6


@pytest.mark.parametrize("given", ["image_mean", "image_std"])
def test_partial_normalisation_is_logged_as_saved(photo_folder, tmp_path, caplog, given):
    """model_config gives one of image_mean/image_std: the other is computed from the data, and
    the log states both values as the saved preprocessor_config.json holds them, with their
    sources."""
    import ast

    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.data import load_image_dataset
    from hf_vitrobust.training import load_model_for_dataset

    root, _ = photo_folder
    dataset = load_image_dataset(str(root))
    config = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64)  # fmt: skip
    args = ModelArguments(model_config={**config, given: [0.3, 0.4, 0.5]})
    with caplog.at_level("WARNING"):
        _, processor = load_model_for_dataset(args, dataset)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved[given] == [0.3, 0.4, 0.5]
    computed = f"computed from {len(dataset) - 2} training images"
    for key in ("image_mean", "image_std"):
        logged = re.search(rf"{key}=(\[[^\]]*\]) \(([^)]*)\)", caplog.text)
        assert logged, caplog.text
        assert ast.literal_eval(logged.group(1)) == saved[key]
        source = logged.group(2)
        assert source == "given in model_config" if key == given else source.startswith(computed)


def test_model_config_and_model_paths_are_checked(tmp_path):
    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.models import load_model_and_processor

    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'"):
        load_model_and_processor(ModelArguments(model_config={"hiden_size": 64}), image_mean=0.5,
                                 image_std=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="needs its normalisation"):
        load_model_and_processor(ModelArguments(model_config={"hidden_size": 32}))
    with pytest.raises(ValueError, match="image_std must be > 0"):
        load_model_and_processor(ModelArguments(model_config={"image_mean": 0.5, "image_std": 0}))
    missing = tmp_path / "runs" / "base"
    for name in (str(missing), "outputs/fashion-mnist-tiny/base", "./base"):
        with pytest.raises(FileNotFoundError, match="no such folder"):
            load_model_and_processor(ModelArguments(model_name_or_path=name))


def _photo_recipe(tmp_path: Path, root: Path, limit: float, name: str) -> list[str]:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_config": {
                    "image_size": 32,
                    "patch_size": 8,
                    "hidden_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "intermediate_size": 64,
                },  # fmt: skip
                "dataset_name": str(root),
                "max_bad_fraction": limit,
                "adversary": "worst_of_k",
                "num_views": 2,
                "corruptions": ["low_frequency"],
                "severities": [3],
                "output_dir": str(tmp_path / name),
                "max_steps": 8,  # 2 epochs of the 57 files
                "per_device_train_batch_size": 16,
                "save_strategy": "steps",
                "save_steps": 4,
                "eval_strategy": "no",
                "dataloader_num_workers": 0,
                "disable_tqdm": True,
                "report_to": "none",
            }
        )
    )
    return [str(recipe)]


def test_photo_folder_with_bad_files_keeps_the_model_and_records_the_verdict(
    photo_folder, tmp_path, finetune
):
    """A user's imagefolder with 2 undecodable files of 57 (3.5%): counted once each over two
    epochs; above the limit the trained model is saved and the verdict recorded before the run
    fails, and a rerun fails again without training."""
    from hf_vitrobust.data import TooManyBadImagesError

    root, files = photo_folder
    total = sum(len(v) for v in files.values())
    argv = _photo_recipe(tmp_path, root, 0.01, "strict")
    with pytest.raises(TooManyBadImagesError, match="2 of 57"):
        finetune.main(argv)
    out = tmp_path / "strict"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    results = json.loads((out / "train_results.json").read_text())
    assert results["bad_images_passed"] is False and results["global_step"] == 8
    assert (results["images_skipped"], results["images_seen"]) == (2, total)
    saved = json.loads((out / "bad_images.json").read_text())
    assert (saved["bad"], saved["seen"], saved["passed"]) == (2, total, False)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(TooManyBadImagesError, match="finished training but failed"):
        finetune.main(argv)
    assert (out / "model.safetensors").read_bytes() == before
    # Rerun with the limit raised, as the error suggests: the recorded counts are judged again,
    # the new verdict recorded, nothing trained.
    metrics = finetune.main(_photo_recipe(tmp_path, root, 0.05, "strict"))
    assert metrics["bad_images_passed"] is True and metrics["finished_before"]
    assert (metrics["images_skipped"], metrics["images_seen"]) == (2, total)
    saved = json.loads((out / "bad_images.json").read_text())
    assert (saved["bad"], saved["seen"], saved["passed"], saved["limit"]) == (2, total, True, 0.05)
    assert json.loads((out / "train_results.json").read_text())["bad_images_passed"] is True
    assert (out / "model.safetensors").read_bytes() == before and (out / "README.md").is_file()
    # Within the limit: the same run passes, and its processor has the photos' own statistics.
    metrics = finetune.main(_photo_recipe(tmp_path, root, 0.05, "lenient"))
    assert metrics["bad_images_passed"] and metrics["images_skipped"] == 2
    processor = json.loads((tmp_path / "lenient" / "preprocessor_config.json").read_text())
    assert len(set(processor["image_mean"])) == 3
    robustness = _robustness(tmp_path / "lenient")
    assert robustness["dataset"]["name"] == root.name and robustness["dataset"]["source"] == "local"
    assert str(root.parent) not in json.dumps(robustness)  # no absolute path recorded


@pytest.mark.slow
def test_vit_b16_shapes_fine_tune_with_worst_of_k_and_card(tmp_path, finetune):
    """ViT-B/16 as the paper uses it (224 px, patch 16, 12 layers, 1000 classes), randomly
    initialised, fine-tuned for 2 worst-of-2 steps on a handful of natural photos of odd sizes,
    then its card written: nothing may assume 28 px, 10 classes or 6 layers."""
    import datasets
    from conftest import _jpeg, natural_photos
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    names = [f"class_{i}" for i in range(1000)]
    config = ViTConfig(image_size=224, patch_size=16, id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})  # fmt: skip
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        768,
        12,
        12,
    )
    base = tmp_path / "vit-b16"
    ViTForImageClassification(config).save_pretrained(base)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(base)
    photos = list(natural_photos().values())[:4]
    labels = [0, 17, 512, 999]
    features = datasets.Features(image=datasets.Image(decode=False),
                                 label=datasets.ClassLabel(names=names))  # fmt: skip
    rows = {
        "image": [
            {"bytes": _jpeg(p[: 150 + 37 * i, : 299 - 20 * i]), "path": None}
            for i, p in enumerate(photos)
        ],  # fmt: skip
        "label": labels,
    }
    data = tmp_path / "photos-1000"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(data))
    out = tmp_path / "out"
    argv = [
        str(RECIPES / "vit-base-imagenet" / "low_frequency.yaml"),
        "--model_name_or_path", str(base), "--dataset_name", str(data), "--streaming", "false",
        "--corruptions", "gaussian_noise", "defocus_blur", "--num_views", "2",
        "--unseen_corruptions", "none", "--output_dir", str(out), "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--dataloader_num_workers", "0", "--use_cpu", "true", "--disable_tqdm", "true",
    ]  # fmt: skip
    metrics = finetune.main(argv)
    assert metrics["global_step"] == 2 and metrics["bad_images_passed"]
    model = ViTForImageClassification.from_pretrained(out)
    assert (model.config.num_labels, model.config.image_size, model.config.num_hidden_layers) == (
        1000,
        224,
        12,
    )
    stats = json.loads((out / "adversary_stats.json").read_text())
    assert sum(stats["winning_corruptions"].values()) == 4  # 2 steps x 2 images
    robustness = model.config.robustness
    assert robustness["base_model"] == "local:vit-b16" and robustness["num_views"] == 2
    assert robustness["dataset"]["name"] == "photos-1000"
    assert (out / "README.md").is_file() and metrics["model_card"] == str(out / "README.md")


def test_model_arguments_are_checked_when_the_recipe_is_parsed(tmp_path):
    """An unknown model_config key, or model_config beside model_name_or_path, fails at parse
    time (before any data loads: this dataset does not exist), naming the keys."""
    from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_config": {"hiden_size": 8}}))
    argv = [str(recipe), "--dataset_name", "/nowhere/photos"]
    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'"):
        parse_recipe((ModelArguments, DataArguments), argv)
    with pytest.raises(ValueError, match="model_name_or_path .*'runs/a/final'.* model_config"):
        ModelArguments(model_name_or_path="runs/a/final", model_config={"hidden_size": 32})


def test_relative_model_paths_are_local_and_weightless_folders_say_so(tmp_path, monkeypatch):
    """`runs/nobase` next to an existing `runs/` is a missing folder (the datasets' rule), not a
    Hub id; a run folder without weights names itself and its checkpoint folders."""
    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.models import load_model_and_processor

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a" / "checkpoint-10").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "final").mkdir()
    with pytest.raises(FileNotFoundError, match="'runs/nobase': no such folder"):
        load_model_and_processor(ModelArguments(model_name_or_path="runs/nobase"))
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors") as info:
        load_model_and_processor(ModelArguments(model_name_or_path="runs/a"))
    assert str(tmp_path / "runs" / "a") in str(info.value)
    assert "['checkpoint-10', 'final']" in str(info.value)


def test_stage_arguments_name_the_key_of_a_bad_value():
    """Severities and corruption names are checked when the arguments are built, and the error
    names the recipe key."""
    from hf_vitrobust.analysis.run import AnalysisArguments
    from hf_vitrobust.analysis.sae import SAEStudyArguments
    from hf_vitrobust.training.config import AdversarialTrainingArguments

    with pytest.raises(ValueError, match=r"train_severities=\[9\]: severity must be in 1..5"):
        SAEStudyArguments(base_model="b", train_severities=[9])
    with pytest.raises(ValueError, match=r"^severities=\[1, 7\]: severity must be in 1..5, got 7"):
        AdversarialTrainingArguments(
            output_dir="unused", adversary="worst_of_k", corruptions=["blur"], severities=[1, 7]
        )
    with pytest.raises(ValueError, match="^corruptions: .*fog2"):
        AnalysisArguments(base_model="b", finetuned_models=["f"], corruptions=["fog2"])
