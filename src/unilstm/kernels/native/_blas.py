# ruff: noqa: N803, N806  (B, H, M, K, N are the sizes of the products checked)
"""What the C loops call besides themselves, found in the libraries torch loaded and checked on first use.

* The BLAS gemm torch itself links (``sgemm_`` / ``dgemm_`` of libtorch_cpu, MKL in the x86 wheels), MKL's
  packed GEMM (``cblas_?gemm_pack_get_size`` / ``_pack`` / ``_compute``) and its batched GEMM
  (``cblas_?gemm_batch``) where exported: each checked on small products against torch. Without the gemm,
  the time loop runs in Python with one torch GEMM and one C call per step; without the packed or batched
  GEMM, the C loops make plain gemm calls.
* The GEMM route of the input projection Z = X W_ih^T + b (:func:`projection_route`): the C loop's own
  gemm call, torch's MKL addmm or oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, float32),
  whichever measured fastest at first use for that kind of product (:func:`..first_use.route`); oneDNN's
  result is checked against addmm before it may be chosen.
* The OpenMP runtime torch links (``GOMP_parallel``, the team its BLAS uses), with which the C loop splits a
  step's cell rows among torch's intra-op threads (``cell_threads``), after checking that two threads give
  exactly the bits of one.

The checks compare the C loops with torch on their own tensors: they run outside the caller's autocast,
grad mode and inference mode (:func:`_first_use_checks`), and are opaque to torch.compile, which would
otherwise free tensors used only through their addresses before the C code writes into them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator

import torch

from .. import first_use, policy
from ..activation_ids import ACTIVATION_IDS
from ..opaque import opaque_to_compile
from ..reference import GATES
from . import _extension as C

_Addresses = dict[torch.dtype, int]


def _torch_cpu_symbols(*names: str) -> list[int] | None:
    """The addresses of ``names`` as libtorch_cpu.so resolves them (its own symbols and those of the
    libraries it links: its BLAS, its OpenMP runtime), 0 for each one missing; None without the library."""
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
    """The checked addresses of gemm, of the packed GEMM's three functions and of the batched GEMM, per
    dtype; a dtype is missing from a table where its functions are not exported or disagree with torch."""
    gemms: _Addresses = {}
    packs: dict[torch.dtype, tuple[int, int, int]] = {}
    batches: _Addresses = {}
    if not C.available():
        return gemms, packs, batches
    for dtype, letter in ((torch.float32, "s"), (torch.float64, "d")):
        packed = (f"cblas_{letter}gemm_{part}" for part in ("pack_get_size", "pack", "compute"))
        found = _torch_cpu_symbols(f"{letter}gemm_", *packed, f"cblas_{letter}gemm_batch")
        if found is None:
            break
        gemm, pack, batch = found[0], (found[1], found[2], found[3]), found[4]
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
        C.product(
            float64=dtype == torch.float64, blas=(gemm, *pack, 0), trans=bool(trans), M=M, N=N, K=K,
            A=a.data_ptr(), lda=K, W=stored.data_ptr(), ldw=K if trans else N, C=got.data_ptr(), ldc=N,
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
        assert masks is not None
        want = z_in[0] + torch.bmm(h0 * masks, w4.transpose(1, 2)).transpose(0, 1).reshape(B, 4 * H)
        copies = ((1, w4.contiguous()), (0, w4.transpose(1, 2).contiguous()))
    else:
        want = z_in[0] + h0 @ w_hh.t()
        copies = ((1, w_hh), (0, w_hh.t().contiguous()))
    linear = ACTIVATION_IDS["linear"]
    n_masks = GATES if per_gate else 1
    for trans, weight in copies:
        z, Hp, Cp = z_in.clone(), torch.zeros(2, B, H, dtype=dtype), torch.zeros(2, B, H, dtype=dtype)
        Hp[0] = h0
        # the loop computes its first operand from Hp[0] and the masks: start from nan to see that it does
        hnext = torch.full((n_masks, B, H), float("nan"), dtype=dtype)
        rec = torch.empty(GATES, B, H, dtype=dtype) if per_gate else torch.empty(B, 4 * H, dtype=dtype)
        scratch = torch.empty(C.SCRATCH_PER_HIDDEN * H, dtype=dtype)
        arguments = C.forward_loop_head(
            float64=dtype == torch.float64, gemm=gemm, pack_get_size=0, pack=0, compute=0, gemm_batch=batch,
            trans_w=trans, T=1, B=B, H=H, P=H, reverse=False,
        ) + C.forward_loop_buffers(
            Z=z.data_ptr(), Hp=Hp.data_ptr(), Cp=Cp.data_ptr(), Obuf=0, keep=0, zero_out=1,
            mh=0 if masks is None else masks.data_ptr(), n_masks=n_masks, hnext=hnext.data_ptr(), hm_hist=0,
            rec=rec.data_ptr(), WrecT=weight.data_ptr(), R=0, rbuf=0, hcand=0,
        ) + C.forward_loop_tail(
            WhrT=0, zeros=0, scratch=scratch.data_ptr(), X=0, F=0, W_ih=0, b_ih=0, b_hh=0, h0=0, c0=0,
            chunk=0, threads=1, act=linear, ract=linear, ostride=0,
        )
        C.forward_loop(arguments)
        if not torch.allclose(z[0], want, rtol=1e-4, atol=1e-4):
            return False
    return True


_BLAS_GEMM: _Addresses | None = None  # None: not looked for yet
_BLAS_PACK: dict[torch.dtype, tuple[int, int, int]] = {}
_BLAS_BATCH: _Addresses = {}


@contextlib.contextmanager
def _first_use_checks() -> Iterator[None]:
    """The first-use checks compare the C loops with torch on their own tensors, whatever the call that
    happens to trigger them is inside: under autocast torch's side of a check would be computed in
    bfloat16 (and the check fail), under no_grad or inference_mode the checks could not build their
    autograd graphs."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
        yield


