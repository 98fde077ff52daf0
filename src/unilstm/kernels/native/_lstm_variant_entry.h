/*
 * The entry points of the cell variants' loops (variant_forward_loop, variant_backward_loop), included once
 * by _lstm_cell.c after both element types' loops (_lstm_variant_body.h) and its helpers (parse_ints, PTR,
 * BLAS).
 */
/*
 * The variant loops (_lstm_variant_body.h): one flat tuple of integers each, in the order of these lists
 * (exported as VARIANT_FORWARD_PARAMETERS / VARIANT_BACKWARD_PARAMETERS; native/_variants.py builds the
 * tuple by name). `floats` is the address of a float64 array of FP_COUNT numbers (FP_* in the header).
 */
#define VARIANT_FORWARD                                                                                        \
    X(float64) X(gemm) X(pack_get_size) X(pack) X(compute) X(gemm_batch) X(trans_w) X(T) X(B) X(H) X(P)          \
    X(reverse) X(zero_out) X(n_masks) X(threads) X(flags) X(act) X(ract) X(oact) X(floats) X(Z) X(Hp) X(Cp)       \
    X(Obuf) X(keep) X(mh) X(hnext) X(hm_hist) X(rec) X(Wrec) X(R) X(rbuf) X(hcand) X(Whr) X(zeros) X(scratch)    \
    X(h0) X(c0) X(peephole) X(g_hh) X(b_hh) X(g_c) X(b_c) X(ZH) X(ZC) X(RHAT) X(RRSTD) X(CC) X(CHAT) X(CRSTD)   \
    X(HPU) X(ostride) X(g_ih) X(xbias) X(XHAT) X(XRSTD)
#define VARIANT_BACKWARD                                                                                       \
    X(float64) X(gemm) X(pack_get_size) X(pack) X(compute) X(gemm_batch) X(T) X(B) X(H) X(P) X(reverse)         \
    X(n_masks) X(threads) X(flags) X(act) X(ract) X(oact) X(floats) X(Z) X(Cp) X(dout) X(dstride) X(keep) X(dh)  \
    X(dc) X(carry) X(dh_new) X(DH) X(dr) X(w_hr) X(DREC) X(drec_step) X(dh_tmp) X(Wrec) X(mh) X(scratch)          \
    X(peephole) X(g_hh) X(g_c) X(b_c) X(RHAT) X(RRSTD) X(CC) X(CHAT) X(CRSTD) X(ACC) X(HPU) X(ZH) X(ZC) X(zdir) X(XHAT) X(XRSTD) X(g_ih)
#define X(name) VFA_##name,
enum { VARIANT_FORWARD VFA_COUNT };
#undef X
#define X(name) VBA_##name,
enum { VARIANT_BACKWARD VBA_COUNT };
#undef X
#define X(name) #name,
static const char *const variant_forward_names[] = {VARIANT_FORWARD};
static const char *const variant_backward_names[] = {VARIANT_BACKWARD};
#undef X

/* an activation id of the variant loops: the shared table's or a parametric one */
static int variant_act_ok(long long v) { return (v >= 0 && v < ACT_COUNT) || (v >= PACT_AFFINE && v <= PACT_ELU); }

static int variant_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t arity, const char *name,
                        long long *a, int act_index) {
    if (parse_ints(args, nargs, arity, name, a) < 0) return -1;
    for (int k = act_index; k < act_index + 3; k++) {
        if (!variant_act_ok(a[k])) {
            PyErr_Format(PyExc_ValueError, "%s: expected an activation id, received %lld", name, a[k]);
            return -1;
        }
    }
    if (a[1] == 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected the address of a BLAS gemm, received 0", name);
        return -1;
    }
    return 0;
}

