/*
 * The cell variants' loops (unilstm/spec.py's equations: layer normalisation, peepholes, gate / cell /
 * projection clips, coupled gates, zoneout, forget bias, a separate output activation, ONNX's parametric
 * activations), written once for REAL and included by _lstm_cell.c after _lstm_cell_body.h, whose
 * helpers (act_forward, act_backward, finish_hidden_rows, product, gate_products, operand_pack, step_keep)
 * they use. The standard cell never comes here: its loops in _lstm_cell_body.h are unchanged.
 *
 * VHOT (the row functions) and VACT (the activation passes, called from the general rows) are target clones
 * for float32 and plain functions for float64 (checking, no speed goal): the clones of every inlined
 * activation in every row function would triple the build time.
 *
 * Per step and kept row (gate blocks [i, f, g, o]; Z_t holds LN_ih(x_t W_ih^T) + b_ih + b_hh on entry):
 *   rec = h_{t-1} W_hh^T;  r = LN_hh(rec) (else rec);  z = Z_t + r;  z_f += forget_bias;
 *   z_i += p_i c_{t-1};  z_f += p_f c_{t-1};  i = s(clip z_i);  f = 1 - i (coupled) or s(clip z_f);
 *   cc = f c_{t-1} + i g(clip z_g);  c~ = clip(cc, cell_clip);  z_o += p_o c~;  o = s(clip z_o);
 *   h~ = o g_out(LN_c(c~));  (projection: h~ = clip(h~ W_hr^T, proj_clip));
 *   c_t = zc c_{t-1} + (1 - zc) c~;  h_t = zh h_{t-1} + (1 - zh) h~
 * Z_t keeps the final pre-activations (unclipped); the histories keep what the backward reads: CC (the
 * unclipped cc), RHAT / RRSTD (the normalised rec and its 1 / sqrt(var + eps)), CHAT / CRSTD (the same for
 * c~), HPU (the unclipped projection), R (h~ before the projection). A history pointer may be NULL when
 * nothing will read it (inference). Masked rows zero their history rows (the backward multiplies them by
 * zero gradients, and uninitialised memory could hold nan).
 */

/* y = f(x) for the C ids and the parametric kinds (alpha a, beta bb) */
VACT static void NAME(vact_forward)(int act, REAL a, REAL bb, const REAL *restrict x,
                                                    REAL *restrict y, long n) {
    long j;
    switch (act) {
    case PACT_AFFINE:
        for (j = 0; j < n; j++) y[j] = x[j] * a + bb;
        break;
    case PACT_LEAKY_RELU:
        for (j = 0; j < n; j++) y[j] = x[j] > (REAL)0.0 ? x[j] : x[j] * a;
        break;
    case PACT_THRESHOLDED_RELU:
        for (j = 0; j < n; j++) y[j] = x[j] > a ? x[j] : (REAL)0.0;
        break;
    case PACT_SCALED_TANH:
        for (j = 0; j < n; j++) y[j] = TANH(x[j] * bb) * a;
        break;
    case PACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            REAL v = x[j] * a + bb;
            y[j] = v < (REAL)0.0 ? (REAL)0.0 : (v > (REAL)1.0 ? (REAL)1.0 : v);
        }
        break;
    case PACT_ELU:
        for (j = 0; j < n; j++) y[j] = x[j] > (REAL)0.0 ? x[j] : a * (EXP(x[j]) - (REAL)1.0);
        break;
    default:
        NAME(act_forward)(act, x, y, n);
        break;
    }
}

/* out = g * f'(x), with y = f(x); the derivatives autograd takes of ParametricActivation's torch ops */
VACT static void NAME(vact_backward)(int act, REAL a, REAL bb, const REAL *x, const REAL *y,
                                                     const REAL *g, REAL *out, long n) {
    long j;
    switch (act) {
    case PACT_AFFINE:
        for (j = 0; j < n; j++) out[j] = g[j] * a;
        break;
    case PACT_LEAKY_RELU:
        for (j = 0; j < n; j++) out[j] = x[j] > (REAL)0.0 ? g[j] : g[j] * a;
        break;
    case PACT_THRESHOLDED_RELU:
        for (j = 0; j < n; j++) out[j] = x[j] > a ? g[j] : (REAL)0.0;
        break;
    case PACT_SCALED_TANH:
        for (j = 0; j < n; j++) {
            const REAL t = TANH(x[j] * bb);
            out[j] = g[j] * a * ((REAL)1.0 - t * t) * bb;
        }
        break;
    case PACT_HARD_SIGMOID:
        for (j = 0; j < n; j++) {
            const REAL v = x[j] * a + bb; /* clamp passes the gradient where 0 <= v <= 1 */
            out[j] = (v >= (REAL)0.0 && v <= (REAL)1.0) ? g[j] * a : (REAL)0.0;
        }
        break;
    case PACT_ELU:
        for (j = 0; j < n; j++) out[j] = x[j] > (REAL)0.0 ? g[j] : g[j] * a * EXP(x[j]);
        break;
    default:
        NAME(act_backward)(act, x, y, g, out, n);
        break;
    }
}

/* dst = clip(src, -bound, bound) (a copy when there is no bound) */
ALWAYS_INLINE static inline void NAME(vclip)(int on, REAL bound, const REAL *src, REAL *dst,
                                             long n) {
    if (!on) {
        if (src != dst) memcpy(dst, src, (size_t)n * sizeof(REAL));
        return;
    }
    for (long j = 0; j < n; j++) dst[j] = src[j] < -bound ? -bound : (src[j] > bound ? bound : src[j]);
}

/* g[j] = 0 where src[j] lies outside [-bound, bound] (torch.clamp's gradient) */
ALWAYS_INLINE static inline void NAME(vclip_grad)(int on, REAL bound, const REAL *restrict src, REAL *restrict g,
                                                  long n) {
    if (!on) return;
    for (long j = 0; j < n; j++) g[j] = (src[j] >= -bound && src[j] <= bound) ? g[j] : (REAL)0.0;
}

/* the normalisations' sums over a row in VLANES partial sums: one running sum waits for each add to finish
 * (a 4-cycle chain per element); independent lanes vectorise and overlap */
#ifndef VLANES
#define VLANES 16
#endif

/* sum of v[0, n) */
ALWAYS_INLINE static inline REAL NAME(vsum)(const REAL *restrict v, long n) {
    REAL acc[VLANES] = {0};
    long j = 0;
    for (; j + VLANES <= n; j += VLANES)
        for (int k = 0; k < VLANES; k++) acc[k] += v[j + k];
    for (; j < n; j++) acc[0] += v[j];
    REAL s = 0;
    for (int k = 0; k < VLANES; k++) s += acc[k];
    return s;
}

/* sum of (v - m)^2 over v[0, n) */
ALWAYS_INLINE static inline REAL NAME(vsumsq)(const REAL *restrict v, REAL m, long n) {
    REAL acc[VLANES] = {0};
    long j = 0;
    for (; j + VLANES <= n; j += VLANES)
        for (int k = 0; k < VLANES; k++) {
            const REAL d = v[j + k] - m;
            acc[k] += d * d;
        }
    for (; j < n; j++) acc[0] += (v[j] - m) * (v[j] - m);
    REAL s = 0;
    for (int k = 0; k < VLANES; k++) s += acc[k];
    return s;
}

/* (v - mean) / sqrt(var + eps) into hat (biased variance); returns 1 / sqrt(var + eps) */
ALWAYS_INLINE static inline REAL NAME(vnormalise)(const REAL *restrict v, REAL *restrict hat, long n, REAL eps) {
    const REAL mean = NAME(vsum)(v, n) / (REAL)n;
    const REAL var = NAME(vsumsq)(v, mean, n) / (REAL)n;
    const REAL rstd = (REAL)1.0 / (REAL)sqrt((double)(var + eps));
    for (long j = 0; j < n; j++) hat[j] = (v[j] - mean) * rstd;
    return rstd;
}

