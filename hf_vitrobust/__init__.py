"""hf_vitrobust: adversarial fine-tuning of ViTs against image corruptions, and what it changes inside."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, by the package that defines it. Every subpackage import runs this file first,
# so these load on first use (PEP 562): `import hf_vitrobust.corruptions` does not pay for
# transformers and the Trainer.
_LAZY = {
    "AdversarialTrainer": "hf_vitrobust.training",
    "AdversarialTrainingArguments": "hf_vitrobust.training",
    "CORRUPTIONS": "hf_vitrobust.corruptions",
    "FAMILIES": "hf_vitrobust.corruptions",
    "corrupt": "hf_vitrobust.corruptions",
    "corrupt_examples": "hf_vitrobust.corruptions",
    "load_image_dataset": "hf_vitrobust.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_vitrobust' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
