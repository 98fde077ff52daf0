"""The glue around ONNX ``LSTM`` nodes, traced symbolically: what each tensor of the graph *is* in terms of
the graph's inputs and the LSTM nodes' outputs, so that :mod:`unilstm.formats.onnx_import` can check (not
assume) that a graph computes one LSTM stack.

Every value the trace knows is one of:

- :class:`Stored`: an initializer or a ``Constant`` node's tensor, not read yet (its dtype and dims are
  checked against what needs it before any byte is converted); :class:`Known`: a small computed constant;
- :class:`Dims`: an int vector (or scalar) of dimensions, some symbolic (``Shape`` of an input, then
  ``Gather``, ``Slice``, ``Concat``, ``Unsqueeze``, ``Cast``: how exporters size the zero initial states);
- :class:`Zeros`: a float tensor of zeros (``ConstantOfShape`` / ``Expand`` of a zero, sliced, reshaped);
- :class:`GraphInput`: a graph input, maybe transposed (1, 0, 2), cast, or sliced along axis 0;
- :class:`Sequence`: an LSTM node's ``Y`` in some axis order (``TDBH`` as the node writes it, ``BTDH`` with
  ``layout=1``; ``TBC`` / ``BTC`` once the direction and hidden axes are merged by ``Reshape`` or the
  direction axis of a one-direction node squeezed away; ``flipped`` after a full time flip);
- :class:`States`: ``Y_h`` / ``Y_c`` of LSTM nodes concatenated along the direction axis (maybe with the
  two directions swapped, one direction picked, or the initial state for a sequence of length 0);
- :class:`TimeIndex`, :class:`Lengths`, :class:`StepMask`: ``Range`` over the time axis, the lengths input,
  ``lengths == 0`` and ``t < lengths`` (:mod:`.onnx_import_masks`, which also reads ``Gather`` of
  directions and ``Where``).

Anything else (an op on a value it does not preserve the meaning of) is refused with the node's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .onnx_import_masks import MaskOps
from .onnx_import_values import (
    _FAR,
    MAX_COMPUTED_ELEMENTS,
    Dim,
    Dims,
    GlueError,
    GraphInput,
    Known,
    LstmCall,
    Sequence,
    States,
    Stored,
    Trace,
    Value,
    Zeros,
    _axis,
    _small,
    ints,
    small_stored,
)

#: The operators allowed around LSTM nodes (each interpreted below); anything else is refused by name.
GLUE_OPS = (
    "Constant",
    "Identity",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Transpose",
    "Reshape",
    "Cast",
    "ConstantOfShape",
    "Expand",
    "Range",
    "Less",
    "Equal",
    "Where",
    "Split",
    "Add",
    "Mul",
)
SUPPORTED_OPS = ("LSTM", *GLUE_OPS)
LSTM_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")

__all__ = [
    "GLUE_OPS",
    "LSTM_INPUTS",
    "MAX_COMPUTED_ELEMENTS",
    "SUPPORTED_OPS",
    "Dim",
    "Dims",
    "GlueError",
    "GraphInput",
    "Known",
    "LstmCall",
    "Sequence",
    "States",
    "Stored",
    "Trace",
    "Tracer",
    "Value",
    "Zeros",
    "ints",
    "small_stored",
]

# -- the trace -------------------------------------------------------------------------------------------


class Tracer(MaskOps):
    """Walks the nodes in file order (ONNX requires a topological order) and gives every output a
    :class:`Value`. ``materialize`` turns a :class:`Stored` small constant into an array (bounded by the
    caller); ``input_shapes`` are the graph inputs' declared shapes (None: unknown; str entries: symbolic
    dims)."""

    def __init__(
        self,
        values: dict[str, Value],
        input_shapes: dict[str, tuple[Dim, ...] | None],
        materialize: Callable[[Stored], np.ndarray],
        opset: int,
    ) -> None:
        self.values = values
        self.input_shapes = input_shapes
        self.materialize = materialize
        self.opset = opset
        self.trace = Trace()

    def known(self, value: Value, what: str) -> Known | None:
        if isinstance(value, Stored):
            return small_stored(value, what, self.materialize)
        return value if isinstance(value, Known) else None

    def attribute(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    def run(self, nodes: Any, where: Callable[[Any], str]) -> Trace:
        for node in nodes:
            inputs: list[Value | None] = []
            for name in node.input:
                if name == "":
                    inputs.append(None)
                    continue
                if name not in self.values:
                    raise GlueError(
                        f"{where(node)}: input {name!r} is not made by any earlier node, initializer or "
                        "graph input (a cut or reordered file)"
                    )
                inputs.append(self.values[name])
            try:
                results = self.node(node, inputs)
            except GlueError as error:
                raise GlueError(f"{where(node)}: {error}") from None
            except (KeyError, IndexError, TypeError, ValueError) as error:  # numpy on ill-fitting constants
                raise GlueError(f"{where(node)}: cannot apply it ({type(error).__name__}: {error})") from None
            for name, value in zip(node.output, results, strict=False):
                if name:
                    self.values[name] = value
        return self.trace

    def node(self, node: Any, inputs: list[Value | None]) -> list[Value]:
        op = node.op_type
        if op == "LSTM":
            return self.lstm(node, inputs)
        if op == "Split":
            return self.split(node, inputs)
        handler = getattr(self, f"op_{op.lower()}")
        present = [v for v in inputs if v is not None]
        if not present and op != "Constant":
            raise GlueError(f"{op} without inputs")
        return [handler(node, inputs)]

    # -- LSTM -------------------------------------------------------------------------------------------

    def lstm(self, node: Any, inputs: list[Value | None]) -> list[Value]:
        if len(inputs) > len(LSTM_INPUTS):
            raise GlueError(f"LSTM takes at most {len(LSTM_INPUTS)} inputs, got {len(inputs)}")
        bound = dict(zip(LSTM_INPUTS, inputs + [None] * (len(LSTM_INPUTS) - len(inputs)), strict=True))
        for required in ("X", "W", "R"):
            if bound[required] is None:
                raise GlueError(f"LSTM input {required} is missing")
        layout = int(self.attribute(node, "layout", 0))
        direction = self.attribute(node, "direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        directions = 2 if direction == "bidirectional" else 1
        weights = bound["R"]
        hidden = int(weights.proto.dims[-1]) if isinstance(weights, Stored) and weights.proto.dims else 0
        call = LstmCall(len(self.trace.calls), node, bound, layout, directions, hidden)
        self.trace.calls.append(call)
        sequence_axes, state_axes = ("BTDH", "BDH") if layout == 1 else ("TDBH", "DBH")
        return [
            Sequence(call.index, sequence_axes, directions, hidden),
            States("h", (call.index,), state_axes),
            States("c", (call.index,), state_axes),
        ]

    # -- glue -------------------------------------------------------------------------------------------

    def op_constant(self, node: Any, inputs: list[Value | None]) -> Value:
        from onnx import helper

        if len(node.attribute) != 1:
            raise GlueError("Constant must have exactly one value attribute")
        attribute = node.attribute[0]
        if attribute.name == "value":
            return Stored(attribute.t, f"Constant {node.name or node.output[0]!r}")
        if attribute.name in ("value_int", "value_ints"):
            return _small(np.asarray(helper.get_attribute_value(attribute), dtype=np.int64), "Constant")
        if attribute.name in ("value_float", "value_floats"):
            return _small(np.asarray(helper.get_attribute_value(attribute), dtype=np.float32), "Constant")
        raise GlueError(f"Constant with {attribute.name}: only value, value_int(s), value_float(s) are read")

    def op_identity(self, node: Any, inputs: list[Value | None]) -> Value:
        if inputs[0] is None:
            raise GlueError("Identity of an absent input")
        return inputs[0]

    def op_shape(self, node: Any, inputs: list[Value | None]) -> Value:
        value = inputs[0]
        if isinstance(value, GraphInput) and value.rows is None and not value.cast:
            shape = self.input_shapes.get(value.name)
            if shape is None:
                raise GlueError(f"Shape of graph input {value.name!r}, whose rank the file does not declare")
            if value.transposed:
                shape = (shape[1], shape[0], *shape[2:])
        elif isinstance(value, Sequence):
            # the time axis is named after the node: a Range over it is that chain's steps
            shape = tuple(
                f"T@{value.node}"
                if a == "T"
                else value.directions
                if a == "D"
                else value.hidden
                if a == "H"
                else value.directions * value.hidden
                if a == "C"
                else a
                for a in value.axes
            )
        elif isinstance(value, Zeros):
            shape = value.shape
        else:
            raise GlueError("Shape of a value other than a graph input, an LSTM output or zeros")
        start = int(self.attribute(node, "start", 0))
        end = self.attribute(node, "end", None)
        return Dims(tuple(shape[slice(start, None if end is None else int(end))]))

    def op_gather(self, node: Any, inputs: list[Value | None]) -> Value:
        data, index = inputs[0], inputs[1]
        if data is None or index is None:
            raise GlueError("Gather needs its data and indices")
        axis = int(self.attribute(node, "axis", 0))
        picked = self.known(index, "Gather indices")
        if picked is None or picked.array.dtype.kind not in "iu" or picked.array.ndim > 1:
            raise GlueError("Gather needs constant int indices of rank 0 or 1")
        if isinstance(data, (Sequence, States, GraphInput)):
            gathered = self.gather_lstm(data, picked.array, axis)
            if gathered is not None:
                return gathered
        if isinstance(data, Dims) and not data.scalar and axis == 0:
            n = len(data.dims)
            chosen = [data.dims[_axis(int(i), n, "Gather")] for i in picked.array.reshape(-1)]
            return Dims(tuple(chosen), scalar=picked.array.ndim == 0)
        known = self.known(data, "Gather data") if data is not None else None
        if known is not None:
            return _small(np.take(known.array, picked.array, axis=axis), "Gather")
        raise GlueError(
            "Gather of a value other than a shape or a constant (a reordering of the LSTM's data)"
        )

    def op_unsqueeze(self, node: Any, inputs: list[Value | None]) -> Value:
        axes = self._axes(node, inputs)
        if axes is None:
            raise GlueError("Unsqueeze needs axes")
        data = inputs[0]
        unsqueezed = self.unsqueeze_lstm(data, axes)
        if unsqueezed is not None:
            return unsqueezed
        if isinstance(data, Dims):
            if data.scalar and axes in ([0], [-1]):
                return Dims(data.dims)
            raise GlueError("Unsqueeze of a shape vector other than a scalar at axis 0")
        if isinstance(data, Zeros):
            shape = list(data.shape)
            for axis in sorted(_axis(a, len(shape) + len(axes), "Unsqueeze") for a in axes):
                shape.insert(axis, 1)
            return Zeros(tuple(shape))
        known = self.known(data, "Unsqueeze data") if data is not None else None
        if known is not None:
            array = known.array
            for axis in sorted(_axis(a, array.ndim + len(axes), "Unsqueeze") for a in axes):
                array = np.expand_dims(array, axis)
            return Known(array)
        raise GlueError("Unsqueeze of a value other than a shape, zeros or a constant")

    def op_squeeze(self, node: Any, inputs: list[Value | None]) -> Value:
        axes = self._axes(node, inputs)
        data = inputs[0]
        if axes is None:
            raise GlueError("Squeeze without axes (any axis of size 1, batch or time included, would go)")
        if isinstance(data, Sequence):
            picked = sorted({_axis(a, len(data.axes), "Squeeze") for a in axes})
            if len(picked) == 1 and data.axes[picked[0]] == "D" and data.directions == 1:
                return replace(data, axes=data.axes.replace("D", "").replace("H", "C"))
            if len(picked) == 1 and data.axes[picked[0]] == "D" and data.part is not None:
                return replace(data, axes=data.axes.replace("D", ""))
            raise GlueError(f"Squeeze of axes {axes} of an LSTM output with axes {data.axes}")
        if isinstance(data, States):
            raise GlueError("Squeeze of an LSTM's Y_h / Y_c (the stack's states keep their direction axis)")
        if isinstance(data, Zeros):
            shape = list(data.shape)
            picked = sorted({_axis(a, len(shape), "Squeeze") for a in axes})
            if any(shape[a] != 1 for a in picked):
                raise GlueError(f"Squeeze of axes {axes} of zeros of shape {data.shape}")
            return Zeros(tuple(d for i, d in enumerate(shape) if i not in picked))
        known = self.known(data, "Squeeze data") if data is not None else None
        if known is not None:
            return Known(np.squeeze(known.array, axis=tuple(axes)))
        raise GlueError("Squeeze of a value other than an LSTM output, zeros or a constant")

    def _axes(self, node: Any, inputs: list[Value | None]) -> list[int] | None:
        if len(inputs) > 1 and inputs[1] is not None:
            return ints(inputs[1], "axes", self.materialize)
        axes = self.attribute(node, "axes", None)
        return None if axes is None else [int(a) for a in axes]

    def op_concat(self, node: Any, inputs: list[Value | None]) -> Value:
        axis = int(self.attribute(node, "axis", 0))
        parts = [v for v in inputs if v is not None]
        if all(isinstance(p, States) for p in parts):
            states = [p for p in parts if isinstance(p, States)]
            first = states[0]
            nodes = tuple(n for s in states for n in s.nodes)
            same = all(replace(s, nodes=first.nodes) == first for s in states) and first.row is None
            # whether the nodes are consecutive layers of one stack is checked once the stacks are known
            if same and _axis(axis, 3, "Concat") == first.axes.index("D") and len(set(nodes)) == len(nodes):
                return replace(first, nodes=nodes)
            raise GlueError("Concat of LSTM states other than Y_h (or Y_c) of distinct layers along D")
        if all(isinstance(p, Sequence) for p in parts):
            pieces = [p for p in parts if isinstance(p, Sequence)]
            first_piece = pieces[0]
            previous = next((p.previous for p in pieces if p.previous), None)
            # Keras's last output: each direction's half taken at its own step
            steps = None
            if all(p.steps is not None and p.part is not None for p in pieces):
                steps = tuple(p.steps[p.part] for p in pieces if p.steps is not None and p.part is not None)
            # along H the directions merge into C; along a restored D axis they make the whole Y again
            merged = "D" not in first_piece.axes and _axis(axis, len(first_piece.axes), "Concat") == (
                first_piece.axes.find("H")
            )
            restored = "D" in first_piece.axes and _axis(axis, len(first_piece.axes), "Concat") == (
                first_piece.axes.find("D")
            )
            if (
                (merged or restored)
                and [p.part for p in pieces] == list(range(first_piece.directions))
                and all(
                    replace(p, part=None, previous=None, steps=None)
                    == replace(first_piece, part=None, previous=None, steps=None)
                    and (p.steps is None) == (first_piece.steps is None)
                    for p in pieces
                )
            ):
                axes = first_piece.axes.replace("H", "C") if merged else first_piece.axes
                return replace(first_piece, part=None, axes=axes, previous=previous, steps=steps)
            raise GlueError("Concat of LSTM outputs other than a node's directions, in order, along H or D")
        if all(isinstance(p, Zeros) for p in parts):
            zeros = [p for p in parts if isinstance(p, Zeros)]
            rank = len(zeros[0].shape)
            at = _axis(axis, rank, "Concat")
            sizes = [z.shape[at] for z in zeros]
            if any(len(z.shape) != rank for z in zeros) or not all(isinstance(n, int) for n in sizes):
                raise GlueError("Concat of zeros of different ranks or along a symbolic axis")
            total = sum(n for n in sizes if isinstance(n, int))
            return Zeros(tuple(total if i == at else d for i, d in enumerate(zeros[0].shape)))
        if all(isinstance(p, (Dims, Known, Stored)) for p in parts) and axis == 0:
            dims: list[Dim] = []
            for part in parts:
                if isinstance(part, Dims):
                    if part.scalar:
                        raise GlueError("Concat of a 0-d shape entry")
                    dims += part.dims
                else:
                    dims += ints(part, "Concat input", self.materialize)
            if any(isinstance(d, str) for d in dims):
                return Dims(tuple(dims))
            if all(isinstance(p, (Known, Stored)) for p in parts):
                arrays = [self.known(p, "Concat input") for p in parts]
                return _small(np.concatenate([a.array for a in arrays if a is not None]), "Concat")
            return Known(np.asarray(dims, dtype=np.int64))
        raise GlueError("Concat of values other than shapes, constants or consecutive layers' states")

    def op_slice(self, node: Any, inputs: list[Value | None]) -> Value:
        if self.opset < 10 or len(inputs) < 3:
            raise GlueError("Slice with attributes (opset < 10) is not read: starts/ends must be inputs")
        data = inputs[0]
        starts = ints(inputs[1], "Slice starts", self.materialize)
        ends = ints(inputs[2], "Slice ends", self.materialize)
        axes = ints(inputs[3], "Slice axes", self.materialize) if len(inputs) > 3 and inputs[3] else None
        steps = ints(inputs[4], "Slice steps", self.materialize) if len(inputs) > 4 and inputs[4] else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            raise GlueError("Slice: starts, ends, axes and steps differ in length, or a step is 0")
        cuts = list(zip(axes, starts, ends, steps, strict=True))
        if isinstance(data, Sequence):
            if len(cuts) == 1:
                axis, start, end, step = cuts[0]
                named = data.axes[_axis(axis, len(data.axes), "Slice")]
                if named == "T" and step == -1 and (start == -1 or start >= _FAR) and end <= -_FAR:
                    return replace(data, flipped=not data.flipped)
                span = (start, min(end, _FAR))
                whole = span in ((0, 1), (0, _FAR), (-1, _FAR))
                if named == "D" and step == 1 and data.directions == 1 and whole:
                    return data  # the one direction of a one-direction node: all of it
                h = data.hidden
                if (
                    named == "C"
                    and step == 1
                    and data.directions == 2
                    and data.part is None
                    and span in ((0, h), (h, 2 * h), (h, _FAR), (-h, _FAR))
                ):
                    # one direction's half of the merged axis (Keras's last output: each at its own step)
                    return replace(data, part=int(start % (2 * h) >= h), axes=data.axes.replace("C", "H"))
                if (
                    named == "D"
                    and step == 1
                    and data.part is None
                    and data.directions == 2
                    and ((start, min(end, _FAR)) in ((0, 1), (1, 2), (1, _FAR), (-1, _FAR), (-2, -1)))
                ):
                    return replace(data, part=start % 2)
            raise GlueError(
                "Slice of an LSTM output other than a whole time flip (step -1) or one direction of two "
                "(along D or one half of D*H)"
            )
        if isinstance(data, GraphInput) and data.rows is None and not data.transposed and not data.cast:
            if len(cuts) == 1 and cuts[0][0] == 0 and cuts[0][3] == 1 and 0 <= cuts[0][1] < cuts[0][2] < _FAR:
                return replace(data, rows=(cuts[0][1], cuts[0][2]))
            raise GlueError(f"Slice of graph input {data.name!r} other than rows [start, stop) of axis 0")
        if isinstance(data, (Dims, Zeros)):
            entries = data.dims if isinstance(data, Dims) else data.shape
            if isinstance(data, Dims):
                if len(cuts) != 1 or _axis(cuts[0][0], 1, "Slice") != 0:
                    raise GlueError("Slice of a shape vector along an axis other than 0")
                _, start, end, step = cuts[0]
                return Dims(tuple(entries[slice(start, end, step)]))
            shape = list(entries)
            for axis, start, end, step in cuts:
                axis = _axis(axis, len(shape), "Slice")
                size = shape[axis]
                if not isinstance(size, int):
                    raise GlueError(f"Slice of zeros along axis {axis}, whose size ({size}) is not known")
                shape[axis] = len(range(*slice(start, end, step).indices(size)))
            return Zeros(tuple(shape))
        known = self.known(data, "Slice data") if data is not None else None
        if known is not None:
            index: list[slice] = [slice(None)] * known.array.ndim
            for axis, start, end, step in cuts:
                index[_axis(axis, known.array.ndim, "Slice")] = slice(start, end, step)
            return Known(known.array[tuple(index)])
        raise GlueError("Slice of a value other than an LSTM output, a graph input's rows, a shape or zeros")

    def op_transpose(self, node: Any, inputs: list[Value | None]) -> Value:
        data = inputs[0]
        perm = self.attribute(node, "perm", None)
        if perm is None:
            raise GlueError("Transpose without perm (reverses every axis)")
        perm = [int(p) for p in perm]
        if perm == sorted(perm) and perm == list(range(len(perm))):
            if data is None:
                raise GlueError("Transpose of an absent input")
            return data
        if isinstance(data, Sequence) and sorted(perm) == list(range(len(data.axes))):
            return replace(data, axes="".join(data.axes[p] for p in perm))
        if isinstance(data, GraphInput) and perm == [1, 0, 2] and data.rows is None and not data.cast:
            return replace(data, transposed=not data.transposed)
        if isinstance(data, Zeros) and sorted(perm) == list(range(len(data.shape))):
            return Zeros(tuple(data.shape[p] for p in perm))
        known = self.known(data, "Transpose data") if data is not None else None
        if known is not None:
            return Known(np.transpose(known.array, perm))
        raise GlueError(f"Transpose {perm} of a value it does not apply to")

    def op_reshape(self, node: Any, inputs: list[Value | None]) -> Value:
        data = inputs[0]
        shape = ints(inputs[1], "Reshape shape", self.materialize)
        allowzero = int(self.attribute(node, "allowzero", 0))
        if isinstance(data, Sequence) and data.axes.endswith("DH") and len(data.axes) == 4 and not allowzero:
            width = data.directions * data.hidden
            if shape in ([0, 0, -1], [0, 0, width], [0, -1, width], [-1, 0, width]):
                return replace(data, axes=data.axes[:2] + "C")
            raise GlueError(f"Reshape of an LSTM output {data.axes} to {shape} (expected [0, 0, -1])")
        if isinstance(data, Zeros) and all(d > 0 for d in shape):
            return Zeros(tuple(shape))
        known = self.known(data, "Reshape data") if data is not None else None
        if known is not None and not allowzero:
            return _small(
                known.array.reshape([s if s else d for s, d in zip(shape, known.array.shape, strict=False)]),
                "Reshape",
            )
        raise GlueError(f"Reshape to {shape} of a value it does not apply to")

    def op_cast(self, node: Any, inputs: list[Value | None]) -> Value:
        from onnx import helper

        data = inputs[0]
        try:
            to = np.dtype(helper.tensor_dtype_to_np_dtype(int(self.attribute(node, "to", 0))))
        except (KeyError, TypeError, ValueError):
            raise GlueError(f"Cast to the unknown data type {self.attribute(node, 'to', 0)}") from None
        if isinstance(data, Dims) and to.kind in "iu":
            return data
        if isinstance(data, GraphInput) and to.kind in "iu" and data.rows is None and not data.transposed:
            return replace(data, cast=True)
        if isinstance(data, Zeros) and to.kind == "f":
            return data
        known = self.known(data, "Cast data") if data is not None else None
        if known is not None:
            return Known(known.array.astype(to))
        raise GlueError(f"Cast to {to} of a value it does not apply to")

    def op_constantofshape(self, node: Any, inputs: list[Value | None]) -> Value:
        data = inputs[0]
        value = self.attribute(node, "value", None)
        fill = 0.0 if value is None else float(np.asarray(_tensor_values(value)).reshape(-1)[0])
        dims: tuple[Dim, ...] = (
            data.dims
            if isinstance(data, Dims)
            else tuple(ints(data, "ConstantOfShape shape", self.materialize))
        )
        if fill == 0.0:
            return Zeros(dims)
        sizes = [d for d in dims if isinstance(d, int)]
        if (
            len(sizes) == len(dims)
            and all(d >= 0 for d in sizes)
            and int(np.prod(sizes)) <= MAX_COMPUTED_ELEMENTS
        ):
            return Known(np.full(sizes, fill))
        raise GlueError("ConstantOfShape of a non-zero value and a symbolic or large shape")

    def op_expand(self, node: Any, inputs: list[Value | None]) -> Value:
        data, shape = inputs[0], inputs[1]
        known = self.known(data, "Expand data") if data is not None else None
        zero = isinstance(data, Zeros) or (
            known is not None and known.array.size == 1 and known.array.item() == 0
        )
        if not zero:
            raise GlueError("Expand of a value other than a zero scalar (only zero initial states are read)")
        dims = shape.dims if isinstance(shape, Dims) else tuple(ints(shape, "Expand shape", self.materialize))
        return Zeros(tuple(dims))


def _tensor_values(proto: Any) -> np.ndarray:
    from onnx import numpy_helper

    if len(proto.dims) > 1 or (proto.dims and proto.dims[0] > 1):
        raise GlueError("ConstantOfShape value must be a one-element tensor")
    return numpy_helper.to_array(proto)
