"""AdversarialTrainer on a tiny ViT with synthetic data and a collator following the data contract.

The corruption registry is replaced by a small fake one here so that these tests check the
trainer's own logic; tests/test_recipes.py runs the real registry and data pipeline end to end.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, ViTForImageClassification

import hf_vitrobust.training.config as config_mod
from hf_vitrobust.corruptions import check_severities
from hf_vitrobust.models import tiny_vit
from hf_vitrobust.roles import CLEAN_CONTROL, RANDOM_VIEW_CONTROL, read_robustness, role_of
from hf_vitrobust.training.adversary import eval_mode, gather_views, per_example_loss, worst_of_k
from hf_vitrobust.training.trainer import (
    AdversarialTrainer,
    AdversarialTrainingArguments,
    NonFiniteLossError,
)

FAKE = types.SimpleNamespace(
    REGISTRY_VERSION="fake-1",
    GROUPS=("noise", "blur"),
    FAMILIES={
        "noise": ("noise_a", "noise_b"),
        "blur": ("blur_a", "blur_b"),
        "low_frequency": ("blur_a", "blur_b"),
    },
)


def _resolve(spec):
    """Like `corruptions.resolve_corruptions`: family and/or corruption names, in order."""
    known = {n for f in FAKE.FAMILIES.values() for n in f}
    out = []
    for item in [spec] if isinstance(spec, str) else spec:
        if item not in FAKE.FAMILIES and item not in known:
            raise ValueError(f"{item!r} is neither a corruption family nor a corruption.")
        out += [n for n in FAKE.FAMILIES.get(item, (item,)) if n not in out]
    return tuple(out)


FAKE.resolve_corruptions = _resolve
FAKE.check_severities = check_severities  # pure: the severity list check needs no registry rows


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    monkeypatch.setattr(config_mod, "registry", FAKE)


class SyntheticImages(torch.utils.data.Dataset):
    """Class-dependent 28 px images (learnable), with stable example ids."""

    def __init__(self, n: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 10
        base = torch.rand(10, 3, 28, 28, generator=g)
        self.images = (0.6 * base[self.labels] + 0.4 * torch.rand(n, 3, 28, 28, generator=g)).clamp(
            0, 1
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "example_id": i}


class FakeCollator:
    """Produces the contract's keys; view j of example i at epoch e is a noise draw seeded by
    (seed, e, i, j) whose strength grows with its severity."""

    def __init__(self, k: int = 0, seed: int = 0, names=("noise_a", "noise_b"), skipped: int = 0):
        self.k, self.seed, self.names, self.epoch, self.skipped = k, seed, names, 0, skipped
        self.mean, self.std = 0.286, 0.353

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, examples):
        x = torch.stack([e["image"] for e in examples])
        ids = [int(e["example_id"]) for e in examples]
        batch = {
            "pixel_values": (x - self.mean) / self.std,
            "labels": torch.tensor([int(e["label"]) for e in examples]),
            "example_ids": torch.tensor(ids),
            "num_skipped": self.skipped,
        }
        if self.k:
            views, names, sevs = [], [], []
            for i, xi in zip(ids, x):
                row, rn, rs = [], [], []
                for j in range(self.k):
                    g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i, j)) % 2**31)
                    sev = int(torch.randint(1, 6, (1,), generator=g))
                    name = self.names[int(torch.randint(0, len(self.names), (1,), generator=g))]
                    noisy = (xi + 0.1 * sev * torch.randn(xi.shape, generator=g)).clamp(0, 1)
                    row.append((noisy - self.mean) / self.std)
                    rn.append(name)
                    rs.append(sev)
                views.append(torch.stack(row))
                names.append(rn)
                sevs.append(rs)
            batch.update(
                views=torch.stack(views), view_corruptions=names, view_severities=torch.tensor(sevs)
            )
        return batch


def make_args(tmp_path, **kw) -> AdversarialTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        max_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
    )
    defaults.update(kw)
    return AdversarialTrainingArguments(**defaults)


def make_trainer(tmp_path, tiny_vit_kwargs, collator=None, dataset=None, bad_images=None, **kw):
    args = make_args(tmp_path, **kw)
    model, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    collator = collator or FakeCollator(k=args.views_needed)
    return AdversarialTrainer(
        model=model,
        args=args,
        train_dataset=dataset if dataset is not None else SyntheticImages(),
        data_collator=collator,
        processing_class=processor,
        bad_images=bad_images,
    )


class ForwardCounter:
    """Counts the model's forward calls in eval mode (the attack's): (images, dtype of the
    classifier's output, i.e. inside autocast) per call."""

    def __init__(self, model):
        self.calls: list[tuple[int, torch.dtype]] = []
        model.classifier.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if not module.training:
            self.calls.append((output.shape[0], output.dtype))


class Spy:
    """Records what the model is trained on (the inputs of compute_loss in train mode)."""

    def __init__(self, trainer):
        self.calls = []
        original = trainer.compute_loss

        def compute_loss(model, inputs, *a, **k):
            if model.training:
                self.calls.append({key: v for key, v in inputs.items() if torch.is_tensor(v)})
            return original(model, inputs, *a, **k)

        trainer.compute_loss = compute_loss


def test_clean_training_saves_a_plain_loadable_model(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, max_steps=3)
    trainer.train()
    status = trainer.save_robust_model()
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file()
    assert (out / "preprocessor_config.json").is_file()
    loaded = ViTForImageClassification.from_pretrained(out)
    assert loaded.config.robustness["adversary"] == "none"
    assert loaded.config.robustness["train_corruptions"] == []
    state = load_file(out / "model.safetensors")
    torch.testing.assert_close(state["classifier.weight"], trainer.model.classifier.weight.detach())
    assert status["adversary_stats"] == str(out / "adversary_stats.json")
    stats = json.loads((out / "adversary_stats.json").read_text())
    assert stats["images_used"] == 3 * 8 and stats["images_skipped"] == 0
    # Training never publishes: no model card (the recipe writes it through hf_vitrobust.hub).
    assert not (out / "README.md").exists()


def test_worst_of_k_trains_on_the_highest_loss_view(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(
        tmp_path,
        tiny_vit_kwargs,
        adversary="worst_of_k",
        num_views=3,
        corruptions=["noise"],
        max_steps=1,
        learning_rate=0.0,
        dataset=SyntheticImages(8),
    )
    spy = Spy(trainer)
    batch = trainer.data_collator([SyntheticImages(8)[i] for i in range(8)])
    trainer.train()
    (seen,) = spy.calls
    model = trainer.model
    with eval_mode(model):
        index, _ = worst_of_k(model, batch["views"], batch["labels"])
    expected = gather_views(batch["views"], index)
    # The sampler shuffles the 8 examples: each trained image is its example's worst view.
    for img in seen["pixel_values"]:
        assert ((expected - img).abs().amax((1, 2, 3)) < 1e-5).any()
    stats = trainer.adversary_stats()
    assert sum(stats["winning_corruptions"].values()) == 8
    assert set(stats["winning_corruptions"]) <= {"noise_a", "noise_b"}
    assert sum(stats["winning_severities"].values()) == 8
    assert trainer.model.training  # back in train mode after the attack
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert any(k.startswith("win_frac/") for k in history[0])


def test_worst_of_k_scores_every_view_in_one_batched_forward(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, adversary="worst_of_k", num_views=4,
                           corruptions=["noise"], max_steps=2)  # fmt: skip
    counter = ForwardCounter(trainer.model)
    trainer.train()
    # One no-grad forward of the B·k views per step (8 images x 4 views), nothing else.
    assert [n for n, _ in counter.calls] == [32, 32]


def test_random_view_trains_on_one_unscored_view(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, adversary="random_view",
                           corruptions=["noise"], num_views=4, clean_loss_weight=0.25,
                           max_steps=1, learning_rate=0.0, dataset=SyntheticImages(8))  # fmt: skip
    assert trainer.args.views_needed == 1 and trainer.data_collator.k == 1
    counter, spy = ForwardCounter(trainer.model), Spy(trainer)
    batch = trainer.data_collator([SyntheticImages(8)[i] for i in range(8)])
    trainer.train()
    assert counter.calls == []  # no scoring forward pass
    (seen,) = spy.calls
    # Trained on each image's (only) corrupted view, with the clean images for the clean loss.
    for img in seen["pixel_values"]:
        assert ((batch["views"][:, 0] - img).abs().amax((1, 2, 3)) < 1e-6).any()
    assert seen["_clean_pixel_values"].shape == seen["pixel_values"].shape
    robustness = trainer.model.config.robustness
    assert robustness["adversary"] == "random_view" and robustness["num_views"] == 1
    assert role_of(robustness) == RANDOM_VIEW_CONTROL
    assert trainer.adversary_stats()["winning_corruptions"] == {}  # nothing was selected


def test_robustness_records_seed_steps_and_provenance(tmp_path, tiny_vit_kwargs):
    provenance = {"base_model": "local:base", "dataset": {"name": "synthetic", "split": "train"}}
    args = make_args(tmp_path, max_steps=-1, num_train_epochs=2, seed=3)
    model, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=SyntheticImages(20),
                                 data_collator=FakeCollator(), processing_class=processor,
                                 provenance=provenance)  # fmt: skip
    # Epoch-based: 20 images / batch 8 = 3 steps per epoch, 2 epochs.
    assert trainer.planned_max_steps() == 6
    trainer.train()
    robustness = trainer.model.config.robustness
    assert robustness["max_steps"] == trainer.state.max_steps == trainer.state.global_step == 6
    assert robustness["seed"] == 3 and robustness["num_views"] == 0
    assert robustness["base_model"] == "local:base" and robustness["dataset"]["name"] == "synthetic"
    assert robustness["optimization"]["learning_rate"] == args.learning_rate
    assert role_of(robustness) == CLEAN_CONTROL


def test_bf16_autocast_runs_the_attack_and_the_step_in_bf16(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, adversary="worst_of_k+pgd", num_views=2,
                           corruptions=["noise"], pgd_steps=1, bf16=True, max_steps=2)  # fmt: skip
    counter = ForwardCounter(trainer.model)
    trainer.train()
    assert {dtype for _, dtype in counter.calls} == {torch.bfloat16}  # the attack's forwards
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


@pytest.mark.slow
def test_torch_compile_attacks_through_a_compiled_view(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, adversary="worst_of_k", num_views=2,
                           corruptions=["noise"], torch_compile=True,
                           torch_compile_backend="eager", max_steps=1)  # fmt: skip
    trainer.train()
    compiled = trainer._compiled_attack
    assert compiled is not None and compiled._orig_mod is trainer.model
    assert sum(trainer.adversary_stats()["winning_corruptions"].values()) == 8


def test_real_collator_counts_bad_images_once_and_stops_early(tmp_path, photo_folder):
    """The photo folder (57 files, 2 undecodable) through the real collator and tracker: each
    bad file counts once over 2 epochs; a limit below 2/57 stops training once min_examples
    images were seen, naming the files."""
    from hf_vitrobust.data import (
        BadImageTracker,
        CorruptionCollator,
        TooManyBadImagesError,
        load_image_dataset,
    )

    root, files = photo_folder
    dataset = load_image_dataset(str(root))
    n = len(dataset)
    assert n == len(files["good"]) + len(files["odd"]) + len(files["bad"])

    def run(limit: float, min_examples: int, name: str):
        model, processor = tiny_vit(seed=0, num_labels=6, image_size=32, patch_size=8,
                                    hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64)  # fmt: skip
        tracker = BadImageTracker(max_bad_fraction=limit, min_examples=min_examples)
        trainer = AdversarialTrainer(
            model=model,
            args=make_args(
                tmp_path / name, max_steps=2 * math.ceil(n / 16), per_device_train_batch_size=16
            ),  # fmt: skip
            train_dataset=dataset,
            data_collator=CorruptionCollator(processor, num_labels=6),
            processing_class=processor,
            bad_images=tracker,
        )
        return trainer, tracker

    trainer, tracker = run(0.05, 1000, "healthy")
    trainer.train()
    assert trainer.state.global_step == 2 * math.ceil(n / 16)  # two epochs
    assert (tracker.seen, tracker.bad) == (n, 2)
    assert sorted(Path(d["path"]).name for d in tracker.summary()["first_bad"]) == [
        "bad_text.jpg",
        "bad_truncated.jpg",
    ]
    assert tracker.summary()["passed"]
    trainer, tracker = run(0.01, 20, "unhealthy")
    with pytest.raises(TooManyBadImagesError, match=r"bad_t(ext|runcated)\.jpg"):
        trainer.train()
    assert trainer.state.global_step < 2 * math.ceil(n / 16)  # stopped during training


def test_pgd_step_stays_within_budget(tmp_path, tiny_vit_kwargs):
    eps = 4 / 255
    trainer = make_trainer(
        tmp_path, tiny_vit_kwargs, adversary="pgd", pgd_epsilon=eps, pgd_steps=2, max_steps=1
    )
    spy = Spy(trainer)
    trainer.train()
    adv = spy.calls[0]["pixel_values"]
    # Find each image's clean version among the dataset (sampler order is random).
    clean = (SyntheticImages().images - 0.286) / 0.353
    for img in adv:
        dist = ((clean - img).abs() * 0.353).amax((1, 2, 3))
        assert dist.min() <= eps + 1e-5 and dist.min() > 0


def _one_step_weights(tmp_path, tiny_vit_kwargs, batch, accum, name, **kw):
    trainer = make_trainer(
        tmp_path / name,
        tiny_vit_kwargs,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        dataset=SyntheticImages(16),
        **kw,
    )
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("adversary", ["worst_of_k+pgd", "fgsm"])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, tiny_vit_kwargs, adversary):
    kw = dict(
        adversary=adversary,
        num_views=2,
        corruptions=["noise"],
        pgd_random_start=False,
        pgd_steps=2,
        clean_loss_weight=0.3,
    )
    big = _one_step_weights(tmp_path, tiny_vit_kwargs, 16, 1, "big", **kw)
    small = _one_step_weights(tmp_path, tiny_vit_kwargs, 4, 4, "small", **kw)
    start = tiny_vit(seed=0, **tiny_vit_kwargs)[0].state_dict()
    assert not torch.allclose(big["classifier.weight"], start["classifier.weight"])
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=1e-4, atol=1e-6)


