"""SAEs with sae-lens on tiny ViTs: streaming, training, calibration, save/load, comparisons."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from accelerate_cpu import accelerate_launch, assert_same_json
from safetensors.torch import load_file

from hf_vitrobust.analysis import sae as S
from hf_vitrobust.analysis.conditions import ConditionCollator, condition_groups
from hf_vitrobust.analysis.sae import activations as A
from hf_vitrobust.analysis.sae.comparison import DIFFERENT_IMAGE, HeldOutPass, calibrate_saes
from hf_vitrobust.analysis.sae.heldout import compared_batches
from hf_vitrobust.analysis.sae.schema import header, read_sae_results
from hf_vitrobust.analysis.sae.stream import TrainingImages, activation_rounds
from hf_vitrobust.analysis.sae.train import activation_source
from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe
from hf_vitrobust.data import ProcessorSpec, load_dataset_split
from hf_vitrobust.distributed import EXAMPLE_IDS
from hf_vitrobust.io import SchemaMismatch, write_json_atomic
from hf_vitrobust.models import weights_fingerprint
from hf_vitrobust.roles import Pair


@pytest.fixture()
def image_batches():
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(16, 3, 28, 28, generator=g)} for _ in range(4)]


def _stream(model, batches, layer=1, batch_size=128, tokens="all"):
    d = model.config.hidden_size
    chunks = A.activation_chunks(model, batches, layer, tokens)
    return A.ActivationStream(chunks, d, batch_size, buffer_mb=0.5)


def _train(model, batches, sae_type, steps=40, **kw):
    d = model.config.hidden_size
    cfg = S.SAETrainConfig(
        sae_type=sae_type,
        expansion_factor=4,
        total_training_samples=steps * 128,
        batch_size=128,
        k=6,
        n_init_batches=2,
        **kw,
    )
    meta = S.sae_metadata("tiny-test", 1, "all", {"dataset": "random", "training_tokens": 1})
    return S.train_sae(_stream(model, batches), d, cfg, meta)


def _acts(model, batches, layer=1):
    return torch.cat([A.residual_stream(model, b["pixel_values"], [layer])[layer] for b in batches])


@pytest.fixture(scope="module")
def trained_batchtopk(tiny_vit_kwargs):
    """A briefly trained BatchTopK SAE (k = 6) on a tiny ViT, and that model."""
    from hf_vitrobust.models import tiny_vit

    model, _ = tiny_vit(seed=0, **tiny_vit_kwargs)
    g = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(16, 3, 28, 28, generator=g)} for _ in range(4)]
    sae, trainer = _train(model.eval(), batches, "batchtopk", steps=60)
    return model, sae, trainer


def test_tokens_layers_and_residual_stream(tiny_model, image_batches):
    model, _ = tiny_model
    x = image_batches[0]["pixel_values"][:3]
    hidden = A.residual_stream(model, x, [0, 1])
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True).hidden_states
    # Output of vit.layers[i] is hidden_states[i + 1] (index 0 is the embeddings).
    torch.testing.assert_close(hidden[0], ref[1])
    torch.testing.assert_close(hidden[1], ref[2])
    assert A.select_tokens(hidden[1], "cls").shape == (3, 1, 32)
    assert A.select_tokens(hidden[1], "patches").shape == (3, 16, 32)
    assert A.tokens_per_image(model, "all") == 17 and A.tokens_per_image(model, "patches") == 16
    assert A.check_tokens("both") == "all" and A.check_tokens("patch") == "patches"
    assert A.resolve_layers(model, None) == [0, 1]
    assert A.resolve_layers(model, [-1]) == [1]
    with pytest.raises(ValueError, match="out of range"):
        A.resolve_layers(model, [5])
    with pytest.raises(ValueError, match="tokens="):
        A.select_tokens(hidden[1], "CLS")
    sub = A.subsample_tokens(hidden[1], 4, "all", torch.Generator().manual_seed(0))
    assert sub.shape == (3, 4, 32)
    torch.testing.assert_close(sub[:, 0], hidden[1][:, 0])  # CLS always kept
    # One forward pass for several layers gives each layer's own activations, same subsample.
    both = A.batch_activations(model, {"pixel_values": x}, [0, 1], "all", 4, token_seed=3)
    one = A.batch_activations(model, {"pixel_values": x}, [1], "all", 4, token_seed=3)
    torch.testing.assert_close(both[1], one[1])
    assert both[0].shape == (12, 32)


def test_stream_is_bounded_and_cache_round_trips(tiny_model, image_batches, tmp_path):
    model, _ = tiny_model
    stream = _stream(model, image_batches, batch_size=64)
    batches = [next(stream) for _ in range(24)]  # more than an epoch of 4 x 16 x 17 tokens
    assert all(b.shape == (64, 32) for b in batches)
    chunk_rows = 16 * 17
    assert 0 < stream.peak_buffer_bytes <= (stream.buffer_size + chunk_rows) * 32 * 4
    # Shuffled: consecutive batches are not consecutive tokens of one image.
    first = A.select_tokens(
        _acts(model, [{"pixel_values": image_batches[0]["pixel_values"][:1]}]), "all"
    )
    assert not torch.equal(batches[0][:17], first[0])
    stream.close()

    chunks = A.activation_chunks(model, image_batches, 1, "cls", epochs=1)
    key = {"model": "tiny", "layer": 1, "tokens": "cls"}
    A.cache_activations(chunks, tmp_path / "c", max_activations=50, shard_size=20, metadata=key)
    manifest = A.read_cache_manifest(tmp_path / "c")
    assert manifest["n_activations"] == 50 and len(manifest["shards"]) == 2  # 32 + 18 rows
    cached = torch.cat(list(A.cached_activation_chunks(tmp_path / "c", cycle=False, expect=key)))
    live = torch.cat(list(A.activation_chunks(model, image_batches, 1, "cls", epochs=1)))[:50]
    torch.testing.assert_close(cached, live)
    with pytest.raises(ValueError, match="expected"):
        next(A.cached_activation_chunks(tmp_path / "c", expect={"layer": 0}))
    with pytest.raises(FileNotFoundError, match="no complete activation cache"):
        next(A.cached_activation_chunks(tmp_path / "missing"))


def test_training_images_are_dealt_round_robin_and_reshuffled(tiny_model, fashion_mnist_dir):
    """Two processes' batches, interleaved by round, are exactly one process's; epochs differ."""
    _, processor = tiny_model
    data = DataArguments(dataset_name="fashion_mnist", max_train_examples=50)
    ds = load_dataset_split(data, "train")
    kw = dict(batch_size=8, corruptions=["noise"], views=1, severities=[3], seed=4)

    def state(rank, world):
        return SimpleNamespace(process_index=rank, num_processes=world, is_main_process=rank == 0)

    def ids(images, epoch):
        return {j: b["example_ids"].tolist() for j, b in images.batches(epoch)}

    one = ids(TrainingImages(ds, processor, state=state(0, 1), **kw), 0)
    two = [ids(TrainingImages(ds, processor, state=state(r, 2), **kw), 0) for r in (0, 1)]
    assert sorted(two[0]) == list(range(0, 7, 2)) and sorted(two[1]) == [1, 3, 5]
    assert {**two[0], **two[1]} == one
    assert sorted(sum(one.values(), [])) == sorted(ds["example_id"])
    again = ids(TrainingImages(ds, processor, state=state(0, 1), **kw), 1)
    assert again != one and sorted(sum(again.values(), [])) == sorted(ds["example_id"])
    # Alone, the rounds are the plain stream of chunks, in batch order.
    model, _ = tiny_model
    images = TrainingImages(ds, processor, state=state(0, 1), **kw)
    rounds = activation_rounds(model, images, [1], "all", max_tokens_per_image=5, seed=2)
    chunks = [next(rounds)[1] for _ in range(8)]  # 7 batches, then epoch 1
    rounds.close()
    assert [len(c) for c in chunks[:7]] == [80] * 6 + [20]  # 8 images x 2 inputs x 5 tokens


def test_activation_cache_is_filled_once_for_every_layer_and_remade_for_new_weights(
    tiny_model, fashion_mnist_dir, tmp_path
):
    """One pass fills both layers' caches; a second SAE reuses them; a model retrained in place
    (same path, other weights) gets its cache remade instead of the old activations."""
    model, processor = tiny_model
    alone = SimpleNamespace(process_index=0, num_processes=1, is_main_process=True)
    data = DataArguments(dataset_name="fashion_mnist", max_train_examples=40)
    images = TrainingImages(
        load_dataset_split(data, "train"), processor, batch_size=8, corruptions=[], views=0,
        severities=[3], seed=0, state=alone,
    )  # fmt: skip
    args = S.SAEStudyArguments(
        base_model="b", training_tokens=256, sae_batch_size=64, n_init_batches=1,
        cache_dir=str(tmp_path), tokens="cls",
    )  # fmt: skip

    def keys(m):
        return {at: {"model": "m", "layer": at, "weights": weights_fingerprint(m)} for at in (0, 1)}

    def source(m, layer):
        return activation_source(m, images, layer, args, 0, keys(m), "base")

    first = next(source(model, 1))
    manifests = [A.read_cache_manifest(tmp_path / f"base-layer{at}-cls") for at in (0, 1)]
    assert all(m["n_activations"] == 256 + 2 * 64 for m in manifests)
    stamp = (tmp_path / "base-layer0-cls" / "activations.json").stat().st_mtime_ns
    next(source(model, 0))
    assert (tmp_path / "base-layer0-cls" / "activations.json").stat().st_mtime_ns == stamp
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        retrained.vit.layers[0].mlp.fc2.bias.add_(1.0)
    remade = next(source(retrained, 1))
    assert (
        A.read_cache_manifest(tmp_path / "base-layer1-cls")["weights"]
        == keys(retrained)[1]["weights"]
    )
    assert not torch.equal(remade, first)


def test_standard_sae_trains_saves_and_loads(tiny_model, image_batches, tmp_path):
    model, _ = tiny_model
    sae, trainer = _train(model, image_batches, "standard")
    assert trainer.n_training_steps == 40
    assert sae.cfg.normalize_activations == "none"  # the norm factor was folded in
    x = _acts(model, image_batches[:1]).reshape(-1, 32)
    folder = S.save_sae(
        sae,
        tmp_path / "saes" / "standard-layer1-all",
        trainer,
        extra_metadata={
            "heldout_metrics": {"l0": 1.0, "explained_variance": 0.5, "dead_fraction": 0.25}
        },
    )
    assert {p.name for p in folder.iterdir()} >= {
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "metadata.json",
    }
    loaded = S.load_sae(folder)
    assert type(loaded).__name__ == "StandardSAE"
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), sae.encode(x))
        torch.testing.assert_close(loaded(x), sae(x))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["metadata"]["layer"] == 1 and cfg["metadata"]["tokens"] == "all"
    assert cfg["metadata"]["hook_name"] == "vit.layers.1"
    listed = S.list_saes(tmp_path / "saes")
    assert [e["sae_id"] for e in listed] == ["standard-layer1-all"]
    assert listed[0]["dead_features_count"] == 32 and listed[0]["explained_variance"] == 0.5
    with pytest.raises(FileNotFoundError, match="not an SAE folder"):
        S.load_sae(tmp_path)


def test_batchtopk_inference_is_jumprelu_and_batch_independent(trained_batchtopk, tmp_path):
    model, sae, trainer = trained_batchtopk
    folder = S.save_sae(sae, tmp_path / "batchtopk-layer1-all", trainer)
    loaded = S.load_sae(folder)
    assert type(loaded).__name__ == "JumpReLUSAE"
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "jumprelu"
    again = S.load_sae(S.save_sae(S.to_inference_sae(sae), tmp_path / "again"))
    g = torch.Generator().manual_seed(1)
    x = _acts(model, [{"pixel_values": torch.randn(16, 3, 28, 28, generator=g)}]).reshape(-1, 32)
    with torch.no_grad():
        code = loaded.encode(x)
        torch.testing.assert_close(code, again.encode(x))
        # The JumpReLU path: hidden_pre of the training SAE, kept where above the learned
        # global top-k threshold (rescale_acts_by_decoder_norm folded into the weights).
        hidden = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        hidden = hidden * sae.W_dec.norm(dim=-1)
        expected = hidden * (hidden > float(sae.topk_threshold))
        torch.testing.assert_close(code, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            S.calibrate.pre_activations(loaded, x), hidden, atol=1e-5, rtol=1e-4
        )
        # One image's code does not depend on its batch; the training top-k's does.
        torch.testing.assert_close(loaded.encode(x[:5]), code[:5])
        assert not torch.equal(sae.encode(x[:5]), sae.encode(x)[:5])


def test_calibrated_threshold_gives_l0_k_on_new_activations(trained_batchtopk, tmp_path):
    """sae-lens' running threshold after 60 steps fires well over k features; the calibrated one
    gives exactly k on the calibration tokens and within ±10% on other held-out tokens, and it
    survives saving (the training SAE writes it as the JumpReLU threshold)."""
    model, sae, trainer = trained_batchtopk
    g = torch.Generator().manual_seed(7)
    calib, held = (
        _acts(model, [{"pixel_values": torch.randn(64, 3, 28, 28, generator=g)}]).reshape(-1, 32)
        for _ in range(2)
    )
    inference = S.to_inference_sae(sae)
    running_l0 = float((inference.encode(held) != 0).sum(-1).double().mean())
    result = S.calibrate_threshold(sae, inference, [calib[:500], calib[500:]], len(calib), k=6)
    assert result["l0_calibrated"] == pytest.approx(6.0, abs=1 / len(calib))
    assert result["l0_running_threshold"] == pytest.approx(running_l0, rel=0.1)
    assert running_l0 > 6 * 1.1  # the uncalibrated threshold is off by more than the tolerance
    with torch.no_grad():
        codes = inference.encode(calib)
        assert (codes != 0).sum().item() == pytest.approx(6 * len(calib), abs=1)
        # Exactly the batch top-k threshold of one batch holding every calibration token.
        flat = S.calibrate.pre_activations(inference, calib).relu().flatten()
        kth = flat.topk(6 * len(calib)).values[-1]
        assert (
            float(kth)
            > result["calibrated_threshold"]
            > float(flat.topk(6 * len(calib) + 1).values[-1])
        )
        held_l0 = float((inference.encode(held) != 0).sum(-1).double().mean())
    assert S.l0_check(held_l0, 6)["l0_within_tolerance"], held_l0
    loaded = S.load_sae(S.save_sae(sae, tmp_path / "calibrated", trainer))
    torch.testing.assert_close(loaded.encode(held), inference.encode(held))
    assert not S.l0_check(running_l0, 6)["l0_within_tolerance"]
    assert S.l0_check(3.0, None) == {"k": None, "l0_over_k": None, "l0_within_tolerance": None}


def test_largest_values_is_exact():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(40, 50, generator=g)
    top = S.calibrate.LargestValues(137)
    for part in values.split(7):
        top.update(part)
    expected = values.flatten().topk(137).values.sort().values
    torch.testing.assert_close(top.values.sort().values, expected)
    with pytest.raises(ValueError, match="calibration_images|reference"):
        S.calibrate.LargestValues(10**10)


def test_code_cosine_exclusions_tokens_and_centring():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 0.0], [3.0, 0.0], [-1.0, -1.0]])
    cos = S.code_cosines(a, b)
    assert torch.isnan(cos[1]) and cos[[0, 2, 3]].tolist() == pytest.approx([1.0, 0.0, -1.0])
    np.testing.assert_allclose(S.row_cosine(a, b).numpy(), [1.0, 1.0, 0.0, -1.0], atol=1e-12)
    ja = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]])
    jb = torch.tensor([[1.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]])
    np.testing.assert_allclose(S.topk_jaccard(ja, jb, 2).numpy(), [1 / 3, 1.0, 1.0])
    assert S.token_slices("all") == {"cls": slice(0, 1), "patches": slice(1, None)}
    assert list(S.token_slices("patches")) == ["patches"]

    # Two images, 1 CLS + 3 patches: image 0's codes are all zero in both models (excluded);
    # image 1's CLS differs while its patches agree.
    codes_a = torch.zeros(2, 4, 3)
    codes_b = torch.zeros(2, 4, 3)
    codes_a[1, 0] = torch.tensor([1.0, 0.0, 0.0])
    codes_b[1, 0] = torch.tensor([0.0, 1.0, 0.0])
    codes_a[1, 1:] = codes_b[1, 1:] = torch.tensor([0.0, 0.0, 2.0])
    # Activations: a shared offset of 10 plus small noise: uncentred cosines are ~1.
    g = torch.Generator().manual_seed(0)
    acts_a = 10 + torch.randn(2, 4, 5, generator=g)
    acts_b = 10 + torch.randn(2, 4, 5, generator=g)
    centre = torch.full((5,), 10.0)
    out = {
        t: S.pair_values(codes_a[:, w], codes_b[:, w], acts_a[:, w], acts_b[:, w], centre, 2)
        for t, w in S.token_slices("all").items()
    }
    assert np.isnan(out["cls"]["code_cosine"][0]) and out["cls"]["code_cosine"][1] == 0.0
    assert out["patches"]["code_cosine"][1] == pytest.approx(1.0)
    assert out["cls"]["both_zero"].tolist() == [1, 0] and out["patches"]["both_zero"].tolist() == [
        3,
        0,
    ]
    assert np.isnan(out["patches"]["topk_jaccard"][0])
    uncentred = S.pair_values(codes_a, codes_b, acts_a, acts_b, torch.zeros(5), 2)["raw_cosine"]
    assert uncentred.min() > 0.95 and np.abs(out["patches"]["raw_cosine"]).max() < 0.9


def test_summaries_drop_excluded_images_and_cover_the_median():
    summarize = S.Summarizer(n_resamples=2000, seed=1)
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(size=200), [np.nan] * 3]
    s = summarize(values)
    assert s["n"] == 200 and s["n_excluded"] == 3
    assert s["median_ci"][0] <= s["median"] <= s["median_ci"][1]
    assert s["mean_ci"][0] <= s["mean"] <= s["mean_ci"][1]
    from hf_vitrobust.stats import bootstrap_ci

    lo, hi = bootstrap_ci(values[:200], np.median, n_resamples=4000, seed=3)
    assert s["median_ci"] == pytest.approx([lo, hi], abs=0.08)
    assert summarize([np.nan, 0.5]) == {"n": 1, "n_excluded": 1, "median": 0.5}
    d = summarize.difference(np.zeros(50), np.full(50, 0.25))
    assert d["estimate"] == d["ci_low"] == d["ci_high"] == 0.25


def _records(rng, n, effect, rho=0.8):
    """Per-image code cosines of an adversarial model and its control, correlated per image."""
    shared = rng.normal(size=n)
    control = 0.9 + 0.03 * shared + 0.03 * np.sqrt(1 - rho**2) * rng.normal(size=n)
    adversarial = 0.9 + effect + 0.03 * shared + 0.03 * np.sqrt(1 - rho**2) * rng.normal(size=n)
    rec = {EXAMPLE_IDS: np.arange(n)}
    for key, values in (("adv", adversarial), ("ctl", control)):
        rec[(key, "sid", "cls", "code_cosine")] = values
        rec[(key, "sid", "cls", "l0")] = np.full(n, 16.0)
    return rec


def test_code_cosine_records_on_simulated_studies():
    """Adversarial minus control on known truth: a null study's CI covers 0 at the nominal rate
    (n = 30, correlated images), an injected effect is found, and with many images a null
    difference's CI falls inside a small equivalence margin."""
    sae = S.ComparedSAE("sid", "batchtopk", 1, None)
    pairs = [Pair("adv", "base", "base"), Pair("adv", "ctl", "clean_control")]

    def records(rng, n, effect):
        summaries = S.StudySummaries(
            {"clean": _records(rng, n, effect)}, [sae], ["cls"], {"sid": False},
            n_resamples=1000, seed=int(rng.integers(1 << 30)), confidence=0.95,
        )  # fmt: skip
        return {r["metric"]: r for r in summaries.comparisons(pairs)}

    rng = np.random.default_rng(0)
    studies = 150
    false_positives = sum(
        records(rng, 30, 0.0)["code_cosine_to_base"]["excludes_zero"] for _ in range(studies)
    )
    assert false_positives / studies <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / studies)
    found = records(rng, 30, 0.02)["code_cosine_to_base"]
    assert found["excludes_zero"] and found["estimate"] == pytest.approx(0.02, abs=0.01)
    assert found["reference_role"] == "clean_control" and found["model"] == "adv"
    large = records(rng, 2000, 0.0)["code_cosine_to_base"]
    assert -0.005 < large["ci_low"] <= large["ci_high"] < 0.005
    assert records(rng, 30, 0.0)["l0_through_base"]["estimate"] == 0.0


