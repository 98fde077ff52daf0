# ruff: noqa: N803, N806
"""The native kernel (``kernels/native.py`` + ``_lstm_cell.c``) computes what the reference loop computes.

Direction-level comparisons against :func:`run_direction_reference` (float64 at 1e-9, float32 against a
float64 reference), the C activation approximations against torch, dispatch, the fallback without the
extension, the refused second backward, the C argument checks, weights changed between calls and
non-contiguous inputs. The kernel has two time loops, the whole loop in C calling the BLAS gemm torch links
(where ``native.blas_gemm`` finds it) and a per-step Python loop: the ``cell`` fixture runs each test on
both and checks which entry points ran. The random property tests (tests/test_kernels_property.py) cover
native too; here every combination of the run options is enumerated once.
"""

from __future__ import annotations

import collections
import itertools
import subprocess
import sys

import pytest
import torch

import unilstm
import unilstm.torch
from unilstm.activations import REGISTRY, resolve
from unilstm.kernels import dispatch, force_kernel, native
from unilstm.kernels.native import NATIVE_ACTIVATION_IDS, run_direction_native
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference

# one registered name per C activation (silu and swish are one function)
NATIVE_NAMES = sorted({fn: name for name, fn in sorted(REGISTRY.items(), reverse=True)
                       if fn in NATIVE_ACTIVATION_IDS}.values())

needs_extension = pytest.mark.skipif(
    not native.available(), reason="unilstm.kernels._lstm_cell was not built (no C compiler at install time)"
)
RTOL64, ATOL64 = 1e-9, 1e-10