def test_mixed_clean_loss_is_the_weighted_sum(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(tmp_path, tiny_vit_kwargs, adversary="fgsm", clean_loss_weight=0.25)
    model = trainer.model.train()
    g = torch.Generator().manual_seed(0)
    adv, clean = torch.randn(4, 3, 28, 28, generator=g), torch.randn(4, 3, 28, 28, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    inputs = {"pixel_values": adv, "labels": labels, "_clean_pixel_values": clean}
    loss = trainer.compute_loss(model, dict(inputs))
    expected = (
        0.75 * per_example_loss(model, adv, labels).mean()
        + 0.25 * per_example_loss(model, clean, labels).mean()
    )
    torch.testing.assert_close(loss, expected)


class _Poison(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step == self.at_step - 1:
            with torch.no_grad():
                model.classifier.bias.fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(
        tmp_path, tiny_vit_kwargs, max_steps=4, save_strategy="steps", save_steps=2
    )
    trainer.add_callback(_Poison(at_step=3))
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    state = load_file(ckpt / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "out" / "checkpoint-4").exists()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_views=0), "num_views"),
        (dict(adversary="pgd", pgd_epsilon=-0.1), "pgd_epsilon"),
        (dict(corruptions=["no_such_family"]), "corruptions: 'no_such_family' is neither"),
        (dict(corruptions=["noise_a,nope"]), "'nope' is neither a corruption family"),
        (dict(corruptions=["noise_a", "nope"]), "'nope' is neither a corruption family"),
        (dict(adversary="worst_of_k"), "needs corruptions"),
        (dict(adversary="cw"), "Unknown adversary"),
        (dict(pgd_band="mid"), "pgd_band"),
        (dict(clean_loss_weight=1.5), "clean_loss_weight"),
        (dict(adversary="random_view", corruptions=["noise"], severities=[0]), "severity"),
        (
            dict(adversary="random_view", corruptions=["noise"], unseen_corruptions=["weather"]),
            "unseen_corruptions",
        ),
        (dict(adversary="random_view"), "needs corruptions"),
        (dict(corruptions=["noise"]), "write adversary: random_view"),
        (dict(adversary="pgd", pgd_band="low", pgd_band_iterations=0), "pgd_band_iterations"),
        (
            dict(
                adversary="random_view",
                corruptions=["noise"],
                dataloader_num_workers=2,
                dataloader_persistent_workers=True,
            ),
            "persistent_workers",
        ),
    ],
)
def test_wrong_settings_fail_before_training(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        make_args(tmp_path, **kw)


def test_collator_without_enough_views_fails_before_training(tmp_path, tiny_vit_kwargs):
    with pytest.raises(ValueError, match="k=4"):
        make_trainer(
            tmp_path,
            tiny_vit_kwargs,
            collator=FakeCollator(k=1),
            adversary="worst_of_k",
            corruptions=["noise"],
            num_views=4,
        )


def test_stream_needs_max_steps(tmp_path, tiny_vit_kwargs):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(SyntheticImages(8))

    stream = Stream()
    with pytest.raises(ValueError, match="max_steps"):
        make_trainer(tmp_path, tiny_vit_kwargs, dataset=stream, max_steps=-1, num_train_epochs=1)


def test_bad_image_limit_stops_the_run(tmp_path, tiny_vit_kwargs):
    trainer = make_trainer(
        tmp_path, tiny_vit_kwargs, collator=FakeCollator(skipped=1), max_steps=20
    )
    trainer.max_bad_fraction = 0.05
    with pytest.raises(ValueError, match="could not be decoded"):
        trainer.train()
    assert trainer.images_skipped >= 8


def test_evaluation_reports_clean_seen_and_unseen(tmp_path, tiny_vit_kwargs):
    args = make_args(tmp_path, adversary="worst_of_k", num_views=2, corruptions=["low_frequency"])
    assert args.unseen_spec() == ["noise"]
    model, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    evals = {
        "clean": FakeCollator(k=0),
        "seen": FakeCollator(k=1, seed=7, names=("blur_a",)),
        "unseen": FakeCollator(k=1, seed=8, names=("noise_a",)),
    }
    data = SyntheticImages(16)
    trainer = AdversarialTrainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=FakeCollator(k=2),
        eval_dataset={name: data for name in evals},
        eval_collators=evals,
        processing_class=processor,
    )
    metrics = trainer.evaluate()
    for name in evals:
        assert 0.0 <= metrics[f"eval_{name}_accuracy"] <= 1.0
    # Corrupted evaluations really use the views.
    assert metrics["eval_seen_loss"] != metrics["eval_clean_loss"]
    robustness = trainer.model.config.robustness
    assert robustness["train_corruptions"] == ["blur_a", "blur_b"]
    assert robustness["registry_version"] == "fake-1"
    assert robustness["unseen_corruptions"] == ["noise"]
    assert robustness["corruptions"] == ["low_frequency"]


