"""Model sets by name: what ``python -m backend serve --models NAME`` and the demo load.

``builtin`` (the default) is dsquare's own small models, shipped in the repo and run on CPU with no
configuration; ``svd-sv3d`` is Stable Video Diffusion + SV3D_p from local checkpoints or the
Hugging Face cache. Imports are lazy so that listing names costs nothing.
"""

from __future__ import annotations

import importlib

from backend.errors import InvalidInput
from backend.models.base import ModelSet

# name -> "module:function"; each function takes (device: str, checkpoints: str | None, **options)
MODEL_SETS = {
    "builtin": "backend.models.builtin:load_builtin",
    "svd-sv3d": "backend.models.stability:load_svd_sv3d",
}


def load_model_set(name: str = "builtin", device: str = "cpu", checkpoints: str | None = None, **options) -> ModelSet:
    """Load a model set by name. Raises InvalidInput('models', ...) for unknown names."""
    if name not in MODEL_SETS:
        raise InvalidInput("models", f"unknown model set {name!r}; available: {sorted(MODEL_SETS)}")
    module_name, func_name = MODEL_SETS[name].split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    return loader(device=device, checkpoints=checkpoints, **options)