# (T=6, B=3) step mask with gaps: step 1 and step 5 mask every row, step 2 none; row 1 starts masked
GAPS = torch.tensor(
    [[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool
)


def make_case(seed, T=6, B=3, F=3, H=4, P=0, mask=None, reverse=False, zero=True, mx_kind="none",
              mh_kind="none", act="tanh", ract="sigmoid", bias="both", dtype=torch.float64, scale=1.0):
    """Inputs, weights and run, all leaves requiring grad, drawn in float64 and cast to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, s=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * (s * scale)
        return t.to(dtype).requires_grad_()

    out_size = P or H
    x = rnd(T, B, F)
    h0 = rnd(B, out_size, s=0.5)
    c0 = rnd(B, H, s=0.5)
    w = DirectionWeights(
        w_ih=rnd(4 * H, F, s=0.5),
        w_hh=rnd(4 * H, out_size, s=0.5),
        b_ih=rnd(4 * H, s=0.3) if bias in ("both", "ih") else None,
        b_hh=rnd(4 * H, s=0.3) if bias in ("both", "hh") else None,
        w_hr=rnd(P, H, s=0.5) if P else None,
    )

    def dropout_mask(kind, feat):
        if kind == "none":
            return None
        shape = (4, B, feat) if kind == "per_gate" else (B, feat)
        keep = torch.rand(*shape, generator=gen) > 0.3
        keep.view(-1)[0] = False  # at least one dropped unit
        return keep.to(dtype) / 0.7

    run = DirectionRun(
        activation=resolve(act),
        recurrent_activation=resolve(ract),
        step_mask=mask,
        reverse=reverse,
        zero_masked_output=zero,
        input_dropout_mask=dropout_mask(mx_kind, F),
        recurrent_dropout_mask=dropout_mask(mh_kind, out_size),
    )
    return x, h0, c0, w, run


def leaves_of(x, h0, c0, w):
    named = [("x", x), ("h0", h0), ("c0", c0), ("w_ih", w.w_ih), ("w_hh", w.w_hh), ("b_ih", w.b_ih),
             ("b_hh", w.b_hh), ("w_hr", w.w_hr)]
    return [(n, t) for n, t in named if t is not None and t.requires_grad]


def cast_case(x, h0, c0, w, run, dtype):
    """The same case in ``dtype``: copies of every tensor, leaves requiring grad as before."""

    def cast(t):
        return None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad)

    weights = DirectionWeights(*(cast(t) for t in (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr)))
    masks = (run.input_dropout_mask, run.recurrent_dropout_mask)
    run = DirectionRun(**{**run.__dict__, "input_dropout_mask": cast(masks[0]),
                          "recurrent_dropout_mask": cast(masks[1])})
    return cast(x), cast(h0), cast(c0), weights, run


def results(kernel, x, h0, c0, w, run, *, seed=123):
    """{name: tensor} for output, h_T, c_T and the gradient of a loss that weighs every element of the
    three results differently, w.r.t. every leaf."""
    leaves = leaves_of(x, h0, c0, w)
    out, h, c = kernel(x, h0, c0, w, run)
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)).sum() for t in (out, h, c)
    )
    grads = torch.autograd.grad(loss, [t for _, t in leaves])
    found = {"output": out, "h_T": h, "c_T": c}
    found.update({"d" + n: g for (n, _), g in zip(leaves, grads, strict=True)})
    return {k: v.detach() for k, v in found.items()}


_REFERENCE_RESULTS: dict = {}


def reference_results(key, case):
    """results(run_direction_reference, *case), computed once per key (each case runs on both loops)."""
    if key not in _REFERENCE_RESULTS:
        _REFERENCE_RESULTS[key] = results(run_direction_reference, *case)
    return _REFERENCE_RESULTS[key]


def assert_results_close(got, want, rtol, atol, context="", scaled=False):
    """Every result close; ``scaled``: atol relative to the tensor's largest magnitude (float32 sums the same
    terms in another order, and unbounded activations make values of 1e3-1e5 over 20 steps)."""
    assert got.keys() == want.keys()
    for name in want:
        g, e = got[name], want[name].to(got[name].dtype)
        assert g.shape == e.shape, f"{context} {name}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        tol = atol * max(1.0, float(want[name].abs().max())) if scaled else atol
        torch.testing.assert_close(
            g, e, rtol=rtol, atol=tol, msg=lambda m, name=name: f"{context} {name}: {m}"
        )


def assert_native_path(x, h0, c0, w, run):
    """The case really runs the C cell (run_direction_native falls back to the reference otherwise)."""
    assert native.accepts(x, w, run)
    out, _, _ = run_direction_native(x, h0, c0, w, run)
    assert type(out.grad_fn).__name__.startswith("_NativeLSTM"), type(out.grad_fn).__name__


class CountingCell:
    """Stands in for ``native._lstm_cell``: delegates every entry point and counts its calls."""

    def __init__(self, real, path):
        self.real, self.path, self.calls = real, path, collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def call(*args):
            self.calls[name] += 1
            return fn(*args)

        return call

    def loop_in_c(self, dtype):
        return self.path == "c_loop" and native.blas_gemm(dtype) != 0

    def loops(self, kind):
        """C loops of this kind (forward or backward) that ran, the two of a pair call counted."""
        return self.calls[f"{kind}_loop"] + 2 * self.calls[f"{kind}_loop_pair"]

    def forward_runs(self, dtype, T):
        """How many forward passes ran, checking that they took this fixture's path."""
        if self.loop_in_c(dtype):
            assert self.calls["forward_step"] == 0
            return self.loops("forward")
        assert self.loops("forward") == 0 and self.calls["forward_step"] % T == 0
        return self.calls["forward_step"] // T

    def assert_ran(self, dtype, backward=True):
        loop = self.loop_in_c(dtype)
        for kind in ("forward", "backward") if backward else ("forward",):
            steps = self.calls[f"{kind}_step"]
            assert (self.loops(kind) > 0 and steps == 0) if loop else (self.loops(kind) == 0 and steps > 0), (
                dict(self.calls)
            )


@pytest.fixture(params=["c_loop", "per_step"])
def cell(request, monkeypatch):
    """Runs the test on the C time loop (where the BLAS gemm is found) or the per-step Python loop."""
    native.blas_gemm(torch.float32)  # find (and check) the gemm before counting
    counting = CountingCell(native._lstm_cell, request.param)
    monkeypatch.setattr(native, "_lstm_cell", counting)
    if request.param == "per_step":
        monkeypatch.setattr(native, "_BLAS_GEMM", {})
    return counting


# -- 1. every combination of the run options, float64 --------------------------------------------------
COMBOS = list(itertools.product(
    (0, 2), ("none", "gaps"), (False, True), (True, False), ("none", "shared", "per_gate"),
    ("none", "shared", "per_gate"),
))


@needs_extension
@pytest.mark.parametrize(("P", "mask", "reverse", "zero", "mx_kind", "mh_kind"), COMBOS)
def test_all_option_combinations_float64(P, mask, reverse, zero, mx_kind, mh_kind, cell):
    key = (P, mask, reverse, zero, mx_kind, mh_kind)
    case = make_case(COMBOS.index(key), P=P, mask=GAPS if mask == "gaps" else None, reverse=reverse,
                     zero=zero, mx_kind=mx_kind, mh_kind=mh_kind)
    assert_native_path(*case)
    want = reference_results(key, case)
    got = results(run_direction_native, *case)
    assert set(got) == {"output", "h_T", "c_T", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"} | (
        {"dw_hr"} if P else set()
    )
    assert_results_close(got, want, RTOL64, ATOL64)
    cell.assert_ran(torch.float64)


@needs_extension
@pytest.mark.parametrize("bias", ["none", "ih", "hh", "both"])
@pytest.mark.parametrize("P", [0, 3])
def test_bias_variants_float64(bias, P, cell):
    case = make_case(11, T=5, B=3, F=2, H=4, P=P, mask=GAPS[:5], bias=bias, mh_kind="per_gate", zero=False)
    assert_native_path(*case)
    assert_results_close(results(run_direction_native, *case), results(run_direction_reference, *case),
                         RTOL64, ATOL64)
    cell.assert_ran(torch.float64)


@needs_extension
@pytest.mark.parametrize(
    ("T", "B", "F", "H", "P", "mx_kind", "mh_kind"),
    [
        (1, 1, 1, 1, 0, "none", "none"),
        (1, 1, 1, 1, 0, "per_gate", "per_gate"),
        (1, 1, 1, 2, 1, "per_gate", "per_gate"),
        (3, 1, 1, 1, 0, "shared", "per_gate"),
        (1, 4, 2, 3, 1, "per_gate", "shared"),
        (4, 2, 1, 5, 4, "per_gate", "per_gate"),
    ],
)
def test_degenerate_sizes_float64(T, B, F, H, P, mx_kind, mh_kind, cell):
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[0, 0] = T == 1 and B == 1  # a masked first step, except when it is the only step
    case = make_case(5, T=T, B=B, F=F, H=H, P=P, mask=mask, mx_kind=mx_kind, mh_kind=mh_kind, zero=False)
    assert_native_path(*case)
    assert_results_close(results(run_direction_native, *case), results(run_direction_reference, *case),
                         RTOL64, ATOL64)
    cell.assert_ran(torch.float64)


@needs_extension
def test_partial_requires_grad_and_unused_outputs(cell):
    """Only some leaves need gradients; the loss uses only h_T, only c_T or only the output."""
    x, h0, c0, w, run = make_case(3, P=2, mask=GAPS, reverse=True, zero=False, mx_kind="per_gate",
                                  mh_kind="shared")
    for t in (x, h0, c0, w.b_ih, w.w_hr):
        t.requires_grad_(False)
    for pick in range(3):
        grads = []
        for kernel in (run_direction_reference, run_direction_native):
            res = kernel(x, h0, c0, w, run)
            grads.append(torch.autograd.grad(res[pick].sin().sum(), [w.w_ih, w.w_hh, w.b_hh]))
        for e, g in zip(*grads, strict=True):
            torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
    with torch.no_grad():
        got = run_direction_native(x, h0, c0, w, run)
        want = run_direction_reference(x, h0, c0, w, run)
    for e, g in zip(want, got, strict=True):
        assert not g.requires_grad
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
    cell.assert_ran(torch.float64)


# -- 2. every native activation, float64 ---------------------------------------------------------------
@needs_extension
@pytest.mark.parametrize("role", ["activation", "recurrent_activation", "both"])
@pytest.mark.parametrize("act", NATIVE_NAMES)
def test_every_native_activation_float64(act, role, cell):
    act_name = act if role != "recurrent_activation" else "tanh"
    ract_name = act if role != "activation" else "sigmoid"
    # exponential grows like exp(exp(.)) over the steps: small inputs and weights keep it finite
    scale = 0.3 if act == "exponential" else 1.0
    case = make_case(17, T=5, P=2 if role == "both" else 0, mask=GAPS[:5], reverse=role == "both",
                     zero=False, mh_kind="shared", act=act_name, ract=ract_name, scale=scale)
    assert_native_path(*case)
    want = reference_results(("activation", act, role), case)
    assert all(bool(torch.isfinite(t).all()) for t in want.values()), "reference overflowed: shrink the case"
    assert_results_close(results(run_direction_native, *case), want, RTOL64, ATOL64, context=act)
    cell.assert_ran(torch.float64)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("act", "ract"), [("relu", "relu"), ("relu6", "hard_sigmoid"), ("tanh", "relu")])
