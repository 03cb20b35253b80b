"""Residual-stream activations of a ViT, streamed for SAE training with a bounded memory budget.

The residual stream at layer ``i`` is the output of ``model.vit.layers[i]`` (transformers 5 layout),
i.e. ``hidden_states[i + 1]`` of ``output_hidden_states``. Activations flow
``model -> token selection/subsampling -> shuffle buffer -> [batch, d_in] tensors`` and are never
all held in memory; an optional disk cache stores the pre-shuffle chunks as safetensors shards.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hf_vitrobust.analysis.sae.saelens import import_sae_lens
from hf_vitrobust.io import read_json, write_json_atomic

TOKEN_CHOICES = ("cls", "patches", "all")
_TOKEN_ALIASES = {"both": "all", "patch": "patches"}
_CACHE_MANIFEST = "activations.json"


def check_tokens(tokens: str) -> str:
    """Validate a token choice: ``cls`` (the CLS token), ``patches`` (patch tokens) or ``all``.

    ``both`` (CLS and patches) means ``all`` and ``patch`` means ``patches``; the canonical name
    is returned.
    """
    tokens = _TOKEN_ALIASES.get(tokens, tokens)
    if tokens not in TOKEN_CHOICES:
        raise ValueError(f"tokens={tokens!r} is not one of {TOKEN_CHOICES}; pick one of them.")
    return tokens


def resolve_layers(model: torch.nn.Module, layers: Sequence[int] | None) -> list[int]:
    """Layer indices into ``model.vit.layers``; default: the middle layer and the last.

    Negative indices count from the end, like Python's.
    """
    n = len(_vit_layers(model))
    if not layers:
        return sorted({n // 2 - 1 if n > 1 else 0, n - 1})
    out = []
    for layer in layers:
        idx = int(layer) + n if int(layer) < 0 else int(layer)
        if not 0 <= idx < n:
            raise ValueError(
                f"layer {layer} is out of range for a model with {n} layers; use 0..{n - 1} "
                "(or negative indices from the end)."
            )
        out.append(idx)
    return sorted(set(out))


def _vit_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    vit = getattr(model, "vit", model)
    layers = getattr(vit, "layers", None)
    if layers is None:
        raise ValueError(
            "model has no `vit.layers` (transformers 5 ViT layout); pass a ViTForImageClassification "
            "or ViTModel."
        )
    return layers


def select_tokens(hidden: torch.Tensor, tokens: str) -> torch.Tensor:
    """Select tokens from ``[B, T, d]`` residual activations: CLS ``[B, 1, d]``, patches, or all."""
    tokens = check_tokens(tokens)
    if tokens == "cls":
        return hidden[:, :1]
    if tokens == "patches":
        return hidden[:, 1:]
    return hidden


@torch.no_grad()
def residual_stream(
    model: torch.nn.Module, pixel_values: torch.Tensor, layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Outputs of ``model.vit.layers[i]`` for ``i`` in ``layers`` (``[B, T, d]`` float32).

    Forward hooks read the outputs; the forward pass stops after the last requested layer, since
    later layers (and the head) are not needed.
    """
    blocks = _vit_layers(model)
    wanted = sorted(set(int(i) for i in layers))
    captured: dict[int, torch.Tensor] = {}

    class _Stop(Exception):
        pass

    def make_hook(i: int) -> Callable:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            captured[i] = out.detach().float()
            if i == wanted[-1]:
                raise _Stop

        return hook

    handles = [blocks[i].register_forward_hook(make_hook(i)) for i in wanted]
    try:
        vit = getattr(model, "vit", model)
        vit(pixel_values=pixel_values)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def batch_inputs(batch: dict[str, Any], use_views: bool) -> list[torch.Tensor]:
    """The image tensors of one collated batch: clean ``pixel_values`` and, if asked, each view."""
    inputs = [batch["pixel_values"]]
    if use_views and batch.get("views") is not None:
        views = batch["views"]
        inputs.extend(views[:, j] for j in range(views.shape[1]))
    return inputs


