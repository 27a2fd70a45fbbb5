"""convlab: convolutional neural networks for image classification, from scratch to fine-tuned."""
from .version import __version__
from .errors import ConvlabError
from .data.registry import list_datasets, load_dataset
from .models.registry import create_model, list_models
from .run import Run, load_run
from .finetune import finetune  # bound now: the name is also its module's, which a later import must not shadow

__all__ = ["ConvlabError", "Run", "attribute", "create_model", "finetune", "list_datasets", "list_models",
           "load_dataset", "load_run", "train", "__version__"]


def __getattr__(name: str):
    """`train` and `attribute` import their machinery on first use, so `convlab predict` and `eval` never
    load the training pipeline or the attribution methods."""
    if name == "train":
        from .pipeline import train  # lazy: start-up time

        globals()["train"] = train
        return train
    if name == "attribute":  # convlab.attribute(run, images, method="ig,lrp"); the run layer sits below insight
        from .insight.attribution import attribute  # lazy: start-up time

        globals()["attribute"] = attribute
        return attribute
    raise AttributeError(f"module 'convlab' has no attribute {name!r}")
