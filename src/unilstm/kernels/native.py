# ruff: noqa: N803, N806  (T, B, H, P, ... are the maths names of the module docstring)
"""The native kernel: the fast kernel's algorithm with the time loop and the cell in C.

It computes what :func:`~unilstm.kernels.reference.run_direction_reference` computes, on the CPU, in float32
and float64, for the named activations of ``NATIVE_ACTIVATION_IDS``, with step masks with gaps, reverse,
both masked-output modes, proj_size and shared or per-gate dropout masks.

* forward: Z = X W_ih^T + b for all steps in one torch GEMM; then per step rec = h_{t-1} W_hh^T and the
  cell (c_t = f c_{t-1} + i g, h_t = o act(c_t), masks, outputs), which keeps the pre-activations in Z_t.
  It saves Z, the hidden and cell states and, with a projection, r_t = o act(c_t).
* backward: per step the cell recomputes the gate activations from Z_t and overwrites Z_t with the gate
  gradients dZ_t; dh_{t-1} = dZ_t W_hh. Then dW_ih = dZ^T X, dW_hh = dZ^T H_prev, dW_hr = dH^T R and the
  bias gradients as one torch GEMM or sum each over all steps.

The per-step loop runs in C (``forward_loop`` / ``backward_loop`` in ``_lstm_cell_body.h``) and calls the
BLAS gemm that torch itself links (``sgemm_`` / ``dgemm_`` of libtorch_cpu, MKL in the x86 wheels), found
and checked against torch on first use. Where MKL's packed GEMM is exported too (``cblas_sgemm_pack`` /
``_compute``, float32), the recurrent and projection weights are packed once per call for products of at
least 16 rows and K * N >= 2^16 repeated over at least 8 steps (per-step GEMMs 7-35 % faster there). Where
its batched GEMM is (``cblas_?gemm_batch``), the four per-gate products of per-gate recurrent dropout masks
are one call per step (one parallel region instead of four: recurrent_dropout at T=50, B=32, H=128 went
from 1.34x to 1.23x torch's standard forward+backward). Without input dropout masks the C loop also
computes the input projections itself (one GEMM, the biases first), which saves torch ops where they
matter: in streaming calls. Where the gemm symbol is missing, the same loop runs in Python with one torch
GEMM and one C call per step, on buffers at fixed addresses (no tensor is created per step). The fast
kernel makes about twenty torch ops per step: on small shapes their dispatch, not the arithmetic, is the
cost.

The cell makes one pass over the hidden units for the pairs (tanh, sigmoid) and (relu, sigmoid), and a pass
per gate and operation for the other activations. From 4096 hidden units per step (B * H) the C loop splits a
step's cell rows among torch's intra-op threads through the OpenMP runtime torch links (``GOMP_parallel``, the
team its BLAS uses; ``cell_threads``), after checking on first use that two threads give exactly the bits of
one. The two directions of a bidirectional layer can run at once instead (``run_bidirectional_native``,
``pair_accepts``): one C loop on each of two threads of that team, each with its cell unsplit and the BLAS
running on its own thread inside the parallel region. float32 uses vectorised polynomial approximations of exp
and tanh (a few units in the last place, see ``_lstm_cell.c``); float64 uses libm's functions, so the float64
property tests hold this kernel to the reference at 1e-9. The extension is optional: without a C compiler at
install time ``available()`` is False and dispatch uses the fast kernel. Double backward is not supported (the
backward is ``once_differentiable`` and consumes the saved pre-activations: a second backward through the same
graph raises).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import activations as A
from .fast import (
    backward_outputs,
    function_arguments,
    per_gate_weight_grad,
    refuse_second_backward,
    summed_bias,
)
from .opaque import opaque_to_compile
from .reference import GATES, DirectionRun, DirectionWeights, run_direction_reference

try:
    from . import _lstm_cell
except ImportError:  # built without a C compiler: the pure-torch kernels remain
    _lstm_cell = None

__all__ = ["NATIVE_ACTIVATION_IDS", "accepts", "available", "run_direction_native"]

#: The activations the C cell implements, with their ids in ``_lstm_cell.c``.
NATIVE_ACTIVATION_IDS: dict[Callable, int] = {
    A.linear: 0,
    torch.tanh: 1,
    torch.sigmoid: 2,
    torch.relu: 3,
    A.hard_sigmoid: 4,
    A.hard_sigmoid_keras2: 5,
    A.elu: 6,
    A.selu: 7,
    A.softsign: 8,
    A.exponential: 9,
    A.relu6: 10,
    A.leaky_relu: 11,
    A.hard_tanh: 12,
    A.silu: 13,
    A.softplus: 14,
}

_DTYPES = (torch.float32, torch.float64)
_SCRATCH_PER_HIDDEN = 10  # floats of scratch per hidden unit that the C cell needs (backward: 10 H)

# backward_step phases (bit flags, see _lstm_cell.c)
_TAIL, _HEAD, _CELL = 1, 2, 4


_Addresses = dict[torch.dtype, int]


def _torch_cpu_symbols(*names: str) -> list[int] | None:
    """The addresses of ``names`` as libtorch_cpu.so resolves them (its own symbols and those of the
    libraries it links: its BLAS, its OpenMP runtime), 0 for each one missing; None without the library."""
    import ctypes
    import os

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return None

    def address(name: str) -> int:
        try:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
        except AttributeError:
            return 0

    return [address(name) for name in names]


def _find_blas() -> tuple[_Addresses, dict[torch.dtype, tuple[int, int, int]], _Addresses]:
    """The addresses of sgemm_/dgemm_ in the BLAS torch links (MKL in the x86 wheels), of MKL's packed GEMM
    (cblas_?gemm_pack_get_size, _pack, _compute) and of its batched GEMM (cblas_?gemm_batch) where present,
    each checked on small products against torch; empty where they are not exported or disagree: the
    per-step Python loop (no gemm), plain gemm calls (no packing) or four calls per step (no batch) run
    instead."""
    gemms: _Addresses = {}
    packs: dict[torch.dtype, tuple[int, int, int]] = {}
    batches: _Addresses = {}
    if _lstm_cell is None:
        return gemms, packs, batches
    for dtype, letter in ((torch.float32, "s"), (torch.float64, "d")):
        packed = (f"cblas_{letter}gemm_{part}" for part in ("pack_get_size", "pack", "compute"))
        found = _torch_cpu_symbols(f"{letter}gemm_", *packed, f"cblas_{letter}gemm_batch")
        if found is None:
            break
        gemm, pack, batch = found[0], tuple(found[1:4]), found[4]
        if not (gemm and _gemm_agrees(gemm, dtype)):
            continue
        gemms[dtype] = gemm
        if all(pack) and _packed_product_agrees(gemm, pack, dtype):
            packs[dtype] = pack
        if batch and _gate_products_agree(gemm, batch, dtype):
            batches[dtype] = batch
    return gemms, packs, batches


def _packed_product_agrees(gemm: int, pack: tuple[int, int, int], dtype: torch.dtype) -> bool:
    """A product large enough to be packed (M = 16, K * N = 2^18), with the weight read directly and
    transposed, equals torch's."""
    generator = torch.Generator().manual_seed(0)
    M, K, N = 16, 256, 1024
    a = torch.randn(M, K, generator=generator, dtype=dtype)
    w = torch.randn(K, N, generator=generator, dtype=dtype)
    want = a @ w
    for trans, stored in ((0, w), (1, w.t().contiguous())):
        got = torch.empty(M, N, dtype=dtype)
        _lstm_cell.product(
            int(dtype == torch.float64), gemm, *pack, 0, trans, M, N, K, a.data_ptr(), K, stored.data_ptr(),
            K if trans else N, got.data_ptr(), N,
        )
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-3):
            return False
    return True


