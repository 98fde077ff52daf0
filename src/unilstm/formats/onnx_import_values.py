"""The values the ONNX glue trace gives tensors (:mod:`.onnx_import_graph`), and the small-constant helpers
shared by the trace and its mask operators (:mod:`.onnx_import_masks`). See :mod:`.onnx_import_graph` for
what each value means."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: computed constants (shapes, axes) stay small: a larger one is refused rather than allocated
MAX_COMPUTED_ELEMENTS = 1 << 16
#: a Slice bound at least this far out means "to the end" (exporters write INT64_MIN / INT64_MAX)
_FAR = 2**31 - 1

Dim = int | str


class GlueError(ValueError):
    """A glue node the trace cannot interpret (the importer adds the file's name)."""


@dataclass(frozen=True)
class Stored:
    """An initializer or Constant tensor, not converted yet."""

    proto: Any
    name: str


@dataclass(frozen=True)
class Known:
    """A small constant array."""

    array: np.ndarray


@dataclass(frozen=True)
class Dims:
    """An int64 vector (``scalar``: a 0-d int) of dimensions; str entries are symbolic (``x[1]``)."""

    dims: tuple[Dim, ...]
    scalar: bool = False


@dataclass(frozen=True)
class Zeros:
    """A float tensor of zeros of a (partly symbolic) shape."""

    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class GraphInput:
    """A graph input, maybe transposed by (1, 0, 2), cast, or sliced to rows [start, stop) of axis 0."""

    name: str
    transposed: bool = False
    cast: bool = False
    rows: tuple[int, int] | None = None
    #: the two rows [start, start + 2) gathered as [1, 0] (the exporter's direction swap of a state)
    swapped: bool = False


@dataclass(frozen=True)
class Sequence:
    """``Y`` of LSTM node ``node`` (the node's index among LSTM nodes) with axes named T, B, D, H or, once
    D and H are merged, C = D*H; ``directions`` and ``hidden`` are the node's D and H. tf2onnx splits a
    bidirectional Y into its directions (``Slice`` along D, ``Squeeze``) and concatenates them along H:
    ``part`` is the direction a slice holds."""

    node: int
    axes: str
    directions: int
    hidden: int
    flipped: bool = False
    #: one direction of the Y (sliced along D, counted in the order after ``swapped``), None for all of them
    part: int | None = None
    #: the direction axis permuted by [1, 0] (a ``Gather``): position k holds the node's direction 1 - k
    swapped: bool = False
    #: the forward-running direction (the node's direction 0) outputs its final h at the steps past each
    #: sequence's length instead of zeros (``Where(t < lengths, Y, Y_h)``: Keras's "previous" masking); the
    #: name of the lengths graph input the mask reads
    previous: str | None = None
    #: one time step picked by a ``Gather`` on T for each direction (in the order after ``swapped``), the T
    #: axis gone (Keras's last output: each direction's last step in its processing order)
    steps: tuple[int, ...] | None = None
    #: Keras's Bidirectional merge of the two directions' halves: "sum", "mul" or "ave" (the H axis left)
    merge: str | None = None


@dataclass(frozen=True)
class States:
    """``Y_h`` (``kind`` "h") or ``Y_c`` ("c") of LSTM nodes ``nodes`` concatenated along D, with ``axes``
    DBH (layout 0) or BDH (layout 1)."""

    kind: str
    nodes: tuple[int, ...]
    axes: str
    #: the direction axis permuted by [1, 0] (one bidirectional node's states through a ``Gather``)
    swapped: bool = False
    #: one direction (a scalar ``Gather`` on D, counted after ``swapped``), the D axis gone
    row: int | None = None
    #: ``Where(lengths == 0, initial state, Y_h)``: a sequence of length 0 gives the initial state (as the
    #: unilstm layer does) instead of onnxruntime's zeros; the name of the lengths graph input it reads
    initial_if_empty: str | None = None


@dataclass(frozen=True)
class TimeIndex:
    """``Range(0, T, 1)`` over the time axis of LSTM node ``node``'s input, maybe unsqueezed (axes "T",
    "T1")."""

    node: int
    axes: str


@dataclass(frozen=True)
class Lengths:
    """A graph input of sequence lengths (B,) with axes of size 1 inserted (axes "1B", "B1" ...)."""

    name: str
    axes: str


@dataclass(frozen=True)
class StepMask:
    """A boolean tensor from the lengths input ``name``: ``kind`` "empty" is ``lengths == 0`` (axes "B",
    "1B1" ...), "valid" is ``t < lengths`` over node ``node``'s time axis (axes "TB", "TB1")."""

    name: str
    kind: str
    axes: str
    node: int | None = None


Value = Stored | Known | Dims | Zeros | GraphInput | Sequence | States | TimeIndex | Lengths | StepMask


@dataclass
class LstmCall:
    """One LSTM node as the trace met it: its index among LSTM nodes, the node, and the values of its
    inputs by ONNX name (X, W, R, B, sequence_lens, initial_h, initial_c, P; None when absent)."""

    index: int
    node: Any
    inputs: dict[str, Value | None]
    layout: int = 0
    directions: int = 1
    hidden: int = 0


@dataclass
class Trace:
    """What the graph computes: its LSTM calls in node order and the value of every graph output."""

    calls: list[LstmCall] = field(default_factory=list)
    outputs: dict[str, Value] = field(default_factory=dict)


# -- reading constants -----------------------------------------------------------------------------------


def small_stored(value: Stored, what: str, materialize: Callable[[Stored], np.ndarray]) -> Known:
    """A stored constant the glue reads (axes, shapes, starts): refused by its declared size before it is
    converted when it is larger than any such constant."""
    count = 1
    for d in value.proto.dims:
        count *= max(int(d), 0)
    if count > MAX_COMPUTED_ELEMENTS:
        raise GlueError(
            f"{what} ({value.name}) declares {count} elements; glue constants have at most "
            f"{MAX_COMPUTED_ELEMENTS}"
        )
    return Known(materialize(value))


def ints(value: Value | None, what: str, materialize: Callable[[Stored], np.ndarray]) -> list[int]:
    """A constant int vector (or scalar, as a one-element list)."""
    if isinstance(value, Stored):
        value = small_stored(value, what, materialize)
    if isinstance(value, Dims) and all(isinstance(d, int) for d in value.dims):
        return [int(d) for d in value.dims]
    if not isinstance(value, Known) or value.array.dtype.kind not in "iu":
        raise GlueError(f"{what} must be a constant int tensor")
    return [int(v) for v in value.array.reshape(-1)]


def _small(array: np.ndarray, what: str) -> Known:
    if array.size > MAX_COMPUTED_ELEMENTS:
        raise GlueError(
            f"{what}: a computed constant of {array.size} elements (at most {MAX_COMPUTED_ELEMENTS})"
        )
    return Known(array)


def _axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise GlueError(f"{what}: axis {axis} outside a rank-{rank} tensor")
    return axis % rank
