"""The analysis at ViT-B/16 shapes (224 px, patch 16, 12 layers x 12 heads, 1000 labels).

Nothing in the analysis may assume the tiny study's 28 px, 10 classes or 6 layers: a randomly
initialised ViT-B/16 and a perturbed copy go through every analysis and every figure on two
natural photos of other sizes (resized by a non-whole factor).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import natural_photos

from hf_vitrobust.analysis.conditions import DatasetBatches
from hf_vitrobust.analysis.run import _panel, analyze_models
from hf_vitrobust.models import tiny_vit
from hf_vitrobust.plots.analysis import plot_all

VIT_B16 = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
               num_attention_heads=12, intermediate_size=3072, num_labels=1000)  # fmt: skip


@pytest.mark.slow
def test_vit_b16_shapes_through_every_analysis(tmp_path, two_torch_threads):
    _run(tmp_path)


def _run(tmp_path):
    base, processor = tiny_vit(seed=0, **VIT_B16)
    base.eval()
    adv = copy.deepcopy(base)
    with torch.no_grad():
        for param in adv.vit.layers[6:].parameters():
            param.add_(0.2 * torch.randn_like(param) * param.std())
    adv.config.robustness = {"adversary": "worst_of_k", "num_views": 4,
                             "train_corruptions": ["gaussian_noise"]}  # fmt: skip
    photos = natural_photos()
    examples = [
        {"image": photos["astronaut"][:301, :333], "label": 0, "example_id": 11},
        {"image": photos["coffee"], "label": 0, "example_id": 12},  # 400 x 600
    ]
    batches = DatasetBatches(
        examples, processor, corruptions=["gaussian_noise"], severity=3, batch_size=2
    )
    # Labels = the base model's top-1 on the clean images, so the lens has correct images.
    clean = next(iter(batches.images("clean")))
    with torch.no_grad():
        predicted = base(pixel_values=clean["pixel_values"]).logits.argmax(-1).tolist()
    for example, label in zip(examples, predicted):
        example["label"] = label
    result = analyze_models(
        base, {"adv": adv}, batches, batches.conditions, n_resamples=1000, progress=False
    )
    assert result["conditions"] == ["clean", "noise"]
    assert result["models"]["base"] | {"name_or_path": None} == {
        "name_or_path": None, "role": "base", "num_layers": 12, "num_heads": 12
    }  # fmt: skip
    lens = result["logit_lens"]["clean"]["models"]["base"]
    assert len(lens["accuracy"]) == 13 and lens["accuracy"][-1]["value"] == 1.0
    assert lens["first_correct_layer"]["histogram_layers"] == list(range(1, 13))
    assert lens["first_correct_layer"]["count"] == 2
    assert lens["last_layer_max_abs_diff"] < 1e-3
    entropy = np.asarray(result["attention_entropy"]["noise"]["models"]["adv"]["all_queries"])
    assert entropy.shape == (12, 12) and (entropy <= math.log(197) + 1e-4).all()
    records = [r for r in result["comparisons"] if r["metric"].startswith("attention_entropy")]
    assert len(records) == 2 * 2 * (12 + 12 * 12)  # conditions x metrics x (layers + heads)
    assert {r["layer"] for r in records} == set(range(1, 13))
    assert {r["head"] for r in records} == {None, *range(12)}
    # Blocks 1..6 are untouched: identical entropies there, a change after.
    untouched = [r for r in records if r["layer"] <= 6 and r["metric"] == "attention_entropy"]
    assert all(r["estimate"] == 0.0 for r in untouched)
    assert len(result["cka"]["clean"]["adv"]["cls"]) == 13
    assert result["cka"]["clean"]["adv"]["patch_mean"][6] == pytest.approx(1.0)
    patching = result["patching"]["noise"]["adv"]["per_layer"]
    assert [p["layer"] for p in patching] == list(range(13))
    panel = _panel({"base": base, "adv": adv}, batches, processor, 1, torch.device("cpu"))
    assert panel["rollout"].shape == panel["grad_cam"].shape == (1, 2, 2, 14, 14)
    assert panel["images"].shape == (1, 2, 224, 224, 3)
    for path in plot_all(result, tmp_path, panel):
        assert path.stat().st_size > 1000
