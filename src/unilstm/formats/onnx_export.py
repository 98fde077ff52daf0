"""Export an LSTM to ONNX with the standard ``LSTM`` operator.

The graph is built node by node with ``onnx.helper`` (not ``torch.onnx``), so that every spec the ONNX LSTM
operator can express is exported exactly and everything else is refused with an error naming the feature.

What maps to what:

- gate blocks [i, f, g, o] -> ONNX's [i, o, f, c] (through :mod:`unilstm.formats.layout`), ``b_ih`` and
  ``b_hh`` -> ``B`` = [Wb, Rb] (8H per direction), no ``B`` input without bias;
- directions: ``forward``, ``bidirectional``; ``go_backwards`` (Keras) runs every direction the other way
  round in original time (``reverse``, or a bidirectional node with the two directions swapped) and flips the
  final output in time, which is exact with and without lengths;
- ``num_layers`` > 1: one LSTM node per layer, ``Y`` (T, D, B, H) -> (T, B, D*H) by Transpose + Reshape;
- ``batch_first``: Transpose at the input and output (onnxruntime refuses ``layout=1``);
- lengths: an optional ``lengths`` graph input (B,) int64 -> ``sequence_lens`` (right padding); Keras's
  ``masked_output="previous"`` is rebuilt with a Where on the forward-running directions of the last layer;
- activations: sigmoid, tanh, relu, linear/None (Affine 1, 0), Keras 3 ``hard_sigmoid`` (HardSigmoid 1/6,
  0.5), Keras 2 ``hard_sigmoid_keras2`` (HardSigmoid 0.2, 0.5), elu, softsign, softplus, leaky_relu
  (LeakyRelu 0.2), the same functions passed as callables (``torch.tanh`` ...), and ONNX's parametric ones
  (:class:`~unilstm.activations.ParametricActivation`: Affine, LeakyRelu, ThresholdedRelu, ScaledTanh,
  HardSigmoid, Elu with their alpha and beta in ``activation_alpha`` / ``activation_beta``);
  ``recurrent_activation`` -> f, ``activation`` -> g, ``output_activation`` -> h (``activation`` unless set);
- cell variants: ``peepholes`` -> ``P`` ([p_i, p_o, p_f] per direction), ``gate_clip`` -> ``clip`` (ONNX clips
  the four gate pre-activations, as unilstm does), ``coupled_gates`` -> ``input_forget=1``, ``forget_bias``
  added to the forget block of ``B`` (a ``B`` of zeros is written for a layer without bias).

Refused with :class:`OnnxExportError`, naming the spec field: ``proj_size`` > 0 (and ``proj_clip`` with it),
``layer_norm``, ``cell_clip``, ``zoneout_hidden`` / ``zoneout_cell`` (even in inference, where zoneout mixes
the new state with the previous one: the LSTM operator has no such mix), activations the operator lacks,
unknown callables, a layer whose input size is not known yet. Dropout of every kind is a training-time
feature and is not exported. Masks with gaps cannot be given to the graph at all: it takes right-padded
lengths only.

onnx (and onnxruntime for checking) are the optional extra ``unilstm[onnx]``; they are imported on use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import numpy as np
import torch
import torch.nn.functional as F

from .. import activations as _acts
from ..spec import LSTMSpec
from .atomic import atomic_write_bytes
from .layout import to_onnx_gates, to_onnx_peepholes

DEFAULT_OPSET = 17
MIN_OPSET = 13
MERGE_MODES = ("concat", "sum", "mul", "ave")


class ExportableLSTM(Protocol):
    """What the graph builder reads from a layer: its spec and its weights per layer and direction
    (:meth:`unilstm.LSTM.direction_weights`: objects with ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` and, with
    ``peepholes``, ``peephole`` (3H,) [p_i, p_f, p_o])."""

    spec: LSTMSpec

    def direction_weights(self) -> list[list[Any]]: ...


class OnnxExportError(ValueError):
    """The layer uses a feature the ONNX LSTM operator cannot express (the message names it)."""


def require_onnx() -> Any:
    """Import ``onnx`` or explain how to install it."""
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ONNX export needs the 'onnx' package: pip install 'unilstm[onnx]' (onnx and onnxruntime)"
        ) from error
    return onnx


def require_onnxruntime() -> Any:
    """Import ``onnxruntime`` or explain how to install it."""
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "running ONNX models needs the 'onnxruntime' package: pip install 'unilstm[onnx]'"
        ) from error
    return onnxruntime


# -- activations -------------------------------------------------------------------------------------------

#: unilstm activation name -> (ONNX activation, alpha or None, beta or None)
ONNX_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
}

_CALLABLE_NAMES: dict[object, str] = {  # keyed by identity of torch's functions
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.relu: "relu",
    F.relu: "relu",
    F.softsign: "softsign",
    torch.nn.functional.elu: "elu",
}


#: ParametricActivation kind -> ONNX activation, and whether it reads a beta (all six read alpha)
ONNX_PARAMETRIC: dict[str, tuple[str, bool]] = {
    "affine": ("Affine", True),
    "leaky_relu": ("LeakyRelu", False),
    "thresholded_relu": ("ThresholdedRelu", False),
    "scaled_tanh": ("ScaledTanh", True),
    "hard_sigmoid": ("HardSigmoid", True),
    "elu": ("Elu", False),
}


def onnx_activation(activation: object, argument: str) -> tuple[str, float | None, float | None]:
    """The ONNX LSTM activation (name, alpha, beta) for a unilstm activation, or :class:`OnnxExportError`.
    alpha / beta are None where the ONNX activation reads none (the operator consumes its
    ``activation_alpha`` list in order, one value per activation that reads one)."""
    name: str | None
    if isinstance(activation, _acts.ParametricActivation):
        onnx_name, has_beta = ONNX_PARAMETRIC[activation.kind]
        return onnx_name, activation.alpha, activation.beta if has_beta else None
    if activation is None:
        name = "linear"
    elif isinstance(activation, str):
        name = activation
    else:
        name = next((key for key, fn in _acts.REGISTRY.items() if fn is activation), None)
        if name is None:
            name = _CALLABLE_NAMES.get(activation)
        if name is None:
            raise OnnxExportError(
                f"{argument}: the callable {getattr(activation, '__name__', activation)!r} cannot be "
                f"exported: the ONNX LSTM operator only takes named activations ({_known()})"
            )
    if name not in ONNX_ACTIVATIONS:
        raise OnnxExportError(
            f"{argument}={name!r} has no counterpart among the ONNX LSTM operator's activations; exportable: "
            f"{', '.join(sorted(ONNX_ACTIVATIONS))}"
        )
    return ONNX_ACTIVATIONS[name]


def _known() -> str:
    return ", ".join(sorted(ONNX_ACTIVATIONS))


#: the cell variants the ONNX LSTM operator lacks: spec field -> why
_REFUSED_VARIANTS = {
    "layer_norm": "the ONNX LSTM operator has no layer normalisation",
    "cell_clip": "the ONNX LSTM operator does not clip the cell state (its clip is gate_clip's)",
    "proj_clip": "the ONNX LSTM operator has no projection to clip",
    "zoneout_hidden": "the ONNX LSTM operator cannot mix its new h with the previous one (zoneout)",
    "zoneout_cell": "the ONNX LSTM operator cannot mix its new c with the previous one (zoneout)",
}


def export_problems(spec: LSTMSpec) -> list[str]:
    """Every feature of ``spec`` ONNX's LSTM operator cannot express, each naming its spec field (empty when
    it can export)."""
    if spec.input_size is None:
        return ["input_size: the layer is not built yet; call it once or give input_size"]
    problems = []
    if spec.proj_size > 0:
        problems.append(
            f"proj_size={spec.proj_size}: the ONNX LSTM operator has no projection (torch's proj_size)"
        )
    used = spec.cell_variants
    for field, why in _REFUSED_VARIANTS.items():
        if field in used:
            problems.append(f"{field}={getattr(spec, field)!r}: {why}")
    for argument, value in (
        ("activation", spec.activation),
        ("recurrent_activation", spec.recurrent_activation),
        ("output_activation", spec.cell_output_activation),
    ):
        try:
            onnx_activation(value, argument)
        except OnnxExportError as error:
            problems.append(str(error))
    return problems


def check_exportable(spec: LSTMSpec) -> None:
    """Raise :class:`OnnxExportError` naming every feature of ``spec`` ONNX's LSTM cannot express (the spec
    fields, ``; ``-separated)."""
    problems = export_problems(spec)
    if problems:
        raise OnnxExportError("; ".join(problems))


# -- graph building ----------------------------------------------------------------------------------------


@dataclass
class _Graph:
    """Nodes and initializers under construction, with unique names."""

    onnx: Any
    dtype: np.dtype
    nodes: list
    initializers: list
    counter: int = 0

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array).copy(order="C"), name))
        return name

    def ints(self, hint: str, values: list[int]) -> str:
        return self.const(hint, np.asarray(values, dtype=np.int64))

    def node(
        self, op: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs: Any
    ) -> Any:
        names = [self.name(hint or op.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, names, **attrs))
        return names[0] if outputs == 1 else names


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _time_flip(g: _Graph, tensor: str) -> str:
    """Reverse axis 0 (time) with a Slice of step -1."""
    int_min = np.iinfo(np.int64).min
    return g.node(
        "Slice",
        [
            tensor,
            g.ints("flip_start", [-1]),
            g.ints("flip_end", [int_min]),
            g.ints("flip_axes", [0]),
            g.ints("flip_step", [-1]),
        ],
        "time_flip",
    )


def build_graph(
    layer: ExportableLSTM,
    *,
    opset: int = DEFAULT_OPSET,
    lengths: bool = False,
    initial_states: bool = False,
    return_sequences: bool = True,
    merge_mode: str | None = "concat",
    graph_name: str = "unilstm",
) -> Any:
    """The ``onnx.ModelProto`` computing ``layer`` in inference mode (see :func:`unilstm.export_onnx`)."""
    return build_chain(
        [(layer, return_sequences, merge_mode)],
        opset=opset,
        lengths=lengths,
        initial_states=initial_states,
        graph_name=graph_name,
    )


def build_chain(
    stages: Sequence[tuple[ExportableLSTM, bool, str | None]],
    *,
    opset: int = DEFAULT_OPSET,
    lengths: bool = False,
    initial_states: bool = False,
    graph_name: str = "unilstm",
) -> Any:
    """One ONNX graph for LSTM stacks applied one after the other (a Keras Sequential of LSTM layers):
    ``stages`` are ``(layer, return_sequences, merge_mode)``; every stage but the last must return
    sequences, and all see the same ``lengths``. Outputs: ``output``, then ``h_n``, ``c_n`` for one stage or
    ``h_n_<i>``, ``c_n_<i>`` per stage."""
    onnx = require_onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    if not stages:
        raise OnnxExportError("stages: expected at least one LSTM")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise OnnxExportError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    if initial_states and len(stages) > 1:
        raise OnnxExportError("initial_states: only a single LSTM stack takes initial states")
    first = stages[0][0].spec
    for index, (layer, return_sequences, merge_mode) in enumerate(stages):
        check_exportable(layer.spec)
        if merge_mode not in MERGE_MODES:
            raise OnnxExportError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        if merge_mode != "concat" and not layer.spec.bidirectional:
            raise OnnxExportError(f"merge_mode={merge_mode!r} needs a bidirectional layer")
        if index < len(stages) - 1 and not return_sequences:
            raise OnnxExportError(f"stages[{index}] returns one step; the next LSTM needs sequences")
    dtype = _numpy(stages[0][0].direction_weights()[0][0].w_ih).dtype
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    g = _Graph(onnx, dtype, [], [])
    feature = (
        ["batch", "steps", first.input_size] if first.batch_first else ["steps", "batch", first.input_size]
    )
    inputs = [helper.make_tensor_value_info("input", elem, feature)]
    x = "input"
    if first.batch_first:
        x = g.node("Transpose", [x], "time_major", perm=[1, 0, 2])
    seq_lens = ""
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", tp.INT64, ["batch"]))
        seq_lens = g.node("Cast", ["lengths"], "sequence_lens", to=tp.INT32)
    if initial_states:
        for state in ("h0", "c0"):
            inputs.append(
                helper.make_tensor_value_info(
                    state, elem, [first.num_layers * first.num_directions, "batch", first.hidden_size]
                )
            )
    outputs = []
    out, width, return_sequences, spec = x, 0, True, first
    for stage, (layer, return_sequences, merge_mode) in enumerate(stages):
        spec = layer.spec
        out, h_n, c_n = _add_stack(g, layer, out, seq_lens, lengths, initial_states, f"s{stage}_")
        out = _keras_glue(g, out, spec, return_sequences, merge_mode)
        width = spec.hidden_size * (spec.num_directions if merge_mode == "concat" else 1)
        suffix = "" if len(stages) == 1 else f"_{stage}"
        state_shape = [spec.num_layers * spec.num_directions, "batch", spec.hidden_size]
        g.nodes.append(helper.make_node("Identity", [h_n], [f"h_n{suffix}"]))
        g.nodes.append(helper.make_node("Identity", [c_n], [f"c_n{suffix}"]))
        outputs += [
            helper.make_tensor_value_info(f"h_n{suffix}", elem, state_shape),
            helper.make_tensor_value_info(f"c_n{suffix}", elem, state_shape),
        ]
    batch_major = stages[-1][0].spec.batch_first
    if batch_major and return_sequences:
        out = g.node("Transpose", [out], "batch_major", perm=[1, 0, 2])
    g.nodes.append(helper.make_node("Identity", [out], ["output"]))
    out_shape = (
        (["batch", "steps", width] if batch_major else ["steps", "batch", width])
        if return_sequences
        else ["batch", width]
    )
    outputs.insert(0, helper.make_tensor_value_info("output", elem, out_shape))
    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="unilstm")
    model.ir_version = min(model.ir_version, _max_ir_version(onnx, opset))
    onnx.checker.check_model(model)
    return model


def _add_stack(
    g: _Graph, layer: ExportableLSTM, x: str, seq_lens: str, lengths: bool, initial_states: bool, tag: str
) -> tuple[str, str, str]:
    """The LSTM nodes of one stack on time-major ``x``: (output (T, B, D*H) in processing order, h_n, c_n)."""
    spec = layer.spec
    weights = layer.direction_weights()
    hidden, directions = spec.hidden_size, spec.num_directions
    swap = spec.go_backwards  # every direction runs the other way round in original time
    f_act = onnx_activation(spec.recurrent_activation, "recurrent_activation")
    g_act = onnx_activation(spec.activation, "activation")
    h_act = onnx_activation(spec.cell_output_activation, "output_activation")
    acts = [f_act, g_act, h_act] * directions
    attrs: dict[str, Any] = {"hidden_size": hidden, "activations": [a[0] for a in acts]}
    alphas = [a[1] for a in acts if a[1] is not None]
    betas = [a[2] for a in acts if a[2] is not None]
    if alphas:
        attrs["activation_alpha"] = [float(a) for a in alphas]
    if betas:
        attrs["activation_beta"] = [float(b) for b in betas]
    if spec.gate_clip is not None:
        attrs["clip"] = float(spec.gate_clip)
    if spec.coupled_gates:
        attrs["input_forget"] = 1
    if spec.bidirectional:
        attrs["direction"] = "bidirectional"
    else:
        attrs["direction"] = "reverse" if swap else "forward"
    # ONNX slot k (0 = forward-running, 1 = reverse-running) holds spec direction slot_dirs[k]
    slot_dirs = [1, 0] if (swap and spec.bidirectional) else list(range(directions))
    h_parts, c_parts = [], []
    for index, layer_weights in enumerate(weights):
        name = f"{tag}l{index}"
        ordered = [layer_weights[d] for d in slot_dirs]
        w = np.stack([to_onnx_gates(_numpy(d.w_ih), axis=0) for d in ordered])
        r = np.stack([to_onnx_gates(_numpy(d.w_hh), axis=0) for d in ordered])
        node_inputs = [x, g.const(f"W_{name}", w), g.const(f"R_{name}", r)]
        if spec.bias or spec.forget_bias != 0.0:
            b = np.stack([_onnx_bias(d, spec, g.dtype) for d in ordered])
            node_inputs.append(g.const(f"B_{name}", b))
        else:
            node_inputs.append("")
        node_inputs.append(seq_lens)
        if initial_states:
            start, stop = index * directions, (index + 1) * directions
            for state in ("h0", "c0"):
                part = g.node(
                    "Slice",
                    [state, g.ints("start", [start]), g.ints("stop", [stop]), g.ints("axes", [0])],
                    f"{state}_{name}",
                )
                if slot_dirs != list(range(directions)):
                    part = g.node(
                        "Gather", [part, g.ints("slots", slot_dirs)], f"{state}_slots_{name}", axis=0
                    )
                node_inputs.append(part)
        if spec.peepholes:
            node_inputs += [""] * (7 - len(node_inputs))  # P is input 7, after initial_h and initial_c
            p = np.stack([to_onnx_peepholes(_numpy(d.peephole)) for d in ordered])
            node_inputs.append(g.const(f"P_{name}", p))
        while node_inputs and node_inputs[-1] == "":
            node_inputs.pop()
        y, y_h, y_c = g.node("LSTM", node_inputs, f"lstm_{name}", outputs=3, **attrs)
        raw_h = y_h
        if initial_states and lengths:
            # onnxruntime returns zeros for a sequence of length 0; the engine returns its initial state
            empty = g.node(
                "Unsqueeze",
                [
                    g.node("Equal", ["lengths", g.const("zero_len", np.asarray(0, np.int64))], "empty"),
                    g.ints("ax", [0, 2]),
                ],
                "empty_1b1",
            )
            y_h = g.node("Where", [empty, node_inputs[5], y_h], f"h_or_h0_{name}")
            y_c = g.node("Where", [empty, node_inputs[6], y_c], f"c_or_c0_{name}")
        if slot_dirs != list(range(directions)):  # back to spec direction order
            back = g.ints("directions", slot_dirs)  # [1, 0] is its own inverse
            y = g.node("Gather", [y, back], f"y_dirs_{name}", axis=1)
            y_h = g.node("Gather", [y_h, back], f"h_dirs_{name}", axis=0)
            y_c = g.node("Gather", [y_c, back], f"c_dirs_{name}", axis=0)
            raw_h = g.node("Gather", [raw_h, back], f"raw_h_dirs_{name}", axis=0)
        h_parts.append(y_h)
        c_parts.append(y_c)
        if index == spec.num_layers - 1 and lengths and spec.masked_output == "previous":
            y = _previous_output_fix(g, y, raw_h, seq_lens_source="lengths", swap=swap, directions=directions)
        # (T, D, B, H) -> (T, B, D*H)
        y = g.node("Transpose", [y], f"y_t_{name}", perm=[0, 2, 1, 3])
        x = g.node("Reshape", [y, g.ints("shape", [0, 0, -1])], f"out_{name}")
    h_n = h_parts[0] if len(h_parts) == 1 else g.node("Concat", h_parts, "h_n_cat", axis=0)
    c_n = c_parts[0] if len(c_parts) == 1 else g.node("Concat", c_parts, "c_n_cat", axis=0)
    if swap:
        x = _time_flip(g, x)  # back to processing order
    return x, h_n, c_n


def _onnx_bias(weights: Any, spec: LSTMSpec, dtype: np.dtype) -> np.ndarray:
    """ONNX's ``B`` of one direction, [Wb, Rb] (8H) in ONNX gate order, with ``forget_bias`` added to the
    forget block of Wb (the engine adds it to z_f at every step: the same sum); zeros where the layer has no
    bias."""
    gates = 4 * spec.hidden_size
    b_ih = _numpy(weights.b_ih).copy() if weights.b_ih is not None else np.zeros(gates, dtype)
    b_hh = _numpy(weights.b_hh) if weights.b_hh is not None else np.zeros(gates, dtype)
    if spec.forget_bias != 0.0:
        hidden = spec.hidden_size
        b_ih[hidden : 2 * hidden] += np.asarray(spec.forget_bias, dtype=b_ih.dtype)  # torch's f block
    return np.concatenate([to_onnx_gates(b_ih, axis=0), to_onnx_gates(b_hh, axis=0)])


def _keras_glue(g: _Graph, out: str, spec: LSTMSpec, return_sequences: bool, merge_mode: str | None) -> str:
    """Keras's last-output selection and Bidirectional merge on a time-major stack output."""
    hidden = spec.hidden_size
    if not return_sequences:
        # Keras's last output: each direction's output at the end of its own processing order
        def at(step: int, hint: str) -> str:
            return g.node("Gather", [out, g.const("step", np.asarray(step, dtype=np.int64))], hint, axis=0)

        if not spec.bidirectional:
            out = at(-1, "last_output")
        else:
            first, last = (0, -1) if not spec.go_backwards else (-1, 0)
            forward = g.node(
                "Slice",
                [at(last, "fwd_step"), g.ints("s", [0]), g.ints("e", [hidden]), g.ints("a", [-1])],
                "fwd",
            )
            backward = g.node(
                "Slice",
                [at(first, "bwd_step"), g.ints("s", [hidden]), g.ints("e", [2 * hidden]), g.ints("a", [-1])],
                "bwd",
            )
            out = g.node("Concat", [forward, backward], "last_output", axis=-1)
    if merge_mode != "concat":
        forward, backward = g.node(
            "Split", [out, g.ints("halves", [hidden, hidden])], "halves", outputs=2, axis=-1
        )
        if merge_mode == "sum":
            out = g.node("Add", [forward, backward], "merge_sum")
        elif merge_mode == "mul":
            out = g.node("Mul", [forward, backward], "merge_mul")
        else:
            total = g.node("Add", [forward, backward], "merge_add")
            out = g.node("Mul", [total, g.const("half", np.asarray(0.5, dtype=g.dtype))], "merge_ave")
    return out


def _max_ir_version(onnx: Any, opset: int) -> int:
    """The IR version that goes with ``opset`` (so that older runtimes load the file)."""
    table = getattr(onnx.helper, "VERSION_TABLE", [])
    versions = [row[1] for row in table if len(row) > 2 and row[2] == opset]
    return min(versions) if versions else onnx.IR_VERSION


def _previous_output_fix(
    g: _Graph, y: str, y_h: str, *, seq_lens_source: str, swap: bool, directions: int
) -> str:
    """Keras's default masking: past a sequence's length the forward-running direction outputs its last valid
    output (= its final h) instead of ONNX's zeros. y: (T, D, B, H) in spec order, y_h (D, B, H)."""
    steps = g.node(
        "Gather", [g.node("Shape", [y], "y_shape"), g.const("zero", np.asarray(0, dtype=np.int64))], "steps"
    )
    t = g.node(
        "Range",
        [g.const("r0", np.asarray(0, dtype=np.int64)), steps, g.const("r1", np.asarray(1, dtype=np.int64))],
        "time_index",
    )
    valid = g.node(
        "Less",
        [
            g.node("Unsqueeze", [t, g.ints("ax", [1])], "t_col"),
            g.node("Unsqueeze", [seq_lens_source, g.ints("ax", [0])], "len_row"),
        ],
        "valid",
    )
    valid = g.node("Unsqueeze", [valid, g.ints("ax", [2])], "valid_thb")  # (T, B, 1)
    parts = []
    for direction in range(directions):
        part = g.node(
            "Squeeze",
            [
                g.node(
                    "Slice",
                    [y, g.ints("s", [direction]), g.ints("e", [direction + 1]), g.ints("a", [1])],
                    "y_dir",
                ),
                g.ints("ax", [1]),
            ],
            "y_dir_sq",
        )
        runs_forward = (direction == 0) != swap
        if runs_forward:
            final = g.node(
                "Gather", [y_h, g.const("d", np.asarray(direction, dtype=np.int64))], "h_dir", axis=0
            )
            part = g.node("Where", [valid, part, final], "previous_output")
        parts.append(g.node("Unsqueeze", [part, g.ints("ax", [1])], "y_dir_back"))
    return parts[0] if len(parts) == 1 else g.node("Concat", parts, "y_previous", axis=1)


# -- public API --------------------------------------------------------------------------------------------


def write_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Serialize an ``onnx.ModelProto`` to ``path`` atomically (temporary file in the same folder, rename)."""
    return atomic_write_bytes(path, model.SerializeToString())


@overload
def run_onnx(
    path_or_model: str | os.PathLike[str] | bytes | Any,
    input: np.ndarray | torch.Tensor,
    *,
    lengths: np.ndarray | torch.Tensor | None = None,
    state: tuple[Any, Any] | None = None,
    all_outputs: Literal[False] = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@overload
def run_onnx(
    path_or_model: str | os.PathLike[str] | bytes | Any,
    input: np.ndarray | torch.Tensor,
    *,
    lengths: np.ndarray | torch.Tensor | None = None,
    state: tuple[Any, Any] | None = None,
    all_outputs: Literal[True],
) -> dict[str, np.ndarray]: ...


def run_onnx(
    path_or_model: str | os.PathLike[str] | bytes | Any,
    input: np.ndarray | torch.Tensor,
    *,
    lengths: np.ndarray | torch.Tensor | None = None,
    state: tuple[Any, Any] | None = None,
    all_outputs: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | dict[str, np.ndarray]:
    """Run an exported model with onnxruntime: returns (output, h_n, c_n) as numpy arrays, or with
    ``all_outputs`` a dict of every graph output (``h_n_<i>``, ``c_n_<i>`` of a chain)."""
    ort = require_onnxruntime()
    if not isinstance(path_or_model, (str, os.PathLike, bytes)):
        path_or_model = path_or_model.SerializeToString()
    source = path_or_model if isinstance(path_or_model, bytes) else os.fspath(path_or_model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed: dict[str, np.ndarray] = {"input": _as_numpy(input)}
    if "lengths" in names:
        if lengths is None:
            raise ValueError("lengths: this model has a 'lengths' input; give lengths (B,) int64")
        feed["lengths"] = _as_numpy(lengths).astype(np.int64)
    if "h0" in names:
        if state is None:
            raise ValueError("state: this model has 'h0' and 'c0' inputs; give state=(h0, c0)")
        feed["h0"], feed["c0"] = _as_numpy(state[0]), _as_numpy(state[1])
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, feed), strict=True))
    if all_outputs:
        return values
    return values["output"], values["h_n"], values["c_n"]


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
