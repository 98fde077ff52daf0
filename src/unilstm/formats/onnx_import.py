"""Read ONNX ``LSTM`` nodes back into one LSTM stack (``unilstm.load("m.onnx")``, ``unilstm convert m.onnx``).

What is read:

- one ``LSTM`` node, or a chain of them as torch.onnx, tf2onnx and :mod:`unilstm.formats.onnx_export` write
  stacks: node k+1 reads node k's ``Y`` made (T, B, D*H) by ``Transpose`` + ``Reshape`` or, with one
  direction, ``Squeeze`` of the direction axis (``layout=1``: (B, T, D*H)), maybe transposed; the glue is
  traced (:mod:`.onnx_import_graph`) and checked, not assumed. The chain becomes ONE stack with
  ``num_layers`` = the number of nodes;
- every attribute: ``hidden_size`` (checked against ``R``), ``direction`` (``forward``; ``bidirectional``;
  ``reverse``: see below), ``layout`` (1: ``batch_first``), ``activations`` f, g, h ->
  ``recurrent_activation``, ``activation``, ``output_activation`` ("same" when h = g), with
  ``activation_alpha`` / ``activation_beta`` consumed in order by the activations that take them (Affine,
  LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu -> :func:`unilstm.activations.parametric`; the
  values unilstm's exporter writes come back as the names it wrote them from: Affine(1, 0) ``"linear"``,
  LeakyRelu(0.2) ``"leaky_relu"``, Elu(1) ``"elu"``, HardSigmoid(0.2, 0.5) ``"hard_sigmoid_keras2"``,
  HardSigmoid(1/6, 0.5) ``"hard_sigmoid"``); Relu, Tanh, Sigmoid, Softsign, Softplus by name (any case, as
  onnxruntime); ``clip`` -> ``gate_clip``; ``input_forget`` -> ``coupled_gates``;
- the inputs: ``W`` (D, 4H, F), ``R`` (D, 4H, H), ``B`` (D, 8H) = [Wb, Rb] -> ``bias_ih``, ``bias_hh`` (no
  ``B`` on any node: ``bias=False``; on some: zeros for the others), ``P`` (D, 3H) [p_i, p_o, p_f] ->
  ``peepholes`` (``weight_ph`` [p_i, p_f, p_o]), gate blocks [i, o, f, c] -> [i, f, g, o]; weights from
  initializers or ``Constant`` nodes; ``sequence_lens`` from a graph input (maybe ``Cast``) -> the call's
  ``lengths=``; ``initial_h`` / ``initial_c``: zeros (omitted, or made by ``ConstantOfShape`` / ``Expand``
  as exporters do) -> no state, graph inputs -> the call's ``state=(h0, c0)`` in unilstm's (L*D, B, H)
  (one input per node for one layer, or one (L*D, B, H) input sliced by rows per node).

``direction="reverse"`` runs the sequence from its end (from each length) and writes each output at its own
time index; the closest spec is ``go_backwards=True`` (Keras), which computes the same states and the same
outputs flipped in time (zeros first where a length is shorter). A reverse chain followed by a whole time flip
(``Slice`` step -1, what the exporter writes for ``go_backwards``) is exactly that layer; without the flip the
stack's notes say that ONNX's ``Y`` is the layer's output flipped in time. Each graph output is checked to be
the stack's output (any axis order, flipped or not), ``Y_h`` / ``Y_c`` of consecutive layers, and its relation
to the layer's ``(output, (h_n, c_n))`` is written in the notes.

Refused with :class:`OnnxFileError`, naming the file and the node, initializer or input: a file larger than
``max_bytes`` (else ``$UNILSTM_MAX_FILE_BYTES``, else 1 GiB) before parsing; what does not parse as ONNX;
functions, sparse initializers, external data (``data_location`` EXTERNAL / ``external_data``) and subgraphs;
any operator but ``LSTM`` and the glue (:data:`~.onnx_import_graph.GLUE_OPS`), or of another domain; an
initializer whose declared dims do not match its data or exceed the limit, a weight of the wrong dtype or
shape (checked against the node before any weight is converted); attributes the operator does not have;
activations lists of the wrong length, alpha / beta values left over, and Affine, ScaledTanh or
ThresholdedRelu without their alpha / beta (onnxruntime's defaults differ from ONNX's: measured); different
activations in the two directions or different attributes between layers; a constant ``sequence_lens`` or
non-zero constant initial states (a layer takes them per call); glue that computes anything else.

onnx is the optional extra ``unilstm[onnx]``, imported on use. Differences from onnxruntime that the layer
keeps (documented, not refused): for a sequence of length 0, onnxruntime returns zeros as ``Y_h`` / ``Y_c``
where the layer returns its initial state (equal when the initial states are zeros).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..parameter_names import parameter_suffix
from ..spec import SAME_AS_ACTIVATION, ActivationLike, LSTMSpec
from .keras_files.limits import MAX_FILE_BYTES_ENV, max_file_bytes
from .layout import from_onnx_gates, from_onnx_peepholes
from .onnx_export import require_onnx
from .onnx_import_activations import ActivationError, node_attributes, onnx_activations
from .onnx_import_graph import (
    SUPPORTED_OPS,
    Dim,
    GlueError,
    GraphInput,
    Known,
    LstmCall,
    Sequence,
    States,
    Stored,
    Tracer,
    Value,
    Zeros,
)

PathLike = str | os.PathLike

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
_WEIGHT_DTYPES = (np.float16, np.float32, np.float64)


class OnnxFileError(ValueError):
    """An ONNX file that cannot be read as an LSTM stack: not ONNX, cut, hostile (external data, declared
    sizes past the limit), or computing something else than LSTM nodes and their glue. The message names the
    file and the node, initializer or input."""


@dataclass
class OnnxStack:
    """One LSTM stack read from an ONNX graph.

    Attributes:
        name: the first LSTM node's name (or ``"lstm"``).
        spec: what it computes.
        state: its parameters in torch layout under canonical names (``weight_ih_l0`` ...).
        inputs: graph input names by role: ``"input"``, and where the graph takes them ``"lengths"``,
            ``"h0"``, ``"c0"``.
        notes: how the graph's inputs and outputs relate to the layer's call and results.
    """

    name: str
    spec: LSTMSpec
    state: OrderedDict[str, Tensor]
    inputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the file --------------------------------------------------------------------------------------------


def read_onnx_lstms(path: PathLike, *, max_bytes: int | None = None) -> list[OnnxStack]:
    """The LSTM stack of an ONNX file (a list of one), after every check of the module docstring.

    Args:
        path: the ``.onnx`` file.
        max_bytes: the largest file accepted (default ``$UNILSTM_MAX_FILE_BYTES``, else 1 GiB); checked
            before the file is read, and every initializer's declared size against it.

    Raises:
        OnnxFileError: naming the file and the node, initializer or input.
        ImportError: onnx is not installed.
    """
    limit = max_file_bytes(max_bytes)
    where = str(path)
    model = parse_onnx_file(path, max_bytes=limit)
    try:
        return [_read_model(model, where, limit)]
    except OnnxFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        # a value no check above foresaw, met while reading (an attribute of an unexpected type ...)
        raise OnnxFileError(
            f"{where}: cannot read this ONNX file ({type(error).__name__}: {error})"
        ) from None


def parse_onnx_file(path: PathLike, *, max_bytes: int | None = None) -> Any:
    """The ``onnx.ModelProto`` of ``path``, its size checked against ``max_bytes`` (default as
    :func:`read_onnx_lstms`) before it is read, and parsed without loading external data (``onnx.load``
    would open the files an initializer names). Raises :class:`OnnxFileError` naming the file."""
    limit = max_file_bytes(max_bytes)
    where = str(path)
    size = Path(path).stat().st_size
    if size > limit:
        raise OnnxFileError(
            f"{where}: {size} bytes, more than the limit of {limit} bytes an ONNX read may take; pass "
            f"max_bytes= or set {MAX_FILE_BYTES_ENV} (e.g. {MAX_FILE_BYTES_ENV}=4G) to allow more"
        )
    onnx = require_onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(Path(path).read_bytes())
    except Exception as error:  # protobuf's DecodeError and its relatives
        raise OnnxFileError(
            f"{where}: not an ONNX model, or a cut one ({type(error).__name__}: {error})"
        ) from None
    return model


def _read_model(model: Any, where: str, limit: int) -> OnnxStack:
    graph = model.graph
    opset = _check_structure(model, where, limit)
    values: dict[str, Value] = {}
    for tensor in graph.initializer:
        if tensor.name in values:
            raise OnnxFileError(f"{where}: initializer {tensor.name!r} appears twice")
        values[tensor.name] = Stored(tensor, f"initializer {tensor.name!r}")
    shapes: dict[str, tuple[Dim, ...] | None] = {}
    input_types: dict[str, int] = {}
    for entry in graph.input:
        if entry.name in values:  # an initializer listed as an input (IR < 4): its stored value
            continue
        values[entry.name] = GraphInput(entry.name)
        shapes[entry.name] = _declared_shape(entry)
        input_types[entry.name] = int(entry.type.tensor_type.elem_type)

    def materialize(value: Stored) -> np.ndarray:
        return _array(value.proto, f"{where}: {value.name}", limit)

    tracer = Tracer(values, shapes, materialize, opset)
    try:
        trace = tracer.run(graph.node, lambda node: f"{where}: node {_node_name(node)}")
    except GlueError as error:
        raise OnnxFileError(str(error)) from None
    if not trace.calls:
        raise OnnxFileError(f"{where}: no LSTM node in the graph")
    outputs = {}
    for entry in graph.output:
        if entry.name not in tracer.values:
            raise OnnxFileError(f"{where}: graph output {entry.name!r} is made by no node (a cut file)")
        outputs[entry.name] = tracer.values[entry.name]
    return _Stack(trace.calls, outputs, input_types, shapes, where, limit).build()


def _check_structure(model: Any, where: str, limit: int) -> int:
    """Refuse what is never read (functions, sparse initializers, subgraphs, other operators, external
    data); returns the default domain's opset."""
    from onnx import AttributeProto

    if model.functions:
        raise OnnxFileError(
            f"{where}: the model defines functions ({model.functions[0].name!r} ...): not read"
        )
    opsets = {entry.domain: int(entry.version) for entry in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None:
        raise OnnxFileError(f"{where}: no opset of the default ONNX domain is imported")
    graph = model.graph
    if graph.sparse_initializer:
        name = graph.sparse_initializer[0].values.name
        raise OnnxFileError(f"{where}: sparse initializer {name!r}: not read")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise OnnxFileError(
                f"{where}: node {_node_name(node)}: operator {node.domain}::{node.op_type} of another domain "
                "is not read (only LSTM and its glue)"
            )
        if node.op_type not in SUPPORTED_OPS:
            raise OnnxFileError(
                f"{where}: node {_node_name(node)}: operator {node.op_type} is not read; an ONNX file must "
                f"hold "
                f"LSTM nodes and their glue only ({', '.join(SUPPORTED_OPS)})"
            )
        for attribute in node.attribute:
            if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise OnnxFileError(
                    f"{where}: node {_node_name(node)}: subgraph attribute {attribute.name!r}"
                )
            if attribute.type == AttributeProto.TENSOR:
                _check_tensor(
                    attribute.t, f"{where}: node {_node_name(node)} attribute {attribute.name}", limit
                )
            if attribute.type == AttributeProto.SPARSE_TENSOR:
                raise OnnxFileError(f"{where}: node {_node_name(node)}: sparse attribute {attribute.name!r}")
    total = 0
    for tensor in graph.initializer:
        total += _check_tensor(tensor, f"{where}: initializer {tensor.name!r}", limit)
        if total > limit:
            raise OnnxFileError(
                f"{where}: the initializers up to {tensor.name!r} declare {total} bytes, more than the limit "
                f"of {limit}; pass max_bytes= or set {MAX_FILE_BYTES_ENV} to allow more"
            )
    return opset


def _node_name(node: Any) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"{node.op_type} -> {list(node.output)}"


def _declared_shape(entry: Any) -> tuple[Dim, ...] | None:
    kind = entry.type.WhichOneof("value")
    if kind != "tensor_type" or not entry.type.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for index, dim in enumerate(entry.type.tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(f"{entry.name}[{index}]")
    return tuple(dims)


def _numpy_dtype(tensor: Any) -> np.dtype | None:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(tensor.data_type)))
    except (KeyError, TypeError, ValueError):
        return None