def test_heldout_pass_streams_per_batch_and_equals_any_batching(
    tiny_model, trained_batchtopk, fashion_mnist_dir
):
    """Per-image records do not depend on batch or chunk sizes; the model against itself gives
    code cosine 1 and the same metrics as the base; reference images are disjoint and their
    pixels are the analysis' pixels."""
    model, sae, _ = trained_batchtopk
    _, processor = tiny_model
    spec = ProcessorSpec.from_processor(processor)
    data = DataArguments(dataset_name="fashion_mnist", eval_split="test")
    args = S.SAEStudyArguments(
        base_model="b", corruptions=["gaussian_noise", "sharpen"], num_eval_images=20,
        reference_images=6, batch_size=7,
    )  # fmt: skip
    compared = load_dataset_split(data, "eval", max_examples=20)
    reference = S.ReferenceImages.from_eval_split(data, set(compared["example_id"]), args, spec)
    assert len(reference) == 6 and not set(reference.example_ids) & set(compared["example_id"])
    groups = condition_groups(args.corruptions)
    pool = {int(e["example_id"]): e for e in load_dataset_split(data, "eval", max_examples=26)}
    expected = ConditionCollator(spec, "noise", groups, 3, 0)(
        [pool[int(i)] for i in reference.example_ids]
    )["pixel_values"]
    torch.testing.assert_close(reference.pixels("noise"), expected)
    assert reference.partners([3, 4]).tolist() == reference.partners([3, 4]).tolist()

    sae = copy.deepcopy(sae)
    inference = S.to_inference_sae(sae)
    conditions = S.heldout_conditions(args.corruptions)
    tokens = len(reference) * len(conditions) * 17
    calibrator = S.ThresholdCalibrator(sae, inference, 6, tokens)
    calibrated = calibrate_saes(
        model, reference, list(conditions), {"btk": (1, calibrator)}, "all", 4
    )
    assert calibrated["btk"]["l0_calibrated"] == pytest.approx(6, abs=0.01)
    saes = [S.ComparedSAE("btk", "batchtopk", 1, inference)]
    perturbed = type(model)(model.config).eval()
    perturbed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = []
    for batch_size, chunk in ((7, 3), (20, None)):
        passes = HeldOutPass(
            model, {"self": model, "other": perturbed}, saes, reference, "all", 4, batch_size, chunk
        )
        sized = dataclasses.replace(args, batch_size=batch_size)
        batches = compared_batches(compared, processor, sized, 0.1)
        records = {c: passes.condition(c, batches.images(c, False)) for c in conditions}
        results.append((records, passes.gather_metrics()))
    (small, metrics_small), (large, metrics_large) = results
    for cond, rec in small.items():
        assert rec[EXAMPLE_IDS].tolist() == sorted(compared["example_id"])
        for key, values in rec.items():
            np.testing.assert_allclose(
                values, large[cond][key], rtol=1e-6, atol=1e-9, err_msg=str(key)
            )
        # A model against itself: cosine 1 wherever a code fires (this random tiny model's CLS
        # tokens fire no feature at all: excluded, and counted, not called "identical").
        cls = rec[("self", "btk", "cls", "code_cosine")]
        assert np.all(np.isclose(cls, 1.0) | np.isnan(cls))
        assert rec[("self", "btk", "cls", "both_zero")].sum() == np.isnan(cls).sum()
        assert np.allclose(rec[("self", "btk", "patches", "code_cosine")], 1.0)
        assert np.allclose(rec[("self", "btk", "patches", "raw_cosine")], 1.0)
        assert rec[(DIFFERENT_IMAGE, "btk", "patches", "code_cosine")].mean() < 0.99
    for key in metrics_small:
        for name in ("l0", "explained_variance", "dead_fraction"):
            assert metrics_small[key][name] == pytest.approx(metrics_large[key][name], rel=1e-6)
    assert metrics_small[("self", "btk")] == metrics_small[("base", "btk")]
    assert metrics_small[("base", "btk")]["n_tokens"] == 20 * 17 * 3


