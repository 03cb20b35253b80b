"""sae-lens, imported on first use: importing it takes ~8 s and warns (transformer_lens), so it is
the one import of the SAE stage that stays inside functions."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType


def import_sae_lens(module: str = "sae_lens") -> ModuleType:
    """``sae_lens`` (or one of its submodules), with transformer_lens' DeprecationWarning muted."""
    if module != "sae_lens" and not module.startswith("sae_lens."):
        raise ValueError(f"{module!r} is not sae_lens or one of its submodules.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(module)


__all__ = ["import_sae_lens"]
