"""The held-out images of the SAE comparison, and the reference images beside them.

Conditions and pixels are the analysis' (``analysis.conditions``): ``clean`` and one condition
per corruption group, where the image with example id ``e`` gets the group's corruption
``group_corruption(seed, e, group, members)`` at the stage's severity, applied by
``corruptions.corrupt_examples`` with the evaluation's per-image seed. So the SAE stage, the
analysis and the evaluation feed a model byte-identical pixels for the same image and corruption.

- **Compared images**: the eval split's ``num_eval_images`` (``data.load_dataset_split``, as the
  other stages select them), streamed batch by batch and sharded across processes.
- **Reference images**: ``reference_images`` further eval images, disjoint from the compared
  ones (by example id). Under each condition they give the base model's mean activation (the
  centre of the raw-activation cosine), each compared image's *different-image* partner, and the
  held-out activations on which BatchTopK thresholds are calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_vitrobust.analysis.conditions import (
    ConditionCollator,
    DatasetBatches,
    condition_groups,
    corrupt_condition,
)
from hf_vitrobust.constants import CLEAN
from hf_vitrobust.data import ProcessorSpec, load_dataset_split
from hf_vitrobust.seeding import hash_words

#: Hash stage of a compared image's different-image partner among the reference images.
PARTNER_STAGE = "sae-different-image"


def heldout_conditions(corruptions: Sequence[str]) -> dict[str, list[str]]:
    """``{"clean": ["clean"], group: [corruption, ...]}``: the conditions and their members.

    ``corruptions`` holds family and/or corruption names (empty: clean only); groups come in the
    registry's order, as in the analysis.
    """
    conditions: dict[str, list[str]] = {CLEAN: [CLEAN]}
    if corruptions:
        conditions.update({g: list(m) for g, m in condition_groups(list(corruptions)).items()})
    return conditions


def compared_batches(
    dataset: Any, processor: Any, args: Any, max_bad_fraction: float, state: Any = None
) -> DatasetBatches:
    """The compared images under every condition, batch by batch (this process's share when
    ``state`` is given); undecodable ones are counted once, on the clean pass."""
    return DatasetBatches(
        dataset,
        processor,
        corruptions=list(args.corruptions) or [],
        severity=args.severity,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_bad_fraction=max_bad_fraction,
        state=state,
    )


class ReferenceImages:
    """The reference images, decoded and resized once; undecodable ones are skipped and kept in
    ``skipped_images`` (``{example_id: BadImage}``) for the held-out bad-image count."""

    def __init__(self, examples: Sequence[dict[str, Any]], args: Any, spec: ProcessorSpec) -> None:
        self.groups = condition_groups(list(args.corruptions)) if args.corruptions else {}
        self.spec = spec
        self.severity = int(args.severity)
        self.seed = int(args.seed)
        clean = ConditionCollator(
            spec, CLEAN, self.groups, self.severity, self.seed, keep_images=True
        )(list(examples))
        self.images: np.ndarray = clean["images"]
        self.example_ids: np.ndarray = clean["example_ids"].numpy()
        self.skipped_images: dict[int, Any] = dict(clean["skipped_images"])
        if len(self.example_ids) < 2:
            raise ValueError(
                f"{len(self.example_ids)} decodable reference images; the reference set needs at "
                "least 2 (the eval split must hold reference_images images beyond the "
                "num_eval_images compared ones: lower either)."
            )

    @classmethod
    def from_eval_split(
        cls, data_args: Any, compared_ids: set[int], args: Any, spec: ProcessorSpec
    ) -> ReferenceImages:
        """``args.reference_images`` eval images not among the compared ones (by example id)."""
        wanted = int(args.reference_images)
        pool = load_dataset_split(
            data_args, "eval", max_examples=int(args.num_eval_images) + wanted
        )
        examples: list[dict[str, Any]] = []
        for example in pool:
            if int(example["example_id"]) not in compared_ids:
                examples.append(example)
            if len(examples) == wanted:
                break
        return cls(examples, args, spec)

    def __len__(self) -> int:
        return len(self.example_ids)

    def pixels(self, condition: str) -> torch.Tensor:
        """The reference images' model inputs under ``condition``."""
        pixels, _ = corrupt_condition(
            self.images, self.example_ids, condition, self.groups, self.severity, self.seed
        )
        return self.spec.to_tensor(pixels)

    def partners(self, example_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Index of each compared image's partner among the reference images: a seeded hash
        of its example id, so it does not depend on batching or on the number of processes."""
        n = len(self.example_ids)
        return np.asarray(
            [hash_words(PARTNER_STAGE, self.seed, int(e))[0] % n for e in example_ids],
            dtype=np.int64,
        )


def compared_example_ids(dataset: Any) -> set[int]:
    """The example ids of the compared images (the column only: nothing is decoded)."""
    if hasattr(dataset, "__len__"):
        return {int(e) for e in dataset["example_id"]}
    return {int(row["example_id"]) for row in dataset.select_columns(["example_id"])}


__all__ = [
    "PARTNER_STAGE",
    "ReferenceImages",
    "compared_batches",
    "compared_example_ids",
    "heldout_conditions",
]
