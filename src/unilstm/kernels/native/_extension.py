# ruff: noqa: N803  (the parameters carry the names of the C functions' parameters in _lstm_cell_body.h)
"""The compiled module ``_lstm_cell`` and the one place that calls it.

Every C entry point takes integers only: a dtype flag (0 float32, 1 float64), sizes and buffer addresses
(0 for NULL). The functions here take them as keyword arguments named after the C functions' parameters
(see the comments above ``forward_loop`` and ``backward_loop`` in ``_lstm_cell_body.h``). The whole loops
take a tuple that ``forward_loop_head`` + ``_buffers`` + ``_tail`` (and the backward's) build from keyword
arguments, so that a caller can defer a loop and run two at once (:func:`forward_loop_pair`). The per-step
entry points come with the arguments fixed over a pass bound by name (:func:`forward_stepper` ...).

On import the module's exported constants are compared with the Python side: a build from another
activation table (a stale ``.so``) is refused, ``available()`` is False and ``unavailable_reason()`` says
why.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from ..activation_ids import ACTIVATION_IDS

if TYPE_CHECKING:
    from torch import Tensor

BlasFunctions = tuple[int, int, int, int, int]


def _load() -> tuple[ModuleType | None, str]:
    try:  # by its full name: a missing module then says "No module named ...", not "circular import"
        module = importlib.import_module(f"{__package__}._lstm_cell")
    except ImportError as error:  # built without a C compiler: the pure-torch kernels remain
        return None, f"the C extension was not built ({error})"
    built = getattr(module, "ACTIVATION_IDS", None)
    if built != ACTIVATION_IDS:
        return None, (
            "the C extension was built from another activation table than unilstm/kernels/activation_ids.py "
            "(a stale build): rebuild it with `python setup.py build_ext --inplace`"
        )
    return module, ""


_lstm_cell, _UNAVAILABLE_REASON = _load()

#: floats of scratch per hidden unit that one thread of a C cell step needs
SCRATCH_PER_HIDDEN: int = getattr(_lstm_cell, "SCRATCH_PER_HIDDEN", 0)
#: the C loops pack a per-step product's weight (MKL's packed GEMM) from this many rows, weight elements
#: (K * N) and steps on
PACK_MIN_ROWS: int = getattr(_lstm_cell, "PACK_MIN_ROWS", 0)
PACK_MIN_WEIGHT: int = getattr(_lstm_cell, "PACK_MIN_WEIGHT", 0)
PACK_MIN_STEPS: int = getattr(_lstm_cell, "PACK_MIN_STEPS", 0)
#: the C cell splits a step's rows among threads from this many hidden units per step (B * H) on
CELL_PARALLEL_MIN: int = getattr(_lstm_cell, "CELL_PARALLEL_MIN", 0)

#: backward_step's phases (bit flags, see backward_step_rows in _lstm_cell_body.h)
TAIL, HEAD, CELL = 1, 2, 4


def address(t: Tensor | None) -> int:
    """A tensor's address for the C code; 0 (NULL) for None."""
    return 0 if t is None else t.data_ptr()


def available() -> bool:
    """Whether the C cell was built with this installation (and from this activation table)."""
    return _lstm_cell is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    return "" if _lstm_cell is not None else (_UNAVAILABLE_REASON or "the C extension is switched off")


def _missing(**parameters: int) -> tuple[int, ...]:
    raise RuntimeError(unavailable_reason())


# A loop's argument tuple, built from its parameters by name in three parts (head + buffers + tail) by the C
# module, where the names are defined once (FORWARD_LOOP_PARAMETERS, BACKWARD_LOOP_PARAMETERS): ``float64``,
# the BLAS functions ``gemm``, ``pack_get_size``, ``pack``, ``compute``, ``gemm_batch`` (0 for those
# missing), then the parameters of forward_loop / backward_loop in _lstm_cell_body.h. Three parts because
# CPython passes at most 15 keyword arguments without building a dict (a tenth of a streaming step).
_Part = Callable[..., tuple[int, ...]]
forward_loop_head: _Part = getattr(_lstm_cell, "forward_loop_head", _missing)
forward_loop_buffers: _Part = getattr(_lstm_cell, "forward_loop_buffers", _missing)
forward_loop_tail: _Part = getattr(_lstm_cell, "forward_loop_tail", _missing)
backward_loop_head: _Part = getattr(_lstm_cell, "backward_loop_head", _missing)
backward_loop_buffers: _Part = getattr(_lstm_cell, "backward_loop_buffers", _missing)
backward_loop_tail: _Part = getattr(_lstm_cell, "backward_loop_tail", _missing)
FORWARD_LOOP_PARAMETERS: tuple[str, ...] = getattr(_lstm_cell, "FORWARD_LOOP_PARAMETERS", ())
BACKWARD_LOOP_PARAMETERS: tuple[str, ...] = getattr(_lstm_cell, "BACKWARD_LOOP_PARAMETERS", ())