def test_study_arguments_names_and_old_keys(tmp_path):
    assert set(S.SAE_TYPE_LABELS) == set(S.SAE_TYPES)
    args = S.SAEStudyArguments(base_model="b", corruptions=["none"], train_corruptions=["none"])
    assert args.corruptions == [] and args.train_corruptions == [] and args.severity == 3
    with pytest.raises(ValueError, match="severities=.*exactly one"):
        S.SAEStudyArguments(base_model="b", severities=[1, 3])
    with pytest.raises(ValueError, match="base_model is required"):
        S.SAEStudyArguments()
    with pytest.raises(ValueError, match="reference_images"):
        S.SAEStudyArguments(base_model="b", reference_images=1)
    with pytest.raises(ValueError, match="neither a corruption family nor a corruption"):
        S.SAEStudyArguments(base_model="b", train_corruptions=["blurr"])
    with pytest.raises(ValueError, match="sae_type"):
        S.SAETrainConfig(sae_type="topk")
    with pytest.warns(FutureWarning, match="image_batch_size"):
        (renamed,) = parse_recipe(
            (S.SAEStudyArguments,), ["--base_model", "b", "--image_batch_size", "8"]
        )
    assert renamed.batch_size == 8

    old = tmp_path / "old.yaml"
    old.write_text(
        "base_model: b\neval_corruption_family: blur\neval_severity: 2\n"
        "train_corruption_family: none\n"
    )
    types = (ModelArguments, DataArguments, S.SAEStudyArguments)
    with pytest.warns(FutureWarning) as record:
        _, _, parsed = parse_recipe(types, [str(old)])
    messages = " ".join(str(w.message) for w in record)
    for key in ("eval_corruption_family", "eval_severity", "train_corruption_family"):
        assert f"{key!r} is deprecated" in messages
    assert parsed.corruptions == ["blur"] and parsed.severities == [2]
    assert parsed.train_corruptions == []

    with pytest.raises(ValueError, match="from 'base_model'"):
        S.run.load_study_models(ModelArguments(model_name_or_path="x"), args)

    policy = S.FlagPolicy(0.7)
    with pytest.warns(UserWarning, match="explained variance 0.500"):
        assert policy.check("x", {"explained_variance": 0.5, "l0": 6.0}, k=6) is not None
    with pytest.warns(UserWarning, match="L0 7.00 is 1.17 x k=6"):
        assert policy.check("y", {"explained_variance": 0.9, "l0": 7.0}, k=6) is not None
    assert policy.check("z", {"explained_variance": 0.9, "l0": 6.5}, k=6) is None
    assert policy.check("v", {"explained_variance": 0.9, "l0": 90.0}) is None  # vanilla: no k


