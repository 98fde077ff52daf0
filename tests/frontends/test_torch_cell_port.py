"""PyTorch's own tests of nn.LSTMCell, run on unilstm.torch.LSTMCell in its place.

Ported from PyTorch 2.13:

* ``test/test_nn.py`` (``TestNN``): ``test_LSTM_cell`` (six steps fed back, with and without bias, then
  backward), ``test_LSTM_cell_forward_input_size``, ``test_LSTM_cell_forward_hidden_size`` and the LSTMCell
  half of ``test_RNN_cell_no_broadcasting`` (states of batch 1 or hidden size 1 and inputs of feature size
  1 are RuntimeErrors, never broadcast).
* ``torch/testing/_internal/common_modules.py``: nn.LSTMCell's ``module_db`` entry, its inputs
  (``module_inputs_torch_nn_LSTMCell``: unbatched (5,) input with (10,) states, compared with the batched
  call by ``no_batch_dim_reference_lstmcell``) and its error inputs
  (``module_error_inputs_torch_nn_LSTMCell``: type and message regex of each), run through the
  ``test/test_modules.py`` checks that apply to it:
  ``test_forward``, ``test_errors``, ``test_grad``, ``test_gradgrad``, ``test_non_contiguous_tensors``,
  ``test_factory_kwargs``, ``test_repr``, ``test_pickle`` and ``test_if_train_and_eval_modes_differ``.
  ``common_modules`` needs PyTorch's test dependencies, so its inputs are rebuilt here the same way.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.testing import make_tensor
from torch.utils import _pytree as pytree

import unilstm.torch
from unilstm.torch import LSTMCell


# -- test/test_nn.py ------------------------------------------------------------------------------------
def test_LSTM_cell() -> None:  # noqa: N802 - PyTorch's test name
    # this is just a smoke test; these modules are implemented through autograd so no Jacobian test is
    # needed (the port adds a check that every leaf received a gradient)
    for bias in (True, False):
        input = torch.randn(3, 10)
        hx = torch.randn(3, 20)
        cx = torch.randn(3, 20)
        lstm = LSTMCell(10, 20, bias=bias)
        for _ in range(6):
            hx, cx = lstm(input, (hx, cx))

        (hx + cx).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())
        assert len(list(lstm.parameters())) == (4 if bias else 2)


def test_LSTM_cell_forward_input_size() -> None:  # noqa: N802
    input = torch.randn(3, 11)
    hx = torch.randn(3, 20)
    cx = torch.randn(3, 20)
    lstm = LSTMCell(10, 20)
    with pytest.raises(Exception):  # noqa: B017 - PyTorch's assertRaises(Exception, ...)
        lstm(input, (hx, cx))


def test_LSTM_cell_forward_hidden_size() -> None:  # noqa: N802
    input = torch.randn(3, 10)
    hx = torch.randn(3, 21)
    cx = torch.randn(3, 20)
    lstm = LSTMCell(10, 20)
    with pytest.raises(Exception):  # noqa: B017
        lstm(input, (hx, cx))
    with pytest.raises(Exception):  # noqa: B017
        lstm(input, (cx, hx))


def test_RNN_cell_no_broadcasting() -> None:  # noqa: N802 - the LSTMCell half of PyTorch's test
    def test(input, hx, input_size, hidden_size):
        cell = LSTMCell(input_size, hidden_size)
        with pytest.raises(RuntimeError):
            cell(input, hx)

    def test_all(hidden_size, bad_hx, good_hx, input_size, input):
        test(input, (bad_hx, good_hx), input_size, hidden_size)
        test(input, (good_hx, bad_hx), input_size, hidden_size)

    hidden_size = 20
    input_size = 10
    input = torch.randn(3, input_size)
    bad_hx = torch.randn(1, hidden_size)
    good_hx = torch.randn(3, hidden_size)

    # Test hidden/input batch size broadcasting
    test_all(hidden_size, bad_hx, good_hx, input_size, input)

    # Test hx's hidden_size vs module's hidden_size broadcasting
    bad_hx = torch.randn(3, 1)
    test_all(hidden_size, bad_hx, good_hx, input_size, input)

    # Test input's input_size vs module's input_size broadcasting
    bad_input = torch.randn(3, 1)
    test_all(hidden_size, good_hx, good_hx, input_size, bad_input)


# -- nn.LSTMCell's module_db entry ---------------------------------------------------------------------
# module_inputs_torch_nn_LSTMCell: LSTMCell(5, 10) and LSTMCell(5, 10, bias=True)
SAMPLES = [{}, {"bias": True}]


def forward_args(dtype: torch.dtype, requires_grad: bool) -> tuple:
    """module_inputs_torch_nn_LSTMCell's forward input: x (5,) with states ((10,), (10,))."""
    def make(*shape: int) -> torch.Tensor:
        return make_tensor(shape, device="cpu", dtype=dtype, requires_grad=requires_grad)

    return make(5), (make(10), make(10))


