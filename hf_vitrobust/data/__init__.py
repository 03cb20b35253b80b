"""Image data pipeline: sources, decoding and validation, the model's preprocessing, corruption views.

Flow (DESIGN.md section 2): ``load_image_dataset`` gives a ``datasets`` dataset whose ``image``
column is left *undecoded* (``Image(decode=False)``), so that one broken file cannot crash an
epoch; ``CorruptionCollator`` runs in the DataLoader workers and, per example, decodes to RGB
uint8 (``decode_image``), resizes with the model's processor settings, draws and applies the
corruption views on uint8, then normalises everything into tensors. Undecodable images are
skipped and counted by a ``BadImageTracker`` shared with the workers.

Every random draw is a pure function of (seed, stage, epoch, example id, view index), so runs
are reproducible and a resumed run redraws the same corruptions. Training and evaluation use
different streams of draws (``stage="train"`` vs ``"eval"``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import multiprocessing
import os
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import datasets
    import torch

logger = logging.getLogger(__name__)

FASHION_MNIST_ENV = "HF_VITROBUST_FASHION_MNIST_DIR"
# Where Debian's `dataset-fashion-mnist` package installs the files (`dpkg -L dataset-fashion-mnist`).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Class names in label order, from Zalando's README.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist")
_SPLIT_ALIASES = {"validation": "test", "valid": "test", "val": "test", "t10k": "test"}

# Streamed sources number their examples shard by shard: example_id = shard * 2**32 + row.
STREAM_ID_STRIDE = 2**32
# Above this many data sources (e.g. one per file of an imagefolder) shards are grouped.
MAX_STREAM_SHARDS = 1024
# Map-style local datasets are converted to this many shards when streamed, so that accelerate
# can give every process whole shards (datasets' `n_shards >= num_processes` rule).
LOCAL_STREAM_SHARDS = 64
STANDARD_COLUMNS = ("image", "label", "example_id")
_STAGES = {"train": 0, "eval": 1}
_HUB_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def find_fashion_mnist_dir() -> Path | None:
    """The folder holding the four Fashion-MNIST IDX files, or None.

    Looks at ``$HF_VITROBUST_FASHION_MNIST_DIR`` first, then Debian's install folder.
    """
    candidates = []
    if os.environ.get(FASHION_MNIST_ENV):
        candidates.append(Path(os.environ[FASHION_MNIST_ENV]).expanduser())
    candidates.append(DEBIAN_FASHION_MNIST_DIR)
    needed = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    for folder in candidates:
        if all((folder / name).is_file() for name in needed):
            return folder
    return None


def _read_idx(path: Path, max_items: int | None = None) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header: magic, then one uint32 per dimension).

    With ``max_items`` only the first items are decompressed (fast small loads).
    """
    with gzip.open(path, "rb") as handle:
        magic = handle.read(4)
        if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
            raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
        ndim = magic[3]
        shape = tuple(int(v) for v in np.frombuffer(handle.read(4 * ndim), dtype=">u4"))
        if max_items is not None:
            shape = (min(shape[0], max_items), *shape[1:])
        expected = int(np.prod(shape))
        data = handle.read(expected)
    if len(data) != expected:
        raise ValueError(f"{path} is truncated: header says {shape}, found {len(data)} bytes.")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _pgm_bytes(image: np.ndarray) -> bytes:
    # Binary PGM: a standard format Pillow decodes, and free to encode (PNG would cost ~0.3 ms
    # per image, i.e. ~20 s for the 70k Fashion-MNIST images).
    height, width = image.shape
    return b"P5\n%d %d\n255\n" % (width, height) + image.tobytes()


def _fashion_mnist_split(split: str) -> str:
    name = split.split("[", 1)[0]
    name = _SPLIT_ALIASES.get(name, name)
    if name not in FASHION_MNIST_FILES:
        raise ValueError(
            f"Fashion-MNIST has splits 'train' and 'test' (aliases {sorted(_SPLIT_ALIASES)}), "
            f"not {split!r}."
        )
    if name != split:
        logger.info("Fashion-MNIST split %r read as %r.", split, name)
    return name


def _load_fashion_mnist_files(
    folder: Path, split: str, max_examples: int | None
) -> datasets.Dataset:
    import datasets
    import pyarrow as pa

    images_file, labels_file = FASHION_MNIST_FILES[_fashion_mnist_split(split)]
    images = _read_idx(folder / images_file, max_examples)
    labels = _read_idx(folder / labels_file, max_examples)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}."
        )
    encoded = pa.array([_pgm_bytes(img) for img in images], type=pa.binary())
    image_column = pa.StructArray.from_arrays(
        [encoded, pa.nulls(len(images), pa.string())], names=["bytes", "path"]
    )
    table = pa.table(
        {
            "image": image_column,
            "label": pa.array(labels.astype(np.int64)),
            "example_id": pa.array(np.arange(len(images), dtype=np.int64)),
        }
    )
    features = datasets.Features(
        image=datasets.Image(decode=False),
        label=datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
        example_id=datasets.Value("int64"),
    )
    return datasets.Dataset(
        table.cast(features.arrow_schema), info=datasets.DatasetInfo(features=features)
    )