/* sums of gain dy and gain dy hat over [0, n) (the layer normalisation's backward), in VLANES partial sums;
 * one loop per sum: GCC vectorises a single array of partial sums, not two in one loop (10x slower, 760
 * against 63 ns for 512 floats) */
ALWAYS_INLINE static inline void NAME(vgrad_sums)(const REAL *restrict dy, const REAL *restrict hat,
                                                  const REAL *restrict gain, long n, REAL *s1, REAL *s2) {
    REAL a1[VLANES] = {0}, a2[VLANES] = {0};
    long j = 0;
    for (; j + VLANES <= n; j += VLANES)
        for (int k = 0; k < VLANES; k++) a1[k] += gain[j + k] * dy[j + k];
    for (; j < n; j++) a1[0] += gain[j] * dy[j];
    for (j = 0; j + VLANES <= n; j += VLANES)
        for (int k = 0; k < VLANES; k++) a2[k] += gain[j + k] * dy[j + k] * hat[j + k];
    for (; j < n; j++) a2[0] += gain[j] * dy[j] * hat[j];
    REAL m1 = 0, m2 = 0;
    for (int k = 0; k < VLANES; k++) {
        m1 += a1[k];
        m2 += a2[k];
    }
    *s1 += m1;
    *s2 += m2;
}

/* dv = rstd (gain dy - mean(gain dy) - hat mean(gain dy hat)): the layer normalisation's input gradient */
ALWAYS_INLINE static inline void NAME(vnormalise_grad)(const REAL *restrict dy, const REAL *restrict hat,
                                                       const REAL *restrict gain, REAL rstd, REAL *restrict dv,
                                                       long n) {
    REAL m1 = 0, m2 = 0;
    NAME(vgrad_sums)(dy, hat, gain, n, &m1, &m2);
    m1 /= (REAL)n;
    m2 /= (REAL)n;
    for (long j = 0; j < n; j++) dv[j] = rstd * (gain[j] * dy[j] - m1 - hat[j] * m2);
}

typedef struct {
    long T, B, H, P;
    int reverse, zero_out, n_masks, threads, trans_w, flags, act, ract, oact;
    REAL fp[FP_COUNT];
    REAL *Z, *Hp, *Cp, *Obuf, *hnext, *hm_hist, *rec, *R, *rbuf, *hcand, *scratch;
    const uint8_t *keep;
    const REAL *mh, *Wrec, *Whr, *zeros, *h0, *c0, *peep, *g_hh, *b_hh, *g_c, *b_c, *ZH, *ZC, *g_ih, *xbias;
    REAL *RHAT, *RRSTD, *CC, *CHAT, *CRSTD, *HPU, *XHAT, *XRSTD;
    long ostride;
} NAME(vfwd_t);

/* the zoneout weight of element j of row b at step t: the (T, B, N) draws or the scalar */
#define VZONE(tensor, scalar, t, b, N, j) ((tensor) != NULL ? (tensor)[((t) * B + (b)) * (N) + (j)] : (scalar))

/*
 * Single-pass rows for the variants without layer normalisation whose activations are (tanh, sigmoid) or
 * (relu, sigmoid) with g_out = g, as the standard cell's fused rows (_lstm_cell_body.h): one loop over the
 * hidden units, inlined with constant activation ids and peephole / coupled flags so that each vectorises.
 * The other variants enter branch-free: the clips with a bound of inf when off (clip(x, -inf, inf) = x),
 * the forget bias as a number (0 when off) and zoneout as a weight row (the draws, or the rate repeated;
 * c~ + 0 (c_prev - c~) = c~). vfused_ok says which runs take them.
 */
static inline int NAME(vfused_ok)(int flags, int act, int ract, int oact) {
    return !(flags & VF_LAYER_NORM) && ract == ACT_SIGMOID && (act == ACT_TANH || act == ACT_RELU) && oact == act;
}

/* LN_ih of one row in place: z = (z - mean) rstd g + bias (bias: LN_ih's own plus b_ih + b_hh); xhat
 * (NULL in inference) keeps the normalised values; returns rstd */
ALWAYS_INLINE static inline REAL NAME(vln_input_row)(REAL *restrict z, REAL *restrict xhat, const REAL *restrict g,
                                                    const REAL *restrict bias, long n, REAL eps) {
    const REAL mean = NAME(vsum)(z, n) / (REAL)n;
    const REAL rstd = (REAL)1.0 / (REAL)sqrt((double)(NAME(vsumsq)(z, mean, n) / (REAL)n + eps));
    if (xhat != NULL) {
        for (long j = 0; j < n; j++) {
            const REAL v = (z[j] - mean) * rstd;
            xhat[j] = v;
            z[j] = v * g[j] + bias[j];
        }
    } else {
        for (long j = 0; j < n; j++) z[j] = (z[j] - mean) * rstd * g[j] + bias[j];
    }
    return rstd;
}

/* LN_ih's backward of one row: xhat becomes the gradient of its input from dz; acc sums dz xhat (the gain's) */
ALWAYS_INLINE static inline void NAME(vln_input_grad)(const REAL *restrict dz, REAL *restrict xhat,
                                                     const REAL *restrict g, REAL rstd, REAL *restrict acc,
                                                     long n) {
    REAL m1 = 0, m2 = 0;
    NAME(vgrad_sums)(dz, xhat, g, n, &m1, &m2);
    m1 /= (REAL)n;
    m2 /= (REAL)n;
    for (long j = 0; j < n; j++) {
        const REAL v = xhat[j];
        acc[j] += dz[j] * v;
        xhat[j] = rstd * (g[j] * dz[j] - m1 - v * m2);
    }
}

/* the single-pass rows of layer normalisation (vln_forward_row): the same activations */
static inline int NAME(vln_fused_ok)(int flags, int act, int ract, int oact) {
    return (flags & VF_LAYER_NORM) && ract == ACT_SIGMOID && (act == ACT_TANH || act == ACT_RELU) && oact == act;
}

ALWAYS_INLINE static inline REAL NAME(vclamp)(REAL x, REAL bound) { return x < -bound ? -bound : (x > bound ? bound : x); }

/* clamp's gradient: g where -bound <= x <= bound, else 0 */
ALWAYS_INLINE static inline REAL NAME(vpass)(REAL x, REAL bound, REAL g) {
    return (x >= -bound && x <= bound) ? g : (REAL)0.0;
}

/* one row forward: z (4H) gets rec, the forget bias and the peepholes (the final pre-activations); cc the
 * unclipped cell candidate, co c_t (zoneout weights zw), hc = o g(c~) */
ALWAYS_INLINE static inline void NAME(vfused_forward_row)(int act, int peep, int coupled, long H, REAL *restrict zr,
                                                         const REAL *restrict r0, const REAL *restrict r1,
                                                         const REAL *restrict r2, const REAL *restrict r3,
                                                         const REAL *restrict cp, REAL *restrict cc,
                                                         REAL *restrict co, REAL *restrict hc,
                                                         const REAL *restrict pw, REAL fbias, REAL gb, REAL cb,
                                                         const REAL *restrict zw) {
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        REAL zi = zr[j] + r0[j], zf = zr[H + j] + r1[j] + fbias;
        const REAL zg = zr[2 * H + j] + r2[j];
        if (peep) {
            zi += pw[j] * cp[j];
            zf += pw[H + j] * cp[j];
        }
        const REAL i = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zi, gb));
        const REAL f = coupled ? (REAL)1.0 - i : NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zf, gb));
        const REAL c = f * cp[j] + i * NAME(act_one)(act, NAME(vclamp)(zg, gb));
        const REAL ct = NAME(vclamp)(c, cb);
        REAL zo = zr[3 * H + j] + r3[j];
        if (peep) zo += pw[2 * H + j] * ct;
        zr[j] = zi;
        zr[H + j] = zf;
        zr[2 * H + j] = zg;
        zr[3 * H + j] = zo;
        cc[j] = c;
        co[j] = ct + zw[j] * (cp[j] - ct);
        hc[j] = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zo, gb)) * NAME(act_one)(act, ct);
    }
}

