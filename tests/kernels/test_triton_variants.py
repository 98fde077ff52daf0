# ruff: noqa: N803, N806
"""The fused Triton steps of the cell variants (triton_cell.VariantSteps, _triton_variant_kernels) against the
reference loop, run through Triton's interpreter on the CPU (conftest.py sets TRITON_INTERPRET=1): values and
every gradient, variant tensors included, and the count of fused steps that ran. benchmarks/gpu_check.py
runs the same cases on a GPU with the compiled kernels; test_kernels_compile_for_hopper compiles them."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import MASK_KINDS, captures, projection
from variant_cases import (
    COMBINED_VARIANTS,
    SINGLE_VARIANTS,
    cast_variant_case,
    make_variant_case,
    results_with_overflowing_padding,
    variant_results,
)

from unilstm.activations import parametric, resolve
from unilstm.kernels import fast_variants, triton_cell
from unilstm.kernels.fast import run_direction_fast
from unilstm.kernels.fast_activations import act_entry
from unilstm.kernels.reference import is_variant, run_direction_reference

pytest.importorskip("triton")

#: every variant case, at a size the interpreter runs quickly (T = 3 steps, single variants B = 2 rows)
CASES = {
    **{name: {"T": 3, "B": 2, **kw} for name, kw in SINGLE_VARIANTS.items()},
    **{name: {"T": 3, **kw} for name, kw in COMBINED_VARIANTS.items()},
}
#: the cases whose run is a variant (ONNX's parametric activations alone are the standard cell)
VARIANT_CASES = sorted(name for name, kw in CASES.items() if is_variant(*make_variant_case(0, **kw)[3:]))
FLOAT32_TOL = 2e-5  # the fused standard cell's float32 tolerance (test_triton_cell)


@pytest.fixture
def fused_calls(monkeypatch):
    """The Triton steps on the CPU, counting the calls of each VariantSteps method by name."""
    monkeypatch.setattr(triton_cell, "run_on_cpu", True)
    cpu = torch.device("cpu")  # the first-use checks run their tiny steps before the counting starts
    assert triton_cell._works_on(cpu) and triton_cell._variants_work_on(cpu)
    return count_variant_steps(monkeypatch.setattr)


def count_variant_steps(set_attribute=setattr) -> collections.Counter:
    """Wrap VariantSteps' kernel methods (through ``set_attribute``: setattr, or a monkeypatch's) so that
    each call counts under its name. benchmarks/gpu_check.py uses it on the GPU."""
    calls: collections.Counter = collections.Counter()
    for name in ("forward", "project", "backward_prelude", "backward"):
        original = getattr(triton_cell.VariantSteps, name)

        def counted(self, *args, name=name, original=original, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        set_attribute(triton_cell.VariantSteps, name, counted)
    return calls


def processed_steps(run, T: int) -> int:
    """Steps the CPU body computes (those where some row counts: the others are skipped on the host)."""
    return T if run.step_mask is None else int(run.step_mask.any(dim=1).sum())


def assert_close_results(got: dict, want: dict, atol: float, rtol: float) -> None:
    assert got.keys() == want.keys()
    for name, e in want.items():
        g = got[name]
        assert g.dtype == e.dtype and g.shape == e.shape, name
        scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
        torch.testing.assert_close(
            g, e, atol=atol * scale, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("name", VARIANT_CASES)
def test_variant_steps_equal_reference_float64(fused_calls, name):
    case = make_variant_case(11, **CASES[name])
    got = variant_results(run_direction_fast, *case)
    want = variant_results(run_direction_reference, *case)
    for key, value in got.items():  # not a comparison of zeros: every leaf gets a gradient
        assert bool(value.abs().sum() > 0), key
    assert_close_results(got, want, atol=1e-10, rtol=1e-10)
    steps = processed_steps(case[4], case[0].shape[0])
    projected = case[3].w_hr is not None
    around_projection = {"project": steps, "backward_prelude": steps} if projected else {}
    assert fused_calls == {"forward": steps, "backward": steps, **around_projection}


@pytest.mark.parametrize("name", ["everything", "onnx_like"])
def test_variant_steps_float32(fused_calls, name):
    # (seed 13: at seed 12 "everything" is ill-conditioned in float32, the torch ops 2.6e-5 off as well)
    case = make_variant_case(13, dtype=torch.float32, **{**CASES[name], "B": 2})
    got = variant_results(run_direction_fast, *case)
    reference = variant_results(run_direction_reference, *cast_variant_case(*case, torch.float64))
    want = {k: v.float() for k, v in reference.items()}
    assert_close_results(got, want, atol=FLOAT32_TOL, rtol=FLOAT32_TOL)
    assert fused_calls["forward"] and fused_calls["backward"]


@pytest.mark.parametrize("name, dtype, tol", [("tf1_like", torch.float16, 1e-2),
                                              ("ln_zoneout_infer_masked", torch.bfloat16, 5e-2)])
def test_variant_steps_in_half_precision(fused_calls, name, dtype, tol):
    """float16 and bfloat16 compute in float32 and round where the torch ops store (the tolerances of the
    standard fused steps; the torch ops and the reference loop in these dtypes are as far off). Triton's
    interpreter truncates float32 to bfloat16 where a GPU rounds to nearest: here bfloat16 is a little
    further off than on a GPU."""
    case = make_variant_case(13, dtype=dtype, **{**CASES[name], "B": 2})
    got = variant_results(run_direction_fast, *case)
    reference = variant_results(run_direction_reference, *cast_variant_case(*case, torch.float64))
    assert_close_results(got, {k: v.to(dtype) for k, v in reference.items()}, atol=tol, rtol=tol)
    assert fused_calls["forward"] and fused_calls["backward"]


def test_every_variant_at_once_through_graph_replays(fused_calls, stand_in_graphs):
    """Every variant but layer normalisation (the other tests have it), ONNX's elu and leaky_relu, with
    per-gate dropout masks, a mask with an empty step and a projection, as the CUDA bodies run them (every
    step partly masked: no host reads) in three calls: direct, capture, replay (kernel_cases' stand-in for
    CUDA graphs)."""
    variants = {**COMBINED_VARIANTS["everything"], "coupled_gates": True, "layer_norm": False,
                "act": parametric("elu", 0.6), "output_activation": parametric("leaky_relu", 0.05),
                "mx_kind": "per_gate", "mh_kind": "per_gate", "mask": "gaps_empty_step", "zero": False,
                "T": 3, "B": 2}
    case = make_variant_case(5, **variants)
    want = variant_results(run_direction_reference, *case)
    for _ in range(3):
        assert_close_results(variant_results(run_direction_fast, *case), want, atol=1e-10, rtol=1e-10)
    assert captures  # the bodies went through the stand-in graphs
    # every step runs, the empty one included, in each run of the bodies (capture runs them once more)
    assert fused_calls["forward"] == fused_calls["backward"] == fused_calls["project"]
    assert fused_calls["forward"] % 3 == 0 and fused_calls["forward"] >= 9


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1), H=st.integers(1, 3), proj=st.booleans(), mask=st.sampled_from(MASK_KINDS),
    reverse=st.booleans(), zero=st.booleans(), mx_kind=st.sampled_from(["none", "shared", "per_gate"]),
    mh_kind=st.sampled_from(["none", "shared", "per_gate"]), bias=st.sampled_from(["both", "ih", "none"]),
    layer_norm=st.booleans(), peepholes=st.booleans(), gate_clip=st.sampled_from([None, 0.7]),
    cell_clip=st.sampled_from([None, 0.6]), proj_clip=st.sampled_from([None, 0.3]),
    coupled_gates=st.booleans(), zoneout_hidden=st.sampled_from([0.0, 0.25, "draw"]),
    zoneout_cell=st.sampled_from([0.0, 0.1, "draw"]), forget_bias=st.sampled_from([0.0, 1.0]),
    output_activation=st.sampled_from([None, "relu", parametric("thresholded_relu", 0.1)]),
    act=st.sampled_from(["tanh", parametric("scaled_tanh", 1.2, 0.7), "elu"]),
    ract=st.sampled_from(["sigmoid", parametric("hard_sigmoid", 0.3, 0.45)]),
)
def test_random_variant_combinations_through_the_fused_steps(fused_calls, seed, H, proj, proj_clip, **kwargs):
    """Random combinations of every variant with every run option (as test_fast_variants' property test
    of the torch ops), through the fused steps: float64 within 1e-10."""
    P = projection(seed, H, proj)
    case = make_variant_case(seed, T=3, B=2, F=2, H=H, P=P, proj_clip=proj_clip if P else None, **kwargs)
    before = fused_calls["backward"]
    assert_close_results(variant_results(run_direction_fast, *case),
                         variant_results(run_direction_reference, *case), atol=1e-10, rtol=1e-10)
    if is_variant(case[3], case[4]) and processed_steps(case[4], 3):
        assert fused_calls["backward"] > before


def test_overflow_in_masked_rows_stays_out(fused_calls):
    """An exponential activation of padding overflows to inf in masked rows: selections, never products
    with the mask, keep it out of every value and gradient (as test_fast_kernel's for the standard cell)."""
    case = make_variant_case(4, act="exponential", peepholes=True, cell_clip=2.0, layer_norm=True, P=2,
                             proj_clip=0.5, zoneout_hidden="draw", mask="gaps", zero=False, T=3)
    got, want = results_with_overflowing_padding(run_direction_fast, *case)
    assert fused_calls["forward"]
    for name in ("output", "h_T", "c_T", "dw_ih", "dw_hh", "dpeephole", "dln_weight_c", "dw_hr"):
        torch.testing.assert_close(got[name], want[name], atol=1e-10, rtol=1e-10)


def _config(run, **changes):
    run = dataclasses.replace(run, **changes)
    act, ract = act_entry(run.activation), act_entry(run.recurrent_activation)
    out = act if run.output_activation is None else act_entry(run.output_activation)
    return fast_variants.VariantConfig(
        act, ract, out, False, True, 0.0, None, None, None, False, 0.0, 0.0, 1e-5
    )


def test_what_is_declined_by_name(fused_calls):
    """Every variant is fused, in every float dtype; declined are activations without a code (by role),
    and layer normalisation past one program's row (4H values of the compute dtype > 64 KiB)."""
    x32, x64 = torch.zeros(2, 1, 1), torch.zeros(2, 1, 1, dtype=torch.float64)
    run = make_variant_case(0)[4]
    mish = resolve("mish")
    assert triton_cell.variant_declines(x32, _config(run), True, 4096) == []
    assert triton_cell.variant_declines(x32, _config(run), True, 4097) == ["layer_norm"]
    assert triton_cell.variant_declines(x64, _config(run), True, 2049) == ["layer_norm"]
    assert triton_cell.variant_declines(x64, _config(run), False, 10**5) == []
    assert triton_cell.variant_declines(x32.half(), _config(run), True, 4096) == []
    assert triton_cell.variant_declines(x32.bfloat16(), _config(run), True, 4097) == ["layer_norm"]
    assert triton_cell.variant_declines(
        x32, _config(run, activation=mish, recurrent_activation=mish, output_activation=torch.tanh), False, 4
    ) == ["activation", "recurrent_activation"]
    assert triton_cell.variant_declines(x32, _config(run, output_activation=mish), False, 4) == [
        "output_activation"
    ]
    for kind in ("affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu"):
        config = _config(run, recurrent_activation=parametric(kind), output_activation=parametric(kind))
        assert triton_cell.variant_declines(x32, config, False, 4) == []
    # a declined run keeps the torch ops, with the same numbers
    case = make_variant_case(3, output_activation="mish", peepholes=True, T=3, B=2)
    assert_close_results(variant_results(run_direction_fast, *case),
                         variant_results(run_direction_reference, *case), atol=1e-10, rtol=1e-10)
    assert not fused_calls
    monkey_off = triton_cell.enabled
    try:
        triton_cell.enabled = False
        assert not triton_cell.accepts_variants(x32, _config(run), False, 4)
    finally:
        triton_cell.enabled = monkey_off


def test_not_used_on_the_cpu_by_default():
    x = torch.zeros(2, 1, 1)
    assert not triton_cell.accepts_variants(x, _config(make_variant_case(0)[4]), False, 4)


def test_variant_kernels_compile_for_hopper():
    """The interpreter accepts code that Triton's compiler refuses: compile the four variant kernels for
    sm_90 (no GPU needed) in two configurations that switch every variant on, one in float32 and the
    other in float64, and the standard cell's two with parametric activations (``--quick``; the tool alone
    compiles everything in both dtypes)."""
    tool = pathlib.Path(__file__).resolve().parents[2] / "tools" / "gpu" / "compile_triton_variants.py"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, str(tool), "--quick"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled 10 Triton variant kernels" in done.stdout


def test_first_use_check_passes_through_the_interpreter():
    triton_cell._variants_work_on.cache_clear()
    assert triton_cell._variants_work_on(torch.device("cpu"))


def test_variant_kernels_that_fail_on_the_device_leave_the_torch_ops(fused_calls, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of resource: shared memory")

    monkeypatch.setattr(triton_cell.VariantSteps, "forward", broken)
    triton_cell._variants_work_on.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Triton cell-variant kernels unusable on cpu"):
            assert not triton_cell.accepts_variants(torch.zeros(2, 1, 1), _config(make_variant_case(0)[4]),
                                                    False, 4)
        case = make_variant_case(2, peepholes=True, T=3, B=2)
        assert_close_results(variant_results(run_direction_fast, *case),
                             variant_results(run_direction_reference, *case), atol=1e-10, rtol=1e-10)
    finally:
        triton_cell._variants_work_on.cache_clear()


@pytest.mark.parametrize("kind", sorted(triton_cell.PARAMETRIC_CODES))
def test_parametric_activations_alone_in_the_standard_fused_steps(fused_calls, monkeypatch, kind):
    """ONNX's parametric activations without another variant are the standard cell: the fast kernel's own
    body, whose fused steps take alpha and beta too (as the recurrent and as the cell activation)."""
    from test_triton_cell import count_fused_steps

    standard = count_fused_steps(monkeypatch.setattr)
    gate = kind == "hard_sigmoid"  # (the one that makes a gate: the others as the cell's activation)
    act, ract = ("tanh", parametric(kind)) if gate else (parametric(kind, 0.7, 0.4), "sigmoid")
    case = make_variant_case(6, act=act, ract=ract, mask="gaps", zero=False, T=3, B=2)
    assert not is_variant(case[3], case[4])
    assert_close_results(variant_results(run_direction_fast, *case),
                         variant_results(run_direction_reference, *case), atol=1e-10, rtol=1e-10)
    assert standard and not fused_calls
