"""Every YAML recipe parses; the fine-tuning recipes run 2 steps on local tiny model and data."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

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
    "fashion-mnist-tiny/base.yaml",
    "fashion-mnist-tiny/low_frequency.yaml",
    "fashion-mnist-tiny/high_frequency.yaml",
    "vit-base-imagenet/low_frequency.yaml",
    "vit-base-imagenet/high_frequency.yaml",
]


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
            argv += ["--bf16", "false"]  # TrainingArguments refuses bf16 without a GPU
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
        "--max_train_examples", "64", "--max_eval_examples", "32",
        "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16", "--dataloader_num_workers", "0",
        "--logging_steps", "1", "--disable_tqdm", "true",
    ]  # fmt: skip
    if not recipe.endswith("/base.yaml"):
        args += ["--model_name_or_path", str(tiny)]
    if "imagenet" in recipe:
        args += ["--bf16", "false"]  # bf16 autocast is exercised on GPU; CPU runs fp32 here
    return args


@pytest.fixture(scope="module")
def finetune():
    """`recipes/finetune.py` as a module: its `main(argv)` is the whole workflow."""
    return _load_script(RECIPES / "finetune.py")


@pytest.mark.parametrize("recipe", FINETUNE_RECIPES)
def test_finetune_recipe_runs_two_steps(recipe, tiny_checkpoint, tmp_path, finetune):
    from transformers import ViTForImageClassification

    from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe
    from hf_vitrobust.training import AdversarialTrainingArguments

    out = tmp_path / "out"
    argv = _overrides(recipe, tiny_checkpoint, out)
    _, data_args, _ = parse_recipe(
        (ModelArguments, DataArguments, AdversarialTrainingArguments), argv
    )
    if "imagenet" in recipe:
        assert data_args.streaming  # the paper-scale recipes stream; this runs the stream path
    metrics = finetune.main(argv)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    model = ViTForImageClassification.from_pretrained(out)
    robustness = model.config.robustness
    expected = yaml.safe_load((RECIPES / recipe).read_text())
    assert robustness["adversary"] == expected["adversary"]
    assert robustness["corruptions"] == expected["corruptions"]
    if expected["corruptions"]:
        assert robustness["train_corruptions"] and robustness["registry_version"]
        assert robustness["unseen_corruptions"] == expected["unseen_corruptions"]
        assert "eval_seen_accuracy" in metrics and "eval_unseen_accuracy" in metrics
    assert "eval_clean_accuracy" in metrics
    # The recipe (not the trainer) writes the model card, through hf_vitrobust.hub.
    assert metrics["model_card"] == str(out / "README.md")
    assert "robust" in (out / "README.md").read_text().lower()
    assert (out / "adversary_stats.json").is_file()


def test_rerun_resumes_from_last_checkpoint(tiny_checkpoint, tmp_path, finetune):
    out = tmp_path / "out"
    argv = _overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out)
    argv += ["--save_steps", "1", "--eval_strategy", "no"]
    finetune.main(argv)
    argv[argv.index("--max_steps") + 1] = "3"
    finetune.main(argv)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # Only the new step ran: the first run's two steps were restored from checkpoint-2.
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_launch(tiny_checkpoint, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): two real processes."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(RECIPES / "finetune.py"),
        *_overrides("fashion-mnist-tiny/low_frequency.yaml", tiny_checkpoint, out),
        "--log_level", "info", "--eval_strategy", "no", "--use_cpu", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
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
