"""Image data pipeline: sources, subsets, decoding, bad-image accounting, preprocessing, views.

Flow: ``load_image_dataset`` (``sources``) gives a ``datasets`` dataset whose ``image`` column
is left *undecoded*, so that one broken file cannot crash an epoch; ``max_examples`` selects a
seeded class-stratified sample and streamed training data is shuffled through a buffer
(``subsets``, whose ``selection_record`` every stage writes into its outputs).
``CorruptionCollator`` (``collate``) runs in the DataLoader workers and, per batch, decodes to RGB
uint8 (``decode_examples``), resizes with the model's processor settings (``preprocess``), draws
and applies the corruption views on uint8 (``views``), then normalises everything into tensors.
Undecodable images are skipped and reported in the batch; the main process counts the unique
ids it consumed in a ``BadImageTracker`` (``bad_images``), which ``BadImageCallback`` saves with
every checkpoint. ``labels`` checks a model's classes against the dataset's;
``python -m hf_vitrobust.data --check DATASET`` scans a dataset before training (``check``).

Every random draw is a pure function of (seed, stage, epoch, example id, view index)
(``hf_vitrobust.seeding.view_words``), so runs are reproducible and a resumed run redraws the
same corruptions.
"""

from __future__ import annotations

from hf_vitrobust.data.bad_images import (
    BAD_IMAGES_FILE,
    BadImageTracker,
    TooManyBadImagesError,
)
from hf_vitrobust.data.bad_images_callback import BadImageCallback
from hf_vitrobust.data.check import scan_dataset
from hf_vitrobust.data.collate import COLLATOR_EXTRA_KEYS, CorruptionCollator
from hf_vitrobust.data.decode import (
    BadImage,
    BadImageError,
    decode_examples,
    decode_image,
    image_path,
)
from hf_vitrobust.data.labels import check_labels, label_names, validate_labels
from hf_vitrobust.data.preprocess import ProcessorSpec
from hf_vitrobust.data.sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    FASHION_MNIST_HUB_ID,
    STREAM_ID_STRIDE,
    find_fashion_mnist_dir,
    load_dataset_split,
    load_image_dataset,
    pgm_bytes,
)
from hf_vitrobust.data.subsets import selection_record, source_label, stratified_indices
from hf_vitrobust.data.views import CorruptionViews

__all__ = [
    "BAD_IMAGES_FILE",
    "COLLATOR_EXTRA_KEYS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_HUB_ID",
    "STREAM_ID_STRIDE",
    "BadImage",
    "BadImageCallback",
    "BadImageError",
    "BadImageTracker",
    "CorruptionCollator",
    "CorruptionViews",
    "ProcessorSpec",
    "TooManyBadImagesError",
    "check_labels",
    "decode_examples",
    "decode_image",
    "find_fashion_mnist_dir",
    "image_path",
    "label_names",
    "load_dataset_split",
    "load_image_dataset",
    "pgm_bytes",
    "scan_dataset",
    "selection_record",
    "source_label",
    "stratified_indices",
    "validate_labels",
]
