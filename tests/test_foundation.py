"""The leaf modules every layer shares: seeding, io, images, formatting, configs."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from hf_vitrobust.configs import ComparisonArguments, DataArguments, name_list, parse_recipe
from hf_vitrobust.corruptions.measure import read_measurements
from hf_vitrobust.formatting import fmt, fmt_ci, fmt_p, slug
from hf_vitrobust.images import as_rgb_uint8
from hf_vitrobust.io import (
    SchemaMismatch,
    StageOutputError,
    StageOutputMissing,
    atomic_path,
    read_json,
    read_stage_output,
    write_json_atomic,
)
from hf_vitrobust.plots import save_figure
from hf_vitrobust.seeding import image_seed, stream_seed, view_words

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(u64, u64, st.sampled_from(["fog", "glass_blur"]), st.integers(1, 5))
def test_image_seed_is_a_pure_32_bit_function(seed, example_id, corruption, severity):
    a = image_seed(seed, example_id, corruption, severity)
    assert a == image_seed(np.uint64(seed), example_id, corruption, severity)
    assert 0 <= a < 2**32


def test_image_seed_separates_every_key_part():
    base = image_seed(0, 7, "fog", 3)
    others = {
        image_seed(1, 7, "fog", 3),
        image_seed(0, 8, "fog", 3),
        image_seed(0, 7, "frost", 3),
        image_seed(0, 7, "fog", 4),
        image_seed(0, 7, "fog", 3, stage="train"),
    }
    assert base not in others and len(others) == 5
    # Ids past 2**32 (streamed shards) are not folded onto small ids.
    assert image_seed(0, 2**32 + 7, "fog", 3) != base


@pytest.mark.parametrize("bad", [7.9, "7", True, None])
def test_seeds_refuse_non_integers(bad):
    with pytest.raises(TypeError, match="integer"):
        image_seed(bad, 1, "fog", 1)


def test_seeds_refuse_out_of_range():
    with pytest.raises(ValueError, match="2\\*\\*64"):
        image_seed(-1, 1, "fog", 1)
    with pytest.raises(ValueError):
        view_words(0, 0, 2**64, 0)


def test_view_words_and_stream_seed_are_deterministic():
    assert view_words(0, 1, 2, 3) == view_words(0, 1, 2, 3)
    assert view_words(0, 1, 2, 3) != view_words(0, 1, 2, 4)
    assert stream_seed(0, "shuffle", 1) != stream_seed(0, "shuffle", 2)


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    path = write_json_atomic(
        {"a": float("nan"), "b": np.float32(1.5), "c": (1, 2)}, tmp_path / "x.json"
    )
    assert read_json(path) == {"a": None, "b": 1.5, "c": [1, 2]}
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert read_json(path)["b"] == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_save_figure_writes_atomically_and_closes(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    path = save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]
    assert not plt.fignum_exists(fig.number)


def test_read_measurements_goes_through_read_json(tmp_path):
    assert read_measurements(tmp_path / "none.json") == {}
    (tmp_path / "half.json").write_text('{"a": ')
    with pytest.raises(StageOutputError, match="half.json"):
        read_measurements(tmp_path / "half.json")


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(StageOutputMissing, match="nope.json"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "half.json").write_text('{"a": ')
    with pytest.raises(StageOutputError, match="half.json.*half-written"):
        read_json(tmp_path / "half.json")


def test_stage_output_reader_checks_schema_version_and_fields(tmp_path):
    path = tmp_path / "results.json"
    kw = dict(schema="demo", versions=(2,), required={"cells": list}, rerun="rerun the demo")
    path.write_text(json.dumps({"schema": "demo", "schema_version": 2, "cells": []}))
    assert read_stage_output(path, **kw)["cells"] == []
    for body, message in [
        ({"schema": "other", "schema_version": 2, "cells": []}, "expected 'demo'"),
        ({"schema": "demo", "schema_version": 1, "cells": []}, "version 1"),
        ({"schema": "demo", "schema_version": 2}, "lacks the field 'cells'"),
        ({"schema": "demo", "schema_version": 2, "cells": {}}, "should be list"),
    ]:
        path.write_text(json.dumps(body))
        with pytest.raises(SchemaMismatch, match=message):
            read_stage_output(path, **kw)


@pytest.mark.parametrize(
    "image, expected",
    [
        (np.full((9, 9), 200, np.uint16), 200),  # 16-bit file holding 8-bit values
        (np.full((9, 9), 65535, np.uint16), 255),
        (np.full((9, 9), 0.5, np.float32), 128),
        (np.full((9, 9, 1), 7, np.uint8), 7),
        (np.zeros((9, 9, 4), np.uint8), 255),  # fully transparent -> white
        (np.ones((9, 9), bool), 255),
    ],
)
def test_one_rgb_policy(image, expected):
    out = as_rgb_uint8(image)
    assert out.shape == (9, 9, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert int(out[0, 0, 0]) == expected


def test_rgb_policy_is_the_same_for_pil_and_numpy():
    array = np.random.default_rng(0).integers(0, 65535, (12, 10), dtype=np.uint16)
    assert np.array_equal(as_rgb_uint8(Image.fromarray(array)), as_rgb_uint8(array))
    rgba = np.random.default_rng(1).integers(0, 255, (12, 10, 4), dtype=np.uint8)
    assert np.array_equal(as_rgb_uint8(Image.fromarray(rgba, "RGBA")), as_rgb_uint8(rgba))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((3, 9, 9), np.uint8), "channels-first"),
        (np.full((9, 9), -1, np.int16), "negative"),
        (np.full((9, 9), np.nan), "NaN"),
        (np.zeros((4, 4, 3), np.uint8), "at least 8x8"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_rgb_policy_errors_say_how_to_fix(image, message):
    with pytest.raises(ValueError, match=message):
        as_rgb_uint8(image, min_side=8)


def test_formatting():
    assert slug("Top-1 (blur) Δ") == "top-1-blur"
    assert fmt(0.1234, 2, 100, sign=True) == "+12.34"
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a" and fmt(True) == "n/a"
    assert fmt_ci(1, 0, None) == "1.000" and fmt_ci(1, 0, 2, 1) == "1.0 [0.0, 2.0]"
    assert fmt_p(0.0001) == "p<0.001" and fmt_p(0.5) == "p=0.500"


@dataclass
class _Recipe(ComparisonArguments):
    output_dir: str = "out"


def test_name_list_is_the_one_recipe_list_normaliser():
    assert name_list(None) == [] and name_list(3) == [3] and name_list([1, 2]) == [1, 2]
    assert name_list("blur, fog,,") == ["blur", "fog"]
    assert name_list(["blur,fog", " None ", "", "noise"]) == ["blur", "fog", "noise"]
    assert name_list("none") == []


def test_parse_recipe_yaml_cli_and_scalars_for_lists(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base_model: b\ncorruptions: blur\nseverities: 3\nmax_eval_examples: 5\n")
    args, data = parse_recipe((_Recipe, DataArguments), [str(recipe), "--seed", "4"])
    assert (args.base_model, args.corruptions, args.severities, args.seed) == (
        "b",
        ["blur"],
        [3],
        4,
    )
    assert data.max_eval_examples == 5


def test_parse_recipe_old_names_warn_and_still_work(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("models: [b, f1, f2]\nseverity: 2\ngroups: [noise, blur]\n")
    with pytest.warns(FutureWarning, match="'models' is deprecated"):
        (args,) = parse_recipe((_Recipe,), [str(recipe)])
    assert (args.base_model, args.finetuned_models) == ("b", ["f1", "f2"])
    assert (args.severities, args.corruptions) == ([2], ["noise", "blur"])
    with pytest.warns(FutureWarning, match="eval_severity"):
        (args,) = parse_recipe((_Recipe,), ["--eval_severity", "4"])
    assert args.severities == [4]


def test_parse_recipe_refuses_old_and_new_name_together(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("severity: 2\nseverities: [3]\n")
    with warnings.catch_warnings(), pytest.raises(ValueError, match="not also the deprecated"):
        warnings.simplefilter("ignore")
        parse_recipe((_Recipe,), [str(recipe)])


def test_parse_recipe_unknown_keys_suggest_the_right_one(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sevrities: [3]\n")
    with pytest.raises(ValueError, match="did you mean 'severities'"):
        parse_recipe((_Recipe,), [str(recipe)])
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        parse_recipe((_Recipe,), ["--batch_sise", "3"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse_recipe((_Recipe,), [str(tmp_path / "missing.yaml")])
