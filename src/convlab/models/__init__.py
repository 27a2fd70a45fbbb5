"""Models: the registry, and the modules that register into it (presets, torchvision, timm)."""
from .registry import ModelEntry, count_parameters, create_model, find_model, list_models, register_model
from . import presets, timm_models, torchvision_models  # noqa: E402,F401  (they register; timm is imported lazily)

__all__ = ["ModelEntry", "count_parameters", "create_model", "find_model", "list_models", "register_model"]
