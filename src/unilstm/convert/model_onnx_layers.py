"""The ONNX graph builder of :mod:`unilstm.convert.model_onnx` and the layers around the LSTMs.

Each ``emit_*`` function lowers one call of one Keras layer (a :class:`~.model_program.Step`) to standard
ONNX operators that compute what the layer computes at inference (``keras_model/layers_*.py``), masks
included: it receives the ONNX names of the call's inputs and of the masks it gets (:class:`Mask`), and
returns the names of its outputs and of the masks they carry. Names: a step's outputs are its program
variables (``dense``, ``lstm_out1``), its intermediate tensors ``<variable>/<op>``, weights are named after
the loaded model's parameters (``dense.kernel``; ``<layer>.W`` where a weight is stored in ONNX's layout).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import activations as acts
from ..keras_model.layers_merge import Concatenate as _ConcatenateLayer
from .file_kinds import ConversionError
from .model_program import INFERENCE_IDENTITY_LAYERS, Step

#: unilstm registry name of an activation function (by identity), for the Dense / Activation / Conv1D
#: lowerings (Keras's ``gelu`` is the exact one, ``hard_swish`` Keras 3's ``hard_silu`` ...).
_ACTIVATION_NAMES = {id(fn): name for name, fn in reversed(list(acts.REGISTRY.items()))}


@dataclass(frozen=True)
class Mask:
    """A Keras mask in the graph: a bool tensor (``(B, T)`` for sequences), and ``gaps``: None when the mask
    is known to be right-padded (True steps first, then False: it can become ONNX sequence lengths), else
    why it can have gaps (a Masking layer's mask ...)."""

    tensor: str
    gaps: str | None


class Graph:
    """ONNX nodes and initializers under construction (``onnx.helper``), with readable unique names."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self.onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.taken: set[str] = set()
        self.constants: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self.at = "graph"  # the variable the current step computes, for intermediate names
        self.where = ""  # the current layer, for messages
        #: element type of tensors that are not float32 (integer ids, bool masks)
        self.types: dict[str, int] = {}
        #: per mask tensor: its sequence lengths (B,) int32, and (T, B, 1) "step t is within the length"
        self.lengths: dict[str, str] = {}
        self.within: dict[str, str] = {}

    # -- names and nodes ------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name = f"{self.at}/{hint}"
        candidate, count = name, 2
        while candidate in self.taken:
            candidate, count = f"{name}_{count}", count + 1
        self.taken.add(candidate)
        return candidate

    def node(self, op: str, inputs: Sequence[str], hint: str | list[str] | None = None, **attrs: Any) -> Any:
        """Append a node; returns its output's name, or a list of names when ``hint`` is a list (one hint
        per output)."""
        hints = hint if isinstance(hint, list) else [hint or op]
        names = [self.fresh(h) for h in hints]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), names, **attrs))
        return names if isinstance(hint, list) else names[0]

    def weight(self, name: str, array: np.ndarray) -> str:
        """A named float32 initializer (a shared layer's weights are stored once)."""
        if name not in self.taken:
            self.taken.add(name)
            data = np.asarray(array, dtype=np.float32).copy(order="C")
            self.initializers.append(self.onnx.numpy_helper.from_array(data, name))
        return name

    def const(self, array: np.ndarray, hint: str | None = None) -> str:
        """A constant initializer ``const/<values>`` or ``const/<hint>`` (equal constants are stored once)."""
        data = np.asarray(array).copy(order="C")
        key = (data.dtype.str, data.shape, data.tobytes())
        if key not in self.constants:
            values = "_".join(str(v) for v in data.ravel()[:4]) if data.size <= 4 else "tensor"
            name = "const/" + (hint or values)
            candidate, count = name, 2
            while candidate in self.taken:
                candidate, count = f"{name}_{count}", count + 1
            self.taken.add(candidate)
            self.initializers.append(self.onnx.numpy_helper.from_array(data, candidate))
            self.constants[key] = candidate
        return self.constants[key]

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def scalar(self, value: float, dtype: Any = np.float32) -> str:
        return self.const(np.asarray(value, dtype=dtype))

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"ONNX export: {self.where}: {message}")

    # -- helpers over ops whose signature changed between opsets ---------------------------------------
    def reduce(
        self, op: str, x: str, axes: Sequence[int], keepdims: bool, hint: str | None = None, **attrs: Any
    ) -> str:
        """ReduceSum / ReduceMean / ReduceMax / ReduceMin over ``axes`` (axes an input from opset 18, and
        for ReduceSum from 13)."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.ints(axes)], hint, keepdims=int(keepdims), **attrs)
        return self.node(op, [x], hint, axes=list(axes), keepdims=int(keepdims), **attrs)

    def any(self, mask: str, axes: Sequence[int], keepdims: bool = False) -> str:
        """``any`` of a bool tensor over ``axes``."""
        as_int = self.node("Cast", [mask], "mask_int", to=self.onnx.TensorProto.INT32)
        return self.node(
            "Cast", [self.reduce("ReduceMax", as_int, axes, keepdims)], "any", to=self.onnx.TensorProto.BOOL
        )

    def all(self, mask: str, axes: Sequence[int], keepdims: bool = False) -> str:
        as_int = self.node("Cast", [mask], "mask_int", to=self.onnx.TensorProto.INT32)
        return self.node(
            "Cast", [self.reduce("ReduceMin", as_int, axes, keepdims)], "all", to=self.onnx.TensorProto.BOOL
        )

    def where_mask(self, mask: str, x: str, keras2: bool) -> str:
        """Zero the masked steps of ``x`` ``(B, T, ...)`` by a ``(B, T)`` mask: Keras 3 selects
        (``where``), Keras 2 multiplies (the two differ for inf / NaN values)."""
        wide = self.node("Unsqueeze", [mask, self.ints([-1])], "mask_wide")
        if keras2:
            return self.node(
                "Mul", [x, self.node("Cast", [wide], "mask_float", to=self.onnx.TensorProto.FLOAT)]
            )
        return self.node("Where", [wide, x, self.scalar(0.0)], "masked")

    def time_flip(self, x: str, axis: int, why: str = "") -> str:
        """Reverse ``axis`` with a Slice of step -1 (``why``: the node's doc string)."""
        int_min = self.const(np.asarray([np.iinfo(np.int64).min]), "before_the_start")
        return self.node(
            "Slice",
            [x, self.ints([-1]), int_min, self.ints([axis]), self.ints([-1])],
            "reversed",
            doc_string=why,
        )


Emitted = tuple[list[str], list[Mask | None]]
Emitter = Callable[[Graph, Step, list[str], list[Mask | None]], Emitted]


def layer_of(step: Step) -> Any:
    """The step's loaded layer (its attributes are the layer class's own, see ``keras_model/layers_*``)."""
    return step.module


def weight_name(step: Step, name: str) -> str:
    return f"{step.attribute}.{name}"


def array_of(value: Any) -> np.ndarray:
    """A parameter or buffer as a numpy array."""
    return value.detach().cpu().numpy()


def _one(step: Step, inputs: list[str], masks: list[Mask | None]) -> tuple[str, Mask | None]:
    return inputs[0], (masks[0] if masks else None)


# -- activations ------------------------------------------------------------------------------------------


def _gelu_tanh(g: Graph, x: str) -> str:
    cube = g.node("Mul", [g.node("Mul", [x, x]), x])
    inner = g.node("Add", [x, g.node("Mul", [cube, g.scalar(0.044715)])])
    tanh = g.node("Tanh", [g.node("Mul", [inner, g.scalar(math.sqrt(2.0 / math.pi))])])
    return g.node("Mul", [g.node("Mul", [x, g.scalar(0.5)]), g.node("Add", [tanh, g.scalar(1.0)])])


def _gelu(g: Graph, x: str) -> str:
    erf = g.node("Erf", [g.node("Div", [x, g.scalar(math.sqrt(2.0))])])
    return g.node("Mul", [g.node("Mul", [x, g.scalar(0.5)]), g.node("Add", [erf, g.scalar(1.0)])])


def _glu(g: Graph, x: str) -> str:
    """a * sigmoid(b) for the two halves a, b of the last axis."""
    size = g.node("Slice", [g.node("Shape", [x]), g.ints([-1]), g.ints([np.iinfo(np.int64).max])], "size")
    half = g.node("Div", [size, g.ints([2])], "half")
    a, b = g.node("Split", [x, g.node("Concat", [half, half], "halves", axis=0)], ["a", "b"], axis=-1)
    return g.node("Mul", [a, g.node("Sigmoid", [b])])


def _sparse_plus(g: Graph, x: str) -> str:
    square = g.node(
        "Div",
        [
            g.node("Mul", [g.node("Add", [x, g.scalar(1.0)]), g.node("Add", [x, g.scalar(1.0)])]),
            g.scalar(4.0),
        ],
    )
    high = g.node("Where", [g.node("GreaterOrEqual", [x, g.scalar(1.0)]), x, square])
    return g.node("Where", [g.node("LessOrEqual", [x, g.scalar(-1.0)]), g.scalar(0.0), high])


#: registry name -> ONNX ops computing it (as the torch function in :mod:`unilstm.activations` does).
ACTIVATIONS: dict[str, Callable[[Graph, str], str]] = {
    "linear": lambda g, x: x,
    "tanh": lambda g, x: g.node("Tanh", [x]),
    "sigmoid": lambda g, x: g.node("Sigmoid", [x]),
    "relu": lambda g, x: g.node("Relu", [x]),
    "hard_sigmoid": lambda g, x: g.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5),
    "hard_sigmoid_keras2": lambda g, x: g.node("HardSigmoid", [x], alpha=0.2, beta=0.5),
    "hard_silu": lambda g, x: g.node("Mul", [x, g.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)]),
    "elu": lambda g, x: g.node("Elu", [x], alpha=1.0),
    "selu": lambda g, x: g.node("Selu", [x]),
    "celu": lambda g, x: g.node("Celu", [x], alpha=1.0),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "sparse_sigmoid": lambda g, x: g.node(
        "Clip",
        [g.node("Mul", [g.node("Add", [x, g.scalar(1.0)]), g.scalar(0.5)]), g.scalar(0.0), g.scalar(1.0)],
    ),
    "glu": _glu,
    "silu": lambda g, x: g.node("Mul", [x, g.node("Sigmoid", [x])]),
    "softplus": lambda g, x: g.node("Softplus", [x]),
    "softsign": lambda g, x: g.node("Softsign", [x]),
    "softmax": lambda g, x: g.node("Softmax", [x], axis=-1),
    "log_softmax": lambda g, x: g.node("LogSoftmax", [x], axis=-1),
    "exponential": lambda g, x: g.node("Exp", [x]),
    "relu6": lambda g, x: g.node("Clip", [x, g.scalar(0.0), g.scalar(6.0)]),
    "leaky_relu": lambda g, x: g.node("LeakyRelu", [x], alpha=0.2),
    "mish": lambda g, x: g.node("Mul", [x, g.node("Tanh", [g.node("Softplus", [x])])]),
    "squareplus": lambda g, x: g.node(
        "Div",
        [
            g.node("Add", [x, g.node("Sqrt", [g.node("Add", [g.node("Mul", [x, x]), g.scalar(4.0)])])]),
            g.scalar(2.0),
        ],
    ),
    "sparse_plus": _sparse_plus,
    "tanh_shrink": lambda g, x: g.node("Sub", [x, g.node("Tanh", [x])]),
    "soft_shrink": lambda g, x: g.node("Shrink", [x], lambd=0.5, bias=0.5),
    "hard_shrink": lambda g, x: g.node("Shrink", [x], lambd=0.5, bias=0.0),
    "hard_tanh": lambda g, x: g.node("Clip", [x, g.scalar(-1.0), g.scalar(1.0)]),
    "log_sigmoid": lambda g, x: g.node("Neg", [g.node("Softplus", [g.node("Neg", [x])])]),
}


