"""The Keras front door: ``tf.keras.layers.LSTM`` and ``Bidirectional`` with Keras's signature, call
convention, weights and numbers, on unilstm's one engine.

The layer holds three leaf parameters in Keras layout, ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H) and
``bias`` (4H,) (gate blocks [i, f, c, o]), and at each call hands torch-layout views of them
(:func:`unilstm.formats.layout.torch_views_from_keras`) to the canonical layer's engine entry
(:func:`unilstm.layer.compute_stack`) with an :class:`~unilstm.spec.LSTMSpec`; it computes nothing itself.
``Bidirectional`` lives in :mod:`unilstm.frontends.keras_bidirectional`. Per step (Keras's cell)::

    z = x_t K + h_{t-1} R + b;  i, f, o = sigma(z_i), sigma(z_f), sigma(z_o)
    c_t = f * c_{t-1} + i * g(z_c);  h_t = o * g(c_t)

with ``g = activation`` and ``sigma = recurrent_activation``.

Torch conventions kept from Keras: a call ``layer(x, initial_state=None, mask=None, training=None)``
returns the output, or ``(output, h, c)`` with ``return_state``. ``training=None`` means the module's
``self.training``, and these layers are created in eval mode (``layer.training`` is False), so a plain call is
Keras's inference call and ``model.train()`` plays the role of ``fit`` (dropout on).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..formats.layout import torch_views_from_keras
from ..keras_names import activation_from_keras, activation_to_keras
from ..layer import DirectionWeights, compute_stack
from ..spec import LSTMSpec
from ..steps import EVERY_STEP, CountedSteps
from . import keras_constraints as constraints
from . import keras_initializers as initializers
from . import keras_regularizers as regularizers
from .keras_objects import serialize, snake_case

__all__ = ["LSTM", "apply_constraints", "constrain"]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_NAME_COUNTS: dict[str, itertools.count] = {}


def auto_name(prefix: str) -> str:
    """Keras's unique default names: "lstm", "lstm_1", "lstm_2", ..."""
    counter = _NAME_COUNTS.setdefault(prefix, itertools.count())
    index = next(counter)
    return prefix if index == 0 else f"{prefix}_{index}"