def _sae_json(**changes):
    summary = {"n": 2, "median": 1.0}
    cell = {k: summary for k in ("code_cosine", "raw_cosine", "topk_jaccard", "l0_through_base")}
    cell["code_cosine_different_image"] = summary
    record = {
        "model": "ft", "reference": "ctl", "reference_role": "clean_control",
        "metric": "code_cosine_to_base", "scope": "clean", "sae_id": "standard-layer1-all",
        "sae_type": "standard", "layer": 1, "token": "cls", "estimate": 0.0, "ci_low": -0.1,
        "ci_high": 0.1, "p_value": 1.0, "test": "paired_bootstrap", "n": 2,
    }  # fmt: skip
    data = {
        **header(),
        "definitions": S.DEFINITIONS,
        "base_model": "base",
        "finetuned_models": {"ft": "path/ft", "ctl": "path/ctl"},
        "models": {"base": {}, "ft": {}, "ctl": {}},
        "controls": {"ft": {"clean_control": "ctl", "random_view_control": None}},
        "layers": [1],
        "tokens": "all",
        "token_types": ["cls", "patches"],
        "eval": {"severity": 3},
        "training_data": {},
        "config": {},
        "saes": [
            {
                "sae_id": "standard-layer1-all",
                "sae_type": "standard",
                "layer": 1,
                "d_in": 4,
                "d_sae": 8,
                "metrics": {"base": {"l0": 1.0}},
                "l0_vs_k": {"k": None},
                "flagged": False,
            }
        ],
        "comparisons": [record],
        "distributions": {
            "ft": {"standard-layer1-all": {"conditions": {"clean": {"tokens": {"cls": cell}}}}}
        },
        "dictionary_matching": {"standard-layer1-all": {"random_directions": summary}},
        "figures": [],
    }
    data.update(changes)
    return data


