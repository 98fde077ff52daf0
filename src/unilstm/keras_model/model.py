"""A whole Keras model as one ``torch.nn.Module``: the :class:`~.graph.Graph` run call by call, masks
carried along as Keras carries them.

Each Keras layer becomes a registered submodule named after it (``model.dense_1``); a nested model becomes a
nested :class:`KerasModel`. Every call of the graph is run in dependency order, computed once when the
model is built: a layer called several times (a shared layer) is one module run several times.

Masks: every tensor carries the mask Keras would attach to it (``_keras_mask``). A call gets the masks of
its input tensors in the structure of its inputs, unless the file recorded an explicit ``mask=`` argument
(Keras 3 does), which wins; the layer returns the masks of its outputs (:mod:`.base`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import REGISTRY, KerasLayer, KerasModelError, LayerSpec, Masks, Shape, Tensors
from .graph import Call, Graph, GraphLayer, Ref, parse_model, refs_in
from .operations import operation

#: Call arguments that carry tensors or the training flag, not options that shape a layer's outputs.
_TENSOR_ARGUMENTS = frozenset({"mask", "training", "initial_state", "constants"})
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _module_name(name: str, taken: set[str]) -> str:
    """A submodule name for a Keras layer name (no dots; not a Module attribute)."""
    base = re.sub(r"[.\s]", "_", name) or "layer"
    candidate, count = base, 1
    while candidate in taken or hasattr(torch.nn.Module, candidate):
        candidate, count = f"{base}_{count}", count + 1
    return candidate


def _structure(value: Any, leaf: Callable[[Ref], Any]) -> Any:
    if isinstance(value, Ref):
        return leaf(value)
    if isinstance(value, list):
        return [_structure(v, leaf) for v in value]
    if isinstance(value, dict):
        return {k: _structure(v, leaf) for k, v in value.items()}
    return value


def _flat_refs(value: Any) -> list[Ref]:
    return refs_in(value)


class CustomLayer(KerasLayer):
    """A layer the user supplies through ``custom_objects``: ``factory(config, weights)`` returns a torch
    module called on the layer's inputs (a tensor, or a list); its output drops any mask. The file's arrays
    for the layer (in its stored order, unchecked: only the factory knows what it needs) are handed over."""

    def __init__(self, spec: LayerSpec, factory: Callable[..., torch.nn.Module]) -> None:
        super().__init__(spec)
        self._factory = factory
        self.module: torch.nn.Module | None = None
        self._stored: list[np.ndarray] = []

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        """Hand the stored arrays to the factory now, so that the module's parameters are registered (for
        ``state_dict``, ``.to(device)``, optimizers) before the first call."""
        self._stored = list(arrays)
        self.build_module()

    def build_module(self) -> None:
        self.module = self._factory(dict(self.spec.config), self._stored)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape | list[Shape]:
        """The factory's module's ``compute_output_shape(input_shape)`` when the factory's class offers one
        as a static or class method, else the input's shape."""
        rule = getattr(self._factory, "compute_output_shape", None)
        if callable(rule):
            return rule(input_shapes[0] if len(input_shapes) == 1 else list(input_shapes))
        return input_shapes[0]

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        if self.module is None:
            self.build_module()
        assert self.module is not None
        out = self.module(inputs, **kwargs)
        return (list(out) if isinstance(out, tuple) else out), None


