"""PyTorch's own module tests for nn.LSTM, run on unilstm.torch.LSTM in its place.

Ported from PyTorch 2.13: ``test_grad``, ``test_gradgrad`` and ``test_non_contiguous_tensors`` of
``test/test_modules.py`` (``TestModule``, over ``module_db``), with the inputs of nn.LSTM's ``module_db``
entry (``module_inputs_torch_nn_LSTM`` in ``torch/testing/_internal/common_modules.py``; that module needs
PyTorch's test dependencies, so its inputs are rebuilt here the same way): two layers, input size 2, hidden
size 3, every combination of bias, batch_first, bidirectional and proj_size 0/2, each unbatched input alone
and with initial states, in training and eval mode. The unbatched runs have 2 and 3 steps: the torch door's
short runs, which the native kernel computes. PyTorch's own checks are kept (tolerances included); the
partial-derivative loops of ``_test_gradients_helper`` run gradcheck's fast mode (one random direction per
check) to keep the suite quick, the total derivative the full check.

Before double backward and repeated backward were fixed in the native kernel, test_grad failed (gradcheck
runs several backward passes through one call), test_gradgrad failed, and test_non_contiguous_tensors
failed (it calls backward on each of output, h_n and c_n with retain_graph=True)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.testing import make_tensor
from torch.utils import _pytree as pytree

import unilstm.torch
from unilstm.kernels import native


@dataclass(frozen=True)
class Sample:
    """One ModuleInput of nn.LSTM's module_db entry: constructor kwargs and forward arguments."""

    kwargs: dict
    with_states: bool

    def __str__(self) -> str:
        flags = ["bias" if self.kwargs["bias"] else "nobias", "bf" if self.kwargs["batch_first"] else "tf",
                 "bi" if self.kwargs["bidirectional"] else "uni", f"proj{self.kwargs['proj_size']}",
                 "hx" if self.with_states else "nohx"]
        return "-".join(flags)

    def forward_args(self, dtype: torch.dtype, requires_grad: bool) -> tuple:
        """module_inputs_torch_nn_LSTM's forward inputs: x (2, 2) alone, or x (3, 2) with hx."""
        def make(*shape: int) -> torch.Tensor:
            return make_tensor(shape, device="cpu", dtype=dtype, requires_grad=requires_grad)

        if not self.with_states:
            return (make(2, 2),)
        layers = 4 if self.kwargs["bidirectional"] else 2
        h_out = self.kwargs["proj_size"] or 3
        return make(3, 2), (make(layers, h_out), make(layers, 3))


SAMPLES = [
    Sample({"input_size": 2, "hidden_size": 3, "num_layers": 2, "proj_size": proj, "batch_first": bf,
            "bias": bias, "bidirectional": bidir}, with_states)
    for bias, bf, bidir, proj in itertools.product((False, True), (False, True), (False, True), (0, 2))
    for with_states in (False, True)
]

