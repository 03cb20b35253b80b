"""Shared fixtures: offline Hub, tiny ViTs, small real Fashion-MNIST data."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


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
    """Folder with Debian's Fashion-MNIST IDX files (skips when absent)."""
    from hf_vitrobust.data import find_fashion_mnist_dir

    path = find_fashion_mnist_dir()
    if path is None:
        pytest.skip(
            "Fashion-MNIST files not installed (make install installs dataset-fashion-mnist)"
        )
    return path
