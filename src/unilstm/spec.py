"""The one framework-neutral description of an LSTM stack.

Every front door (Keras, MindSpore, torch) translates its arguments into an :class:`LSTMSpec`; every kernel
reads only the spec. The spec is the union of what the three frameworks can express, so options that only
one framework has (Keras's recurrent dropout, torch's projections) combine freely with the others.

Per step, for each layer and direction (gate blocks in the order [i, f, g, o] along the 4H axis)::

    z  = (x_t * m_x) @ W_ih^T + b_ih + (h_{t-1} * m_h) @ W_hh^T + b_hh     z: (B, 4H)
    i, f, o = recurrent_activation(z_i), recurrent_activation(z_f), recurrent_activation(z_o)
    c_t = f * c_{t-1} + i * activation(z_g)                                   (B, H)
    h_t = o * activation(c_t)            (then h_t = h_t @ W_hr^T when proj_size > 0)  (B, P or H)

where ``m_x`` and ``m_h`` are Keras-style variational dropout masks (ones when not training). With a step
mask, a masked step keeps ``h`` and ``c`` unchanged and outputs either zeros or the previous step's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

ActivationLike = str | None | Callable[[torch.Tensor], torch.Tensor]
MaskedOutput = Literal["zero", "previous"]


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _require_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not (0.0 <= float(value) <= 1.0) or math.isnan(float(value)):
        raise ValueError(f"{name} must be a float in [0, 1], got {value}")


@dataclass(frozen=True)
class LSTMSpec:
    """What an LSTM stack computes, independent of any framework's API.

    Attributes:
        input_size: features of the input, or ``None`` until inferred from the first input.
        hidden_size: H, the size of the cell state ``c``.
        num_layers: L, stacked layers; layer k > 0 reads the (concatenated) output of layer k - 1.
        bias: whether ``b_ih`` and ``b_hh`` exist.
        batch_first: inputs and outputs are (B, T, F) instead of (T, B, F).
        dropout: torch/MindSpore dropout on each layer's output except the last (training only).
        bidirectional: D = 2 directions per layer, outputs concatenated [forward, backward].
        proj_size: P > 0 projects ``h`` to P features with ``W_hr`` (torch); 0 means no projection.
        activation: cell/output activation g (Keras ``activation``); ``None`` means linear.
        recurrent_activation: gate activation (Keras ``recurrent_activation``).
        input_dropout: Keras ``dropout``: one mask per call on each layer's input, reused at every step.
        recurrent_dropout: Keras ``recurrent_dropout``: one mask per call on ``h_{t-1}``, reused per step.
        per_gate_dropout: draw four independent masks, one per gate block (Keras does this whenever
            ``recurrent_dropout > 0``), instead of one mask shared by the four gates.
        go_backwards: Keras: process the sequence reversed in time and return outputs in processing order.
        masked_output: what a masked step outputs: ``"zero"`` (packed sequences, MindSpore's seq_length,
            Keras ``zero_output_for_mask``) or ``"previous"`` (Keras's default: the last unmasked output,
            zeros before the first one).
        stateful: keep the final states between calls and use them as the next call's initial states.
    """

    input_size: int | None
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    activation: ActivationLike = "tanh"
    recurrent_activation: ActivationLike = "sigmoid"
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    per_gate_dropout: bool = False
    go_backwards: bool = False
    masked_output: MaskedOutput = "zero"
    stateful: bool = False

    def __post_init__(self) -> None:
        if self.input_size is not None:
            _require_int("input_size", self.input_size, 1)
        _require_int("hidden_size", self.hidden_size, 1)
        _require_int("num_layers", self.num_layers, 1)
        _require_int("proj_size", self.proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size, got proj_size={self.proj_size} "
                f"and hidden_size={self.hidden_size}"
            )
        for name in ("dropout", "input_dropout", "recurrent_dropout"):
            _require_rate(name, getattr(self, name))
        if self.masked_output not in ("zero", "previous"):
            raise ValueError(f"masked_output must be 'zero' or 'previous', got {self.masked_output!r}")

    @property
    def num_directions(self) -> int:
        """D: 2 for a bidirectional stack, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of ``h`` per direction: P when projecting, else H."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        """Input features of ``layer``: input_size for layer 0, D * output_size above it."""
        if layer == 0:
            if self.input_size is None:
                raise ValueError("input_size is not known yet: give it or call the layer once")
            return self.input_size
        return self.num_directions * self.output_size

    def with_input_size(self, input_size: int) -> LSTMSpec:
        """A copy of this spec with ``input_size`` filled in."""
        return replace(self, input_size=input_size)

    @property
    def is_standard_cell(self) -> bool:
        """True when the cell is torch's: tanh activation, sigmoid gates, no recurrent dropout."""
        return (
            self.activation == "tanh"
            and self.recurrent_activation == "sigmoid"
            and self.input_dropout == 0.0
            and self.recurrent_dropout == 0.0
        )
