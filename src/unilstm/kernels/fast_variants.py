# ruff: noqa: N803, N806  (T, B, H, P, ... are the maths names of the module docstring)
"""The fast kernel's cell variants: every equation of :mod:`unilstm.spec` with a hand-written backward.

:func:`run_direction_variants` computes exactly what
:func:`~unilstm.kernels.reference.run_direction_reference` computes for a run with any cell variant
(:func:`~unilstm.kernels.reference.is_variant`), with every option of the standard fast kernel (masks with
gaps in both modes, reverse, projection, shared or per-gate dropout masks, the four floating dtypes), as a
:class:`torch.autograd.Function`. The standard cell stays on :mod:`~unilstm.kernels.fast`'s tuned body, so a
run without variants pays for none of this. Gate blocks keep torch's order [i, f, g, o] here.

Forward, per step t (B rows; ``a_t`` for all steps at once before the loop)::

    a_t = LN_ih(gate_projection(x_t, W_ih, m_x)) + b_ih + b_hh,  a_t,f += forget_bias        (B, 4H)
    z = a_t + LN_hh(gate_projection(h, W_hh, m_h));  z_i += p_i c;  z_f += p_f c              (B, 4H)
    i, f, g = sigma(clip z_i), 1 - i or sigma(clip z_f), act(clip z_g)                         (B, H)
    k = f c + i g  (saved: the cell candidate before its clip),  c~ = clip(k, cell_clip)
    z_o += p_o c~;  o = sigma(clip z_o);  n = LN_c(c~) or c~;  r = o g_out(n)                 (B, H)
    h~ = clip(r W_hr^T, proj_clip) or r;  h' = d_h h + (1 - d_h) h~;  c' = d_c c + (1 - d_c) c~

It saves the gate pre-activations before their clips Z (T, B, 4H), the candidates k (T, B, H), r (T, B, H)
and r W_hr^T (T, B, P) where projected and clipped, the inputs (the normalised cell for LN_c), means and
reciprocal deviations of the three layer normalisations, and the states. The backward first computes, for
all steps at once, every factor that depends on this record alone (the activations and their derivatives,
the clips' masks); its loop over time then runs only the recurrence of dh and dc.

Backward, per step in reverse processing order, from dh' and dc' (the masking as in the standard kernel)::

    dh~ = (1 - d_h) dh',  dc~ = (1 - d_c) dc',  dr = [|r W_hr^T| <= proj_clip] dh~ W_hr
    do = dr g_out(n),  dn = g_out'(n) o dr,  dc~ += LN_c'(dn),  dz_o = sigma'(z_o) do [|z_o| <= gate_clip]
    dc~ += p_o dz_o;  dk = [|k| <= cell_clip] dc~
    di, df, dg = dk g, dk c, dk i;  dc = f dk + d_c dc' + p_i dz_i + p_f dz_f
    coupled gates: di -= df and dz_f = 0;  dz_* = f'(z_*) d* [|z_*| <= gate_clip]
    dh = LN_hh'(dz) (W_hh, m_h)^T + d_h dh'

with ``LN'(dy) = rstd (dy w - mean(dy w) - v^ mean(dy w v^))`` (v^ the normalised values, w the gain; gain
gradient sum(dy v^), bias gradient sum(dy)). The weight gradients are one product each over all steps:
``dW_ih = LN_ih'(dZ)^T (X m_x)``, ``dW_hh = LN_hh'(dZ)^T (H_prev m_h)``, ``dW_hr = dH~^T R``; the peephole
gradients are ``sum dz_i c``, ``sum dz_f c``, ``sum dz_o c~``. The layer normalisations and their backward
are torch's own kernels (``native_layer_norm`` and its backward, what autograd runs for ``F.layer_norm``),
the gains' and biases' gradients summed over all steps in one call each. Clips pass the gradient where the
value lies within the bounds, bounds included (torch's clamp). A masked row's gradients are selected
with ``where``, never multiplied by the mask, and its saved values are zeroed where they enter the sums over
all steps: an inf there (an exponential activation of padding) cannot become nan.

On CUDA the bodies run through :mod:`~unilstm.kernels.cuda_graphs` like the standard ones (capturable: the
step patterns are all "partly masked"), and where :func:`triton_cell.accepts_variants
<unilstm.kernels.triton_cell.accepts_variants>` says so each step's elementwise part (everything between
the GEMMs, layer normalisations included) is one Triton kernel forward and one backward
(:class:`~unilstm.kernels.triton_cell.VariantSteps`), which writes the same record; elsewhere, and on the
CPU, these torch ops. A backward that autograd records (``create_graph=True``) goes through the reference
loop (:func:`variant_reference_backward`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import cuda_graphs, triton_cell
from .fast_activations import act_entry
from .reference import GATES, DirectionRun, DirectionWeights, differentiable_gradients, gate_projection

__all__ = ["VariantConfig", "accepts", "run_direction_variants", "variant_reference_backward"]


@dataclass(frozen=True)
class VariantConfig:
    """The non-tensor part of a variant run (hashable: a CUDA-graph key). ``act``, ``ract`` and ``out_act``
    are :mod:`~unilstm.kernels.fast_activations` entries (``fn``, ``grad``); the zoneout weights are the
    inference weights, unused where the call passes tensors of draws."""

    act: Any
    ract: Any
    out_act: Any
    reverse: bool
    zero_out: bool
    forget_bias: float
    gate_clip: float | None
    cell_clip: float | None
    proj_clip: float | None
    coupled: bool
    zoneout_hidden: float
    zoneout_cell: float
    eps: float


def accepts(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether :func:`run_direction_variants` computes the variants of this run (the activation and
    recurrent activation are the caller's check): a named output activation, zoneout draws of shape
    (T, B, P) and (T, B, H)."""
    if run.output_activation is not None and act_entry(run.output_activation) is None:
        return False
    H, P = weights.w_hh.shape[0] // GATES, weights.w_hh.shape[1]
    for rate, size in ((run.zoneout_hidden, P), (run.zoneout_cell, H)):
        if isinstance(rate, Tensor) and tuple(rate.shape) != (x.shape[0], x.shape[1], size):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Pieces of the step and their derivatives
