"""``mindspore.nn.LSTM`` (MindSpore 2.x) on the canonical layer: its signature, call convention, checks,
train/eval default, parameter listing and initial draw. It translates arguments and computes nothing.

Facts this relies on were measured on MindSpore 2.10.0 (CPU); see tools/fixtures/make_mindspore_fixtures.py.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeVar, cast

import numpy as np
import torch
from numpy.typing import DTypeLike
from torch import Tensor, nn

from ..formats.mindspore_ckpt import mindspore_named_parameters
from ..layer import LSTM as CanonicalLSTM  # noqa: N811 - the canonical layer, subclassed here

#: MindSpore-style dtype names for ``LSTM(dtype=...)``: ``unilstm.mindspore.float16`` reads like
#: ``mindspore.float16``.
float16, bfloat16, float32, float64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
_PARAMETER_DTYPES = {"float16": float16, "bfloat16": bfloat16, "float32": float32, "float64": float64}
_CLASS = "LSTM"  # MindSpore's messages start with "For 'LSTM', ..."


class SeqLengthError(ValueError, RuntimeError):
    """A seq_length value outside [0, T] given to a bidirectional LSTM.

    A ValueError, and also a RuntimeError because MindSpore raises RuntimeError ("Invalid seq_lengths")
    there, so code written for MindSpore catches it too."""


def check_state_dtypes(class_name: str, x: Tensor, h: Tensor, c: Tensor) -> None:
    """MindSpore's TypeError when ``hx = (h, c)`` has another dtype than ``x`` (its message, for
    ``class_name`` LSTM or LSTMCell)."""
    for name, value in (("hx[0]", h), ("hx[1]", c)):
        if value.dtype != x.dtype:
            raise TypeError(
                f"For '{class_name}', the type of '{name}' should be same as 'x', but got 'x' with type "
                f"{x.dtype} and '{name}' with type {value.dtype}"
            )


def resolve_dtype(dtype: object) -> torch.dtype:
    """The parameter dtype from a torch dtype, a numpy dtype, a string ('float16', 'float32', 'float64',
    'bfloat16') or a MindSpore dtype object (read by its name, e.g. ``Float16``)."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            # whatever np.dtype cannot read raises TypeError, handled below
            name = np.dtype(cast(DTypeLike, dtype)).name
        except TypeError:
            name = str(dtype).lower().removeprefix("mindspore.")
    if name not in _PARAMETER_DTYPES:
        raise TypeError(
            f"For '{_CLASS}', 'dtype' must be one of float16, float32, float64, bfloat16 (a torch dtype, a "
            f"numpy dtype, a string or a MindSpore dtype), got {dtype!r}"
        )
    return _PARAMETER_DTYPES[name]


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"For '{_CLASS}', the '{name}' must be int, but got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"For '{_CLASS}', the '{name}' must be int and must > 0, but got {value}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"For '{_CLASS}', the type of '{name}' should be 'bool', but got type '{type(value).__name__}' "
            f"({value!r})"
        )


def _check_dropout(dropout: object) -> None:
    # MindSpore accepts Python floats only (numpy.float64 is one); an int, even 0, is a TypeError there.
    if isinstance(dropout, bool) or not isinstance(dropout, float):
        raise TypeError(
            f"For '{_CLASS}', the type of 'dropout' must be 'float', but got '{type(dropout).__name__}' "
            f"({dropout!r}); write e.g. 0.0 or 0.5"
        )
    if math.isnan(dropout) or math.isinf(dropout):
        raise ValueError(f"For '{_CLASS}', the 'dropout' must be a legal float, but got '{dropout}'")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"For '{_CLASS}', the 'dropout' must be a number in range [0, 1) representing the probability of "
            f"an element being zeroed, but got {dropout}"
        )