def test_nan_input_propagates_like_reference(act, ract, dtype, cell):
    """A nan in x makes the reference's outputs nan from its step on; the kernel must not turn it into 0."""
    x, h0, c0, w, run = make_case(21, T=4, B=2, act=act, ract=ract, dtype=dtype)
    x = x.detach().clone()
    x[1, 0, 0] = float("nan")
    with torch.no_grad():
        want = run_direction_reference(x, h0, c0, w, run)
        got = run_direction_native(x, h0, c0, w, run)
    for name, g, e in zip(("output", "h_T", "c_T"), got, want, strict=True):
        differ = g.isnan() != e.isnan()
        assert not differ.any(), (
            f"{act}/{ract} {name}: {int(differ.sum())} elements nan in one and not the other, first at "
            f"{differ.nonzero()[0].tolist()}: got {g[differ][:4].tolist()}, reference "
            f"{e[differ][:4].tolist()}"
        )
    cell.assert_ran(dtype, backward=False)


# -- 3. float32 (polynomial exp/tanh) against the float64 reference ------------------------------------
@needs_extension
@pytest.mark.parametrize(
    ("act", "ract", "P", "mx_kind", "mh_kind"),
    [
        ("tanh", "sigmoid", 0, "none", "none"),
        ("tanh", "sigmoid", 3, "shared", "per_gate"),
        ("relu", "hard_sigmoid", 0, "per_gate", "shared"),
        ("elu", "sigmoid", 2, "none", "per_gate"),
        ("silu", "softsign", 0, "shared", "none"),
        ("softplus", "sigmoid", 0, "none", "shared"),
        ("selu", "hard_sigmoid_keras2", 0, "none", "none"),
        ("tanh", "exponential", 0, "none", "none"),
    ],
)
def test_float32_close_to_float64_reference(act, ract, P, mx_kind, mh_kind, cell):
    T, B = 20, 3
    mask = torch.rand(T, B, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[4] = False
    mask[5] = True
    scale = 0.35 if ract == "exponential" else 0.8
    case = make_case(29, T=T, B=B, F=4, H=6, P=P, mask=mask, reverse=P == 2, zero=mx_kind != "shared",
                     mx_kind=mx_kind, mh_kind=mh_kind, act=act, ract=ract, scale=scale)
    want = reference_results(("float32", act, ract, P), case)  # float64
    assert all(bool(torch.isfinite(t).all()) for t in want.values())
    case32 = cast_case(*case, torch.float32)
    assert_native_path(*case32)
    got = results(run_direction_native, *case32)
    assert all(t.dtype == torch.float32 for t in got.values())
    assert_results_close(got, want, rtol=2e-5, atol=2e-5, context=f"{act}/{ract}", scaled=True)
    cell.assert_ran(torch.float32)


# -- 4. the C activation approximations against torch --------------------------------------------------
SPECIAL = [0.0, 3.0, -3.0, 1.0, -1.0, 6.0, -6.0, 2.5, -2.5, 20.0, -20.0, 88.7, 89.0, -104.0, -110.0]
NONFINITE = [float("inf"), float("-inf"), float("nan")]


def c_activation(act_id, x, g):
    y, out = torch.full_like(x, 7.0), torch.full_like(x, 7.0)
    native._lstm_cell.activation(int(x.dtype == torch.float64), act_id, x.data_ptr(), y.data_ptr(),
                                 g.data_ptr(), out.data_ptr(), x.numel())
    return y, out


def torch_activation(fn, x, g):
    leaf = x.clone().requires_grad_()
    y = fn(leaf)
    (d,) = torch.autograd.grad(y, leaf, g)
    return y.detach(), d


def assert_same_specials(got, want, x, where):
    """nan exactly where torch gives nan, inf of the same sign exactly where torch gives inf."""
    bad = (got.isnan() != want.isnan()) | (got.isinf() != want.isinf()) | (got.isinf() & (got != want))
    assert not bad.any(), f"{where}: x={x[bad].tolist()} got {got[bad].tolist()} want {want[bad].tolist()}"


def assert_ulp_close(got, want64, want32, x, where):
    """|got - want| <= 1e-6 + 4e-6 |want| where finite, against float64 torch or, at the kinks that float32
    rounding moves (hard_sigmoid's x + 3 == 6 for x just below 3), float32 torch."""
    finite = got.isfinite() & want32.isfinite()
    close64 = (got.double() - want64).abs() <= 1e-6 + 4e-6 * want64.abs()
    close32 = (got.double() - want32.double()).abs() <= 1e-6 + 4e-6 * want32.double().abs()
    bad = finite & ~(close64 | close32)
    assert not bad.any(), (
        f"{where}: x={x[bad][:10].tolist()} got {got[bad][:10].tolist()} want {want64[bad][:10].tolist()}"
    )


@needs_extension
@pytest.mark.parametrize("act", NATIVE_NAMES)
def test_c_activation_float32_matches_torch(act):
    fn = resolve(act)
    act_id = NATIVE_ACTIVATION_IDS[fn]
    x = torch.cat([torch.linspace(-30.0, 30.0, 24001), torch.tensor(SPECIAL + NONFINITE)]).float()
    g = torch.linspace(-2.0, 2.0, x.numel()).float()
    y, d = c_activation(act_id, x, g)
    y64, d64 = torch_activation(fn, x.double(), g.double())
    y32, d32 = torch_activation(fn, x, g)
    # values: everywhere, specials included
    assert_same_specials(y, y32, x, f"{act} value")
    assert_ulp_close(y, y64, y32, x, f"{act} value")
    # derivatives: at finite inputs (at +-inf and nan torch's composite formulas give arbitrary values)
    fin = x.isfinite()
    assert_same_specials(d[fin], d32[fin], x[fin], f"{act} derivative")
    assert_ulp_close(d[fin], d64[fin], d32[fin], x[fin], f"{act} derivative")
    # without g, the C call computes y alone and leaves out untouched
    y_only, untouched = torch.full_like(x, 7.0), torch.full_like(x, 7.0)
    native._lstm_cell.activation(0, act_id, x.data_ptr(), y_only.data_ptr(), 0, untouched.data_ptr(),
                                 x.numel())
    torch.testing.assert_close(y_only, y, equal_nan=True, rtol=0, atol=0)
    assert bool((untouched == 7.0).all())


@needs_extension
def test_c_exp_overflow_and_underflow_like_torch():
    x = torch.tensor([88.0, 88.7, 88.72, 88.73, 89.0, 100.0, 1e30, float("inf"), -87.0, -100.0, -103.9,
                      -104.0, -110.0, -1e30, float("-inf"), float("nan")])
    y, _ = c_activation(NATIVE_ACTIVATION_IDS[resolve("exponential")], x, torch.ones_like(x))
    want = torch.exp(x)
    assert torch.equal(y.isinf(), want.isinf()), (y.tolist(), want.tolist())
    assert torch.equal(y.isnan(), want.isnan())
    assert bool((y[want == 0] == 0).all())
    finite = want.isfinite() & (want > 0)
    torch.testing.assert_close(y[finite], want[finite], rtol=4e-6, atol=0)


@needs_extension
@pytest.mark.parametrize("act", NATIVE_NAMES)
def test_c_activation_float64_is_exact(act):
    fn = resolve(act)
    x = torch.cat([torch.linspace(-30.0, 30.0, 3001, dtype=torch.float64), torch.tensor(SPECIAL).double()])
    g = torch.linspace(-2.0, 2.0, x.numel(), dtype=torch.float64)
    y, d = c_activation(NATIVE_ACTIVATION_IDS[fn], x, g)
    want_y, want_d = torch_activation(fn, x, g)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d, want_d, rtol=1e-12, atol=1e-14)