def test_sae_json_reader_validates(tmp_path):
    path = tmp_path / "sae.json"
    write_json_atomic(_sae_json(), path)
    assert read_sae_results(path)["saes"][0]["sae_id"] == "standard-layer1-all"
    bad_entry = dict(_sae_json()["saes"][0], sae_type="topk")
    record = _sae_json()["comparisons"][0]
    other_id = {"ft": {"batchtopk-layer1-all": {"conditions": {}}}}
    no_cosine = {"ft": {"standard-layer1-all": {"conditions": {"clean": {"tokens": {"cls": {}}}}}}}
    for changes, message in [
        ({"schema_version": 1}, "schema version"),
        ({"tokens": 3}, "'tokens' should be str"),
        ({"saes": [bad_entry]}, "sae_type"),
        ({"distributions": other_id}, "names no SAE"),
        ({"distributions": no_cosine}, "code_cosine should be dict"),
        ({"distributions": {"other": {}}}, "not in finetuned_models"),
        ({"comparisons": [dict(record, reference_role="base")]}, "reference_role"),
        ({"comparisons": [dict(record, token="all")]}, "token"),
        ({"comparisons": [dict(record, reference="nobody")]}, "not in 'models'"),
        ({"comparisons": [{k: v for k, v in record.items() if k != "p_value"}]}, "p_value"),
        ({"comparisons": {}}, "'comparisons' should be list"),
    ]:
        write_json_atomic(_sae_json(**changes), path)
        with pytest.raises(SchemaMismatch, match=message):
            read_sae_results(path)


