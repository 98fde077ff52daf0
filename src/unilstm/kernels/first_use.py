"""Kernel choices that depend on the processor, decided by measuring them at first use.

Which of two correct kernels is faster depends on the shape and on the processor: for CPU inference of
standard cells, torch's fused oneDNN kernel against the native C loop takes 0.76-1.32x across shapes on a
2-core Intel Xeon, and on an AMD EPYC torch's oneDNN GEMMs run ~1.5x faster than the MKL sgemm the native
loop calls (``benchmarks/kernel_choices.md``, "CPU inference of standard cells: measured at first use").
So the first call of each kind runs every candidate once (it warms up and gives the result), then times
them in interleaved rounds (``policy.FIRST_USE_ROUNDS`` where one run is short, a single round where it is
long: a shared machine's load moves single timings by tens of percent), keeps the candidate with the
fastest round for that kind for the rest of the process, and returns its result. A kind is what decides
the winner: the dtype, the spec's shape (layers, directions, projection, counted steps or not), each size
rounded to a power of two, and the intra-op thread count.

The same measurement picks GEMM routes (:func:`route`): the native kernel's input projection X W_ih^T runs
through the C loop's own gemm call, torch's MKL addmm or oneDNN's linear, whichever measured fastest for
that kind of product (``native._blas.projection_route``); on an AMD EPYC oneDNN's GEMMs ran ~1.5x faster
than MKL's sgemm, on the Intel Xeon of ``benchmarks/RESULTS.md`` the C loop's call wins at small products.

The same :func:`route` makes the native loops' other processor-dependent choices, each per kind of call
(its own key, the first word of the kind): the gemm of the C forward loop, MKL's or the hand-written one
for tiny products (``native._small_gemm``, "loop_gemm"); whether a step's cell splits among the threads
(``native._cell_split``, "cell_split"); whether two loops run at once, both directions of a layer
(``native._pair.pair_accepts``, "pair") or the two halves of a batch (``halves_accept``, "halves").

``UNILSTM_KERNEL_CHOICE=policy`` turns measuring off (the fixed rules of :mod:`.policy` decide, as on
processors nobody measured); :func:`winners` and :func:`routes` report what was measured.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import torch
from torch import Tensor

from ..spec import LSTMSpec
from . import policy

CHOICE_ENV = "UNILSTM_KERNEL_CHOICE"

Result = TypeVar("Result")

_winners: dict[Hashable, str] = {}
_timings: dict[Hashable, dict[str, float]] = {}
_routes: dict[Hashable, str] = {}
_route_timings: dict[Hashable, dict[str, float]] = {}
_lock = threading.Lock()


_MODES: dict[object, bool] = {}  # the variable's raw value -> measuring (it is read on every call)
# The variable is read several times per native call (the kernel, the GEMM route, the loops' gemm): through
# os.environ's own table of encoded names and values, where os.environ.get would encode the name and
# decode the value each time (1-2 us of a 65 us streaming call on the VM). os.environ's writes (and
# pytest's monkeypatch.setenv) update that table; where it is missing, os.environ.get.
_ENVIRON_TABLE = getattr(os.environ, "_data", None)
_ENCODED_NAME = os.environ.encodekey(CHOICE_ENV) if hasattr(os.environ, "encodekey") else None


def measuring() -> bool:
    """Whether choices are measured (the default) rather than left to the fixed policy."""
    if _ENVIRON_TABLE is not None and _ENCODED_NAME is not None:
        raw: object = _ENVIRON_TABLE.get(_ENCODED_NAME)
    else:
        raw = os.environ.get(CHOICE_ENV)
    mode = _MODES.get(raw)
    if mode is None:
        value = os.environ.get(CHOICE_ENV)
        mode = _MODES[raw] = (value or "measure").strip().lower() != "policy"
    return mode


def bucket(size: int) -> int:
    """A size's power-of-two bucket (its bit length): sizes within a factor of two share a choice."""
    return int(size).bit_length()


