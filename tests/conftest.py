"""Shared fixtures: offline Hub, tiny ViTs, small real data (Fashion-MNIST, natural photos).

With ``CI`` set, a skipped test is a failure (a missing data file or browser must not pass
silently); mark a test ``allow_skip_in_ci`` only when CI genuinely cannot run it (e.g. a GPU).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

# Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

IN_CI = bool(os.environ.get("CI"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_skip_in_ci: the test may skip in CI (it needs hardware CI lacks)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not item.get_closest_marker("allow_skip_in_ci"):
        if hasattr(report, "wasxfail"):
            return
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {reason}"


@pytest.fixture()
def two_torch_threads():
    """Torch uses the machine's two cores for the test (ViT-B-size tests), then what it had."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_vit_kwargs() -> dict:
    """Config of the test-size ViT: 28 px Fashion-MNIST, patch 7, 2 layers."""
    return dict(
        num_labels=10,
        image_size=28,
        patch_size=7,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )


@pytest.fixture()
def tiny_model(tiny_vit_kwargs):
    """(model, processor): a seeded, randomly initialised tiny ViT in eval mode."""
    from hf_vitrobust.models import tiny_vit

    model, processor = tiny_vit(seed=0, **tiny_vit_kwargs)
    return model.eval(), processor


@pytest.fixture(scope="session")
def fashion_mnist_dir():
    """Folder with Debian's Fashion-MNIST IDX files (skips when absent; fails in CI)."""
    from hf_vitrobust.data import find_fashion_mnist_dir

    path = find_fashion_mnist_dir()
    if path is None:
        pytest.skip(
            "Fashion-MNIST files not installed (make install installs dataset-fashion-mnist)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# A user's own imagefolder: natural photos of many sizes, class-sorted, with planted bad files
# ---------------------------------------------------------------------------------------------

PHOTO_CLASSES = ("astronaut", "coffee", "chelsea", "rocket", "hubble", "retina")


def natural_photos() -> dict[str, np.ndarray]:
    """The RGB natural photos that ship with scikit-image, by class name."""
    import skimage.data as sk

    return {
        "astronaut": sk.astronaut(),
        "coffee": sk.coffee(),
        "chelsea": sk.chelsea(),
        "rocket": sk.rocket(),
        "hubble": sk.hubble_deep_field(),
        "retina": sk.retina(),
    }


def _jpeg(image: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def build_photo_folder(root: Path, per_class: int = 8, seed: int = 0) -> dict[str, list[Path]]:
    """An imagefolder ``root/<class>/*.jpg`` of random crops of real photos at varied sizes.

    Returns ``{"good": [...], "bad": [...], "odd": [...]}``: ``bad`` files cannot be decoded
    (truncated JPEG, text named .jpg); ``odd`` ones decode with care (CMYK JPEG, RGBA PNG,
    palette GIF, 16-bit PNGs of 8-bit and of full-range values, an 8x8 PNG, EXIF-rotated JPEG).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = natural_photos()
    made: dict[str, list[Path]] = {"good": [], "bad": [], "odd": []}
    for name in PHOTO_CLASSES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        photo = photos[name]
        for i in range(per_class):
            h = int(rng.integers(48, min(photo.shape[0], 320)))
            w = int(rng.integers(48, min(photo.shape[1], 320)))
            y = int(rng.integers(0, photo.shape[0] - h + 1))
            x = int(rng.integers(0, photo.shape[1] - w + 1))
            path = folder / f"{name}_{i:03d}.jpg"
            path.write_bytes(_jpeg(np.ascontiguousarray(photo[y : y + h, x : x + w])))
            made["good"].append(path)
    crop = np.ascontiguousarray(photos["coffee"][:120, :150])
    odd = root / "coffee"
    Image.fromarray(crop).convert("CMYK").save(odd / "odd_cmyk.jpg", format="JPEG")
    rgba = np.dstack([crop, np.full(crop.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(odd / "odd_rgba.png")
    Image.fromarray(crop).convert("P").save(odd / "odd_palette.gif")
    grey = crop.mean(axis=2)
    Image.fromarray(grey.astype(np.uint16)).save(odd / "odd_16bit_8bit_values.png")
    Image.fromarray((grey * 257).astype(np.uint16)).save(odd / "odd_16bit_full_range.png")
    Image.fromarray(crop[:8, :8]).save(odd / "odd_8x8.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees for display
    (odd / "odd_exif_rotated.jpg").write_bytes(_jpeg(crop, exif=exif.tobytes()))
    made["odd"] += sorted(odd.glob("odd_*"))
    bad = root / "rocket"
    (bad / "bad_truncated.jpg").write_bytes(_jpeg(crop)[:600])
    (bad / "bad_text.jpg").write_text("this is not an image\n")
    made["bad"] += [bad / "bad_truncated.jpg", bad / "bad_text.jpg"]
    return made


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    """(root, files): a class-sorted imagefolder of real photos with planted odd and bad files."""
    root = tmp_path_factory.mktemp("photos")
    return root, build_photo_folder(root)
