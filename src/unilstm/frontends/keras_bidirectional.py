"""Keras's ``Bidirectional`` wrapper around two :class:`~unilstm.frontends.keras.LSTM` layers.

Where the two layers compute what one bidirectional stack computes (the same cell, the backward one with
``go_backwards``), a call runs them as that one stack: one engine call, both directions at once where the
kernels can; otherwise the two layers run one after the other, as in Keras.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..layer import compute_stack
from ..spec import LSTMSpec
from . import keras_regularizers as regularizers
from .keras import LSTM, auto_name, dtype_from, dtype_name, unwrap_config
from .keras_objects import serialize

__all__ = ["Bidirectional"]


def _deserialize_layer(config: Any, argument: str, keras2: bool | None) -> LSTM:
    if isinstance(config, LSTM):
        return config
    if not isinstance(config, Mapping) or config.get("class_name") != "LSTM":
        name = config.get("class_name") if isinstance(config, Mapping) else type(config).__name__
        raise ValueError(
            f"{argument}: expected a serialized LSTM layer ({{'class_name': 'LSTM', ...}}), got {name!r}"
        )
    return LSTM.from_config(config["config"], keras2=keras2)


def _with_name(layer: LSTM, name: str, **changes: Any) -> LSTM:
    """A fresh layer from ``layer``'s config (Keras's way of cloning), renamed."""
    config = layer.get_config()
    config["name"] = name
    config.update(changes)
    return LSTM.from_config(config, keras2=layer._keras2)


class Bidirectional(nn.Module):
    r"""``tf.keras.layers.Bidirectional(layer, merge_mode='concat', weights=None, backward_layer=None)``.

    As in Keras, the forward layer is a fresh copy of ``layer`` made from its config (named
    ``forward_<name>``; ``layer``'s own weights are not used) and, without ``backward_layer``, the backward
    layer is another copy with ``go_backwards=True`` (``backward_<name>``). Both get
    ``zero_output_for_mask = return_sequences`` and ``layer``'s ``use_cudnn``. The backward output sequence
    is flipped back to input order before merging:

        concat: [y, y_rev] on the last axis (2H);  sum: y + y_rev;  mul: y * y_rev;  ave: (y + y_rev) / 2;
        None: the pair (y, y_rev).

    With return_state the call returns ``(output, h_fwd, c_fwd, h_bwd, c_bwd)`` (``(y, y_rev, h_fwd, ...)``
    for merge_mode None); ``initial_state`` is ``[h_fwd, c_fwd, h_bwd, c_bwd]``. Weights: the forward
    layer's then the backward layer's.
    """

    def __init__(
        self,
        layer: LSTM,
        merge_mode: str | None = "concat",
        weights: Sequence[Any] | None = None,
        backward_layer: LSTM | None = None,
        *,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool = True,
        activity_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        for key in ("input_shape", "input_dim", "batch_input_shape", "autocast"):
            kwargs.pop(key, None)
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to Bidirectional: {kwargs}")
        if not isinstance(layer, LSTM):
            raise ValueError(f"layer: expected a unilstm.keras.LSTM instance, got {type(layer).__name__}")
        if backward_layer is not None and not isinstance(backward_layer, LSTM):
            raise ValueError(
                f"backward_layer: expected a unilstm.keras.LSTM instance, got {type(backward_layer).__name__}"
            )
        if merge_mode not in ("sum", "mul", "ave", "concat", None):
            raise ValueError(
                f"merge_mode: expected one of 'sum', 'mul', 'ave', 'concat', None, got {merge_mode!r}"
            )
        base = layer.name.removeprefix("forward_")
        self.forward_layer = _with_name(layer, f"forward_{base}")
        if backward_layer is None:
            self.backward_layer = _with_name(
                layer, f"backward_{layer.name.removeprefix('backward_')}", go_backwards=True
            )
        else:
            self.backward_layer = backward_layer
        self._backward_given = backward_layer is not None
        # use_cudnn is not in a layer's config; Keras 3 hands the wrapped layer's to both layers
        self.forward_layer.use_cudnn = layer.use_cudnn
        self.backward_layer.use_cudnn = layer.use_cudnn
        self._layer_name = layer.name
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError(
                "Forward layer and backward layer should have different `go_backwards` value. Received: "
                f"forward_layer.go_backwards={self.forward_layer.go_backwards}, "
                f"backward_layer.go_backwards={self.backward_layer.go_backwards}"
            )
        for attribute in ("stateful", "return_sequences", "return_state", "time_major"):
            forward_value = getattr(self.forward_layer, attribute)
            backward_value = getattr(self.backward_layer, attribute)
            if forward_value != backward_value:
                raise ValueError(
                    f"Forward layer and backward layer are expected to have the same value for attribute "
                    f'"{attribute}", got "{forward_value}" for forward layer and "{backward_value}" '
                    'for backward layer'
                )
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.time_major = layer.time_major
        self.name = name if name is not None else auto_name("bidirectional")
        self.dtype = dtype_from(dtype) if dtype is not None else layer.dtype
        self._trainable = bool(trainable)
        self.activity_regularizer = regularizers.get(activity_regularizer, "activity_regularizer")
        self._activity_losses: list[Tensor] = []
        self._keras2 = layer._keras2
        if not trainable:
            self.trainable = False
        self._pending_weights: list[Any] | None  # weights given before the layers are built
        if weights:
            self._pending_weights = list(weights)
        else:
            self._pending_weights = None
        self.train(False)

    @property
    def built(self) -> bool:
        return self.forward_layer.built and self.backward_layer.built

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        self.forward_layer.trainable = value
        self.backward_layer.trainable = value

    @property
    def weights(self) -> list[nn.Parameter]:
        return self.forward_layer.weights + self.backward_layer.weights

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        return self.forward_layer.trainable_weights + self.backward_layer.trainable_weights

    @property
    def non_trainable_weights(self) -> list[nn.Parameter]:
        return self.forward_layer.non_trainable_weights + self.backward_layer.non_trainable_weights

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build both layers for inputs of ``input_shape``."""
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)
        if self._pending_weights is not None:
            weights, self._pending_weights = self._pending_weights, None
            self.set_weights(weights)

    def get_weights(self) -> list[np.ndarray]:
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def count_params(self) -> int:
        return self.forward_layer.count_params() + self.backward_layer.count_params()

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        """Keras's output shape(s): the merged output (last axis doubled with concat; two outputs with
        merge_mode None), then the four states with return_state."""
        shape = self.forward_layer.compute_output_shape(input_shape)
        states: tuple = ()
        if self.return_state:
            shape, states = shape[0], tuple(shape[1:]) * 2
        if self.merge_mode == "concat":
            shape = (*shape[:-1], 2 * shape[-1])
        outputs = (shape, shape) if self.merge_mode is None else (shape,)
        if self.return_state or self.merge_mode is None:
            return outputs + states
        return shape

    def set_weights(self, weights: Sequence[Any]) -> None:
        """The forward layer's arrays then the backward layer's (Keras layout)."""
        weights = list(weights)
        half = len(weights) // 2
        if len(weights) % 2:
            raise ValueError(
                f"set_weights: expected an even number of arrays (forward then backward), got {len(weights)}"
            )
        self.forward_layer.set_weights(weights[:half])
        self.backward_layer.set_weights(weights[half:])

    @property
    def losses(self) -> list[Tensor]:
        """Keras 3's order: the wrapper's activity losses (each merged output and state, divided by batch
        size), the two layers' activity losses, then their weight-regularizer losses. A wrapper from a Keras 2
        config uses tf-keras's order: the wrapper's, then each layer's activity and weight losses in turn."""
        if self._keras2:
            return list(self._activity_losses) + self.forward_layer.losses + self.backward_layer.losses
        return (
            list(self._activity_losses)
            + self.forward_layer._activity_losses
            + self.backward_layer._activity_losses
            + self.forward_layer._weight_losses()
            + self.backward_layer._weight_losses()
        )

    @property
    def states(self) -> tuple[Tensor, ...] | None:
        if self.forward_layer.states is not None and self.backward_layer.states is not None:
            return tuple(self.forward_layer.states) + tuple(self.backward_layer.states)
        return None

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        """Zero (or set, with ``[h_fwd, c_fwd, h_bwd, c_bwd]``) both layers' stored states."""
        if not self.stateful:
            raise AttributeError(
                f"Layer must be stateful. reset_states: layer {self.name!r} has stateful=False"
            )
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        if not isinstance(states, (list, tuple, np.ndarray, Tensor)):  # a stacked (4, B, H) array works too
            raise ValueError(
                "Unrecognized value for `states`. Expected `states` to be list or tuple [h_fwd, c_fwd, "
                f"h_bwd, c_bwd]. Received: {type(states).__name__} {states!r}"
            )
        states = list(states)
        if len(states) != 4:
            raise ValueError(f"reset_states: expected [h_fwd, c_fwd, h_bwd, c_bwd], got {len(states)} arrays")
        self.forward_layer.reset_states(states[:2])
        self.backward_layer.reset_states(states[2:])

    def reset_state(self) -> None:
        self.reset_states()

    def forward(
        self,
        inputs: Any,
        initial_state: Sequence[Any] | None = None,
        mask: Any = None,
        training: bool | None = None,
    ):
        """Run both layers on the same inputs and mask and merge (see the class docstring); Keras's positional
        order ``(sequences, initial_state=None, mask=None, training=None)``."""
        if not self.built:  # both layers, forward first (Keras's order of initialisation)
            shape = inputs.shape if hasattr(inputs, "shape") else np.asarray(inputs).shape
            self.build(tuple(shape))
        training = self.training if training is None else training
        forward_state = backward_state = None
        if initial_state is not None:
            initial_state = list(initial_state)
            half = len(initial_state) // 2
            forward_state, backward_state = initial_state[:half], initial_state[half:]
        spec = self._one_stack_spec(bool(training)) if self.built else None
        if spec is not None:
            y, y_rev = self._run_as_one_stack(
                spec, inputs, mask, bool(training), forward_state, backward_state
            )
        else:
            y = self.forward_layer(inputs, mask=mask, training=training, initial_state=forward_state)
            y_rev = self.backward_layer(inputs, mask=mask, training=training, initial_state=backward_state)
        states: tuple[Tensor, ...] = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev.flip(0 if self.time_major else 1)
        if self.merge_mode == "concat":
            output: Any = torch.cat([y, y_rev], dim=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = (y, y_rev)
        flat = (list(output) if isinstance(output, tuple) else [output]) + list(states)
        self._activity_losses = []
        if self.activity_regularizer is not None:
            self._activity_losses = [self.activity_regularizer(o) / o.shape[0] for o in flat]
        if self.return_state:
            return tuple(flat)
        return output

    #: Run both layers as one bidirectional stack where that computes the same function (see
    #: :meth:`_one_stack_spec`); False runs them one after the other, as Keras does.
    one_stack: bool = True

    def _one_stack_spec(self, training: bool) -> LSTMSpec | None:
        """The bidirectional spec that computes both layers at once, or None where it would not compute
        exactly what the two layers compute one after the other: the layers differ in anything but
        ``go_backwards`` (which must be False forward, True backward), a layer records activity losses, or
        dropout masks would come from per-layer seeded generators (the stack draws them in the two layers'
        order from one random source)."""
        forward, backward = self.forward_layer, self.backward_layer
        if not self.one_stack or forward.go_backwards or not backward.go_backwards:
            return None
        forward_spec, backward_spec = forward.spec(training), backward.spec(training)
        if replace(backward_spec, go_backwards=False) != forward_spec or forward.dtype != backward.dtype:
            return None
        if forward.activity_regularizer is not None or backward.activity_regularizer is not None:
            return None
        dropping = forward_spec.input_dropout > 0.0 or forward_spec.recurrent_dropout > 0.0
        if dropping and (forward.seed is not None or backward.seed is not None):
            return None
        return replace(forward_spec, bidirectional=True)

    def _run_as_one_stack(
        self,
        spec: LSTMSpec,
        inputs: Any,
        mask: Any,
        training: bool,
        forward_state: Sequence[Any] | None,
        backward_state: Sequence[Any] | None,
    ) -> tuple[Any, Any]:
        """Both layers' results (each as its own call would return it) from one bidirectional stack: the
        reverse direction processes the counted steps from the last to the first, exactly as the backward
        layer does on the flipped input, and its outputs sit at their own time index (the backward layer's
        processing order flipped back). ``spec`` is :meth:`_one_stack_spec`'s for this call."""
        forward, backward = self.forward_layer, self.backward_layer
        x_tm, counted = forward._sequence_and_steps(inputs, mask)
        batch = x_tm.shape[1]
        if backward.stateful and batch != backward._expected_batch_size:
            backward._sequence_and_steps(inputs, mask)  # raises Keras's error for that layer
        h0_forward, c0_forward = forward._initial_state(forward_state, batch)
        h0_backward, c0_backward = backward._initial_state(backward_state, batch)
        out, h_n, c_n = compute_stack(
            spec,
            x_tm,
            torch.stack([h0_forward, h0_backward]),
            torch.stack([c0_forward, c0_backward]),
            [[forward._direction_weights(), backward._direction_weights()]],
            counted,
            training=training,
        )
        units = forward.units
        y = forward._results(out[..., :units], h_n[0], c_n[0])
        y_rev = backward._results(out[..., units:].flip(0), h_n[1], c_n[1])
        return y, y_rev

    def get_config(self) -> dict[str, Any]:
        """Keras 3's config (tf-keras's for a wrapper made from a Keras 2 config)."""

        def wrap(layer: LSTM) -> dict[str, Any]:
            return {
                "module": "keras.layers",
                "class_name": "LSTM",
                "config": layer.get_config(),
                "registered_name": None,
            }

        dtype = dtype_name(self.dtype)
        config: dict[str, Any] = {
            "name": self.name,
            "trainable": self._trainable,
            "dtype": dtype
            if self._keras2
            else {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": dtype},
                "registered_name": None,
            },
            "merge_mode": self.merge_mode,
            "layer": wrap(self.forward_layer),
            "backward_layer": wrap(self.backward_layer),
        }
        if self._keras2:  # tf-keras serializes the wrapped layer as given, and a backward layer only if given
            config["layer"]["config"]["name"] = self._layer_name
            if not self._backward_given:
                del config["backward_layer"]
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = serialize(self.activity_regularizer, legacy=self._keras2)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keras2: bool | None = None) -> Bidirectional:
        """A wrapper from a Keras 3 or tf-keras Bidirectional config (``layer`` and optional
        ``backward_layer``
        serialized LSTMs)."""
        config = dict(copy.deepcopy(unwrap_config(config, ("Bidirectional",))))
        if "layer" not in config:
            raise ValueError(f"config: a Bidirectional config needs 'layer', got keys {sorted(config)}")
        layer = _deserialize_layer(config.pop("layer"), "layer", keras2)
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = _deserialize_layer(backward, "backward_layer", keras2)
        wrapper = cls(layer, backward_layer=backward, **config)
        if keras2 is not None or layer._keras2:
            wrapper._keras2 = bool(keras2) if keras2 is not None else layer._keras2
        return wrapper

    def extra_repr(self) -> str:
        return f"name={self.name!r}, merge_mode={self.merge_mode!r}"


# -- constraints after optimizer steps ----------------------------------------------------------------
