# ruff: noqa: N803, N806  (T, B, H, G, ... are the maths names of the module docstring)
"""The fast flexible kernel: one direction of one layer with a hand-written backward through time.

It computes exactly what :func:`~unilstm.kernels.reference.run_direction_reference` computes (any named
activation, step masks with gaps, reverse, both masked-output modes, shared or per-gate dropout masks,
proj_size, float16/bfloat16/float32/float64) but as a :class:`torch.autograd.Function`:

* forward: one GEMM for the input projections of all steps (four batched GEMMs with per-gate input masks),
  then per step one ``addmm_`` for the recurrent term and a handful of in-place elementwise ops on
  preallocated buffers. It saves only the gate activations, the cell states and the hidden states.
* backward: a loop over time that turns the saved gates into the gate gradients ``dz`` in place (one GEMM
  per step for ``dh_{t-1}``), then the weight gradients as one GEMM each over all steps
  (``dW_ih = dZ^T X``, ``dW_hh = dZ^T H_prev``, ``dW_hr = dH^T R``) and bias gradients as sums.

Gate rows are reordered internally to [i, f, o, g] so that the three gate sigmoids are one op.

A run with cell variants (:func:`~unilstm.kernels.reference.is_variant`: layer normalisation, peepholes,
clips, coupled gates, zoneout, forget bias, an output activation of its own) runs on a body of its own with
its own hand-written backward, :mod:`~unilstm.kernels.fast_variants`, so that the standard cell's body stays
as it is. The activations and their derivatives, ONNX's parametric ones included, are
:mod:`~unilstm.kernels.fast_activations`'.

On CUDA the elementwise part of each step is one Triton kernel forward and one backward where
:mod:`~unilstm.kernels.triton_cell` has both activations, and the whole forward and backward bodies are
replayed from CUDA graphs (:mod:`~unilstm.kernels.cuda_graphs`) from the second call with the same shapes
on. For that the CUDA bodies never read the step mask on the host: they treat every step as partly masked
(``_step_patterns``), which gives the same numbers. Masked rows are selected with ``where``, never multiplied
by the mask, so an overflow in a row the mask drops (inf from padding) cannot become nan.

Limits: activations must be named ones with a hand-written derivative (``accepts`` says False for other
callables and for the non-elementwise ``softmax``, ``log_softmax`` and ``glu``; the reference handles
those). The backward writes the gate gradients over the saved gates: a second backward through the same
call (``retain_graph=True``) runs the forward again first, and a backward that autograd records
(``create_graph=True``: second derivatives) computes through the reference loop instead
(:func:`reference_backward`). Autocast is disabled inside the kernel: it computes in the dtype of its
inputs. Under ``torch.compile`` the kernel is an opaque call (``opaque_to_compile``), so its time loop is
never unrolled into a graph.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from . import cuda_graphs, fast_variants, policy, triton_cell
from .fast_activations import _Act, act_entry, supported_activation
from .opaque import opaque_to_compile
from .reference import GATES, DirectionRun, DirectionWeights, differentiable_gradients, is_variant

__all__ = ["accepts", "run_direction_fast", "supported_activation"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether :func:`run_direction_fast` computes this run: named elementwise activations (ONNX's
    parametric ones included), a floating dtype, at least one step and one sequence; every cell variant."""
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.dtype not in _DTYPES:
        return False
    if is_variant(weights, run) and not fast_variants.accepts(x, weights, run):
        return False
    return supported_activation(run.activation) and supported_activation(run.recurrent_activation)


def _apply_inplace(act: _Act, v: Tensor) -> None:
    if act.inplace is not None:
        act.inplace(v)
    else:
        v.copy_(act.fn(v))


def _gate_permutation(hidden: int, device: torch.device) -> Tensor:
    """[i, f, g, o] <-> [i, f, o, g] row order (its own inverse)."""
    r = torch.arange(4 * hidden, device=device)
    return torch.cat([r[: 2 * hidden], r[3 * hidden :], r[2 * hidden : 3 * hidden]])


