"""Model families behind one interface (:mod:`bse_predict.families.base`).

Importing this package imports every module in it, and each module registers
its family with ``@register``: adding a family is one new module (and one
config block in ``models.families``). A family's heavy library (xgboost,
hmmlearn, tensorflow, torch) is imported inside its methods, so listing the
families costs nothing.
"""

import importlib
import pkgutil

from bse_predict.families.base import BasePredictor, get_model, list_models, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "onnx_limits", "torch_networks"}:  # torch_networks imports torch
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BasePredictor", "get_model", "list_models", "register"]
