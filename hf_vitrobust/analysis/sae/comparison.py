"""The held-out pass of the SAE study: every compared image, condition by condition, through every
model and every base SAE, accumulated per batch; then the summaries and the comparison records.

Memory holds one batch of activations and codes (encoded ``chunk_images`` images at a time), the
reference images' base activations of one condition, running sums per (model, SAE) and per-image
scalars — never all images' activations. Each process handles its shard of the compared images;
per-image values are gathered on the main process, sorted by example id, so any number of
processes writes the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from hf_vitrobust.analysis.sae.activations import (
    residual_stream,
    select_tokens,
    tokens_per_image,
)
from hf_vitrobust.analysis.sae.calibrate import ThresholdCalibrator
from hf_vitrobust.analysis.sae.compare import (
    MetricsAccumulator,
    Summarizer,
    active_count,
    active_topk,
    encode,
    pair_values,
    token_slices,
)
from hf_vitrobust.analysis.sae.heldout import ReferenceImages
from hf_vitrobust.distributed import EXAMPLE_IDS, gather_records, process_state
from hf_vitrobust.roles import BASE, Pair
from hf_vitrobust.stats import paired_bootstrap

#: The ``who`` of the different-image baseline's records (base model, image vs its partner).
DIFFERENT_IMAGE = "different_image"
#: Memory for one code tensor of a chunk of images (there are a few per SAE and model).
CODE_BUDGET_BYTES = 64 * 2**20
#: Comparison record metric -> the per-image value it differences.
RECORD_METRICS = {"code_cosine_to_base": "code_cosine", "l0_through_base": "l0"}
#: Per-image values of a model against the base (and of the baseline), per token type.
PAIR_VALUES = ("code_cosine", "both_zero", "raw_cosine", "topk_jaccard")


@dataclass
class ComparedSAE:
    """A base SAE of the study, as the comparison uses it (the inference SAE)."""

    sae_id: str
    sae_type: str
    layer: int
    sae: Any


@torch.no_grad()
def model_activations(
    model: torch.nn.Module, pixel_values: torch.Tensor, layers: Sequence[int], tokens: str
) -> dict[int, torch.Tensor]:
    """``{layer: [B, T, d]}`` selected-token activations (float32, on the CPU)."""
    device = next(model.parameters()).device
    hidden = residual_stream(model, pixel_values.to(device), layers)
    return {layer: select_tokens(hidden[layer], tokens).cpu() for layer in layers}


def reference_activations(
    base: torch.nn.Module,
    reference: ReferenceImages,
    condition: str,
    layers: Sequence[int],
    tokens: str,
    batch_size: int,
) -> dict[int, torch.Tensor]:
    """The reference images' base-model activations under ``condition``, ``{layer: [n, T, d]}``."""
    pixels = reference.pixels(condition)
    parts = [
        model_activations(base, pixels[i : i + batch_size], layers, tokens)
        for i in range(0, len(pixels), batch_size)
    ]
    return {layer: torch.cat([p[layer] for p in parts]) for layer in layers}


def calibrate_saes(
    model: torch.nn.Module,
    reference: ReferenceImages,
    conditions: Sequence[str],
    calibrators: Mapping[Any, tuple[int, ThresholdCalibrator]],
    tokens: str,
    batch_size: int,
) -> dict[Any, dict[str, Any]]:
    """Run every ``(layer, calibrator)`` over the reference images' activations under every
    condition (``model``: the one the SAEs were trained on); returns each key's calibration
    record."""
    layers = sorted({layer for layer, _ in calibrators.values()})
    for condition in conditions:
        acts = reference_activations(model, reference, condition, layers, tokens, batch_size)
        for layer, calibrator in calibrators.values():
            calibrator.update(acts[layer])
    return {sid: calibrator.finish() for sid, (_, calibrator) in calibrators.items()}