#define VF(field) a[VFA_##field]
#define FILL_FORWARD(TY, REAL, p)                                                                             \
    TY##_vfwd_t p = {                                                                                          \
        .T = (long)VF(T), .B = (long)VF(B), .H = (long)VF(H), .P = (long)VF(P), .reverse = (int)VF(reverse),    \
        .zero_out = (int)VF(zero_out), .n_masks = (int)VF(n_masks), .threads = (int)VF(threads),              \
        .trans_w = (int)VF(trans_w), .flags = (int)VF(flags), .act = (int)VF(act), .ract = (int)VF(ract),      \
        .oact = (int)VF(oact), .Z = PTR(REAL, VF(Z)), .Hp = PTR(REAL, VF(Hp)), .Cp = PTR(REAL, VF(Cp)),         \
        .Obuf = PTR(REAL, VF(Obuf)), .hnext = PTR(REAL, VF(hnext)), .hm_hist = PTR(REAL, VF(hm_hist)),         \
        .rec = PTR(REAL, VF(rec)), .R = PTR(REAL, VF(R)), .rbuf = PTR(REAL, VF(rbuf)),                        \
        .hcand = PTR(REAL, VF(hcand)), .scratch = PTR(REAL, VF(scratch)), .keep = PTR(const uint8_t, VF(keep)), \
        .mh = PTR(const REAL, VF(mh)), .Wrec = PTR(const REAL, VF(Wrec)), .Whr = PTR(const REAL, VF(Whr)),     \
        .zeros = PTR(const REAL, VF(zeros)), .h0 = PTR(const REAL, VF(h0)), .c0 = PTR(const REAL, VF(c0)),     \
        .peep = PTR(const REAL, VF(peephole)), .g_hh = PTR(const REAL, VF(g_hh)),                             \
        .b_hh = PTR(const REAL, VF(b_hh)), .g_c = PTR(const REAL, VF(g_c)), .b_c = PTR(const REAL, VF(b_c)),   \
        .ZH = PTR(const REAL, VF(ZH)), .ZC = PTR(const REAL, VF(ZC)), .RHAT = PTR(REAL, VF(RHAT)),             \
        .RRSTD = PTR(REAL, VF(RRSTD)), .CC = PTR(REAL, VF(CC)), .CHAT = PTR(REAL, VF(CHAT)),                  \
        .CRSTD = PTR(REAL, VF(CRSTD)), .HPU = PTR(REAL, VF(HPU)), .ostride = (long)VF(ostride),               \
        .g_ih = PTR(const REAL, VF(g_ih)), .xbias = PTR(const REAL, VF(xbias)), .XHAT = PTR(REAL, VF(XHAT)),    \
        .XRSTD = PTR(REAL, VF(XRSTD))};                                                                       \
    for (int k = 0; k < FP_COUNT; k++) p.fp[k] = (REAL)PTR(const double, VF(floats))[k];

