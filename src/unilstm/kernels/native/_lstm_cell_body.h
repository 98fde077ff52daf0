/*
 * The cell's loops, written once for the element type REAL and included by _lstm_cell.c once per type:
 * NAME(f) gives each function a per-type name; EXP, SIGMOID, TANH and LOG1P are the type's functions.
 */
/* y[j] = f(x[j]) */
ALWAYS_INLINE static inline void NAME(act_forward)(int act, const REAL *restrict x, REAL *restrict y, long n) {
    long j;
    switch (act) {
    case ACT_TANH:
        for (j = 0; j < n; j++) y[j] = TANH(x[j]);
        break;
    case ACT_SIGMOID:
        for (j = 0; j < n; j++) y[j] = SIGMOID(x[j]);
        break;
    case ACT_RELU:
        for (j = 0; j < n; j++) y[j] = x[j] <= (REAL)0.0 ? (REAL)0.0 : x[j]; /* nan stays nan, like torch */
        break;
    case ACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            REAL v = x[j] + (REAL)3.0;
            v = v < (REAL)0.0 ? (REAL)0.0 : (v > (REAL)6.0 ? (REAL)6.0 : v);
            y[j] = v / (REAL)6.0;
        }
        break;
    case ACT_HARD_SIGMOID_KERAS2:
        for (j = 0; j < n; j++) {
            REAL v = (REAL)0.2 * x[j] + (REAL)0.5;
            y[j] = v < (REAL)0.0 ? (REAL)0.0 : (v > (REAL)1.0 ? (REAL)1.0 : v);
        }
        break;
    case ACT_ELU:
        for (j = 0; j < n; j++) y[j] = x[j] > (REAL)0.0 ? x[j] : EXP(x[j]) - (REAL)1.0;
        break;
    case ACT_SELU:
        for (j = 0; j < n; j++)
            y[j] = x[j] > (REAL)0.0 ? (REAL)SELU_SCALE * x[j] : (REAL)(SELU_SCALE * SELU_ALPHA) * (EXP(x[j]) - (REAL)1.0);
        break;
    case ACT_SOFTSIGN:
        for (j = 0; j < n; j++) y[j] = x[j] / ((REAL)1.0 + (x[j] < (REAL)0.0 ? -x[j] : x[j]));
        break;
    case ACT_EXPONENTIAL:
        for (j = 0; j < n; j++) y[j] = EXP(x[j]);
        break;
    case ACT_RELU6:
        for (j = 0; j < n; j++) y[j] = x[j] < (REAL)0.0 ? (REAL)0.0 : (x[j] > (REAL)6.0 ? (REAL)6.0 : x[j]);
        break;
    case ACT_LEAKY_RELU:
        for (j = 0; j < n; j++) y[j] = x[j] > (REAL)0.0 ? x[j] : (REAL)0.2 * x[j];
        break;
    case ACT_HARD_TANH:
        for (j = 0; j < n; j++) y[j] = x[j] < -(REAL)1.0 ? -(REAL)1.0 : (x[j] > (REAL)1.0 ? (REAL)1.0 : x[j]);
        break;
    case ACT_SILU:
        for (j = 0; j < n; j++) y[j] = x[j] * SIGMOID(x[j]);
        break;
    case ACT_SOFTPLUS:
        for (j = 0; j < n; j++) {
            /* log1p(e^x) = max(x, 0) + log1p(e^-|x|); logf does not vectorise, so this loop stays scalar */
            REAL ax = x[j] < (REAL)0.0 ? -x[j] : x[j];
            REAL sp = (x[j] > (REAL)0.0 ? x[j] : (REAL)0.0) + LOG1P(EXP(-ax));
            y[j] = x[j] > (REAL)20.0 ? x[j] : sp;
        }
        break;
    default: /* ACT_LINEAR */
        if (x != y) memcpy(y, x, (size_t)n * sizeof(REAL));
        break;
    }
}

/* out[j] = g[j] * f'(x[j]), with y = f(x); out may be x (each j reads x[j] before writing out[j]) */
ALWAYS_INLINE static inline void NAME(act_backward)(int act, const REAL *x, const REAL *y, const REAL *g, REAL *out, long n) {
    long j;
    switch (act) {
    case ACT_TANH:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = gv * ((REAL)1.0 - yv * yv);
        }
        break;
    case ACT_SIGMOID:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = gv * ((REAL)1.0 - yv) * yv;
        }
        break;
    case ACT_RELU:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = yv <= (REAL)0.0 ? (REAL)0.0 : gv;
        }
        break;
    case ACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = (yv <= (REAL)0.0 || yv >= (REAL)1.0) ? (REAL)0.0 : gv * ((REAL)1.0 / (REAL)6.0);
        }
        break;
    case ACT_HARD_SIGMOID_KERAS2:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j];
            REAL v = (REAL)0.2 * x[j] + (REAL)0.5;
            out[j] = (v >= (REAL)0.0 && v <= (REAL)1.0) ? gv * (REAL)0.2 : (REAL)0.0;
        }
        break;
    case ACT_ELU:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], xv = x[j];
            out[j] = xv > (REAL)0.0 ? gv : gv * EXP(xv);
        }
        break;
    case ACT_SELU:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], xv = x[j];
            out[j] = xv > (REAL)0.0 ? gv * (REAL)SELU_SCALE : gv * ((REAL)(SELU_SCALE * SELU_ALPHA)) * EXP(xv);
        }
        break;
    case ACT_SOFTSIGN:
        for (j = 0; j < n; j++) {
            REAL d = (REAL)1.0 + (x[j] < (REAL)0.0 ? -x[j] : x[j]);
            out[j] = g[j] / (d * d);
        }
        break;
    case ACT_EXPONENTIAL:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = gv * yv;
        }
        break;
    case ACT_RELU6:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = (yv <= (REAL)0.0 || yv >= (REAL)6.0) ? (REAL)0.0 : gv;
        }
        break;
    case ACT_LEAKY_RELU:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = yv > (REAL)0.0 ? gv : gv * (REAL)0.2;
        }
        break;
    case ACT_HARD_TANH:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = (yv <= -(REAL)1.0 || yv >= (REAL)1.0) ? (REAL)0.0 : gv;
        }
        break;
    case ACT_SILU:
        for (j = 0; j < n; j++) {
            REAL s = SIGMOID(x[j]);
            out[j] = g[j] * s * ((REAL)1.0 + x[j] * ((REAL)1.0 - s));
        }
        break;
    case ACT_SOFTPLUS:
        for (j = 0; j < n; j++) {
            REAL z = EXP(x[j]);
            out[j] = x[j] > (REAL)20.0 ? g[j] : g[j] * z / (z + (REAL)1.0);
        }
        break;
    default: /* ACT_LINEAR */
        if (g != out) memcpy(out, g, (size_t)n * sizeof(REAL));
        break;
    }
}
/*
 * Single-pass cells for the activation pairs most models use, (tanh, sigmoid) and (relu, sigmoid): one loop
 * over the hidden units computes every gate, the cell and the output, where the general path makes a pass
 * per gate and per operation (benchmarks/kernel_choices.md, "Single-pass cells"). The functions below are inlined with constant activation ids, so that the switches fold away and each loop
 * vectorises; they compute the same expressions as act_forward / act_backward.
 */
