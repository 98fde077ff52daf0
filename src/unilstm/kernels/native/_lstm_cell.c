/*
 * The native kernel's C side: the LSTM cell's elementwise work for one time step, forward and backward, and
 * whole time loops (forward_loop, backward_loop, and two loops at once) that call the BLAS gemm torch links
 * between the cell steps. The Python side (unilstm/kernels/native/) finds the BLAS and OpenMP functions,
 * allocates every buffer and passes sizes and addresses as integers (through native/_extension.py, the
 * one wrapper with named arguments); nothing here allocates tensors or touches Python objects beyond
 * reading those integers. When the BLAS gemm is missing, Python runs the time loop itself and calls the
 * per-step entry points (forward_step, finish_hidden, backward_step).
 *
 * Gate blocks are in torch's order [i, f, g, o] along the 4H axis.
 *
 * The activation ids (ACT_<NAME>, ACT_COUNT, ACT_NAMES) come from unilstm/kernels/activation_ids.py as
 * compiler macros (setup.py); the module exports them back as ACTIVATION_IDS, with SCRATCH_PER_HIDDEN,
 * CELL_PARALLEL_MIN and PACK_MIN_*, so that Python reads the values this build was compiled with.
 *
 * The transcendental functions are branch-free polynomial approximations (exp: Cephes; tanh: the rational
 * approximation Eigen uses) so that the compiler vectorises the loops: glibc's tanhf is several times
 * slower per element than the torch ops the cell replaces (benchmarks/kernel_choices.md, "C cell
 * approximations"). Their error is a few units in the last place, inside the tolerance the property tests
 * hold every kernel to.
 *
 * Each derivative matches what autograd computes for the function in unilstm/activations.py, including
 * its choice at the kinks (relu'(0) = 0, hard_sigmoid'(+-3) = 0, ...).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(UNILSTM_NO_CLONES)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif
#if defined(__GNUC__)
/* the activation loops must be compiled inside each target clone of the step functions, not called */
#define ALWAYS_INLINE __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
#else
#define ALWAYS_INLINE
#define NOINLINE
#endif

#if !defined(ACT_COUNT) || !defined(ACT_NAMES)
#error "build through setup.py: the activation ids come from unilstm/kernels/activation_ids.py as macros"
#endif

/* CBLAS constants (MKL's values) for the packed and batched GEMMs */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112, CBLAS_PACKED = 151, CBLAS_B_MATRIX = 162 };

/* floats of scratch per hidden unit that one thread of a cell step needs (the backward's 10 H); exported */
#define SCRATCH_PER_HIDDEN 10

/* a per-step product's weight (K * N elements) is packed with MKL's packed GEMM from PACK_MIN_ROWS rows and
 * PACK_MIN_WEIGHT elements, repeated over PACK_MIN_STEPS steps (benchmarks/kernel_choices.md, "Packed
 * GEMM"); exported */
#define PACK_MIN_ROWS 16
#define PACK_MIN_WEIGHT 65536
#define PACK_MIN_STEPS 8

/*
 * Threads for the cell: torch's OpenMP runtime (GOMP ABI: GOMP_parallel, omp_get_thread_num,
 * omp_get_num_threads), whose addresses the driver finds in the libraries torch loaded and passes once
 * (set_cell_threads); the BLAS calls between the cell steps use the same thread team. Unset: one thread.
 */
typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_query_t)(void);
static gomp_parallel_t gomp_parallel_fn = NULL;
static omp_query_t omp_thread_num_fn = NULL, omp_num_threads_fn = NULL;

/* below this many hidden units per step (B * H) the fork costs more than the split saves
 * (benchmarks/kernel_choices.md, "Cell split among threads"); exported */
#define CELL_PARALLEL_MIN 4096

/* how many threads should split a cell step of B rows and `units` hidden units */
static unsigned cell_team(int threads, long B, long units) {
    if (gomp_parallel_fn == NULL || threads < 2 || B < 2 || units < CELL_PARALLEL_MIN) return 1;
    return (unsigned)(threads < B ? threads : B);
}

/* inside the team: this thread's rows [b0, b1) of B, and its index */
static int cell_rows(long B, long *b0, long *b1) {
    const int t = omp_thread_num_fn(), n = omp_num_threads_fn();
    *b0 = B * t / n;
    *b1 = B * (t + 1) / n;
    return t;
}

static void cell_parallel(void (*fn)(void *), void *data, unsigned n) { gomp_parallel_fn(fn, data, n, 0); }

/* ONNX's parametric activations (unilstm.activations.ParametricActivation), ids of the variant loops only,
 * past the shared table's; their alpha and beta travel with them (_lstm_variant_body.h); exported as
 * PARAMETRIC_IDS */
