"""Class labels: names from the dataset, and checks that a model's classes fit them.

Run ``check_labels`` and ``validate_labels`` before training, so that a label the model cannot
output fails with the example ids instead of inside the loss; ``CorruptionCollator(num_labels=...)``
checks each batch again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np

from hf_vitrobust.data.sources import column_array


def label_names(dataset: Any) -> list[str]:
    """Class names from the dataset's ``label`` ClassLabel feature."""
    features = dataset.features
    if features is None or "label" not in features:
        raise ValueError(
            "The dataset has no 'label' feature; load it with load_image_dataset "
            f"(columns: {getattr(dataset, 'column_names', None)})."
        )
    feature = features["label"]
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"The 'label' feature is {feature}, not a ClassLabel with class names.")
    return list(feature.names)


def _generic_names(names: Sequence[str]) -> bool:
    return all(name in (str(i), f"LABEL_{i}") for i, name in enumerate(names))


def check_labels(label_names: Sequence[str], config: Any) -> None:
    """Check that a model config's labels fit the dataset's classes; clear error otherwise.

    The model must have exactly ``len(label_names)`` outputs; when the config carries real
    class names (not ``LABEL_i``), they must match the dataset's in order.
    """
    names = list(label_names)
    num_labels = int(config.num_labels)
    if num_labels != len(names):
        raise ValueError(
            f"The model has {num_labels} output classes but the dataset has {len(names)} "
            f"({names[:5]}{'...' if len(names) > 5 else ''}). Load the model with "
            f"num_labels={len(names)} and the dataset's id2label (a new classifier head), or use "
            "the dataset the model was trained on."
        )
    id2label = getattr(config, "id2label", None) or {}
    model_names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(num_labels)]
    if _generic_names(model_names) or _generic_names(names):
        return
    mismatched = [(i, m, d) for i, (m, d) in enumerate(zip(model_names, names)) if m != d]
    if mismatched:
        shown = ", ".join(f"{i}: model {m!r} vs data {d!r}" for i, m, d in mismatched[:5])
        raise ValueError(
            f"The model's class names differ from the dataset's at {len(mismatched)} of "
            f"{num_labels} indices ({shown}). Labels would be misread: use the matching dataset "
            "or reload the model with the dataset's id2label."
        )


def validate_labels(dataset: Any, num_labels: int) -> None:
    """Fail before training when a label is outside ``[0, num_labels)``.

    A map-style dataset is scanned in full (one Arrow column); a stream is checked through its
    ``ClassLabel`` (each batch is checked again by ``CorruptionCollator(num_labels=...)``).
    """
    feature = dataset.features["label"] if dataset.features else None
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes > num_labels:
        raise ValueError(
            f"The dataset's labels have {feature.num_classes} classes but the model has "
            f"num_labels={num_labels}: labels >= {num_labels} would fail inside the loss."
        )
    if isinstance(dataset, datasets.Dataset):
        values = column_array(dataset, "label")
        bad = np.flatnonzero((values < 0) | (values >= num_labels))
        if len(bad):
            ids = column_array(dataset, "example_id")[bad[:5]].tolist()
            raise ValueError(
                f"{len(bad)} labels are outside [0, {num_labels}) (example ids {ids}, labels "
                f"{values[bad[:5]].tolist()}); the model has num_labels={num_labels}."
            )


__all__ = ["check_labels", "label_names", "validate_labels"]