# -- 5. dispatch ---------------------------------------------------------------------------------------
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


# -- 6. without the extension --------------------------------------------------------------------------
def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(native, "_lstm_cell", None)
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


# -- 7. one backward per forward -----------------------------------------------------------------------
@needs_extension
def test_second_backward_through_the_same_graph_raises(cell):
    x, h0, c0, w, run = make_case(0, mask=GAPS, P=2)
    out, h, c = run_direction_native(x, h0, c0, w, run)
    loss = out.sum() + h.sum() + c.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()
    cell.assert_ran(torch.float64)


@needs_extension
def test_double_backward_is_refused():
    x, h0, c0, w, run = make_case(0)
    out, _, _ = run_direction_native(x, h0, c0, w, run)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gx.sum(), x)


# -- 8. argument checks of the C entry points ----------------------------------------------------------
@needs_extension
def test_c_entry_points_check_their_arguments():
    cell = native._lstm_cell
    assert set(NATIVE_ACTIVATION_IDS.values()) == set(range(15))
    for bad in (99, -1, 15):
        with pytest.raises(ValueError, match="activation id"):
            cell.forward_step(*([0] * 20), bad, 1)
        with pytest.raises(ValueError, match="activation id"):
            cell.forward_step(*([0] * 20), 1, bad)
        with pytest.raises(ValueError, match="activation id"):
            cell.backward_step(*([0] * 22), bad, 2)
        with pytest.raises(ValueError, match="activation id"):
            cell.backward_step(*([0] * 22), 2, bad)
        with pytest.raises(ValueError, match="activation id"):
            cell.activation(0, bad, 0, 0, 0, 0, 0)
        for loop, count in ((cell.forward_loop, 41), (cell.backward_loop, 32)):  # ..., act, ract, stride
            with pytest.raises(ValueError, match="activation id"):
                loop(*([0] * (count - 3)), bad, 1, 0)
            with pytest.raises(ValueError, match="activation id"):
                loop(*([0] * (count - 3)), 1, bad, 0)
    for loop, count in ((cell.forward_loop, 41), (cell.backward_loop, 32)):
        with pytest.raises(ValueError, match="BLAS gemm"):  # gemm address 0
            loop(*([0] * (count - 3)), 1, 2, 0)
        with pytest.raises(ValueError, match="step stride >= 0, received -4"):
            loop(*([0] * (count - 3)), 1, 2, -4)
    for fn, count in ((cell.forward_step, 22), (cell.backward_step, 24), (cell.finish_hidden, 13),
                      (cell.forward_loop, 41), (cell.backward_loop, 32), (cell.activation, 7)):
        for wrong in (0, count - 1, count + 1):
            with pytest.raises(TypeError, match="expected"):
                fn(*([0] * wrong))
        with pytest.raises(TypeError):
            fn(*([0] * (count - 1)), 1.5)
    # n = 0: nothing is read or written
    cell.activation(0, 1, 0, 0, 0, 0, 0)


# -- 9. weights changed between calls: no stale transposed copies -----------------------------------------
def _layer_results(layer, x, **kwargs):
    outs = []
    for kernel in (None, "reference"):
        force_kernel(kernel)
        try:
            gen = torch.Generator().manual_seed(9)
            out, (h, c) = layer(x, generator=gen, **kwargs)
            outs.append((out, h, c))
        finally:
            force_kernel(None)
    return outs


def _assert_layer_equals_reference(layer, x, **kwargs):
    got, want = _layer_results(layer, x, **kwargs)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
    return got[0]


@needs_extension
@pytest.mark.parametrize(
    ("kwargs", "training"),
    [
        (dict(), False),
        (dict(proj_size=3), False),
        (dict(recurrent_dropout=0.3, input_dropout=0.2), True),  # per-gate masks: gate-major copy
        (dict(recurrent_dropout=0.3, per_gate_dropout=False, proj_size=2), True),
    ],
)
def test_weight_cache_sees_in_place_changes(kwargs, training, cell):
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 5, activation="relu", **kwargs).double()
    layer.train(training)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    assert dispatch.select_direction_kernel(
        x, layer.direction_weights()[0][0], DirectionRun(torch.relu, torch.sigmoid)
    ) is run_direction_native
    with torch.no_grad():
        before = _assert_layer_equals_reference(layer, x)
        assert cell.forward_runs(torch.float64, 7) == 1
        names = ["weight_hh_l0", "weight_ih_l0"] + (["weight_hr_l0"] if layer.spec.proj_size else [])
        for name in names:
            getattr(layer, name).add_(0.1)
            after = _assert_layer_equals_reference(layer, x)
            assert not torch.allclose(after, before)
            before = after
        # an optimizer-style update
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    out, _ = layer(x)
    out.sum().backward()
    opt.step()
    with torch.no_grad():
        after = _assert_layer_equals_reference(layer, x)
        assert not torch.allclose(after, before)
    cell.assert_ran(torch.float64)


