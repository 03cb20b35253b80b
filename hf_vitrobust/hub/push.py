"""Pushing checkpoints and SAEs to the Hub, one commit per artifact set.

A push never modifies the local folder before its commit has succeeded (a card rendered for the
push lives in memory; figures are uploaded from where they are), so a failed push leaves the
folder exactly as it was. The token comes from `huggingface_hub`'s usual sources (`hf auth login`, `HF_TOKEN`) and is never
written, logged or shown in an error.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token

from hf_vitrobust.hub.cards import (
    CARD_MARKER,
    REPO_ID_PLACEHOLDER,
    card_figures,
    find_saes,
    render_robust_model_card,
    render_sae_card,
    write_robust_model_card,
    write_sae_card,
)
from hf_vitrobust.hub.common import CardInputError, cell, one_line, read_config, require_folder
from hf_vitrobust.roles import read_robustness

# sae-lens' file names (sae_lens.constants), plus our per-SAE metadata.
SAE_FILES = (
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
    "runner_cfg.json",
    "metadata.json",
)

# What a checkpoint push uploads (relative paths, fnmatch patterns). Pickles (`*.bin`, `*.pt`,
# `training_args.bin`), optimizer state and `checkpoint-*` folders are never uploaded.
CHECKPOINT_FILES = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "README.md",
    "results.json",
    "*_results.json",
    "trainer_state.json",
    "figures/*.png",
)

# A file of a commit: a local path, bytes, or bytes made from the full repo id.
FileContent = Path | bytes | Callable[[str], bytes]


class PushError(RuntimeError):
    """A push to the Hub failed; the local folder is unchanged and the command can be rerun."""


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise PushError(
            "No Hugging Face token found: run `hf auth login`, or set the HF_TOKEN environment "
            "variable, or pass token=... (it is never written to disk or logs)."
        )
    return token


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _causes(error: BaseException) -> str:
    """`Type: message` of an error and of the errors that caused it (the client wraps an
    upload's HTTP error in "Error while uploading ..."), first line of each."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        first = (str(error).strip().splitlines() or [""])[0]
        part = f"{type(error).__name__}: {first}"
        if not parts or parts[-1] != part:
            parts.append(part)
        error = error.__cause__
    return " <- ".join(parts)


def _readme(card_text: str) -> Callable[[str], bytes]:
    """The README of a commit, with the real repo id in the "how to load" snippets.

    Only cards generated here carry the placeholder; a hand-written README is uploaded as is.
    """

    def content(repo_id: str) -> bytes:
        text = card_text
        if CARD_MARKER in text:
            text = text.replace(REPO_ID_PLACEHOLDER, repo_id)
        return text.encode("utf-8")

    return content


def _commit(
    repo_id: str,
    files: list[tuple[str, FileContent]],
    *,
    private: bool | None,
    commit_message: str,
    token: str | None,
    what: str,
    folder: Path,
) -> tuple[str, str]:
    """Create the repo (if needed) and commit `files` in one commit; return the commit URL and
    the full repo id.

    A callable file content is called with the full repo id (a bare name gets the token owner's
    namespace from `create_repo`), for cards that name the repo.
    """
    token = _resolve_token(token)
    # None (e.g. TrainingArguments.hub_private_repo left unset) means "not asked": private.
    private = True if private is None else bool(private)
    api = HfApi(token=token)
    endpoint = api.endpoint or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise PushError(
            f"Cannot push {what} {str(folder)!r}: HF_HUB_OFFLINE is set. Unset it (or set it "
            "to 0) and rerun the same command."
        )
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = getattr(url, "repo_id", None) or repo_id
        operations = [
            CommitOperationAdd(
                path_in_repo=path_in_repo,
                path_or_fileobj=content(repo_id)
                if callable(content)
                else content
                if isinstance(content, bytes)
                else str(content),
            )
            for path_in_repo, content in files
        ]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            repo_type="model",
        )
    except Exception as error:  # network, HTTP and validation errors all end the same way
        detail = _scrub(_causes(error), token)
        raise PushError(
            f"Pushing {what} {str(folder)!r} to {repo_id!r} at {endpoint} failed: {detail}\n"
            "Nothing was committed and the local folder is unchanged; rerun the same command "
            "to retry (files already on the Hub are skipped)."
        ) from None
    return str(info.commit_url if hasattr(info, "commit_url") else info), repo_id


def _checkpoint_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        if any(fnmatch.fnmatchcase(rel, pattern) for pattern in CHECKPOINT_FILES):
            files.append(path)
    return files


def _payload(folder: Path) -> list[tuple[str, FileContent]]:
    """The checkpoint's files to upload, the README aside (it is added by the caller)."""
    return [
        (p.relative_to(folder).as_posix(), p)
        for p in _checkpoint_files(folder)
        if p.name != "README.md"
    ]