class _Crash(TrainerCallback):
    """Simulates a kill: stops the process's training abruptly at the start of a step."""

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_vit_kwargs):
    kw = dict(
        adversary="worst_of_k+pgd",
        num_views=2,
        corruptions=["noise"],
        pgd_steps=1,
        max_steps=8,
        save_strategy="steps",
        save_steps=3,
        dataset=SyntheticImages(32),
    )
    full = make_trainer(tmp_path / "full", tiny_vit_kwargs, **kw)
    full.train()
    crashed = make_trainer(tmp_path / "resumed", tiny_vit_kwargs, **kw)
    crashed.add_callback(_Crash(at_step=5))
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = make_trainer(tmp_path / "resumed", tiny_vit_kwargs, **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "out" / "checkpoint-3"))
    assert resumed.state.global_step == 8 and math.isclose(resumed.state.epoch, 2.0)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    # The statistics files agree too: the steps redone after checkpoint-3 count once.
    stats = []
    for trainer in (full, resumed):
        trainer.save_robust_model()
        stats.append(
            json.loads((Path(trainer.args.output_dir) / "adversary_stats.json").read_text())
        )
    expected, got = stats
    for key in ("winning_corruptions", "winning_severities", "images_used", "global_step"):
        assert got[key] == expected[key], key
    assert expected["images_used"] == 8 * 8 and sum(expected["winning_corruptions"].values()) == 64
    assert got["loss_sum"] == pytest.approx(expected["loss_sum"], rel=1e-5)
    assert [(s["from_step"], s["to_step"]) for s in got["segments"]] == [(0, 3), (3, 8)]


