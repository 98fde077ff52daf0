# ruff: noqa: N803, N806
"""The activations of the fast kernel, each with a hand-written derivative.

``grad(g, x, y)`` returns ``g * f'(x)`` where ``y = f(x)``; ``x`` is None when ``y_only`` (the derivative is a
function of the output alone, so the kernel keeps only outputs). Each derivative matches what autograd
computes for the function in :mod:`unilstm.activations`, including its choice at the kinks. ONNX's
parametric activations (:class:`~unilstm.activations.ParametricActivation`, f with numbers alpha, beta) get
their entry from :func:`act_entry`:

    affine            f = a x + b               f' = a
    leaky_relu        f = x (x > 0), a x        f' = 1 (x > 0), a          (torch: the kink takes a)
    thresholded_relu  f = x (x > a), 0          f' = 1 (x > a), 0
    scaled_tanh       f = a tanh(b x)           f' = a b (1 - tanh(b x)^2)
    hard_sigmoid      f = clip(a x + b, 0, 1)   f' = a where 0 <= a x + b <= 1 (torch's clamp: bounds in)
    elu               f = x (x > 0), a (e^x - 1)  f' = 1 (x > 0), a e^x
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import activations as A

__all__ = ["act_entry", "supported_activation"]


@dataclass(frozen=True)
class _Act:
    """An activation ``fn`` with its derivative: ``grad(g, x, y) = g * fn'(x)`` (x None when ``y_only``)."""

    fn: Callable[[Tensor], Tensor]
    y_only: bool
    grad: Callable[[Tensor, Tensor | None, Tensor], Tensor]
    inplace: Callable[[Tensor], Tensor] | None = None
    #: grad_out(g, y, out): ``g * f'`` written into ``out`` (which may be ``y`` itself), for y_only ones
    grad_out: Callable[[Tensor, Tensor, Tensor], object] | None = None


def _ind(cond: Tensor, like: Tensor) -> Tensor:
    return cond.to(like.dtype)


