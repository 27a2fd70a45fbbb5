"""Evaluation: inference over arrays, classification metrics and the run's plots."""
from .inference import predict_proba
from .metrics import classification_metrics

__all__ = ["predict_proba", "classification_metrics"]
