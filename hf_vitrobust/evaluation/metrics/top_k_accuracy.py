"""Top-k accuracy as an `evaluate` metric, shipped inside the package and loaded by path.

    import evaluate
    from hf_vitrobust.evaluation import TOP_K_METRIC_PATH
    metric = evaluate.load(str(TOP_K_METRIC_PATH))
    metric.compute(predictions=logits, references=labels, k=[1, 5])

Definition (docs/definitions.md, "Accuracy and certainty"): an image is correct at k when its true
label is among the k largest logits, k capped at the number of classes. Ties count in the image's
favour: the true label's rank is the number of classes whose logit is strictly larger.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Top-k accuracy: the fraction of examples whose true label is among the k largest logits "
    "(k capped at the number of classes; ties in favour of the true label)."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: logits (or scores), one list of num_classes floats per example.
    references: the true label index of each example.
    k: an int or a list of ints (default [1, 5, 10]); each is capped at num_classes.
Returns:
    {"top_{k}_accuracy": float, ...} for each requested k (the requested k names the key),
    and "k_effective": {requested k: capped k}.
Examples:
    >>> metric = evaluate.load("hf_vitrobust/evaluation/metrics/top_k_accuracy.py")
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0]], references=[0], k=[1, 2])
    {'top_1_accuracy': 0.0, 'top_2_accuracy': 1.0, 'k_effective': {1: 1, 2: 2}}
"""


def true_label_rank(logits, references):
    """Rank of the true label per example: the number of classes with a strictly larger logit."""
    logits = np.asarray(logits, dtype=np.float64)
    references = np.asarray(references, dtype=np.int64)
    if logits.ndim != 2:
        raise ValueError(f"predictions must be [examples, classes] logits; got {logits.shape}.")
    if references.shape != (logits.shape[0],):
        raise ValueError(
            f"references must hold one label per example ({logits.shape[0]}); "
            f"got shape {references.shape}."
        )
    if references.size and (references.min() < 0 or references.max() >= logits.shape[1]):
        raise ValueError(f"references must be label indices in [0, {logits.shape[1] - 1}].")
    true = logits[np.arange(logits.shape[0]), references]
    return (logits > true[:, None]).sum(axis=1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy over logits."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k=(1, 5, 10)):
        ks = [k] if isinstance(k, int) else list(k)
        logits = np.asarray(predictions, dtype=np.float64)
        ranks = true_label_rank(logits, references)
        out = {}
        k_effective = {}
        for requested in ks:
            k_eff = min(int(requested), logits.shape[1])
            if k_eff < 1:
                raise ValueError(f"k must be >= 1; got {requested}.")
            out[f"top_{requested}_accuracy"] = float(np.mean(ranks < k_eff))
            k_effective[int(requested)] = k_eff
        out["k_effective"] = k_effective
        return out
