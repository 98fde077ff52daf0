"""Whole Keras models in torch: :func:`load_model` reads a Keras model file (every Keras generation since
2.0) into a :class:`KerasModel`, a ``torch.nn.Module`` that runs the model with Keras's semantics, masks
included. See ``docs/keras_models.md`` for the layers and the semantics notes."""

from . import (  # noqa: F401  (importing them registers the layers)
    layers_attention,
    layers_core,
    layers_merge,
    layers_noise,
    layers_pooling,
    layers_recurrent,
    layers_shape,
)
from .base import REGISTRY, KerasLayer, KerasModelError, LayerSpec
from .loading import load_model
from .model import KerasModel

__all__ = ["REGISTRY", "KerasLayer", "KerasModel", "KerasModelError", "LayerSpec", "load_model"]
