"""Bad images on a user's own folder: every odd file decodes right, every bad file is counted
once (with its path) across workers, prefetch, epochs, resume and processes; the early check."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import natural_photos
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hf_vitrobust.data import (
    BAD_IMAGES_FILE,
    BadImage,
    BadImageCallback,
    BadImageTracker,
    CorruptionCollator,
    TooManyBadImagesError,
    cli,
    decode_examples,
    decode_image,
    load_image_dataset,
)
from hf_vitrobust.models import tiny_image_processor


def _by_name(root: Path) -> dict[str, dict]:
    ds = load_image_dataset(str(root))
    return {Path(row["image"]["path"]).name: row for row in ds}


# ---------------------------------------------------------------------------- decoding


def test_every_odd_file_of_the_photo_folder_decodes_to_the_right_pixels(photo_folder):
    root, made = photo_folder
    rows = _by_name(root)
    crop = np.ascontiguousarray(natural_photos()["coffee"][:120, :150]).astype(int)
    grey = crop.mean(axis=2)
    # The fixture wrote grey as 0..255 and as 0..65535 in 16 bits: kept, and divided by 257.
    expected_16 = {
        "odd_16bit_8bit_values.png": grey.astype(np.uint16),
        "odd_16bit_full_range.png": np.rint((grey * 257).astype(np.uint16) / 257),
    }

    def decoded(name: str) -> np.ndarray:
        out = decode_image(rows[name]["image"])
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        return out.astype(int)

    assert np.abs(decoded("odd_cmyk.jpg") - crop).mean() < 4
    # Alpha 128 composited on white: v * 128/255 + 255 * 127/255.
    expected_rgba = np.rint(crop * 128 / 255 + 127).astype(int)
    assert np.abs(decoded("odd_rgba.png") - expected_rgba).max() <= 1
    # The GIF holds PIL's web-palette dithering of the crop: exactly those colours.
    web = Image.fromarray(crop.astype(np.uint8)).convert("P").convert("RGB")
    np.testing.assert_array_equal(decoded("odd_palette.gif"), np.asarray(web))
    for name, expected in expected_16.items():
        np.testing.assert_array_equal(decoded(name), np.repeat(expected[..., None], 3, axis=2))
        assert np.abs(decoded(name) - grey[..., None]).max() <= 1  # not black, not wrapped
    np.testing.assert_array_equal(decoded("odd_8x8.png"), crop[:8, :8])
    rotated = decoded("odd_exif_rotated.jpg")
    assert rotated.shape == (150, 120, 3)  # EXIF orientation 6 applied: 90 degrees clockwise
    assert np.abs(rotated - np.rot90(crop, -1)).mean() < 4
    assert len(made["odd"]) == 7


@pytest.mark.parametrize("scale", [1, 257])
def test_16bit_colour_png_and_tiff_use_their_range(tmp_path, scale):
    """PIL truncates 16-bit colour images to their high bytes: a 16-bit RGB PNG of 0..255 values
    came out black. Both kinds now keep their pixels, EXIF orientation included."""
    rgb = (np.arange(24 * 32 * 3).reshape(24, 32, 3) % 256).astype(np.uint16)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"deep{scale}{suffix}"
        cv2.imwrite(str(path), (rgb * scale)[..., ::-1])  # OpenCV writes BGR
        assert Image.open(path).mode == "RGB"  # PIL's view: 8 bits
        np.testing.assert_array_equal(decode_image(str(path)), rgb.astype(np.uint8))
        np.testing.assert_array_equal(
            decode_image({"bytes": path.read_bytes(), "path": None}), rgb.astype(np.uint8)
        )
    rgba = np.dstack([rgb * scale, np.full((24, 32), 65535, np.uint16)])
    cv2.imwrite(str(tmp_path / "deep.png"), rgba[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(decode_image(str(tmp_path / "deep.png")), rgb.astype(np.uint8))


def test_decode_examples_reports_bad_files_with_paths(photo_folder):
    root, made = photo_folder
    ds = load_image_dataset(str(root))
    spec = CorruptionCollator(tiny_image_processor(32)).spec
    images, labels, ids, bad = decode_examples(list(ds), spec, num_labels=6)
    assert len(images) == len(labels) == len(ids) == len(ds) - 2
    assert all(image.shape == (32, 32, 3) for image in images)
    assert sorted(item.path for item in bad.values()) == sorted(map(str, made["bad"]))
    assert all(isinstance(item, BadImage) and item.reason for item in bad.values())
    # datasets' dict of columns gives the same result.
    columns = ds[:10]
    assert decode_examples(columns, spec)[2] == decode_examples(list(ds)[:10], spec)[2]
    with pytest.raises(ValueError, match=r"Example \d+ \(.*\) has label 3, outside \[0, 3\)"):
        decode_examples(list(ds), spec, num_labels=3)


# ---------------------------------------------------------------------------- counting once


def _loader(ds, **kw):
    collator = CorruptionCollator(tiny_image_processor(16))
    return torch.utils.data.DataLoader(ds, collate_fn=collator, **kw)


def test_bad_files_count_once_across_workers_prefetch_and_epochs(photo_folder):
    root, made = photo_folder
    ds = load_image_dataset(str(root))
    bad_paths = sorted(map(str, made["bad"]))
    tracker = BadImageTracker(max_bad_fraction=0.5, min_examples=1)
    loader = _loader(ds, batch_size=4, num_workers=2, prefetch_factor=4, shuffle=True)
    for _ in range(3):  # three epochs: every image read three times
        for batch in loader:
            tracker.record_batch(batch)
    assert (tracker.seen, tracker.bad) == (len(ds), 2)
    assert sorted(b["path"] for b in tracker.summary()["first_bad"]) == bad_paths
    # Prefetched batches that the run never consumed are not counted: stop after 2 batches
    # while the workers have prefetched up to 16.
    partial = BadImageTracker()
    for i, batch in enumerate(_loader(ds, batch_size=4, num_workers=2, prefetch_factor=8)):
        partial.record_batch(batch)
        if i == 1:
            break
    assert partial.seen == 8


def test_resumed_segments_accumulate_through_checkpoints(photo_folder, tmp_path):
    """Segment 1 saves its tally with checkpoint-3; segment 2 resumes from it, re-reads some of
    the same images (skip-and-replay) and reads the rest: each bad file counted once."""
    root, made = photo_folder
    batches = list(_loader(load_image_dataset(str(root)), batch_size=8))
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    first = BadImageTracker(max_bad_fraction=0.5, min_examples=1)
    callback = BadImageCallback(first)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    callback.on_train_begin(args, state, None)
    for step, batch in enumerate(batches[:4], start=1):
        first.record_batch(batch)
        state.global_step = step
        callback.on_step_end(args, state, None)
    callback.on_save(args, state, None)
    saved = json.loads((tmp_path / "checkpoint-4" / BAD_IMAGES_FILE).read_text())
    assert saved["seen"] == 32 and saved["format"] == "hf_vitrobust.bad_images"

    second = BadImageTracker(max_bad_fraction=0.5, min_examples=1)
    resumed = BadImageCallback(second)
    resumed.on_train_begin(args, SimpleNamespace(global_step=4, is_world_process_zero=True), None)
    assert second.summary() == first.summary()
    for batch in batches[2:]:  # batches 3-4 again, then the rest
        second.record_batch(batch)
    resumed.on_train_end(args, state, None)
    total = json.loads((tmp_path / BAD_IMAGES_FILE).read_text())
    assert (total["seen"], total["bad"]) == (57, 2) == (second.seen, second.bad)
    assert sorted(b["path"] for b in total["first_bad"]) == sorted(map(str, made["bad"]))
    # A checkpoint from before this feature: warn, count from the resumed segment on.
    third = BadImageTracker()
    BadImageCallback(third, resume_from_checkpoint=tmp_path / "nowhere").on_train_begin(
        args, state, None
    )
    assert third.seen == 0


def test_early_check_fails_as_soon_as_min_examples_are_seen(photo_folder, tmp_path):
    """3.5% bad files (2 of 57): with min_examples=40 the run stops at the first check at or
    after 40 images seen, naming the bad files, not after training, and leaves its verdict in
    output_dir (the bad_images.json a finished run writes)."""
    root, made = photo_folder
    ds = load_image_dataset(str(root))
    order = [r["example_id"] for r in ds if r["image"]["path"] in set(map(str, made["bad"]))]
    ds = ds.select(order + [i for i in range(len(ds)) if i not in order])  # bad files first
    tracker = BadImageTracker(max_bad_fraction=0.01, min_examples=40)
    callback = BadImageCallback(tracker)
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    with pytest.raises(TooManyBadImagesError) as info:
        for batch in _loader(ds, batch_size=8):
            tracker.record_batch(batch)
            state.global_step += 1
            callback.on_step_end(args, state, None)
    assert state.global_step == 5 and tracker.seen == 40  # not at 8, 16, 24, 32
    for path in made["bad"]:
        assert str(path) in str(info.value)
    assert "--check" in str(info.value) and "max_bad_fraction" in str(info.value)
    verdict = json.loads((tmp_path / BAD_IMAGES_FILE).read_text())
    assert (verdict["seen"], verdict["bad"], verdict["passed"]) == (40, 2, False)
    assert verdict == json.loads(json.dumps(tracker.state_dict()))


def test_healthy_share_passes_and_the_limit_is_inclusive():
    tracker = BadImageTracker(max_bad_fraction=0.01, min_examples=100)
    tracker.record(range(99), {99: "/data/x.jpg"})
    tracker.check()
    tracker.check(final=True)  # exactly 1%: within the limit
    assert tracker.summary()["passed"] and tracker.summary()["fraction"] == 0.01
    tracker.record(range(99), {98: "again, counted once as bad"})
    assert (tracker.seen, tracker.bad) == (100, 2)
    with pytest.raises(TooManyBadImagesError):
        tracker.check()
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadImageTracker(max_bad_fraction=1.5)


# ---------------------------------------------------------------------------- properties

_batches = st.lists(
    st.tuples(
        st.lists(st.integers(0, 60), max_size=8),
        st.dictionaries(st.integers(0, 60), st.sampled_from(["/a.jpg", "truncated"]), max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(batches=_batches, split=st.integers(0, 12))
def test_tracker_counts_are_the_unique_sets(batches, split):
    """Any sequence of records, with repeats: seen = |all ids|, bad = |bad ids|; a state round
    trip (resume) and a merge of two halves (processes) give the same figures."""
    whole, left, right = BadImageTracker(), BadImageTracker(), BadImageTracker()
    for i, (ok, bad) in enumerate(batches):
        whole.record(ok, bad)
        (left if i < split else right).record(ok, bad)
    all_ids = {i for ok, bad in batches for i in [*ok, *bad]}
    bad_ids = {i for _, bad in batches for i in bad}
    assert (whole.seen, whole.bad) == (len(all_ids), len(bad_ids))
    assert whole.first_bad_ids == sorted(bad_ids)[: whole.max_listed]
    restored = BadImageTracker()
    restored.load_state_dict(json.loads(json.dumps(whole.state_dict())))
    left.merge(json.loads(json.dumps(right.state_dict())))
    for other in (restored, left):
        assert other.summary() == whole.summary()


# ---------------------------------------------------------------------------- pre-flight


def test_check_cli_lists_bad_files_and_sets_the_exit_code(photo_folder, tmp_path, capsys):
    root, made = photo_folder
    report = tmp_path / "check.json"
    assert cli.main(["--check", str(root), "--no_progress", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    for path in made["bad"]:
        assert str(path) in out
    assert "2 of 57 images could not be decoded (3.51%" in out
    findings = json.loads(report.read_text())
    assert findings["bad"] == 2 and not findings["passed"] and len(findings["bad_files"]) == 2
    argv = ["--check", str(root), "--no_progress", "--max_bad_fraction", "0.05"]
    assert cli.main([*argv, "--num_workers", "2"]) == 0
    assert cli.main(["--check", str(tmp_path / "missing"), "--no_progress"]) == 2
    assert "no such folder or file" in capsys.readouterr().err


def test_check_cli_on_in_memory_bytes(tmp_path, capsys):
    import datasets

    good = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good, "PNG")
    rows = [{"bytes": good.getvalue(), "path": None}] * 3 + [{"bytes": b"junk", "path": None}]
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=["a"]))
    datasets.Dataset.from_dict({"image": rows, "label": [0] * 4}, features=features).to_parquet(
        str(tmp_path / "d.parquet")
    )
    assert cli.main(["--check", str(tmp_path / "d.parquet"), "--no_progress"]) == 1
    assert "bad  id 3  (in-memory bytes)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- a real Trainer


def test_callback_through_a_real_trainer_interrupted_and_resumed(photo_folder, tmp_path):
    """A Trainer whose step records each consumed batch: 3 steps saved with checkpoint-3, then
    a resumed run to step 8 (more than one epoch of 57 images, two DataLoader workers
    prefetching): each bad file counted once over both segments, the figures in the output."""
    from transformers import Trainer, TrainingArguments

    from hf_vitrobust.data import COLLATOR_EXTRA_KEYS
    from hf_vitrobust.models import tiny_vit

    root, made = photo_folder
    dataset = load_image_dataset(str(root))

    class RecordingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self.tracker.record_batch(inputs)
            inputs = {k: v for k, v in inputs.items() if k not in COLLATOR_EXTRA_KEYS}
            return super().training_step(model, inputs, num_items_in_batch)

    def run(max_steps: int, resume: str | None) -> BadImageTracker:
        model, processor = tiny_vit(seed=0, num_labels=6, image_size=16, patch_size=8)
        args = TrainingArguments(
            output_dir=str(tmp_path), max_steps=max_steps, save_steps=3,
            per_device_train_batch_size=8, dataloader_num_workers=2, use_cpu=True,
            remove_unused_columns=False, report_to=[], logging_steps=100, seed=0,
        )  # fmt: skip
        tracker = BadImageTracker(max_bad_fraction=0.5, min_examples=1)
        trainer = RecordingTrainer(
            model=model, args=args, train_dataset=dataset,
            data_collator=CorruptionCollator(processor, num_labels=6),
            callbacks=[BadImageCallback(tracker, resume_from_checkpoint=resume)],
        )  # fmt: skip
        trainer.tracker = tracker
        trainer.train(resume_from_checkpoint=resume)
        return tracker

    first = run(3, None)
    assert (tmp_path / "checkpoint-3" / BAD_IMAGES_FILE).is_file() and first.seen == 24
    second = run(8, str(tmp_path / "checkpoint-3"))
    total = json.loads((tmp_path / BAD_IMAGES_FILE).read_text())
    assert (total["seen"], total["bad"]) == (57, 2) == (second.seen, second.bad)
    assert sorted(b["path"] for b in total["first_bad"]) == sorted(map(str, made["bad"]))
    assert total["passed"] and total["limit"] == 0.5  # 2/57 is within this run's 50%
