"""Files: atomic writes, JSON reading with errors that name the file, and the base of the typed
stage-output readers. A leaf: imports nothing from the package."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def looks_local(text: str, suffixes: tuple[str, ...] = ()) -> bool:
    """A name that can only be a path, never a Hub id: ./x, ../x, /x, ~/x, a\\b, a/b/c, one
    ending in ``suffixes``, or a/b whose first component exists here (``runs/nobase`` next to
    an existing ``runs/``). Datasets and models share this rule."""
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") >= 2:
        return True
    if suffixes and text.lower().endswith(suffixes):
        return True
    first = text.split("/", 1)[0]
    return "/" in text and Path(first).expanduser().is_dir()


def to_jsonable(value: Any) -> Any:
    """numpy/torch values, tuples and non-finite floats -> plain JSON values (NaN/inf -> None)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):  # torch tensors
        return to_jsonable(value.tolist())
    return value


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Readers never see a half-written file, and a crash leaves the previous file in place.
    Keeps the suffix, so writers that infer the format from it (``np.savez``, ``savefig``) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (see ``atomic_path``); NaN and infinity become null."""
    return write_text_atomic(json.dumps(to_jsonable(data), indent=2) + "\n", path)


class StageOutputError(ValueError):
    """A stage output (or any JSON input) is missing, unreadable or not of the expected schema.

    The message names the file and says how to fix it (usually: rerun the stage that writes it).
    The report shows a section as unavailable on this error and on nothing else.
    """


class StageOutputMissing(StageOutputError, FileNotFoundError):
    """The file does not exist."""


class SchemaMismatch(StageOutputError):
    """The file exists but was written under another schema or version, or lacks a field."""


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse ``path``; ``StageOutputMissing`` / ``StageOutputError`` name the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StageOutputMissing(f"{what} {str(path)!r} does not exist.") from None
    except IsADirectoryError:
        raise StageOutputError(f"{what} {str(path)!r} is a folder, not a file.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise StageOutputError(
            f"{what} {str(path)!r} is not valid JSON ({error}); it may be half-written: "
            "rerun the stage that writes it."
        ) from None


def check_schema(
    data: Any,
    *,
    schema: str,
    versions: tuple[int, ...],
    required: Mapping[str, type | tuple[type, ...]],
    source: str,
    rerun: str,
) -> dict[str, Any]:
    """Validate the header and top-level fields of a stage output; return it as a dict.

    Every stage output carries ``"schema": <name>`` and ``"schema_version": <int>``. ``source``
    names the file in errors and ``rerun`` says which command rewrites it.
    """
    if not isinstance(data, dict):
        raise SchemaMismatch(f"{source} must hold a JSON object, got {type(data).__name__}.")
    if data.get("schema") != schema:
        raise SchemaMismatch(
            f"{source} has schema {data.get('schema')!r}, expected {schema!r}; {rerun}."
        )
    version = data.get("schema_version")
    if version not in versions:
        raise SchemaMismatch(
            f"{source} has schema version {version!r}; this hf_vitrobust reads "
            f"{', '.join(map(str, versions))}. {rerun[0].upper()}{rerun[1:]}."
        )
    for key, kind in required.items():
        if key not in data:
            raise SchemaMismatch(f"{source} lacks the field {key!r}; {rerun}.")
        if not isinstance(data[key], kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise SchemaMismatch(
                f"{source}: field {key!r} should be {names}, got {type(data[key]).__name__}; "
                f"{rerun}."
            )
    return data


def read_stage_output(
    path: str | os.PathLike,
    *,
    schema: str,
    versions: tuple[int, ...],
    required: Mapping[str, type | tuple[type, ...]],
    rerun: str,
) -> dict[str, Any]:
    """``read_json`` then ``check_schema``: the shared first step of every stage reader."""
    source = f"{schema} output {str(path)!r}"
    return check_schema(
        read_json(path, what=f"{schema} output"),
        schema=schema,
        versions=versions,
        required=required,
        source=source,
        rerun=rerun,
    )


__all__ = [
    "SchemaMismatch",
    "StageOutputError",
    "StageOutputMissing",
    "atomic_path",
    "check_schema",
    "read_json",
    "read_stage_output",
    "to_jsonable",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
