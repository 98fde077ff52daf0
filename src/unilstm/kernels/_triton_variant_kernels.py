# ruff: noqa: N803, N806  (kernel arguments are named after the maths of fast_variants' docstring)
"""The Triton kernels of the fused cell-variant steps (:mod:`unilstm.kernels.triton_cell`), imported on first
use with :mod:`~unilstm.kernels._triton_cell_kernels`, whose activations they share.

The cell kernels run one program per (row, block of BLOCK columns) of the (B, H) plane of one step; with
layer normalisation one program holds a whole row (BLOCK >= H), its 4H recurrent pre-activations and its H
cell values, so that the two normalisations' sums are reductions inside the program. Gate blocks are in
torch's order [i, f, g, o] here (as kernels/fast_variants.py): step t's pre-activations live at
``Z + row * 4H + gate * H + column``. The numbers of a run (clip bounds, zoneout inference weights, the
activations' alpha and beta, the layer normalisations' epsilon) are constexpr: a layer compiles its kernels
once, and float64 keeps every digit of them (a Triton float argument would be float32).

The activations, ONNX's parametric ones included, are _triton_cell_kernels' ``_pact`` and ``_pact_grad``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_cell_kernels import INTERPRETED, _c, _div, _pact, _pact_grad


@triton.jit
def _clip(v, ON: tl.constexpr, BOUND: tl.constexpr):
    if ON:
        v = tl.minimum(tl.maximum(v, _c(v, -BOUND)), _c(v, BOUND))
    return v


@triton.jit
def _within(g, v, ON: tl.constexpr, BOUND: tl.constexpr):
    """g where -BOUND <= v <= BOUND (torch's clamp passes the gradient there, bounds included), else 0."""
    if ON:
        g = tl.where((v >= _c(v, -BOUND)) & (v <= _c(v, BOUND)), g, 0.0)
    return g


@triton.jit
def _lerp(start, end, w):
    """torch.lerp(start, end, w), with its two branches: start + w (end - start) below 1/2."""
    diff = end - start
    return tl.where(w < 0.5, start + w * diff, end - diff * (1.0 - w))


@triton.jit
def _zone_weight(W, offs, inside, like, MODE: tl.constexpr, VALUE: tl.constexpr):
    """The zoneout weight of the previous value: step t's 0/1 draws (MODE 2) or the inference weight."""
    if MODE == 2:  # noqa: SIM108 (a conditional expression is not Triton code)
        w = tl.load(W + offs, mask=inside, other=0.0).to(like.dtype)
    else:
        w = _c(like, VALUE)
    return w


@triton.jit
def _rsqrt(v):
    """1 / sqrt(v), correctly rounded steps (Triton's float32 sqrt and / are approximate)."""
    if v.dtype == tl.float32:  # noqa: SIM108 (a conditional expression is not Triton code)
        s = tl.sqrt_rn(v)
    else:
        s = tl.sqrt(v)
    return _div(_c(s, 1.0), s)


@triton.jit
def _count(inside, like):
    """How many columns of the row this program holds (H, as a number of like's dtype)."""
    return tl.sum(tl.where(inside, 1.0, 0.0).to(like.dtype), 0)


@triton.jit
def _ln_plus(A, LW, LB, d, rstd, row, GATE: tl.constexpr, H, cols, inside):
    """z = a_t + LN_hh(rr) for one gate block: d the centred values, rounded where torch stores
    (native_layer_norm's output, then the sum)."""
    storage = A.dtype.element_ty
    w = tl.load(LW + GATE * H + cols, mask=inside, other=0.0).to(d.dtype)
    b = tl.load(LB + GATE * H + cols, mask=inside, other=0.0).to(d.dtype)
    r = (d * rstd * w + b).to(storage).to(d.dtype)
    a = tl.load(A + row * 4 * H + GATE * H + cols, mask=inside, other=0.0).to(d.dtype)
    return (a + r).to(storage).to(d.dtype)


@triton.jit
def _ln_grad_parts(RP, LW, dz, mean, rstd, GATE: tl.constexpr, H, cols, inside):
    """(v, dz w) of one gate block for LN_hh's backward: v the normalised recurrent pre-activations."""
    v = tl.where(inside, (tl.load(RP + GATE * H, mask=inside, other=0.0).to(dz.dtype) - mean) * rstd, 0.0)
    dw = tl.where(inside, dz * tl.load(LW + GATE * H + cols, mask=inside, other=0.0).to(dz.dtype), 0.0)
    return v, dw


@triton.jit
def variant_forward_step(
    Z, A, RR, R_mean, R_rstd, LW_hh, LB_hh, C_prev, H_prev, Peep, Wh, Wc, Keep, LW_c, LB_c,
    K, C_new, H_new, Out, Out_prev, R, N, C_mean, C_rstd, H,
    ACT: tl.constexpr, ACT_A: tl.constexpr, ACT_B: tl.constexpr, RACT: tl.constexpr, RACT_A: tl.constexpr,
    RACT_B: tl.constexpr, OUT: tl.constexpr, OUT_A: tl.constexpr, OUT_B: tl.constexpr, PEEP: tl.constexpr,
    GATE_CLIP: tl.constexpr, GATE_BOUND: tl.constexpr, CELL_CLIP: tl.constexpr, CELL_BOUND: tl.constexpr,
    COUPLED: tl.constexpr, ZONE_H: tl.constexpr, WH: tl.constexpr, ZONE_C: tl.constexpr, WC: tl.constexpr,
    LN: tl.constexpr, EPS: tl.constexpr, MASKED: tl.constexpr, ZERO_OUT: tl.constexpr,
    PROJECTED: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """One forward step of fast_variants' cell from the pre-activations. Without LN, Z holds
    z = a_t + h W_hh^T (bias and forget bias in a_t); with LN, z = A + LN_hh(RR) is formed here (RR the
    recurrent product, R_mean and R_rstd receiving its statistics). Writes the record the backward reads:
    Z (with the peephole terms), K (the candidate before cell_clip), N, C_mean, C_rstd (LN_c); masked
    rows' K, N and statistics are 0. Then c' and h' (zoneout, step mask) or, when PROJECTED, R = o g_out(n)
    (0 in rows not kept) for the caller's projection and :func:`variant_projected_step`."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < H
    compute = tl.float64 if FLOAT64 else tl.float32
    storage = C_new.dtype.element_ty
    zp = Z + row * 4 * H + cols
    hp = row * H + cols
    if MASKED:
        keep = tl.load(Keep + row) != 0
    if LN:  # this program holds the whole row: the 4H values' mean and variance are sums here
        rp = RR + row * 4 * H + cols
        r_i = tl.load(rp, mask=inside, other=0.0).to(compute)
        r_f = tl.load(rp + H, mask=inside, other=0.0).to(compute)
        r_g = tl.load(rp + 2 * H, mask=inside, other=0.0).to(compute)
        r_o = tl.load(rp + 3 * H, mask=inside, other=0.0).to(compute)
        width = 4.0 * _count(inside, r_i)
        mean = _div(tl.sum(r_i, 0) + tl.sum(r_f, 0) + tl.sum(r_g, 0) + tl.sum(r_o, 0), width)
        r_i, r_f = tl.where(inside, r_i - mean, 0.0), tl.where(inside, r_f - mean, 0.0)
        r_g, r_o = tl.where(inside, r_g - mean, 0.0), tl.where(inside, r_o - mean, 0.0)
        var = _div(tl.sum(r_i * r_i, 0) + tl.sum(r_f * r_f, 0) + tl.sum(r_g * r_g, 0) + tl.sum(r_o * r_o, 0),
                   width)
        rstd = _rsqrt(var + _c(var, EPS))
        tl.store(R_mean + row, mean.to(storage))
        tl.store(R_rstd + row, rstd.to(storage))
        z_i = _ln_plus(A, LW_hh, LB_hh, r_i, rstd, row, 0, H, cols, inside)
        z_f = _ln_plus(A, LW_hh, LB_hh, r_f, rstd, row, 1, H, cols, inside)
        z_g = _ln_plus(A, LW_hh, LB_hh, r_g, rstd, row, 2, H, cols, inside)
        z_o = _ln_plus(A, LW_hh, LB_hh, r_o, rstd, row, 3, H, cols, inside)
    else:
        z_i = tl.load(zp, mask=inside, other=0.0).to(compute)
        z_f = tl.load(zp + H, mask=inside, other=0.0).to(compute)
        z_g = tl.load(zp + 2 * H, mask=inside, other=0.0).to(compute)
        z_o = tl.load(zp + 3 * H, mask=inside, other=0.0).to(compute)
    c = tl.load(C_prev + hp, mask=inside, other=0.0).to(compute)
    if PEEP:
        p_i = tl.load(Peep + cols, mask=inside, other=0.0).to(compute)
        p_f = tl.load(Peep + H + cols, mask=inside, other=0.0).to(compute)
        p_o = tl.load(Peep + 2 * H + cols, mask=inside, other=0.0).to(compute)
        z_i = (z_i + p_i * c).to(storage).to(compute)
        z_f = (z_f + p_f * c).to(storage).to(compute)
    if PEEP or LN:  # the record holds the pre-activations the gates saw (before their clips)
        tl.store(zp, z_i.to(storage), mask=inside)
        tl.store(zp + H, z_f.to(storage), mask=inside)
        tl.store(zp + 2 * H, z_g.to(storage), mask=inside)
    i = _pact(_clip(z_i, GATE_CLIP, GATE_BOUND), RACT, RACT_A, RACT_B).to(storage).to(compute)
    if COUPLED:
        f = (1.0 - i).to(storage).to(compute)
    else:
        f = _pact(_clip(z_f, GATE_CLIP, GATE_BOUND), RACT, RACT_A, RACT_B).to(storage).to(compute)
    g = _pact(_clip(z_g, GATE_CLIP, GATE_BOUND), ACT, ACT_A, ACT_B).to(storage).to(compute)
    k = ((f * c).to(storage).to(compute) + i * g).to(storage).to(compute)
    cc = _clip(k, CELL_CLIP, CELL_BOUND)
    if PEEP:
        z_o = (z_o + p_o * cc).to(storage).to(compute)
    if PEEP or LN:
        tl.store(zp + 3 * H, z_o.to(storage), mask=inside)
    o = _pact(_clip(z_o, GATE_CLIP, GATE_BOUND), RACT, RACT_A, RACT_B).to(storage).to(compute)
    if LN:  # LN_c over the row's H cell values
        width_c = _count(inside, cc)
        c_mean = _div(tl.sum(tl.where(inside, cc, 0.0), 0), width_c)
        dev = tl.where(inside, cc - c_mean, 0.0)
        c_rstd = _rsqrt(_div(tl.sum(dev * dev, 0), width_c) + _c(c_mean, EPS))
        w_c = tl.load(LW_c + cols, mask=inside, other=0.0).to(compute)
        b_c = tl.load(LB_c + cols, mask=inside, other=0.0).to(compute)
        n = (dev * c_rstd * w_c + b_c).to(storage).to(compute)
        if MASKED:  # masked rows out of the sums over all steps (an inf there would become nan)
            tl.store(N + hp, tl.where(keep, n, 0.0).to(storage), mask=inside)
            tl.store(C_mean + row, tl.where(keep, c_mean, 0.0).to(storage))
            tl.store(C_rstd + row, tl.where(keep, c_rstd, 0.0).to(storage))
        else:
            tl.store(N + hp, n.to(storage), mask=inside)
            tl.store(C_mean + row, c_mean.to(storage))
            tl.store(C_rstd + row, c_rstd.to(storage))
    else:
        n = cc
    if MASKED:
        tl.store(K + hp, tl.where(keep, k, 0.0).to(storage), mask=inside)
    else:
        tl.store(K + hp, k.to(storage), mask=inside)
    h_cand = (o * _pact(n, OUT, OUT_A, OUT_B)).to(storage).to(compute)
    if ZONE_C != 0:
        c_new = _lerp(cc, c, _zone_weight(Wc, hp, inside, cc, ZONE_C, WC)).to(storage)
    else:
        c_new = cc.to(storage)
    if MASKED:
        tl.store(C_new + hp, tl.where(keep, c_new, c.to(storage)), mask=inside)
    else:
        tl.store(C_new + hp, c_new, mask=inside)
    if PROJECTED:
        if MASKED:
            tl.store(R + hp, tl.where(keep, h_cand, 0.0).to(storage), mask=inside)
        else:
            tl.store(R + hp, h_cand.to(storage), mask=inside)
    else:
        h = tl.load(H_prev + hp, mask=inside, other=0.0).to(compute)
        if ZONE_H != 0:
            h_new = _lerp(h_cand, h, _zone_weight(Wh, hp, inside, h, ZONE_H, WH)).to(storage)
        else:
            h_new = h_cand.to(storage)
        if MASKED:
            tl.store(H_new + hp, tl.where(keep, h_new, h.to(storage)), mask=inside)
            if ZERO_OUT:
                tl.store(Out + hp, tl.where(keep, h_new, 0.0), mask=inside)
            else:
                previous = tl.load(Out_prev + hp, mask=inside, other=0.0)
                tl.store(Out + hp, tl.where(keep, h_new, previous), mask=inside)
        else:
            tl.store(H_new + hp, h_new, mask=inside)


@triton.jit
def variant_projected_step(
    RP, H_prev, Wh, Keep, H_new, Out, Out_prev, n, P,
    ZONE_H: tl.constexpr, WH: tl.constexpr, PROJ_CLIP: tl.constexpr, PROJ_BOUND: tl.constexpr,
    MASKED: tl.constexpr, ZERO_OUT: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The (B, P) end of a projected forward step: h~ = clip(RP, proj_clip) (RP = r W_hr^T), zoneout with
    h, then the step mask's selections of h' and the output."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    compute = tl.float64 if FLOAT64 else tl.float32
    storage = H_new.dtype.element_ty
    h_cand = _clip(tl.load(RP + offs, mask=inside, other=0.0).to(compute), PROJ_CLIP, PROJ_BOUND)
    h = tl.load(H_prev + offs, mask=inside, other=0.0).to(compute)
    if ZONE_H != 0:
        h_new = _lerp(h_cand, h, _zone_weight(Wh, offs, inside, h, ZONE_H, WH)).to(storage)
    else:
        h_new = h_cand.to(storage)
    if MASKED:
        keep = tl.load(Keep + offs // P, mask=inside, other=0) != 0
        tl.store(H_new + offs, tl.where(keep, h_new, h.to(storage)), mask=inside)
        if ZERO_OUT:
            tl.store(Out + offs, tl.where(keep, h_new, 0.0), mask=inside)
        else:
            previous = tl.load(Out_prev + offs, mask=inside, other=0.0)
            tl.store(Out + offs, tl.where(keep, h_new, previous), mask=inside)
    else:
        tl.store(H_new + offs, h_new, mask=inside)


@triton.jit
def _incoming(Dout, Dh, Carry, Keep, Wh, Rest, offs, inside, keep, FLOAT64: tl.constexpr,
              MASKED: tl.constexpr, ZERO_OUT: tl.constexpr, ZONE_H: tl.constexpr, WH: tl.constexpr):
    """The gradient reaching h~ from step t's output and the later steps (dh' of the masking rules), the
    masked rows' carried output gradient (Carry, updated), and Rest = the part of dh_{t-1} that skips the
    cell: d_h dh' (zoneout) plus dh of the rows not kept."""
    compute = tl.float64 if FLOAT64 else tl.float32
    gout = tl.load(Dout + offs, mask=inside, other=0.0).to(compute)
    dh = tl.load(Dh + offs, mask=inside, other=0.0).to(compute)
    if MASKED:
        if not ZERO_OUT:
            gout = gout + tl.load(Carry + offs, mask=inside, other=0.0).to(compute)
        k = tl.where(keep, 1.0, 0.0).to(compute)
        nk = 1.0 - k
        if not ZERO_OUT:
            tl.store(Carry + offs, (gout * nk).to(Carry.dtype.element_ty), mask=inside)
        dh_new = (gout + dh) * k
        rest = dh * nk
    else:
        dh_new = dh + gout
        rest = tl.zeros_like(dh_new)
    if ZONE_H != 0:
        w = _zone_weight(Wh, offs, inside, dh_new, ZONE_H, WH)
        rest = rest + dh_new * w
        dh_new = dh_new * (1.0 - w)
    tl.store(Rest + offs, rest.to(Rest.dtype.element_ty), mask=inside)
    return dh_new


@triton.jit
def variant_backward_prelude(
    Dout, Dh, Carry, Keep, Wh, RP, DH, Rest, n, P,
    ZONE_H: tl.constexpr, WH: tl.constexpr, PROJ_CLIP: tl.constexpr, PROJ_BOUND: tl.constexpr,
    MASKED: tl.constexpr, ZERO_OUT: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The (B, P) start of a projected backward step: DH = the gradient of r W_hr^T (zero outside
    proj_clip), whose product with W_hr the caller forms, and Rest (see _incoming)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    compute = tl.float64 if FLOAT64 else tl.float32
    keep = inside
    if MASKED:
        keep = tl.load(Keep + offs // P, mask=inside, other=0) != 0
    dr = _incoming(Dout, Dh, Carry, Keep, Wh, Rest, offs, inside, keep, FLOAT64, MASKED, ZERO_OUT, ZONE_H, WH)
    if PROJ_CLIP:
        dr = _within(dr, tl.load(RP + offs, mask=inside, other=0.0).to(compute), PROJ_CLIP, PROJ_BOUND)
    tl.store(DH + offs, dr.to(DH.dtype.element_ty), mask=inside)


@triton.jit
def variant_backward_step(
    Z, K, C_prev, N, C_mean, C_rstd, LW_c, RR, R_mean, R_rstd, LW_hh, Peep, Wh, Wc, Keep,
    Dout, Dh, Carry, Rest, Dr, Dc, DZ, DR, DN, H,
    ACT: tl.constexpr, ACT_A: tl.constexpr, ACT_B: tl.constexpr, RACT: tl.constexpr, RACT_A: tl.constexpr,
    RACT_B: tl.constexpr, OUT: tl.constexpr, OUT_A: tl.constexpr, OUT_B: tl.constexpr, PEEP: tl.constexpr,
    GATE_CLIP: tl.constexpr, GATE_BOUND: tl.constexpr, CELL_CLIP: tl.constexpr, CELL_BOUND: tl.constexpr,
    COUPLED: tl.constexpr, ZONE_H: tl.constexpr, WH: tl.constexpr, ZONE_C: tl.constexpr, WC: tl.constexpr,
    LN: tl.constexpr, EPS: tl.constexpr, MASKED: tl.constexpr, ZERO_OUT: tl.constexpr,
    PROJECTED: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """One backward step of fast_variants' cell (its module docstring's equations), recomputing the gates
    from the record: the gate gradients DZ, dc_{t-1} over Dc, with LN the cell normalisation's output
    gradient DN and the recurrent pre-activations' gradient DR = LN_hh'(dz). Without PROJECTED it also
    takes the (B, H) incoming gradients (Dout, Dh, Carry; writes Rest, see _incoming); with it, Dr holds the
    gradient of r = o g_out(n) (from variant_backward_prelude and the product with W_hr)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < H
    compute = tl.float64 if FLOAT64 else tl.float32
    zp = Z + row * 4 * H + cols
    hp = row * H + cols
    keep = inside
    if MASKED:
        keep = tl.load(Keep + row) != 0
    if PROJECTED:
        dr = tl.load(Dr + hp, mask=inside, other=0.0).to(compute)
    else:
        dr = _incoming(Dout, Dh, Carry, Keep, Wh, Rest, hp, inside, keep, FLOAT64, MASKED, ZERO_OUT, ZONE_H,
                       WH)
    dc = tl.load(Dc + hp, mask=inside, other=0.0).to(compute)
    if MASKED:
        dc_new = tl.where(keep, dc, 0.0)
        dc_pass = tl.where(keep, 0.0, dc)
    else:
        dc_new = dc
    z_i = tl.load(zp, mask=inside, other=0.0).to(compute)
    z_f = tl.load(zp + H, mask=inside, other=0.0).to(compute)
    z_g = tl.load(zp + 2 * H, mask=inside, other=0.0).to(compute)
    z_o = tl.load(zp + 3 * H, mask=inside, other=0.0).to(compute)
    zc_i, zc_g = _clip(z_i, GATE_CLIP, GATE_BOUND), _clip(z_g, GATE_CLIP, GATE_BOUND)
    zc_o = _clip(z_o, GATE_CLIP, GATE_BOUND)
    i = _pact(zc_i, RACT, RACT_A, RACT_B)
    g = _pact(zc_g, ACT, ACT_A, ACT_B)
    o = _pact(zc_o, RACT, RACT_A, RACT_B)
    c = tl.load(C_prev + hp, mask=inside, other=0.0).to(compute)
    k = tl.load(K + hp, mask=inside, other=0.0).to(compute)
    cc = _clip(k, CELL_CLIP, CELL_BOUND)
    if LN:  # noqa: SIM108 (a conditional expression is not Triton code)
        n = tl.load(N + hp, mask=inside, other=0.0).to(compute)
    else:
        n = cc
    gn = _pact(n, OUT, OUT_A, OUT_B)
    dz_o = _within(_pact_grad(dr * gn, zc_o, o, RACT, RACT_A, RACT_B), z_o, GATE_CLIP, GATE_BOUND)
    dn = _pact_grad(dr * o, n, gn, OUT, OUT_A, OUT_B)
    if LN:  # dk = LN_c'(dn) = rstd (dn w - mean(dn w) - v mean(dn w v)), v the normalised cell
        if MASKED:
            dn = tl.where(keep, dn, 0.0)
        tl.store(DN + hp, dn.to(DN.dtype.element_ty), mask=inside)
        c_rstd = tl.load(C_rstd + row).to(compute)
        v = tl.where(inside, (cc - tl.load(C_mean + row).to(compute)) * c_rstd, 0.0)
        dnw = tl.where(inside, dn * tl.load(LW_c + cols, mask=inside, other=0.0).to(compute), 0.0)
        width_c = _count(inside, dn)
        dk = c_rstd * (dnw - _div(tl.sum(dnw, 0), width_c) - v * _div(tl.sum(dnw * v, 0), width_c))
    else:
        dk = dn
    if PEEP:
        p_i = tl.load(Peep + cols, mask=inside, other=0.0).to(compute)
        p_f = tl.load(Peep + H + cols, mask=inside, other=0.0).to(compute)
        p_o = tl.load(Peep + 2 * H + cols, mask=inside, other=0.0).to(compute)
        dk = dk + dz_o * p_o
    if ZONE_C != 0:
        w_c = _zone_weight(Wc, hp, inside, dc_new, ZONE_C, WC)
        dk = dk + dc_new * (1.0 - w_c)
    else:
        dk = dk + dc_new
    dk = _within(dk, k, CELL_CLIP, CELL_BOUND)
    if COUPLED:
        f = 1.0 - i
        dz_i = _within(_pact_grad(dk * (g - c), zc_i, i, RACT, RACT_A, RACT_B), z_i, GATE_CLIP, GATE_BOUND)
        dz_f = tl.zeros_like(dz_i)
    else:
        zc_f = _clip(z_f, GATE_CLIP, GATE_BOUND)
        f = _pact(zc_f, RACT, RACT_A, RACT_B)
        dz_i = _within(_pact_grad(dk * g, zc_i, i, RACT, RACT_A, RACT_B), z_i, GATE_CLIP, GATE_BOUND)
        dz_f = _within(_pact_grad(dk * c, zc_f, f, RACT, RACT_A, RACT_B), z_f, GATE_CLIP, GATE_BOUND)
    dz_g = _within(_pact_grad(dk * i, zc_g, g, ACT, ACT_A, ACT_B), z_g, GATE_CLIP, GATE_BOUND)
    dc_prev = dk * f
    if PEEP:
        dc_prev = dc_prev + p_i * dz_i + p_f * dz_f
    if ZONE_C != 0:
        dc_prev = dc_prev + dc_new * w_c
    if MASKED:  # selections, not products with the mask: a masked row may hold inf, and inf * 0 is nan
        dc_prev = tl.where(keep, dc_prev, dc_pass)
        dz_i, dz_f = tl.where(keep, dz_i, 0.0), tl.where(keep, dz_f, 0.0)
        dz_g, dz_o = tl.where(keep, dz_g, 0.0), tl.where(keep, dz_o, 0.0)
    tl.store(Dc + hp, dc_prev.to(Dc.dtype.element_ty), mask=inside)
    out_ty = DZ.dtype.element_ty
    dzp = DZ + row * 4 * H + cols
    tl.store(dzp, dz_i.to(out_ty), mask=inside)
    tl.store(dzp + H, dz_f.to(out_ty), mask=inside)
    tl.store(dzp + 2 * H, dz_g.to(out_ty), mask=inside)
    tl.store(dzp + 3 * H, dz_o.to(out_ty), mask=inside)
    if LN:  # DR = LN_hh'(dz) over the row's 4H values (the gradients as stored: torch's backward sees those)
        r_mean = tl.load(R_mean + row).to(compute)
        r_rstd = tl.load(R_rstd + row).to(compute)
        rp = RR + row * 4 * H + cols
        v_i, w_i = _ln_grad_parts(rp, LW_hh, dz_i.to(out_ty).to(compute), r_mean, r_rstd, 0, H, cols, inside)
        v_f, w_f = _ln_grad_parts(rp, LW_hh, dz_f.to(out_ty).to(compute), r_mean, r_rstd, 1, H, cols, inside)
        v_g, w_g = _ln_grad_parts(rp, LW_hh, dz_g.to(out_ty).to(compute), r_mean, r_rstd, 2, H, cols, inside)
        v_o, w_o = _ln_grad_parts(rp, LW_hh, dz_o.to(out_ty).to(compute), r_mean, r_rstd, 3, H, cols, inside)
        width = 4.0 * _count(inside, v_i)
        m1 = _div(tl.sum(w_i, 0) + tl.sum(w_f, 0) + tl.sum(w_g, 0) + tl.sum(w_o, 0), width)
        m2 = _div(tl.sum(w_i * v_i, 0) + tl.sum(w_f * v_f, 0) + tl.sum(w_g * v_g, 0) + tl.sum(w_o * v_o, 0),
                  width)
        drp = DR + row * 4 * H + cols
        dr_ty = DR.dtype.element_ty
        tl.store(drp, (r_rstd * (w_i - m1 - v_i * m2)).to(dr_ty), mask=inside)
        tl.store(drp + H, (r_rstd * (w_f - m1 - v_f * m2)).to(dr_ty), mask=inside)
        tl.store(drp + 2 * H, (r_rstd * (w_g - m1 - v_g * m2)).to(dr_ty), mask=inside)
        tl.store(drp + 3 * H, (r_rstd * (w_o - m1 - v_o * m2)).to(dr_ty), mask=inside)

__all__ = [
    "INTERPRETED", "variant_backward_prelude", "variant_backward_step",
    "variant_forward_step", "variant_projected_step",
]
