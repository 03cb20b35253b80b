"""Tests for the corruption registry: API, determinism, bad input, ports, resolution scaling.

The reference comparisons over many photos at 224 and 299 px are in
tests/test_corruption_fidelity.py (slow); the ones here compare single images pixel by pixel
with the reference where the corruption is deterministic, or check one property of a fix.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_vitrobust import corruptions as C
from hf_vitrobust.corruptions import fidelity, kernels, weather
from hf_vitrobust.corruptions import functional as F
from hf_vitrobust.corruptions.preview import main as preview_main
from hf_vitrobust.corruptions.preview import preview_grid
from hf_vitrobust.images import as_rgb_uint8 as as_rgb_uint8_policy
from hf_vitrobust.seeding import image_seed

ALL = tuple(C.CORRUPTIONS)
needs_reference = pytest.mark.skipif(
    not fidelity.reference_available(), reason="needs imagecorruptions-imaug (dev dependency)"
)


@functools.cache
def photos(size: int = 160, n: int = 4) -> tuple[np.ndarray, ...]:
    """Natural photos (centre crops of scikit-image's RGB photographs) at ``size`` px."""
    return tuple(fidelity.photo_set(size, n=n))


# --------------------------------------------------------------------------- registry contents


def test_registry_contents():
    imagenet_c = {
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression",
    }  # fmt: skip
    assert set(C.FAMILIES["imagenet_c"]) == imagenet_c
    assert set(C.FAMILIES["extra"]) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert set(C.FAMILIES["sharpen"]) == {"sharpen", "unsharp_mask"}
    assert len(C.FAMILIES["all"]) == 21
    assert set(C.FAMILIES["low_frequency"]) == {
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"
    }  # fmt: skip
    assert set(C.FAMILIES["high_frequency"]) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "sharpen", "unsharp_mask"
    }  # fmt: skip
    for family, names in C.FAMILIES.items():
        assert names and set(names) <= set(C.CORRUPTIONS), family
    for c in C.CORRUPTIONS.values():
        assert c.group in C.GROUPS and c.band == C.band_of(c.lf_share)
        assert 0 < c.lf_share < 1 and 0 < c.lf_share_sd < 0.5
        assert len(c.params) == 5 and c.fidelity in ("port", "new")
        assert (c.fidelity == "new") == (c.group == "sharpen")
        if c.known_gap is not None:
            assert c.known_gap.reason and c.known_gap.psnr_db > 0
    assert isinstance(C.REGISTRY_VERSION, str)


def test_band_families_partition_the_registry_by_measured_band():
    bands = [C.FAMILIES[f"band_{b}"] for b in C.BANDS]
    assert sorted(n for names in bands for n in names) == sorted(C.CORRUPTIONS)
    for band in C.BANDS:
        assert all(C.CORRUPTIONS[n].band == band for n in C.FAMILIES[f"band_{band}"])
    # Yin et al.: fog and contrast are low-frequency perturbations, noise is high.
    assert {"fog", "contrast"} <= set(C.FAMILIES["band_low"])
    assert "gaussian_noise" in C.FAMILIES["band_high"]


def test_family_definition():
    assert C.family_definition("low_frequency") == "image_content"
    assert C.family_definition("high_frequency") == "image_content"
    assert C.family_definition(["low_frequency"]) == "image_content"
    assert C.family_definition("band_low") == "perturbation_band"
    assert C.family_definition("noise") == "imagenet_c_group"
    assert C.family_definition("all") == "all"
    assert C.family_definition(["fog", "contrast"]) == "custom"
    assert C.family_definition("band_bogus") == "custom"
    assert set(C.FAMILY_DEFINITIONS) >= {"image_content", "perturbation_band", "custom"}


def test_transform_is_seeded_compose_equal_to_corrupt():
    import albumentations as A

    img = photos()[0][:64, :72]
    for name in ALL:
        for ref in (C.REFERENCE_SIZE, None, 48):
            t = C.get_corruption(name).transform(3, seed=7, reference_size=ref)
            assert isinstance(t, A.Compose)
            expected = C.corrupt(img, name, 3, seed=7, reference_size=ref)
            np.testing.assert_array_equal(t(image=img)["image"], expected, err_msg=name)


