# ruff: noqa: N803, N806, E501
"""The fast kernel computes what the reference loop computes: outputs, states and every gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import (
    ACCEPTED,
    REJECTED,
    assert_same,
    case_strategies,
    fast_case,
    outputs_and_grads,
    projection,
)

import unilstm
from unilstm.activations import resolve
from unilstm.kernels import dispatch
from unilstm.kernels.fast import accepts, run_direction_fast
from unilstm.kernels.reference import DirectionRun, run_direction_reference
from unilstm.steps import EVERY_STEP, CountedSteps


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(F=st.integers(1, 5), **case_strategies(ACCEPTED, ACCEPTED, max_steps=6, max_hidden=5))
def test_fast_equals_reference_float64(
    seed, T, B, F, H, proj, mask_kind, reverse, zero, mx_kind, mh_kind, act, ract, bias
):
    P = projection(seed, H, proj)
    case = fast_case(seed, T, B, F, H, P, mask_kind, reverse, zero, mx_kind, mh_kind, act, ract, bias, torch.float64)
    assert accepts(case[0], case[3], case[4])
    assert_same(case, atol=1e-10, rtol=1e-9, skip_overflow=True)


@pytest.mark.parametrize("act", ACCEPTED)
def test_every_accepted_activation_as_both(act):
    ract = "sigmoid" if act == "exponential" else act  # exp gates overflow within a few steps
    case = fast_case(7, 4, 3, 3, 4, 0, "gaps", False, False, "none", "shared", act, ract, True, torch.float64)
    assert_same(case, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 8e-2), (torch.float16, 2e-2)]
)
def test_low_precision_close_to_reference(dtype, tol):
    case = fast_case(3, 5, 3, 4, 6, 2, "gaps", True, False, "shared", "per_gate", "tanh", "sigmoid", True, dtype)
    assert_same(case, atol=tol, rtol=tol)


def test_rejects_callables_and_non_elementwise():
    case = fast_case(0, 3, 2, 3, 4, 0, "none", False, True, "none", "none", "tanh", "sigmoid", True, torch.float64)
    x, _, _, w, run = case
    assert accepts(x, w, run)
    for name in REJECTED:
        assert not accepts(x, w, DirectionRun(resolve(name), run.recurrent_activation))
    assert not accepts(x, w, DirectionRun(lambda v: torch.tanh(v), run.recurrent_activation))
    assert not accepts(x[:0], w, run)
    assert "glu" in REJECTED and "softmax" in REJECTED


def test_registered_before_reference_and_picked_where_native_refuses():
    names = [entry[0] for entry in dispatch.DIRECTION_KERNELS]
    assert names.index("native") < names.index("fast") < names.index("reference")
    # mish has no C implementation, bfloat16 no C loop: both come here
    for act, dtype in (("mish", torch.float32), ("relu", torch.bfloat16)):
        case = fast_case(0, 3, 2, 3, 4, 0, "gaps", False, True, "none", "none", act, "sigmoid", True, dtype)
        assert dispatch.select_direction_kernel(case[0], case[3], case[4]) is run_direction_fast


def test_second_backward_through_the_same_graph_gives_the_first_gradients():
    """A second backward through one call (retain_graph=True) used to raise: it now runs the forward again
    (the first backward wrote over the saved gates) and gives the first backward's gradients."""
    case = fast_case(0, 4, 2, 3, 4, 2, "gaps", False, False, "none", "none", "relu", "sigmoid", True,
                     torch.float64)
    out, h, c = run_direction_fast(*case)
    loss = out.sum() + h.sum() + c.sum()
    loss.backward(retain_graph=True)
    first = case[0].grad.clone()
    loss.backward()
    assert torch.equal(case[0].grad, 2 * first)