#define PACT_AFFINE 64
#define PACT_LEAKY_RELU 65
#define PACT_THRESHOLDED_RELU 66
#define PACT_SCALED_TANH 67
#define PACT_HARD_SIGMOID 68
#define PACT_ELU 69
#define PACT_NAMES X(affine, AFFINE) X(leaky_relu, LEAKY_RELU) X(thresholded_relu, THRESHOLDED_RELU) \
    X(scaled_tanh, SCALED_TANH) X(hard_sigmoid, HARD_SIGMOID) X(elu, ELU)

/* flags of the variant loops (the Python side's VARIANT_FLAGS) */
enum { VF_LAYER_NORM = 1, VF_PEEPHOLES = 2, VF_GATE_CLIP = 4, VF_CELL_CLIP = 8, VF_PROJ_CLIP = 16, VF_COUPLED = 32 };
/* the float parameters, one float64 array (FLOAT_PARAMETERS on the Python side) */
enum { FP_ACT_A, FP_ACT_B, FP_RACT_A, FP_RACT_B, FP_OACT_A, FP_OACT_B, FP_GATE_CLIP, FP_CELL_CLIP, FP_PROJ_CLIP,
       FP_FORGET_BIAS, FP_EPS, FP_ZH, FP_ZC, FP_COUNT };

/* scratch floats per hidden unit and thread of the variant loops: the backward cell's 24 H (vbwd_cell_rows) */
#define VARIANT_SCRATCH_PER_HIDDEN 24
/* per hidden unit and thread, the variant backward's gradient sums: peepholes 3H, LN_hh's gain 4H, LN_c's 2H,
 * LN_ih's gain 4H */
#define VARIANT_ACC_PER_HIDDEN 13

#define SELU_ALPHA 1.6732632423543772848170429916717
#define SELU_SCALE 1.0507009873554804934193349852946

ALWAYS_INLINE static inline float exp_approx(float x) {
    /* Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-5 polynomial, times 2^n built from exponent
     * bits in two halves so that n may leave the normal range: overflow gives inf and deep underflow
     * subnormals or 0, like expf (torch's exp(89) is inf, and Keras's "exponential" activation reaches it) */
    x = x > 89.0f ? 89.0f : x;
    x = x < -104.0f ? -104.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to the nearest */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t half = ni / 2;
    int32_t bits1 = (half + 127) << 23, bits2 = (ni - half + 127) << 23;
    float scale1, scale2;
    memcpy(&scale1, &bits1, sizeof scale1);
    memcpy(&scale2, &bits2, sizeof scale2);
    return y * scale1 * scale2;
}

ALWAYS_INLINE static inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

ALWAYS_INLINE static inline float tanh_approx(float x) {
    /* Eigen's generic_fast_tanh_float: a 13/6 rational function on [-7.9, 7.9] */
    float ax = x < 0.0f ? -x : x;
    float xc = x > 7.90531110763549805f ? 7.90531110763549805f : x;
    xc = xc < -7.90531110763549805f ? -7.90531110763549805f : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return ax < 0.0004f ? x : p / q;
}

#define REAL float
#define NAME(f) f##_f32
#define VHOT HOT
#define VACT HOT
#define EXP exp_approx
#define SIGMOID sigmoid_approx
#define TANH tanh_approx
#define LOG1P log1pf
#include "_lstm_cell_body.h"
#include "_lstm_variant_body.h"
#undef VHOT
#undef VACT
#undef REAL
#undef NAME
#undef EXP
#undef SIGMOID
#undef TANH
#undef LOG1P

/* float64 is for checking (the property tests hold it to 1e-9): libm's exact functions, no speed goal */
static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }
#define REAL double
#define NAME(f) f##_f64
#define VHOT
#define VACT NOINLINE
#define EXP exp
#define SIGMOID sigmoid_f64
#define TANH tanh
#define LOG1P log1p
#include "_lstm_cell_body.h"
#include "_lstm_variant_body.h"
#undef VHOT
#undef VACT
#undef REAL
#undef NAME
#undef EXP
#undef SIGMOID
#undef TANH
#undef LOG1P