class KerasModel(KerasLayer):
    """A Keras model (Sequential or functional) running in torch; see :func:`unilstm.keras.load_model`.

    Call it like Keras's ``model(inputs)``: ``model(x)`` or ``model(x1, x2)`` (or ``model([x1, x2])``),
    numpy arrays or tensors; integer ids where the model takes ids. Returns one tensor, or a list for a model
    with several outputs (a lone output is a tensor, also for ``Model(x, [y])``, as in Keras).
    ``model.eval()`` (the default) is Keras's
    ``training=False``; ``model.train()`` is ``training=True`` (dropout and noise active, BatchNormalization
    on batch statistics).
    """

    def __init__(
        self,
        graph: Graph,
        spec: LayerSpec,
        custom_objects: Mapping[str, Any] | None = None,
        input_shapes: Sequence[Shape] | None = None,
        problems: dict[str, str] | None = None,
    ) -> None:
        super().__init__(spec)
        self.graph = graph
        self.custom_objects = dict(custom_objects or {})
        #: given (by :func:`.description.describe_model`): a layer that cannot be built is noted here, by
        #: name, instead of refused, and the calls after it are left out.
        self.problems = problems
        self._by_name: dict[str, KerasLayer] = {}
        self._module_names: dict[str, str] = {}
        self._plan = self._order()
        declared = [graph.layers[r.layer].input_shape for r in graph.inputs]
        shapes = list(input_shapes) if input_shapes is not None else declared
        self.input_shapes = [tuple(s) for s in shapes if s is not None]
        self.input_dtypes = [graph.layers[r.layer].input_dtype for r in graph.inputs]
        self._shapes: dict[Ref, Shape] = {}
        for ref, shape in zip(graph.inputs, self.input_shapes, strict=True):
            self._shapes[ref] = shape
        for layer, index in self._plan:
            if problems is None:
                self._build_call(layer, index)
                continue
            try:
                self._build_call(layer, index)
            except KerasModelError as error:
                problems.setdefault(layer.name, str(error))
        self.eval()

    # -- building ---------------------------------------------------------------------------------------
    def _order(self) -> list[tuple[GraphLayer, int]]:
        """Every call the outputs need, each after the calls it reads (iterative depth-first search)."""
        graph = self.graph
        done: set[tuple[str, int]] = set()
        active: set[tuple[str, int]] = set()
        plan: list[tuple[GraphLayer, int]] = []
        stack: list[tuple[Ref, bool]] = [(r, False) for r in reversed(graph.outputs)]
        while stack:
            ref, expanded = stack.pop()
            layer = graph.layers.get(ref.layer)
            if layer is None:
                raise KerasModelError(
                    f"model {graph.name!r}: a call refers to layer {ref.layer!r}, which it lacks"
                )
            if layer.kind == "input":
                continue
            key = (ref.layer, ref.node - layer.first_node)
            if key in done:
                continue
            _, call = graph.call_of(ref)
            if expanded:
                active.discard(key)
                done.add(key)
                plan.append((layer, key[1]))
                continue
            if key in active:
                raise KerasModelError(
                    f"model {graph.name!r}: the graph has a cycle through layer {ref.layer!r}"
                )
            active.add(key)
            stack.append((ref, True))
            stack += [(r, False) for r in reversed(_flat_refs([call.args, call.kwargs]))]
        return plan

    def _where(self, layer: GraphLayer) -> str:
        return f"{layer.class_name} {layer.name!r} in model {self.graph.name!r}"

    def _make_layer(self, layer: GraphLayer, input_shapes: list[Shape]) -> KerasLayer:
        where = self._where(layer)
        spec = LayerSpec(
            layer.name,
            layer.class_name,
            layer.config,
            tuple(input_shapes),
            self.graph.keras2,
            where,
            self.custom_objects,
        )
        if layer.kind == "model":
            inner = parse_model(layer.entry, self.graph.keras2, where)
            return KerasModel(inner, spec, self.custom_objects, input_shapes, self.problems)
        custom = self.custom_objects.get(layer.class_name)
        if custom is not None:
            if isinstance(custom, type) and issubclass(custom, KerasLayer):
                return custom(spec)
            return CustomLayer(spec, custom)
        implementation = REGISTRY.get(layer.class_name)
        if implementation is None:
            raise KerasModelError(
                f"{where}: Keras layer class {layer.class_name!r} is not supported (supported: "
                f"{', '.join(sorted(REGISTRY))}); pass custom_objects={{{layer.class_name!r}: factory}} to "
                "supply a torch module for it"
            )
        return implementation(spec)

    def _build_call(self, layer: GraphLayer, index: int) -> None:
        call = layer.calls[index]
        inputs = call.args[0] if call.args else None
        input_refs = _flat_refs(inputs)
        missing = [r for r in input_refs if r not in self._shapes]
        if missing:
            blocked = self.problems is not None and missing[0].layer in self.problems
            why = "comes after an unsupported layer" if blocked else "is not computed by the graph"
            raise KerasModelError(f"{self._where(layer)}: its input {missing[0].layer!r} {why}")
        input_shapes = [self._shapes[r] for r in input_refs]
        node = index + layer.first_node
        if layer.kind == "operation":
            _, shape_rule = operation(layer.class_name, self._where(layer))
            options = {k: v for k, v in {**layer.config, **call.kwargs}.items() if k != "name"}
            arg_shapes = [self._shapes[r] for r in _flat_refs(call.args)]
            self._shapes[Ref(layer.name, node, 0)] = shape_rule(arg_shapes, **options)
            return
        module = self._by_name.get(layer.name)
        if module is None:
            module = self._make_layer(layer, input_shapes)
            self._by_name[layer.name] = module
            name = _module_name(layer.name, set(self._module_names.values()))
            self._module_names[layer.name] = name
            self.add_module(name, module)
        options = {k: v for k, v in call.kwargs.items() if k not in _TENSOR_ARGUMENTS}
        try:
            outputs = (
                module.output_shape(input_shapes, **options) if options else module.output_shape(input_shapes)
            )
        except TypeError:
            if not options:
                raise
            raise KerasModelError(
                f"{self._where(layer)}: is called with {sorted(options)}, which this layer does not take"
            ) from None
        output_list = outputs if isinstance(outputs, list) else [outputs]
        for position, shape in enumerate(output_list):
            self._shapes[Ref(layer.name, node, position)] = tuple(shape)

    # -- KerasLayer --------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[tuple[str, GraphLayer, KerasLayer]]:
        """(submodule name, graph entry, module) of every layer with a module, in config order."""
        return [
            (self._module_names[name], entry, self._by_name[name])
            for name, entry in self.graph.layers.items()
            if name in self._by_name
        ]

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape | list[Shape]:
        missing = [r.layer for r in self.graph.outputs if r not in self._shapes]
        if missing:
            raise KerasModelError(f"model {self.graph.name!r}: its output {missing[0]!r} cannot be computed")
        shapes = [self._shapes[r] for r in self.graph.outputs]
        return shapes if len(shapes) > 1 else shapes[0]

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        tensors = inputs if isinstance(inputs, list) else [inputs]
        masks = mask if isinstance(mask, list) else [mask] * len(tensors)
        if len(tensors) != len(self.graph.inputs):
            raise KerasModelError(
                f"model {self.graph.name!r} takes {len(self.graph.inputs)} inputs, got {len(tensors)}"
            )
        values: dict[Ref, Tensor] = {}
        value_masks: dict[Ref, Tensor | None] = {}
        for ref, tensor, input_mask in zip(self.graph.inputs, tensors, masks, strict=True):
            values[ref], value_masks[ref] = tensor, input_mask
        for layer, index in self._plan:
            self._run_call(layer, index, values, value_masks)
        if self._traced is not None:
            self._traced[id(self)] = (values, value_masks)
        outputs = [values[r] for r in self.graph.outputs]
        out_masks = [value_masks.get(r) for r in self.graph.outputs]
        if len(outputs) > 1:  # Keras returns a lone output as a tensor, even from Model(x, [y])
            return outputs, out_masks
        return outputs[0], out_masks[0]

    def _run_call(
        self, layer: GraphLayer, index: int, values: dict[Ref, Tensor], masks: dict[Ref, Tensor | None]
    ) -> None:
        call: Call = layer.calls[index]
        node = index + layer.first_node
        if layer.kind == "operation":
            fn, _ = operation(layer.class_name, self._where(layer))
            args = _structure(call.args, values.__getitem__)
            options = {k: v for k, v in {**layer.config, **call.kwargs}.items() if k != "name"}
            values[Ref(layer.name, node, 0)] = fn(*args, **options)
            return
        if not call.args:
            raise KerasModelError(f"{self._where(layer)}: a call without inputs")
        inputs = _structure(call.args[0], values.__getitem__)
        kwargs = dict(call.kwargs)
        kwargs.pop("training", None)
        if "mask" in kwargs:
            mask = _structure(kwargs.pop("mask"), values.__getitem__)
        else:
            mask = _structure(call.args[0], masks.get)
            if isinstance(mask, list) and all(m is None for m in mask):
                mask = None
        kwargs = _structure(kwargs, values.__getitem__)
        module = self._by_name[layer.name]
        if isinstance(module, KerasModel):
            outputs, out_masks = module.call(inputs, mask, **kwargs)
        else:
            outputs, out_masks = module(inputs, mask, **kwargs)
        output_list = outputs if isinstance(outputs, list) else [outputs]
        mask_list = out_masks if isinstance(out_masks, list) else [out_masks] * len(output_list)
        for position, (tensor, out_mask) in enumerate(zip(output_list, mask_list, strict=True)):
            values[Ref(layer.name, node, position)] = tensor
            masks[Ref(layer.name, node, position)] = out_mask

    #: set by :meth:`trace` while it runs: where each graph leaves its tensors and masks
    _traced: dict[int, tuple[dict[Ref, Tensor], dict[Ref, Tensor | None]]] | None = None

    def trace(self, *inputs: Any) -> dict[int, tuple[dict[Ref, Tensor], dict[Ref, Tensor | None]]]:
        """Run the model on ``inputs`` (as :meth:`forward`, without autograd) and return what every graph
        computed: by ``id`` of this model and of each nested one, its tensors and their masks by graph
        tensor (a nested model called several times keeps its last call's)."""
        found: dict[int, tuple[dict[Ref, Tensor], dict[Ref, Tensor | None]]] = {}
        models = [module for module in self.modules() if isinstance(module, KerasModel)]
        for model in models:
            model._traced = found
        try:
            with torch.no_grad():
                self(*inputs)
        finally:
            for model in models:
                model._traced = None
        return found

    # -- the user's call ---------------------------------------------------------------------------------
    def _as_input(self, value: Any, position: int) -> Tensor:
        dtype_name = self.input_dtypes[position]
        tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
        if dtype_name in _INT_DTYPES:
            if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
                raise ValueError(
                    f"input {position} of model {self.graph.name!r} takes integer ids, got fractions"
                )
            tensor = tensor.long()
        elif dtype_name == "bool":
            tensor = tensor.bool()
        else:
            tensor = tensor.to(_FLOAT_DTYPES.get(dtype_name, torch.float32))
        expected = self.input_shapes[position]
        if tensor.dim() != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, tensor.shape, strict=False)
        ):
            raise ValueError(
                f"input {position} of model {self.graph.name!r} is incompatible with the model: expected "
                f"shape "
                f"{expected}, found shape {tuple(tensor.shape)}"
            )
        return tensor

    def forward(self, *inputs: Any) -> Any:  # type: ignore[override]
        """Run the model on its inputs (see the class docstring); returns a tensor or a list of tensors."""
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(
                f"model {self.graph.name!r} takes {len(self.graph.inputs)} inputs, got {len(inputs)}"
            )
        tensors = [self._as_input(value, position) for position, value in enumerate(inputs)]
        outputs, _ = self.call(tensors if len(tensors) > 1 else tensors[0])
        return outputs


def build_model(
    config: Mapping[str, Any],
    keras2: bool,
    custom_objects: Mapping[str, Any] | None,
    problems: dict[str, str] | None = None,
) -> KerasModel:
    """A :class:`KerasModel` (weights not loaded) from a serialized model; ``problems``: see
    :attr:`KerasModel.problems`."""
    graph = parse_model(config, keras2)
    spec = LayerSpec(
        graph.name,
        graph.class_name,
        dict(config.get("config") or {}) if isinstance(config.get("config"), dict) else {},
        tuple(graph.layers[r.layer].input_shape or () for r in graph.inputs),
        keras2,
        f"model {graph.name!r}",
        dict(custom_objects or {}),
    )
    return KerasModel(graph, spec, custom_objects, None, problems)