ALWAYS_INLINE static inline REAL NAME(act_one)(int act, REAL x) {
    switch (act) {
    case ACT_TANH: return TANH(x);
    case ACT_SIGMOID: return SIGMOID(x);
    case ACT_RELU: return x <= (REAL)0.0 ? (REAL)0.0 : x;
    default: return x; /* ACT_LINEAR; fused_pair admits no other */
    }
}

/* g * f'(x), with y = f(x) (act_backward's expressions) */
ALWAYS_INLINE static inline REAL NAME(act_grad_one)(int act, REAL y, REAL g) {
    switch (act) {
    case ACT_TANH: return g * ((REAL)1.0 - y * y);
    case ACT_SIGMOID: return g * ((REAL)1.0 - y) * y;
    case ACT_RELU: return y <= (REAL)0.0 ? (REAL)0.0 : g;
    default: return g;
    }
}

/* 1 for (tanh, sigmoid), 2 for (relu, sigmoid), 0 for the general path */
static inline int NAME(fused_pair)(int act, int ract) {
    if (ract != ACT_SIGMOID) return 0;
    return act == ACT_TANH ? 1 : (act == ACT_RELU ? 2 : 0);
}

/* one row of a forward step: z_k += rec_k (each gate's block, rec_k may be strided per gate), then
 * c = f * c_prev + i * g and r = o * act(c); z keeps the pre-activations */
ALWAYS_INLINE static inline void NAME(fused_forward_row)(int act, int ract, long H, REAL *restrict zr,
                                                          const REAL *restrict r0, const REAL *restrict r1,
                                                          const REAL *restrict r2, const REAL *restrict r3,
                                                          const REAL *restrict cp, REAL *restrict cn,
                                                          REAL *restrict r) {
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL zi = zr[j] + r0[j], zf = zr[H + j] + r1[j], zg = zr[2 * H + j] + r2[j];
        const REAL zo = zr[3 * H + j] + r3[j];
        zr[j] = zi;
        zr[H + j] = zf;
        zr[2 * H + j] = zg;
        zr[3 * H + j] = zo;
        const REAL c = NAME(act_one)(ract, zf) * cp[j] + NAME(act_one)(ract, zi) * NAME(act_one)(act, zg);
        cn[j] = c;
        r[j] = NAME(act_one)(ract, zo) * NAME(act_one)(act, c);
    }
}

/* one row of a backward step's cell phase: from dr = d and dc (which becomes dc_prev), z (the
 * pre-activations) becomes the gate gradients */
ALWAYS_INLINE static inline void NAME(fused_backward_row)(int act, int ract, long H, REAL *restrict zr,
                                                           const REAL *restrict cp, const REAL *restrict cn,
                                                           const REAL *restrict d, REAL *restrict dcr) {
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL yi = NAME(act_one)(ract, zr[j]), yf = NAME(act_one)(ract, zr[H + j]);
        const REAL yg = NAME(act_one)(act, zr[2 * H + j]), yo = NAME(act_one)(ract, zr[3 * H + j]);
        const REAL ac = NAME(act_one)(act, cn[j]);
        const REAL dct = NAME(act_grad_one)(act, ac, d[j] * yo) + dcr[j];
        zr[j] = NAME(act_grad_one)(ract, yi, dct * yg);
        zr[H + j] = NAME(act_grad_one)(ract, yf, dct * cp[j]);
        zr[2 * H + j] = NAME(act_grad_one)(act, yg, dct * yi);
        zr[3 * H + j] = NAME(act_grad_one)(ract, yo, d[j] * ac);
        dcr[j] = dct * yf;
    }
}

/*
 * Buffers. The driver keeps the per-step tensors its GEMMs read and write at fixed addresses, so that a
 * step costs it no new tensor views: the functions below copy what the backward pass needs into the
 * (T, ...) histories themselves.
 *
 * n_masks is 1 when the recurrent dropout mask mh is one (B, P) mask (or absent) and 4 when it is one
 * mask per gate, (4, B, P): then the recurrent GEMM runs per gate and its operands are gate-major,
 * hnext (4, B, P), rec (4, B, H), dz_copy (4, B, H) and dh_tmp (4, B, P).
 */

/*
 * The hidden-state half of a forward step:
 *   kept rows:   h_out = hcand, out_t = hcand;
 *   masked rows: h_out = h_prev, out_t = 0 (zero_out) or prev_out;
 * then hnext = h_out * mh (per mask), the next step's GEMM operand. keep, out_t, prev_out and mh may be
 * NULL. hcand may be h_out itself.
 */
static void NAME(finish_hidden_rows)(long b0, long b1, long B, long P, const REAL *hcand, const REAL *h_prev,
                                     REAL *h_out, REAL *out_t, const REAL *prev_out, const uint8_t *keep,
                                     int zero_out, const REAL *mh, int n_masks, REAL *hnext) {
    const size_t bytes = (size_t)P * sizeof(REAL);
    for (long b = b0; b < b1; b++) {
        const long row = b * P;
        if (keep == NULL || keep[b]) {
            if (h_out != hcand) memcpy(h_out + row, hcand + row, bytes);
            if (out_t != NULL) memcpy(out_t + row, hcand + row, bytes);
        } else {
            memcpy(h_out + row, h_prev + row, bytes);
            if (out_t != NULL) {
                if (zero_out || prev_out == NULL)
                    memset(out_t + row, 0, bytes);
                else
                    memcpy(out_t + row, prev_out + row, bytes);
            }
        }
        if (mh == NULL) {
            memcpy(hnext + row, h_out + row, bytes);
            continue;
        }
        for (int k = 0; k < n_masks; k++) {
            const REAL *restrict m = mh + k * B * P + row;
            const REAL *restrict h = h_out + row;
            REAL *restrict dst = hnext + k * B * P + row;
            for (long j = 0; j < P; j++) dst[j] = h[j] * m[j];
        }
    }
}