def test_stock_transforms_have_fixed_two_tuples():
    """A scalar range parameter would make a severity a random range; every one is (v, v)."""
    for name in ALL:
        for s in C.SEVERITIES:
            t = C.get_corruption(name).build(s)
            for key, value in vars(t).items():
                if key.endswith(("_range", "_limit")) and isinstance(value, tuple):
                    assert value[0] == value[1], (name, s, key, value)


# --------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ALL)
def test_determinism(name):
    img = photos()[1][:48, :56]
    a = C.corrupt(img, name, 4, seed=123)
    np.testing.assert_array_equal(a, C.corrupt(img, name, 4, seed=123))
    assert a.shape == img.shape and a.dtype == np.uint8
    c = C.corrupt(img, name, 4, seed=124)
    if C.CORRUPTIONS[name].stochastic:
        assert not np.array_equal(a, c), f"{name}: different seeds gave the same draw"
    else:  # a fixed filter: the seed must not matter
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(a, C.corrupt(img, name, 4))
    # Interleaving other calls (other severities, sizes) does not change a seeded result.
    C.corrupt(img, name, 2, seed=5)
    C.corrupt(img[:20, :30], name, 4, seed=9)
    np.testing.assert_array_equal(C.corrupt(img, name, 4, seed=123), a)


