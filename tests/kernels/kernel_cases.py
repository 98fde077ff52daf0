# ruff: noqa: N803, N806
"""Case builders and comparisons shared by the kernel tests (tests/kernels/): one direction's inputs,
weights and run drawn from a seed, and their results and gradients against the reference loop."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from hypothesis import assume
from hypothesis import strategies as st

from unilstm.activations import REGISTRY, resolve
from unilstm.kernels import native
from unilstm.kernels.fast import run_direction_fast, supported_activation
from unilstm.kernels.native import NATIVE_ACTIVATION_IDS, run_direction_native
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference

RTOL64, ATOL64 = 1e-9, 1e-10

#: activations the fast kernel has derivatives for, and those it refuses
ACCEPTED = sorted(name for name, fn in REGISTRY.items() if supported_activation(fn))
REJECTED = sorted(name for name, fn in REGISTRY.items() if not supported_activation(fn))
#: one registered name per C activation (silu and swish are one function)
NATIVE_NAMES = sorted({fn: name for name, fn in sorted(REGISTRY.items(), reverse=True)
                       if fn in NATIVE_ACTIVATION_IDS}.values())

# (T=6, B=3) step mask with gaps: step 1 and step 5 mask every row, step 2 none; row 1 starts masked
GAPS = torch.tensor(
    [[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool
)

needs_extension = pytest.mark.skipif(not native.available(), reason=native.unavailable_reason())

#: every combination of the run options: (P, mask, reverse, zero, mx_kind, mh_kind)
COMBOS = list(itertools.product(
    (0, 2), ("none", "gaps"), (False, True), (True, False), ("none", "shared", "per_gate"),
    ("none", "shared", "per_gate"),
))

MASK_KINDS = ["none", "gaps", "gaps_empty_row", "gaps_empty_step", "right"]


def make_case(seed, T=6, B=3, F=3, H=4, P=0, mask=None, reverse=False, zero=True, mx_kind="none",
              mh_kind="none", act="tanh", ract="sigmoid", bias="both", dtype=torch.float64, scale=1.0, *,
              weight_scale=0.5, bias_scale=0.3, drop_first_unit=True):
    """Inputs, weights and run, all leaves requiring grad, drawn in float64 from ``seed`` and cast to
    ``dtype``. ``mask``: a (T, B) step mask, None, or a kind of MASK_KINDS drawn after the weights;
    ``bias``: "both", "ih", "hh", "none" (True and False: both and none); dropout masks ``mx_kind`` /
    ``mh_kind`` "none", "shared" or "per_gate", with at least their first unit dropped when
    ``drop_first_unit``."""
    gen = torch.Generator().manual_seed(seed)
    bias = {True: "both", False: "none"}.get(bias, bias)

    def rnd(*shape, s=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * (s * scale)
        return t.to(dtype).requires_grad_()

    out_size = P or H
    x = rnd(T, B, F)
    h0 = rnd(B, out_size, s=0.5)
    c0 = rnd(B, H, s=0.5)
    w = DirectionWeights(
        w_ih=rnd(4 * H, F, s=weight_scale),
        w_hh=rnd(4 * H, out_size, s=weight_scale),
        b_ih=rnd(4 * H, s=bias_scale) if bias in ("both", "ih") else None,
        b_hh=rnd(4 * H, s=bias_scale) if bias in ("both", "hh") else None,
        w_hr=rnd(P, H, s=weight_scale) if P else None,
    )
    step_mask = _step_mask(mask, T, B, gen) if isinstance(mask, str) else mask

    def dropout_mask(kind, feat):
        if kind == "none":
            return None
        shape = (4, B, feat) if kind == "per_gate" else (B, feat)
        keep = torch.rand(*shape, generator=gen) > 0.3
        if drop_first_unit:
            keep.view(-1)[0] = False
        return keep.to(dtype) / 0.7

    run = DirectionRun(
        activation=resolve(act),
        recurrent_activation=resolve(ract),
        step_mask=step_mask,
        reverse=reverse,
        zero_masked_output=zero,
        input_dropout_mask=dropout_mask(mx_kind, F),
        recurrent_dropout_mask=dropout_mask(mh_kind, out_size),
    )
    return x, h0, c0, w, run


def _step_mask(kind: str, T: int, B: int, gen: torch.Generator) -> torch.Tensor | None:
    if kind == "none":
        return None
    step_mask = torch.rand(T, B, generator=gen) > 0.35
    if kind == "right":
        lengths = torch.randint(0, T + 1, (B,), generator=gen)
        step_mask = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)
    if kind == "gaps_empty_row":
        step_mask[:, 0] = False
    if kind == "gaps_empty_step":
        step_mask[T // 2, :] = False
    return step_mask


#: the fast kernel's cases (all arguments positional up to dtype): smaller weights, dropout masks as drawn
fast_case = functools.partial(make_case, weight_scale=0.4, bias_scale=0.2, drop_first_unit=False)


# -- comparisons of the native kernel's tests: {name: tensor} ------------------------------------------
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


def assert_results_close(got, want, rtol, atol, context="", scaled=False, same_dtype=False):
    """Every result close; ``scaled``: atol relative to the tensor's largest magnitude (float32 sums the same
    terms in another order, and unbounded activations make values of 1e3-1e5 over 20 steps); ``same_dtype``:
    the results must also keep the expected dtypes (else they are compared in the got dtype)."""
    assert got.keys() == want.keys()
    for name in want:
        if same_dtype:
            assert got[name].dtype == want[name].dtype, f"{context} {name}: {got[name].dtype}"
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


# -- comparisons of the fast kernel's tests: [out, h, c, *grads] ---------------------------------------
def outputs_and_grads(kernel, x, h0, c0, w, run, seed=0):
    leaves = [x, h0, c0] + [p for p in (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr) if p is not None]
    out, h, c = kernel(x, h0, c0, w, run)
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)).sum()
        for t in (out, h, c)
    )
    grads = torch.autograd.grad(loss, leaves)
    return [out, h, c, *grads]


def assert_same(case, atol, rtol, skip_overflow=False):
    """The fast kernel's results and gradients equal the reference's."""
    expected = outputs_and_grads(run_direction_reference, *case)
    if skip_overflow:
        # exponential activations can overflow; where they do, inf/nan patterns need not match
        assume(all(bool(torch.isfinite(t).all()) for t in expected))
    got = outputs_and_grads(run_direction_fast, *case)
    names = ["output", "h", "c", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr"]
    if case[3].b_ih is None:
        names = [n for n in names if not n.startswith("db")]
    for name, e, g in zip(names, expected, got, strict=False):
        assert g.shape == e.shape, name
        assert g.dtype == e.dtype, name
        # unbounded activations (celu gates, squareplus cells ...) grow values step by step and sum the same
        # terms in another order: compare against the tensor's own scale
        scale = float(e.detach().abs().nan_to_num(posinf=0.0, neginf=0.0).max()) if e.numel() else 0.0
        torch.testing.assert_close(
            g, e, atol=atol * max(1.0, scale), rtol=rtol, equal_nan=True,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def case_strategies(activations: list[str], recurrent_activations: list[str], max_steps: int,
                    max_hidden: int) -> dict:
    """Hypothesis strategies for the arguments of fast_case (the input size F left to the caller) and
    ``proj``, whether to draw a projection (see :func:`projection`)."""
    return dict(
        seed=st.integers(0, 2**31 - 1),
        T=st.integers(1, max_steps),
        B=st.integers(1, 4),
        H=st.integers(1, max_hidden),
        proj=st.booleans(),
        mask_kind=st.sampled_from(MASK_KINDS),
        reverse=st.booleans(),
        zero=st.booleans(),
        mx_kind=st.sampled_from(["none", "shared", "per_gate"]),
        mh_kind=st.sampled_from(["none", "shared", "per_gate"]),
        act=st.sampled_from(activations),
        ract=st.sampled_from(recurrent_activations),
        bias=st.booleans(),
    )


def projection(seed: int, H: int, proj: bool) -> int:
    """A proj_size in 1..H-1 drawn from the seed, or 0 (none)."""
    return (seed % (H - 1)) + 1 if proj and H > 1 else 0


# -- a stand-in for CUDA graph capture (the stand_in_graphs fixture) -------------------------------------
class StandInGraph:
    """Replays its body into the tensors of its first run, as a graph replays into fixed addresses."""

    def __init__(self, body, static_args, fixed):
        self.body, self.static_args, self.fixed = body, static_args, fixed

    def replay(self):
        fresh = self.body(*self.static_args)
        for into, value in zip(self.fixed, fresh, strict=True):
            if into is not None and not any(into is s for s in self.static_args):
                into.copy_(value)

    def pool(self):
        return id(self)


def stand_in_capture(body, static_args, pool):
    fixed = body(*static_args)
    captures.append((body, pool))
    return StandInGraph(body, static_args, fixed), fixed


captures: list = []
