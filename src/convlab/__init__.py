"""convlab: convolutional neural networks for image classification, from scratch to fine-tuned."""
from .version import __version__
from .errors import ConvlabError
from .finetune import finetune  # bound now: the name is also its module's, which a later import must not shadow

__all__ = ["ConvlabError", "Run", "attribute", "create_model", "finetune", "list_datasets", "list_models",
           "load_dataset", "load_run", "train", "__version__"]

# name -> the module that defines it: imported on first use, so `convlab --help` (which imports this
# package) starts without torch, and `convlab predict` never loads the training pipeline.
_LAZY = {"list_datasets": ".data.registry", "load_dataset": ".data.registry", "create_model": ".models.registry",
         "list_models": ".models.registry", "Run": ".run", "load_run": ".tasks", "train": ".pipeline",
         "attribute": ".insight.attribution"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'convlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)  # lazy: start-up time
    globals()[name] = value
    return value