@pytest.mark.slow
def test_stream_resume_sees_no_example_twice(tmp_path, tiny_vit_kwargs):
    from datasets import IterableDataset

    images = SyntheticImages(48)

    def gen():
        for i in range(len(images)):
            item = images[i]
            yield {"image": item["image"].numpy(), "label": item["label"], "example_id": i}

    def stream():
        return (
            IterableDataset.from_generator(gen).shuffle(seed=3, buffer_size=16).with_format("torch")
        )

    kw = dict(max_steps=6, save_strategy="steps", save_steps=2)
    seen: dict[int, list[int]] = {}

    def recording(trainer):
        original = trainer.training_step

        def step(model, inputs, *a, **k):
            seen.setdefault(trainer.state.global_step + 1, []).extend(
                inputs["example_ids"].tolist()
            )
            return original(model, inputs, *a, **k)

        trainer.training_step = step
        return trainer

    first = recording(make_trainer(tmp_path, tiny_vit_kwargs, dataset=stream(), **kw))
    first.add_callback(_Crash(at_step=3))
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert sorted(seen) == [1, 2, 3]  # step 3 ran but was never checkpointed: it is lost
    del seen[3]
    second = recording(make_trainer(tmp_path, tiny_vit_kwargs, dataset=stream(), **kw))
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    ids = [i for step in sorted(seen) for i in seen[step]]
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]
    assert len(ids) == len(set(ids)) == 48
    assert np.array_equal(np.sort(ids), np.arange(48))


