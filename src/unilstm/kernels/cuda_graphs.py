"""CUDA graphs for the fast kernel's time loops: one graph launch instead of thousands of small kernels.

On a GPU the fast kernel's forward issues about ten kernels per time step and its backward about twenty.
Each is microseconds of work behind a Python call and a launch, so a flexible-spec LSTM spends most of its
time launching. A CUDA graph records the whole loop once and replays it as one launch.

:func:`run` replays a body (a function of tensors or ``None`` that returns a tuple of tensors or ``None``)
through a graph cached under its key and the shapes, strides and dtypes of its arguments:

* the first call with a key runs the body directly (one-off shapes never pay for a capture);
* the second warms the body up on a side stream (lazy cuBLAS set-up happens outside the capture), captures
  it into a graph whose static arguments are private copies, and replays it;
* later calls copy the arguments into the static copies, replay, and hand out copies of the results, so that
  results of one call are never overwritten by the next. A result that is one of the arguments comes back
  as the caller's own tensor; results that are views of one buffer come back as views of one copy.

The body must be capturable: no host synchronisation (``.item()``, ``.tolist()``, data-dependent shapes) and
no host-to-device copies. The fast kernel runs its capturable variant on CUDA for this reason (see
``fast._step_patterns``). A capture that fails marks its key, warns once and runs the body directly from then
on. Graphs are used only on the default stream, outside a user's own capture, and when ``enabled``;
``UNILSTM_CUDA_GRAPHS=0`` in the environment switches them off. At most ``MAX_GRAPHS`` keys are kept, their
static tensors at most ``MAX_GRAPH_BYTES`` (least recently used first out); the graphs kept on a device
share one memory pool, as torch.cuda.make_graphed_callables does (safe because results are copied out right
after each replay). Each kept graph holds its static arguments and results: about twice the memory of one
call's saved tensors. :func:`clear` frees them.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # (torch imports it so too: at runtime it is an import cycle)

__all__ = ["MAX_GRAPHS", "MAX_GRAPH_BYTES", "clear", "enabled", "run", "usable"]

#: switch for every graph of this module; ``UNILSTM_CUDA_GRAPHS=0`` sets it False at import
enabled: bool = os.environ.get("UNILSTM_CUDA_GRAPHS", "1") != "0"
MAX_GRAPHS = 16
#: the static arguments and results that the kept graphs may hold, all devices together; graphs of other
#: layouts are dropped, least recently used first, to stay under it (a server that sees many batch shapes
#: would otherwise keep MAX_GRAPHS copies of its largest calls)
MAX_GRAPH_BYTES = 2 * 2**30

Body = Callable[..., tuple]


class Graph(Protocol):
    def replay(self) -> None: ...
    def pool(self) -> _POOL_HANDLE: ...


# capture(body, static_args, pool) -> (graph, static_results), pool being a live graph's pool or None; tests
# replace it to run the logic on the CPU
Capture = Callable[[Body, tuple, "_POOL_HANDLE | None"], tuple[Graph, tuple]]


@dataclass
class _Entry:
    graph: Graph | None = None
    failed: bool = False
    static_args: tuple = ()
    static_results: tuple = ()
    nbytes: int = 0
    device: torch.device | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_entries: OrderedDict[tuple, _Entry] = OrderedDict()
_entries_lock = threading.Lock()
_warned = False


def _capture_cuda(body: Body, static_args: tuple, pool: _POOL_HANDLE | None) -> tuple[Graph, tuple]:
    device = next(a.device for a in static_args if a is not None)
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        body(*static_args)
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, pool=pool):
            static_results = body(*static_args)
    finally:  # a capture that fails inside capture_end leaves its stream current
        torch.cuda.set_stream(current)
    return graph, static_results


def _live_pool(device: torch.device) -> _POOL_HANDLE | None:
    """The memory pool of a kept graph on ``device``, or None for a new one. A pool handle must not outlive
    its graphs: torch frees the pool with its last graph, and capturing into a freed pool trips an internal
    assertion of torch's caching allocator."""
    for entry in _entries.values():
        if entry.graph is not None and entry.device == device:
            return entry.graph.pool()
    return None


