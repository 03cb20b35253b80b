"""The analysis conditions, and the pixels each one sees.

The conditions are ``clean`` and one per corruption group present in the resolved
``corruptions`` (in the registry's group order). In the condition of group ``g``, the image with
example id ``e`` gets one corruption of the group, the same on every pass and every run:

    members[hash_words("eval-group", seed, e, g) % len(members)]      (``group_corruption``)

at the analysis severity, applied through ``corruptions.corrupt_examples`` (per-image seed
``seeding.image_seed(seed, e, corruption, severity)``): the path the evaluation uses. Images are
decoded and resized to the model's input size (``ProcessorSpec.resize_uint8``) before they are
corrupted, as in the evaluation, so the analysis sees byte-identical pixels to the evaluation's
cell ``(corruption, severity)`` for the same ``(seed, example_id)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader

from hf_vitrobust.constants import CLEAN, EVAL_STAGE
from hf_vitrobust.corruptions import (
    CORRUPTIONS,
    GROUPS,
    check_severity,
    corrupt_examples,
    resolve_corruptions,
)
from hf_vitrobust.data import BadImageTracker, ProcessorSpec, decode_examples
from hf_vitrobust.distributed import shard_for_process
from hf_vitrobust.seeding import hash_words

#: Hash stage of the per-image draw of a corruption within a group (see the module docstring).
GROUP_DRAW_STAGE = f"{EVAL_STAGE}-group"

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pixel_values, labels, example_ids

__all__ = [
    "GROUP_DRAW_STAGE",
    "Batch",
    "condition_groups",
    "group_corruption",
    "corrupt_condition",
    "ConditionCollator",
    "DatasetBatches",
]


def condition_groups(corruptions: str | Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Corruption group -> its members among ``corruptions`` (family or corruption names, a
    list or a comma string), for every group with at least one member, in registry order."""
    names = resolve_corruptions(corruptions)
    members = {g: tuple(n for n in names if CORRUPTIONS[n].group == g) for g in GROUPS}
    return {g: m for g, m in members.items() if m}


def group_corruption(seed: int, example_id: int, group: str, members: Sequence[str]) -> str:
    """The corruption of ``group`` (one of ``members``) that image ``example_id`` gets."""
    if not members:
        raise ValueError(f"Corruption group {group!r} has no member to draw from.")
    (word,) = hash_words(GROUP_DRAW_STAGE, int(seed), int(example_id), group)
    return members[word % len(members)]


def corrupt_condition(
    images: np.ndarray,
    example_ids: Sequence[int],
    condition: str,
    groups: Mapping[str, Sequence[str]],
    severity: int,
    seed: int,
) -> tuple[np.ndarray, list[str]]:
    """The pixels of ``condition`` for model-sized RGB uint8 ``images`` [B, H, W, 3].

    Returns the (corrupted) uint8 images and each image's corruption name (``clean`` for the
    clean condition). Each corrupted image equals ``corrupt_examples([image], [example_id],
    name, severity, seed)`` with ``name = group_corruption(seed, example_id, condition, ...)``.
    """
    ids = [int(e) for e in example_ids]
    if len(images) != len(ids):
        raise ValueError(f"got {len(ids)} example ids for {len(images)} images")
    if condition == CLEAN:
        return images, [CLEAN] * len(ids)
    if condition not in groups:
        raise ValueError(f"Unknown condition {condition!r}; expected one of {[CLEAN, *groups]}.")
    names = [group_corruption(seed, e, condition, groups[condition]) for e in ids]
    out = np.empty_like(images)
    for name in dict.fromkeys(names):  # one corrupt_examples call per corruption drawn
        rows = [i for i, n in enumerate(names) if n == name]
        out[rows] = corrupt_examples(images[rows], [ids[i] for i in rows], name, severity, seed)
    return out, names