def test_corruption_lists_are_normalised_and_recorded(tmp_path):
    args = make_args(tmp_path, adversary="worst_of_k", corruptions=["noise_a, blur", "none", ""])
    assert args.corruptions == ["noise_a", "blur"]
    assert args.train_corruptions == ("noise_a", "blur_a", "blur_b")
    assert args.unseen_spec() == []  # no group is disjoint from noise_a + blur
    skip = make_args(
        tmp_path, adversary="random_view", corruptions=["noise"], unseen_corruptions=["none"]
    )
    assert skip.unseen_corruptions == [] and skip.unseen_spec() == []
    robustness = make_args(
        tmp_path, adversary="random_view", corruptions="blur", unseen_corruptions="noise_b"
    ).robustness_config()
    assert robustness["corruptions"] == ["blur"]
    assert robustness["train_corruptions"] == ["blur_a", "blur_b"]
    assert robustness["unseen_corruptions"] == ["noise_b"]
    clean = make_args(tmp_path).robustness_config()
    assert clean["corruptions"] == clean["train_corruptions"] == clean["unseen_corruptions"] == []


def test_read_robustness_renames_the_keys_of_older_checkpoints(tiny_vit_kwargs):
    model, _ = tiny_vit(seed=0, **tiny_vit_kwargs)
    assert read_robustness(model.config) == {}  # a base model records nothing
    model.config.robustness = {
        "adversary": "worst_of_k",
        "train_family": "low_frequency",
        "train_corruptions": ["blur_a"],
        "eval_unseen_group": "noise",
    }
    assert read_robustness(model.config) == {
        "adversary": "worst_of_k",
        "corruptions": ["low_frequency"],
        "train_corruptions": ["blur_a"],
        "unseen_corruptions": ["noise"],
    }
    old_clean = {"adversary": "none", "train_family": None, "eval_unseen_group": None}
    assert read_robustness(old_clean) == {
        "adversary": "none",
        "corruptions": [],
        "unseen_corruptions": [],
    }
    new = {"corruptions": ["blur"], "unseen_corruptions": ["noise"]}
    assert read_robustness(new) == new