# ---------------------------------------------------------------------------------------------------------


def _clip(v: Tensor, bound: float | None) -> Tensor:
    return v if bound is None else v.clamp(-bound, bound)


def _clip_grad(g: Tensor, v: Tensor, bound: float | None) -> Tensor:
    """g where -bound <= v <= bound, else 0 (torch's clamp backward); a selection, never a product."""
    if bound is None:
        return g
    return torch.where((v >= -bound) & (v <= bound), g, g.new_zeros(()))


_ln_backward = torch.ops.aten.native_layer_norm_backward.default


def _values_grad(dz: Tensor, weight: Tensor, mask: Tensor | None) -> Tensor:
    """The gradient of :func:`~unilstm.kernels.reference.gate_projection` w.r.t. its values: dz (..., B, 4H)
    -> (..., B, F), with no, a shared (B, F) or a per-gate (4, B, F) mask."""
    if mask is None:
        return dz @ weight
    if mask.dim() == 2:
        return (dz @ weight) * mask
    H = weight.shape[0] // GATES
    total = (dz[..., :H] @ weight[:H]) * mask[0]
    for k in range(1, GATES):
        total = total + (dz[..., k * H : (k + 1) * H] @ weight[k * H : (k + 1) * H]) * mask[k]
    return total


def _weight_grad(dz: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """The gradient of gate_projection w.r.t. its weight over all steps: dz (T, B, 4H), values (T, B, F) ->
    (4H, F) = dz^T (values * mask), per gate block with a per-gate mask."""
    width = values.shape[-1]
    rows = dz.reshape(-1, dz.shape[-1])
    if mask is None or mask.dim() == 2:
        shared = values if mask is None else values * mask
        return rows.t() @ shared.reshape(-1, width)
    H = dz.shape[-1] // GATES
    return torch.cat([
        rows[:, k * H : (k + 1) * H].t() @ (values * mask[k]).reshape(-1, width) for k in range(GATES)
    ])


def _zoneout_weight(cfg_weight: float, draws: Tensor | None, t: int) -> Tensor | float:
    return cfg_weight if draws is None else draws[t]


def _step_gates(cfg: VariantConfig, z: Tensor, H: int) -> tuple[Tensor, ...]:
    """(z clipped, i, f, g, o) from the pre-activations z (B, 4H), z_o's peephole term included."""
    zc = _clip(z, cfg.gate_clip)
    sigma = cfg.ract.fn
    i = sigma(zc[:, :H])
    f = 1.0 - i if cfg.coupled else sigma(zc[:, H : 2 * H])
    return zc, i, f, cfg.act.fn(zc[:, 2 * H : 3 * H]), sigma(zc[:, 3 * H :])


# ---------------------------------------------------------------------------------------------------------
# The forward and backward bodies (CUDA-graph capturable: no host reads of device values)
# ---------------------------------------------------------------------------------------------------------


def _forward_body(cfg, patterns, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, lwi, lbi, lwh,
                  lbh, lwc, lbc, mx, mh, step_mask, zh, zc):
    """(out, h_T, c_T, then the record of the backward: Z, K, R, RP, then the three layer normalisations'
    inputs (all steps' input projections, the recurrent projections, or the normalised cell N for the cell),
    means and reciprocal deviations, then the H and C states)."""
    T, B, _ = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    ln, proj = lwi is not None, w_hr is not None
    bias = x.new_zeros(4 * H) if b_ih is None and b_hh is None else summed(b_ih, b_hh)
    if cfg.forget_bias != 0.0:
        bias = bias + torch.cat((x.new_zeros(H), x.new_full((H,), cfg.forget_bias), x.new_zeros(2 * H)))
    # (Any: None where the run has no layer normalisation, and then never indexed)
    a_raw: Any = None
    a_mean: Any = None
    a_rstd: Any = None
    RR: Any = None
    r_mean: Any = None
    r_rstd: Any = None
    N: Any = None
    c_mean: Any = None
    c_rstd: Any = None
    if ln:  # torch's own layer_norm kernels (those autograd runs), with the statistics they save
        a_raw = gate_projection(x, w_ih, mx)
        a, a_mean, a_rstd = torch.native_layer_norm(a_raw, (4 * H,), lwi, lbi, cfg.eps)
        a = a + bias
        RR, N = x.new_empty(T, B, 4 * H), x.new_empty(T, B, H)
        r_mean, r_rstd = x.new_empty(T, B, 1), x.new_empty(T, B, 1)
        c_mean, c_rstd = x.new_empty(T, B, 1), x.new_empty(T, B, 1)
    else:
        a = gate_projection(x, w_ih, mx) + bias
    # without layer norm and per-gate masks, a step's pre-activations are one addmm
    direct = not ln and (mh is None or mh.dim() == 2)
    w_hh_t = w_hh.t()
    if peep is not None:
        p_if, p_o = peep[: 2 * H].view(2, H), peep[2 * H :]
    Z = x.new_empty(T, B, 4 * H)
    K = x.new_empty(T, B, H)
    R: Any = x.new_empty(T, B, H) if proj else None
    RP: Any = x.new_empty(T, B, P) if proj and cfg.proj_clip is not None else None
    Hp, Cp = x.new_empty(T + 1, B, P), x.new_empty(T + 1, B, H)
    first = T if cfg.reverse else 0
    Hp[first].copy_(h0)
    Cp[first].copy_(c0)
    masked = step_mask is not None
    if masked:
        per_step, none_step = patterns
        kb = step_mask.unsqueeze(-1)
        Obuf = x.new_empty(T, B, P)
        prev_out = x.new_zeros(B, P)
        zero = x.new_zeros(())
    steps = _fused_steps(cfg, x, H, P, peep, lwh, lbh, lwc, lbc, step_mask, zh, zc, proj)
    if steps is not None and proj and RP is None:
        RP_step = x.new_empty(B, P)
    order = range(T - 1, -1, -1) if cfg.reverse else range(T)
    for t in order:
        hi, ho = (t + 1, t) if cfg.reverse else (t, t + 1)
        h, c = Hp[hi], Cp[hi]
        if masked and none_step[t]:  # every row keeps its state; the record's rows are never read
            Hp[ho].copy_(h)
            Cp[ho].copy_(c)
            for saved in (Z, K, R, RP, RR, r_mean, r_rstd, N, c_mean, c_rstd):
                if saved is not None:
                    saved[t].zero_()
            Obuf[t].copy_(zero if cfg.zero_out else prev_out)
            prev_out = Obuf[t]
            continue
        z = Z[t]
        if direct:
            torch.addmm(a[t], h if mh is None else h * mh, w_hh_t, out=z)
        elif ln:
            RR[t] = gate_projection(h, w_hh, mh)
            if steps is None:  # (the fused step normalises RR[t] itself)
                r, r_mean[t], r_rstd[t] = torch.native_layer_norm(RR[t], (4 * H,), lwh, lbh, cfg.eps)
                torch.add(a[t], r, out=z)
        else:
            torch.add(a[t], gate_projection(h, w_hh, mh), out=z)
        if steps is not None:  # the rest of the step: one Triton kernel (two around a projection)
            out_t = Obuf[t] if masked else None
            prev = prev_out if masked else None
            steps.forward(
                t, z, c, K[t], Cp[ho], h, Hp[ho], out_t, prev, R[t] if proj else None,
                *((a[t], RR[t], (r_mean[t], r_rstd[t]), N[t], (c_mean[t], c_rstd[t])) if ln else ()),
            )
            if proj:
                rp = RP[t] if RP is not None else RP_step
                torch.mm(R[t], w_hr.t(), out=rp)
                steps.project(t, rp, h, Hp[ho], out_t, prev)
            if masked:
                prev_out = Obuf[t]
            continue
        if peep is not None:
            z[:, : 2 * H].view(B, 2, H).addcmul_(p_if, c.unsqueeze(1))
        zcl = _clip(z[:, : 3 * H], cfg.gate_clip)
        if cfg.coupled:
            i = cfg.ract.fn(zcl[:, :H])
            f = 1.0 - i
        else:
            i_f = cfg.ract.fn(zcl[:, : 2 * H])
            i, f = i_f[:, :H], i_f[:, H:]
        k = torch.addcmul(f * c, i, cfg.act.fn(zcl[:, 2 * H :]), out=K[t])
        c_cand = _clip(k, cfg.cell_clip)
        if peep is not None:
            z[:, 3 * H :].addcmul_(p_o, c_cand)
        o = cfg.ract.fn(_clip(z[:, 3 * H :], cfg.gate_clip))
        if ln:
            N[t], c_mean[t], c_rstd[t] = torch.native_layer_norm(c_cand, (H,), lwc, lbc, cfg.eps)
            n = N[t]
        else:
            n = c_cand
        h_cand = o * cfg.out_act.fn(n)
        partial = masked and not per_step[t]
        if proj:
            if partial:  # masked rows out of dW_hr = dH~^T R (they may hold inf)
                torch.where(kb[t], h_cand, zero, out=R[t])
            else:
                R[t].copy_(h_cand)
            h_cand = h_cand @ w_hr.t()
            if RP is not None:
                RP[t].copy_(h_cand)
                h_cand = _clip(h_cand, cfg.proj_clip)
        # zoneout: d prev + (1 - d) new = lerp(new, prev, d)
        h_new = h_cand if zh is None and cfg.zoneout_hidden == 0.0 else torch.lerp(
            h_cand, h, _zoneout_weight(cfg.zoneout_hidden, zh, t)
        )
        c_new = c_cand if zc is None and cfg.zoneout_cell == 0.0 else torch.lerp(
            c_cand, c, _zoneout_weight(cfg.zoneout_cell, zc, t)
        )
        if partial:
            torch.where(kb[t], h_new, h, out=Hp[ho])
            torch.where(kb[t], c_new, c, out=Cp[ho])
            torch.where(kb[t], h_new, zero if cfg.zero_out else prev_out, out=Obuf[t])
            # masked rows out of the sums over all steps (dp_o, the cell normalisation's gain): an inf there
            # (an exponential activation of padding) times a zero gradient would be nan
            for saved in (K, N, c_mean, c_rstd):
                if saved is not None:
                    torch.where(kb[t], saved[t], zero, out=saved[t])
        else:
            Hp[ho].copy_(h_new)
            Cp[ho].copy_(c_new)
            if masked:
                Obuf[t].copy_(h_new)
        if masked:
            prev_out = Obuf[t]
    last = 0 if cfg.reverse else T
    out = Obuf if masked else (Hp[:T] if cfg.reverse else Hp[1:])
    return (
        out, Hp[last], Cp[last], Z, K, R, RP, a_raw, a_mean, a_rstd, RR, r_mean, r_rstd, N, c_mean, c_rstd,
        Hp, Cp,
    )


def _fused_steps(cfg, x, H, P, peep, lwh, lbh, lwc, lbc, step_mask, zh, zc, proj):
    """The Triton steps of :mod:`~unilstm.kernels.triton_cell` where they serve this call, else None."""
    ln = lwh is not None
    if not triton_cell.accepts_variants(x, cfg, ln, H):
        return None
    return triton_cell.VariantSteps(
        cfg, x, H, P, peep, (lwh, lbh) if ln else None, (lwc, lbc) if ln else None, step_mask, zh, zc, proj
    )


def summed(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """b_ih + b_hh, or the one given (not both None)."""
    if b_ih is None or b_hh is None:
        found = b_hh if b_ih is None else b_ih
        assert found is not None
        return found
    return b_ih + b_hh


def _derivative(act, x: Tensor, y: Tensor) -> Tensor:
    """f'(x) where y = f(x): the entry's ``grad`` of ones (every derivative there is linear in g)."""
    return act.grad(torch.ones_like(y), None if act.y_only else x, y)


def _within(v: Tensor, bound: float | None) -> Tensor | None:
    """Where -bound <= v <= bound (torch's clamp passes the gradient there, bounds included), or None."""
    return None if bound is None else (v >= -bound) & (v <= bound)


def _selected(v: Tensor, where: Tensor | None) -> Tensor:
    return v if where is None else torch.where(where, v, v.new_zeros(()))


def _step_factors(cfg, Z, K, Cprev, N, peep, H):
    """What the backward's steps multiply their gradients by, for every step at once (it depends on the
    forward's record alone): (Fo, On, Pc, Fz, Dc, kin) with

    Fo = g_out(n) sigma'(z_o) [z_o in clip]: dz_o = dr Fo;  On = o g_out'(n): dn = dr On;
    Pc = Fo p_o: the peephole's share of dc~ (None without peepholes);
    Fz (T, B, 3, H) = [(g, or g - c with coupled gates) sigma'(z_i), c sigma'(z_f) (0 coupled), i act'(z_g)],
    each within its clip: dz_{i,f,g} = dk Fz;  Dc = f + p_i Fz_i + p_f Fz_f: dc_{t-1} = dk Dc (+ zoneout);
    kin: where the candidate lies within cell_clip (None without one); and c~, the clipped candidates."""
    zcl = _clip(Z, cfg.gate_clip)
    inside = _within(Z, cfg.gate_clip)
    z_i, z_f, z_g, z_o = (zcl[..., k * H : (k + 1) * H] for k in range(GATES))
    sigma = cfg.ract
    i = sigma.fn(z_i)
    S_i = _derivative(sigma, z_i, i)
    if cfg.coupled:
        f = 1.0 - i
        S_f = torch.zeros_like(i)
    else:
        f = sigma.fn(z_f)
        S_f = _derivative(sigma, z_f, f)
    g = cfg.act.fn(z_g)
    S_g = _derivative(cfg.act, z_g, g)
    o = sigma.fn(z_o)
    S_o = _derivative(sigma, z_o, o)
    if inside is not None:
        S_i, S_f, S_g, S_o = (_selected(v, inside[..., k * H : (k + 1) * H])
                              for k, v in enumerate((S_i, S_f, S_g, S_o)))
    c_cand = _clip(K, cfg.cell_clip)
    n = N if N is not None else c_cand
    gn = cfg.out_act.fn(n)
    Fo = gn * S_o
    On = o * _derivative(cfg.out_act, n, gn)
    Fz = torch.stack(((g - Cprev if cfg.coupled else g) * S_i, Cprev * S_f, i * S_g), dim=2)
    Dc = f
    Pc = None
    if peep is not None:
        p_i, p_f, p_o = peep[:H], peep[H : 2 * H], peep[2 * H :]
        Dc = f + p_i * Fz[:, :, 0] + p_f * Fz[:, :, 1]
        Pc = Fo * p_o
    return Fo, On, Pc, Fz, Dc, _within(K, cfg.cell_clip), c_cand


def _backward_body(cfg, patterns, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, lwi, lbi,
                   lwh, lbh, lwc, lbc, mx, mh, step_mask, zh, zc, Z, K, R, RP, a_raw, a_mean, a_rstd, RR,
                   r_mean, r_rstd, N, c_mean, c_rstd, Hp, Cp, dout, dhT, dcT):
    """The gradients (x, h0, c0, w_ih, w_hh, bias (one for both), w_hr, peephole, then the six layer-norm
    tensors), None where the tensor is absent. The step's factors that depend on the record alone are
    computed for all steps first (:func:`_step_factors`); the loop runs only the recurrence."""
    T, B, _ = x.shape
    H, P = c0.shape[-1], h0.shape[-1]
    ln, proj = lwi is not None, w_hr is not None
    Hprev = Hp[1:] if cfg.reverse else Hp[:T]
    Cprev = Cp[1:] if cfg.reverse else Cp[:T]
    steps = _fused_steps(cfg, x, H, P, peep, lwh, lbh, lwc, lbc, step_mask, zh, zc, proj)
    if steps is not None:  # the fused steps compute their factors from the record themselves
        CC = _clip(K, cfg.cell_clip)
        On: Any = None
        Pc: Any = None
        rest, dr_step = x.new_empty(B, P), (x.new_empty(B, H) if proj else None)
    else:
        Fo, On, Pc, Fz, Dc, kin, CC = _step_factors(cfg, Z, K, Cprev, N, peep, H)
    cell_only, input_only = (True, False, False), (False, True, True)
    if Pc is not None and not ln:  # dc~ = dr (On + Pc) in one product
        On, Pc = On + Pc, None
    pin = _within(RP, cfg.proj_clip) if RP is not None else None
    DZ = x.new_empty(T, B, 4 * H)
    DR = x.new_empty(T, B, 4 * H) if ln else DZ  # the recurrent projection's gradient (before LN_hh)
    DN: Any = x.new_empty(T, B, H) if ln else None  # the cell normalisation's output gradient
    DH: Any = x.new_empty(T, B, P) if proj else None
    dh, dc = dhT.clone(), dcT.clone()
    masked = step_mask is not None
    carry = None
    if masked:
        per_step, none_step = patterns
        kb = step_mask.unsqueeze(-1)
        kf = kb.to(x.dtype)
        zero = x.new_zeros(())
        if not cfg.zero_out:
            carry = x.new_zeros(B, P)
    order = range(T) if cfg.reverse else range(T - 1, -1, -1)
    for t in order:
        gout = dout[t]
        if masked and none_step[t]:
            if carry is not None:
                carry = gout + carry
            for grads in (DZ, DR, DN, DH):
                if grads is not None:
                    grads[t].zero_()
            continue
        if steps is not None:  # one Triton kernel (two around the projection's GEMM), then the GEMM of dh
            lns = (N[t], (c_mean[t], c_rstd[t]), RR[t], (r_mean[t], r_rstd[t]), DR[t], DN[t]) if ln else ()
            if proj:
                steps.backward_prelude(t, gout, dh, carry, None if RP is None else RP[t], DH[t], rest)
                torch.mm(DH[t], w_hr, out=dr_step)
                steps.backward(t, Z[t], K[t], Cprev[t], dc, DZ[t], None, None, None, None, dr_step, *lns)
            else:
                steps.backward(t, Z[t], K[t], Cprev[t], dc, DZ[t], gout, dh, carry, rest, None, *lns)
            if mh is None:  # noqa: SIM108 (one product with the sum in it)
                dh = torch.addmm(rest, DR[t], w_hh)
            else:
                dh = _values_grad(DR[t], w_hh, mh).add_(rest)
            continue
        partial = masked and not per_step[t]
        dh_pass: Any = None
        dc_pass: Any = None
        if carry is not None:
            gout = gout + carry
            carry = gout * (1.0 - kf[t]) if partial else torch.zeros_like(carry)
        if partial:
            dh_new, dh_pass = (gout + dh) * kf[t], dh * (1.0 - kf[t])
            dc_new, dc_pass = dc * kf[t], dc * (1.0 - kf[t])
        else:
            dh_new, dc_new = dh + gout, dc
        dh_w = _zoneout_weight(cfg.zoneout_hidden, zh, t)
        dc_w = _zoneout_weight(cfg.zoneout_cell, zc, t)
        h_zoned = zh is not None or dh_w != 0.0
        c_zoned = zc is not None or dc_w != 0.0
        dr = dh_new * (1.0 - dh_w) if h_zoned else dh_new
        if proj:
            dr = _selected(dr, None if pin is None else pin[t])
            DH[t].copy_(dr)
            dr = dr @ w_hr
        dz = DZ[t]
        torch.mul(dr, Fo[t], out=dz[:, 3 * H :])
        if ln:
            dn = dr * On[t]
            if partial:
                dn = torch.where(kb[t], dn, zero)
            DN[t].copy_(dn)
            dk = _ln_backward(dn, CC[t], (H,), c_mean[t], c_rstd[t], lwc, lbc, cell_only)[0]
            if Pc is not None:
                dk = dk.addcmul_(dr, Pc[t])
        else:
            dk = dr * On[t]
        dk = dk.add_(dc_new * (1.0 - dc_w) if c_zoned else dc_new)
        dk = _selected(dk, None if kin is None else kin[t])
        torch.mul(dk.unsqueeze(1), Fz[t], out=dz[:, : 3 * H].view(B, 3, H))
        dc_prev = dk * Dc[t]
        if c_zoned:
            dc_prev = dc_prev.add_(dc_new * dc_w)
        if partial:
            torch.where(kb[t], dz, zero, out=dz)
            dc = torch.where(kb[t], dc_prev, dc_pass)
        else:
            dc = dc_prev
        if ln:
            DR[t] = _ln_backward(dz, RR[t], (4 * H,), r_mean[t], r_rstd[t], lwh, lbh, cell_only)[0]
        dh = _values_grad(DR[t], w_hh, mh)
        if h_zoned:
            dh = dh.add_(dh_new * dh_w)
        if dh_pass is not None:
            dh = dh.add_(dh_pass)

    steps_rows = (0, 1)
    dln: tuple = (None,) * 6
    DA = DZ
    if ln:  # the gains' and biases' gradients summed over all steps by the same kernels
        DA, dlwi, dlbi = _ln_backward(DZ, a_raw, (4 * H,), a_mean, a_rstd, lwi, lbi, (True, True, True))
        dln = (
            dlwi, dlbi, *_ln_backward(DZ, RR, (4 * H,), r_mean, r_rstd, lwh, lbh, input_only)[1:],
            *_ln_backward(DN, CC, (H,), c_mean, c_rstd, lwc, lbc, input_only)[1:],
        )
    dx = _values_grad(DA, w_ih, mx)
    dwih = _weight_grad(DA, x, mx)
    dwhh = _weight_grad(DR, Hprev, mh)
    db = DZ.sum(steps_rows) if b_ih is not None or b_hh is not None else None
    dwhr = DH.reshape(T * B, P).t() @ R.reshape(T * B, H) if proj else None
    dpeep = None
    if peep is not None:
        dpeep = torch.cat((
            (DZ[..., :H] * Cprev).sum(steps_rows), (DZ[..., H : 2 * H] * Cprev).sum(steps_rows),
            (DZ[..., 3 * H :] * CC).sum(steps_rows),
        ))
    return (dx, dh, dc, dwih, dwhh, db, dwhr, dpeep, *dln)


def variant_reference_backward(
    cfg: VariantConfig, args: tuple, grads: tuple[Tensor, Tensor, Tensor]
) -> tuple:
    """The gradients of the tensors ``args`` (x, h0, c0, the twelve DirectionWeights fields in
    ``WEIGHT_FIELDS`` order, m_x, m_h, step mask, zoneout draws of h and c) through the reference loop, which
    autograd records: for a backward with ``create_graph=True`` (second derivatives)."""
    x, h0, c0 = args[:3]
    weights = DirectionWeights(*args[3:15])
    mx, mh, step_mask, zh, zc = args[15:]
    run = DirectionRun(
        cfg.act.fn, cfg.ract.fn, step_mask, cfg.reverse, cfg.zero_out, mx, mh,
        output_activation=cfg.out_act.fn, forget_bias=cfg.forget_bias, gate_clip=cfg.gate_clip,
        cell_clip=cfg.cell_clip, proj_clip=cfg.proj_clip, coupled_gates=cfg.coupled,
        zoneout_hidden=cfg.zoneout_hidden if zh is None else zh,
        zoneout_cell=cfg.zoneout_cell if zc is None else zc, layer_norm_eps=cfg.eps,
    )
    with torch.autocast(device_type=x.device.type, enabled=False):  # in x's dtype, as the forward
        found = differentiable_gradients(x, h0, c0, weights, run, grads)
    return (*found, None, None, None, None, None)


def _through_graphs(key: tuple, body: Callable, args: tuple) -> tuple:
    return cuda_graphs.run(key, body, args) if cuda_graphs.usable(args[0]) else body(*args)


class _FastVariantLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, patterns, *args):  # noqa: N805
        body = functools.partial(_forward_body, cfg, patterns)
        results = _through_graphs(("fast variant forward", cfg), body, args)
        ctx.cfg, ctx.patterns, ctx.n_args = cfg, patterns, len(args)
        ctx.save_for_backward(*args, *results[3:])
        return results[:3]

    @staticmethod
    def backward(ctx, dout, dhT, dcT):  # noqa: N805
        saved = ctx.saved_tensors
        args, record = saved[: ctx.n_args], saved[ctx.n_args :]
        needs = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph=True: gradients autograd can differentiate again
            found = variant_reference_backward(ctx.cfg, args, (dout, dhT, dcT))
            return (None, None, *(g if need else None for g, need in zip(found, needs, strict=True)))
        body = functools.partial(_backward_body, ctx.cfg, ctx.patterns)
        body_args = (*args, *record, dout.contiguous(), dhT, dcT)
        dx, dh, dc, dwih, dwhh, db, dwhr, dpeep, *dln = _through_graphs(
            ("fast variant backward", ctx.cfg), body, body_args
        )
        db_ih = db if needs[5] else None
        db_hh = db if needs[6] else None
        if db_ih is not None and db_hh is not None:
            db_hh = db_ih.clone()
        found = (dx, dh, dc, dwih, dwhh, db_ih, db_hh, dwhr, dpeep, *dln)
        found = tuple(g if need else None for g, need in zip(found, needs, strict=False))
        return (None, None, *found, None, None, None, None, None)


def run_direction_variants(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun, patterns
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as :func:`~unilstm.kernels.reference.run_direction_reference` for a run with cell
    variants; ``patterns`` are the step patterns of the step mask (``fast._step_patterns``). The caller
    checked :func:`accepts` and the activations and switched autocast off."""
    act, ract = act_entry(run.activation), act_entry(run.recurrent_activation)
    out_act = act if run.output_activation is None else act_entry(run.output_activation)
    cfg = VariantConfig(
        act, ract, out_act, bool(run.reverse), bool(run.zero_masked_output), float(run.forget_bias),
        run.gate_clip, run.cell_clip, run.proj_clip, bool(run.coupled_gates),
        0.0 if isinstance(run.zoneout_hidden, Tensor) else float(run.zoneout_hidden),
        0.0 if isinstance(run.zoneout_cell, Tensor) else float(run.zoneout_cell),
        float(run.layer_norm_eps),
    )
    mask = run.step_mask
    if mask is not None:
        mask = mask.to(device=x.device, dtype=torch.bool)

    def draws(value: Tensor | float) -> Tensor | None:
        return value.to(device=x.device, dtype=x.dtype) if isinstance(value, Tensor) else None

    return _FastVariantLSTM.apply(
        cfg, patterns, x, h0, c0, *weights.tensors(), run.input_dropout_mask, run.recurrent_dropout_mask,
        mask, draws(run.zoneout_hidden), draws(run.zoneout_cell),
    )
