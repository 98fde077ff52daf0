"""A whole Keras model as one ``torch.nn.Module``: the :class:`~.graph.Graph` run call by call, masks
carried along as Keras carries them.

Each Keras layer becomes a registered submodule named after it (``model.dense_1``); a nested model becomes a
nested :class:`KerasModel`. Every call of the graph is run in dependency order, computed once when the
model is built: a layer called several times (a shared layer) is one module run several times. The first
call compiles that order into closures over integer slots (:meth:`KerasModel._compile`): per call the
executor then only moves tensors between slots and calls the layers (batch 1 is latency-bound: the
dict-keyed executor spent 28-32 us per ``call`` of the benchmark models in its own Python, the compiled
one 8-13 us; ``benchmarks/RESULTS.md``).

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


def _flat_refs(value: Any) -> list[Ref]:
    return refs_in(value)


#: one compiled call of the plan: reads and writes the call's tables of tensors and masks by slot
_Step = Callable[[dict[int, Tensor], dict[int, Tensor | None]], None]


def _reader(value: Any, slot: Callable[[Ref], int], optional: bool) -> Callable[[dict[int, Any]], Any]:
    """A function of a slot table that rebuilds the call argument ``value`` (nested lists and dicts) with
    each :class:`Ref` replaced by its slot's entry: ``table[slot]`` (a KeyError for a tensor never computed)
    or, with ``optional``, ``table.get(slot)`` (masks). Lists and dicts are new on every call, as before."""
    if isinstance(value, Ref):
        index = slot(value)
        if optional:
            return lambda table: table.get(index)
        return lambda table: table[index]
    if isinstance(value, list):
        if value and all(isinstance(v, Ref) for v in value):  # the common list input: [x1, x2]
            indices = [slot(v) for v in value]
            if optional:
                return lambda table: [table.get(i) for i in indices]
            return lambda table: [table[i] for i in indices]
        parts = [_reader(v, slot, optional) for v in value]
        return lambda table: [part(table) for part in parts]
    if isinstance(value, dict):
        items = [(k, _reader(v, slot, optional)) for k, v in value.items()]
        return lambda table: {k: part(table) for k, part in items}
    return lambda table: value


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
        plan = self._compiled if self._compiled is not None else self._compile()
        steps, input_slots, output_slots, refs = plan
        # tensors and masks by slot (see _compile); a mask entry is missing where the old executor had none
        values: dict[int, Tensor] = {}
        value_masks: dict[int, Tensor | None] = {}
        for slot, tensor, input_mask in zip(input_slots, tensors, masks, strict=True):
            values[slot], value_masks[slot] = tensor, input_mask
        for step in steps:
            step(values, value_masks)
        if self._traced is not None:
            self._traced[id(self)] = (
                {refs[slot]: tensor for slot, tensor in values.items()},
                {refs[slot]: out_mask for slot, out_mask in value_masks.items()},
            )
        outputs = [values[slot] for slot in output_slots]
        out_masks = [value_masks.get(slot) for slot in output_slots]
        if len(outputs) > 1:  # Keras returns a lone output as a tensor, even from Model(x, [y])
            return outputs, out_masks
        return outputs[0], out_masks[0]

    # -- the execution plan: every call of _plan made once into a closure over integer slots -------------
    #: (steps, input slots, output slots, the Ref of each slot), made on the first call (building with
    #: ``problems`` may leave calls unbuildable) and set at once, so that threads making their first calls
    #: together each run one consistent plan
    _compiled: tuple[list[_Step], list[int], list[int], list[Ref]] | None = None

    def _compile(self) -> tuple[list[_Step], list[int], list[int], list[Ref]]:
        """The plan as closures: each reads its inputs and masks from integer slots (no Ref hashing, no
        argument structure walked per call, no operation looked up per call) and writes its outputs'. Per
        call it does what the dict-based executor did: inputs from the tensors' slots (a KeyError for one
        never computed), the mask of each input (explicit ``mask=`` first; None for a list of all-None
        masks), the call's other keyword arguments with their tensors, and the outputs and masks in order.
        """
        slots: dict[Ref, int] = {}
        refs: list[Ref] = []

        def slot(ref: Ref) -> int:  # a graph tensor's slot, allocated on first sight
            found = slots.get(ref)
            if found is None:
                found = slots[ref] = len(refs)
                refs.append(ref)
            return found

        input_slots = [slot(ref) for ref in self.graph.inputs]
        steps = [self._compile_call(layer, index, slot) for layer, index in self._plan]
        output_slots = [slot(ref) for ref in self.graph.outputs]
        self._compiled = (steps, input_slots, output_slots, refs)
        return self._compiled

    def _compile_call(self, layer: GraphLayer, index: int, slot: Callable[[Ref], int]) -> _Step:
        call: Call = layer.calls[index]
        node = index + layer.first_node
        if layer.kind == "operation":
            fn, _ = operation(layer.class_name, self._where(layer))
            read_args = _reader(call.args, slot, optional=False)
            options = {k: v for k, v in {**layer.config, **call.kwargs}.items() if k != "name"}
            out = slot(Ref(layer.name, node, 0))

            def run_operation(values: dict[int, Tensor], masks: dict[int, Tensor | None]) -> None:
                values[out] = fn(*read_args(values), **options)

            return run_operation
        if not call.args:
            error = KerasModelError(f"{self._where(layer)}: a call without inputs")

            def refuse(values: dict[int, Tensor], masks: dict[int, Tensor | None]) -> None:
                raise error

            return refuse
        read_inputs = _reader(call.args[0], slot, optional=False)
        explicit_mask = "mask" in call.kwargs
        read_mask = (
            _reader(call.kwargs["mask"], slot, optional=False)
            if explicit_mask
            else _reader(call.args[0], slot, optional=True)
        )
        rest = {k: v for k, v in call.kwargs.items() if k not in ("training", "mask")}
        read_kwargs = _reader(rest, slot, optional=False) if rest else None
        module = self._by_name[layer.name]
        run = module.call if isinstance(module, KerasModel) else module
        known = sum(1 for ref in self._shapes if ref.layer == layer.name and ref.node == node)
        out_slots = [slot(Ref(layer.name, node, position)) for position in range(max(known, 1))]
        first = out_slots[0]
        name = layer.name

        def run_layer(values: dict[int, Tensor], masks: dict[int, Tensor | None]) -> None:
            inputs = read_inputs(values)
            if explicit_mask:
                mask = read_mask(values)
            else:
                mask = read_mask(masks)
                if isinstance(mask, list) and all(m is None for m in mask):
                    mask = None
            if read_kwargs is None:
                outputs, out_masks = run(inputs, mask)
            else:
                outputs, out_masks = run(inputs, mask, **read_kwargs(values))
            if not isinstance(outputs, list) and not isinstance(out_masks, list):
                values[first], masks[first] = outputs, out_masks
                return
            output_list = outputs if isinstance(outputs, list) else [outputs]
            mask_list = out_masks if isinstance(out_masks, list) else [out_masks] * len(output_list)
            for position, (tensor, out_mask) in enumerate(zip(output_list, mask_list, strict=True)):
                target = out_slots[position] if position < len(out_slots) else slot(Ref(name, node, position))
                values[target], masks[target] = tensor, out_mask

        return run_layer

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

    def reset_states(self) -> None:
        """Zero the stored states of every stateful layer, nested models included (tf-keras's
        ``Model.reset_states()``; in Keras 3, each stateful layer's ``reset_states()``)."""
        for module in self.modules():
            reset = getattr(module, "reset_states", None)
            if module is not self and getattr(module, "stateful", False) is True and callable(reset):
                reset()


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
