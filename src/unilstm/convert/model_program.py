"""A whole Keras model as a straight-line program, for the code and graph writers of whole-model conversion.

:func:`model_program` turns a :class:`~unilstm.keras_model.KerasModel` (built and loaded by
:func:`unilstm.keras.load_model`) into :class:`Step` s in the order the model runs them: which layer is
called on which variables, which variables it returns, and which of them carry a mask. Mask presence is a
property of the graph, not of the data: it is found by running the model once on small inputs and noting
which tensors came back with a mask. Writers (torch code, MindSpore code, ONNX) walk the steps; none of them
walks the Keras graph itself.

Variable names are Python identifiers: ``x_<input>`` for the model's inputs, ``<layer>`` (or
``<layer>_<call>_<output>`` where a layer is called several times or returns several tensors) for outputs,
and ``<variable>_mask`` for their masks.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..keras_model.base import KerasLayer
from ..keras_model.graph import Ref
from ..keras_model.model import KerasModel

#: Keras layers that are the identity at inference (noise, dropout, activity regularization): every writer
#: lowers them as such
INFERENCE_IDENTITY_LAYERS = (
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization",
)
#: Keras layers that act on each step alone: a TimeDistributed applies them to (B, T, ...) as they are
PER_STEP_LAYERS = (
    "Dense", "Activation", *(name for name in INFERENCE_IDENTITY_LAYERS if name != "SpatialDropout1D"),
)


@dataclass
class Step:
    """One call of one layer (or Keras 3 operation) of the model.

    Attributes:
        layer: the Keras layer's name; ``attribute`` the identifier the generated module stores it under
            (the model's own submodule name, so weights keep one name across targets).
        class_name: its Keras class; ``config`` its config; ``module`` the loaded :class:`KerasLayer` (its
            ``spec`` holds the input shapes and ``keras2``; its parameters the weights), None for operations.
        inputs: the variables the call's first argument holds (one, or several when ``list_input``).
        input_masks: per input, the variable of the mask the layer receives (None: no mask) after Keras's
            rules (an explicit ``mask=`` argument wins over the inputs' own masks).
        kwargs: the call's other arguments: constants as they are, tensors as variable names
            (``initial_state=["lstm_h", "lstm_c"]``); ``training`` is dropped (the module's mode decides).
        outputs: one variable per output tensor; ``output_masks`` per output, the variable its mask goes
            to, None where Keras attaches none.
        output_shapes: per output, its Keras shape (None for the batch and open sizes).
        nested: for a nested model, its own steps (its inputs are ``nested.inputs``).
        args: the call's positional arguments after the first (constants as they are, tensors as variable
            names): ``[0]`` for Keras 3's ``NotEqual(ids, 0)``.
    """

    layer: str
    attribute: str
    class_name: str
    config: dict[str, Any]
    module: KerasLayer | None
    inputs: list[str]
    list_input: bool
    input_masks: list[str | None]
    kwargs: dict[str, Any]
    outputs: list[str]
    output_masks: list[str | None]
    output_shapes: list[tuple[int | None, ...]]
    nested: Program | None = None
    args: list[Any] = field(default_factory=list)

    @property
    def keras2(self) -> bool:
        return bool(self.module is not None and self.module.spec.keras2)


@dataclass
class Program:
    """A model as steps: ``inputs`` (variables, with their Keras shapes and dtypes), ``steps`` in run order,
    ``outputs`` (variables; a lone output is returned as a tensor, several as a list, as Keras does)."""

    name: str
    inputs: list[str]
    input_shapes: list[tuple[int | None, ...]]
    input_dtypes: list[str]
    steps: list[Step] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    #: variable -> the graph tensor it holds (for comparing a target's intermediate values with the source's)
    variables: dict[str, Ref] = field(default_factory=dict)


def identifier(text: str) -> str:
    """A Python identifier for a Keras name (``dense_1`` stays; ``my-layer`` -> ``my_layer``)."""
    name = re.sub(r"\W", "_", text)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def takes_ids(model: KerasModel) -> set[int]:
    """The positions of the model's inputs that an Embedding reads directly: ids, even where the model
    declares them float32 (Keras 2.0-2.2 do)."""
    positions = set()
    for position, ref in enumerate(model.graph.inputs):
        for entry in model.graph.layers.values():
            if entry.class_name == "Embedding" and any(
                call.args and call.args[0] == ref for call in entry.calls
            ):
                positions.add(position)
    return positions


def _probe_inputs(model: KerasModel) -> list[Tensor]:
    """Small inputs of the model's shapes (open sizes 3, ids 1..3 with a 0 at the end of row 0 so that
    Embedding masks exist)."""
    generator = torch.Generator().manual_seed(0)
    tensors = []
    id_positions = takes_ids(model)
    for position, (shape, dtype) in enumerate(zip(model.input_shapes, model.input_dtypes, strict=True)):
        sizes = [2 if i == 0 and s is None else (3 if s is None else s) for i, s in enumerate(shape)]
        if dtype.startswith(("int", "uint")) or position in id_positions:
            ids = torch.randint(1, 4, sizes, generator=generator)
            if ids.dim() >= 2:
                ids[0, -1] = 0
            tensors.append(ids)
        else:
            tensors.append(torch.randn(sizes, generator=generator))
    return tensors


def _masked_refs(model: KerasModel, inputs: list[Tensor]) -> dict[tuple[int, Ref], bool]:
    """Which tensors of ``model`` (and of its nested models, keyed by id) carry a mask, from one run."""
    was_training = model.training
    model.eval()
    try:
        traced = model.trace(*inputs)
    finally:
        model.train(was_training)
    return {
        (key, ref): mask is not None for key, (_, masks) in traced.items() for ref, mask in masks.items()
    }


def model_program(model: KerasModel) -> Program:
    """The :class:`Program` of a loaded model (see the module docstring)."""
    masked = _masked_refs(model, _probe_inputs(model))
    return _program(model, masked, [f"x_{identifier(r.layer)}" for r in model.graph.inputs])


def _program(model: KerasModel, masked: dict[tuple[int, Ref], bool], input_names: list[str]) -> Program:
    graph = model.graph
    names: dict[Ref, str] = dict(zip(graph.inputs, input_names, strict=True))
    mask_names: dict[Ref, str | None] = {ref: None for ref in graph.inputs}
    calls_per_layer = {name: len(entry.calls) for name, entry in graph.layers.items()}
    program = Program(graph.name, list(input_names), list(model.input_shapes), list(model.input_dtypes))
    attributes = {entry.name: attribute for attribute, entry, _ in model.layers}
    taken = set(input_names)  # module attributes live on self: a local variable may share their name
    for layer, index in model._plan:
        node = index + layer.first_node
        call = layer.calls[index]
        module = model._by_name.get(layer.name)
        outputs = sorted(
            (ref for ref in model._shapes if ref.layer == layer.name and ref.node == node),
            key=lambda r: r.tensor,
        )
        base = identifier(layer.name)
        several_calls = calls_per_layer[layer.name] > 1
        out_vars = []
        for ref in outputs:
            name = base
            if several_calls:
                name += f"_call{index}"
            if len(outputs) > 1:
                name += f"_out{ref.tensor}"
            name = _unique(name, taken)
            names[ref] = name
            out_vars.append(name)
        arguments = call.args[0] if call.args else None
        refs = _refs(arguments)
        kwargs = {k: v for k, v in call.kwargs.items() if k != "training"}
        explicit_mask = kwargs.pop("mask", _NO_MASK)
        input_masks: list[str | None]
        if explicit_mask is _NO_MASK:
            input_masks = [mask_names.get(r) for r in refs]
        else:
            given = explicit_mask if isinstance(explicit_mask, list) else [explicit_mask]
            input_masks = [names[m] if isinstance(m, Ref) else None for m in given]
            input_masks += [None] * (len(refs) - len(input_masks))
        step_kwargs = {k: _named(v, names) for k, v in kwargs.items()}
        output_masks: list[str | None] = []
        for ref, variable in zip(outputs, out_vars, strict=True):
            has_mask = masked.get((id(model), ref), False)
            mask_names[ref] = _unique(f"{variable}_mask", taken) if has_mask else None
            output_masks.append(mask_names[ref])
        nested = None
        if isinstance(module, KerasModel):
            nested = _program(module, masked, [f"{identifier(layer.name)}_in_{i}" for i in range(len(refs))])
        program.steps.append(
            Step(
                layer.name,
                attributes.get(layer.name, base),
                layer.class_name,
                dict(layer.config),
                module,
                [names[r] for r in refs],
                isinstance(arguments, list),
                input_masks,
                step_kwargs,
                out_vars,
                output_masks,
                [model._shapes[r] for r in outputs],
                nested,
                [_named(a, names) for a in call.args[1:]],
            )
        )
    program.outputs = [names[r] for r in graph.outputs]
    program.variables = {variable: ref for ref, variable in names.items()}
    return program


_NO_MASK = object()


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3`` ... when taken; the result is taken from then on."""
    candidate, count = name, 2
    while candidate in taken:
        candidate, count = f"{name}_{count}", count + 1
    taken.add(candidate)
    return candidate


def _refs(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _named(value: Any, names: dict[Ref, str]) -> Any:
    if isinstance(value, Ref):
        return names[value]
    if isinstance(value, list):
        return [_named(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _named(v, names) for k, v in value.items()}
    return value


def describe_program(program: Program, indent: str = "") -> str:
    """The program as text, one step a line (for reports and tests)."""
    lines = [f"{indent}{program.name}({', '.join(program.inputs)})"]
    for step in program.steps:
        masks = [m or "-" for m in step.input_masks]
        lines.append(
            f"{indent}  {', '.join(step.outputs)} = {step.attribute}[{step.class_name}]"
            f"({', '.join(step.inputs)}; masks {', '.join(masks)}; {step.kwargs}) -> masks "
            f"{[m or '-' for m in step.output_masks]}"
        )
        if step.nested is not None:
            lines.append(describe_program(step.nested, indent + "    "))
    lines.append(f"{indent}  return {', '.join(program.outputs)}")
    return "\n".join(lines)
