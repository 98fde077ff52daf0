"""LSTM, Bidirectional(LSTM) and Keras 2's CuDNNLSTM inside a whole model: the ``unilstm.keras`` layers
(the one engine), adapted to :class:`~.base.KerasLayer`.

Masks (Keras 2 and 3 alike, measured): an LSTM consumes its input mask; with ``return_sequences`` its
output carries the same mask on, else none; the states of ``return_state`` carry none. Initial states come
as ``initial_state=[h, c]`` (Keras 3) or as the extra tensors of a list input ``[x, h, c]`` (how Keras 2
records the call).

Parameters are named as Keras names the variables: an LSTM's are ``<layer>.cell.kernel`` (Keras's
``lstm/lstm_cell/kernel``), a Bidirectional's ``<layer>.forward_layer.kernel`` and
``<layer>.backward_layer.kernel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from ..formats.keras_files.records import cudnn_as_lstm_weights
from ..frontends.keras import LSTM as KerasLSTM  # noqa: N811
from ..frontends.keras_bidirectional import Bidirectional as KerasBidirectional
from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, register

_WEIGHT_NAMES = ["kernel", "recurrent_kernel", "bias"]

#: Keras 2's CuDNNLSTM: its config's own arguments; its maths is an LSTM with sigmoid and tanh.
_CUDNN_ARGUMENTS = {
    "units",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "unit_forget_bias",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "name",
    "trainable",
    "dtype",
    "batch_input_shape",
    "time_major",
}


def _lstm_shapes(config: Mapping[str, Any], features: int | None, spec: LayerSpec) -> list[Shape]:
    units = config.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
        raise spec.error(f"units must be a positive int, got {units!r}")
    if features is None:
        raise spec.error("the input's last dimension (features) must be known")
    shapes: list[Shape] = [(features, 4 * units), (units, 4 * units)]
    return shapes + [(4 * units,)] if config.get("use_bias", True) else shapes


def _split_inputs(inputs: Tensors, mask: Masks, kwargs: dict[str, Any]) -> tuple[Tensor, Any, Any]:
    """(sequence, its mask, initial_state) from ``x`` or Keras 2's flattened ``[x, h, c ...]``."""
    initial_state = kwargs.pop("initial_state", None)
    if isinstance(inputs, list):
        if len(inputs) > 1 and initial_state is None:
            initial_state = inputs[1:]
        inputs = inputs[0]
        mask = mask[0] if isinstance(mask, list) else mask
    return inputs, mask, initial_state


def _sequence_shape(spec: LayerSpec) -> Shape:
    shape = spec.input_shapes[0]
    if len(shape) != 3:
        raise spec.error(f"expects (batch, steps, features) inputs, its input has shape {shape}")
    return shape


def _out_masks(mask: Any, return_sequences: bool, states: int) -> Masks:
    out = mask if return_sequences else None
    return [out] + [None] * states if states else out


@register("LSTM")
class LSTMLayer(KerasLayer):
    """``keras.layers.LSTM``; Keras 2 files keep Keras 2's ``hard_sigmoid``."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self._shape = _sequence_shape(spec)
        self._shapes = _lstm_shapes(spec.config, self._shape[-1], spec)
        self.weight_names = _WEIGHT_NAMES[: len(self._shapes)]
        try:
            self.cell = self._make(spec)
        except (TypeError, ValueError) as error:
            raise spec.error(str(error)) from None

    def _make(self, spec: LayerSpec) -> KerasLSTM:
        return KerasLSTM.from_config(dict(spec.config), keras2=spec.keras2)

    def weight_shapes(self) -> list[Shape]:
        return list(self._shapes)

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.cell.set_weights(list(arrays))

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape | list[Shape]:
        shape = self.cell.compute_output_shape(input_shapes[0])
        return [tuple(s) for s in shape] if self.cell.return_state else tuple(shape)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, step_mask, initial_state = _split_inputs(inputs, mask, kwargs)
        result = self.cell(x, initial_state=initial_state, mask=step_mask, training=self.training)
        cell = self.cell
        out_mask = _out_masks(step_mask, cell.return_sequences, 2 if cell.return_state else 0)
        return (list(result) if isinstance(result, tuple) else result), out_mask


@register("CuDNNLSTM")
class CuDNNLSTMLayer(LSTMLayer):
    """Keras 2's ``CuDNNLSTM``: an LSTM with sigmoid and tanh; its stored weights are cuDNN's layout (a bias
    (8H,) of input then recurrent bias, kernel blocks flattened for cuDNN), read as Keras's own loader reads
    them into an LSTM (:func:`~unilstm.formats.keras_files.records.cudnn_as_lstm_weights`)."""

    def __init__(self, spec: LayerSpec) -> None:
        unknown = sorted(set(spec.config) - _CUDNN_ARGUMENTS)
        if unknown:
            raise spec.error(f"unknown CuDNNLSTM arguments {unknown}")
        super().__init__(spec)
        units = self._shapes[1][0]
        assert units is not None
        self._shapes = self._shapes[:2] + [(8 * units,)]

    def _make(self, spec: LayerSpec) -> KerasLSTM:
        config = {k: v for k, v in spec.config.items() if k not in ("batch_input_shape",)}
        config.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
        return KerasLSTM.from_config(config, keras2=True)

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.cell.set_weights(cudnn_as_lstm_weights(arrays))


@register("Bidirectional")
class BidirectionalLayer(KerasLayer):
    """``keras.layers.Bidirectional`` of an LSTM (another wrapped RNN is refused by name)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        shape = _sequence_shape(spec)
        members: list[Mapping[str, Any]] = []
        for member in ("layer", "backward_layer"):
            inner = spec.config.get(member)
            if inner is None and member == "backward_layer":
                members.append(members[0])
                continue
            if not isinstance(inner, Mapping) or not isinstance(inner.get("config"), Mapping):
                raise spec.error(f"its {member!r} is not a serialized layer")
            if inner.get("class_name") != "LSTM":
                raise spec.error(
                    f"wraps a {inner.get('class_name')!r}; only Bidirectional(LSTM) is supported"
                )
            members.append(inner["config"])
        self._shapes = [s for config in members for s in _lstm_shapes(config, shape[-1], spec)]
        names = _WEIGHT_NAMES[: len(_lstm_shapes(members[0], shape[-1], spec))]
        self.weight_names = names + _WEIGHT_NAMES[: len(self._shapes) - len(names)]
        try:
            door = KerasBidirectional.from_config(dict(spec.config), keras2=spec.keras2)
        except (TypeError, ValueError) as error:
            raise spec.error(str(error)) from None
        self.__dict__["_door"] = door  # run through the door; its layers are registered below, once
        self.forward_layer = door.forward_layer
        self.backward_layer = door.backward_layer

    @property
    def door(self) -> KerasBidirectional:
        return self.__dict__["_door"]

    def weight_shapes(self) -> list[Shape]:
        return list(self._shapes)

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.door.set_weights(list(arrays))

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape | list[Shape]:
        shape = self.door.compute_output_shape(input_shapes[0])
        if self.door.return_state or self.door.merge_mode is None:
            return [tuple(s) for s in shape]
        return tuple(shape)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, step_mask, initial_state = _split_inputs(inputs, mask, kwargs)
        result = self.door(x, initial_state=initial_state, mask=step_mask, training=self.training)
        door = self.door
        outputs = 2 if door.merge_mode is None else 1
        states = 4 if door.return_state else 0
        if outputs == 1 and not states:
            return result, (step_mask if door.return_sequences else None)
        seq_mask = step_mask if door.return_sequences else None
        return list(result), [seq_mask] * outputs + [None] * states