/*
 * One forward step. z (B, 4H) holds x_t W_ih^T + b on entry; rec (the driver's h_prev W_hh^T, (B, 4H) or
 * gate-major) is added to it, and z keeps these pre-activations for the backward pass. For kept rows
 *   c_out = f * c_prev + i * g,   r = o * act(c_out);
 * without projection (r_out NULL) r is the new hidden state and finish_hidden runs here; with projection
 * r goes to r_out and r_hist (zeros on masked rows) and the driver multiplies r_out by W_hr^T and calls
 * finish_hidden. scratch: 5H.
 */
HOT static void NAME(forward_step_rows)(long b0, long b1, long B, long H, long P, REAL *z, const REAL *rec,
                                        const REAL *c_prev, REAL *c_out, const REAL *h_prev, REAL *h_out,
                                        REAL *out_t, const REAL *prev_out, const uint8_t *keep, int zero_out,
                                        const REAL *mh, int n_masks, REAL *hnext, REAL *r_out, REAL *r_hist,
                                        REAL *scratch, int act, int ract) {
    REAL *restrict gi = scratch, *restrict gf = scratch + H, *restrict gg = scratch + 2 * H;
    REAL *restrict go = scratch + 3 * H, *restrict ac = scratch + 4 * H;
    const size_t bytes = (size_t)H * sizeof(REAL);
    for (long b = b0; b < b1; b++) {
        REAL *restrict zr = z + b * 4 * H;
        const REAL *restrict cp = c_prev + b * H;
        REAL *restrict cn = c_out + b * H;
        if (keep != NULL && !keep[b]) {
            memcpy(cn, cp, bytes);
            if (r_out != NULL) {
                memset(r_out + b * H, 0, bytes);
                memset(r_hist + b * H, 0, bytes);
            }
            continue;
        }
        REAL *restrict r = r_out != NULL ? r_out + b * H : h_out + b * P;
        const int pair = rec != NULL ? NAME(fused_pair)(act, ract) : 0;
        if (pair != 0) {
            const REAL *rk[4];
            for (int k = 0; k < 4; k++) rk[k] = n_masks == 4 ? rec + (k * B + b) * H : rec + b * 4 * H + k * H;
            if (pair == 1)
                NAME(fused_forward_row)(ACT_TANH, ACT_SIGMOID, H, zr, rk[0], rk[1], rk[2], rk[3], cp, cn, r);
            else
                NAME(fused_forward_row)(ACT_RELU, ACT_SIGMOID, H, zr, rk[0], rk[1], rk[2], rk[3], cp, cn, r);
            if (r_hist != NULL) memcpy(r_hist + b * H, r, bytes);
            continue;
        }
        if (rec != NULL) {
            if (n_masks == 4) {
                for (int k = 0; k < 4; k++) {
                    const REAL *restrict rk = rec + (k * B + b) * H;
                    REAL *restrict zk = zr + k * H;
                    for (long j = 0; j < H; j++) zk[j] += rk[j];
                }
            } else {
                const REAL *restrict rr = rec + b * 4 * H;
                for (long j = 0; j < 4 * H; j++) zr[j] += rr[j];
            }
        }
        NAME(act_forward)(ract, zr, gi, H);
        NAME(act_forward)(ract, zr + H, gf, H);
        NAME(act_forward)(act, zr + 2 * H, gg, H);
        NAME(act_forward)(ract, zr + 3 * H, go, H);
        for (long j = 0; j < H; j++) cn[j] = gf[j] * cp[j] + gi[j] * gg[j];
        NAME(act_forward)(act, cn, ac, H);
        for (long j = 0; j < H; j++) r[j] = go[j] * ac[j];
        if (r_hist != NULL) memcpy(r_hist + b * H, r, bytes);
    }
    if (r_out == NULL)
        NAME(finish_hidden_rows)(b0, b1, B, P, h_out, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, n_masks,
                                 hnext);
}

/*
 * One backward step, in phases (bit flags):
 *   1 (tail of the previous step): dh = sum over masks of dh_tmp * mh on the rows kept at the previous step
 *     (dh_tmp: the driver's dz_prev W_hh); masked rows keep dh, which passes through them unchanged.
 *   2 (head): dh_new = dh + gout (+ carry, for "previous" outputs) on kept rows, 0 on masked rows, into
 *     dh_new_out and dh_hist (when given); carry becomes 0 on kept rows and gout + carry on masked rows.
 *   4 (cell): from dr (the gradient of r = o * act(c): dh_new without projection, dh_new W_hr with it) and
 *     dc, the gate gradients dz overwrite z and go to dz_copy (zeros on masked rows), and dc becomes
 *     dc_prev. The gate activations are recomputed from z.
 * scratch: 10H. The scratch slices never overlap (hence restrict).
 */