def _as_tensor(name: str, value: object, device: torch.device) -> Tensor:
    """A torch tensor as given, or a numpy array moved to ``device`` (the layer's: MindSpore users pass
    host arrays and expect them to run where the network is)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device)
    raise TypeError(
        f"For '{_CLASS}', the '{name}' must be a torch.Tensor or numpy.ndarray, "
        f"but got {type(value).__name__}"
    )


def _shape_text(shape) -> str:
    return str(tuple(int(s) for s in shape))


_Cell = TypeVar("_Cell", bound="CellAPI")


class CellAPI(nn.Module):
    """MindSpore's ``Cell`` API on a torch module: ``set_train`` and the parameter listings, in the order
    :meth:`parameters_and_names` gives (the module's registration order here; the LSTM overrides it with
    MindSpore's grouping by kind)."""

    def set_train(self: _Cell, mode: bool = True) -> _Cell:
        """MindSpore's ``Cell.set_train``: training mode on (default) or off; returns the cell."""
        self.train(bool(mode))
        return self

    def parameters_and_names(
        self, name_prefix: str = "", expand: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` in registration order; ``name_prefix`` joined with a dot."""
        for name, parameter in self.named_parameters():
            yield (f"{name_prefix}.{name}" if name_prefix else name), parameter

    def get_parameters(self, expand: bool = True) -> Iterator[nn.Parameter]:
        """The parameters in MindSpore's order (see :meth:`parameters_and_names`)."""
        for _, parameter in self.parameters_and_names():
            yield parameter

    def trainable_params(self, recurse: bool = True) -> list[nn.Parameter]:
        """The parameters that require gradients, in MindSpore's order."""
        return [p for p in self.get_parameters() if p.requires_grad]

    def parameters_dict(self, recurse: bool = True) -> OrderedDict[str, nn.Parameter]:
        """``{name: parameter}`` in MindSpore's order."""
        return OrderedDict(self.parameters_and_names())


class LSTM(CellAPI, CanonicalLSTM):
    r"""``mindspore.nn.LSTM`` with MindSpore 2.x's interface, computed by unilstm's engine in PyTorch.

    Per layer and direction, per step t (gate blocks [i, f, g, o] along 4H, W and b in torch layout)::

        i, f, o = sigmoid(W_ih{i,f,o} x_t + b_ih{i,f,o} + W_hh{i,f,o} h_{t-1} + b_hh{i,f,o})
        g = tanh(W_ih{g} x_t + b_ih{g} + W_hh{g} h_{t-1} + b_hh{g})
        c_t = f * c_{t-1} + i * g,     h_t = o * tanh(c_t)

    Args:
        input_size: F, features of ``x`` (a positive int).
        hidden_size: H (a positive int).
        num_layers: L, stacked layers (default 1).
        has_bias: keep ``bias_ih`` and ``bias_hh`` (default True).
        batch_first: ``x`` and ``output`` are (B, T, ...) instead of (T, B, ...) (default False).
        dropout: a Python float in [0, 1): dropout on each layer's output but the last, in training only.
        bidirectional: D = 2 directions, outputs concatenated [forward, backward] (default False).
        dtype: the parameters' dtype, float32 by default: a torch or numpy dtype, 'float16', 'float32',
            'float64', 'bfloat16', or ``unilstm.mindspore.float16`` ....

    Call ``net(x, hx=None, seq_length=None)``; torch tensors or numpy arrays:
        x: (T, B, F), or (B, T, F) with batch_first; float16 or float32 (float64 too when hx is None).
            The step is computed in x's dtype: parameters of another dtype are cast for the call, as MindSpore
            does.
        hx: a tuple ``(h_0, c_0)``, each (L*D, B, H), the dtype of x (float16 or float32); zeros if None.
        seq_length: (B,) int32 or int64 lengths. Outputs at t >= length are 0, ``h_n``/``c_n`` are the states
            after step length-1 (h_0, c_0 for length 0), and the backward direction runs over the valid
            prefix only. Bidirectional: every length must lie in [0, T] (else :class:`SeqLengthError`);
            unidirectional: like MindSpore, a negative length acts as 0 and one beyond T as T.

    The call returns ``output, (h_n, c_n)``: output (T, B, D*H) or (B, T, D*H); h_n, c_n (L*D, B, H)
    with index ``layer * D + direction``; all in x's dtype, as torch tensors.

    Like a MindSpore Cell, the layer starts in eval mode (``net.training`` is False): call
    ``net.set_train()`` (or torch's ``net.train()``) to enable dropout. Parameters keep torch's names, so
    ``state_dict()`` moves to and from ``torch.nn.LSTM`` and ``unilstm.LSTM``; :meth:`parameters_and_names`
    lists them in MindSpore's order. The initial weights are MindSpore's draw: every parameter
    U(-1/sqrt(H), 1/sqrt(H)) from numpy's global RNG as float32, for each (layer, direction) in the order
    weight_ih, weight_hh, bias_ih, bias_hh, so ``numpy.random.seed(s)`` reproduces MindSpore bit for bit.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        has_bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: object = float32,
    ) -> None:
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("input_size", input_size)
        _check_positive_int("num_layers", num_layers)
        _check_dropout(dropout)
        _check_bool("has_bias", has_bias)
        _check_bool("batch_first", batch_first)
        _check_bool("bidirectional", bidirectional)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout adds dropout after all but the last recurrent layer, so a non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=has_bias,
            batch_first=batch_first,
            dropout=float(dropout),
            bidirectional=bidirectional,
            dtype=resolve_dtype(dtype),
        )
        self.train(False)  # MindSpore Cells start in eval mode

    has_bias = property(lambda self: self.spec.bias)

    def reset_parameters(self) -> None:
        """MindSpore's draw: U(-1/sqrt(H), 1/sqrt(H)) from numpy's global RNG, as float32 (then cast to the
        parameters' dtype), per (layer, direction): weight_ih, weight_hh, bias_ih, bias_hh."""
        bound = 1.0 / math.sqrt(self.spec.hidden_size)
        with torch.no_grad():
            for name in self._flat_weights_names:  # torch's order is exactly MindSpore's draw order
                parameter = getattr(self, name)
                draw = np.random.uniform(-bound, bound, tuple(parameter.shape)).astype(np.float32)
                parameter.copy_(torch.from_numpy(draw))

    # -- MindSpore's Cell API -----------------------------------------------------------------------------
    def parameters_and_names(
        self, name_prefix: str = "", expand: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` in MindSpore's order: every weight_ih, then weight_hh, bias_ih, bias_hh.
        ``name_prefix`` is joined with a dot, as in MindSpore."""
        yield from mindspore_named_parameters(self, name_prefix)

    # -- the call ---------------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        x: Tensor | np.ndarray,
        hx: tuple[Tensor, Tensor] | None = None,
        seq_length: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``output, (h_n, c_n) = net(x, hx, seq_length)``; shapes and rules in the class docstring."""
        spec = self.spec
        x = _as_tensor("x", x, self._parameter_device())
        if x.dim() != 3:
            raise ValueError(
                f"For '{_CLASS}', 'x' must be 3-D ((T, B, F), or (B, T, F) with batch_first), got "
                f"{x.dim()}-D with shape {_shape_text(x.shape)}"
            )
        if x.dtype not in (torch.float16, torch.float32, torch.float64):
            raise TypeError(
                f"For '{_CLASS}', 'x' must be float16 or float32 (or float64 without hx), got {x.dtype}"
            )
        if x.shape[-1] != spec.input_size:
            raise ValueError(
                f"For '{_CLASS}', 'x' must have input_size={spec.input_size} features in its last dimension, "
                f"got {x.shape[-1]} (x shape {_shape_text(x.shape)})"
            )
        steps, batch = (x.shape[1], x.shape[0]) if spec.batch_first else (x.shape[0], x.shape[1])
        if steps == 0 or batch == 0:
            raise ValueError(
                f"For '{_CLASS}', 'x' must hold at least one step and one sequence, got shape "
                f"{_shape_text(x.shape)}"
            )
        state = None if hx is None else self._initial_state_from_hx(hx, x, batch)
        lengths = None if seq_length is None else self._lengths(seq_length, steps, batch)
        # MindSpore computes in x's dtype: parameters of another dtype are cast (differentiably) for the call
        return self._checked_call(x, state, lengths=lengths, compute_dtype=x.dtype)

    def _initial_state_from_hx(self, hx: object, x: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        spec = self.spec
        if not isinstance(hx, tuple):
            raise TypeError(
                f"For '{_CLASS}', the 'hx' must be a tuple (h_0, c_0), but got {type(hx).__name__}"
                + ("; MindSpore rejects a list here too, pass tuple(hx)" if isinstance(hx, list) else "")
            )
        if len(hx) != 2:
            raise TypeError(f"For '{_CLASS}', the length of 'hx' must be 2 (h_0, c_0), but got {len(hx)}")
        device = self._parameter_device()
        h0, c0 = _as_tensor("hx[0]", hx[0], device), _as_tensor("hx[1]", hx[1], device)
        for name, value in (("x", x), ("hx[0]", h0), ("hx[1]", c0)):
            if value.dtype not in (torch.float16, torch.float32):
                raise TypeError(
                    f"For '{_CLASS}', when hx is given the element of '{name}' must be one of float32, "
                    f"float16, but got {value.dtype}"
                )
        check_state_dtypes(_CLASS, x, h0, c0)
        expected = (spec.num_layers * spec.num_directions, batch, spec.hidden_size)
        for name, value in (("hx[0]", h0), ("hx[1]", c0)):
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"For '{_CLASS}', '{name}' must have shape (num_layers * num_directions, batch, "
                    f"hidden_size) = {_shape_text(expected)}, but got {_shape_text(value.shape)}"
                )
        return h0, c0

    def _lengths(self, seq_length: object, steps: int, batch: int) -> Tensor:
        lengths = _as_tensor("seq_length", seq_length, self._parameter_device())
        if lengths.dtype not in (torch.int32, torch.int64):
            raise TypeError(
                f"For '{_CLASS}', the 'seq_length' should be one of [int32, int64], but got {lengths.dtype}"
            )
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(
                f"For '{_CLASS}', 'seq_length' must have shape (batch,) = ({batch},), but got "
                f"{_shape_text(lengths.shape)}"
            )
        if self.spec.bidirectional:
            low, high = int(lengths.min()), int(lengths.max())
            if low < 0 or high > steps:
                raise SeqLengthError(
                    f"For '{_CLASS}', every 'seq_length' value must lie in [0, {steps}] (the number of "
                    f"steps) for a bidirectional LSTM, but got min {low} and max {high}"
                )
            return lengths
        # MindSpore's unidirectional loop keeps step t where t < length: negative means 0 steps, > T all.
        return lengths.clamp(0, steps)

    def extra_repr(self) -> str:
        spec = self.spec
        parts = [f"{spec.input_size}, {spec.hidden_size}", f"num_layers={spec.num_layers}"]
        parts += [f"has_bias={spec.bias}", f"batch_first={spec.batch_first}", f"dropout={spec.dropout}"]
        parts += [f"bidirectional={spec.bidirectional}", f"dtype={self._parameter_dtype()}"]
        return ", ".join(parts)