def dtype_from(value: Any, argument: str = "dtype") -> torch.dtype:
    """A Keras dtype (name, policy name, Keras 3 DTypePolicy dict) or a torch dtype -> torch dtype."""
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        if value not in _DTYPES.values():
            raise ValueError(
                f"{argument}: expected a floating dtype (float16/bfloat16/float32/float64), got {value}"
            )
        return value
    if isinstance(value, Mapping):
        inner = value.get("config", {})
        return dtype_from(inner.get("name") if isinstance(inner, Mapping) else None, argument)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        value = np.dtype(value).name
    if isinstance(value, str):
        if value in _DTYPES:
            return _DTYPES[value]
        if value.startswith("mixed_"):
            raise ValueError(
                f"{argument}: mixed precision policies are not supported, got {value!r}; use 'float32' (and "
                "torch autocast) or 'float16'/'bfloat16'"
            )
    raise ValueError(f"{argument}: expected one of {sorted(_DTYPES)} (or a torch dtype), got {value!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in _DTYPES.items() if value == dtype)


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float between 0 and 1, got {type(value).__name__} {value!r}")
    return min(1.0, max(0.0, float(value)))  # Keras clips into [0, 1]


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


class LSTM(nn.Module):
    r"""``tf.keras.layers.LSTM`` on unilstm's engine.

    Args are Keras's (3.x, plus tf-keras's ``time_major``): ``units`` H; ``activation`` g (tanh; None =
    linear; any Keras name or a callable on tensors); ``recurrent_activation`` sigma (sigmoid);
    ``use_bias``; ``kernel_initializer`` (glorot_uniform over the whole (F, 4H) matrix),
    ``recurrent_initializer`` (orthogonal over the whole (H, 4H) matrix), ``bias_initializer`` (zeros): Keras
    names, config dicts or callables ``fn(shape, dtype)``; ``unit_forget_bias`` sets the forget block of
    the bias to 1; ``*_regularizer`` and ``activity_regularizer`` (see :attr:`losses`); ``*_constraint``
    (applied by :func:`apply_constraints` after optimizer steps); ``dropout`` / ``recurrent_dropout``
    (Keras 3: one mask per call on x_t and on h_{t-1}, reused at every step, four independent masks per gate
    when ``recurrent_dropout > 0`` or ``implementation=1``, scaled by 1 / (1 - rate), only in training);
    ``seed`` (an int seeds a torch.Generator for the dropout masks); ``return_sequences``; ``return_state``;
    ``go_backwards`` (reverse the input and return outputs in processing order); ``stateful``; ``time_major``
    (inputs, outputs and the mask are time-first); ``unroll`` and ``use_cudnn`` (accepted, no numerical
    effect); ``zero_output_for_mask``; ``implementation`` (1 or 2; 0 computes as 2); ``name``; ``dtype``
    (float32); ``trainable``. Unknown keyword arguments raise ``ValueError`` as in Keras. ``copy.deepcopy``
    of an unbuilt layer draws new weights when it builds (unseeded initializers draw again), as in Keras.

    Shapes (B batch, T steps, F features):
        inputs: (B, T, F) ((T, B, F) with time_major), numpy or torch, cast to the layer's dtype.
        mask: optional (B, T) booleans ((T, B) with time_major), True = the step counts. A masked step keeps h
            and c and outputs the previous step's output (zeros before the first counted step), or zeros with
            ``zero_output_for_mask``.
        initial_state: optional [h0, c0], each (B, H).
        output: (B, T, H) with return_sequences, else (B, H) (the last processed step's output); with
            return_state the tuple ``(output, h, c)``, h and c (B, H).
    """

    _DEFAULTS = dict(
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
    )

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        unit_forget_bias: bool = True,
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        use_cudnn: bool | str = "auto",
        *,
        time_major: bool = False,
        zero_output_for_mask: bool = False,
        implementation: int = 2,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        extra = {
            k: kwargs.pop(k)
            for k in ("input_dim", "input_shape", "batch_input_shape", "batch_size", "weights", "autocast")
            if k in kwargs
        }
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to LSTM: {kwargs}")
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"units: expected a positive integer, got {units!r}")
        if use_cudnn not in ("auto", True, False):
            raise ValueError(f"use_cudnn: expected one of 'auto', True, False, got {use_cudnn!r}")
        # 0 is tf-keras's deprecated mode; both Kerases accept it and compute it as 2 (one mask per dropout)
        if implementation not in (0, 1, 2):
            raise ValueError(f"implementation: expected 0, 1 or 2, got {implementation!r}")
        if not isinstance(trainable, bool):
            raise ValueError(f"trainable: expected a bool, got {trainable!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed: expected an int or None, got {type(seed).__name__} {seed!r}")
        self.units = int(units)
        self._keras2 = False
        self._activation_arg = activation
        self._recurrent_activation_arg = recurrent_activation
        self.activation = activation_from_keras(activation, "activation", False)
        self.recurrent_activation = activation_from_keras(recurrent_activation, "recurrent_activation", False)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer, "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer, "recurrent_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "bias_regularizer")
        self.activity_regularizer = regularizers.get(activity_regularizer, "activity_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, "kernel_constraint")
        self.recurrent_constraint = constraints.get(recurrent_constraint, "recurrent_constraint")
        self.bias_constraint = constraints.get(bias_constraint, "bias_constraint")
        self.dropout = _rate("dropout", dropout)
        self.recurrent_dropout = _rate("recurrent_dropout", recurrent_dropout)
        self.implementation = 1 if self.recurrent_dropout != 0.0 else int(implementation)
        self._implementation_arg = int(implementation)
        self.seed = None if seed is None else int(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.use_cudnn = use_cudnn
        self.time_major = bool(time_major)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.name = name if name is not None else auto_name("lstm")
        self.dtype = dtype_from(dtype)
        self._dtype_arg = dtype
        self._trainable = trainable
        self._input_shape_arg = (
            extra.get("batch_input_shape")
            or extra.get("input_shape")
            or ((extra["input_dim"],) if extra.get("input_dim") is not None else None)
        )
        self._initial_weights = extra.get("weights")
        self._batch_input_shape = extra.get("batch_input_shape")
        self.register_parameter("kernel", None)
        self.register_parameter("recurrent_kernel", None)
        self.register_parameter("bias", None)
        self._states: tuple[Tensor, Tensor] | None = None
        self._expected_batch_size: int | None = None
        self._activity_losses: list[Tensor] = []
        self._generators: dict[torch.device, torch.Generator] = {}
        self.input_size: int | None = None
        self.train(False)

    def __deepcopy__(self, memo: dict[int, Any]) -> LSTM:
        """A deep copy; an unbuilt layer's copy draws its own weights when it builds, as both Kerases'
        copies do (their unseeded initializers draw again), where a plain copy would repeat this layer's
        draw. A built layer's copy has the same weights."""
        cls = type(self)
        clone = cls.__new__(cls)
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        if not clone.built:
            drawn = (clone.kernel_initializer, clone.recurrent_initializer, clone.bias_initializer)
            for initializer in drawn:
                if isinstance(initializer, initializers.RandomInitializer):
                    initializer.redraw_seed()
        return clone

    # -- Keras 2 (tf-keras) semantics -----------------------------------------------------------------
    def _set_keras2(self, keras2: bool) -> None:
        """Layers that come from Keras 2 keep Keras 2's hard_sigmoid (clip(0.2 x + 0.5, 0, 1))."""
        self._keras2 = bool(keras2)
        self.activation = activation_from_keras(self._activation_arg, "activation", self._keras2)
        self.recurrent_activation = activation_from_keras(
            self._recurrent_activation_arg, "recurrent_activation", self._keras2
        )

    # -- weights ----------------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for w in self.weights:
            w.requires_grad_(self._trainable)

    @property
    def weights(self) -> list[nn.Parameter]:
        """``[kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` (no bias without use_bias); "
        "[] before build."""
        if not self.built:
            return []
        return [w for w in (self.kernel, self.recurrent_kernel, self.bias) if w is not None]

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        return self.weights if self._trainable else []

    @property
    def non_trainable_weights(self) -> list[nn.Parameter]:
        return [] if self._trainable else self.weights

    @property
    def variables(self) -> list[nn.Parameter]:
        return self.weights

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create the weights for inputs of ``input_shape`` (B, T, F) ((T, B, F) with time_major; F is the
        last entry) with the layer's initializers. A stateful layer also needs the batch size here."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(f"input_shape: the last dimension (features) must be known, got {input_shape}")
        features = int(input_shape[-1])
        if self.built:
            if features != self.input_size:
                raise ValueError(
                    f"input_shape: layer {self.name!r} was built for {self.input_size} features, "
                    f"got {features}"
                )
        else:
            self._create_weights(features)
        if self.stateful and self._expected_batch_size is None:
            batch = input_shape[1] if self.time_major and len(input_shape) == 3 else input_shape[0]
            if len(input_shape) != 3 or batch is None:
                raise ValueError(
                    "When using `stateful=True` in a RNN, the batch size must be static. Found dynamic "
                    f"batch size: sequence.shape={_shape_text(input_shape)}"
                )
            self._expected_batch_size = int(batch)
            self._states = self._zero_states(int(batch))

    def _create_weights(self, features: int) -> None:
        H, dtype = self.units, self.dtype  # noqa: N806
        kernel = initializers.initialize(
            self.kernel_initializer, (features, 4 * H), dtype, "kernel_initializer"
        )
        recurrent = initializers.initialize(
            self.recurrent_initializer, (H, 4 * H), dtype, "recurrent_initializer"
        )
        self.input_size = features
        self.kernel = nn.Parameter(kernel, requires_grad=self._trainable)
        self.recurrent_kernel = nn.Parameter(recurrent, requires_grad=self._trainable)
        if self.use_bias:
            if self.unit_forget_bias:
                init = self.bias_initializer
                bias = torch.cat(
                    [
                        initializers.initialize(init, (H,), dtype, "bias_initializer"),
                        torch.ones(H, dtype=dtype),
                        initializers.initialize(init, (2 * H,), dtype, "bias_initializer"),
                    ]
                )
            else:
                bias = initializers.initialize(self.bias_initializer, (4 * H,), dtype, "bias_initializer")
            self.bias = nn.Parameter(bias, requires_grad=self._trainable)
        if self._initial_weights is not None:
            weights, self._initial_weights = self._initial_weights, None
            self.set_weights(weights)

    def count_params(self) -> int:
        """Number of weight entries: 4H (F + H + 1) with a bias."""
        return sum(w.numel() for w in self.weights)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        """Keras's output shape(s) for inputs of ``input_shape``: (B, T, H) or (B, H), then (B, H) twice with
        return_state ((T, B, H) with time_major and return_sequences)."""
        shape = tuple(input_shape)
        batch, steps = (shape[1], shape[0]) if self.time_major else (shape[0], shape[1])
        output: tuple[int | None, ...]
        if self.return_sequences:
            output = (steps, batch, self.units) if self.time_major else (batch, steps, self.units)
        else:
            output = (batch, self.units)
        return (output, (batch, self.units), (batch, self.units)) if self.return_state else output

    def get_initial_state(self, batch_size: int) -> list[Tensor]:
        """Zero states [h0, c0], each (batch_size, H)."""
        return list(self._zero_states(batch_size))

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays in Keras layout (copies)."""
        return [w.detach().cpu().numpy().copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set ``[kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` (numpy or torch, Keras layout). An
        unbuilt layer is built from the kernel's shape."""
        weights = list(weights)
        expected = 3 if self.use_bias else 2
        if len(weights) != expected:
            raise ValueError(
                f"set_weights: layer {self.name!r} expects {expected} arrays [kernel, recurrent_kernel"
                f"{', bias' if self.use_bias else ''}], got {len(weights)}"
            )
        arrays = [
            torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w.detach()) for w in weights
        ]
        if not self.built:
            if arrays[0].dim() != 2:
                raise ValueError(
                    f"set_weights: kernel must be 2-D (F, 4H), got shape {tuple(arrays[0].shape)}"
                )
            self._create_weights(int(arrays[0].shape[0]))
        with torch.no_grad():
            labels = ("kernel", "recurrent_kernel", "bias")
            for param, array, label in zip(self.weights, arrays, labels, strict=False):
                if tuple(array.shape) != tuple(param.shape):
                    raise ValueError(
                        f"set_weights: {label} of layer {self.name!r} has shape {tuple(param.shape)}, got "
                        f"{tuple(array.shape)}"
                    )
                param.copy_(array.to(dtype=param.dtype, device=param.device))

    # -- losses -------------------------------------------------------------------------------------------
    @property
    def losses(self) -> list[Tensor]:
        """Keras's ``layer.losses``: the activity-regularizer losses of the last call (one per output tensor,
        divided by its batch size), then the weight-regularizer losses of kernel, recurrent_kernel and bias,
        computed from the current weights (differentiable). Add ``sum(layer.losses)`` to a training loss."""
        return list(self._activity_losses) + self._weight_losses()

    def _weight_losses(self) -> list[Tensor]:
        pairs = [
            (self.kernel_regularizer, self.kernel),
            (self.recurrent_regularizer, self.recurrent_kernel),
            (self.bias_regularizer, self.bias),
        ]
        return [reg(w) for reg, w in pairs if reg is not None and w is not None]

    def _record_activity(self, outputs: Sequence[Tensor]) -> None:
        self._activity_losses = []
        if self.activity_regularizer is None:
            return
        for out in outputs:
            loss = self.activity_regularizer(out)
            if out.dim() > 0 and out.shape[0] > 0:
                loss = loss / out.shape[0]
            self._activity_losses.append(loss)

    def apply_constraints(self) -> None:
        """Project the weights with their constraints (what Keras's optimizer does after each update)."""
        with torch.no_grad():
            for constraint, w in (
                (self.kernel_constraint, self.kernel),
                (self.recurrent_constraint, self.recurrent_kernel),
                (self.bias_constraint, self.bias),
            ):
                if constraint is not None and w is not None:
                    w.copy_(constraint(w))

    # -- states -------------------------------------------------------------------------------------------
    @property
    def states(self) -> tuple[Tensor, Tensor] | None:
        """The stored (h, c) of a stateful layer, each (B, H); None before it is built."""
        return self._states

    def _zero_states(self, batch: int) -> tuple[Tensor, Tensor]:
        device = self.kernel.device if self.built else None
        zeros = torch.zeros(batch, self.units, dtype=self.dtype, device=device)
        return zeros, zeros.clone()

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        """Zero the stored states of a stateful layer, or set them to ``states = [h, c]`` (each (B, H),
        numpy or torch), as tf-keras's ``reset_states(states=None)``. The batch size stays fixed."""
        if not self.stateful:
            raise AttributeError(
                f"Layer must be stateful. reset_states: layer {self.name!r} has stateful=False"
            )
        if states is None:
            if self._expected_batch_size is not None:
                self._states = self._zero_states(self._expected_batch_size)
            return
        if not isinstance(states, (list, tuple)) or len(states) != 2:
            raise ValueError(f"reset_states: states must be a list [h, c], got {type(states).__name__}")
        tensors = [self._as_tensor(s, f"states[{i}]") for i, s in enumerate(states)]
        batch = self._expected_batch_size if self._expected_batch_size is not None else tensors[0].shape[0]
        for i, t in enumerate(tensors):
            if tuple(t.shape) != (batch, self.units):
                raise ValueError(
                    f"reset_states: states[{i}] of layer {self.name!r} must have shape ({batch}, "
                    f"{self.units}), got {tuple(t.shape)}"
                )
        self._expected_batch_size = int(batch)
        self._states = (tensors[0].detach().clone(), tensors[1].detach().clone())

    def reset_state(self) -> None:
        """Keras 3's ``reset_state()``: zero the stored states."""
        self.reset_states()

    # -- the call -------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.kernel.device if self.built else torch.device("cpu")

    def _as_tensor(self, value: Any, argument: str) -> Tensor:
        if isinstance(value, Tensor):
            return value.to(dtype=self.dtype, device=self._device())
        try:
            array = np.asarray(value)
        except Exception as error:  # noqa: BLE001
            raise TypeError(
                f"{argument}: expected a numpy array or torch tensor, got {type(value).__name__}"
            ) from error
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(
                f"{argument}: expected numeric values, got {type(value).__name__} of dtype {array.dtype}"
            )
        return torch.as_tensor(array).to(dtype=self.dtype, device=self._device())

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def spec(self, training: bool = False) -> LSTMSpec:
        """The engine's description of this layer (dropout only when ``training``); made again only when
        an attribute it reads has changed."""
        key = (
            training, self.input_size, self.units, self.use_bias, self.activation, self.recurrent_activation,
            self.dropout, self.recurrent_dropout, self.implementation, self.go_backwards,
            self.zero_output_for_mask,
        )
        cached = self.__dict__.get("_spec_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        spec = self._make_spec(training)
        self.__dict__["_spec_cache"] = (key, spec)
        return spec

    def _make_spec(self, training: bool) -> LSTMSpec:
        return LSTMSpec(
            input_size=self.input_size,
            hidden_size=self.units,
            bias=self.use_bias,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            input_dropout=self.dropout if training and self.dropout < 1.0 else 0.0,
            recurrent_dropout=self.recurrent_dropout if training and self.recurrent_dropout < 1.0 else 0.0,
            per_gate_dropout=self.implementation == 1,
            go_backwards=self.go_backwards,
            masked_output="zero" if self.zero_output_for_mask else "previous",
        )

    def forward(
        self,
        inputs: Any,
        initial_state: Sequence[Any] | None = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Run the layer (shapes in the class docstring). The positional order is Keras's
        ``call(sequences, initial_state=None, mask=None, training=None)``; pass them by keyword."""
        x_tm, counted = self._sequence_and_steps(inputs, mask)
        h0, c0 = self._initial_state(initial_state, x_tm.shape[1])
        training = self.training if training is None else bool(training)
        out, h_n, c_n = compute_stack(
            self.spec(training),
            x_tm,
            h0.unsqueeze(0),
            c0.unsqueeze(0),
            [[self._direction_weights()]],
            counted,
            training=training,
            generator=self._generator(x_tm.device),
        )
        return self._results(out, h_n[0], c_n[0])

    def _fit_features(self, x: Tensor, shown_shape: str | torch.Size) -> Tensor:
        """``x`` on the weights' device, the layer built for its features (last axis) on the first call;
        afterwards an input of other features is Keras's ValueError (``shown_shape``: the shape the message
        shows, as text or a size written as Keras writes shapes)."""
        if not self.built:
            self.build(tuple(x.shape))
            return x.to(self._device())
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected axis -1 of input '
                f"shape to have value {self.input_size}, but received input with shape "
                f"{shown_shape if isinstance(shown_shape, str) else _shape_text(shown_shape)}"
            )
        return x

    def _sequence_and_steps(self, inputs: Any, mask: Any) -> tuple[Tensor, CountedSteps]:
        """The checked input as a time-major (T, B, F) tensor (building the layer on its first call) and the
        steps its mask counts."""
        x = self._as_tensor(inputs, "inputs")
        if x.dim() != 3:
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected ndim=3, found '
                f"ndim={x.dim()}. Full shape received: {_shape_text(x.shape)}"
            )
        x = self._fit_features(x, x.shape)
        if self.stateful and self._expected_batch_size is None:
            self.build(tuple(x.shape))
        x_tm = (x if self.time_major else x.transpose(0, 1)).contiguous()  # (T, B, F)
        steps, batch = x_tm.shape[0], x_tm.shape[1]
        if self.stateful and batch != self._expected_batch_size:
            raise ValueError(
                "If an RNN is stateful, the batch size of the input sequences must be the same as the batch "
                f"size of the initial state. Layer {self.name!r}: expected batch size "
                f"{self._expected_batch_size}, received batch size {batch}"
            )
        if steps == 0:
            raise ValueError(
                f"inputs: layer {self.name!r} needs at least one time step, got shape {_shape_text(x.shape)}"
            )
        step_mask = self._step_mask(mask, steps, batch)
        return x_tm, EVERY_STEP if step_mask is None else CountedSteps(mask=step_mask)

    def _results(self, out: Tensor, h: Tensor, c: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Keras's return value from the engine's time-major output (T, B, H) (processing order) and the
        final states (B, H); keeps the states of a stateful layer and records activity losses."""
        if self.stateful:
            self._states = (h.detach(), c.detach())
        sequence = out if self.time_major else out.transpose(0, 1)
        output = sequence if self.return_sequences else out[-1]
        if self.return_state:
            result = (output, h, c)
            self._record_activity(result)
            return result
        self._record_activity((output,))
        return output

    def _direction_weights(self) -> DirectionWeights:
        """The Keras-layout weights as the engine's torch-layout tensors (differentiable copies, made per
        call: a cache keyed by version counters would miss changes made through ``weight.data``)."""
        w_ih, w_hh, b_ih, b_hh = torch_views_from_keras(self.kernel, self.recurrent_kernel, self.bias)
        return DirectionWeights(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)

    def _step_mask(self, mask: Any, steps: int, batch: int) -> Tensor | None:
        if mask is None:
            return None
        if isinstance(mask, (list, tuple)) and mask and not np.isscalar(mask[0]) and len(mask) != batch:
            mask = mask[0]  # Keras passes nested masks; the first one is the input's
        m = (
            mask.to(self._device())
            if isinstance(mask, Tensor)
            else torch.as_tensor(np.asarray(mask), device=self._device())
        )
        expected = (steps, batch) if self.time_major else (batch, steps)
        if m.dim() == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        if tuple(m.shape) != expected:
            order = "(steps, batch) with time_major" if self.time_major else "(batch, steps)"
            raise ValueError(f"mask: expected shape {expected} {order}, got {tuple(m.shape)}")
        m = m.to(torch.bool)
        return m if self.time_major else m.t()

    def _initial_state(self, initial_state: Sequence[Any] | None, batch: int) -> tuple[Tensor, Tensor]:
        if initial_state is None:
            if self.stateful:
                if self._states is None:
                    self._states = self._zero_states(batch)
                return self._states
            zeros = torch.zeros(batch, self.units, dtype=self.dtype, device=self._device())
            return zeros, zeros
        if isinstance(initial_state, (Tensor, np.ndarray)) or not isinstance(initial_state, (list, tuple)):
            raise ValueError(
                f"initial_state: layer {self.name!r} expects a list [h0, c0] of 2 tensors, got "
                f"{type(initial_state).__name__}"
            )
        if len(initial_state) != 2:
            raise ValueError(
                f"initial_state: layer {self.name!r} has 2 states [h0, c0], but was passed "
                f"{len(initial_state)}"
            )
        states = [self._as_tensor(s, f"initial_state[{i}]") for i, s in enumerate(initial_state)]
        for i, s in enumerate(states):
            if tuple(s.shape) != (batch, self.units):
                raise ValueError(
                    f"initial_state[{i}]: expected shape ({batch}, {self.units}) (batch, units), "
                    f"got {tuple(s.shape)}"
                )
        return states[0], states[1]

    # -- config ---------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Keras's config: Keras 3's keys (DTypePolicy dict, seed, zero_output_for_mask), or tf-keras's
        (dtype string, time_major, implementation) for a layer that came from a Keras 2 config."""
        legacy = self._keras2
        config: dict[str, Any] = {
            "name": self.name,
            "trainable": self._trainable,
            "dtype": dtype_name(self.dtype)
            if legacy
            else {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": dtype_name(self.dtype)},
                "registered_name": None,
            },
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
        }
        if legacy and self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        if legacy:
            config["time_major"] = self.time_major
        else:
            config["zero_output_for_mask"] = self.zero_output_for_mask
        config.update(
            {
                "units": self.units,
                "activation": activation_to_keras(self.activation),
                "recurrent_activation": activation_to_keras(self.recurrent_activation),
                "use_bias": self.use_bias,
                "kernel_initializer": serialize(self.kernel_initializer, legacy=legacy),
                "recurrent_initializer": serialize(self.recurrent_initializer, legacy=legacy),
                "bias_initializer": serialize(self.bias_initializer, legacy=legacy),
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_regularizer": serialize(self.kernel_regularizer, legacy=legacy),
                "recurrent_regularizer": serialize(self.recurrent_regularizer, legacy=legacy),
                "bias_regularizer": serialize(self.bias_regularizer, legacy=legacy),
                "activity_regularizer": serialize(self.activity_regularizer, legacy=legacy),
                "kernel_constraint": serialize(self.kernel_constraint, legacy=legacy),
                "recurrent_constraint": serialize(self.recurrent_constraint, legacy=legacy),
                "bias_constraint": serialize(self.bias_constraint, legacy=legacy),
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
            }
        )
        if legacy:
            config["implementation"] = self._implementation_arg
        else:
            config["seed"] = self.seed
        if self.time_major and not legacy:
            config["time_major"] = True
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keras2: bool | None = None) -> LSTM:
        """A layer from a Keras 3 or tf-keras config dict (the ``"config"`` member of a serialized layer, or
        the whole serialized ``{"class_name": "LSTM", "config": {...}}``). ``keras2``: the config comes from
        Keras 2 (keeps Keras 2's hard_sigmoid; ``implementation`` 0 becomes 1, as tf-keras's
        ``from_config`` does); by default detected from tf-keras's ``time_major`` / ``implementation``
        keys."""
        config = unwrap_config(config, ("LSTM",))
        if keras2 is None:
            keras2 = "time_major" in config or "implementation" in config
        config = dict(config)
        config.pop("cell", None)
        if keras2 and config.get("implementation") == 0:
            config["implementation"] = 1
        layer = cls(**config)
        layer._set_keras2(keras2)
        return layer

    def extra_repr(self) -> str:
        return (
            f"{self.units}, name={self.name!r}, input_size={self.input_size}, "
            f"return_sequences={self.return_sequences}"
        )


def unwrap_config(config: Mapping[str, Any], class_names: tuple[str, ...]) -> Mapping[str, Any]:
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if "class_name" in config and "config" in config and isinstance(config["config"], Mapping):
        if config["class_name"] not in class_names:
            raise ValueError(
                f"config: expected class_name in {list(class_names)}, got {config['class_name']!r}"
            )
        return config["config"]
    return config


def apply_constraints(module: nn.Module) -> None:
    """Apply the Keras weight constraints of every :class:`LSTM` in ``module`` (itself included), in place and
    without gradient tracking: call it after each ``optimizer.step()`` (Keras's optimizers do this after every
    update; constraints are never applied at initialisation)."""
    for sub in module.modules():
        if isinstance(sub, LSTM):
            sub.apply_constraints()


def constrain(optimizer: torch.optim.Optimizer, module: nn.Module):
    """Make ``optimizer.step()`` apply :func:`apply_constraints` to ``module`` after every step (a torch step
    post-hook). Returns the hook's handle (``handle.remove()`` undoes it)."""
    return optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: apply_constraints(module))


# Public re-exports of the Keras object modules, Keras-style: unilstm.keras.initializers.GlorotUniform, ...
_ = (initializers, regularizers, constraints, snake_case)
