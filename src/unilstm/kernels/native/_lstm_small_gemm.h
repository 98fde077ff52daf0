/*
 * A hand-written GEMM with the BLAS's Fortran interface (column-major, integers by reference as int64_t,
 * as the loops' gemm_t in _lstm_cell_body.h), for products too small for a BLAS call to pay off: at
 * batch 1 a streaming step's recurrent product h_{t-1} W_hh^T is a (1, P) x (P, 4H) matrix-vector
 * product of a few thousand multiply-adds, where MKL's sgemm spends about a microsecond on its entry
 * (argument checks, dispatch, blocking decisions) before the arithmetic (benchmarks/kernel_choices.md,
 * "Small products: the hand-written gemm").
 *
 * The native loops call it through the same pointer as the BLAS gemm: the Python side
 * (native/_small_gemm.py) finds unilstm_small_sgemm / unilstm_small_dgemm by name in this module, checks
 * them against torch at first use, and passes one of them as the loops' `gemm` where a first-use
 * measurement found it faster for that kind of call (first_use.route). It computes every case of the
 * Fortran interface (transa, transb "N" / "T", any alpha, beta, leading dimensions); the two the loops use
 * are fast:
 *   - transa "T", transb "N" (a weight read in its own (out, in) layout): one dot product per output, each
 *     accumulated in 16 lanes (4 rows at once) and summed pairwise: vectorised without reassociating the
 *     C code's own order, so the result does not depend on the compiler's vectoriser;
 *   - transa "N", transb "N" (transposed copies, the backward's W_hh): an axpy per inner index over a
 *     contiguous column, vectorised as written.
 * Rounding differs from MKL's (another summation order; the AVX2 / AVX-512 clones contract to FMA), inside
 * the tolerance every kernel is held to. beta = 0 never reads C (it may hold NaN), as the BLAS.
 */

#if defined(__GNUC__)
#define SG_VECTOR(REAL, bytes) REAL __attribute__((vector_size(bytes)))
#endif

/* an unaligned vector load, as a statement expression: no function passes or returns a vector (whose ABI
 * would depend on the target clone) */
#define SG_LOAD(type, p)                                                                                     \
    __extension__({                                                                                          \
        type v_;                                                                                             \
        memcpy(&v_, (p), sizeof v_);                                                                         \
        v_;                                                                                                  \
    })

#define SG_TRANSPOSED(flag) ((flag)[0] == 'T' || (flag)[0] == 't' || (flag)[0] == 'C' || (flag)[0] == 'c')

typedef SG_VECTOR(float, 64) sg_wide_s;
typedef SG_VECTOR(double, 64) sg_wide_d;
typedef SG_VECTOR(int32_t, 64) sg_lanes_s;
typedef SG_VECTOR(int64_t, 64) sg_lanes_d;

/* a vector's lanes summed as a tree (lane l += lane l + width, width halving), in registers: the same order
 * on every target */