@needs_extension
def test_weight_cache_sees_changes_through_data(cell):
    """``p.data`` has its own version counter: an update through it (old-style optimizers, EMA helpers) does
    not bump ``p._version``, yet the next call must use the new values."""
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 5, activation="relu").double().eval()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        before = _assert_layer_equals_reference(layer, x)
        layer.weight_hh_l0.data.mul_(-1.0)
        after = _assert_layer_equals_reference(layer, x)
        assert cell.forward_runs(torch.float64, 4) == 2
        assert not torch.allclose(after, before)


@needs_extension
def test_weight_cache_with_load_state_dict_and_fresh_layers(cell):
    torch.manual_seed(0)
    source = unilstm.LSTM(3, 5, activation="relu", proj_size=2).double().eval()
    target = unilstm.LSTM(3, 5, activation="relu", proj_size=2).double().eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        old = _assert_layer_equals_reference(target, x)
        target.load_state_dict(source.state_dict())
        new = _assert_layer_equals_reference(target, x)
        torch.testing.assert_close(new, source(x)[0], rtol=RTOL64, atol=ATOL64)
        assert not torch.allclose(new, old)
        # assign=True swaps in new tensors
        third = unilstm.LSTM(3, 5, activation="relu", proj_size=2).double().eval()
        target.load_state_dict(third.state_dict(), assign=True)
        torch.testing.assert_close(_assert_layer_equals_reference(target, x), third(x)[0], rtol=RTOL64,
                                   atol=ATOL64)
        # layers made and dropped one after another: memory (and ids) get reused, the copies must not
        previous = None
        for seed in range(6):
            torch.manual_seed(seed)
            layer = unilstm.LSTM(3, 5, activation="relu").double().eval()
            out = _assert_layer_equals_reference(layer, x)
            if previous is not None:
                assert not torch.allclose(out, previous)
            previous = out
            del layer
    assert cell.forward_runs(torch.float64, 5) == 5 + 6  # 5 calls above and 6 fresh layers