/* one row backward: from d (the gradient of h~) and dc (of c_t; becomes that of c_{t-1}), z becomes dz */
ALWAYS_INLINE static inline void NAME(vfused_backward_row)(int act, int peep, int coupled, long H, REAL *restrict zr,
                                                          const REAL *restrict cp, const REAL *restrict cc,
                                                          const REAL *restrict d, REAL *restrict dcr,
                                                          const REAL *restrict pw, REAL gb, REAL cb,
                                                          const REAL *restrict zw, REAL *restrict ap) {
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL zi = zr[j], zf = zr[H + j], zg = zr[2 * H + j], zo = zr[3 * H + j];
        const REAL yi = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zi, gb));
        const REAL yf = coupled ? (REAL)1.0 - yi : NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zf, gb));
        const REAL yg = NAME(act_one)(act, NAME(vclamp)(zg, gb));
        const REAL yo = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zo, gb));
        const REAL ct = NAME(vclamp)(cc[j], cb);
        const REAL ac = NAME(act_one)(act, ct);
        const REAL dzo = NAME(vpass)(zo, gb, NAME(act_grad_one)(ACT_SIGMOID, yo, d[j] * ac));
        REAL dct = NAME(act_grad_one)(act, ac, d[j] * yo) + ((REAL)1.0 - zw[j]) * dcr[j];
        if (peep) dct += dzo * pw[2 * H + j];
        dct = NAME(vpass)(cc[j], cb, dct); /* the gradient of the unclipped candidate */
        const REAL di = coupled ? dct * (yg - cp[j]) : dct * yg;
        const REAL dzi = NAME(vpass)(zi, gb, NAME(act_grad_one)(ACT_SIGMOID, yi, di));
        const REAL dzf = coupled ? (REAL)0.0 : NAME(vpass)(zf, gb, NAME(act_grad_one)(ACT_SIGMOID, yf, dct * cp[j]));
        const REAL dzg = NAME(vpass)(zg, gb, NAME(act_grad_one)(act, yg, dct * yi));
        REAL dcp = zw[j] * dcr[j] + dct * yf;
        if (peep) { /* dcp, and the peepholes' gradients summed over the thread's rows */
            dcp += dzi * pw[j] + dzf * pw[H + j];
            ap[j] += dzi * cp[j];
            ap[H + j] += dzf * cp[j];
            ap[2 * H + j] += dzo * ct;
        }
        dcr[j] = dcp;
        zr[j] = dzi;
        zr[H + j] = dzf;
        zr[2 * H + j] = dzg;
        zr[3 * H + j] = dzo;
    }
}

/* the fused rows with their constant arguments: act (tanh or relu), peepholes, coupled gates */
#define VFUSED_CALL(fn, act, peep, coupled, ...)                                  \
    do {                                                                          \
        if ((act) == ACT_TANH) {                                                  \
            if (peep) {                                                           \
                if (coupled) fn(ACT_TANH, 1, 1, __VA_ARGS__);                     \
                else fn(ACT_TANH, 1, 0, __VA_ARGS__);                             \
            } else {                                                              \
                if (coupled) fn(ACT_TANH, 0, 1, __VA_ARGS__);                     \
                else fn(ACT_TANH, 0, 0, __VA_ARGS__);                             \
            }                                                                     \
        } else {                                                                  \
            if (peep) {                                                           \
                if (coupled) fn(ACT_RELU, 1, 1, __VA_ARGS__);                     \
                else fn(ACT_RELU, 1, 0, __VA_ARGS__);                             \
            } else {                                                              \
                if (coupled) fn(ACT_RELU, 0, 1, __VA_ARGS__);                     \
                else fn(ACT_RELU, 0, 0, __VA_ARGS__);                             \
            }                                                                     \
        }                                                                         \
    } while (0)

/*
 * Single-pass rows of layer normalisation (the activations of vfused_ok): per row, the statistics of rec
 * (4H, in partial sums), one fused loop over the hidden units (LN_hh, the gates, c and its clip, zoneout of
 * c, the cell's normalisation input), the statistics of c~ and one loop for LN_c and h~. rhat (4H), chat and
 * ctb (H) receive the normalised rec, the normalised c~ and c~.
 */
ALWAYS_INLINE static inline void NAME(vln_forward_row)(int act, int peep, int coupled, long H, REAL *restrict zr,
                                                      const REAL *restrict r0, const REAL *restrict r1,
                                                      const REAL *restrict r2, const REAL *restrict r3,
                                                      const REAL *restrict ghh, const REAL *restrict bhh,
                                                      REAL *restrict rhat, REAL *rrstd, const REAL *restrict cp,
                                                      REAL *restrict cc, REAL *restrict co, REAL *restrict ctb,
                                                      REAL *restrict chat, REAL *crstd, const REAL *restrict gc,
                                                      const REAL *restrict bc, REAL *restrict hc,
                                                      const REAL *restrict pw, REAL fbias, REAL gb, REAL cb,
                                                      const REAL *restrict zw, REAL eps) {
    const REAL G = (REAL)(4 * H);
    const REAL mean = (NAME(vsum)(r0, H) + NAME(vsum)(r1, H) + NAME(vsum)(r2, H) + NAME(vsum)(r3, H)) / G;
    const REAL var = (NAME(vsumsq)(r0, mean, H) + NAME(vsumsq)(r1, mean, H) + NAME(vsumsq)(r2, mean, H) +
                      NAME(vsumsq)(r3, mean, H)) / G;
    const REAL rstd = (REAL)1.0 / (REAL)sqrt((double)(var + eps));
    *rrstd = rstd;
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL hi = (r0[j] - mean) * rstd, hf = (r1[j] - mean) * rstd;
        const REAL hg = (r2[j] - mean) * rstd, ho = (r3[j] - mean) * rstd;
        rhat[j] = hi;
        rhat[H + j] = hf;
        rhat[2 * H + j] = hg;
        rhat[3 * H + j] = ho;
        REAL zi = zr[j] + hi * ghh[j] + bhh[j];
        REAL zf = zr[H + j] + hf * ghh[H + j] + bhh[H + j] + fbias;
        const REAL zg = zr[2 * H + j] + hg * ghh[2 * H + j] + bhh[2 * H + j];
        REAL zo = zr[3 * H + j] + ho * ghh[3 * H + j] + bhh[3 * H + j];
        if (peep) {
            zi += pw[j] * cp[j];
            zf += pw[H + j] * cp[j];
        }
        const REAL i = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zi, gb));
        const REAL f = coupled ? (REAL)1.0 - i : NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zf, gb));
        const REAL c = f * cp[j] + i * NAME(act_one)(act, NAME(vclamp)(zg, gb));
        const REAL ct = NAME(vclamp)(c, cb);
        if (peep) zo += pw[2 * H + j] * ct;
        zr[j] = zi;
        zr[H + j] = zf;
        zr[2 * H + j] = zg;
        zr[3 * H + j] = zo;
        cc[j] = c;
        ctb[j] = ct;
        co[j] = ct + zw[j] * (cp[j] - ct);
    }
    const REAL cm = NAME(vsum)(ctb, H) / (REAL)H;
    const REAL cs = (REAL)1.0 / (REAL)sqrt((double)(NAME(vsumsq)(ctb, cm, H) / (REAL)H + eps));
    *crstd = cs;
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL ch = (ctb[j] - cm) * cs;
        chat[j] = ch;
        hc[j] = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zr[3 * H + j], gb)) * NAME(act_one)(act, ch * gc[j] + bc[j]);
    }
}