def _gemm_agrees(address: int, dtype: torch.dtype) -> bool:
    """One forward step through forward_loop with this gemm, reading the weight transposed and as a
    transposed copy, equals torch's product."""
    return _recurrent_step_agrees(address, 0, dtype, per_gate=False)


def _gate_products_agree(gemm: int, batch: int, dtype: torch.dtype) -> bool:
    """One forward step with per-gate masks through forward_loop, its four products in one batched call,
    equals torch's."""
    return _recurrent_step_agrees(gemm, batch, dtype, per_gate=True)


def _recurrent_step_agrees(gemm: int, batch: int, dtype: torch.dtype, per_gate: bool) -> bool:
    """z_1 = z_in + h0 W_hh^T (per gate: + (h0 * m_k) W_k^T) after one forward_loop step with linear
    activations, with the weights read transposed and as transposed copies, equals torch's."""
    generator = torch.Generator().manual_seed(0)
    B, H = 3, 5
    h0 = torch.randn(B, H, generator=generator, dtype=dtype)
    w_hh = torch.randn(4 * H, H, generator=generator, dtype=dtype)
    z_in = torch.randn(1, B, 4 * H, generator=generator, dtype=dtype)
    masks = torch.rand(GATES, B, H, generator=generator, dtype=dtype) if per_gate else None
    w4 = w_hh.view(GATES, H, H)
    if per_gate:
        want = z_in[0] + torch.bmm(h0 * masks, w4.transpose(1, 2)).transpose(0, 1).reshape(B, 4 * H)
        copies = ((1, w4.contiguous()), (0, w4.transpose(1, 2).contiguous()))
    else:
        want = z_in[0] + h0 @ w_hh.t()
        copies = ((1, w_hh), (0, w_hh.t().contiguous()))
    linear = NATIVE_ACTIVATION_IDS[A.linear]
    for trans, weight in copies:
        z, Hp, Cp = z_in.clone(), torch.zeros(2, B, H, dtype=dtype), torch.zeros(2, B, H, dtype=dtype)
        Hp[0] = h0
        # the loop computes its first operand from Hp[0] and the masks: start from nan to see that it does
        hnext = torch.full((GATES if per_gate else 1, B, H), float("nan"), dtype=dtype)
        rec = torch.empty(GATES, B, H, dtype=dtype) if per_gate else torch.empty(B, 4 * H, dtype=dtype)
        scratch = torch.empty(_SCRATCH_PER_HIDDEN * H, dtype=dtype)
        _lstm_cell.forward_loop(
            int(dtype == torch.float64), gemm, 0, 0, 0, batch, trans, 1, B, H, H, 0, z.data_ptr(),
            Hp.data_ptr(), Cp.data_ptr(), 0, 0, 1, _address(masks), GATES if per_gate else 1,
            hnext.data_ptr(), 0, rec.data_ptr(), weight.data_ptr(), 0, 0, 0, 0, 0, scratch.data_ptr(),
            0, 0, 0, 0, 0, 0, 0, 1, linear, linear, 0,
        )
        if not torch.allclose(z[0], want, rtol=1e-4, atol=1e-4):
            return False
    return True


_BLAS_GEMM: _Addresses | None = None
_BLAS_PACK: dict[torch.dtype, tuple[int, int, int]] = {}
_BLAS_BATCH: _Addresses = {}


