"""Datasets: the registry, file formats and in-memory arrays."""
from .arrays import ImageArrays, Splits
from .registry import DATASETS, list_datasets, load_dataset, parse_data_name, register_dataset

__all__ = ["ImageArrays", "Splits", "DATASETS", "list_datasets", "load_dataset", "parse_data_name",
           "register_dataset"]