def _is_save_to_disk_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _local_alternatives() -> str:
    return (
        "Use local data instead: a folder of class subfolders (imagefolder), parquet or arrow "
        "file(s), a folder written by `Dataset.save_to_disk`, or 'fashion_mnist' (Debian's "
        "dataset-fashion-mnist files)."
    )


def _load_raw(
    source: str | os.PathLike | Sequence[str],
    split: str,
    streaming: bool | None,
    config_name: str | None,
) -> tuple[Any, str, bool]:
    """Load without standardising: returns (dataset, description, is_hub)."""
    import datasets

    if isinstance(source, (list, tuple)):
        files = [str(Path(f).expanduser()) for f in source]
        builder = _builder_for_files(files)
        ds = datasets.load_dataset(
            builder, data_files={split: files}, split=split, streaming=bool(streaming)
        )
        return ds, f"{len(files)} {builder} files", False
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if _is_save_to_disk_dir(path):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(
                        f"{text!r} has splits {sorted(loaded)}, not {split!r}; pass one of them."
                    )
                loaded = loaded[split]
            return loaded, f"saved dataset {text!r}", False
        try:
            ds = datasets.load_dataset(
                str(path), config_name, split=split, streaming=bool(streaming)
            )
        except ValueError as error:
            if "split" in str(error).lower():
                raise ValueError(
                    f"Local dataset {text!r} has no split {split!r} ({error}). An imagefolder "
                    "without train/validation/test subfolders has only the split 'train'."
                ) from error
            raise
        return ds, f"local folder {text!r}", False
    if path.is_file() or any(ch in text for ch in "*?["):
        builder = _builder_for_files([text])
        ds = datasets.load_dataset(
            builder, data_files={split: text}, split=split, streaming=bool(streaming)
        )
        return ds, f"{builder} file(s) {text!r}", False
    if text.startswith((".", "/", "~")) or text.endswith((".parquet", ".arrow")):
        raise FileNotFoundError(f"Local dataset {text!r} does not exist. {_local_alternatives()}")
    streaming = True if streaming is None else streaming
    try:
        ds = datasets.load_dataset(text, config_name, split=split, streaming=streaming)
    except _HUB_ERRORS as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
            "HF_DATASETS_OFFLINE", ""
        ) not in ("", "0")
        raise ConnectionError(
            f"Could not load dataset {text!r} from the Hugging Face Hub"
            f"{' (offline mode is set)' if offline else ''}: {type(error).__name__}: {error}. "
            f"{_local_alternatives()} Gated datasets (ImageNet) also need `hf auth login`."
        ) from error
    return ds, f"Hub dataset {text!r}", True


def _builder_for_files(files: Sequence[str]) -> str:
    suffixes = {Path(f.split("::")[0]).suffix.lower() for f in files}
    if suffixes <= {".parquet"}:
        return "parquet"
    if suffixes <= {".arrow"}:
        return "arrow"
    raise ValueError(
        f"Unsupported data files {list(files)[:3]}: give .parquet or .arrow files, or a folder "
        "(imagefolder)."
    )


def _column_names(ds: Any) -> list[str]:
    names = ds.column_names
    if names is None:  # a stream whose features are unknown until read
        ds_resolved = ds._resolve_features()
        names = ds_resolved.column_names
    return list(names)


