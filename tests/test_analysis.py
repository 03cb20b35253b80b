"""Each analysis definition (docs/definitions.md) against a direct computation on a tiny ViT."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hf_vitrobust.analysis.attention import (
    grad_cam,
    rollout_matrix,
)
from hf_vitrobust.analysis.capture import ActivationCapture, capture_batch
from hf_vitrobust.analysis.lens import (
    LensRecorder,
    common_first_correct,
    first_correct_layers,
    summarize_lens,
)
from hf_vitrobust.analysis.patching import (
    PatchingRecorder,
    patched_logits,
    patched_logits_by_hook,
    recovery_fraction,
)
from hf_vitrobust.analysis.run import analyze_models
from hf_vitrobust.analysis.similarity import StreamingLinearCKA, linear_cka
from hf_vitrobust.io import write_json_atomic
from hf_vitrobust.vit import check_vit_classifier


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.randn(6, 3, 28, 28, generator=torch.Generator().manual_seed(1))


def _eager_reference(model, pixel_values):
    """The naive path: an eager copy with output_attentions and output_hidden_states."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        return ref(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)


def _perturbed_blocks(model, seed: int = 5, scale: float = 0.3):
    """A copy whose embeddings and blocks differ but which shares the final layernorm and head
    (a 'fine-tuned' model for patching tests)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in other.named_parameters():
            if name.startswith("vit.layers") or name.startswith("vit.embeddings"):
                param.add_(
                    scale * torch.randn(param.shape, generator=gen) * param.std().clamp(min=0.02)
                )
    return other.eval()


def test_entropy_matches_output_attentions_and_restores_sdpa(tiny_model, pixels):
    model, _ = tiny_model
    assert model.config._attn_implementation == "sdpa"
    out = capture_batch(model, pixels)
    assert model.config._attn_implementation == "sdpa"  # restored after the pass
    ref = _eager_reference(model, pixels)
    direct = []
    for attn in ref.attentions:  # [B, H, T, T]
        p = attn.double()
        plogp = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
        direct.append(-plogp.sum(-1))  # [B, H, T]
    direct = torch.stack(direct, dim=1)  # [B, L, H, T]
    assert out.entropy.dtype == torch.float32
    torch.testing.assert_close(out.entropy.double(), direct.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls_entropy.double(), direct[..., 0], rtol=1e-5, atol=1e-5)
    # Uniform attention over T keys has entropy ln T: a bound the values must respect.
    assert (out.entropy <= np.log(pixels.new_tensor(17.0)) + 1e-5).all()


def test_lens_every_layer_and_last_layer_equals_logits(tiny_model, pixels):
    model, _ = tiny_model
    out = capture_batch(model, pixels)
    ref = _eager_reference(model, pixels)
    assert out.lens_logits.shape == (3, 6, 10)  # L + 1 hidden states
    torch.testing.assert_close(out.lens_logits[-1], ref.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-6)
    for layer, hidden in enumerate(ref.hidden_states):
        direct = model.classifier(model.vit.layernorm(hidden[:, 0]))
        torch.testing.assert_close(out.lens_logits[layer], direct, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out.cls[layer], hidden[:, 0])
        torch.testing.assert_close(out.patch_mean[layer], hidden[:, 1:].mean(1))
    rec = LensRecorder()
    rec.update(out.lens_logits, ref.logits.argmax(-1), out.logits)
    assert rec.arrays()["last_layer_abs_diff"].shape == (6,)
    assert rec.arrays()["last_layer_abs_diff"].max() <= 1e-6
    assert rec.correct[:, -1].all()  # labels = the model's predictions


def test_first_correct_layer_counts_from_layer_one():
    correct = np.array(
        [
            # l = 0 (CLS embedding), 1, 2, 3, 4
            [0, 1, 0, 1, 1],  # first 1, stable 3
            [1, 1, 1, 1, 1],  # layer 0 ignored: first 1, stable 1 (not 0)
            [1, 0, 1, 1, 1],  # right at l = 0 only by the constant embedding: first 2, stable 2
            [0, 0, 0, 0, 1],  # first 4, stable 4
            [1, 1, 1, 1, 0],  # wrong at the last layer: excluded
            [1, 0, 0, 0, 0],  # right only at l = 0: never correct over 1..L
        ],
        dtype=bool,
    )
    fc = first_correct_layers(correct)
    assert fc["mask"].tolist() == [True, True, True, True, False, False]
    assert fc["first"].tolist() == [1, 1, 2, 4]
    assert fc["stable"].tolist() == [3, 1, 2, 4]
    assert fc["never_correct"].tolist() == [False, False, False, False, False, True]
    rec = {
        "correct": correct,
        "true_prob": correct.astype(np.float32),
        "last_layer_abs_diff": np.zeros(len(correct)),
    }
    summary = summarize_lens(rec, n_resamples=1000)["first_correct_layer"]
    assert summary["count"] == 4 and summary["n_images"] == 6
    assert summary["never_correct"] == {"count": 1, "share": 1 / 6}
    assert summary["histogram_layers"] == [1, 2, 3, 4]
    assert summary["first"]["histogram"] == [2, 1, 0, 1]
    assert summary["first"]["value"] == pytest.approx(2.0)


def test_side_by_side_means_use_the_images_correct_for_every_model():
    # Model A is right at the last layer on images 0-3, B on 2-5: both on 2 and 3 only.
    a = np.zeros((6, 4), bool)
    b = np.zeros((6, 4), bool)
    a[:4, 1:] = True  # A right from layer 1
    b[2:, 3] = True  # B right only at the last layer
    common = common_first_correct({"a": a, "b": b}, n_resamples=1000)
    assert common["n_images"] == 2
    assert common["models"]["a"]["first"]["value"] == 1.0
    assert common["models"]["b"]["first"]["value"] == 3.0
    assert common["models"]["b"]["stable"]["value"] == 3.0


def test_rollout_rows_sum_to_one_and_capture_matches(tiny_model, pixels):
    model, _ = tiny_model
    ref = _eager_reference(model, pixels)
    rollout = rollout_matrix(ref.attentions)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(6, 17))
    # Direct definition, one layer at a time.
    direct = torch.eye(17).expand(6, 17, 17)
    for attn in ref.attentions:
        a = 0.5 * attn.mean(1) + 0.5 * torch.eye(17)
        a = a / a.sum(-1, keepdim=True)
        direct = a @ direct
    torch.testing.assert_close(rollout, direct)
    out = capture_batch(model, pixels, rollout=True)
    torch.testing.assert_close(out.rollout, direct[:, 0, 1:].reshape(6, 4, 4))


def test_grad_cam_matches_direct_gradient(tiny_model, pixels):
    model, _ = tiny_model
    labels = torch.arange(6) % 10
    cam = grad_cam(model, pixels, labels)
    out = model(pixel_values=pixels, output_hidden_states=True)
    act = out.hidden_states[-2]  # input of the last block (and of its layernorm_before)
    (grad,) = torch.autograd.grad(out.logits.gather(1, labels[:, None]).sum(), act)
    alpha = grad[:, 1:].mean(1, keepdim=True)
    direct = torch.relu((act[:, 1:] * alpha).sum(-1)).reshape(6, 4, 4)
    torch.testing.assert_close(cam, direct.detach())
    assert (cam >= 0).all() and cam.sum() > 0


def test_cka_identities():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 24, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=gen, dtype=torch.float64))
    y = torch.randn(300, 40, generator=gen, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 7.5 * x @ q + 3.0) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka(x @ q, 0.1 * y), abs=1e-12)
    assert linear_cka(x, y) < 0.5  # unrelated representations are far from 1
    # Direct formula: ||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||).
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(float(direct), rel=1e-12)


def test_cka_streaming_equals_direct_formula():
    gen = torch.Generator().manual_seed(1)
    # Two layers; large feature means (as in ViT residual streams) test the shifted sums.
    x = torch.randn(2, 250, 16, generator=gen) + 50.0
    y = torch.stack([x[0] @ torch.randn(16, 8, generator=gen), torch.randn(250, 8, generator=gen)])
    y = y + 0.3 * torch.randn(2, 250, 8, generator=gen)
    acc = StreamingLinearCKA()
    for start in range(0, 250, 37):  # uneven batches
        acc.update(x[:, start : start + 37], y[:, start : start + 37])
    streamed = acc.compute()
    for layer in range(2):
        assert streamed[layer] == pytest.approx(linear_cka(x[layer], y[layer]), rel=1e-9)
    assert streamed[0] > streamed[1] + 0.3  # related layer vs unrelated layer


def test_patching_matches_hooked_forward(tiny_model, pixels):
    model, _ = tiny_model
    other = _perturbed_blocks(model)
    source = capture_batch(other, pixels, keep_hidden=True).hidden
    fast = patched_logits(model, source)
    with torch.no_grad():
        for site in range(source.shape[0]):
            direct = patched_logits_by_hook(model, pixels, site, source[site])
            torch.testing.assert_close(fast[site], direct, rtol=1e-5, atol=1e-5)


def test_patching_self_recovers_nothing_and_final_layer_recovers_all(tiny_model):
    model, _ = tiny_model
    other = _perturbed_blocks(model, scale=0.5)
    pixels = torch.randn(64, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    b_out = capture_batch(other, pixels, keep_hidden=True)
    a_out = capture_batch(model, pixels, keep_hidden=True)
    labels = b_out.logits.argmax(-1)  # B is right everywhere; A is not
    assert (a_out.logits.argmax(-1) == labels).float().mean() < 0.9
    rec_self, rec_other = PatchingRecorder(), PatchingRecorder()
    rec_self.update(a_out.logits, b_out.logits, patched_logits(model, a_out.hidden), labels)
    rec_other.update(a_out.logits, b_out.logits, patched_logits(model, b_out.hidden), labels)
    self_summary = rec_self.summary(n_resamples=1000)
    other_summary = rec_other.summary(n_resamples=1000)
    assert [s["recovered"] for s in self_summary["per_layer"]] == [0.0] * 3
    final = other_summary["per_layer"][-1]
    assert final["recovered"] == pytest.approx(1.0)
    assert final["ci_low"] == pytest.approx(1.0) and final["ci_high"] == pytest.approx(1.0)
    assert other_summary["gain"]["estimate"] > 0
    a, b, p = rec_other.arrays().values()
    assert recovery_fraction(a, b, p[:, 0]) == pytest.approx(
        (p[:, 0].mean() - a.mean()) / (b.mean() - a.mean())
    )


def test_capture_keeps_nothing_between_batches_and_removes_hooks(tiny_model, pixels):
    model, _ = tiny_model
    with ActivationCapture(model, rollout=True, keep_hidden=True) as cap:
        # Eager only inside the capture's own forward (which reads attention weights): other
        # passes of the model in the block (patching, Grad-CAM) keep sdpa.
        assert model.config._attn_implementation == "sdpa"
        out = cap(pixels)
        assert out.entropy is not None and model.config._attn_implementation == "sdpa"
        assert cap._cls == [] and cap._hidden == [] and cap._ent == []
        assert cap._rollout.matrix is None  # the tokens x tokens product died with its batch
    assert model.config._attn_implementation == "sdpa"
    for layer in model.vit.layers:
        assert not layer._forward_hooks and not layer.attention._forward_hooks
    assert not model.vit.embeddings._forward_hooks


def test_capture_without_attention_never_switches_to_eager(tiny_model, pixels, monkeypatch):
    model, _ = tiny_model
    switched = []
    original = model.set_attn_implementation
    monkeypatch.setattr(
        model, "set_attn_implementation", lambda impl: (switched.append(impl), original(impl))
    )
    out = capture_batch(model, pixels, entropy=False)
    assert switched == [] and out.entropy is None
    capture_batch(model, pixels)
    assert switched == ["eager", "sdpa"]


def test_refuses_other_layouts(tiny_model):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    model, _ = tiny_model
    deit = DeiTForImageClassificationWithTeacher(
        DeiTConfig(
            image_size=28,
            patch_size=7,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=10,
        )  # fmt: skip
    )
    with pytest.raises(ValueError, match="backbone|CLS|tokens"):
        check_vit_classifier(deit)
    no_cls = copy.deepcopy(model)
    no_cls.vit.embeddings.cls_token = None
    with pytest.raises(ValueError, match="no CLS token"):
        check_vit_classifier(no_cls)
    other_head = copy.deepcopy(model)
    other_head.classifier = torch.nn.Sequential(torch.nn.Linear(32, 10))
    with pytest.raises(ValueError, match="head layout"):
        check_vit_classifier(other_head)


def test_refuses_models_with_different_classes(tiny_model, tiny_vit_kwargs):
    from hf_vitrobust.models import tiny_vit

    model, _ = tiny_model
    other, _ = tiny_vit(seed=1, **{**tiny_vit_kwargs, "num_labels": 7})
    with pytest.raises(ValueError, match="different classes"):
        analyze_models(model, {"ft": other.eval()}, lambda c: iter(()), ["clean"])


def test_analyze_models_end_to_end_is_repeatable(tiny_model, tmp_path):
    model, _ = tiny_model
    other = _perturbed_blocks(model)
    gen = torch.Generator().manual_seed(3)
    data = torch.randn(40, 3, 28, 28, generator=gen)
    labels = other(pixel_values=data).logits.argmax(-1).detach()

    def batches(condition):
        x = data if condition == "clean" else data + 0.5 * torch.sign(data)
        for start in range(0, 40, 16):
            yield x[start : start + 16], labels[start : start + 16]

    kwargs = dict(n_resamples=1000, progress=False)
    first = analyze_models(model, {"ft": other}, batches, ["clean", "noise"], **kwargs)
    second = analyze_models(model, {"ft": other}, batches, ["clean", "noise"], **kwargs)
    # Seeded statistics, deterministic capture (compared as written JSON: NaN becomes null).
    a = write_json_atomic(first, tmp_path / "a.json").read_text()
    assert a == write_json_atomic(second, tmp_path / "b.json").read_text()
    assert np.isnan(first["cka"]["clean"]["ft"]["cls"][0])  # the embedded CLS is constant
    assert first["models"]["ft"]["role"] == "unknown"  # no config.robustness: base only
    lens = first["logit_lens"]["clean"]
    assert lens["models"]["ft"]["accuracy"][-1]["value"] == 1.0
    assert lens["models"]["base"]["last_layer_max_abs_diff"] <= 1e-5
    assert len(lens["comparisons"]["ft"]["accuracy"]) == 3
    assert lens["common"]["n_images"] == lens["models"]["base"]["first_correct_layer"]["count"]
    records = first["comparisons"]
    assert {(r["model"], r["reference"], r["reference_role"]) for r in records} == {
        ("ft", "base", "base")
    }
    entropy = [r for r in records if r["metric"] == "attention_entropy" and r["scope"] == "noise"]
    assert [(r["layer"], r["head"]) for r in entropy] == [
        (1, None), (2, None), (1, 0), (1, 1), (2, 0), (2, 1)
    ]  # fmt: skip
    assert all(r["test"] == "wilcoxon_signed_rank" and r["n"] == 40 for r in entropy)
    fc = [r for r in records if r["metric"] == "first_always_correct_layer"]
    assert {r["scope"] for r in fc} == {"clean", "noise"} and all(r["n_images"] >= 2 for r in fc)
    cka = first["cka"]["clean"]["ft"]
    assert len(cka["cls"]) == 3 and all(0 <= v <= 1 + 1e-9 for v in cka["patch_mean"])
    assert all(0 <= v <= 1 + 1e-9 for v in cka["cls"][1:])
    patch = first["patching"]["clean"]["ft"]
    assert patch["accuracy_b"] == 1.0
    assert patch["per_layer"][-1]["recovered"] == pytest.approx(1.0)
    assert model.config._attn_implementation == "sdpa"


def test_analyze_models_output_reads_back_through_read_analysis(tiny_model, tmp_path):
    from hf_vitrobust.analysis.schema import SCHEMA, SCHEMA_VERSION, read_analysis
    from hf_vitrobust.io import SchemaMismatch

    model, _ = tiny_model
    other = _perturbed_blocks(model)
    data = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(8) % 10

    def batches(condition):
        yield data, labels

    kwargs = dict(n_resamples=1000, progress=False)
    result = analyze_models(model, {"ft": other}, batches, ["clean"], **kwargs)
    assert list(result)[:2] == ["schema", "schema_version"]
    assert (result["schema"], result["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    back = read_analysis(write_json_atomic(result, tmp_path / "analysis.json"))
    assert back["conditions"] == ["clean"] and set(back["patching"]["clean"]) == {"ft"}
    # Sections switched off are present and empty: the reader and the plots accept them.
    lean = analyze_models(model, {"ft": other}, batches, ["clean"], patching=False, **kwargs)
    assert read_analysis(write_json_atomic(lean, tmp_path / "lean.json"))["patching"] == {}
    # Drift inside a section names the file and the entry.
    broken = json.loads((tmp_path / "analysis.json").read_text())
    broken["cka"]["noise"] = broken["cka"].pop("clean")
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SchemaMismatch, match=r"broken\.json.*cka\['noise'\].*conditions"):
        read_analysis(tmp_path / "broken.json")
    del broken["logit_lens"]["clean"]["models"]["ft"]["first_correct_layer"]
    broken["cka"] = {}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SchemaMismatch, match="first_correct_layer"):
        read_analysis(tmp_path / "broken.json")
    broken = json.loads((tmp_path / "analysis.json").read_text())
    del broken["logit_lens"]["clean"]["common"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SchemaMismatch, match="lacks 'common'"):
        read_analysis(tmp_path / "broken.json")
    # Comparison records are validated too: metric, model keys, scope, qualifiers.
    good = json.loads((tmp_path / "analysis.json").read_text())
    for change, message in (
        ({"metric": "entropy"}, "metric 'entropy'"),
        ({"reference": "runA/final"}, "reference 'runA/final'"),
        ({"scope": "fog"}, "scope 'fog'"),
        ({"reference_role": "control"}, "reference_role 'control'"),
    ):
        bad = json.loads(json.dumps(good))
        bad["comparisons"][0].update(change)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(SchemaMismatch, match=message):
            read_analysis(tmp_path / "bad.json")
    bad = json.loads(json.dumps(good))
    del bad["comparisons"][-1]["layer"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SchemaMismatch, match=r"lacks \['layer'\]"):
        read_analysis(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------
# Conditions: the analysis's corrupted pixels are the evaluation's (corrupt_examples)
# ---------------------------------------------------------------------------------------------

CONDITION_CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur"]


def _examples(n: int = 12, size: int = 36) -> list[dict]:
    """Images larger than the model's 28 px (so they are resized first), sparse example ids."""
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "label": i % 10,
            "example_id": 1000 + 7 * i,
        }
        for i in range(n)
    ]