def push_robust_model(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool | None = True,
    commit_message: str | None = None,
    token: str | None = None,
    *,
    results: Any = None,
    figures: Any = None,
    results_model: str | None = None,
    write_card: bool = False,
) -> str:
    """Push a robust checkpoint folder and its card to `repo_id` in one commit; return its URL.

    Uploads config, image processor config, safetensors weights, the card (`README.md`, or one
    rendered in memory when absent or when `results`/`figures` are given), results JSON and
    figures (`figures` are uploaded as `figures/<name>` from where they are). Private by
    default. The folder is not touched until the commit has succeeded; then, with
    `write_card`, the pushed card (with the real repo id) and its figures are written into it.
    Raises `PushError` with the endpoint and a retry hint when the Hub errors or is
    unreachable.
    """
    folder = require_folder(folder, "Checkpoint folder")
    robustness = read_robustness(read_config(folder).get("robustness"))
    names = {p.relative_to(folder).as_posix() for p in _checkpoint_files(folder)}
    if not any(n.endswith(".safetensors") for n in names):
        raise CardInputError(
            f"{str(folder)!r} has no safetensors weights (model.safetensors): save the model with "
            "`save_pretrained` (safetensors is the default); pickled weights are never pushed."
        )
    if results is None and "README.md" not in names and (folder / "results.json").is_file():
        results = folder / "results.json"
    figure_files = card_figures(folder, figures)
    render = results is not None or bool(figure_files) or "README.md" not in names
    if render:
        # Rendered before any network call (bad results fail early); the repo id goes in once
        # the Hub has confirmed it (a bare name gets the token owner's namespace).
        text = str(render_robust_model_card(folder, results, figures, results_model=results_model))
    else:
        text = (folder / "README.md").read_text(encoding="utf-8")
    payload = dict(_payload(folder))
    payload.update({f.path_in_folder: f.source for f in figure_files})
    payload["README.md"] = _readme(text)
    run_name = one_line(robustness.get("run_name") or folder.resolve().name)
    adversary, spec = robustness.get("adversary"), robustness.get("corruptions")
    detail = f" ({adversary} on {cell(spec)})" if adversary and spec else ""
    message = commit_message or f"Upload robust ViT checkpoint '{run_name}'{detail} with model card"
    url, full_repo_id = _commit(
        repo_id,
        list(payload.items()),
        private=private,
        commit_message=message,
        token=token,
        what="checkpoint",
        folder=folder,
    )
    if write_card and render:
        write_robust_model_card(
            folder, results, figures, results_model=results_model, repo_id=full_repo_id
        )
    return url


def push_saes(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool | None = True,
    commit_message: str | None = None,
    token: str | None = None,
    *,
    run_name: str | None = None,
    write_card: bool = False,
) -> str:
    """Push a folder of SAEs (one sub-folder per SAE id) and their card in one commit.

    The repo layout is `sae_lens.upload_saes_to_huggingface`'s (`{sae_id}/cfg.json`,
    `{sae_id}/sae_weights.safetensors`, ...), so `SAE.from_pretrained(repo_id, sae_id)` loads them.
    Returns the commit URL; raises `PushError` on failure (local folder unchanged). With
    `write_card`, a card rendered for the push is written into the folder after it succeeded.
    """
    root = require_folder(folder, "SAE folder")
    saes = find_saes(root)
    payload: list[tuple[str, FileContent]] = [
        (f"{sae_id}/{name}", path / name)
        for sae_id, path in saes.items()
        for name in SAE_FILES
        if (path / name).is_file()
    ]
    render = not (root / "README.md").is_file() or root in saes.values()
    if render:
        text = str(render_sae_card(root))  # before any network call: bad metadata fails early
    else:
        text = (root / "README.md").read_text(encoding="utf-8")
    payload.append(("README.md", _readme(text)))
    run_name = one_line(run_name or root.resolve().name)
    message = commit_message or f"Upload {len(saes)} SAE(s) from '{run_name}' with SAE card"
    url, full_repo_id = _commit(
        repo_id,
        payload,
        private=private,
        commit_message=message,
        token=token,
        what="SAE folder",
        folder=root,
    )
    if write_card and render and root not in saes.values():
        write_sae_card(root, repo_id=full_repo_id)
    return url


def push_artifacts(
    *,
    checkpoint: str | os.PathLike | None = None,
    saes: str | os.PathLike | None = None,
    repo_id: str | None = None,
    sae_repo_id: str | None = None,
    private: bool | None = True,
    results: Any = None,
    figures: Any = None,
    commit_message: str | None = None,
    card_only: bool = False,
    results_model: str | None = None,
) -> dict[str, str]:
    """What `recipes/push.py` does: push a checkpoint and/or SAEs with their cards.

    The checkpoint goes to `repo_id`; the SAEs to `sae_repo_id` (default: `repo_id` when no
    checkpoint is pushed, else `f"{repo_id}-saes"`), each in its own commit. A card made for
    the push (from `results`/`figures`, or because the folder has none) is written into the
    folder only after its push succeeded, so a failed push leaves the folder as it was. With
    `card_only`, only the cards are written, locally. Returns `{"checkpoint": url, "saes": url}`
    for what was pushed.
    """
    if checkpoint is None and saes is None:
        raise CardInputError("Nothing to push: give a checkpoint folder and/or a folder of SAEs.")
    if not card_only and not repo_id and not sae_repo_id:
        raise CardInputError("Give --repo_id (e.g. your-name/vit-robust-blur) to push to.")
    if saes is not None and not sae_repo_id and repo_id:
        sae_repo_id = f"{repo_id}-saes" if checkpoint is not None else repo_id
    if checkpoint is not None and not card_only and not repo_id:
        raise CardInputError("Give --repo_id for the checkpoint (--sae_repo_id is for the SAEs).")
    if card_only:
        if checkpoint is not None:
            write_robust_model_card(
                checkpoint, results, figures or None, results_model=results_model
            )
        if saes is not None and Path(saes).resolve() not in {
            p.resolve() for p in find_saes(saes).values()
        }:
            write_sae_card(saes)
        return {}
    urls: dict[str, str] = {}
    if checkpoint is not None:
        urls["checkpoint"] = push_robust_model(
            checkpoint,
            repo_id,
            private=private,
            commit_message=commit_message,
            results=results,
            figures=figures or None,
            results_model=results_model,
            write_card=True,
        )
    if saes is not None:
        urls["saes"] = push_saes(
            saes, sae_repo_id, private=private, commit_message=commit_message, write_card=True
        )
    return urls


__all__ = [
    "CHECKPOINT_FILES",
    "SAE_FILES",
    "PushError",
    "push_artifacts",
    "push_robust_model",
    "push_saes",
]
