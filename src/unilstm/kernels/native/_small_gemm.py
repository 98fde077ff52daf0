# ruff: noqa: N803, N806  (M, N, K are the sizes of the products checked)
"""The hand-written gemm for tiny products (``_lstm_small_gemm.h``): found, checked, and chosen per kind of
call by measuring it against the BLAS gemm at first use.

At batch 1 a step's recurrent product h_{t-1} W_hh^T is a matrix-vector product of a few thousand
multiply-adds; MKL's sgemm spends about a microsecond on its entry before the arithmetic, which is most of
a streaming step at H = 50 (``benchmarks/RESULTS.md``, "Batch-1 streaming"). The C module exports
``unilstm_small_sgemm`` / ``unilstm_small_dgemm``, gemms with the BLAS's Fortran interface that the loops
can call through the same pointer. Whether one is faster than the BLAS for a call depends on the processor
and the shape, so :func:`loop_gemm` decides per kind of loop (:func:`loop_kind`) by running the loop both
ways at first use (:func:`..first_use.route`); ``policy.SMALL_GEMM`` decides with measuring off.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from .. import first_use, policy
from . import _blas
from . import _extension as C

_SYMBOLS = {torch.float32: "unilstm_small_sgemm", torch.float64: "unilstm_small_dgemm"}
_FOUND: dict[torch.dtype, int] | None = None  # None: not looked for yet

#: where the gemm's address sits in a forward loop's argument tuple, and the four BLAS functions after it
#: (packed GEMM, batched GEMM) that the hand-written gemm replaces by zeros
_GEMM_AT = C.FORWARD_LOOP_PARAMETERS.index("gemm") if "gemm" in C.FORWARD_LOOP_PARAMETERS else 1
_BLAS_SLOTS = 5


def _exported(name: str) -> int:
    """The address of ``name`` in the C module (0 when the build lacks it: an older build)."""
    module = getattr(C, "_lstm_cell", None)
    path = getattr(module, "__file__", None)
    if path is None:
        return 0
    try:
        return ctypes.cast(getattr(ctypes.CDLL(path), name), ctypes.c_void_p).value or 0
    except (OSError, AttributeError):
        return 0


def _agrees(address: int, dtype: torch.dtype) -> bool:
    """The products the loops make (a weight read in its own layout or as a transposed copy, beta 0) on a
    few shapes around the vector width equal torch's, and one forward step through the loop does."""
    generator = torch.Generator().manual_seed(0)
    for M, K, N in ((1, 50, 200), (3, 17, 36), (2, 64, 5), (1, 1, 8)):
        a = torch.randn(M, K, generator=generator, dtype=dtype)
        w = torch.randn(N, K, generator=generator, dtype=dtype)
        want = a @ w.t()
        for trans, stored in ((True, w), (False, w.t().contiguous())):
            got = torch.full((M, N), float("nan"), dtype=dtype)  # beta 0 must not read it
            C.product(float64=dtype == torch.float64, blas=(address, 0, 0, 0, 0), trans=trans, M=M, N=N, K=K,
                      A=a.data_ptr(), lda=K, W=stored.data_ptr(), ldw=K if trans else N, C=got.data_ptr(),
                      ldc=N)
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
                return False
    return _blas._gemm_agrees(address, dtype)


def small_gemm(dtype: torch.dtype) -> int:
    """The checked address of the hand-written gemm for ``dtype`` (found on first use), or 0."""
    global _FOUND
    if _FOUND is None:
        found: dict[torch.dtype, int] = {}
        if C.available():
            with _blas._first_use_checks():
                for kind, name in _SYMBOLS.items():
                    address = _exported(name)
                    if address and _agrees(address, kind):
                        found[kind] = address
        _FOUND = found
    return _FOUND.get(dtype, 0)


def with_gemm(arguments: tuple[int, ...], gemm: int) -> tuple[int, ...]:
    """A loop's argument tuple with ``gemm`` as its gemm and no packed or batched GEMM (the loops then call
    ``gemm`` for every product)."""
    return arguments[:_GEMM_AT] + (gemm, 0, 0, 0, 0) + arguments[_GEMM_AT + _BLAS_SLOTS :]


def loop_kind(loop: str, dtype: torch.dtype, T: int, B: int, F: int, H: int, P: int, masks: int,
              trans: bool) -> tuple:
    """What decides the gemm of a loop: forward or backward, dtype, each size's power-of-two bucket (F: 0
    when the loop does not project the inputs), per-gate masks, the weights' layout and the thread count."""
    return ("loop_gemm", loop, dtype, T.bit_length(), B.bit_length(), F.bit_length(), H.bit_length(),
            P.bit_length(), masks, trans, torch.get_num_threads())


def loop_gemm(kind_of: Callable[[], tuple], dtype: torch.dtype, run: Callable[[tuple[int, ...]], None] | None,
              arguments: tuple[int, ...]) -> tuple[int, ...]:
    """The argument tuple to run a loop with: its own (the BLAS gemm) or the hand-written gemm's, whichever
    measured faster for its kind ``kind_of()`` (made only when measuring: :func:`loop_kind`). The first call
    of a kind runs the loop both ways, ``run(arguments)``, in interleaved rounds: the loop must give the
    same results when run again on the same buffers, as the forward loop does; with ``run`` None nothing is
    measured and an unmeasured kind keeps the BLAS. ``policy.SMALL_GEMM`` decides with measuring off."""
    small = small_gemm(dtype)
    if not small:
        return arguments
    if not first_use.measuring():
        return with_gemm(arguments, small) if policy.SMALL_GEMM else arguments
    kind = kind_of()
    chosen = first_use.measured_route(kind)
    # (not inside the first-use check of the cell split: its call is no kind the caller makes)
    if chosen is None and run is not None and _blas._threads_for_check is None:
        mine = with_gemm(arguments, small)
        chosen = first_use.route(
            kind, lambda: {"blas": lambda: run(arguments), "small": lambda: run(mine)}, "blas"
        )
    return with_gemm(arguments, small) if chosen == "small" else arguments