def _standardize(
    ds: Any,
    description: str,
    image_column: str,
    label_column: str,
    class_names: Sequence[str] | None,
) -> Any:
    """Rename to image/label, make the image undecoded and the label a ClassLabel."""
    import datasets

    if isinstance(ds, datasets.IterableDataset) and ds.features is None:
        ds = ds._resolve_features()
    columns = _column_names(ds)
    for role, name in (("image", image_column), ("label", label_column)):
        if name not in columns:
            raise ValueError(
                f"{description} has no {role} column {name!r}; its columns are {columns}. "
                f"Pass {role}_column=<one of them> (DataArguments.{role}_column in a recipe)."
            )
    # A source's own integer `example_id` column is kept (e.g. a saved subset keeps its ids).
    id_feature = ds.features.get("example_id") if "example_id" in columns else None
    has_ids = id_feature is not None and "int" in str(getattr(id_feature, "dtype", ""))
    keep = [image_column, label_column] + (["example_id"] if has_ids else [])
    drop = [c for c in columns if c not in keep]
    if drop:
        ds = ds.remove_columns(drop)
    renames = {image_column: "image", label_column: "label"}
    renames = {k: v for k, v in renames.items() if k != v}
    if renames:
        ds = ds.rename_columns(renames)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    label_feature = ds.features["label"]
    if class_names is not None:
        target = datasets.ClassLabel(names=list(class_names))
        if not isinstance(label_feature, datasets.ClassLabel) or list(label_feature.names) != list(
            class_names
        ):
            ds = ds.cast_column("label", target)
    elif not isinstance(label_feature, datasets.ClassLabel):
        if isinstance(ds, datasets.IterableDataset):
            raise ValueError(
                f"The label column of {description} is {label_feature}, not a ClassLabel, and a "
                "stream cannot be scanned for its classes: pass class_names=[...] "
                "(or load it with streaming=False)."
            )
        dtype = getattr(label_feature, "dtype", "")
        if dtype == "string":
            ds = ds.class_encode_column("label")
        elif "int" in str(dtype):
            values = _column_array(ds, "label")
            if len(values) and values.min() < 0:
                bad = np.flatnonzero(values < 0)[:5].tolist()
                raise ValueError(
                    f"{description} has negative labels at rows {bad} (unlabelled examples, "
                    "e.g. a test split); use a labelled split."
                )
            top = int(values.max()) + 1 if len(values) else 0
            ds = ds.cast_column("label", datasets.ClassLabel(names=[str(i) for i in range(top)]))
        else:
            raise ValueError(f"Cannot use {label_feature} as class labels in {description}.")
    return ds


def _column_array(ds: Any, column: str) -> np.ndarray:
    """One column of a map-style dataset as numpy (honouring select/shuffle index mappings)."""
    return np.asarray(ds.select_columns([column]).with_format("numpy")[column])


def _stream_with_ids(stream: datasets.IterableDataset) -> datasets.IterableDataset:
    """Re-emit a stream with `example_id = shard * 2**32 + row`, stable under any sharding.

    `map(with_indices=True)` restarts its count in each worker/process shard, so ids would
    collide; here each shard is a fixed group of the source's data files, whatever the number
    of workers or processes that later split the shards among themselves.
    """
    import datasets

    n = max(1, stream.n_shards)
    groups = min(n, MAX_STREAM_SHARDS)
    shards = [(g, stream.shard(num_shards=groups, index=g, contiguous=True)) for g in range(groups)]
    features = stream.features.copy()
    features["example_id"] = datasets.Value("int64")
    return datasets.IterableDataset.from_generator(
        _iter_shards, gen_kwargs={"shards": shards}, features=features
    )


def _iter_shards(shards: Sequence[tuple[int, Any]]) -> Iterator[dict[str, Any]]:
    for index, shard in shards:
        row = 0
        # `.iter(batch_size)` reads the whole shard even inside a DataLoader worker (plain
        # iteration would split the shard again by worker id and lose examples).
        for batch in shard.iter(batch_size=64):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                example = dict(zip(columns, values))
                example["example_id"] = index * STREAM_ID_STRIDE + row
                row += 1
                yield example


