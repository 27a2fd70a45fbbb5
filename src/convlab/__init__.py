"""convlab: convolutional neural networks for image classification, from scratch to fine-tuned."""
__version__ = "0.1.0"

from .errors import ConvlabError  # noqa: E402
from .models.registry import create_model, list_models  # noqa: E402
from .run import Run, load_run  # noqa: E402
from .session import train  # noqa: E402
from .finetune import finetune  # noqa: E402
from .data.registry import list_datasets, load_dataset  # noqa: E402

__all__ = ["ConvlabError", "Run", "create_model", "finetune", "list_datasets", "list_models", "load_dataset",
           "load_run", "train", "__version__"]
