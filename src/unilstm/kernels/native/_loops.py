# ruff: noqa: N803, N806  (T, B, H, P, ... are the maths names of the module docstring)
"""One direction of an LSTM layer in the native kernel: the fast kernel's algorithm with the time loop and
the cell in C.

It computes what :func:`~unilstm.kernels.reference.run_direction_reference` computes, on the CPU, in float32
and float64, for the activations of ``unilstm/kernels/activation_ids.py``, with step masks with gaps,
reverse, both masked-output modes, proj_size and shared or per-gate dropout masks. The cell variants of
:mod:`unilstm.spec` (and ONNX's parametric activations) have their own loops, :mod:`._variants`
(:func:`uses_variant_loops`); this module's loops compute the standard cell only, unchanged by them.

* forward: Z = X W_ih^T + b for all steps in one GEMM; then per step rec = h_{t-1} W_hh^T and the cell
  (c_t = f c_{t-1} + i g, h_t = o act(c_t), masks, outputs), which keeps the pre-activations in Z_t. It
  saves Z, the hidden and cell states and, with a projection, r_t = o act(c_t). Inference saves nothing, so
  there the C loop computes Z a cache-sized chunk of steps at a time (``_blas.projection_chunk``) into a Z
  of one chunk, where that route measured fastest (``_blas.inference_route``).
* backward: per step the cell recomputes the gate activations from Z_t and overwrites Z_t with the gate
  gradients dZ_t; dh_{t-1} = dZ_t W_hh. Then dW_ih = dZ^T X, dW_hh = dZ^T H_prev, dW_hr = dH^T R and the
  bias gradients as one torch GEMM or sum each over all steps.

Where the BLAS gemm was found (``_blas.blas_gemm``) the whole time loop runs in C (``forward_loop`` /
``backward_loop`` in ``_lstm_cell_body.h``), calling it directly: the fast kernel makes about twenty torch
ops per step, and on small shapes their dispatch, not the arithmetic, is the cost. Without input dropout
masks the C loop also computes the input projections itself, which saves torch ops in streaming calls. The
forward loop calls, instead of the BLAS gemm, the hand-written one for tiny products where the first use
measured it faster for that kind of loop (:mod:`._small_gemm`: batch 1, streaming).
The recurrent and projection weights are read as transposed copies or, where MKL packs them, in their own
layout (``policy.COPY_MIN_*``, ``_extension.PACK_MIN_*``). Where the gemm is missing, the same loop runs in
Python with one torch GEMM and one C call per step, on buffers at fixed addresses (no tensor is created
per step).

The cell makes one pass over the hidden units for the pairs (tanh, sigmoid) and (relu, sigmoid), and a pass
per gate and operation for the other activations; from ``CELL_PARALLEL_MIN`` hidden units per step the C
loop splits a step's rows among torch's intra-op threads (``_blas.cell_threads``) where the first use
measured the split faster for that kind of loop (:mod:`._cell_split`). float32 uses vectorised
polynomial approximations of exp and tanh (a few units in the last place, see ``_lstm_cell.c``); float64
uses libm's functions, so the float64 property tests hold this kernel to the reference at 1e-9. The
backward writes the gate gradients over the saved pre-activations: a second backward through the same call
(``retain_graph=True``) runs the forward again first (:func:`record_for_backward`), and a backward that
autograd records (``create_graph=True``: second derivatives) computes through the reference loop
(:func:`~unilstm.kernels.fast.reference_backward`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ... import activations as A
from .. import policy
from ..activation_ids import ACTIVATION_IDS
from ..fast import (
    backward_outputs,
    function_arguments,
    per_gate_weight_grad,
    reference_backward,
    summed_bias,
)
from ..opaque import opaque_to_compile
from ..reference import GATES, DirectionRun, DirectionWeights, is_variant, run_direction_reference
from . import _blas
from . import _extension as C
from ._cell_split import backward_threads, forward_threads
from ._extension import address
from ._small_gemm import loop_gemm, loop_kind
from ._variants import needs_graph, run_direction_variant, variant_accepts, variant_buffers_agree

#: The activations the C cell implements, with their ids (unilstm/kernels/activation_ids.py).
NATIVE_ACTIVATION_IDS: dict[Callable, int] = A.kernel_ids(ACTIVATION_IDS)

_DTYPES = (torch.float32, torch.float64)


#: the activation of each C id (the first registered function of an id that several functions share)
ACTIVATIONS_BY_ID: dict[int, Callable] = {}
for _fn, _code in NATIVE_ACTIVATION_IDS.items():
    ACTIVATIONS_BY_ID.setdefault(_code, _fn)


def activation_id(fn: Callable) -> int | None:
    """The C cell's id of the resolved activation ``fn``, or None where the C cell lacks it."""
    return A.kernel_entry(NATIVE_ACTIVATION_IDS, fn)


def accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether :func:`run_direction_native` computes this run: the C cell is built, a CPU tensor in float32
    or float64 with at least one step and one sequence, activations the C cell implements and dropout
    masks shared by the four gates or one per gate; a cell variant where the variant loops take it
    (:func:`variant_accepts`)."""
    return _accepts(x, weights, run, uses_variant_loops(weights, run))


def _accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun, variant: bool) -> bool:
    """:func:`accepts` with :func:`uses_variant_loops` already known."""
    if not C.available() or x.device.type != "cpu" or x.dtype not in _DTYPES:
        return False
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        return False
    if variant:  # the variant loops (._variants), where the gemm was found
        return variant_accepts(x, weights, run)
    return True


def uses_variant_loops(weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether a run goes to the variant loops (:mod:`._variants`): a cell variant, or an activation that
    only they have (ONNX's parametric ones)."""
    return (
        is_variant(weights, run) or activation_id(run.activation) is None
        or activation_id(run.recurrent_activation) is None
    )


def _all_packed_in_c(blas: tuple, T: int, B: int, H: int, P: int, gate_masks: int, proj: bool) -> bool:
    """Whether the C forward loop packs the weights of every per-step product it runs (its PACK_MIN_*
    thresholds): packing reads either layout, so the transposed copies are then skipped."""
    if not blas[1] or gate_masks != 1 or T < C.PACK_MIN_STEPS or B < C.PACK_MIN_ROWS:
        return False
    return GATES * H * P >= C.PACK_MIN_WEIGHT and (not proj or P * H >= C.PACK_MIN_WEIGHT)


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


def _input_projection(
    x: Tensor, w_ih: Tensor, bias: Tensor | None, mx: Tensor | None, route: str = "torch_mm"
) -> Tensor:
    """Z (T, B, 4H) = (x * mx) W_ih^T + b for all steps: one GEMM (through oneDNN's linear for ``route``
    "onednn", float32 without an input dropout mask; else torch's MKL addmm), or one bmm over the gates when
    the input dropout mask is per gate (4, B, F)."""
    T, B, Fdim = x.shape
    if route == "onednn" and mx is None:
        return _blas.onednn_linear(x.reshape(T * B, Fdim), w_ih.contiguous(), bias).view(T, B, -1)
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


#: the cfg argument of the native autograd Functions (:func:`run_config`)
Config = tuple[int, int, bool, int]
#: what the backward pass needs of the forward: (T, B, F, H, P, per step whether every row is kept (empty
#: without a step mask), dropout masks per step: 1 shared or 4 per gate)
Meta = tuple[int, int, int, int, int, list[bool], int]
#: the tensors of a run between x and step_mask in the arguments of :func:`forward_pass`: h0, c0, w_ih,
#: w_hh, b_ih, b_hh, w_hr, mx, mh
RunTensors = tuple[
    Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None
]
#: what :func:`forward_pass` records for the backward: (meta, saved tensors)
Record = tuple[Meta, tuple[Tensor | None, ...]]
#: a deferred loop: its argument tuple, and the tensors its buffers lie in (kept alive until it has run)
Deferred = tuple[tuple[int, ...], tuple[Tensor | None, ...]]


