# ruff: noqa: N803, N806
"""The fast kernel's cell variants (kernels/fast_variants.py) compute what the reference loop computes:
outputs, states and the gradient of every input and weight, variant tensors included."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import MASK_KINDS, assert_results_close, captures, projection
from variant_cases import (
    COMBINED_VARIANTS,
    SINGLE_VARIANTS,
    cast_variant_case,
    make_variant_case,
    results_with_overflowing_padding,
    variant_leaves,
    variant_results,
)

import unilstm
from unilstm.activations import parametric, resolve
from unilstm.kernels import dispatch, fast
from unilstm.kernels.fast import accepts, run_direction_fast
from unilstm.kernels.reference import is_variant, run_direction_reference

ALL_VARIANTS = {**SINGLE_VARIANTS, **COMBINED_VARIANTS}


#: float64 results of the fast kernel against the reference: the same dtypes, 1e-10 of each tensor's scale
FLOAT64_EXACT = {"atol": 1e-10, "rtol": 1e-10, "scaled": True, "same_dtype": True}


def _assert_fast_matches_reference(case) -> None:
    assert_results_close(
        variant_results(run_direction_fast, *case), variant_results(run_direction_reference, *case),
        **FLOAT64_EXACT,
    )


def _grad_fn_name(case) -> str:
    out, _, _ = run_direction_fast(*case)
    return type(out.grad_fn).__name__


@pytest.mark.parametrize("name", sorted(ALL_VARIANTS))
def test_variants_equal_reference_float64(name):
    case = make_variant_case(11, **ALL_VARIANTS[name])
    assert accepts(case[0], case[3], case[4])
    # ONNX's parametric activations alone are the standard cell: its own body computes them
    body = "_FastVariantLSTM" if is_variant(case[3], case[4]) else "_FastLSTM"
    assert _grad_fn_name(case).startswith(body + "Backward")
    want = variant_results(run_direction_reference, *case)
    got = variant_results(run_direction_fast, *case)
    # the comparison is not of zeros: every leaf, variant tensors included, gets a non-zero gradient
    for key, value in got.items():
        assert bool(value.abs().sum() > 0), key
    assert_results_close(got, want, **FLOAT64_EXACT)


@pytest.mark.parametrize(
    "base",
    [
        {"mx_kind": "per_gate", "mh_kind": "per_gate", "mask": "gaps_empty_row", "zero": False},
        {"mx_kind": "shared", "mask": "gaps_empty_step", "reverse": True, "P": 3, "bias": "ih"},
        {"mask": "right", "bias": "none", "B": 1, "T": 1},
    ],
)
def test_every_variant_at_once_with_run_options(base):
    variants = {**COMBINED_VARIANTS["everything"], "coupled_gates": True, "output_activation": "softsign",
                "act": parametric("scaled_tanh", 1.1, 0.8), **base}
    case = make_variant_case(5, **variants)
    want = variant_results(run_direction_reference, *case)
    got = variant_results(run_direction_fast, *case)
    assert_results_close(got, want, **FLOAT64_EXACT)


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 8e-2), (torch.float16, 2e-2)]
)
@pytest.mark.parametrize("name", ["everything", "onnx_like"])
def test_low_precision_close_to_reference(name, dtype, tol):
    case = cast_variant_case(*make_variant_case(3, **COMBINED_VARIANTS[name]), dtype)
    want = variant_results(run_direction_reference, *case)
    got = variant_results(run_direction_fast, *case)
    assert_results_close(got, want, atol=tol, rtol=tol, scaled=True, same_dtype=True)


def test_gradcheck_and_gradgradcheck():
    """First derivatives by finite differences through the hand-written backward; second ones through the
    reference loop that a backward with create_graph=True runs (w.r.t. a few leaves, in gradgradcheck's fast
    mode, which checks random projections of the Jacobian: time)."""
    case = make_variant_case(2, T=3, B=2, F=2, H=2, P=1, layer_norm=True, peepholes=True, gate_clip=0.9,
                             cell_clip=0.8, zoneout_hidden="draw", zoneout_cell=0.2, forget_bias=0.5,
                             output_activation="softsign", mask="gaps", zero=False)
    x, h0, c0, w, run = case
    named = dict(variant_leaves(x, h0, c0, w))

    def through(names):
        def fn(*tensors):
            found = {**named, **dict(zip(names, tensors, strict=True))}
            weights = dataclasses.replace(w, **{k: v for k, v in found.items() if k not in ("x", "h0", "c0")})
            return run_direction_fast(found["x"], found["h0"], found["c0"], weights, run)
        return fn

    assert torch.autograd.gradcheck(through(list(named)), list(named.values()))
    few = ["x", "c0", "peephole", "ln_weight_hh", "ln_bias_c"]
    assert torch.autograd.gradgradcheck(through(few), [named[n] for n in few], fast_mode=True)


def test_second_backward_through_the_same_graph_gives_the_first_gradients():
    case = make_variant_case(4, **COMBINED_VARIANTS["everything"])
    out, h, c = run_direction_fast(*case)
    loss = out.sum() + h.sum() + c.sum()
    loss.backward(retain_graph=True)
    first = case[3].peephole.grad.clone()
    loss.backward()
    assert torch.equal(case[3].peephole.grad, 2 * first)


@pytest.mark.parametrize("name", ["everything", "onnx_like"])
def test_cuda_graph_bodies_replay_the_reference(stand_in_graphs, name):
    case = make_variant_case(6, **COMBINED_VARIANTS[name])
    want = variant_results(run_direction_reference, *case)
    calls = [variant_results(run_direction_fast, *case) for _ in range(3)]  # direct, captured, replayed
    assert len(captures) == 2  # the forward and the backward body, each captured once
    for got in calls:  # the first call's results survive the later replays
        assert_results_close(got, want, **FLOAT64_EXACT)


@pytest.mark.parametrize("capturable", [False, True])
def test_overflow_in_masked_rows_stays_out(monkeypatch, capturable):
    """Padding of 1e4 under an exponential output activation makes inf in the masked rows: it must not reach
    any result or gradient (as test_fast_kernel.test_overflow_in_masked_rows_stays_out)."""
    original = fast._step_patterns
    monkeypatch.setattr(fast, "_step_patterns", lambda m, T, **_: original(m, T, capturable))
    case = make_variant_case(4, layer_norm=True, peepholes=True, output_activation="exponential", P=2,
                             zoneout_cell="draw", mask="gaps_empty_step", zero=False, mh_kind="shared")
    got, want = results_with_overflowing_padding(run_direction_fast, *case)
    run = case[4]
    got["dx"][~run.step_mask] = 0.0  # (the padding's own gradient is not compared)
    want["dx"][~run.step_mask] = 0.0
    for key in want:
        assert bool(torch.isfinite(got[key]).all()), key
    assert_results_close(got, want, **FLOAT64_EXACT)


def test_parametric_activations_alone_take_the_standard_body():
    case = make_variant_case(8, act=parametric("leaky_relu", 0.1), ract=parametric("hard_sigmoid", 0.3, 0.45),
                             mask="gaps", P=2)
    assert _grad_fn_name(case).startswith("_FastLSTM")
    _assert_fast_matches_reference(case)
    standard = make_variant_case(8)
    assert _grad_fn_name(standard).startswith("_FastLSTM")


def test_declines_what_it_cannot_compute():
    x, h0, c0, w, run = make_variant_case(1, zoneout_hidden="draw", peepholes=True)
    assert accepts(x, w, run)
    assert not accepts(x, w, dataclasses.replace(run, output_activation=lambda v: torch.tanh(v)))
    assert not accepts(x, w, dataclasses.replace(run, output_activation=resolve("softmax")))
    assert not accepts(x, w, dataclasses.replace(run, zoneout_hidden=run.zoneout_hidden[:1]))


def test_layer_with_variants_fast_equals_reference():
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 4, num_layers=2, bidirectional=True, layer_norm=True, peepholes=True,
                         cell_clip=2.0, zoneout_hidden=0.2, zoneout_cell=0.1, forget_bias=1.0).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for kernel in ("reference", "fast"):
        dispatch.force_kernel(kernel)
        try:
            out, (h, c) = layer(x, training=True, generator=torch.Generator().manual_seed(3))
            grads = torch.autograd.grad(out.sin().sum() + h.sum() + c.cos().sum(), [x, *layer.parameters()])
            results.append([out, h, c, *grads])
        finally:
            dispatch.force_kernel(None)
    for e, g in zip(*results, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10)
    # without forcing, a variant run leaves the reference loop (the fast kernel, or the native one)
    case = make_variant_case(0, **COMBINED_VARIANTS["tf1_like"])
    assert dispatch.select_direction_kernel(case[0], case[3], case[4]) is not run_direction_reference


def test_autocast_bfloat16_cpu():
    torch.manual_seed(0)
    layer = unilstm.LSTM(4, 8, layer_norm=True, peepholes=True, cell_clip=3.0, zoneout_cell=0.1)
    x = torch.randn(6, 3, 4)  # (T, N, F)
    mask = torch.ones(3, 6, dtype=torch.bool)  # (N, T)
    mask[0, 4:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = layer(x, mask=mask, training=True)
        loss = out.float().sum() + h.float().sum()
    loss.backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1), T=st.integers(1, 5), B=st.integers(1, 3), H=st.integers(1, 4),
    proj=st.booleans(), mask=st.sampled_from(MASK_KINDS), reverse=st.booleans(), zero=st.booleans(),
    mx_kind=st.sampled_from(["none", "shared", "per_gate"]),
    mh_kind=st.sampled_from(["none", "shared", "per_gate"]),
    bias=st.sampled_from(["both", "ih", "hh", "none"]), layer_norm=st.booleans(), peepholes=st.booleans(),
    gate_clip=st.sampled_from([None, 0.7]), cell_clip=st.sampled_from([None, 0.6]),
    proj_clip=st.sampled_from([None, 0.3]), coupled_gates=st.booleans(),
    zoneout_hidden=st.sampled_from([0.0, 0.25, "draw"]), zoneout_cell=st.sampled_from([0.0, 0.1, "draw"]),
    forget_bias=st.sampled_from([0.0, 1.0]), output_activation=st.sampled_from([None, "relu", "softsign"]),
    act=st.sampled_from(["tanh", parametric("scaled_tanh", 1.2, 0.7), "elu"]),
    ract=st.sampled_from(["sigmoid", parametric("hard_sigmoid", 0.3, 0.45)]),
)
def test_random_variant_combinations_equal_reference(seed, H, proj, proj_clip, **kwargs):
    P = projection(seed, H, proj)
    case = make_variant_case(seed, H=H, P=P, F=2, proj_clip=proj_clip if P else None, **kwargs)
    assert accepts(case[0], case[3], case[4])
    _assert_fast_matches_reference(case)
