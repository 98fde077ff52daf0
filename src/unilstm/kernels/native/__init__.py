"""The native kernel: one LSTM direction with the time loop and the cell in C, on the CPU.

* :mod:`._extension` loads the compiled ``_lstm_cell`` (refusing a stale build) and is the one place that
  calls it, with named arguments;
* :mod:`._blas` finds the BLAS and OpenMP functions torch links and checks them on first use;
* :mod:`._loops` holds one direction's forward and backward passes and their autograd Function;
* :mod:`._variants` the same for the cell variants of :mod:`unilstm.spec` (their own C loops);
* :mod:`._pair` runs two loops at once (both directions of a layer, or the halves of a batch).

The extension is optional: without a C compiler at install time :func:`available` is False (and
:func:`unavailable_reason` says why) and dispatch uses the fast kernel.
"""

from ._blas import blas_functions, blas_gemm
from ._extension import available, unavailable_reason
from ._loops import NATIVE_ACTIVATION_IDS, accepts, cell_threads, run_direction_native
from ._pair import halves_accept, pair_accepts, run_bidirectional_native, run_direction_native_halves

__all__ = [
    "NATIVE_ACTIVATION_IDS", "accepts", "available", "blas_functions", "blas_gemm", "cell_threads",
    "halves_accept", "pair_accepts", "run_bidirectional_native", "run_direction_native",
    "run_direction_native_halves", "unavailable_reason",
]
