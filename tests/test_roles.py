"""Model roles, control matching and unique model keys."""

from __future__ import annotations

import re

import pytest

from hf_vitrobust.roles import (
    ADVERSARIAL,
    BASE,
    CLEAN_CONTROL,
    RANDOM_VIEW_CONTROL,
    Pair,
    check_listed_once,
    comparison_pairs,
    match_controls,
    model_keys,
    role_of,
)

LOW = ["defocus_blur", "glass_blur"]


def _rob(adversary, corruptions=(), **kw):
    return {
        "adversary": adversary,
        "train_corruptions": list(corruptions),
        "base_model": "b",
        "seed": 0,
        "max_steps": 100,
        **kw,
    }


@pytest.mark.parametrize(
    "robustness, role",
    [
        (None, BASE),
        ({}, BASE),
        (_rob("none"), CLEAN_CONTROL),
        (_rob("random_view", LOW), RANDOM_VIEW_CONTROL),
        (_rob("worst_of_k", LOW, num_views=1), RANDOM_VIEW_CONTROL),
        (_rob("worst_of_k", LOW, num_views=4), ADVERSARIAL),
        (_rob("pgd"), ADVERSARIAL),
    ],
)
def test_role_of(robustness, role):
    assert role_of(robustness) == role


def test_controls_match_on_corruptions_base_seed_and_steps():
    models = {
        "clean": _rob("none"),
        "rv_high": _rob("random_view", ["gaussian_noise"]),
        "rv_low": _rob("random_view", LOW[::-1]),
        "low": _rob("worst_of_k", LOW, num_views=4),
        "high": _rob("worst_of_k", ["gaussian_noise"], num_views=4),
        "other_seed": _rob("worst_of_k", LOW, num_views=4, seed=1),
    }
    controls = match_controls(models)
    assert set(controls) == {"low", "high", "other_seed"}
    assert (controls["low"].clean, controls["low"].random_view) == ("clean", "rv_low")
    assert controls["high"].random_view == "rv_high" and controls["high"].primary == "clean"
    assert (controls["other_seed"].clean, controls["other_seed"].random_view) == (None, None)


def test_controls_must_share_optimizer_and_data():
    opt = {"learning_rate": 5e-4, "optimizer": "adamw_torch"}
    data = {"name": "fashion_mnist", "split": "train"}
    models = {
        "other_lr": _rob("none", optimization={**opt, "learning_rate": 1e-3}, dataset=data),
        "other_data": _rob("none", optimization=opt, dataset={**data, "name": "local:photos"}),
        "clean": _rob("none", optimization=opt, dataset=data),
        "low": _rob("worst_of_k", LOW, num_views=4, optimization=opt, dataset=data),
    }
    assert match_controls(models)["low"].clean == "clean"


def test_model_keys_are_unique_and_readable():
    assert model_keys(["out/low_frequency", "out/high_frequency/"]) == [
        "low_frequency",
        "high_frequency",
    ]
    assert model_keys(["runA/final", "runB/final", "x/final2"]) == [
        "runA/final",
        "runB/final",
        "final2",
    ]
    assert model_keys(["a", "b"], ["lf", "hf"]) == ["lf", "hf"]
    with pytest.raises(ValueError, match="not unique"):
        model_keys(["a", "b"], ["x", "x"])
    with pytest.raises(ValueError, match="listed twice: 'final' and 'final'"):
        model_keys(["final", "final"])
    with pytest.raises(ValueError, match="reserved"):
        model_keys(["base"])  # a Hub id: no longer key to give it
    with pytest.raises(ValueError, match="reserved"):
        model_keys(["a", "b"], ["base", "hf"])


def test_a_fine_tune_in_a_folder_named_base_gets_a_longer_key(tmp_path, monkeypatch):
    assert model_keys(["exp1/base"]) == ["exp1/base"]
    assert model_keys(["exp1/base", "exp2/lf"]) == ["exp1/base", "lf"]
    (tmp_path / "exp1" / "base").mkdir(parents=True)
    assert model_keys([str(tmp_path / "exp1" / "base")]) == ["exp1/base"]
    monkeypatch.chdir(tmp_path / "exp1")
    assert model_keys(["./base"]) == ["exp1/base"]
    assert model_keys(["base"]) == ["exp1/base"]  # a folder here, not a Hub id


def test_one_folder_spelled_twice_is_named_not_keyed(tmp_path, monkeypatch):
    final = tmp_path / "a" / "final"
    final.mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(f"listed twice: '{final}' and '{final}/'")):
        model_keys([str(final), f"{final}/"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="listed twice: 'a/final' and './a/../a/final'"):
        check_listed_once(["a/final", "./a/../a/final"])
    check_listed_once(["org/model", "org/model2", "a/final"])  # Hub ids as given
    with pytest.raises(ValueError, match="listed twice: 'org/model' and 'org/model'"):
        check_listed_once(["org/model", "org/model"])


def test_every_model_against_the_base_and_adversarial_ones_against_their_controls():
    pairs = comparison_pairs(
        {
            "runA/final": _rob("worst_of_k", LOW, num_views=4),
            "clean": _rob("none"),
            "rv": _rob("random_view", LOW),
            "runB/final": _rob("worst_of_k", ["gaussian_noise"], num_views=4),
            "old": {},  # no robustness record: compared with the base only
        }
    )
    assert pairs == [
        Pair("runA/final", "base", "base"),
        Pair("runA/final", "clean", "clean_control"),
        Pair("runA/final", "rv", "random_view_control"),
        Pair("clean", "base", "base"),
        Pair("rv", "base", "base"),
        Pair("runB/final", "base", "base"),
        Pair("runB/final", "clean", "clean_control"),  # no random-view control on its corruptions
        Pair("old", "base", "base"),
    ]
    # The base key is the caller's; an empty study has no pairs.
    assert comparison_pairs({"ft": _rob("none")}, base="vit") == [Pair("ft", "vit", "base")]
    assert comparison_pairs({}) == []
