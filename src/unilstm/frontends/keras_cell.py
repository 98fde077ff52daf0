"""``keras.layers.LSTMCell`` on the unilstm engine: Keras's signature, weights (Keras layout), config and call
``h, [h, c] = cell(inputs, states, training=None)``.

The cell is the Keras door's LSTM layer (:class:`unilstm.frontends.keras.LSTM`: the same weights,
initializers, regularizers, constraints, ``get_weights``/``set_weights`` and dtype handling) reduced to one
step; :func:`unilstm.frontends.cells.one_step` computes the step through the canonical layer's
:func:`unilstm.layer.compute_stack`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .cells import one_step
from .keras import LSTM, auto_name, unwrap_config

__all__ = ["LSTMCell"]

#: Keras's LSTM arguments that its LSTMCell does not take (Keras: "Unrecognized keyword arguments").
_LAYER_ONLY = (
    "return_sequences", "return_state", "go_backwards", "stateful", "unroll", "use_cudnn", "time_major",
    "zero_output_for_mask",
)


class LSTMCell(LSTM):
    r"""``keras.layers.LSTMCell`` (Keras 3; tf-keras configs too) on unilstm's engine.

    ``LSTMCell(units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
    kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
    unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
    kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
    recurrent_dropout=0.0, seed=None, **kwargs)`` (``implementation``, ``name``, ``dtype``, ``trainable``
    among the keywords; the LSTM layer's own arguments, such as ``return_sequences``, are a ValueError as in
    Keras; ``activity_regularizer`` is not supported).

    One step (gate blocks [i, f, c, o] along 4H of the Keras-layout weights; g = ``activation``, sigma =
    ``recurrent_activation``; m_x, m_h the dropout masks in training, ones otherwise)::

        z = (x * m_x) K + (h * m_h) R + b                       kernel K (F, 4H), recurrent_kernel R (H, 4H)
        c' = sigma(z_f) * c + sigma(z_i) * g(z_c),   h' = sigma(z_o) * g(c')

    Call ``h_1, [h_1, c_1] = cell(inputs, states, training=None)``: inputs (B, F), states ``[h_0, c_0]`` each
    (B, H) (numpy or torch, cast to the cell's dtype; the first call builds the weights); returns (B, H)
    tensors. ``training=None`` means ``self.training``; the cell is created in eval mode.

    Dropout as Keras's cell: the masks (one on the input, one on h; four per gate with ``implementation=1``,
    which ``recurrent_dropout > 0`` implies) are drawn at the first training call and kept for every later
    call, so that feeding the cell step by step reuses them, until :meth:`reset_dropout_mask` or
    :meth:`reset_recurrent_dropout_mask` (an RNN layer calls both before each sequence). Here the masks are
    drawn by the engine from a generator seeded per mask period, so either reset redraws both masks.
    """

    def __init__(self, units: int, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("activity_regularizer") is not None:
            raise ValueError(
                "activity_regularizer: not supported on unilstm's LSTMCell (put it on the layer that runs "
                "the cell, or add a penalty on the returned states to the loss)"
            )
        kwargs.pop("activity_regularizer", None)
        layer_only = [name for name in _LAYER_ONLY if name in kwargs]
        if layer_only:
            raise ValueError(
                "Unrecognized keyword arguments passed to LSTMCell: "
                f"{ {name: kwargs[name] for name in layer_only} }"
            )
        if len(args) > 16:  # LSTMCell's positional parameters end with seed
            raise TypeError(f"LSTMCell takes at most 17 positional arguments, got {len(args) + 1}")
        names = (
            "activation", "recurrent_activation", "use_bias", "kernel_initializer", "recurrent_initializer",
            "bias_initializer", "unit_forget_bias", "kernel_regularizer", "recurrent_regularizer",
            "bias_regularizer", "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
            "recurrent_dropout", "seed",
        )
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"LSTMCell got multiple values for argument '{name}'")
            kwargs[name] = value
        if kwargs.get("name") is None:
            kwargs["name"] = auto_name("lstm_cell")
        super().__init__(units, **kwargs)
        self._mask_seed: int | None = None

    # -- Keras's cell API -----------------------------------------------------------------------------
    @property
    def state_size(self) -> list[int]:
        """``[units, units]``: the sizes of h and c."""
        return [self.units, self.units]

    @property
    def output_size(self) -> int:
        return self.units

    def reset_dropout_mask(self) -> None:
        """Forget the kept dropout masks: the next training call draws new ones."""
        self._mask_seed = None

    def reset_recurrent_dropout_mask(self) -> None:
        """Forget the kept dropout masks (both: they come from one generator here)."""
        self._mask_seed = None

    def _mask_generator(self, device: torch.device) -> torch.Generator:
        """A generator that draws the same masks at every call of one mask period: seeded from the cell's
        ``seed`` (or torch's global generator) at the period's first call, then re-seeded identically."""
        if self._mask_seed is None:
            source = self._generator(torch.device("cpu"))  # None: torch's global generator
            self._mask_seed = int(torch.randint(0, 2**62, (1,), generator=source).item())
        return torch.Generator(device=device).manual_seed(self._mask_seed)

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create the weights for inputs of ``input_shape`` (B, F) (F, the last entry, must be known)."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(f"input_shape: the last dimension (features) must be known, got {input_shape}")
        super().build((None, None, input_shape[-1]))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        """``(B, H)``, then ``[(B, H), (B, H)]`` for the states."""
        batch = tuple(input_shape)[0]
        return (batch, self.units), [(batch, self.units), (batch, self.units)]

    # -- the call ---------------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self, inputs: Any, states: Sequence[Any], training: bool | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``h_1, [h_1, c_1] = cell(inputs, states, training)``; shapes in the class docstring."""
        x = self._as_tensor(inputs, "inputs")
        if x.dim() != 2:
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected ndim=2 (batch, '
                f"features), found ndim={x.dim()}. Full shape received: {tuple(x.shape)}"
            )
        x = self._fit_features(x, str(tuple(x.shape)))
        h0, c0 = self._initial_state(states, int(x.shape[0]))
        training = self.training if training is None else bool(training)
        dropping = training and (0.0 < self.dropout < 1.0 or 0.0 < self.recurrent_dropout < 1.0)
        spec = self.spec(training)
        h, c = one_step(
            spec, x, h0, c0, self._direction_weights(), training=training,
            generator=self._mask_generator(x.device) if dropping else None,
        )
        return h, [h, c]

    # -- config -----------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Keras 3's LSTMCell config (tf-keras's for a cell made by ``from_config(..., keras2=True)``)."""
        config = super().get_config()
        for name in (*_LAYER_ONLY, "activity_regularizer", "batch_input_shape"):
            config.pop(name, None)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keras2: bool | None = None) -> LSTMCell:
        """A cell from a Keras 3 or tf-keras LSTMCell config (or the whole serialized
        ``{"class_name": "LSTMCell", "config": {...}}``); ``keras2`` as :meth:`LSTM.from_config`."""
        config = unwrap_config(config, ("LSTMCell",))
        if keras2 is None:
            keras2 = "implementation" in config
        config = dict(config)
        if keras2 and config.get("implementation") == 0:
            config["implementation"] = 1
        cell = cls(**config)
        cell._set_keras2(keras2)
        return cell

    def extra_repr(self) -> str:
        return f"{self.units}, name={self.name!r}, input_size={self.input_size}"
