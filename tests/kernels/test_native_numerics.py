# ruff: noqa: N803, N806
"""The native kernel computes what the reference loop computes, on both of its time loops.

Direction-level comparisons against :func:`run_direction_reference`: every combination of the run options
and every C activation in float64 (at 1e-9), float32 (polynomial exp and tanh) against a float64
reference, the refused second backward, weights changed between calls, non-contiguous inputs, inputs the C
loop must not read as raw buffers, and MKL's packed and batched GEMMs. The ``cell`` fixture (conftest.py)
runs a test on the whole loop in C and on the per-step Python loop and checks which entry points ran. The
random property tests (test_kernels_property.py) cover native too; here every combination is enumerated
once.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import (
    ATOL64,
    COMBOS,
    GAPS,
    NATIVE_NAMES,
    RTOL64,
    assert_native_path,
    assert_results_close,
    cast_case,
    make_case,
    needs_extension,
    reference_results,
    results,
)

import unilstm
import unilstm.torch
from unilstm.kernels import dispatch, force_kernel, native
from unilstm.kernels.native import _blas, run_direction_native
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference


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


@needs_extension
def test_second_backward_through_the_same_graph_runs_the_forward_again(cell):
    """A second backward through one call (retain_graph=True) used to raise: its gradients now equal the
    first's, from a second forward loop (the first backward wrote over the saved pre-activations)."""
    x, h0, c0, w, run = make_case(0, mask=GAPS, P=2)
    out, h, c = run_direction_native(x, h0, c0, w, run)
    loss = out.sum() + h.sum() + c.sum()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    runs = cell.forward_runs(torch.float64, x.shape[0])
    loss.backward()
    assert torch.equal(x.grad, 2 * first)
    assert cell.forward_runs(torch.float64, x.shape[0]) == runs + 1
    cell.assert_ran(torch.float64)


@needs_extension
def test_double_backward_equals_the_reference_loops():
    """Double backward used to raise (a once_differentiable backward): it now goes through the reference
    loop, which autograd records."""
    x, h0, c0, w, run = make_case(0)
    grads = []
    for kernel in (run_direction_native, run_direction_reference):
        out, _, _ = kernel(x, h0, c0, w, run)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(gx.sum(), (x, w.w_hh)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


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
        monkeypatch.setattr(_blas, "_BLAS_BATCH", {})
    T, B = 7, 5
    mask = torch.rand(T, B, generator=torch.Generator().manual_seed(2)) > 0.3
    case = make_case(31, T=T, B=B, F=4, H=6, P=P, mask=mask, reverse=True, mh_kind="per_gate",
                     mx_kind="per_gate", act="relu")
    want = reference_results(("per_gate_batch", P), case)
    case = cast_case(*case, dtype)
    got = results(run_direction_native, *case)
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    assert_results_close(got, want, rtol=tol, atol=tol, context=f"batched={batched}", scaled=True)


@needs_extension
@pytest.mark.parametrize("chunk", [1, 4, 5])
@pytest.mark.parametrize(("P", "mask", "reverse", "zero"), [
    (0, None, False, True), (0, "gaps", True, False), (2, "gaps_empty_step", False, True),
    (0, "gaps_empty_row", False, False),
    (2, None, True, True),
])
def test_inference_in_chunks_of_steps_float64(chunk, P, mask, reverse, zero, monkeypatch):
    """Inference (no autograd record) projects the inputs ``chunk`` steps at a time inside the C loop
    (``_blas.projection_chunk``, from the cache size; forced here): T = 9 is no multiple of 4 or 5, and the
    reverse loop takes its chunks from the end. Equal to the reference in float64."""
    monkeypatch.setattr(_blas, "projection_chunk", lambda *sizes: chunk)
    x, h0, c0, w, run = make_case(31, T=9, B=3, F=5, H=4, P=P, mask=mask, reverse=reverse, zero=zero)
    with torch.no_grad():
        want = run_direction_reference(x, h0, c0, w, run)
        got = run_direction_native(x, h0, c0, w, run)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@needs_extension
def test_inference_in_chunks_with_packed_input_weights_float32():
    """From 8 chunks of at least 16 rows and a (4H, F) weight of 2^16 elements, W_ih is packed once (MKL's
    packed GEMM, where the BLAS has it) and each chunk's projection computed from the packed copy: 9 chunks
    of 2 steps (the last one of 1), float32 against the float64 reference."""
    g = torch.Generator().manual_seed(3)
    T, B, F, H = 17, 16, 64, 256
    x = torch.randn(T, B, F, generator=g, dtype=torch.float64)
    w = DirectionWeights(torch.randn(4 * H, F, generator=g, dtype=torch.float64) * 0.2,
                         torch.randn(4 * H, H, generator=g, dtype=torch.float64) * 0.1,
                         torch.randn(4 * H, generator=g, dtype=torch.float64) * 0.1, None, None)
    h0, c0 = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    run = DirectionRun(torch.relu, torch.sigmoid, None, False, True)
    chunk = 2
    with torch.no_grad():
        want = run_direction_reference(x, h0, c0, w, run)
        w32 = DirectionWeights(w.w_ih.float(), w.w_hh.float(), w.b_ih.float(), None, None)
        original = _blas.projection_chunk
        try:
            _blas.projection_chunk = lambda *sizes: chunk
            got = run_direction_native(x.float(), h0.float(), c0.float(), w32, run)
        finally:
            _blas.projection_chunk = original
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)