def forward_pass(
    cfg: Config, x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
    b_hh: Tensor | None, w_hr: Tensor | None, mx: Tensor | None, mh: Tensor | None, step_mask: Tensor | None,
    save: bool = True, defer: list[Deferred] | None = None, output: Tensor | None = None,
    route: str | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor], Record]:
    """The forward time loop. Returns (output, h_T, c_T) and what the backward pass needs: (meta, tensors)
    (with ``save`` False, nothing beyond what the loop itself needs is recorded). With ``defer`` (a list)
    and the loop in C, the loop does not run: its arguments and the buffers they point into are appended
    to ``defer``, and the results hold their values once the caller has run it (forward_loop_pair).
    ``output``: a (T, B, P) tensor, rows contiguous within each step (_step_rows_contiguous), for the
    outputs (the half of a batch's output buffer: run_direction_native_halves); by default the outputs are
    the hidden-state history, or a buffer of their own when masked. ``route``: the input projection's GEMM
    route (``_blas.PROJECTION_ROUTES``), chosen by first-use measurement when None."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    f64 = x.dtype == torch.float64
    proj = w_hr is not None
    gate_masks = 4 if mh is not None and mh.dim() == 3 else 1
    blas = _blas.blas_functions(x.dtype)
    loop_in_c = bool(blas[0])
    # the input projection's GEMM route, measured at first use: the C loop's own gemm (one fewer torch op per
    # call: it matters when streaming; in inference, in cache-sized chunks of steps), torch's MKL addmm or
    # oneDNN; with per-gate or input dropout masks torch's bmm / mul. Training measures the product alone
    # (_blas.projection_route), inference the whole forward with each route (_blas.inference_route: the
    # chunks' gain is the cache and the memory they spare the loop, not a faster product)
    if not loop_in_c or mx is not None:
        route = "torch_mm"
    elif route is None and save:
        route = _blas.projection_route(x, w_ih, b_ih, b_hh)
    elif route is None:
        args = (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask)
        route = _blas.inference_route(
            x, w_ih, b_ih, b_hh, lambda name: forward_pass(*args, save=False, route=name)
        )
    project_in_c = route == "c_gemm"
    # inference: the loop projects the inputs a cache-sized chunk of steps at a time into a Z of one chunk
    # (_blas.projection_chunk; 0: all steps at once, as training saves Z for the backward)
    chunk = _blas.projection_chunk(T, B, H, x.element_size()) if project_in_c and not save else 0
    if project_in_c:
        Z = x.new_empty(chunk or T, B, GATES * H)
    else:
        Z = _input_projection(x, w_ih, summed_bias(b_ih, b_hh), mx, route)

    # (T + 1)-step histories: step t reads index t and writes t + 1 (reverse: reads t + 1, writes t)
    Hp = x.new_empty(T + 1, B, P)
    Cp = x.new_empty(T + 1, B, H)
    first = T if reverse else 0
    R = x.new_empty(T, B, H) if proj else None
    masked = step_mask is not None
    keep = step_mask.to(torch.uint8).contiguous() if step_mask is not None else None
    # (per step whether every row is kept: for the backward and the Python loop; the C loop looks itself)
    all_kept = step_mask.all(dim=1).tolist() if step_mask is not None and (save or not loop_in_c) else []
    Obuf = output if output is not None else (x.new_empty(T, B, P) if masked else None)
    ostride = 0 if Obuf is None else Obuf.stride(0)  # elements between two steps of Obuf
    zeros = x.new_zeros(B, P) if masked else None
    mh = None if mh is None else mh.contiguous()
    # the masked h_{t-1} of every step (per gate): dW_hh is then one product, with no masking pass
    HM = x.new_empty(gate_masks, T, B, P) if save and mh is not None else None
    # transposed copies of the weights, made per call: a cache keyed by the version counter would miss
    # changes made through ``weight.data``
    copy = T >= policy.COPY_MIN_STEPS and B >= policy.COPY_MIN_BATCH
    if copy and loop_in_c and _all_packed_in_c(blas, T, B, H, P, gate_masks, proj):
        copy = False
    Wrec, Whr = _recurrent_operands(w_hh, w_hr, gate_masks, copy)

    esz = x.element_size()
    z0, zs = Z.data_ptr(), B * GATES * H * esz
    h_base, hs = Hp.data_ptr(), B * P * esz
    c_base, cs = Cp.data_ptr(), B * H * esz
    o_base, r_base, k_base = address(Obuf), address(R), address(keep)
    mh_p, prev_p = address(mh), address(zeros)
    # fixed per-step operands of the GEMMs (see _lstm_cell_body.h): hnext (B, P) or (4, B, P) with per-gate
    # masks, rec (B, 4H) or (4, B, H), the cell's scratch, and rbuf (B, H) / hcand (B, P) with a projection
    threads = cell_threads() if loop_in_c else 1  # the C loop splits the cell's rows among them
    sizes = (gate_masks * B * P, GATES * B * H, C.SCRATCH_PER_HIDDEN * H * threads, B * H if proj else 0,
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
            w_ih = w_ih.contiguous()
            b_ih, b_hh = (None if t is None else t.contiguous() for t in (b_ih, b_hh))
            inputs = (x.data_ptr(), Fdim, w_ih.data_ptr(), address(b_ih), address(b_hh))
        loop_args = C.forward_loop_head(
            float64=f64, gemm=blas[0], pack_get_size=blas[1], pack=blas[2], compute=blas[3],
            gemm_batch=blas[4], trans_w=not copy, T=T, B=B, H=H, P=P, reverse=reverse,
        ) + C.forward_loop_buffers(
            Z=z0, Hp=h_base, Cp=c_base, Obuf=o_base, keep=k_base, zero_out=zero_out, mh=mh_p,
            n_masks=gate_masks, hnext=hnext_p, hm_hist=address(HM), rec=rec_p, WrecT=Wrec.data_ptr(),
            R=r_base, rbuf=rbuf_p, hcand=hcand_p,
        ) + C.forward_loop_tail(
            WhrT=address(Whr), zeros=prev_p, scratch=scr_p, X=inputs[0], F=inputs[1], W_ih=inputs[2],
            b_ih=inputs[3], b_hh=inputs[4], h0=h0.data_ptr(), c0=c0.data_ptr(), chunk=chunk, threads=threads,
            act=act, ract=ract, ostride=ostride,
        )
        # the BLAS gemm or the hand-written one for tiny products, measured per kind of loop at first use
        # (_small_gemm.loop_gemm; two loops at once take what was measured, without measuring)
        run_again = C.forward_loop if defer is None else None
        projected = Fdim if project_in_c else 0
        loop_args = loop_gemm(
            lambda: loop_kind("forward", x.dtype, T, B, projected, H, P, gate_masks, not copy),
            x.dtype, run_again, loop_args,
        )
        # split each step's cell among the threads or not, measured per kind of loop at first use
        loop_args = forward_threads(x.dtype, threads, B, H, P, run_again, loop_args)
        if defer is not None:
            # every buffer the loop reads or writes stays referenced until it has run
            buffers = (work, w_ih, b_ih, b_hh, Wrec, Whr, zeros, keep, mh, h0, c0, x, Z, Hp, Cp, R, Obuf, HM)
            defer.append((loop_args, buffers))
        else:
            C.forward_loop(loop_args)
    else:  # per step: one torch GEMM and one C call
        Hp[first].copy_(h0)
        Cp[first].copy_(c0)
        hnext = h0.clone(memory_format=torch.contiguous_format) if mh is None else (h0 * mh).contiguous()
        rec = x.new_empty(GATES, B, H) if gate_masks == 4 else x.new_empty(B, GATES * H)
        rbuf = x.new_empty(B, H) if proj else None
        hcand = x.new_empty(B, P) if proj else None
        scratch = x.new_empty(sizes[2])
        hnext_p, rec_p, scr_p = hnext.data_ptr(), rec.data_ptr(), scratch.data_ptr()
        rbuf_p, hcand_p = address(rbuf), address(hcand)
        gemm = torch.bmm if gate_masks == 4 else torch.mm
        if not copy:  # torch reads the weights transposed through views
            Wrec = Wrec.transpose(-1, -2)
            Whr = None if Whr is None else Whr.t()

        forward_step = C.forward_stepper(float64=f64, B=B, H=H, P=P, zero_out=zero_out, n_masks=gate_masks,
                                         scratch=scr_p, act=act, ract=ract)
        finish_hidden = C.finish_hidden_stepper(float64=f64, B=B, P=P, zero_out=zero_out, mh=mh_p,
                                                n_masks=gate_masks, hnext=hnext_p)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            hi, ho = (t + 1, t) if reverse else (t, t + 1)
            if HM is not None:
                HM[:, t].copy_(hnext.view(gate_masks, B, P))
            gemm(hnext, Wrec, out=rec)
            kp = 0 if not masked or all_kept[t] else k_base + t * B
            out_p = o_base + t * ostride * esz if Obuf is not None else 0
            if rbuf is not None:  # with proj
                # (z, rec, c_prev, c_out, h_prev, h_out, out_t, prev_out, keep, mh, hnext, r_out, r_hist)
                forward_step(z0 + t * zs, rec_p, c_base + hi * cs, c_base + ho * cs, 0, 0, 0, 0, kp, 0, 0,
                             rbuf_p, r_base + t * cs)
                torch.mm(rbuf, Whr, out=hcand)
                # (hcand, h_prev, h_out, out_t, prev_out, keep)
                finish_hidden(hcand_p, h_base + hi * hs, h_base + ho * hs, out_p, prev_p, kp)
            else:
                forward_step(z0 + t * zs, rec_p, c_base + hi * cs, c_base + ho * cs, h_base + hi * hs,
                             h_base + ho * hs, out_p, prev_p, kp, mh_p, hnext_p, 0, 0)
            if Obuf is not None:
                prev_p = out_p

    last = 0 if reverse else T
    out = Obuf if Obuf is not None else (Hp[:T] if reverse else Hp[1:])
    meta = (T, B, Fdim, H, P, all_kept, gate_masks)
    return (out, Hp[last], Cp[last]), (meta, (x, w_ih, w_hh, w_hr, mx, mh, keep, Z, Hp, Cp, R, HM))


def backward_pass(
    cfg: Config, meta: Meta, saved: tuple, needs: tuple[bool, ...], has_bias: tuple[bool, bool], dout: Tensor,
    dhT: Tensor, dcT: Tensor, defer: list[Deferred] | None = None,
) -> Callable[[], tuple]:
    """The backward of :class:`_NativeLSTM`: runs the time loop and returns a function that computes the
    gradients of its forward's arguments. With ``defer`` (a list) and the loop in C, the loop does not run:
    its arguments and buffers are appended to ``defer``, and the function is to be called once the caller
    has run it (backward_loop_pair)."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim, H, P, all_kept, gate_masks = meta
    x, w_ih, w_hh, w_hr, mx, mh, keep, Z, Hp, Cp, R, HM = saved
    f64 = x.dtype == torch.float64
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
    blas = _blas.blas_functions(x.dtype)
    threads = backward_threads(x.dtype, cell_threads(), B, H, P) if blas[0] else 1
    scratch = x.new_empty(C.SCRATCH_PER_HIDDEN * H * threads)
    w_hh = w_hh.contiguous()
    if gate_masks == 4:
        gemm, Wrec = torch.bmm, w_hh.view(GATES, H, P)
    else:
        gemm, Wrec = torch.mm, w_hh

    esz = x.element_size()
    z0, zs = Z.data_ptr(), B * GATES * H * esz
    hs, cs = B * P * esz, B * H * esz
    c_base, dout_base, k_base = Cp.data_ptr(), dout.data_ptr(), address(keep)
    dh_p, dc_p, tmp_p, dz_p = dh.data_ptr(), dc.data_ptr(), dh_tmp.data_ptr(), dz.data_ptr()
    carry_p, mh_p, scr_p = address(carry), address(mh), scratch.data_ptr()
    dr_p, dhn_p, DH_base = address(dr), dh_new.data_ptr(), address(DH)
    if blas[0]:
        w_hr_rows = w_hr.contiguous() if proj else None
        loop_args = C.backward_loop_head(
            float64=f64, gemm=blas[0], pack_get_size=blas[1], pack=blas[2], compute=blas[3],
            gemm_batch=blas[4], T=T, B=B, H=H, P=P, reverse=reverse,
        ) + C.backward_loop_buffers(
            Z=z0, Cp=c_base, dout=dout_base, keep=k_base, dh=dh_p, dc=dc_p, carry=carry_p, dh_new=dhn_p,
            DH=DH_base, dr=dr_p, w_hr=address(w_hr_rows), dz=dz_p, dh_tmp=tmp_p, Wrec=Wrec.data_ptr(),
            mh=mh_p,
        ) + C.backward_loop_tail(
            n_masks=gate_masks, scratch=scr_p, threads=threads, act=act, ract=ract, dstride=dstride,
        )
        if defer is not None:
            # every buffer the loop reads or writes stays referenced until it has run
            buffers = (dout, dh, dc, DH, dh_new, dr, dz, dh_tmp, carry, scratch, w_hh, w_hr_rows, Z, Cp, keep,
                       mh)
            defer.append((loop_args, buffers))
        else:
            C.backward_loop(loop_args)
    else:
        backward_step = C.backward_stepper(float64=f64, B=B, H=H, P=P, n_masks=gate_masks, scratch=scr_p,
                                           act=act, ract=ract)
        pending, prev_kp = 0, 0
        for t in range(T) if reverse else range(T - 1, -1, -1):
            hi, ho = (t + 1, t) if reverse else (t, t + 1)
            kp = 0 if not masked or all_kept[t] else k_base + t * B
            zt, cprev, cnew = z0 + t * zs, c_base + hi * cs, c_base + ho * cs
            gout = dout_base + t * dstride * esz
            if proj:
                # (phases, z, c_prev, c_new, dh, dc, gout, carry, keep, dh_new_out, dh_hist, dr, dh_tmp,
                #  keep_prev, mh, dz_copy)
                backward_step(pending | C.HEAD, zt, cprev, cnew, dh_p, dc_p, gout, carry_p, kp, dhn_p,
                              DH_base + t * hs, 0, tmp_p, prev_kp, mh_p, 0)
                torch.mm(dh_new, w_hr, out=dr)
                backward_step(C.CELL, zt, cprev, cnew, dh_p, dc_p, 0, 0, kp, 0, 0, dr_p, 0, 0, 0, dz_p)
            else:
                backward_step(pending | C.HEAD | C.CELL, zt, cprev, cnew, dh_p, dc_p, gout, carry_p, kp,
                              dhn_p, 0, dhn_p, tmp_p, prev_kp, mh_p, dz_p)
            gemm(dz, Wrec, out=dh_tmp)
            pending, prev_kp = C.TAIL, kp
        backward_step(C.TAIL, 0, 0, 0, dh_p, dc_p, 0, 0, 0, 0, 0, 0, tmp_p, prev_kp, mh_p, 0)

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
        if DH is not None and needs[8]:  # (DH is given with proj)
            dwhr = torch.mm(DH.view(T * B, P).t(), R.view(T * B, H))
        return backward_outputs(needs, has_bias, dx, dh, dc, dwih, dwhh, db, dwhr)

    return finish