@opaque_to_compile
def blas_gemm(dtype: torch.dtype) -> int:
    """The checked gemm address for ``dtype`` (found on first use), or 0."""
    global _BLAS_GEMM, _BLAS_PACK, _BLAS_BATCH
    if _BLAS_GEMM is None:
        with _first_use_checks():
            _BLAS_GEMM, _BLAS_PACK, _BLAS_BATCH = _find_blas()
    return _BLAS_GEMM.get(dtype, 0)


#: blas_functions' answers (asked twice per native call: batch-1 latency), for the tables they were read from
_FUNCTIONS: dict[torch.dtype, tuple[object, object, object, C.BlasFunctions]] = {}


def blas_functions(dtype: torch.dtype) -> C.BlasFunctions:
    """(gemm, pack_get_size, pack, compute, gemm_batch) for the C loops; zeros for what is missing."""
    cached = _FUNCTIONS.get(dtype)
    # (tests replace the tables to take functions away: an answer holds for the tables it was read from)
    if (
        cached is not None
        and cached[0] is _BLAS_GEMM
        and cached[1] is _BLAS_PACK
        and cached[2] is _BLAS_BATCH
    ):
        return cached[3]
    gemm = blas_gemm(dtype)
    found: C.BlasFunctions = (0, 0, 0, 0, 0)
    if gemm:
        found = (gemm, *_BLAS_PACK.get(dtype, (0, 0, 0)), _BLAS_BATCH.get(dtype, 0))
    _FUNCTIONS[dtype] = (_BLAS_GEMM, _BLAS_PACK, _BLAS_BATCH, found)
    return found


_CELL_THREADS: bool | None = None  # None: not looked for yet
_threads_for_check: int | None = None  # set while the first-use check runs


@opaque_to_compile
def cell_threads(split_agrees: Callable[[], bool]) -> int:
    """How many threads the C loop may split a cell step's rows among: torch's intra-op thread count where
    torch's OpenMP runtime was found and ``split_agrees()`` (the loops' own first-use check, run once under
    :func:`threads_for_check`) passed, else 1."""
    global _CELL_THREADS
    if _threads_for_check is not None:
        return _threads_for_check
    if _CELL_THREADS is None:
        with _first_use_checks():
            _CELL_THREADS = _install_openmp() and split_agrees()
        if not _CELL_THREADS and C.available():
            C.set_cell_threads(0, 0, 0)
    return torch.get_num_threads() if _CELL_THREADS else 1


