"""Train vanilla and BatchTopK SAEs (sae-lens) on a base ViT and compare base vs fine-tuned.

    python recipes/train_sae.py recipes/fashion-mnist-tiny/sae.yaml \
        --base_model outputs/demo/base --finetuned_models outputs/demo/low_frequency
    accelerate launch recipes/train_sae.py recipes/vit-base-imagenet/sae.yaml   # many GPUs

Under `accelerate launch` every process makes activations and compares its share of the held-out
images; the SAEs are trained on the main process, which writes the outputs. Writes `sae.json`,
`saes/<sae_id>/` (sae-lens format, ready for `upload_saes_to_huggingface`), `saes_finetuned/`,
`saes_seed_baseline/` and PNG figures into `--output_dir`.
"""

from __future__ import annotations

import json
import sys

from hf_vitrobust.analysis.sae import SAEStudyArguments, run_sae_study
from hf_vitrobust.configs import DataArguments, ModelArguments, parse_recipe


def main(argv: list[str] | None = None) -> dict:
    # ModelArguments say how to load the models (attention implementation, remote code); which
    # models is base_model and finetuned_models.
    model_args, data_args, sae_args = parse_recipe(
        (ModelArguments, DataArguments, SAEStudyArguments), argv
    )
    result = run_sae_study(model_args, data_args, sae_args)
    if not result:  # not the main process: it wrote nothing
        return result
    quality = {
        s["sae_id"]: {
            "explained_variance": round(s["metrics"]["base"]["explained_variance"], 3),
            "l0": round(s["metrics"]["base"]["l0"], 1),
            "k": s["l0_vs_k"]["k"],
            "flagged": s["flagged"],
        }
        for s in result["saes"]
    }
    print(json.dumps(quality, indent=2))
    print(f"wrote {sae_args.output_dir}/sae.json")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