#: how many tensors :func:`forward_pass` records for the backward
RECORD_SIZE = 12


def kept_arguments(args: tuple) -> tuple:
    """The tensors of a call's arguments (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask)
    that its record lacks, saved beside it: h0, c0, w_ih (the record may hold a contiguous copy), b_ih,
    b_hh, step_mask. With the record they give the call again (:func:`call_arguments`)."""
    return args[2], args[3], args[4], args[6], args[7], args[11]


def call_arguments(cfg: Config, record: tuple, kept: tuple) -> tuple:
    """A call's arguments as :func:`function_arguments` gave them, from its record and kept arguments."""
    x, _, w_hh, w_hr, mx, mh = record[:6]
    h0, c0, w_ih, b_ih, b_hh, step_mask = kept
    return cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask


def differentiable_backward(args: tuple, grads: tuple[Tensor, Tensor, Tensor]) -> tuple:
    """The backward result for the call ``args`` through the reference loop, which autograd records: for a
    backward with create_graph=True."""
    act, ract = ACTIVATIONS_BY_ID[args[0][0]], ACTIVATIONS_BY_ID[args[0][1]]
    return reference_backward((act, ract), args, grads)


def record_for_backward(ctx, record: tuple, rerun: Callable[[], tuple]) -> tuple:
    """The record a backward without autograd reads: the forward's, the first time; after that ``rerun()``'s
    (the forward run again on the same arguments: the same numbers), as the first backward wrote the gate
    gradients over its pre-activations (a second backward through the call, retain_graph=True)."""
    if getattr(ctx, "consumed", False):
        with torch.autocast(device_type="cpu", enabled=False):  # products in x's dtype, as the forward
            record = rerun()
    ctx.consumed = True
    return record