def forward_loop(arguments: tuple[int, ...]) -> None:
    """One forward time loop in C (without the GIL)."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.forward_loop(*arguments)


def backward_loop(arguments: tuple[int, ...]) -> None:
    """One backward time loop in C (without the GIL)."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.backward_loop(*arguments)


def forward_loop_pair(first: tuple[int, ...], second: tuple[int, ...]) -> None:
    """Two forward loops at once, one on each of two threads of torch's OpenMP team, their cells unsplit."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.forward_loop_pair(first, second)


def backward_loop_pair(first: tuple[int, ...], second: tuple[int, ...]) -> None:
    """Two backward loops at once, as :func:`forward_loop_pair`."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.backward_loop_pair(first, second)


def forward_stepper(
    *, float64: bool, B: int, H: int, P: int, zero_out: int, n_masks: int, scratch: int, act: int, ract: int,
) -> Callable[..., None]:
    """The C ``forward_step`` (one forward cell step over all rows, for the per-step loop that runs when no
    BLAS gemm was found) with the arguments that stay fixed over a pass bound by name. The function returned
    takes the per-step ones positionally (one call per step: keywords would cost more than the cell step)."""
    assert _lstm_cell is not None  # callers check available() first
    step, f64 = _lstm_cell.forward_step, int(float64)

    def forward_step(z: int, rec: int, c_prev: int, c_out: int, h_prev: int, h_out: int, out_t: int,
                     prev_out: int, keep: int, mh: int, hnext: int, r_out: int, r_hist: int) -> None:
        step(f64, B, H, P, z, rec, c_prev, c_out, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, n_masks,
             hnext, r_out, r_hist, scratch, act, ract)

    return forward_step


def finish_hidden_stepper(
    *, float64: bool, B: int, P: int, zero_out: int, mh: int, n_masks: int, hnext: int,
) -> Callable[..., None]:
    """The C ``finish_hidden`` (the hidden state's rows after the projection, the per-step loop's second call
    with proj_size) with the arguments fixed over a pass bound, as :func:`forward_stepper`."""
    assert _lstm_cell is not None  # callers check available() first
    step, f64 = _lstm_cell.finish_hidden, int(float64)

    def finish_hidden(hcand: int, h_prev: int, h_out: int, out_t: int, prev_out: int, keep: int) -> None:
        step(f64, B, P, hcand, h_prev, h_out, out_t, prev_out, keep, zero_out, mh, n_masks, hnext)

    return finish_hidden


def backward_stepper(
    *, float64: bool, B: int, H: int, P: int, n_masks: int, scratch: int, act: int, ract: int,
) -> Callable[..., None]:
    """The C ``backward_step`` (the ``phases``, TAIL | HEAD | CELL, of one backward cell step over all rows)
    with the arguments fixed over a pass bound, as :func:`forward_stepper`."""
    assert _lstm_cell is not None  # callers check available() first
    step, f64 = _lstm_cell.backward_step, int(float64)

    def backward_step(phases: int, z: int, c_prev: int, c_new: int, dh: int, dc: int, gout: int, carry: int,
                      keep: int, dh_new_out: int, dh_hist: int, dr: int, dh_tmp: int, keep_prev: int, mh: int,
                      dz_copy: int) -> None:
        step(f64, phases, B, H, P, z, c_prev, c_new, dh, dc, gout, carry, keep, dh_new_out, dh_hist, dr,
             dh_tmp, keep_prev, mh, n_masks, dz_copy, scratch, act, ract)

    return backward_step


def product(
    *, float64: bool, blas: BlasFunctions, trans: bool, M: int, N: int, K: int, A: int, lda: int, W: int,
    ldw: int, C: int, ldc: int, repeat: int = 1,
) -> None:
    """C (M, N) = A (M, K) op(W), packed when the sizes ask for it: the loops' product helper, ``repeat``
    times (the weight packed once, as a loop packs it for its steps)."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.product(int(float64), *blas, int(trans), M, N, K, A, lda, W, ldw, C, ldc, repeat)


def activation(*, float64: bool, act: int, x: int, y: int, g: int, out: int, n: int) -> None:
    """y = f(x) over n elements, and out = g * f'(x) when g is not 0."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.activation(int(float64), act, x, y, g, out, n)


