"""Publishing: model cards with evaluation results, and pushing checkpoints and SAEs to the Hub.

- `cards.py`: the robust-model card of a checkpoint folder (`write_robust_model_card`, used by
  the fine-tuning recipe, the demo and `push_artifacts`) and the card of a folder of SAEs; the
  templates are `model_cards/*.md` (the one copy; `templates/` here links to it and ships it as
  package data).
- `model_index.py`: evaluation results as `EvalResult`-ready model-index rows
  (`eval_results_for_model` reads `results.json` through `evaluation.schema.read_results`).
- `push.py`: one commit per artifact set; the local folder is never modified and the token is
  never written.
"""

from hf_vitrobust.hub.cards import (
    CARD_MARKER,
    REPO_ID_PLACEHOLDER,
    SAE_LENS_LIBRARY_NAME,
    find_saes,
    render_robust_model_card,
    render_sae_card,
    template_path,
    write_robust_model_card,
    write_sae_card,
)
from hf_vitrobust.hub.common import DATASET_HUB_IDS, CardInputError
from hf_vitrobust.hub.model_index import (
    eval_result_objects,
    eval_results_for_model,
    eval_results_from_rows,
    load_results,
)
from hf_vitrobust.hub.push import (
    CHECKPOINT_FILES,
    SAE_FILES,
    PushError,
    push_artifacts,
    push_robust_model,
    push_saes,
)

__all__ = [
    "CARD_MARKER",
    "CHECKPOINT_FILES",
    "DATASET_HUB_IDS",
    "REPO_ID_PLACEHOLDER",
    "SAE_FILES",
    "SAE_LENS_LIBRARY_NAME",
    "CardInputError",
    "PushError",
    "eval_result_objects",
    "eval_results_for_model",
    "eval_results_from_rows",
    "find_saes",
    "load_results",
    "push_artifacts",
    "push_robust_model",
    "push_saes",
    "render_robust_model_card",
    "render_sae_card",
    "template_path",
    "write_robust_model_card",
    "write_sae_card",
]