class _NativeLSTM(torch.autograd.Function):
    """One direction through the C loops: arguments (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh,
    step_mask) as :func:`~unilstm.kernels.fast.function_arguments` makes them; results (out, h_T, c_T)."""

    @staticmethod
    def forward(ctx, cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask):  # noqa: N805
        args = (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask)
        results, (meta, saved) = forward_pass(*args)
        ctx.cfg, ctx.meta = cfg, meta
        ctx.save_for_backward(*saved, *kept_arguments(args))
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return results

    @staticmethod
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        saved = ctx.saved_tensors
        args = call_arguments(ctx.cfg, saved[:RECORD_SIZE], saved[RECORD_SIZE:])
        if torch.is_grad_enabled():  # create_graph=True: gradients autograd can differentiate again
            return differentiable_backward(args, (dout, dhT, dcT))
        record = record_for_backward(ctx, saved[:RECORD_SIZE], lambda: forward_pass(*args)[1][1])
        return backward_pass(
            ctx.cfg, ctx.meta, record, ctx.needs_input_grad, ctx.has_bias, dout, dhT, dcT
        )()


def run_config(run: DirectionRun) -> tuple[int, int, bool, int]:
    """The cfg argument of the native autograd Functions: (activation id, recurrent activation id,
    reverse, zero masked outputs)."""
    return (
        NATIVE_ACTIVATION_IDS[run.activation], NATIVE_ACTIVATION_IDS[run.recurrent_activation],
        bool(run.reverse), int(bool(run.zero_masked_output)),
    )


