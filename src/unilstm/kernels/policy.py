"""Every threshold that picks a kernel, a thread split or a GEMM route, in one place.

Each constant names the section of ``benchmarks/kernel_choices.md`` with the measurements that justified
it; the code that applies a threshold reads it from here at call time (tests may change it). The C loops'
own thresholds (cell split, MKL packing) are compiled into ``native/_lstm_cell.c`` and exported by the
built module: ``native._extension.CELL_PARALLEL_MIN`` and ``PACK_MIN_*``. Choices that depend on the
processor are measured at first use (:mod:`.first_use`: the kernel for CPU inference, GEMM routes, the
loops' gemm, thread splits); their constants here decide only with measuring off
(``UNILSTM_KERNEL_CHOICE=policy``, the test suite).
"""

from __future__ import annotations

# -- the native kernel (kernels/native/) -------------------------------------------------------------------

#: Per-step GEMMs read contiguous transposed copies of the recurrent and projection weights from this many
#: steps and sequences on (kernel_choices.md, "Transposed weight copies").
COPY_MIN_STEPS = 4
COPY_MIN_BATCH = 8

#: Two C loops at once (one thread each) are measured against one after the other at first use per kind of
#: call (native/_pair.py); with measuring off (UNILSTM_KERNEL_CHOICE=policy) these rules, measured once on
#: the 2-core Xeon, decide (kernel_choices.md, "Both directions at once, batch halves at once"):
#: the two directions of a bidirectional layer run at once when the batch has at least PAIR_MIN_BATCH
#: sequences or the hidden size is at most PAIR_MAX_HIDDEN;
PAIR_MIN_BATCH = 16
PAIR_MAX_HIDDEN = 256

#: one direction's batch runs as two halves at once from HALVES_MIN_BATCH sequences on, when the recurrent
#: weights take at most HALVES_MAX_WEIGHT_BYTES (with autograd) or HALVES_MAX_WEIGHT_BYTES_INFERENCE
#: (without).
HALVES_MIN_BATCH = 16
HALVES_MAX_WEIGHT_BYTES = 2**20  # H = P = 256 in float32
HALVES_MAX_WEIGHT_BYTES_INFERENCE = 2**18  # H = P = 128 in float32

#: Two C loops run at once (pair, halves) only with exactly this many intra-op threads: one per loop, and
#: with more each loop's GEMMs would give up the other threads (kernel_choices.md, "Both directions at
#: once, batch halves at once").
TWO_LOOPS_THREADS = 2

# -- the fast kernel (kernels/fast.py) ---------------------------------------------------------------------

#: Up to this many rows, the forward on CUDA (or in the fused step) computes each step's projection
#: h' = r W_hr^T as addmm with a zero bias (cublasLt's GEMM with a bias epilogue), above it as mm (cuBLAS)
#: (kernel_choices.md, "Projection through a zero bias"; benchmarks/gpu_small_gemm.py).
PROJECTION_THROUGH_BIAS_MAX_ROWS = 16

# -- choices measured at first use (kernels/first_use.py) ---------------------------------------------------

#: A first-use measurement times its candidates in this many interleaved rounds (the fastest counts) when
#: the longest warm-up run took less than FIRST_USE_SHORT_S seconds, else in one round: on the shared 2-core
#: VM single timings of one candidate moved by 20-40 % (kernel_choices.md, "CPU inference of standard
#: cells: measured at first use").
FIRST_USE_ROUNDS = 3
FIRST_USE_SHORT_S = 0.02
#: ... and in FIRST_USE_TINY_ROUNDS rounds where the first round's slowest candidate took less than
#: FIRST_USE_TINY_S: a batch-1 call of a few hundred microseconds costs a few milliseconds to measure this
#: way, and with three rounds the choice between torch's fused kernel and the native one at (T, in, H) =
#: (60, 64, 128), batch 1, went either way on the loaded VM (kernel_choices.md, "CPU inference of standard
#: cells: measured at first use").
FIRST_USE_TINY_ROUNDS = 9
FIRST_USE_TINY_S = 0.002

#: The input projection X W_ih^T of the native kernel without measuring (``UNILSTM_KERNEL_CHOICE=policy``):
#: the C loop's own gemm call, which saves a torch op per call (kernel_choices.md, "Input projection
#: route"). Measured, it is one of "c_gemm", "torch_mm" (torch's MKL addmm) or "onednn" (oneDNN's linear,
#: float32 only).
INPUT_PROJECTION_ROUTE = "c_gemm"

# -- dispatch (kernels/dispatch.py) ------------------------------------------------------------------------

#: CPU calls of at most this many steps, and steps times sequences, run the native kernel instead of torch's
#: fused kernel (streaming; kernel_choices.md, "Streaming calls").
STREAMING_MAX_STEPS = 4
STREAMING_MAX_ROWS = 16

#: CPU training (autograd records the call) of standard cells runs the native kernel rather than torch's
#: fused kernel, except where torch.nn.LSTM's exact numbers are asked for (kernel_choices.md, "Training
#: standard cells").
NATIVE_TRAINS_STANDARD_CELLS = True

#: Whether torch's packed (lengths) kernel may run CPU training: its backward is many times slower than the
#: native kernel's (kernel_choices.md, "torch's packed CPU backward").
TORCH_PACKED_CPU_BACKWARD = False

# -- the hand-written gemm for tiny products (kernels/native/_small_gemm.py) --------------------------------

#: Without measuring (``UNILSTM_KERNEL_CHOICE=policy``) the C loops call the BLAS gemm, as before the
#: hand-written one existed; measured at first use, each kind of loop takes the faster (kernel_choices.md,
#: "Small products: the hand-written gemm").
SMALL_GEMM = False

# -- the cell split among threads (kernels/native/_cell_split.py) -------------------------------------------

#: Without measuring, a step's cell splits among torch's intra-op threads wherever the C loop would (from
#: CELL_PARALLEL_MIN hidden units per step, _lstm_cell.c); measured at first use, each kind of loop takes
#: split or unsplit, whichever ran faster (kernel_choices.md, "Cell split among threads").
CELL_SPLIT = True