def activation_chunks(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]] | Callable[[int], Iterable[dict[str, Any]]],
    layer: int,
    tokens: str = "all",
    max_tokens_per_image: int | None = None,
    use_views: bool = True,
    epochs: int | None = None,
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Stream ``[n, d]`` activation chunks of one layer, one chunk per image batch.

    ``batches`` yields collated dicts (``pixel_values`` and optionally ``views``, as
    ``hf_vitrobust.data.CorruptionCollator`` makes them), or is a function of the epoch returning
    such an iterable (so corruption draws change per epoch). Clean images and every corrupted view
    contribute. ``max_tokens_per_image`` keeps a seeded random subset of each image's tokens (the
    CLS token is always kept when ``tokens='all'``), which decorrelates the stream and bounds its
    rate. ``epochs=None`` cycles forever, as the SAE trainer draws until it has enough samples.
    """
    tokens = check_tokens(tokens)
    model.eval()
    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    for epoch in itertools.count() if epochs is None else range(epochs):
        source = batches(epoch) if callable(batches) else batches
        n_yielded = 0
        for batch in source:
            for pixel_values in batch_inputs(batch, use_views):
                hidden = residual_stream(model, pixel_values.to(device), [layer])[layer]
                acts = select_tokens(hidden, tokens).cpu()
                acts = subsample_tokens(acts, max_tokens_per_image, tokens, generator)
                n_yielded += 1
                yield acts.reshape(-1, acts.shape[-1])
        if n_yielded == 0:
            raise ValueError("The image source yielded no batches; check the dataset and split.")


def subsample_tokens(
    acts: torch.Tensor,
    max_tokens_per_image: int | None,
    tokens: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep at most ``max_tokens_per_image`` random tokens of each image in ``[B, T, d]``.

    With ``tokens='all'`` the CLS token (position 0) is always kept, as it is one token among many
    but carries the classification.
    """
    if max_tokens_per_image is None or acts.shape[1] <= max_tokens_per_image:
        return acts
    if max_tokens_per_image < 1:
        raise ValueError(f"max_tokens_per_image={max_tokens_per_image} must be >= 1 (or None).")
    b, t, _ = acts.shape
    keep_cls = tokens == "all"
    lo = 1 if keep_cls else 0
    n_rand = max_tokens_per_image - (1 if keep_cls else 0)
    scores = torch.rand(b, t - lo, generator=generator)
    idx = scores.argsort(dim=1)[:, :n_rand] + lo
    if keep_cls:
        idx = torch.cat([torch.zeros(b, 1, dtype=torch.long), idx], dim=1)
    return torch.gather(acts, 1, idx.unsqueeze(-1).expand(-1, -1, acts.shape[-1]))


