# ruff: noqa: N803  (B, H, P are the sizes of the module docstring)
"""Whether the C loops split a step's cell rows among torch's intra-op threads, measured at first use.

From ``_extension.CELL_PARALLEL_MIN`` hidden units per step (B * H) the C loop may fork torch's OpenMP team
for each step's cell (``_lstm_cell.c``, ``cell_team``); below it a fork is never tried (a GOMP_parallel on
a hot team costs 1-3 us, more than the cell of a few thousand units). Above it, whether the split pays off
depends on the processor (cores, caches, how long the team takes to wake) and on the shape, so the first
forward loop of each kind (:func:`split_kind`: dtype, each size's power-of-two bucket, the thread count)
runs the loop split and unsplit in interleaved rounds (:func:`..first_use.route`) and keeps the faster;
the backward loop of the same kind follows the forward's choice (it cannot be run twice: it overwrites its
inputs). ``policy.CELL_SPLIT`` decides with measuring off (split, the rule before).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import first_use, policy
from . import _blas
from . import _extension as C

_FORWARD_THREADS_AT = (
    C.FORWARD_LOOP_PARAMETERS.index("threads") if "threads" in C.FORWARD_LOOP_PARAMETERS else -1
)


def split_kind(dtype: torch.dtype, B: int, H: int, P: int) -> tuple:
    """What decides the split: dtype, each size's power-of-two bucket and the intra-op thread count."""
    return ("cell_split", dtype, B.bit_length(), H.bit_length(), P.bit_length(), torch.get_num_threads())


def would_split(threads: int, B: int, H: int) -> bool:
    """Whether the C loop splits a step given ``threads`` (its own rule: two threads, two rows and
    CELL_PARALLEL_MIN units at least)."""
    return threads > 1 and B > 1 and B * H >= C.CELL_PARALLEL_MIN


def forward_threads(
    dtype: torch.dtype, threads: int, B: int, H: int, P: int, run: Callable[[tuple[int, ...]], None] | None,
    arguments: tuple[int, ...],
) -> tuple[int, ...]:
    """The forward loop's argument tuple with the thread count measured fastest for its kind
    (:func:`split_kind`): its own, or 1 (unsplit); the first loop of a kind runs both, ``run(arguments)``
    (the forward loop gives the same results when run again on the same buffers); with ``run`` None an
    unmeasured kind keeps ``threads``."""
    if not would_split(threads, B, H) or _FORWARD_THREADS_AT < 0:
        return arguments
    if not first_use.measuring():
        return arguments if policy.CELL_SPLIT else _with_threads(arguments, 1)
    kind = split_kind(dtype, B, H, P)
    chosen = first_use.measured_route(kind)
    if chosen is None and run is not None and _blas._threads_for_check is None:
        one = _with_threads(arguments, 1)
        chosen = first_use.route(
            kind, lambda: {"split": lambda: run(arguments), "one": lambda: run(one)}, "split"
        )
    return _with_threads(arguments, 1) if chosen == "one" else arguments


def backward_threads(dtype: torch.dtype, threads: int, B: int, H: int, P: int) -> int:
    """The backward loop's thread count: the forward's measured choice for the kind (``threads`` where none
    was measured), ``policy.CELL_SPLIT`` with measuring off."""
    if not would_split(threads, B, H):
        return threads
    if not first_use.measuring():
        return threads if policy.CELL_SPLIT else 1
    return 1 if first_use.measured_route(split_kind(dtype, B, H, P)) == "one" else threads


def _with_threads(arguments: tuple[int, ...], threads: int) -> tuple[int, ...]:
    return arguments[:_FORWARD_THREADS_AT] + (threads,) + arguments[_FORWARD_THREADS_AT + 1 :]