def set_cell_threads(gomp_parallel: int, omp_get_thread_num: int, omp_get_num_threads: int) -> None:
    """The OpenMP runtime's functions for the cell split (all three, or three zeros: one thread)."""
    assert _lstm_cell is not None  # callers check available() first
    _lstm_cell.set_cell_threads(gomp_parallel, omp_get_thread_num, omp_get_num_threads)


#: the cell variants' loops (_lstm_variant_body.h): their parameters' names in order, the ids of ONNX's
#: parametric activations ({kind: id}, past the shared table's) and the scratch per hidden unit and thread
VARIANT_FORWARD_PARAMETERS: tuple[str, ...] = getattr(_lstm_cell, "VARIANT_FORWARD_PARAMETERS", ())
VARIANT_BACKWARD_PARAMETERS: tuple[str, ...] = getattr(_lstm_cell, "VARIANT_BACKWARD_PARAMETERS", ())
PARAMETRIC_IDS: dict[str, int] = getattr(_lstm_cell, "PARAMETRIC_IDS", {})
VARIANT_SCRATCH_PER_HIDDEN: int = getattr(_lstm_cell, "VARIANT_SCRATCH_PER_HIDDEN", 0)


def variants_available() -> bool:
    """Whether the build has the variant loops (a build from before them lacks them: variants then run on
    the other kernels)."""
    return _lstm_cell is not None and bool(VARIANT_FORWARD_PARAMETERS)


def _by_name(names: tuple[str, ...], parameters: dict[str, int], function: str) -> tuple[int, ...]:
    if set(parameters) != set(names):
        missing, extra = set(names) - set(parameters), set(parameters) - set(names)
        raise TypeError(f"{function}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    return tuple(int(parameters[name]) for name in names)


def variant_forward_loop(**parameters: int) -> None:
    """The cell variants' forward time loop in C (without the GIL), its parameters by name
    (VARIANT_FORWARD_PARAMETERS; ``floats``: the address of a float64 array, FP_* in _lstm_cell.c)."""
    assert _lstm_cell is not None  # callers check variants_available() first
    _lstm_cell.variant_forward_loop(
        *_by_name(VARIANT_FORWARD_PARAMETERS, parameters, "variant_forward_loop")
    )


def variant_backward_loop(**parameters: int) -> None:
    """The cell variants' backward time loop in C (without the GIL), its parameters by name
    (VARIANT_BACKWARD_PARAMETERS)."""
    assert _lstm_cell is not None  # callers check variants_available() first
    _lstm_cell.variant_backward_loop(
        *_by_name(VARIANT_BACKWARD_PARAMETERS, parameters, "variant_backward_loop")
    )


def variant_forward_arguments(**parameters: int) -> tuple[int, ...]:
    """variant_forward_loop's argument tuple from its parameters by name (for :func:`variant_loop_pair`)."""
    return _by_name(VARIANT_FORWARD_PARAMETERS, parameters, "variant_forward_loop")


def variant_backward_arguments(**parameters: int) -> tuple[int, ...]:
    """variant_backward_loop's argument tuple from its parameters by name (for :func:`variant_loop_pair`)."""
    return _by_name(VARIANT_BACKWARD_PARAMETERS, parameters, "variant_backward_loop")


def variant_loop_pair(backward: bool, first: tuple[int, ...], second: tuple[int, ...]) -> None:
    """Two variant loops (forward, or backward) at once, one on each of two threads of torch's OpenMP team,
    their cells unsplit (one after the other without the OpenMP runtime)."""
    assert _lstm_cell is not None  # callers check variants_available() first
    _lstm_cell.variant_loop_pair(int(backward), first, second)


def zoneout_draws_available() -> bool:
    """Whether the build computes zoneout's draws (:func:`zoneout_draws`; a build from before it does not)."""
    return _lstm_cell is not None and hasattr(_lstm_cell, "zoneout_draws")


def zoneout_draws(out: Tensor, k0: int, k1: int, threshold: int) -> None:
    """Fills the contiguous float32 or float64 CPU tensor ``out`` with zoneout's 0/1 draws from the 32-bit
    keys k0, k1 (native/_variants.py's zoneout_keep says which bits)."""
    assert _lstm_cell is not None  # callers check zoneout_draws_available() first
    _lstm_cell.zoneout_draws(
        int(out.dtype.itemsize == 8), out.data_ptr(), out.numel(), k0, k1, threshold
    )
