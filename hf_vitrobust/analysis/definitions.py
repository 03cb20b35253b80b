"""The exact definition of every number in analysis.json, written into the file beside them.

docs/definitions.md says the same in more words; change both together.
"""

from __future__ import annotations

from hf_vitrobust.stats import BCA_MAX_N

__all__ = ["CORRUPTION_NOTE", "DEFINITIONS"]

DEFINITIONS = {
    "logit_lens": "logits_l = classifier(final_layernorm(h_l[:, 0])) for hidden states "
    "l = 0..L (0 = embeddings, L = last block before the final layernorm); at l = L it is "
    "the model's logits (last_layer_max_abs_diff).",
    "first_correct_layer": "Counted over layers l = 1..L (the first block's output on; l = 0, "
    "the CLS embedding, is the same for every image and predicts one constant class), over the "
    "images correct at the last layer (count given): 'first' (first_correct_layer) = first l "
    "whose top-1 is correct; 'stable' (first_always_correct_layer) = earliest l from which "
    "every later layer is correct; never_correct = share of all images correct at no l = 1..L. "
    "Models are compared side by side on the same images: those both (or, in the figure, all) "
    "models classify correctly at the last layer.",
    "attention_entropy": "Per layer and head, mean over queries of -sum_j A_ij ln A_ij "
    "(nats, fp32); 'cls_query' = the CLS query row alone. The per-layer value is the mean over "
    "heads of each image's entropies.",
    "comparisons": "Each record: model minus reference (the base, or the adversarial model's "
    "matched clean / random-view control) on the same images: mean per-image difference, "
    f"bootstrap CI over images (BCa up to {BCA_MAX_N} images, else percentile; seeded), and "
    "the raw "
    "(uncorrected) two-sided Wilcoxon signed-rank p-value of the per-image differences. First "
    "correct layers are paired over the images both models classify correctly at the last "
    "layer (n_images); attention entropy per layer (head null: mean over heads) and per "
    "layer x head, layers numbered 1..L, heads 0..H-1.",
    "rollout": "Heads averaged, A~ = 0.5 A + 0.5 I, rows normalised, R <- A~ R over layers; "
    "map = R[CLS, patches].",
    "grad_cam": "At the input of the last block's layernorm_before, CLS dropped, channels "
    "weighted by the token-mean gradient of the true-class logit, ReLU.",
    "cka": "Linear CKA ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), base (X) vs "
    "fine-tuned (Y), exact over all images from streamed float64 sums (summed exactly across "
    "processes); on the CLS token and on the mean of the patch tokens of every hidden state "
    "0..L.",
    "patching": "Base model run with hidden state l (0 = embeddings, L = last block) replaced "
    "by the fine-tuned model's on the same input; recovered = (acc(patched) - acc(base)) / "
    "(acc(fine-tuned) - acc(base)). CI: percentile bootstrap over images of the ratio of means "
    "in each resample (same images in all three); resamples where the fine-tuned model gains "
    "nothing have no ratio and are left out (zero_gain_resamples counts them).",
    "statistics": "95% bootstrap CIs over images (seeded, >= 1000 resamples); McNemar for "
    "accuracy, paired bootstrap for true-class probability, Wilcoxon signed-rank for the "
    "paired comparisons.",
}

CORRUPTION_NOTE = (
    "Corruptions are generated on the fly (hf_vitrobust.corruptions), not the published "
    "ImageNet-C JPEGs. In a group's condition each image gets one corruption of the group, drawn "
    "from (seed, example id, group) (analysis.conditions.group_corruption), corrupted by "
    "corruptions.corrupt_examples with seeding.image_seed(seed, example id, corruption, "
    "severity): the same pixels as the evaluation's cell for that image."
)