static int parse_ints(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, const char *name,
                      long long *out) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd integer arguments, received %zd", name, expected, nargs);
        return -1;
    }
    for (Py_ssize_t k = 0; k < nargs; k++) {
        out[k] = PyLong_AsLongLong(args[k]);
        if (out[k] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

#define PTR(type, v) ((type *)(uintptr_t)(v))
#define CHECK_ACT(name, v)                                                                          \
    if ((v) < 0 || (v) >= ACT_COUNT) {                                                              \
        PyErr_Format(PyExc_ValueError, name ": expected an activation id in [0, %d), received %lld", \
                     ACT_COUNT, (long long)(v));                                                    \
        return NULL;                                                                                \
    }

/* Every entry point takes integers: first 0 (float32) or 1 (float64), then sizes and buffer addresses. */

static PyObject *py_forward_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[22];
    if (parse_ints(args, nargs, 22, "forward_step", a) < 0) return NULL;
    CHECK_ACT("forward_step", a[20]);
    CHECK_ACT("forward_step", a[21]);
#define CALL(REAL, fn)                                                                                        \
    fn((long)a[1], (long)a[2], (long)a[3], PTR(REAL, a[4]), PTR(const REAL, a[5]), PTR(const REAL, a[6]),      \
       PTR(REAL, a[7]), PTR(const REAL, a[8]), PTR(REAL, a[9]), PTR(REAL, a[10]), PTR(const REAL, a[11]),      \
       PTR(const uint8_t, a[12]), (int)a[13], PTR(const REAL, a[14]), (int)a[15], PTR(REAL, a[16]),            \
       PTR(REAL, a[17]), PTR(REAL, a[18]), PTR(REAL, a[19]), (int)a[20], (int)a[21])
    if (a[0]) CALL(double, forward_step_f64); else CALL(float, forward_step_f32);
#undef CALL
    Py_RETURN_NONE;
}

static PyObject *py_finish_hidden(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[13];
    if (parse_ints(args, nargs, 13, "finish_hidden", a) < 0) return NULL;
#define CALL(REAL, fn)                                                                                     \
    fn((long)a[1], (long)a[2], PTR(const REAL, a[3]), PTR(const REAL, a[4]), PTR(REAL, a[5]),               \
       PTR(REAL, a[6]), PTR(const REAL, a[7]), PTR(const uint8_t, a[8]), (int)a[9], PTR(const REAL, a[10]), \
       (int)a[11], PTR(REAL, a[12]))
    if (a[0]) CALL(double, finish_hidden_f64); else CALL(float, finish_hidden_f32);
#undef CALL
    Py_RETURN_NONE;
}

static PyObject *py_backward_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[24];
    if (parse_ints(args, nargs, 24, "backward_step", a) < 0) return NULL;
    CHECK_ACT("backward_step", a[22]);
    CHECK_ACT("backward_step", a[23]);
#define CALL(REAL, fn)                                                                                       \
    fn((int)a[1], (long)a[2], (long)a[3], (long)a[4], PTR(REAL, a[5]), PTR(const REAL, a[6]),                 \
       PTR(const REAL, a[7]), PTR(REAL, a[8]), PTR(REAL, a[9]), PTR(const REAL, a[10]), PTR(REAL, a[11]),     \
       PTR(const uint8_t, a[12]), PTR(REAL, a[13]), PTR(REAL, a[14]), PTR(const REAL, a[15]),                 \
       PTR(const REAL, a[16]), PTR(const uint8_t, a[17]), PTR(const REAL, a[18]), (int)a[19],                 \
       PTR(REAL, a[20]), PTR(REAL, a[21]), (int)a[22], (int)a[23])
    if (a[0]) CALL(double, backward_step_f64); else CALL(float, backward_step_f32);
#undef CALL
    Py_RETURN_NONE;
}

/* Whole loops (see _lstm_cell_body.h); the GIL is released: they touch only the buffers they are given.
 * After the dtype flag come the addresses of gemm, optionally (all three or none) MKL's
 * ?gemm_pack_get_size, ?gemm_pack and ?gemm_compute, and optionally (0 for none) cblas_?gemm_batch. */
