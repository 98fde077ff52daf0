# ruff: noqa: N803, N806
"""The fused Triton cell steps of the fast kernel, run through Triton's interpreter on the CPU.

conftest.py sets TRITON_INTERPRET=1 before anything imports Triton, so the kernels written for the GPU run
here on CPU tensors, with plain-Triton exp and tanh in place of libdevice's (the one difference: see
_triton_cell_kernels). benchmarks/gpu_check.py runs the same comparison on a GPU with the compiled kernels.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from kernel_cases import assert_same, case_strategies, fast_case, outputs_and_grads, projection

from unilstm.activations import REGISTRY
from unilstm.kernels import fast, policy, triton_cell
from unilstm.kernels.fast import run_direction_fast
from unilstm.kernels.reference import DirectionRun, run_direction_reference

pytest.importorskip("triton")

FUSED = sorted(name for name, fn in REGISTRY.items() if triton_cell._code(fn) is not None)


@pytest.fixture
def triton_on_cpu(monkeypatch):
    monkeypatch.setattr(triton_cell, "run_on_cpu", True)


def test_every_coded_activation_is_registered_and_accepted(triton_on_cpu):
    assert {REGISTRY[name] for name in FUSED} == set(triton_cell.ACTIVATION_CODES)  # each one has a name
    x = torch.zeros(2, 1, 1)
    for name in FUSED:
        assert triton_cell.accepts(x, REGISTRY[name], REGISTRY["sigmoid"])
    assert not triton_cell.accepts(x, REGISTRY["mish"], REGISTRY["sigmoid"])


def test_not_used_on_the_cpu_by_default():
    assert not triton_cell.accepts(torch.zeros(2, 1, 1), torch.tanh, torch.sigmoid)


def count_fused_steps(set_attribute=setattr) -> list[int]:
    """Wrap the fused step functions (through ``set_attribute``: setattr, or a monkeypatch's) so that each
    call appends to the returned list. benchmarks/gpu_check.py uses it on the GPU."""
    calls: list[int] = []
    for name in ("forward_step", "backward_step"):
        original = getattr(triton_cell, name)

        def counted(*args, original=original, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        set_attribute(triton_cell, name, counted)
    return calls


def used_triton(monkeypatch) -> list[int]:
    return count_fused_steps(monkeypatch.setattr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(**case_strategies(FUSED, FUSED, max_steps=5, max_hidden=5))
def test_fused_steps_equal_reference_float64(
    triton_on_cpu, monkeypatch, seed, T, B, H, proj, mask_kind, reverse, zero, mx_kind, mh_kind, act, ract,
    bias,
):
    case = fast_case(seed, T, B, 3, H, projection(seed, H, proj), mask_kind, reverse, zero, mx_kind, mh_kind,
                     act, ract, bias, torch.float64)
    calls = used_triton(monkeypatch)
    assert_same(case, atol=1e-10, rtol=1e-9, skip_overflow=True)
    step_mask = case[4].step_mask
    assert calls or not (step_mask is None or bool(step_mask.any())), "the fused steps did not run"


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.bfloat16, 5e-2), (torch.float16, 1e-2)])
def test_fused_steps_in_lower_precision(triton_on_cpu, monkeypatch, dtype, tol):
    case = fast_case(5, 6, 3, 4, 8, 0, "gaps", False, False, "shared", "per_gate", "relu", "hard_sigmoid",
                     True, dtype)
    calls = used_triton(monkeypatch)
    assert_same(case, atol=tol, rtol=tol)
    assert calls


def test_fused_steps_inside_graph_replays(triton_on_cpu, stand_in_graphs, monkeypatch):  # noqa: F811
    case = fast_case(7, 5, 3, 2, 4, 0, "gaps_empty_step", True, False, "none", "shared", "selu", "sigmoid",
                     True, torch.float64)
    calls = used_triton(monkeypatch)
    for _ in range(3):
        assert_same(case, atol=1e-10, rtol=1e-9)
    assert calls


@pytest.mark.parametrize("mask_kind", ["none", "gaps_empty_step"])
@pytest.mark.parametrize("zero", [False, True])
def test_projection_through_the_fused_steps(triton_on_cpu, monkeypatch, mask_kind, zero):
    case = fast_case(1, 5, 3, 3, 5, 2, mask_kind, True, zero, "none", "per_gate", "relu", "sigmoid", True,
                     torch.float64)
    calls = used_triton(monkeypatch)
    assert_same(case, atol=1e-10, rtol=1e-9)
    assert calls


@pytest.mark.parametrize("through_bias", [False, True])
def test_projection_product_routes(triton_on_cpu, monkeypatch, through_bias):
    """policy.PROJECTION_THROUGH_BIAS_MAX_ROWS: the projection as addmm with a zero bias (cublasLt on CUDA) or
    as mm; the numbers are the reference's either way."""
    monkeypatch.setattr(policy, "PROJECTION_THROUGH_BIAS_MAX_ROWS", 16 if through_bias else 0)
    case = fast_case(4, 5, 3, 3, 5, 2, "gaps_empty_step", False, False, "shared", "none", "tanh", "sigmoid",
                     True, torch.float64)
    biased = []
    original_addmm = torch.addmm

    def counted_addmm(bias, *args, **kwargs):
        biased.append(bias.dim() == 1 and not bool(bias.any()))
        return original_addmm(bias, *args, **kwargs)

    monkeypatch.setattr(torch, "addmm", counted_addmm)
    calls = used_triton(monkeypatch)
    assert_same(case, atol=1e-10, rtol=1e-9)
    assert calls and any(biased) == through_bias


def test_direction_run_shapes_unchanged(triton_on_cpu):
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    case = fast_case(2, 3, 2, 4, 5, 0, "none", False, False, "none", "none", "elu", "sigmoid", True,
                     torch.float64)
    out, h, c = run_direction_fast(*case)
    assert out.shape == (3, 2, 5) and h.shape == (2, 5) and c.shape == (2, 5)
    assert isinstance(case[4], DirectionRun) and x.dtype == out.dtype


def test_kernels_compile_for_hopper():
    """The interpreter accepts code that Triton's compiler refuses: compile every activation code forward
    and backward for sm_90 (no GPU needed)."""
    tool = pathlib.Path(__file__).resolve().parents[2] / "tools" / "gpu" / "compile_triton_cell.py"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, str(tool), "--quick"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled 80 Triton cell kernels" in done.stdout


def test_switched_off(triton_on_cpu, monkeypatch):
    monkeypatch.setattr(triton_cell, "enabled", False)
    assert not triton_cell.accepts(torch.zeros(2, 1, 1), torch.tanh, torch.sigmoid)


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("zero", [False, True])
def test_fused_steps_keep_overflow_in_masked_rows_out(triton_on_cpu, monkeypatch, zero, capturable):
    """As test_fast_kernel.test_overflow_in_masked_rows_stays_out, through the fused steps."""
    original = fast._step_patterns
    monkeypatch.setattr(fast, "_step_patterns", lambda m, T, **_: original(m, T, capturable))
    case = fast_case(4, 5, 3, 2, 4, 2, "gaps_empty_step", False, zero, "none", "shared", "exponential",
                     "sigmoid", True, torch.float64)
    x, run = case[0], case[4]
    with torch.no_grad():
        x[~run.step_mask] = 0.0
    expected = outputs_and_grads(run_direction_reference, *case)
    with torch.no_grad():
        x[~run.step_mask] = 1e4
    calls = used_triton(monkeypatch)
    got = outputs_and_grads(run_direction_fast, *case)
    assert calls
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("mh_kind", ["none", "shared", "per_gate"])
@pytest.mark.parametrize("mask_kind", ["none", "gaps"])
def test_gatewise_backward_combines_gate_products_in_one_kernel(
    triton_on_cpu, monkeypatch, mh_kind, mask_kind
):
    """Per-gate input masks make the gate layout per gate whatever the recurrent mask is: every branch of
    combine_gate_products (no mask, shared, per gate; with and without the masked rows' dh)."""
    case = fast_case(6, 5, 3, 3, 4, 0, mask_kind, False, True, "per_gate", mh_kind, "tanh", "sigmoid", True,
                     torch.float64)
    combined: list[int] = []
    original = triton_cell.combine_gate_products

    def counted(*args):
        combined.append(1)
        return original(*args)

    monkeypatch.setattr(triton_cell, "combine_gate_products", counted)
    assert_same(case, atol=1e-10, rtol=1e-9)
    assert len(combined) == 5


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mh_kind", ["shared", "per_gate"])
def test_recurrent_mask_folded_into_the_step(triton_on_cpu, monkeypatch, capturable, reverse, mh_kind):
    """The fused step writes h' * mh for the next step's product; the first step masks h0 itself, and a step
    where no row counts (skipped on the CPU) keeps both h and the masked operand. Here the first step the
    direction processes is such a step."""
    original = fast._step_patterns
    monkeypatch.setattr(fast, "_step_patterns", lambda m, T, **_: original(m, T, capturable))
    case = fast_case(8, 5, 3, 2, 4, 0, "gaps", reverse, False, "none", mh_kind, "relu", "sigmoid", True,
                     torch.float64)
    case[4].step_mask[-1 if reverse else 0, :] = False
    products: list[int] = []
    original_mul = torch.mul

    def counted_mul(*args, **kwargs):
        products.append(1)
        return original_mul(*args, **kwargs)

    monkeypatch.setattr(torch, "mul", counted_mul)
    assert_same(case, atol=1e-10, rtol=1e-9)
    assert len(products) <= 2  # h0 times the mask once a direction (the reference makes no torch.mul call)


def test_first_use_check_passes_through_the_interpreter():
    triton_cell._works_on.cache_clear()
    assert triton_cell._works_on(torch.device("cpu"))


def test_kernels_that_fail_on_the_device_leave_the_torch_ops(triton_on_cpu, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("PTX .version 9.0 does not support .target sm_120")

    monkeypatch.setattr(triton_cell, "forward_step", broken)
    triton_cell._works_on.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Triton cell kernels unusable on cpu"):
            assert not triton_cell.accepts(torch.zeros(2, 1, 1), torch.tanh, torch.sigmoid)
        case = fast_case(2, 4, 2, 3, 4, 0, "gaps", False, False, "none", "none", "relu", "sigmoid", True,
                         torch.float64)
        assert_same(case, atol=1e-10, rtol=1e-9)  # the fast kernel's torch ops
    finally:
        triton_cell._works_on.cache_clear()
