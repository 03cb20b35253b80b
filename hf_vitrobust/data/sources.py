"""Where images come from: Debian's Fashion-MNIST IDX files, the Hub, local folders and files.

``load_image_dataset`` gives a ``datasets`` dataset with exactly the columns ``image`` (left
*undecoded*, ``Image(decode=False)``, so that one broken file cannot crash an epoch: the
collator decodes it and skips it when it is broken), ``label`` (a ``ClassLabel``) and
``example_id`` (the row for map-style data, ``shard * 2**32 + row`` for streams; the key of
every seed in ``hf_vitrobust.seeding``). ``max_examples`` selects a seeded, class-stratified
random subset (``data.subsets``), never the first rows. ``load_dataset_split`` does the same for
a recipe's ``DataArguments`` and shuffles streamed training data through a buffer.

A path that does not exist is reported as such ("no such folder or file"), never as a Hub
error; a Hub id that cannot be fetched says whether offline mode is set.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from hf_vitrobust.data.subsets import select_rows, select_stream, stratified_indices
from hf_vitrobust.distributed import stream_from_generator
from hf_vitrobust.io import looks_local

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
# Map-style local datasets (and imagefolders, which `datasets` streams as one shard) are
# converted to this many shards when streamed: whole shards for every process and DataLoader
# worker, and a shuffled shard order that mixes a class-sorted folder.
LOCAL_STREAM_SHARDS = 256
_HUB_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)
# Suffixes that make a name a local file, never a Hub id.
_FILE_SUFFIXES = (".parquet", ".arrow", ".csv", ".json", ".jsonl", ".jpg", ".jpeg", ".png", ".zip")


# ---------------------------------------------------------------------------- Fashion-MNIST


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


def pgm_bytes(image: np.ndarray) -> bytes:
    """A 2-D uint8 image as binary PGM bytes (how Fashion-MNIST images are stored).

    PGM is a standard format Pillow decodes, and free to encode (PNG would cost ~0.3 ms per
    image, i.e. ~20 s for the 70k Fashion-MNIST images).
    """
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
    folder: Path, split: str, max_examples: int | None, seed: int = 0
) -> datasets.Dataset:
    """The split as a map-style dataset; ``max_examples``: a seeded class-stratified sample
    (only the chosen images are encoded), with ``example_id`` the row in the IDX files."""
    images_file, labels_file = FASHION_MNIST_FILES[_fashion_mnist_split(split)]
    images = _read_idx(folder / images_file)
    labels = _read_idx(folder / labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}."
        )
    rows = np.arange(len(labels))
    if max_examples is not None:
        rows = stratified_indices(labels, max_examples, seed)
    encoded = pa.array([pgm_bytes(images[r]) for r in rows], type=pa.binary())
    image_column = pa.StructArray.from_arrays(
        [encoded, pa.nulls(len(rows), pa.string())], names=["bytes", "path"]
    )
    table = pa.table(
        {
            "image": image_column,
            "label": pa.array(labels[rows].astype(np.int64)),
            "example_id": pa.array(rows.astype(np.int64)),
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


# ---------------------------------------------------------------------------- any source


def _is_save_to_disk_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _local_alternatives() -> str:
    return (
        "Use local data instead: a folder of class subfolders (imagefolder), parquet or arrow "
        "file(s), a folder written by `Dataset.save_to_disk`, or 'fashion_mnist' (Debian's "
        "dataset-fashion-mnist files)."
    )


def _offline() -> bool:
    return any(
        os.environ.get(name, "") not in ("", "0", "false", "False")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _looks_local(text: str) -> bool:
    """A name that can only be a path (``io.looks_local``), or a data file's name."""
    return looks_local(text, _FILE_SUFFIXES)