@opaque_to_compile
def run_direction_native(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`~unilstm.kernels.reference.run_direction_reference` (see the module
    docstring for what differs: speed and float32 rounding)."""
    variant = uses_variant_loops(weights, run)
    if not _accepts(x, weights, run, variant):  # dispatch asks first; force_kernel("native") does not
        return run_direction_reference(x, h0, c0, weights, run)
    if not buffers_agree(x, h0, c0, weights, run):
        # the C loop reads raw buffers of x's type and of these shapes: anything else goes to the loop
        # whose torch ops check them and raise torch's errors
        return run_direction_reference(x, h0, c0, weights, run)
    if variant:
        if not variant_buffers_agree(x, h0, c0, weights, run):
            return run_direction_reference(x, h0, c0, weights, run)
        return run_direction_variant(x, h0, c0, weights, run, cell_threads())
    cfg = run_config(run)
    args = function_arguments(cfg, x.contiguous(), h0.contiguous(), c0.contiguous(), weights, run)
    if not needs_graph(args):  # inference (streaming): no autograd.Function bookkeeping
        if torch.is_autocast_enabled("cpu"):
            with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
                return forward_pass(*args, save=False)[0]
        return forward_pass(*args, save=False)[0]
    with torch.autocast(device_type="cpu", enabled=False):
        return _NativeLSTM.apply(*args)


def buffers_agree(x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Every tensor the C loop reads has x's dtype and device (the CPU) and the shape the run implies."""
    # (no lists, one pass: this runs on every native call, a tenth of a streaming step's Python)
    T, B, F = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    w_ih, w_hh, b_ih, b_hh, w_hr = weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh, weights.w_hr
    gates = GATES * H
    if (w_hr is None) != (P == H) or h0.shape != (B, P) or c0.shape != (B, H):
        return False
    if w_ih.shape != (gates, F) or w_hh.shape != (gates, P) or (w_hr is not None and w_hr.shape != (P, H)):
        return False
    if (b_ih is not None and b_ih.shape != (gates,)) or (b_hh is not None and b_hh.shape != (gates,)):
        return False
    dtype = x.dtype  # x is a CPU tensor (accepts)
    for tensor in (h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        if tensor is not None and (tensor.dtype is not dtype or not tensor.is_cpu):
            return False
    for mask, width in ((run.input_dropout_mask, F), (run.recurrent_dropout_mask, P)):
        if mask is not None and (
            mask.shape != ((GATES, B, width) if mask.dim() == 3 else (B, width))
            or mask.dtype != dtype or not mask.is_cpu
        ):
            return False
    return run.step_mask is None or run.step_mask.shape == (T, B)


def cell_threads() -> int:
    """How many threads the C loop may split a cell step's rows among (see :func:`_blas.cell_threads`; the
    split is checked on first use by :func:`split_step_agrees`)."""
    return _blas.cell_threads(split_step_agrees)


def split_step_agrees() -> bool:
    """Two steps forward and backward at B = 16, H = 512 (above the C cell's CELL_PARALLEL_MIN) give
    exactly the same results on two threads as on one."""
    T, B, F, H = 2, 16, 3, 512
    run = DirectionRun(torch.tanh, torch.sigmoid, None, False, True)
    results = []
    generator = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(T, B, F, generator=generator), torch.randn(4 * H, F, generator=generator) * 0.1,
        torch.randn(4 * H, H, generator=generator) * 0.05, torch.randn(4 * H, generator=generator) * 0.1,
    ]
    # (inside the first-use checks: its own autograd graph whatever the caller's grad mode)
    for threads in (1, 2):
        with _blas.threads_for_check(threads):
            x, w_ih, w_hh, b_ih = (t.clone().requires_grad_() for t in tensors)
            weights = DirectionWeights(w_ih, w_hh, b_ih, None, None)
            out, h, c = run_direction_native(x, torch.zeros(B, H), torch.zeros(B, H), weights, run)
            grads = torch.autograd.grad((out * out).sum() + c.sum(), (x, w_ih, w_hh, b_ih))
            results.append([out, h, c, *grads])
    return all(torch.equal(a, b) for a, b in zip(*results, strict=True))
