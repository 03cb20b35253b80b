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
from hf_vitrobust.seeding import stream_seed

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


def tokens_per_image(model: torch.nn.Module, tokens: str) -> int:
    """How many tokens of one image ``tokens`` selects (CLS + one per patch for ``all``)."""
    config = model.config
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    patches = (int(size) // int(patch)) ** 2
    return {"cls": 1, "patches": patches, "all": patches + 1}[check_tokens(tokens)]


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


@torch.no_grad()
def batch_activations(
    model: torch.nn.Module,
    batch: dict[str, Any],
    layers: Sequence[int],
    tokens: str = "all",
    max_tokens_per_image: int | None = None,
    use_views: bool = True,
    token_seed: int = 0,
) -> dict[int, torch.Tensor]:
    """``{layer: [n, d]}`` activations of one collated batch: its clean images, then each
    corrupted view (``use_views``), one forward pass for all ``layers``. Each image's tokens are
    subsampled to ``max_tokens_per_image`` with a generator seeded by ``token_seed`` (the same
    positions at every layer)."""
    device = _model_device(model)
    generators = {layer: torch.Generator().manual_seed(token_seed) for layer in layers}
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for pixel_values in batch_inputs(batch, use_views):
        hidden = residual_stream(model, pixel_values.to(device), list(layers))
        for layer in layers:
            acts = select_tokens(hidden[layer], tokens).cpu()
            acts = subsample_tokens(acts, max_tokens_per_image, tokens, generators[layer])
            parts[layer].append(acts.reshape(-1, acts.shape[-1]))
    return {layer: torch.cat(p) for layer, p in parts.items()}


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
    such an iterable (so corruption draws change per epoch). ``max_tokens_per_image`` keeps a
    random subset of each image's tokens (the CLS token is always kept when ``tokens='all'``),
    seeded by ``(seed, epoch, batch index)``. ``epochs=None`` cycles forever, as the SAE trainer
    draws until it has enough samples. (The study's multi-process stream is
    ``stream.activation_rounds``, which makes the same chunks.)
    """
    tokens = check_tokens(tokens)
    model.eval()
    for epoch in itertools.count() if epochs is None else range(epochs):
        source = batches(epoch) if callable(batches) else batches
        n_yielded = 0
        for j, batch in enumerate(source):
            token_seed = stream_seed(seed, "sae-tokens", epoch, j)
            yield batch_activations(
                model, batch, [layer], tokens, max_tokens_per_image, use_views, token_seed
            )[layer]
            n_yielded += 1
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
        self._chunks = chunks
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

    def close(self) -> None:
        """Stop the stream and its source (a multi-process source tells the others to stop)."""
        self._iterator.close()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class CacheWriter:
    """Writes up to ``max_activations`` streamed activations as safetensors shards under
    ``path``; the manifest (``activations.json``) is written last by :meth:`finish`, so a folder
    without one is incomplete and is never read."""

    def __init__(
        self,
        path: str | os.PathLike,
        max_activations: int,
        shard_size: int = 65536,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / _CACHE_MANIFEST).unlink(missing_ok=True)
        self.max_activations = int(max_activations)
        self.shard_size = int(shard_size)
        self.metadata = dict(metadata or {})
        self.pending: list[torch.Tensor] = []
        self.n_pending = self.n_total = 0
        self.shards: list[str] = []
        self.d_in: int | None = None

    @property
    def full(self) -> bool:
        return self.n_total >= self.max_activations

    def add(self, chunk: torch.Tensor) -> None:
        chunk = chunk[: self.max_activations - self.n_total]
        self.d_in = int(chunk.shape[-1])
        self.pending.append(chunk.float())
        self.n_pending += chunk.shape[0]
        self.n_total += chunk.shape[0]
        if self.n_pending >= self.shard_size or self.full:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        name = f"shard_{len(self.shards):05d}.safetensors"
        save_file({"activations": torch.cat(self.pending).contiguous()}, str(self.path / name))
        self.shards.append(name)
        self.pending, self.n_pending = [], 0

    def finish(self) -> Path:
        self._flush()
        manifest = {
            "n_activations": self.n_total,
            "d_in": self.d_in,
            "shards": self.shards,
            **self.metadata,
        }
        write_json_atomic(manifest, self.path / _CACHE_MANIFEST)
        return self.path


def cache_activations(
    chunks: Iterable[torch.Tensor],
    path: str | os.PathLike,
    max_activations: int,
    shard_size: int = 65536,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write up to ``max_activations`` streamed activations to safetensors shards under ``path``
    (:class:`CacheWriter`). ``metadata`` (model, layer, tokens, data) is stored in the manifest
    and checked by :func:`cached_activation_chunks`."""
    writer = CacheWriter(path, max_activations, shard_size, metadata)
    for chunk in chunks:
        writer.add(chunk)
        if writer.full:
            break
    return writer.finish()


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


__all__ = [
    "TOKEN_CHOICES",
    "ActivationStream",
    "CacheWriter",
    "activation_chunks",
    "batch_activations",
    "batch_inputs",
    "cache_activations",
    "cached_activation_chunks",
    "check_tokens",
    "read_cache_manifest",
    "residual_stream",
    "resolve_layers",
    "select_tokens",
    "subsample_tokens",
    "tokens_per_image",
]