def load_image_dataset(
    source: str | os.PathLike | Sequence[str],
    split: str = "train",
    *,
    streaming: bool | None = None,
    image_column: str = "image",
    label_column: str = "label",
    config_name: str | None = None,
    max_examples: int | None = None,
    class_names: Sequence[str] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load an image-classification dataset with the columns ``image``, ``label``, ``example_id``.

    ``source``: a Hub id (streamed by default), a local folder (imagefolder, or any folder
    ``datasets`` recognises, or one written by ``save_to_disk``), parquet/arrow file(s) or a glob,
    or ``"fashion_mnist"`` (Debian's IDX files; the Hub copy when they are absent).

    ``image`` is an ``Image(decode=False)`` feature: values are ``{"bytes", "path"}`` dicts that
    ``decode_image`` turns into RGB uint8, so a broken file is skipped rather than crashing
    iteration. ``label`` is a ``ClassLabel`` (from ``class_names`` when given). ``example_id`` is
    the row index for map-style data; for streams it is ``shard * 2**32 + row``, stable across
    runs, workers and processes. ``streaming=True`` works on local sources too.
    """
    import datasets

    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, not {max_examples}.")
    if isinstance(source, str) and source.lower() in _FASHION_MNIST_NAMES:
        folder = find_fashion_mnist_dir()
        if folder is not None:
            ds = _load_fashion_mnist_files(folder, split, max_examples)
            return ds.to_iterable_dataset(num_shards=_local_shards(len(ds))) if streaming else ds
        logger.warning(
            "Fashion-MNIST files not found (set %s or install Debian's dataset-fashion-mnist); "
            "falling back to the Hub dataset %r.",
            FASHION_MNIST_ENV,
            FASHION_MNIST_HUB_ID,
        )
        source = FASHION_MNIST_HUB_ID
        split = _fashion_mnist_split(split)
    ds, description, _ = _load_raw(source, split, streaming, config_name)
    ds = _standardize(ds, description, image_column, label_column, class_names)
    if isinstance(ds, datasets.IterableDataset):
        if "example_id" not in ds.column_names:
            ds = _stream_with_ids(ds)
        if max_examples is not None:
            ds = ds.take(max_examples)
        return ds
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    if "example_id" not in ds.column_names:
        ds = ds.add_column("example_id", np.arange(len(ds), dtype=np.int64))
    if streaming:
        return ds.to_iterable_dataset(num_shards=_local_shards(len(ds)))
    return ds


def load_dataset_split(
    data_args: Any, which: str = "eval", max_examples: int | None = None
) -> datasets.Dataset | datasets.IterableDataset:
    """``load_image_dataset`` for a recipe's ``DataArguments``: its train or eval split.

    ``which`` is ``"train"`` or ``"eval"``; ``max_examples`` defaults to the recipe's
    ``max_train_examples`` / ``max_eval_examples``.
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', got {which!r}.")
    split = data_args.train_split if which == "train" else data_args.eval_split
    if max_examples is None:
        max_examples = getattr(data_args, f"max_{which}_examples")
    return load_image_dataset(
        data_args.dataset_name,
        split=split,
        streaming=data_args.streaming,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        max_examples=max_examples,
    )


def _local_shards(n: int) -> int:
    return max(1, min(LOCAL_STREAM_SHARDS, n))


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def label_names(dataset: Any) -> list[str]:
    """Class names from the dataset's ``label`` ClassLabel feature."""
    import datasets

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
    import datasets

    feature = dataset.features["label"] if dataset.features else None
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes > num_labels:
        raise ValueError(
            f"The dataset's labels have {feature.num_classes} classes but the model has "
            f"num_labels={num_labels}: labels >= {num_labels} would fail inside the loss."
        )
    if isinstance(dataset, datasets.Dataset):
        values = _column_array(dataset, "label")
        bad = np.flatnonzero((values < 0) | (values >= num_labels))
        if len(bad):
            ids = _column_array(dataset, "example_id")[bad[:5]].tolist()
            raise ValueError(
                f"{len(bad)} labels are outside [0, {num_labels}) (example ids {ids}, labels "
                f"{values[bad[:5]].tolist()}); the model has num_labels={num_labels}."
            )


# --------------------------------------------------------------------------------------------
# Decoding and validation
# --------------------------------------------------------------------------------------------


class BadImageError(ValueError):
    """An image that cannot be decoded (corrupt, truncated, empty, unsupported mode)."""


class TooManyBadImagesError(RuntimeError):
    """More undecodable images than ``max_bad_fraction`` allows."""


def _to_uint8_from_wide(array: np.ndarray) -> np.ndarray:
    # 16-bit data spans 0..65535: divide by 257 so 65535 -> 255 exactly.
    if array.dtype == np.uint16 or (array.size and array.max() > 255):
        return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _composite_on_white(image: PILImage.Image) -> PILImage.Image:
    # Same rule as transformers' `convert_to_rgb`: transparent pixels become white.
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def _pil_to_rgb_array(image: PILImage.Image) -> np.ndarray:
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag: rotate/flip for display
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        rgb = np.asarray(image)
    elif mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image)
        if mode == "F":
            # Float images in [0, 1] are scaled; larger values are read as 0..255.
            scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
            gray = np.clip(np.rint(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8)
        elif mode.startswith("I;16"):
            gray = _to_uint8_from_wide(array.astype(np.uint16))
        else:
            gray = _to_uint8_from_wide(array)
        rgb = np.repeat(gray[..., None], 3, axis=2)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ):
        rgb = np.asarray(_composite_on_white(image))
    else:  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        rgb = np.asarray(image.convert("RGB"))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadImageError(f"decoded to an unusable array of shape {rgb.shape} (mode {mode}).")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise BadImageError(f"array of shape {array.shape} is not an (H, W[, 1|3|4]) image.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
        array = np.clip(np.rint(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = _to_uint8_from_wide(array)
    if array.shape[2] == 4:
        return np.asarray(_composite_on_white(PILImage.fromarray(array, "RGBA")))
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def decode_image(value: Any) -> np.ndarray:
    """Decode one image to RGB uint8 ``(H, W, 3)``; raise ``BadImageError`` when it cannot be.

    Accepts what a ``datasets`` Image column holds (a ``{"bytes", "path"}`` dict, decoded or not),
    raw bytes, a file path, a PIL image or a numpy array. Grayscale, palette, CMYK, 16-bit,
    transparent (composited on white, like transformers' ``convert_to_rgb``) and EXIF-rotated
    images are all converted; truncated or corrupt files raise ``BadImageError``.
    """
    if isinstance(value, np.ndarray):
        return _array_to_rgb(value)
    try:
        if isinstance(value, PILImage.Image):
            image = value
            image.load()
        else:
            if isinstance(value, Mapping):
                data, path = value.get("bytes"), value.get("path")
            elif isinstance(value, (bytes, bytearray, memoryview)):
                data, path = bytes(value), None
            elif isinstance(value, (str, os.PathLike)):
                data, path = None, os.fspath(value)
            elif value is None:
                raise BadImageError("the image is missing (None).")
            else:
                raise BadImageError(f"cannot decode an image from a {type(value).__name__}.")
            if data:
                image = PILImage.open(io.BytesIO(data))
            elif path:
                image = PILImage.open(path)
            else:
                raise BadImageError("the image has neither bytes nor a path.")
            # Decode now: a truncated file fails here, not later inside a conversion.
            image.load()
        return _pil_to_rgb_array(image)
    except BadImageError:
        raise
    except (
        OSError,
        UnidentifiedImageError,
        SyntaxError,
        ValueError,
        EOFError,
        PILImage.DecompressionBombError,
    ) as error:
        raise BadImageError(f"{type(error).__name__}: {error}") from error


class BadImageTracker:
    """Counts decoded and undecodable images, across DataLoader workers, and enforces a limit.

    Counters live in shared memory, so the copies in DataLoader workers (fork, spawn or
    forkserver) update the numbers the main process reads. Each worker writes its own slot (no
    lock, hence no multiprocessing-context mismatch); the totals are sums over slots. The run
    stops with ``TooManyBadImagesError`` naming the first bad example ids when the bad fraction
    exceeds ``max_bad_fraction``: during the run once ``min_examples`` images were seen (so
    that one early bad file does not stop it), and at the end (``check(final=True)``) whatever
    the count.
    """

    _SLOTS = 65  # the main process, then DataLoader worker ids modulo 64

    def __init__(
        self, max_bad_fraction: float = 0.01, min_examples: int = 1000, max_listed: int = 10
    ) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], not {max_bad_fraction}.")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_examples = int(min_examples)
        self.max_listed = max(1, int(max_listed))
        # Per slot: [seen, bad]; and the slot's first `max_listed` bad example ids.
        self._counts = multiprocessing.RawArray("q", 2 * self._SLOTS)
        self._ids = multiprocessing.RawArray("q", self._SLOTS * self.max_listed)

    def _slot(self) -> int:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (self._SLOTS - 1)

    @property
    def seen(self) -> int:
        """Images looked at (good and bad)."""
        return int(sum(self._counts[0::2]))

    @property
    def bad(self) -> int:
        """Images skipped as undecodable."""
        return int(sum(self._counts[1::2]))

    @property
    def fraction(self) -> float:
        seen = self.seen
        return self.bad / seen if seen else 0.0

    @property
    def first_bad_ids(self) -> list[int]:
        ids: list[int] = []
        for slot in range(self._SLOTS):
            n = min(int(self._counts[2 * slot + 1]), self.max_listed)
            start = slot * self.max_listed
            ids += [int(v) for v in self._ids[start : start + n]]
        return ids[: self.max_listed]

    def record(self, num_ok: int = 0, bad_ids: Sequence[int] = ()) -> None:
        """Count ``num_ok`` good images and the undecodable ones with these example ids."""
        slot = self._slot()
        for example_id in bad_ids:
            bad = int(self._counts[2 * slot + 1])
            if bad < self.max_listed:
                self._ids[slot * self.max_listed + bad] = int(example_id)
            self._counts[2 * slot + 1] = bad + 1
        self._counts[2 * slot] += int(num_ok) + len(bad_ids)

    def check(self, final: bool = False) -> None:
        """Raise ``TooManyBadImagesError`` when the bad fraction is above the limit."""
        if self.bad and (final or self.seen >= self.min_examples):
            if self.fraction > self.max_bad_fraction:
                raise TooManyBadImagesError(
                    f"{self.bad} of {self.seen} images ({self.fraction:.2%}) could not be decoded, "
                    f"above max_bad_fraction={self.max_bad_fraction:g}; first bad example ids: "
                    f"{self.first_bad_ids}. Fix or remove those files, or raise max_bad_fraction "
                    "(DataArguments.max_bad_fraction)."
                )

    def summary(self) -> str:
        """One line for the end-of-run log."""
        if not self.bad:
            return f"All {self.seen} images decoded."
        return (
            f"Skipped {self.bad} undecodable images of {self.seen} ({self.fraction:.2%}); "
            f"first bad example ids: {self.first_bad_ids}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "bad": self.bad,
            "fraction": self.fraction,
            "first_bad_ids": self.first_bad_ids,
            "max_bad_fraction": self.max_bad_fraction,
        }

    def finish(self) -> dict[str, Any]:
        """Log the summary, enforce the limit on the whole run, and return the counts."""
        (logger.warning if self.bad else logger.info)(self.summary())
        self.check(final=True)
        return self.to_dict()

    def gather(self, accelerator: Any, dispatch_batches: bool = False) -> dict[str, Any]:
        """Counts over all accelerate processes.

        Sharded streams (``dispatch_batches=False``): each process decodes its own shards, so
        counts are summed. Dispatched streams: rank 0 decodes everything that is used (the
        other ranks' DataLoader workers may prefetch batches that are never read), so rank 0's
        counts are the run's.
        """
        from accelerate.utils import gather_object

        parts = [self.to_dict()]
        if accelerator.num_processes > 1:
            parts = gather_object(parts)
        if dispatch_batches:
            parts = parts[:1]
        seen = sum(p["seen"] for p in parts)
        bad = sum(p["bad"] for p in parts)
        first = [i for p in parts for i in p["first_bad_ids"]][: self.max_listed]
        return {
            "seen": seen,
            "bad": bad,
            "fraction": bad / seen if seen else 0.0,
            "first_bad_ids": first,
            "max_bad_fraction": self.max_bad_fraction,
        }


# --------------------------------------------------------------------------------------------
# Preprocessing from the model's own processor
# --------------------------------------------------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass(frozen=True)
class ProcessorSpec:
    """Size, resampling, crop, mean and std of a model's image processor, applied fast.

    Resizing (and centre cropping) uses Pillow on uint8 with the processor's filter, as
    ``ViTImageProcessorPil`` does; rescaling and normalisation are one vectorised multiply-add
    per batch instead of the processor's per-image work.
    """

    size: tuple[int, int]  # final (H, W) the model sees
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = PILImage.Resampling.BILINEAR
    do_resize: bool = True
    do_normalize: bool = True
    resize_to: tuple[int, int] | None = None  # exact (H, W) resize
    shortest_edge: int | None = None  # or: resize the short side to this, keeping the aspect
    crop_size: tuple[int, int] | None = None  # then centre-crop to (H, W)

    @classmethod
    def from_processor(cls, processor: Any) -> ProcessorSpec:
        """Read size/crop/mean/std/resample from a transformers image processor (or a spec)."""
        if isinstance(processor, ProcessorSpec):
            return processor
        processor = getattr(processor, "image_processor", processor)
        size = _get(processor, "size")
        height, width = _get(size, "height"), _get(size, "width")
        shortest = _get(size, "shortest_edge")
        crop = _get(processor, "crop_size") if _get(processor, "do_center_crop") else None
        crop_hw = (int(_get(crop, "height")), int(_get(crop, "width"))) if crop else None
        if height and width:
            resize_to, shortest = (int(height), int(width)), None
            out_size = crop_hw or resize_to
        elif shortest:
            resize_to, shortest = None, int(shortest)
            out_size = crop_hw or (shortest, shortest)
        else:
            raise ValueError(
                f"Unsupported image processor size {size!r} ({type(processor).__name__}): "
                "expected {'height', 'width'} or {'shortest_edge'}."
            )
        if shortest and not crop_hw:
            raise ValueError(
                f"{type(processor).__name__} resizes the shortest edge without a centre crop, so "
                "images keep their aspect ratio and cannot be batched; use a processor with "
                "size={'height', 'width'} or do_center_crop=True."
            )
        if _get(processor, "do_rescale") is False:
            raise ValueError(
                f"{type(processor).__name__} has do_rescale=False; this pipeline feeds [0, 1] "
                "pixels and needs a processor that rescales 0..255 inputs."
            )
        mean = _get(processor, "image_mean")
        std = _get(processor, "image_std")
        do_normalize = _get(processor, "do_normalize") is not False
        if mean is None or std is None:
            mean, std, do_normalize = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False

        def three(values: Any) -> tuple[float, float, float]:
            values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]
            return tuple(values * 3) if len(values) == 1 else tuple(values)  # type: ignore[return-value]

        resample = _get(processor, "resample")
        resample = int(getattr(resample, "value", resample)) if resample is not None else 2
        if resample not in {int(r) for r in PILImage.Resampling}:
            resample = int(PILImage.Resampling.BILINEAR)
        return cls(
            size=out_size,
            mean=three(mean),
            std=three(std),
            resample=resample,
            do_resize=_get(processor, "do_resize") is not False,
            do_normalize=do_normalize,
            resize_to=resize_to,
            shortest_edge=shortest,
            crop_size=crop_hw,
        )

    def resize_uint8(self, image: np.ndarray) -> np.ndarray:
        """Resize (and centre-crop) an RGB uint8 image to the model's input size."""
        height, width = image.shape[:2]
        if (height, width) == self.size and (self.crop_size or self.resize_to == self.size):
            return image  # already what the model sees (e.g. Fashion-MNIST at 28 px)
        pil = PILImage.fromarray(image)
        if self.do_resize and self.shortest_edge:
            # transformers' rule: the short side becomes `shortest_edge`, the long side int().
            if width <= height:
                new = (self.shortest_edge, int(self.shortest_edge * height / width))
            else:
                new = (int(self.shortest_edge * width / height), self.shortest_edge)
            pil = pil.resize(new, resample=self.resample)
        elif self.do_resize and self.resize_to and (height, width) != self.resize_to:
            pil = pil.resize((self.resize_to[1], self.resize_to[0]), resample=self.resample)
        if self.crop_size:
            crop_h, crop_w = self.crop_size
            top, left = (pil.height - crop_h) // 2, (pil.width - crop_w) // 2
            pil = pil.crop((left, top, left + crop_w, top + crop_h))
        out = np.asarray(pil)
        if out.shape[:2] != self.size:
            raise ValueError(
                f"Image of size {height}x{width} became {out.shape[0]}x{out.shape[1]}, not the "
                f"model's {self.size[0]}x{self.size[1]} (the processor has do_resize=False)."
            )
        return np.ascontiguousarray(out)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(3, 1, 1)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (..., 3, H, W) -> the model's normalised pixel values."""
        if not self.do_normalize:
            return x01
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's normalised pixel values -> [0, 1] pixels."""
        if not self.do_normalize:
            return x
        mean, std = self._stats(x)
        return x * std + mean

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 HWC images -> normalised float ``[B, 3, H, W]`` (resized when needed)."""
        import torch

        height, width = self.size
        if len(images) == 0:
            return torch.empty(0, 3, height, width)
        stacked = np.stack([self.resize_uint8(np.asarray(img, dtype=np.uint8)) for img in images])
        # One fused multiply-add in numpy: (v / 255 - mean) / std = v * scale + offset. Torch's
        # elementwise ops here are slower per call and contend for cores with the trainer.
        x = stacked.astype(np.float32)
        if self.do_normalize:
            std = np.asarray(self.std, dtype=np.float64)
            x *= (1.0 / (255.0 * std)).astype(np.float32)
            x += (-np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32)
        else:
            x *= np.float32(1.0 / 255.0)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------------------------
# Corruption views
# --------------------------------------------------------------------------------------------


class CorruptionViews:
    """Draws a (corruption, severity, seed) per view as a pure function of its arguments.

    The draw for (epoch, example_id, view_index) depends only on those, ``seed`` and
    ``stage``: ``"train"`` and ``"eval"`` give independent draws for the same seed, so an
    evaluation sees new instances of the training corruptions.
    """

    def __init__(
        self,
        family: str | Sequence[str],
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        seed: int = 0,
        stage: str = "train",
    ) -> None:
        from hf_vitrobust.corruptions import check_severity, resolve_corruptions

        self.family = family
        self.names: tuple[str, ...] = tuple(resolve_corruptions(family))
        if not self.names:
            raise ValueError(f"Corruption family {family!r} is empty.")
        self.severities: tuple[int, ...] = tuple(check_severity(s) for s in severities)
        if not self.severities:
            raise ValueError("severities must name at least one severity (1..5).")
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {sorted(_STAGES)}, not {stage!r}.")
        self.seed = int(seed)
        self.stage = stage

    def for_eval(self) -> CorruptionViews:
        """The same family and severities with the evaluation stream of draws."""
        return CorruptionViews(self.names, self.severities, self.seed, stage="eval")

    def draw(self, epoch: int, example_id: int, view_index: int) -> tuple[str, int, int]:
        """(corruption name, severity, seed for the corruption's own randomness)."""
        key = (self.seed, _STAGES[self.stage], int(epoch), int(example_id), int(view_index))
        if not all(0 <= v < 2**64 for v in key):
            raise ValueError(
                f"seed, epoch, example id and view index must be in [0, 2**64): {key}."
            )
        # A keyed hash of the five integers: pure, platform-independent, and ~20x cheaper than
        # a numpy SeedSequence per view (this runs k times per image in the workers).
        digest = hashlib.blake2b(
            struct.pack("<5Q", *key), digest_size=24, person=b"vitrobust-view"
        ).digest()
        name_word, severity_word, seed_word = struct.unpack("<3Q", digest)
        name = self.names[name_word % len(self.names)]
        severity = self.severities[severity_word % len(self.severities)]
        return name, severity, seed_word >> 32

    def apply(
        self, image: np.ndarray, epoch: int, example_id: int, view_index: int
    ) -> tuple[np.ndarray, str, int]:
        """Corrupt an RGB uint8 image with this view's draw: (image, name, severity)."""
        from hf_vitrobust.corruptions import corrupt

        name, severity, draw_seed = self.draw(epoch, example_id, view_index)
        return corrupt(image, name, severity, seed=draw_seed), name, severity

    def __repr__(self) -> str:
        return (
            f"CorruptionViews({len(self.names)} corruptions, severities={self.severities}, "
            f"seed={self.seed}, stage={self.stage!r})"
        )


class CorruptionCollator:
    """DataLoader ``collate_fn``: decode, validate, resize, corrupt (uint8), normalise, stack.

    Runs in the DataLoader workers, so decoding and corruptions happen there on uint8 images,
    before normalisation. Output (``B`` = decodable examples in the batch):

    - ``pixel_values`` float [B,3,H,W], ``labels`` long [B], ``example_ids`` long [B];
    - with ``k > 0``: ``views`` float [B,k,3,H,W], ``view_corruptions`` (B×k names),
      ``view_corruption_ids`` long [B,k] (indices into ``views.names``), ``view_severities``
      long [B,k];
    - ``num_skipped``: undecodable images dropped from this batch.

    ``tensors_only=True`` leaves out the lists and makes ``num_skipped`` a long tensor [B]
    (the batch's count on its first row), because accelerate's ``dispatch_batches`` mode
    broadcasts and slices tensors only. The epoch reaches workers when the DataLoader iterator
    is created (PyTorch's default non-persistent workers): call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        processor: Any,
        views: CorruptionViews | None = None,
        k: int = 0,
        bad_images: BadImageTracker | None = None,
        *,
        num_labels: int | None = None,
        tensors_only: bool = False,
    ) -> None:
        if k < 0:
            raise ValueError(f"k (views per image) must be >= 0, not {k}.")
        if k > 0 and views is None:
            raise ValueError("k > 0 corrupted views need views=CorruptionViews(family, ...).")
        self.spec = ProcessorSpec.from_processor(processor)
        self.views = views
        self.k = int(k)
        self.bad_images = bad_images
        self.num_labels = num_labels
        self.tensors_only = tensors_only
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose corruption draws the next batches use."""
        self.epoch = int(epoch)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        clean: list[np.ndarray] = []
        labels: list[int] = []
        ids: list[int] = []
        bad_ids: list[int] = []
        for position, example in enumerate(examples):
            example_id = int(example.get("example_id", position))
            try:
                image = decode_image(example["image"])
            except BadImageError as error:
                logger.warning("Skipping undecodable image (example id %d): %s", example_id, error)
                bad_ids.append(example_id)
                continue
            label = example["label"]
            if label is None or not 0 <= int(label) < (self.num_labels or sys.maxsize):
                raise ValueError(
                    f"Example {example_id} has label {label!r}, outside [0, {self.num_labels}) "
                    "(the model's num_labels); check the label column and the model's classes."
                )
            clean.append(self.spec.resize_uint8(image))
            labels.append(int(label))
            ids.append(example_id)
        if self.bad_images is not None:
            self.bad_images.record(len(clean), bad_ids)
            self.bad_images.check()
        batch: dict[str, Any] = {
            "pixel_values": self.spec.to_tensor(clean),
            "labels": torch.tensor(labels, dtype=torch.long),
            "example_ids": torch.tensor(ids, dtype=torch.long),
        }
        if self.k:
            assert self.views is not None
            corrupted, names, name_ids, severities = [], [], [], []
            index = {name: i for i, name in enumerate(self.views.names)}
            for image, example_id in zip(clean, ids):
                row_names, row_sev = [], []
                for view in range(self.k):
                    out, name, severity = self.views.apply(image, self.epoch, example_id, view)
                    corrupted.append(out)
                    row_names.append(name)
                    row_sev.append(severity)
                names.append(row_names)
                name_ids.append([index[n] for n in row_names])
                severities.append(row_sev)
            height, width = self.spec.size
            batch["views"] = self.spec.to_tensor(corrupted).view(
                len(clean), self.k, 3, height, width
            )
            batch["view_corruption_ids"] = torch.tensor(name_ids, dtype=torch.long).view(-1, self.k)
            batch["view_severities"] = torch.tensor(severities, dtype=torch.long).view(-1, self.k)
            if not self.tensors_only:
                batch["view_corruptions"] = names
        if self.tensors_only:
            skipped = torch.zeros(len(clean), dtype=torch.long)
            if len(clean):
                skipped[0] = len(bad_ids)
            batch["num_skipped"] = skipped
        else:
            batch["num_skipped"] = len(bad_ids)
            batch["skipped_example_ids"] = bad_ids
        return batch


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_vitrobust.data --check-fashion-mnist``: exit 0 when the files are there."""
    parser = argparse.ArgumentParser(prog="python -m hf_vitrobust.data", description=__doc__)
    parser.add_argument(
        "--check-fashion-mnist",
        action="store_true",
        help="Print the Fashion-MNIST folder and exit 0, or explain and exit 1 when absent.",
    )
    args = parser.parse_args(argv)
    if args.check_fashion_mnist:
        folder = find_fashion_mnist_dir()
        if folder is None:
            print(
                "Fashion-MNIST files not found: install Debian's dataset-fashion-mnist or set "
                f"{FASHION_MNIST_ENV} to a folder holding "
                "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.",
                file=sys.stderr,
            )
            return 1
        print(folder)
        return 0
    parser.print_help()
    return 0
