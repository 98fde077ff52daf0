"""Read ONNX ``LSTM`` nodes back into LSTM stacks (``unilstm.load("m.onnx")``, ``unilstm convert m.onnx``).

What is read:

- one ``LSTM`` node, or a chain of them as torch.onnx, tf2onnx and :mod:`unilstm.formats.onnx_export` write
  stacks: node k+1 reads node k's ``Y`` made (T, B, D*H) by ``Transpose`` + ``Reshape`` or, with one
  direction, ``Squeeze`` of the direction axis (``layout=1``: (B, T, D*H)), maybe transposed; the glue is
  traced (:mod:`.onnx_import_graph`) and checked, not assumed. The chain becomes ONE stack with
  ``num_layers`` = the number of nodes; several chains become several stacks, in the order of their first
  nodes (``unilstm.load`` returns a list of layers): independent ones (each starting at a graph input), and
  stacks one after the other where a node reads another stack's output other than as its next layer
  (flipped in time, another size or cell: what ``build_chain`` writes for a Keras Sequential), the notes
  saying how its input is that stack's output;
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
  (one input per node for one layer, or one (L*D, B, H) input sliced by rows per node, maybe with its two
  rows swapped by a ``Gather`` as the exporter writes them for ``go_backwards``);
- a constant ``sequence_lens`` and non-zero constant initial states only with ``constants=True``, into
  :attr:`OnnxStack.lengths` / :attr:`OnnxStack.initial_state` (a layer takes them per call; ``unilstm.load``
  returns layers, which cannot hold them, and refuses them naming this way to read them);
- the glue of unilstm's own exporter (:mod:`.onnx_import_masks`): a ``Gather`` of [1, 0] along the direction
  axis of a bidirectional node's ``Y`` / ``Y_h`` / ``Y_c`` (``go_backwards``, derived in
  :mod:`.onnx_import_stack`); ``Where(lengths == 0, initial state, Y_h)`` (the layer's own state for a
  sequence of length 0); ``Where(t < lengths, Y, Y_h)`` on the forward-running direction (Keras's
  ``masked_output="previous"``); Keras's last output (``return_sequences=False``: a ``Gather`` of one time
  step, for two directions each half at the end of its processing order, ``Slice`` of the halves and
  ``Concat``) and Keras's Bidirectional merges (``Split`` of the D*H axis, ``Add``, ``Mul``, ``Mul`` by 0.5:
  sum, mul, ave), described in the notes as what the graph's output is of the layer's output ("the layer's
  output[-1][:, :H] + output[0][:, H:]").

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
non-zero constant initial states without ``constants=True``; a node whose ``Y`` feeds two LSTM nodes (a
branch), a graph output mixing two stacks, a stack reading another stack's inner layer or a part, step or
merge of its output; glue that computes anything else.

onnx is the optional extra ``unilstm[onnx]``, imported on use. Differences from onnxruntime that the layer
keeps (documented, not refused): for a sequence of length 0, onnxruntime returns zeros as ``Y_h`` / ``Y_c``
where the layer returns its initial state (equal when the initial states are zeros), unless the graph's own
``Where`` glue returns the initial state there as unilstm's exporter writes it.

Module layout: :mod:`.onnx_import_tensors` (the error, :class:`OnnxStack`, tensor checks),
:mod:`.onnx_import_values` and :mod:`.onnx_import_graph` (the trace of the glue), :mod:`.onnx_import_masks`
(direction swaps and length masks), :mod:`.onnx_import_activations`, :mod:`.onnx_import_stack` (stacks, spec,
weights, notes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .keras_files.limits import MAX_FILE_BYTES_ENV, max_file_bytes
from .onnx_export import require_onnx
from .onnx_import_graph import SUPPORTED_OPS, Dim, GlueError, GraphInput, Stored, Tracer, Value
from .onnx_import_stack import LSTM_ATTRIBUTES, _describe, _Stack
from .onnx_import_tensors import OnnxFileError, OnnxStack, _array, _check_tensor, _node_name, _numpy_dtype
from .onnx_import_values import LstmCall, Sequence, States

PathLike = str | os.PathLike

__all__ = ["LSTM_ATTRIBUTES", "OnnxFileError", "OnnxStack", "parse_onnx_file", "read_onnx_lstms"]


# -- the file --------------------------------------------------------------------------------------------


def read_onnx_lstms(
    path: PathLike, *, max_bytes: int | None = None, constants: bool = False
) -> list[OnnxStack]:
    """The LSTM stacks of an ONNX file (one per independent chain of LSTM nodes), after every check of the
    module docstring.

    Args:
        path: the ``.onnx`` file.
        max_bytes: the largest file accepted (default ``$UNILSTM_MAX_FILE_BYTES``, else 1 GiB); checked
            before the file is read, and every initializer's declared size against it.
        constants: read a constant ``sequence_lens`` and non-zero constant initial states into the stacks'
            ``lengths`` / ``initial_state`` (refused otherwise: ``unilstm.load`` returns layers, which take
            them per call and cannot hold them).

    Raises:
        OnnxFileError: naming the file and the node, initializer or input.
        ImportError: onnx is not installed.
    """
    limit = max_file_bytes(max_bytes)
    where = str(path)
    model = parse_onnx_file(path, max_bytes=limit)
    try:
        return _read_model(model, where, limit, constants)
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


def _read_model(model: Any, where: str, limit: int, constants: bool) -> list[OnnxStack]:
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
    return build_stacks(trace.calls, outputs, input_types, shapes, where, limit, constants)


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


# -- the stacks ------------------------------------------------------------------------------------------


def build_stacks(
    calls: list[LstmCall],
    outputs: dict[str, Value],
    input_types: dict[str, int],
    shapes: dict[str, tuple[Dim, ...] | None],
    where: str,
    limit: int,
    constants: bool,
) -> list[OnnxStack]:
    """One :class:`OnnxStack` per chain of LSTM nodes (see the module docstring), in the order of their
    first nodes; every graph output must be one chain's output or states."""
    successor: dict[int, int] = {}
    for call in calls:
        x = call.inputs["X"]
        if isinstance(x, Sequence):
            if x.node in successor:
                raise OnnxFileError(
                    f"{where}: LSTM nodes {_node_name(calls[successor[x.node]].node)} and "
                    f"{_node_name(call.node)} "
                    f"both read the Y of {_node_name(calls[x.node].node)} (a branch): not one stack"
                )
            successor[x.node] = call.index
    # a node continues the stack of the node whose Y it reads when it reads that Y as a layer reads its
    # previous layer's output and computes the same cell; else it starts a stack fed by the other's output
    chains: list[list[LstmCall]] = []
    owner: dict[int, int] = {}
    feeds: dict[int, dict[int, Sequence]] = {}  # stack -> {node reading its output: the value read}
    for call in calls:
        x = call.inputs["X"]
        if isinstance(x, Sequence) and _continues(calls[x.node], call, x):
            owner[call.index] = owner[x.node]
            chains[owner[call.index]].append(call)
            continue
        if isinstance(x, Sequence):
            feeds.setdefault(owner[x.node], {})[call.index] = x
        owner[call.index] = len(chains)
        chains.append([call])
    per_chain: list[dict[str, Value]] = [{} for _ in chains]
    for name, value in outputs.items():
        nodes = (
            (value.node,) if isinstance(value, Sequence) else value.nodes if isinstance(value, States) else ()
        )
        numbers = {owner[n] for n in nodes if n in owner}
        if len(numbers) != 1:
            raise OnnxFileError(
                f"{where}: graph output {name!r} is {_describe(value)}, not one LSTM stack's output or states"
            )
        per_chain[numbers.pop()][name] = value
    stacks: list[OnnxStack] = []
    built: list[_Stack] = []
    names: set[str] = set()
    for number, (chain, chain_outputs) in enumerate(zip(chains, per_chain, strict=True)):
        x = chain[0].inputs["X"]
        upstream = None
        if isinstance(x, Sequence):
            upstream = (built[owner[x.node]], stacks[owner[x.node]].name)
        builder = _Stack(chain, chain_outputs, input_types, shapes, where, limit, constants)
        builder.feeds, builder.upstream = feeds.get(number, {}), upstream
        stack = builder.build()
        base, count = stack.name, 1
        while stack.name in names:  # unnamed nodes: lstm, lstm_1 ...
            stack.name = f"{base}_{count}"
            count += 1
        names.add(stack.name)
        stacks.append(stack)
        built.append(builder)
    if len(stacks) > 1:
        for stack in stacks:
            stack.notes.append(f"one of {len(stacks)} LSTM stacks in the graph ({', '.join(sorted(names))})")
    return stacks


def _continues(previous: LstmCall, call: LstmCall, x: Sequence) -> bool:
    """Whether ``call`` is the next layer of ``previous``'s stack: it reads its whole Y as a sequence, in
    time order, and has the same attributes (the same cell) and weight dtype."""
    want = "BTC" if call.layout == 1 else "TBC"
    plain = x.axes == want and not x.flipped and x.part is None and x.steps is None and x.merge is None

    def attributes(node: Any) -> dict[str, Any]:
        skipped = ("hidden_size", "layout")
        return {a.name: a.SerializeToString() for a in node.attribute if a.name not in skipped}

    def dtype(c: LstmCall) -> Any:
        w = c.inputs["W"]
        return _numpy_dtype(w.proto) if isinstance(w, Stored) else None

    return (
        plain
        and attributes(previous.node) == attributes(call.node)
        and previous.hidden == call.hidden
        and dtype(previous) == dtype(call)
    )