/*
 * The backward of vln_forward_row: from d (the gradient of h~) and dcr (of c_t; becomes that of c_{t-1}), z
 * becomes dz and d0..d3 receive the gradient of rec (LN_hh's backward of dz). tmp: H scratch. acc (per
 * thread, summed over its rows): [the peepholes' 3H][LN_hh's gain 4H][LN_c's gain H][LN_c's bias H].
 */
ALWAYS_INLINE static inline void NAME(vln_backward_row)(int act, int peep, int coupled, long H, REAL *restrict zr,
                                                       const REAL *restrict cp, const REAL *restrict cc,
                                                       const REAL *restrict chat, REAL crstd,
                                                       const REAL *restrict gc, const REAL *restrict bc,
                                                       const REAL *restrict d, REAL *restrict dcr,
                                                       const REAL *restrict pw, REAL gb, REAL cb,
                                                       const REAL *restrict zw, const REAL *restrict rhat,
                                                       REAL rrstd, const REAL *restrict ghh, REAL *restrict d0,
                                                       REAL *restrict d1, REAL *restrict d2, REAL *restrict d3,
                                                       REAL *restrict tmp, REAL *restrict acc) {
    REAL *restrict ap = acc, *restrict agh = acc + 3 * H, *restrict agc = acc + 7 * H, *restrict abc = acc + 8 * H;
#pragma GCC ivdep
    for (long j = 0; j < H; j++) { /* the output gate and LN_c's output */
        const REAL zo = zr[3 * H + j];
        const REAL yo = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zo, gb));
        const REAL ac = NAME(act_one)(act, chat[j] * gc[j] + bc[j]);
        const REAL dcn = NAME(act_grad_one)(act, ac, d[j] * yo);
        tmp[j] = dcn;
        agc[j] += dcn * chat[j];
        abc[j] += dcn;
        zr[3 * H + j] = NAME(vpass)(zo, gb, NAME(act_grad_one)(ACT_SIGMOID, yo, d[j] * ac));
    }
    REAL m1 = 0, m2 = 0;
    NAME(vgrad_sums)(tmp, chat, gc, H, &m1, &m2);
    m1 /= (REAL)H;
    m2 /= (REAL)H;
#pragma GCC ivdep
    for (long j = 0; j < H; j++) {
        const REAL zi = zr[j], zf = zr[H + j], zg = zr[2 * H + j], dzo = zr[3 * H + j];
        const REAL yi = NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zi, gb));
        const REAL yf = coupled ? (REAL)1.0 - yi : NAME(act_one)(ACT_SIGMOID, NAME(vclamp)(zf, gb));
        const REAL yg = NAME(act_one)(act, NAME(vclamp)(zg, gb));
        REAL dct = crstd * (gc[j] * tmp[j] - m1 - chat[j] * m2) + ((REAL)1.0 - zw[j]) * dcr[j];
        if (peep) dct += dzo * pw[2 * H + j];
        dct = NAME(vpass)(cc[j], cb, dct);
        const REAL di = coupled ? dct * (yg - cp[j]) : dct * yg;
        const REAL dzi = NAME(vpass)(zi, gb, NAME(act_grad_one)(ACT_SIGMOID, yi, di));
        const REAL dzf = coupled ? (REAL)0.0 : NAME(vpass)(zf, gb, NAME(act_grad_one)(ACT_SIGMOID, yf, dct * cp[j]));
        const REAL dzg = NAME(vpass)(zg, gb, NAME(act_grad_one)(act, yg, dct * yi));
        REAL dcp = zw[j] * dcr[j] + dct * yf;
        if (peep) {
            dcp += dzi * pw[j] + dzf * pw[H + j];
            ap[j] += dzi * cp[j];
            ap[H + j] += dzf * cp[j];
            ap[2 * H + j] += dzo * NAME(vclamp)(cc[j], cb);
        }
        dcr[j] = dcp;
        zr[j] = dzi;
        zr[H + j] = dzf;
        zr[2 * H + j] = dzg;
    }
    REAL n1 = 0, n2 = 0; /* LN_hh's backward over the 4H gate gradients */
    NAME(vgrad_sums)(zr, rhat, ghh, 4 * H, &n1, &n2);
    n1 /= (REAL)(4 * H);
    n2 /= (REAL)(4 * H);
    REAL *restrict dk[4] = {d0, d1, d2, d3};
    for (int k = 0; k < 4; k++) {
        const REAL *restrict zk = zr + k * H, *restrict hk = rhat + k * H, *restrict gk = ghh + k * H;
        REAL *restrict out = dk[k], *restrict ak = agh + k * H;
#pragma GCC ivdep
        for (long j = 0; j < H; j++) {
            out[j] = rrstd * (gk[j] * zk[j] - n1 - hk[j] * n2);
            ak[j] += zk[j] * hk[j];
        }
    }
}

