# ruff: noqa: N803, N806
"""Cases of the cell variants (layer normalisation, peepholes, clips, coupled gates, zoneout, forget bias,
output activation, ONNX's parametric activations) for the kernel tests: one direction's inputs, weights
and run drawn from a seed, built on :func:`kernel_cases.make_case`, and comparisons over every leaf."""

from __future__ import annotations

import dataclasses

import torch
from kernel_cases import make_case

from unilstm.activations import parametric, resolve
from unilstm.kernels.reference import WEIGHT_FIELDS, DirectionRun, DirectionWeights, run_direction_reference

#: one entry per variant, alone: the keyword arguments of :func:`make_variant_case`
SINGLE_VARIANTS: dict[str, dict] = {
    "layer_norm": {"layer_norm": True},
    "peepholes": {"peepholes": True},
    "gate_clip": {"gate_clip": 0.4},
    "cell_clip": {"cell_clip": 0.3},
    "proj_clip": {"proj_clip": 0.2, "P": 2},
    "coupled_gates": {"coupled_gates": True},
    "zoneout_train": {"zoneout_hidden": "draw", "zoneout_cell": "draw"},
    "zoneout_infer": {"zoneout_hidden": 0.3, "zoneout_cell": 0.15},
    "forget_bias": {"forget_bias": 1.0},
    "output_activation": {"output_activation": "relu"},
    "scaled_tanh": {"act": parametric("scaled_tanh", 1.5, 0.7)},
    "hard_sigmoid_ab": {"ract": parametric("hard_sigmoid", 0.3, 0.4)},
    "affine_out": {"output_activation": parametric("affine", 0.8, 0.1)},
    "leaky_relu_a": {"act": parametric("leaky_relu", 0.05)},
    "thresholded_relu": {"output_activation": parametric("thresholded_relu", 0.1)},
    "elu_a": {"act": parametric("elu", 0.6)},
}

#: combinations of several variants with each other and with masks, reverse, dropout and projection
COMBINED_VARIANTS: dict[str, dict] = {
    "everything": {
        "layer_norm": True, "peepholes": True, "gate_clip": 0.8, "cell_clip": 0.9, "forget_bias": 0.5,
        "zoneout_hidden": "draw", "zoneout_cell": "draw", "P": 2, "proj_clip": 0.5,
        "mask": "gaps", "reverse": True, "zero": False, "mx_kind": "shared", "mh_kind": "per_gate",
    },
    "onnx_like": {
        "peepholes": True, "gate_clip": 1.5, "coupled_gates": True,
        "act": parametric("scaled_tanh", 1.2, 0.9), "output_activation": "softsign",
        "ract": parametric("hard_sigmoid", 0.25, 0.5), "mask": "right",
    },
    "ln_zoneout_infer_masked": {
        "layer_norm": True, "zoneout_hidden": 0.2, "zoneout_cell": 0.1, "mask": "gaps_empty_step",
        "mh_kind": "shared",
    },
    "tf1_like": {
        "peepholes": True, "cell_clip": 0.5, "P": 3, "proj_clip": 0.4, "forget_bias": 1.0,
        "reverse": True,
    },
}

VARIANT_FIELDS = (
    "layer_norm", "peepholes", "gate_clip", "cell_clip", "proj_clip", "coupled_gates", "zoneout_hidden",
    "zoneout_cell", "forget_bias", "output_activation", "layer_norm_eps",
)