def _install_openmp() -> bool:
    """Give the C cell GOMP_parallel, omp_get_thread_num and omp_get_num_threads of the OpenMP runtime that
    libtorch_cpu links (looked up through its handle: the runtime whose threads its BLAS uses)."""
    if not C.available() or not blas_gemm(torch.float32):
        return False
    functions = _torch_cpu_symbols("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
    if functions is None or not all(functions):
        return False
    C.set_cell_threads(*functions)
    return True


@contextlib.contextmanager
def threads_for_check(threads: int) -> Iterator[None]:
    """Make :func:`cell_threads` answer ``threads`` while the first-use check of the split runs."""
    global _threads_for_check
    _threads_for_check = threads
    try:
        yield
    finally:
        _threads_for_check = None


# -- the input projection's GEMM route -------------------------------------------------------------------

#: the routes :func:`projection_route` chooses among (see the module docstring)
PROJECTION_ROUTES = ("c_gemm", "torch_mm", "onednn")


def onednn_linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """rows (M, K) weight^T + bias through oneDNN's inner product (weight (N, K) in its own layout)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


def _onednn_available(dtype: torch.dtype) -> bool:
    return (
        dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def projection_kind(dtype: torch.dtype, M: int, K: int, N: int) -> tuple:
    """What decides the route: dtype, each size's power-of-two bucket and the intra-op thread count."""
    # (first_use.bucket inlined: this runs on every call of the native kernel)
    return ("projection", dtype, M.bit_length(), K.bit_length(), N.bit_length(), torch.get_num_threads())


def projection_route(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor | None,
                     b_hh: torch.Tensor | None) -> str:
    """The route of Z (T*B, 4H) = X (T*B, F) W_ih^T + b_ih + b_hh for a native loop whose gemm was found:
    ``"c_gemm"`` (the loop computes it), ``"torch_mm"`` or ``"onednn"``; measured on these operands the
    first time a kind of product (:func:`projection_kind`) is seen, ``policy.INPUT_PROJECTION_ROUTE`` with
    measuring off."""
    if not first_use.measuring():
        chosen = policy.INPUT_PROJECTION_ROUTE
        # (a policy may name oneDNN for every dtype; it computes float32 only)
        return "torch_mm" if chosen == "onednn" and not _onednn_available(x.dtype) else chosen
    T, B, K = x.shape
    M, N = T * B, w_ih.shape[0]
    kind = projection_kind(x.dtype, M, K, N)
    measured = first_use.measured_route(kind)  # (every later call of a kind: one look-up)
    if measured is not None:
        return measured
    return first_use.route(
        kind, lambda: _projection_candidates(x.reshape(M, K), w_ih, b_ih, b_hh), policy.INPUT_PROJECTION_ROUTE
    )


def inference_route(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None,
                    forward: Callable[[str], object]) -> str:
    """The input projection's route for an inference forward (no autograd record): ``"c_gemm"`` (the loop
    computes it in cache-sized chunks of steps, :func:`projection_chunk`), ``"torch_mm"`` or ``"onednn"``
    (all steps before the loop), whichever made ``forward(route)`` (the whole forward on the call's own
    operands) fastest the first time a kind of call (dtype, each size's power-of-two bucket, thread count)
    was seen; ``policy.INPUT_PROJECTION_ROUTE`` with measuring off. The whole forward is timed, not the
    product alone: the chunks are no faster a product, they spare the loop a (T, B, 4H) buffer that it
    would write once and read back from memory."""
    if not first_use.measuring():
        chosen = policy.INPUT_PROJECTION_ROUTE
        return "torch_mm" if chosen == "onednn" and not _onednn_available(x.dtype) else chosen
    T, B, K = x.shape
    # (first_use.bucket inlined: this runs on every inference call of the native kernel)
    kind = ("inference projection", x.dtype, T.bit_length(), B.bit_length(), K.bit_length(),
            w_ih.shape[0].bit_length(), torch.get_num_threads())
    measured = first_use.measured_route(kind)
    if measured is not None:
        return measured

    def candidates() -> dict[str, Callable[[], object]]:
        names = ["c_gemm", "torch_mm"]
        if _onednn_agrees(x.reshape(T * B, K), w_ih, b_ih, b_hh):
            names.append("onednn")
        def run(name: str) -> Callable[[], object]:
            return lambda: forward(name)

        return {name: run(name) for name in names}

    return first_use.route(kind, candidates, policy.INPUT_PROJECTION_ROUTE)


def _onednn_agrees(rows: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor | None,
                   b_hh: torch.Tensor | None) -> bool:
    """Whether oneDNN's linear runs here and computes rows W_ih^T + b as addmm does (before it may be
    chosen)."""
    if not _onednn_available(rows.dtype):
        return False
    with torch.no_grad():
        rows, weight = rows.detach().contiguous(), w_ih.detach().contiguous()
        bias = None
        for b in (b_ih, b_hh):
            if b is not None:
                bias = b.detach() if bias is None else bias + b.detach()
        want = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
        try:
            return torch.allclose(onednn_linear(rows, weight, bias), want, rtol=1e-4, atol=1e-4)
        except RuntimeError:
            return False


def _projection_candidates(
    rows: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None
) -> dict[str, Callable[[], object]]:
    """The runs the first use of a kind times, on the call's own operands (outside autograd: the products
    only). The C loop's gemm is timed through the loops' product helper without packing, as the loop calls
    it (its bias fill, one row copied M times, is left out)."""
    with torch.no_grad():
        rows, weight = rows.detach().contiguous(), w_ih.detach().contiguous()
        bias = None
        for b in (b_ih, b_hh):
            if b is not None:
                bias = b.detach() if bias is None else bias + b.detach()
        M, K = rows.shape
        N = weight.shape[0]
        out = rows.new_empty(M, N)
        gemm = blas_gemm(rows.dtype)

        def c_gemm() -> None:
            C.product(
                float64=rows.dtype == torch.float64, blas=(gemm, 0, 0, 0, 0), trans=True, M=M, N=N, K=K,
                A=rows.data_ptr(), lda=K, W=weight.data_ptr(), ldw=K, C=out.data_ptr(), ldc=N,
            )

        def torch_mm() -> torch.Tensor:
            with torch.no_grad():
                return torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())

        runs: dict[str, Callable[[], object]] = {"c_gemm": c_gemm, "torch_mm": torch_mm}
        if _onednn_available(rows.dtype):
            try:
                with torch.no_grad():
                    got = onednn_linear(rows, weight, bias)
                    agrees = torch.allclose(got, torch_mm(), rtol=1e-4, atol=1e-4)
            except RuntimeError:
                agrees = False
            if agrees:
                runs["onednn"] = lambda: onednn_linear(rows, weight, bias)
        return runs