/* one forward step's cell on rows [b0, b1): scratch 12H */
VHOT static void NAME(vfwd_rows)(const NAME(vfwd_t) * p, long t, const uint8_t *kp, long b0, long b1,
                                REAL *scratch) {
    const long B = p->B, H = p->H, P = p->P, G = 4 * H;
    const long hi = p->reverse ? t + 1 : t, ho = p->reverse ? t : t + 1;
    const int ln = p->flags & VF_LAYER_NORM, peep = p->flags & VF_PEEPHOLES, gclip = p->flags & VF_GATE_CLIP;
    const int cclip = p->flags & VF_CELL_CLIP, coupled = p->flags & VF_COUPLED, proj = p->Whr != NULL;
    const REAL *fp = p->fp;
    REAL *restrict rr = scratch, *restrict zc4 = scratch + G, *restrict y4 = scratch + 2 * G;
    REAL *restrict ct = scratch + 3 * G, *restrict cn = ct + H, *restrict ac = cn + H, *restrict cc = ac + H;
    const size_t bytes = (size_t)H * sizeof(REAL);
    const int fused = NAME(vfused_ok)(p->flags, p->act, p->ract, p->oact);
    const int lnfused = NAME(vln_fused_ok)(p->flags, p->act, p->ract, p->oact);
    const REAL gb = gclip ? fp[FP_GATE_CLIP] : (REAL)INFINITY, cb = cclip ? fp[FP_CELL_CLIP] : (REAL)INFINITY;
    REAL *zfill = cc + H; /* the zoneout rate repeated (a weight row) */
    if (fused || lnfused) {
        for (long j = 0; j < H; j++) zfill[j] = fp[FP_ZC];
    }
    for (long b = b0; b < b1; b++) {
        const REAL *restrict cp = p->Cp + (hi * B + b) * H;
        REAL *restrict co = p->Cp + (ho * B + b) * H;
        const long row = t * B + b;
        if (kp != NULL && !kp[b]) {
            memcpy(co, cp, bytes);
            if (p->RHAT != NULL) memset(p->RHAT + row * G, 0, 4 * bytes);
            if (p->CC != NULL) memset(p->CC + row * H, 0, bytes);
            if (p->CHAT != NULL) memset(p->CHAT + row * H, 0, bytes);
            if (p->XHAT != NULL) memset(p->XHAT + row * G, 0, 4 * bytes);
            if (proj) {
                memset(p->rbuf + b * H, 0, bytes);
                if (p->R != NULL) memset(p->R + row * H, 0, bytes);
            }
            continue;
        }
        REAL *restrict z = p->Z + row * G;
        if (p->g_ih != NULL) { /* LN_ih of the row's input part (X W_ih^T on entry) */
            const REAL rs = NAME(vln_input_row)(z, p->XHAT != NULL ? p->XHAT + row * G : NULL, p->g_ih, p->xbias, G,
                                                fp[FP_EPS]);
            if (p->XRSTD != NULL) p->XRSTD[row] = rs;
        }
        if (lnfused) {
            const REAL *rk[4];
            for (int k = 0; k < 4; k++) rk[k] = p->n_masks == 4 ? p->rec + (k * B + b) * H : p->rec + b * G + k * H;
            REAL *hc = proj ? p->rbuf + b * H : p->Hp + (ho * B + b) * P;
            REAL *ccr = p->CC != NULL ? p->CC + row * H : cc;
            const REAL *zw = p->ZC != NULL ? p->ZC + row * H : zfill;
            REAL rs, cs;
            VFUSED_CALL(NAME(vln_forward_row), p->act, peep, coupled, H, z, rk[0], rk[1], rk[2], rk[3], p->g_hh,
                        p->b_hh, p->RHAT != NULL ? p->RHAT + row * G : y4, &rs, cp, ccr, co, ct,
                        p->CHAT != NULL ? p->CHAT + row * H : cn, &cs, p->g_c, p->b_c, hc, p->peep,
                        fp[FP_FORGET_BIAS], gb, cb, zw, fp[FP_EPS]);
            if (p->RRSTD != NULL) p->RRSTD[row] = rs;
            if (p->CRSTD != NULL) p->CRSTD[row] = cs;
            if (proj) {
                if (p->R != NULL) memcpy(p->R + row * H, hc, bytes);
            } else if (p->ZH != NULL || fp[FP_ZH] != (REAL)0.0) {
                const REAL *restrict hp = p->Hp + (hi * B + b) * P;
                for (long j = 0; j < H; j++) hc[j] = hc[j] + VZONE(p->ZH, fp[FP_ZH], t, b, P, j) * (hp[j] - hc[j]);
            }
            continue;
        }
        if (fused) {
            const REAL *rk[4];
            for (int k = 0; k < 4; k++) rk[k] = p->n_masks == 4 ? p->rec + (k * B + b) * H : p->rec + b * G + k * H;
            REAL *hc = proj ? p->rbuf + b * H : p->Hp + (ho * B + b) * P;
            REAL *ccr = p->CC != NULL ? p->CC + row * H : cc;
            const REAL *zw = p->ZC != NULL ? p->ZC + row * H : zfill;
            VFUSED_CALL(NAME(vfused_forward_row), p->act, peep, coupled, H, z, rk[0], rk[1], rk[2], rk[3], cp, ccr, co,
                        hc, p->peep, fp[FP_FORGET_BIAS], gb, cb, zw);
            if (proj) {
                if (p->R != NULL) memcpy(p->R + row * H, hc, bytes);
            } else if (p->ZH != NULL || fp[FP_ZH] != (REAL)0.0) {
                const REAL *restrict hp = p->Hp + (hi * B + b) * P;
                for (long j = 0; j < H; j++) hc[j] = hc[j] + VZONE(p->ZH, fp[FP_ZH], t, b, P, j) * (hp[j] - hc[j]);
            }
            continue;
        }
        if (p->n_masks == 4 || ln) {
            for (int k = 0; k < 4; k++) /* the recurrent products of this row, in [i, f, g, o] order */
                memcpy(rr + k * H, p->n_masks == 4 ? p->rec + (k * B + b) * H : p->rec + b * G + k * H, bytes);
        }
        if (ln) {
            REAL *hat = p->RHAT != NULL ? p->RHAT + row * G : y4;
            const REAL rstd = NAME(vnormalise)(rr, hat, G, fp[FP_EPS]);
            if (p->RRSTD != NULL) p->RRSTD[row] = rstd;
            for (long j = 0; j < G; j++) z[j] += hat[j] * p->g_hh[j] + p->b_hh[j];
        } else {
            const REAL *restrict rk = p->n_masks == 4 ? rr : p->rec + b * G;
            for (long j = 0; j < G; j++) z[j] += rk[j];
        }
        REAL *restrict zi = z, *restrict zf = z + H, *restrict zo = z + 3 * H;
        if (fp[FP_FORGET_BIAS] != (REAL)0.0)
            for (long j = 0; j < H; j++) zf[j] += fp[FP_FORGET_BIAS];
        if (peep) {
            for (long j = 0; j < H; j++) {
                zi[j] += p->peep[j] * cp[j];
                zf[j] += p->peep[H + j] * cp[j];
            }
        }
        const REAL *zc = gclip ? zc4 : z; /* the clipped pre-activations (z itself without a clip) */
        NAME(vclip)(gclip, fp[FP_GATE_CLIP], z, zc4, 3 * H);
        REAL *restrict yi = y4, *restrict yf = y4 + H, *restrict yg = y4 + 2 * H, *restrict yo = y4 + 3 * H;
        NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc, yi, H);
        if (coupled)
            for (long j = 0; j < H; j++) yf[j] = (REAL)1.0 - yi[j];
        else
            NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + H, yf, H);
        NAME(vact_forward)(p->act, fp[FP_ACT_A], fp[FP_ACT_B], zc + 2 * H, yg, H);
        REAL *ccr = p->CC != NULL ? p->CC + row * H : cc; /* (the history keeps it) */
        for (long j = 0; j < H; j++) ccr[j] = yf[j] * cp[j] + yi[j] * yg[j];
        const REAL *ctr = cclip ? ct : ccr; /* c~ */
        NAME(vclip)(cclip, fp[FP_CELL_CLIP], ccr, ct, H);
        if (peep)
            for (long j = 0; j < H; j++) zo[j] += p->peep[2 * H + j] * ctr[j];
        NAME(vclip)(gclip, fp[FP_GATE_CLIP], zo, zc4 + 3 * H, H);
        NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + 3 * H, yo, H);
        if (p->ZC != NULL) {
            const REAL *restrict zw = p->ZC + row * H;
            for (long j = 0; j < H; j++) co[j] = ctr[j] + zw[j] * (cp[j] - ctr[j]);
        } else if (fp[FP_ZC] != (REAL)0.0) {
            const REAL zw = fp[FP_ZC];
            for (long j = 0; j < H; j++) co[j] = ctr[j] + zw * (cp[j] - ctr[j]);
        } else {
            memcpy(co, ctr, bytes);
        }
        const REAL *cnr = ctr; /* the output activation's input: LN_c(c~), or c~ */
        if (ln) {
            REAL *hat = p->CHAT != NULL ? p->CHAT + row * H : cn;
            const REAL rstd = NAME(vnormalise)(ctr, hat, H, fp[FP_EPS]);
            if (p->CRSTD != NULL) p->CRSTD[row] = rstd;
            for (long j = 0; j < H; j++) cn[j] = hat[j] * p->g_c[j] + p->b_c[j];
            cnr = cn;
        }
        NAME(vact_forward)(p->oact, fp[FP_OACT_A], fp[FP_OACT_B], cnr, ac, H);
        REAL *restrict hc = proj ? p->rbuf + b * H : p->Hp + (ho * B + b) * P;
        for (long j = 0; j < H; j++) hc[j] = yo[j] * ac[j];
        if (proj) {
            if (p->R != NULL) memcpy(p->R + row * H, hc, bytes);
        } else if (p->ZH != NULL || fp[FP_ZH] != (REAL)0.0) { /* zoneout of h (with a projection: vfinish_rows) */
            const REAL *restrict hp = p->Hp + (hi * B + b) * P;
            for (long j = 0; j < H; j++) hc[j] = hc[j] + VZONE(p->ZH, fp[FP_ZH], t, b, P, j) * (hp[j] - hc[j]);
        }
    }
}