def activation(g: Graph, function: Any, x: str) -> str:
    """``function(x)`` (a resolved Keras activation) in ONNX ops; one the ops cannot express (sparsemax, a
    custom function) is refused by name."""
    name = _ACTIVATION_NAMES.get(id(function))
    if name not in ACTIVATIONS:
        label = name or getattr(function, "__name__", repr(function))
        raise g.error(
            f"activation {label!r} has no ONNX lowering (exportable: {', '.join(sorted(ACTIVATIONS))})"
        )
    assert name is not None
    return ACTIVATIONS[name](g, x)


# -- Embedding, Masking, Dense, Activation, identities ------------------------------------------------------


def emit_embedding(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Gather of the ids' rows (float ids truncated to int32 first, as Keras casts them; a negative id counts
    from the end, as Keras 3's ``take``). ``mask_zero``: the mask ``ids != 0``, assumed right-padded."""
    layer: Any = step.module
    ids, _ = _one(step, inputs, masks)
    tp = g.onnx.TensorProto
    index = ids
    if g.types.get(ids) not in (tp.INT32, tp.INT64):
        index = g.node("Cast", [ids], "ids", to=tp.INT32)
    out = g.node(
        "Gather", [g.weight(weight_name(step, "embeddings"), array_of(layer.embeddings)), index], axis=0
    )
    if not layer.mask_zero:
        return [out], [None]
    zero = g.scalar(0, _numpy_type(g, ids))
    mask = g.node("Not", [g.node("Equal", [ids, zero])], "mask")
    g.types[mask] = tp.BOOL
    return [out], [Mask(mask, None)]


def _numpy_type(g: Graph, tensor: str) -> Any:
    tp = g.onnx.TensorProto
    return {tp.INT32: np.int32, tp.INT64: np.int64, tp.BOOL: np.bool_}.get(
        g.types.get(tensor, tp.FLOAT), np.float32
    )


def emit_masking(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """mask = any(x != mask_value) over the features; x zeroed where the mask is False."""
    x, _ = _one(step, inputs, masks)
    value = g.scalar(layer_of(step).mask_value)
    differs = g.node("Not", [g.node("Equal", [x, value])], "differs")
    keep = g.any(differs, [-1])
    g.types[keep] = g.onnx.TensorProto.BOOL
    why = (
        f"the mask of {step.class_name} {step.layer!r} marks steps whose features all equal mask_value, "
        "anywhere"
    )
    return [g.where_mask(keep, x, step.keras2)], [Mask(keep, why)]


def emit_dense(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """activation(x @ kernel + bias) on the last axis; the mask passes on."""
    layer: Any = step.module
    x, mask = _one(step, inputs, masks)
    y = g.node("MatMul", [x, g.weight(weight_name(step, "kernel"), array_of(layer.kernel))])
    if layer.bias is not None:
        y = g.node("Add", [y, g.weight(weight_name(step, "bias"), array_of(layer.bias))])
    return [activation(g, layer.activation, y)], [mask]


def emit_activation(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    x, mask = _one(step, inputs, masks)
    return [activation(g, layer_of(step).activation, x)], [mask]


def emit_identity(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Dropout, noise and ActivityRegularization: the identity at inference; the mask passes on."""
    x, mask = _one(step, inputs, masks)
    return [x], [mask]


# -- normalization ----------------------------------------------------------------------------------------


def _normalize(
    g: Graph, x: str, mean: str, variance: str, gamma: str | None, beta: str | None, epsilon: float
) -> str:
    """tf.nn.batch_normalization's order: inv = 1 / sqrt(variance + epsilon) * gamma; x * inv + (beta -
    mean * inv)."""
    inv = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [variance, g.scalar(epsilon)])])], "inv")
    if gamma is not None:
        inv = g.node("Mul", [inv, gamma], "inv_gamma")
    shifted = g.node("Mul", [mean, inv])
    shift = g.node("Neg", [shifted]) if beta is None else g.node("Sub", [beta, shifted], "shift")
    return g.node("Add", [g.node("Mul", [x, inv]), shift])


def emit_batch_normalization(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Inference: the moving statistics; y = (x - mean) / sqrt(variance + epsilon) * gamma + beta along
    ``axis``. The mask passes on."""
    layer: Any = step.module
    x, mask = _one(step, inputs, masks)
    rank = len(layer_of(step).spec.input_shape)
    view = [1] * rank
    view[layer.axis] = layer.channels
    view = view[1:]  # broadcast from the right, without the batch axis

    def named(key: str, value: Any) -> str:
        return g.weight(weight_name(step, key), array_of(value).reshape(view))

    gamma = named("gamma", layer.gamma) if layer.gamma is not None else None
    beta = named("beta", layer.beta) if layer.beta is not None else None
    mean, variance = named("moving_mean", layer.moving_mean), named("moving_variance", layer.moving_variance)
    return [_normalize(g, x, mean, variance, gamma, beta, layer.epsilon)], [mask]


def emit_layer_normalization(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Mean and biased variance over ``axis`` per sample; as BatchNormalization's formula with them (Keras 3
    ``rms_scaling``: x / sqrt(variance + epsilon) * gamma). The mask passes on."""
    layer: Any = step.module
    x, mask = _one(step, inputs, masks)
    rank = len(layer.spec.input_shape)
    view = [layer.param_shape[layer.axes.index(i)] if i in layer.axes else 1 for i in range(1, rank)]
    gamma = (
        g.weight(weight_name(step, "gamma"), array_of(layer.gamma).reshape(view))
        if layer.gamma is not None
        else None
    )
    beta = (
        g.weight(weight_name(step, "beta"), array_of(layer.beta).reshape(view))
        if layer.beta is not None
        else None
    )
    mean = g.reduce("ReduceMean", x, layer.axes, True, "mean")
    diff = g.node("Sub", [x, mean], "diff")
    variance = g.reduce("ReduceMean", g.node("Mul", [diff, diff]), layer.axes, True, "variance")
    if layer.rms_scaling:
        out = g.node(
            "Mul",
            [x, g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [variance, g.scalar(layer.epsilon)])])])],
        )
        return [out if gamma is None else g.node("Mul", [out, gamma])], [mask]
    return [_normalize(g, x, mean, variance, gamma, beta, layer.epsilon)], [mask]


# -- shapes -----------------------------------------------------------------------------------------------


def emit_flatten(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    x = inputs[0]
    rank = len(layer_of(step).spec.input_shape)
    if layer_of(step).channels_first and rank > 2:
        x = g.node("Transpose", [x], perm=[0, *range(2, rank), 1])
    return [g.node("Reshape", [x, g.ints([0, -1])])], [None]


def emit_reshape(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    return [g.node("Reshape", [inputs[0], g.ints([0, *layer_of(step).target])])], [None]


def emit_permute(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    return [g.node("Transpose", [inputs[0]], perm=[0, *layer_of(step).dims])], [None]


def emit_repeat_vector(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    row = g.node("Unsqueeze", [inputs[0], g.ints([1])])
    return [g.node("Tile", [row, g.ints([1, layer_of(step).n, 1])])], [None]


# -- merges -----------------------------------------------------------------------------------------------


def _joined_gaps(masks: Sequence[Mask | None]) -> str | None:
    """A mask combined elementwise (OR / AND) from right-padded masks is right-padded; else the first
    reason why one of them can have gaps."""
    reasons = [m.gaps for m in masks if m is not None and m.gaps is not None]
    return reasons[0] if reasons else None


def _merge_output_mask(g: Graph, step: Step, masks: list[Mask | None]) -> Mask | None:
    """Keras 3: the OR of the masks when every input has one (else None); Keras 2: the AND of those
    present."""
    present = [m for m in masks if m is not None]
    if not present or (not step.keras2 and len(present) < len(masks)):
        return None
    op = "And" if step.keras2 else "Or"
    out = present[0].tensor
    for m in present[1:]:
        out = g.node(op, [out, m.tensor], "mask")
    g.types[out] = g.onnx.TensorProto.BOOL
    return Mask(out, _joined_gaps(present))


def _lifted(g: Graph, step: Step, inputs: list[str]) -> tuple[list[str], list[bool]]:
    """Inputs of lower rank get size-1 axes at axis 1 (as Keras); which of them kept their rank."""
    ranks = [len(s) for s in layer_of(step).spec.input_shapes]
    top = max(ranks)
    out, kept = [], []
    for x, rank in zip(inputs, ranks, strict=True):
        if rank < top:
            x = g.node("Unsqueeze", [x, g.ints(list(range(1, 1 + top - rank)))], "lifted")
        out.append(x)
        kept.append(rank == top)
    return out, kept


def _wide(g: Graph, mask: Mask, x: str) -> str:
    """A (B, T) mask broadcast to x's shape (B, T, F)."""
    return g.node(
        "Expand", [g.node("Unsqueeze", [mask.tensor, g.ints([-1])]), g.node("Shape", [x])], "mask_wide"
    )


def emit_merge(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Add, Subtract, Average, Multiply, Maximum, Minimum (broadcast as Keras); Keras 3's Multiply / Maximum /
    Minimum skip masked elements as ``keras_model/layers_merge.py`` describes."""
    if step.kwargs:
        raise g.error(f"unsupported call arguments: {', '.join(sorted(step.kwargs))}")
    tensors, kept = _lifted(g, step, inputs)
    seen = [m if k and not step.keras2 else None for m, k in zip(masks, kept, strict=True)]
    kind = step.class_name
    set_mask: Mask | None = None
    if kind in ("Add", "Subtract", "Average"):
        out = tensors[0]
        for x in tensors[1:]:
            out = g.node("Sub" if kind == "Subtract" else "Add", [out, x])
        if kind == "Average":
            out = g.node("Div", [out, g.scalar(float(len(tensors)))])
    elif kind == "Multiply":
        out, set_mask = _multiply(g, tensors, seen)
    else:
        out, set_mask = _or_masked(g, "Max" if kind == "Maximum" else "Min", tensors, seen)
    return [out], [set_mask if set_mask is not None else _merge_output_mask(g, step, masks)]


def _multiply(g: Graph, tensors: list[str], masks: list[Mask | None]) -> tuple[str, Mask | None]:
    all_masked = all(m is not None for m in masks)
    out: str | None = None
    wide_or: str | None = None
    for x, m in zip(tensors, masks, strict=True):
        if m is not None:
            wide = _wide(g, m, x)
            x = g.node("Where", [wide, x, g.scalar(1.0)], "masked_as_one")
            if all_masked:
                wide_or = wide if wide_or is None else g.node("Or", [wide_or, wide])
        out = x if out is None else g.node("Mul", [out, x])
    assert out is not None
    if wide_or is None:
        return out, None
    out = g.node("Where", [wide_or, out, g.scalar(0.0)])
    mask = g.any(wide_or, [-1])
    return out, Mask(mask, _joined_gaps(masks))


def _or_masked(g: Graph, op: str, tensors: list[str], masks: list[Mask | None]) -> tuple[str, Mask | None]:
    output: str | None = None
    output_mask: str | None = None
    for x, m in zip(tensors, masks, strict=True):
        mask = _wide(g, m, x) if m is not None else None
        if output is None:
            output, output_mask = x, mask
            continue
        if mask is not None:
            x = g.node("Where", [mask, x, output])
        if output_mask is not None:
            output = g.node("Where", [output_mask, output, x])
        output_mask = (
            g.node("Or", [output_mask, mask]) if mask is not None and output_mask is not None else None
        )
        output = g.node(op, [output, x])
    assert output is not None
    if output_mask is None:
        return output, None
    return output, Mask(g.any(output_mask, [-1]), _joined_gaps(masks))


def emit_concatenate(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Concat along ``axis``; the output mask: each input's mask (all True without one) widened to its
    shape, concatenated, reduced over the last axis with any (Keras 3) or all (Keras 2)."""
    layer: Any = step.module
    assert isinstance(layer, _ConcatenateLayer)
    rank = len(layer.spec.input_shapes[0])
    axis = layer._axis(rank)
    out = g.node("Concat", inputs, axis=axis)
    if all(m is None for m in masks):
        return [out], [None]
    pieces = []
    for x, m in zip(inputs, masks, strict=True):
        if m is None:
            pieces.append(g.node("Expand", [g.const(np.asarray(True)), g.node("Shape", [x])], "ones"))
        elif step.keras2:
            pieces.append(g.node("Unsqueeze", [m.tensor, g.ints([-1])], "mask_wide"))
        else:
            pieces.append(_wide(g, m, x))
    joined = g.node("Concat", pieces, "masks", axis=axis)
    mask = g.all(joined, [-1]) if step.keras2 else g.any(joined, [-1])
    gaps = _joined_gaps(masks)
    if axis != rank - 1:
        gaps = f"the mask of {step.class_name} {step.layer!r} joins masks along the time axis"
    return [out], [Mask(mask, gaps)]


def emit_dot(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Keras's batch_dot as an Einsum (inputs L2-normalised first with ``normalize``); no mask."""
    layer: Any = step.module
    shapes = layer.spec.input_shapes
    ranks = [len(shapes[0]), len(shapes[1])]
    a1, a2 = layer._resolved(ranks)
    x1, x2 = inputs
    if layer.normalize:
        x1, x2 = _l2_normalized(g, x1, a1, step.keras2), _l2_normalized(g, x2, a2, step.keras2)
    letters = "abcdefghijklmnopqrstuvwxyz"
    left = list(letters[: ranks[0]])
    right = [left[0], *letters[ranks[0] : ranks[0] + ranks[1] - 1]]
    right[a2] = left[a1]
    out_axes = [c for i, c in enumerate(left) if i != a1] + [
        c for i, c in enumerate(right) if i not in (0, a2)
    ]
    out = g.node("Einsum", [x1, x2], equation=f"{''.join(left)},{''.join(right)}->{''.join(out_axes)}")
    if len(out_axes) == 1:
        out = g.node("Unsqueeze", [out, g.ints([1])])
    return [out], [None]


def _l2_normalized(g: Graph, x: str, axis: int, keras2: bool) -> str:
    square_sum = g.reduce("ReduceSum", g.node("Mul", [x, x]), [axis], True, "square_sum")
    if keras2:
        inv = g.node("Reciprocal", [g.node("Sqrt", [g.node("Max", [square_sum, g.scalar(1e-12)])])])
    else:
        inv = g.node("Min", [g.node("Reciprocal", [g.node("Sqrt", [square_sum])]), g.scalar(1.0 / 1e-7)])
    return g.node("Mul", [x, inv], "normalized")


# -- pooling and convolution ------------------------------------------------------------------------------


def _steps_axis(layer: Any) -> int:
    return 1 if layer.data_format == "channels_last" else 2


def emit_global_average_pooling(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """The mean over the steps; with a mask the mean over the present steps (sum of the kept steps / their
    count: NaN for a fully masked row, as Keras). No output mask."""
    layer: Any = step.module
    x, mask = _one(step, inputs, masks)
    axis = _steps_axis(layer)
    if mask is None:
        return [g.reduce("ReduceMean", x, [axis], layer.keepdims)], [None]
    present = g.node("Unsqueeze", [mask.tensor, g.ints([2 if axis == 1 else 1])], "present")
    weights = g.node("Cast", [present], "weights", to=g.onnx.TensorProto.FLOAT)
    if step.keras2:
        kept = g.node("Mul", [x, weights], "kept")
    else:
        kept = g.node("Where", [present, x, g.scalar(0.0)], "kept")
    total = g.reduce("ReduceSum", kept, [axis], layer.keepdims, "total")
    return [g.node("Div", [total, g.reduce("ReduceSum", weights, [axis], layer.keepdims, "count")])], [None]


def emit_global_max_pooling(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """The maximum over the steps, masked ones included (as both Kerases)."""
    return [g.reduce("ReduceMax", inputs[0], [_steps_axis(step.module)], layer_of(step).keepdims)], [None]


def _channels_first(g: Graph, x: str, data_format: str) -> str:
    return (
        x if data_format == "channels_first" else g.node("Transpose", [x], "channels_first", perm=[0, 2, 1])
    )


def _back(g: Graph, y: str, data_format: str) -> str:
    return y if data_format == "channels_first" else g.node("Transpose", [y], "channels_last", perm=[0, 2, 1])


def emit_pooling(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """MaxPool / AveragePool on (B, C, T); TensorFlow's "same" padding is ONNX's SAME_UPPER (the extra padded
    step on the right), padded steps never the maximum and not counted in the mean. The mask is dropped."""
    layer: Any = step.module
    x = _channels_first(g, inputs[0], layer.data_format)
    attrs: dict[str, Any] = {"kernel_shape": [layer.pool_size], "strides": [layer.strides]}
    if layer.padding == "same":
        attrs["auto_pad"] = "SAME_UPPER"
    op = "MaxPool" if step.class_name == "MaxPooling1D" else "AveragePool"
    return [_back(g, g.node(op, [x], **attrs), layer.data_format)], [None]


def emit_conv1d(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Conv on (B, C, T) with the kernel as ONNX's W (filters, C / groups, k) (``<layer>.W``): padding valid,
    same (pads computed from the steps as TensorFlow does: ONNX's SAME_UPPER) or causal ((k - 1) d zeros on
    the left); then the activation. The mask is dropped."""
    layer: Any = step.module
    x = _channels_first(g, inputs[0], layer.data_format)
    conv_inputs = [x, g.weight(weight_name(step, "W"), array_of(layer.kernel).transpose(2, 1, 0))]
    if layer.bias is not None:
        conv_inputs.append(g.weight(weight_name(step, "bias"), array_of(layer.bias)))
    attrs: dict[str, Any] = {
        "kernel_shape": [layer.kernel_size],
        "strides": [layer.strides],
        "dilations": [layer.dilation_rate],
        "group": layer.groups,
    }
    if layer.padding == "same":
        attrs["auto_pad"] = "SAME_UPPER"
    elif layer.padding == "causal":
        attrs["pads"] = [(layer.kernel_size - 1) * layer.dilation_rate, 0]
    y = g.node("Conv", conv_inputs, **attrs)
    return [activation(g, layer._activation, _back(g, y, layer.data_format))], [None]


# -- attention --------------------------------------------------------------------------------------------


def emit_attention(g: Graph, step: Step, inputs: list[str], masks: list[Mask | None]) -> Emitted:
    """Scores (dot: Q K^T * scale; concat: w * sum tanh(scale (q + k)); additive: sum scale tanh(q + k)),
    minus 1e9 where a value is masked or (causal) later than the query, softmax over the values, W V,
    zeroed at masked queries; the output keeps the query's mask. ``return_attention_scores`` also
    returns W."""
    layer: Any = step.module
    unknown = sorted(set(step.kwargs) - {"return_attention_scores", "use_causal_mask"})
    if unknown:
        raise g.error(f"unsupported call arguments: {', '.join(unknown)}")
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    q_mask = masks[0] if masks else None
    v_mask = masks[1] if len(masks) > 1 else None
    scores = _scores(g, step, query, key)
    allowed = None if v_mask is None else g.node("Unsqueeze", [v_mask.tensor, g.ints([-2])], "value_present")
    if step.kwargs.get("use_causal_mask", False) or layer.causal:
        shape = g.node("Shape", [scores])
        rows = g.node("Gather", [shape, g.const(np.asarray(-2, np.int64))], "rows")
        cols = g.node("Gather", [shape, g.const(np.asarray(-1, np.int64))], "cols")
        zero, one = g.const(np.asarray(0, np.int64)), g.const(np.asarray(1, np.int64))
        i = g.node("Unsqueeze", [g.node("Range", [zero, rows, one], "i"), g.ints([-1])])
        j = g.node("Range", [zero, cols, one], "j")
        causal = g.node("GreaterOrEqual", [i, j], "causal")
        allowed = causal if allowed is None else g.node("And", [allowed, causal], "allowed")
    if allowed is not None:
        # Keras: scores - 1e9 where a value may not be seen (an additive term, exact where allowed)
        scores = g.node(
            "Where",
            [allowed, scores, g.node("Sub", [scores, g.scalar(1.0e9)])],
            "masked_scores",
            doc_string="Keras: scores - 1e9 where a value is masked or later than the query (causal)",
        )
    weights = g.node("Softmax", [scores], "weights", axis=-1)
    out = g.node("MatMul", [weights, value])
    if q_mask is not None:
        out = g.where_mask(q_mask.tensor, out, step.keras2)
    if step.kwargs.get("return_attention_scores", False):
        return [out, weights], [q_mask, None]
    return [out], [q_mask]


def _scores(g: Graph, step: Step, query: str, key: str) -> str:
    layer: Any = step.module
    scale = g.weight(weight_name(step, "scale"), array_of(layer.scale)) if layer.scale is not None else None
    if layer.score_mode == "dot":
        rank = len(
            layer.spec.input_shapes[-1] if len(layer.spec.input_shapes) > 2 else layer.spec.input_shapes[1]
        )
        key_t = g.node("Transpose", [key], "key_t", perm=[*range(rank - 2), rank - 1, rank - 2])
        scores = g.node("MatMul", [query, key_t], "scores")
        return scores if scale is None else g.node("Mul", [scores, scale], "scaled_scores")
    summed = g.node(
        "Add",
        [g.node("Unsqueeze", [query, g.ints([-2])]), g.node("Unsqueeze", [key, g.ints([-3])])],
        "summed",
    )
    if layer.score_mode == "additive":
        activated = g.node("Tanh", [summed])
        if scale is not None:
            activated = g.node("Mul", [scale, activated])
        return g.reduce("ReduceSum", activated, [-1], False, "scores")
    if scale is not None:
        summed = g.node("Mul", [scale, summed])
    weight = g.weight(weight_name(step, "concat_score_weight"), array_of(layer.concat_score_weight))
    return g.node("Mul", [weight, g.reduce("ReduceSum", g.node("Tanh", [summed]), [-1], False)], "scores")


#: Keras class -> lowering, for every layer but the recurrent ones, TimeDistributed and nested models
#: (:mod:`unilstm.convert.model_onnx`).
EMITTERS: dict[str, Emitter] = {
    "Embedding": emit_embedding,
    "Masking": emit_masking,
    "Dense": emit_dense,
    "Activation": emit_activation,
    **{name: emit_identity for name in INFERENCE_IDENTITY_LAYERS},
    "BatchNormalization": emit_batch_normalization,
    "LayerNormalization": emit_layer_normalization,
    "Flatten": emit_flatten,
    "Reshape": emit_reshape,
    "Permute": emit_permute,
    "RepeatVector": emit_repeat_vector,
    "Add": emit_merge,
    "Subtract": emit_merge,
    "Multiply": emit_merge,
    "Average": emit_merge,
    "Maximum": emit_merge,
    "Minimum": emit_merge,
    "Concatenate": emit_concatenate,
    "Dot": emit_dot,
    "GlobalAveragePooling1D": emit_global_average_pooling,
    "GlobalMaxPooling1D": emit_global_max_pooling,
    "MaxPooling1D": emit_pooling,
    "AveragePooling1D": emit_pooling,
    "Conv1D": emit_conv1d,
    "Attention": emit_attention,
    "AdditiveAttention": emit_attention,
}