def _permuted_rows(w: Tensor, perm: Tensor) -> Tensor:
    # made on every call: a cache keyed by the version counter would miss changes made through ``w.data``
    return w.detach().index_select(0, perm)


# ---------------------------------------------------------------------------------------------------------
# Buffers and their views. Two layouts of the gate buffer G:
#   "shared": (T, B, 4H), gate blocks [i, f, o, g] along the last axis (no per-gate dropout mask);
#   "gatewise": (4, T, B, H), used when a dropout mask is per gate (4, B, F): the per-gate products are
#   batched GEMMs over the leading gate axis.
# Hidden and cell states live in (T+1, B, .) buffers indexed so that time step t reads index ``t`` and
# writes ``t + 1`` going forward, reads ``t + 1`` and writes ``t`` in reverse.
# ---------------------------------------------------------------------------------------------------------


def _gate_views(G: Tensor, gatewise: bool, hidden: int) -> tuple[list[Tensor], ...]:
    H = hidden
    if gatewise:
        return (
            list(G.unbind(1)), list(G[:3].unbind(1)), list(G[3].unbind(0)),
            list(G[0].unbind(0)), list(G[1].unbind(0)), list(G[2].unbind(0)),
        )
    return (
        list(G.unbind(0)), list(G[:, :, : 3 * H].unbind(0)), list(G[:, :, 3 * H :].unbind(0)),
        list(G[:, :, :H].unbind(0)), list(G[:, :, H : 2 * H].unbind(0)),
        list(G[:, :, 2 * H : 3 * H].unbind(0)),
    )



