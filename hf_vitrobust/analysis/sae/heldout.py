"""The held-out images of the SAE comparison: which images, which conditions, which pixels.

Images are decoded and resized to the model's input size exactly as the evaluation does
(``data.decode_image`` then ``ProcessorSpec.resize_uint8``), then corrupted by
``corruptions.corrupt_examples``: the image with ``example_id`` e under corruption c at severity s
is seeded with ``seeding.image_seed(seed, e, c, s)``. So the SAE stage, the evaluation and the
analysis see byte-identical pixels for the same ``(seed, example_id, corruption, severity)``, and
an image's pixels never depend on its position in the list.

A condition is ``clean`` or a corruption group (``noise``, ``blur``, ...). Under a group, *every*
corruption of the group that the recipe names is applied to *every* image, and per-image values are
averaged over those corruptions; so no per-image choice of a corruption is made here (the analysis
draws one per image, ``analysis.conditions.group_corruption``: that image's pixels are the SAE
stage's pixels for the corruption drawn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_vitrobust.analysis.conditions import condition_groups
from hf_vitrobust.constants import CLEAN
from hf_vitrobust.corruptions import corrupt_examples
from hf_vitrobust.data import ProcessorSpec, decode_image, load_dataset_split


def load_heldout_images(
    data_args: Any, num_images: int, spec: ProcessorSpec
) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``num_images`` images of the eval split as RGB uint8 at the model's input size,
    and their ``example_id`` s (corruptions apply at that size)."""
    ds = load_dataset_split(data_args, "eval", max_examples=num_images)
    images, ids = [], []
    for example in ds:
        images.append(spec.resize_uint8(decode_image(example["image"])))
        ids.append(int(example["example_id"]))
    if len(images) < 2:
        raise ValueError(
            f"the eval split {data_args.eval_split!r} of {data_args.dataset_name!r} gave "
            f"{len(images)} images; the comparison needs at least 2."
        )
    return images[:num_images], np.asarray(ids[:num_images], dtype=np.int64)


def heldout_conditions(corruptions: Sequence[str]) -> dict[str, list[str]]:
    """``{"clean": ["clean"], group: [corruption, ...]}`` for the held-out comparison.

    ``corruptions`` holds family and/or corruption names (empty: clean only); groups come in the
    registry's order, as in the analysis (``analysis.conditions.condition_groups``).
    """
    conditions: dict[str, list[str]] = {CLEAN: [CLEAN]}
    if corruptions:
        groups = condition_groups(list(corruptions))
        conditions.update({group: list(members) for group, members in groups.items()})
    return conditions


def condition_images(
    images: Sequence[np.ndarray] | np.ndarray,
    example_ids: Sequence[int] | np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
) -> np.ndarray:
    """The held-out images (uint8 ``[N, H, W, 3]``) clean or under one corruption.

    A corruption goes through ``corruptions.corrupt_examples`` keyed on each ``example_id``.
    """
    if corruption == CLEAN:
        return np.stack(list(images))
    return corrupt_examples(images, example_ids, corruption, severity, seed)


def condition_pixels(
    images: Sequence[np.ndarray] | np.ndarray,
    example_ids: Sequence[int] | np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
    spec: ProcessorSpec,
) -> torch.Tensor:
    """The model inputs (normalised ``pixel_values``) of :func:`condition_images`."""
    return spec.to_tensor(list(condition_images(images, example_ids, corruption, severity, seed)))


__all__ = [
    "condition_images",
    "condition_pixels",
    "heldout_conditions",
    "load_heldout_images",
]
