"""``mindspore.nn.LSTMCell`` (MindSpore 2.x) on the unilstm engine: its signature, call convention, checks,
parameter names, eval default and the way its constructor draws from numpy's global generator. It
translates arguments; :func:`unilstm.frontends.cells.one_step` computes the step.

Facts this relies on were measured on MindSpore 2.10.0 (CPU); see
tools/fixtures/make_mindspore_cell_fixtures.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .. import layer as _layer
from ..spec import LSTMSpec
from .cells import one_step
from .mindspore import CellAPI, check_state_dtypes, float32, resolve_dtype

__all__ = ["LSTMCell"]

_CLASS = "LSTMCell"  # MindSpore's messages start with "For 'LSTMCell', ..."
_OLD_API = (
    "The arguments of `nn.LSTMCell` from old MindSpore version(<1.6) are detected, if you still need use "
    "single LSTM layer, please use `nn.LSTM` instead."
)
_OLD_KEYWORDS = ("batch_size", "dropout", "bidirectional")


def _check_size(name: str, value: object) -> None:
    """MindSpore's validator.check_positive_int, with its messages (a bool is an int there, and refused)."""
    if not isinstance(value, int):
        raise TypeError(f"For '{_CLASS}', the '{name}' must be int, but got '{type(value).__name__}'")
    if isinstance(value, bool) or value <= 0:
        raise (TypeError if isinstance(value, bool) else ValueError)(
            f"For '{_CLASS}', the '{name}' must be int and must > 0, but got '{value}' with type "
            f"'{type(value).__name__}'."
        )