@pytest.mark.parametrize("seed", [7.9, 7.0, "7", b"7", True, np.float64(7.0), 1 + 0j])
def test_non_integer_seeds_are_refused(seed):
    """7.9 used to become seed 7 and '7' too; now every non-integer seed is an error."""
    img = photos()[0][:16, :16]
    with pytest.raises(ValueError, match="seed must be an int"):
        C.corrupt(img, "gaussian_noise", 1, seed=seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        C.corrupt_batch(np.stack([img, img]), "gaussian_noise", 1, seed=seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        C.corrupt_examples([img], [0], "gaussian_noise", 1, seed=seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        C.corrupt_batch([img], "gaussian_noise", 1, seed=[seed])


def test_numpy_integer_seeds_are_accepted():
    img = photos()[0][:16, :16]
    np.testing.assert_array_equal(
        C.corrupt(img, "shot_noise", 2, seed=np.int64(5)), C.corrupt(img, "shot_noise", 2, seed=5)
    )


def test_corrupt_batch():
    imgs = np.stack([p[:32, :32] for p in photos()[:3]])
    out = C.corrupt_batch(imgs, "gaussian_noise", 2, seed=0)
    assert isinstance(out, np.ndarray) and out.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(out, C.corrupt_batch(imgs, "gaussian_noise", 2, seed=0))
    same = np.stack([imgs[0]] * 2)
    o = C.corrupt_batch(same, "gaussian_noise", 2, seed=0)
    assert not np.array_equal(o[0], o[1])  # identical images, different draws
    lst = C.corrupt_batch(list(imgs), "shot_noise", 3, seed=[4, 5, 6])
    assert isinstance(lst, list)
    for img, o, s in zip(imgs, lst, (4, 5, 6)):
        np.testing.assert_array_equal(o, C.corrupt(img, "shot_noise", 3, seed=s))
    grey = np.zeros((2, 16, 16), np.uint8)
    assert C.corrupt_batch(grey, "contrast", 1).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="seeds for"):
        C.corrupt_batch(imgs, "shot_noise", 3, seed=[1, 2])


def test_corrupt_batch_int_seed_is_image_seed_of_batch_index():
    img = photos()[0][:24, :24]
    same = np.stack([img] * 3)
    a = C.corrupt_batch(same, "shot_noise", 3, seed=11)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    for i in range(3):
        expected = C.corrupt(img, "shot_noise", 3, seed=image_seed(11, i, "shot_noise", 3))
        np.testing.assert_array_equal(a[i], expected)
    np.testing.assert_array_equal(a, C.corrupt_examples(same, range(3), "shot_noise", 3, 11))


@pytest.mark.parametrize("name", ["fog", "motion_blur", "contrast"])
def test_corrupt_examples_equals_corrupt_with_image_seed(name):
    imgs = [photos()[1][:32, :40], photos()[2][:32, :40]]
    ids = [1234, 7]
    out = C.corrupt_examples(imgs, ids, name, 2, seed=3)
    assert out.shape == (2, 32, 40, 3) and out.dtype == np.uint8
    for img, eid, o in zip(imgs, ids, out):
        np.testing.assert_array_equal(o, C.corrupt(img, name, 2, seed=image_seed(3, eid, name, 2)))
    np.testing.assert_array_equal(C.corrupt_examples(imgs[::-1], ids[::-1], name, 2, 3), out[::-1])
    spelled = name.replace("_", "-").upper()
    np.testing.assert_array_equal(C.corrupt_examples(imgs, ids, spelled, 2, 3), out)
    with pytest.raises(ValueError, match="example ids"):
        C.corrupt_examples(imgs, ids[:1], name, 2, 3)


# ------------------------------------------------------ property tests (issue #15, hypothesis)

SIDES = st.integers(min_value=8, max_value=40)
SEEDS = st.integers(min_value=0, max_value=2**63)
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(
    name=st.sampled_from(ALL),
    h=SIDES,
    w=SIDES,
    severity=st.sampled_from(C.SEVERITIES),
    seed=SEEDS,
    pixels=st.integers(0, 2**32 - 1),
)
def test_property_shape_dtype_and_seed_determinism(name, h, w, severity, seed, pixels):
    img = np.random.default_rng(pixels).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = C.corrupt(img, name, severity, seed=seed)
        b = C.corrupt(img, name, severity, seed=seed)
    assert a.shape == (h, w, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


@PROPERTY_SETTINGS
@given(
    name=st.sampled_from(ALL),
    h=SIDES,
    w=SIDES,
    n=st.integers(1, 3),
    severity=st.sampled_from(C.SEVERITIES),
    seed=st.integers(0, 2**32),
)
def test_property_batch_is_per_image(name, h, w, n, severity, seed):
    imgs = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = C.corrupt_batch(imgs, name, severity, seed=seed)
        examples = C.corrupt_examples(imgs, [seed + i for i in range(n)], name, severity, seed)
        for i in range(n):
            single = C.corrupt(imgs[i], name, severity, seed=image_seed(seed, i, name, severity))
            np.testing.assert_array_equal(batch[i], single)
            eid = seed + i
            single = C.corrupt(imgs[i], name, severity, seed=image_seed(seed, eid, name, severity))
            np.testing.assert_array_equal(examples[i], single)


# ----------------------------------------------------------------------------------- bad input


def test_as_rgb_uint8_conversions():
    rgb = photos()[0][:20, :24]
    grey = rgb[..., 0]
    np.testing.assert_array_equal(C.as_rgb_uint8(grey), np.repeat(grey[..., None], 3, axis=2))
    opaque = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(C.as_rgb_uint8(opaque), rgb)
    np.testing.assert_array_equal(C.as_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    assert C.as_rgb_uint8 is as_rgb_uint8_policy


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((3, 32, 32), np.uint8), "channels-first"),
        (np.zeros((32, 32, 2), np.uint8), "shape"),
        (np.zeros((4, 32), np.uint8), "at least 8x8"),
        (np.full((16, 16, 3), np.nan, np.float32), "NaN"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_images_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        C.corrupt(bad, "contrast", 1)


@pytest.mark.parametrize("name", ALL)
def test_every_corruption_on_odd_inputs(name):
    """8x8, grey, single-channel, RGBA, float and non-contiguous inputs all work."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    inputs = [
        base,
        base[..., 0],
        base[..., :1],
        np.concatenate([base, base[..., :1]], axis=2),
        base.astype(np.float64) / 255.0,
        np.asfortranarray(rng.integers(0, 256, (9, 17, 3), dtype=np.uint8))[:, ::2],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in (1, 5):
            for x in inputs:
                for ref in (C.REFERENCE_SIZE, None):
                    out = C.corrupt(x, name, s, seed=0, reference_size=ref)
                    assert out.shape == x.shape[:2] + (3,) and out.dtype == np.uint8


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="gaussian_noise"):
        C.get_corruption("gausian_noise")
    with pytest.raises(ValueError, match="Did you mean 'frost'"):
        C.corrupt(np.zeros((8, 8, 3), np.uint8), "forst", 1)
    assert C.get_corruption("Gaussian-Noise").name == "gaussian_noise"


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, 2.5, "3", None, True])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(np.zeros((8, 8, 3), np.uint8), "contrast", severity)


def test_check_severities_is_the_one_list_check():
    assert C.check_severities([1, np.int64(3)]) == [1, 3]
    with pytest.raises(ValueError, match="at least one severity in 1..5"):
        C.check_severities([])
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        C.check_severities([1, 6])
    assert C.check_severities((3,), exactly_one="the analysis") == [3]
    with pytest.raises(ValueError, match=r"severities=\[2, 3\]: the analysis takes exactly one"):
        C.check_severities([2, 3], exactly_one="the analysis")


@pytest.mark.parametrize("ref", [0, -3, 22.4, "224", True])
def test_bad_reference_size(ref):
    with pytest.raises(ValueError, match="reference_size"):
        C.corrupt(np.zeros((8, 8, 3), np.uint8), "gaussian_blur", 1, reference_size=ref)


def test_resolve_family():
    assert C.resolve_corruptions("low_frequency") == C.FAMILIES["low_frequency"]
    assert C.resolve_corruptions("fog, contrast") == ("fog", "contrast")
    assert C.resolve_corruptions(["noise", "gaussian_noise", "fog"]) == C.FAMILIES["noise"] + (
        "fog",
    )
    with pytest.raises(ValueError, match="Did you mean 'weather'"):
        C.resolve_corruptions("wether")
    with pytest.raises(ValueError, match="empty"):
        C.resolve_corruptions([])


# ------------------------------------------------------------------------ resolution scaling


@pytest.mark.parametrize("name", ALL)
def test_scaling_changes_nothing_at_224(name):
    img = photos(224, 1)[0]
    for s in (1, 4):
        np.testing.assert_array_equal(
            C.corrupt(img, name, s, seed=3), C.corrupt(img, name, s, seed=3, reference_size=None)
        )


@pytest.mark.parametrize("name", ALL)
def test_only_corruptions_with_pixel_parameters_scale(name):
    img = photos(72, 1)[0]
    scaled = C.corrupt(img, name, 5, seed=3)
    unscaled = C.corrupt(img, name, 5, seed=3, reference_size=None)
    if C.CORRUPTIONS[name].scaling:
        assert not np.array_equal(scaled, unscaled), f"{name} declares scaling but does not scale"
    else:
        np.testing.assert_array_equal(scaled, unscaled)


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "motion_blur", "unsharp_mask"])
def test_scaled_blur_at_56_px_matches_the_224_px_blur_seen_at_56_px(name):
    """The point of scaling: corrupting a small image is the big image's corruption, resized.

    At 56 px (a quarter of 224) the scaled blur of the downsampled photo is close to the
    downsampled 224-px blur; the unscaled one (ImageNet-C's 224-px radii at 56 px) is far off.
    """
    big = photos(224, 2)
    scaled_psnr, unscaled_psnr = [], []
    for img in big:
        small = cv2.resize(img, (56, 56), interpolation=cv2.INTER_AREA)
        target = cv2.resize(C.corrupt(img, name, 3, seed=1), (56, 56), interpolation=cv2.INTER_AREA)
        scaled_psnr.append(C.psnr(target, C.corrupt(small, name, 3, seed=1)))
        unscaled_psnr.append(C.psnr(target, C.corrupt(small, name, 3, seed=1, reference_size=None)))
    assert np.mean(scaled_psnr) > np.mean(unscaled_psnr) + 3.0, (scaled_psnr, unscaled_psnr)
    assert np.mean(scaled_psnr) > 27.0


def test_scaled_glass_blur_is_milder_at_small_sizes():
    """Glass blur's whole-pixel displacements do not downsample (ImageNet-C's loop copies
    pixels, shifting content); scaled, the displacement rounds to 0-1 px at 56 px: milder."""
    for s in (2, 5):
        scaled, unscaled = [], []
        for img in photos(56, 4):
            scaled.append(C.psnr(img, C.corrupt(img, "glass_blur", s, seed=2)))
            unscaled.append(
                C.psnr(img, C.corrupt(img, "glass_blur", s, seed=2, reference_size=None))
            )
        assert np.mean(scaled) > np.mean(unscaled) + 0.5, (s, scaled, unscaled)


def test_pixelate_scaled_keeps_224_px_block_size():
    img = photos(448, 1)[0]
    out = C.corrupt(img, "pixelate", 5)  # 8-px blocks at 448 px: 0.25 * 224 = 56 blocks
    assert len(np.unique(out[0, :, 0])) <= 57
    assert np.array_equal(C.corrupt(photos(28, 1)[0], "pixelate", 5), photos(28, 1)[0])


# --------------------------------------------------- ports checked against the reference


@needs_reference
@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("pixelate", 0),  # Pillow's BOX filter and NEAREST, exactly
        ("jpeg_compression", 0),  # the RGB array encoded as RGB
        ("contrast", 1),  # per-channel means
        ("brightness", 1),
        ("saturate", 1),  # ImageNet-C's severity order
        ("gaussian_blur", 1),
        ("defocus_blur", 1),
        ("zoom_blur", 2),
    ],
)
@pytest.mark.parametrize("size", [224, 299, "299x223"])
def test_deterministic_ports_match_the_reference_pixel_by_pixel(name, tolerance, size):
    """Up to float rounding in the last grey level, the output is the reference's (square
    photos at 224 and 299 px, and a 299 x 223 crop for the axes)."""
    if size == "299x223":
        images = [np.ascontiguousarray(photos(299, 1)[0][:, 20:243])]
    else:
        images = photos(size, 1)
    for img in images:
        for s in C.SEVERITIES:
            ours = C.corrupt(img, name, s, reference_size=None).astype(int)
            ref = fidelity.reference_corrupt(img, name, s, 0).astype(int)
            diff = ours - ref
            assert np.abs(diff).max() <= tolerance, (name, s, np.abs(diff).max())
            # Truncated like the reference; its float error drops some exact integers by one.
            assert abs(diff.mean()) <= 0.15, (name, s, diff.mean())


@needs_reference
def test_motion_blur_kernel_matches_the_reference():
    from imagecorruptions.corruptions import _motion_blur

    img = photos(224, 1)[0][:100, :120]
    for radius, sigma in ((10, 3.0), (20, 15.0)):
        for angle in (-44.0, -12.5, 0.0, 30.0):
            ours = F.motion_blur(img, radius, sigma, angle).astype(int)
            ref = np.uint8(np.clip(_motion_blur(img, radius, sigma, angle), 0, 255)).astype(int)
            assert np.abs(ours - ref).max() <= 1


def reference_glass_loop(x: np.ndarray, shifts: np.ndarray, d: int) -> np.ndarray:
    """ImageNet-C's glass-blur loop in plain numpy (views, as the reference), given the draws."""
    h_img, w_img = x.shape[:2]
    for i in range(shifts.shape[0]):
        for h in range(h_img - d, d, -1):
            for w in range(w_img - d, d, -1):
                dx, dy = shifts[i, h_img - d - h, w_img - d - w]
                h2, w2 = h + dy, w + dx
                x[h, w], x[h2, w2] = x[h2, w2], x[h, w]
    return x


def test_glass_blur_shuffle_has_the_references_semantics():
    """The compiled loop equals ImageNet-C's numpy loop given the same draws; both copy."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (14, 17, 3), dtype=np.uint8)
    for d in (1, 2, 3):
        shifts = rng.integers(-d, d, size=(2, 14 - 2 * d, 17 - 2 * d, 2)).astype(np.int16)
        ours = x.copy()
        kernels.swap_pixels(ours, shifts, d)
        np.testing.assert_array_equal(ours, reference_glass_loop(x.copy(), shifts, d))
        assert len(np.unique(ours.reshape(-1, 3), axis=0)) < len(
            np.unique(x.reshape(-1, 3), axis=0)
        )


def test_impulse_noise_salts_each_channel_independently():
    img = np.full((64, 64, 3), 128, np.uint8)
    out = C.corrupt(img, "impulse_noise", 5, seed=0)  # amount 0.27
    changed = out != 128
    per_pixel = changed.sum(axis=2)
    assert abs(changed.mean() - 0.27) < 0.02
    assert (per_pixel == 1).mean() > 0.2  # one channel of three: whole-pixel noise fails here
    assert set(np.unique(out)) == {0, 128, 255}


def test_contrast_keeps_each_channels_mean():
    img = photos()[2]
    for s in C.SEVERITIES:
        out = C.corrupt(img, "contrast", s)
        np.testing.assert_allclose(out.mean(axis=(0, 1)), img.mean(axis=(0, 1)), atol=0.6)


def test_spatter_colours_are_imagenet_c_rgb():
    black = np.zeros((224, 224, 3), np.uint8)
    white = np.full((224, 224, 3), 255, np.uint8)
    rain = np.mean([C.corrupt(black, "spatter", 1, seed=k).reshape(-1, 3) for k in range(3)], 0)
    lit = rain[rain.sum(axis=1) > 30]
    r, g, b = lit.mean(axis=0)
    assert abs(g - b) < 2 and 0.6 < r / g < 0.8  # pale turquoise (175, 238, 238)
    mud = np.concatenate([C.corrupt(white, "spatter", 5, seed=k).reshape(-1, 3) for k in range(3)])
    darkest = mud[np.argmin(mud.astype(int).sum(axis=1))]
    assert np.all(np.abs(darkest.astype(int) - (63, 42, 20)) <= 1)  # mud brown (63, 42, 20)
    muddy = mud[mud.astype(int).sum(axis=1) < 700].astype(int)
    assert (
        len(muddy) > 100
        and np.all(muddy[:, 0] >= muddy[:, 1])
        and np.all(muddy[:, 1] >= muddy[:, 2])
    )


@needs_reference
def test_fog_plasma_has_the_references_spectrum():
    """Share of the plasma's variance below 1/64 cycles/px at severity 5 (issue: 66% vs 92%)."""
    from imagecorruptions.corruptions import plasma_fractal

    def low_share(p: np.ndarray) -> float:
        power = np.abs(np.fft.fft2(p - p.mean())) ** 2
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(p.shape[0]), np.fft.fftfreq(p.shape[1])))
        return float(power[f < 1 / 64].sum() / power.sum())

    rng = np.random.default_rng(0)
    ours = [low_share(weather.plasma(256, 256, 1.4, rng.random(256 * 256))) for _ in range(40)]
    np.random.seed(0)
    ref = [low_share(plasma_fractal(256, 1.4)) for _ in range(40)]
    assert abs(np.mean(ours) - np.mean(ref)) < 0.03, (np.mean(ours), np.mean(ref))


@needs_reference
def test_frost_uses_the_reference_photographs():
    textures = weather.frost_textures()
    assert textures is not None and len(textures) == 6
    black = np.zeros((224, 224, 3), np.uint8)
    out = C.corrupt(black, "frost", 3, seed=1)  # 0.7 * crop of a 1.1x-resized photograph
    found = []
    for i in range(6):
        tex = weather.frost_texture_for(i, 224, 224, 1.0)
        target = np.round(0.7 * tex.astype(np.float32))
        score = cv2.matchTemplate(target, out.astype(np.float32), cv2.TM_SQDIFF)
        found.append(score.min() / out.size)
    assert min(found) < 0.5  # the output is a crop of one photograph (up to rounding)


def test_frost_fallback_is_procedural():
    t = C.get_corruption("frost").builder(
        image_weight=0.7, frost_weight=0.7, source="procedural", reference_size=224
    )
    t.set_random_seed(0)
    out = t(image=photos()[0])["image"]
    assert out.shape == photos()[0].shape and not t.uses_reference_textures


def test_shot_noise_draws_exact_poisson_counts():
    from scipy import stats

    level, photons = 128, 12.0
    img = np.full((96, 96, 3), level, np.uint8)
    out = F.shot_noise(img, photons, np.random.default_rng(0).random(img.shape))
    counts = np.rint(out.astype(np.float64) / 255.0 * photons).astype(int).ravel()
    lam = level / 255.0 * photons
    ks = np.arange(0, 13)
    observed = np.array([(counts == k).sum() for k in ks[:-1]] + [(counts >= ks[-1]).sum()])
    expected = np.append(stats.poisson.pmf(ks[:-1], lam), stats.poisson.sf(ks[-2], lam))
    chi2 = stats.chisquare(observed, expected * counts.size)
    assert chi2.pvalue > 1e-3, chi2


def test_sharpening_is_monotone_in_psnr():
    """No reference: the toolkit's own levels must strengthen with severity."""
    for name in ("sharpen", "unsharp_mask"):
        p = [np.mean([C.psnr(i, C.corrupt(i, name, s)) for i in photos()]) for s in C.SEVERITIES]
        assert np.all(np.diff(p) < -0.1), (name, np.round(p, 2))


# ------------------------------------------------------------------------------ measurements


def test_lf_share_of_white_noise_and_ssim_definition():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = np.full((128, 128, 3), 128.0)
    assert abs(C.lf_share(x, x + rng.normal(size=x.shape)) - np.pi * 0.0625**2) < 0.003
    a = photos()[0]
    b = C.corrupt(a, "gaussian_noise", 2, seed=0)
    expected = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=2,
    )  # fmt: skip
    assert abs(C.ssim(a, b) - expected) < 1e-5
    assert C.ssim(a, a) == pytest.approx(1.0)