def _missing_local(text: str) -> FileNotFoundError:
    path = Path(text).expanduser()
    parent = next((p for p in path.absolute().parents if p.is_dir()), None)
    hint = ""
    if parent is not None and parent != path.absolute().parent:
        hint = f" (the deepest existing folder is {str(parent)!r})"
    elif parent is not None:
        names = sorted(p.name for p in parent.iterdir())[:10]
        hint = f" ({str(parent)!r} holds {names})"
    return FileNotFoundError(
        f"Local dataset {text!r}: no such folder or file (looked for {str(path.absolute())!r}, "
        f"relative to the current folder {os.getcwd()!r}){hint}. {_local_alternatives()}"
    )


def _load_raw(
    source: str | os.PathLike | Sequence[str],
    split: str,
    streaming: bool | None,
    config_name: str | None,
) -> tuple[Any, str, bool]:
    """Load without standardising: returns (dataset, description, is_hub)."""
    if isinstance(source, (list, tuple)):
        files = [str(Path(f).expanduser()) for f in source]
        missing = [f for f in files if not any(ch in f for ch in "*?[") and not Path(f).exists()]
        if missing:
            raise _missing_local(missing[0])
        builder = _builder_for_files(files)
        ds = datasets.load_dataset(
            builder, data_files={split: files}, split=split, streaming=bool(streaming)
        )
        return ds, f"{len(files)} {builder} files", False
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return (
            _load_folder(path, text, split, streaming, config_name),
            f"local folder {text!r}",
            False,
        )
    if path.is_file() or any(ch in text for ch in "*?["):
        builder = _builder_for_files([text])
        ds = datasets.load_dataset(
            builder, data_files={split: text}, split=split, streaming=bool(streaming)
        )
        return ds, f"{builder} file(s) {text!r}", False
    if _looks_local(text):
        raise _missing_local(text)
    streaming = True if streaming is None else streaming
    try:
        ds = datasets.load_dataset(text, config_name, split=split, streaming=streaming)
    except _HUB_ERRORS as error:
        if _offline():
            cause = (
                "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the "
                "local cache"
            )
        else:
            cause = "the Hub could not be reached or has no such dataset"
        local = "" if "/" not in text else f" There is no local folder {text!r} either."
        raise ConnectionError(
            f"Could not load dataset {text!r} from the Hugging Face Hub: {cause} "
            f"({type(error).__name__}: {error}).{local} {_local_alternatives()} Gated datasets "
            "(ImageNet) also need `hf auth login`."
        ) from error
    return ds, f"Hub dataset {text!r}", True