HOT static void NAME(backward_step_rows)(int phases, long b0, long b1, long B, long H, long P, REAL *z,
                                         const REAL *c_prev, const REAL *c_new, REAL *dh, REAL *dc,
                                         const REAL *gout, REAL *carry, const uint8_t *keep, REAL *dh_new_out,
                                         REAL *dh_hist, const REAL *dr, const REAL *dh_tmp,
                                         const uint8_t *keep_prev, const REAL *mh, int n_masks, REAL *dz_copy,
                                         REAL *scratch, int act, int ract) {
    if (phases & 1) {
        for (long b = b0; b < b1; b++) {
            if (keep_prev != NULL && !keep_prev[b]) continue;
            REAL *restrict d = dh + b * P;
            if (mh == NULL) {
                memcpy(d, dh_tmp + b * P, (size_t)P * sizeof(REAL));
                continue;
            }
            for (long j = 0; j < P; j++) d[j] = 0;
            for (int k = 0; k < n_masks; k++) {
                const REAL *restrict t = dh_tmp + (k * B + b) * P;
                const REAL *restrict m = mh + (k * B + b) * P;
                for (long j = 0; j < P; j++) d[j] += t[j] * m[j];
            }
        }
    }
    if (phases & 2) {
        for (long b = b0; b < b1; b++) {
            const long row = b * P;
            const int kept = keep == NULL || keep[b];
            REAL *restrict dn = dh_new_out + row;
            const REAL *restrict d = dh + row;
            const REAL *restrict go = gout + row;
            if (kept) {
                if (carry != NULL) {
                    REAL *restrict cr = carry + row;
                    for (long j = 0; j < P; j++) {
                        dn[j] = d[j] + go[j] + cr[j];
                        cr[j] = 0;
                    }
                } else {
                    for (long j = 0; j < P; j++) dn[j] = d[j] + go[j];
                }
            } else {
                memset(dn, 0, (size_t)P * sizeof(REAL));
                if (carry != NULL) {
                    REAL *restrict cr = carry + row;
                    for (long j = 0; j < P; j++) cr[j] += go[j];
                }
            }
            if (dh_hist != NULL) memcpy(dh_hist + row, dn, (size_t)P * sizeof(REAL));
        }
    }
    if (phases & 4) {
        REAL *restrict yi = scratch, *restrict yf = scratch + H, *restrict yg = scratch + 2 * H;
        REAL *restrict yo = scratch + 3 * H, *restrict ac = scratch + 4 * H, *restrict t1 = scratch + 5 * H;
        REAL *restrict t2 = scratch + 6 * H, *restrict di = scratch + 7 * H, *restrict df = scratch + 8 * H;
        REAL *restrict dg = scratch + 9 * H;
        const size_t bytes = (size_t)H * sizeof(REAL);
        for (long b = b0; b < b1; b++) {
            REAL *zr = z + b * 4 * H;
            if (keep != NULL && !keep[b]) {
                memset(zr, 0, 4 * bytes);
                for (int k = 0; k < 4; k++) {
                    const long at = n_masks == 4 ? (k * B + b) * H : b * 4 * H + k * H;
                    memset(dz_copy + at, 0, bytes);
                }
                continue;
            }
            const REAL *restrict cp = c_prev + b * H;
            const REAL *restrict cn = c_new + b * H;
            const REAL *restrict d = dr + b * H;
            REAL *restrict dcr = dc + b * H;
            const int pair = NAME(fused_pair)(act, ract);
            if (pair == 1)
                NAME(fused_backward_row)(ACT_TANH, ACT_SIGMOID, H, zr, cp, cn, d, dcr);
            else if (pair == 2)
                NAME(fused_backward_row)(ACT_RELU, ACT_SIGMOID, H, zr, cp, cn, d, dcr);
            if (pair != 0) {
                if (n_masks == 4) {
                    for (int k = 0; k < 4; k++) memcpy(dz_copy + (k * B + b) * H, zr + k * H, bytes);
                } else {
                    memcpy(dz_copy + b * 4 * H, zr, 4 * bytes);
                }
                continue;
            }
            NAME(act_forward)(ract, zr, yi, H);
            NAME(act_forward)(ract, zr + H, yf, H);
            NAME(act_forward)(act, zr + 2 * H, yg, H);
            NAME(act_forward)(ract, zr + 3 * H, yo, H);
            NAME(act_forward)(act, cn, ac, H);
            for (long j = 0; j < H; j++) t1[j] = d[j] * yo[j]; /* the gradient reaching act(c) */
            NAME(act_backward)(act, cn, ac, t1, t2, H);        /* t2 = dr * o * act'(c) */
#pragma GCC ivdep
            for (long j = 0; j < H; j++) {
                REAL dct = t2[j] + dcr[j];
                di[j] = dct * yg[j];
                df[j] = dct * cp[j];
                dg[j] = dct * yi[j];
                t1[j] = d[j] * ac[j]; /* d_o */
                dcr[j] = dct * yf[j];
            }
            /* each gate block of z becomes its pre-activation gradient */
            NAME(act_backward)(ract, zr, yi, di, zr, H);
            NAME(act_backward)(ract, zr + H, yf, df, zr + H, H);
            NAME(act_backward)(act, zr + 2 * H, yg, dg, zr + 2 * H, H);
            NAME(act_backward)(ract, zr + 3 * H, yo, t1, zr + 3 * H, H);
            if (n_masks == 4) {
                for (int k = 0; k < 4; k++) memcpy(dz_copy + (k * B + b) * H, zr + k * H, bytes);
            } else {
                memcpy(dz_copy + b * 4 * H, zr, 4 * bytes);
            }
        }
    }
}

/* The steps over all rows: the per-step entry points of the Python loop. */
static void NAME(finish_hidden)(long B, long P, const REAL *hcand, const REAL *h_prev, REAL *h_out, REAL *out_t,
                                const REAL *prev_out, const uint8_t *keep, int zero_out, const REAL *mh,
                                int n_masks, REAL *hnext) {
    NAME(finish_hidden_rows)(0, B, B, P, hcand, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, n_masks, hnext);
}

static void NAME(forward_step)(long B, long H, long P, REAL *z, const REAL *rec, const REAL *c_prev, REAL *c_out,
                               const REAL *h_prev, REAL *h_out, REAL *out_t, const REAL *prev_out,
                               const uint8_t *keep, int zero_out, const REAL *mh, int n_masks, REAL *hnext,
                               REAL *r_out, REAL *r_hist, REAL *scratch, int act, int ract) {
    NAME(forward_step_rows)(0, B, B, H, P, z, rec, c_prev, c_out, h_prev, h_out, out_t, prev_out, keep, zero_out,
                            mh, n_masks, hnext, r_out, r_hist, scratch, act, ract);
}

static void NAME(backward_step)(int phases, long B, long H, long P, REAL *z, const REAL *c_prev,
                                const REAL *c_new, REAL *dh, REAL *dc, const REAL *gout, REAL *carry,
                                const uint8_t *keep, REAL *dh_new_out, REAL *dh_hist, const REAL *dr,
                                const REAL *dh_tmp, const uint8_t *keep_prev, const REAL *mh, int n_masks,
                                REAL *dz_copy, REAL *scratch, int act, int ract) {
    NAME(backward_step_rows)(phases, 0, B, B, H, P, z, c_prev, c_new, dh, dc, gout, carry, keep, dh_new_out,
                             dh_hist, dr, dh_tmp, keep_prev, mh, n_masks, dz_copy, scratch, act, ract);
}

/*
 * The same steps with their rows split among the threads of the OpenMP runtime torch links (its
 * GOMP_parallel, found by the driver; see cell_threads in _lstm_cell.c): the cell is a tenth to a quarter
 * of a step and would otherwise run on one core while the BLAS's other threads wait. Thread t takes rows
 * [B t / n, B (t + 1) / n) and the scratch slice t. A step runs on one thread when threads < 2, when no
 * runtime was found, or below CELL_PARALLEL_MIN hidden units per step (the fork costs a few microseconds).
 */
