"""A whole Keras model as one ONNX graph of standard operators: :func:`export_model_onnx`.

The writer walks a :class:`~.model_program.Program` (the model as straight-line steps) and lowers each step
to ONNX operators that compute what ``unilstm.keras.load_model`` computes at inference (Keras's
``training=False``); the layers around the LSTMs are in :mod:`~.model_onnx_layers`.

The graph: inputs are the Keras model's inputs, named as the program's input variables (``x_input_layer``),
batch-major, with the batch axis (``batch``) and the sizes Keras leaves open dynamic, typed as Keras
declares them (int32 / int64 ids, float32). Outputs are Keras's outputs in Keras's order, named after the
program's variables; intermediate tensors are named ``<variable>/<op>``, weights after the loaded model's
parameters (``dense.kernel``, ``embedding.embeddings``; an LSTM's ``<layer>.cell.W`` / ``.R`` / ``.B`` are in
ONNX's layout: gates [i, o, f, c], the Keras bias then zeros for the recurrent bias).

LSTM, CuDNNLSTM and Bidirectional(LSTM) become ONNX ``LSTM`` nodes (one per direction: a Bidirectional's
two layers may differ), on the input transposed to time-major. Activations: those ONNX's LSTM has
(Sigmoid, Tanh, Relu, HardSigmoid with Keras 3's alpha 1/6 or Keras 2's 0.2, Elu, Softsign, Softplus,
LeakyRelu, Affine for linear); any other is refused by name. ``go_backwards`` runs the node in reverse and
flips its output back into Keras's processing order; ``return_state`` gives ``Y_h`` / ``Y_c``;
``initial_state`` feeds ``initial_h`` / ``initial_c``. ``stateful`` and tf-keras's ``time_major`` are
refused.

Masks are computed in the graph as Keras computes them (bool tensors): Embedding's ``ids != 0``, Keras 3's
recorded ``NotEqual(ids, 0)``, Masking's ``any(x != mask_value)``, the merges' OR (Keras 3) / AND (Keras
2), Concatenate's joined masks; and they are used where Keras uses them: Attention's ``-1e9`` on masked
values and zeros at masked queries, GlobalAveragePooling1D's mean over the present steps, Keras 3's
Multiply / Maximum / Minimum skipping masked elements, Masking's zeroed steps. An LSTM gets its mask as
ONNX ``sequence_lens``, the number of True steps of each row (ReduceSum of the mask cast to int32), which
describes the mask exactly only when it is right-padded (True steps first, then False). So:

- **a mask made from ids is assumed right-padded**: an Embedding's ``mask_zero`` mask and Keras 3's
  ``NotEqual(ids, 0)`` on (batch, steps) ids: ids 0 only at the end of a row (padding), never inside it.
  For such inputs the graph computes what Keras computes; for ids with a 0 inside a row it does not (Keras
  skips that step, the graph runs it);
- masks combined from right-padded ones by OR / AND (merges, Concatenate along the features) and masks
  handed on (by LSTMs, Dense, TimeDistributed, Attention's query mask ...) stay right-padded;
- **an LSTM whose mask can have gaps is refused** (:class:`ConversionError` naming the LSTM and the mask's
  origin): a Masking layer's mask (a step whose features all equal ``mask_value`` can be anywhere), a
  Concatenate along the time axis, a mask computed by other Keras 3 operations. Such masks are exported
  wherever no LSTM needs them;
- past a row's length ONNX's LSTM outputs zeros; Keras's LSTM repeats its last output there (rebuilt with a
  Where from ``Y_h``), Bidirectional and ``zero_output_for_mask=True`` output zeros (ONNX's own); a
  go_backwards layer's padded steps come first in its processing order (zeros), as in Keras; a row of
  length 0 keeps its initial state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..formats.layout import to_onnx_gates
from ..formats.onnx_export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    OnnxExportError,
    _max_ir_version,
    onnx_activation,
    require_onnx,
)
from ..keras_model.operations import OPERATIONS
from .file_kinds import ConversionError
from .model_onnx_layers import EMITTERS, Emitted, Graph, Mask, array_of, layer_of
from .model_program import PER_STEP_LAYERS, Program, Step


def export_model_onnx(program: Program, opset: int | None = None) -> Any:
    """The ``onnx.ModelProto`` computing ``program``'s model at inference (see the module docstring),
    checked with ``onnx.checker``.

    Raises:
        ConversionError: a layer, argument or mask situation the graph cannot express, naming the layer's
            class and name.
    """
    onnx = require_onnx()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConversionError(f"ONNX export: opset must be an int >= {MIN_OPSET}, got {opset!r}")
    helper, tp = onnx.helper, onnx.TensorProto
    g = Graph(onnx, opset)
    graph_inputs = []
    values: dict[str, str] = {}
    for variable, shape, dtype in zip(
        program.inputs, program.input_shapes, program.input_dtypes, strict=True
    ):
        if dtype not in _INPUT_TYPES:
            raise ConversionError(
                f"ONNX export: input {variable!r} has dtype {dtype!r}; exportable: {', '.join(_INPUT_TYPES)}"
            )
        elem = getattr(tp, _INPUT_TYPES[dtype])
        graph_inputs.append(helper.make_tensor_value_info(variable, elem, _dims(variable, shape)))
        g.taken.add(variable)
        values[variable] = variable
        if elem in (tp.FLOAT16, tp.DOUBLE):  # Keras computes in float32
            g.at = variable
            values[variable] = g.node("Cast", [variable], "float32", to=tp.FLOAT)
        elif elem != tp.FLOAT:
            g.types[variable] = elem
    _emit_program(g, program, "", "", values, {})
    shapes = {v: s for step in program.steps for v, s in zip(step.outputs, step.output_shapes, strict=True)}
    graph_outputs: list[Any] = []
    for variable in program.outputs:
        name = values[variable]
        if name in program.inputs or name in [o.name for o in graph_outputs]:  # an output seen already
            g.at = variable
            name = g.node("Identity", [name], "output")
        graph_outputs.append(
            helper.make_tensor_value_info(name, tp.FLOAT, _dims(variable, shapes.get(variable)))
        )
    nodes, initializers = _live(g, [o.name for o in graph_outputs])
    graph = helper.make_graph(nodes, program.name or "model", graph_inputs, graph_outputs, initializers)
    graph.doc_string = (
        f"Keras model {program.name!r} at inference, exported by unilstm. Masks made from ids (Embedding "
        "mask_zero, NotEqual(ids, 0)) are taken as right-padded: ids 0 only at the end of a row."
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="unilstm")
    model.ir_version = min(model.ir_version, _max_ir_version(onnx, opset))
    onnx.checker.check_model(model)
    return model


#: Keras input dtype -> ONNX element type (a TensorProto name)
_INPUT_TYPES = {
    "float32": "FLOAT",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FLOAT16",
    "float64": "DOUBLE",
    "bool": "BOOL",
}


def _live(g: Graph, outputs: list[str]) -> tuple[list[Any], list[Any]]:
    """The nodes and initializers the outputs need (masks Keras computes but nothing uses are dropped)."""
    needed, nodes = set(outputs), []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(node.input)
    return nodes[::-1], [i for i in g.initializers if i.name in needed]


def _dims(variable: str, shape: tuple[int | None, ...] | None) -> list[Any] | None:
    """An ONNX shape: ``batch`` for axis 0, ``<variable>_dim<i>`` for another open size."""
    if shape is None:
        return None
    return ["batch" if i == 0 else (f"{variable}_dim{i}" if s is None else s) for i, s in enumerate(shape)]


def _emit_program(
    g: Graph, program: Program, scope: str, weights: str, values: dict[str, str], masks: dict[str, Mask]
) -> None:
    """Lower every step of ``program``. ``values`` maps its variables to tensors (its inputs given),
    ``masks`` mask tensors to what is known of them; ``scope`` prefixes tensor names and ``weights`` weight
    names (a nested model's)."""
    for step in program.steps:
        where = f"{step.class_name} {step.layer!r}"
        g.where = where if not scope else f"{where} in {scope.rstrip('/')!r}"
        g.at = scope + step.outputs[0]
        first = len(g.nodes)
        scoped = replace(step, attribute=weights + step.attribute)
        inputs = [values[v] for v in step.inputs]
        in_masks = [
            None if m is None else masks.get(values[m], Mask(values[m], f"the mask {m!r}"))
            for m in step.input_masks
        ]
        outputs, out_masks = _emit_step(g, scoped, inputs, in_masks, scope, values, masks)
        if len(outputs) != len(step.outputs):
            raise g.error(f"gives {len(outputs)} outputs, the model has {len(step.outputs)}")
        renamed: dict[str, str] = {}
        for variable, tensor, mask_variable, mask in zip(
            step.outputs, outputs, step.output_masks, out_masks, strict=True
        ):
            bound = _bind(g, tensor, scope + variable, first, renamed)
            values[variable] = bound
            if step.module is None and mask is not None:  # an operation's bool output: a mask itself
                masks[bound] = replace(mask, tensor=bound)
            if mask_variable is None:
                continue
            if mask is None:
                raise g.error(f"the mask of {variable!r} is not computed by the export")
            if mask.tensor in renamed:
                mask = replace(mask, tensor=renamed[mask.tensor])
            elif any(mask.tensor in n.output for n in g.nodes[first:]):
                mask = replace(mask, tensor=_bind(g, mask.tensor, scope + mask_variable, first, renamed))
            values[mask_variable] = mask.tensor
            masks[mask.tensor] = mask


def _bind(g: Graph, tensor: str, name: str, first: int, renamed: dict[str, str]) -> str:
    """Give a step's output its variable's name: rename the tensor where the step's nodes (from index
    ``first``) made it, else an Identity (an identity layer, a tensor already named)."""
    if tensor in renamed or not any(tensor in n.output for n in g.nodes[first:]):
        g.nodes.append(g.onnx.helper.make_node("Identity", [renamed.get(tensor, tensor)], [name]))
    else:
        for node in g.nodes[first:]:
            for names in (node.input, node.output):
                for i, value in enumerate(names):
                    if value == tensor:
                        names[i] = name
        if tensor in g.types:
            g.types[name] = g.types[tensor]
        renamed[tensor] = name
    g.taken.add(name)
    return name


def _emit_step(
    g: Graph,
    step: Step,
    inputs: list[str],
    masks: list[Mask | None],
    scope: str,
    values: dict[str, str],
    known: dict[str, Mask],
) -> Emitted:
    if step.module is None:
        return _emit_operation(g, step, inputs, known)
    if step.nested is not None:
        return _emit_nested(g, step, inputs, masks, scope, known)
    if step.class_name in ("LSTM", "CuDNNLSTM", "Bidirectional"):
        return emit_recurrent(g, step, inputs, masks, values)
    if step.class_name == "TimeDistributed":
        return _emit_time_distributed(g, step, inputs, masks, values, known)
    emitter = EMITTERS.get(step.class_name)
    if emitter is None:
        exportable = sorted([*EMITTERS, "LSTM", "CuDNNLSTM", "Bidirectional", "TimeDistributed"])
        raise g.error(
            f"Keras layer class {step.class_name!r} has no ONNX export (exportable: {', '.join(exportable)})"
        )
    return emitter(g, step, inputs, masks)


# -- Keras 3 operations, nested models, TimeDistributed ---------------------------------------------------


def _emit_operation(g: Graph, step: Step, inputs: list[str], known: dict[str, Mask]) -> Emitted:
    """The Keras 3 operations a functional config records (``NotEqual(ids, 0)``: the mask an Embedding
    hands on). Their bool outputs are masks: ``ids != 0`` on (B, T) ids is assumed right-padded, as an
    Embedding's mask; AND / OR keep right padding; anything else may have gaps."""
    tp = g.onnx.TensorProto
    kind = step.class_name
    if kind not in OPERATIONS:
        raise g.error(f"the Keras operation {kind!r} has no ONNX export")
    options = {k: v for k, v in {**step.config, **step.kwargs}.items() if k != "name"}
    operands = inputs + [_operand(g, a, inputs[0]) for a in step.args]
    gaps: str | None = f"the mask computed by the Keras operation {kind} {step.layer!r}"
    if kind in ("NotEqual", "Equal"):
        out = g.node("Equal", operands[:2])
        if kind == "NotEqual":
            out = g.node("Not", [out])
            if step.args == [0] and len(step.output_shapes[0]) == 2:
                gaps = None  # ids != 0 on (B, T) ids: an Embedding's mask, assumed right-padded
    elif kind in ("LogicalAnd", "LogicalOr"):
        out = g.node("And" if kind == "LogicalAnd" else "Or", operands[:2])
        parts = [known.get(t) for t in operands[:2]]
        if all(p is not None and p.gaps is None for p in parts):
            gaps = None
    elif kind == "LogicalNot":
        out = g.node("Not", operands[:1])
    elif kind in ("Any", "All"):
        axis = options.get("axis")
        rank = len(step.output_shapes[0]) if options.get("keepdims") else None
        if axis is None or rank is None and axis is None:
            raise g.error(f"{kind} over every axis is not supported")
        axes = axis if isinstance(axis, list) else [axis]
        keepdims = bool(options.get("keepdims", False))
        out = g.any(operands[0], axes, keepdims) if kind == "Any" else g.all(operands[0], axes, keepdims)
    else:  # ConvertToTensor, as Keras 3 records it on a mask handed on explicitly
        if options.get("sparse") or options.get("ragged"):
            raise g.error("sparse and ragged tensors are not supported")
        dtype = options.get("dtype")
        source = known.get(inputs[0])
        if dtype is None or (dtype == "bool" and g.types.get(inputs[0]) == tp.BOOL):
            return [inputs[0]], [source]
        target = {"bool": tp.BOOL, "float32": tp.FLOAT, "int32": tp.INT32, "int64": tp.INT64}.get(dtype)
        if target is None:
            raise g.error(f"convert_to_tensor to dtype {dtype!r} is not supported")
        out = g.node("Cast", operands[:1], to=target)
        if target != tp.FLOAT:
            g.types[out] = target
        return [out], [source if target == tp.BOOL else None]
    g.types[out] = tp.BOOL
    return [out], [Mask(out, gaps)]


def _operand(g: Graph, value: Any, like: str) -> str:
    """A later argument of an operation: a tensor (a variable) or a number as ``like``'s element type."""
    if isinstance(value, str):
        raise g.error("an operation between two tensors given as separate arguments is not supported")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise g.error(f"the operation's argument {value!r} is not a number")
    tp = g.onnx.TensorProto
    dtype = {tp.INT32: np.int32, tp.INT64: np.int64, tp.BOOL: np.bool_}.get(g.types.get(like, 0), np.float32)
    return g.scalar(value, dtype)


def _emit_nested(
    g: Graph, step: Step, inputs: list[str], masks: list[Mask | None], scope: str, known: dict[str, Mask]
) -> Emitted:
    """A nested model's steps inline, its tensors under ``<variable>/``, its weights under
    ``<layer>.``."""
    nested = step.nested
    assert nested is not None
    if any(m is not None for m in masks):
        raise g.error("a nested model called on a masked tensor is not supported")
    values = dict(zip(nested.inputs, inputs, strict=True))
    _emit_program(g, nested, f"{scope}{step.outputs[0]}/", f"{step.attribute}.", values, known)
    mask_of = {v: m for s in nested.steps for v, m in zip(s.outputs, s.output_masks, strict=True)}
    out_masks = []
    for variable in nested.outputs:
        mask_variable = mask_of.get(variable)
        out_masks.append(None if mask_variable is None else known[values[mask_variable]])
    return [values[v] for v in nested.outputs], out_masks


def _emit_time_distributed(
    g: Graph,
    step: Step,
    inputs: list[str],
    masks: list[Mask | None],
    values: dict[str, str],
    known: dict[str, Mask],
) -> Emitted:
    """The inner layer on every step: per-step layers (Dense, Activation, identities) on (B, T, ...) as is,
    others on (B * T, ...) reshaped back to (B, T, ...). The input mask passes on (the inner layer gets
    none: no supported inner layer uses it)."""
    inner: Any = layer_of(step).layer
    mask = masks[0] if masks else None
    if inner.spec.class_name in ("Masking", "Embedding") and step.keras2 and mask is not None:
        raise g.error("tf-keras's TimeDistributed hands on its inner layer's mask; not supported")
    inner_step = replace(
        step,
        class_name=inner.spec.class_name,
        config=dict(inner.spec.config),
        module=inner,
        attribute=f"{step.attribute}.layer",
        input_masks=[None],
        kwargs={},
    )
    x = inputs[0]
    if inner.spec.class_name in PER_STEP_LAYERS:
        outputs, _ = _emit_step(g, inner_step, [x], [None], "", values, known)
        return [outputs[0]], [mask]
    shape = g.node("Shape", [x], "shape")
    big = np.iinfo(np.int64).max
    flat_shape = g.node(
        "Concat", [g.ints([-1]), g.node("Slice", [shape, g.ints([2]), g.ints([big])])], axis=0
    )
    flat = g.node("Reshape", [x, flat_shape], "steps_as_batch")
    outputs, _ = _emit_step(g, inner_step, [flat], [None], "", values, known)
    if len(outputs) != 1:
        raise g.error("an inner layer with several outputs is not supported")
    y = outputs[0]
    y_shape = g.node("Slice", [g.node("Shape", [y]), g.ints([1]), g.ints([big])])
    back = g.node("Concat", [g.node("Slice", [shape, g.ints([0]), g.ints([2])]), y_shape], axis=0)
    return [g.node("Reshape", [y, back], "batch_and_steps")], [mask]


# -- LSTM, CuDNNLSTM, Bidirectional ---------------------------------------------------------------------


def emit_recurrent(
    g: Graph, step: Step, inputs: list[str], masks: list[Mask | None], values: dict[str, str]
) -> Emitted:
    """LSTM / CuDNNLSTM (``<layer>.cell``) or Bidirectional (``<layer>.forward_layer`` and
    ``.backward_layer``): ONNX LSTM nodes on the time-major input, Keras's output conventions around them."""
    layer: Any = step.module
    bidirectional = step.class_name == "Bidirectional"
    door = layer.door if bidirectional else layer.cell
    unknown = sorted(set(step.kwargs) - {"initial_state"})
    if unknown:
        raise g.error(f"unsupported call arguments: {', '.join(unknown)}")
    if door.stateful:
        raise g.error(
            "stateful=True: the LSTM carries its states from one call to the next; an ONNX graph is "
            "stateless (export a model built with stateful=False, feed states as initial_state)"
        )
    if door.time_major:
        raise g.error("time_major=True (tf-keras) is not supported")
    x = inputs[0]
    states = [values[v] for v in step.kwargs.get("initial_state") or []] or inputs[1:]
    mask = masks[0] if masks else None
    lengths = None
    if mask is not None:
        if mask.gaps is not None:
            raise g.error(
                f"its mask can have gaps ({mask.gaps}): ONNX's LSTM takes sequence lengths, i.e. "
                "right-padded masks only"
            )
        lengths = _lengths(g, mask.tensor)
    x_tm = g.node("Transpose", [x], "time_major", perm=[1, 0, 2])
    if not bidirectional:
        if states and len(states) != 2:
            raise g.error(f"initial_state has {len(states)} tensors, an LSTM takes [h, c]")
        state = (states[0], states[1]) if states else None
        run = _direction(g, door, f"{step.attribute}.cell", x_tm, mask, lengths, state)
        out = _batch_major(g, run.processing(g)) if door.return_sequences else run.last(g)
        out_mask = mask if door.return_sequences else None
        if door.return_state:
            return [out, run.h, run.c], [out_mask, None, None]
        return [out], [out_mask]
    if states and len(states) != 4:
        raise g.error(
            f"initial_state has {len(states)} tensors, a Bidirectional takes [h, c, h_back, c_back]"
        )
    runs = []
    for index, (sub, name) in enumerate(
        ((door.forward_layer, "forward_layer"), (door.backward_layer, "backward_layer"))
    ):
        state = (states[2 * index], states[2 * index + 1]) if states else None
        runs.append(_direction(g, sub, f"{step.attribute}.{name}", x_tm, mask, lengths, state))
    forward, backward = runs
    if door.return_sequences:
        # the backward layer's outputs, processing order flipped back to input order (as Keras)
        y, y_rev = forward.processing(g), backward.in_time_order(g)
    else:
        y, y_rev = forward.last(g), backward.last(g)
    merged = _merge(g, door.merge_mode, y, y_rev)
    outs = [_batch_major(g, t) if door.return_sequences else t for t in merged]
    out_masks: list[Mask | None] = [mask if door.return_sequences else None] * len(outs)
    if door.return_state:
        return outs + [forward.h, forward.c, backward.h, backward.c], out_masks + [None] * 4
    return outs, out_masks


def _merge(g: Graph, merge_mode: str | None, y: str, y_rev: str) -> list[str]:
    if merge_mode is None:
        return [y, y_rev]
    if merge_mode == "concat":
        return [g.node("Concat", [y, y_rev], "concat", axis=-1)]
    if merge_mode == "sum":
        return [g.node("Add", [y, y_rev], "sum")]
    if merge_mode == "mul":
        return [g.node("Mul", [y, y_rev], "mul")]
    return [g.node("Div", [g.node("Add", [y, y_rev]), g.scalar(2.0)], "ave")]


def _batch_major(g: Graph, sequence: str) -> str:
    return g.node("Transpose", [sequence], "batch_major", perm=[1, 0, 2])


def _lengths(g: Graph, mask: str) -> str:
    """The sequence lengths (B,) int32 of a right-padded (B, T) mask: its True steps per row."""
    if mask not in g.lengths:
        as_int = g.node("Cast", [mask], "mask_int32", to=g.onnx.TensorProto.INT32)
        g.lengths[mask] = g.reduce(
            "ReduceSum",
            as_int,
            [1],
            False,
            "sequence_lens",
            doc_string="ONNX sequence_lens: the True steps of a Keras mask taken as right-padded",
        )
    return g.lengths[mask]


@dataclass
class _Run:
    """One LSTM layer (one direction) run as an ONNX LSTM node, in Keras's terms."""

    y: str  #: ONNX's Y (T, B, H) in input time order, Keras's outputs at masked steps rebuilt
    go_backwards: bool
    masked: bool
    y_h: str  #: ONNX's Y_h (B, H), the last output of an unmasked run
    h: str  #: Keras's final states (B, H)
    c: str
    flipped: str | None = None

    def last(self, g: Graph) -> str:
        """Keras's last output (B, H): the last step of the processing order (with a mask, the output
        Keras gives at that step, maybe a masked one)."""
        if not self.masked:
            return self.y_h
        return g.node("Gather", [self.processing(g), g.const(np.asarray(-1, np.int64))], "last", axis=0)

    def _flipped(self, g: Graph) -> str:
        if self.flipped is None:
            why = "Keras: go_backwards outputs in processing order; Bidirectional flips back to input order"
            self.flipped = g.time_flip(self.y, 0, why)
        return self.flipped

    def processing(self, g: Graph) -> str:
        """Keras's output sequence (T, B, H): in processing order (a go_backwards layer's reversed)."""
        return self._flipped(g) if self.go_backwards else self.y

    def in_time_order(self, g: Graph) -> str:
        """The processing-order sequence flipped in time (a Bidirectional's backward layer's outputs)."""
        return self.y if self.go_backwards else self._flipped(g)


def _direction(
    g: Graph,
    cell: Any,
    prefix: str,
    x_tm: str,
    mask: Mask | None,
    lengths: str | None,
    state: tuple[str, str] | None,
) -> _Run:
    """One ONNX LSTM node for the Keras LSTM ``cell`` (its weights as ``<prefix>.W / .R / .B``).

    ONNX's LSTM stops at each row's length and outputs zeros past it: Keras's ``zero_output_for_mask``
    (and a Bidirectional's layers) does the same; a plain Keras LSTM repeats its last output there (zeros
    before its first step), rebuilt here from Y_h. A go_backwards layer runs the node in reverse: its padded
    steps come first in Keras's processing order, and change nothing, as in Keras."""
    try:
        f = onnx_activation(cell.recurrent_activation, "recurrent_activation")
        act = onnx_activation(cell.activation, "activation")
    except OnnxExportError as error:
        raise g.error(str(error)) from None
    units = cell.units
    w = np.asarray(to_onnx_gates(array_of(cell.kernel).T, axis=0))[None]
    r = np.asarray(to_onnx_gates(array_of(cell.recurrent_kernel).T, axis=0))[None]
    node_inputs = [x_tm, g.weight(f"{prefix}.W", w), g.weight(f"{prefix}.R", r), ""]
    if cell.bias is not None:  # Keras's one bias as ONNX's input bias, a zero recurrent bias
        b = np.concatenate([to_onnx_gates(array_of(cell.bias), axis=0), np.zeros(4 * units, np.float32)])
        node_inputs[3] = g.weight(f"{prefix}.B", b[None])
    node_inputs.append(lengths or "")
    if state is not None:
        node_inputs += [g.node("Unsqueeze", [s, g.ints([0])], "initial_state") for s in state]
    while node_inputs[-1] == "":
        node_inputs.pop()
    functions = [f, act, act]
    attrs: dict[str, Any] = {"activations": [a[0] for a in functions]}
    alphas = [a[1] for a in functions if a[1] is not None]
    betas = [a[2] for a in functions if a[2] is not None]
    if alphas:
        attrs["activation_alpha"] = [float(a) for a in alphas]
    if betas:
        attrs["activation_beta"] = [float(b) for b in betas]
    direction = "reverse" if cell.go_backwards else "forward"
    y4, y_h, y_c = g.node(
        "LSTM", node_inputs, ["Y", "Y_h", "Y_c"], hidden_size=units, direction=direction, **attrs
    )
    y = g.node("Squeeze", [y4, g.ints([1])], "y")
    h = g.node("Squeeze", [y_h, g.ints([0])], "h")
    c = g.node("Squeeze", [y_c, g.ints([0])], "c")
    fill = h
    if state is not None and lengths is not None:
        # an empty row keeps its initial state; Keras's previous output starts at zeros
        empty = g.node(
            "Unsqueeze", [g.node("Equal", [lengths, g.scalar(0, np.int32)]), g.ints([-1])], "empty_row"
        )
        fill = g.node("Where", [empty, g.scalar(0.0), h], "previous_output")
        h = g.node("Where", [empty, state[0], h], "h_state", doc_string="Keras: an empty row keeps h0")
        c = g.node("Where", [empty, state[1], c], "c_state")
    if mask is not None and not cell.go_backwards and not cell.zero_output_for_mask:
        # Keras repeats the last output past the length; ONNX gives zeros there
        y = g.node(
            "Where",
            [_within(g, mask.tensor), y, fill],
            "y_previous",
            doc_string="Keras's LSTM repeats its last output past a row's length, ONNX's gives zeros",
        )
    return _Run(y, cell.go_backwards, mask is not None, fill, h, c)


def _within(g: Graph, mask: str) -> str:
    """(T, B, 1) bools: the step is within the row's length (the right-padded mask, time-major)."""
    if mask not in g.within:
        g.within[mask] = g.node(
            "Unsqueeze", [g.node("Transpose", [mask], perm=[1, 0]), g.ints([-1])], "within"
        )
    return g.within[mask]
