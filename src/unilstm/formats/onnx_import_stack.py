"""The LSTM stacks an ONNX graph computes, from its traced LSTM calls (:mod:`.onnx_import_graph`): which nodes
chain into one stack, the spec, the weights in unilstm's layout and how every graph output relates to the
layer's results (for :mod:`.onnx_import`).

Stacks (split by :func:`.onnx_import.build_stacks`): node k+1 continues node k's stack when it reads node
k's whole ``Y`` as a sequence in time order and computes the same cell (the same attributes); nodes that read
a graph input start a stack, and so does a node reading another stack's output otherwise (flipped in time,
another size or cell: unilstm's ``build_chain`` of a Keras Sequential), whose notes say how its input is
that stack's output. A node whose ``Y`` feeds two LSTM nodes (a branch) is refused.

Directions: a bidirectional node's direction 0 runs forward in time, direction 1 backward. A ``Gather`` of
[1, 0] along D (``swapped``) puts the backward-running direction first: unilstm's exporter writes it for
``go_backwards``, where the layer's first direction runs backward in original time. Derivation: with
``go_backwards`` the layer reads its input flipped in time and returns its outputs in that processing order,
so its direction 0 at processing step s has read x[T-1] ... x[T-1-s] (a backward run, evaluated at original
time T-1-s) and its direction 1 has read x[0] ... x[T-1-s] (a forward run at the same time). Hence for a
bidirectional stack read with ``go_backwards=g``, the layer's direction d is the node's direction d XOR g at
every layer: its output is the nodes' [dir g, dir 1-g] halves flipped in time when g, its ``h_n`` rows per
layer [dir g, dir 1-g], its initial state rows the same. ``g`` is taken from the graph's output (a swapped
last output: ``go_backwards``); a node k+1 that reads node k's ``Y`` in the other order than the layer feeds
it gets the two halves of its ``W`` columns exchanged (the same sum); initial states gathered in the other
order are refused (the layer's state rows are its directions').
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..parameter_names import parameter_suffix
from ..spec import SAME_AS_ACTIVATION, ActivationLike, LSTMSpec
from .layout import from_onnx_gates, from_onnx_peepholes
from .onnx_import_activations import ActivationError, node_attributes, onnx_activations
from .onnx_import_tensors import (
    _WEIGHT_DTYPES,
    OnnxFileError,
    OnnxStack,
    _array,
    _dtype_name,
    _node_name,
    _numpy_dtype,
)
from .onnx_import_values import Dim, GraphInput, Known, LstmCall, Sequence, States, Stored, Value, Zeros

LSTM_ATTRIBUTES = (
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "input_forget",
    "layout",
)


# -- the stack ---------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    """One LSTM node's checked facts."""

    call: LstmCall
    what: str
    direction: str
    hidden: int
    features: int
    activations: tuple[ActivationLike, ActivationLike, ActivationLike]
    clip: float | None
    input_forget: bool
    dtype: np.dtype


