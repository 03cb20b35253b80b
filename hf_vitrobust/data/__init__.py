"""Image data pipeline: sources, decoding, bad-image accounting, preprocessing, corruption views.

Flow: ``load_image_dataset`` (``sources``) gives a ``datasets`` dataset whose ``image`` column
is left *undecoded*, so that one broken file cannot crash an epoch; ``CorruptionCollator``
(``collate``) runs in the DataLoader workers and, per example, decodes to RGB uint8
(``decode``), resizes with the model's processor settings (``preprocess``), draws and applies
the corruption views on uint8 (``views``), then normalises everything into tensors.
Undecodable images are skipped and counted by a ``BadImageTracker`` (``bad_images``) shared
with the workers; ``labels`` checks a model's classes against the dataset's.

Every random draw is a pure function of (seed, stage, epoch, example id, view index)
(``hf_vitrobust.seeding.view_words``), so runs are reproducible and a resumed run redraws the
same corruptions.
"""

from __future__ import annotations

from hf_vitrobust.data.bad_images import BadImageTracker, TooManyBadImagesError
from hf_vitrobust.data.collate import CorruptionCollator
from hf_vitrobust.data.decode import BadImageError, decode_image
from hf_vitrobust.data.labels import check_labels, label_names, validate_labels
from hf_vitrobust.data.preprocess import ProcessorSpec
from hf_vitrobust.data.sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    FASHION_MNIST_HUB_ID,
    STANDARD_COLUMNS,
    STREAM_ID_STRIDE,
    find_fashion_mnist_dir,
    load_dataset_split,
    load_image_dataset,
    pgm_bytes,
)
from hf_vitrobust.data.views import CorruptionViews

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_HUB_ID",
    "STANDARD_COLUMNS",
    "STREAM_ID_STRIDE",
    "BadImageError",
    "BadImageTracker",
    "CorruptionCollator",
    "CorruptionViews",
    "ProcessorSpec",
    "TooManyBadImagesError",
    "check_labels",
    "decode_image",
    "find_fashion_mnist_dir",
    "label_names",
    "load_dataset_split",
    "load_image_dataset",
    "pgm_bytes",
    "validate_labels",
]
