"""Datasets: the registry, file formats and in-memory arrays."""
from .arrays import ImageArrays, Splits
from .registry import DATASETS, list_datasets, load_dataset, parse_data_name, register_dataset

# Importing the built-in loaders registers them; this order (the default first) is the listing order.
from . import digits, sources, imagefolder  # noqa: E402,F401  isort:skip
from . import csv_table  # noqa: E402,F401  isort:skip

__all__ = ["ImageArrays", "Splits", "DATASETS", "list_datasets", "load_dataset", "parse_data_name",
           "register_dataset"]