def _load_folder(
    path: Path, text: str, split: str, streaming: bool | None, config_name: str | None
) -> Any:
    """A local folder: ``save_to_disk`` output, an imagefolder, or anything ``datasets`` reads.

    An imagefolder is always loaded map-style (it holds only file paths): ``datasets`` would
    stream it as one class-sorted shard that no shuffle buffer or worker split can mix;
    ``load_image_dataset`` turns it into a many-shard stream when streaming is asked for.
    """
    if _is_save_to_disk_dir(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(
                    f"{text!r} has splits {sorted(loaded)}, not {split!r}; pass one of them."
                )
            loaded = loaded[split]
        return loaded
    try:
        ds = datasets.load_dataset(str(path), config_name, split=split, streaming=bool(streaming))
        if isinstance(ds, datasets.IterableDataset) and ds.info.builder_name == "imagefolder":
            ds = datasets.load_dataset(str(path), config_name, split=split)
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(
                f"Local dataset {text!r} has no split {split!r} ({error}). An imagefolder "
                "without train/validation/test subfolders has only the split 'train'."
            ) from error
        raise
    return ds


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
            values = column_array(ds, "label")
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


def column_array(ds: Any, column: str) -> np.ndarray:
    """One column of a map-style dataset as numpy (honouring select/shuffle index mappings)."""
    return np.asarray(ds.select_columns([column]).with_format("numpy")[column])


# ---------------------------------------------------------------------------- stream example ids


def _stream_with_ids(stream: datasets.IterableDataset) -> datasets.IterableDataset:
    """Re-emit a stream with `example_id = shard * 2**32 + row`, stable under any sharding.

    `map(with_indices=True)` restarts its count in each worker/process shard, so ids would
    collide; here each shard is a fixed group of the source's data files, whatever the number
    of workers or processes that later split the shards among themselves.
    """
    n = max(1, stream.n_shards)
    groups = min(n, MAX_STREAM_SHARDS)
    shards = [(g, stream.shard(num_shards=groups, index=g, contiguous=True)) for g in range(groups)]
    features = stream.features.copy()
    features["example_id"] = datasets.Value("int64")
    return stream_from_generator(_iter_shards, {"shards": shards}, features)


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


# ---------------------------------------------------------------------------- entry points


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
    subset_seed: int = 0,
    shuffle_buffer_size: int = 10_000,
    shuffle: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load an image-classification dataset with the columns ``image``, ``label``, ``example_id``.

    ``source``: a Hub id (streamed by default), a local folder (imagefolder, or any folder
    ``datasets`` recognises, or one written by ``save_to_disk``), parquet/arrow file(s) or a glob,
    or ``"fashion_mnist"`` (Debian's IDX files; the Hub copy when they are absent).

    ``image`` is an ``Image(decode=False)`` feature: values are ``{"bytes", "path"}`` dicts that
    ``decode_image`` turns into RGB uint8, so a broken file is skipped rather than crashing
    iteration. ``label`` is a ``ClassLabel`` (from ``class_names`` when given). ``example_id`` is
    the row index for map-style data (kept by subsets: the same image has the same id in every
    subset), for streams ``shard * 2**32 + row``, stable across runs, workers and processes.
    ``streaming=True`` works on local sources too.

    ``max_examples`` (``data.subsets``): map-style, a class-stratified random sample seeded by
    ``subset_seed``; streams, the first ``max_examples`` out of a shuffle buffer of
    ``shuffle_buffer_size`` (0: stream order). ``shuffle=True`` shuffles a whole stream through
    the buffer (training; ``set_epoch`` reshuffles).
    """
    if max_examples is not None and max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, not {max_examples}.")
    if shuffle_buffer_size < 0:
        raise ValueError(f"shuffle_buffer_size must be >= 0, not {shuffle_buffer_size}.")

    def finish_stream(stream: datasets.IterableDataset) -> datasets.IterableDataset:
        return select_stream(stream, max_examples, subset_seed, shuffle_buffer_size, shuffle)

    if isinstance(source, str) and source.lower() in _FASHION_MNIST_NAMES:
        folder = find_fashion_mnist_dir()
        if folder is not None:
            if streaming:
                ds = _load_fashion_mnist_files(folder, split, None)
                return finish_stream(ds.to_iterable_dataset(num_shards=_local_shards(len(ds))))
            return _load_fashion_mnist_files(folder, split, max_examples, subset_seed)
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
        return finish_stream(ds)
    if "example_id" not in ds.column_names:
        ds = ds.add_column("example_id", np.arange(len(ds), dtype=np.int64))
    if streaming:
        return finish_stream(ds.to_iterable_dataset(num_shards=_local_shards(len(ds))))
    return select_rows(ds, max_examples, subset_seed)


def load_dataset_split(
    data_args: Any, which: str = "eval", max_examples: int | None = None
) -> datasets.Dataset | datasets.IterableDataset:
    """``load_image_dataset`` for a recipe's ``DataArguments``: its train or eval split.

    ``which`` is ``"train"`` or ``"eval"``; ``max_examples`` defaults to the recipe's
    ``max_train_examples`` / ``max_eval_examples``. Subsets are seeded by
    ``data_args.subset_seed``; a streamed training split is shuffled through a buffer of
    ``data_args.shuffle_buffer_size`` examples (reshuffled every epoch by ``set_epoch``).
    Record the selection in the stage's outputs with ``data.selection_record``.
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
        subset_seed=data_args.subset_seed,
        shuffle_buffer_size=data_args.shuffle_buffer_size,
        shuffle=which == "train",
    )


def _local_shards(n: int) -> int:
    return max(1, min(LOCAL_STREAM_SHARDS, n))
