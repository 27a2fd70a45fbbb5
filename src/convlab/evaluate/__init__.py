"""Evaluation: classification metrics and the run's plots."""
from .metrics import classification_metrics

__all__ = ["classification_metrics"]