class ConditionCollator:
    """DataLoader ``collate_fn`` for one condition: decode, resize, corrupt (uint8), normalise.

    Runs in the DataLoader workers, so it only reports undecodable images (``skipped_images``:
    example id -> ``BadImage``); the main process counts them. Returns ``pixel_values`` float
    [B, 3, H, W], ``labels`` and ``example_ids`` long [B], ``corruptions`` (B names) and, with
    ``keep_images``, the uint8 pixels ``images`` [B, H, W, 3] the input was normalised from.
    """

    def __init__(
        self,
        spec: ProcessorSpec,
        condition: str,
        groups: Mapping[str, Sequence[str]],
        severity: int,
        seed: int,
        *,
        keep_images: bool = False,
    ) -> None:
        if condition != CLEAN and condition not in groups:
            raise ValueError(
                f"Unknown condition {condition!r}; expected one of {[CLEAN, *groups]}."
            )
        self.spec = spec
        self.condition = condition
        self.groups = {g: tuple(m) for g, m in groups.items()}
        self.severity = check_severity(severity)
        self.seed = int(seed)
        self.keep_images = keep_images

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if any("example_id" not in example for example in examples):
            raise ValueError(
                "An example has no 'example_id' (the key of its corrupted pixels and of its "
                "records across processes): load the data with "
                "hf_vitrobust.data.load_image_dataset, which adds it."
            )
        images, labels, ids, bad = decode_examples(examples, self.spec)
        height, width = self.spec.size
        stacked = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
        pixels, names = corrupt_condition(
            stacked, ids, self.condition, self.groups, self.severity, self.seed
        )
        batch: dict[str, Any] = {
            "pixel_values": self.spec.to_tensor(pixels),
            "labels": torch.tensor(labels, dtype=torch.long),
            "example_ids": torch.tensor(ids, dtype=torch.long),
            "corruptions": names,
            "skipped_images": bad,
        }
        if self.keep_images:
            batch["images"] = pixels
        return batch


class DatasetBatches:
    """``batches(condition)`` for ``analyze_models`` from an image dataset.

    ``conditions`` is ``["clean", *groups]``, one group per corruption group present in
    ``corruptions`` (see the module docstring for the per-image corruption). Every call yields
    this process's share of the images (``distributed.shard_for_process``), the same images in
    the same order; undecodable images are counted once (on the clean pass) and skipped on every
    pass. The attention panel reads the first images of the whole dataset.
    """

    def __init__(
        self,
        dataset: Any,
        processor: Any,
        *,
        corruptions: str | Sequence[str] = "all",
        severity: int = 3,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        max_bad_fraction: float = 0.01,
        state: PartialState | None = None,
    ) -> None:
        self.dataset = dataset
        self.shard = dataset if state is None else shard_for_process(dataset, state)
        self.spec = ProcessorSpec.from_processor(processor)
        self.group_members = condition_groups(corruptions)
        self.severity = check_severity(severity)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.bad_images = BadImageTracker(max_bad_fraction)
        self.conditions = [CLEAN, *self.group_members]

    def collator(self, condition: str, keep_images: bool = False) -> ConditionCollator:
        """The collate function of ``condition`` (the clean pass counts bad images)."""
        return ConditionCollator(
            self.spec,
            condition,
            self.group_members,
            self.severity,
            self.seed,
            keep_images=keep_images,
        )

    def images(self, condition: str, keep_images: bool = True) -> Iterator[dict[str, Any]]:
        """Collated batches of ``condition`` (see ``ConditionCollator``), empty ones skipped."""
        loader = DataLoader(
            self.shard,
            batch_size=self.batch_size,
            collate_fn=self.collator(condition, keep_images),
            num_workers=self.num_workers,
            shuffle=False,
        )
        for batch in loader:
            if condition == CLEAN:  # the counting pass: every image is seen once here
                self.bad_images.record(batch["example_ids"].tolist(), batch["skipped_images"])
                self.bad_images.check()
            if len(batch["labels"]):
                yield batch

    def __call__(self, condition: str) -> Iterator[Batch]:
        for batch in self.images(condition, keep_images=False):
            yield batch["pixel_values"], batch["labels"], batch["example_ids"]

    def finish_bad_images(self, state: PartialState | None = None) -> dict[str, Any]:
        """The bad-image figures of the whole run (a collective over processes), after
        enforcing ``max_bad_fraction`` on them."""
        summary = self.bad_images.gather(state)
        self.bad_images.check(final=True)
        return summary

    def panel_batch(self, num_images: int) -> dict[str, Any]:
        """The first ``num_images`` decodable images: clean, and each corrupted with a group in
        turn (image i uses group i mod G, with that group's condition pixels). Returns tensors
        and the corruption names."""
        groups = list(self.group_members)
        if not groups:
            raise ValueError("The attention panel needs at least one corruption group.")
        examples = list(islice(iter(self.dataset), num_images * 2))
        clean = ConditionCollator(
            self.spec, CLEAN, self.group_members, self.severity, self.seed, keep_images=True
        )(examples)
        corrupted, names = [], []
        for i, example_id in enumerate(clean["example_ids"][:num_images].tolist()):
            group = groups[i % len(groups)]
            pixels, (name,) = corrupt_condition(
                clean["images"][i : i + 1],
                [example_id],
                group,
                self.group_members,
                self.severity,
                self.seed,
            )
            corrupted.append(pixels[0])
            names.append(f"{group}: {name}")
        return {
            "clean": clean["pixel_values"][:num_images],
            "corrupted": self.spec.to_tensor(corrupted),
            "labels": clean["labels"][:num_images],
            "corruptions": names,
        }
