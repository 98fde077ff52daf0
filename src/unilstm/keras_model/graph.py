"""A serialized Keras model (Sequential or functional, of any Keras generation) as a graph of calls.

Keras writes three shapes of model config, all read here into one :class:`Graph`:

- Keras 3: ``{"class_name": "Functional", "config": {"layers": [...], "input_layers", "output_layers"}}``
  where each layer has ``inbound_nodes`` ``[{"args": [...], "kwargs": {...}}]`` and a tensor is
  ``{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}``; keyword
  arguments may hold tensors (``mask=``, ``initial_state=``). Keras 3 also records operations
  (``keras.ops.not_equal`` making an Embedding's mask) as entries of their own.
- tf-keras 2.x and Keras 2.0-2.2: ``inbound_nodes`` ``[[[layer, node, index, kwargs], ...]]``, the tensors
  of a call flattened (an LSTM called with ``initial_state=[h, c]`` lists ``x, h, c``). In tf-keras a model
  nested with its own Input counts its calls from 1, not 0.
- Sequential: a chain; Keras 2.0-2.2 write its config as the list of layers itself, with
  ``batch_input_shape`` on the first layer; later versions a dict with ``layers`` (Keras 3 starting with
  an ``InputLayer``).

Only plain data is handled here: which layer is called on which tensors. What a layer computes is
:mod:`.base` and the ``layers_*`` modules; running the graph is :mod:`.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..formats.keras_files.model_store import (
    MAX_NESTING,
    is_model_entry,
    is_operation_entry,
    layer_name,
    model_layer_entries,
)
from .base import KerasModelError, Shape


@dataclass(frozen=True)
class Ref:
    """A tensor of the graph: output ``tensor`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int
    tensor: int


@dataclass
class Call:
    """One call of a layer: positional arguments and keyword arguments, nested lists/dicts whose leaves are
    :class:`Ref` s or constants. ``args[0]`` is what Keras's ``call`` gets as ``inputs``."""

    args: list[Any]
    kwargs: dict[str, Any]


@dataclass
class GraphLayer:
    """One entry of a model's config: a layer, an Input, a nested model or a Keras 3 operation."""

    name: str
    class_name: str
    config: dict[str, Any]
    entry: dict[str, Any] = field(repr=False)
    kind: str  # "input", "layer", "model" or "operation"
    calls: list[Call] = field(default_factory=list)
    #: tf-keras numbers the calls of a model nested with its own Input from 1.
    first_node: int = 0
    #: an Input's shape (batch first) and dtype name.
    input_shape: Shape | None = None
    input_dtype: str = "float32"


@dataclass
class Graph:
    """A model: its layers in config order, its inputs and outputs (``outputs_nested``: the config lists
    its outputs as a list; Keras still returns a lone output as a tensor)."""

    name: str
    class_name: str
    layers: dict[str, GraphLayer]
    inputs: list[Ref]
    outputs: list[Ref]
    outputs_nested: bool
    keras2: bool

    def call_of(self, ref: Ref) -> tuple[GraphLayer, Call]:
        layer = self.layers.get(ref.layer)
        if layer is None:
            raise KerasModelError(
                f"model {self.name!r}: a call refers to layer {ref.layer!r}, which it lacks"
            )
        index = ref.node - layer.first_node
        if not 0 <= index < len(layer.calls):
            raise KerasModelError(
                f"model {self.name!r}: a call refers to call {ref.node} of layer {ref.layer!r}, which has "
                f"{len(layer.calls)}"
            )
        return layer, layer.calls[index]


def _shape(value: Any, where: str) -> Shape:
    if not isinstance(value, (list, tuple)) or not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in value
    ):
        raise KerasModelError(f"{where}: the input shape {value!r} is not a list of sizes")
    return tuple(value)


def _dtype_name(value: Any) -> str:
    if isinstance(value, dict):  # Keras 3 DTypePolicy
        inner = value.get("config")
        value = inner.get("name") if isinstance(inner, dict) else value.get("class_name")
    return value if isinstance(value, str) else "float32"


def _ref(value: Any, where: str) -> Ref:
    if (
        isinstance(value, (list, tuple))
        and len(value) >= 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:3])
    ):
        return Ref(value[0], int(value[1]), int(value[2]))
    raise KerasModelError(f"{where}: {value!r} does not name a tensor as [layer, node, index]")


def _keras3_value(value: Any, where: str, depth: int = 0) -> Any:
    """Keras 3's serialized call arguments with every ``__keras_tensor__`` replaced by a :class:`Ref`."""
    if depth > 16:
        raise KerasModelError(f"{where}: call arguments nested too deep")
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            config = value.get("config")
            history = config.get("keras_history") if isinstance(config, dict) else None
            return _ref(history, where)
        return {k: _keras3_value(v, where, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_keras3_value(v, where, depth + 1) for v in value]
    return value


def _calls(entry: Mapping[str, Any], where: str) -> list[Call]:
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise KerasModelError(f"{where}: inbound_nodes is not a list")
    calls = []
    for node in nodes:
        if isinstance(node, dict):  # Keras 3
            args = _keras3_value(node.get("args", []), where)
            kwargs = _keras3_value(node.get("kwargs", {}), where)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise KerasModelError(f"{where}: a call's args/kwargs are not a list/dict")
            calls.append(Call(args, kwargs))
        elif isinstance(node, list):  # Keras 2: the call's tensors, flattened
            refs = [_ref(item, where) for item in node]
            kwargs = {}
            for item in node:
                if len(item) > 3 and isinstance(item[3], dict):
                    kwargs.update(item[3])
            inputs: Any = refs[0] if len(refs) == 1 else refs
            calls.append(Call([inputs], kwargs))
        else:
            raise KerasModelError(f"{where}: a call in inbound_nodes is neither a list nor a dict")
    return calls


def _io_refs(value: Any, where: str) -> tuple[list[Ref], bool]:
    """``input_layers`` / ``output_layers``: ``[name, node, index]`` (one tensor, Keras 3) or a list of
    them."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [_ref(value, where)], False
    if isinstance(value, dict):
        raise KerasModelError(f"{where}: models with named (dict) inputs or outputs are not supported")
    if not isinstance(value, list) or not value:
        raise KerasModelError(f"{where}: expected a list of [layer, node, index], got {value!r}")
    return [_ref(v, where) for v in value], True


def _input_layer(entry: Mapping[str, Any], name: str, where: str) -> GraphLayer:
    config = dict(entry.get("config") or {})
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None and config.get("shape") is not None:
        shape = [None, *config["shape"]]
    layer = GraphLayer(name, "InputLayer", config, dict(entry), "input")
    layer.input_shape = _shape(shape, where)
    layer.input_dtype = _dtype_name(config.get("dtype"))
    if config.get("sparse") or config.get("ragged"):
        raise KerasModelError(f"{where}: sparse and ragged inputs are not supported")
    return layer


def _named_entry(
    entry: Mapping[str, Any], position: int, model: str, layers: Mapping[str, GraphLayer]
) -> tuple[str, str, str]:
    """A layer entry's name, its place for messages and its kind; a name the model already has is refused."""
    entry_name = layer_name(entry)
    where = f"{entry['class_name']} {entry_name!r} (layer {position} of model {model!r})"
    if entry_name in layers:
        raise KerasModelError(f"{where}: two layers of model {model!r} have this name")
    return entry_name, where, _kind(entry)


def _kind(entry: Mapping[str, Any]) -> str:
    if entry.get("class_name") == "InputLayer":
        return "input"
    if is_model_entry(entry):
        return "model"
    return "operation" if is_operation_entry(entry) else "layer"


def parse_model(model: Mapping[str, Any], keras2: bool, where: str = "", depth: int = 0) -> Graph:
    """The :class:`Graph` of a serialized model ``{"class_name": ..., "config": ...}``."""
    if depth > MAX_NESTING:
        raise KerasModelError(f"{where}: models nested more than {MAX_NESTING} deep")
    class_name = str(model.get("class_name"))
    name = layer_name(model)
    where = where or f"{class_name} {name!r}"
    try:
        entries = model_layer_entries(model, where)  # type: ignore[arg-type]
    except ValueError as error:
        raise KerasModelError(str(error)) from None
    if class_name == "Sequential":
        return _sequential(model, name, entries, keras2, where)
    if class_name not in ("Functional", "Model"):
        raise KerasModelError(f"{where}: not a Sequential or functional model")
    config = model.get("config") or {}
    layers: dict[str, GraphLayer] = {}
    for position, entry in enumerate(entries):
        entry_name, entry_where, kind = _named_entry(entry, position, name, layers)
        if kind == "input":
            layers[entry_name] = _input_layer(entry, entry_name, entry_where)
            continue
        layer = GraphLayer(entry_name, entry["class_name"], dict(entry.get("config") or {}), entry, kind)
        layer.calls = _calls(entry, entry_where)
        layers[entry_name] = layer
    inputs, _ = _io_refs(config.get("input_layers"), f"{where}: input_layers")
    outputs, nested = _io_refs(config.get("output_layers"), f"{where}: output_layers")
    graph = Graph(name, class_name, layers, inputs, outputs, nested, keras2)
    _number_nested_calls(graph)
    return graph


def _number_nested_calls(graph: Graph) -> None:
    """tf-keras numbers the calls of a model nested with its own Input from 1: where every reference to a
    nested model's calls is >= 1 and one reaches ``len(calls)``, its numbering starts at 1."""
    used: dict[str, list[int]] = {}
    refs = list(graph.outputs)
    for layer in graph.layers.values():
        for call in layer.calls:
            refs += _refs_in([call.args, call.kwargs])
    for ref in refs:
        used.setdefault(ref.layer, []).append(ref.node)
    for name, nodes in used.items():
        nested = graph.layers.get(name)
        counted_from_one = min(nodes) >= 1 and max(nodes) == len(nested.calls) if nested else False
        if nested is not None and nested.kind == "model" and counted_from_one:
            nested.first_node = 1


def _refs_in(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs_in(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs_in(v)]
    return []


def refs_in(value: Any) -> list[Ref]:
    """Every :class:`Ref` inside nested call arguments, in order."""
    return _refs_in(value)


def _first_input(entry: Mapping[str, Any], depth: int) -> tuple[Any, str]:
    """The input shape and dtype a Sequential's first layer declares (Keras 2's ``batch_input_shape``),
    looking into a model that is the first layer."""
    if depth > MAX_NESTING:
        raise KerasModelError(f"models nested more than {MAX_NESTING} deep")
    config = entry.get("config")
    if is_model_entry(entry):
        layers = config if isinstance(config, list) else (config or {}).get("layers")
        if isinstance(layers, list) and layers and isinstance(layers[0], dict):
            return _first_input(layers[0], depth + 1)
        return None, "float32"
    config = config if isinstance(config, dict) else {}
    shape = config.get("batch_input_shape", config.get("batch_shape"))
    if entry.get("class_name") == "Embedding":
        return shape, "int32"
    return shape, _dtype_name(config.get("dtype")) if config.get("dtype") else "float32"


def _sequential(
    model: Mapping[str, Any], name: str, entries: list[dict[str, Any]], keras2: bool, where: str
) -> Graph:
    layers: dict[str, GraphLayer] = {}
    if not entries:
        raise KerasModelError(f"{where}: a Sequential model without layers")
    config = model.get("config")
    first = entries[0]
    if first.get("class_name") == "InputLayer":
        input_layer = _input_layer(first, layer_name(first), f"InputLayer of {where}")
        entries = entries[1:]
    else:
        shape, dtype = _first_input(first, 0)
        if shape is None and isinstance(config, dict):
            shape = config.get("build_input_shape")
        if shape is None:
            raise KerasModelError(
                f"{where}: the Sequential model was saved unbuilt: no input shape on its first layer "
                "(batch_input_shape) or in its config (build_input_shape)"
            )
        input_layer = GraphLayer(f"{name}_input", "InputLayer", {}, {}, "input")
        input_layer.input_shape = _shape(shape, f"the input of {where}")
        input_layer.input_dtype = dtype
    layers[input_layer.name] = input_layer
    previous = Ref(input_layer.name, 0, 0)
    for position, entry in enumerate(entries):
        entry_name, entry_where, kind = _named_entry(entry, position, name, layers)
        if kind == "input":
            raise KerasModelError(f"{entry_where}: an InputLayer inside a Sequential model")
        layer = GraphLayer(entry_name, entry["class_name"], dict(entry.get("config") or {}), entry, kind)
        layer.calls = [Call([previous], {})]
        layers[entry_name] = layer
        previous = Ref(entry_name, 0, 0)
    return Graph(name, "Sequential", layers, [Ref(input_layer.name, 0, 0)], [previous], False, keras2)