needs_extension = pytest.mark.skipif(not native.available(), reason=native.unavailable_reason())


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """One intra-op thread, and two (the native kernel then runs a layer's two directions at once)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def module(sample: Sample, dtype: torch.dtype, training: bool) -> unilstm.torch.LSTM:
    m = unilstm.torch.LSTM(**sample.kwargs)
    m.to("cpu").to(dtype)
    m.train(training)
    return m


def gradients_helper(sample: Sample, training: bool, check, partials: bool = True) -> None:
    """TestModule._test_gradients_helper: ``check`` (gradcheck or gradgradcheck, in fast mode) of the total
    derivative w.r.t. the inputs and every parameter, then (``partials``) of each parameter's partial
    derivative alone."""
    m = module(sample, torch.double, training)
    params = tuple(m.parameters())
    input_args = sample.forward_args(torch.double, requires_grad=True)

    def fn_to_gradcheck(*flat_input_and_params):
        input_and_params = pytree.tree_unflatten(flat_input_and_params, flat_spec)
        new_input_args = input_and_params[: len(input_args)]
        output = m(*new_input_args)
        output_flattened, _ = pytree.tree_flatten(output)
        return output_flattened

    grad_input = input_args + params
    flat_input, flat_spec = pytree.tree_flatten(grad_input)
    assert check(fn_to_gradcheck, flat_input, nondet_tol=0.0, fast_mode=True)
    if not partials:
        return

    old_params_requires_grad = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    for p, old in zip(params, old_params_requires_grad, strict=True):
        p.requires_grad = old
        flat_input, flat_spec = pytree.tree_flatten(input_args + params)
        assert check(fn_to_gradcheck, flat_input, nondet_tol=0.0, fast_mode=True)
        p.requires_grad = False


BIDIRECTIONAL = [sample for sample in SAMPLES if sample.kwargs["bidirectional"]]


@needs_extension
@pytest.mark.parametrize("sample", SAMPLES, ids=str)
def test_grad(sample, one_thread):
    """TestModule.test_grad (float64): gradcheck of unilstm.torch.LSTM with nn.LSTM's module_db inputs,
    the total derivative and each parameter's alone (training mode: with dropout 0, eval computes the
    same)."""
    gradients_helper(sample, True, gradcheck)


@needs_extension
@pytest.mark.parametrize("sample", BIDIRECTIONAL, ids=str)
def test_grad_both_directions_at_once(sample):
    """test_grad's total derivative on two threads, where the native kernel runs a layer's two directions
    at once."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients_helper(sample, True, gradcheck, partials=False)
    finally:
        torch.set_num_threads(before)


@needs_extension
@pytest.mark.parametrize("sample", SAMPLES, ids=str)
def test_gradgrad(sample, one_thread):
    """TestModule.test_gradgrad (float64; nn.LSTM's entry supports gradgrad): gradgradcheck with its inputs,
    the total derivative (training mode)."""
    gradients_helper(sample, True, gradgradcheck, partials=False)


def _retain_grad(obj) -> None:
    for t in pytree.tree_leaves(obj):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.retain_grad()


def _grads(obj):
    return pytree.tree_map(lambda t: t.grad if isinstance(t, torch.Tensor) and t.requires_grad else None, obj)


def _zero_grad(obj) -> None:
    for t in pytree.tree_leaves(obj):
        if isinstance(t, torch.Tensor):
            t.grad = None


def _make_non_contiguous(obj):
    def inner(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        out = torch.repeat_interleave(t, 2, dim=-1)[..., ::2].detach()
        out.requires_grad = t.requires_grad
        return out

    return pytree.tree_map(inner, obj)


def _backward_each(output, grad_output) -> None:
    """Backward from each output that requires grad, one after the other, through the same graph."""
    flat_out, _ = pytree.tree_flatten(output)
    flat_grad, _ = pytree.tree_flatten(grad_output)
    for o, g in zip(flat_out, flat_grad, strict=True):
        if o.requires_grad:
            o.backward(g, retain_graph=True)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("sample", SAMPLES, ids=str)
def test_non_contiguous_tensors(sample, training, dtype, threads):
    """TestModule.test_non_contiguous_tensors: contiguous and non-contiguous inputs and output gradients
    give the same outputs and gradients, each output's backward run through one graph
    (retain_graph=True)."""
    input_args = sample.forward_args(dtype, requires_grad=True)
    m = module(sample, dtype, training)
    _retain_grad(input_args)

    default_output = m(*input_args)
    grad_output = pytree.tree_map(lambda o: o.clone().detach_().normal_() if o.requires_grad else None,
                                  default_output)
    _backward_each(default_output, grad_output)
    default_input_grad = copy.deepcopy(_grads(input_args))
    default_param_grad = copy.deepcopy([p.grad for p in m.parameters()])

    nc_input_args = _make_non_contiguous(input_args)
    nc_grad_output = _make_non_contiguous(grad_output)
    for in_args, g_out in itertools.product([input_args, nc_input_args], [grad_output, nc_grad_output]):
        g_out_copy = copy.deepcopy(g_out)
        _zero_grad(in_args)
        _zero_grad(list(m.parameters()))
        out = m(*in_args)
        _backward_each(out, g_out_copy)
        torch.testing.assert_close(out, default_output)
        torch.testing.assert_close(_grads(in_args), default_input_grad, atol=1e-4, rtol=0)
        torch.testing.assert_close([p.grad for p in m.parameters()], default_param_grad)