# ---------------------------------------------------------------------------------------------
# The recipe end to end: one process and two (gloo), and ViT-B/16 shapes.

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "train_sae.py"


def _save(model, processor, folder: Path, robustness: dict | None = None) -> str:
    if robustness is not None:
        model.config.robustness = robustness
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def _run_recipe(recipe: Path, out: Path, processes: int) -> dict:
    flags = [str(recipe), "--output_dir", str(out), "--progress", "false"]
    if processes == 1:  # in this process, on one thread like each launched process
        spec = importlib.util.spec_from_file_location("train_sae_recipe", RECIPE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            module.main(flags)
        finally:
            torch.set_num_threads(threads)
    else:
        accelerate_launch(RECIPE, flags, processes)
    return read_sae_results(out / "sae.json")


@pytest.mark.slow
def test_recipe_on_two_processes_equals_one(tiny_vit_kwargs, fashion_mnist_dir, tmp_path):
    """The recipe on real Fashion-MNIST images, once alone and once on two gloo processes: the
    same sae.json and SAE weights. An adversarial model identical to the base has code cosine 1
    (above its perturbed clean control, CI excluding 0)."""
    from hf_vitrobust.models import tiny_vit

    base, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    trained = {"base_model": "b", "seed": 0, "max_steps": 10}
    adversarial = {
        **trained,
        "adversary": "worst_of_k",
        "num_views": 4,
        "train_corruptions": ["noise"],
    }
    clean = {**trained, "adversary": "none", "train_corruptions": []}
    paths = [_save(base, processor, tmp_path / "base")]
    paths.append(_save(base, processor, tmp_path / "self", adversarial))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    paths.append(_save(base, processor, tmp_path / "perturbed", clean))
    recipe = {
        "base_model": paths[0],
        "finetuned_models": paths[1:],
        "dataset_name": "fashion_mnist",
        "eval_split": "test",
        "max_train_examples": 96,
        "layers": [1],
        "tokens": "all",
        "sae_types": ["batchtopk", "standard"],
        "expansion_factor": 4,
        "k": 4,
        "training_tokens": 2048,
        "sae_batch_size": 128,
        "n_init_batches": 2,
        "batch_size": 12,  # 24 images: one process's batches are the two processes' shards
        "buffer_mb": 1,
        "max_tokens_per_image": 5,
        "train_corruptions": ["sharpen"],
        "corruptions": ["gaussian_noise", "sharpen"],
        "num_eval_images": 24,
        "reference_images": 6,
        "n_resamples": 1000,
    }
    (tmp_path / "sae.yaml").write_text(yaml.safe_dump(recipe))
    one = _run_recipe(tmp_path / "sae.yaml", tmp_path / "one", 1)
    two = _run_recipe(tmp_path / "sae.yaml", tmp_path / "two", 2)
    assert one["eval"].pop("processes") == 1 and two["eval"].pop("processes") == 2
    as_one = json.loads(json.dumps(two).replace(str(tmp_path / "two"), str(tmp_path / "one")))
    assert_same_json(one, as_one)
    for folder in sorted((tmp_path / "one").glob("saes*/**/sae_weights.safetensors")):
        other = tmp_path / "two" / folder.relative_to(tmp_path / "one")
        for key, value in load_file(str(folder)).items():
            torch.testing.assert_close(value, load_file(str(other))[key], rtol=0, atol=0)

    assert one["models"]["self"]["role"] == "adversarial"
    assert one["controls"] == {"self": {"clean_control": "perturbed", "random_view_control": None}}
    assert one["eval"]["num_images"] == 24 and one["token_types"] == ["cls", "patches"]
    by_sae = {e["sae_id"]: e for e in one["saes"]}
    btk = by_sae["batchtopk-layer1-all"]
    assert btk["threshold_calibration"]["l0_calibrated"] == pytest.approx(4, abs=0.01)
    assert btk["l0_vs_k"]["k"] == 4 and by_sae["standard-layer1-all"]["l0_vs_k"]["k"] is None
    assert btk["metrics"]["base"] == btk["metrics"]["self"]
    for sid in by_sae:
        for cond in ("clean", "noise", "sharpen"):
            cell = one["distributions"]["self"][sid]["conditions"][cond]["tokens"]["patches"]
            assert cell["code_cosine"]["median"] == pytest.approx(1.0)
            assert cell["code_cosine_different_image"]["median"] < 1.0
            other = one["distributions"]["perturbed"][sid]["conditions"][cond]["tokens"]
            assert other["patches"]["raw_cosine"]["median"] < 1.0
    records = [r for r in one["comparisons"] if r["metric"] == "code_cosine_to_base"]
    assert {(r["sae_id"], r["scope"], r["token"]) for r in records} >= {
        (sid, cond, "patches") for sid in by_sae for cond in ("clean", "noise", "sharpen")
    }
    for r in records:
        assert r["model"] == "self" and r["reference_role"] == "clean_control"
        if r["token"] == "patches":
            assert r["estimate"] > 0 and r["ci_low"] > 0, r
    matching = one["dictionary_matching"]["batchtopk-layer1-all"]
    assert matching["finetuned:self"]["median"] == pytest.approx(1.0, abs=1e-6)
    assert matching["random_directions"]["median"] < matching["finetuned:self"]["median"]
    assert [e["sae_id"] for e in S.list_saes(tmp_path / "one" / "saes")] == sorted(by_sae)
    assert len(one["figures"]) == 3 and all(Path(f).stat().st_size > 0 for f in one["figures"])


@pytest.mark.slow
def test_vit_b16_shapes_end_to_end(photo_folder, tmp_path):
    """A randomly initialised ViT-B/16 (224 px, 1000 labels, 12 layers, d 768, 197 tokens) on
    real photos of odd sizes: activations for the default layers (one pass, cached), a few
    BatchTopK steps, calibration, the held-out comparison, save and load. (Expansion 2 keeps
    the Hungarian matching of 6144 features, ~8 s on a core, out of the test.)"""
    from hf_vitrobust.models import tiny_vit

    root, _ = photo_folder
    vit_b = dict(
        num_labels=1000, image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072,
    )  # fmt: skip
    base, processor = tiny_vit(seed=0, **vit_b)
    trained = {"base_model": "b", "seed": 0, "max_steps": 10}
    paths = [_save(base, processor, tmp_path / "base")]
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adversarial = {
        **trained,
        "adversary": "worst_of_k",
        "num_views": 2,
        "train_corruptions": ["blur"],
    }
    paths.append(_save(base, processor, tmp_path / "adv", adversarial))
    model_args, data_args, args = parse_recipe(
        (ModelArguments, DataArguments, S.SAEStudyArguments),
        [
            "--base_model", paths[0], "--finetuned_models", paths[1], "--dataset_name", str(root),
            "--eval_split", "train", "--max_train_examples", "6", "--max_bad_fraction", "0.5",
            "--sae_types", "batchtopk", "--k", "32", "--training_tokens", "512",
            "--sae_batch_size", "128", "--n_init_batches", "1", "--buffer_mb", "1",
            "--batch_size", "3", "--train_corruptions", "blur", "--corruptions", "pixelate",
            "--num_eval_images", "3", "--reference_images", "2", "--expansion_factor", "2",
            "--train_finetuned_saes",
            "false", "--seed_baseline", "false", "--progress", "false", "--device", "cpu",
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
        ],
    )  # fmt: skip
    result = S.run_sae_study(model_args, data_args, args)
    assert result["layers"] == [5, 11] and result["eval"]["num_images"] == 3
    for entry in result["saes"]:
        assert (entry["d_in"], entry["d_sae"]) == (768, 1536)
        assert entry["threshold_calibration"]["calibration_tokens"] == 2 * 2 * 197
        sae = S.load_sae(entry["folder"])
        assert type(sae).__name__ == "JumpReLUSAE" and sae.cfg.d_sae == 1536
        assert float(sae.threshold.detach()[0]) == pytest.approx(
            entry["threshold_calibration"]["calibrated_threshold"]
        )
        cells = result["distributions"]["adv"][entry["sae_id"]]["conditions"]
        assert set(cells) == {"clean", "digital"}
        # Every compared image is either compared or excluded (all-zero codes under both
        # models: an SAE of 4 steps fires little on images it was not calibrated on).
        code = cells["clean"]["tokens"]["patches"]["code_cosine"]
        assert code["n"] + code["n_excluded"] == 3
    for layer in (5, 11):
        manifest = A.read_cache_manifest(tmp_path / "cache" / f"base-layer{layer}-all")
        assert manifest["d_in"] == 768 and manifest["n_activations"] >= 512


def _photo_study(tmp_path, dataset, *flags):
    """A tiny SAE study on a photo imagefolder (a random tiny ViT and an identical fine-tune)."""
    from hf_vitrobust.models import tiny_vit

    base, processor = tiny_vit(seed=0, num_labels=6, image_size=28, patch_size=7, hidden_size=32,
                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)  # fmt: skip
    robust = {"base_model": "b", "seed": 0, "max_steps": 1, "adversary": "none"}
    paths = [
        _save(base, processor, tmp_path / "base"),
        _save(base, processor, tmp_path / "ft", robust),
    ]
    return parse_recipe(
        (ModelArguments, DataArguments, S.SAEStudyArguments),
        [
            "--base_model", paths[0], "--finetuned_models", paths[1], "--dataset_name", str(dataset),
            "--sae_types", "batchtopk", "--k", "4", "--training_tokens", "256", "--layers", "1",
            "--sae_batch_size", "64", "--n_init_batches", "1", "--buffer_mb", "1",
            "--batch_size", "16", "--train_corruptions", "blur", "--corruptions", "pixelate",
            "--expansion_factor", "2", "--train_finetuned_saes", "false", "--seed_baseline",
            "false", "--progress", "false", "--device", "cpu", "--n_resamples", "1000",
            "--output_dir", str(tmp_path / "out"), *flags,
        ],
    )  # fmt: skip


def test_sae_study_fails_on_training_bad_images_after_writing(photo_folder, tmp_path):
    """2 bad of the 57 training images (3.5%) above max_bad_fraction 0.03: sae.json and the SAEs
    are written, then the study fails (the held-out images, all good, pass)."""
    import shutil

    from hf_vitrobust.data import TooManyBadImagesError

    root, files = photo_folder
    shutil.copytree(root, tmp_path / "data" / "train")
    shutil.copytree(root, tmp_path / "data" / "test")
    for bad in files["bad"]:
        (tmp_path / "data" / "test" / bad.relative_to(root)).unlink()
    model_args, data_args, args = _photo_study(
        tmp_path, tmp_path / "data", "--eval_split", "test", "--max_bad_fraction", "0.03",
        "--num_eval_images", "6", "--reference_images", "4",
    )  # fmt: skip
    with pytest.raises(TooManyBadImagesError, match="2 of 57"):
        S.run_sae_study(model_args, data_args, args)
    result = read_sae_results(tmp_path / "out" / "sae.json")
    assert result["training_data"]["bad_images"]["passed"] is False
    assert result["eval"]["bad_images"]["passed"] is True
    assert (tmp_path / "out" / "saes" / "batchtopk-layer1-all").is_dir()


def test_sae_study_counts_bad_reference_images(photo_folder, tmp_path):
    """Every image of the folder is compared or a reference image: the held-out count holds all
    57 images and both bad ones, each once."""
    root, _ = photo_folder
    model_args, data_args, args = _photo_study(
        tmp_path, root, "--eval_split", "train", "--max_bad_fraction", "0.5",
        "--max_train_examples", "12", "--num_eval_images", "6", "--reference_images", "51",
    )  # fmt: skip
    result = S.run_sae_study(model_args, data_args, args)
    bad = result["eval"]["bad_images"]
    assert (bad["seen"], bad["bad"]) == (57, 2)
    # The selections are recorded as the evaluation records them (rule, seed, per class).
    train, compared = result["training_data"]["selection"], result["eval"]["selection"]
    assert (train["rule"], train["n"], train["seed"]) == ("stratified_random", 12, 0)
    assert sum(train["per_class"].values()) == 12 and len(train["per_class"]) == 6
    assert (compared["rule"], compared["n"], compared["requested"]) == ("stratified_random", 6, 6)
    assert sorted(Path(b["path"]).name for b in bad["first_bad"]) == [
        "bad_text.jpg",
        "bad_truncated.jpg",
    ]