/* the hidden state's end of a step with a projection, rows [b0, b1): hcand = clip(hcand) (HPU keeps it
 * unclipped), zoneout of h; then finish_hidden_rows (masks, outputs, the next GEMM operand) */
VHOT static void NAME(vfinish_rows)(const NAME(vfwd_t) * p, long t, const uint8_t *kp, REAL *out_t, const REAL *prev,
                               long b0, long b1) {
    const long B = p->B, P = p->P;
    const long hi = p->reverse ? t + 1 : t, ho = p->reverse ? t : t + 1;
    const REAL *Hprev = p->Hp + hi * B * P;
    REAL *Hout = p->Hp + ho * B * P;
    if (p->Whr != NULL) {
        for (long b = b0; b < b1; b++) {
            if (kp != NULL && !kp[b]) continue;
            REAL *restrict hc = p->hcand + b * P;
            const REAL *restrict hp = Hprev + b * P;
            if (p->HPU != NULL) memcpy(p->HPU + (t * B + b) * P, hc, (size_t)P * sizeof(REAL));
            NAME(vclip)(p->flags & VF_PROJ_CLIP, p->fp[FP_PROJ_CLIP], hc, hc, P);
            for (long j = 0; j < P; j++) hc[j] = hc[j] + VZONE(p->ZH, p->fp[FP_ZH], t, b, P, j) * (hp[j] - hc[j]);
        }
    }
    NAME(finish_hidden_rows)(b0, b1, B, P, p->Whr != NULL ? p->hcand : Hout, Hprev, Hout, out_t, prev, kp,
                             p->zero_out, p->mh, p->n_masks, p->hnext);
}

typedef struct {
    const void *loop; /* NAME(vfwd_t) or NAME(vbwd_t) */
    int kind;         /* 0 forward cell, 1 forward finish (hidden), 2 backward head, 3 backward cell */
    int phases;
    long t;
    const uint8_t *kp, *prev_kp;
    REAL *out_t;
    const REAL *prev;
} NAME(vtask_t);

static void NAME(vtask_rows)(const NAME(vtask_t) * task, long b0, long b1, long thread);

/* both loop structs start with T, B, H, P: a task's B and H */
#define VSIZES(task) ((const long *)(task)->loop)

/* one thread's share of a task (the GOMP_parallel body): rows [B t / n, B (t + 1) / n), scratch slice t */
static void NAME(vtask)(void *argument) {
    const NAME(vtask_t) *task = (const NAME(vtask_t) *)argument;
    long b0, b1;
    const int t = cell_rows(VSIZES(task)[1], &b0, &b1);
    NAME(vtask_rows)(task, b0, b1, t);
}

/* runs a task over all rows, split among up to `threads` threads when that pays (cell_team) */
static void NAME(vrun)(const NAME(vtask_t) * task, int threads) {
    const long B = VSIZES(task)[1], H = VSIZES(task)[2];
    const unsigned n = cell_team(threads, B, B * H);
    if (n < 2)
        NAME(vtask_rows)(task, 0, B, 0);
    else
        cell_parallel(NAME(vtask), (void *)task, n);
}
#undef VSIZES

/* the forward time loop of the variants (native/_variants.py's forward_pass) */
static void NAME(vforward_loop)(const NAME(blas_t) * blas, const NAME(vfwd_t) * p) {
    const long T = p->T, B = p->B, H = p->H, P = p->P;
    const long first = p->reverse ? T : 0;
    const REAL *prev = p->zeros;
    memcpy(p->Hp + first * B * P, p->h0, (size_t)(B * P) * sizeof(REAL));
    memcpy(p->Cp + first * B * H, p->c0, (size_t)(B * H) * sizeof(REAL));
    for (int k = 0; k < p->n_masks; k++) {
        const REAL *restrict h = p->Hp + first * B * P;
        REAL *restrict dst = p->hnext + k * B * P;
        if (p->mh == NULL) {
            memcpy(dst, h, (size_t)(B * P) * sizeof(REAL));
        } else {
            const REAL *restrict m = p->mh + k * B * P;
            for (long j = 0; j < B * P; j++) dst[j] = h[j] * m[j];
        }
    }
    NAME(operand_t) rec_w = {p->Wrec, p->trans_w ? P : 4 * H, p->trans_w, NULL};
    NAME(operand_t) proj_w = {p->Whr, p->trans_w ? H : P, p->trans_w, NULL};
    if (p->n_masks == 1) NAME(operand_pack)(blas, &rec_w, B, 4 * H, P, T);
    if (p->Whr != NULL) NAME(operand_pack)(blas, &proj_w, B, P, H, T);
    for (long s = 0; s < T; s++) {
        const long t = p->reverse ? T - 1 - s : s;
        if (p->hm_hist != NULL)
            for (int k = 0; k < p->n_masks; k++)
                memcpy(p->hm_hist + (k * T + t) * B * P, p->hnext + k * B * P, (size_t)(B * P) * sizeof(REAL));
        if (p->n_masks == 4)
            NAME(gate_products)(blas, B, H, P, p->hnext, B * P, p->Wrec, P * H, p->trans_w ? P : H, p->trans_w,
                                p->rec, B * H);
        else
            NAME(product)(blas, &rec_w, B, 4 * H, P, p->hnext, P, p->rec, 4 * H);
        const uint8_t *kp = NAME(step_keep)(p->keep, t, B);
        REAL *out_t = p->Obuf != NULL ? p->Obuf + t * p->ostride : NULL;
        NAME(vtask_t) task = {p, 0, 0, t, kp, NULL, out_t, prev};
        if (p->Whr != NULL) {
            NAME(vrun)(&task, p->threads);
            NAME(product)(blas, &proj_w, B, P, H, p->rbuf, H, p->hcand, P);
            task.kind = 1;
            NAME(vrun)(&task, p->threads);
        } else {
            task.kind = 1; /* the cell and the hidden state's end in one pass over the rows */
            task.phases = 1;
            NAME(vrun)(&task, p->threads);
        }
        if (p->Obuf != NULL) prev = out_t;
    }
    free(rec_w.packed);
    free(proj_w.packed);
}

typedef struct {
    long T, B, H, P;
    int reverse, n_masks, threads, flags, act, ract, oact;
    REAL fp[FP_COUNT];
    REAL *Z, *dh, *dc, *carry, *dh_new, *DH, *dr, *DREC, *dh_tmp, *scratch, *ACC, *zdir;
    const REAL *Cp, *dout, *w_hr, *Wrec, *mh, *peep, *g_hh, *g_c, *b_c, *RHAT, *RRSTD, *CC, *CHAT, *CRSTD, *HPU;
    REAL *XHAT; /* LN_ih's normalised input, becoming the gradient of its input */
    const REAL *XRSTD, *g_ih;
    const REAL *ZH, *ZC;
    const uint8_t *keep;
    long dstride, drec_step; /* drec_step: elements between steps of DREC (0: one per-step buffer) */
} NAME(vbwd_t);

/*
 * The backward step's phases on rows [b0, b1) (bit flags, as backward_step_rows):
 *   1 tail of the previous step: dh = zdir + sum over masks of dh_tmp * mh on the rows that step kept;
 *   2 head: dn = dh + gout (+ carry) on kept rows (0 on masked rows, whose gout goes to carry); zdir =
 *     zh dn (the part of dh_{t-1} that zoneout passes straight through); dn (1 - zh), times the projection
 *     clip's gradient, goes to dh_new and DH;
 * the cell (vbwd_cell_rows) is its own task: with a projection it reads dr = dh_new W_hr.
 */