def test_photo_set_is_thirty_distinct_natural_photos():
    ph = fidelity.photo_set(64)
    assert len(ph) == fidelity.N_PHOTOS == 30
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in ph)
    assert len({p.tobytes() for p in ph}) == 30
    crops = fidelity.photo_crops()
    assert {c[0] for c in crops} == set(fidelity.PHOTO_NAMES)


# ---------------------------------------------------------------------------------- preview CLI


def test_preview_cli(tmp_path: Path):
    from PIL import Image

    src = tmp_path / "photo.png"
    Image.fromarray(photos()[0]).save(src)
    out = tmp_path / "grid.png"
    grid, names = preview_grid(photos()[0], ["noise", "fog"], size=32)
    assert names == C.FAMILIES["noise"] + ("fog",) and grid.shape == (4 * 32, 6 * 32, 3)
    res = subprocess.run(
        [sys.executable, "-m", "hf_vitrobust.corruptions", "preview", str(src), "--out", str(out),
         "--corruptions", "contrast", "pixelate", "--size", "48"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert Image.open(out).size[0] > 100
    assert preview_main([str(src), "--out", str(tmp_path / "g2.png"), "--corruptions", "fog"]) == 0
    with pytest.raises(SystemExit, match="unknown corruption|neither"):
        preview_main([str(src), "--out", str(tmp_path / "g3.png"), "--corruptions", "fgo"])
    with pytest.raises(SystemExit, match="not found"):
        preview_main([str(tmp_path / "missing.png"), "--out", str(tmp_path / "g4.png")])


def test_list_command(capsys):
    assert preview_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(C.CORRUPTIONS) + 1 and lines[-1].startswith("families: low_frequency=")
    assert lines[0].split()[:2] == ["gaussian_noise", "noise"]


def test_registry_rows():
    rows = C.registry_rows()
    assert [r["name"] for r in rows] == list(C.CORRUPTIONS)
    by_name = {r["name"]: r for r in rows}
    assert by_name["gaussian_noise"]["severity_params"] == "sigma 0.08 0.12 0.18 0.26 0.38"
    assert by_name["gaussian_noise"]["families"] == ("high_frequency",)
    assert by_name["fog"]["band"] == "low" and by_name["fog"]["families"] == ()
    assert by_name["saturate"]["severity_params"].startswith("factor 0.3 0.1 2.0 5.0 20.0")
    assert by_name["defocus_blur"]["scaling"] == "radius, alias_blur"


def test_readme_corruption_table_is_generated():
    """The README's block is the generator's output (regenerate: python recipes/report.py
    --corruption_table true), so its gaps and speeds are the stored measurements."""
    from hf_vitrobust.report import corruption_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    begin = readme.index("<!-- BEGIN corruption table")
    block = readme[readme.index("\n", begin) + 1 : readme.index("<!-- END corruption table -->")]
    assert block.strip() == corruption_table_markdown().strip()


def test_package_import_leaves_preview_and_reference_out():
    """`import hf_vitrobust.corruptions` (data workers) loads no matplotlib, no reference."""
    code = (
        "import sys, hf_vitrobust.corruptions; "
        "print(*[m in sys.modules for m in ('matplotlib', 'hf_vitrobust.corruptions.preview', "
        "'imagecorruptions', 'skimage')])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False"] * 4
