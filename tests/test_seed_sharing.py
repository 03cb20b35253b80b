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
from hf_vitrobust.analysis.sae.heldout import condition_pixels, load_heldout_images
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
    images, ids = load_heldout_images(data_args, N, spec)
    sae = condition_pixels(images, ids, CORRUPTION, SEVERITY, SEED, spec)

    assert evaluation.shape == analysis.shape == sae.shape == (N, 3, 28, 28)
    # Evaluation normalises on the model's device (one uint8 transfer per batch), the others in
    # numpy: the floats may differ in the last bit, the uint8 images they encode may not.
    as_uint8 = [_pixels_uint8(x, spec) for x in (evaluation, analysis, sae)]
    assert np.array_equal(as_uint8[0], as_uint8[1]) and np.array_equal(as_uint8[0], as_uint8[2])
    clean = _pixels_uint8(spec.to_tensor(list(images)), spec)
    assert not np.array_equal(clean, as_uint8[2])  # the corruption did something
    # A different seed is a different draw of the same corruption.
    other = condition_pixels(images, ids, CORRUPTION, SEVERITY, SEED + 1, spec)
    assert not np.array_equal(other.numpy(), sae.numpy())