typedef struct {
    int kind; /* 0 forward_step, 1 backward_step, 2 finish_hidden */
    int phases, n_masks, zero_out, act, ract;
    long B, H, P, scratch_stride;
    REAL *z, *c_out, *h_out, *out_t, *hnext, *r_out, *r_hist, *scratch, *dh, *dc, *carry, *dh_new_out, *dh_hist;
    REAL *dz_copy;
    const REAL *rec, *c_prev, *c_new, *h_prev, *prev_out, *mh, *gout, *dr, *dh_tmp, *hcand;
    const uint8_t *keep, *keep_prev;
} NAME(cell_task_t);

static void NAME(cell_task_rows)(const NAME(cell_task_t) * a, long b0, long b1, REAL *scratch) {
    switch (a->kind) {
    case 0:
        NAME(forward_step_rows)(b0, b1, a->B, a->H, a->P, a->z, a->rec, a->c_prev, a->c_out, a->h_prev, a->h_out,
                                a->out_t, a->prev_out, a->keep, a->zero_out, a->mh, a->n_masks, a->hnext, a->r_out,
                                a->r_hist, scratch, a->act, a->ract);
        break;
    case 1:
        NAME(backward_step_rows)(a->phases, b0, b1, a->B, a->H, a->P, a->z, a->c_prev, a->c_new, a->dh, a->dc,
                                 a->gout, a->carry, a->keep, a->dh_new_out, a->dh_hist, a->dr, a->dh_tmp,
                                 a->keep_prev, a->mh, a->n_masks, a->dz_copy, scratch, a->act, a->ract);
        break;
    default:
        NAME(finish_hidden_rows)(b0, b1, a->B, a->P, a->hcand, a->h_prev, a->h_out, a->out_t, a->prev_out, a->keep,
                                 a->zero_out, a->mh, a->n_masks, a->hnext);
        break;
    }
}

/* one thread's share of a task (the GOMP_parallel body) */
static void NAME(cell_task)(void *argument) {
    const NAME(cell_task_t) *a = (const NAME(cell_task_t) *)argument;
    long b0, b1;
    const int t = cell_rows(a->B, &b0, &b1);
    NAME(cell_task_rows)(a, b0, b1, a->scratch + t * a->scratch_stride);
}

/* runs the task over all rows, split among up to `threads` threads when that pays */
static void NAME(cell_run)(const NAME(cell_task_t) * task, int threads) {
    const unsigned n = cell_team(threads, task->B, task->B * task->H);
    if (n < 2)
        NAME(cell_task_rows)(task, 0, task->B, task->scratch);
    else
        cell_parallel(NAME(cell_task), (void *)task, n);
}

static void NAME(forward_step_par)(int threads, long stride, long B, long H, long P, REAL *z, const REAL *rec,
                                   const REAL *c_prev, REAL *c_out, const REAL *h_prev, REAL *h_out, REAL *out_t,
                                   const REAL *prev_out, const uint8_t *keep, int zero_out, const REAL *mh,
                                   int n_masks, REAL *hnext, REAL *r_out, REAL *r_hist, REAL *scratch, int act,
                                   int ract) {
    const NAME(cell_task_t) task = {
        .kind = 0, .n_masks = n_masks, .zero_out = zero_out, .act = act, .ract = ract, .B = B, .H = H, .P = P,
        .scratch_stride = stride, .z = z, .c_out = c_out, .h_out = h_out, .out_t = out_t, .hnext = hnext,
        .r_out = r_out, .r_hist = r_hist, .scratch = scratch, .rec = rec, .c_prev = c_prev, .h_prev = h_prev,
        .prev_out = prev_out, .mh = mh, .keep = keep};
    NAME(cell_run)(&task, threads);
}

static void NAME(finish_hidden_par)(int threads, long B, long H, long P, const REAL *hcand, const REAL *h_prev,
                                    REAL *h_out, REAL *out_t, const REAL *prev_out, const uint8_t *keep,
                                    int zero_out, const REAL *mh, int n_masks, REAL *hnext) {
    const NAME(cell_task_t) task = {
        .kind = 2, .n_masks = n_masks, .zero_out = zero_out, .B = B, .H = H, .P = P, .h_out = h_out,
        .out_t = out_t, .hnext = hnext, .h_prev = h_prev, .prev_out = prev_out, .mh = mh, .hcand = hcand,
        .keep = keep};
    NAME(cell_run)(&task, threads);
}

static void NAME(backward_step_par)(int threads, long stride, int phases, long B, long H, long P, REAL *z,
                                    const REAL *c_prev, const REAL *c_new, REAL *dh, REAL *dc, const REAL *gout,
                                    REAL *carry, const uint8_t *keep, REAL *dh_new_out, REAL *dh_hist,
                                    const REAL *dr, const REAL *dh_tmp, const uint8_t *keep_prev, const REAL *mh,
                                    int n_masks, REAL *dz_copy, REAL *scratch, int act, int ract) {
    const NAME(cell_task_t) task = {
        .kind = 1, .phases = phases, .n_masks = n_masks, .act = act, .ract = ract, .B = B, .H = H, .P = P,
        .scratch_stride = stride, .z = z, .scratch = scratch, .dh = dh, .dc = dc, .carry = carry,
        .dh_new_out = dh_new_out, .dh_hist = dh_hist, .dz_copy = dz_copy, .c_prev = c_prev, .c_new = c_new,
        .mh = mh, .gout = gout, .dr = dr, .dh_tmp = dh_tmp, .keep = keep, .keep_prev = keep_prev};
    NAME(cell_run)(&task, threads);
}

/*
 * Whole time loops, for when the driver found the BLAS gemm that torch itself links (Fortran interface,
 * column-major; see native/_blas.py): per step the GEMMs and the cell run here with no Python in between.
 * Integers go to gemm by reference as int64_t: on a little-endian machine an LP64 BLAS reads the low 32
 * bits, which hold the same (small) value, and an ILP64 BLAS reads all 64.
 */
typedef void (*NAME(gemm_t))(const char *, const char *, const int64_t *, const int64_t *, const int64_t *,
                             const REAL *, const REAL *, const int64_t *, const REAL *, const int64_t *,
                             const REAL *, REAL *, const int64_t *);

