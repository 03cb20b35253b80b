"""The stages of the offline study, each the recipe a user would run, with the sizes file's
flags for that stage (`config.read_sizes`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_vitrobust.demo.config import RECIPES, TINY_RECIPES, DemoArguments, recipe_flags
from hf_vitrobust.hub import write_robust_model_card, write_sae_card
from hf_vitrobust.report import build_report

# Figures of the evaluation stage that go into the fine-tuned models' cards.
CARD_FIGURES = ("accuracy_topk_by_group.png", "p_true_by_group.png", "transfer_matrix.png")


@dataclass
class Stage:
    """A named step: commands to run and the files whose presence means it is done."""

    name: str
    description: str
    outputs: list[Path]
    commands: list[list[str]] = field(default_factory=list)
    # In-process work (cheap stages: model cards, the report), run after `commands`.
    function: Callable[[], Any] | None = None
    # Stages whose failure makes this one pointless (it is then reported as blocked).
    requires: tuple[str, ...] = ()
    # Run even when a required stage failed (the report says what is missing).
    always: bool = False
    # Rerun when one of these ran in this invocation (its inputs changed), besides `requires`.
    refresh_after: tuple[str, ...] = ()
    # Torch threads for this stage (None: the demo's choice). Training stages use one: their
    # DataLoader worker prepares the next batch on the other core.
    threads: int | None = None


def _recipes() -> Path:
    """The recipes folder, relative when run from the repository (commands read as typed)."""
    try:
        return RECIPES.relative_to(Path.cwd().resolve())
    except ValueError:
        return RECIPES


def _py(script: str, recipe: str, *args: Any) -> list[str]:
    """`python recipes/<script> recipes/fashion-mnist-tiny/<recipe>.yaml <flags>`."""
    yaml_path = _recipes() / "fashion-mnist-tiny" / f"{recipe}.yaml"
    return [sys.executable, str(_recipes() / script), str(yaml_path), *(str(a) for a in args)]


def _model_done(folder: Path) -> list[Path]:
    return [folder / "config.json", folder / "model.safetensors"]


def _comparison_stage(
    name: str,
    script: str,
    description: str,
    output: Path,
    wiring: list[Any],
    sizes: dict[str, Any],
    requires: tuple[str, ...],
) -> Stage:
    """A stage that compares the base with the fine-tunes; its recipe is `<name>.yaml`."""
    command = _py(script, name, *wiring, "--output_dir", output.parent, *recipe_flags(sizes[name]))
    return Stage(name, description, [output], [command], requires=requires)


def training_description(recipe: str, sizes: dict[str, Any]) -> str:
    """What a fine-tune recipe trains, for the demo's log (the comparison stages read each
    model's role from its `config.robustness`, never from this)."""
    spec = yaml.safe_load((TINY_RECIPES / f"{recipe}.yaml").read_text()) or {}
    adversary = str(sizes["finetune"].get("adversary", spec.get("adversary", "none")))
    corruptions = ", ".join(map(str, spec.get("corruptions") or [])) or "clean images"
    if adversary == "none" and not spec.get("corruptions"):
        return "clean control: the base fine-tuned on clean images (same data, steps, seed)"
    if adversary == "random_view":
        return f"random-view control on {corruptions}: one random view per image, no selection"
    if adversary == "worst_of_k":
        k = sizes["finetune"].get("num_views", spec.get("num_views", "k"))
        return f"worst-of-{k} fine-tune of the base on {corruptions}"
    return f"{adversary} fine-tune of the base on {corruptions}"


def _finetune_stage(name: str, folder: Path, base: Path, seed: int, sizes: dict) -> Stage:
    """A fine-tune (adversarial or control) of the base with the recipe `<name>.yaml`; every
    one gets the same `finetune` flags, so a control shares steps, batch and seed."""
    wiring = ["--model_name_or_path", base, "--output_dir", folder, "--seed", seed]
    return Stage(
        f"finetune_{name}",
        training_description(name, sizes),
        _model_done(folder),
        [_py("finetune.py", name, *wiring, *recipe_flags(sizes["finetune"]))],
        requires=("base",),
        threads=1,
    )


def build_stages(args: DemoArguments, sizes: dict[str, Any]) -> list[Stage]:
    """The stages of the offline study, each with the command a user would type.

    Listed longest first where they may run at once (the scheduler starts them in this order):
    adversarial fine-tunes before controls, then the comparison stages.
    """
    out = Path(args.output_dir)
    base = out / "base"
    recipes = [*sizes["finetunes"], *sizes.get("controls", [])]
    finetuned = {name: out / name for name in recipes}
    ft_stages = tuple(f"finetune_{name}" for name in finetuned)
    models = ("base", *ft_stages)
    compared = ["--base_model", base, "--finetuned_models", *finetuned.values()]
    compared += ["--seed", args.seed]
    base_flags = ["--output_dir", base, "--seed", args.seed, "--dataloader_num_workers", 1]
    return [
        Stage(
            "base",
            "train the base tiny ViT on clean Fashion-MNIST",
            _model_done(base),
            [_py("finetune.py", "base", *base_flags, *recipe_flags(sizes["base"]))],
            threads=1,
        ),
        *[
            _finetune_stage(name, folder, base, args.seed, sizes)
            for name, folder in finetuned.items()
        ],
        _comparison_stage(
            "sae",
            "train_sae.py",
            "vanilla and BatchTopK SAEs on the base model, compared across models",
            out / "sae" / "sae.json",
            # Activations are computed once per model and layer and reused by both SAE types
            # (and by a rerun).
            [*compared, "--cache_dir", out / "sae" / "activation_cache"],
            sizes,
            models,
        ),
        _comparison_stage(
            "evaluate",
            "evaluate.py",
            "all models on every corruption group (held-out test images, fresh corruption seeds)",
            out / "eval" / "results.json",
            compared,
            sizes,
            models,
        ),
        _comparison_stage(
            "analyze",
            "analyze.py",
            "logit lens, attention entropy, CKA and activation patching",
            out / "analysis" / "analysis.json",
            compared,
            sizes,
            models,
        ),
        Stage(
            "cards",
            "model cards (with evaluation results) and SAE folders ready to push",
            [folder / "README.md" for folder in finetuned.values()],
            function=lambda: write_cards(out, list(finetuned.values())),
            requires=ft_stages,
            refresh_after=("evaluate", "sae"),
        ),
        Stage(
            "report",
            "the report (HTML and Markdown)",
            [out / "report" / "index.html", out / "report" / "report.md"],
            function=lambda: build_report(out, out / "report").html,
            requires=(*models, "evaluate", "analyze", "sae", "cards"),
            always=True,
        ),
    ]


def write_cards(out: Path, finetuned: list[Path]) -> list[Path]:
    """Each fine-tuned model's card (with its evaluation results and figures) and the SAE
    folder's card, written locally so `recipes/push.py` can push them as they are."""
    results = out / "eval" / "results.json"
    figures = [out / "eval" / name for name in CARD_FIGURES if (out / "eval" / name).is_file()]
    written = [
        write_robust_model_card(
            folder, results=results if results.is_file() else None, figures=figures or None
        )
        for folder in finetuned
    ]
    sae_dir = out / "sae" / "saes"
    if sae_dir.is_dir():
        written.append(write_sae_card(sae_dir))
    for path in written:
        print(f"  wrote {path}", flush=True)
    return written


__all__ = ["Stage", "build_stages", "training_description", "write_cards"]
