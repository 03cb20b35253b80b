"""SAEs with sae-lens on tiny ViTs: streaming, training, save/load, JumpReLU path, comparisons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_vitrobust.analysis import sae as S
from hf_vitrobust.analysis.conditions import corrupt_condition
from hf_vitrobust.analysis.sae import activations as A
from hf_vitrobust.analysis.sae.schema import header, read_sae_results
from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe
from hf_vitrobust.corruptions import corrupt_examples
from hf_vitrobust.data import ProcessorSpec
from hf_vitrobust.io import SchemaMismatch, write_json_atomic


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


def test_stream_is_bounded_and_cache_round_trips(tiny_model, image_batches, tmp_path):
    model, _ = tiny_model
    stream = _stream(model, image_batches, batch_size=64)
    batches = [next(stream) for _ in range(24)]  # more than an epoch of 4 x 16 x 17 tokens
    assert all(b.shape == (64, 32) for b in batches)
    chunk_rows = 16 * 17
    assert 0 < stream.peak_buffer_bytes <= (stream.buffer_size + chunk_rows) * 32 * 4
    # Shuffled: consecutive batches are not consecutive tokens of one image.
    assert not torch.equal(
        batches[0][:17],
        A.select_tokens(
            A.residual_stream(model, image_batches[0]["pixel_values"][:1], [1])[1], "all"
        )[0],
    )

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


def test_standard_sae_trains_saves_and_loads(tiny_model, image_batches, tmp_path):
    model, _ = tiny_model
    sae, trainer = _train(model, image_batches, "standard")
    assert trainer.n_training_steps == 40
    assert sae.cfg.normalize_activations == "none"  # the norm factor was folded in
    x = torch.cat([b for b, _ in zip(_stream(model, image_batches), range(3))])
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


def test_batchtopk_inference_is_jumprelu_and_batch_independent(tiny_model, image_batches, tmp_path):
    model, _ = tiny_model
    sae, trainer = _train(model, image_batches, "batchtopk", steps=60)
    folder = S.save_sae(sae, tmp_path / "batchtopk-layer1-all", trainer)
    loaded = S.load_sae(folder)
    assert type(loaded).__name__ == "JumpReLUSAE"
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "jumprelu"
    again = S.load_sae(S.save_sae(S.to_inference_sae(sae), tmp_path / "again"))
    x = torch.cat([b for b, _ in zip(_stream(model, image_batches), range(2))])
    with torch.no_grad():
        code = loaded.encode(x)
        torch.testing.assert_close(code, again.encode(x))
        # The JumpReLU path: hidden_pre of the training SAE, kept where above the learned
        # global top-k threshold (rescale_acts_by_decoder_norm folded into the weights).
        hidden = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        hidden = hidden * sae.W_dec.norm(dim=-1)
        expected = hidden * (hidden > float(sae.topk_threshold))
        torch.testing.assert_close(code, expected, atol=1e-5, rtol=1e-4)
        # One image's code does not depend on its batch; the training top-k's does.
        torch.testing.assert_close(loaded.encode(x[:5]), code[:5])
        train_small = sae.encode(x[:5])
        train_full = sae.encode(x)[:5]
        assert not torch.equal(train_small, train_full)
        torch.testing.assert_close(loaded(x), again(x))


def test_cosine_definitions_and_baselines(tiny_model, image_batches):
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 0.0], [3.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(S.row_cosine(a, b).numpy(), [1.0, 1.0, 0.0, -1.0], atol=1e-12)
    ja = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]])
    jb = torch.tensor([[1.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0]])
    # top-2 active: {0,1} vs {0,2} -> 1/3; both empty -> 1; identical -> 1
    np.testing.assert_allclose(S.topk_jaccard(ja, jb, 2).numpy(), [1 / 3, 1.0, 1.0])
    perm = S.derangement(7, seed=3)
    assert sorted(perm) == list(range(7)) and not np.any(perm == np.arange(7))

    model, _ = tiny_model
    sae, _ = _train(model, image_batches, "standard", steps=20)
    inf = S.to_inference_sae(sae)
    px = [b["pixel_values"] for b in image_batches[:2]]
    acts = A.collect_activations(model, px, [1], "all")[1]
    same = S.compare_codes(inf, acts, acts, topk=4, chunk_images=5)
    for key in ("code_cosine", "raw_cosine", "topk_jaccard"):
        np.testing.assert_allclose(same[key], 1.0)  # a model against itself gives 1
    assert same["code_cosine"].shape == (32,)
    other = S.compare_codes(inf, acts, acts[S.derangement(32)], topk=4)
    assert other["raw_cosine"].mean() < 0.999 and other["code_cosine"].mean() < 0.999
    with pytest.raises(ValueError, match="differ in shape"):
        S.compare_codes(inf, acts, acts[:3])

    matched = S.match_dictionaries(inf, inf.W_dec.detach()[torch.randperm(inf.cfg.d_sae)])
    np.testing.assert_allclose(matched, 1.0, atol=1e-9)  # a permuted dictionary matches fully
    rand = S.match_dictionaries(inf, S.random_directions(inf.cfg.d_sae, 32))
    assert rand.mean() < 0.9


def test_metrics_stream_and_flagging(tiny_model, image_batches):
    model, _ = tiny_model
    sae, _ = _train(model, image_batches, "standard", steps=20)
    inf = S.to_inference_sae(sae)
    x = A.collect_activations(model, [b["pixel_values"] for b in image_batches], [1], "all")[1]
    one = S.sae_metrics(inf, x)
    acc = S.MetricsAccumulator(inf, chunk_size=50)
    acc.update(x[:20])
    acc.update(x[20:])
    two = acc.result()
    for key in ("l0", "explained_variance", "mse", "dead_fraction"):
        assert one[key] == pytest.approx(two[key], rel=1e-9)
    flat = x.reshape(-1, 32)
    with torch.no_grad():
        recon = inf(flat)
    ev = 1 - ((recon - flat) ** 2).sum() / ((flat - flat.mean(0)) ** 2).sum()
    assert one["explained_variance"] == pytest.approx(float(ev), rel=1e-4)
    assert one["mse"] == pytest.approx(float(((recon - flat) ** 2).mean()), rel=1e-4)
    assert one["n_tokens"] == 64 * 17

    policy = S.FlagPolicy(0.7)
    with pytest.warns(UserWarning, match="explained variance 0.500"):
        assert policy.check("x", {"explained_variance": 0.5}) is not None
    assert policy.check("y", {"explained_variance": 0.9}) is None
    with pytest.raises(ValueError, match="sae_type"):
        S.SAETrainConfig(sae_type="topk")
    s = S.summarize(np.linspace(0, 1, 50), n_resamples=1000)
    assert s["median_ci"][0] <= s["median"] <= s["median_ci"][1]


@pytest.mark.slow
def test_train_sae_recipe_end_to_end(tiny_vit_kwargs, fashion_mnist_dir, tmp_path):
    """The recipe on real Fashion-MNIST images: a model against itself gives cosine 1."""
    import importlib.util
    from pathlib import Path

    import yaml

    from hf_vitrobust.models import tiny_vit

    base, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    base.save_pretrained(tmp_path / "self")
    processor.save_pretrained(tmp_path / "self")
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base.save_pretrained(tmp_path / "perturbed")
    processor.save_pretrained(tmp_path / "perturbed")
    recipe = {
        "base_model": str(tmp_path / "base"),
        "finetuned_models": [str(tmp_path / "self"), str(tmp_path / "perturbed")],
        "dataset_name": "fashion_mnist",
        "eval_split": "test",
        "max_train_examples": 128,
        "output_dir": str(tmp_path / "out"),
        "layers": [1],
        "tokens": "all",
        "sae_types": ["batchtopk"],  # vanilla training and saving are covered above
        "expansion_factor": 4,
        "training_tokens": 2048,
        "sae_batch_size": 128,
        "n_init_batches": 2,
        "batch_size": 32,
        "buffer_mb": 1,
        "max_tokens_per_image": 5,
        "train_corruptions": ["sharpen"],
        "corruptions": ["gaussian_noise", "sharpen"],
        "num_eval_images": 24,
        "n_resamples": 1000,
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "sae.yaml").write_text(yaml.safe_dump(recipe))
    script = Path(__file__).resolve().parents[1] / "recipes" / "train_sae.py"
    spec = importlib.util.spec_from_file_location("train_sae_recipe", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.warns(UserWarning, match="explained variance"):
        result = module.main([str(tmp_path / "sae.yaml"), "--k", "4"])

    out = tmp_path / "out"
    saved = json.loads((out / "sae.json").read_text())
    assert read_sae_results(out / "sae.json") == saved  # the writer's output passes its reader
    assert list(saved)[:2] == ["schema", "schema_version"]
    assert saved["eval"]["severity"] == 3 and saved["config"]["severities"] == [3]
    assert saved["layers"] == [1] and saved["tokens"] == "all"
    ids = sorted(s["sae_id"] for s in result["saes"])
    assert ids == ["batchtopk-layer1-all"]
    assert [e["sae_id"] for e in S.list_saes(out / "saes")] == ids
    for sid in ids:
        entry = next(s for s in result["saes"] if s["sae_id"] == sid)
        assert set(entry["metrics"]) == {"base", "finetuned:self", "finetuned:perturbed"}
        assert entry["flagged"] == (entry["metrics"]["base"]["explained_variance"] < 0.7)
        assert entry["metrics"]["base"] == entry["metrics"]["finetuned:self"]
        conds = result["comparisons"]["self"][sid]["conditions"]
        assert set(conds) == {"clean", "noise", "sharpen"}
        for cond in conds.values():
            assert cond["code_cosine"]["median"] == pytest.approx(1.0)
            assert cond["code_cosine"]["q05"] == pytest.approx(1.0)
            assert cond["topk_jaccard"]["mean"] == pytest.approx(1.0)
            assert cond["code_cosine_different_image"]["median"] < 1.0
        pert = result["comparisons"]["perturbed"][sid]["conditions"]["clean"]
        assert pert["raw_cosine"]["median"] < 1.0 and pert["code_cosine"]["n"] == 24
        sae = S.load_sae(out / "saes" / sid)
        assert sae.cfg.metadata.tokens == "all"
        matching = result["dictionary_matching"][sid]
        assert matching["finetuned:self"]["median"] == pytest.approx(1.0, abs=1e-6)
        assert matching["random_directions"]["median"] < matching["finetuned:self"]["median"]
        assert "base_other_seed" in matching
    assert (out / "saes_finetuned" / "perturbed" / ids[0] / "cfg.json").is_file()
    assert (out / "saes_seed_baseline" / ids[0] / "cfg.json").is_file()
    assert (tmp_path / "cache" / "base-layer1-all" / "activations.json").is_file()
    assert len(result["figures"]) == 3 and all(
        Path(f).stat().st_size > 0 for f in result["figures"]
    )


def test_heldout_images_are_the_evaluation_pixels(fashion_mnist_dir, tiny_model):
    """The SAE stage corrupts held-out images through corrupt_examples, keyed on example_id: the
    same (seed, example_id, corruption, severity) gives the evaluation's pixels, in any order."""
    _, processor = tiny_model
    spec = ProcessorSpec.from_processor(processor)
    data_args = DataArguments(dataset_name="fashion_mnist", eval_split="test")
    images, ids = S.load_heldout_images(data_args, 6, spec)
    assert len(images) == 6 and ids.tolist() == list(range(6))
    for name in ("gaussian_noise", "impulse_noise"):
        got = S.condition_images(images, ids, name, 3, seed=5)
        np.testing.assert_array_equal(got, corrupt_examples(images, ids, name, 3, 5))
        # Keyed on example_id, not on the position in the list.
        order = [4, 1, 5, 0, 3, 2]
        shuffled = S.condition_images([images[i] for i in order], ids[order], name, 3, seed=5)
        np.testing.assert_array_equal(shuffled, got[order])
        assert not np.array_equal(got, S.condition_images(images, ids, name, 3, seed=6))
    np.testing.assert_array_equal(S.condition_images(images, ids, "clean", 3, 5), np.stack(images))
    # The analysis draws one corruption of a group per image; its pixels are the SAE stage's
    # pixels for that corruption (the SAE stage applies every corruption of the group).
    groups = {"noise": ("gaussian_noise", "impulse_noise")}
    drawn, names = corrupt_condition(np.stack(images), ids, "noise", groups, 3, 5)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(drawn[i], S.condition_images(images, ids, name, 3, 5)[i])
    assert S.heldout_conditions([]) == {"clean": ["clean"]}
    assert S.heldout_conditions(["gaussian_noise", "defocus_blur", "shot_noise"]) == {
        "clean": ["clean"],
        "noise": ["gaussian_noise", "shot_noise"],
        "blur": ["defocus_blur"],
    }