# -- the inference loop's chunks of input projections ----------------------------------------------------

_CACHE_BYTES: int | None = None
#: the per-core cache assumed where the probe finds none (1 MiB: the smallest L2 of current x86 server cores)
DEFAULT_CACHE_BYTES = 1 << 20


def per_core_cache_bytes() -> int:
    """The size of a core's L2 cache (private to the core, or to its SMT siblings, on current x86 CPUs,
    Intel and AMD alike), read from Linux's description of cpu0's caches
    (``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}``); ``DEFAULT_CACHE_BYTES`` where it
    cannot be read."""
    global _CACHE_BYTES
    if _CACHE_BYTES is None:
        _CACHE_BYTES = _probe_cache_bytes() or DEFAULT_CACHE_BYTES
    return _CACHE_BYTES


def _probe_cache_bytes() -> int:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return 0
    for entry in entries:
        try:
            fields = {}
            for name in ("level", "type", "size"):
                with open(os.path.join(base, entry, name)) as f:
                    fields[name] = f.read().strip()
        except OSError:
            continue
        if fields["level"] != "2" or fields["type"] == "Instruction":
            continue
        size = fields["size"].upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        try:
            return int(size.rstrip("KMG")) * scale
        except ValueError:
            return 0
    return 0


def projection_chunk(T: int, B: int, H: int, element_size: int) -> int:
    """How many steps' input projections the inference loop computes at a time (forward_loop's ``chunk``):
    as many as fill half the per-core cache (:func:`per_core_cache_bytes`) with their (B, 4H) rows, at least
    one; 0 (all before the loop) where that is every step anyway."""
    step_bytes = B * GATES * H * element_size
    chunk = max(1, per_core_cache_bytes() // 2 // max(1, step_bytes))
    return 0 if chunk >= T else chunk