/* row-major C (M, N) = A (M, K) B (K, N), as the column-major C^T = B^T A^T; with trans_b, Bm holds B^T
 * as (N, K) rows (a weight in its own (out, in) layout, no transposed copy) */
static void NAME(gemm_rows_beta)(NAME(gemm_t) gemm, long M, long N, long K, const REAL *A, long lda,
                                 const REAL *Bm, long ldb, int trans_b, REAL beta, REAL *C, long ldc) {
    const int64_t m = N, n = M, k = K, la = ldb > 0 ? ldb : 1, lb = lda > 0 ? lda : 1, lc = ldc;
    const REAL one = 1;
    gemm(trans_b ? "T" : "N", "N", &m, &n, &k, &one, Bm, &la, A, &lb, &beta, C, &lc);
}

static void NAME(gemm_rows)(NAME(gemm_t) gemm, long M, long N, long K, const REAL *A, long lda, const REAL *Bm,
                            long ldb, int trans_b, REAL *C, long ldc) {
    NAME(gemm_rows_beta)(gemm, M, N, K, A, lda, Bm, ldb, trans_b, (REAL)0, C, ldc);
}

/* Z (M, N) = X (M, K) W^T + b_ih + b_hh with W stored (N, K), a weight's own layout; either bias may be
 * NULL. The biases fill Z first and the product adds to them (beta = 1), as torch's addmm does. */
static void NAME(project_inputs)(NAME(gemm_t) gemm, long M, long N, long K, const REAL *X, const REAL *W,
                                 const REAL *b_ih, const REAL *b_hh, REAL *Z) {
    REAL beta = 0;
    if (b_ih != NULL || b_hh != NULL) {
        for (long j = 0; j < N; j++) Z[j] = (b_ih != NULL ? b_ih[j] : (REAL)0) + (b_hh != NULL ? b_hh[j] : (REAL)0);
        for (long r = 1; r < M; r++) memcpy(Z + r * N, Z, (size_t)N * sizeof(REAL));
        beta = 1;
    }
    NAME(gemm_rows_beta)(gemm, M, N, K, X, K, W, K, 1, beta, Z, N);
}

/* MKL's packed GEMM (cblas_?gemm_pack / _compute), optional: the weight operand of the per-step products is
 * packed once per call instead of inside every gemm call. Integer arguments are passed as int64_t by value:
 * in a register or an 8-byte stack slot, an LP64 library reads the low 32 bits and an ILP64 one all 64. */
typedef size_t (*NAME(pack_size_t))(int64_t, int64_t, int64_t, int64_t);
typedef void (*NAME(pack_t))(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, REAL, const REAL *, int64_t,
                             REAL *);
typedef void (*NAME(compute_t))(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const REAL *, int64_t,
                                const REAL *, int64_t, REAL, REAL *, int64_t);

/* cblas_?gemm_batch, one group: every array holds one value. Integers and enums go by pointer as int64_t:
 * with one group an LP64 library reads the low 32 bits of element 0, which hold the same (small) value,
 * and an ILP64 one all 64; group_count goes by value as for the packed functions. */
typedef void (*NAME(batch_t))(int64_t, const int64_t *, const int64_t *, const int64_t *, const int64_t *,
                              const int64_t *, const REAL *, const REAL **, const int64_t *, const REAL **,
                              const int64_t *, const REAL *, REAL **, const int64_t *, int64_t, const int64_t *);

typedef struct {
    NAME(gemm_t) gemm;
    NAME(pack_size_t) pack_size; /* the three are NULL together when packing is not available */
    NAME(pack_t) pack;
    NAME(compute_t) compute;
    NAME(batch_t) batch; /* NULL when not available: four gemm calls instead */
} NAME(blas_t);

/* the right operand of row-major products X (M, K) W (K, N): W itself or, with trans, W^T stored (N, K) */
typedef struct {
    const REAL *w;
    long ld;
    int trans;
    REAL *packed; /* MKL's packed copy, or NULL */
} NAME(operand_t);

/* packs the weight of a product repeated over `steps` steps from PACK_MIN_ROWS, PACK_MIN_WEIGHT and
 * PACK_MIN_STEPS on (_lstm_cell.c): packing costs about one plain call */
static void NAME(operand_pack)(const NAME(blas_t) * blas, NAME(operand_t) * op, long M, long N, long K,
                               long steps) {
    op->packed = NULL;
    if (blas->pack_size == NULL || M < PACK_MIN_ROWS || (double)N * (double)K < PACK_MIN_WEIGHT ||
        steps < PACK_MIN_STEPS)
        return;
    size_t bytes = blas->pack_size(CBLAS_B_MATRIX, M, N, K);
    if (bytes == 0) return;
    REAL *buffer = (REAL *)aligned_alloc(64, (bytes + 63) / 64 * 64); /* cache-line aligned, as MKL advises */
    if (buffer == NULL) return; /* no memory for the copy: the plain gemm still works */
    blas->pack(CBLAS_ROW_MAJOR, CBLAS_B_MATRIX, op->trans ? CBLAS_TRANS : CBLAS_NO_TRANS, M, N, K, (REAL)1,
               op->w, op->ld, buffer);
    op->packed = buffer;
}

/* C (M, N) = A (M, K) op(W) + beta C */
static void NAME(product_beta)(const NAME(blas_t) * blas, const NAME(operand_t) * op, long M, long N, long K,
                               const REAL *A, long lda, REAL beta, REAL *C, long ldc) {
    if (op->packed != NULL)
        blas->compute(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_PACKED, M, N, K, A, lda, op->packed, N, beta, C, ldc);
    else
        NAME(gemm_rows_beta)(blas->gemm, M, N, K, A, lda, op->w, op->ld, op->trans, beta, C, ldc);
}

/* C (M, N) = A (M, K) op(W) */
static void NAME(product)(const NAME(blas_t) * blas, const NAME(operand_t) * op, long M, long N, long K,
                          const REAL *A, long lda, REAL *C, long ldc) {
    NAME(product_beta)(blas, op, M, N, K, A, lda, (REAL)0, C, ldc);
}

/* Z (n, N) = X (n, K) op(W) + b_ih + b_hh (either bias NULL): the biases fill Z and the product adds to them
 * (beta = 1), as torch's addmm does */
