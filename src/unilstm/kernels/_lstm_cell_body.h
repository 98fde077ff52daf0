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
        for (j = 0; j < n; j++) y[j] = x[j] > (REAL)0.0 ? x[j] : (REAL)0.0;
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
            out[j] = yv > (REAL)0.0 ? gv : (REAL)0.0;
        }
        break;
    case ACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            const REAL gv = g[j], yv = y[j];
            out[j] = (yv > (REAL)0.0 && yv < (REAL)1.0) ? gv * ((REAL)1.0 / (REAL)6.0) : (REAL)0.0;
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
            out[j] = (yv > (REAL)0.0 && yv < (REAL)6.0) ? gv : (REAL)0.0;
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
            out[j] = (yv > -(REAL)1.0 && yv < (REAL)1.0) ? gv : (REAL)0.0;
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
static void NAME(finish_hidden)(long B, long P, const REAL *hcand, const REAL *h_prev, REAL *h_out,
                                REAL *out_t, const REAL *prev_out, const uint8_t *keep, int zero_out,
                                const REAL *mh, int n_masks, REAL *hnext) {
    const size_t bytes = (size_t)P * sizeof(REAL);
    for (long b = 0; b < B; b++) {
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
HOT static void NAME(forward_step)(long B, long H, long P, REAL *z, const REAL *rec, const REAL *c_prev,
                                   REAL *c_out, const REAL *h_prev, REAL *h_out, REAL *out_t,
                                   const REAL *prev_out, const uint8_t *keep, int zero_out, const REAL *mh,
                                   int n_masks, REAL *hnext, REAL *r_out, REAL *r_hist, REAL *scratch, int act,
                                   int ract) {
    REAL *restrict gi = scratch, *restrict gf = scratch + H, *restrict gg = scratch + 2 * H;
    REAL *restrict go = scratch + 3 * H, *restrict ac = scratch + 4 * H;
    const size_t bytes = (size_t)H * sizeof(REAL);
    for (long b = 0; b < B; b++) {
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
        REAL *restrict r = r_out != NULL ? r_out + b * H : h_out + b * P;
        for (long j = 0; j < H; j++) r[j] = go[j] * ac[j];
        if (r_hist != NULL) memcpy(r_hist + b * H, r, bytes);
    }
    if (r_out == NULL)
        NAME(finish_hidden)(B, P, h_out, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, n_masks, hnext);
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
HOT static void NAME(backward_step)(int phases, long B, long H, long P, REAL *z, const REAL *c_prev,
                                    const REAL *c_new, REAL *dh, REAL *dc, const REAL *gout, REAL *carry,
                                    const uint8_t *keep, REAL *dh_new_out, REAL *dh_hist, const REAL *dr,
                                    const REAL *dh_tmp, const uint8_t *keep_prev, const REAL *mh, int n_masks,
                                    REAL *dz_copy, REAL *scratch, int act, int ract) {
    if (phases & 1) {
        for (long b = 0; b < B; b++) {
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
        for (long b = 0; b < B; b++) {
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
        for (long b = 0; b < B; b++) {
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
            NAME(act_forward)(ract, zr, yi, H);
            NAME(act_forward)(ract, zr + H, yf, H);
            NAME(act_forward)(act, zr + 2 * H, yg, H);
            NAME(act_forward)(ract, zr + 3 * H, yo, H);
            NAME(act_forward)(act, cn, ac, H);
            for (long j = 0; j < H; j++) t1[j] = d[j] * yo[j]; /* the gradient reaching act(c) */
            NAME(act_backward)(act, cn, ac, t1, t2, H);        /* t2 = dr * o * act'(c) */
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