def make_variant_case(seed, *, layer_norm=False, peepholes=False, gate_clip=None, cell_clip=None,
                      proj_clip=None, coupled_gates=False, zoneout_hidden=0.0, zoneout_cell=0.0,
                      forget_bias=0.0, output_activation=None, layer_norm_eps=1e-5, dtype=torch.float64,
                      act="tanh", ract="sigmoid", **base):
    """(x, h0, c0, weights, run) of :func:`kernel_cases.make_case` (``base``: T, B, F, H, P, mask,
    reverse, zero, mx_kind, mh_kind, bias, scale ...) with the variants switched on. Variant tensors are
    leaves requiring grad: peephole weights ~ N(0, 0.5), layer-norm gains 1 + N(0, 0.2) and biases
    N(0, 0.2). A zoneout rate ``"draw"`` draws (T, B, N) 0/1 weights with probability 0.3 (training);
    a float is the inference weight. Activations may be names or callables (parametric ones)."""
    x, h0, c0, w, run = make_case(seed, dtype=torch.float64, act="tanh", ract="sigmoid", **base)
    gen = torch.Generator().manual_seed(seed + 7919)
    H, P = c0.shape[-1], h0.shape[-1]
    T, B = x.shape[:2]

    def rnd(*shape, s=1.0, mean=0.0):
        return (mean + torch.randn(*shape, generator=gen, dtype=torch.float64) * s).requires_grad_()

    extra: dict = {}
    if peepholes:
        extra["peephole"] = rnd(3 * H, s=0.5)
    if layer_norm:
        for name, size in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
            extra["ln_weight_" + name] = rnd(size, s=0.2, mean=1.0)
            extra["ln_bias_" + name] = rnd(size, s=0.2)
    weights = dataclasses.replace(w, **extra)

    def zoneout(rate, size):
        if rate == "draw":
            return (torch.rand(T, B, size, generator=gen) < 0.3).to(torch.float64)
        return rate

    run = dataclasses.replace(
        run,
        activation=resolve(act),
        recurrent_activation=resolve(ract),
        output_activation=None if output_activation is None else resolve(output_activation),
        forget_bias=forget_bias,
        gate_clip=gate_clip,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        coupled_gates=coupled_gates,
        zoneout_hidden=zoneout(zoneout_hidden, P),
        zoneout_cell=zoneout(zoneout_cell, H),
        layer_norm_eps=layer_norm_eps,
    )
    return cast_variant_case(x, h0, c0, weights, run, dtype)


def cast_variant_case(x, h0, c0, w, run, dtype):
    """The same case in ``dtype``: copies of every tensor (weights, dropout and zoneout masks), leaves
    requiring grad as before."""

    def cast(t):
        if not isinstance(t, torch.Tensor):
            return t
        return t.detach().to(dtype).requires_grad_(t.requires_grad)

    weights = DirectionWeights(*(cast(t) for t in w.tensors()))
    run = DirectionRun(**{
        name: cast(value) if name not in ("step_mask",) else value for name, value in run.__dict__.items()
    })
    return cast(x), cast(h0), cast(c0), weights, run


def variant_leaves(x, h0, c0, w):
    """[(name, tensor)] of every input and weight that requires grad, weights named by their field."""
    named = [("x", x), ("h0", h0), ("c0", c0)] + [(f, getattr(w, f)) for f in WEIGHT_FIELDS]
    return [(n, t) for n, t in named if t is not None and t.requires_grad]


def variant_results(kernel, x, h0, c0, w, run, *, seed=123):
    """{name: tensor}: output, h_T, c_T and the gradient of a loss weighing every element of the three
    results differently, w.r.t. every leaf (``d`` + the leaf's name)."""
    leaves = variant_leaves(x, h0, c0, w)
    out, h, c = kernel(x, h0, c0, w, run)
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)).sum()
        for t in (out, h, c)
    )
    grads = torch.autograd.grad(loss, [t for _, t in leaves], allow_unused=True)
    found = {"output": out, "h_T": h, "c_T": c}
    for (name, leaf), grad in zip(leaves, grads, strict=True):
        found["d" + name] = torch.zeros_like(leaf) if grad is None else grad
    return {k: v.detach() for k, v in found.items()}


def results_with_overflowing_padding(kernel, x, h0, c0, w, run):
    """(kernel's, reference's) :func:`variant_results` of a masked case whose masked steps hold 1e4 for the
    kernel and 0 for the reference: an unbounded activation of the padding overflows to inf, which must stay
    out of every value and gradient (``x`` is changed in place)."""
    with torch.no_grad():
        x[~run.step_mask] = 0.0
    want = variant_results(run_direction_reference, x, h0, c0, w, run)
    with torch.no_grad():
        x[~run.step_mask] = 1e4
    return variant_results(kernel, x, h0, c0, w, run), want