static void NAME(project_rows)(const NAME(blas_t) * blas, const NAME(operand_t) * op, long n, long N, long K,
                               const REAL *X, const REAL *b_ih, const REAL *b_hh, REAL *Z) {
    REAL beta = 0;
    if (b_ih != NULL || b_hh != NULL) {
        for (long j = 0; j < N; j++) Z[j] = (b_ih != NULL ? b_ih[j] : (REAL)0) + (b_hh != NULL ? b_hh[j] : (REAL)0);
        for (long r = 1; r < n; r++) memcpy(Z + r * N, Z, (size_t)N * sizeof(REAL));
        beta = 1;
    }
    NAME(product_beta)(blas, op, n, N, K, X, K, beta, Z, N);
}

/*
 * The four per-gate products of per-gate dropout masks, C_k (M, N) = A_k (M, K) op(W_k) for k = 0..3, with
 * A_k = A + k * a_step, W_k = W + k * w_step (trans: stored (N, K)) and C_k = C + k * c_step, all
 * row-major with leading dimensions K, ldw and N. One batched call where MKL exports it: one parallel region
 * instead of four (benchmarks/kernel_choices.md, "Per-gate products as one batched call").
 */
static void NAME(gate_products)(const NAME(blas_t) * blas, long M, long N, long K, const REAL *A, long a_step,
                                const REAL *W, long w_step, long ldw, int trans, REAL *C, long c_step) {
    if (blas->batch == NULL) {
        for (int k = 0; k < 4; k++)
            NAME(gemm_rows)(blas->gemm, M, N, K, A + k * a_step, K, W + k * w_step, ldw, trans, C + k * c_step, N);
        return;
    }
    const int64_t ta = CBLAS_NO_TRANS, tb = trans ? CBLAS_TRANS : CBLAS_NO_TRANS, m = M, n = N, k = K;
    const int64_t lda = K, ldb = ldw, ldc = N, group_size = 4;
    const REAL one = 1, zero = 0;
    const REAL *as[4], *ws[4];
    REAL *cs[4];
    for (int g = 0; g < 4; g++) {
        as[g] = A + g * a_step;
        ws[g] = W + g * w_step;
        cs[g] = C + g * c_step;
    }
    blas->batch(CBLAS_ROW_MAJOR, &ta, &tb, &m, &n, &k, &one, as, &lda, ws, &ldb, &zero, cs, &ldc, 1, &group_size);
}

/* the rows of step t to treat as masked, or NULL when every row counts */
static const uint8_t *NAME(step_keep)(const uint8_t *keep, long t, long B) {
    if (keep == NULL) return NULL;
    const uint8_t *row = keep + t * B;
    for (long b = 0; b < B; b++)
        if (!row[b]) return row;
    return NULL;
}

/*
 * The forward loop of native/_loops.py's forward_pass: Z (T, B, 4H) input projections, Hp (T+1, B, P) and
 * Cp (T+1, B, H) histories, Obuf (T, B, P) outputs when masked, keep (T, B) or NULL, hnext (n_masks, B, P)
 * room for the GEMM operand h_{t-1} (times mh), hm_hist (n_masks, T, B, P) or NULL the record of that
 * operand at every step, WrecT the recurrent weights as (P, 4H) or gate-major (4, P, H), R (T, B, H) /
 * rbuf / hcand / WhrT (H, P) for the projection, zeros (B, P). With trans_w, WrecT and WhrT are the weights
 * in their own layouts instead, W_hh (4H, P) and W_hr (P, H).
 * With X (T, B, F) given, the loop first computes Z = X W_ih^T + b_ih + b_hh itself (W_ih (4H, F), either
 * bias NULL); otherwise Z holds it on entry. h0 (B, P) and c0 (B, H) are copied into the histories'
 * first entries (index T when reverse); NULL means they are in place already. ostride: the elements between
 * two steps of Obuf (B * P, or more when Obuf holds these B rows of a wider batch).
 * chunk (with X, for inference): 0 computes every step's projection before the loop; from 1 on, the loop
 * computes them `chunk` steps at a time, each chunk just before its steps run, and Z holds one chunk
 * (chunk, B, 4H) instead of T steps: a buffer that stays in the cache (the driver sizes it from the cache's
 * size) instead of one the size of the whole sequence, written once and read back from memory. W_ih is then
 * packed once (MKL's packed GEMM, where the sizes ask for it) for all chunks.
 */