#define BLAS(R, dst)                                                                                 \
    R##_blas_t dst = {(R##_gemm_t)(uintptr_t)a[1], NULL, NULL, NULL, (R##_batch_t)(uintptr_t)a[5]};  \
    if (a[2] != 0 && a[3] != 0 && a[4] != 0) {                                                       \
        dst.pack_size = (R##_pack_size_t)(uintptr_t)a[2];                                            \
        dst.pack = (R##_pack_t)(uintptr_t)a[3];                                                      \
        dst.compute = (R##_compute_t)(uintptr_t)a[4];                                                \
    }
#define CHECK_GEMM(name, v)                                                                         \
    if ((v) == 0) {                                                                                 \
        PyErr_SetString(PyExc_ValueError, name ": expected the address of a BLAS gemm, received 0"); \
        return NULL;                                                                                \
    }
typedef gemm_t_f32 f32_gemm_t;
typedef gemm_t_f64 f64_gemm_t;
typedef pack_size_t_f32 f32_pack_size_t;
typedef pack_size_t_f64 f64_pack_size_t;
typedef pack_t_f32 f32_pack_t;
typedef pack_t_f64 f64_pack_t;
typedef compute_t_f32 f32_compute_t;
typedef compute_t_f64 f64_compute_t;
typedef batch_t_f32 f32_batch_t;
typedef batch_t_f64 f64_batch_t;
typedef blas_t_f32 f32_blas_t;
typedef blas_t_f64 f64_blas_t;
typedef operand_t_f32 f32_operand_t;
typedef operand_t_f64 f64_operand_t;
typedef vfwd_t_f32 f32_vfwd_t;
typedef vfwd_t_f64 f64_vfwd_t;
typedef vbwd_t_f32 f32_vbwd_t;
typedef vbwd_t_f64 f64_vbwd_t;

/* run_<loop>(a): the loop of the dtype flag a[0], with the BLAS functions of a[1..5], through CALL */
#define DEFINE_RUN_LOOP(loop)                    \
    static void run_##loop(const long long *a) { \
        if (a[0]) {                              \
            BLAS(f64, blas)                      \
            CALL(double, loop##_f64, blas);      \
        } else {                                 \
            BLAS(f32, blas)                      \
            CALL(float, loop##_f32, blas);       \
        }                                        \
    }

/* a loop entry's integers, checked (two activation ids, then the output step stride, last); 0, or -1 with a
 * Python error */
static int loop_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t arity, const char *name,
                     long long *a) {
    if (parse_ints(args, nargs, arity, name, a) < 0) return -1;
    if (a[arity - 1] < 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected a step stride >= 0, received %lld", name, a[arity - 1]);
        return -1;
    }
    for (Py_ssize_t k = arity - 3; k < arity - 1; k++) {
        if (a[k] < 0 || a[k] >= ACT_COUNT) {
            PyErr_Format(PyExc_ValueError, "%s: expected an activation id in [0, %d), received %lld", name,
                         ACT_COUNT, a[k]);
            return -1;
        }
    }
    if (a[1] == 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected the address of a BLAS gemm, received 0", name);
        return -1;
    }
    return 0;
}

/*
 * The loops' parameters by name, in the order of their argument tuples (the a[k] of the CALL macros below):
 * the dtype flag, the BLAS functions, then the parameters of forward_loop / backward_loop in
 * _lstm_cell_body.h. Python builds a loop's tuple from keyword arguments in three parts (head, buffers,
 * tail, concatenated): CPython passes at most 15 keyword arguments without building a dict, and a call
 * that builds one costs a tenth of a streaming step.
 */
#define FORWARD_HEAD X(float64) X(gemm) X(pack_get_size) X(pack) X(compute) X(gemm_batch) X(trans_w) X(T) X(B) X(H) X(P) X(reverse)
#define FORWARD_BUFFERS                                                                                 \
    X(Z) X(Hp) X(Cp) X(Obuf) X(keep) X(zero_out) X(mh) X(n_masks) X(hnext) X(hm_hist) X(rec) X(WrecT) X(R) \
    X(rbuf) X(hcand)
#define FORWARD_TAIL                                                                                         \
    X(WhrT) X(zeros) X(scratch) X(X) X(F) X(W_ih) X(b_ih) X(b_hh) X(h0) X(c0) X(chunk) X(threads) X(act) X(ract) \
    X(ostride)
#define BACKWARD_HEAD X(float64) X(gemm) X(pack_get_size) X(pack) X(compute) X(gemm_batch) X(T) X(B) X(H) X(P) X(reverse)
#define BACKWARD_BUFFERS                                                                                        \
    X(Z) X(Cp) X(dout) X(keep) X(dh) X(dc) X(carry) X(dh_new) X(DH) X(dr) X(w_hr) X(dz) X(dh_tmp) X(Wrec) X(mh)
#define BACKWARD_TAIL X(n_masks) X(scratch) X(threads) X(act) X(ract) X(dstride)

#define X(name) #name,
static const char *const forward_head[] = {FORWARD_HEAD}, *const forward_buffers[] = {FORWARD_BUFFERS},
                         *const forward_tail[] = {FORWARD_TAIL}, *const backward_head[] = {BACKWARD_HEAD},
                         *const backward_buffers[] = {BACKWARD_BUFFERS}, *const backward_tail[] = {BACKWARD_TAIL};
#undef X
#define COUNT(list) ((Py_ssize_t)(sizeof list / sizeof *list))
_Static_assert(COUNT(forward_head) + COUNT(forward_buffers) + COUNT(forward_tail) == 42,
               "forward_loop takes 42 integers");
_Static_assert(COUNT(backward_head) + COUNT(backward_buffers) + COUNT(backward_tail) == 32,
               "backward_loop takes 32 integers");

/* the parts, in the order of the entries of `parts` below: name lists and their interned names */
enum { PART_COUNT = 6 };
static const char *const part_functions[PART_COUNT] = {
    "forward_loop_head", "forward_loop_buffers", "forward_loop_tail",
    "backward_loop_head", "backward_loop_buffers", "backward_loop_tail"};
static const char *const *const part_lists[PART_COUNT] = {forward_head, forward_buffers, forward_tail,
                                                          backward_head, backward_buffers, backward_tail};
static const Py_ssize_t part_sizes[PART_COUNT] = {COUNT(forward_head), COUNT(forward_buffers),
                                                  COUNT(forward_tail), COUNT(backward_head),
                                                  COUNT(backward_buffers), COUNT(backward_tail)};
static PyObject *part_names[PART_COUNT]; /* tuples of interned str, made at module init */

/* the names of a parameter list as a tuple of interned strings */
static PyObject *parameter_names(const char *const *names, Py_ssize_t n) {
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PyUnicode_InternFromString(names[k]);
        if (name == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, k, name);
    }
    return tuple;
}

/* keyword arguments (every one of part `part`'s names, each once) as a tuple in the order of its names */
static PyObject *arguments_by_name(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int part) {
    PyObject *names = part_names[part];
    const char *fn = part_functions[part];
    const Py_ssize_t n = PyTuple_GET_SIZE(names), given = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected keyword arguments only, received %zd positional", fn, nargs);
        return NULL;
    }
    PyObject *out = PyTuple_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < given; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t j = k < n && PyTuple_GET_ITEM(names, k) == key ? k : -1; /* in order: no search */
        for (Py_ssize_t i = 0; j < 0 && i < n; i++)
            if (PyUnicode_Compare(key, PyTuple_GET_ITEM(names, i)) == 0) j = i;
        if (j < 0 || PyTuple_GET_ITEM(out, j) != NULL) {
            PyErr_Format(PyExc_TypeError, "%s: unexpected or repeated argument %R", fn, key);
            Py_DECREF(out);
            return NULL;
        }
        Py_INCREF(args[k]);
        PyTuple_SET_ITEM(out, j, args[k]);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(out, i) == NULL) {
            PyErr_Format(PyExc_TypeError, "%s: missing argument %R", fn, PyTuple_GET_ITEM(names, i));
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

#define DEFINE_PART(index, function)                                                                      \
    static PyObject *py_##function(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
        return arguments_by_name(args, nargs, kw, index);                                                  \
    }
DEFINE_PART(0, forward_loop_head)
DEFINE_PART(1, forward_loop_buffers)
DEFINE_PART(2, forward_loop_tail)
DEFINE_PART(3, backward_loop_head)
DEFINE_PART(4, backward_loop_buffers)
DEFINE_PART(5, backward_loop_tail)
#undef DEFINE_PART

static int forward_loop_args(PyObject *const *args, Py_ssize_t nargs, long long *a) {
    return loop_args(args, nargs, 42, "forward_loop", a);
}

static int backward_loop_args(PyObject *const *args, Py_ssize_t nargs, long long *a) {
    return loop_args(args, nargs, 32, "backward_loop", a);
}

#define CALL(REAL, fn, blas)                                                                                 \
    fn(&blas, (int)a[6], (long)a[7], (long)a[8], (long)a[9], (long)a[10], (int)a[11], PTR(REAL, a[12]),      \
       PTR(REAL, a[13]), PTR(REAL, a[14]), PTR(REAL, a[15]), PTR(const uint8_t, a[16]), (int)a[17],         \
       PTR(const REAL, a[18]), (int)a[19], PTR(REAL, a[20]), PTR(REAL, a[21]), PTR(REAL, a[22]),            \
       PTR(const REAL, a[23]), PTR(REAL, a[24]), PTR(REAL, a[25]), PTR(REAL, a[26]), PTR(const REAL, a[27]), \
       PTR(const REAL, a[28]), PTR(REAL, a[29]), PTR(const REAL, a[30]), (long)a[31], PTR(const REAL, a[32]), \
       PTR(const REAL, a[33]), PTR(const REAL, a[34]), PTR(const REAL, a[35]), PTR(const REAL, a[36]),      \
       (int)a[38], (int)a[39], (int)a[40], (long)a[41], (long)a[37])
DEFINE_RUN_LOOP(forward_loop)
#undef CALL

#define CALL(REAL, fn, blas)                                                                                \
    fn(&blas, (long)a[6], (long)a[7], (long)a[8], (long)a[9], (int)a[10], PTR(REAL, a[11]),                 \
       PTR(const REAL, a[12]), PTR(const REAL, a[13]), PTR(const uint8_t, a[14]), PTR(REAL, a[15]),         \
       PTR(REAL, a[16]), PTR(REAL, a[17]), PTR(REAL, a[18]), PTR(REAL, a[19]), PTR(REAL, a[20]),            \
       PTR(const REAL, a[21]), PTR(REAL, a[22]), PTR(REAL, a[23]), PTR(const REAL, a[24]),                  \
       PTR(const REAL, a[25]), (int)a[26], PTR(REAL, a[27]), (int)a[28], (int)a[29], (int)a[30], (long)a[31])
DEFINE_RUN_LOOP(backward_loop)
#undef CALL

#include "_lstm_variant_entry.h" /* the variant loops' entry points */
#include "_lstm_small_gemm.h"   /* unilstm_small_?gemm: the hand-written gemm for tiny products */

/* one whole loop, without the GIL: it touches only the buffers it is given */
static PyObject *run_loop(PyObject *const *args, Py_ssize_t nargs,
                          int (*check)(PyObject *const *, Py_ssize_t, long long *),
                          void (*run)(const long long *)) {
    long long a[42];
    if (check(args, nargs, a) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    run(a);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_forward_loop(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return run_loop(args, nargs, forward_loop_args, run_forward_loop);
}

static PyObject *py_backward_loop(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return run_loop(args, nargs, backward_loop_args, run_backward_loop);
}

/*
 * Two whole loops at once (the two directions of a bidirectional layer): one OpenMP team of two threads,
 * each running one loop with its cell unsplit; the BLAS called inside a parallel region runs on the
 * calling thread alone. Without the OpenMP runtime, one after the other.
 */
typedef struct {
    const long long *records[2];
    void (*run)(const long long *);
} loop_pair_t;

static void loop_pair_task(void *argument) {
    const loop_pair_t *pair = (const loop_pair_t *)argument;
    const int t = omp_thread_num_fn();
    if (t < 2) pair->run(pair->records[t]);
}

static PyObject *run_loop_pair(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t arity, const char *name,
                               int (*check)(PyObject *const *, Py_ssize_t, long long *),
                               void (*run)(const long long *), int threads_index) {
    long long a[2][42];
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s: expected two argument tuples, received %zd arguments", name, nargs);
        return NULL;
    }
    for (int k = 0; k < 2; k++) {
        if (!PyTuple_Check(args[k]) || PyTuple_GET_SIZE(args[k]) != arity) {
            PyErr_Format(PyExc_TypeError, "%s: expected tuples of %zd integers", name, arity);
            return NULL;
        }
        if (check(&PyTuple_GET_ITEM(args[k], 0), arity, a[k]) < 0) return NULL;
        a[k][threads_index] = 1; /* each loop on its own thread: no split of its cell */
    }
    loop_pair_t pair = {{a[0], a[1]}, run};
    Py_BEGIN_ALLOW_THREADS
    if (gomp_parallel_fn != NULL) {
        gomp_parallel_fn(loop_pair_task, &pair, 2, 0);
    } else {
        run(a[0]);
        run(a[1]);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_forward_loop_pair(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return run_loop_pair(args, nargs, 42, "forward_loop_pair", forward_loop_args, run_forward_loop, 38);
}

static PyObject *py_backward_loop_pair(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return run_loop_pair(args, nargs, 32, "backward_loop_pair", backward_loop_args, run_backward_loop, 28);
}

/* C (M, N) = A (M, K) op(W) through the loops' product helper, packed when the sizes ask for it (as if
 * repeated over many steps), a[16] times: the driver's check of the BLAS functions it found, and the
 * benchmarks' timing of a loop's per-step products (packed once, computed a[16] times) */
static PyObject *py_product(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[17];
    if (parse_ints(args, nargs, 17, "product", a) < 0) return NULL;
    CHECK_GEMM("product", a[1]);
    /* a[6] trans, a[7..9] M N K, a[10] A, a[11] lda, a[12] W, a[13] ldw, a[14] C, a[15] ldc, a[16] repeat */
#define CALL(R, REAL)                                                                                        \
    do {                                                                                                     \
        BLAS(R, blas)                                                                                        \
        R##_operand_t op = {PTR(const REAL, a[12]), (long)a[13], (int)a[6], NULL};                           \
        operand_pack_##R(&blas, &op, (long)a[7], (long)a[8], (long)a[9], 1L << 30);                          \
        for (long long s = 0; s < a[16]; s++)                                                               \
            product_##R(&blas, &op, (long)a[7], (long)a[8], (long)a[9], PTR(const REAL, a[10]), (long)a[11],   \
                        PTR(REAL, a[14]), (long)a[15]);                                                      \
        free(op.packed);                                                                                     \
    } while (0)
    if (a[0]) CALL(f64, double); else CALL(f32, float);
#undef CALL
    Py_RETURN_NONE;
}

/* y = f(x) over a buffer, and out = g * f'(x) when g is given: for the tests of the approximations */
static PyObject *py_activation(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[7];
    if (parse_ints(args, nargs, 7, "activation", a) < 0) return NULL;
    CHECK_ACT("activation", a[1]);
#define CALL(REAL, fwd, bwd)                                                                          \
    do {                                                                                              \
        fwd((int)a[1], PTR(const REAL, a[2]), PTR(REAL, a[3]), (long)a[6]);                           \
        if (a[4] != 0)                                                                                \
            bwd((int)a[1], PTR(const REAL, a[2]), PTR(const REAL, a[3]), PTR(const REAL, a[4]),       \
                PTR(REAL, a[5]), (long)a[6]);                                                         \
    } while (0)
    if (a[0]) CALL(double, act_forward_f64, act_backward_f64); else CALL(float, act_forward_f32, act_backward_f32);
#undef CALL
    Py_RETURN_NONE;
}

/* the OpenMP runtime's GOMP_parallel, omp_get_thread_num and omp_get_num_threads, all three or all 0 */
static PyObject *py_set_cell_threads(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[3];
    if (parse_ints(args, nargs, 3, "set_cell_threads", a) < 0) return NULL;
    if ((a[0] == 0) != (a[1] == 0) || (a[0] == 0) != (a[2] == 0)) {
        PyErr_SetString(PyExc_ValueError, "set_cell_threads: expected three function addresses or three zeros");
        return NULL;
    }
    gomp_parallel_fn = (gomp_parallel_t)(uintptr_t)a[0];
    omp_thread_num_fn = (omp_query_t)(uintptr_t)a[1];
    omp_num_threads_fn = (omp_query_t)(uintptr_t)a[2];
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_cell_threads", (PyCFunction)(void (*)(void))py_set_cell_threads, METH_FASTCALL, "the OpenMP runtime"},
    {"forward_step", (PyCFunction)(void (*)(void))py_forward_step, METH_FASTCALL, "one forward step"},
    {"finish_hidden", (PyCFunction)(void (*)(void))py_finish_hidden, METH_FASTCALL, "hidden-state rows"},
    {"backward_step", (PyCFunction)(void (*)(void))py_backward_step, METH_FASTCALL, "one backward step"},
    {"forward_loop", (PyCFunction)(void (*)(void))py_forward_loop, METH_FASTCALL, "the forward time loop"},
    {"backward_loop", (PyCFunction)(void (*)(void))py_backward_loop, METH_FASTCALL, "the backward time loop"},
    {"forward_loop_pair", (PyCFunction)(void (*)(void))py_forward_loop_pair, METH_FASTCALL, "two forward loops"},
    {"backward_loop_pair", (PyCFunction)(void (*)(void))py_backward_loop_pair, METH_FASTCALL,
     "two backward loops"},
    {"product", (PyCFunction)(void (*)(void))py_product, METH_FASTCALL, "one checked matrix product"},
#define PART(function, doc) \
    {#function, (PyCFunction)(void (*)(void))py_##function, METH_FASTCALL | METH_KEYWORDS, doc},
    PART(forward_loop_head, "forward_loop's first arguments by name, as a tuple")
    PART(forward_loop_buffers, "forward_loop's middle arguments by name, as a tuple")
    PART(forward_loop_tail, "forward_loop's last arguments by name, as a tuple")
    PART(backward_loop_head, "backward_loop's first arguments by name, as a tuple")
    PART(backward_loop_buffers, "backward_loop's middle arguments by name, as a tuple")
    PART(backward_loop_tail, "backward_loop's last arguments by name, as a tuple")
#undef PART
    {"activation", (PyCFunction)(void (*)(void))py_activation, METH_FASTCALL, "an activation over a buffer"},
    {"variant_forward_loop", (PyCFunction)(void (*)(void))py_variant_forward_loop, METH_FASTCALL,
     "the cell variants' forward time loop"},
    {"variant_backward_loop", (PyCFunction)(void (*)(void))py_variant_backward_loop, METH_FASTCALL,
     "the cell variants' backward time loop"},
    {"variant_loop_pair", (PyCFunction)(void (*)(void))py_variant_loop_pair, METH_FASTCALL,
     "two variant loops at once"},
    {"zoneout_draws", (PyCFunction)(void (*)(void))py_zoneout_draws, METH_FASTCALL, "zoneout's draws in training"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lstm_cell", NULL, -1, methods};

/* the activation table this build was compiled with, {name: id} */
static PyObject *activation_table(void) {
    PyObject *ids = PyDict_New();
    if (ids == NULL) return NULL;
#define X(name, NAME)                                                 \
    do {                                                              \
        PyObject *code = PyLong_FromLong(ACT_##NAME);                 \
        if (code == NULL || PyDict_SetItemString(ids, #name, code) < 0) { \
            Py_XDECREF(code);                                         \
            Py_DECREF(ids);                                           \
            return NULL;                                              \
        }                                                             \
        Py_DECREF(code);                                              \
    } while (0);
    ACT_NAMES
#undef X
    return ids;
}

/* the sizes and thresholds Python must agree with, as module constants; the loops' parameter names */
static int add_constants(PyObject *m) {
    PyObject *ids = activation_table();
    if (ids == NULL || PyModule_AddObject(m, "ACTIVATION_IDS", ids) < 0) {
        Py_XDECREF(ids);
        return -1;
    }
    PyObject *forward = PyTuple_New(0), *backward = PyTuple_New(0); /* all the names, for Python's checks */
    for (int k = 0; k < PART_COUNT && forward != NULL && backward != NULL; k++) {
        if (part_names[k] == NULL) part_names[k] = parameter_names(part_lists[k], part_sizes[k]);
        if (part_names[k] == NULL) break;
        PyObject **all = k < 3 ? &forward : &backward, *joined = PySequence_Concat(*all, part_names[k]);
        Py_SETREF(*all, joined);
    }
    if (forward == NULL || backward == NULL || part_names[PART_COUNT - 1] == NULL ||
        PyModule_AddObject(m, "FORWARD_LOOP_PARAMETERS", forward) < 0) {
        Py_XDECREF(forward);
        Py_XDECREF(backward);
        return -1;
    }
    if (PyModule_AddObject(m, "BACKWARD_LOOP_PARAMETERS", backward) < 0) {
        Py_DECREF(backward);
        return -1;
    }
    PyObject *vf = parameter_names(variant_forward_names, VFA_COUNT);
    if (vf == NULL || PyModule_AddObject(m, "VARIANT_FORWARD_PARAMETERS", vf) < 0) {
        Py_XDECREF(vf);
        return -1;
    }
    PyObject *vb = parameter_names(variant_backward_names, VBA_COUNT);
    if (vb == NULL || PyModule_AddObject(m, "VARIANT_BACKWARD_PARAMETERS", vb) < 0) {
        Py_XDECREF(vb);
        return -1;
    }
    PyObject *pids = PyDict_New();
    if (pids == NULL) return -1;
#define X(name, NAME)                                                      \
    do {                                                                   \
        PyObject *code = PyLong_FromLong(PACT_##NAME);                     \
        if (code == NULL || PyDict_SetItemString(pids, #name, code) < 0) { \
            Py_XDECREF(code);                                              \
            Py_DECREF(pids);                                               \
            return -1;                                                     \
        }                                                                  \
        Py_DECREF(code);                                                   \
    } while (0);
    PACT_NAMES
#undef X
    if (PyModule_AddObject(m, "PARAMETRIC_IDS", pids) < 0) {
        Py_DECREF(pids);
        return -1;
    }
    if (PyModule_AddIntConstant(m, "VARIANT_SCRATCH_PER_HIDDEN", VARIANT_SCRATCH_PER_HIDDEN) < 0 ||
        PyModule_AddIntConstant(m, "VARIANT_ACC_PER_HIDDEN", VARIANT_ACC_PER_HIDDEN) < 0 ||
        PyModule_AddIntConstant(m, "ACTIVATION_COUNT", ACT_COUNT) < 0 ||
        PyModule_AddIntConstant(m, "SCRATCH_PER_HIDDEN", SCRATCH_PER_HIDDEN) < 0 ||
        PyModule_AddIntConstant(m, "CELL_PARALLEL_MIN", CELL_PARALLEL_MIN) < 0 ||
        PyModule_AddIntConstant(m, "PACK_MIN_ROWS", PACK_MIN_ROWS) < 0 ||
        PyModule_AddIntConstant(m, "PACK_MIN_WEIGHT", PACK_MIN_WEIGHT) < 0 ||
        PyModule_AddIntConstant(m, "PACK_MIN_STEPS", PACK_MIN_STEPS) < 0)
        return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__lstm_cell(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && add_constants(m) < 0) Py_CLEAR(m);
    return m;
}