@contextlib.contextmanager
def _first_use_checks():
    """The first-use checks compare the C loops with torch on their own tensors, whatever the call that
    happens to trigger them is inside: with autocast on, torch's side of a check computed in bfloat16 and
    the check failed, switching the C loops (or the cell split) off for the whole process; under no_grad or
    inference_mode the checks could not build their autograd graphs."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        yield


# The first-use checks behind blas_gemm and cell_threads hand tensors to C as addresses: traced by
# torch.compile, a tensor used only through its address is dead to the tracer and freed before the C call
# writes into it (heap corruption, seen with a layer's first call inside a compiled model). Hence opaque.
@opaque_to_compile
def blas_gemm(dtype: torch.dtype) -> int:
    """The checked gemm address for ``dtype`` (found on first use), or 0."""
    global _BLAS_GEMM, _BLAS_PACK, _BLAS_BATCH
    if _BLAS_GEMM is None:
        with _first_use_checks():
            _BLAS_GEMM, _BLAS_PACK, _BLAS_BATCH = _find_blas()
    return _BLAS_GEMM.get(dtype, 0)


def blas_functions(dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """(gemm, pack_get_size, pack, compute, gemm_batch) for the C loops; zeros for what is missing."""
    gemm = blas_gemm(dtype)
    if not gemm:
        return (0, 0, 0, 0, 0)
    return (gemm, *_BLAS_PACK.get(dtype, (0, 0, 0)), _BLAS_BATCH.get(dtype, 0))


_CELL_THREADS: bool | None = None  # None: not looked for yet
_threads_for_check: int | None = None  # set while the first-use check runs


@opaque_to_compile
def cell_threads() -> int:
    """How many threads the C loop may split a cell step's rows among: torch's intra-op thread count where
    torch's OpenMP runtime was found and checked on first use, else 1."""
    global _CELL_THREADS
    if _threads_for_check is not None:
        return _threads_for_check
    if _CELL_THREADS is None:
        with _first_use_checks():
            _CELL_THREADS = _install_openmp() and _split_step_agrees()
        if not _CELL_THREADS and _lstm_cell is not None:
            _lstm_cell.set_cell_threads(0, 0, 0)
    return torch.get_num_threads() if _CELL_THREADS else 1


def _install_openmp() -> bool:
    """Give the C cell GOMP_parallel, omp_get_thread_num and omp_get_num_threads of the OpenMP runtime that
    libtorch_cpu links (looked up through its handle: the runtime whose threads its BLAS uses)."""
    if _lstm_cell is None or not blas_gemm(torch.float32):
        return False
    functions = _torch_cpu_symbols("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
    if functions is None or not all(functions):
        return False
    _lstm_cell.set_cell_threads(*functions)
    return True


def _split_step_agrees() -> bool:
    """Two steps forward and backward at B = 16, H = 512 (above the C cell's threshold for splitting) give
    exactly the same results on two threads as on one."""
    global _threads_for_check
    T, B, F, H = 2, 16, 3, 512
    run = DirectionRun(torch.tanh, torch.sigmoid, None, False, True)
    results = []
    generator = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(T, B, F, generator=generator), torch.randn(4 * H, F, generator=generator) * 0.1,
        torch.randn(4 * H, H, generator=generator) * 0.05, torch.randn(4 * H, generator=generator) * 0.1,
    ]
    try:  # (inside _first_use_checks: its own autograd graph whatever the caller's grad mode)
        for threads in (1, 2):
            _threads_for_check = threads
            x, w_ih, w_hh, b_ih = (t.clone().requires_grad_() for t in tensors)
            weights = DirectionWeights(w_ih, w_hh, b_ih, None, None)
            out, h, c = run_direction_native(x, torch.zeros(B, H), torch.zeros(B, H), weights, run)
            grads = torch.autograd.grad((out * out).sum() + c.sum(), (x, w_ih, w_hh, b_ih))
            results.append([out, h, c, *grads])
    finally:
        _threads_for_check = None
    return all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def available() -> bool:
    """Whether the C cell was built with this installation."""
    return _lstm_cell is not None


def _activation_id(fn: Callable) -> int | None:
    return A.kernel_entry(NATIVE_ACTIVATION_IDS, fn)


def accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether :func:`run_direction_native` computes this run: the C cell is built, a CPU tensor in float32
    or float64 with at least one step and one sequence, activations the C cell implements and dropout
    masks shared by the four gates or one per gate."""
    if _lstm_cell is None or x.device.type != "cpu" or x.dtype not in _DTYPES:
        return False
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        return False
    return _activation_id(run.activation) is not None and _activation_id(run.recurrent_activation) is not None


def _address(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


#: Per-step GEMMs take the recurrent and projection weights as contiguous transposed copies when there are
#: enough steps to repay the copy: MKL's small GEMMs run 1.4-2.2x faster on them than on the weights'
#: own layout (B = 16-32, H = 128-256, 2 cores), and equally fast at B = 1. The copies are made per call:
#: a cache keyed by the version counter would miss changes made through ``weight.data``.
_COPY_MIN_STEPS, _COPY_MIN_BATCH = 4, 8
#: The C loop packs a per-step product's weights with MKL's packed GEMM from these sizes on (its
#: PACK_MIN_ROWS, PACK_MIN_WEIGHT, PACK_MIN_STEPS in _lstm_cell_body.h); packing reads either layout, so the
#: transposed copies are then skipped: they cost about 100 us per (512, 128) float32 weight, 1.5 % of a
#: forward+backward at (50, 32, 64, 128).
_PACK_MIN_ROWS, _PACK_MIN_WEIGHT, _PACK_MIN_STEPS = 16, 65536, 8


def _all_packed_in_c(blas: tuple, T: int, B: int, H: int, P: int, gate_masks: int, proj: bool) -> bool:
    """Whether the C forward loop packs the weights of every per-step product it runs."""
    if not blas[1] or gate_masks != 1 or T < _PACK_MIN_STEPS or B < _PACK_MIN_ROWS:
        return False
    return GATES * H * P >= _PACK_MIN_WEIGHT and (not proj or P * H >= _PACK_MIN_WEIGHT)


def _recurrent_operands(w_hh: Tensor, w_hr: Tensor | None, gate_masks: int, copy: bool):
    """The operands of the per-step products h W_hh^T (per gate with per-gate masks) and r W_hr^T: the
    transposed copies, or the weights themselves to be read transposed (views for torch, ``trans`` for C)."""
    w_hh = w_hh.contiguous()  # the C loop reads rows at fixed strides
    if gate_masks == 4:
        w4 = w_hh.view(GATES, -1, w_hh.shape[1])
        rec = w4.transpose(1, 2).contiguous() if copy else w4
    else:
        rec = w_hh.t().contiguous() if copy else w_hh
    proj = None if w_hr is None else (w_hr.t().contiguous() if copy else w_hr.contiguous())
    return rec, proj


def _input_projection(x: Tensor, w_ih: Tensor, bias: Tensor | None, mx: Tensor | None) -> Tensor:
    """Z (T, B, 4H) = (x * mx) W_ih^T + b for all steps: one GEMM, or one bmm over the gates when the input
    dropout mask is per gate (4, B, F)."""
    T, B, Fdim = x.shape
    if mx is None or mx.dim() == 2:
        rows = (x if mx is None else x * mx).reshape(T * B, Fdim)
        Z = torch.addmm(bias, rows, w_ih.t()) if bias is not None else torch.mm(rows, w_ih.t())
        return Z.view(T, B, -1)
    H = w_ih.shape[0] // GATES
    rows4 = (x.unsqueeze(0) * mx.unsqueeze(1)).reshape(GATES, T * B, Fdim)
    Z4 = torch.bmm(rows4, w_ih.view(GATES, H, Fdim).transpose(1, 2))
    if bias is not None:
        Z4 += bias.view(GATES, 1, H)
    # contiguous(): with sizes of 1, reshape may return a strided view, and the C cell assumes row-major
    return Z4.permute(1, 0, 2).reshape(T, B, GATES * H).contiguous()


def _step_rows_contiguous(t: Tensor) -> bool:
    """Whether the C loops can read (T, B, P) ``t`` step by step: each step's (B, P) block row-major (the
    steps themselves may lie any distance apart)."""
    _, B, P = t.shape
    return (t.stride(2) == 1 or P == 1) and (t.stride(1) == P or B == 1)


def _forward_pass(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask, save=True, defer=None,
                  output=None):
    """The forward time loop. Returns (output, h_T, c_T) and what the backward pass needs: (meta, tensors)
    (with ``save`` False, nothing beyond what the loop itself needs is recorded). With ``defer`` (a list)
    and the loop in C, the loop does not run: its arguments and the buffers they point into are appended
    to ``defer``, and the results hold their values once the caller has run it (forward_loop_pair).
    ``output``: a (T, B, P) tensor, rows contiguous within each step (_step_rows_contiguous), for the
    outputs (the half of a batch's output buffer: run_direction_native_halves); by default the outputs are
    the hidden-state history, or a buffer of their own when masked."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    f64 = int(x.dtype == torch.float64)
    proj = w_hr is not None
    gate_masks = 4 if mh is not None and mh.dim() == 3 else 1
    blas = blas_functions(x.dtype)
    loop_in_c = bool(blas[0])
    # the C loop projects the inputs itself (one fewer torch op per call: it matters when streaming), except
    # with per-gate or input dropout masks, which torch's bmm / mul handle
    project_in_c = loop_in_c and mx is None
    if project_in_c:
        Z = x.new_empty(T, B, GATES * H)
    else:
        Z = _input_projection(x, w_ih, summed_bias(b_ih, b_hh), mx)

    # (T + 1)-step histories: step t reads index t and writes t + 1 (reverse: reads t + 1, writes t)
    Hp = x.new_empty(T + 1, B, P)
    Cp = x.new_empty(T + 1, B, H)
    first = T if reverse else 0
    R = x.new_empty(T, B, H) if proj else None
    masked = step_mask is not None
    keep = step_mask.to(torch.uint8).contiguous() if masked else None
    all_kept = step_mask.all(dim=1).tolist() if masked else None
    Obuf = output if output is not None else (x.new_empty(T, B, P) if masked else None)
    ostride = 0 if Obuf is None else Obuf.stride(0)  # elements between two steps of Obuf
    zeros = x.new_zeros(B, P) if masked else None
    mh = None if mh is None else mh.contiguous()
    # the masked h_{t-1} of every step (per gate): dW_hh is then one product, with no masking pass
    HM = x.new_empty(gate_masks, T, B, P) if save and mh is not None else None
    copy = T >= _COPY_MIN_STEPS and B >= _COPY_MIN_BATCH  # noqa: SIM300
    if copy and loop_in_c and _all_packed_in_c(blas, T, B, H, P, gate_masks, proj):
        copy = False
    Wrec, Whr = _recurrent_operands(w_hh, w_hr, gate_masks, copy)

    esz = x.element_size()
    z0, zs = Z.data_ptr(), B * GATES * H * esz
    h_base, hs = Hp.data_ptr(), B * P * esz
    c_base, cs = Cp.data_ptr(), B * H * esz
    o_base, r_base, k_base = _address(Obuf), _address(R), _address(keep)
    mh_p, prev_p = _address(mh), _address(zeros)
    # fixed per-step operands of the GEMMs (see _lstm_cell_body.h): hnext (B, P) or (4, B, P) with per-gate
    # masks, rec (B, 4H) or (4, B, H), the cell's scratch, and rbuf (B, H) / hcand (B, P) with a projection
    threads = cell_threads() if loop_in_c else 1  # the C loop splits the cell's rows among them
    sizes = (gate_masks * B * P, GATES * B * H, _SCRATCH_PER_HIDDEN * H * threads, B * H if proj else 0,
             B * P if proj else 0)
    if loop_in_c:  # the whole loop in C, calling the BLAS directly; the buffers are addresses in one block
        aligned = [-(-n // 16) * 16 for n in sizes]  # 64-byte aligned starts
        work = x.new_empty(sum(aligned))
        starts = [work.data_ptr()]
        for n in aligned[:-1]:
            starts.append(starts[-1] + n * esz)
        hnext_p, rec_p, scr_p, rbuf_p, hcand_p = starts
        if not proj:
            rbuf_p = hcand_p = 0
        inputs = (0, 0, 0, 0, 0)
        if project_in_c:  # (the contiguous tensors stay referenced until the loop has run)
            w_ih, b_ih, b_hh = (None if t is None else t.contiguous() for t in (w_ih, b_ih, b_hh))
            inputs = (x.data_ptr(), Fdim, w_ih.data_ptr(), _address(b_ih), _address(b_hh))
        loop_args = (
            f64, *blas, int(not copy), T, B, H, P, int(reverse), z0, h_base, c_base, o_base, k_base,
            zero_out, mh_p, gate_masks, hnext_p, _address(HM), rec_p, Wrec.data_ptr(), r_base, rbuf_p,
            hcand_p, _address(Whr), prev_p, scr_p, *inputs, h0.data_ptr(), c0.data_ptr(), threads, act, ract,
            ostride,
        )
        if defer is not None:
            # every buffer the loop reads or writes stays referenced until it has run
            buffers = (work, w_ih, b_ih, b_hh, Wrec, Whr, zeros, keep, mh, h0, c0, x, Z, Hp, Cp, R, Obuf, HM)
            defer.append((loop_args, buffers))
        else:
            _lstm_cell.forward_loop(*loop_args)
    else:  # per step: one torch GEMM and one C call
        Hp[first].copy_(h0)
        Cp[first].copy_(c0)
        hnext = h0.clone(memory_format=torch.contiguous_format) if mh is None else (h0 * mh).contiguous()
        rec = x.new_empty(GATES, B, H) if gate_masks == 4 else x.new_empty(B, GATES * H)
        rbuf = x.new_empty(B, H) if proj else None
        hcand = x.new_empty(B, P) if proj else None
        scratch = x.new_empty(sizes[2])
        hnext_p, rec_p, scr_p = hnext.data_ptr(), rec.data_ptr(), scratch.data_ptr()
        rbuf_p, hcand_p = _address(rbuf), _address(hcand)
        gemm = torch.bmm if gate_masks == 4 else torch.mm
        if not copy:  # torch reads the weights transposed through views
            Wrec = Wrec.transpose(-1, -2)
            Whr = None if Whr is None else Whr.t()
        forward_step, finish_hidden = _lstm_cell.forward_step, _lstm_cell.finish_hidden

        for t in range(T - 1, -1, -1) if reverse else range(T):
            hi, ho = (t + 1, t) if reverse else (t, t + 1)
            if HM is not None:
                HM[:, t].copy_(hnext.view(gate_masks, B, P))
            gemm(hnext, Wrec, out=rec)
            kp = 0 if not masked or all_kept[t] else k_base + t * B
            out_p = o_base + t * ostride * esz if Obuf is not None else 0
            if proj:
                forward_step(
                    f64, B, H, P, z0 + t * zs, rec_p, c_base + hi * cs, c_base + ho * cs, 0, 0, 0, 0, kp,
                    zero_out, 0, gate_masks, 0, rbuf_p, r_base + t * cs, scr_p, act, ract,
                )
                torch.mm(rbuf, Whr, out=hcand)
                finish_hidden(
                    f64, B, P, hcand_p, h_base + hi * hs, h_base + ho * hs, out_p, prev_p, kp, zero_out,
                    mh_p, gate_masks, hnext_p,
                )
            else:
                forward_step(
                    f64, B, H, P, z0 + t * zs, rec_p, c_base + hi * cs, c_base + ho * cs, h_base + hi * hs,
                    h_base + ho * hs, out_p, prev_p, kp, zero_out, mh_p, gate_masks, hnext_p, 0, 0, scr_p,
                    act, ract,
                )
            if Obuf is not None:
                prev_p = out_p

    last = 0 if reverse else T
    out = Obuf if Obuf is not None else (Hp[:T] if reverse else Hp[1:])
    meta = (T, B, Fdim, H, P, all_kept, gate_masks)
    return (out, Hp[last], Cp[last]), (meta, (x, w_ih, w_hh, w_hr, mx, mh, keep, Z, Hp, Cp, R, HM))


def _backward_pass(cfg, meta, saved, needs, has_bias, dout, dhT, dcT, defer=None):
    """The backward of :class:`_NativeLSTM` (the gradients of its forward's arguments). With ``defer`` (a
    list) and the loop in C, the loop does not run: its arguments and buffers are appended to ``defer`` and
    a function is returned that computes the gradients once the caller has run it (backward_loop_pair)."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim, H, P, all_kept, gate_masks = meta
    x, w_ih, w_hh, w_hr, mx, mh, keep, Z, Hp, Cp, R, HM = saved
    f64 = int(x.dtype == torch.float64)
    proj = w_hr is not None
    masked = keep is not None

    dout = dout if _step_rows_contiguous(dout) else dout.contiguous()
    dstride = dout.stride(0)  # elements between two steps of dout
    dh = dhT.contiguous().clone()
    dc = dcT.contiguous().clone()
    DH = x.new_empty(T, B, P) if proj else None
    dh_new = x.new_empty(B, P)
    dr = x.new_empty(B, H) if proj else None
    dz = x.new_empty(GATES, B, H) if gate_masks == 4 else x.new_empty(B, GATES * H)
    dh_tmp = x.new_empty(GATES, B, P) if gate_masks == 4 else x.new_empty(B, P)
    carry = x.new_zeros(B, P) if masked and not zero_out else None
    blas = blas_functions(x.dtype)
    threads = cell_threads() if blas[0] else 1
    scratch = x.new_empty(_SCRATCH_PER_HIDDEN * H * threads)
    w_hh = w_hh.contiguous()
    if gate_masks == 4:
        gemm, Wrec = torch.bmm, w_hh.view(GATES, H, P)
    else:
        gemm, Wrec = torch.mm, w_hh

    esz = x.element_size()
    z0, zs = Z.data_ptr(), B * GATES * H * esz
    hs, cs = B * P * esz, B * H * esz
    c_base, dout_base, k_base = Cp.data_ptr(), dout.data_ptr(), _address(keep)
    dh_p, dc_p, tmp_p, dz_p = dh.data_ptr(), dc.data_ptr(), dh_tmp.data_ptr(), dz.data_ptr()
    carry_p, mh_p, scr_p = _address(carry), _address(mh), scratch.data_ptr()
    dr_p, dhn_p, DH_base = _address(dr), dh_new.data_ptr(), _address(DH)
    if blas[0]:
        w_hr_rows = w_hr.contiguous() if proj else None
        loop_args = (
            f64, *blas, T, B, H, P, int(reverse), z0, c_base, dout_base, k_base, dh_p, dc_p,
            carry_p, dhn_p, DH_base, dr_p, _address(w_hr_rows), dz_p, tmp_p, Wrec.data_ptr(), mh_p,
            gate_masks, scr_p, threads, act, ract, dstride,
        )
        if defer is not None:
            # every buffer the loop reads or writes stays referenced until it has run
            buffers = (dout, dh, dc, DH, dh_new, dr, dz, dh_tmp, carry, scratch, w_hh, w_hr_rows, Z, Cp, keep,
                       mh)
            defer.append((loop_args, buffers))
        else:
            _lstm_cell.backward_loop(*loop_args)
    else:
        backward_step = _lstm_cell.backward_step

        pending, prev_kp = 0, 0
        for t in range(T) if reverse else range(T - 1, -1, -1):
            hi, ho = (t + 1, t) if reverse else (t, t + 1)
            kp = 0 if not masked or all_kept[t] else k_base + t * B
            zt, cprev, cnew = z0 + t * zs, c_base + hi * cs, c_base + ho * cs
            gout = dout_base + t * dstride * esz
            if proj:
                backward_step(
                    f64, pending | _HEAD, B, H, P, zt, cprev, cnew, dh_p, dc_p, gout, carry_p, kp, dhn_p,
                    DH_base + t * hs, 0, tmp_p, prev_kp, mh_p, gate_masks, 0, scr_p, act, ract,
                )
                torch.mm(dh_new, w_hr, out=dr)
                backward_step(
                    f64, _CELL, B, H, P, zt, cprev, cnew, dh_p, dc_p, 0, 0, kp, 0, 0, dr_p, 0, 0, 0,
                    gate_masks, dz_p, scr_p, act, ract,
                )
            else:
                backward_step(
                    f64, pending | _HEAD | _CELL, B, H, P, zt, cprev, cnew, dh_p, dc_p, gout, carry_p, kp,
                    dhn_p, 0, dhn_p, tmp_p, prev_kp, mh_p, gate_masks, dz_p, scr_p, act, ract,
                )
            gemm(dz, Wrec, out=dh_tmp)
            pending, prev_kp = _TAIL, kp
        backward_step(f64, _TAIL, B, H, P, 0, 0, 0, dh_p, dc_p, 0, 0, 0, 0, 0, 0, tmp_p, prev_kp, mh_p,
                      gate_masks, 0, scr_p, act, ract)

    def finish() -> tuple:
        dZ = Z.view(T * B, GATES * H)
        dZ4 = dZ.view(T * B, GATES, H).transpose(0, 1)
        Hprev = Hp[1:] if reverse else Hp[:T]
        dx = dwih = dwhh = db = dwhr = None
        if needs[4]:
            if mx is not None and mx.dim() == 3:
                dwih = per_gate_weight_grad(dZ4, x, mx)
            else:
                dwih = torch.mm(dZ.t(), (x if mx is None else x * mx).reshape(T * B, Fdim))
        if needs[5]:
            if HM is None:
                dwhh = torch.mm(dZ.t(), Hprev.reshape(T * B, P))
            elif gate_masks == 4:
                dwhh = torch.bmm(dZ4.transpose(1, 2), HM.view(GATES, T * B, P)).view(GATES * H, P)
            else:
                dwhh = torch.mm(dZ.t(), HM.view(T * B, P))
        if needs[6] or needs[7]:
            db = dZ.sum(0)
        if needs[1]:
            if mx is not None and mx.dim() == 3:
                dx4 = torch.bmm(dZ4, w_ih.view(GATES, H, Fdim)).view(GATES, T, B, Fdim)
                dx = dx4.mul_(mx.unsqueeze(1)).sum(0)
            else:
                dx = torch.mm(dZ, w_ih).view(T, B, Fdim)
                if mx is not None:
                    dx.mul_(mx)
        if proj and needs[8]:
            dwhr = torch.mm(DH.view(T * B, P).t(), R.view(T * B, H))
        return backward_outputs(needs, has_bias, dx, dh, dc, dwih, dwhh, db, dwhr)

    if defer is None:
        return finish()
    return finish


class _NativeLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask):  # noqa: N805
        results, (meta, saved) = _forward_pass(
            cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask
        )
        ctx.cfg, ctx.meta = cfg, meta
        ctx.save_for_backward(*saved)
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return results

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        refuse_second_backward(ctx, "native")
        return _backward_pass(
            ctx.cfg, ctx.meta, ctx.saved_tensors, ctx.needs_input_grad, ctx.has_bias, dout, dhT, dcT
        )


def _forward_both(halves: bool, cfgs: tuple, xs: tuple, run_args: tuple, step_masks: tuple, save: bool):
    """_forward_pass of two runs (each its cfg, x, arguments between x and step_mask, and step_mask), the
    two C loops run at once. Returns the results, (out, h_T, c_T) of each run or, for the ``halves`` of a
    batch, (out, h_T_a, c_T_a, h_T_b, c_T_b) with both runs' outputs written in place into one (T, B, P)
    tensor; and the (meta, saved) of each run."""
    out, outputs = None, (None, None)
    if halves:
        rows = xs[0].shape[1]
        out = xs[0].new_empty(xs[0].shape[0], rows + xs[1].shape[1], run_args[0][0].shape[-1])  # P from h0
        outputs = (out[:, :rows], out[:, rows:])
    defer: list = []
    runs = zip(cfgs, xs, run_args, step_masks, outputs, strict=True)
    (results_a, saved_a), (results_b, saved_b) = [
        _forward_pass(cfg, x, *args, step_mask, save=save, defer=defer, output=output)
        for cfg, x, args, step_mask, output in runs
    ]
    if defer:  # (without the C loops, the per-step loops ran already)
        _lstm_cell.forward_loop_pair(defer[0][0], defer[1][0])
    results = (*results_a, *results_b) if out is None else (out, *results_a[1:], *results_b[1:])
    return results, (saved_a, saved_b)


def _run_config(run: DirectionRun) -> tuple[int, int, bool, int]:
    """The cfg argument of the native autograd Functions: (activation id, recurrent activation id,
    reverse, zero masked outputs)."""
    return (
        NATIVE_ACTIVATION_IDS[run.activation], NATIVE_ACTIVATION_IDS[run.recurrent_activation],
        bool(run.reverse), int(bool(run.zero_masked_output)),
    )


class _NativeLSTMPair(torch.autograd.Function):
    """Two independent runs, their C loops at once on two threads: the two directions of a bidirectional
    layer (both given the same x and step mask), or the two halves of a batch (each its rows). Arguments
    (halves, cfg_a, cfg_b, x_a, x_b, run a's h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, the same for run
    b, step_mask_a, step_mask_b). Results: (out, h_T, c_T) of each run; with ``halves`` their outputs come
    as one (T, B, P) tensor instead, written in place by both loops: (out, h_T_a, c_T_a, h_T_b, c_T_b). A
    tensor given to both runs (x, weights) gets the sum of their gradients."""

    @staticmethod
    def forward(ctx, halves, cfg_a, cfg_b, x_a, x_b, *rest):  # noqa: N805
        args_a, args_b, step_masks = rest[:9], rest[9:18], rest[18:20]
        results, ((meta_a, saved_a), (meta_b, saved_b)) = _forward_both(
            halves, (cfg_a, cfg_b), (x_a, x_b), (args_a, args_b), step_masks, save=True
        )
        ctx.cfgs, ctx.metas = (cfg_a, cfg_b), (meta_a, meta_b)
        ctx.split = x_a.shape[1] if halves else None
        ctx.save_for_backward(*saved_a, *saved_b)
        ctx.has_bias = (args_a[4] is not None, args_a[5] is not None)
        return results

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # noqa: N805
        refuse_second_backward(ctx, "native")
        if ctx.split is None:
            dout_a, dh_a, dc_a, dout_b, dh_b, dc_b = grads
        else:  # the halves read their rows of the one output gradient in place
            dout, dh_a, dc_a, dh_b, dc_b = grads
            dout_a, dout_b = dout[:, : ctx.split], dout[:, ctx.split :]
        saved, needs = ctx.saved_tensors, ctx.needs_input_grad
        # each run's needs in _NativeLSTM's argument order (cfg, x, h0, ..., mh, step_mask)
        needs_a = (False, needs[3], *needs[5:14], False)
        needs_b = (False, needs[4], *needs[14:23], False)
        defer: list = []
        finish_a = _backward_pass(ctx.cfgs[0], ctx.metas[0], saved[:12], needs_a, ctx.has_bias, dout_a, dh_a,
                                  dc_a, defer)
        finish_b = _backward_pass(ctx.cfgs[1], ctx.metas[1], saved[12:], needs_b, ctx.has_bias, dout_b, dh_b,
                                  dc_b, defer)
        if defer:
            _lstm_cell.backward_loop_pair(defer[0][0], defer[1][0])
        grads_a, grads_b = finish_a(), finish_b()
        return (None, None, None, grads_a[1], grads_b[1], *grads_a[2:11], *grads_b[2:11], None, None)


#: the two directions of a layer run at once (run_bidirectional_native) when both are this wide or wider in
#: batch, or their hidden size is at most PAIR_MAX_HIDDEN; measured forward, 2 cores, T = 100: 0.56-0.75x
#: the time of one after the other at H = 128-256 from B = 1, 0.98x at H = 512 and B = 16, 0.88-0.89x at
#: B = 32-64; at H = 512 with B = 1-4 (per-step products one row thin: memory-bound) 1.18-1.27x
PAIR_MIN_BATCH = 16
PAIR_MAX_HIDDEN = 256


def _two_loops_at_once(dtype: torch.dtype) -> bool:
    """Two C loops can run at once, one per thread: the C loops for ``dtype`` and the OpenMP runtime are
    there with exactly two threads (measured on 2 cores only; with more, each loop's GEMMs would give up
    the other threads)."""
    return available() and cell_threads() == 2 and bool(blas_functions(dtype)[0])


def pair_accepts(x: Tensor, h0: Tensor, c0: Tensor, weights: tuple[DirectionWeights, DirectionWeights],
                 runs: tuple[DirectionRun, DirectionRun]) -> bool:
    """Whether run_bidirectional_native computes both directions of this layer at once: two loops can run
    at once (_two_loops_at_once), both directions are native runs and the shape is one where running them
    at once was measured faster (PAIR_MIN_BATCH, PAIR_MAX_HIDDEN)."""
    if not _two_loops_at_once(x.dtype):
        return False
    if not all(accepts(x, w, r) and _buffers_agree(x, h, c, w, r)
               for w, r, h, c in zip(weights, runs, h0, c0, strict=True)):
        return False
    return x.shape[1] >= PAIR_MIN_BATCH or c0.shape[-1] <= PAIR_MAX_HIDDEN


@opaque_to_compile
def run_bidirectional_native(
    x: Tensor, h0: Tensor, c0: Tensor, weights: tuple[DirectionWeights, DirectionWeights],
    runs: tuple[DirectionRun, DirectionRun],
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Both directions of one layer (h0, c0: (2, B, .)), each as :func:`run_direction_native` computes it,
    their loops at once on two threads. The caller checks :func:`pair_accepts` first."""
    x = x.contiguous()
    direction_args = [
        function_arguments(_run_config(run), x, h.contiguous(), c.contiguous(), weights_d, run)
        for weights_d, run, h, c in zip(weights, runs, h0, c0, strict=True)
    ]
    out = _run_pair(direction_args, halves=False)
    return out[:3], out[3:]


def _run_pair(run_args: list, halves: bool) -> tuple:
    """Two runs given as function_arguments tuples, their loops at once: the (out, h_T, c_T) of each, or for
    the halves of a batch (out, h_T_a, c_T_a, h_T_b, c_T_b) with one output tensor."""
    (cfg_a, x_a, *args_a, step_mask_a), (cfg_b, x_b, *args_b, step_mask_b) = run_args
    with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
        if not (_needs_graph(run_args[0]) or _needs_graph(run_args[1])):
            return _forward_both(halves, (cfg_a, cfg_b), (x_a, x_b), (args_a, args_b),
                                 (step_mask_a, step_mask_b), save=False)[0]
        return _NativeLSTMPair.apply(
            halves, cfg_a, cfg_b, x_a, x_b, *args_a, *args_b, step_mask_a, step_mask_b
        )


#: One direction's batch is split in two halves whose loops run at once (run_direction_native_halves) from
#: HALVES_MIN_BATCH sequences on, when the recurrent weights (4H x P) take at most HALVES_MAX_WEIGHT_BYTES
#: (HALVES_MAX_WEIGHT_BYTES_INFERENCE without autograd): each thread then reads all of them every step,
#: where two-thread GEMMs read half each. Measured in-process A/B, float32, 2 cores, the time with halves
#: over the time of one run: forward+backward 0.69-0.93 at H <= 256 from B = 16 ((50, 32, 64, 128) 0.86,
#: (1000, 16, 256, 256) 0.89-0.93, (200, 128, 128, 128) 0.86), 1.00 at (100, 64, 256, 256), slower at H = 512
#: (1.05 at B = 64, 1.32 at B = 16); forward alone 0.69-0.90 at H = 128 but 0.98-1.07 at H = 256.
HALVES_MIN_BATCH = 16
HALVES_MAX_WEIGHT_BYTES = 2**20  # H = P = 256 in float32
HALVES_MAX_WEIGHT_BYTES_INFERENCE = 2**18  # H = P = 128 in float32


def halves_accept(x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether run_direction_native_halves computes this run: two loops can run at once
    (_two_loops_at_once), a native run, at least HALVES_MIN_BATCH sequences and recurrent weights
    small enough (HALVES_MAX_WEIGHT_BYTES, or HALVES_MAX_WEIGHT_BYTES_INFERENCE when autograd does not
    record the call)."""
    if not _two_loops_at_once(x.dtype):
        return False
    records = _needs_graph((x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh, weights.w_hr))
    limit = HALVES_MAX_WEIGHT_BYTES if records else HALVES_MAX_WEIGHT_BYTES_INFERENCE
    if x.shape[1] < HALVES_MIN_BATCH or weights.w_hh.numel() * x.element_size() > limit:
        return False
    return accepts(x, weights, run) and _buffers_agree(x, h0, c0, weights, run)


def _batch_rows(run: DirectionRun, rows: slice) -> DirectionRun:
    """The run restricted to the sequences ``rows``: its step mask (T, B) and dropout masks (B, .) or
    (4, B, .) cut along the batch."""
    def cut(mask: Tensor | None, batch_dim: int) -> Tensor | None:
        return None if mask is None else mask[(slice(None),) * batch_dim + (rows,)]

    dropout_x, dropout_h = run.input_dropout_mask, run.recurrent_dropout_mask
    return dataclasses.replace(
        run,
        step_mask=cut(run.step_mask, 1),
        input_dropout_mask=cut(dropout_x, 0 if dropout_x is None else dropout_x.dim() - 2),
        recurrent_dropout_mask=cut(dropout_h, 0 if dropout_h is None else dropout_h.dim() - 2),
    )


@opaque_to_compile
def run_direction_native_halves(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`run_direction_native` on the two halves of the batch, their C loops at once on two threads
    (the rows of an LSTM are independent): each loop's per-step products run on one thread with no fork,
    and the cell is not split. The caller checks :func:`halves_accept` first. The weight gradients are the
    sums of the halves' (another summation order than one run's, within float rounding)."""
    cfg = _run_config(run)
    middle = x.shape[1] // 2
    runs = [
        function_arguments(cfg, x[:, rows].contiguous(), h0[rows].contiguous(), c0[rows].contiguous(),
                           weights, _batch_rows(run, rows))
        for rows in (slice(0, middle), slice(middle, None))
    ]
    out, h_a, c_a, h_b, c_b = _run_pair(runs, halves=True)
    return out, torch.cat((h_a, h_b)), torch.cat((c_a, c_b))


@opaque_to_compile
def run_direction_native(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`~unilstm.kernels.reference.run_direction_reference` (see the module
    docstring for what differs: speed, float32 rounding, and no double backward)."""
    if not accepts(x, weights, run):  # dispatch asks first; force_kernel("native") does not
        return run_direction_reference(x, h0, c0, weights, run)
    cfg = _run_config(run)
    if not _buffers_agree(x, h0, c0, weights, run):
        # the C loop reads raw buffers of x's type and of these shapes: anything else goes to the loop
        # whose torch ops check them and raise torch's errors
        return run_direction_reference(x, h0, c0, weights, run)
    args = function_arguments(cfg, x.contiguous(), h0.contiguous(), c0.contiguous(), weights, run)
    if not _needs_graph(args):  # inference (streaming): no autograd.Function bookkeeping
        if torch.is_autocast_enabled("cpu"):
            with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
                return _forward_pass(*args, save=False)[0]
        return _forward_pass(*args, save=False)[0]
    with torch.autocast(device_type="cpu", enabled=False):
        return _NativeLSTM.apply(*args)


def _buffers_agree(x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Every tensor the C loop reads has x's dtype and device (the CPU) and the shape the run implies."""
    T, B, F = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    if weights.w_hr is None and P != H:
        return False
    expected = [
        (h0, (B, P)), (c0, (B, H)), (weights.w_ih, (4 * H, F)), (weights.w_hh, (4 * H, P)),
        (weights.b_ih, (4 * H,)), (weights.b_hh, (4 * H,)), (weights.w_hr, (P, H) if P != H else None),
    ]
    for mask, width in ((run.input_dropout_mask, F), (run.recurrent_dropout_mask, P)):
        if mask is not None:
            expected.append((mask, (GATES, B, width) if mask.dim() == 3 else (B, width)))
    dtype = x.dtype  # x is a CPU tensor (accepts)
    for tensor, shape in expected:
        if tensor is not None and (tensor.shape != shape or tensor.dtype != dtype or not tensor.is_cpu):
            return False
    return run.step_mask is None or run.step_mask.shape == (T, B)


def _needs_graph(args: tuple) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