@needs_extension
def test_inference_route_times_whole_forwards_once_per_kind(monkeypatch):
    """Measuring (not the suite's fixed policy), an inference call's projection route is chosen from whole
    forwards run with each route, once per kind of call; every route gives the reference's values."""
    from unilstm.kernels import first_use

    monkeypatch.setenv(first_use.CHOICE_ENV, "measure")
    first_use.forget()
    x, h0, c0, w, run = make_case(5, T=7, B=3, F=5, H=4, mask="gaps", reverse=True)
    seen: list[str] = []
    original = _blas.inference_route

    def spy(x, w_ih, b_ih, b_hh, forward):
        return original(x, w_ih, b_ih, b_hh, lambda name: seen.append(name) or forward(name))

    monkeypatch.setattr(_blas, "inference_route", spy)
    try:
        with torch.no_grad():
            want = run_direction_reference(x, h0, c0, w, run)
            got = run_direction_native(x, h0, c0, w, run)
            assert {"c_gemm", "torch_mm"} <= set(seen) <= set(_blas.PROJECTION_ROUTES)
            ((kind, (winner, timings)),) = [(k, v) for k, v in first_use.routes().items()
                                            if k[0] == "inference projection"]
            assert winner in timings and set(timings) == set(seen)
            count = len(seen)
            again = run_direction_native(x, h0, c0, w, run)  # the same kind: no new measurement
            assert len(seen) == count
            for name in set(seen):
                by_route = native._loops.forward_pass(
                    *native._loops.function_arguments(native._loops.run_config(run), x, h0, c0, w, run),
                    save=False, route=name)[0]
                for g, e in zip(by_route, want, strict=True):
                    torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    finally:
        first_use.forget()
    for g, a, e in zip(got, again, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a, g, rtol=0, atol=0)


@needs_extension
@pytest.mark.parametrize("bidirectional", [False, True])
def test_inference_chunks_in_the_two_loops_at_once(bidirectional, two_threads, monkeypatch):
    """On two threads a layer's two directions, or its batch's two halves (B = 20), run their C loops at
    once, each projecting its inputs in chunks of 3 steps: the same values as all steps at once, float64."""
    torch.manual_seed(0)
    lstm = unilstm.LSTM(5, 8, activation="relu", bidirectional=bidirectional).double().eval()
    x = torch.randn(11, 20, 5, dtype=torch.float64)
    mask = torch.rand(20, 11) > 0.2
    chunks: list[int] = []
    outputs = []
    for chunk in (0, 3):
        monkeypatch.setattr(
            _blas, "projection_chunk", lambda *sizes, chunk=chunk: chunks.append(chunk) or chunk
        )
        with torch.no_grad():
            outputs.append(lstm(x, mask=mask))
    assert chunks == [0, 0, 3, 3]  # two loops per call
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-10, atol=1e-10)
    for got, want in zip(outputs[1][1], outputs[0][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