static inline float sg_sum_s(const sg_wide_s *v) {
    sg_wide_s x = *v;
    x += __builtin_shuffle(x, (sg_lanes_s){8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15});
    x += __builtin_shuffle(x, (sg_lanes_s){4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7});
    x += __builtin_shuffle(x, (sg_lanes_s){2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3});
    x += __builtin_shuffle(x, (sg_lanes_s){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
    return x[0];
}

static inline double sg_sum_d(const sg_wide_d *v) {
    sg_wide_d x = *v;
    x += __builtin_shuffle(x, (sg_lanes_d){4, 5, 6, 7, 4, 5, 6, 7});
    x += __builtin_shuffle(x, (sg_lanes_d){2, 3, 2, 3, 2, 3, 2, 3});
    x += __builtin_shuffle(x, (sg_lanes_d){1, 1, 1, 1, 1, 1, 1, 1});
    return x[0];
}

/* SG_DEFINE(REAL, SUFFIX, LANES): the gemm for one floating type; LANES elements make 64 bytes */
#define SG_DEFINE(REAL, SUFFIX, LANES)                                                                       \
    static inline void sg_store_##SUFFIX(REAL *c, REAL sum, REAL alpha, REAL beta) {                         \
        *c = beta == (REAL)0 ? alpha * sum : alpha * sum + beta * *c;                                        \
    }                                                                                                        \
                                                                                                             \
    /* C (m, n) = alpha A^T B + beta C, A stored (k, m) (column i of A^T is row i of a weight (m, k)) */     \
    static HOT void sg_dots_##SUFFIX(long m, long n, long k, REAL alpha, const REAL *a, long lda,            \
                                     const REAL *b, long ldb, REAL beta, REAL *c, long ldc) {                \
        const long wide = k - k % LANES;                                                                     \
        for (long j = 0; j < n; j++) {                                                                       \
            const REAL *x = b + j * ldb;                                                                     \
            REAL *cj = c + j * ldc;                                                                          \
            long i = 0;                                                                                      \
            for (; i + 4 <= m; i += 4) { /* four rows share each load of x */                                \
                const REAL *r0 = a + i * lda, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;                \
                sg_wide_##SUFFIX s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                     \
                for (long p = 0; p < wide; p += LANES) {                                                     \
                    const sg_wide_##SUFFIX xv = SG_LOAD(sg_wide_##SUFFIX, x + p);                            \
                    s0 += SG_LOAD(sg_wide_##SUFFIX, r0 + p) * xv;                                            \
                    s1 += SG_LOAD(sg_wide_##SUFFIX, r1 + p) * xv;                                            \
                    s2 += SG_LOAD(sg_wide_##SUFFIX, r2 + p) * xv;                                            \
                    s3 += SG_LOAD(sg_wide_##SUFFIX, r3 + p) * xv;                                            \
                }                                                                                            \
                REAL t0 = sg_sum_##SUFFIX(&s0), t1 = sg_sum_##SUFFIX(&s1), t2 = sg_sum_##SUFFIX(&s2),        \
                     t3 = sg_sum_##SUFFIX(&s3);                                                              \
                for (long p = wide; p < k; p++) {                                                            \
                    t0 += r0[p] * x[p];                                                                      \
                    t1 += r1[p] * x[p];                                                                      \
                    t2 += r2[p] * x[p];                                                                      \
                    t3 += r3[p] * x[p];                                                                      \
                }                                                                                            \
                sg_store_##SUFFIX(cj + i, t0, alpha, beta);                                                  \
                sg_store_##SUFFIX(cj + i + 1, t1, alpha, beta);                                              \
                sg_store_##SUFFIX(cj + i + 2, t2, alpha, beta);                                              \
                sg_store_##SUFFIX(cj + i + 3, t3, alpha, beta);                                              \
            }                                                                                                \
            for (; i < m; i++) {                                                                             \
                const REAL *r = a + i * lda;                                                                 \
                sg_wide_##SUFFIX s = {0};                                                                    \
                for (long p = 0; p < wide; p += LANES)                                                       \
                    s += SG_LOAD(sg_wide_##SUFFIX, r + p) * SG_LOAD(sg_wide_##SUFFIX, x + p);                \
                REAL t = sg_sum_##SUFFIX(&s);                                                                \
                for (long p = wide; p < k; p++) t += r[p] * x[p];                                            \
                sg_store_##SUFFIX(cj + i, t, alpha, beta);                                                   \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
                                                                                                             \
    /* C (m, n) = alpha A B + beta C, A stored (m, k): per column of C and block of 4 x LANES of its rows, an \
     * axpy per inner index into four accumulators that stay in registers */                                 \
    static HOT void sg_axpys_##SUFFIX(long m, long n, long k, REAL alpha, const REAL *a, long lda,           \
                                      const REAL *b, long ldb, REAL beta, REAL *c, long ldc) {               \
        const long block = 4 * LANES;                                                                        \
        for (long j = 0; j < n; j++) {                                                                       \
            const REAL *x = b + j * ldb;                                                                     \
            REAL *cj = c + j * ldc;                                                                          \
            long i = 0;                                                                                      \
            for (; i + block <= m; i += block) {                                                             \
                sg_wide_##SUFFIX s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                     \
                for (long p = 0; p < k; p++) {                                                               \
                    const REAL *col = a + p * lda + i;                                                       \
                    const REAL xp = x[p];                                                                    \
                    s0 += SG_LOAD(sg_wide_##SUFFIX, col) * xp;                                               \
                    s1 += SG_LOAD(sg_wide_##SUFFIX, col + LANES) * xp;                                       \
                    s2 += SG_LOAD(sg_wide_##SUFFIX, col + 2 * LANES) * xp;                                   \
                    s3 += SG_LOAD(sg_wide_##SUFFIX, col + 3 * LANES) * xp;                                   \
                }                                                                                            \
                REAL sums[4 * LANES];                                                                        \
                memcpy(sums, &s0, sizeof s0);                                                                \
                memcpy(sums + LANES, &s1, sizeof s1);                                                        \
                memcpy(sums + 2 * LANES, &s2, sizeof s2);                                                    \
                memcpy(sums + 3 * LANES, &s3, sizeof s3);                                                    \
                for (long l = 0; l < block; l++) sg_store_##SUFFIX(cj + i + l, sums[l], alpha, beta);        \
            }                                                                                                \
            for (; i < m; i++) {                                                                             \
                REAL t = 0;                                                                                  \
                for (long p = 0; p < k; p++) t += a[p * lda + i] * x[p];                                     \
                sg_store_##SUFFIX(cj + i, t, alpha, beta);                                                   \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
                                                                                                             \
    /* any other case (transb "T": the loops never ask for it), element by element */                        \
    static void sg_general_##SUFFIX(int ta, int tb, long m, long n, long k, REAL alpha, const REAL *a,       \
                                    long lda, const REAL *b, long ldb, REAL beta, REAL *c, long ldc) {       \
        for (long j = 0; j < n; j++)                                                                         \
            for (long i = 0; i < m; i++) {                                                                   \
                REAL t = 0;                                                                                  \
                for (long p = 0; p < k; p++)                                                                 \
                    t += (ta ? a[p + i * lda] : a[i + p * lda]) * (tb ? b[j + p * ldb] : b[p + j * ldb]);    \
                sg_store_##SUFFIX(c + i + j * ldc, t, alpha, beta);                                          \
            }                                                                                                \
    }                                                                                                        \
                                                                                                             \
    void unilstm_small_##SUFFIX##gemm(const char *transa, const char *transb, const int64_t *m,              \
                                      const int64_t *n, const int64_t *k, const REAL *alpha, const REAL *a,  \
                                      const int64_t *lda, const REAL *b, const int64_t *ldb, const REAL *beta, \
                                      REAL *c, const int64_t *ldc) {                                         \
        if (*m <= 0 || *n <= 0) return;                                                                      \
        const int ta = SG_TRANSPOSED(transa), tb = SG_TRANSPOSED(transb);                                    \
        if (tb)                                                                                              \
            sg_general_##SUFFIX(ta, tb, *m, *n, *k, *alpha, a, *lda, b, *ldb, *beta, c, *ldc);               \
        else if (ta)                                                                                         \
            sg_dots_##SUFFIX(*m, *n, *k, *alpha, a, *lda, b, *ldb, *beta, c, *ldc);                          \
        else                                                                                                 \
            sg_axpys_##SUFFIX(*m, *n, *k, *alpha, a, *lda, b, *ldb, *beta, c, *ldc);                         \
    }

/* the exported symbols (found by name with ctypes: no entry in the module's method table) */
void unilstm_small_sgemm(const char *, const char *, const int64_t *, const int64_t *, const int64_t *,
                         const float *, const float *, const int64_t *, const float *, const int64_t *,
                         const float *, float *, const int64_t *);
void unilstm_small_dgemm(const char *, const char *, const int64_t *, const int64_t *, const int64_t *,
                         const double *, const double *, const int64_t *, const double *, const int64_t *,
                         const double *, double *, const int64_t *);

SG_DEFINE(float, s, 16)
SG_DEFINE(double, d, 8)

#undef SG_DEFINE
#undef SG_TRANSPOSED
#undef SG_LOAD
#undef SG_VECTOR
