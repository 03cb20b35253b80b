"""Writes the golden study under tests/data/golden/study: small stage outputs with known truth.

    python tests/data/golden/make_golden.py

Per-image outcomes are simulated with planted effects (below), and every comparison record is
computed from them by hf_vitrobust.stats, exactly as the stages compute theirs (McNemar for one
cell, the paired bootstrap for pooled cells, Wilcoxon p-values with bootstrap CIs for the
analysis and SAE cells). The tests assert the verdicts the planted truth implies:

- models (keys from roles.model_keys; two checkpoints share the folder name ``final``):
  ``runA/final`` adversarial on the blurs (seen group ``blur``), ``runB/final`` adversarial on
  the noises (seen group ``noise``), ``clean`` its clean control, ``random_lf`` the random-view
  control of ``runA/final`` (``runB/final`` has none);
- C1: both adversarial models gain ≥ 8 pp top-1 over the control on their seen group → supported;
- C2: ``runA/final`` equals the control on noise and digital, and is +2.5 pp on weather (about
  its margin: an inconclusive group); ``runB/final`` transfers +10 pp to blur → not supported;
- certainty: ``runB/final``'s p(true) gain over the control is about the 0.01 floor (its CI
  straddles it) → inconclusive;
- C3: ``runA/final`` raises entropy by 0.12 nats at layer 3 on blur, ``runB/final`` lowers it by
  0.12 nats at layer 4 on noise → supported;
- C4: first correct layers equal to the control's (within ±0.25 layers) → not supported;
- C5: vanilla codes as close to the base as the control's → supported; the BatchTopK SAE's
  inference L0 (14) is not within ±10% of k = 8 → inconclusive (SAE below the quality bar).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from hf_vitrobust import stats  # noqa: E402
from hf_vitrobust.analysis.sae.schema import header as sae_header  # noqa: E402
from hf_vitrobust.analysis.schema import header as analysis_header  # noqa: E402
from hf_vitrobust.evaluation.schema import header as results_header  # noqa: E402
from hf_vitrobust.roles import model_keys  # noqa: E402
from hf_vitrobust.runtime import header as stages_header  # noqa: E402

OUT = Path(__file__).resolve().parent / "study"
N = 400  # evaluation images
N_ANALYSIS = 300
BOOT = {"n_resamples": 1000, "seed": 0}
PATHS = ["/runs/runA/final", "/runs/runB/final", "/runs/clean", "/runs/random_lf"]
KEYS = ["base", *model_keys(PATHS)]  # base, runA/final, runB/final, clean, random_lf
A, B, CLEAN, RANDOM = KEYS[1:]
GROUPS = {
    "noise": ["gaussian_noise", "impulse_noise"],
    "blur": ["defocus_blur", "gaussian_blur"],
    "weather": ["fog", "brightness"],
    "digital": ["contrast", "pixelate"],
}
SEVERITIES = [2, 4]
COMMON = {"base_model": "/runs/base", "seed": 0, "max_steps": 200}
ROBUSTNESS = {
    "base": None,
    A: {**COMMON, "adversary": "worst_of_k", "num_views": 4, "train_corruptions": GROUPS["blur"]},
    B: {**COMMON, "adversary": "worst_of_k", "num_views": 4, "train_corruptions": GROUPS["noise"]},
    CLEAN: {**COMMON, "adversary": "none", "train_corruptions": []},
    RANDOM: {**COMMON, "adversary": "random_view", "train_corruptions": GROUPS["blur"]},
}
ROLE = {"base": "base", A: "adversarial", B: "adversarial", CLEAN: "clean_control"}
ROLE[RANDOM] = "random_view_control"
CONTROLS = {A: {"clean": CLEAN, "random_view": RANDOM}, B: {"clean": CLEAN, "random_view": None}}
#: (model, reference, reference_role) of every record, as the stages pair them.
PAIRS = [
    (A, "base", "base"),
    (A, CLEAN, "clean_control"),
    (A, RANDOM, "random_view_control"),
    (B, "base", "base"),
    (B, CLEAN, "clean_control"),
    (CLEAN, "base", "base"),
    (RANDOM, "base", "base"),
]

# Planted top-1 accuracy per model and group (clean images: "clean").
BASE_ACC = {"clean": 0.80, "noise": 0.45, "blur": 0.50, "weather": 0.60, "digital": 0.55}
ACC = {"base": BASE_ACC}
ACC[CLEAN] = {g: v + 0.02 for g, v in BASE_ACC.items()}  # trained longer: +2 pp everywhere
ACC[RANDOM] = {**ACC[CLEAN], "blur": ACC[CLEAN]["blur"] + 0.05}  # saw the blurs: +5 pp
ACC[A] = {
    **ACC[RANDOM],
    "blur": ACC[RANDOM]["blur"] + 0.06,
    "weather": ACC[CLEAN]["weather"] + 0.025,
}
ACC[B] = {**ACC[CLEAN], "noise": ACC[CLEAN]["noise"] + 0.12, "blur": ACC[CLEAN]["blur"] + 0.10}
# Planted p(true class) shift over the accuracy-driven value (certainty).
P_SHIFT = {"base": 0.0, CLEAN: 0.0, RANDOM: 0.0, A: 0.0, B: -0.1}


def _comparison(pair, metric, scope, result, **qualifiers):
    """A flat comparison record of `pair` = (model, reference, reference_role)."""
    return {
        "model": pair[0],
        "reference": pair[1],
        "reference_role": pair[2],
        "metric": metric,
        "scope": scope,
        **qualifiers,
        **result.to_dict(),
    }


def _evaluation(rng: np.random.Generator) -> dict:
    """Per image and cell: correct when a shared difficulty u < the model's accuracy (so models
    are paired: they differ only on images between their accuracies); p(true) rises with it."""
    cells = {"clean": ["clean"]}
    for group, names in GROUPS.items():
        cells[group] = [f"{c}@{s}" for c in names for s in SEVERITIES]
    u = {g: rng.uniform(size=(len(k), N)) for g, k in cells.items()}
    # Each model's own per-image wobble, so models also disagree on images far from the edge.
    wobble = {m: {g: rng.normal(0, 0.1, size=u[g].shape) for g in cells} for m in KEYS}
    correct = {m: {g: (u[g] + wobble[m][g] < ACC[m][g]).astype(float) for g in cells} for m in KEYS}
    p_true = {
        m: {
            g: np.clip(0.5 + 0.9 * (ACC[m][g] - u[g]) + P_SHIFT[m] + wobble[m][g], 0.0, 1.0)
            for g in cells
        }
        for m in KEYS
    }
    seen = {
        m: {g for g, names in GROUPS.items() if set(names) & set(r["train_corruptions"])}
        for m, r in ROBUSTNESS.items()
        if r
    }
    records = []
    for model, reference, role in PAIRS:
        scopes = [("clean", ["clean"], {})]
        mine = seen[model]
        if mine:
            scopes.append(("seen", sorted(mine), {}))
        scopes.append(("unseen", sorted(set(GROUPS) - mine), {}))
        scopes += [(f"group:{g}", [g], {"seen": g in mine}) for g in GROUPS]
        for scope, groups, qual in scopes:
            for metric, values in (("top_1_accuracy", correct), ("p_true", p_true)):
                a = np.concatenate([values[reference][g] for g in groups]).mean(axis=0)
                b = np.concatenate([values[model][g] for g in groups]).mean(axis=0)
                if metric == "top_1_accuracy" and scope == "clean":
                    result = stats.mcnemar_test(a, b, **BOOT)
                else:
                    result = stats.paired_bootstrap(a, b, **BOOT)
                records.append(
                    _comparison(
                        (model, reference, role),
                        metric,
                        scope,
                        result,
                        model_role=ROLE[model],
                        **qual,
                    )
                )

    def metric_block(values: np.ndarray) -> dict:
        low, high = stats.bootstrap_ci(values, **BOOT)
        return {"value": float(values.mean()), "ci_low": low, "ci_high": high, "n": N}

    per_family, transfer = [], []
    for model in (A, B):
        for family, groups in (
            ("seen", sorted(seen[model])),
            ("unseen", sorted(set(GROUPS) - seen[model])),
        ):
            per_image = {}
            for who in (model, "base"):
                acc = np.concatenate([correct[who][g] for g in groups]).mean(axis=0)
                pt = np.concatenate([p_true[who][g] for g in groups]).mean(axis=0)
                per_image[who] = {
                    "top_1_accuracy": acc,
                    "top_5_accuracy": np.minimum(1.0, acc + 0.3),
                    "top_10_accuracy": np.ones(N),  # 10 classes: every class is in the top 10
                    "p_true": pt,
                    "nll": -np.log(np.maximum(pt, 1e-3)),
                    "ece": np.abs(pt - acc),
                }
            block = {w: {m: metric_block(v) for m, v in d.items()} for w, d in per_image.items()}
            vs_base = {
                m: stats.paired_bootstrap(per_image["base"][m], v, **BOOT).to_dict()
                for m, v in per_image[model].items()
            }
            per_family.append(
                {
                    "model": model,
                    "family": family,
                    "corruptions": [],
                    "n_cells": 4 * len(groups),
                    "metrics": block[model],
                    "base_metrics": block["base"],
                    "vs_base": vs_base,
                }
            )
    rows = [A, B, CLEAN, RANDOM]
    columns = ["clean", *GROUPS]
    for model in rows:
        row = []
        for column in columns:
            scope = "clean" if column == "clean" else f"group:{column}"
            r = next(
                r
                for r in records
                if r["model"] == model
                and r["reference_role"] == "base"
                and r["metric"] == "top_1_accuracy"
                and r["scope"] == scope
            )
            row.append(
                {k: r[k] for k in ("estimate", "ci_low", "ci_high", "p_value", "test", "n")}
                | {"seen": bool(r.get("seen"))}
            )
        transfer.append(row)
    models = [
        {
            "key": "base",
            "name": "/runs/base",
            "label": "base",
            "role": "base",
            "robustness": None,
            "seen_corruptions": [],
            "train_corruptions": [],
        }
    ]
    for key, path in zip(KEYS[1:], PATHS):
        rb = ROBUSTNESS[key]
        models.append(
            {
                "key": key,
                "name": path,
                "label": key,
                "role": ROLE[key],
                "controls": CONTROLS.get(key),
                "robustness": rb,
                "seen_corruptions": rb["train_corruptions"],
                "train_corruptions": rb["train_corruptions"],
            }
        )
    group_of = {c: g for g, names in GROUPS.items() for c in names}
    return {
        **results_header(),
        "definitions": {
            "top_1_accuracy": "Top-1 accuracy: the true label is the largest logit.",
            "p_true": "Certainty: mean softmax probability of the true class.",
            "seen": "Seen: the model's training corruptions, on held-out images.",
            "ce": "CE: summed errors over severities relative to the reference.",
        },
        "corruption_note": "On-the-fly corruptions, not the published ImageNet-C JPEGs.",
        "dataset": {"name": "golden", "split": "test", "n_images": N, "num_classes": 10},
        "models": models,
        "grid": {
            "cells": [k for g in cells.values() for k in g],
            "corruptions": list(group_of),
            "severities": SEVERITIES,
            "clean": True,
            "groups": group_of,
        },
        "settings": {
            "n_resamples": BOOT["n_resamples"],
            "confidence": 0.95,
            "bootstrap_seed": 0,
            "ci_method": "BCa",
            "corruption_seed": 7,
            "top_k": {"top_1_accuracy": 1, "top_5_accuracy": 5, "top_10_accuracy": 10},
        },
        "cells": [],
        "per_group": [],
        "per_family": per_family,
        "corruption_error": {
            "reference": "base",
            "models": {
                m: {"mce": metric_block(_errors(correct, m) / _errors(correct, "base").mean())}
                for m in KEYS
            },
        },
        "transfer_matrix": {
            "metric": "top_1_accuracy",
            "definition": "Top-1 change vs base.",
            "rows": rows,
            "columns": columns,
            "cells": transfer,
        },
        "comparisons": records,
        "figures": ["transfer_matrix.png", "accuracy_top1.png", "p_true.png", "severity.png"],
    }


def _errors(correct: dict, model: str) -> np.ndarray:
    """Per-image error rate over every corrupted cell."""
    return 1 - np.concatenate([v for g, v in correct[model].items() if g != "clean"]).mean(axis=0)


LAYERS, HEADS = 4, 2


def _mean(value: float) -> dict:
    return {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}


CONDITIONS = ["clean", "blur", "noise"]
# Planted entropy shift (nats) of a model over the clean control: (condition, layer) -> shift.
ENTROPY_SHIFT = {A: {("blur", 3): 0.12}, B: {("noise", 4): -0.12}, CLEAN: {}, RANDOM: {}}


def _analysis(rng: np.random.Generator) -> dict:
    records = []
    for condition in CONDITIONS:
        # First correct layers: every model's equal to the base's but for rare ±1 moves.
        first = rng.integers(1, LAYERS + 1, size=N_ANALYSIS)
        firsts = {
            m: np.clip(first + rng.choice([-1, 0, 1], N_ANALYSIS, p=[0.1, 0.8, 0.1]), 1, LAYERS)
            for m in KEYS
        }
        image = rng.normal(0, 0.1, size=(N_ANALYSIS, 1, 1))  # shared by every cell of an image
        base = 1.5 + image + rng.normal(0, 0.05, size=(N_ANALYSIS, LAYERS, HEADS))
        entropy = {"base": base}
        for m in KEYS[1:]:
            shift = np.full((LAYERS, HEADS), 0.03)  # every fine-tune: trained longer
            for (cond, layer), value in ENTROPY_SHIFT[m].items():
                if cond == condition:
                    shift[layer - 1] += value
            entropy[m] = base + shift + rng.normal(0, 0.05, size=base.shape)
        for pair in PAIRS:
            model, reference, _ = pair
            for metric, offset in (("first_correct_layer", 0), ("first_always_correct_layer", 1)):
                a = np.minimum(firsts[reference] + offset, LAYERS).astype(float)
                b = np.minimum(firsts[model] + offset, LAYERS).astype(float)
                result = stats.wilcoxon_test(a, b, **BOOT)
                records.append(
                    _comparison(
                        pair,
                        metric,
                        condition,
                        result,
                        n_images=N_ANALYSIS,
                        model_mean=float(b.mean()),
                        reference_mean=float(a.mean()),
                    )
                )
            for metric in ("attention_entropy", "attention_entropy_cls"):
                a, b = entropy[reference], entropy[model]
                cells = [
                    (layer, None, a[:, layer - 1].mean(1), b[:, layer - 1].mean(1))
                    for layer in range(1, LAYERS + 1)
                ]
                cells += [
                    (layer, head, a[:, layer - 1, head], b[:, layer - 1, head])
                    for layer in range(1, LAYERS + 1)
                    for head in range(HEADS)
                ]
                for layer, head, x, y in cells:
                    result = stats.wilcoxon_test(x, y, **BOOT)
                    records.append(
                        _comparison(pair, metric, condition, result, layer=layer, head=head)
                    )
    right_a = rng.uniform(size=N_ANALYSIS) < 0.5
    right_b = right_a | (rng.uniform(size=N_ANALYSIS) < 0.12)
    gain = stats.mcnemar_test(right_a, right_b, **BOOT)
    lens_model = {
        "n_images": N_ANALYSIS,
        "accuracy": [],
        "true_class_probability": [],
        "first_correct_layer": {
            "n_images": N_ANALYSIS,
            "count": N_ANALYSIS - 15,  # correct at the last layer
            "never_correct": {"count": 9, "share": 9 / N_ANALYSIS},
        },
        "last_layer_max_abs_diff": 2e-7,
    }
    entropy_model = {"all_queries": [[1.5] * HEADS] * LAYERS, "cls_query": [[1.2] * HEADS] * LAYERS}
    fine_tuned = KEYS[1:]
    return {
        **analysis_header(),
        "definitions": {
            "first_correct_layer": "First layer l in 1..L whose lens top-1 is right.",
            "attention_entropy": "Mean over queries of -sum A ln A (nats).",
            "cka": "Linear CKA.",
            "patching": "Fraction of the gain recovered.",
        },
        "models": {
            k: {
                "name_or_path": p,
                "num_layers": LAYERS,
                "num_heads": HEADS,
                "role": ROLE[k],
            }
            for k, p in zip(KEYS, ["/runs/base", *PATHS])
        },
        "conditions": CONDITIONS,
        "statistics": {"n_resamples": BOOT["n_resamples"], "confidence": 0.95, "seed": 0},
        "data": {"max_examples": N_ANALYSIS, "dataset": "golden", "split": "test", "severity": 3},
        "logit_lens": {
            c: {
                "models": {k: lens_model for k in KEYS},
                "common": {
                    "n_images": N_ANALYSIS - 40,  # correct at the last layer for every model
                    "models": {k: {"first": _mean(2.4), "stable": _mean(3.2)} for k in KEYS},
                },
                "comparisons": {
                    k: {"accuracy": [], "true_class_probability": []} for k in fine_tuned
                },
            }
            for c in CONDITIONS
        },
        "attention_entropy": {c: {"models": {k: entropy_model for k in KEYS}} for c in CONDITIONS},
        "cka": {
            c: {k: {"cls": [1.0, 0.97, 0.93], "patch_mean": [1.0, 0.9, None]} for k in fine_tuned}
            for c in CONDITIONS
        },
        "patching": {
            "blur": {
                A: {
                    "gain": gain.to_dict(),
                    "accuracy_a": float(right_a.mean()),
                    "accuracy_b": float(right_b.mean()),
                    "per_layer": [
                        {"layer": 1, "recovered": 0.2, "ci_low": 0.0, "ci_high": 0.4},
                        {"layer": 2, "recovered": 0.7, "ci_low": 0.5, "ci_high": 0.9},
                    ],
                }
            }
        },
        "comparisons": records,
        "figures": [
            "first_correct_layer.png",
            "logit_lens.png",
            "attention_entropy.png",
            "cka.png",
            "patching.png",
        ],
    }


def _summary(values: np.ndarray) -> dict:
    """A distribution summary as the SAE stage writes it (median with a bootstrap CI)."""
    low, high = stats.bootstrap_ci(values, np.median, **BOOT)
    return {
        "n": int(values.size),
        "n_excluded": 0,
        "median": float(np.median(values)),
        "median_ci": [low, high],
        "mean": float(values.mean()),
    }


def _sae_entry(sae_id: str, sae_type: str, l0: float, k: int | None) -> dict:
    metrics = {"base": {"l0": l0, "explained_variance": 0.86, "dead_fraction": 0.01}}
    metrics.update({m: {"l0": l0 + 0.4, "explained_variance": 0.83} for m in KEYS[1:]})
    return {
        "sae_id": sae_id, "sae_type": sae_type, "label": sae_type, "layer": 2, "d_in": 32,
        "d_sae": 128, "metrics": metrics, "flagged": False, "flag_reason": None,
        "l0_vs_k": {"k": k, "l0_over_k": l0 / k if k else None, "l0_tolerance": 0.1,
                    "l0_within_tolerance": abs(l0 / k - 1) <= 0.1 if k else None},
    }  # fmt: skip


def _sae(rng: np.random.Generator) -> dict:
    # The BatchTopK SAE's inference L0 (14) is far from its k (8): below the quality bar.
    saes = [_sae_entry("layer2_standard", "standard", 11.0, None),
            _sae_entry("layer2_batchtopk", "batchtopk", 14.0, 8)]  # fmt: skip
    records, distributions = [], {}
    for sae in saes:
        for condition in ("clean", "blur"):
            for token in ("cls", "patches"):
                # Per image: each model's code cosine to the base's code (same SAE, same input).
                level = rng.uniform(0.6, 0.95, size=N_ANALYSIS)
                cos = {m: np.clip(level + rng.normal(0, 0.03, N_ANALYSIS), 0, 1) for m in KEYS[1:]}
                for model, code in cos.items():
                    cell = distributions.setdefault(model, {}).setdefault(sae["sae_id"], {})
                    tokens = cell.setdefault("conditions", {}).setdefault(condition, {})
                    tokens.setdefault("tokens", {})[token] = {
                        "code_cosine": _summary(code),
                        "code_cosine_different_image": _summary(code * 0.4),
                        "raw_cosine": _summary(np.clip(code + 0.03, 0, 1)),
                        "topk_jaccard": _summary(code * 0.8),
                        "l0_through_base": _summary(np.full(N_ANALYSIS, sae["metrics"][model]["l0"])),
                        "both_zero_tokens": 0,
                    }  # fmt: skip
                for pair in PAIRS:
                    model, reference, role = pair
                    if role == "base":
                        continue  # code_cosine_to_base is compared between a model and its control
                    result = stats.paired_bootstrap(cos[reference], cos[model], **BOOT)
                    records.append(
                        _comparison(pair, "code_cosine_to_base", condition, result,
                                    sae_id=sae["sae_id"], sae_type=sae["sae_type"],
                                    layer=sae["layer"], token=token, flagged=False,
                                    n_excluded_images=0)
                    )  # fmt: skip
    return {
        **sae_header(),
        "definitions": {"code_cosine": "Cosine between base-SAE codes, same input."},
        "base_model": "/runs/base",
        "finetuned_models": dict(zip(KEYS[1:], PATHS)),
        "models": {k: {"path": p, "role": ROLE[k]} for k, p in zip(KEYS, ["/runs/base", *PATHS])},
        "controls": {A: {"clean_control": CLEAN, "random_view_control": RANDOM},
                     B: {"clean_control": CLEAN, "random_view_control": None}},
        "layers": [2],
        "tokens": "cls+patches",
        "token_types": ["cls", "patches"],
        "eval": {"num_images": N_ANALYSIS, "dataset": "golden", "split": "test", "severity": 3},
        "training_data": {"training_tokens": 20000, "dataset": "golden", "split": "train"},
        "config": {"train_finetuned_saes": True, "seed_baseline": True, "seed": 0},
        "saes": saes,
        "comparisons": records,
        "distributions": distributions,
        "dictionary_matching": {"layer2_standard": {
            f"finetuned:{A}": _summary(rng.uniform(0.7, 0.9, 128)),
            "base_other_seed": _summary(rng.uniform(0.65, 0.85, 128)),
            "random_directions": _summary(rng.uniform(0.0, 0.2, 128)),
        }},
        "figures": ["sae_cosine_standard_runA-final.png", "sae_cosine_batchtopk_runA-final.png",
                    "sae_dictionary_matching.png"],
    }  # fmt: skip


def _stages() -> dict:
    def stage(name: str, status: str) -> dict:
        return {
            "name": name,
            "status": status,
            "seconds": 0.0 if status == "skipped" else 42.0,
            "earlier_seconds": 40.0 if status == "skipped" else None,
            "cpu_seconds": 80.0,
            "peak_memory_bytes": 2 * 1024**3,
            "commands": [f"python recipes/{name}.py"],
        }

    return {
        **stages_header(),
        "stages": [stage("base", "skipped"), stage("evaluate", "ran")],
        "study_seconds": 600.0,
        "peak_memory_bytes": 2 * 1024**3,
        "time_budget_seconds": 900.0,
        "memory_budget_bytes": 6 * 1024**3,
        "within_time_budget": True,
        "within_memory_budget": True,
        "cpu_count": 2,
        "threads": 2,
        "load_average_at_end": [1.5, 1.2, 1.0],
    }


def _png(path: Path) -> None:
    """One tiny real PNG (every figure name points at a copy of it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5, 1))
    ax.plot([0, 1, 2], [1, 0, 1])
    fig.savefig(path, dpi=40)
    plt.close(fig)


def _rounded(value):
    """Floats to 6 significant digits (keeps the files small; no verdict is that close)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main() -> None:
    rng = np.random.default_rng(20260607)
    shutil.rmtree(OUT, ignore_errors=True)
    outputs = {
        "eval/results.json": _evaluation(rng),
        "analysis/analysis.json": _analysis(rng),
        "sae/sae.json": _sae(rng),
        "stages.json": _stages(),
    }
    png = OUT / "figure.png"
    for rel, data in outputs.items():
        path = OUT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_rounded(data), allow_nan=False) + "\n")
        if not png.exists():
            _png(png)
        for name in data.get("figures", []):
            shutil.copy(png, path.parent / name)
    png.unlink()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