VHOT static void NAME(vbwd_head_rows)(const NAME(vbwd_t) * p, int phases, long t, const uint8_t *kp,
                                 const uint8_t *prev_kp, long b0, long b1) {
    const long B = p->B, P = p->P;
    const int zone = p->ZH != NULL || p->fp[FP_ZH] != (REAL)0.0;
    if (phases & 1) {
        for (long b = b0; b < b1; b++) {
            if (prev_kp != NULL && !prev_kp[b]) continue;
            REAL *restrict d = p->dh + b * P;
            for (long j = 0; j < P; j++) d[j] = zone ? p->zdir[b * P + j] : (REAL)0.0;
            for (int k = 0; k < p->n_masks; k++) {
                const REAL *restrict tm = p->dh_tmp + (k * B + b) * P;
                if (p->mh == NULL) {
                    for (long j = 0; j < P; j++) d[j] += tm[j];
                } else {
                    const REAL *restrict m = p->mh + (k * B + b) * P;
                    for (long j = 0; j < P; j++) d[j] += tm[j] * m[j];
                }
            }
        }
    }
    if (!(phases & 2)) return;
    const REAL *gout = p->dout + t * p->dstride;
    for (long b = b0; b < b1; b++) {
        const long row = b * P;
        REAL *restrict dn = p->dh_new + row;
        const REAL *restrict d = p->dh + row, *restrict go = gout + row;
        if (kp != NULL && !kp[b]) {
            memset(dn, 0, (size_t)P * sizeof(REAL));
            if (p->carry != NULL)
                for (long j = 0; j < P; j++) p->carry[row + j] += go[j];
        } else {
            for (long j = 0; j < P; j++) dn[j] = d[j] + go[j];
            if (p->carry != NULL) {
                for (long j = 0; j < P; j++) dn[j] += p->carry[row + j];
                memset(p->carry + row, 0, (size_t)P * sizeof(REAL));
            }
            if (zone) {
                for (long j = 0; j < P; j++) {
                    const REAL w = VZONE(p->ZH, p->fp[FP_ZH], t, b, P, j);
                    p->zdir[row + j] = w * dn[j];
                    dn[j] = ((REAL)1.0 - w) * dn[j];
                }
            }
            if (p->HPU != NULL) NAME(vclip_grad)(1, p->fp[FP_PROJ_CLIP], p->HPU + (t * B + b) * P, dn, P);
        }
        if (p->DH != NULL) memcpy(p->DH + (t * B + b) * P, dn, (size_t)P * sizeof(REAL));
    }
}

/* the backward cell on rows [b0, b1): from dr (the gradient of h~ before the projection) and dc (of c_t,
 * becoming that of c_{t-1}), Z_t becomes the gate gradients dz and the recurrent GEMM operand (DREC_t, or
 * the per-step buffer) that of rec (LN_hh's backward of dz); acc (this thread's, 9H) sums the gradients of
 * the peepholes [3H], LN_hh's gain [4H], LN_c's gain and bias [H each] and LN_ih's gain [4H] over the rows;
 * XHAT_t (LN_ih's normalised input) becomes the gradient of LN_ih's input.
 * scratch 24H */
VHOT static void NAME(vbwd_cell_rows)(const NAME(vbwd_t) * p, long t, const uint8_t *kp, long b0, long b1,
                                 REAL *scratch, REAL *acc) {
    const long B = p->B, H = p->H, G = 4 * H;
    const long hi = p->reverse ? t + 1 : t;
    const int ln = p->flags & VF_LAYER_NORM, peep = p->flags & VF_PEEPHOLES, gclip = p->flags & VF_GATE_CLIP;
    const int cclip = p->flags & VF_CELL_CLIP, coupled = p->flags & VF_COUPLED;
    const REAL *fp = p->fp;
    REAL *restrict zc4 = scratch, *restrict y4 = scratch + G, *restrict dz4 = scratch + 2 * G;
    REAL *restrict ct = scratch + 3 * G, *restrict cn = ct + H, *restrict ac = cn + H, *restrict t1 = ac + H;
    REAL *restrict dcn = t1 + H, *restrict dct = dcn + H, *restrict dg = dct + H, *restrict drec = dg + H;
    const size_t bytes = (size_t)H * sizeof(REAL);
    REAL *drec_base = p->DREC + t * p->drec_step;
    const int fused = NAME(vfused_ok)(p->flags, p->act, p->ract, p->oact);
    const int lnfused = NAME(vln_fused_ok)(p->flags, p->act, p->ract, p->oact);
    const REAL gb = gclip ? fp[FP_GATE_CLIP] : (REAL)INFINITY, cb = cclip ? fp[FP_CELL_CLIP] : (REAL)INFINITY;
    REAL *zfill = drec + G; /* the zoneout rate repeated (a weight row) */
    REAL *restrict ap = acc, *restrict agh = acc + 3 * H, *restrict agc = acc + 7 * H, *restrict abc = acc + 8 * H;
    if (fused || lnfused) {
        for (long j = 0; j < H; j++) zfill[j] = fp[FP_ZC];
    }
    for (long b = b0; b < b1; b++) {
        const long row = t * B + b;
        REAL *restrict z = p->Z + row * G;
        if (kp != NULL && !kp[b]) {
            memset(z, 0, 4 * bytes);
            if (p->XHAT != NULL) memset(p->XHAT + row * G, 0, 4 * bytes);
            for (int k = 0; k < 4; k++)
                memset(p->n_masks == 4 ? drec_base + (k * B + b) * H : drec_base + b * G + k * H, 0, bytes);
            continue;
        }
        const REAL *restrict cp = p->Cp + (hi * B + b) * H, *restrict d = p->dr + b * H;
        REAL *restrict dcr = p->dc + b * H;
        if (lnfused) {
            REAL *dk[4];
            for (int k = 0; k < 4; k++) dk[k] = p->n_masks == 4 ? drec_base + (k * B + b) * H : drec_base + b * G + k * H;
            const REAL *zw = p->ZC != NULL ? p->ZC + row * H : zfill;
            VFUSED_CALL(NAME(vln_backward_row), p->act, peep, coupled, H, z, cp, p->CC + row * H, p->CHAT + row * H,
                        p->CRSTD[row], p->g_c, p->b_c, d, dcr, p->peep, gb, cb, zw, p->RHAT + row * G, p->RRSTD[row],
                        p->g_hh, dk[0], dk[1], dk[2], dk[3], t1, acc);
            if (p->XHAT != NULL) NAME(vln_input_grad)(z, p->XHAT + row * G, p->g_ih, p->XRSTD[row], acc + 9 * H, G);
            continue;
        }
        if (fused) {
            const REAL *zw = p->ZC != NULL ? p->ZC + row * H : zfill;
            VFUSED_CALL(NAME(vfused_backward_row), p->act, peep, coupled, H, z, cp, p->CC + row * H, d, dcr, p->peep,
                        gb, cb, zw, acc);
            for (int k = 0; k < 4; k++)
                memcpy(p->n_masks == 4 ? drec_base + (k * B + b) * H : drec_base + b * G + k * H, z + k * H, bytes);
            continue;
        }
        const REAL *zc = gclip ? zc4 : z; /* the clipped pre-activations (z itself without a clip) */
        NAME(vclip)(gclip, fp[FP_GATE_CLIP], z, zc4, G);
        REAL *restrict yi = y4, *restrict yf = y4 + H, *restrict yg = y4 + 2 * H, *restrict yo = y4 + 3 * H;
        NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc, yi, H);
        if (coupled)
            for (long j = 0; j < H; j++) yf[j] = (REAL)1.0 - yi[j];
        else
            NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + H, yf, H);
        NAME(vact_forward)(p->act, fp[FP_ACT_A], fp[FP_ACT_B], zc + 2 * H, yg, H);
        NAME(vact_forward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + 3 * H, yo, H);
        const REAL *cc = p->CC + row * H;
        const REAL *ctr = cclip ? ct : cc; /* c~ */
        NAME(vclip)(cclip, fp[FP_CELL_CLIP], cc, ct, H);
        const REAL *cnr = ctr;
        if (ln) {
            for (long j = 0; j < H; j++) cn[j] = p->CHAT[row * H + j] * p->g_c[j] + p->b_c[j];
            cnr = cn;
        }
        NAME(vact_forward)(p->oact, fp[FP_OACT_A], fp[FP_OACT_B], cnr, ac, H);
        for (long j = 0; j < H; j++) t1[j] = d[j] * yo[j];
        NAME(vact_backward)(p->oact, fp[FP_OACT_A], fp[FP_OACT_B], cnr, ac, t1, dcn, H);
        if (ln) {
            const REAL *restrict chat = p->CHAT + row * H;
            for (long j = 0; j < H; j++) {
                agc[j] += dcn[j] * chat[j];
                abc[j] += dcn[j];
            }
            NAME(vnormalise_grad)(dcn, p->CHAT + row * H, p->g_c, p->CRSTD[row], dct, H);
        } else {
            memcpy(dct, dcn, bytes);
        }
        REAL *restrict dzi = dz4, *restrict dzf = dz4 + H, *restrict dzg = dz4 + 2 * H, *restrict dzo = dz4 + 3 * H;
        for (long j = 0; j < H; j++) t1[j] = d[j] * ac[j]; /* d_o */
        NAME(vact_backward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + 3 * H, yo, t1, dzo, H);
        NAME(vclip_grad)(gclip, fp[FP_GATE_CLIP], z + 3 * H, dzo, H);
        for (long j = 0; j < H; j++) {
            REAL v = dct[j] + ((REAL)1.0 - VZONE(p->ZC, fp[FP_ZC], t, b, H, j)) * dcr[j];
            if (peep) v += dzo[j] * p->peep[2 * H + j];
            dct[j] = v;
        }
        NAME(vclip_grad)(cclip, fp[FP_CELL_CLIP], cc, dct, H); /* dct: the gradient of cc */
        for (long j = 0; j < H; j++) {
            t1[j] = coupled ? dct[j] * (yg[j] - cp[j]) : dct[j] * yg[j]; /* d_i */
            dg[j] = dct[j] * yi[j];
        }
        NAME(vact_backward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc, yi, t1, dzi, H);
        NAME(vclip_grad)(gclip, fp[FP_GATE_CLIP], z, dzi, H);
        if (coupled) {
            memset(dzf, 0, bytes);
        } else {
            for (long j = 0; j < H; j++) t1[j] = dct[j] * cp[j]; /* d_f */
            NAME(vact_backward)(p->ract, fp[FP_RACT_A], fp[FP_RACT_B], zc + H, yf, t1, dzf, H);
            NAME(vclip_grad)(gclip, fp[FP_GATE_CLIP], z + H, dzf, H);
        }
        NAME(vact_backward)(p->act, fp[FP_ACT_A], fp[FP_ACT_B], zc + 2 * H, yg, dg, dzg, H);
        NAME(vclip_grad)(gclip, fp[FP_GATE_CLIP], z + 2 * H, dzg, H);
        for (long j = 0; j < H; j++) {
            REAL v = VZONE(p->ZC, fp[FP_ZC], t, b, H, j) * dcr[j] + dct[j] * yf[j];
            if (peep) v += dzi[j] * p->peep[j] + dzf[j] * p->peep[H + j];
            dcr[j] = v;
        }
        if (peep) {
            for (long j = 0; j < H; j++) {
                ap[j] += dzi[j] * cp[j];
                ap[H + j] += dzf[j] * cp[j];
                ap[2 * H + j] += dzo[j] * ctr[j];
            }
        }
        memcpy(z, dz4, 4 * bytes);
        if (p->XHAT != NULL) NAME(vln_input_grad)(z, p->XHAT + row * G, p->g_ih, p->XRSTD[row], acc + 9 * H, G);
        const REAL *src = dz4;
        if (ln) {
            const REAL *restrict rhat = p->RHAT + row * G;
            for (long j = 0; j < G; j++) agh[j] += dz4[j] * rhat[j];
            NAME(vnormalise_grad)(dz4, rhat, p->g_hh, p->RRSTD[row], drec, G);
            src = drec;
        }
        for (int k = 0; k < 4; k++)
            memcpy(p->n_masks == 4 ? drec_base + (k * B + b) * H : drec_base + b * G + k * H, src + k * H, bytes);
    }
}


