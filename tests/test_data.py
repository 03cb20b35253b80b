"""Data pipeline: sources, decoding/validation, preprocessing, corruption views, collation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vitrobust import constants, data, images, seeding
from hf_vitrobust.data import (
    BadImageError,
    BadImageTracker,
    CorruptionCollator,
    CorruptionViews,
    ProcessorSpec,
    TooManyBadImagesError,
    check_labels,
    cli,
    decode_image,
    find_fashion_mnist_dir,
    label_names,
    load_image_dataset,
    sources,
    validate_labels,
)
from hf_vitrobust.models import tiny_image_processor, tiny_vit_config

# ---------------------------------------------------------------------------- image factories


def _pattern(height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth RGB pattern (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 90)], axis=2
    ).astype(np.uint8)


def _save(image: Image.Image, path: Path, fmt: str, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


@pytest.fixture()
def image_folder(tmp_path: Path) -> dict[str, Path]:
    """An imagefolder with one image of each awkward kind, and one corrupt JPEG."""
    root = tmp_path / "folder"
    rgb = Image.fromarray(_pattern())
    files = {}
    files["rgb"] = _save(rgb, root / "cat" / "rgb.jpg", "JPEG", quality=95)
    files["cmyk"] = _save(rgb.convert("CMYK"), root / "cat" / "cmyk.jpg", "JPEG", quality=95)
    gray16 = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)
    files["gray16"] = _save(Image.fromarray(gray16), root / "cat" / "gray16.png", "PNG")
    rgba = np.dstack([_pattern(), np.tile(np.array([0, 255], np.uint8), (24, 16))])
    files["rgba"] = _save(Image.fromarray(rgba, "RGBA"), root / "dog" / "rgba.png", "PNG")
    files["palette"] = _save(rgb.convert("P"), root / "dog" / "palette.png", "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise for display
    files["exif"] = _save(rgb, root / "dog" / "exif.jpg", "JPEG", quality=95, exif=exif)
    # A deliberately corrupt JPEG: a valid header, then the file stops mid-scan.
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=95)
    (root / "dog" / "broken.jpg").write_bytes(buffer.getvalue()[:200])
    files["broken"] = root / "dog" / "broken.jpg"
    files["root"] = root
    return files


def _write_parquet(path: Path, n: int, start: int = 0, image_col="image", label_col="label"):
    import datasets

    images = []
    for i in range(start, start + n):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), i % 256, np.uint8)).save(buffer, "PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features(
        {image_col: datasets.Image(), label_col: datasets.ClassLabel(names=["a", "b", "c"])}
    )
    ds = datasets.Dataset.from_dict(
        {image_col: images, label_col: [i % 3 for i in range(start, start + n)]}, features=features
    )
    ds.to_parquet(str(path))
    return path


# ---------------------------------------------------------------------------- Fashion-MNIST


def test_find_fashion_mnist_dir_env_and_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(tmp_path))
    assert find_fashion_mnist_dir() is None
    assert cli.main(["--check-fashion-mnist"]) == 1
    for pair in data.FASHION_MNIST_FILES.values():
        for name in pair:
            (tmp_path / name).write_bytes(b"")
    assert find_fashion_mnist_dir() == tmp_path
    assert cli.main(["--check-fashion-mnist"]) == 0
    assert str(tmp_path) in capsys.readouterr().out


def test_fashion_mnist_from_idx_files(fashion_mnist_dir):
    import datasets

    ds = load_image_dataset("fashion_mnist", "train", max_examples=50)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 50
    assert ds.column_names == ["image", "label", "example_id"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert label_names(ds) == list(data.FASHION_MNIST_CLASSES)
    # A stratified sample (the split is balanced: 5 per class), ids = rows of the IDX files.
    ids = ds["example_id"][:]
    assert ids == sorted(ids) and ids != list(range(50)) and max(ids) < 60_000
    assert np.bincount(ds["label"][:], minlength=10).tolist() == [5] * 10
    raw = sources._read_idx(fashion_mnist_dir / "train-images-idx3-ubyte.gz")
    raw_labels = sources._read_idx(fashion_mnist_dir / "train-labels-idx1-ubyte.gz")
    assert ds["label"][:] == raw_labels[ids].tolist()
    decoded = decode_image(ds[7]["image"])
    assert decoded.shape == (28, 28, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 1], raw[ids[7]])
    # "validation" reads the t10k files; a streamed subset: the first 20 out of the shuffle
    # buffer, the same examples (same ids, same pixels) on every read.
    test = load_image_dataset("fashion_mnist", "validation", streaming=True, max_examples=20)
    test_raw = sources._read_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")
    rows = list(test)
    stream_ids = [r["example_id"] for r in rows]
    assert len(set(stream_ids)) == 20 and stream_ids == [r["example_id"] for r in test]
    assert stream_ids != list(range(20))
    np.testing.assert_array_equal(decode_image(rows[3]["image"])[..., 0], test_raw[stream_ids[3]])
    full = load_image_dataset("fashion_mnist", "test")
    assert len(full) == 10_000 and np.bincount(full["label"]).tolist() == [1000] * 10
    assert full["example_id"][:] == list(range(10_000))


def test_fashion_mnist_falls_back_to_hub_with_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path)
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    # HF_HUB_OFFLINE=1 (conftest): the Hub fallback is attempted and fails with advice.
    with pytest.raises(ConnectionError, match="zalando-datasets/fashion_mnist") as info:
        load_image_dataset("fashion_mnist", "train")
    assert "imagefolder" in str(info.value) and "parquet" in str(info.value)


def test_hub_id_unreachable_suggests_local_alternatives():
    with pytest.raises(ConnectionError, match="local data instead"):
        load_image_dataset("ILSVRC/imagenet-1k", "train")


# ---------------------------------------------------------------------------- decoding


def test_decode_awkward_images(image_folder):
    original = _pattern()
    rgb = decode_image(str(image_folder["rgb"]))
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert np.abs(rgb.astype(int) - original).mean() < 3
    cmyk = decode_image({"bytes": image_folder["cmyk"].read_bytes(), "path": None})
    assert cmyk.shape == (24, 32, 3) and np.abs(cmyk.astype(int) - original).mean() < 4
    gray16 = decode_image(str(image_folder["gray16"]))
    expected16 = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)
    expected = np.rint(expected16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(gray16, np.repeat(expected[..., None], 3, axis=2))
    rgba = decode_image(str(image_folder["rgba"]))
    transparent = np.tile(np.array([True, False]), (24, 16))
    assert (rgba[transparent] == 255).all()  # composited on white, like transformers
    np.testing.assert_array_equal(rgba[~transparent], original[~transparent])
    palette = decode_image(str(image_folder["palette"]))
    np.testing.assert_array_equal(
        palette, np.asarray(Image.open(image_folder["palette"]).convert("RGB"))
    )
    rotated = decode_image(str(image_folder["exif"]))
    assert rotated.shape == (32, 24, 3)  # EXIF orientation 6 applied
    expected_rot = np.rot90(original, k=-1)
    assert np.abs(rotated.astype(int) - expected_rot).mean() < 3
    # Arrays: grayscale, float [0, 1], 16-bit.
    assert decode_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert decode_image(np.ones((5, 6, 3), np.float32)).max() == 255
    assert decode_image(np.full((2, 2), 65535, np.uint16)).max() == 255


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_16bit_images_both_kinds():
    """The one RGB policy (images.as_rgb_uint8): 16-bit images holding 8-bit values keep them;
    full-range 16-bit images are scaled by 255 / 65535. (Before phase 1, decode divided every
    16-bit image by 257, so a 16-bit PNG of 0..255 values came out black.)"""
    small = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint16)  # values <= 255
    full = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)  # up to 65195
    scaled = np.rint(full / 257.0).astype(np.uint8)
    for pixels, expected in ((small, small.astype(np.uint8)), (full, scaled)):
        rgb = np.repeat(expected[..., None], 3, axis=2)
        png = _png_bytes(Image.fromarray(pixels))
        assert Image.open(io.BytesIO(png)).mode.startswith("I")  # really stored as 16-bit
        np.testing.assert_array_equal(decode_image(png), rgb)
        np.testing.assert_array_equal(decode_image(pixels), rgb)
    assert decode_image(np.full((2, 2), 200, np.uint16)).max() == 200


def test_decode_uses_the_one_rgb_policy(image_folder):
    """Decoded files and in-memory images give the pixels images.as_rgb_uint8 gives."""
    for key in ("rgb", "cmyk", "gray16", "rgba", "palette"):
        with Image.open(image_folder[key]) as image:
            image.load()
            np.testing.assert_array_equal(
                decode_image(str(image_folder[key])), images.as_rgb_uint8(image)
            )
    rgba = np.dstack([_pattern(), np.full((24, 32), 128, np.uint8)])
    np.testing.assert_array_equal(decode_image(rgba), images.as_rgb_uint8(rgba))
    # What the policy refuses is a bad image for the pipeline (skipped and counted).
    for refused in (
        np.full((2, 2), np.nan, np.float32),
        np.full((2, 2), -1, np.int16),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((3, 8, 8), np.uint8),  # channels-first
    ):
        with pytest.raises(BadImageError):
            decode_image(refused)


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not an image", {"bytes": None, "path": None}, "/no/such/file.png", 3.5],
)
def test_decode_bad_values_raise_bad_image_error(value):
    with pytest.raises(BadImageError):
        decode_image(value)


def test_decode_truncated_jpeg(image_folder):
    with pytest.raises(BadImageError):
        decode_image(image_folder["broken"].read_bytes())


# ---------------------------------------------------------------------------- imagefolder + skip


def test_imagefolder_skips_and_reports_the_corrupt_jpeg(image_folder):
    ds = load_image_dataset(str(image_folder["root"]), "train")
    assert label_names(ds) == ["cat", "dog"]
    assert len(ds) == 7 and ds["example_id"][:] == list(range(7))
    paths = [Path(row["image"]["path"]).name for row in ds]
    broken_id = paths.index("broken.jpg")
    collator = CorruptionCollator(tiny_image_processor(28), num_labels=2)
    batch = collator([ds[i] for i in range(len(ds))])
    assert batch["pixel_values"].shape == (6, 3, 28, 28)
    assert batch["num_skipped"] == 1 and batch["skipped_example_ids"] == [broken_id]
    assert broken_id not in batch["example_ids"].tolist()
    skipped = batch["skipped_images"][broken_id]
    assert skipped.path == str(image_folder["broken"]) and "runcated" in skipped.reason
    # The main process counts what it consumed; one bad image of 7 is above 1%.
    tracker = BadImageTracker(max_bad_fraction=0.01, min_examples=1000)
    tracker.record_batch(batch)
    assert (tracker.seen, tracker.bad, tracker.first_bad_ids) == (7, 1, [broken_id])
    tracker.check()  # below min_examples: the run goes on
    summary = tracker.finish()  # never raises: the caller saves its model first
    assert summary["passed"] is False and summary["first_bad"][0]["path"] == skipped.path
    with pytest.raises(TooManyBadImagesError, match=r"id \d+ \(.*broken\.jpg: .*runcated"):
        tracker.check(final=True)


# ---------------------------------------------------------------------------- parquet, columns


def test_parquet_streamed_with_custom_columns(tmp_path):
    import datasets

    files = [
        str(_write_parquet(tmp_path / f"part{i}.parquet", 10, 10 * i, "img", "fine"))
        for i in range(3)
    ]
    with pytest.raises(ValueError, match=r"no image column 'image'; its columns are \['img'"):
        load_image_dataset(files, streaming=True)
    stream = load_image_dataset(files, streaming=True, image_column="img", label_column="fine")
    assert isinstance(stream, datasets.IterableDataset) and stream.n_shards == 3
    rows = list(stream)
    ids = [r["example_id"] for r in rows]
    assert len(set(ids)) == 30
    assert ids[:2] == [0, 1] and ids[10] == data.STREAM_ID_STRIDE
    assert label_names(stream) == ["a", "b", "c"]
    # The values arrive undecoded and decode to the written pixels.
    assert [int(decode_image(r["image"])[0, 0, 0]) for r in rows] == list(range(30))
    # Worker sharding keeps each example's id (ids are not per-worker counters).
    collator = CorruptionCollator(tiny_image_processor(8))
    loader = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2, collate_fn=collator)
    got = sorted(i for batch in loader for i in batch["example_ids"].tolist())
    assert got == sorted(ids)
    # Map-style parquet: row indices as ids (kept by the subset); max_examples in both modes.
    table = load_image_dataset(files[0], image_column="img", label_column="fine", max_examples=4)
    assert len(table) == 4 and set(table["example_id"][:]) < set(range(10))
    assert sorted(set(table["label"][:])) == [0, 1, 2]
    assert (
        len(
            list(
                load_image_dataset(
                    files, streaming=True, image_column="img", label_column="fine", max_examples=5
                )
            )
        )
        == 5
    )


def test_saved_dataset_and_imagefolder_streamed(tmp_path, image_folder):
    import datasets

    saved = tmp_path / "saved"
    load_image_dataset(str(_write_parquet(tmp_path / "train.parquet", 12))).save_to_disk(saved)
    stream = load_image_dataset(str(saved), streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert [r["example_id"] for r in stream] == list(range(12))  # same ids as map-style
    folder = load_image_dataset(str(image_folder["root"]), streaming=True)
    assert isinstance(folder, datasets.IterableDataset)
    rows = list(folder)
    assert len(rows) == 7 and len({r["example_id"] for r in rows}) == 7
    assert label_names(folder) == ["cat", "dog"]
    with pytest.raises(ValueError, match="no split 'test'"):
        load_image_dataset(str(image_folder["root"]), "test")
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        load_image_dataset(str(tmp_path / "missing.parquet"))


# ---------------------------------------------------------------------------- labels


def test_label_checks(tmp_path):
    names = ["a", "b", "c"]
    check_labels(names, tiny_vit_config(num_labels=3))
    check_labels(names, tiny_vit_config(id2label={0: "a", 1: "b", 2: "c"}))
    with pytest.raises(ValueError, match="10 output classes but the dataset has 3"):
        check_labels(names, tiny_vit_config(num_labels=10))
    with pytest.raises(ValueError, match="class names differ"):
        check_labels(names, tiny_vit_config(id2label={0: "a", 1: "c", 2: "b"}))
    ds = load_image_dataset(str(_write_parquet(tmp_path / "x.parquet", 6)))
    validate_labels(ds, 3)
    with pytest.raises(ValueError, match="3 classes but the model has num_labels=2"):
        validate_labels(ds, 2)
    collator = CorruptionCollator(tiny_image_processor(8), num_labels=2)
    with pytest.raises(ValueError, match="Example 2 .*has label 2, outside"):
        collator([ds[i] for i in range(3)])
    # Values beyond the ClassLabel (unchecked in parquet) are found by the scan, with their ids,
    # also through a shuffled index mapping.
    import datasets

    raw = datasets.Dataset.from_dict(
        {"image": [ds[0]["image"]] * 4, "label": [0, 1, 5, 2]},
        features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
    )
    raw.to_parquet(str(tmp_path / "bad_labels.parquet"))
    bad = load_image_dataset(str(tmp_path / "bad_labels.parquet"), class_names=names)
    with pytest.raises(ValueError, match=r"example ids \[2\], labels \[5\]"):
        validate_labels(bad.shuffle(seed=0), 3)


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size", [28, 224])
def test_processor_spec_matches_the_processor(size):
    processor = tiny_image_processor(size)
    spec = ProcessorSpec.from_processor(processor)
    assert spec.size == (size, size) and spec.mean == pytest.approx((0.286,) * 3)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(3)]
    ours = spec.to_tensor(images)
    theirs = processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")
    assert ours.shape == theirs["pixel_values"].shape == (3, 3, size, size)
    torch.testing.assert_close(ours, theirs["pixel_values"], atol=1e-5, rtol=0)
    torch.testing.assert_close(spec.normalize(spec.denormalize(ours)), ours)


@pytest.mark.parametrize("name", ["vit", "deit", "clip"])
def test_processor_spec_of_hub_style_processors(name):
    """ViT-B/16 (224, mean .5), DeiT (256 then crop 224, bicubic), CLIP (short side + crop)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil
    from transformers.models.vit import ViTImageProcessorPil

    processor = {
        "vit": ViTImageProcessorPil,
        "deit": DeiTImageProcessorPil,
        "clip": CLIPImageProcessorPil,
    }[name]()
    spec = ProcessorSpec.from_processor(processor)
    assert spec.size == (224, 224)
    if name == "vit":
        assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(300, 451, 3), (500, 333, 3)]
    ]
    theirs = processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")
    torch.testing.assert_close(spec.to_tensor(images), theirs["pixel_values"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- corruption views


def test_draws_are_pure_functions_and_eval_differs():
    views = CorruptionViews("low_frequency", severities=(2, 4), seed=3)
    again = CorruptionViews("low_frequency", severities=(2, 4), seed=3)
    keys = [(e, i, v) for e in range(2) for i in range(50) for v in range(3)]
    draws = [views.draw(*key) for key in keys]
    assert draws == [again.draw(*key) for key in keys]
    assert {d[0] for d in draws} == set(views.names) and {d[1] for d in draws} == {2, 4}
    assert len({d[2] for d in draws}) == len(draws)  # distinct corruption seeds
    # Each argument changes the draw; the eval stage and another seed give other instances.
    assert views.draw(0, 1, 0) != views.draw(1, 1, 0) != views.draw(1, 2, 0)
    evals = [views.for_eval().draw(*key) for key in keys]
    other = [CorruptionViews("low_frequency", (2, 4), seed=4).draw(*key) for key in keys]
    assert sum(a[2] == b[2] for a, b in zip(draws, evals)) == 0
    assert sum(a[2] == b[2] for a, b in zip(draws, other)) == 0
    with pytest.raises(ValueError):
        CorruptionViews("low_frequency", severities=(0,))
    # Pinned values: a change here silently changes every resumed run's corruptions.
    pinned = CorruptionViews(["gaussian_blur", "gaussian_noise"], seed=0)
    # (Pinned again in phase 1, when the draw moved to seeding.view_words.)
    assert pinned.draw(0, 0, 0) == ("gaussian_blur", 1, 4068361300)
    assert pinned.draw(3, 2**32 + 5, 1) == ("gaussian_blur", 1, 2298926496)
    assert pinned.for_eval().draw(0, 0, 0) == ("gaussian_blur", 1, 2598593336)


def test_draw_is_a_pure_function_of_its_arguments_matching_view_words():
    """One seed derivation: a view's draw is seeding.view_words(seed, epoch, id, view, stage)."""
    views = CorruptionViews("low_frequency,gaussian_noise", severities=(1, 3, 5), seed=11)
    assert views.severities == (1, 3, 5) and "gaussian_noise" in views.names
    assert CorruptionViews("low_frequency").severities == constants.SEVERITIES
    for stage, v in (("train", views), ("eval", views.for_eval())):
        assert v.stage == stage
        for key in [(0, 0, 0), (2, 7, 3), (1, 2**32 + 9, 0), (5, 2**63, 1)]:
            words = seeding.view_words(11, *key, stage=stage)
            expected = (
                v.names[words[0] % len(v.names)],
                v.severities[words[1] % len(v.severities)],
                words[2] >> 32,
            )
            assert v.draw(*key) == v.draw(*key) == expected
    # The draw depends on nothing else: not on earlier draws, not on the object.
    fresh = CorruptionViews(["low_frequency", "gaussian_noise"], (1, 3, 5), seed=11)
    assert [fresh.draw(1, i, 0) for i in range(5)][::-1] == [
        views.draw(1, i, 0) for i in reversed(range(5))
    ]
    with pytest.raises(ValueError):
        views.draw(0, -1, 0)
    with pytest.raises(TypeError):
        views.draw(0.5, 0, 0)
    with pytest.raises(ValueError, match="stage"):
        CorruptionViews("low_frequency", stage="test")


def test_collator_worst_of_k_views(fashion_mnist_dir):
    ds = load_image_dataset("fashion_mnist", "train", max_examples=6)
    views = CorruptionViews(["gaussian_noise", "gaussian_blur"], severities=(3, 5), seed=0)
    collator = CorruptionCollator(tiny_image_processor(28), views=views, k=4)
    batch = collator([ds[i] for i in range(6)])
    assert batch["views"].shape == (6, 4, 3, 28, 28) and batch["views"].dtype == torch.float32
    assert batch["pixel_values"].shape == (6, 3, 28, 28)
    assert batch["view_severities"].shape == (6, 4)
    names = batch["view_corruptions"]
    assert len(names) == 6 and all(len(row) == 4 for row in names)
    assert [[views.names[j] for j in row] for row in batch["view_corruption_ids"].tolist()] == names
    for i in range(6):
        for v in range(4):
            name, severity, _ = views.draw(0, ds[i]["example_id"], v)
            assert (names[i][v], int(batch["view_severities"][i, v])) == (name, severity)
    # Views are corrupted versions of the clean image, not copies of it.
    diff = (batch["views"] - batch["pixel_values"][:, None]).abs().flatten(2).mean(-1)
    assert (diff > 0.01).all()
    # Same epoch: identical; next epoch: new draws. tensors_only: no lists.
    torch.testing.assert_close(collator([ds[i] for i in range(6)])["views"], batch["views"])
    collator.set_epoch(1)
    assert not torch.equal(collator([ds[i] for i in range(6)])["views"], batch["views"])
    tensor_batch = CorruptionCollator(
        tiny_image_processor(28), views=views, k=2, tensors_only=True
    )([ds[i] for i in range(6)])
    assert all(isinstance(v, torch.Tensor) for v in tensor_batch.values())
    assert tensor_batch["num_skipped"].shape == (6,)
