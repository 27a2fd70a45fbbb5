"""Models: the registry of presets and torchvision classifiers."""
from .registry import ModelEntry, count_parameters, create_model, find_model, list_models, register_model

__all__ = ["ModelEntry", "count_parameters", "create_model", "find_model", "list_models", "register_model"]
