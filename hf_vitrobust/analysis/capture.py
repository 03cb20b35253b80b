"""One forward pass per model per batch that reduces activations inside hooks.

`ActivationCapture` installs forward hooks on the transformers 5 ViT layout
(`model.vit.embeddings`, `model.vit.layers[i]`, `model.vit.layers[i].attention`)
and keeps only small per-batch reductions: the CLS token and the mean of the
patch tokens of every hidden state, per-head attention entropies, the CLS row
of the attention rollout, and (on request, for activation patching) the hidden
states themselves. Attention weights (tokens × tokens) are reduced in the hook
that sees them and never outlive their layer; the rollout product lives only
until the end of its batch.

Attention weights only exist under eager attention (sdpa returns none in
transformers 5), so the capture switches the model to eager for the pass and
restores its previous implementation afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_vitrobust.analysis.attention import RolloutAccumulator, attention_entropy

__all__ = [
    "ViTLayout",
    "check_vit_classifier",
    "eager_attention",
    "BatchCapture",
    "ActivationCapture",
    "capture_batch",
    "lens_logits",
]


@dataclass(frozen=True)
class ViTLayout:
    """Shape facts of a checked ViT classifier."""

    num_layers: int
    num_heads: int
    hidden_size: int
    num_labels: int
    grid: tuple[int, int]  # patch grid (rows, cols)

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid[0] * self.grid[1]


def check_vit_classifier(model: nn.Module, name: str = "model") -> ViTLayout:
    """Check that `model` is a CLS-token ViT classifier in the transformers 5 layout.

    The analyses read the CLS token (lens, rollout), the final layernorm and a linear
    classifier on it, and per-head attention weights; anything else is refused here
    rather than producing silently wrong numbers.
    """
    config = getattr(model, "config", None)
    vit = getattr(model, "vit", None)
    fix = (
        "Analysis supports transformers' ViTForImageClassification (CLS token, final "
        "layernorm, one linear classifier on the CLS token), e.g. google/vit-base-patch16-224 "
        "or a checkpoint fine-tuned from it."
    )
    if config is None or vit is None:
        raise ValueError(f"{name} ({type(model).__name__}) has no `.vit` backbone. {fix}")
    embeddings = getattr(vit, "embeddings", None)
    if embeddings is None or getattr(embeddings, "cls_token", None) is None:
        raise ValueError(f"{name} ({type(model).__name__}) has no CLS token. {fix}")
    extra_tokens = [t for t in ("distillation_token", "register_tokens") if hasattr(embeddings, t)]
    if extra_tokens:
        raise ValueError(
            f"{name} ({type(model).__name__}) has extra tokens {extra_tokens}: its head does not "
            f"read the CLS token alone. {fix}"
        )
    layers = getattr(vit, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"{name} ({type(model).__name__}) has no `vit.layers` (transformers 5 layout; older "
            f"code's `vit.encoder.layer` is not supported). {fix}"
        )
    for i, layer in enumerate(layers):
        attn = getattr(layer, "attention", None)
        if attn is None or not all(
            hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            raise ValueError(
                f"{name}: layer {i} has no `attention.{{q,k,v,o}}_proj` (different head layout). "
                f"{fix}"
            )
        if not isinstance(getattr(layer, "layernorm_before", None), nn.LayerNorm):
            raise ValueError(f"{name}: layer {i} has no `layernorm_before`. {fix}")
    if not isinstance(getattr(vit, "layernorm", None), nn.LayerNorm):
        raise ValueError(f"{name} has no final `vit.layernorm`. {fix}")
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"{name}: `classifier` is {type(classifier).__name__}, not one nn.Linear on the CLS "
            f"token (different head layout). {fix}"
        )
    if classifier.in_features != config.hidden_size:
        raise ValueError(
            f"{name}: the classifier reads {classifier.in_features} features, not the CLS token's "
            f"{config.hidden_size} (different head layout). {fix}"
        )
    heads = int(config.num_attention_heads)
    if int(layers[0].attention.num_attention_heads) != heads:
        raise ValueError(f"{name}: attention modules disagree with config.num_attention_heads.")
    patch = embeddings.patch_embeddings
    grid = (
        patch.image_size[0] // patch.patch_size[0],
        patch.image_size[1] // patch.patch_size[1],
    )
    return ViTLayout(
        num_layers=len(layers),
        num_heads=heads,
        hidden_size=int(config.hidden_size),
        num_labels=int(classifier.out_features),
        grid=grid,
    )


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with eager attention (which returns weights) and restore it afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous != "eager"
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if switch and previous is not None:
            model.set_attn_implementation(previous)


def lens_logits(model: nn.Module, cls_states: torch.Tensor) -> torch.Tensor:
    """Logit lens: classifier(final_layernorm(h_l[:, 0])) for every l at once.

    `cls_states` is [L+1, B, D] (the CLS token of hidden states 0..L, before the final
    layernorm). LayerNorm and Linear act on the last dimension, so this is one batched
    matmul over all layers, not a loop.
    """
    return model.classifier(model.vit.layernorm(cls_states))


@dataclass
class BatchCapture:
    """Reductions of one batch through one model (all on CPU unless noted).

    Hidden-state indices follow `output_hidden_states`: 0 = embeddings, l = output of
    block l, L = last block's output (before the final layernorm).
    """

    logits: torch.Tensor  # [B, C] the model's own logits
    cls: torch.Tensor  # [L+1, B, D] CLS token of each hidden state
    patch_mean: torch.Tensor  # [L+1, B, D] mean over patch tokens of each hidden state
    lens_logits: torch.Tensor  # [L+1, B, C]
    entropy: torch.Tensor | None = None  # [B, L, H] nats, mean over all queries
    cls_entropy: torch.Tensor | None = None  # [B, L, H] nats, CLS-query row
    rollout: torch.Tensor | None = None  # [B, gh, gw] rollout R[CLS, patches]
    hidden: torch.Tensor | None = None  # [L+1, B, T, D] (only when keep_hidden)


class ActivationCapture:
    """Hooks that reduce one ViT's activations on the fly; use as a context manager.

    >>> with ActivationCapture(model, rollout=True) as cap:   # doctest: +SKIP
    ...     out = cap(pixel_values)                            # a BatchCapture
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        entropy: bool = True,
        rollout: bool = False,
        keep_hidden: bool = False,
        name: str = "model",
    ) -> None:
        self.model = model
        self.layout = check_vit_classifier(model, name)
        self.entropy = entropy
        self.rollout = rollout
        self.keep_hidden = keep_hidden
        self._handles: list[Any] = []
        self._active = False  # hooks act only inside __call__ (not during patching runs)
        self._eager = None
        self._was_training = False
        self._reset()

    # -- hook state, reset per batch -------------------------------------------------
    def _reset(self) -> None:
        self._cls: list[torch.Tensor] = []
        self._patch: list[torch.Tensor] = []
        self._hidden: list[torch.Tensor] = []
        self._ent: list[torch.Tensor] = []
        self._cls_ent: list[torch.Tensor] = []
        self._rollout = RolloutAccumulator() if self.rollout else None

    def _on_hidden(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not self._active:
            return
        h = output[0] if isinstance(output, tuple) else output
        h = h.detach()
        self._cls.append(h[:, 0])
        self._patch.append(h[:, 1:].mean(dim=1))
        if self.keep_hidden:
            self._hidden.append(h)

    def _on_attention(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not self._active:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError(
                "Attention weights are unavailable: the model is not running eager attention "
                "(call model.set_attn_implementation('eager'), or use ActivationCapture as a "
                "context manager, which does it)."
            )
        weights = weights.detach()
        if self.entropy:
            per_query = attention_entropy(weights)  # [B, H, T] fp32
            self._ent.append(per_query.mean(dim=-1))
            self._cls_ent.append(per_query[:, :, 0])
        if self._rollout is not None:
            self._rollout.update(weights)
        # `weights` (tokens x tokens) goes out of scope here.

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> ActivationCapture:
        vit = self.model.vit
        self._was_training = self.model.training
        self.model.eval()
        self._eager = eager_attention(self.model)
        self._eager.__enter__()
        self._handles.append(vit.embeddings.register_forward_hook(self._on_hidden))
        for layer in vit.layers:
            self._handles.append(layer.register_forward_hook(self._on_hidden))
            if self.entropy or self.rollout:
                self._handles.append(layer.attention.register_forward_hook(self._on_attention))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._eager is not None:
            self._eager.__exit__(*exc)
            self._eager = None
        self.model.train(self._was_training)
        self._reset()

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> BatchCapture:
        """Run one forward pass on `pixel_values` [B, 3, H, W] and return its reductions."""
        if not self._handles:
            raise RuntimeError("ActivationCapture must be used inside a `with` block.")
        self._reset()
        self._active = True
        try:
            logits = self.model(pixel_values=pixel_values).logits
            self._active = False
            expected = self.layout.num_layers + 1
            if len(self._cls) != expected:
                raise RuntimeError(
                    f"Captured {len(self._cls)} hidden states, expected {expected}: the forward "
                    "pass did not go through every layer once."
                )
            cls = torch.stack(self._cls)
            out = BatchCapture(
                logits=logits.detach(),
                cls=cls,
                patch_mean=torch.stack(self._patch),
                lens_logits=lens_logits(self.model, cls),
            )
            if self.entropy:
                out.entropy = torch.stack(self._ent, dim=1)
                out.cls_entropy = torch.stack(self._cls_ent, dim=1)
            if self._rollout is not None:
                out.rollout = self._rollout.cls_map(self.layout.grid)
            if self.keep_hidden:
                out.hidden = torch.stack(self._hidden)
            return out
        finally:
            self._active = False
            self._reset()


def capture_batch(model: nn.Module, pixel_values: torch.Tensor, **kwargs: Any) -> BatchCapture:
    """One-shot `ActivationCapture` (installs hooks, runs one batch, removes them)."""
    with ActivationCapture(model, **kwargs) as cap:
        return cap(pixel_values)


# ---------------------------------------------------------------------------------------
# Streaming driver: every analysis over a dataset, one capture per model per batch.
# ---------------------------------------------------------------------------------------

Batch = tuple[torch.Tensor, torch.Tensor]  # (pixel_values [B, 3, H, W], labels [B])

DEFINITIONS = {
    "logit_lens": "logits_l = classifier(final_layernorm(h_l[:, 0])) for hidden states "
    "l = 0..L (0 = embeddings, L = last block before the final layernorm); at l = L it is "
    "the model's logits (last_layer_max_abs_diff).",
    "first_correct_layer": "Over images correct at the last layer (count given): 'first' = "
    "first l whose top-1 is correct; 'stable' = earliest l from which every later layer is "
    "correct.",
    "attention_entropy": "Per layer and head, mean over queries of -sum_j A_ij ln A_ij "
    "(nats, fp32); 'cls_query' = the CLS query row alone. Differences are fine-tuned minus "
    "base on the same images, paired bootstrap CI.",
    "rollout": "Heads averaged, A~ = 0.5 A + 0.5 I, rows normalised, R <- A~ R over layers; "
    "map = R[CLS, patches].",
    "grad_cam": "At the input of the last block's layernorm_before, CLS dropped, channels "
    "weighted by the token-mean gradient of the true-class logit, ReLU.",
    "cka": "Linear CKA ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), base (X) vs "
    "fine-tuned (Y), exact over all images from streamed float64 sums; on the CLS token and "
    "on the mean of the patch tokens of every hidden state 0..L.",
    "patching": "Base model run with hidden state l (0 = embeddings, L = last block) replaced "
    "by the fine-tuned model's on the same input; recovered = (acc(patched) - acc(base)) / "
    "(acc(fine-tuned) - acc(base)), bootstrap CI over images.",
    "statistics": "95% bootstrap CIs over images (seeded); McNemar for accuracy, paired "
    "bootstrap / Wilcoxon for continuous values.",
}


def check_same_task(base: nn.Module, other: nn.Module, other_name: str) -> None:
    """Refuse comparing two models whose classes differ (the comparison would be meaningless)."""
    a = {int(k): str(v) for k, v in base.config.id2label.items()}
    b = {int(k): str(v) for k, v in other.config.id2label.items()}
    if a != b:
        raise ValueError(
            f"{other_name} predicts different classes than the base model "
            f"({len(b)} vs {len(a)} labels, e.g. {sorted(b.items())[:3]} vs "
            f"{sorted(a.items())[:3]}). Compare a fine-tuned model with the model it was "
            "fine-tuned from."
        )


def analyze_models(
    base: nn.Module,
    finetuned: dict[str, nn.Module],
    batches: Any,
    conditions: list[str],
    *,
    lens: bool = True,
    attention: bool = True,
    cka: bool = True,
    patching: bool = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    summarize: bool = True,
) -> dict[str, Any]:
    """Run every analysis of `finetuned` models against `base`, streaming over batches.

    `batches(condition)` yields `(pixel_values, labels)` for each condition (e.g. "clean",
    "noise", ...), the same images in the same order for every call. Each model does one
    capture forward per batch; patching adds base-model block calls on the fine-tuned
    hidden states. Returns a JSON-ready dict (see docs/analysis.md). With
    `summarize=False` the statistics are skipped and `result["recorders"][condition]` holds
    the per-image recorders (lens, entropy, patching) and the CKA accumulators instead.
    """
    from tqdm.auto import tqdm

    from hf_vitrobust.analysis.attention import EntropyRecorder, compare_entropy
    from hf_vitrobust.analysis.lens import LensRecorder, compare_lens, summarize_lens
    from hf_vitrobust.analysis.patching import PatchingRecorder, patched_logits
    from hf_vitrobust.analysis.similarity import StreamingLinearCKA

    if not finetuned:
        raise ValueError("analyze_models needs at least one fine-tuned model to compare.")
    layout = check_vit_classifier(base, "base model")
    for name, model in finetuned.items():
        other = check_vit_classifier(model, name)
        check_same_task(base, model, name)
        if patching and (other.num_layers, other.hidden_size) != (
            layout.num_layers,
            layout.hidden_size,
        ):
            raise ValueError(
                f"{name} has {other.num_layers} layers of width {other.hidden_size}, the base "
                f"model {layout.num_layers} of width {layout.hidden_size}: activation patching "
                "needs the same architecture (set patching to false to skip it)."
            )
    torch.manual_seed(seed)
    device = torch.device(device)
    models = {"base": base, **finetuned}
    for model in models.values():
        model.to(device)
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    result: dict[str, Any] = {
        "definitions": DEFINITIONS,
        "models": {
            name: {
                "name_or_path": getattr(m.config, "_name_or_path", "") or name,
                "num_layers": check_vit_classifier(m, name).num_layers,
                "num_heads": check_vit_classifier(m, name).num_heads,
            }
            for name, m in models.items()
        },
        "conditions": list(conditions),
        "statistics": boot,
    }
    sections = {
        "logit_lens": lens,
        "attention_entropy": attention,
        "cka": cka,
        "patching": patching,
    }
    for key, on in sections.items():
        if on:
            result[key] = {}

    for condition in conditions:
        lens_rec = {name: LensRecorder() for name in models}
        ent_rec = {name: EntropyRecorder() for name in models}
        cka_rec = {
            name: {"cls": StreamingLinearCKA(), "patch_mean": StreamingLinearCKA()}
            for name in finetuned
        }
        patch_rec = {name: PatchingRecorder() for name in finetuned}
        captures = {
            name: ActivationCapture(
                model, entropy=attention, keep_hidden=patching and name != "base", name=name
            )
            for name, model in models.items()
        }
        n_images = 0
        for cap in captures.values():
            cap.__enter__()
        try:
            for pixel_values, labels in tqdm(
                batches(condition),
                desc=f"analysis [{condition}]",
                unit="batch",
                disable=not progress,
            ):
                pixel_values = pixel_values.to(device)
                labels = labels.to(device)
                n_images += len(labels)
                base_out = captures["base"](pixel_values)
                outs = {"base": base_out}
                for name in finetuned:
                    out = captures[name](pixel_values)
                    outs[name] = out
                    if cka:
                        cka_rec[name]["cls"].update(base_out.cls, out.cls)
                        cka_rec[name]["patch_mean"].update(base_out.patch_mean, out.patch_mean)
                    if patching:
                        patched = patched_logits(base, out.hidden)
                        patch_rec[name].update(base_out.logits, out.logits, patched, labels)
                        out.hidden = None  # free the batch's hidden states now
                for name, out in outs.items():
                    if lens:
                        lens_rec[name].update(out.lens_logits, labels, out.logits)
                    if attention:
                        ent_rec[name].update(out.entropy, out.cls_entropy)
        finally:
            for cap in captures.values():
                cap.__exit__(None, None, None)
        if n_images < 2:
            raise ValueError(
                f"Condition {condition!r} produced {n_images} image(s); the analysis needs at "
                "least 2 (check the dataset split and max_eval_examples)."
            )
        if not summarize:
            result.setdefault("recorders", {})[condition] = {
                "lens": lens_rec,
                "entropy": ent_rec,
                "cka": cka_rec,
                "patching": patch_rec,
            }
            continue
        if lens:
            result["logit_lens"][condition] = {
                "models": {name: summarize_lens(rec, **boot) for name, rec in lens_rec.items()},
                "comparisons": {
                    name: compare_lens(lens_rec["base"], lens_rec[name], **boot)
                    for name in finetuned
                },
            }
        if attention:
            result["attention_entropy"][condition] = {
                "models": {name: rec.summary() for name, rec in ent_rec.items()},
                "differences": {
                    name: compare_entropy(ent_rec["base"], ent_rec[name], **boot)
                    for name in finetuned
                },
            }
        if cka:
            result["cka"][condition] = {
                name: {kind: acc.compute().tolist() for kind, acc in recs.items()}
                for name, recs in cka_rec.items()
            }
        if patching:
            result["patching"][condition] = {
                name: rec.summary(**boot) for name, rec in patch_rec.items()
            }
    return result


def attention_panel(
    models: dict[str, nn.Module],
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    labels: torch.Tensor,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Rollout and Grad-CAM maps for a few images, clean and corrupted, for every model.

    Returns `rollout` and `grad_cam` arrays [images, 2 (clean, corrupted), models, rows, cols]
    and the model names in column order.
    """
    from hf_vitrobust.analysis.attention import grad_cam

    device = torch.device(device)
    rollouts, cams = [], []
    for name, model in models.items():
        model.to(device)
        per_view_r, per_view_c = [], []
        for view in (clean, corrupted):
            view = view.to(device)
            per_view_r.append(capture_batch(model, view, entropy=False, rollout=True, name=name))
            per_view_c.append(grad_cam(model, view, labels.to(device)))
        rollouts.append(torch.stack([c.rollout for c in per_view_r], dim=1))
        cams.append(torch.stack(per_view_c, dim=1))
    return {
        "models": list(models),
        "rollout": torch.stack(rollouts, dim=2).cpu().numpy(),
        "grad_cam": torch.stack(cams, dim=2).cpu().numpy(),
    }


class DatasetBatches:
    """`batches(condition)` for `analyze_models` from an image dataset.

    Conditions are "clean" and one per corruption group present in `corruptions` (a family
    name or a list of corruption names). In group g every image gets one corruption of that
    group at `severity`, drawn by `CorruptionViews` (evaluation stream) from (seed, example
    id): the same images, corrupted the same way, on every pass and every run. Decoding,
    resizing and corruption go through `hf_vitrobust.data.CorruptionCollator`, as in
    evaluation.
    """

    def __init__(
        self,
        dataset: Any,
        processor: Any,
        *,
        corruptions: str | list[str] = "all",
        groups: list[str] | None = None,
        severity: int = 3,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        max_bad_fraction: float = 0.01,
    ) -> None:
        from hf_vitrobust.corruptions import CORRUPTIONS, GROUPS, resolve_corruptions
        from hf_vitrobust.data import BadImageTracker, CorruptionViews

        names = resolve_corruptions(corruptions)
        members = {g: tuple(n for n in names if CORRUPTIONS[n].group == g) for g in GROUPS}
        members = {g: m for g, m in members.items() if m}
        if groups:
            unknown = sorted(set(groups) - set(members))
            if unknown:
                raise ValueError(
                    f"Corruption groups {unknown} have no corruption in {corruptions!r}; "
                    f"available: {sorted(members)}."
                )
            members = {g: members[g] for g in groups}
        self.dataset = dataset
        self.processor = processor
        self.group_members = members
        self.views = {
            g: CorruptionViews(m, severities=(severity,), seed=seed, stage="eval")
            for g, m in members.items()
        }
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.bad_images = BadImageTracker(max_bad_fraction)
        self.conditions = ["clean", *members]

    def _loader(self, condition: str) -> Any:
        from torch.utils.data import DataLoader

        from hf_vitrobust.data import CorruptionCollator

        if condition != "clean" and condition not in self.views:
            raise ValueError(f"Unknown condition {condition!r}; expected one of {self.conditions}.")
        collator = CorruptionCollator(
            self.processor,
            views=self.views.get(condition),
            k=0 if condition == "clean" else 1,
            # Count bad images once (on the clean pass); every pass skips the same ones.
            bad_images=self.bad_images if condition == "clean" else None,
        )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            collate_fn=collator,
            num_workers=self.num_workers,
            shuffle=False,
        )

    def __call__(self, condition: str) -> Iterator[Batch]:
        for batch in self._loader(condition):
            if len(batch["labels"]) == 0:
                continue
            pixels = batch["pixel_values"] if condition == "clean" else batch["views"][:, 0]
            yield pixels, batch["labels"]

    def panel_batch(self, num_images: int) -> dict[str, Any]:
        """The first `num_images` decodable images: clean, and each corrupted with a group in
        turn (image i uses group i mod G). Returns tensors and the corruption names."""
        from itertools import islice

        from hf_vitrobust.data import CorruptionCollator

        groups = list(self.views)
        if not groups:
            raise ValueError("The attention panel needs at least one corruption group.")
        collator = CorruptionCollator(self.processor)
        examples = list(islice(iter(self.dataset), num_images * 2))
        clean = collator(examples)
        keep = clean["example_ids"][:num_images].tolist()
        by_id = {int(e.get("example_id", i)): e for i, e in enumerate(examples)}
        corrupted, names = [], []
        for i, example_id in enumerate(keep):
            group = groups[i % len(groups)]
            out = CorruptionCollator(self.processor, views=self.views[group], k=1)(
                [by_id[example_id]]
            )
            corrupted.append(out["views"][0, 0])
            names.append(f"{group}: {out['view_corruptions'][0][0]}")
        return {
            "clean": clean["pixel_values"][:num_images],
            "corrupted": torch.stack(corrupted),
            "labels": clean["labels"][:num_images],
            "corruptions": names,
        }


# ---------------------------------------------------------------------------------------
# Recipe entry point (recipes/analyze.py is a thin wrapper around this).
# ---------------------------------------------------------------------------------------


@dataclass
class AnalysisArguments:
    """What `recipes/analyze.py` compares, on which corruptions, and which analyses it runs."""

    base_model: str = field(
        default="", metadata={"help": "Hub id or local folder of the base ViT classifier."}
    )
    finetuned_models: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hub ids or local folders of fine-tuned models to compare with the base."
        },
    )
    finetuned_names: list[str] = field(
        default_factory=list,
        metadata={"help": "Short names for the fine-tuned models (default: folder names)."},
    )
    output_dir: str = field(default="outputs/analysis")
    corruptions: str = field(
        default="all",
        metadata={"help": "Corruption family (e.g. 'all', 'imagenet_c') or comma-separated names."},
    )
    groups: list[str] = field(
        default_factory=list,
        metadata={"help": "Corruption groups to analyse (default: every group in `corruptions`)."},
    )
    severity: int = field(default=3, metadata={"help": "Corruption severity (1..5)."})
    batch_size: int = field(default=64)
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for decoding."})
    seed: int = field(default=0)
    n_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples (>= 1000)."})
    confidence: float = field(default=0.95)
    lens: bool = field(default=True)
    attention: bool = field(default=True)
    cka: bool = field(default=True)
    patching: bool = field(default=True)
    num_panel_images: int = field(
        default=4, metadata={"help": "Images in the rollout/Grad-CAM panel (0: no panel)."}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    progress: bool = field(default=True)


def _short_name(path: str) -> str:
    from pathlib import Path

    return Path(path.rstrip("/")).name or path


def run_analysis(args: AnalysisArguments, data_args: Any) -> dict[str, Any]:
    """Load the models and data, run every analysis, write `analysis.json`, the attention
    panel (`attention_panel.npz`) and the figures into `args.output_dir`."""
    from pathlib import Path

    import numpy as np

    from hf_vitrobust.configs import ModelArguments
    from hf_vitrobust.data import ProcessorSpec, check_labels, label_names, load_image_dataset
    from hf_vitrobust.io import write_json_atomic
    from hf_vitrobust.models import load_model_and_processor
    from hf_vitrobust.plots.analysis import plot_all

    if not args.base_model:
        raise ValueError("Set base_model (a Hub id or a local checkpoint folder).")
    if not args.finetuned_models:
        raise ValueError("Set finetuned_models (one or more fine-tuned checkpoints to compare).")
    names = list(args.finetuned_names) or [_short_name(p) for p in args.finetuned_models]
    if len(names) != len(args.finetuned_models) or len(set(names)) != len(names) or "base" in names:
        raise ValueError(
            f"finetuned_names {names} must be unique, not 'base', one per fine-tuned model."
        )
    torch.manual_seed(args.seed)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)

    def load(path: str) -> tuple[nn.Module, Any]:
        model, processor = load_model_and_processor(
            ModelArguments(model_name_or_path=path, attn_implementation="eager")
        )
        return model.eval(), processor

    base, processor = load(args.base_model)
    finetuned = {name: load(path)[0] for name, path in zip(names, args.finetuned_models)}

    dataset = load_image_dataset(
        data_args.dataset_name,
        split=data_args.eval_split,
        streaming=data_args.streaming,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        config_name=data_args.dataset_config_name,
        max_examples=data_args.max_eval_examples,
    )
    classes = label_names(dataset)
    for name, model in {"base": base, **finetuned}.items():
        try:
            check_labels(classes, model.config)
        except ValueError as error:
            raise ValueError(f"{name} model: {error}") from error
    corruptions: str | list[str] = args.corruptions
    if "," in corruptions:
        corruptions = [c.strip() for c in corruptions.split(",") if c.strip()]
    batches = DatasetBatches(
        dataset,
        processor,
        corruptions=corruptions,
        groups=list(args.groups) or None,
        severity=args.severity,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_bad_fraction=getattr(data_args, "max_bad_fraction", 0.01),
    )
    result = analyze_models(
        base,
        finetuned,
        batches,
        batches.conditions,
        lens=args.lens,
        attention=args.attention,
        cka=args.cka,
        patching=args.patching,
        n_resamples=args.n_resamples,
        confidence=args.confidence,
        seed=args.seed,
        device=device,
        progress=args.progress,
    )
    result["bad_images"] = batches.bad_images.finish()
    result["data"] = {
        "dataset": str(data_args.dataset_name),
        "split": data_args.eval_split,
        "max_examples": data_args.max_eval_examples,
        "classes": classes,
        "severity": args.severity,
        "corruption_groups": {g: list(m) for g, m in batches.group_members.items()},
        "note": "Corruptions are generated on the fly (hf_vitrobust.corruptions), not the "
        "published ImageNet-C JPEGs; one corruption of the group per image, drawn from "
        "(seed, example id).",
    }
    result["models"]["base"]["name_or_path"] = args.base_model
    for name, path in zip(names, args.finetuned_models):
        result["models"][name]["name_or_path"] = path
    result["seed"] = args.seed

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    panel = None
    if args.num_panel_images > 0:
        sample = batches.panel_batch(args.num_panel_images)
        panel = attention_panel(
            {"base": base, **finetuned},
            sample["clean"],
            sample["corrupted"],
            sample["labels"],
            device=device,
        )
        spec = ProcessorSpec.from_processor(processor)
        views = torch.stack([sample["clean"], sample["corrupted"]], dim=1)  # [k, 2, 3, H, W]
        panel["images"] = spec.denormalize(views).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
        panel["corruptions"] = sample["corruptions"]
        panel["labels"] = sample["labels"].numpy()
        np.savez_compressed(
            out / "attention_panel.npz",
            **{k: np.asarray(v) for k, v in panel.items()},
        )
    figures = plot_all(result, out, panel)
    result["figures"] = [p.name for p in figures]
    write_json_atomic(result, out / "analysis.json")
    return result
