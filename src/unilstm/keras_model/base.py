"""What every Keras layer run in torch by :func:`unilstm.keras.load_model` is: a :class:`KerasLayer`.

A layer is made from a :class:`LayerSpec` (its Keras class name, config, the shapes of the tensors of its
first call, and which Keras generation wrote it). Construction checks the config and computes
:meth:`KerasLayer.weight_shapes` (what ``get_weights()`` would return in Keras, in that order) **without
allocating anything big**: the loader compares those shapes with the file's before any array is read or any
parameter created; :meth:`KerasLayer.load` then creates the parameters from the checked arrays.

Tensors are Keras-shaped and batch-first: ``(B, T, F)`` for sequences, ``(B, F)`` for vectors; a mask is a
bool tensor ``(B, T)`` (True = step present) or None. A layer called on one tensor receives a Tensor and a
mask; a layer called on a list (merges, Attention) receives a list of tensors and a list of masks (None
where a tensor has none). ``self.training`` is Keras's ``training`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ..formats.keras_files import KerasFileError

#: A Keras shape, batch first; None for a size the model leaves open (the batch, a variable time axis).
Shape = tuple[int | None, ...]
#: What a layer is called on or returns: one tensor, or a list of them.
Tensors = Tensor | list[Tensor]
#: Masks in the same structure: None, one mask, or a list of masks (None where a tensor has none).
Masks = Tensor | None | list[Tensor | None]


class KerasModelError(KerasFileError):
    """A Keras model this library cannot run: an unsupported layer (named by class, name and place) or a
    config that does not describe a valid layer. A :class:`KerasFileError` (and so a ``ValueError``)."""


@dataclass(frozen=True)
class LayerSpec:
    """One Keras layer as a model file describes it.

    Attributes:
        name: the layer's Keras name (``"dense_1"``).
        class_name: its Keras class (``"Dense"``); Keras 2's ``CuDNNLSTM`` keeps its own name.
        config: its config dict (the ``"config"`` member of the serialized layer).
        input_shapes: the shape of each tensor of the layer's first call (one entry for a layer called on
            one tensor; one per list element for merges and Attention).
        keras2: True when the file was written by Keras < 3 (tf.keras / tf-keras 2.x, Keras 2.0-2.2): the
            layer keeps Keras 2's semantics where they differ from Keras 3's (``hard_sigmoid``, mask rules).
        where: the layer's place for messages: ``"Dense 'dense_1' (layer 3 of model 'sequential')"``.
        custom_objects: the user's ``custom_objects`` (class name -> torch module factory).
    """

    name: str
    class_name: str
    config: Mapping[str, Any]
    input_shapes: tuple[Shape, ...]
    keras2: bool = False
    where: str = ""
    custom_objects: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> Shape:
        """The shape of the only input; an error for a layer called on several tensors."""
        if len(self.input_shapes) != 1:
            raise self.error(f"expects one input tensor, is called on {len(self.input_shapes)}")
        return self.input_shapes[0]

    def error(self, message: str) -> KerasModelError:
        """A :class:`KerasModelError` naming this layer."""
        return KerasModelError(f"{self.where or self.class_name + ' ' + repr(self.name)}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


class KerasLayer(nn.Module):
    """A Keras layer in torch. Subclasses set :attr:`weight_names` in ``__init__`` and implement
    :meth:`weight_shapes`, :meth:`output_shape`, :meth:`load` (when they hold weights) and :meth:`call`.

    Parameters are created by :meth:`load` as leaf ``nn.Parameter`` s named after Keras's weights
    (``kernel``, ``bias``, ``embeddings``, ``gamma`` ...), so a model's ``state_dict`` reads
    ``dense_1.kernel``; Keras's non-trainable statistics (BatchNormalization's moving mean and variance)
    are buffers of the same names.
    """

    #: Keras's names of the layer's weights, in ``get_weights()`` order (empty for a layer without any).
    weight_names: list[str]

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.weight_names = []

    def weight_shapes(self) -> list[Shape]:
        """The shape of each weight, in ``get_weights()`` order, from the config and the input shapes."""
        return []

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        """Create the parameters from arrays whose shapes already equal :meth:`weight_shapes`."""
        if arrays:
            raise self.spec.error(f"takes no weights, got {len(arrays)}")

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape | list[Shape]:
        """The output shape (a list for several outputs) of a call on tensors of ``input_shapes``; a layer
        shared between calls is asked once per call."""
        raise NotImplementedError

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        """Keras's ``call`` and ``compute_mask`` together: the outputs and the mask they carry on."""
        raise NotImplementedError

    def forward(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        return self.call(inputs, mask, **kwargs)


LayerClass = TypeVar("LayerClass", bound=type[KerasLayer])

#: Keras class name -> the :class:`KerasLayer` subclass that runs it.
REGISTRY: dict[str, type[KerasLayer]] = {}


def register(*class_names: str) -> Callable[[LayerClass], LayerClass]:
    """Class decorator: the decorated :class:`KerasLayer` runs Keras layers of these class names."""

    def decorate(cls: LayerClass) -> LayerClass:
        for class_name in class_names:
            if class_name in REGISTRY:
                raise RuntimeError(f"two implementations of Keras class {class_name!r}")
            REGISTRY[class_name] = cls
        return cls

    return decorate


def parameter(array: np.ndarray, dtype: torch.dtype | None = None, trainable: bool = True) -> nn.Parameter:
    """A leaf parameter holding a copy of ``array`` (as ``dtype``, default float32 for floats)."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if dtype is not None:
        tensor = tensor.to(dtype)
    elif tensor.is_floating_point():
        tensor = tensor.float()
    return nn.Parameter(tensor, requires_grad=trainable)


def single(spec: LayerSpec, inputs: Tensors, mask: Masks) -> tuple[Tensor, Tensor | None]:
    """The one tensor (and mask) of a layer that takes one."""
    if isinstance(inputs, list):
        if len(inputs) != 1:
            raise spec.error(f"expects one input tensor, got {len(inputs)}")
        inputs = inputs[0]
        mask = mask[0] if isinstance(mask, list) else mask
    assert not isinstance(mask, list)
    return inputs, mask
