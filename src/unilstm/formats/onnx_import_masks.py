"""The glue around ONNX ``LSTM`` nodes that reorders directions or works with the sequence lengths, traced for
:mod:`.onnx_import_graph` (a mixin of its :class:`~.onnx_import_graph.Tracer`).

What is read, each exactly (anything else on these values is refused with the node's name):

- ``Gather`` of ``[1, 0]`` along the direction axis of a bidirectional node's ``Y`` / ``Y_h`` / ``Y_c`` (or
  of two rows of an initial-state graph input): a permutation of the two directions, kept as ``swapped``
  (unilstm's exporter writes it for ``go_backwards``: ONNX's forward-running direction then holds the
  layer's second direction, :mod:`.onnx_import_stack` derives what it means); a scalar index picks one
  direction (as ``Slice`` + ``Squeeze`` do); a scalar index along T picks one time step (Keras's last
  output), kept as ``steps``;
- the sequence-length masks: ``Equal(lengths, 0)`` (a sequence of length 0) and ``Less(Range(0, T, 1),
  lengths)`` (``t < length``: the valid steps), with ``Unsqueeze`` to broadcast them, T being the ``Shape``
  of an LSTM node's ``Y``;
- ``Where(lengths == 0, initial_h, Y_h)`` (and ``Y_c``): a sequence of length 0 returns the initial state, as
  the unilstm layer does (onnxruntime returns zeros);
- ``Where(t < lengths, Y[:, d], Y_h[d])`` on the forward-running direction d = 0: past its length a sequence
  outputs its last valid output (= its final h) instead of zeros, Keras's default masking
  (``masked_output="previous"``), with the direction re-inserted by ``Unsqueeze`` and ``Concat`` along D;
- Keras's Bidirectional merges: ``Split`` of the D*H axis into the two halves, then ``Add`` (sum), ``Mul``
  (mul) or ``Add`` and ``Mul`` by 0.5 (ave), kept as ``merge`` and described in the notes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .onnx_import_values import (
    Dims,
    GlueError,
    GraphInput,
    Known,
    Lengths,
    LstmCall,
    Sequence,
    States,
    StepMask,
    Stored,
    TimeIndex,
    Trace,
    Value,
    _axis,
)


def _insert_ones(axes: str, inserted: list[int]) -> str:
    """``axes`` with a size-1 axis ("1") inserted at each of ``inserted`` (positions in the result)."""
    letters = list(axes)
    for axis in sorted(_axis(a, len(axes) + len(inserted), "Unsqueeze") for a in inserted):
        letters.insert(axis, "1")
    return "".join(letters)


class MaskOps:
    """The direction and length glue of the trace (mixed into the Tracer, which provides these)."""

    trace: Trace
    input_shapes: dict[str, Any]

    def known(self, value: Value, what: str) -> Known | None:  # pragma: no cover - the Tracer's
        raise NotImplementedError

    def attribute(self, node: Any, name: str, default: Any = None) -> Any:  # pragma: no cover - the Tracer's
        raise NotImplementedError

    # -- directions -------------------------------------------------------------------------------------

    def gather_lstm(self, data: Value | None, index: np.ndarray, axis: int) -> Value | None:
        """A ``Gather`` on an LSTM output or a state input (None: not one of those)."""
        picked = [int(i) for i in index.reshape(-1)]
        scalar = index.ndim == 0
        if isinstance(data, Sequence):
            named = data.axes[_axis(axis, len(data.axes), "Gather")]
            if named == "T":
                if not scalar or data.part is not None or data.steps is not None:
                    raise GlueError("Gather along T of an LSTM output other than one time step of all of it")
                return replace(data, axes=data.axes.replace("T", ""), steps=(picked[0],) * data.directions)
            if named != "D" or data.part is not None:
                raise GlueError(f"Gather along axis {named} of an LSTM output with axes {data.axes}")
            d = data.directions
            if scalar:
                if d == 1:
                    return replace(data, axes=data.axes.replace("D", "").replace("H", "C"))
                return replace(data, axes=data.axes.replace("D", ""), part=picked[0] % d)
            return self._permuted(data, picked, d)
        if isinstance(data, States):
            if len(data.nodes) != 1 or data.row is not None:
                raise GlueError("Gather of LSTM states other than one node's Y_h / Y_c along D")
            if _axis(axis, len(data.axes), "Gather") != data.axes.index("D"):
                raise GlueError(f"Gather of an LSTM's Y_{data.kind} along an axis other than D")
            d = self.trace.calls[data.nodes[0]].directions
            if scalar:
                return replace(data, row=picked[0] % d, axes=data.axes.replace("D", ""))
            return self._permuted(data, picked, d)
        if isinstance(data, GraphInput) and data.rows is not None and axis == 0 and not scalar:
            start, stop = data.rows
            if stop - start == 2:
                return self._permuted(data, picked, 2)
            raise GlueError(f"Gather of rows {data.rows} of graph input {data.name!r}: only two rows swap")
        return None

    @staticmethod
    def _permuted(data: Sequence | States | GraphInput, picked: list[int], d: int) -> Value:
        order = [i % d for i in picked] if all(-d <= i < d for i in picked) else None
        if order == list(range(d)):
            return data
        if order == [1, 0]:
            return replace(data, swapped=not data.swapped)
        raise GlueError(
            f"Gather of indices {picked} along the direction axis (a permutation of the {d} needed)"
        )

    # -- lengths ---------------------------------------------------------------------------------------

    def unsqueeze_lstm(self, data: Value | None, axes: list[int]) -> Value | None:
        """``Unsqueeze`` of a mask, a time index, the lengths or one direction of an LSTM output."""
        if isinstance(data, (TimeIndex, Lengths, StepMask)):
            return replace(data, axes=_insert_ones(data.axes, axes))
        if isinstance(data, GraphInput) and data.rows is None and not data.transposed:
            shape = self.input_shapes.get(data.name)
            if shape is not None and len(shape) != 1:
                raise GlueError(f"Unsqueeze of graph input {data.name!r} of shape {shape} (lengths are (B,))")
            return Lengths(data.name, _insert_ones("B", axes))
        if isinstance(data, Sequence) and "D" not in data.axes and len(axes) == 1:
            # one direction of Y, its direction axis back in place (before the Concat along D)
            letters = _insert_ones(data.axes, axes).replace("1", "D")
            if data.part is not None:
                return replace(data, axes=letters)
            if data.directions == 1:
                return replace(data, axes=letters.replace("C", "H"))
        return None

    def op_range(self, node: Any, inputs: list[Value | None]) -> Value:
        start, delta = (
            self.known(v, "Range input") if v is not None else None for v in (inputs[0], inputs[2])
        )
        limit_value = inputs[1]
        if (
            start is None
            or delta is None
            or start.array.size != 1
            or delta.array.size != 1
            or int(start.array.reshape(-1)[0]) != 0
            or int(delta.array.reshape(-1)[0]) != 1
            or not isinstance(limit_value, Dims)
            or not limit_value.scalar
            or not isinstance(limit_value.dims[0], str)
            or not limit_value.dims[0].startswith("T@")
        ):
            raise GlueError("Range other than Range(0, T, 1) over the time axis of an LSTM output")
        return TimeIndex(int(limit_value.dims[0][2:]), "T")

    def op_less(self, node: Any, inputs: list[Value | None]) -> Value:
        steps, lengths = inputs[0], inputs[1]
        if (
            isinstance(steps, TimeIndex)
            and isinstance(lengths, Lengths)
            and steps.axes == "T1"
            and lengths.axes == "1B"
        ):
            return StepMask(lengths.name, "valid", "TB", steps.node)
        raise GlueError("Less other than t < lengths (time steps (T, 1) against lengths (1, B))")

    def op_equal(self, node: Any, inputs: list[Value | None]) -> Value:
        for lengths, zero in (inputs, inputs[::-1]):
            constant = self.known(zero, "Equal input") if zero is not None else None
            if (
                isinstance(lengths, GraphInput)
                and lengths.rows is None
                and not lengths.transposed
                and constant is not None
                and constant.array.size == 1
                and constant.array.reshape(-1)[0] == 0
            ):
                return StepMask(lengths.name, "empty", "B")
        raise GlueError("Equal other than lengths == 0 (a graph input of lengths against a zero)")

    def op_where(self, node: Any, inputs: list[Value | None]) -> Value:
        condition, chosen, other = inputs[0], inputs[1], inputs[2]
        if not isinstance(condition, StepMask):
            raise GlueError("Where on a condition other than lengths == 0 or t < lengths")
        if (
            condition.kind == "empty"
            and condition.axes == "1B1"
            and isinstance(other, States)
            and len(other.nodes) == 1
            and other.axes == "DBH"
            and not other.swapped
            and other.row is None
            and not other.initial_if_empty
        ):
            call = self.trace.calls[other.nodes[0]]
            initial = call.inputs["initial_h" if other.kind == "h" else "initial_c"]
            if initial is not None and chosen == initial and not isinstance(initial, Stored):
                return replace(other, initial_if_empty=condition.name)
        if (
            condition.kind == "valid"
            and condition.axes == "TB1"
            and isinstance(chosen, Sequence)
            and isinstance(other, States)
            and other.kind == "h"
            and other.row is not None
            and other.nodes == (chosen.node,)
            and not other.initial_if_empty
            and not chosen.flipped
            and not chosen.previous
            and condition.node is not None
            and self.root(condition.node) == self.root(chosen.node)
        ):
            call = self.trace.calls[chosen.node]
            one = chosen.directions == 1 and chosen.axes == "TBC"
            slot = 0 if one else None
            if chosen.directions == 2 and chosen.axes == "TBH" and chosen.part is not None:
                slot = chosen.part ^ int(chosen.swapped)
            state_slot = other.row ^ int(other.swapped)
            if slot == 0 and state_slot == 0 and _runs_forward(call):
                return replace(chosen, previous=condition.name)
        raise GlueError(
            "Where other than Where(lengths == 0, initial state, Y_h / Y_c) of one node, or "
            "Where(t < lengths, "
            "Y[:, 0], Y_h[0]) on a forward-running direction (Keras's previous output past a length)"
        )

    # -- Keras's Bidirectional merges --------------------------------------------------------------------

    def split(self, node: Any, inputs: list[Value | None]) -> list[Value]:
        """``Split`` of a bidirectional LSTM output's D*H axis into its two directions' halves."""
        data = inputs[0]
        axis = int(self.attribute(node, "axis", 0))
        sizes_value = inputs[1] if len(inputs) > 1 else None
        sizes = self.attribute(node, "split", None)
        if sizes_value is not None:
            known = self.known(sizes_value, "Split sizes")
            sizes = None if known is None else [int(v) for v in known.array.reshape(-1)]
        if (
            isinstance(data, Sequence)
            and data.directions == 2
            and data.part is None
            and data.merge is None
            and "C" in data.axes
            and _axis(axis, len(data.axes), "Split") == data.axes.index("C")
            and len(node.output) == 2
            and (sizes is None or [int(v) for v in sizes] == [data.hidden, data.hidden])
        ):
            return [replace(data, part=k, axes=data.axes.replace("C", "H")) for k in (0, 1)]
        raise GlueError("Split other than a bidirectional LSTM output's D*H axis into its two directions")

    def op_add(self, node: Any, inputs: list[Value | None]) -> Value:
        merged = _halves(inputs[0], inputs[1], "sum")
        if merged is None:
            raise GlueError("Add other than the two directions' halves of an LSTM output (a sum merge)")
        return merged

    def op_mul(self, node: Any, inputs: list[Value | None]) -> Value:
        merged = _halves(inputs[0], inputs[1], "mul")
        if merged is not None:
            return merged
        for total, half in (inputs, inputs[::-1]):
            constant = self.known(half, "Mul input") if half is not None else None
            if (
                isinstance(total, Sequence)
                and total.merge == "sum"
                and constant is not None
                and constant.array.size == 1
                and float(constant.array.reshape(-1)[0]) == 0.5
            ):
                return replace(total, merge="ave")
        raise GlueError(
            "Mul other than the two directions' halves of an LSTM output (a mul merge) or their sum by 0.5 "
            "(ave)"
        )

    def root(self, index: int) -> int:
        """The first LSTM node of the chain node ``index`` belongs to (following each node's X to the Y it
        reads)."""
        seen = set()
        while index not in seen:
            seen.add(index)
            x = self.trace.calls[index].inputs["X"]
            if not isinstance(x, Sequence):
                return index
            index = x.node
        raise GlueError("LSTM nodes read each other's Y in a cycle")  # pragma: no cover - ONNX is acyclic


def _halves(first: Value | None, second: Value | None, merge: str) -> Sequence | None:
    """The two directions' halves of one LSTM output combined by ``merge`` (None: they are not)."""
    if not (isinstance(first, Sequence) and isinstance(second, Sequence)):
        return None
    if {first.part, second.part} != {0, 1} or first.merge or second.merge:
        return None
    if replace(first, part=None) != replace(second, part=None):
        return None
    return replace(first, part=None, merge=merge)


def _runs_forward(call: LstmCall) -> bool:
    """Whether the node's direction 0 runs forward in time (forward and bidirectional nodes)."""
    for attribute in call.node.attribute:
        if attribute.name == "direction":
            return bytes(attribute.s) != b"reverse"
    return True