def per_gate_weight_grad(dZ: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """dW (4H, F) = per gate dZ_k^T (values * mask_k) over all steps, as one batched GEMM.

    dZ: (4, T*B, H) gate gradients; values: (T, B, F) the layer's inputs or previous hidden states;
    mask: None, a shared (B, F) or per-gate (4, B, F) dropout mask."""
    rows, width = values.shape[0] * values.shape[1], values.shape[-1]
    if mask is not None and mask.dim() == 3:
        masked = (values.unsqueeze(0) * mask.unsqueeze(1)).reshape(GATES, rows, width)
    else:
        shared = values if mask is None else values * mask
        masked = shared.reshape(1, rows, width).expand(GATES, rows, width)
    return torch.bmm(dZ.transpose(1, 2), masked).reshape(-1, width)


def summed_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """b_ih + b_hh, either alone where the other is None, or None: both enter the gates as one sum."""
    if b_ih is None or b_hh is None:
        return b_hh if b_ih is None else b_ih
    return b_ih + b_hh


#: the positional arguments of the fast and native autograd Functions (:func:`function_arguments`)
FunctionArguments = tuple[
    tuple, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None,
    Tensor | None, Tensor | None, Tensor | None,
]


def function_arguments(cfg: tuple, x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights,
                       run: DirectionRun) -> FunctionArguments:
    """The positional arguments of the fast and native autograd Functions: (cfg, x, h0, c0, w_ih, w_hh,
    b_ih, b_hh, w_hr, input dropout mask, recurrent dropout mask, step mask as bool on x's device)."""
    mask = run.step_mask
    if mask is not None:
        mask = mask.to(device=x.device, dtype=torch.bool)
    return (
        cfg, x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh, weights.w_hr,
        run.input_dropout_mask, run.recurrent_dropout_mask, mask,
    )


def backward_outputs(
    needs: tuple[bool, ...], has_bias: tuple[bool, bool], dx: Tensor | None, dh: Tensor, dc: Tensor,
    dwih: Tensor | None, dwhh: Tensor | None, db: Tensor | None, dwhr: Tensor | None,
) -> tuple:
    """The backward result of the fast and native autograd Functions, whose ``forward`` takes
    (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask): one bias gradient ``db`` serves both
    biases (b_ih and b_hh enter as a sum), as separate tensors when both exist."""
    has_bih, has_bhh = has_bias
    db_ih = db if has_bih and needs[6] else None
    db_hh = db if has_bhh and needs[7] else None
    if db_ih is not None and db_hh is not None:
        db_hh = db_ih.clone()  # (db_ih is db)
    return (None, dx, dh if needs[2] else None, dc if needs[3] else None, dwih, dwhh, db_ih, db_hh, dwhr,
            None, None, None)


def _step_patterns(
    step_mask: Tensor | None, T: int, capturable: bool
) -> tuple[list[bool], list[bool]] | None:
    """Per step: whether every sequence is valid, whether none is (both skip work). The capturable variant,
    for CUDA, treats every step as partly valid: reading the mask on the host would synchronise with the
    device and cannot be recorded into a CUDA graph. Both give the same numbers."""
    if step_mask is None:
        return None
    if capturable:
        return [False] * T, [False] * T
    return step_mask.all(dim=1).tolist(), (~step_mask.any(dim=1)).tolist()


def _capturable(x: Tensor) -> bool:
    return x.device.type == "cuda" or cuda_graphs.usable(x)


def _project(r: Tensor, w_hr_t: Tensor, zero_bias: Tensor | None, out: Tensor) -> None:
    """out = r W_hr^T, (B, H) x (H, P); through a zero bias where policy.PROJECTION_THROUGH_BIAS_MAX_ROWS
    says."""
    if zero_bias is None:
        torch.mm(r, w_hr_t, out=out)
    else:
        torch.addmm(zero_bias, r, w_hr_t, out=out)


def _forward_body(cfg, patterns, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask):
    """The forward of :class:`_FastLSTM`: (out, h_T, c_T, then the tensors its backward needs)."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim = x.shape
    H = c0.shape[-1]
    P = h0.shape[-1]
    dev = x.device
    perm = _gate_permutation(H, dev)
    Wih = _permuted_rows(w_ih, perm)
    Whh = _permuted_rows(w_hh, perm)
    bias = summed_bias(b_ih, b_hh)
    if bias is not None:
        bias = bias.index_select(0, perm)
    gatewise = (mx is not None and mx.dim() == 3) or (mh is not None and mh.dim() == 3)
    # per-gate masks follow the internal [i, f, o, g] order too (by slices: a list index would be copied
    # from the host, which a CUDA graph cannot record)
    if mx is not None and mx.dim() == 3:
        mx = torch.cat((mx[:2], mx[3:], mx[2:3]))
    if mh is not None and mh.dim() == 3:
        mh = torch.cat((mh[:2], mh[3:], mh[2:3]))

    # ---- all input projections at once
    X2 = x.reshape(T * B, Fdim)
    if not gatewise:
        Xm = X2 if mx is None else (x * mx).reshape(T * B, Fdim)
        G = torch.addmm(bias, Xm, Wih.t()) if bias is not None else torch.mm(Xm, Wih.t())
        G = G.view(T, B, 4 * H)
    elif mx is not None and mx.dim() == 3:
        Xm4 = (x.unsqueeze(0) * mx.unsqueeze(1)).reshape(GATES, T * B, Fdim)
        W4T = Wih.view(GATES, H, Fdim).transpose(1, 2)
        G = torch.baddbmm(bias.view(GATES, 1, H), Xm4, W4T) if bias is not None else torch.bmm(Xm4, W4T)
        del Xm4
        G = G.view(GATES, T, B, H)
    else:
        Xm = X2 if mx is None else (x * mx).reshape(T * B, Fdim)
        Z = torch.addmm(bias, Xm, Wih.t()) if bias is not None else torch.mm(Xm, Wih.t())
        G = Z.view(T * B, GATES, H).permute(1, 0, 2).contiguous().view(GATES, T, B, H)
        del Z
    z_l, sig_l, cand_l, i_l, f_l, o_l = _gate_views(G, gatewise, H)

    Hp = x.new_empty(T + 1, B, P)
    Cp = x.new_empty(T + 1, B, H)
    first = T if reverse else 0
    Hp[first].copy_(h0)
    Cp[first].copy_(c0)
    Hs, Cs = Hp.unbind(0), Cp.unbind(0)
    R = x.new_empty(T, B, H) if w_hr is not None else None
    Rs = R.unbind(0) if R is not None else ()
    WhrT = w_hr.t() if w_hr is not None else None

    masked = step_mask is not None
    if masked:
        kb = step_mask.unsqueeze(-1)
        per_step, none_step = patterns
        Obuf = x.new_empty(T, B, P)
        Os = Obuf.unbind(0)
        kbs = kb.unbind(0)
        zero = x.new_zeros(())
        htmp = x.new_empty(B, P)
        ctmp = x.new_empty(B, H)
        prev_out = x.new_zeros(B, P)
    y_only = act.y_only and ract.y_only
    if not y_only:
        Abuf = x.new_empty(GATES, B, H) if gatewise else x.new_empty(B, 4 * H)
        if gatewise:
            a_sig, a_g, a_i, a_f, a_o = Abuf[:3], Abuf[3], Abuf[0], Abuf[1], Abuf[2]
        else:
            a_sig, a_g = Abuf[:, : 3 * H], Abuf[:, 3 * H :]
            a_i, a_f, a_o = Abuf[:, :H], Abuf[:, H : 2 * H], Abuf[:, 2 * H : 3 * H]
    tc = x.new_empty(B, H)
    if gatewise:
        W4hT = Whh.view(GATES, H, P).transpose(1, 2)
        hm4 = x.new_empty(GATES, B, P) if (mh is not None and mh.dim() == 3) else None
    else:
        WhhT = Whh.t()
    hm = x.new_empty(B, P) if (mh is not None and mh.dim() == 2) else None
    act_fn = act.fn
    tanh_cell = act.fn is torch.tanh
    fused = triton_cell.accepts(x, act.fn, ract.fn)
    # the fused step also writes h' * mh, the next step's GEMM operand (one kernel fewer a step)
    fold_mask = fused and R is None and mh is not None
    premasked = False
    if fused:
        codes = triton_cell.codes(act.fn, ract.fn)
        keep_rows = step_mask.contiguous().view(torch.uint8).unbind(0) if masked else ()
        mh_rows = mh.contiguous() if fold_mask else None
    # (the fused steps run on the CPU only in tests, through Triton's interpreter: they take this route too)
    through_bias = (
        R is not None and (dev.type == "cuda" or fused) and B <= policy.PROJECTION_THROUGH_BIAS_MAX_ROWS
    )
    zero_bias = x.new_zeros(P) if through_bias else None

    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        hi, ho = (t + 1, t) if reverse else (t, t + 1)
        h, c = Hs[hi], Cs[hi]
        if masked and none_step[t]:  # h stays, and so does a premasked operand
            Hs[ho].copy_(h)
            Cs[ho].copy_(c)
            if R is not None:
                Rs[t].zero_()
            if zero_out:
                Os[t].zero_()
            else:
                Os[t].copy_(prev_out)
                prev_out = Os[t]
            continue
        z = z_l[t]
        if mh is None:
            h_masked = None
        elif premasked:
            h_masked = hm if hm is not None else hm4
        elif hm is not None:
            h_masked = torch.mul(h, mh, out=hm)
        else:
            h_masked = torch.mul(h.unsqueeze(0), mh, out=hm4)
        if gatewise:
            if h_masked is None:
                hh4 = h.unsqueeze(0).expand(GATES, B, P)
            elif h_masked.dim() == 2:
                hh4 = h_masked.unsqueeze(0).expand(GATES, B, P)
            else:
                hh4 = h_masked
            z.baddbmm_(hh4, W4hT)
        else:
            z.addmm_(h if h_masked is None else h_masked, WhhT)
        if fused:
            if WhrT is None:
                triton_cell.forward_step(
                    z, gatewise, codes, y_only, c, Cs[ho], h, Hs[ho], keep_rows[t] if masked else None,
                    Os[t] if masked else None, prev_out if masked else None, zero_out,
                    h_masks=mh_rows, h_masked=h_masked if fold_mask else None,
                )
                premasked = fold_mask
                if masked:
                    prev_out = Os[t]
                continue
            # projected: the kernel writes r = o act(c'), then h' = r W_hr^T
            triton_cell.forward_step(
                z, gatewise, codes, y_only, c, Cs[ho], h, Rs[t], keep_rows[t] if masked else None, None, None,
                zero_out, projected=True,
            )
            h_new = htmp if masked else Hs[ho]
            _project(Rs[t], WhrT, zero_bias, h_new)
            if masked:
                torch.where(kbs[t], h_new, h, out=Hs[ho])
                torch.where(kbs[t], h_new, zero if zero_out else prev_out, out=Os[t])
                prev_out = Os[t]
            continue
        if y_only:
            _apply_inplace(ract, sig_l[t])
            _apply_inplace(act, cand_l[t])
            i, f, o, g = i_l[t], f_l[t], o_l[t], cand_l[t]
        else:
            a_sig.copy_(ract.fn(sig_l[t]))
            a_g.copy_(act.fn(cand_l[t]))
            i, f, o, g = a_i, a_f, a_o, a_g
        partial = masked and not per_step[t]
        cnew = ctmp if partial else Cs[ho]
        torch.mul(f, c, out=cnew)
        cnew.addcmul_(i, g)
        if tanh_cell:
            torch.tanh(cnew, out=tc)
            ac = tc
        else:
            ac = act_fn(cnew)
        hnew = htmp if partial else Hs[ho]
        if WhrT is not None:
            torch.mul(o, ac, out=Rs[t])
            _project(Rs[t], WhrT, zero_bias, hnew)
        else:
            torch.mul(o, ac, out=hnew)
        if partial:
            # selections, not products with the mask: a masked row may hold inf (an exponential activation
            # of padding), and inf * 0 would be nan
            torch.where(kbs[t], ctmp, c, out=Cs[ho])
            torch.where(kbs[t], htmp, h, out=Hs[ho])
            if R is not None:
                torch.where(kbs[t], Rs[t], zero, out=Rs[t])
            if zero_out:
                torch.where(kbs[t], htmp, zero, out=Os[t])
            else:
                torch.where(kbs[t], htmp, prev_out, out=Os[t])
                prev_out = Os[t]
        elif masked:
            Os[t].copy_(hnew)
            prev_out = Os[t]

    last = 0 if reverse else T
    out = Obuf if masked else (Hp[:T] if reverse else Hp[1:])
    return out, Hp[last], Cp[last], x, Wih, Whh, w_hr, mx, mh, step_mask, G, Hp, Cp, R, perm


def _backward_body(
    cfg, meta, patterns, needs, x, Wih, Whh, w_hr, mx, mh, step_mask, G, Hp, Cp, R, perm, dout, dhT, dcT
):
    """The backward of :class:`_FastLSTM`: (dx, dh_0, dc_0, dW_ih, dW_hh, db, dW_hr), None where not
    needed. Writes the gate gradients over ``G``."""
    act, ract, reverse, zero_out = cfg
    T, B, Fdim, H, P, gatewise, masked, y_only = meta
    dt = x.dtype
    z_l, sig_l, cand_l, i_l, f_l, o_l = _gate_views(G, gatewise, H)
    Cs = Cp.unbind(0)
    douts = dout.unbind(0)
    dh = dhT.clone()
    dc = dcT.clone()
    proj = w_hr is not None
    if proj:
        DH = x.new_empty(T, B, P)
        DHs = DH.unbind(0)
    if masked:
        per_step, none_step = patterns
        kbs = step_mask.unsqueeze(-1).unbind(0)
        zero = x.new_zeros(())
        kf = step_mask.unsqueeze(-1).to(dt)
        kfs = kf.unbind(0)
        nkfs = (1.0 - kf).unbind(0)
        carry = None if zero_out else x.new_zeros(B, P)
    if gatewise:
        D3 = x.new_empty(3, B, H)
        d_i, d_f, d_o = D3[0], D3[1], D3[2]
        W4h = Whh.view(GATES, H, P)
    else:
        D3 = x.new_empty(B, 3 * H)
        d_i, d_f, d_o = D3[:, :H], D3[:, H : 2 * H], D3[:, 2 * H :]
    dg = x.new_empty(B, H)
    dct = x.new_empty(B, H)
    tanh_cell = act.fn is torch.tanh
    fused = triton_cell.accepts(x, act.fn, ract.fn)
    if fused:
        codes = triton_cell.codes(act.fn, ract.fn)
        douts = dout.contiguous().unbind(0)
        keep_rows = step_mask.contiguous().view(torch.uint8).unbind(0) if masked else ()
        dh_pass_rows = x.new_empty(B, P) if masked else None
        dr_rows = x.new_empty(B, H) if proj else None
        mh_rows = None if mh is None else mh.contiguous()

    order = range(T) if reverse else range(T - 1, -1, -1)
    for t in order:
        hi, ho = (t + 1, t) if reverse else (t, t + 1)
        gout = douts[t]
        dh_pass = dc_pass = None
        if masked and none_step[t]:
            if carry is not None:
                carry = gout + carry
            z_l[t].zero_()
            if proj:
                DHs[t].zero_()
            continue
        if fused:
            if dr_rows is None:  # no projection: dc and carry are updated in place
                triton_cell.backward_step(
                    z_l[t], gatewise, codes, y_only, Cs[ho], Cs[hi], gout, dh, dc, dh_pass_rows,
                    carry if masked else None, keep_rows[t] if masked else None, zero_out,
                )
            else:
                keep = keep_rows[t] if masked else None
                triton_cell.projected_backward_prelude(
                    gout, dh, DHs[t], dh_pass_rows, carry if masked else None, keep, zero_out
                )
                torch.mm(DHs[t], w_hr, out=dr_rows)
                triton_cell.backward_step(
                    z_l[t], gatewise, codes, y_only, Cs[ho], Cs[hi], dr_rows, None, dc, None, None, keep,
                    zero_out, projected=True,
                )
            dh_pass = dh_pass_rows
        else:
            if masked:
                if carry is not None:
                    gout = gout + carry
                if per_step[t]:
                    if carry is not None:
                        carry = torch.zeros_like(carry)
                    dh_new = dh.add_(gout)
                    dc_new = dc
                else:
                    k, nk = kfs[t], nkfs[t]
                    if carry is not None:
                        carry = gout * nk
                    dh_new = torch.addcmul(gout * k, dh, k)
                    dh_pass = dh.mul_(nk)
                    dc_new = dc * k
                    dc_pass = dc.mul_(nk)
            else:
                dh_new = dh.add_(gout)
                dc_new = dc
            if proj:
                DHs[t].copy_(dh_new)
                dr = torch.mm(dh_new, w_hr)
            else:
                dr = dh_new
            cnew, cprev = Cs[ho], Cs[hi]
            if y_only:
                i, f, o, g = i_l[t], f_l[t], o_l[t], cand_l[t]
                ysig, yg = sig_l[t], cand_l[t]
            else:
                xsig, xg = sig_l[t], cand_l[t]
                ysig, yg = ract.fn(xsig), act.fn(xg)
                if gatewise:
                    i, f, o = ysig[0], ysig[1], ysig[2]
                else:
                    i, f, o = ysig[:, :H], ysig[:, H : 2 * H], ysig[:, 2 * H :]
                g = yg
            ac = torch.tanh(cnew) if tanh_cell else act.fn(cnew)
            torch.mul(dr, ac, out=d_o)
            dac = act.grad(dr * o, None if act.y_only else cnew, ac)
            torch.add(dac, dc_new, out=dct)
            torch.mul(dct, g, out=d_i)
            torch.mul(dct, cprev, out=d_f)
            torch.mul(dct, i, out=dg)
            dc = torch.mul(dct, f)
            if dc_pass is not None:  # masked rows take dc_pass alone (see the forward on inf * 0)
                torch.where(kbs[t], dc, dc_pass, out=dc)
            # gate pre-activation gradients, written over the saved gates
            if y_only:
                if ract.grad_out is not None:
                    ract.grad_out(D3, ysig, ysig)
                else:
                    ysig.copy_(ract.grad(D3, None, ysig))
                if act.grad_out is not None:
                    act.grad_out(dg, yg, yg)
                else:
                    yg.copy_(act.grad(dg, None, yg))
            else:
                sig_l[t].copy_(ract.grad(D3, None if ract.y_only else xsig, ysig))
                cand_l[t].copy_(act.grad(dg, None if act.y_only else xg, yg))
            if dc_pass is not None:
                torch.where(kbs[t], z_l[t], zero, out=z_l[t])
        dz = z_l[t]
        if gatewise and fused:
            dh = triton_cell.combine_gate_products(torch.bmm(dz, W4h), mh_rows, dh_pass, x.new_empty(B, P))
        elif gatewise:
            dh4 = torch.bmm(dz, W4h)
            if mh is not None and mh.dim() == 3:
                dh4.mul_(mh)
            dh = dh4.sum(0)
            if mh is not None and mh.dim() == 2:
                dh.mul_(mh)
            if dh_pass is not None:
                dh.add_(dh_pass)
        elif mh is None:  # one kernel fewer a step than a product and then a sum
            dh = torch.mm(dz, Whh) if dh_pass is None else torch.addmm(dh_pass, dz, Whh)
        else:
            dh = torch.mm(dz, Whh)
            dh = dh.mul_(mh) if dh_pass is None else torch.addcmul(dh_pass, dh, mh)

    Hprev = Hp[1:] if reverse else Hp[:T]
    dx = dwih = dwhh = db = dwhr = None
    if not gatewise:
        dZ = G.view(T * B, 4 * H)
        if needs[4]:
            Xm = x if mx is None else x * mx
            dwih = torch.mm(dZ.t(), Xm.reshape(T * B, Fdim)).index_select(0, perm)
        if needs[5]:
            Hm = Hprev if mh is None else Hprev * mh
            dwhh = torch.mm(dZ.t(), Hm.reshape(T * B, P)).index_select(0, perm)
        if needs[6] or needs[7]:
            db = dZ.sum(0).index_select(0, perm)
        if needs[1]:
            dx = torch.mm(dZ, Wih).view(T, B, Fdim)
            if mx is not None:
                dx.mul_(mx)
    else:
        dZ = G.view(GATES, T * B, H)
        if needs[4]:
            dwih = per_gate_weight_grad(dZ, x, mx).index_select(0, perm)
        if needs[5]:
            dwhh = per_gate_weight_grad(dZ, Hprev, mh).index_select(0, perm)
        if needs[6] or needs[7]:
            db = dZ.sum(1).reshape(4 * H).index_select(0, perm)
        if needs[1]:
            dx4 = torch.bmm(dZ, Wih.view(GATES, H, Fdim))
            if mx is not None and mx.dim() == 3:
                dx4 = dx4.view(GATES, T, B, Fdim).mul_(mx.unsqueeze(1))
                dx = dx4.sum(0)
            else:
                dx = dx4.sum(0).view(T, B, Fdim)
                if mx is not None:
                    dx.mul_(mx)
    if proj and needs[8]:
        dwhr = torch.mm(DH.view(T * B, P).t(), R.view(T * B, H))
    return dx, dh, dc, dwih, dwhh, db, dwhr


def reference_backward(
    activations: tuple[Callable, Callable], args: FunctionArguments, grads: tuple[Tensor, Tensor, Tensor]
) -> tuple:
    """The backward result of the fast and native autograd Functions (see :func:`backward_outputs`) for
    the call ``args`` (:func:`function_arguments`), computed through the reference loop so that autograd
    records it: for a backward with ``create_graph=True`` (second derivatives, gradient penalties), where
    the hand-written backward, whose own operations are not differentiable, cannot serve."""
    cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask = args
    run = DirectionRun(*activations, step_mask, bool(cfg[2]), bool(cfg[3]), mx, mh)
    with torch.autocast(device_type=x.device.type, enabled=False):  # in x's dtype, as the forward
        weights = DirectionWeights(w_ih, w_hh, b_ih, b_hh, w_hr)
        found = differentiable_gradients(x, h0, c0, weights, run, grads)
    return (None, *found[:8], None, None, None)  # x, h0, c0 and the five weights of DirectionWeights


def _forward_results(cfg, patterns, args: tuple) -> tuple:
    """:func:`_forward_body` on ``args`` (x, h0, ..., step_mask), replayed from a CUDA graph where usable."""
    body = functools.partial(_forward_body, cfg, patterns)
    return cuda_graphs.run(("fast forward", cfg), body, args) if cuda_graphs.usable(args[0]) else body(*args)


class _FastLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask):  # noqa: N805
        T, B, Fdim = x.shape
        patterns = _step_patterns(step_mask, T, capturable=_capturable(x))
        args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask)
        results = _forward_results(cfg, patterns, args)
        out, h_last, c_last = results[:3]
        H, P = c0.shape[-1], h0.shape[-1]
        gatewise = (mx is not None and mx.dim() == 3) or (mh is not None and mh.dim() == 3)
        ctx.cfg, ctx.patterns = cfg, patterns
        ctx.meta = (T, B, Fdim, H, P, gatewise, step_mask is not None, cfg[0].y_only and cfg[1].y_only)
        # the record for the backward, then the arguments it lacks (for a backward that reruns the forward;
        # the record's per-gate dropout masks are in the internal gate order)
        ctx.save_for_backward(*results[3:], h0, c0, w_ih, w_hh, b_ih, b_hh, mx, mh)
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return out, h_last, c_last

    @staticmethod
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        saved = ctx.saved_tensors
        record, (h0, c0, w_ih, w_hh, b_ih, b_hh, mx, mh) = saved[:12], saved[12:]
        x, w_hr, step_mask = record[0], record[3], record[6]
        args = (ctx.cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, step_mask)
        if torch.is_grad_enabled():  # create_graph=True: gradients autograd can differentiate again
            return reference_backward((ctx.cfg[0].fn, ctx.cfg[1].fn), args, (dout, dhT, dcT))
        if getattr(ctx, "consumed", False):
            # an earlier backward wrote the gate gradients over the saved gates: run the forward again
            # (retain_graph=True; the same numbers, the same kernels)
            with torch.autocast(device_type=x.device.type, enabled=False):
                record = _forward_results(ctx.cfg, ctx.patterns, args[1:])[3:]
        ctx.consumed = True
        # the gate gradients go over the gates through .data: a bumped version counter would make the next
        # backward's unpacking fail before it sees the gates were used up and runs the forward again
        body_args = (*record[:7], record[7].data, *record[8:], dout, dhT, dcT)
        needs = ctx.needs_input_grad
        body = functools.partial(_backward_body, ctx.cfg, ctx.meta, ctx.patterns, needs)
        if cuda_graphs.usable(dout):
            grads = cuda_graphs.run(("fast backward", ctx.cfg, ctx.meta, needs), body, body_args)
        else:
            grads = body(*body_args)
        return backward_outputs(needs, ctx.has_bias, *grads)


@opaque_to_compile
def run_direction_fast(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`~unilstm.kernels.reference.run_direction_reference` (see the module
    docstring for what differs: speed)."""
    device_type = x.device.type
    if is_variant(weights, run):  # (a body of its own: the standard cell's stays as tuned)
        mask = None if run.step_mask is None else run.step_mask.to(dtype=torch.bool)
        patterns = _step_patterns(mask, x.shape[0], capturable=_capturable(x))
        with torch.autocast(device_type=device_type, enabled=False):
            return fast_variants.run_direction_variants(x, h0, c0, weights, run, patterns)
    act, ract = act_entry(run.activation), act_entry(run.recurrent_activation)
    cfg = (act, ract, bool(run.reverse), bool(run.zero_masked_output))
    args = function_arguments(cfg, x, h0, c0, weights, run)
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            return _FastLSTM.apply(*args)
    return _FastLSTM.apply(*args)