def module(kwargs: dict, dtype: torch.dtype, training: bool = True) -> LSTMCell:
    m = LSTMCell(5, 10, **kwargs)
    m.to("cpu").to(dtype)
    m.train(training)
    return m


def no_batch_dim_reference_lstmcell(m, p, *args, **kwargs):
    """common_modules' reference: the module on the input and states batched with a single item, squeezed."""
    inp, (h, c) = args
    single_batch_input_args = (inp.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0)))
    output = m(*single_batch_input_args, **kwargs)
    return (output[0].squeeze(0), output[1].squeeze(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_forward(kwargs, dtype) -> None:
    """TestModule.test_forward: the unbatched call equals its reference (the batched call, squeezed)."""
    m = module(kwargs, dtype)
    args = forward_args(dtype, requires_grad=False)
    outputs = m(*args)
    reference = no_batch_dim_reference_lstmcell(m, list(m.parameters()), *args)
    assert [tuple(o.shape) for o in outputs] == [(10,), (10,)]
    torch.testing.assert_close(outputs, reference)


ERROR_INPUTS = [  # module_error_inputs_torch_nn_LSTMCell: (input shape, state shapes, type, regex)
    ((3, 11), ((3, 20), (3, 20)), RuntimeError, "input has inconsistent input_size: got 11 expected 10"),
    ((3, 10), ((3, 21), (3, 21)), RuntimeError, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ((3, 10), ((5, 20), (5, 20)), RuntimeError, "Input batch size 3 doesn't match hidden0 batch size 5"),
    ((3, 10), ((3, 1, 1, 20), (3, 1, 1, 20)), ValueError,
     "Expected hx\\[0\\] to be 1D or 2D, got 4D instead"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("input_shape", "state_shapes", "error", "regex"), ERROR_INPUTS)
def test_errors(input_shape, state_shapes, error, regex, dtype) -> None:
    """TestModule.test_errors: LSTMCell(10, 20) called with each error input raises its type and message."""
    m = LSTMCell(10, 20).to(dtype)
    x = make_tensor(input_shape, device="cpu", dtype=dtype)
    hx = tuple(make_tensor(shape, device="cpu", dtype=dtype) for shape in state_shapes)
    with pytest.raises(error, match=regex):
        m(x, hx)


def gradients_helper(kwargs: dict, check) -> None:
    """TestModule._test_gradients_helper: ``check`` of the total derivative w.r.t. the inputs and every
    parameter, then of each parameter's partial derivative alone (float64)."""
    m = module(kwargs, torch.double)
    params = tuple(m.parameters())
    input_args = forward_args(torch.double, requires_grad=True)

    def fn_to_gradcheck(*flat_input_and_params):
        input_and_params = pytree.tree_unflatten(flat_input_and_params, flat_spec)
        output = m(*input_and_params[: len(input_args)])
        output_flattened, _ = pytree.tree_flatten(output)
        return output_flattened

    flat_input, flat_spec = pytree.tree_flatten(input_args + params)
    assert check(fn_to_gradcheck, flat_input, nondet_tol=0.0)
    old_params_requires_grad = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    for p, old in zip(params, old_params_requires_grad, strict=True):
        p.requires_grad = old
        flat_input, flat_spec = pytree.tree_flatten(input_args + params)
        assert check(fn_to_gradcheck, flat_input, nondet_tol=0.0)
        p.requires_grad = False


@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_grad(kwargs) -> None:
    """TestModule.test_grad: gradcheck (float64) of the total derivative and each parameter's."""
    gradients_helper(kwargs, gradcheck)


@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_gradgrad(kwargs) -> None:
    """TestModule.test_gradgrad: gradgradcheck (float64; nn.LSTMCell's entry supports gradgrad)."""
    gradients_helper(kwargs, gradgradcheck)


def _make_non_contiguous(obj):
    def inner(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
        out.requires_grad = t.requires_grad
        return out

    return pytree.tree_map(inner, obj)


def _grads(obj):
    return pytree.tree_map(lambda t: t.grad if isinstance(t, torch.Tensor) and t.requires_grad else None, obj)


def _zero_grad(obj) -> None:
    for t in pytree.tree_leaves(obj):
        if isinstance(t, torch.Tensor):
            t.grad = None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_non_contiguous_tensors(kwargs, training, dtype) -> None:
    """TestModule.test_non_contiguous_tensors: contiguous and non-contiguous inputs and output gradients give
    the same outputs and gradients, each output's backward through one graph (retain_graph=True)."""
    input_args = forward_args(dtype, requires_grad=True)
    m = module(kwargs, dtype, training)
    default_output = m(*input_args)
    grad_output = pytree.tree_map(lambda o: o.clone().detach_().normal_(), default_output)
    for o, g in zip(default_output, grad_output, strict=True):
        o.backward(g, retain_graph=True)
    default_input_grad = copy.deepcopy(_grads(input_args))
    default_param_grad = copy.deepcopy([p.grad for p in m.parameters()])

    nc_input_args = _make_non_contiguous(input_args)
    nc_grad_output = _make_non_contiguous(grad_output)
    for in_args, g_out in itertools.product([input_args, nc_input_args], [grad_output, nc_grad_output]):
        _zero_grad(in_args)
        _zero_grad(list(m.parameters()))
        out = m(*in_args)
        for o, g in zip(out, copy.deepcopy(g_out), strict=True):
            o.backward(g, retain_graph=True)
        torch.testing.assert_close(out, default_output)
        torch.testing.assert_close(_grads(in_args), default_input_grad, atol=1e-4, rtol=0)
        torch.testing.assert_close([p.grad for p in m.parameters()], default_param_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_factory_kwargs(dtype) -> None:
    """TestModule.test_factory_kwargs: ``device=`` and ``dtype=`` place every parameter; the meta device
    builds without touching memory."""
    m = LSTMCell(5, 10, device="cpu", dtype=dtype)
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in m.parameters())
    meta = LSTMCell(5, 10, device="meta", dtype=dtype)
    assert all(p.is_meta and p.dtype == dtype for p in meta.parameters())
    materialized = meta.to_empty(device="cpu")
    materialized.reset_parameters()
    assert all(not p.is_meta for p in materialized.parameters())


@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_repr(kwargs) -> None:
    """TestModule.test_repr: repr and str work (and equal torch's)."""
    m = module(kwargs, torch.float32)
    assert repr(m) == str(m) == repr(nn.LSTMCell(5, 10, **kwargs)) == "LSTMCell(5, 10)"


@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_pickle(kwargs) -> None:
    """TestModule.test_pickle: a pickled and reloaded module gives the same output."""
    m = module(kwargs, torch.float32)
    args = forward_args(torch.float32, requires_grad=False)
    output = m(*args)
    reloaded = pickle.loads(pickle.dumps(m))
    assert isinstance(reloaded, unilstm.torch.LSTMCell)
    torch.testing.assert_close(reloaded(*args), output)


@pytest.mark.parametrize("kwargs", SAMPLES, ids=["default", "bias"])
def test_if_train_and_eval_modes_differ(kwargs) -> None:
    """TestModule.test_if_train_and_eval_modes_differ: nn.LSTMCell's entry says they do not (no dropout)."""
    m = module(kwargs, torch.float32, training=True)
    args = forward_args(torch.float32, requires_grad=False)
    train_output = m(*args)
    m.eval()
    torch.testing.assert_close(m(*args), train_output)
