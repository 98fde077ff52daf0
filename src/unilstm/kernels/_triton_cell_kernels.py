# ruff: noqa: N803, N806  (kernel arguments are named after the maths of triton_cell's docstring)
"""The Triton kernels of :mod:`unilstm.kernels.triton_cell`, imported on first use (Triton is a large import).

One program handles BLOCK elements of the (B, H) plane of one time step. Gate pre-activations or activations
live at ``Z + row * row_stride + gate * gate_stride + column`` in the internal gate order [i, f, o, g].
ONNX's parametric activations (:class:`unilstm.activations.ParametricActivation`) have the codes of
``triton_codes.PARAMETRIC_CODES`` and their alpha and beta as constexpr arguments: ``_pact`` computes every
activation, ``_pact_grad`` g f'(x) with torch autograd's choices at the kinks (as fast_activations.py).
Under TRITON_INTERPRET=1 (the test suite on a machine without a GPU) Triton's libdevice functions do not
exist, so exp, expm1, log1p and tanh come from plain Triton there; on a GPU they are libdevice's, the CUDA
maths library that torch's own kernels call.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from .activation_ids import ACTIVATION_IDS
from .triton_codes import PARAMETRIC_CODES

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

# activation codes (activation_ids.py, as triton_cell.ACTIVATION_CODES); Triton reads globals only when they
# are constexpr
TANH, SIGMOID, RELU, LINEAR = (tl.constexpr(ACTIVATION_IDS[n]) for n in ("tanh", "sigmoid", "relu", "linear"))
EXPONENTIAL, HARD_SIGMOID, HARD_SIGMOID_KERAS2 = (
    tl.constexpr(ACTIVATION_IDS[n]) for n in ("exponential", "hard_sigmoid", "hard_sigmoid_keras2")
)
ELU, SELU, SOFTPLUS, SOFTSIGN = (
    tl.constexpr(ACTIVATION_IDS[n]) for n in ("elu", "selu", "softplus", "softsign")
)
RELU6, LEAKY_RELU, HARD_TANH, SILU = (
    tl.constexpr(ACTIVATION_IDS[n]) for n in ("relu6", "leaky_relu", "hard_tanh", "silu")
)

_SELU_SCALE = tl.constexpr(1.0507009873554804934193349852946)
_SELU_NEGATIVE = tl.constexpr(1.6732632423543772848170429916717 * 1.0507009873554804934193349852946)

if INTERPRETED:

    @triton.jit
    def _exp(x):
        return tl.exp(x)

    @triton.jit
    def _expm1(x):
        return tl.exp(x) - 1.0

    @triton.jit
    def _log1p(x):
        return tl.log(1.0 + x)

    @triton.jit
    def _tanh(x):
        e = tl.exp(-2.0 * tl.abs(x))
        t = _div(1.0 - e, 1.0 + e)
        return tl.where(x < 0, -t, t)

else:
    from triton.language.extra import libdevice

    _exp, _expm1, _log1p, _tanh = libdevice.exp, libdevice.expm1, libdevice.log1p, libdevice.tanh


@triton.jit
def _c(x, value):
    """The constant in x's dtype: a bare Triton literal is float32, which would round 0.2 in float64."""
    return tl.full(x.shape, value, x.dtype)


@triton.jit
def _div(a, b):
    """a / b correctly rounded (Triton's float32 ``/`` is an approximate division; float64's is exact)."""
    if b.dtype == tl.float32:  # noqa: SIM108 (a conditional expression is not Triton code)
        q = tl.div_rn(a, b)
    else:
        q = a / b
    return q


