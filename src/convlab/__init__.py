"""convlab: convolutional neural networks for image classification, from scratch to fine-tuned."""
from .version import __version__
from .errors import ConvlabError
from .data.registry import list_datasets, load_dataset
from .models.registry import create_model, list_models
from .run import Run, load_run
from .pipeline import train
from .finetune import finetune

__all__ = ["ConvlabError", "Run", "create_model", "finetune", "list_datasets", "list_models", "load_dataset",
           "load_run", "train", "__version__"]