static void NAME(vtask_rows)(const NAME(vtask_t) * task, long b0, long b1, long index) {
    if (task->kind < 2) {
        const NAME(vfwd_t) *p = (const NAME(vfwd_t) *)task->loop;
        if (task->kind == 0 || task->phases == 1)
            NAME(vfwd_rows)(p, task->t, task->kp, b0, b1, p->scratch + index * VARIANT_SCRATCH_PER_HIDDEN * p->H);
        if (task->kind == 1)
            NAME(vfinish_rows)(p, task->t, task->kp, task->out_t, task->prev, b0, b1);
        return;
    }
    const NAME(vbwd_t) *p = (const NAME(vbwd_t) *)task->loop;
    if (task->kind == 2) {
        NAME(vbwd_head_rows)(p, task->phases, task->t, task->kp, task->prev_kp, b0, b1);
    } else {
        NAME(vbwd_cell_rows)(p, task->t, task->kp, b0, b1, p->scratch + index * VARIANT_SCRATCH_PER_HIDDEN * p->H,
                             p->ACC != NULL ? p->ACC + index * VARIANT_ACC_PER_HIDDEN * p->H : NULL);
    }
}

/* the backward time loop of the variants: dh, dc enter as the gradients of h_T, c_T and leave as those of
 * h0, c0; Z becomes dZ */
static void NAME(vbackward_loop)(const NAME(blas_t) * blas, const NAME(vbwd_t) * p) {
    const long T = p->T, B = p->B, H = p->H, P = p->P;
    const uint8_t *prev_kp = NULL;
    int pending = 0;
    NAME(operand_t) rec_w = {p->Wrec, P, 0, NULL};
    NAME(operand_t) proj_w = {p->w_hr, H, 0, NULL};
    if (p->n_masks == 1) NAME(operand_pack)(blas, &rec_w, B, P, 4 * H, T);
    if (p->w_hr != NULL) NAME(operand_pack)(blas, &proj_w, B, H, P, T);
    for (long s = 0; s < T; s++) {
        const long t = p->reverse ? s : T - 1 - s;
        const uint8_t *kp = NAME(step_keep)(p->keep, t, B);
        NAME(vtask_t) task = {p, 2, pending | 2, t, kp, prev_kp, NULL, NULL};
        NAME(vrun)(&task, p->threads);
        if (p->w_hr != NULL) NAME(product)(blas, &proj_w, B, H, P, p->dh_new, P, p->dr, H);
        task.kind = 3;
        NAME(vrun)(&task, p->threads);
        const REAL *drec = p->DREC + t * p->drec_step;
        if (p->n_masks == 4)
            NAME(gate_products)(blas, B, P, H, drec, B * H, p->Wrec, H * P, P, 0, p->dh_tmp, B * P);
        else
            NAME(product)(blas, &rec_w, B, P, 4 * H, drec, 4 * H, p->dh_tmp, P);
        pending = 1;
        prev_kp = kp;
    }
    NAME(vtask_t) tail = {p, 2, 1, 0, NULL, prev_kp, NULL, NULL};
    if (T > 0) NAME(vrun)(&tail, p->threads);
    free(rec_w.packed);
    free(proj_w.packed);
}
#undef VZONE