def test_training_never_imports_publishing(tmp_path):
    """Training is below hub/report/evaluation: not in its imports, not loaded at run time."""
    import ast
    import os
    import subprocess
    import sys
    from pathlib import Path

    import hf_vitrobust.training as training

    above = (
        "hf_vitrobust.hub",
        "hf_vitrobust.report",
        "hf_vitrobust.evaluation",
        "hf_vitrobust.demo",
    )
    for path in Path(training.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not [n for n in names if n.startswith(above)], (path.name, names)
    code = (
        "import sys, hf_vitrobust.training; "
        "print(sorted(m for m in sys.modules if m.startswith('hf_vitrobust.')))"
    )
    root = Path(training.__file__).parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root
    ).stdout
    assert "hf_vitrobust.training.trainer" in loaded
    assert not [m for m in above if f"'{m}" in loaded], loaded


def test_pin_memory_only_on_cuda_unless_set(tmp_path, monkeypatch):
    # Without CUDA the default is off (pinning would only warn); an explicit value wins.
    # (transformers itself turns pinning off under use_cpu=True.)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_args(tmp_path, use_cpu=False).dataloader_pin_memory is False
    explicit = make_args(tmp_path, use_cpu=False, dataloader_pin_memory=True)
    assert explicit.dataloader_pin_memory is True