# -- 10. non-contiguous inputs -------------------------------------------------------------------------
@needs_extension
@pytest.mark.parametrize(("P", "mh_kind"), [(0, "none"), (2, "per_gate"), (0, "shared")])
def test_non_contiguous_inputs(P, mh_kind, cell):
    x, h0, c0, w, run = make_case(8, P=P, mask=GAPS, zero=False, mx_kind="per_gate", mh_kind=mh_kind)
    gen = torch.Generator().manual_seed(3)
    # x: a batch-first tensor seen time-major; h0 and c0: transposed and strided views
    x_bf = x.detach().transpose(0, 1).contiguous().requires_grad_()
    x_nc = x_bf.transpose(0, 1)
    h_big = torch.randn(h0.shape[1], 2 * h0.shape[0], generator=gen, dtype=torch.float64, requires_grad=True)
    h0_nc = h_big[:, ::2].t()
    c_big = torch.randn(c0.shape[0], c0.shape[1] + 3, generator=gen, dtype=torch.float64, requires_grad=True)
    c0_nc = c_big[:, 1:-2]
    mask_nc = GAPS.t().contiguous().t()  # a transposed step mask
    run_nc = DirectionRun(**{**run.__dict__, "step_mask": mask_nc})
    assert not any(t.is_contiguous() for t in (x_nc, h0_nc, c0_nc, mask_nc))
    grads = []
    for kernel in (run_direction_reference, run_direction_native):
        out, h, c = kernel(x_nc, h0_nc, c0_nc, w, run_nc)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum()
        loss = loss + h.square().sum() + c.sum()
        grads.append([out, h, c, *torch.autograd.grad(loss, [x_bf, h_big, c_big, w.w_ih, w.w_hh])])
    for e, g in zip(*grads, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
    cell.assert_ran(torch.float64)


@needs_extension
@pytest.mark.parametrize("mx_kind", ["shared", "per_gate"])
def test_non_contiguous_weights_and_masks(mx_kind, cell):
    x, h0, c0, w, run = make_case(12, P=2, mask=GAPS, mx_kind=mx_kind, mh_kind="per_gate")

    def strided(t):  # same values, column-major storage
        return t.detach().t().contiguous().t().requires_grad_()

    leaves = [strided(t) for t in (w.w_ih, w.w_hh, w.w_hr)]
    w_nc = DirectionWeights(leaves[0], leaves[1], w.b_ih, w.b_hh, leaves[2])
    mx = run.input_dropout_mask
    mx_nc = mx.transpose(-1, -2).contiguous().transpose(-1, -2)
    mh_nc = run.recurrent_dropout_mask.transpose(-1, -2).contiguous().transpose(-1, -2)
    run_nc = DirectionRun(**{**run.__dict__, "input_dropout_mask": mx_nc, "recurrent_dropout_mask": mh_nc})
    assert not (leaves[0].is_contiguous() or leaves[1].is_contiguous() or mx_nc.is_contiguous())
    grads = []
    for kernel in (run_direction_reference, run_direction_native):
        out, h, c = kernel(x, h0, c0, w_nc, run_nc)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum() + h.sum()
        grads.append([out, h, c, *torch.autograd.grad(loss + c.sum(), [x, *leaves])])
    for e, g in zip(*grads, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)
    cell.assert_ran(torch.float64)


# -- 11. inputs the C loop must never read as raw buffers ------------------------------------------------
@needs_extension
def test_autocast_inference_keeps_the_parameters_dtype():
    """Under CPU autocast the products inside the kernel would come out in bfloat16, which the C loop
    would read as float32: the kernel turns autocast off, with and without autograd."""
    torch.manual_seed(0)
    lstm = unilstm.LSTM(8, 16, activation="relu")
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        want, (h_want, _) = lstm(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, (h_got, _) = lstm(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(h_got, h_want, rtol=0, atol=0)


@needs_extension
def test_mismatched_dtypes_get_torch_errors_not_raw_reads():
    """A direction whose weights or states do not share x's dtype goes to the reference loop, which
    raises torch's own error, instead of the C loop reading buffers of the wrong element size."""
    g = torch.Generator().manual_seed(0)
    x, h0, c0 = (torch.randn(*shape, generator=g) for shape in ((5, 3, 8), (3, 16), (3, 16)))
    run = DirectionRun(torch.relu, torch.sigmoid)
    weights = DirectionWeights(torch.randn(64, 8, dtype=torch.float64), torch.randn(64, 16))
    with pytest.raises(RuntimeError, match="dtype"):
        run_direction_native(x, h0, c0, weights, run)
    good = DirectionWeights(torch.randn(64, 8), torch.randn(64, 16))
    with pytest.raises(RuntimeError, match="dtype"):
        run_direction_native(x, h0.double(), c0, good, run)


@needs_extension
def test_inconsistent_shapes_get_torch_errors_not_raw_reads():
    g = torch.Generator().manual_seed(0)
    x, h0, c0 = (torch.randn(*shape, generator=g) for shape in ((5, 3, 8), (3, 16), (3, 16)))
    run = DirectionRun(torch.relu, torch.sigmoid)
    for w_ih, w_hh in (((64, 8), (64, 12)), ((60, 8), (64, 16))):
        weights = DirectionWeights(torch.randn(*w_ih), torch.randn(*w_hh))
        with pytest.raises(RuntimeError):
            run_direction_native(x, h0, c0, weights, run)
    weights = DirectionWeights(torch.randn(64, 8), torch.randn(64, 16))
    with pytest.raises(RuntimeError):  # a recurrent dropout mask for another batch size
        run_direction_native(x, h0, c0, weights, DirectionRun(torch.relu, torch.sigmoid,
                                                              recurrent_dropout_mask=torch.ones(2, 16)))


# -- 12. MKL's packed GEMM (large enough per-step products) ---------------------------------------------
@needs_extension
@pytest.mark.parametrize("steps", [5, 9])
@pytest.mark.parametrize("proj", [0, 96])
@pytest.mark.parametrize("masked", [False, True])
def test_packed_products_float32_close_to_reference(proj, masked, steps):
    """B = 16 and H = 256 make every per-step product large enough to be packed from 8 steps on (when the
    BLAS has cblas_sgemm_pack; the plain gemm otherwise): float32 against the float64 reference. At 9 steps
    without projection the recurrent weights are packed from their own layout (no transposed copy)."""
    g = torch.Generator().manual_seed(7)
    T, B, F, H = steps, 16, 24, 256
    P = proj or H

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    tensors = [rnd(T, B, F), rnd(B, P, scale=0.5), rnd(B, H, scale=0.5), rnd(4 * H, F, scale=0.05),
               rnd(4 * H, P, scale=0.05), rnd(4 * H, scale=0.1), rnd(4 * H, scale=0.1)]
    if proj:
        tensors.append(rnd(P, H, scale=0.05))
    mask = (torch.rand(T, B, generator=g) > 0.3) if masked else None
    run = DirectionRun(torch.relu, torch.sigmoid, mask, False, False)
    results = []
    for dtype, kernel in ((torch.float64, run_direction_reference), (torch.float32, run_direction_native)):
        leaves = [t.to(dtype).requires_grad_() for t in tensors]
        weights = DirectionWeights(*leaves[3:7], leaves[7] if proj else None)
        out, h, c = kernel(leaves[0], leaves[1], leaves[2], weights, run)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum() + h.sum() + c.sum()
        results.append([out, h, c, *torch.autograd.grad(loss, leaves)])
    for got, want in zip(results[1], results[0], strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5 * scale)


@needs_extension
def test_packed_product_entry_point_matches_torch():
    gemm = native.blas_gemm(torch.float32)
    pack = native._BLAS_PACK.get(torch.float32, (0, 0, 0))
    if not gemm:
        pytest.skip("no BLAS gemm exported by this torch build: the per-step loop runs instead")
    g = torch.Generator().manual_seed(3)
    for M, K, N in ((16, 256, 1024), (3, 5, 7)):  # packed (when available), plain
        a, w = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
        for trans, stored in ((0, w), (1, w.t().contiguous())):
            got = torch.empty(M, N)
            native._lstm_cell.product(0, gemm, *pack, 0, trans, M, N, K, a.data_ptr(), K, stored.data_ptr(),
                                      K if trans else N, got.data_ptr(), N)
            torch.testing.assert_close(got, a @ w, rtol=1e-5, atol=1e-4)


# -- 13. MKL's batched GEMM (the four per-gate products of per-gate recurrent dropout masks) ------------
@needs_extension
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("P", [0, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_gate_products_batched_or_four_calls(batched, P, dtype, monkeypatch):
    """Per-gate recurrent masks run their four products per step as one cblas_?gemm_batch call (where the
    BLAS exports it) or as four gemm calls: both equal the reference, forward and gradients."""
    if not native.blas_gemm(dtype):
        pytest.skip("no BLAS gemm exported by this torch build: the per-step loop runs instead")
    if batched and not native.blas_functions(dtype)[4]:
        pytest.skip("no cblas_?gemm_batch exported by this torch build: four calls run instead")
    if not batched:
        monkeypatch.setattr(native, "_BLAS_BATCH", {})
    T, B = 7, 5
    mask = torch.rand(T, B, generator=torch.Generator().manual_seed(2)) > 0.3
    case = make_case(31, T=T, B=B, F=4, H=6, P=P, mask=mask, reverse=True, mh_kind="per_gate",
                     mx_kind="per_gate", act="relu")
    want = reference_results(("per_gate_batch", P), case)
    case = cast_case(*case, dtype)
    got = results(run_direction_native, *case)
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    assert_results_close(got, want, rtol=tol, atol=tol, context=f"batched={batched}", scaled=True)


# -- 14. the cell's rows split among threads (torch's OpenMP team) --------------------------------------
@needs_extension
@pytest.mark.parametrize(
    "act, P, mask, mh_kind, reverse, zero",
    [
        ("tanh", 0, False, "none", False, True),  # the single-pass cell
        ("relu", 0, True, "shared", True, False),  # single pass, masks carried forward, reverse
        ("elu", 0, True, "per_gate", False, True),  # the per-operation cell, per-gate products
        ("tanh", 3, True, "none", False, False),  # projection: the hidden half runs as its own split task
    ],
)
def test_cell_split_among_threads_equals_one_thread(act, P, mask, mh_kind, reverse, zero, monkeypatch):
    """B * H = 4096 units per step reach the C cell's threshold for splitting its rows among torch's threads:
    two threads give exactly the bits of one, and both equal the reference."""
    if not native.blas_gemm(torch.float64) or not native._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    T, B, H = 3, 8, 512
    step_mask = torch.rand(T, B, generator=torch.Generator().manual_seed(4)) > 0.3 if mask else None
    case = make_case(37, T=T, B=B, F=5, H=H, P=P, mask=step_mask, reverse=reverse, zero=zero,
                     mh_kind=mh_kind, act=act, scale=0.3)
    got = {}
    for threads in (1, 2):
        monkeypatch.setattr(native, "cell_threads", lambda threads=threads: threads)
        got[threads] = results(run_direction_native, *case)
    for name in got[1]:
        assert torch.equal(got[1][name], got[2][name]), name
    assert_results_close(got[2], results(run_direction_reference, *case), rtol=1e-9, atol=1e-9, scaled=True)


@needs_extension
def test_cell_threads_follow_torch_where_the_split_agrees():
    """Where torch's OpenMP runtime is found, the first-use check passes and the C loop takes torch's
    intra-op thread count (a failing check would silently fall back to one thread)."""
    if not native.blas_gemm(torch.float32) or not native._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    assert native._split_step_agrees()
    assert native.cell_threads() == torch.get_num_threads()


@needs_extension
@pytest.mark.parametrize("context", ["inference_mode", "no_grad"])
def test_first_use_inside_inference_mode_or_no_grad(context, monkeypatch):
    """The first-use check of the thread split builds its own autograd graph: a first call of the layer inside
    torch.inference_mode() or torch.no_grad() runs (and the check still passes)."""
    if not native.blas_gemm(torch.float32) or not native._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    monkeypatch.setattr(native, "_CELL_THREADS", None)
    layer = unilstm.LSTM(4, 512, activation="relu")  # a flexible spec: the native kernel runs
    manager = torch.inference_mode() if context == "inference_mode" else torch.no_grad()
    with manager:
        out, _ = layer(torch.randn(3, 16, 4))
    assert out.shape == (3, 16, 512)
    assert native._CELL_THREADS is True


# -- 8. the two directions of a layer at once ---------------------------------------------------------------
@needs_extension
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(proj_size=3, masked_output="previous", activation="relu"),
    dict(recurrent_dropout=0.3, input_dropout=0.2),  # per-gate masks, drawn per direction
    dict(num_layers=2, masked_output="zero", go_backwards=True),
])
def test_bidirectional_layers_run_both_directions_at_once(cell, grad, kwargs):
    """Each layer's two directions run as one pair call of the C loops (forward and, with gradients,
    backward), with the values and gradients of the reference loop; without the C loops (the per-step
    path) one after the other."""
    at_once = cell.loop_in_c(torch.float64) and native.cell_threads() == 2
    cell.calls.clear()  # (the first-use checks above ran the loops too)
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, 6, bidirectional=True, dtype=torch.float64, **kwargs).train(True)
    x = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=grad)
    mask = None
    if "masked_output" in kwargs:
        mask = torch.rand(4, 7, generator=torch.Generator().manual_seed(2)) > 0.3

    def run(kernel):
        force_kernel(kernel)
        try:
            torch.manual_seed(1)  # the same dropout masks for both kernels
            with torch.set_grad_enabled(grad):
                out, (h, c) = layer(x, mask=mask)
                if not grad:
                    return [out, h, c]
                loss = out.sum() + h.square().sum() + c.sum()
                return [out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])]
        finally:
            force_kernel(None)

    got = run(None)
    # inference of the standard cell is torch's kernel's (dispatch.native_trains_faster)
    pairs = layer.spec.num_layers if at_once and (grad or kwargs) else 0
    assert cell.calls["forward_loop_pair"] == pairs and cell.calls["forward_loop"] == 0, dict(cell.calls)
    assert cell.calls["backward_loop_pair"] == (pairs if grad else 0), dict(cell.calls)
    assert cell.calls["backward_loop"] == 0
    want = run("reference")
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)