def test_condition_pixels_equal_corrupt_examples(tiny_model):
    from hf_vitrobust.analysis.conditions import DatasetBatches, group_corruption
    from hf_vitrobust.corruptions import corrupt_examples

    _, processor = tiny_model
    examples = _examples()
    batches = DatasetBatches(
        examples, processor, corruptions=CONDITION_CORRUPTIONS, severity=3, seed=7, batch_size=5
    )
    assert batches.conditions == ["clean", "noise", "blur"]
    clean = {
        int(e): img
        for b in batches.images("clean")
        for e, img in zip(b["example_ids"], b["images"])
    }
    drawn = set()
    for batch in batches.images("noise"):
        for i, example_id in enumerate(batch["example_ids"].tolist()):
            name = batch["corruptions"][i]
            drawn.add(name)
            assert name == group_corruption(7, example_id, "noise", batches.group_members["noise"])
            expected = corrupt_examples(clean[example_id][None], [example_id], name, 3, 7)[0]
            assert clean[example_id].shape == (28, 28, 3)
            np.testing.assert_array_equal(batch["images"][i], expected)  # byte-identical
        # The model's input is normalised from exactly those pixels.
        torch.testing.assert_close(
            batch["pixel_values"], batches.spec.to_tensor(batch["images"]), rtol=0, atol=0
        )
    assert drawn == {"gaussian_noise", "shot_noise", "impulse_noise"}


