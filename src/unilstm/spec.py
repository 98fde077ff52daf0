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

Cell variants (each off by default; any combination, with every option above)::

    a = LN_ih((x_t * m_x) @ W_ih^T),  r = LN_hh((h_{t-1} * m_h) @ W_hh^T)      layer_norm (else no LN)
    z = a + r + b_ih + b_hh;   z_f += forget_bias
    z_i += p_i * c_{t-1};  z_f += p_f * c_{t-1}                                   peepholes
    z_i, z_f, z_g = clip(z_i, z_f, z_g, -gate_clip, gate_clip)                    (ONNX clip)
    i = sigma(z_i);  f = 1 - i (coupled_gates) or sigma(z_f);  c~ = f * c_{t-1} + i * g(z_g)
    c~ = clip(c~, -cell_clip, cell_clip)                                          (TF1 cell_clip)
    z_o += p_o * c~;  z_o = clip(z_o, -gate_clip, gate_clip);  o = sigma(z_o)
    h~ = o * g_out(LN_c(c~))    (g_out = output_activation, by default g)
    h~ = clip(h~ @ W_hr^T, -proj_clip, proj_clip)                                 proj_size > 0
    c_t = d_c * c_{t-1} + (1 - d_c) * c~;   h_t = d_h * h_{t-1} + (1 - d_h) * h~  zoneout

``LN(v) = (v - mean(v)) / sqrt(var(v) + layer_norm_eps) * gain + bias`` over the last axis (4H for the
pre-activations, H for the cell; biased variance), each with its own gain and bias. Zoneout draws
``d_c, d_h`` ~ Bernoulli(zoneout_cell / zoneout_hidden) per step and unit while training and uses their
expectations (the rates) otherwise. The output of step t is h_t.
"""

from __future__ import annotations

import functools
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


def _require_finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a finite float, got {type(value).__name__} {value!r}")


def _require_positive_or_none(name: str, value: object) -> None:
    if value is None:
        return
    _require_finite(name, value)
    assert isinstance(value, (int, float))
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0 or None, got {value}")


#: ``output_activation``'s default: the output activation is ``activation`` (every framework but ONNX)
SAME_AS_ACTIVATION = "same"


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
        layer_norm: normalise the input and recurrent pre-activations (4H) and the cell state before the
            output activation (H), each with its own gain and bias (Ba et al. 2016; Haste's
            LayerNormLSTM with biases).
        layer_norm_eps: epsilon inside the square root of the layer normalisations.
        peepholes: c_{t-1} feeds the input and forget gates and c_t the output gate through per-unit
            weights p_i, p_f, p_o (Gers and Schmidhuber; ONNX ``P``, TF1 ``use_peepholes``).
        gate_clip: clip every gate pre-activation to [-gate_clip, gate_clip] before its activation (ONNX
            ``clip``); None: no clip.
        cell_clip: clip the new cell state to [-cell_clip, cell_clip] (TF1 ``cell_clip``).
        proj_clip: clip the projected h to [-proj_clip, proj_clip] (TF1 ``proj_clip``; needs proj_size).
        coupled_gates: f = 1 - i (ONNX ``input_forget``); the forget block of the weights is then unused.
        zoneout_hidden: zoneout rate on h (Krueger et al. 2016): the probability that a unit keeps its
            previous value at a step while training; inference mixes with this weight.
        zoneout_cell: the same on c.
        forget_bias: added to the forget gate's pre-activation at run time (TF1 ``forget_bias``).
        output_activation: the activation applied to the cell state for h (ONNX's ``h``);
            ``"same"`` (the default) uses ``activation`` (Keras, torch, MindSpore).
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
    layer_norm: bool = False
    layer_norm_eps: float = 1e-5
    peepholes: bool = False
    gate_clip: float | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    coupled_gates: bool = False
    zoneout_hidden: float = 0.0
    zoneout_cell: float = 0.0
    forget_bias: float = 0.0
    output_activation: ActivationLike = SAME_AS_ACTIVATION

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
        for name in ("zoneout_hidden", "zoneout_cell"):
            _require_rate(name, getattr(self, name))
        for name in ("gate_clip", "cell_clip", "proj_clip"):
            _require_positive_or_none(name, getattr(self, name))
        if self.proj_clip is not None and self.proj_size == 0:
            raise ValueError("proj_clip needs a projection: give proj_size > 0")
        _require_finite("forget_bias", self.forget_bias)
        _require_finite("layer_norm_eps", self.layer_norm_eps)
        if self.layer_norm_eps <= 0.0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")

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
    def cell_output_activation(self) -> ActivationLike:
        """The activation that turns the cell state into h: ``output_activation`` unless it is ``"same"``,
        then ``activation``."""
        if isinstance(self.output_activation, str) and self.output_activation == SAME_AS_ACTIVATION:
            return self.activation
        return self.output_activation

    @functools.cached_property
    def cell_variants(self) -> tuple[str, ...]:
        """The names of the cell variants this spec uses (empty for the cell the three frameworks share)."""
        used = []
        if self.layer_norm:
            used.append("layer_norm")
        if self.peepholes:
            used.append("peepholes")
        for name in ("gate_clip", "cell_clip", "proj_clip"):
            if getattr(self, name) is not None:
                used.append(name)
        if self.coupled_gates:
            used.append("coupled_gates")
        for name in ("zoneout_hidden", "zoneout_cell", "forget_bias"):
            if getattr(self, name) != 0.0:
                used.append(name)
        if self.cell_output_activation != self.activation:
            used.append("output_activation")
        return tuple(used)

    @functools.cached_property
    def draws_in_training(self) -> bool:
        """Whether training mode changes what is computed: some dropout (between layers of a stack, on the
        inputs, on the recurrent state) or zoneout draws masks; otherwise a call in training mode computes
        the inference numbers."""
        return bool(
            (self.dropout and self.num_layers > 1)
            or self.input_dropout
            or self.recurrent_dropout
            or self.zoneout_hidden
            or self.zoneout_cell
        )

    @functools.cached_property
    def is_standard_cell(self) -> bool:
        """True when the cell is torch's: tanh activation, sigmoid gates, no recurrent dropout, no cell
        variant."""
        return (
            self.activation == "tanh"
            and self.recurrent_activation == "sigmoid"
            and self.input_dropout == 0.0
            and self.recurrent_dropout == 0.0
            and not self.cell_variants
        )