class HeldOutPass:
    """Per-image comparisons and SAE metrics over the compared images, one condition at a time.

    ``models`` maps model keys to the fine-tuned models (the base is compared with each).
    ``metrics[(who, sae_id)]`` accumulates the base SAE's L0 / explained variance / dead features
    on model ``who``'s activations (``who`` = ``"base"`` or a model key) over all conditions.
    """

    def __init__(
        self,
        base: torch.nn.Module,
        models: Mapping[str, torch.nn.Module],
        saes: Sequence[ComparedSAE],
        reference: ReferenceImages,
        tokens: str,
        topk: int,
        batch_size: int,
        chunk_images: int | None = None,
        state: Any = None,
    ) -> None:
        self.state = state or process_state()
        self.base = base
        self.models = dict(models)
        self.saes = list(saes)
        self.reference = reference
        self.tokens = tokens
        self.slices = token_slices(tokens)
        self.topk = int(topk)
        self.batch_size = int(batch_size)
        self.chunk_images = int(chunk_images or self.images_per_chunk())
        self.layers = sorted({s.layer for s in self.saes})
        self.metrics = {
            (who, s.sae_id): MetricsAccumulator(s.sae) for who in [BASE, *models] for s in saes
        }

    def images_per_chunk(self, budget_bytes: int = CODE_BUDGET_BYTES) -> int:
        """Images whose codes (``tokens × d_sae`` float32 each) fit ``budget_bytes``."""
        per_image = (
            tokens_per_image(self.base, self.tokens)
            * max(int(s.sae.cfg.d_sae) for s in self.saes)
            * 4
        )
        return max(1, min(self.batch_size, budget_bytes // per_image))

    def condition(self, condition: str, batches: Iterable[dict[str, Any]]) -> dict[Any, np.ndarray]:
        """This process's per-image records of ``condition`` (``example_ids`` and one array per
        ``(who, sae_id, token type, value)``); pass them to :func:`gather_condition`."""
        ref = reference_activations(
            self.base, self.reference, condition, self.layers, self.tokens, self.batch_size
        )
        centres = {
            (layer, token): ref[layer][:, where].reshape(-1, ref[layer].shape[-1]).double().mean(0)
            for layer in self.layers
            for token, where in self.slices.items()
        }
        parts: dict[Any, list[Any]] = {key: [] for key in self.record_keys()}
        for batch in batches:
            ids = batch["example_ids"].numpy()
            partners = torch.from_numpy(self.reference.partners(ids))
            acts = {
                BASE: model_activations(self.base, batch["pixel_values"], self.layers, self.tokens)
            }
            for key, model in self.models.items():
                acts[key] = model_activations(
                    model, batch["pixel_values"], self.layers, self.tokens
                )
            for i in range(0, len(ids), self.chunk_images):
                rows = slice(i, i + self.chunk_images)
                _append(parts, EXAMPLE_IDS, ids[rows])
                chunk = {
                    who: {layer: a[layer][rows] for layer in self.layers} for who, a in acts.items()
                }
                for compared in self.saes:
                    partner = ref[compared.layer][partners[rows]]
                    self._compare(parts, compared, chunk, partner, centres)
        return {
            key: np.asarray(value, dtype=np.int64 if key == EXAMPLE_IDS else np.float64)
            for key, value in parts.items()
        }

    def record_keys(self) -> list[Any]:
        """Every key of a condition's records (the same on every process, even one without
        images)."""
        keys: list[Any] = [EXAMPLE_IDS]
        for s in self.saes:
            for token in self.slices:
                keys.append((BASE, s.sae_id, token, "l0"))
                keys += [(DIFFERENT_IMAGE, s.sae_id, token, name) for name in PAIR_VALUES]
                for key in self.models:
                    keys += [(key, s.sae_id, token, name) for name in (*PAIR_VALUES, "l0")]
        return keys

    def _compare(
        self,
        parts: dict[Any, list[Any]],
        compared: ComparedSAE,
        chunk: Mapping[str, Mapping[int, torch.Tensor]],
        partner: torch.Tensor,
        centres: Mapping[tuple[int, str], torch.Tensor],
    ) -> None:
        sid, layer = compared.sae_id, compared.layer
        base_acts = chunk[BASE][layer]
        base_codes = encode(compared.sae, base_acts)
        partner_codes = encode(compared.sae, partner)
        self.metrics[(BASE, sid)].update(base_acts, base_codes)
        others = {}
        for key in self.models:
            codes = encode(compared.sae, chunk[key][layer])
            self.metrics[(key, sid)].update(chunk[key][layer], codes)
            others[key] = (chunk[key][layer], codes)
        for token, where in self.slices.items():
            centre = centres[(layer, token)]
            _append(parts, (BASE, sid, token, "l0"), active_count(base_codes[:, where]))
            base_topk = active_topk(base_codes[:, where], self.topk)
            baseline = pair_values(
                base_codes[:, where], partner_codes[:, where], base_acts[:, where],
                partner[:, where], centre, self.topk, base_topk,
            )  # fmt: skip
            for name, values in baseline.items():
                _append(parts, (DIFFERENT_IMAGE, sid, token, name), values)
            for key, (acts, codes) in others.items():
                values = pair_values(
                    base_codes[:, where], codes[:, where], base_acts[:, where], acts[:, where],
                    centre, self.topk, base_topk,
                )  # fmt: skip
                values["l0"] = active_count(codes[:, where])
                for name, v in values.items():
                    _append(parts, (key, sid, token, name), v)

    def gather_metrics(self) -> dict[tuple[str, str], dict[str, float]] | None:
        """The metrics summed over processes (main process; ``None`` elsewhere)."""
        states = {key: acc.state() for key, acc in self.metrics.items()}
        parts = [states] if self.state.num_processes == 1 else gather_object([states])
        if not self.state.is_main_process:
            return None
        for other in parts[1:]:
            for key, state in other.items():
                self.metrics[key].merge(state)
        return {key: acc.result() for key, acc in self.metrics.items()}


def _append(parts: dict[Any, list[Any]], key: Any, values: np.ndarray) -> None:
    # Python numbers, not small arrays: thousands of small long-lived arrays malloc'd between the
    # batches' large transient tensors fragment the heap, and the process's memory then grows
    # with the number of images although nothing large is kept (measured: bench/sae.py --heldout).
    parts[key].extend(np.asarray(values).tolist())


def gather_condition(records: dict[Any, np.ndarray]) -> dict[Any, np.ndarray] | None:
    """Per-image records of every process, sorted by example id (main process; else ``None``)."""
    return gather_records(records)


def _values(records: Mapping[Any, np.ndarray], key: tuple[str, str, str, str]) -> np.ndarray:
    return np.asarray(records[key], dtype=np.float64)


class StudySummaries:
    """The per-model distributions (sae.json ``distributions``, Figs. 9/10) and the comparison
    records (sae.json ``comparisons``) from the gathered per-image records of every condition."""

    def __init__(
        self,
        records: Mapping[str, Mapping[Any, np.ndarray]],
        saes: Sequence[ComparedSAE],
        tokens: Sequence[str],
        flagged: Mapping[str, bool],
        *,
        n_resamples: int,
        seed: int,
        confidence: float,
    ) -> None:
        self.records = records
        self.saes = list(saes)
        self.tokens = list(tokens)
        self.flagged = dict(flagged)
        self.stats = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
        self.summarize = Summarizer(n_resamples, seed, confidence)
        self._shared: dict[tuple[str, str, str], dict[str, Any]] = {}

    def _baseline(self, cond: str, sid: str, token: str) -> dict[str, Any]:
        """The summaries that do not depend on the compared model (computed once)."""
        key = (cond, sid, token)
        if key not in self._shared:
            rec = self.records[cond]
            self._shared[key] = {
                "l0_base": self.summarize(_values(rec, (BASE, sid, token, "l0"))),
                **{
                    f"{name}_different_image": self.summarize(
                        _values(rec, (DIFFERENT_IMAGE, sid, token, name))
                    )
                    for name in ("code_cosine", "raw_cosine", "topk_jaccard")
                },
            }
        return self._shared[key]

    def cell(self, model: str, cond: str, sid: str, token: str) -> dict[str, Any]:
        """One model's distributions under one condition, SAE and token type."""
        rec = self.records[cond]
        code = _values(rec, (model, sid, token, "code_cosine"))
        return {
            "code_cosine": self.summarize(code),
            "raw_cosine": self.summarize(_values(rec, (model, sid, token, "raw_cosine"))),
            "topk_jaccard": self.summarize(_values(rec, (model, sid, token, "topk_jaccard"))),
            "l0_through_base": self.summarize(_values(rec, (model, sid, token, "l0"))),
            "both_zero_tokens": int(_values(rec, (model, sid, token, "both_zero")).sum()),
            "both_zero_images": int(np.isnan(code).sum()),
            **self._baseline(cond, sid, token),
            "code_cosine_minus_different_image": self.summarize.difference(
                _values(rec, (DIFFERENT_IMAGE, sid, token, "code_cosine")), code
            ),
        }

    def distributions(
        self, models: Sequence[str], conditions: Mapping[str, Sequence[str]], severity: int
    ) -> dict[str, dict[str, Any]]:
        """``{model: {sae_id: {flagged, conditions: {cond: {corruptions, severity, tokens}}}}}``."""
        out: dict[str, dict[str, Any]] = {}
        for model in models:
            out[model] = {}
            for s in self.saes:
                cells = {
                    cond: {
                        "corruptions": list(names),
                        "severity": None if cond == "clean" else severity,
                        "tokens": {t: self.cell(model, cond, s.sae_id, t) for t in self.tokens},
                    }
                    for cond, names in conditions.items()
                }
                out[model][s.sae_id] = {"flagged": self.flagged[s.sae_id], "conditions": cells}
        return out

    def comparisons(self, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
        """Comparison records of the control pairs among ``pairs`` (`roles.comparison_pairs`):
        every adversarial model against each matched control, per SAE, condition and token
        type: ``code_cosine_to_base`` and ``l0_through_base`` (model minus control, paired on
        the images where both are defined). The base pairs have no record here: the metrics
        are themselves measured against the base."""
        out = []
        for model, reference, role in pairs:
            if role == BASE:
                continue
            cells = product(self.saes, self.records, self.tokens, RECORD_METRICS.items())
            for s, cond, token, (metric, value) in cells:
                a = _values(self.records[cond], (model, s.sae_id, token, value))
                r = _values(self.records[cond], (reference, s.sae_id, token, value))
                ok = np.isfinite(a) & np.isfinite(r)
                if ok.sum() < 2:
                    continue
                out.append(
                    {
                        "model": model,
                        "reference": reference,
                        "reference_role": role,
                        "metric": metric,
                        "scope": cond,
                        "sae_id": s.sae_id,
                        "sae_type": s.sae_type,
                        "layer": s.layer,
                        "token": token,
                        "flagged": self.flagged[s.sae_id],
                        "n_excluded_images": int((~ok).sum()),
                        **paired_bootstrap(r[ok], a[ok], **self.stats).to_dict(),
                    }
                )
        return out

    def figure_data(self, models: Sequence[str]) -> dict[str, dict[int, Any]]:
        """Per SAE type: ``{layer: {cond: {token: {models: {key: per-image code cosines},
        different_image, flagged}}}}`` for the code-cosine histograms (Figs. 9/10)."""
        out: dict[str, dict[int, Any]] = {}
        for s in self.saes:
            by_cond = out.setdefault(s.sae_type, {}).setdefault(s.layer, {})
            for cond, rec in self.records.items():
                by_cond[cond] = {
                    token: {
                        "models": {
                            m: _values(rec, (m, s.sae_id, token, "code_cosine")) for m in models
                        },
                        "different_image": _values(
                            rec, (DIFFERENT_IMAGE, s.sae_id, token, "code_cosine")
                        ),
                        "flagged": self.flagged[s.sae_id],
                    }
                    for token in self.tokens
                }
        return out


__all__ = [
    "DIFFERENT_IMAGE",
    "PAIR_VALUES",
    "RECORD_METRICS",
    "ComparedSAE",
    "HeldOutPass",
    "StudySummaries",
    "calibrate_saes",
    "gather_condition",
    "model_activations",
    "reference_activations",
]