class ActivationStream:
    """An iterator of shuffled ``[batch_size, d_in]`` activation batches for ``SAETrainer``.

    Chunks go through sae-lens' ``mixing_buffer`` (keep half, serve half, reshuffle), sized from
    ``buffer_mb``: the buffer holds ``buffer_mb`` MiB of float32 activations, plus one incoming chunk.
    ``peak_buffer_bytes`` records the largest buffer seen (the bench reports it).
    """

    def __init__(
        self,
        chunks: Iterable[torch.Tensor],
        d_in: int,
        batch_size: int,
        buffer_mb: float = 64.0,
        seed: int = 0,
    ) -> None:
        mixing_buffer = import_sae_lens("sae_lens.training.mixing_buffer").mixing_buffer
        self.d_in = int(d_in)
        self.batch_size = int(batch_size)
        self.buffer_size = max(2 * self.batch_size, int(buffer_mb * 2**20) // (4 * self.d_in))
        self.peak_buffer_bytes = 0
        self.n_served = 0
        self._seed = seed
        self._iterator = mixing_buffer(
            self.buffer_size, self.batch_size, self._tracked(chunks), mix_fraction=0.5
        )

    def _tracked(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        # mixing_buffer shuffles with the global torch RNG; seed it once for reproducible streams.
        torch.manual_seed(self._seed)
        held = 0
        keep = int(self.buffer_size * 0.5)
        for chunk in chunks:
            if chunk.shape[-1] != self.d_in:
                raise ValueError(
                    f"activation chunk has width {chunk.shape[-1]}, expected d_in={self.d_in}"
                )
            # Mirror mixing_buffer's bookkeeping exactly: rows held after this chunk arrives,
            # then what it serves once the buffer is full.
            held += chunk.shape[0]
            self.peak_buffer_bytes = max(self.peak_buffer_bytes, held * self.d_in * 4)
            if held >= self.buffer_size:
                held -= max(1, (held - keep) // self.batch_size) * self.batch_size
            yield chunk.float()

    def __iter__(self) -> ActivationStream:
        return self

    def __next__(self) -> torch.Tensor:
        batch = next(self._iterator)
        self.n_served += batch.shape[0]
        return batch


def cache_activations(
    chunks: Iterable[torch.Tensor],
    path: str | os.PathLike,
    max_activations: int,
    shard_size: int = 65536,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write up to ``max_activations`` streamed activations to safetensors shards under ``path``.

    The manifest (``activations.json``) is written last, so a folder without one is incomplete and
    is never read. ``metadata`` (model, layer, tokens, data) is stored in the manifest and checked
    by :func:`cached_activation_chunks`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / _CACHE_MANIFEST).unlink(missing_ok=True)
    pending: list[torch.Tensor] = []
    n_pending = n_total = 0
    shards: list[str] = []
    d_in = None

    def flush() -> None:
        nonlocal pending, n_pending
        if not pending:
            return
        name = f"shard_{len(shards):05d}.safetensors"
        save_file({"activations": torch.cat(pending).contiguous()}, str(path / name))
        shards.append(name)
        pending, n_pending = [], 0

    for chunk in chunks:
        chunk = chunk[: max_activations - n_total]
        d_in = chunk.shape[-1]
        pending.append(chunk.float())
        n_pending += chunk.shape[0]
        n_total += chunk.shape[0]
        if n_pending >= shard_size:
            flush()
        if n_total >= max_activations:
            break
    flush()
    manifest = {"n_activations": n_total, "d_in": d_in, "shards": shards, **(metadata or {})}
    write_json_atomic(manifest, path / _CACHE_MANIFEST)
    return path


def read_cache_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a complete activation cache, or None when the folder holds none."""
    manifest = Path(path) / _CACHE_MANIFEST
    return read_json(manifest, what="activation cache manifest") if manifest.is_file() else None


def cached_activation_chunks(
    path: str | os.PathLike, cycle: bool = True, expect: dict[str, Any] | None = None
) -> Iterator[torch.Tensor]:
    """Stream the shards of an activation cache (forever when ``cycle``), one shard in memory.

    ``expect`` lists manifest fields that must match (e.g. model, layer, tokens), so that a cache
    from another run is not reused by mistake.
    """
    manifest = read_cache_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"{str(path)!r} holds no complete activation cache ({_CACHE_MANIFEST} missing); "
            "write one with cache_activations()."
        )
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise ValueError(
                f"activation cache {str(path)!r} has {key}={manifest.get(key)!r}, expected "
                f"{value!r}; delete the folder or point cache_dir elsewhere."
            )
    while True:
        for name in manifest["shards"]:
            yield load_file(str(Path(path) / name))["activations"]
        if not cycle:
            return


@torch.no_grad()
def collect_activations(
    model: torch.nn.Module,
    pixel_batches: Iterable[torch.Tensor],
    layers: Sequence[int],
    tokens: str = "all",
) -> dict[int, torch.Tensor]:
    """Held-out activations kept per image: ``{layer: [N, T', d]}`` float32 on CPU.

    For evaluation sets (hundreds of images), where per-image structure is needed.
    """
    check_tokens(tokens)
    model.eval()
    device = _model_device(model)
    out: dict[int, list[torch.Tensor]] = {int(i): [] for i in layers}
    for pixel_values in pixel_batches:
        hidden = residual_stream(model, pixel_values.to(device), list(out))
        for i in out:
            out[i].append(select_tokens(hidden[i], tokens).cpu())
    if not any(out.values()):
        raise ValueError("no images were given to collect activations from.")
    return {i: torch.cat(v) for i, v in out.items()}


__all__ = [
    "TOKEN_CHOICES",
    "ActivationStream",
    "activation_chunks",
    "batch_inputs",
    "cache_activations",
    "cached_activation_chunks",
    "check_tokens",
    "collect_activations",
    "read_cache_manifest",
    "residual_stream",
    "resolve_layers",
    "select_tokens",
    "subsample_tokens",
]
