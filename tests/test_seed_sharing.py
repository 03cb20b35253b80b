"""The same corrupted test image in every comparison stage.

Evaluation, analysis and the SAE stage must feed a model byte-identical pixels for the same
(seed, example_id, corruption, severity), so their per-image results can be joined by
``example_id``. Each stage is run through its own code path on the same images and the model's
inputs are recorded by a forward pre-hook.
"""

from __future__ import annotations

import numpy as np
import torch

from hf_vitrobust.analysis.conditions import DatasetBatches
from hf_vitrobust.analysis.sae import SAEStudyArguments
from hf_vitrobust.analysis.sae.heldout import compared_batches
from hf_vitrobust.configs import DataArguments
from hf_vitrobust.data import ProcessorSpec, load_dataset_split
from hf_vitrobust.evaluation import Cell, EvalModel, run_grid

SEED, SEVERITY, N = 5, 4, 12
CORRUPTION, GROUP = "fog", "weather"  # the weather group of corruptions=[fog] holds fog alone


def _record_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        (args[0] if args else kwargs["pixel_values"]).detach().clone()
    ), with_kwargs=True)  # fmt: skip
    return seen


def _pixels_uint8(pixel_values: torch.Tensor, spec: ProcessorSpec) -> np.ndarray:
    """Normalised model inputs back to the uint8 images they encode, [B, H, W, 3]."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x01 = pixel_values.double() * std + mean
    return np.rint(x01.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def test_evaluation_analysis_and_sae_see_the_same_pixels(fashion_mnist_dir, tiny_model):
    model, processor = tiny_model
    data_args = DataArguments(dataset_name="fashion_mnist", eval_split="test", max_eval_examples=N)
    dataset = load_dataset_split(data_args, "eval")

    seen = _record_inputs(model)
    run_grid(
        [EvalModel("tiny", model, processor)], dataset, [Cell(CORRUPTION, SEVERITY)],
        batch_size=5, seed=SEED, device="cpu", progress=False,
    )  # fmt: skip
    evaluation = torch.cat(seen)

    seen.clear()
    batches = DatasetBatches(
        dataset, processor, corruptions=[CORRUPTION], severity=SEVERITY, seed=SEED, batch_size=7
    )
    for batch in batches.images(GROUP):
        model(batch["pixel_values"])
    analysis = torch.cat(seen)

    spec = ProcessorSpec.from_processor(processor)
    sae_args = SAEStudyArguments(
        base_model="b", corruptions=[CORRUPTION], severities=[SEVERITY], seed=SEED, batch_size=5
    )
    sae_batches = compared_batches(dataset, processor, sae_args, max_bad_fraction=0.0)
    sae = torch.cat([b["pixel_values"] for b in sae_batches.images(GROUP, keep_images=False)])

    assert evaluation.shape == analysis.shape == sae.shape == (N, 3, 28, 28)
    # Evaluation normalises on the model's device (one uint8 transfer per batch), the others in
    # numpy: the floats may differ in the last bit, the uint8 images they encode may not.
    as_uint8 = [_pixels_uint8(x, spec) for x in (evaluation, analysis, sae)]
    assert np.array_equal(as_uint8[0], as_uint8[1]) and np.array_equal(as_uint8[0], as_uint8[2])
    clean = torch.cat([b["pixel_values"] for b in sae_batches.images("clean", keep_images=False)])
    # The corruption did something.
    assert not np.array_equal(_pixels_uint8(clean, spec), as_uint8[2])
    # A different seed is a different draw of the same corruption.
    other_args = SAEStudyArguments(
        base_model="b", corruptions=[CORRUPTION], severities=[SEVERITY], seed=SEED + 1
    )
    other = compared_batches(dataset, processor, other_args, max_bad_fraction=0.0)
    other_pixels = torch.cat([b["pixel_values"] for b in other.images(GROUP, keep_images=False)])
    assert not np.array_equal(other_pixels.numpy(), sae.numpy())