def _as_tensor(name: str, value: object, device: torch.device) -> Tensor:
    """A torch tensor as given, or a numpy array moved to ``device`` (as the MindSpore LSTM door; MindSpore's
    own cell refuses numpy arrays)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device)
    raise TypeError(
        f"For '{_CLASS}', the '{name}' must be a torch.Tensor or numpy.ndarray, "
        f"but got {type(value).__name__}"
    )


class LSTMCell(CellAPI):
    r"""``mindspore.nn.LSTMCell`` with MindSpore 2.x's interface, computed by unilstm's engine in PyTorch.

    ``LSTMCell(input_size, hidden_size, has_bias=True, dtype=float32)``

    One step (gate blocks [i, f, g, o] along 4H, W and b in torch's layout, which is MindSpore's)::

        i, f, o = sigmoid(W_ih{i,f,o} x + b_ih{i,f,o} + W_hh{i,f,o} h + b_hh{i,f,o})
        g = tanh(W_ih{g} x + b_ih{g} + W_hh{g} h + b_hh{g})
        c' = f * c + i * g,     h' = o * tanh(c')

    Args:
        input_size: F (a positive int).
        hidden_size: H (a positive int).
        has_bias: keep ``bias_ih`` and ``bias_hh`` (a bool).
        dtype: keyword only (MindSpore refuses it positionally): the parameters' dtype, float32 by default; a
            torch or numpy dtype, 'float16', 'float32', 'float64', 'bfloat16' or a MindSpore dtype.

    MindSpore < 1.6 arguments (a fourth positional argument, ``batch_size``, ``dropout``, ``bidirectional``)
    raise MindSpore's ValueError pointing to ``nn.LSTM``.

    Call ``h_1, c_1 = cell(x, (h_0, c_0))``; torch tensors or numpy arrays (MindSpore's cell takes only its
    tensors):
        x: (B, F), float16 or float32 (float64 too, an extension: MindSpore refuses it), the parameters'
            dtype.
        hx: a tuple ``(h_0, c_0)`` (required, as in MindSpore), each (B, H) in x's dtype; a state of batch 1
            is broadcast over the batch, as MindSpore's arithmetic does.
        returns ``(h_1, c_1)``, each (B, H), torch tensors in x's dtype.

    Errors: MindSpore's type for each check. Where MindSpore fails inside an operator (MatMul, Mul, AddExt),
    the same type with a message naming the argument, the expected and the received value.

    Parameters ``weight_ih`` (4H, F), ``weight_hh`` (4H, H), ``bias_ih``, ``bias_hh`` (4H,) (None without
    bias), the names MindSpore gives them; ``state_dict`` moves to and from ``torch.nn.LSTMCell``. Like a
    MindSpore Cell the cell starts in eval mode (it has no dropout: the mode changes nothing). The initial
    weights are U(-1/sqrt(H), 1/sqrt(H)), drawn the way MindSpore's constructor uses numpy's global generator:
    a normal array per parameter (MindSpore overwrites it), then one seed per parameter for the uniform draw.
    ``numpy.random.seed(s)`` therefore makes the weights reproducible and leaves numpy's generator where
    MindSpore leaves it; the values themselves differ from MindSpore's, whose uniform draw is its own C++
    generator.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        has_bias: bool = True,
        *old_arguments: object,
        dtype: object = float32,
        **old_keywords: object,
    ) -> None:
        if old_arguments or any(name in old_keywords for name in _OLD_KEYWORDS):
            raise ValueError(_OLD_API)
        if old_keywords:
            raise TypeError(
                f"LSTMCell.__init__() got an unexpected keyword argument '{next(iter(old_keywords))}'"
            )
        if not isinstance(has_bias, bool):
            raise TypeError(
                f"For '{_CLASS}', the type of 'has_bias' should be 'bool', but got type "
                f"'{type(has_bias).__name__}'."
            )
        _check_size("hidden_size", hidden_size)
        _check_size("input_size", input_size)
        try:
            parameter_dtype = resolve_dtype(dtype)
        except TypeError as error:
            raise TypeError(str(error).replace("For 'LSTM'", f"For '{_CLASS}'")) from None
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.has_bias = has_bias
        shapes: list[tuple[int, ...]] = [(4 * hidden_size, input_size), (4 * hidden_size, hidden_size)]
        if has_bias:
            shapes += [(4 * hidden_size,), (4 * hidden_size,)]
        for shape in shapes:
            np.random.randn(*shape)  # MindSpore's constructor draws these normal arrays, then overwrites them
        self.weight_ih = nn.Parameter(torch.empty(shapes[0], dtype=parameter_dtype))
        self.weight_hh = nn.Parameter(torch.empty(shapes[1], dtype=parameter_dtype))
        self.bias_ih: nn.Parameter | None
        self.bias_hh: nn.Parameter | None
        if has_bias:
            self.bias_ih = nn.Parameter(torch.empty(shapes[2], dtype=parameter_dtype))
            self.bias_hh = nn.Parameter(torch.empty(shapes[3], dtype=parameter_dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        self.train(False)  # MindSpore Cells start in eval mode

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter in order, each from a seed drawn from numpy's global
        generator the way MindSpore's ``Uniform`` initializer draws it (``randint(1, 2**63)``)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                seed = int(np.random.randint(low=1, high=(1 << 63), dtype=np.int64))
                generator = torch.Generator().manual_seed(seed)
                draw = torch.empty(parameter.shape, dtype=torch.float32)
                draw.uniform_(-bound, bound, generator=generator)
                parameter.copy_(draw)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, has_bias={self.has_bias}, dtype={self.weight_ih.dtype}"
        )

    # -- the call -----------------------------------------------------------------------------------------
    def forward(self, x: Tensor | np.ndarray, hx: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``h_1, c_1 = cell(x, (h_0, c_0))``; shapes and rules in the class docstring."""
        device = self.weight_ih.device
        x = _as_tensor("x", x, device)
        if not isinstance(hx, tuple):
            raise TypeError(
                f"For '{_CLASS}', the 'hx' must be a tuple (h_0, c_0), but got {type(hx).__name__}"
                + ("; MindSpore rejects a list here too, pass tuple(hx)" if isinstance(hx, list) else "")
            )
        if len(hx) != 2:
            raise TypeError(f"For '{_CLASS}', the length of 'hx' must be '2', but got '{len(hx)}'")
        h, c = _as_tensor("hx[0]", hx[0], device), _as_tensor("hx[1]", hx[1], device)
        for name, value in (("x", x), ("hx[0]", h), ("hx[1]", c)):
            if value.dtype not in (torch.float16, torch.float32, torch.float64):
                raise TypeError(
                    f"For '{_CLASS}', the '{name}' should be one of [float32, float16] (float64 too in "
                    "unilstm), "
                    f"but got '{value.dtype}'."
                )
        parameter_dtype = self.weight_ih.dtype
        if x.dtype != parameter_dtype:
            raise TypeError(
                f"For '{_CLASS}', 'x' must have the parameters' dtype {parameter_dtype} (MindSpore's MatMul "
                f"takes no mixed dtypes), but got {x.dtype}; cast x or build the cell with dtype={x.dtype}"
            )
        check_state_dtypes(_CLASS, x, h, c)
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"For '{_CLASS}', 'x' must have shape (batch, input_size) with input_size={self.input_size}, "
                f"but got {tuple(x.shape)}"
            )
        batch = int(x.shape[0])
        states = []
        for name, value in (("hx[0]", h), ("hx[1]", c)):
            if value.dim() != 2 or value.shape[1] != self.hidden_size or value.shape[0] not in (batch, 1):
                raise ValueError(
                    f"For '{_CLASS}', '{name}' must have shape (batch, hidden_size) = "
                    f"({batch}, {self.hidden_size}) (or batch 1, broadcast), but got {tuple(value.shape)}"
                )
            states.append(value.expand(batch, self.hidden_size))
        weights = _layer.DirectionWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None)
        spec = self.__dict__.get("_cell_spec")
        if spec is None:  # made once: a plain LSTM step (tanh, sigmoid, no dropout)
            spec = LSTMSpec(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.has_bias)
            self.__dict__["_cell_spec"] = spec
        return one_step(spec, x, states[0], states[1], weights, training=self.training)
