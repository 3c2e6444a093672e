"""Classifiers that own their preprocessing, the model registry, architectures, training."""

from foolkit.models.classifier import Classifier
from foolkit.models.registry import list_models, load_model, new_model, save_model

__all__ = ["Classifier", "list_models", "load_model", "new_model", "save_model"]
