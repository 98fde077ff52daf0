# ruff: noqa: N803, N806
"""Which calls the native kernel serves: dispatch's choice between it, torch's fused kernel, the fast
kernel and the reference, and the fallback without the extension.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import (
    ATOL64,
    GAPS,
    RTOL64,
    assert_results_close,
    make_case,
    needs_extension,
    results,
)

import unilstm
import unilstm.torch
from unilstm.activations import resolve
from unilstm.kernels import dispatch, force_kernel, native
from unilstm.kernels.native import _extension, run_direction_native
from unilstm.kernels.reference import DirectionRun, run_direction_reference


@needs_extension
def test_dispatch_picks_native_first():
    names = [entry[0] for entry in dispatch.DIRECTION_KERNELS]
    assert names.index("native") < names.index("fast") < names.index("reference")
    x, _, _, w, run = make_case(0, mask=GAPS, act="relu", dtype=torch.float32)
    assert dispatch.select_direction_kernel(x, w, run) is run_direction_native
    x64, _, _, w64, run64 = make_case(0, act="relu", mh_kind="per_gate")
    assert dispatch.select_direction_kernel(x64, w64, run64) is run_direction_native


@needs_extension
def test_dispatch_skips_native_where_it_refuses():
    x, _, _, w, run = make_case(0, act="relu", dtype=torch.float32)
    assert native.accepts(x, w, run)
    for bad in (
        dict(activation=resolve("mish")),
        dict(recurrent_activation=resolve("hard_silu")),
        dict(activation=lambda v: torch.tanh(v)),
        dict(recurrent_activation=lambda v: torch.sigmoid(v)),
    ):
        other = DirectionRun(**{**run.__dict__, **bad})
        assert not native.accepts(x, w, other)
        picked = dispatch.select_direction_kernel(x, w, other)
        assert picked is not run_direction_native
    for dtype in (torch.bfloat16, torch.float16):
        xb, _, _, wb, runb = make_case(0, act="relu", dtype=dtype)
        assert not native.accepts(xb, wb, runb)
        assert dispatch.select_direction_kernel(xb, wb, runb) is not run_direction_native
    assert not native.accepts(x[:0], w, run)
    assert not native.accepts(x[:, :0], w, run)
    assert dispatch.select_direction_kernel(
        x, w, DirectionRun(resolve("mish"), run.recurrent_activation)
    ).__name__ == "run_direction_fast"


@needs_extension
def test_short_standard_runs_go_to_native(cell):
    """A few steps of a standard spec on the CPU skip torch's fused kernel for the native one."""
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 5)
    x = torch.randn(3, 2, 3)
    assert dispatch.short_for_fused(x) and not dispatch.short_for_fused(torch.randn(5, 2, 3))
    with torch.no_grad():
        got, (h, c) = layer(x)
        force_kernel("reference")
        try:
            want, (h_ref, c_ref) = layer(x)
        finally:
            force_kernel(None)
    assert cell.forward_runs(torch.float32, 3) == 1
    for g, e in ((got, want), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(g, e, rtol=2e-5, atol=2e-6)


def _fused_calls(monkeypatch) -> list:
    calls = []
    original = dispatch.run_stack_fused
    monkeypatch.setattr(dispatch, "run_stack_fused", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@needs_extension
def test_cpu_training_of_standard_cells_goes_to_native(cell, monkeypatch):
    """A call that autograd records runs the native kernel for a standard cell too (faster than torch's
    kernel on the CPU); the results stay within float32 rounding of torch.nn.LSTM's, gradients included."""
    fused = _fused_calls(monkeypatch)
    native.cell_threads()  # the first-use check of the thread split runs the kernel too: not counted
    cell.calls.clear()
    torch.manual_seed(0)
    reference = torch.nn.LSTM(6, 8, num_layers=2, bidirectional=True)
    layer = unilstm.LSTM(6, 8, num_layers=2, bidirectional=True)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(9, 4, 6)
    out, (h, c) = layer(x)
    (out.sum() + h.sum() + c.sum()).backward()
    assert fused == [] and cell.forward_runs(torch.float32, 9) == 4  # 2 layers x 2 directions
    cell.assert_ran(torch.float32)
    want, (h_want, c_want) = reference(x)
    (want.sum() + h_want.sum() + c_want.sum()).backward()
    for g, e in ((out, want), (h, h_want), (c, c_want)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(layer.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


@needs_extension
@pytest.mark.parametrize("case", ["no_grad", "torch_door", "autocast", "inter_layer_dropout"])
def test_where_torch_kernel_still_runs_standard_cells(case, monkeypatch):
    """torch's own kernel keeps standard cells: without gradients (inference: its oneDNN forward is fast), in
    the torch door (bit for bit torch.nn.LSTM), under autocast (it lowers the precision, as torch.nn.LSTM
    does) and with inter-layer dropout in training (its masks, from the same seed, are torch.nn.LSTM's)."""
    fused = _fused_calls(monkeypatch)
    torch.manual_seed(0)
    layers = 2 if case == "inter_layer_dropout" else 1
    dropout = 0.5 if case == "inter_layer_dropout" else 0.0
    reference = torch.nn.LSTM(6, 8, num_layers=layers, dropout=dropout)
    cls = unilstm.torch.LSTM if case == "torch_door" else unilstm.LSTM
    layer = cls(6, 8, num_layers=layers, dropout=dropout)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(9, 4, 6)
    if case == "no_grad":
        with torch.no_grad():
            got, want = layer(x)[0], reference(x)[0]
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = layer(x)[0], reference(x)[0]
    elif case == "inter_layer_dropout":
        torch.manual_seed(5)
        got = layer(x)[0]
        torch.manual_seed(5)
        want = reference(x)[0]
    else:
        got, want = layer(x)[0], reference(x)[0]
    assert len(fused) == 1
    assert torch.equal(got, want)


@needs_extension
@pytest.mark.parametrize("case", ["torch_door", "autocast", "inter_layer_dropout"])
def test_masked_training_never_takes_torch_packed_backward(case, monkeypatch):
    """Where torch's kernel keeps standard cells, a masked run with gradients still avoids its packed CPU
    backward (20-60x slower than the native kernel's)."""
    fused = _fused_calls(monkeypatch)
    cls = unilstm.torch.LSTM if case == "torch_door" else unilstm.LSTM
    layer = cls(6, 8, num_layers=2, dropout=0.5 if case == "inter_layer_dropout" else 0.0)
    x, lengths = torch.randn(7, 3, 6), torch.tensor([7, 4, 2])
    if case == "torch_door":
        original = dispatch.run_packed_fused
        monkeypatch.setattr(
            dispatch, "run_packed_fused", lambda *a, **k: fused.append(1) or original(*a, **k)
        )
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        layer(packed)[0].data.sum().backward()
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x, lengths=lengths)[0].float().sum().backward()
    else:
        layer(x, lengths=lengths)[0].sum().backward()
    assert fused == []


@needs_extension
def test_forced_native_hands_refused_runs_to_reference():
    """force_kernel("native") skips accepts: run_direction_native computes a run it refuses with the
    reference."""
    case = make_case(4, mask=GAPS, act="mish", zero=False)
    assert not native.accepts(case[0], case[3], case[4])
    assert_results_close(results(run_direction_native, *case), results(run_direction_reference, *case),
                         rtol=0, atol=0)


def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(_extension, "_lstm_cell", None)
    assert not native.available()
    x, h0, c0, w, run = make_case(2, mask=GAPS, act="relu")
    assert not native.accepts(x, w, run)
    assert dispatch.select_direction_kernel(x, w, run) is not run_direction_native
    assert not dispatch.short_for_fused(x)
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 5, activation="relu", proj_size=2, bidirectional=True).double()
    xs = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = GAPS.t().clone()  # (N, T)
    outs = []
    for kernel in (None, "native", "reference"):
        force_kernel(kernel)
        try:
            out, (h, c) = layer(xs, mask=mask)
            grads = torch.autograd.grad(out.sum() + h.square().sum() + c.sum(), [xs, *layer.parameters()])
            outs.append([out, h, c, *grads])
        finally:
            force_kernel(None)
    for got in outs[:2]:
        for g, e in zip(got, outs[2], strict=True):
            torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