static void NAME(forward_loop)(const NAME(blas_t) * blas, int trans_w, long T, long B, long H, long P, int reverse,
                               REAL *Z, REAL *Hp, REAL *Cp, REAL *Obuf, const uint8_t *keep, int zero_out,
                               const REAL *mh, int n_masks, REAL *hnext, REAL *hm_hist, REAL *rec,
                               const REAL *WrecT, REAL *R, REAL *rbuf, REAL *hcand, const REAL *WhrT,
                               const REAL *zeros, REAL *scratch, const REAL *X, long F, const REAL *W_ih,
                               const REAL *b_ih, const REAL *b_hh, const REAL *h0, const REAL *c0, int threads,
                               int act, int ract, long ostride, long chunk) {
    const REAL *prev = zeros;
    const long first = reverse ? T : 0, stride = SCRATCH_PER_HIDDEN * H; /* one scratch slice per thread */
    if (X == NULL || chunk >= T || chunk < 0) chunk = 0;
    NAME(operand_t) in_w = {W_ih, F, 1, NULL};
    long z_first = 0; /* with chunks: the first step whose projection Z holds */
    if (X != NULL && chunk == 0) NAME(project_inputs)(blas->gemm, T * B, 4 * H, F, X, W_ih, b_ih, b_hh, Z);
    if (chunk > 0) NAME(operand_pack)(blas, &in_w, chunk * B, 4 * H, F, (T + chunk - 1) / chunk);
    if (h0 != NULL) memcpy(Hp + first * B * P, h0, (size_t)(B * P) * sizeof(REAL));
    if (c0 != NULL) memcpy(Cp + first * B * H, c0, (size_t)(B * H) * sizeof(REAL));
    for (int k = 0; k < n_masks; k++) { /* the first GEMM operand: h0, times each mask */
        const REAL *restrict h = Hp + first * B * P;
        REAL *restrict dst = hnext + k * B * P;
        if (mh == NULL) {
            memcpy(dst, h, (size_t)(B * P) * sizeof(REAL));
        } else {
            const REAL *restrict m = mh + k * B * P;
            for (long j = 0; j < B * P; j++) dst[j] = h[j] * m[j];
        }
    }
    NAME(operand_t) rec_w = {WrecT, trans_w ? P : 4 * H, trans_w, NULL};
    NAME(operand_t) proj_w = {WhrT, trans_w ? H : P, trans_w, NULL};
    if (n_masks == 1) NAME(operand_pack)(blas, &rec_w, B, 4 * H, P, T);
    if (R != NULL) NAME(operand_pack)(blas, &proj_w, B, P, H, T);
    for (long s = 0; s < T; s++) {
        const long t = reverse ? T - 1 - s : s;
        const long hi = reverse ? t + 1 : t, ho = reverse ? t : t + 1;
        if (chunk > 0 && s % chunk == 0) { /* the projections of the next n steps in loop order */
            const long n = T - s < chunk ? T - s : chunk;
            z_first = reverse ? T - s - n : s;
            NAME(project_rows)(blas, &in_w, n * B, 4 * H, F, X + z_first * B * F, b_ih, b_hh, Z);
        }
        if (hm_hist != NULL) { /* the masked h_{t-1} of each gate, for dW_hh */
            for (int k = 0; k < n_masks; k++)
                memcpy(hm_hist + (k * T + t) * B * P, hnext + k * B * P, (size_t)(B * P) * sizeof(REAL));
        }
        if (n_masks == 4) {
            NAME(gate_products)(blas, B, H, P, hnext, B * P, WrecT, P * H, trans_w ? P : H, trans_w, rec, B * H);
        } else {
            NAME(product)(blas, &rec_w, B, 4 * H, P, hnext, P, rec, 4 * H);
        }
        const uint8_t *kp = NAME(step_keep)(keep, t, B);
        REAL *out_t = Obuf != NULL ? Obuf + t * ostride : NULL;
        REAL *zt = Z + (t - z_first) * B * 4 * H;
        if (R != NULL) {
            NAME(forward_step_par)(threads, stride, B, H, P, zt, rec, Cp + hi * B * H, Cp + ho * B * H, NULL, NULL,
                                   NULL, NULL, kp, zero_out, NULL, n_masks, NULL, rbuf, R + t * B * H, scratch, act,
                                   ract);
            NAME(product)(blas, &proj_w, B, P, H, rbuf, H, hcand, P);
            NAME(finish_hidden_par)(threads, B, H, P, hcand, Hp + hi * B * P, Hp + ho * B * P, out_t, prev, kp,
                                    zero_out, mh, n_masks, hnext);
        } else {
            NAME(forward_step_par)(threads, stride, B, H, P, zt, rec, Cp + hi * B * H, Cp + ho * B * H,
                                   Hp + hi * B * P, Hp + ho * B * P, out_t, prev, kp, zero_out, mh, n_masks, hnext,
                                   NULL, NULL, scratch, act, ract);
        }
        if (Obuf != NULL) prev = out_t;
    }
    free(rec_w.packed);
    free(proj_w.packed);
    free(in_w.packed);
}

/*
 * The backward loop of native/_loops.py's backward_pass: dh (B, P) and dc (B, H) enter as the gradients
 * of h_T and c_T and leave as those of h0 and c0; Z becomes dZ. carry (B, P) for "previous" outputs or
 * NULL; DH (T, B, P), dr (B, H) and w_hr (P, H) for the projection; dz and dh_tmp the per-step GEMM
 * operands ((B, 4H) and (B, P), gate-major with per-gate masks); Wrec = W_hh as (4H, P). dstride: the
 * elements between two steps of dout (B * P, or more when dout holds these B rows of a wider batch).
 */
static void NAME(backward_loop)(const NAME(blas_t) * blas, long T, long B, long H, long P, int reverse, REAL *Z,
                                const REAL *Cp, const REAL *dout, const uint8_t *keep, REAL *dh, REAL *dc,
                                REAL *carry, REAL *dh_new, REAL *DH, REAL *dr, const REAL *w_hr, REAL *dz,
                                REAL *dh_tmp, const REAL *Wrec, const REAL *mh, int n_masks, REAL *scratch,
                                int threads, int act, int ract, long dstride) {
    int pending = 0;
    const uint8_t *prev_kp = NULL;
    const long stride = SCRATCH_PER_HIDDEN * H; /* one scratch slice per thread */
    NAME(operand_t) rec_w = {Wrec, P, 0, NULL};
    NAME(operand_t) proj_w = {w_hr, H, 0, NULL};
    if (n_masks == 1) NAME(operand_pack)(blas, &rec_w, B, P, 4 * H, T);
    if (DH != NULL) NAME(operand_pack)(blas, &proj_w, B, H, P, T);
    for (long s = 0; s < T; s++) {
        const long t = reverse ? s : T - 1 - s;
        const long hi = reverse ? t + 1 : t, ho = reverse ? t : t + 1;
        const uint8_t *kp = NAME(step_keep)(keep, t, B);
        REAL *zt = Z + t * B * 4 * H;
        const REAL *cprev = Cp + hi * B * H, *cnew = Cp + ho * B * H, *gout = dout + t * dstride;
        if (DH != NULL) {
            NAME(backward_step_par)(threads, stride, pending | 2, B, H, P, zt, cprev, cnew, dh, dc, gout, carry, kp,
                                    dh_new, DH + t * B * P, NULL, dh_tmp, prev_kp, mh, n_masks, NULL, scratch, act,
                                    ract);
            NAME(product)(blas, &proj_w, B, H, P, dh_new, P, dr, H);
            NAME(backward_step_par)(threads, stride, 4, B, H, P, zt, cprev, cnew, dh, dc, NULL, NULL, kp, NULL, NULL,
                                    dr, NULL, NULL, NULL, n_masks, dz, scratch, act, ract);
        } else {
            NAME(backward_step_par)(threads, stride, pending | 6, B, H, P, zt, cprev, cnew, dh, dc, gout, carry, kp,
                                    dh_new, NULL, dh_new, dh_tmp, prev_kp, mh, n_masks, dz, scratch, act, ract);
        }
        if (n_masks == 4) {
            NAME(gate_products)(blas, B, P, H, dz, B * H, Wrec, H * P, P, 0, dh_tmp, B * P);
        } else {
            NAME(product)(blas, &rec_w, B, P, 4 * H, dz, 4 * H, dh_tmp, P);
        }
        pending = 1;
        prev_kp = kp;
    }
    NAME(backward_step_par)(threads, stride, 1, B, H, P, NULL, NULL, NULL, dh, dc, NULL, NULL, NULL, NULL, NULL,
                            NULL, dh_tmp, prev_kp, mh, n_masks, NULL, scratch, act, ract);
    free(rec_w.packed);
    free(proj_w.packed);
}