@needs_extension
def test_wide_hidden_thin_batch_runs_the_directions_one_after_the_other(cell):
    """At H > 256 with few sequences the pair was measured slower (1.18-1.27x at H = 512, B = 1-4)."""
    native.cell_threads()
    cell.calls.clear()
    layer = unilstm.LSTM(4, native.PAIR_MAX_HIDDEN + 1, bidirectional=True, activation="relu")
    with torch.no_grad():
        layer(torch.randn(3, native.PAIR_MIN_BATCH - 1, 4))
    assert cell.calls["forward_loop_pair"] == 0 and cell.forward_runs(torch.float32, 3) == 2


@needs_extension
@pytest.mark.parametrize("threads", [1, 4])
def test_directions_at_once_only_on_two_threads(monkeypatch, threads):
    """Measured on 2 cores only: with one thread there is nothing to share, with more each direction's
    GEMMs would give up the others."""
    x = torch.randn(3, 4, 5)
    h0, c0 = torch.zeros(2, 4, 6), torch.zeros(2, 4, 6)
    weights = tuple(
        DirectionWeights(torch.randn(24, 5), torch.randn(24, 6), None, None, None) for _ in range(2)
    )
    runs = tuple(
        DirectionRun(torch.relu, torch.sigmoid, None, reverse, True, None, None) for reverse in (False, True)
    )
    if native.blas_gemm(torch.float32) and native.cell_threads() == 2:
        assert native.pair_accepts(x, h0, c0, weights, runs)
    monkeypatch.setattr(native, "cell_threads", lambda: threads)
    assert not native.pair_accepts(x, h0, c0, weights, runs)


