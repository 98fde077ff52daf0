# ruff: noqa: N803, N806
"""The native kernel's cell variants (native/_variants.py, _lstm_variant_body.h) compute what the reference
loop computes: every case of variant_cases.py in float64 at 1e-9 (values and the gradients of every input
and weight), in float32 against the float64 reference, gradcheck and gradgradcheck, a second backward
through one call, inference, and whole bidirectional layers. The variants run only on the C time loop:
where the BLAS gemm is missing (the ``cell`` fixture's per-step path) the native kernel declines them and
the reference loop computes them."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import RTOL64, assert_results_close, needs_extension
from variant_cases import (
    COMBINED_VARIANTS,
    SINGLE_VARIANTS,
    cast_variant_case,
    make_variant_case,
    variant_leaves,
    variant_results,
)

import unilstm
from unilstm.activations import parametric
from unilstm.kernels import force_kernel, native
from unilstm.kernels.native import _variants, run_direction_native
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference

ATOL = 1e-10
#: the single-pass rows with relu (the shared cases use tanh), and the general rows with a gate clip
EXTRA_VARIANTS = {
    "relu_fused": {"act": "relu", "peepholes": True, "coupled_gates": True, "gate_clip": 0.5,
                   "zoneout_cell": "draw", "mask": "gaps", "zero": False, "mh_kind": "per_gate"},
    "softsign_general": {"act": "softsign", "gate_clip": 0.5, "cell_clip": 0.4, "forget_bias": 0.3,
                         "zoneout_hidden": 0.2, "P": 2, "mask": "right", "reverse": True},
    # layer normalisation's single-pass rows with relu, and its general rows (another output activation)
    "ln_relu_fused": {"act": "relu", "layer_norm": True, "peepholes": True, "coupled_gates": True,
                      "cell_clip": 0.6, "zoneout_hidden": "draw", "mask": "gaps", "mh_kind": "per_gate"},
    "ln_general": {"layer_norm": True, "peepholes": True, "output_activation": "softsign", "cell_clip": 0.5,
                   "zoneout_cell": 0.1, "forget_bias": 0.4},
}
CASES = {**SINGLE_VARIANTS, **COMBINED_VARIANTS, **EXTRA_VARIANTS}
_REFERENCE: dict = {}


def _case(name, dtype=torch.float64):
    case = make_variant_case(sorted(CASES).index(name), **CASES[name])
    return case if dtype == torch.float64 else cast_variant_case(*case, dtype)


def _reference(name):
    if name not in _REFERENCE:
        _REFERENCE[name] = variant_results(run_direction_reference, *_case(name))
    return _REFERENCE[name]


def _assert_variant_path(x, h0, c0, w, run):
    """The case really runs the variant loops (run_direction_native falls back to the reference otherwise)."""
    assert native.accepts(x, w, run)
    out, _, _ = run_direction_native(x, h0, c0, w, run)
    assert type(out.grad_fn).__name__ == "_NativeLSTMVariantsBackward", type(out.grad_fn).__name__


@needs_extension
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_variant_equals_the_reference_float64(name):
    case = _case(name)
    _assert_variant_path(*case)
    got, want = variant_results(run_direction_native, *case), _reference(name)
    assert got.keys() == want.keys()
    assert_results_close(got, want, RTOL64, ATOL, context=name)


@needs_extension
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_variant_float32_close_to_the_float64_reference(name):
    case = _case(name, torch.float32)
    _assert_variant_path(*case)
    got = variant_results(run_direction_native, *case)
    assert all(t.dtype == torch.float32 for t in got.values())
    assert_results_close(got, _reference(name), rtol=2e-5, atol=2e-5, context=name, scaled=True)


@needs_extension
@pytest.mark.parametrize("name", ["everything", "onnx_like"])
def test_variants_run_on_the_c_loop_and_decline_without_the_gemm(name, cell):
    """On the C loop the variant loops run (and no standard loop); without the BLAS gemm the native kernel
    declines the run and the reference loop gives the same numbers."""
    case = _case(name)
    got = variant_results(run_direction_native, *case)
    assert_results_close(got, _reference(name), RTOL64, ATOL, context=name)
    if cell.loop_in_c(torch.float64):
        assert cell.calls["variant_forward_loop"] > 0 and cell.calls["variant_backward_loop"] > 0
        assert cell.loops("forward") == 0 and cell.loops("backward") == 0
    else:
        assert not native.accepts(case[0], case[3], case[4])
        assert cell.calls["variant_forward_loop"] == 0 and cell.calls["forward_step"] == 0


def _small(name):
    return make_variant_case(5, **{**CASES[name], "T": 2, "B": 2, "F": 2, "H": 4})


def _checked(name, names=None):
    """(function of the leaves ``names`` (default: every leaf) that runs the small case on the native
    kernel, those leaves)."""
    x, h0, c0, w, run = _small(name)
    _assert_variant_path(x, h0, c0, w, run)
    leaves = dict(variant_leaves(x, h0, c0, w))
    names = list(leaves) if names is None else names

    def fn(*tensors):
        given = {**leaves, **dict(zip(names, tensors, strict=True))}
        fields = {f: given.get(f, getattr(w, f)) for f in w.__dataclass_fields__}
        return run_direction_native(given["x"], given["h0"], given["c0"], DirectionWeights(**fields), run)

    return fn, tuple(leaves[n] for n in names)


@needs_extension
@pytest.mark.parametrize("name", ["everything", "tf1_like"])
def test_gradcheck(name):
    """First derivatives through the C loops, every leaf."""
    assert torch.autograd.gradcheck(*_checked(name), eps=1e-6, atol=1e-6)


@needs_extension
@pytest.mark.parametrize("name", ["onnx_like", "tf1_like"])
def test_gradgradcheck(name):
    """Second derivatives (create_graph: through the reference loop) for x and W_hh, the other leaves held
    (each leaf costs gradgradcheck seconds of reference loops)."""
    assert torch.autograd.gradgradcheck(*_checked(name, ["x", "w_hh"]), eps=1e-6, atol=1e-5)


@needs_extension
def test_second_backward_through_the_same_call_runs_the_forward_again():
    x, h0, c0, w, run = _case("everything")
    out, h, c = run_direction_native(x, h0, c0, w, run)
    loss = (out * out).sum() + h.sum() + c.sum()
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for _, t in variant_leaves(x, h0, c0, w)]
    loss.backward()
    for (name, t), g in zip(variant_leaves(x, h0, c0, w), first, strict=True):
        torch.testing.assert_close(t.grad, 2 * g, rtol=1e-12, atol=1e-12, msg=name)


@needs_extension
@pytest.mark.parametrize("name", ["everything", "tf1_like", "ln_zoneout_infer_masked"])
def test_inference_equals_the_reference(name):
    case = _case(name)
    with torch.no_grad():
        got = run_direction_native(*case)
        want = run_direction_reference(*case)
    assert got[0].grad_fn is None
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bidirectional_variant_layer_on_native_equals_reference(dtype):
    """A whole layer (both directions, two layers, projection, every variant): native (one direction after
    the other, never the two-loop paths) equals the reference loop, gradients included."""
    torch.manual_seed(0)
    layer = unilstm.LSTM(
        5, 6, num_layers=2, bidirectional=True, proj_size=3, layer_norm=True, peepholes=True, gate_clip=2.0,
        cell_clip=1.5, proj_clip=0.8, forget_bias=1.0, zoneout_hidden=0.1, zoneout_cell=0.05,
        activation=parametric("scaled_tanh", 1.1, 0.9), dtype=dtype,
    ).eval()
    x = torch.randn(7, 4, 5, dtype=dtype, requires_grad=True)
    found = []
    try:
        for kernel in ("native", "reference"):
            force_kernel(kernel)
            out, (h, c) = layer(x)
            grads = torch.autograd.grad((out * out).sum() + h.sum() + c.sum(), [x, *layer.parameters()])
            found.append([out, h, c, *grads])
    finally:
        force_kernel(None)
    # float32: both kernels round differently (sums in other orders); gradients reach 40 here, and the
    # float32 reference itself is 5e-4 from float64's: a tolerance scaled by each tensor's largest value
    for g, e in zip(*found, strict=True):
        tol = 1e-9 if dtype == torch.float64 else 5e-5 * max(1.0, float(e.detach().abs().max()))
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


@needs_extension
@pytest.mark.parametrize(
    ("variants", "T", "H", "P"),
    [
        ({"layer_norm": True, "peepholes": True, "mask": "gaps", "mh_kind": "shared"}, 9, 128, 0),
        ({"gate_clip": 0.5, "zoneout_hidden": "draw", "proj_clip": 0.1, "reverse": True}, 9, 128, 96),
        ({"layer_norm": True, "coupled_gates": True, "mh_kind": "per_gate"}, 3, 16, 0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_copied_and_per_gate_products(variants, T, H, P, dtype):
    """B = 16 and 4H P >= 65536 over 9 steps: in float32 the variant loops pack their per-step weights
    (MKL's packed GEMM, float32 only) and the projection's; 3 steps: transposed copies off; per-gate masks:
    four products per step (gate-major operands, layer norm over them). Against the float64 reference."""
    case = make_variant_case(13, T=T, B=16, F=5, H=H, P=P, **variants)
    want = variant_results(run_direction_reference, *case)
    case = cast_variant_case(*case, dtype)
    _assert_variant_path(*case)
    tol = (RTOL64, ATOL) if dtype == torch.float64 else (2e-5, 2e-5)
    got = variant_results(run_direction_native, *case)
    assert_results_close(got, want, *tol, scaled=dtype != torch.float64)


@needs_extension
@pytest.mark.parametrize("name", ["everything", "onnx_like", "ln_zoneout_infer_masked", "relu_fused"])
def test_batch_halves_at_once_equal_the_reference(name, two_threads):
    """With two threads a batch of 16 runs as two halves whose variant loops run at once (forward and
    backward): the same numbers as the reference, gradients summed over the halves."""
    case = make_variant_case(sorted(CASES).index(name), **{**CASES[name], "B": 16})
    if not native.halves_accept(*case):
        pytest.skip("two loops at once need torch's OpenMP runtime with two threads")
    got = variant_results(native.run_direction_native_halves, *case)
    want = variant_results(run_direction_reference, *case)
    assert_results_close(got, want, RTOL64, ATOL, context=name)
    out, _, _ = native.run_direction_native_halves(*case)
    assert type(out.grad_fn).__name__ == "_NativeLSTMVariantsHalvesBackward"


@needs_extension
@pytest.mark.parametrize("training", [False, True])
def test_bidirectional_directions_at_once_equal_the_reference(training, two_threads):
    """With two threads both directions of a bidirectional variant layer run their C loops at once (forward
    and backward): the reference's numbers, gradients included (x's is the sum of both directions'); a
    second backward through the same call and a create_graph backward as well."""
    torch.manual_seed(0)
    layer = unilstm.LSTM(
        5, 8, num_layers=2, bidirectional=True, layer_norm=True, peepholes=True, gate_clip=2.0,
        zoneout_hidden=0.2, zoneout_cell=0.1, dtype=torch.float64,
    ).train(training)
    x = torch.randn(7, 16, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(16, 7, generator=torch.Generator().manual_seed(2)) > 0.3
    weights = layer.direction_weights()[0]
    runs = tuple(
        DirectionRun(torch.tanh, torch.sigmoid, mask.t(), d == 1, zoneout_hidden=0.2, zoneout_cell=0.1)
        for d in range(2)
    )
    states = torch.zeros(2, 16, 8, dtype=torch.float64)
    if not native.pair_accepts(x, states, states, weights, runs):
        pytest.skip("two loops at once need torch's OpenMP runtime with two threads")
    found = []
    try:
        for kernel in (None, "reference"):
            force_kernel(kernel)
            out, (h, c) = layer(x, mask=mask, generator=torch.Generator().manual_seed(1))
            if kernel is None:
                assert type(out.grad_fn).__name__ == "CatBackward0"
                assert "_NativeLSTMVariantsDirectionsBackward" in {
                    type(f[0]).__name__ for f in out.grad_fn.next_functions if f[0] is not None
                }
            loss = (out * out).sum() + h.sum() + c.sum()
            grads = torch.autograd.grad(loss, [x, *layer.parameters()], retain_graph=True)
            again = torch.autograd.grad(loss, [x, *layer.parameters()], create_graph=True)
            found.append([out, h, c, *grads, *again])
    finally:
        force_kernel(None)
    for g, e in zip(*found, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


@needs_extension
@pytest.mark.parametrize("variants", [{"layer_norm": True, "peepholes": True}, {"peepholes": True},
                                      {"layer_norm": True, "peepholes": True, "act": "softsign"}])
def test_cell_split_over_two_threads_sums_the_gradients_of_each(variants, two_threads):
    """B H = 4096: with two threads each step's cell splits its rows between them, and each thread sums the
    peephole and gain gradients of its rows apart (the backward loop's per-thread sums): their total is the
    reference's gradient."""
    case = make_variant_case(21, T=4, B=32, F=3, H=128, **variants)
    assert native._extension.CELL_PARALLEL_MIN <= 32 * 128
    got = variant_results(lambda *c: _variants.run_direction_variant(*c, threads=2), *case)
    assert_results_close(got, variant_results(run_direction_reference, *case), RTOL64, ATOL)


@needs_extension
def test_gradient_sums_layout_is_the_builds():
    assert _variants.ACC_PER_HIDDEN == native._extension._lstm_cell.VARIANT_ACC_PER_HIDDEN


def _lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_zoneout_draws_are_the_counter_hash_of_two_generator_keys(dtype):
    """zoneout_keep: element i is 1 where mix(mix(i ^ k0) ^ k1) < round(rate 2^32), k0 and k1 the
    generator's next two 32-bit draws (checked against Python integers); the C extension and torch's integer
    ops give the same bits; a generator seed reproduces them."""
    rate, state = 0.3, torch.zeros(5, 7, dtype=dtype)
    keys = torch.empty(2, dtype=torch.int64).random_(0, 2**32, generator=torch.Generator().manual_seed(4))
    k0, k1 = keys.tolist()
    want = torch.tensor(
        [float(_lowbias32(_lowbias32(i ^ k0) ^ k1) < round(rate * 2**32)) for i in range(6 * 5 * 7)]
    ).view(6, 5, 7)
    found = [
        _variants.zoneout_keep(rate, 6, state, torch.Generator().manual_seed(4), in_c=in_c)
        for in_c in (True, False)
    ]
    for keep in found:
        assert keep.dtype == dtype and keep.shape == (6, 5, 7)
        assert torch.equal(keep.double(), want.double())
    assert 0.1 < want.mean() < 0.5  # a few draws: loosely the rate (test_cell_variants checks it closely)


def test_zoneout_draws_reproduce_under_manual_seed():
    state = torch.zeros(32, 64)
    torch.manual_seed(3)
    first = _variants.zoneout_keep(0.1, 50, state, None)
    torch.manual_seed(3)
    assert torch.equal(first, _variants.zoneout_keep(0.1, 50, state, None))
    assert not torch.equal(first, _variants.zoneout_keep(0.1, 50, state, None))
    assert abs(first.mean().item() - 0.1) < 0.005  # 102400 draws: 0.1 +- 5 standard deviations
