"""Pre-flight scan of a dataset: which files cannot be decoded, before any training.

``python -m hf_vitrobust.data --check DATASET`` decodes every image of a split (in parallel
DataLoader workers, with a progress bar) exactly as training and evaluation would
(``decode_examples``), counts each example once in a ``BadImageTracker`` and lists every bad
file with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.utils.data
from tqdm.auto import tqdm

from hf_vitrobust.data.bad_images import BadImageTracker
from hf_vitrobust.data.decode import BadImage, decode_examples
from hf_vitrobust.data.sources import load_image_dataset


def _scan_batch(examples: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[int, BadImage]]:
    """DataLoader ``collate_fn``: decode (at full size) and keep only what the scan needs."""
    _, _, ids, bad = decode_examples(examples)
    return ids, bad


def scan_dataset(
    source: str,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str = "label",
    config_name: str | None = None,
    streaming: bool | None = None,
    max_examples: int | None = None,
    max_bad_fraction: float = 0.01,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[BadImageTracker, dict[int, BadImage]]:
    """Decode every image of ``source``'s ``split``: (tracker, ``{id: BadImage}`` of every bad one).

    ``max_examples`` scans a seeded class-stratified sample instead of everything.
    """
    dataset = load_image_dataset(
        source,
        split,
        streaming=streaming,
        image_column=image_column,
        label_column=label_column,
        config_name=config_name,
        max_examples=max_examples,
    )
    tracker = BadImageTracker(max_bad_fraction=max_bad_fraction, min_examples=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_scan_batch
    )
    total = len(dataset) if hasattr(dataset, "__len__") else None
    bad_files: dict[int, BadImage] = {}
    with tqdm(total=total, desc=f"checking {source}", unit="img", disable=not progress) as bar:
        for ids, bad in loader:
            tracker.record(ids, bad)
            bad_files.update(bad)
            bar.update(len(ids) + len(bad))
            bar.set_postfix(bad=tracker.bad)
    return tracker, dict(sorted(bad_files.items()))


__all__ = ["scan_dataset"]
