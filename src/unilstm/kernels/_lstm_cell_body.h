/*
 * The cell's loops, written once for the element type REAL and included by _lstm_cell.c once per type:
 * NAME(f) gives each function a per-type name; EXP, SIGMOID, TANH and LOG1P are the type's functions.
 */
/* y[j] = f(x[j]) */
static inline void NAME(act_forward)(int act, const REAL *restrict x, REAL *restrict y, long n) {
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
static inline void NAME(act_backward)(int act, const REAL *x, const REAL *y, const REAL *g, REAL *out, long n) {
    long j;
    switch (act) {
    case ACT_TANH:
        for (j = 0; j < n; j++) out[j] = g[j] * ((REAL)1.0 - y[j] * y[j]);
        break;
    case ACT_SIGMOID:
        for (j = 0; j < n; j++) out[j] = g[j] * ((REAL)1.0 - y[j]) * y[j];
        break;
    case ACT_RELU:
        for (j = 0; j < n; j++) out[j] = y[j] > (REAL)0.0 ? g[j] : (REAL)0.0;
        break;
    case ACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) out[j] = (y[j] > (REAL)0.0 && y[j] < (REAL)1.0) ? g[j] * ((REAL)1.0 / (REAL)6.0) : (REAL)0.0;
        break;
    case ACT_HARD_SIGMOID_KERAS2:
        for (j = 0; j < n; j++) {
            REAL v = (REAL)0.2 * x[j] + (REAL)0.5;
            out[j] = (v >= (REAL)0.0 && v <= (REAL)1.0) ? g[j] * (REAL)0.2 : (REAL)0.0;
        }
        break;
    case ACT_ELU:
        for (j = 0; j < n; j++) out[j] = x[j] > (REAL)0.0 ? g[j] : g[j] * EXP(x[j]);
        break;
    case ACT_SELU:
        for (j = 0; j < n; j++)
            out[j] = x[j] > (REAL)0.0 ? g[j] * (REAL)SELU_SCALE : g[j] * ((REAL)(SELU_SCALE * SELU_ALPHA)) * EXP(x[j]);
        break;
    case ACT_SOFTSIGN:
        for (j = 0; j < n; j++) {
            REAL d = (REAL)1.0 + (x[j] < (REAL)0.0 ? -x[j] : x[j]);
            out[j] = g[j] / (d * d);
        }
        break;
    case ACT_EXPONENTIAL:
        for (j = 0; j < n; j++) out[j] = g[j] * y[j];
        break;
    case ACT_RELU6:
        for (j = 0; j < n; j++) out[j] = (y[j] > (REAL)0.0 && y[j] < (REAL)6.0) ? g[j] : (REAL)0.0;
        break;
    case ACT_LEAKY_RELU:
        for (j = 0; j < n; j++) out[j] = y[j] > (REAL)0.0 ? g[j] : g[j] * (REAL)0.2;
        break;
    case ACT_HARD_TANH:
        for (j = 0; j < n; j++) out[j] = (y[j] > -(REAL)1.0 && y[j] < (REAL)1.0) ? g[j] : (REAL)0.0;
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
 * The hidden-state half of a forward step for the rows of one batch:
 *   kept rows:   h_out = hcand, out_t = hcand;
 *   masked rows: h_out = h_prev, out_t = 0 (zero_out) or prev_out;
 *   and hm_out = h_out * mh (the recurrent dropout mask) for the next step's GEMM.
 * keep, out_t, prev_out, mh and hm_out may be NULL. hcand may alias h_out.
 */
static void NAME(finish_hidden)(long B, long P, const REAL *hcand, const REAL *h_prev, REAL *h_out, REAL *out_t,
                          const REAL *prev_out, const uint8_t *keep, int zero_out, const REAL *mh,
                          REAL *hm_out) {
    for (long b = 0; b < B; b++) {
        const long row = b * P;
        const int kept = keep == NULL || keep[b];
        if (kept) {
            if (h_out + row != hcand + row) memcpy(h_out + row, hcand + row, (size_t)P * sizeof(REAL));
            if (out_t != NULL) memcpy(out_t + row, hcand + row, (size_t)P * sizeof(REAL));
        } else {
            memcpy(h_out + row, h_prev + row, (size_t)P * sizeof(REAL));
            if (out_t != NULL) {
                if (zero_out || prev_out == NULL)
                    memset(out_t + row, 0, (size_t)P * sizeof(REAL));
                else
                    memcpy(out_t + row, prev_out + row, (size_t)P * sizeof(REAL));
            }
        }
        if (hm_out != NULL) {
            for (long j = 0; j < P; j++) hm_out[row + j] = h_out[row + j] * mh[row + j];
        }
    }
}

/*
 * One forward step. z (B, 4H) holds the gate pre-activations x W_ih^T + b + h_prev W_hh^T and is left
 * untouched (the backward recomputes the activations from it). For kept rows
 *   c_out = f * c_prev + i * g,   r = o * act(c_out);
 * without projection (r_out NULL) r is the new hidden state and finish_hidden runs here; with projection
 * r goes to r_out (zeros on masked rows) and the driver multiplies it by W_hr^T and calls finish.
 * scratch: 5H REALs.
 */
HOT static void NAME(forward_step)(long B, long H, long P, const REAL *z, const REAL *c_prev, REAL *c_out,
                             const REAL *h_prev, REAL *h_out, REAL *out_t, const REAL *prev_out,
                             const uint8_t *keep, int zero_out, const REAL *mh, REAL *hm_out, REAL *r_out,
                             REAL *scratch, int act, int ract) {
    REAL *gi = scratch, *gf = scratch + H, *gg = scratch + 2 * H;
    REAL *go = scratch + 3 * H, *ac = scratch + 4 * H;
    for (long b = 0; b < B; b++) {
        const REAL *zr = z + b * 4 * H;
        const REAL *restrict cp = c_prev + b * H;
        REAL *restrict cn = c_out + b * H;
        if (keep != NULL && !keep[b]) {
            memcpy(cn, cp, (size_t)H * sizeof(REAL));
            if (r_out != NULL) memset(r_out + b * H, 0, (size_t)H * sizeof(REAL));
            continue;
        }
        NAME(act_forward)(ract, zr, gi, 2 * H); /* i and f together */
        NAME(act_forward)(act, zr + 2 * H, gg, H);
        NAME(act_forward)(ract, zr + 3 * H, go, H);
        for (long j = 0; j < H; j++) cn[j] = gf[j] * cp[j] + gi[j] * gg[j];
        NAME(act_forward)(act, cn, ac, H);
        REAL *restrict r = r_out != NULL ? r_out + b * H : h_out + b * P;
        for (long j = 0; j < H; j++) r[j] = go[j] * ac[j];
    }
    if (r_out == NULL) NAME(finish_hidden)(B, P, h_out, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, hm_out);
}

/*
 * One backward step, in phases (bit flags):
 *   1 (tail of the previous step): dh = dh_tmp * mh on the rows kept at the previous step (dh_tmp =
 *     dz_prev W_hh, computed by the driver); masked rows keep dh, which passes through them unchanged.
 *   2 (head): dh_new = dh + gout (+ carry, for "previous" outputs) on kept rows, 0 on masked rows, into
 *     dh_new_out; carry becomes 0 on kept rows and gout + carry on masked rows.
 *   4 (cell): from dr (the gradient of r = o * act(c): dh_new without projection, dh_new W_hr with it) and
 *     dc, the gate gradients dz overwrite z (zeros on masked rows) and dc becomes dc_prev.
 * scratch: 10H REALs.
 */
HOT static void NAME(backward_step)(int phases, long B, long H, long P, REAL *z, const REAL *c_prev,
                              const REAL *c_new, REAL *dh, REAL *dc, const REAL *gout, REAL *carry,
                              const uint8_t *keep, REAL *dh_new_out, const REAL *dr, const REAL *dh_tmp,
                              const uint8_t *keep_prev, const REAL *mh, REAL *scratch, int act, int ract) {
    if (phases & 1) {
        for (long b = 0; b < B; b++) {
            if (keep_prev != NULL && !keep_prev[b]) continue;
            const long row = b * P;
            if (mh != NULL) {
                for (long j = 0; j < P; j++) dh[row + j] = dh_tmp[row + j] * mh[row + j];
            } else {
                memcpy(dh + row, dh_tmp + row, (size_t)P * sizeof(REAL));
            }
        }
    }
    if (phases & 2) {
        for (long b = 0; b < B; b++) {
            const long row = b * P;
            const int kept = keep == NULL || keep[b];
            REAL *restrict dn = dh_new_out + row;
            const REAL *restrict d = dh + row;
            const REAL *go = gout + row;
            if (kept) {
                if (carry != NULL) {
                    REAL *restrict cr = carry + row;
                    for (long j = 0; j < P; j++) {
                        dn[j] = d[j] + go[j] + cr[j];
                        cr[j] = (REAL)0.0;
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
        }
    }
    if (phases & 4) {
        REAL *yi = scratch, *yf = scratch + H, *yg = scratch + 2 * H;
        REAL *yo = scratch + 3 * H, *ac = scratch + 4 * H, *t1 = scratch + 5 * H;
        REAL *t2 = scratch + 6 * H, *di = scratch + 7 * H, *df = scratch + 8 * H;
        REAL *dg = scratch + 9 * H;
        for (long b = 0; b < B; b++) {
            REAL *zr = z + b * 4 * H;
            if (keep != NULL && !keep[b]) {
                memset(zr, 0, (size_t)4 * H * sizeof(REAL));
                continue;
            }
            const REAL *restrict cp = c_prev + b * H;
            const REAL *restrict cn = c_new + b * H;
            const REAL *restrict d = dr + b * H;
            REAL *restrict dcr = dc + b * H;
            NAME(act_forward)(ract, zr, yi, 2 * H); /* yi and yf */
            NAME(act_forward)(act, zr + 2 * H, yg, H);
            NAME(act_forward)(ract, zr + 3 * H, yo, H);
            NAME(act_forward)(act, cn, ac, H);
            for (long j = 0; j < H; j++) t1[j] = d[j] * yo[j]; /* the gradient reaching act(c) */
            NAME(act_backward)(act, cn, ac, t1, t2, H);              /* t2 = dr * o * act'(c) */
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
        }
    }
}