def _dtype_name(tensor: Any) -> str:
    from onnx import TensorProto

    try:
        return str(TensorProto.DataType.Name(int(tensor.data_type)))
    except ValueError:
        return f"data_type {tensor.data_type}"


_TYPED_FIELDS = {
    np.dtype(np.float32): "float_data",
    np.dtype(np.float64): "double_data",
    np.dtype(np.int64): "int64_data",
    np.dtype(np.int32): "int32_data",
    np.dtype(np.float16): "int32_data",
    np.dtype(np.int8): "int32_data",
    np.dtype(np.uint8): "int32_data",
    np.dtype(np.int16): "int32_data",
    np.dtype(np.bool_): "int32_data",
}


def _check_tensor(tensor: Any, what: str, limit: int) -> int:
    """Refuse external data, unknown dtypes, negative dims, a declared size past ``limit`` and data that
    does not fill the declared dims; returns the declared bytes (nothing is converted here)."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        raise OnnxFileError(f"{what}: its data lies in an external file, which is never read")
    dtype = _numpy_dtype(tensor)
    if dtype is None or dtype not in _TYPED_FIELDS:
        raise OnnxFileError(f"{what}: dtype {_dtype_name(tensor)} is not read")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise OnnxFileError(f"{what}: negative dims {dims}")
    count = 1
    for d in dims:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > limit:
        raise OnnxFileError(
            f"{what}: dims {dims} declare {nbytes} bytes, more than the limit of {limit}; pass max_bytes= or "
            f"set {MAX_FILE_BYTES_ENV} to allow more"
        )
    if tensor.raw_data:
        have, need, unit = len(tensor.raw_data), nbytes, "bytes"
    else:
        have, need, unit = len(getattr(tensor, _TYPED_FIELDS[dtype])), count, "values"
    if have != need:
        raise OnnxFileError(
            f"{what}: holds {have} {unit} where its dims {dims} declare {need} (a cut or edited file)"
        )
    return nbytes


def _array(tensor: Any, what: str, limit: int) -> np.ndarray:
    from onnx import numpy_helper

    _check_tensor(tensor, what, limit)
    return np.asarray(numpy_helper.to_array(tensor))


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
    def __init__(
        self,
        calls: list[LstmCall],
        outputs: dict[str, Value],
        input_types: dict[str, int],
        shapes: dict[str, tuple[Dim, ...] | None],
        where: str,
        limit: int,
    ) -> None:
        self.calls, self.outputs, self.input_types, self.shapes = calls, outputs, input_types, shapes
        self.where, self.limit = where, limit
        self.notes: list[str] = []
        self.inputs: dict[str, str] = {}

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
        batch_first = self.chain(layers)
        self.lengths(layers)
        for kind in ("h", "c"):
            self.initial_state(layers, kind)
        reverse = first.direction == "reverse"
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
                go_backwards=reverse,
            )
        except (TypeError, ValueError) as error:
            raise self.fail(f"{first.what}: {error}") from None
        self.describe_outputs(spec, reverse)
        if "lengths" in self.inputs and ("h0" in self.inputs or "c0" in self.inputs):
            self.notes.append(
                "for a sequence of length 0 onnxruntime returns zeros as Y_h / Y_c; the layer returns the "
                "initial state there"
            )
        state = self.weights(layers, spec)
        name = first.call.node.name or "lstm"
        return OnnxStack(name, spec, state, dict(self.inputs), self.notes)

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

    def chain(self, layers: list[_Layer]) -> bool:
        """Check that node k reads node k-1's output as a sequence; returns batch_first (of layer 0's
        input)."""
        batch_first = False
        for index, layer in enumerate(layers):
            x = layer.call.inputs["X"]
            batch_major = layer.call.layout == 1
            if index == 0:
                if not isinstance(x, GraphInput) or x.rows is not None or x.cast:
                    raise self.fail(
                        f"{layer.what}: input X must be a graph input (maybe transposed (1, 0, 2))"
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
            if not (isinstance(x, Sequence) and x.node == index - 1 and x.axes == want and not x.flipped):
                raise self.fail(
                    f"{layer.what}: input X must be the previous LSTM node's Y as a sequence ({want[0]}, "
                    f"{want[1]}, D*H), through Transpose/Reshape/Squeeze; it is {_describe(x)}"
                )
            width = previous.call.directions * previous.hidden
            if layer.features != width:
                raise self.fail(
                    f"{layer.what}: W takes {layer.features} features; the previous layer gives {width}"
                )
        return batch_first

    def lengths(self, layers: list[_Layer]) -> None:
        names: set[str | None] = set()
        for layer in layers:
            value = layer.call.inputs["sequence_lens"]
            if value is None:
                names.add(None)
            elif isinstance(value, GraphInput) and value.rows is None and not value.transposed:
                names.add(value.name)
            else:
                raise self.fail(
                    f"{layer.what}: sequence_lens is {_describe(value)}; a unilstm LSTM takes lengths per "
                    "call, so they must come from a graph input"
                )
        if len(names) > 1:
            raise self.fail(f"the LSTM nodes take different sequence_lens ({sorted(map(str, names))})")
        name = names.pop()
        if name is not None:
            self.inputs["lengths"] = name
            if self.input_types.get(name) not in (6, 7):  # INT32, INT64
                raise self.fail(f"graph input {name!r} (sequence_lens) must be int32 or int64")

    def initial_state(self, layers: list[_Layer], kind: str) -> None:
        key = "initial_h" if kind == "h" else "initial_c"
        role = "h0" if kind == "h" else "c0"
        given: list[str | None] = []
        for index, layer in enumerate(layers):
            value = layer.call.inputs[key]
            d = layer.call.directions
            if isinstance(value, Zeros):
                self.zero_shape(value.shape, layer, key)
            if value is None or isinstance(value, Zeros) or self.zero_constant(value, layer, key):
                given.append(None)
            elif (
                isinstance(value, GraphInput)
                and not value.transposed
                and not value.cast
                and ((value.rows is None and len(layers) == 1) or value.rows == (index * d, (index + 1) * d))
            ):
                given.append(value.name)
                if layer.call.layout == 1:
                    self.notes.append(
                        f"graph input {value.name!r} ({key}) is (B, D, H) (layout=1); the layer's state is "
                        "(D, B, H): pass it transposed"
                    )
            else:
                raise self.fail(
                    f"{layer.what}: {key} is {_describe(value)}; read are zeros, a graph input (one layer), "
                    f"or rows [{index * d}, {(index + 1) * d}) of one (L*D, B, H) graph input"
                )
        if len(set(given)) > 1:
            raise self.fail(f"{key}: some LSTM nodes take it from a graph input and others not ({given})")
        if given[0] is not None:
            self.inputs[role] = given[0]

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

    def zero_constant(self, value: Value, layer: _Layer, key: str) -> bool:
        if isinstance(value, Stored):
            array = _array(value.proto, f"{self.where}: {layer.what} {key} ({value.name})", self.limit)
        elif isinstance(value, Known):
            array = value.array
        else:
            return False
        if array.dtype.kind == "f" and array.ndim == 3:
            self.zero_shape(array.shape, layer, key)
        if array.dtype.kind != "f" or array.ndim != 3:
            raise self.fail(
                f"{layer.what}: {key} must be a float tensor (D, B, H), got {array.dtype} {array.shape}"
            )
        if np.any(array != 0):
            raise self.fail(
                f"{layer.what}: {key} is a non-zero constant; a unilstm LSTM takes initial states per call: "
                "make it a graph input and pass state=(h0, c0)"
            )
        return True

    # -- outputs --

    def describe_outputs(self, spec: LSTMSpec, reverse: bool) -> None:
        last = len(self.calls) - 1
        layer_axes = "BTC" if spec.batch_first else "TBC"
        self.notes.append(
            f"graph input {self.inputs['input']!r} is the layer's input "
            f"({'B, T, F' if spec.batch_first else 'T, B, F'})"
            + (f"; graph input {self.inputs['lengths']!r} its lengths=" if "lengths" in self.inputs else "")
            + (
                f"; graph inputs {self.inputs.get('h0')!r}, {self.inputs.get('c0')!r} its state=(h0, c0) "
                "(None: zeros)"
                if "h0" in self.inputs or "c0" in self.inputs
                else ""
            )
        )
        for name, value in self.outputs.items():
            if isinstance(value, Sequence) and value.node == last:
                flip = value.flipped != reverse
                if value.part is not None:  # one direction's half of a bidirectional output
                    text = f"the {('forward', 'backward')[value.part]} half of the layer's output"
                    if flip:
                        text += " flipped in time"
                    text += f", with axes {', '.join(value.axes)}"
                elif value.axes == layer_axes and not flip:
                    text = "the layer's output"
                else:
                    text = f"the layer's output ({', '.join(layer_axes).replace('C', 'D*H')})"
                    if flip:
                        text += " flipped in time"
                    if value.axes != layer_axes:
                        text += f" with axes {', '.join(value.axes).replace('C', 'D*H')}"
                if reverse and not value.flipped:
                    text += (
                        " (direction=reverse writes outputs at their time index; go_backwards in processing "
                        "order)"
                    )
                self.notes.append(f"graph output {name!r} = {text}")
            elif isinstance(value, States):
                d = spec.num_directions
                rows = f"[{value.nodes[0] * d}:{(value.nodes[-1] + 1) * d}]"
                whole = value.nodes == tuple(range(len(self.calls)))
                text = f"{value.kind}_n" + ("" if whole else rows)
                if value.axes == "BDH":
                    text += ".transpose(0, 1)"
                self.notes.append(f"graph output {name!r} = the layer's {text}")
            else:
                raise self.fail(
                    f"graph output {name!r} is {_describe(value)}, not the LSTM stack's output or states"
                )

    # -- weights --

    def weights(self, layers: list[_Layer], spec: LSTMSpec) -> OrderedDict[str, Tensor]:
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
                suffix = parameter_suffix(index, direction)
                state["weight_ih" + suffix] = _tensor(from_onnx_gates(arrays["W"][direction]))
                state["weight_hh" + suffix] = _tensor(from_onnx_gates(arrays["R"][direction]))
                if spec.bias:
                    b = arrays.get("B", np.zeros((spec.num_directions, 8 * hidden), layer.dtype))[direction]
                    state["bias_ih" + suffix] = _tensor(from_onnx_gates(b[: 4 * hidden]))
                    state["bias_hh" + suffix] = _tensor(from_onnx_gates(b[4 * hidden :]))
                if spec.peepholes:
                    p = arrays.get("P", np.zeros((spec.num_directions, 3 * hidden), layer.dtype))[direction]
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
        return f"LSTM node {value.node}'s Y with axes {value.axes}" + (" flipped" if value.flipped else "")
    if isinstance(value, States):
        return f"Y_{value.kind} of LSTM nodes {list(value.nodes)}"
    if isinstance(value, Stored):
        return f"a stored constant ({value.name})"
    if isinstance(value, Zeros):
        return "zeros"
    return f"a computed constant ({type(value).__name__})"