def _grad_mish(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    sp = F.softplus(x)
    tsp = torch.tanh(sp)
    z = torch.exp(x)
    dsp = torch.where(x > 20.0, torch.ones_like(x), z / (z + 1.0))
    return g * (tsp + x * (1.0 - tsp * tsp) * dsp)


def _grad_hard_sigmoid_keras2(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    v = 0.2 * x + 0.5
    return g * (0.2 * _ind((v >= 0.0) & (v <= 1.0), g))


def _grad_hard_silu(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    s = x + 3.0
    hs = F.relu6(s) / 6.0
    return g * (hs + x * _ind((s > 0.0) & (s < 6.0), g) / 6.0)


def _grad_squareplus(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    return g * (0.5 * (1.0 + x / torch.sqrt(x * x + 4.0)))


def _grad_sparse_plus(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    inner = g * ((x + 1.0) / 2.0)
    return torch.where(x <= -1.0, torch.zeros_like(g), torch.where(x >= 1.0, g, inner))


def _grad_softsign(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    return g / (1.0 + torch.abs(x)) ** 2


def _grad_tanh_shrink(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    return g * torch.tanh(x) ** 2


def _grad_log_sigmoid(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
    assert x is not None
    return g * torch.sigmoid(-x)


_aten = torch.ops.aten
_sigmoid_bw = _aten.sigmoid_backward.default
_tanh_bw = _aten.tanh_backward.default
_threshold_bw = _aten.threshold_backward.default
_hardtanh_bw = _aten.hardtanh_backward.default
_elu_bw = _aten.elu_backward.default
_leaky_bw = _aten.leaky_relu_backward.default
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

# The fused aten backward ops are what autograd itself calls for these functions: one op each.
_ACTS: dict[Callable, _Act] = {
    torch.tanh: _Act(
        torch.tanh, True, lambda g, x, y: _tanh_bw(g, y), torch.tanh_,
        lambda g, y, out: _aten.tanh_backward.grad_input(g, y, grad_input=out),
    ),
    torch.sigmoid: _Act(
        torch.sigmoid, True, lambda g, x, y: _sigmoid_bw(g, y), torch.sigmoid_,
        lambda g, y, out: _aten.sigmoid_backward.grad_input(g, y, grad_input=out),
    ),
    torch.relu: _Act(
        torch.relu, True, lambda g, x, y: _threshold_bw(g, y, 0), torch.relu_,
        lambda g, y, out: _aten.threshold_backward.grad_input(g, y, 0, grad_input=out),
    ),
    A.linear: _Act(A.linear, True, lambda g, x, y: g, lambda v: v),
    A.exponential: _Act(A.exponential, True, lambda g, x, y: g * y, torch.exp_),
    A.hard_sigmoid: _Act(A.hard_sigmoid, True, lambda g, x, y: _hardtanh_bw(g, y, 0.0, 1.0).mul_(1.0 / 6.0)),
    A.hard_sigmoid_keras2: _Act(A.hard_sigmoid_keras2, False, _grad_hard_sigmoid_keras2),
    A.hard_silu: _Act(A.hard_silu, False, _grad_hard_silu),
    A.elu: _Act(A.elu, False, lambda g, x, y: _elu_bw(g, 1.0, 1, 1, False, x)),
    A.celu: _Act(A.celu, False, lambda g, x, y: _elu_bw(g, 1.0, 1, 1, False, x)),
    A.selu: _Act(A.selu, False, lambda g, x, y: _elu_bw(g, _SELU_ALPHA, _SELU_SCALE, 1, False, x)),
    A.gelu: _Act(A.gelu, False, lambda g, x, y: _aten.gelu_backward.default(g, x, approximate="tanh")),
    A.silu: _Act(A.silu, False, lambda g, x, y: _aten.silu_backward.default(g, x)),
    A.softplus: _Act(A.softplus, False, lambda g, x, y: _aten.softplus_backward.default(g, x, 1, 20)),
    A.softsign: _Act(A.softsign, False, _grad_softsign),
    A.relu6: _Act(A.relu6, True, lambda g, x, y: _hardtanh_bw(g, y, 0.0, 6.0)),
    # leaky_relu's sign is the sign of its input: the output decides
    A.leaky_relu: _Act(A.leaky_relu, True, lambda g, x, y: _leaky_bw(g, y, 0.2, False)),
    A.mish: _Act(A.mish, False, _grad_mish),
    A.squareplus: _Act(A.squareplus, False, _grad_squareplus),
    A.sparse_plus: _Act(A.sparse_plus, False, _grad_sparse_plus),
    A.tanh_shrink: _Act(A.tanh_shrink, False, _grad_tanh_shrink),
    A.soft_shrink: _Act(A.soft_shrink, False, lambda g, x, y: _aten.softshrink_backward.default(g, x, 0.5)),
    A.hard_shrink: _Act(A.hard_shrink, False, lambda g, x, y: _aten.hardshrink_backward.default(g, x, 0.5)),
    A.hard_tanh: _Act(A.hard_tanh, True, lambda g, x, y: _hardtanh_bw(g, y, -1.0, 1.0)),
    A.log_sigmoid: _Act(A.log_sigmoid, False, _grad_log_sigmoid),
}


def _parametric_grad(p: A.ParametricActivation) -> Callable[[Tensor, Tensor | None, Tensor], Tensor]:
    a, b, kind = p.alpha, p.beta, p.kind

    def grad(g: Tensor, x: Tensor | None, y: Tensor) -> Tensor:
        assert x is not None
        if kind == "affine":
            return g * a
        if kind == "leaky_relu":
            return _leaky_bw(g, x, a, False)
        if kind == "thresholded_relu":
            return torch.where(x > a, g, torch.zeros_like(g))
        if kind == "scaled_tanh":
            return _tanh_bw(g, torch.tanh(x * b)) * (a * b)
        if kind == "hard_sigmoid":
            v = x * a + b
            return g * (a * _ind((v >= 0.0) & (v <= 1.0), g))
        return _elu_bw(g, a, 1, 1, False, x)  # "elu"

    return grad


@functools.lru_cache(maxsize=256)
def _parametric_entry(p: A.ParametricActivation) -> _Act:
    # cached: one entry per value, so the kernel configurations that hold it compare equal (CUDA-graph keys)
    return _Act(p, False, _parametric_grad(p))


def act_entry(fn: Callable) -> _Act | None:
    """The fast kernel's entry (function and derivative) for the resolved activation ``fn``, None where it
    has none (a user's callable, softmax ...)."""
    if isinstance(fn, A.ParametricActivation):
        return _parametric_entry(fn)
    return A.kernel_entry(_ACTS, fn)


def supported_activation(fn: Callable) -> bool:
    """True when the fast kernel has a hand-written derivative for ``fn`` (a resolved activation)."""
    return act_entry(fn) is not None
