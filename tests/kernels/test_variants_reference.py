# ruff: noqa: N803, N806
"""The reference loop's cell variants (the oracle of every kernel) against computations independent of it:
neutral values give the standard cell, one step by hand, zoneout's expectation, the clips' bounds, ONNX's
formulas of the parametric activations, and finite differences."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from variant_cases import COMBINED_VARIANTS, make_variant_case, variant_leaves, variant_results

from unilstm import activations as A
from unilstm.activations import parametric, resolve
from unilstm.kernels.reference import run_direction_reference


def _reference(case) -> dict:
    return variant_results(run_direction_reference, *case)


def _assert_common_equal(got: dict, want: dict, *, exact: bool = True) -> None:
    """Every result of ``want`` equal in ``got`` (which may have more: the variant tensors' gradients)."""
    for key, value in want.items():
        if exact:
            assert torch.equal(got[key], value), key
        else:
            torch.testing.assert_close(got[key], value, rtol=1e-13, atol=1e-13, msg=key)


def _neutral_cases() -> dict:
    """name -> (variant case with the variant at its neutral value, the standard case it equals)."""
    T, B, P = 6, 3, 2
    base = {"P": P, "mask": "gaps", "zero": False, "mh_kind": "per_gate"}
    inf = math.inf
    zeros = torch.zeros(T, B, P, dtype=torch.float64)

    def pair(variant: dict, standard: dict | None = None, edit=None):
        case = make_variant_case(3, **base, **variant)
        if edit is not None:
            case = edit(case)
        return case, make_variant_case(3, **base, **(standard or {}))

    def zero_peepholes(case):
        x, h0, c0, w, run = case
        return x, h0, c0, dataclasses.replace(w, peephole=torch.zeros_like(w.peephole).requires_grad_()), run

    def zero_draws(case):
        x, h0, c0, w, run = case
        zc = torch.zeros(T, B, c0.shape[-1], dtype=torch.float64)
        return x, h0, c0, w, dataclasses.replace(run, zoneout_hidden=zeros, zoneout_cell=zc)

    return {
        "peepholes": pair({"peepholes": True}, edit=zero_peepholes),
        "clips": pair({"gate_clip": inf, "cell_clip": inf, "proj_clip": inf}),
        "zoneout_draws": pair({}, edit=zero_draws),
        "output_activation": pair({"output_activation": "tanh"}),
        "affine": pair({"act": parametric("affine", 1.0, 0.0)}, {"act": "linear"}),
        "scaled_tanh": pair({"act": parametric("scaled_tanh", 1.0, 1.0)}),
        "hard_sigmoid": pair({"ract": parametric("hard_sigmoid", 0.2, 0.5)}, {"ract": "hard_sigmoid_keras2"}),
        "leaky_relu": pair({"act": parametric("leaky_relu", 0.2)}, {"act": "leaky_relu"}),
        "elu": pair({"act": parametric("elu", 1.0)}, {"act": "elu"}),
        "thresholded_relu": pair({"act": parametric("thresholded_relu", 0.0)}, {"act": "relu"}),
    }


@pytest.mark.parametrize("name", sorted(_neutral_cases()))
def test_neutral_values_give_the_standard_cell_exactly(name):
    variant, standard = _neutral_cases()[name]
    _assert_common_equal(_reference(variant), _reference(standard))


def test_forget_bias_is_a_forget_block_bias():
    variant = make_variant_case(4, forget_bias=0.75, mask="gaps")
    x, h0, c0, w, run = make_variant_case(4, mask="gaps")
    H = c0.shape[-1]
    shifted = w.b_ih.detach().clone()
    shifted[H : 2 * H] += 0.75
    standard = (x, h0, c0, dataclasses.replace(w, b_ih=shifted.requires_grad_()), run)
    _assert_common_equal(_reference(variant), _reference(standard), exact=False)


def _one_step(case):
    """(x_0, h0, c0, weights, run) of a one-step case, and the reference's (h_1, c_1)."""
    x, h0, c0, w, run = case
    _, h1, c1 = run_direction_reference(x, h0, c0, w, run)
    return x[0].detach(), h0.detach(), c0.detach(), w, run, h1.detach(), c1.detach()


def test_layer_norm_by_hand_on_one_step():
    x, h0, c0, w, run, h1, c1 = _one_step(make_variant_case(5, T=1, B=3, layer_norm=True))
    eps = run.layer_norm_eps

    def ln(v, gain, bias):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)  # biased, as torch and Haste
        by_hand = (v - mean) / torch.sqrt(var + eps) * gain.detach() + bias.detach()
        torch.testing.assert_close(by_hand, F.layer_norm(v, v.shape[-1:], gain.detach(), bias.detach(), eps))
        return by_hand

    z = (ln(x @ w.w_ih.detach().t(), w.ln_weight_ih, w.ln_bias_ih)
         + ln(h0 @ w.w_hh.detach().t(), w.ln_weight_hh, w.ln_bias_hh) + w.b_ih.detach() + w.b_hh.detach())
    z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
    c = torch.sigmoid(z_f) * c0 + torch.sigmoid(z_i) * torch.tanh(z_g)
    h = torch.sigmoid(z_o) * torch.tanh(ln(c, w.ln_weight_c, w.ln_bias_c))
    torch.testing.assert_close(c1, c, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(h1, h, rtol=1e-13, atol=1e-13)


def test_coupled_gates_by_hand_on_one_step():
    x, h0, c0, w, run, h1, c1 = _one_step(make_variant_case(6, T=1, B=3, coupled_gates=True))
    z = x @ w.w_ih.detach().t() + h0 @ w.w_hh.detach().t() + w.b_ih.detach() + w.b_hh.detach()
    z_i, _, z_g, z_o = z.chunk(4, dim=-1)  # the forget block is unused
    i = torch.sigmoid(z_i)
    c = (1.0 - i) * c0 + i * torch.tanh(z_g)
    torch.testing.assert_close(c1, c, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(h1, torch.sigmoid(z_o) * torch.tanh(c), rtol=1e-13, atol=1e-13)


def test_zoneout_inference_weight_is_the_expectation_of_training_draws():
    """One step of N copies of one sequence, each with its own Bernoulli(rate) draws: the average equals the
    run with the rate as weight, within sampling error (5 standard deviations of the mean)."""
    rate_h, rate_c, N = 0.3, 0.15, 20000
    x, h0, c0, w, run = make_variant_case(7, T=1, B=1, P=2, zoneout_hidden=rate_h, zoneout_cell=rate_c)
    with torch.no_grad():
        _, h_infer, c_infer = run_direction_reference(x, h0, c0, w, run)
        no_zoneout = dataclasses.replace(run, zoneout_hidden=0.0, zoneout_cell=0.0)
        _, h_new, c_new = run_direction_reference(x, h0, c0, w, no_zoneout)
        gen = torch.Generator().manual_seed(0)
        draws_h = (torch.rand(1, N, h0.shape[-1], generator=gen) < rate_h).double()
        draws_c = (torch.rand(1, N, c0.shape[-1], generator=gen) < rate_c).double()
        training = dataclasses.replace(run, zoneout_hidden=draws_h, zoneout_cell=draws_c)
        _, h_drawn, c_drawn = run_direction_reference(
            x.expand(1, N, -1), h0.expand(N, -1), c0.expand(N, -1), w, training
        )
    for drawn, infer, before, after, rate in (
        (h_drawn, h_infer, h0, h_new, rate_h), (c_drawn, c_infer, c0, c_new, rate_c)
    ):
        sigma = math.sqrt(rate * (1 - rate) / N) * (before - after).abs()
        assert bool(((drawn.mean(0) - infer[0]).abs() <= 5 * sigma[0] + 1e-12).all())
        assert bool(((before - after).abs() > 1e-3).all())  # the test can see a wrong weight


def _recording(fn, into: list):
    def recorded(v):
        into.append(v.detach())
        return fn(v)

    return recorded


def test_clips_bound_what_they_clip_and_are_reached():
    gate_clip, cell_clip, proj_clip = 0.5, 0.4, 0.15
    gate_inputs: list = []
    cell_inputs: list = []
    x, h0, c0, w, run = make_variant_case(
        8, T=5, P=2, gate_clip=gate_clip, cell_clip=cell_clip, proj_clip=proj_clip, scale=3.0
    )
    run = dataclasses.replace(
        run,
        activation=_recording(torch.tanh, gate_inputs),
        recurrent_activation=_recording(torch.sigmoid, gate_inputs),
        output_activation=_recording(torch.tanh, cell_inputs),
    )
    out, _, c_T = run_direction_reference(x, h0, c0, w, run)
    for values, bound in ((torch.cat([v.flatten() for v in gate_inputs]), gate_clip),
                          (torch.cat([v.flatten() for v in cell_inputs]), cell_clip),
                          (out.detach().flatten(), proj_clip), (c_T.detach().flatten(), cell_clip)):
        assert bool((values.abs() <= bound).all())
    for values, bound in ((gate_inputs, gate_clip), (cell_inputs, cell_clip), ([out.detach()], proj_clip)):
        assert any(bool((v.abs() == bound).any()) for v in values)  # clipped somewhere: the clip acts


_GRID = [-3.0, -1.0, -0.5, -0.1, 0.0, 0.05, 0.1, 0.3, 0.5, 1.0, 1.5, 2.5]


@pytest.mark.parametrize(
    ("kind", "alpha", "beta", "formula"),
    [
        ("affine", 0.8, -0.3, lambda v, a, b: a * v + b),
        ("leaky_relu", 0.05, None, lambda v, a, b: v if v >= 0 else a * v),
        ("thresholded_relu", 0.3, None, lambda v, a, b: v if v > a else 0.0),
        ("scaled_tanh", 1.7, 0.6, lambda v, a, b: a * math.tanh(b * v)),
        ("hard_sigmoid", 0.4, 0.6, lambda v, a, b: max(0.0, min(1.0, a * v + b))),
        ("elu", 0.7, None, lambda v, a, b: v if v >= 0 else a * (math.exp(v) - 1.0)),
    ],
)
def test_parametric_activations_follow_onnx(kind, alpha, beta, formula):
    fn = parametric(kind, alpha, beta)
    got = fn(torch.tensor(_GRID, dtype=torch.float64))
    want = torch.tensor([formula(v, alpha, beta or 0.0) for v in _GRID], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)
    assert resolve(fn) is fn  # resolved as itself


def test_parametric_defaults_are_onnx_defaults():
    defaults = {"affine": (1.0, 0.0), "leaky_relu": (0.01, 0.0), "thresholded_relu": (1.0, 0.0),
                "scaled_tanh": (1.0, 1.0), "hard_sigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
    for kind, (alpha, beta) in defaults.items():
        fn = parametric(kind)
        assert (fn.alpha, fn.beta) == (alpha, beta), kind
    assert parametric("hard_sigmoid") == A.ParametricActivation("hard_sigmoid", 0.2, 0.5)


@pytest.mark.parametrize("name", sorted(COMBINED_VARIANTS))
def test_gradcheck_and_gradgradcheck_of_the_reference(name):
    variants = {**COMBINED_VARIANTS[name], "T": 3, "B": 2, "F": 2, "H": 3}
    x, h0, c0, w, run = make_variant_case(9, **variants)
    named = dict(variant_leaves(x, h0, c0, w))

    def fn(*tensors):
        found = dict(zip(named, tensors, strict=True))
        weights = dataclasses.replace(w, **{k: v for k, v in found.items() if k not in ("x", "h0", "c0")})
        return run_direction_reference(found["x"], found["h0"], found["c0"], weights, run)

    leaves = list(named.values())
    # fast mode: finite differences along random directions against the same projections of the analytical
    # Jacobians (the full second-order check of these cases takes minutes on two cores)
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, leaves, fast_mode=True)