@triton.jit
def _activation(x, CODE: tl.constexpr):
    """The activation of unilstm.activations with this code, as torch computes it."""
    if CODE == TANH:
        y = _tanh(x)
    elif CODE == SIGMOID:
        y = _div(1.0, 1.0 + _exp(-x))
    elif CODE == RELU:
        y = tl.where(x > 0, x, 0.0)
    elif CODE == LINEAR:
        y = x
    elif CODE == EXPONENTIAL:
        y = _exp(x)
    elif CODE == HARD_SIGMOID:  # relu6(x + 3) / 6
        v = tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0)
        y = _div(v, tl.zeros_like(v) + 6.0)
    elif CODE == HARD_SIGMOID_KERAS2:  # clamp(0.2 x + 0.5, 0, 1)
        y = tl.minimum(tl.maximum(_c(x, 0.2) * x + 0.5, 0.0), 1.0)
    elif CODE == ELU:
        y = tl.where(x > 0, x, _expm1(x))
    elif CODE == SELU:
        y = tl.where(x > 0, x * _c(x, _SELU_SCALE), _expm1(x) * _c(x, _SELU_NEGATIVE))
    elif CODE == SOFTPLUS:  # threshold 20, as torch
        y = tl.where(x > 20.0, x, _log1p(_exp(x)))
    elif CODE == SOFTSIGN:
        y = _div(x, 1.0 + tl.abs(x))
    elif CODE == RELU6:
        y = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif CODE == LEAKY_RELU:
        y = tl.where(x > 0, x, x * _c(x, 0.2))
    elif CODE == HARD_TANH:
        y = tl.minimum(tl.maximum(x, -1.0), 1.0)
    else:  # SILU
        y = _div(x, 1.0 + _exp(-x))
    return y


@triton.jit
def _activation_grad(g, x, y, CODE: tl.constexpr):
    """g * f'(x) given y = f(x), with torch autograd's choices at the kinks (see fast._ACTS)."""
    if CODE == TANH:
        d = g * (1.0 - y * y)
    elif CODE == SIGMOID:
        d = g * ((1.0 - y) * y)
    elif CODE == RELU:
        d = tl.where(y <= 0, 0.0, g)
    elif CODE == LINEAR:
        d = g
    elif CODE == EXPONENTIAL:
        d = g * y
    elif CODE == HARD_SIGMOID:
        d = tl.where((y <= 0.0) | (y >= 1.0), 0.0, g) * _c(g, 1.0 / 6.0)
    elif CODE == HARD_SIGMOID_KERAS2:
        v = _c(x, 0.2) * x + 0.5
        d = g * tl.where((v >= 0.0) & (v <= 1.0), _c(g, 0.2), 0.0)
    elif CODE == ELU:
        d = tl.where(x <= 0, g * _exp(x), g)
    elif CODE == SELU:
        d = tl.where(x <= 0, g * _c(g, _SELU_NEGATIVE) * _exp(x), g * _c(g, _SELU_SCALE))
    elif CODE == SOFTPLUS:
        z = _exp(x)
        d = tl.where(x > 20.0, g, g * _div(z, z + 1.0))
    elif CODE == SOFTSIGN:
        a = 1.0 + tl.abs(x)
        d = _div(g, a * a)
    elif CODE == RELU6:
        d = tl.where((y <= 0.0) | (y >= 6.0), 0.0, g)
    elif CODE == LEAKY_RELU:
        d = tl.where(y > 0, g, g * _c(g, 0.2))
    elif CODE == HARD_TANH:
        d = tl.where((y <= -1.0) | (y >= 1.0), 0.0, g)
    else:  # SILU
        s = _div(1.0, 1.0 + _exp(-x))
        d = g * (s * (1.0 + x * (1.0 - s)))
    return d


P_AFFINE, P_LEAKY_RELU, P_THRESHOLDED_RELU, P_SCALED_TANH, P_HARD_SIGMOID, P_ELU = (
    tl.constexpr(PARAMETRIC_CODES[kind])
    for kind in ("affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu")
)


@triton.jit
def _pact(x, CODE: tl.constexpr, A: tl.constexpr, B: tl.constexpr):
    """f(x) for an activation code, parametric (alpha A, beta B) or not."""
    if CODE == P_AFFINE:
        y = x * _c(x, A) + _c(x, B)
    elif CODE == P_LEAKY_RELU:
        y = tl.where(x > 0, x, x * _c(x, A))
    elif CODE == P_THRESHOLDED_RELU:
        y = tl.where(x > _c(x, A), x, 0.0)
    elif CODE == P_SCALED_TANH:
        y = _tanh(x * _c(x, B)) * _c(x, A)
    elif CODE == P_HARD_SIGMOID:
        y = tl.minimum(tl.maximum(x * _c(x, A) + _c(x, B), 0.0), 1.0)
    elif CODE == P_ELU:
        y = tl.where(x > 0, x, _expm1(x) * _c(x, A))
    else:
        y = _activation(x, CODE)
    return y


