# ruff: noqa: N803, N806  (T, B, H, P, ... are the maths names of unilstm/spec.py's docstring)
"""The cell variants in the native kernel: one direction's forward and backward time loops in C
(``vforward_loop`` / ``vbackward_loop`` in ``_lstm_variant_body.h``) for every variant of
:mod:`unilstm.spec` (layer normalisation, peepholes, gate / cell / projection clips, coupled gates,
zoneout, forget bias, a separate output activation, ONNX's parametric activations), in float32 and float64,
with step masks (gaps, both masked-output modes), reverse, proj_size and shared or per-gate dropout masks.

The standard cell keeps its own loops (:mod:`._loops`); a run comes here only when
:func:`~._loops.uses_variant_loops` says so (a variant, or a parametric activation), and only where the
BLAS gemm was found (the variants have no per-step Python loop; without the gemm they run on the other
kernels).

The C cell has single-pass rows (one loop over the hidden units, vectorised) for the runs whose
activations are (tanh or relu, sigmoid) with the output activation g: the clips, peepholes, coupled gates,
forget bias and zoneout enter them branch-free; with layer normalisation a row is the statistics of rec in
partial sums, one fused loop (LN_hh, the gates, c), the statistics of c~ and one loop for LN_c and h~. The
other runs (other or parametric activations) take rows with a pass per gate and operation.

* forward: Z = X W_ih^T for all steps in one GEMM (with layer normalisation without the biases). Per step,
  in C: rec = h_{t-1} W_hh^T; per row LN_ih of Z_t (its normalised values XHAT and 1/std XRSTD kept; the
  biases b_ih + b_hh join its bias), LN_hh of rec (RHAT / RRSTD kept), the cell with every variant, the
  projection and its clip, zoneout and the step mask. Z keeps the final pre-activations (before the gate
  clip), CC the unclipped cell candidates, CHAT / CRSTD the cell's normalisation.
* backward: per step in C the gate gradients dZ overwrite Z, XHAT becomes the gradient of LN_ih's input
  and the gradient of rec (LN_hh's backward of dZ) feeds dh_{t-1} = drec W_hh; each thread sums the
  peephole and gain gradients of its rows (ACC). After the loop dW_ih, dW_hh, dW_hr and the bias gradients
  are one torch product or sum each over all steps.

A backward that autograd records (``create_graph=True``: second derivatives) computes through the
reference loop (:func:`~unilstm.kernels.reference.differentiable_gradients`); a second backward through
the same call (``retain_graph=True``) runs the forward again first, as its first backward wrote the gate
gradients over the saved pre-activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ... import activations as A
from .. import policy
from ..activation_ids import ACTIVATION_IDS
from ..fast import per_gate_weight_grad, summed_bias
from ..reference import (
    GATES,
    WEIGHT_FIELDS,
    DirectionRun,
    DirectionWeights,
    differentiable_gradients,
    run_direction_reference,
)
from . import _blas
from . import _extension as C
from ._extension import address

#: flags of the C loops (VF_* in _lstm_cell.c)
LAYER_NORM, PEEPHOLES, GATE_CLIP, CELL_CLIP, PROJ_CLIP, COUPLED = 1, 2, 4, 8, 16, 32
#: the float parameters' positions in the loops' float64 array (FP_* in _lstm_cell.c)
FLOAT_PARAMETERS = (
    "act_alpha", "act_beta", "ract_alpha", "ract_beta", "oact_alpha", "oact_beta", "gate_clip", "cell_clip",
    "proj_clip", "forget_bias", "layer_norm_eps", "zoneout_hidden", "zoneout_cell",
)

_IDS: dict[Callable, int] = A.kernel_ids(ACTIVATION_IDS)
_DTYPES = (torch.float32, torch.float64)
#: the backward loop's gradient sums per thread and hidden unit (VARIANT_ACC_PER_HIDDEN in _lstm_cell.c)
ACC_PER_HIDDEN = 13


#: zoneout's hash (Wellons' lowbias32): shifts and odd multipliers, a bijection of 32-bit words
_MIX_SHIFTS, _MIX_MULTIPLIERS = (16, 15, 16), (0x7FEB352D, 0x846CA68B)
_LOW32 = 0xFFFFFFFF


def _mul32(x: Tensor, m: int) -> Tensor:
    """x m mod 2^32 for int64 words x < 2^32, in two 16-bit halves of m (each product < 2^48: no int64
    overflow on any device)."""
    return (x * (m & 0xFFFF) + (((x * (m >> 16)) & 0xFFFF) << 16)) & _LOW32


def _mix32(x: Tensor) -> Tensor:
    x = x ^ (x >> _MIX_SHIFTS[0])
    x = _mul32(x, _MIX_MULTIPLIERS[0])
    x = x ^ (x >> _MIX_SHIFTS[1])
    x = _mul32(x, _MIX_MULTIPLIERS[1])
    return x ^ (x >> _MIX_SHIFTS[2])


def zoneout_keep(
    rate: float, steps: int, state: Tensor, generator: torch.Generator | None, in_c: bool = True
) -> Tensor:
    """Zoneout's draws in training: a (steps, *state.shape) tensor of state's dtype and device, 1 where a
    unit keeps its previous value (probability ``rate``, to 2^-33), else 0.

    Counter-based: two 32-bit keys k0, k1 come from ``generator`` (torch's default one without it, so that
    ``torch.manual_seed`` reproduces the draws); element i (row-major) is 1 where
    ``mix(mix(lo(i) ^ k0) ^ k1 ^ hi(i)) < round(rate 2^32)``, mix the 32-bit hash lowbias32 and lo, hi the
    low and high 32 bits of i. The C extension computes it for CPU states (0.07 ms for
    (50, 32, 128) against 0.6 ms for torch's uniform_ and lt_), torch's integer ops everywhere else: the
    same bits on every device and build (``in_c=False`` takes the torch ops on the CPU too; they take 12 ms
    there: the fallback without the extension)."""
    shape = (steps, *state.shape)
    threshold = min(round(rate * 2.0**32), 2**32)
    keys = torch.empty(2, dtype=torch.int64, device=state.device).random_(0, 2**32, generator=generator)
    if in_c and state.device.type == "cpu" and C.zoneout_draws_available():
        # other dtypes (bfloat16 ...) are drawn in float32 and cast: 0 and 1 are exact in every float
        out = torch.empty(shape, dtype=state.dtype if state.dtype in _DTYPES else torch.float32)
        k0, k1 = keys.tolist()
        C.zoneout_draws(out, k0, k1, threshold)
        return out.to(state.dtype)
    index = torch.arange(math.prod(shape), dtype=torch.int64, device=state.device)
    bits = _mix32(_mix32((index & _LOW32) ^ keys[0]) ^ keys[1] ^ (index >> 32))
    return (bits < threshold).to(state.dtype).view(shape)


def variant_activation(fn: Callable | None) -> tuple[int, float, float] | None:
    """(C id, alpha, beta) of an activation in the variant loops: a parametric one's kind id and numbers,
    or a named one's id of the shared table; None where the C cell lacks it."""
    if isinstance(fn, A.ParametricActivation):
        code = C.PARAMETRIC_IDS.get(fn.kind)
        return None if code is None else (code, fn.alpha, fn.beta)
    code = A.kernel_entry(_IDS, fn) if fn is not None else None
    return None if code is None else (code, 0.0, 0.0)


@dataclass(frozen=True)
class VariantConfig:
    """What the C loops need of a run beyond its tensors: activations (id, alpha, beta) for g, the gates
    and g_out, flags, the float parameters (:data:`FLOAT_PARAMETERS`), reverse, zero masked outputs."""

    act: tuple[int, float, float]
    ract: tuple[int, float, float]
    oact: tuple[int, float, float]
    flags: int
    floats: tuple[float, ...]
    reverse: bool
    zero_out: bool


def variant_config(weights: DirectionWeights, run: DirectionRun) -> VariantConfig | None:
    """The run's :class:`VariantConfig`, or None where the C loops lack one of its activations."""
    act, ract = variant_activation(run.activation), variant_activation(run.recurrent_activation)
    oact = act if run.output_activation is None else variant_activation(run.output_activation)
    if act is None or ract is None or oact is None:
        return None
    flags = (
        (LAYER_NORM if weights.layer_norm else 0) | (PEEPHOLES if weights.peephole is not None else 0)
        | (GATE_CLIP if run.gate_clip is not None else 0) | (CELL_CLIP if run.cell_clip is not None else 0)
        | (PROJ_CLIP if run.proj_clip is not None and weights.w_hr is not None else 0)
        | (COUPLED if run.coupled_gates else 0)
    )
    zh = run.zoneout_hidden if not isinstance(run.zoneout_hidden, Tensor) else 0.0
    zc = run.zoneout_cell if not isinstance(run.zoneout_cell, Tensor) else 0.0
    floats = (
        act[1], act[2], ract[1], ract[2], oact[1], oact[2], run.gate_clip or 0.0, run.cell_clip or 0.0,
        run.proj_clip or 0.0, float(run.forget_bias), float(run.layer_norm_eps), float(zh), float(zc),
    )
    return VariantConfig(act, ract, oact, flags, floats, bool(run.reverse), bool(run.zero_masked_output))


def variant_accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether :func:`run_direction_variant` computes this variant run: the build has the variant loops,
    the BLAS gemm was found for x's dtype (the variants have no per-step Python loop), the C cell has the
    activations and the layer normalisation's six tensors are all given or none."""
    if not C.variants_available() or x.dtype not in _DTYPES or not _blas.blas_functions(x.dtype)[0]:
        return False
    ln = [getattr(weights, name) for name in WEIGHT_FIELDS[6:]]
    if any(t is None for t in ln) and any(t is not None for t in ln):
        return False
    return variant_config(weights, run) is not None


def variant_buffers_agree(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> bool:
    """Every variant tensor the C loops read has x's dtype, lies on the CPU and has the shape the run
    implies (:func:`~._loops.buffers_agree` checks the others)."""
    T, B, _ = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    ln = [getattr(weights, name) for name in WEIGHT_FIELDS[6:]]
    expected: list[tuple[object, tuple[int, ...]]] = [(weights.peephole, (3 * H,))]
    expected += [(t, (GATES * H,)) for t in ln[:4]] + [(t, (H,)) for t in ln[4:]]
    expected += [(run.zoneout_hidden, (T, B, P)), (run.zoneout_cell, (T, B, H))]
    for tensor, shape in expected:
        if not isinstance(tensor, Tensor):
            continue
        if tensor.shape != shape or tensor.dtype != x.dtype or not tensor.is_cpu:
            return False
    return True


def needs_graph(args: tuple) -> bool:
    """Whether autograd records a call with these arguments."""
    return torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _blas_arguments(x: Tensor) -> dict[str, int]:
    gemm, pack_get_size, pack, compute, gemm_batch = _blas.blas_functions(x.dtype)
    return {"float64": int(x.dtype == torch.float64), "gemm": gemm, "pack_get_size": pack_get_size,
            "pack": pack, "compute": compute, "gemm_batch": gemm_batch}


def _input_part(x: Tensor, w_ih: Tensor, mx: Tensor | None) -> Tensor:
    """X W_ih^T (T, B, 4H) for all steps (one GEMM; one bmm over the gates with per-gate masks (4, B, F))."""
    T, B, Fdim = x.shape
    if mx is None or mx.dim() == 2:
        rows = (x if mx is None else x * mx).reshape(T * B, Fdim)
        return torch.mm(rows, w_ih.t()).view(T, B, -1)
    H = w_ih.shape[0] // GATES
    rows4 = (x.unsqueeze(0) * mx.unsqueeze(1)).reshape(GATES, T * B, Fdim)
    Z4 = torch.bmm(rows4, w_ih.view(GATES, H, Fdim).transpose(1, 2))
    return Z4.permute(1, 0, 2).reshape(T, B, GATES * H).contiguous()


def _zoneout_tensor(value: Tensor | float, x: Tensor) -> Tensor | None:
    return value.to(x.dtype).contiguous() if isinstance(value, Tensor) else None


#: the Function's tensor arguments after cfg, run and threads: x, h0, c0, the 12 weight fields, then
#: mx, mh, step_mask (bool), zh, zc
Arguments = tuple
#: how many tensor arguments a run has (x, h0, c0, the 12 weight fields, mx, mh, step_mask, zh, zc), and
#: how many tensors its forward records
ARGUMENT_COUNT, RECORD_COUNT = 20, 15


#: a deferred loop: its argument tuple, and the tensors its buffers lie in (kept alive until it has run)
Deferred = tuple[tuple[int, ...], tuple]


def forward_pass(cfg: VariantConfig, threads: int, args: Arguments, save: bool = True,
                 defer: list[Deferred] | None = None) -> tuple:
    """The forward time loop: ((output, h_T, c_T), record); the record is what the backward reads. With
    ``defer`` (a list) the loop does not run: its arguments and buffers are appended, and the results hold
    their values once the caller has run it (:func:`run_direction_variant_halves`)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, bt_ih, g_hh, bt_hh, g_c, bt_c = args[:15]
    mx, mh, step_mask, zh, zc = args[15:]
    T, B, _ = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    proj, ln = w_hr is not None, bool(cfg.flags & LAYER_NORM)
    gate_masks = 4 if mh is not None and mh.dim() == 3 else 1
    Z = _input_part(x, w_ih, mx).contiguous()
    bias = summed_bias(b_ih, b_hh)
    xbias = None
    if ln:  # LN_ih per row in the C loop; b_ih + b_hh join its own bias
        xbias = (bt_ih if bias is None else bt_ih + bias).contiguous()
    elif bias is not None:
        Z += bias
    Hp, Cp = x.new_empty(T + 1, B, P), x.new_empty(T + 1, B, H)
    masked = step_mask is not None
    keep = step_mask.to(torch.uint8).contiguous() if masked else None
    Obuf = x.new_empty(T, B, P) if masked else None
    zeros = x.new_zeros(B, P) if masked else None
    mh = None if mh is None else mh.contiguous()

    def history(condition: bool, *shape: int) -> Tensor | None:
        return x.new_empty(*shape) if save and condition else None

    R = history(proj, T, B, H)
    HM = history(mh is not None, gate_masks, T, B, P)
    CC = history(True, T, B, H)
    RHAT, RRSTD = history(ln, T, B, GATES * H), history(ln, T, B)
    CHAT, CRSTD = history(ln, T, B, H), history(ln, T, B)
    HPU = history(bool(cfg.flags & PROJ_CLIP), T, B, P)
    XHAT, XRSTD = history(ln, T, B, GATES * H), history(ln, T, B)
    g_ih_c = None if g_ih is None or not ln else g_ih.contiguous()
    copy = T >= policy.COPY_MIN_STEPS and B >= policy.COPY_MIN_BATCH
    w_hh_c = w_hh.contiguous()
    if gate_masks == 4:
        w4 = w_hh_c.view(GATES, H, P)
        Wrec = w4.transpose(1, 2).contiguous() if copy else w4
    else:
        Wrec = w_hh_c.t().contiguous() if copy else w_hh_c
    Whr = None if w_hr is None else (w_hr.t().contiguous() if copy else w_hr.contiguous())
    hnext, rec = x.new_empty(gate_masks, B, P), x.new_empty(GATES * B * H)
    rbuf, hcand = (x.new_empty(B, H), x.new_empty(B, P)) if proj else (None, None)
    scratch = x.new_empty(C.VARIANT_SCRATCH_PER_HIDDEN * H * max(threads, 1))
    floats = torch.tensor(cfg.floats, dtype=torch.float64)
    peep, g_hh, bt_hh, g_c, bt_c = (
        None if t is None else t.contiguous() for t in (peep, g_hh, bt_hh, g_c, bt_c)
    )
    loop = dict(
        **_blas_arguments(x), trans_w=int(not copy), T=T, B=B, H=H, P=P, reverse=int(cfg.reverse),
        zero_out=int(cfg.zero_out), n_masks=gate_masks, threads=threads, flags=cfg.flags, act=cfg.act[0],
        ract=cfg.ract[0], oact=cfg.oact[0], floats=floats.data_ptr(), Z=Z.data_ptr(), Hp=Hp.data_ptr(),
        Cp=Cp.data_ptr(), Obuf=address(Obuf), keep=address(keep), mh=address(mh), hnext=hnext.data_ptr(),
        hm_hist=address(HM), rec=rec.data_ptr(), Wrec=Wrec.data_ptr(), R=address(R), rbuf=address(rbuf),
        hcand=address(hcand), Whr=address(Whr), zeros=address(zeros), scratch=scratch.data_ptr(),
        h0=h0.data_ptr(), c0=c0.data_ptr(), peephole=address(peep), g_hh=address(g_hh), b_hh=address(bt_hh),
        g_c=address(g_c), b_c=address(bt_c), ZH=address(zh), ZC=address(zc), RHAT=address(RHAT),
        RRSTD=address(RRSTD), CC=address(CC), CHAT=address(CHAT), CRSTD=address(CRSTD), HPU=address(HPU),
        ostride=0 if Obuf is None else Obuf.stride(0), g_ih=address(g_ih_c), xbias=address(xbias),
        XHAT=address(XHAT), XRSTD=address(XRSTD),
    )
    if defer is None:
        C.variant_forward_loop(**loop)
    else:
        buffers = (x, h0, c0, Z, Hp, Cp, Obuf, keep, zeros, mh, R, HM, CC, RHAT, RRSTD, CHAT, CRSTD, HPU,
                   Wrec, Whr, w_hh_c, hnext, rec, rbuf, hcand, scratch, floats, peep, g_hh, bt_hh, g_c, bt_c,
                   zh, zc, g_ih_c, xbias, XHAT, XRSTD)
        defer.append((C.variant_forward_arguments(**loop), buffers))
    last = 0 if cfg.reverse else T
    out = Obuf if Obuf is not None else (Hp[:T] if cfg.reverse else Hp[1:])
    record = (Z, XHAT, XRSTD, None, Hp, Cp, R, HM, CC, RHAT, RRSTD, CHAT, CRSTD, HPU, keep)
    return (out, Hp[last], Cp[last]), record


def backward_pass(cfg: VariantConfig, threads: int, args: Arguments, record: tuple, needs: tuple[bool, ...],
                  dout: Tensor, dhT: Tensor, dcT: Tensor, defer: list[Deferred] | None = None,
                  ) -> Callable[[], tuple]:
    """Runs the backward time loop and returns a function that gives the gradients of every tensor argument
    (:data:`Arguments` order; None where not needed). With ``defer`` the loop does not run (as
    :func:`forward_pass`): the function is to be called once the caller has run it."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, bt_ih, g_hh, bt_hh, g_c, bt_c = args[:15]
    mx, mh, _, zh, zc = args[15:]
    Z, XHAT, XRSTD, _, Hp, Cp, R, HM, CC, RHAT, RRSTD, CHAT, CRSTD, HPU, keep = record
    T, B, Fdim = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    proj, ln = w_hr is not None, bool(cfg.flags & LAYER_NORM)
    gate_masks = 4 if mh is not None and mh.dim() == 3 else 1
    mh = None if mh is None else mh.contiguous()
    dout = dout.contiguous()
    dh, dc = dhT.contiguous().clone(), dcT.contiguous().clone()
    DH = x.new_empty(T, B, P) if proj else None
    dh_new = x.new_empty(B, P)
    dr = x.new_empty(B, H) if proj else dh_new
    DREC = x.new_empty(T, B, GATES * H) if ln else x.new_empty(B, GATES * H)
    dh_tmp = x.new_empty(gate_masks, B, P)
    carry = x.new_zeros(B, P) if keep is not None and not cfg.zero_out else None
    # the gradient sums of the peepholes and the gains over the rows, per thread (summed in _gradients)
    ACC = x.new_zeros(max(threads, 1), ACC_PER_HIDDEN * H) if ln or cfg.flags & PEEPHOLES else None
    zone_h = zh is not None or cfg.floats[11] != 0.0
    zdir = x.new_empty(B, P) if zone_h else None
    scratch = x.new_empty(C.VARIANT_SCRATCH_PER_HIDDEN * H * max(threads, 1))
    floats = torch.tensor(cfg.floats, dtype=torch.float64)
    w_hh_c = w_hh.contiguous()
    w_hr_c = None if w_hr is None else w_hr.contiguous()
    peep_c, g_hh_c, g_c_c, bt_c_c, g_ih_c = (
        None if t is None else t.contiguous() for t in (peep, g_hh, g_c, bt_c, g_ih if ln else None)
    )
    loop = dict(
        **_blas_arguments(x), T=T, B=B, H=H, P=P, reverse=int(cfg.reverse), n_masks=gate_masks,
        threads=threads, flags=cfg.flags, act=cfg.act[0], ract=cfg.ract[0], oact=cfg.oact[0],
        floats=floats.data_ptr(), Z=Z.data_ptr(), Cp=Cp.data_ptr(), dout=dout.data_ptr(),
        dstride=dout.stride(0), keep=address(keep), dh=dh.data_ptr(), dc=dc.data_ptr(), carry=address(carry),
        dh_new=dh_new.data_ptr(), DH=address(DH), dr=dr.data_ptr(), w_hr=address(w_hr_c),
        DREC=DREC.data_ptr(), drec_step=B * GATES * H if ln else 0, dh_tmp=dh_tmp.data_ptr(),
        Wrec=w_hh_c.data_ptr(), mh=address(mh), scratch=scratch.data_ptr(), peephole=address(peep_c),
        g_hh=address(g_hh_c), g_c=address(g_c_c), b_c=address(bt_c_c), RHAT=address(RHAT),
        RRSTD=address(RRSTD), CC=address(CC), CHAT=address(CHAT), CRSTD=address(CRSTD), ACC=address(ACC),
        HPU=address(HPU), ZH=address(zh), ZC=address(zc), zdir=address(zdir), XHAT=address(XHAT),
        XRSTD=address(XRSTD), g_ih=address(g_ih_c),
    )
    if defer is None:
        C.variant_backward_loop(**loop)
    else:
        buffers = (dout, dh, dc, DH, dh_new, dr, DREC, dh_tmp, carry, ACC, zdir, scratch, floats, w_hh_c,
                   w_hr_c, mh, peep_c, g_hh_c, g_c_c, bt_c_c, g_ih_c, zh, zc, *record)
        defer.append((C.variant_backward_arguments(**loop), buffers))
    return lambda: _gradients(cfg, args, record, needs, (dh, dc, DH, DREC, ACC))


def _gradients(
    cfg: VariantConfig, args: Arguments, record: tuple, needs: tuple[bool, ...], found: tuple
) -> tuple:
    """backward_pass's gradients, from what its loop found: dh0, dc0, DH, DREC, the per-thread sums ACC
    (peepholes [3H], LN_hh's gain [4H], LN_c's gain and bias [H each], LN_ih's gain [4H]), Z (now dZ) and
    XHAT (now the gradient of LN_ih's input)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, bt_ih, g_hh, bt_hh, g_c, bt_c = args[:15]
    mx, mh = args[15:17]
    Z, XHAT, _, _, Hp, Cp, R, HM, CC, RHAT, RRSTD, CHAT, CRSTD, HPU, keep = record
    dh, dc, DH, DREC, ACC = found
    sums = None if ACC is None else ACC.sum(0)

    def part(start: int, stop: int) -> Tensor:  # each gradient its own tensor: autograd may add into it
        assert sums is not None
        return sums[start:stop].clone()

    T, B, Fdim = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    ln = bool(cfg.flags & LAYER_NORM)
    gate_masks = 4 if mh is not None and mh.dim() == 3 else 1
    grads: list[Tensor | None] = [None] * 20
    grads[1], grads[2] = (dh if needs[1] else None), (dc if needs[2] else None)
    dZ = Z.view(T * B, GATES * H)
    dZin = dZ
    # the gradient of every bias added to z (b_ih, b_hh, and the two normalisations' biases of the gates)
    dz_sum = dZ.sum(0) if any(needs[i] for i in (5, 6, 10, 12)) else None
    if ln:
        assert XHAT is not None and sums is not None
        dZin = XHAT.view(T * B, GATES * H)
        grads[9] = part(9 * H, 13 * H) if needs[9] else None
        grads[10] = dz_sum if needs[10] else None
        grads[11] = part(3 * H, 7 * H) if needs[11] else None
        if needs[12]:
            grads[12] = None if dz_sum is None else dz_sum.clone()
        grads[13] = part(7 * H, 8 * H) if needs[13] else None
        grads[14] = part(8 * H, 9 * H) if needs[14] else None
    dZ4 = dZin.view(T * B, GATES, H).transpose(0, 1)
    if needs[3]:
        if mx is not None and mx.dim() == 3:
            grads[3] = per_gate_weight_grad(dZ4, x, mx)
        else:
            grads[3] = torch.mm(dZin.t(), (x if mx is None else x * mx).reshape(T * B, Fdim))
    if needs[0]:
        if mx is not None and mx.dim() == 3:
            dx4 = torch.bmm(dZ4, w_ih.view(GATES, H, Fdim)).view(GATES, T, B, Fdim)
            grads[0] = dx4.mul_(mx.unsqueeze(1)).sum(0)
        else:
            dx = torch.mm(dZin, w_ih).view(T, B, Fdim)
            grads[0] = dx.mul_(mx) if mx is not None else dx
    if needs[4]:
        # the gradient of rec: dZ itself without LN_hh; with it DREC, each step gate-major (4, B, H) with
        # per-gate masks (the layout of the per-step products)
        dR = (DREC if ln else Z).view(T * B, GATES * H)
        if HM is None:
            Hprev = Hp[1:] if cfg.reverse else Hp[:T]
            grads[4] = torch.mm(dR.t(), Hprev.reshape(T * B, P))
        elif gate_masks == 4:
            if ln:
                dR4 = DREC.view(T, GATES, B, H).transpose(0, 1).reshape(GATES, T * B, H)
            else:
                dR4 = dR.view(T * B, GATES, H).transpose(0, 1)
            grads[4] = torch.bmm(dR4.transpose(1, 2), HM.view(GATES, T * B, P)).view(GATES * H, P)
        else:
            grads[4] = torch.mm(dR.t(), HM.view(T * B, P))
    if dz_sum is not None:  # each bias its own tensor (autograd may accumulate into them)
        grads[5] = dz_sum.clone() if needs[5] else None
        grads[6] = dz_sum.clone() if needs[6] else None
    if needs[7] and DH is not None and R is not None:
        grads[7] = torch.mm(DH.view(T * B, P).t(), R.view(T * B, H))
    grads[8] = part(0, 3 * H) if needs[8] else None  # [p_i, p_f, p_o]: dz_i c_{t-1}, dz_f c_{t-1}, dz_o c~
    return tuple(grads)


def _differentiable_backward(args: tuple, run: DirectionRun, grads: tuple[Tensor, Tensor, Tensor]) -> tuple:
    """The variant Functions' backward result through the reference loop, which autograd records (for a
    backward with ``create_graph=True``): args are (x, h0, c0, the 12 weight fields, ...)."""
    x, h0, c0 = args[:3]
    found = differentiable_gradients(x, h0, c0, DirectionWeights(*args[3:15]), run, grads)
    return (None, None, None, *found, None, None, None, None, None)


class _NativeLSTMVariants(torch.autograd.Function):
    """One direction of a variant cell through the C loops: arguments (cfg, run, threads, x, h0, c0, the 12
    weight fields of DirectionWeights, mx, mh, step_mask, zh, zc); results (out, h_T, c_T)."""

    @staticmethod
    def forward(ctx, cfg, run, threads, *args):  # noqa: N805
        results, record = forward_pass(cfg, threads, args)
        ctx.cfg, ctx.run, ctx.threads = cfg, run, threads
        ctx.save_for_backward(*args, *record)
        return results

    @staticmethod
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        saved = ctx.saved_tensors
        args, record = saved[:ARGUMENT_COUNT], saved[ARGUMENT_COUNT:]
        if torch.is_grad_enabled():  # create_graph=True: gradients autograd can differentiate again
            return _differentiable_backward(args, ctx.run, (dout, dhT, dcT))
        if getattr(ctx, "consumed", False):  # the first backward wrote the gate gradients over Z
            with torch.autocast(device_type="cpu", enabled=False):
                record = forward_pass(ctx.cfg, ctx.threads, args)[1]
        ctx.consumed = True
        needs = ctx.needs_input_grad[3:]
        grads = backward_pass(ctx.cfg, ctx.threads, args, record, needs, dout, dhT, dcT)()
        return (None, None, None, *grads)


def function_arguments(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple:
    """The tensor arguments of :class:`_NativeLSTMVariants` after cfg, run and threads."""
    mask = run.step_mask
    if mask is not None:
        mask = mask.to(device=x.device, dtype=torch.bool)
    return (
        x.contiguous(), h0.contiguous(), c0.contiguous(), *weights.tensors(), run.input_dropout_mask,
        run.recurrent_dropout_mask, mask, _zoneout_tensor(run.zoneout_hidden, x),
        _zoneout_tensor(run.zoneout_cell, x),
    )


def run_direction_variant(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun, threads: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`~unilstm.kernels.reference.run_direction_reference` for a variant run that
    :func:`variant_accepts` (the caller checks the common buffers); ``threads``: how many threads may split
    a cell step's rows."""
    cfg = variant_config(weights, run)
    if cfg is None:
        return run_direction_reference(x, h0, c0, weights, run)
    args = function_arguments(x, h0, c0, weights, run)
    records = needs_graph(args)
    with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
        if not records:  # inference: nothing saved for a backward
            return forward_pass(cfg, threads, args, save=False)[0]
        return _NativeLSTMVariants.apply(cfg, run, threads, *args)


def _half(args: Arguments, rows: slice) -> Arguments:
    """The arguments of the sequences ``rows``: x, h0, c0, the step mask, dropout masks ((B, .) or per gate
    (4, B, .)) and zoneout draws cut along the batch; the weights whole."""
    x, h0, c0 = args[:3]
    mx, mh, step_mask, zh, zc = args[15:]

    def cut(t: Tensor | None, batch_dim: int) -> Tensor | None:
        return None if t is None else t[(slice(None),) * batch_dim + (rows,)].contiguous()

    return (
        x[:, rows].contiguous(), h0[rows].contiguous(), c0[rows].contiguous(), *args[3:15],
        cut(mx, 0 if mx is None else mx.dim() - 2), cut(mh, 0 if mh is None else mh.dim() - 2),
        cut(step_mask, 1), cut(zh, 1), cut(zc, 1),
    )


def _forward_halves(cfg: VariantConfig, args: Arguments, middle: int, save: bool = True) -> tuple:
    """Both halves' forward loops at once: ((out, h_T, c_T) of the whole batch, the halves' records)."""
    defer: list[Deferred] = []
    halves = [_half(args, rows) for rows in (slice(0, middle), slice(middle, None))]
    (res_a, rec_a), (res_b, rec_b) = (forward_pass(cfg, 1, half, save, defer) for half in halves)
    C.variant_loop_pair(False, defer[0][0], defer[1][0])
    out = torch.cat((res_a[0], res_b[0]), dim=1)
    return (out, torch.cat((res_a[1], res_b[1])), torch.cat((res_a[2], res_b[2]))), (rec_a, rec_b)


def _joined(a: Tensor | None, b: Tensor | None, index: int) -> Tensor | None:
    """The whole batch's gradient of argument ``index`` from its halves': x along the batch (dim 1), h0 and
    c0 along theirs (dim 0), the weights summed."""
    if a is None or b is None:
        return None
    if index == 0:
        return torch.cat((a, b), dim=1)
    return torch.cat((a, b)) if index in (1, 2) else a + b


class _NativeLSTMVariantsHalves(torch.autograd.Function):
    """:class:`_NativeLSTMVariants` on the two halves of the batch, their C loops at once on two threads:
    arguments (cfg, run, middle, x, h0, c0, the 12 weight fields, mx, mh, step_mask, zh, zc)."""

    @staticmethod
    def forward(ctx, cfg, run, middle, *args):  # noqa: N805
        results, (rec_a, rec_b) = _forward_halves(cfg, args, middle)
        ctx.cfg, ctx.run, ctx.middle = cfg, run, middle
        ctx.save_for_backward(*args, *rec_a, *rec_b)
        return results

    @staticmethod
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        saved = ctx.saved_tensors
        args = saved[:ARGUMENT_COUNT]
        middle = ARGUMENT_COUNT + RECORD_COUNT
        records = (saved[ARGUMENT_COUNT:middle], saved[middle:])
        if torch.is_grad_enabled():  # create_graph=True: gradients autograd can differentiate again
            return _differentiable_backward(args, ctx.run, (dout, dhT, dcT))
        if getattr(ctx, "consumed", False):  # the first backward wrote the gate gradients over Z
            with torch.autocast(device_type="cpu", enabled=False):
                records = _forward_halves(ctx.cfg, args, ctx.middle)[1]
        ctx.consumed = True
        needs = ctx.needs_input_grad[3:]
        defer: list[Deferred] = []
        finishes = [
            backward_pass(ctx.cfg, 1, _half(args, rows), record, needs, dout[:, rows], dhT[rows], dcT[rows],
                          defer)
            for rows, record in zip((slice(0, ctx.middle), slice(ctx.middle, None)), records, strict=True)
        ]
        C.variant_loop_pair(True, defer[0][0], defer[1][0])
        grads_a, grads_b = (finish() for finish in finishes)
        joined = [_joined(a, b, k) for k, (a, b) in enumerate(zip(grads_a, grads_b, strict=True))]
        return (None, None, None, *joined)


def run_direction_variant_halves(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`run_direction_variant` on the two halves of the batch, their C loops at once on two threads
    (:func:`~._pair.halves_accept` decides where; the weight gradients are the sums of the halves')."""
    cfg = variant_config(weights, run)
    if cfg is None:
        return run_direction_reference(x, h0, c0, weights, run)
    args = function_arguments(x, h0, c0, weights, run)
    middle = x.shape[1] // 2
    records = needs_graph(args)
    with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
        if not records:
            return _forward_halves(cfg, args, middle, save=False)[0]
        return _NativeLSTMVariantsHalves.apply(cfg, run, middle, *args)


def _forward_directions(cfgs: tuple[VariantConfig, VariantConfig], args: tuple[Arguments, Arguments],
                        save: bool = True) -> tuple:
    """The two directions' forward loops at once: ((out, h_T, c_T) of each, their records)."""
    defer: list[Deferred] = []
    (res_a, rec_a), (res_b, rec_b) = (
        forward_pass(cfg, 1, run_args, save, defer) for cfg, run_args in zip(cfgs, args, strict=True)
    )
    C.variant_loop_pair(False, defer[0][0], defer[1][0])
    return (*res_a, *res_b), (rec_a, rec_b)


class _NativeLSTMVariantsDirections(torch.autograd.Function):
    """:class:`_NativeLSTMVariants` for the two directions of a bidirectional layer, their C loops at once on
    two threads: arguments (cfg_a, cfg_b, run_a, run_b, then the 20 arguments of each direction); results
    (out, h_T, c_T) of each. x is given to both: autograd adds its two gradients."""

    @staticmethod
    def forward(ctx, cfg_a, cfg_b, run_a, run_b, *args):  # noqa: N805
        args_a, args_b = args[:ARGUMENT_COUNT], args[ARGUMENT_COUNT:]
        results, (rec_a, rec_b) = _forward_directions((cfg_a, cfg_b), (args_a, args_b))
        ctx.cfgs, ctx.runs = (cfg_a, cfg_b), (run_a, run_b)
        ctx.save_for_backward(*args, *rec_a, *rec_b)
        return results

    @staticmethod
    def backward(ctx, dout_a, dh_a, dc_a, dout_b, dh_b, dc_b):  # noqa: N805
        saved = ctx.saved_tensors
        both = saved[: 2 * ARGUMENT_COUNT]
        args = (both[:ARGUMENT_COUNT], both[ARGUMENT_COUNT:])
        records = (saved[2 * ARGUMENT_COUNT : 2 * ARGUMENT_COUNT + RECORD_COUNT],
                   saved[2 * ARGUMENT_COUNT + RECORD_COUNT :])
        grads = ((dout_a, dh_a, dc_a), (dout_b, dh_b, dc_b))
        if torch.is_grad_enabled():  # create_graph=True: each direction through the reference loop
            found = [
                _differentiable_backward(run_args, run, g)[3:]
                for run_args, run, g in zip(args, ctx.runs, grads, strict=True)
            ]
            return (None, None, None, None, *found[0][:ARGUMENT_COUNT], *found[1][:ARGUMENT_COUNT])
        if getattr(ctx, "consumed", False):  # the first backward wrote the gate gradients over Z
            with torch.autocast(device_type="cpu", enabled=False):
                records = _forward_directions(ctx.cfgs, args)[1]
        ctx.consumed = True
        needs = ctx.needs_input_grad[4:]
        needs_by_direction = (needs[:ARGUMENT_COUNT], needs[ARGUMENT_COUNT:])
        defer: list[Deferred] = []
        finishes = [
            backward_pass(cfg, 1, a, record, need, *g, defer)
            for cfg, a, record, need, g in zip(
                ctx.cfgs, args, records, needs_by_direction, grads, strict=True
            )
        ]
        C.variant_loop_pair(True, defer[0][0], defer[1][0])
        grads_a, grads_b = (finish() for finish in finishes)
        return (None, None, None, None, *grads_a, *grads_b)


def run_directions_variant(
    x: Tensor, h0: Tensor, c0: Tensor, weights: tuple[DirectionWeights, DirectionWeights],
    runs: tuple[DirectionRun, DirectionRun],
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Both directions of a bidirectional variant layer (h0, c0: (2, B, .)) as :func:`run_direction_variant`
    computes each, their C loops at once on two threads (:func:`~._pair.pair_accepts` decides where)."""
    cfgs = (variant_config(weights[0], runs[0]), variant_config(weights[1], runs[1]))
    if cfgs[0] is None or cfgs[1] is None:
        return (run_direction_reference(x, h0[0], c0[0], weights[0], runs[0]),
                run_direction_reference(x, h0[1], c0[1], weights[1], runs[1]))
    args = tuple(function_arguments(x, h0[d], c0[d], weights[d], runs[d]) for d in range(2))
    records = needs_graph((*args[0], *args[1]))
    with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
        if not records:
            out = _forward_directions((cfgs[0], cfgs[1]), (args[0], args[1]), save=False)[0]
        else:
            out = _NativeLSTMVariantsDirections.apply(cfgs[0], cfgs[1], runs[0], runs[1], *args[0], *args[1])
    return out[:3], out[3:]