def test_double_backward_equals_the_reference_loops():
    """Double backward used to raise (a once_differentiable backward): it now goes through the reference
    loop, which autograd records."""
    case = fast_case(0, 3, 2, 3, 4, 0, "none", False, True, "none", "none", "tanh", "sigmoid", True, torch.float64)
    x, h0, c0, w, run = case
    grads = []
    for kernel in (run_direction_fast, run_direction_reference):
        out, _, _ = kernel(x, h0, c0, w, run)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(gx.sum(), (x, w.w_hh)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def _layer_pair(**kwargs):
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, 6, **kwargs).double()
    return layer


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(activation="relu", num_layers=2, bidirectional=True, proj_size=3),
        dict(recurrent_dropout=0.3, input_dropout=0.2, masked_output="previous"),
        dict(go_backwards=True, masked_output="previous", activation="elu"),
        dict(bidirectional=True, masked_output="previous"),
    ],
)
def test_layer_fast_equals_reference(kwargs):
    layer = _layer_pair(**kwargs)
    x = torch.randn(7, 2, 5, dtype=torch.float64, requires_grad=True)  # (T, N, F)
    mask = torch.rand(2, 7) > 0.3  # (N, T)
    mask[1, :3] = True
    results = []
    for kernel in ("reference", "fast"):
        dispatch.force_kernel(kernel)
        try:
            gen = torch.Generator().manual_seed(5)
            out, (h, c) = layer(x, mask=mask, training=True, generator=gen)
            loss = out.sin().sum() + h.cos().sum() + c.sum()
            grads = torch.autograd.grad(loss, [x, *layer.parameters()])
            results.append([out, h, c, *grads])
        finally:
            dispatch.force_kernel(None)
    for e, g in zip(*results, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


def test_autocast_bfloat16_cpu():
    torch.manual_seed(0)
    for kwargs in (dict(), dict(activation="relu", recurrent_dropout=0.2), dict(masked_output="previous")):
        layer = unilstm.LSTM(4, 8, **kwargs)
        x = torch.randn(6, 3, 4)  # (T, N, F)
        mask = torch.ones(3, 6, dtype=torch.bool)  # (N, T)
        mask[0, 4:] = False
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = layer(x, mask=mask)
            loss = out.float().sum() + h.float().sum()
        loss.backward()
        assert torch.isfinite(out.float()).all()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_inside_torch_compile():
    torch.manual_seed(0)
    for kwargs in (dict(), dict(activation="relu", masked_output="previous")):
        layer = unilstm.LSTM(4, 8, **kwargs)
        head = torch.nn.Linear(8, 1)

        def model(x, mask, layer=layer, head=head):
            out, _ = layer(x, mask=mask)
            return head(out).sum()

        compiled = torch.compile(model, backend="eager")
        x = torch.randn(5, 2, 4)  # (T, N, F)
        mask = torch.ones(2, 5, dtype=torch.bool)  # (N, T)
        mask[1, 1] = False
        expected = model(x, mask)
        got = compiled(x, mask)
        torch.testing.assert_close(got, expected)
        got.backward()
        assert layer.weight_hh_l0.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "padding"),
    [
        (dict(masked_output="previous"), "right"),
        (dict(masked_output="previous", num_layers=2, bidirectional=True, proj_size=3), "right"),
        (dict(go_backwards=True), "none"),
        (dict(go_backwards=True, bidirectional=True, num_layers=2), "none"),
        (dict(go_backwards=True, masked_output="previous"), "left"),
        (dict(go_backwards=True, masked_output="zero", bidirectional=True), "left"),
    ],
)
def test_fused_flexible_dispatch_equals_reference(kwargs, padding):
    """Standard cells with go_backwards or right-padded "previous" masks run on torch's fused kernel and
    still compute the reference's function."""
    layer = _layer_pair(**kwargs)
    T, N = 6, 4
    x = torch.randn(T, N, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 3, 0, 1])
    steps = torch.arange(T).unsqueeze(0)
    mask = {"none": None, "right": steps < lengths.unsqueeze(1), "left": steps >= (T - lengths).unsqueeze(1)}[padding]
    h0 = torch.randn(layer.num_layers * (2 if layer.bidirectional else 1), N, layer.spec.output_size,
                     dtype=torch.float64)
    c0 = torch.randn(h0.shape[0], N, 6, dtype=torch.float64)
    step_mask = None if mask is None else mask.t()
    counted = EVERY_STEP if step_mask is None else CountedSteps(mask=step_mask)
    assert dispatch._run_fused_standard(
        layer.spec, x, h0, c0, layer.direction_weights(), counted, step_mask, False
    ) is not None
    results = []
    for kernel in ("reference", None):
        dispatch.force_kernel(kernel)
        try:
            out, (h, c) = layer(x, (h0, c0), mask=mask)
            loss = (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum()
            loss = loss + h.square().sum() + c.sum()
            grads = torch.autograd.grad(loss, [x, *layer.parameters()])
            results.append([out, h, c, *grads])
        finally:
            dispatch.force_kernel(None)
    for e, g in zip(*results, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


def test_lengths_with_gradients_avoid_torch_packed_backward_on_cpu(monkeypatch):
    """torch's packed CPU backward is very slow: with gradients a masked standard spec runs the fast kernel,
    without gradients the packed fused kernel (both compute the reference's function)."""
    calls = []
    original = dispatch.run_stack_fused
    monkeypatch.setattr(dispatch, "run_stack_fused", lambda *a, **k: calls.append(k["lengths"]) or original(*a, **k))
    layer = unilstm.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    lengths = torch.tensor([5, 2])
    out_grad, _ = layer(x, lengths=lengths)
    assert calls == []
    with torch.no_grad():
        out_fused, _ = layer(x, lengths=lengths)
    assert len(calls) == 1 and calls[0] is not None
    torch.testing.assert_close(out_grad.detach(), out_fused, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("proj", [0, 2])
def test_overflow_in_masked_rows_stays_out(monkeypatch, capturable, zero, proj):
    """Padding values never matter, not even where they overflow an exponential activation: inf in a row
    the mask drops must not become nan through a product with the mask. (The reference loop, through
    autograd, gives nan gradients there: exp's backward multiplies a zero gradient by inf.) The CUDA
    variant (capturable) computes every masked row; the CPU one skips steps where no row counts."""
    from unilstm.kernels import fast

    case = fast_case(4, 5, 3, 2, 4, proj, "gaps_empty_step", False, zero, "none", "none", "exponential",
                     "sigmoid", True, torch.float64)
    x, h0, c0, w, run = case
    with torch.no_grad():
        x[~run.step_mask] = 0.0
    expected = outputs_and_grads(run_direction_reference, *case)
    assert all(bool(torch.isfinite(t).all()) for t in expected)
    with torch.no_grad():
        x[~run.step_mask] = 1e4  # exp(1e4) = inf wherever a masked row is computed
    original = fast._step_patterns
    monkeypatch.setattr(fast, "_step_patterns", lambda m, T, **_: original(m, T, capturable))
    got = outputs_and_grads(run_direction_fast, *case)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)