@triton.jit
def _pact_grad(g, x, y, CODE: tl.constexpr, A: tl.constexpr, B: tl.constexpr):
    """g f'(x) given y = f(x) (see _pact)."""
    if CODE == P_AFFINE:
        d = g * _c(g, A)
    elif CODE == P_LEAKY_RELU:
        d = tl.where(x > 0, g, g * _c(g, A))
    elif CODE == P_THRESHOLDED_RELU:
        d = tl.where(x > _c(x, A), g, 0.0)
    elif CODE == P_SCALED_TANH:
        t = _tanh(x * _c(x, B))
        d = g * (1.0 - t * t) * _c(g, A * B)
    elif CODE == P_HARD_SIGMOID:
        v = x * _c(x, A) + _c(x, B)
        d = g * tl.where((v >= 0.0) & (v <= 1.0), _c(g, A), 0.0)
    elif CODE == P_ELU:
        d = tl.where(x <= 0, g * _c(g, A) * _exp(x), g)
    else:
        d = _activation_grad(g, x, y, CODE)
    return d


@triton.jit
def forward_step(
    Z, gate_stride, row_stride, C_prev, C_new, H_prev, H_new, Out, Out_prev, Keep, Mh, Hm, n, H,
    ACT: tl.constexpr, ACT_A: tl.constexpr, ACT_B: tl.constexpr, RACT: tl.constexpr, RACT_A: tl.constexpr,
    RACT_B: tl.constexpr, STORE_ACTIVATIONS: tl.constexpr, MASKED: tl.constexpr,
    ZERO_OUT: tl.constexpr, PROJECTED: tl.constexpr, H_MASKS: tl.constexpr, FLOAT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """c' = f c + i g, h' = o act(c'); with a step mask, rows not kept carry c, h over, and the output row is
    0 (ZERO_OUT) or the previous output. Writes the gate activations over Z when STORE_ACTIVATIONS. When
    PROJECTED, H_new receives r = o act(c') (0 in rows not kept), whose projection the caller forms.
    H_MASKS (1 or 4) recurrent dropout masks Mh, each (B, H): Hm[k] = h' * Mh[k], the next step's GEMM
    operand."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    row = offs // H
    zp = Z + row * row_stride + (offs - row * H)
    compute = tl.float64 if FLOAT64 else tl.float32
    i = _pact(tl.load(zp, mask=inside, other=0.0).to(compute), RACT, RACT_A, RACT_B)
    f = _pact(tl.load(zp + gate_stride, mask=inside, other=0.0).to(compute), RACT, RACT_A, RACT_B)
    o = _pact(tl.load(zp + 2 * gate_stride, mask=inside, other=0.0).to(compute), RACT, RACT_A, RACT_B)
    g = _pact(tl.load(zp + 3 * gate_stride, mask=inside, other=0.0).to(compute), ACT, ACT_A, ACT_B)
    if STORE_ACTIVATIONS:
        tl.store(zp, i.to(Z.dtype.element_ty), mask=inside)
        tl.store(zp + gate_stride, f.to(Z.dtype.element_ty), mask=inside)
        tl.store(zp + 2 * gate_stride, o.to(Z.dtype.element_ty), mask=inside)
        tl.store(zp + 3 * gate_stride, g.to(Z.dtype.element_ty), mask=inside)
    # rounded to the storage dtype where torch's ops store their results
    c_prev = tl.load(C_prev + offs, mask=inside, other=0.0)
    c = (f * c_prev.to(compute) + i * g).to(C_new.dtype.element_ty)
    h = (o * _pact(c.to(compute), ACT, ACT_A, ACT_B)).to(H_new.dtype.element_ty)
    if MASKED:
        keep = tl.load(Keep + row, mask=inside, other=0) != 0
        tl.store(C_new + offs, tl.where(keep, c, c_prev), mask=inside)
        if PROJECTED:
            tl.store(H_new + offs, tl.where(keep, h, 0.0), mask=inside)
        else:
            if ZERO_OUT:
                tl.store(Out + offs, tl.where(keep, h, 0.0), mask=inside)
            else:
                previous = tl.load(Out_prev + offs, mask=inside, other=0.0)
                tl.store(Out + offs, tl.where(keep, h, previous), mask=inside)
            h = tl.where(keep, h, tl.load(H_prev + offs, mask=inside, other=0.0))
            tl.store(H_new + offs, h, mask=inside)
    else:
        tl.store(C_new + offs, c, mask=inside)
        tl.store(H_new + offs, h, mask=inside)
    for k in tl.static_range(H_MASKS):
        m = tl.load(Mh + k * n + offs, mask=inside, other=0.0).to(compute)
        tl.store(Hm + k * n + offs, (h.to(compute) * m).to(Hm.dtype.element_ty), mask=inside)


@triton.jit
def backward_step(
    Z, gate_stride, row_stride, C_new, C_prev, Dout, Dh, Dc, Dh_pass, Carry, Keep, n, H,
    ACT: tl.constexpr, ACT_A: tl.constexpr, ACT_B: tl.constexpr, RACT: tl.constexpr, RACT_A: tl.constexpr,
    RACT_B: tl.constexpr, STORED_ACTIVATIONS: tl.constexpr, MASKED: tl.constexpr,
    ZERO_OUT: tl.constexpr, PROJECTED: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """One step of the backward through time (as fast._backward_body): the gate gradients dz over Z,
    dc_{t-1} over Dc, and with a step mask the part of dh that passes masked rows (Dh_pass) and, when masked
    outputs repeat the previous one, the output gradient carried back (Carry). When PROJECTED, Dout holds the
    gradient of r = o act(c') and the (B, P) part ran before (projected_backward_prelude, then a GEMM)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    row = offs // H
    zp = Z + row * row_stride + (offs - row * H)
    compute = tl.float64 if FLOAT64 else tl.float32
    dc = tl.load(Dc + offs, mask=inside, other=0.0).to(compute)
    if PROJECTED:
        dr = tl.load(Dout + offs, mask=inside, other=0.0).to(compute)
        if MASKED:
            keep = tl.load(Keep + row, mask=inside, other=0) != 0
            k = tl.where(keep, 1.0, 0.0).to(compute)
            dc_new = dc * k
            dc_pass = dc * (1.0 - k)
        else:
            dc_new = dc
            dc_pass = 0.0
    elif MASKED:
        gout = tl.load(Dout + offs, mask=inside, other=0.0).to(compute)
        dh = tl.load(Dh + offs, mask=inside, other=0.0).to(compute)
        if not ZERO_OUT:
            gout = gout + tl.load(Carry + offs, mask=inside, other=0.0).to(compute)
        keep = tl.load(Keep + row, mask=inside, other=0) != 0
        k = tl.where(keep, 1.0, 0.0).to(compute)
        nk = 1.0 - k
        if not ZERO_OUT:
            tl.store(Carry + offs, (gout * nk).to(Carry.dtype.element_ty), mask=inside)
        dr = gout * k + dh * k
        tl.store(Dh_pass + offs, (dh * nk).to(Dh_pass.dtype.element_ty), mask=inside)
        dc_new = dc * k
        dc_pass = dc * nk
    else:
        dh = tl.load(Dh + offs, mask=inside, other=0.0).to(compute)
        dr = dh + tl.load(Dout + offs, mask=inside, other=0.0).to(compute)
        dc_new = dc
        dc_pass = 0.0
    zi = tl.load(zp, mask=inside, other=0.0).to(compute)
    zf = tl.load(zp + gate_stride, mask=inside, other=0.0).to(compute)
    zo = tl.load(zp + 2 * gate_stride, mask=inside, other=0.0).to(compute)
    zg = tl.load(zp + 3 * gate_stride, mask=inside, other=0.0).to(compute)
    if STORED_ACTIVATIONS:
        i, f, o, g = zi, zf, zo, zg
    else:
        i, f = _pact(zi, RACT, RACT_A, RACT_B), _pact(zf, RACT, RACT_A, RACT_B)
        o, g = _pact(zo, RACT, RACT_A, RACT_B), _pact(zg, ACT, ACT_A, ACT_B)
    c = tl.load(C_new + offs, mask=inside, other=0.0).to(compute)
    ac = _pact(c, ACT, ACT_A, ACT_B)
    d_o = dr * ac
    dct = _pact_grad(dr * o, c, ac, ACT, ACT_A, ACT_B) + dc_new
    d_i = dct * g
    d_f = dct * tl.load(C_prev + offs, mask=inside, other=0.0).to(compute)
    d_g = dct * i
    dz_i = _pact_grad(d_i, zi, i, RACT, RACT_A, RACT_B)
    dz_f = _pact_grad(d_f, zf, f, RACT, RACT_A, RACT_B)
    dz_o = _pact_grad(d_o, zo, o, RACT, RACT_A, RACT_B)
    dz_g = _pact_grad(d_g, zg, g, ACT, ACT_A, ACT_B)
    dc_prev = dct * f
    if MASKED:  # selections, not products with the mask: a masked row may hold inf, and inf * 0 is nan
        dc_prev = tl.where(keep, dc_prev, dc_pass)
        dz_i, dz_f = tl.where(keep, dz_i, 0.0), tl.where(keep, dz_f, 0.0)
        dz_o, dz_g = tl.where(keep, dz_o, 0.0), tl.where(keep, dz_g, 0.0)
    tl.store(Dc + offs, dc_prev.to(Dc.dtype.element_ty), mask=inside)
    out_ty = Z.dtype.element_ty
    tl.store(zp, dz_i.to(out_ty), mask=inside)
    tl.store(zp + gate_stride, dz_f.to(out_ty), mask=inside)
    tl.store(zp + 2 * gate_stride, dz_o.to(out_ty), mask=inside)
    tl.store(zp + 3 * gate_stride, dz_g.to(out_ty), mask=inside)


@triton.jit
def projected_backward_prelude(
    Dout, Dh, Dh_new, Dh_pass, Carry, Keep, n, P,
    MASKED: tl.constexpr, ZERO_OUT: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The (B, P) part of a backward step with a projection: dh_t = dout_t + dh (rows not kept: 0, their dh
    passing into Dh_pass, and unless ZERO_OUT their output gradient carried back in Carry)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    compute = tl.float64 if FLOAT64 else tl.float32
    gout = tl.load(Dout + offs, mask=inside, other=0.0).to(compute)
    dh = tl.load(Dh + offs, mask=inside, other=0.0).to(compute)
    if MASKED:
        if not ZERO_OUT:
            gout = gout + tl.load(Carry + offs, mask=inside, other=0.0).to(compute)
        keep = tl.load(Keep + offs // P, mask=inside, other=0) != 0
        k = tl.where(keep, 1.0, 0.0).to(compute)
        nk = 1.0 - k
        if not ZERO_OUT:
            tl.store(Carry + offs, (gout * nk).to(Carry.dtype.element_ty), mask=inside)
        tl.store(Dh_new + offs, (gout * k + dh * k).to(Dh_new.dtype.element_ty), mask=inside)
        tl.store(Dh_pass + offs, (dh * nk).to(Dh_pass.dtype.element_ty), mask=inside)
    else:
        tl.store(Dh_new + offs, (dh + gout).to(Dh_new.dtype.element_ty), mask=inside)


@triton.jit
def combine_gate_products(
    Dh4, gate_stride, Mask, Pass, Out, n,
    MASK: tl.constexpr, PASS: tl.constexpr, FLOAT64: tl.constexpr, BLOCK: tl.constexpr,
):
    """dh = sum over the four gates of dz_k W_k (Dh4, (4, B, P)), each times its dropout mask (MASK 2:
    Mask is (4, B, P)) or the sum times a shared one (MASK 1: (B, P)), plus Pass (the dh of masked rows)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    compute = tl.float64 if FLOAT64 else tl.float32
    acc = tl.zeros([BLOCK], dtype=compute)
    for k in tl.static_range(4):
        v = tl.load(Dh4 + k * gate_stride + offs, mask=inside, other=0.0).to(compute)
        if MASK == 2:
            v = v * tl.load(Mask + k * gate_stride + offs, mask=inside, other=0.0).to(compute)
        acc = acc + v
    if MASK == 1:
        acc = acc * tl.load(Mask + offs, mask=inside, other=0.0).to(compute)
    if PASS:
        acc = acc + tl.load(Pass + offs, mask=inside, other=0.0).to(compute)
    tl.store(Out + offs, acc.to(Out.dtype.element_ty), mask=inside)