static PyObject *py_variant_forward_loop(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[VFA_COUNT];
    if (variant_args(args, nargs, VFA_COUNT, "variant_forward_loop", a, VFA_act) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (VF(float64)) {
        BLAS(f64, blas)
        FILL_FORWARD(f64, double, p)
        vforward_loop_f64(&blas, &p);
    } else {
        BLAS(f32, blas)
        FILL_FORWARD(f32, float, p)
        vforward_loop_f32(&blas, &p);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#undef VF

#define VB(field) a[VBA_##field]
#define FILL_BACKWARD(TY, REAL, p)                                                                            \
    TY##_vbwd_t p = {                                                                                          \
        .T = (long)VB(T), .B = (long)VB(B), .H = (long)VB(H), .P = (long)VB(P), .reverse = (int)VB(reverse),    \
        .n_masks = (int)VB(n_masks), .threads = (int)VB(threads), .flags = (int)VB(flags),                    \
        .act = (int)VB(act), .ract = (int)VB(ract), .oact = (int)VB(oact), .Z = PTR(REAL, VB(Z)),              \
        .dh = PTR(REAL, VB(dh)), .dc = PTR(REAL, VB(dc)), .carry = PTR(REAL, VB(carry)),                       \
        .dh_new = PTR(REAL, VB(dh_new)), .DH = PTR(REAL, VB(DH)), .dr = PTR(REAL, VB(dr)),                     \
        .DREC = PTR(REAL, VB(DREC)), .dh_tmp = PTR(REAL, VB(dh_tmp)), .scratch = PTR(REAL, VB(scratch)),       \
        .ACC = PTR(REAL, VB(ACC)), .zdir = PTR(REAL, VB(zdir)), .Cp = PTR(const REAL, VB(Cp)),                 \
        .dout = PTR(const REAL, VB(dout)), .w_hr = PTR(const REAL, VB(w_hr)),                                 \
        .Wrec = PTR(const REAL, VB(Wrec)), .mh = PTR(const REAL, VB(mh)),                                     \
        .peep = PTR(const REAL, VB(peephole)), .g_hh = PTR(const REAL, VB(g_hh)),                             \
        .g_c = PTR(const REAL, VB(g_c)), .b_c = PTR(const REAL, VB(b_c)), .RHAT = PTR(const REAL, VB(RHAT)),   \
        .RRSTD = PTR(const REAL, VB(RRSTD)), .CC = PTR(const REAL, VB(CC)), .CHAT = PTR(const REAL, VB(CHAT)), \
        .CRSTD = PTR(const REAL, VB(CRSTD)), .HPU = PTR(const REAL, VB(HPU)), .ZH = PTR(const REAL, VB(ZH)),   \
        .ZC = PTR(const REAL, VB(ZC)), .keep = PTR(const uint8_t, VB(keep)), .dstride = (long)VB(dstride),     \
        .drec_step = (long)VB(drec_step), .XHAT = PTR(REAL, VB(XHAT)), .XRSTD = PTR(const REAL, VB(XRSTD)),   \
        .g_ih = PTR(const REAL, VB(g_ih))};                                                                   \
    for (int k = 0; k < FP_COUNT; k++) p.fp[k] = (REAL)PTR(const double, VB(floats))[k];

static PyObject *py_variant_backward_loop(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[VBA_COUNT];
    if (variant_args(args, nargs, VBA_COUNT, "variant_backward_loop", a, VBA_act) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (VB(float64)) {
        BLAS(f64, blas)
        FILL_BACKWARD(f64, double, p)
        vbackward_loop_f64(&blas, &p);
    } else {
        BLAS(f32, blas)
        FILL_BACKWARD(f32, float, p)
        vbackward_loop_f32(&blas, &p);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#undef VB

/*
 * Two variant loops at once (the two halves of a batch): one OpenMP team of two threads, each running one
 * loop with its cell unsplit and its BLAS calls on its own thread; without the OpenMP runtime one after the
 * other. variant_loop_pair(backward, first, second): backward 0 or 1, then two argument tuples.
 */
typedef struct {
    const long long *records[2];
    int backward;
} vpair_t;

static void run_variant_record(const long long *a, int backward) {
    if (backward) {
#define VB(field) a[VBA_##field]
        if (VB(float64)) {
            BLAS(f64, blas)
            FILL_BACKWARD(f64, double, p)
            vbackward_loop_f64(&blas, &p);
        } else {
            BLAS(f32, blas)
            FILL_BACKWARD(f32, float, p)
            vbackward_loop_f32(&blas, &p);
        }
#undef VB
    } else {
#define VF(field) a[VFA_##field]
        if (VF(float64)) {
            BLAS(f64, blas)
            FILL_FORWARD(f64, double, p)
            vforward_loop_f64(&blas, &p);
        } else {
            BLAS(f32, blas)
            FILL_FORWARD(f32, float, p)
            vforward_loop_f32(&blas, &p);
        }
#undef VF
    }
}

static void vpair_task(void *argument) {
    const vpair_t *pair = (const vpair_t *)argument;
    const int t = omp_thread_num_fn();
    if (t < 2) run_variant_record(pair->records[t], pair->backward);
}

static PyObject *py_variant_loop_pair(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[2][(int)VFA_COUNT > (int)VBA_COUNT ? (int)VFA_COUNT : (int)VBA_COUNT];
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "variant_loop_pair: expected 3 arguments, received %zd", nargs);
        return NULL;
    }
    const long backward = PyLong_AsLong(args[0]);
    if (backward == -1 && PyErr_Occurred()) return NULL;
    const Py_ssize_t arity = backward ? VBA_COUNT : VFA_COUNT;
    for (int k = 0; k < 2; k++) {
        PyObject *tuple = args[1 + k];
        if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != arity) {
            PyErr_Format(PyExc_TypeError, "variant_loop_pair: expected tuples of %zd integers", arity);
            return NULL;
        }
        if (variant_args(&PyTuple_GET_ITEM(tuple, 0), arity, arity, "variant_loop_pair", a[k],
                         backward ? VBA_act : VFA_act) < 0)
            return NULL;
        a[k][backward ? VBA_threads : VFA_threads] = 1; /* each loop on its own thread: no split of its cell */
    }
    vpair_t pair = {{a[0], a[1]}, (int)(backward != 0)};
    Py_BEGIN_ALLOW_THREADS
    if (gomp_parallel_fn != NULL) {
        gomp_parallel_fn(vpair_task, &pair, 2, 0);
    } else {
        run_variant_record(a[0], pair.backward);
        run_variant_record(a[1], pair.backward);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#undef FILL_FORWARD
#undef FILL_BACKWARD

/*
 * Zoneout's draws in training (native/_variants.py's zoneout_keep, which computes the same bits with torch
 * ops where this build is absent): out[i] = 1 where mix(mix(lo(i) ^ k0) ^ k1 ^ hi(i)) < threshold, else 0,
 * for i in [0, n); mix is a 32-bit bijective hash (Wellons' lowbias32), k0 and k1 32 bits from torch's
 * generator, threshold = round(rate 2^32). Counter-based: no state, each element on its own.
 * zoneout_draws(float64, out, n, k0, k1, threshold).
 */
static inline uint32_t zoneout_mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* draws lo0 + j for j in [0, count) of one block of 2^32 (k1 holding the block's high word), vectorised
 * (target clones: 0.06 ms for 204800 draws, 10x the scalar loop of the default target) */
#define ZONEOUT_FILL(NAME_, REAL)                                                                               \
    HOT static void NAME_(REAL *restrict o, uint32_t lo0, uint32_t count, uint32_t k0, uint32_t k1,             \
                          uint32_t threshold) {                                                                 \
        for (uint32_t j = 0; j < count; j++)                                                                    \
            o[j] = (REAL)(zoneout_mix(zoneout_mix((lo0 + j) ^ k0) ^ k1) < threshold);                           \
    }
ZONEOUT_FILL(zoneout_fill_f32, float)
ZONEOUT_FILL(zoneout_fill_f64, double)
#undef ZONEOUT_FILL

/* all n draws, a block of 2^32 per high word of the index (its last element apart: a uint32 count stops at
 * 2^32 - 1); a threshold of 2^32 (rate 1) keeps every unit */
#define ZONEOUT_DRAWS(REAL, FILL)                                                                               \
    do {                                                                                                        \
        REAL *o = (REAL *)(uintptr_t)a[1];                                                                      \
        if (threshold > 0xffffffffULL) {                                                                        \
            for (uint64_t i = 0; i < n; i++) o[i] = (REAL)1.0;                                                  \
            break;                                                                                              \
        }                                                                                                       \
        for (uint64_t start = 0; start < n; start += (uint64_t)1 << 32) {                                       \
            const uint64_t left = n - start;                                                                    \
            const uint32_t k1 = (uint32_t)a[4] ^ (uint32_t)(start >> 32), thr = (uint32_t)threshold;            \
            FILL(o + start, 0, left > 0xffffffffULL ? 0xffffffffU : (uint32_t)left, k0, k1, thr);               \
            if (left > 0xffffffffULL) FILL(o + start + 0xffffffffULL, 0xffffffffU, 1, k0, k1, thr);            \
        }                                                                                                       \
    } while (0)

static PyObject *py_zoneout_draws(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[6];
    if (parse_ints(args, nargs, 6, "zoneout_draws", a) < 0) return NULL;
    if (a[1] == 0 || a[2] < 0) {
        PyErr_SetString(PyExc_ValueError, "zoneout_draws: expected an output address and n >= 0");
        return NULL;
    }
    const uint64_t n = (uint64_t)a[2], threshold = (uint64_t)a[5];
    const uint32_t k0 = (uint32_t)a[3];
    Py_BEGIN_ALLOW_THREADS
    if (a[0])
        ZONEOUT_DRAWS(double, zoneout_fill_f64);
    else
        ZONEOUT_DRAWS(float, zoneout_fill_f32);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#undef ZONEOUT_DRAWS