def inference_kind(spec: LSTMSpec, x: Tensor, counted: bool) -> Hashable:
    """The kind of a CPU inference call (see the module docstring); ``x`` is (T, B, F)."""
    steps, batch, features = x.shape
    # (bucket inlined: this runs on every CPU inference call of a standard cell)
    return (
        "inference",
        x.dtype,
        spec.num_layers,
        spec.bidirectional,
        spec.proj_size > 0,
        counted,
        steps.bit_length(),
        batch.bit_length(),
        features.bit_length(),
        spec.hidden_size.bit_length(),
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
    results: dict[str, Result | None] = {}
    first: dict[str, float] = {}
    for name, run in candidates.items():
        start = time.perf_counter()
        results[name] = run()
        first[name] = time.perf_counter() - start
    computed = {name: result for name, result in results.items() if result is not None}
    if not computed:
        raise RuntimeError(f"no kernel computes this call (tried {list(candidates)})")
    if len(computed) == len(candidates):
        timings = _timed(candidates, max(first.values()))
        best = min(timings, key=timings.__getitem__)
        with _lock:
            _winners.setdefault(kind, best)
            _timings.setdefault(kind, timings)
        return computed[best]
    return next(iter(computed.values()))


def _timed(candidates: Mapping[str, Callable[[], object]], longest: float) -> dict[str, float]:
    """Seconds per candidate: the fastest of interleaved rounds (each round runs every candidate once, in
    an order rotated per round). How many rounds: ``policy.FIRST_USE_TINY_ROUNDS`` where the slowest
    candidate of the first round took less than ``policy.FIRST_USE_TINY_S``, ``policy.FIRST_USE_ROUNDS``
    where it (and the longest warm-up run, ``longest``) took less than ``policy.FIRST_USE_SHORT_S``, else
    one. The minimum, not the median: on a shared machine a run only ever loses time (a thread of torch's
    OpenMP team waiting for a core can add milliseconds to one product), so the fastest run is the best
    estimate of each candidate's own cost. (The first round decides, not the warm-up alone: a warm-up may
    include a nested first-use measurement.)"""
    names = list(candidates)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    rounds, round_ = 1, 0
    while round_ < rounds:
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            candidates[name]()
            seconds[name].append(time.perf_counter() - start)
        if round_ == 0:
            slowest = max(times[0] for times in seconds.values())
            if slowest < policy.FIRST_USE_TINY_S:
                rounds = policy.FIRST_USE_TINY_ROUNDS
            elif min(slowest, longest) < policy.FIRST_USE_SHORT_S:
                rounds = policy.FIRST_USE_ROUNDS
        round_ += 1
    return {name: min(times) for name, times in seconds.items()}


def route(kind: Hashable, candidates: Callable[[], dict[str, Callable[[], object]]], default: str) -> str:
    """The name of the fastest route for ``kind`` (a product of one kind of shape; measured now if new):
    ``candidates()`` gives the runs to time (made only when measuring). ``default`` where measuring is off
    (``UNILSTM_KERNEL_CHOICE=policy``). Each candidate is run once to warm up, then timed as in
    :func:`fastest`."""
    if not measuring():
        return default
    chosen = _routes.get(kind)
    if chosen is not None:
        return chosen
    runs = candidates()
    first: dict[str, float] = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
    timings = _timed(runs, max(first.values()))
    best = min(timings, key=timings.__getitem__)
    with _lock:
        _route_timings.setdefault(kind, timings)
        return _routes.setdefault(kind, best)


def measured_route(kind: Hashable) -> str | None:
    """The route measured for ``kind``, or None (a plain look-up, for callers that checked
    :func:`measuring` themselves)."""
    return _routes.get(kind)


def routes() -> dict[Hashable, tuple[str, dict[str, float]]]:
    """The routes measured so far (GEMM routes, the loops' gemm, thread splits): kind -> (winner, seconds
    per candidate)."""
    with _lock:
        return {kind: (name, dict(_route_timings.get(kind, {}))) for kind, name in _routes.items()}


def winners() -> dict[Hashable, tuple[str, dict[str, float]]]:
    """What was measured so far: kind -> (winner, seconds per candidate)."""
    with _lock:
        return {kind: (name, dict(_timings.get(kind, {}))) for kind, name in _winners.items()}


def forget() -> None:
    """Drop every measured choice (tests; a process whose thread count changed measures again anyway)."""
    with _lock:
        _winners.clear()
        _timings.clear()
        _routes.clear()
        _route_timings.clear()
