"""Kernel choices that depend on the processor, decided by measuring them at first use.

Which of two correct kernels is faster depends on the shape and on the processor: for CPU inference of
standard cells, torch's fused oneDNN kernel against the native C loop takes 0.76-1.32x across shapes on a
2-core Intel Xeon, and on an AMD EPYC torch's oneDNN GEMMs run ~1.5x faster than the MKL sgemm the native
loop calls (``benchmarks/kernel_choices.md``, "CPU inference of standard cells: measured at first use").
So the first call of each kind runs every candidate twice (the first run warms it up and gives the result;
the second is timed), keeps the fastest for that kind for the rest of the process, and returns its result.
A kind is what decides the winner: the dtype, the spec's shape (layers, directions, projection, counted
steps or not), each size rounded to a power of two, and the intra-op thread count.

``UNILSTM_KERNEL_CHOICE=policy`` turns measuring off (the fixed rules of :mod:`.policy` decide, as on
processors nobody measured); :func:`winners` reports what was measured.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from torch import Tensor

from ..spec import LSTMSpec

CHOICE_ENV = "UNILSTM_KERNEL_CHOICE"

Result = TypeVar("Result")

_winners: dict[Hashable, str] = {}
_timings: dict[Hashable, dict[str, float]] = {}
_lock = threading.Lock()


def measuring() -> bool:
    """Whether choices are measured (the default) rather than left to the fixed policy."""
    return os.environ.get(CHOICE_ENV, "measure").strip().lower() != "policy"


def _bucket(size: int) -> int:
    return int(size).bit_length()


def inference_kind(spec: LSTMSpec, x: Tensor, counted: bool) -> Hashable:
    """The kind of a CPU inference call (see the module docstring); ``x`` is (T, B, F)."""
    steps, batch, features = x.shape
    return (
        "inference",
        x.dtype,
        spec.num_layers,
        spec.bidirectional,
        spec.proj_size > 0,
        counted,
        _bucket(steps),
        _bucket(batch),
        _bucket(features),
        _bucket(spec.hidden_size),
        torch.get_num_threads(),
    )


def fastest(kind: Hashable, candidates: dict[str, Callable[[], Result | None]]) -> Result:
    """The result of the fastest candidate for ``kind`` (measured now if ``kind`` is new). A candidate may
    return None when it cannot compute this particular call (torch's fused kernel and a mask with gaps);
    then another one computes it, and a choice is made only from calls every candidate computed."""
    chosen = _winners.get(kind)
    if chosen is not None:
        result = candidates[chosen]()
        if result is not None:
            return result
        for name, run in candidates.items():
            if name != chosen and (result := run()) is not None:
                return result
        raise RuntimeError(f"no kernel computes this call (tried {list(candidates)})")
    results = {name: run() for name, run in candidates.items()}
    computed = {name: result for name, result in results.items() if result is not None}
    if not computed:
        raise RuntimeError(f"no kernel computes this call (tried {list(candidates)})")
    if len(computed) == len(candidates):
        timings = {}
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            timings[name] = time.perf_counter() - start
        best = min(timings, key=timings.__getitem__)
        with _lock:
            _winners.setdefault(kind, best)
            _timings.setdefault(kind, timings)
        return computed[best]
    return next(iter(computed.values()))


def winners() -> dict[Hashable, tuple[str, dict[str, float]]]:
    """What was measured so far: kind -> (winner, seconds per candidate)."""
    with _lock:
        return {kind: (name, dict(_timings.get(kind, {}))) for kind, name in _winners.items()}


def forget() -> None:
    """Drop every measured choice (tests; a process whose thread count changed measures again anyway)."""
    with _lock:
        _winners.clear()
        _timings.clear()