class _Stack:
    """One chain of LSTM nodes checked and read into an :class:`OnnxStack` (:meth:`build`)."""

    def __init__(
        self,
        calls: list[LstmCall],
        outputs: dict[str, Value],
        input_types: dict[str, int],
        shapes: dict[str, tuple[Dim, ...] | None],
        where: str,
        limit: int,
        constants: bool,
    ) -> None:
        self.calls, self.outputs, self.input_types, self.shapes = calls, outputs, input_types, shapes
        self.where, self.limit, self.constants = where, limit, constants
        self.position = {call.index: k for k, call in enumerate(calls)}
        self.notes: list[str] = []
        self.inputs: dict[str, str] = {}
        self.constant_lengths: np.ndarray | None = None
        self.constant_states: dict[str, np.ndarray] = {}
        #: go_backwards: the layer's direction d is each node's direction d XOR swap (bidirectional)
        self.swap = False
        #: the values read by the first nodes of stacks this one feeds (by node index)
        self.feeds: dict[int, Sequence] = {}
        #: the stack whose output this one reads (its builder and name), None for a graph input
        self.upstream: tuple[_Stack, str] | None = None
        #: the spec once built
        self.spec: LSTMSpec | None = None

    def fail(self, message: str) -> OnnxFileError:
        return OnnxFileError(f"{self.where}: {message}")

    def build(self) -> OnnxStack:
        layers = [self.layer(call) for call in self.calls]
        first = layers[0]
        for layer in layers[1:]:
            for key in ("direction", "hidden", "activations", "clip", "input_forget", "dtype"):
                if getattr(layer, key) != getattr(first, key):
                    raise self.fail(
                        f"{layer.what}: {key} {getattr(layer, key)!r} differs from the first LSTM node's "
                        f"{getattr(first, key)!r}: one unilstm LSTM stacks layers that share it"
                    )
        directions = first.call.directions
        reverse = first.direction == "reverse"
        self.swap = reverse if directions == 1 else self.bidirectional_order()
        self.lengths(layers)
        self.upstream_exchanged = False
        batch_first, exchanged = self.chain(layers)
        for kind in ("h", "c"):
            self.initial_state(layers, kind)
        f, g, h = first.activations
        try:
            spec = LSTMSpec(
                input_size=first.features,
                hidden_size=first.hidden,
                num_layers=len(layers),
                bias=any(layer.call.inputs["B"] is not None for layer in layers),
                batch_first=batch_first,
                bidirectional=directions == 2,
                activation=g,
                recurrent_activation=f,
                output_activation=SAME_AS_ACTIVATION if h == g else h,
                gate_clip=first.clip,
                coupled_gates=first.input_forget,
                peepholes=any(layer.call.inputs["P"] is not None for layer in layers),
                go_backwards=self.swap,
                masked_output="previous" if self.previous_output() else "zero",
            )
        except (TypeError, ValueError) as error:
            raise self.fail(f"{first.what}: {error}") from None
        self.spec = spec
        self.describe_outputs(spec, reverse)
        state = self.weights(layers, spec, exchanged)
        name = first.call.node.name or "lstm"
        initial = None
        if self.constant_states:
            initial = self.constant_initial_state(layers, spec)
        return OnnxStack(name, spec, state, dict(self.inputs), self.notes, self.constant_lengths, initial)

    def bidirectional_order(self) -> bool:
        """go_backwards for a bidirectional stack: whether the graph's output (else its states) holds the
        directions swapped (the exporter's ``go_backwards``); see the module docstring."""
        last = self.calls[-1].index
        sequences = [v for v in self.outputs.values() if isinstance(v, Sequence) and v.node == last]
        sequences += [v for v in self.feeds.values() if v.node == last]
        if sequences:
            return sequences[0].swapped
        states = [v for v in self.outputs.values() if isinstance(v, States)]
        return states[0].swapped if states else False

    def previous_output(self) -> bool:
        """Whether the stack's output carries each sequence's last output past its length (Keras's
        "previous" masking); every sequence output of the last node must agree."""
        last = self.calls[-1].index
        marks = {
            name: v.previous for name, v in self.outputs.items() if isinstance(v, Sequence) and v.node == last
        }
        # a stack reading this one's output may read its steps past a length (flipped in time)
        marks.update({f"(the input of LSTM node {index})": v.previous for index, v in self.feeds.items()})
        if len(set(marks.values())) > 1:
            raise self.fail(
                f"graph outputs {sorted(marks)} differ at the steps past a sequence's length (some carry the "
                "last output, some zeros): one layer has one masked_output"
            )
        mark = next(iter(marks.values()), None)
        if mark is not None and mark != self.inputs.get("lengths"):
            raise self.fail(
                f"the previous-output mask reads {mark!r}, not the LSTM nodes' sequence_lens input "
                f"{self.inputs.get('lengths')!r}"
            )
        return mark is not None

    # -- one node --

    def layer(self, call: LstmCall) -> _Layer:
        node = call.node
        what = f"LSTM node {_node_name(node)}"
        attributes = node_attributes(node)
        unknown = sorted(set(attributes) - set(LSTM_ATTRIBUTES))
        if unknown:
            raise self.fail(f"{what}: attributes {unknown} are not the ONNX LSTM operator's")
        direction = attributes.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.fail(f"{what}: direction {direction!r} (forward, reverse or bidirectional)")
        layout = int(attributes.get("layout", 0))
        if layout not in (0, 1):
            raise self.fail(f"{what}: layout {layout} (0 or 1)")
        d = call.directions
        w = self.stored(call, "W", what)
        r = self.stored(call, "R", what)
        dtype = _numpy_dtype(w.proto)
        if len(r.proto.dims) != 3 or len(w.proto.dims) != 3:
            raise self.fail(
                f"{what}: W and R must have 3 dims, got {list(w.proto.dims)} and {list(r.proto.dims)}"
            )
        hidden = int(r.proto.dims[2])
        features = int(w.proto.dims[2])
        declared = attributes.get("hidden_size")
        if declared is not None and int(declared) != hidden:
            raise self.fail(f"{what}: hidden_size {declared} but R ({r.name}) has dims {list(r.proto.dims)}")
        if hidden < 1 or features < 1:
            raise self.fail(f"{what}: W {list(w.proto.dims)} / R {list(r.proto.dims)} have an empty axis")
        expected = {
            "W": [d, 4 * hidden, features],
            "R": [d, 4 * hidden, hidden],
            "B": [d, 8 * hidden],
            "P": [d, 3 * hidden],
        }
        for key, dims in expected.items():
            value = self.stored(call, key, what) if call.inputs[key] is not None else None
            if value is None:
                continue
            if [int(x) for x in value.proto.dims] != dims:
                raise self.fail(
                    f"{what}: {key} ({value.name}) has dims {list(value.proto.dims)}, expected {dims} for "
                    f"direction={direction}, hidden_size={hidden}, input size {features}"
                )
            if _numpy_dtype(value.proto) not in [np.dtype(t) for t in _WEIGHT_DTYPES] or (
                _numpy_dtype(value.proto) != dtype
            ):
                raise self.fail(
                    f"{what}: {key} ({value.name}) has dtype {_dtype_name(value.proto)}; the weights must be "
                    f"float16, float32 or float64, all the same ({_dtype_name(w.proto)} for W)"
                )
        clip = attributes.get("clip")
        input_forget = attributes.get("input_forget", 0)
        if int(input_forget) not in (0, 1):
            raise self.fail(f"{what}: input_forget {input_forget} (0 or 1)")
        try:
            activations = onnx_activations(node, d, what)
        except ActivationError as error:
            raise self.fail(str(error)) from None
        assert dtype is not None
        call.layout = layout
        return _Layer(
            call,
            what,
            direction,
            hidden,
            features,
            activations,
            None if clip is None else float(clip),
            bool(input_forget),
            dtype,
        )

    def stored(self, call: LstmCall, key: str, what: str) -> Stored:
        value = call.inputs[key]
        if not isinstance(value, Stored):
            raise self.fail(
                f"{what}: input {key} is computed in the graph, not an initializer or Constant; unilstm "
                "reads weights that are stored"
            )
        return value

    # -- the chain, lengths and states --

    def chain(self, layers: list[_Layer]) -> tuple[bool, list[bool]]:
        """Check that node k reads node k-1's output as a sequence; returns batch_first (of layer 0's
        input) and, per layer, whether it reads the previous node's directions in the other order than the
        layer feeds them (its W column halves are then exchanged)."""
        batch_first = False
        exchanged = [False]
        for index, layer in enumerate(layers):
            x = layer.call.inputs["X"]
            batch_major = layer.call.layout == 1
            if index == 0 and isinstance(x, Sequence) and self.upstream is not None:
                batch_first = self.fed_by(layer, x, batch_major)
                exchanged[0] = self.upstream_exchanged
                continue
            if index == 0:
                if not isinstance(x, GraphInput) or x.rows is not None or x.cast:
                    raise self.fail(
                        f"{layer.what}: input X must be a graph input (maybe transposed (1, 0, 2)) or the Y "
                        f"of another LSTM node; it is {_describe(x)}"
                    )
                batch_first = batch_major != x.transposed
                self.inputs["input"] = x.name
                shape = self.shapes.get(x.name)
                if shape is not None and (
                    len(shape) != 3 or (isinstance(shape[2], int) and shape[2] != layer.features)
                ):
                    raise self.fail(
                        f"graph input {x.name!r} has shape {shape}; the LSTM node {layer.what} takes (T, B, "
                        f"{layer.features}) or (B, T, {layer.features})"
                    )
                continue
            previous = layers[index - 1]
            want = "BTC" if batch_major else "TBC"
            # masked steps past a length (zeros or the previous output) are never read by the next node, which
            # stops at the same lengths
            if not (
                isinstance(x, Sequence)
                and x.node == previous.call.index
                and x.axes == want
                and not x.flipped
                and x.part is None
                and x.previous in (None, self.inputs.get("lengths"))
            ):
                raise self.fail(
                    f"{layer.what}: input X must be the previous LSTM node's Y as a sequence ({want[0]}, "
                    f"{want[1]}, D*H), through Transpose/Reshape/Squeeze (a stack reading another stack's "
                    f"flipped or merged output is not one layer); it is {_describe(x)}"
                )
            exchanged.append(x.swapped != self.swap and previous.call.directions == 2)
            width = previous.call.directions * previous.hidden
            if layer.features != width:
                raise self.fail(
                    f"{layer.what}: W takes {layer.features} features; the previous layer gives {width}"
                )
        return batch_first, exchanged

    def fed_by(self, layer: _Layer, x: Sequence, batch_major: bool) -> bool:
        """The first node reads another stack's output: check that it is that stack's whole output as a
        sequence and note how it relates to that layer's output; returns batch_first."""
        assert self.upstream is not None
        source, name = self.upstream
        assert source.spec is not None
        want = "BTC" if batch_major else "TBC"
        if x.node != source.calls[-1].index or x.axes != want or x.part is not None or x.steps or x.merge:
            raise self.fail(
                f"{layer.what}: input X must be a graph input or another LSTM stack's whole output as a "
                f"sequence ({want[0]}, {want[1]}, D*H); it is {_describe(x)}"
            )
        width = source.spec.num_directions * source.spec.hidden_size
        if layer.features != width:
            raise self.fail(f"{layer.what}: W takes {layer.features} features; stack {name!r} gives {width}")
        # the source's output in its processing order is its nodes' Y flipped when it runs backwards; its
        # directions' halves are the nodes' swapped as it reads them (W's column halves take an exchange)
        flip = x.flipped != source.swap
        self.upstream_exchanged = source.spec.bidirectional and x.swapped != source.swap
        text = f"the layer's input is the output of stack {name!r}"
        if flip:
            text += " flipped in time"
        if source.spec.batch_first != batch_major:
            text += " with its batch and time axes exchanged"
        axes = "B, T" if batch_major else "T, B"
        self.notes.append(text + f" ({axes}, D*H; call the layer on that layer's output)")
        return batch_major

    def lengths(self, layers: list[_Layer]) -> None:
        names: set[str | None] = set()
        constant: np.ndarray | None = None
        for layer in layers:
            value = layer.call.inputs["sequence_lens"]
            if value is None:
                names.add(None)
            elif isinstance(value, GraphInput) and value.rows is None and not value.transposed:
                names.add(value.name)
            elif isinstance(value, (Stored, Known)):
                array = self.constant(value, layer, "sequence_lens")
                if array.dtype.kind not in "iu" or array.ndim != 1 or np.any(array < 0):
                    raise self.fail(
                        f"{layer.what}: sequence_lens must be (B,) non-negative ints, got {array.dtype} "
                        f"{array.shape}"
                    )
                if constant is not None and not np.array_equal(constant, array):
                    raise self.fail(f"{layer.what}: sequence_lens differs from the first LSTM node's")
                constant = array.astype(np.int64)
                names.add("<constant>")
            else:
                raise self.fail(
                    f"{layer.what}: sequence_lens is {_describe(value)}; read are a graph input (the "
                    "call's lengths=) or a constant"
                )
        if len(names) > 1:
            raise self.fail(f"the LSTM nodes take different sequence_lens ({sorted(map(str, names))})")
        name = names.pop()
        if constant is not None:
            self.refuse_constant(layers[0], "sequence_lens", "lengths=stack.lengths")
            self.constant_lengths = constant
            self.notes.append(
                f"the graph's sequence_lens is the constant {constant.tolist()}: call the layer with "
                "lengths=stack.lengths (batches of exactly that size)"
            )
        elif name is not None:
            self.inputs["lengths"] = name
            if self.input_types.get(name) not in (6, 7):  # INT32, INT64
                raise self.fail(f"graph input {name!r} (sequence_lens) must be int32 or int64")

    def constant(self, value: Stored | Known, layer: _Layer, key: str) -> np.ndarray:
        if isinstance(value, Stored):
            return _array(value.proto, f"{self.where}: {layer.what} {key} ({value.name})", self.limit)
        return value.array

    def refuse_constant(self, layer: _Layer, key: str, how: str) -> None:
        """Constants the layer takes per call: only :func:`read_onnx_lstms` with ``constants=True`` returns
        them (in the :class:`OnnxStack`); ``unilstm.load`` returns layers, which cannot hold them."""
        if not self.constants:
            raise self.fail(
                f"{layer.what}: {key} is a constant of the graph; a unilstm LSTM takes it per call, so "
                "unilstm.load cannot return it with the layer: read the file with "
                f"unilstm.formats.onnx_import.read_onnx_lstms(path, constants=True) and call with {how}"
            )

    def initial_state(self, layers: list[_Layer], kind: str) -> None:
        key = "initial_h" if kind == "h" else "initial_c"
        role = "h0" if kind == "h" else "c0"
        given: list[str | None] = []
        constants = 0
        for index, layer in enumerate(layers):
            value = layer.call.inputs[key]
            d = layer.call.directions
            if isinstance(value, Zeros):
                self.zero_shape(value.shape, layer, key)
            if value is None or isinstance(value, Zeros):
                given.append(None)
            elif isinstance(value, (Stored, Known)):
                if self.zero_constant(value, layer, key):
                    given.append(None)
                else:
                    given.append("<constant>")
                    constants += 1
            elif (
                isinstance(value, GraphInput)
                and not value.transposed
                and not value.cast
                and ((value.rows is None and len(layers) == 1) or value.rows == (index * d, (index + 1) * d))
            ):
                if value.swapped != (self.swap and d == 2):
                    raise self.fail(
                        f"{layer.what}: {key} takes rows {value.rows} of graph input {value.name!r} in the "
                        "other order than the layer's directions (the layer's state rows are its directions')"
                    )
                given.append(value.name)
                if layer.call.layout == 1:
                    self.notes.append(
                        f"graph input {value.name!r} ({key}) is (B, D, H) (layout=1); the layer's state is "
                        "(D, B, H): pass it transposed"
                    )
            else:
                raise self.fail(
                    f"{layer.what}: {key} is {_describe(value)}; read are zeros, constants, a graph input "
                    "(one "
                    f"layer), or rows [{index * d}, {(index + 1) * d}) of one (L*D, B, H) graph input"
                )
        if constants:
            if any(g not in (None, "<constant>") for g in given):
                raise self.fail(f"{key}: some LSTM nodes take it from a graph input and others are constants")
            self.refuse_constant(layers[0], f"{key} (non-zero)", "state=stack.initial_state")
            self.constant_states[kind] = np.zeros(0)  # filled by constant_initial_state
            return
        if len(set(given)) > 1:
            raise self.fail(f"{key}: some LSTM nodes take it from a graph input and others not ({given})")
        if given[0] is not None:
            self.inputs[role] = given[0]

    def constant_initial_state(self, layers: list[_Layer], spec: LSTMSpec) -> tuple[np.ndarray, np.ndarray]:
        """The constant initial states in the layer's (L*D, B, H) order (zeros for nodes without one)."""
        arrays: dict[str, list[np.ndarray | None]] = {"h": [], "c": []}
        batch = None
        for layer in layers:
            for kind in ("h", "c"):
                value = layer.call.inputs["initial_h" if kind == "h" else "initial_c"]
                array = None
                if isinstance(value, (Stored, Known)):
                    array = np.asarray(self.constant(value, layer, f"initial_{kind}"))
                    if layer.call.layout == 1:
                        array = array.transpose(1, 0, 2)
                    if spec.bidirectional and self.swap:
                        array = array[::-1]
                    if batch is not None and array.shape[1] != batch:
                        raise self.fail(
                            f"{layer.what}: initial_{kind} has batch {array.shape[1]}, not {batch}"
                        )
                    batch = array.shape[1]
                arrays[kind].append(array)
        assert batch is not None
        d, h = spec.num_directions, spec.hidden_size
        dtype = layers[0].dtype
        h0, c0 = (
            np.concatenate(
                [a if a is not None else np.zeros((d, batch, h), dtype) for a in arrays[k]]
            ).astype(dtype)
            for k in ("h", "c")
        )
        self.notes.append(
            "the graph's initial states are constants: call the layer with state=stack.initial_state "
            f"((L*D, B, H) with B = {batch})"
        )
        return h0, c0

    def zero_shape(self, shape: tuple[Dim, ...], layer: _Layer, key: str) -> None:
        """Zeros as an initial state must have the node's (D, B, H) shape ((B, D, H) for layout 1) where the
        file says the sizes (onnxruntime refuses other shapes when it runs)."""
        d, h = layer.call.directions, layer.hidden
        want: tuple[int | None, ...] = (None, d, h) if layer.call.layout == 1 else (d, None, h)
        fits = len(shape) == 3 and all(
            w is None or not isinstance(s, int) or s == w for s, w in zip(shape, want, strict=True)
        )
        if not fits:
            raise self.fail(
                f"{layer.what}: {key} is zeros of shape {shape}, not the node's (D, B, H) = ({d}, B, {h})"
            )

    def zero_constant(self, value: Stored | Known, layer: _Layer, key: str) -> bool:
        array = self.constant(value, layer, key)
        if array.dtype.kind != "f" or array.ndim != 3:
            raise self.fail(
                f"{layer.what}: {key} must be a float tensor (D, B, H), got {array.dtype} {array.shape}"
            )
        self.zero_shape(array.shape, layer, key)
        return not np.any(array != 0)

    # -- outputs --

    def describe_outputs(self, spec: LSTMSpec, reverse: bool) -> None:
        last = self.calls[-1].index
        layer_axes = "BTC" if spec.batch_first else "TBC"
        axes = "B, T, F" if spec.batch_first else "T, B, F"
        parts = []
        if "input" in self.inputs:  # else the notes say which stack's output the input is
            parts.append(f"graph input {self.inputs['input']!r} is the layer's input ({axes})")
        if "lengths" in self.inputs:
            parts.append(f"graph input {self.inputs['lengths']!r} the call's lengths=")
        if "h0" in self.inputs or "c0" in self.inputs:
            parts.append(
                f"graph inputs {self.inputs.get('h0')!r}, {self.inputs.get('c0')!r} the call's "
                "state=(h0, c0) (None: zeros)"
            )
        if parts:
            self.notes.append("; ".join(parts))
        both = spec.bidirectional
        empty_states = ("lengths" in self.inputs or self.constant_lengths is not None) and (
            "h0" in self.inputs or "c0" in self.inputs or bool(self.constant_states)
        )
        for name, value in self.outputs.items():
            if isinstance(value, Sequence) and value.node == last:
                flip = value.flipped != self.swap
                exchange = both and value.swapped != self.swap
                if value.steps is not None or value.merge is not None:  # Keras's last output, merges
                    text = self.step_text(value, spec)
                elif value.part is not None:  # one direction's half of a bidirectional output
                    own = value.part ^ int(value.swapped) ^ int(self.swap)
                    text = f"the {('forward', 'backward')[own]} half of the layer's output"
                    if flip:
                        text += " flipped in time"
                    text += f", with axes {', '.join(value.axes)}"
                elif value.axes == layer_axes and not flip and not exchange:
                    text = "the layer's output"
                else:
                    text = f"the layer's output ({', '.join(layer_axes).replace('C', 'D*H')})"
                    if flip:
                        text += " flipped in time"
                    if exchange:
                        text += " with its two directions' halves exchanged"
                    if value.axes != layer_axes:
                        text += f" with axes {', '.join(value.axes).replace('C', 'D*H').replace('1', '')}"
                if reverse and not value.flipped:
                    text += (
                        " (direction=reverse writes outputs at their time index; go_backwards in processing "
                        "order)"
                    )
                self.notes.append(f"graph output {name!r} = {text}")
            elif isinstance(value, States):
                positions = [self.position[n] for n in value.nodes]
                if positions != list(range(positions[0], positions[0] + len(positions))):
                    raise self.fail(
                        f"graph output {name!r} concatenates the states of LSTM nodes {list(value.nodes)}, "
                        "not "
                        "consecutive layers in order"
                    )
                if value.initial_if_empty is not None and value.initial_if_empty != self.inputs.get(
                    "lengths"
                ):
                    raise self.fail(
                        f"graph output {name!r}: its length-0 mask reads {value.initial_if_empty!r}, not the "
                        "LSTM "
                        "nodes' sequence_lens input"
                    )
                d = spec.num_directions
                rows = f"[{positions[0] * d}:{(positions[-1] + 1) * d}]"
                whole = positions == list(range(len(self.calls)))
                text = f"{value.kind}_n" + ("" if whole else rows)
                if value.axes == "BDH":
                    text += ".transpose(0, 1)"
                if both and value.swapped != self.swap:
                    text += " with each layer's two direction rows exchanged"
                if empty_states and value.initial_if_empty is None:
                    text += (
                        " (for a sequence of length 0 onnxruntime gives zeros there, the layer its initial "
                        "state)"
                    )
                self.notes.append(f"graph output {name!r} = the layer's {text}")
            else:
                raise self.fail(
                    f"graph output {name!r} is {_describe(value)}, not the LSTM stack's output or states"
                )

    def step_text(self, value: Sequence, spec: LSTMSpec) -> str:
        """What a graph output holding one time step per direction (a ``Gather`` on T) or Keras's merge of
        the two directions is, in terms of the layer's output: each direction's half (at its step), counted
        in the layer's order."""
        flip = value.flipped != self.swap  # the graph's time index k is the layer's -1 - k
        h = spec.hidden_size
        whole = "output" if not flip else f"output.flip({int(spec.batch_first)})"

        def half(j: int) -> str:
            if value.steps is not None:
                k = value.steps[j]
                text = f"output[{'' if not spec.batch_first else ':, '}{-1 - k if flip else k}]"
                prefix = ":, "
            else:
                text, prefix = whole, "..., "
            if value.directions == 1:
                return text
            own = j ^ int(value.swapped) ^ int(self.swap)
            return f"{text}[{prefix}{':' + str(h) if own == 0 else str(h) + ':'}]"

        positions = [value.part] if value.part is not None else list(range(value.directions))
        parts = [half(j) for j in positions]
        if value.merge == "sum":
            text = f"{parts[0]} + {parts[1]}"
        elif value.merge == "mul":
            text = f"{parts[0]} * {parts[1]}"
        elif value.merge == "ave":
            text = f"({parts[0]} + {parts[1]}) / 2"
        else:
            text = " and ".join(parts) + (" concatenated" if len(parts) > 1 else "")
        text = "the layer's " + text
        expected = ("BC", "BH") if value.steps is not None else ("BTH" if spec.batch_first else "TBH",)
        if value.axes not in expected:
            text += f" with axes {', '.join(value.axes)}"
        return text

    # -- weights --

    def weights(
        self, layers: list[_Layer], spec: LSTMSpec, exchanged: list[bool]
    ) -> OrderedDict[str, Tensor]:
        """The parameters under canonical names: the layer's direction d from each node's direction
        d XOR swap (bidirectional); W's input column halves exchanged where a node reads the previous one's
        directions in the other order than the layer feeds them."""
        state: OrderedDict[str, Tensor] = OrderedDict()
        hidden = spec.hidden_size
        for index, layer in enumerate(layers):
            arrays = {}
            for key in ("W", "R", "B", "P"):
                value = layer.call.inputs[key]
                if isinstance(value, Stored):
                    arrays[key] = _array(
                        value.proto, f"{self.where}: {layer.what} {key} ({value.name})", self.limit
                    )
            for direction in range(spec.num_directions):
                slot = direction ^ int(self.swap) if spec.bidirectional else 0
                suffix = parameter_suffix(index, direction)
                w = from_onnx_gates(arrays["W"][slot])
                if exchanged[index]:
                    half = w.shape[1] // 2
                    w = np.concatenate([w[:, half:], w[:, :half]], axis=1)
                state["weight_ih" + suffix] = _tensor(w)
                state["weight_hh" + suffix] = _tensor(from_onnx_gates(arrays["R"][slot]))
                if spec.bias:
                    b = arrays.get("B", np.zeros((spec.num_directions, 8 * hidden), layer.dtype))[slot]
                    state["bias_ih" + suffix] = _tensor(from_onnx_gates(b[: 4 * hidden]))
                    state["bias_hh" + suffix] = _tensor(from_onnx_gates(b[4 * hidden :]))
                if spec.peepholes:
                    p = arrays.get("P", np.zeros((spec.num_directions, 3 * hidden), layer.dtype))[slot]
                    state["weight_ph" + suffix] = _tensor(from_onnx_peepholes(p))
        return state


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def _describe(value: Value | None) -> str:
    if value is None:
        return "absent"
    if isinstance(value, GraphInput):
        return (
            f"graph input {value.name!r}"
            + (" transposed" if value.transposed else "")
            + (f" rows {value.rows}" if value.rows else "")
        )
    if isinstance(value, Sequence):
        return (
            f"LSTM node {value.node}'s Y with axes {value.axes}"
            + (" flipped" if value.flipped else "")
            + (" directions swapped" if value.swapped else "")
            + (f" direction {value.part}" if value.part is not None else "")
            + (f" repeating its last output past the lengths {value.previous!r}" if value.previous else "")
        )
    if isinstance(value, States):
        return f"Y_{value.kind} of LSTM nodes {list(value.nodes)}" + (
            f" direction {value.row}" if value.row is not None else ""
        )
    if isinstance(value, Stored):
        return f"a stored constant ({value.name})"
    if isinstance(value, Zeros):
        return "zeros"
    return f"a computed constant ({type(value).__name__})"