def test_condition_pixels_are_keyed_on_example_id_not_position(tiny_model):
    from hf_vitrobust.analysis.conditions import DatasetBatches

    _, processor = tiny_model
    examples = _examples()

    def pixels(data, batch_size):
        batches = DatasetBatches(
            data, processor, corruptions=CONDITION_CORRUPTIONS, seed=7, batch_size=batch_size
        )
        return {
            int(e): img
            for b in batches.images("blur")
            for e, img in zip(b["example_ids"], b["images"])
        }

    forward = pixels(examples, 5)
    backward = pixels(examples[::-1], 4)
    assert sorted(forward) == sorted(backward)
    for example_id, image in forward.items():
        np.testing.assert_array_equal(image, backward[example_id])
    # The panel's corrupted image i is its group's condition pixel.
    batches = DatasetBatches(examples, processor, corruptions=CONDITION_CORRUPTIONS, seed=7)
    panel = batches.panel_batch(2)
    assert [c.split(":")[0] for c in panel["corruptions"]] == ["noise", "blur"]
    torch.testing.assert_close(
        panel["corrupted"][1], batches.spec.to_tensor([forward[1007]])[0], rtol=0, atol=0
    )


def test_examples_without_ids_are_refused(tiny_model):
    """Numbering by position within a batch gave every batch the ids 0..B-1: pixels and records
    keyed on them collided. Example ids now come from the data loader, or the batch is refused."""
    from hf_vitrobust.analysis.conditions import DatasetBatches

    _, processor = tiny_model
    examples = [{k: v for k, v in e.items() if k != "example_id"} for e in _examples(4)]
    batches = DatasetBatches(examples, processor, corruptions=CONDITION_CORRUPTIONS, batch_size=2)
    with pytest.raises(ValueError, match="no 'example_id'.*load_image_dataset"):
        next(batches("noise"))


def test_analysis_arguments_new_and_old_keys(tmp_path):
    import warnings
    from pathlib import Path

    from hf_vitrobust.analysis.run import AnalysisArguments
    from hf_vitrobust.configs import DataArguments, parse_recipe

    recipe = Path(__file__).resolve().parent.parent / "recipes/fashion-mnist-tiny/analyze.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped recipe uses the new names only
        args, _ = parse_recipe((AnalysisArguments, DataArguments), [str(recipe)])
    assert (args.corruptions, args.severities, args.severity) == (["all"], [3], 3)
    old = tmp_path / "old.yaml"
    old.write_text("base_model: b\nseverity: 2\ngroups: [noise, blur]\n")
    with pytest.warns(FutureWarning) as record:
        args, _ = parse_recipe((AnalysisArguments, DataArguments), [str(old)])
    messages = " ".join(str(w.message) for w in record)
    assert "'severity' is deprecated" in messages and "'groups' is deprecated" in messages
    assert (args.corruptions, args.severities) == (["noise", "blur"], [2])
    with pytest.raises(ValueError, match="severities.*exactly one"):
        parse_recipe((AnalysisArguments, DataArguments), ["--severities", "1", "3"])
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        AnalysisArguments(severities=[6])