# -- 9. the two halves of a batch at once ----------------------------------------------------------------
@needs_extension
@pytest.mark.parametrize(("P", "mask", "reverse", "zero", "mx_kind", "mh_kind"), COMBOS)
def test_batch_halves_equal_the_reference_for_every_option_combination(P, mask, reverse, zero, mx_kind,
                                                                         mh_kind, cell):
    """run_direction_native_halves (here on B = 3: halves of 1 and 2 rows) gives the reference's values and
    gradients; the halves' loops ran as one pair call where the C loops are there."""
    key = (P, mask, reverse, zero, mx_kind, mh_kind)
    case = make_case(COMBOS.index(key), P=P, mask=GAPS if mask == "gaps" else None, reverse=reverse,
                     zero=zero, mx_kind=mx_kind, mh_kind=mh_kind)
    cell.calls.clear()
    got = results(native.run_direction_native_halves, *case)
    assert_results_close(got, reference_results(key, case), RTOL64, ATOL64)
    if cell.loop_in_c(torch.float64):
        assert (cell.calls["forward_loop_pair"], cell.calls["backward_loop_pair"]) == (1, 1), dict(cell.calls)
    with torch.no_grad():  # inference takes the pair too, without the autograd Function
        out, h, c = native.run_direction_native_halves(*case)
    torch.testing.assert_close(out, got["output"], rtol=0, atol=0)
    torch.testing.assert_close(c, got["c_T"], rtol=0, atol=0)


@needs_extension
@pytest.mark.parametrize(("hidden", "halves"), [(8, True), (512, False)])
def test_layers_split_the_batch_where_measured_faster(cell, hidden, halves):
    """From HALVES_MIN_BATCH sequences with recurrent weights of at most HALVES_MAX_WEIGHT_BYTES (H <= 256 in
    float32) a one-direction layer runs its batch's halves at once, with the reference's values and
    gradients; at H = 512 (measured slower) one loop runs."""
    at_once = halves and cell.loop_in_c(torch.float32) and native.cell_threads() == 2
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, hidden, activation="relu", recurrent_dropout=0.3, proj_size=3 if halves else 0)
    layer.train()
    batch = native.HALVES_MIN_BATCH + 1  # odd: halves of 8 and 9 rows
    x = torch.randn(4, batch, 5, requires_grad=True)
    mask = torch.rand(batch, 4, generator=torch.Generator().manual_seed(2)) > 0.3

    def run(kernel):
        force_kernel(kernel)
        try:
            torch.manual_seed(1)  # the same dropout masks for both kernels
            out, (h, c) = layer(x, mask=mask)
            loss = out.sum() + h.square().sum() + c.sum()
            return [out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])]
        finally:
            force_kernel(None)

    native.cell_threads()
    cell.calls.clear()
    got = run(None)
    assert cell.calls["forward_loop_pair"] == int(at_once), dict(cell.calls)
    assert cell.calls["backward_loop_pair"] == int(at_once), dict(cell.calls)
    want = run("reference")
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@needs_extension
@pytest.mark.parametrize("threads", [1, 4])
def test_batch_halves_only_on_two_threads(monkeypatch, threads):
    x, h0, c0 = torch.randn(3, 16, 5), torch.zeros(16, 6), torch.zeros(16, 6)
    weights = DirectionWeights(torch.randn(24, 5), torch.randn(24, 6), None, None, None)
    run = DirectionRun(torch.relu, torch.sigmoid, None, False, True, None, None)
    if native.blas_gemm(torch.float32) and native.cell_threads() == 2:
        assert native.halves_accept(x, h0, c0, weights, run)
        assert not native.halves_accept(x[:, :15], h0[:15], c0[:15], weights, run)  # below HALVES_MIN_BATCH
        # H = 256: for training only (forward alone was measured 0.98-1.07x there)
        wide = DirectionWeights(torch.randn(1024, 5), torch.randn(1024, 256), None, None, None)
        h0_wide, c0_wide = torch.zeros(16, 256), torch.zeros(16, 256)
        assert not native.halves_accept(x, h0_wide, c0_wide, wide, run)
        wide.w_hh.requires_grad_()
        assert native.halves_accept(x, h0_wide, c0_wide, wide, run)
    monkeypatch.setattr(native, "cell_threads", lambda: threads)
    assert not native.halves_accept(x, h0, c0, weights, run)


@needs_extension
def test_first_call_inside_torch_compile(tmp_path):
    """A fresh process whose first layer calls run inside torch.compile: the first-use checks (BLAS, threads)
    are opaque to the tracer, which would otherwise free tensors the C loops write into (this crashed the
    process with a corrupted heap). One-direction (batch halves) and bidirectional layers, against the
    reference loop."""
    script = tmp_path / "first_call.py"
    script.write_text(
        "import torch, unilstm\n"
        "from unilstm.kernels import force_kernel\n"
        "torch.manual_seed(0)\n"
        "cases = ((dict(activation='relu'), 20), (dict(bidirectional=True, activation='relu'), 4))\n"
        "for kw, batch in cases:\n"
        "    layer = unilstm.LSTM(8, 32, **kw)\n"
        "    x = torch.randn(6, batch, 8)\n"
        "    compiled = torch.compile(lambda t, layer=layer: layer(t)[0], backend='eager')\n"
        "    for _ in range(2):\n"
        "        out = compiled(x)\n"
        "        out.sum().backward()\n"
        "    force_kernel('reference')\n"
        "    want = layer(x)[0]\n"
        "    force_kernel(None)\n"
        "    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)\n"
        "print('compiled first calls ok')\n"
    )
    assert "compiled first calls ok" in _run_fresh(script)


def _run_fresh(script) -> str:
    """Run ``script`` in a fresh interpreter (the first-use checks not run yet); its stdout."""
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@needs_extension
def test_first_call_under_autocast_keeps_the_c_loops(tmp_path):
    """A fresh process whose first layer call runs under CPU autocast finds the same float32 C loop and cell
    split as one whose first call does not: the first-use checks compare with torch outside autocast (they
    computed torch's side in bfloat16 and switched both off for the process)."""
    found = []
    for autocast in (False, True):
        script = tmp_path / f"first_call_{autocast}.py"
        script.write_text(
            "import torch, unilstm\n"
            "from unilstm.kernels import native\n"
            "layer = unilstm.LSTM(4, 8, activation='relu')\n"
            f"with torch.autocast('cpu', dtype=torch.bfloat16, enabled={autocast}):\n"
            "    layer(torch.randn(6, 3, 4))\n"
            "print(bool(native.blas_gemm(torch.float32)), native.cell_threads())\n"
        )
        found.append(_run_fresh(script).strip())
    assert found[1] == found[0], found