_capture: Capture = _capture_cuda


def usable(x: Tensor) -> bool:
    """Whether :func:`run` may replay graphs for a call on ``x``'s device now: CUDA, ``enabled``, the
    default stream, and no capture of the caller's own in progress."""
    if not enabled or x.device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return False
    return torch.cuda.current_stream(x.device) == torch.cuda.default_stream(x.device)


def clear() -> None:
    """Drop every cached graph and its buffers."""
    with _entries_lock:
        _entries.clear()


def _signature(args: Sequence[Tensor | None]) -> tuple:
    return tuple(
        None if a is None else (tuple(a.shape), a.stride(), a.dtype, a.device) for a in args
    )


def _export(results: tuple, static_args: tuple, args: tuple) -> tuple:
    """Copies of a replay's results that the next replay cannot overwrite (see the module docstring)."""
    callers = {id(s): a for s, a in zip(static_args, args, strict=True) if s is not None}
    copies: dict[int, Tensor] = {}
    exported: list[Tensor | None] = []
    for r in results:
        if r is None or id(r) in callers:
            exported.append(None if r is None else callers[id(r)])
            continue
        base = r if r._base is None else r._base
        if id(base) in callers:  # a view of an argument: its own copy
            exported.append(r.clone())
            continue
        if id(base) not in copies:
            copies[id(base)] = base.clone()
        copy = copies[id(base)]
        offset = r.storage_offset() - base.storage_offset() + copy.storage_offset()
        exported.append(copy.as_strided(r.size(), r.stride(), offset))
    return tuple(exported)


def _held_bytes(tensors: tuple) -> int:
    storages = (t.untyped_storage() for t in tensors if t is not None)
    return sum({storage.data_ptr(): storage.nbytes() for storage in storages}.values())


def _drop_beyond_byte_budget(keep: _Entry) -> None:
    """Drop the least recently used graphs until the kept ones hold at most MAX_GRAPH_BYTES (``keep``, the
    graph just captured, stays even alone over the budget: it is about to be replayed)."""
    while sum(e.nbytes for e in _entries.values()) > MAX_GRAPH_BYTES:
        oldest = next((k for k, e in _entries.items() if e is not keep and e.graph is not None), None)
        if oldest is None:
            return
        del _entries[oldest]


def run(key: tuple, body: Body, args: tuple) -> tuple:
    """``body(*args)``, through a cached CUDA graph from the second call with the same key and argument
    layout on (see the module docstring). The caller checks :func:`usable` first."""
    global _warned
    full_key = (key, _signature(args))
    with _entries_lock:
        entry = _entries.get(full_key)
        if entry is None:
            _entries[full_key] = _Entry()
            while len(_entries) > MAX_GRAPHS:
                _entries.popitem(last=False)
        else:
            _entries.move_to_end(full_key)
    if entry is None or entry.failed:  # the first call with this key runs without a graph
        return body(*args)
    with entry.lock:
        graph = entry.graph
        if graph is None:
            static_args = tuple(None if a is None else a.detach().clone() for a in args)
            device = next(a.device for a in args if a is not None)
            with _entries_lock:
                pool = _live_pool(device)
            try:
                graph, static_results = _capture(body, static_args, pool)
            except Exception as error:  # noqa: BLE001 - any failure: run without a graph from now on
                entry.failed = True
                if not _warned:
                    _warned = True
                    warnings.warn(
                        f"unilstm: a CUDA graph capture failed ({type(error).__name__}: {error}); "
                        "this call shape runs without graphs", RuntimeWarning, stacklevel=3,
                    )
                return body(*args)
            entry.static_args, entry.static_results, entry.graph = static_args, static_results, graph
            entry.device = device
            entry.nbytes = _held_bytes(static_args + tuple(static_results))
            with _entries_lock:
                _drop_beyond_byte_budget(keep=entry)
        for static, a in zip(entry.static_args, args, strict=True):
            if static is not None:
                static.copy_(a)
        graph.replay()
        return _export(entry.static_results, entry.static_args, args)
