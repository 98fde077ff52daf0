"""``unilstm.torch.LSTMCell``: a drop-in replacement for ``torch.nn.LSTMCell`` on the unilstm engine.

Same constructor, parameter names, shapes, order and initialisation (``torch.manual_seed(s)`` gives identical
weights), ``state_dict`` interchangeable both ways, the same ``forward(input, hx=None)`` for batched (B, F)
and unbatched (F,) input, and torch 2.13's errors (type and message) for wrong dimensions, sizes and state
counts. The class only translates: :func:`unilstm.frontends.cells.one_step` computes the step through
the canonical layer's :func:`unilstm.layer.compute_stack`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import layer as _layer
from ..spec import LSTMSpec
from .cells import one_step

__all__ = ["LSTMCell"]

State = tuple[Tensor, Tensor]

#: torch's C++ scalar-type names, used in its "mat1 and mat2 must have the same dtype" message.
_SCALAR_NAMES = {
    torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float", torch.float64: "Double"
}


def _scalar_name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _size(value: Tensor, dim: int) -> int:
    """``value.size(dim)`` with the IndexError torch's C++ checks raise for a missing dimension, as the
    RuntimeError type they reach Python with."""
    if dim >= value.dim():
        raise RuntimeError(
            f"Dimension out of range (expected to be in range of [{-max(value.dim(), 1)}, "
            f"{max(value.dim(), 1) - 1}], but got {dim})"
        )
    return int(value.size(dim))


class LSTMCell(nn.Module):
    r"""torch.nn.LSTMCell's interface on the unilstm engine.

    ``LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)``

    One step (gate blocks [i, f, g, o] along 4H)::

        i = sigma(W_ii x + b_ii + W_hi h + b_hi)      f, o alike
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        c' = f * c + i * g,     h' = o * tanh(c')

    Shapes (B batch, F = input_size, H = hidden_size):
        input: (B, F), or (F,) unbatched.
        hx: optional ``(h_0, c_0)``, each (B, H) ((H,) unbatched); zeros when omitted.
        returns ``(h_1, c_1)``, each (B, H) ((H,) unbatched).

    Parameters: ``weight_ih`` (4H, F), ``weight_hh`` (4H, H), ``bias_ih`` and ``bias_hh`` (4H,) (None when
    ``bias=False``), all U(-1/sqrt(H), 1/sqrt(H)) drawn in that order, exactly as torch does.

    Where torch 2.13 checks, the errors are its own: ValueError for input or states of the wrong number of
    dimensions, RuntimeError "input has inconsistent input_size", "Input batch size B doesn't match hiddenK
    batch size", "hiddenK has inconsistent hidden_size" and "lstm_cell expects two hidden states". An input of
    another dtype than the parameters is torch's RuntimeError "mat1 and mat2 must have the same dtype"; states
    of another dtype than the input are a RuntimeError naming the state (torch promotes a c_0 of a wider
    dtype; this class does not). ``input_size=0`` is refused at the call (NotImplementedError);
    ``hidden_size=0`` returns empty states as torch does.
    """

    __constants__ = ["input_size", "hidden_size", "bias"]

    #: a drop-in computes what torch computes: CPU training stays on the torch door's kernel choice
    _native_training = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        # torch.empty makes torch's own errors for a negative or non-integer size
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), device=device, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), device=device, dtype=dtype))
        self.bias_ih: nn.Parameter | None
        self.bias_hh: nn.Parameter | None
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, device=device, dtype=dtype))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)) in registration order (0 bounds
        for H = 0), so ``torch.manual_seed(s)`` gives torch.nn.LSTMCell's values."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        """torch's repr: ``LSTMCell(10, 20)``, ``LSTMCell(10, 20, bias=False)``."""
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        return text

    # -- the call ----------------------------------------------------------------------------------------
    def forward(self, input: Tensor, hx: State | None = None) -> State:  # noqa: A002 - torch's name
        """``h_1, c_1 = cell(input, (h_0, c_0))``; shapes in the class docstring."""
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for index, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {value.dim()}D instead"
                    )
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            states: tuple[Tensor, ...] = (zeros, zeros)
        elif not batched:
            states = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))  # torch's IndexError for a 1-tuple
        else:
            states = tuple(hx)
        h, c = self._checked_states(input, states)
        if self.hidden_size == 0:  # nothing to compute (the engine needs H >= 1); torch returns (B, 0)
            h_1, c_1 = input.new_zeros((input.size(0), 0)), input.new_zeros((input.size(0), 0))
        else:
            weights = _layer.DirectionWeights(
                self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None
            )
            h_1, c_1 = one_step(
                self._spec(), input, h, c, weights, training=self.training,
                native_training=self._native_training,
            )
        if not batched:
            return h_1.squeeze(0), c_1.squeeze(0)
        return h_1, c_1

    def _spec(self) -> LSTMSpec:
        """The engine's description of this cell, made once (a plain LSTM step: tanh, sigmoid, no dropout)."""
        spec = self.__dict__.get("_cell_spec")
        if spec is None:
            spec = LSTMSpec(input_size=self.weight_ih.shape[1], hidden_size=self.hidden_size, bias=self.bias)
            self.__dict__["_cell_spec"] = spec
        return spec

    def _checked_states(self, input: Tensor, states: tuple[Tensor, ...]) -> State:
        """torch's lstm_cell checks, in its order and with its messages; then dtype and device."""
        if len(states) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        if _size(input, 1) != self.weight_ih.shape[1]:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(1)} expected {self.weight_ih.shape[1]}"
            )
        for index, value in enumerate(states):
            if _size(input, 0) != _size(value, 0):
                raise RuntimeError(
                    f"Input batch size {input.size(0)} doesn't match hidden{index} batch size {value.size(0)}"
                )
            if _size(value, 1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{index} has inconsistent hidden_size: got {value.size(1)}, "
                    f"expected {self.hidden_size}"
                )
            if value.dim() != 2:  # an unbatched input with (B, H) states: (1, B, H) after torch's unsqueeze
                raise RuntimeError(
                    f"hidden{index}: expected a 2-D (batch, hidden_size) state for this input, got shape "
                    f"{tuple(value.shape)}"
                )
        weight_dtype = self.weight_ih.dtype
        if input.dtype != weight_dtype:
            raise RuntimeError(
                "mat1 and mat2 must have the same dtype, but got "
                f"{_scalar_name(input.dtype)} and {_scalar_name(weight_dtype)}"
            )
        for index, value in enumerate(states):
            if value.dtype != input.dtype:
                raise RuntimeError(
                    f"hidden{index}: expected dtype {input.dtype} (the input's dtype), got {value.dtype}"
                )
        if input.device != self.weight_ih.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{input.device} and parameter tensor at {self.weight_ih.device}"
            )
        for value in states:
            if value.device != input.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found input tensor at "
                    f"{input.device} and hidden tensor at {value.device}"
                )
        if self.weight_ih.shape[1] == 0:
            raise NotImplementedError(
                "LSTMCell: input_size=0 is not supported by unilstm (the engine needs at least one input "
                "feature)"
            )
        return states[0], states[1]
