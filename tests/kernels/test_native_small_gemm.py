# ruff: noqa: N803, N806
"""The hand-written gemm for tiny products (native/_small_gemm.py, _lstm_small_gemm.h): every case of its
BLAS interface against torch, the forward loop through it against the reference loop, and the first-use
choice between it and the BLAS gemm (a choice, not a timing, is asserted)."""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernel_cases import assert_results_close, make_case, needs_extension, results

from unilstm.kernels import first_use, policy
from unilstm.kernels.native import _small_gemm, run_direction_native
from unilstm.kernels.reference import run_direction_reference

_I64 = ctypes.POINTER(ctypes.c_int64)


def _call(address: int, dtype: torch.dtype, ta: str, tb: str, m: int, n: int, k: int, alpha: float,
          a: torch.Tensor, lda: int, b: torch.Tensor, ldb: int, beta: float, c: torch.Tensor,
          ldc: int) -> None:
    real = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
    pointer = ctypes.POINTER(real)
    gemm = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _I64, _I64, _I64, pointer, pointer, _I64,
                            pointer, _I64, pointer, pointer, _I64)(address)

    def i64(v: int):
        return ctypes.byref(ctypes.c_int64(v))

    def data(t: torch.Tensor):
        return ctypes.cast(t.data_ptr(), pointer)

    gemm(ta.encode(), tb.encode(), i64(m), i64(n), i64(k), ctypes.byref(real(alpha)), data(a), i64(lda),
         data(b), i64(ldb), ctypes.byref(real(beta)), data(c), i64(ldc))


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ta", ["N", "T"])
@pytest.mark.parametrize("tb", ["N", "t"])
@pytest.mark.parametrize(("m", "n", "k"), [(200, 1, 50), (37, 3, 19), (5, 2, 70), (1, 1, 1), (64, 2, 0)])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (0.5, 1.0), (1.0, -2.0)])
def test_every_case_of_the_blas_interface_equals_torch(dtype, ta, tb, m, n, k, alpha, beta):
    """Column-major C (m, n) = alpha op(A) op(B) + beta C with leading dimensions past the sizes, around the
    vector widths and their tails; beta 0 never reads C (it starts as NaN there)."""
    address = _small_gemm.small_gemm(dtype)
    assert address, "the build exports the hand-written gemm and it passed its first-use check"
    generator = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    pad = 3
    # column-major storage: a matrix (rows, cols) with leading dimension ld is a row-major (cols, ld) tensor
    a_rows, a_cols = (m, k) if ta == "N" else (k, m)
    b_rows, b_cols = (k, n) if tb == "N" else (n, k)
    a = torch.randn(a_cols, a_rows + pad, generator=generator, dtype=dtype)
    b = torch.randn(b_cols, b_rows + pad, generator=generator, dtype=dtype)
    c0 = torch.randn(n, m + pad, generator=generator, dtype=dtype)
    A = a[:, :a_rows].t() if ta == "N" else a[:, :a_rows]  # op(A) as (m, k)
    B = b[:, :b_rows].t() if tb == "N" else b[:, :b_rows]  # op(B) as (k, n)
    want = alpha * (A.double() @ B.double())
    if beta != 0.0:
        want = want + beta * c0[:, :m].t().double()
    c = c0.clone()
    if beta == 0.0:
        c[:, :m] = float("nan")
    _call(address, dtype, ta, tb, m, n, k, alpha, a, a_rows + pad, b, b_rows + pad, beta, c, m + pad)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(c[:, :m].t().double(), want, rtol=tolerance, atol=tolerance)
    assert torch.equal(c[:, m:], c0[:, m:]), "nothing past the m rows of C is written"


@needs_extension
@pytest.mark.parametrize(
    "case_args",
    [
        dict(T=5, B=1, F=3, H=20, act="relu"),
        dict(T=4, B=2, F=2, H=17, P=5, mask="gaps", reverse=True),
        dict(T=3, B=3, F=4, H=9, mh_kind="per_gate", mx_kind="shared", mask="gaps_empty_step", zero=False),
    ],
)
def test_the_forward_loop_through_the_small_gemm_equals_the_reference(case_args, monkeypatch):
    """With the policy naming the hand-written gemm, the native kernel's forward loop calls it for every
    product (input projection, recurrent and projection products, per-gate ones): outputs, states and every
    gradient equal the reference loop's in float64."""
    if not _small_gemm.small_gemm(torch.float64):
        pytest.skip("the build lacks the hand-written gemm")
    monkeypatch.setattr(policy, "SMALL_GEMM", True)
    case = make_case(4, **case_args)
    got = results(run_direction_native, *case)
    want = results(run_direction_reference, *case)
    assert_results_close(got, want, rtol=1e-10, atol=1e-10)


@needs_extension
def test_the_first_call_of_a_kind_measures_both_gemms(monkeypatch):
    """Measuring (not the suite's policy), the first batch-1 call of a kind times the loop with either gemm
    and records the choice (per kind of loop: with the inputs projected in the loop or not); the result,
    from whichever won, equals the reference's."""
    if not _small_gemm.small_gemm(torch.float32):
        pytest.skip("the build lacks the hand-written gemm")
    monkeypatch.setenv(first_use.CHOICE_ENV, "measure")
    first_use.forget()
    try:
        x, h0, c0, w, run = make_case(7, T=12, B=1, F=3, H=24, act="relu", dtype=torch.float32)
        with torch.no_grad():
            got = run_direction_native(x, h0, c0, w, run)
            want = run_direction_reference(x, h0, c0, w, run)
        chosen = {kind: found for kind, found in first_use.routes().items() if kind[0] == "loop_gemm"}
        # one kind per input-projection route the inference measurement tried (the loop projects or not)
        assert 1 <= len(chosen) <= 2
        for winner, seconds in chosen.values():
            assert set(seconds) == {"blas", "small"} and winner in seconds
        for g, e in zip(got, want, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    finally:
        first_use.forget()