def test_study_arguments_names_and_old_keys(tmp_path):
    assert set(S.SAE_TYPE_LABELS) == set(S.SAE_TYPES)
    args = S.SAEStudyArguments(base_model="b", corruptions=["none"], train_corruptions=["none"])
    assert args.corruptions == [] and args.train_corruptions == [] and args.severity == 3
    with pytest.raises(ValueError, match="severities=.*exactly one"):
        S.SAEStudyArguments(base_model="b", severities=[1, 3])
    with pytest.raises(ValueError, match="base_model is required"):
        S.SAEStudyArguments()
    with pytest.raises(ValueError, match="neither a corruption family nor a corruption"):
        S.SAEStudyArguments(base_model="b", train_corruptions=["blurr"])
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
    with pytest.warns(FutureWarning, match="eval_severity"):
        _, _, parsed = parse_recipe(types, ["--base_model", "b", "--eval_severity", "4"])
    assert parsed.severities == [4]

    with pytest.raises(ValueError, match="from 'base_model'"):
        S.run.load_study_models(ModelArguments(model_name_or_path="x"), args)


def _sae_json(**changes):
    summary = {"n": 2, "median": 1.0}
    cell = {k: summary for k in ("code_cosine", "raw_cosine", "topk_jaccard")}
    cell["code_cosine_different_image"] = summary
    data = {
        **header(),
        "definitions": S.DEFINITIONS,
        "base_model": "base",
        "finetuned_models": {"ft": "path/ft"},
        "layers": [1],
        "tokens": "all",
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
                "flagged": False,
            }
        ],
        "comparisons": {"ft": {"standard-layer1-all": {"conditions": {"clean": cell}}}},
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
    other_id = {"ft": {"batchtopk-layer1-all": {"conditions": {}}}}
    no_cosine = {"ft": {"standard-layer1-all": {"conditions": {"clean": {}}}}}
    for changes, message in [
        ({"schema_version": 0}, "schema version"),
        ({"tokens": 3}, "'tokens' should be str"),
        ({"saes": [bad_entry]}, "sae_type"),
        ({"comparisons": other_id}, "names no SAE"),
        ({"comparisons": no_cosine}, "code_cosine should be dict"),
        ({"comparisons": {"other": {}}}, "not in finetuned_models"),
    ]:
        write_json_atomic(_sae_json(**changes), path)
        with pytest.raises(SchemaMismatch, match=message):
            read_sae_results(path)
