"""A whole Keras model as MindSpore code and the parameters of its ``.ckpt``: :func:`emit_mindspore_model`.

The writer walks a :class:`~unilstm.convert.model_program.Program` (never the Keras graph) and writes one
``nn.Cell`` class per model (a nested model is a Cell of its own): one attribute per Keras layer, named
after it, built from MindSpore's own layers (``nn.LSTM``, ``nn.Dense``, ``nn.Embedding``, ``nn.Conv1d``,
``nn.BatchNorm1d``, ``nn.LayerNorm``, pooling) or, where MindSpore has none, a small Cell written out in the
module (Keras's attention); a ``construct`` that computes, in graph order and under Keras's variable names,
what :func:`unilstm.keras.load_model` computes at inference, masks included; and ``load()``.

Keras's masks around an LSTM are glue: Keras skips a masked step (h and c kept) wherever it lies, so the
present steps are moved to the front and MindSpore's ``nn.LSTM`` runs on them with ``seq_length`` (the same
states), then every step gets Keras's output back (its own, the previous present step's, or zeros).

Parameters are returned by the names the Cell's ``parameters_and_names()`` gives them
(``lstm.weight_ih_l0``, ``dense.weight``, ``sequential.dense.bias``), in MindSpore's layouts: LSTM weights
transposed to (4H, F) with Keras's bias as ``bias_ih`` and zeros as ``bias_hh`` (both order their gates
i, f, g, o), Dense kernels transposed to (units, in), Conv1D kernels as (filters, C / groups, 1, k).

Layers the generated code cannot compute as Keras does are refused with :class:`ConversionError` naming the
layer's class and name.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from typing import Any

import numpy as np

from ..formats.layout import torch_from_keras
from ..interchange import activation_text
from .model_code_mindspore_helpers import HELPERS, keras_lstm_source
from .model_code_mindspore_writer import EMITTERS, StepWriter, _Cell, _Module, emitter
from .model_program import Program


def emit_mindspore_model(program: Program, weights_name: str) -> tuple[str, dict[str, np.ndarray]]:
    """The source of a Python module for MindSpore 2.x computing ``program``'s model, and the parameters
    (by the names the module's Cell gives them, float32 arrays) its ``.ckpt`` must hold.

    The module defines ``WEIGHTS = weights_name``, a ``nn.Cell`` class named after the model whose
    ``construct`` takes MindSpore Tensors of the Keras inputs (int32 ids for an Embedding) and returns
    Keras's outputs (a tensor, or a tuple for several), and ``load(path=None)``: the Cell with the
    checkpoint ``path`` (by default the file WEIGHTS next to the module) loaded, every parameter checked,
    in inference mode. Raises :class:`ConversionError` naming the first layer it cannot write."""
    from . import (  # noqa: F401 - importing them registers the layers' emitters
        model_code_mindspore_layers,
        model_code_mindspore_merging,
    )

    module = _Module()
    top = _write_cell(program, module, "")
    return _module_source(program, top, weights_name, module), module.params


#: names ``construct`` needs for itself: a Keras variable of one of these names gets a trailing ``_``.
_RESERVED = {"self", "mindspore", "nn", "ops", "Parameter", "Path", *HELPERS}


def _renamed(program: Program) -> Program:
    """``program`` with its variables that would shadow a name of the module (a layer called ``tanh``)
    renamed; the caller's program is left as it is."""
    taken = set(program.inputs) | {v for s in program.steps for v in [*s.outputs, *s.output_masks] if v}
    names = {v: _free(v, taken) for v in sorted(taken & _RESERVED)}
    if not names:
        return program

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        return value

    steps = [
        replace(
            step,
            inputs=rename(step.inputs),
            input_masks=rename(step.input_masks),
            kwargs=rename(step.kwargs),
            args=rename(step.args),
            outputs=rename(step.outputs),
            output_masks=rename(step.output_masks),
        )
        for step in program.steps
    ]
    return replace(program, inputs=rename(program.inputs), steps=steps, outputs=rename(program.outputs))


def _free(name: str, taken: set[str]) -> str:
    candidate = f"{name}_"
    while candidate in taken or candidate in _RESERVED:
        candidate += "_"
    taken.add(candidate)
    return candidate


def _write_cell(program: Program, module: _Module, prefix: str) -> str:
    """Write the class of ``program`` (after those of its nested models); returns its name."""
    program = _renamed(program)
    cell = _Cell(program, module, prefix)
    for step in program.steps:
        writer = StepWriter(step, cell)
        if step.nested is not None:
            _nested(writer, module)
            continue
        write = EMITTERS.get(step.class_name)
        if write is None:
            writer.refuse("MindSpore code for this layer class is not written (not supported)")
        write(writer)
        for index, mask in enumerate(step.output_masks):
            if mask is not None and index not in writer.masks_set:
                writer.refuse("Keras attaches a mask to this output; the generated code has none for it")
    name = module.class_name(program.name)
    module.classes.append(_class_source(name, program, cell))
    return name


def _nested(writer: StepWriter, module: _Module) -> None:
    step = writer.step
    assert step.nested is not None
    if any(step.input_masks) or any(step.output_masks):
        writer.refuse("a nested model called with or returning masks is not supported")
    if writer.first_call:
        class_name = _write_cell(step.nested, module, f"{writer.cell.prefix}{writer.attr}.")
        writer.build(f"{class_name}()")
    outputs = ", ".join(step.outputs)
    writer.line(f"{outputs} = self.{writer.attr}({', '.join(step.inputs)})")


def _class_source(name: str, program: Program, cell: _Cell) -> str:
    shapes = ", ".join(
        f"{var} {_shape_text(shape)} {dtype}"
        for var, shape, dtype in zip(program.inputs, program.input_shapes, program.input_dtypes, strict=True)
    )
    doc = textwrap.fill(
        f'"""Keras model {program.name!r}: construct({", ".join(program.inputs)}) with {shapes}."""',
        106,
        subsequent_indent="    ",
        break_on_hyphens=False,
    )
    lines = [
        f"class {name}(nn.Cell):",
        f"    {doc}",
        "",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    lines += [f"        {text}" for text in cell.init]
    lines += ["", f"    def construct(self, {', '.join(program.inputs)}):"]
    outputs = [cell.alias.get(o, o) for o in program.outputs]
    body = list(cell.body)
    for index in sorted(cell.mask_lines, reverse=True):  # masks Keras makes that no layer here reads
        used = re.compile(rf"\b{cell.mask_lines[index]}\b")
        if not any(used.search(text) for text in body[index + 1 :] + outputs):
            del body[index]
    lines += [f"        {text}" for text in body]
    lines.append(f"        return {outputs[0] if len(outputs) == 1 else '(' + ', '.join(outputs) + ')'}")
    return "\n".join(lines)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return (
        "("
        + ", ".join(
            "B" if i == 0 and s is None else ("T" if s is None else str(s)) for i, s in enumerate(shape)
        )
        + ")"
    )


def _module_source(program: Program, top: str, weights_name: str, module: _Module) -> str:
    outputs = "a tuple of " + str(len(program.outputs)) if len(program.outputs) > 1 else "one tensor"
    lines = [
        f'"""Keras model {program.name!r} in MindSpore, written by unilstm (``unilstm convert``).',
        "",
        f"``load()`` returns the `{top}` Cell with the weights of {weights_name} in inference mode. Call it",
        "with MindSpore Tensors of the Keras inputs (float32; int32 ids for an Embedding); it returns",
        f"Keras's outputs ({outputs}), masks computed as Keras computes them.",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import mindspore",
        "from mindspore import Parameter, nn, ops"
        if {"KerasLSTM", "DotAttention", "ConcatAttention", "AdditiveAttention"} & set(module.helpers)
        else "from mindspore import nn, ops",
        "",
        f"WEIGHTS = {weights_name!r}",
    ]
    for helper in module.helpers:
        source = keras_lstm_source(module.lstm_activations) if helper == "KerasLSTM" else HELPERS[helper]
        lines += ["", "", source.strip("\n")]
    for source in module.classes:
        lines += ["", "", source]
    lines += [
        "",
        "",
        "def load(path=None):",
        f'    """The {top} Cell with the weights of ``path`` (default: WEIGHTS next to this file), every',
        '    parameter checked, in inference mode."""',
        "    path = str(path or Path(__file__).with_name(WEIGHTS))",
        f"    model = {top}()",
        "    params = mindspore.load_checkpoint(path)",
        "    missing, _ = mindspore.load_param_into_net(model, params, strict_load=True)",
        "    if missing:  # MindSpore only reports what it did not load",
        "        raise ValueError(f'{path} has no values for the parameters {missing}')",
        "    model.set_train(False)",
        "    return model",
        "",
    ]
    return "\n".join(lines)


# -- LSTM, CuDNNLSTM, Bidirectional(LSTM) -------------------------------------------------------------------


#: LSTM activations the generated ``KerasLSTM`` computes (mindspore.nn.LSTM: tanh and sigmoid gates only).
_KERAS_LSTM_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "hard_sigmoid_keras2")


def _check_cell(writer: StepWriter, cell: object) -> bool:
    """Refuse what the generated code cannot compute (a stateful or time-major layer, activations of
    neither nn.LSTM nor ``KerasLSTM``); True where nn.LSTM computes it (tanh, sigmoid gates)."""
    spec = cell.spec()  # type: ignore[attr-defined]
    for key in ("activation", "recurrent_activation"):
        value = getattr(spec, key)
        value = "linear" if value is None else value
        if value not in _KERAS_LSTM_ACTIVATIONS:
            writer.refuse(
                f"{key}={activation_text(value)} is not written for MindSpore "
                f"(supported: {', '.join(_KERAS_LSTM_ACTIVATIONS)})"
            )
    if cell.stateful:  # type: ignore[attr-defined]
        writer.refuse("stateful=True: the generated Cell keeps no state between calls")
    if cell.time_major:  # type: ignore[attr-defined]
        writer.refuse("time_major=True is not supported")
    return spec.activation == "tanh" and spec.recurrent_activation == "sigmoid"


def _activation_name(cell: object, key: str) -> str:
    value = getattr(cell.spec(), key)  # type: ignore[attr-defined]
    return "linear" if value is None else str(value)


def _lstm_params(writer: StepWriter, cell: object, suffix: str) -> None:
    kernel, recurrent, bias = (getattr(cell, name) for name in ("kernel", "recurrent_kernel", "bias"))
    arrays = torch_from_keras(
        kernel.detach().numpy(), recurrent.detach().numpy(), None if bias is None else bias.detach().numpy()
    )
    for name, array in arrays.items():
        writer.param(f"{name}_l0{suffix}", array)


@emitter("LSTM", "CuDNNLSTM", "Bidirectional")
def _lstm(w: StepWriter) -> None:
    """``nn.LSTM(F, H, batch_first=True)`` (bidirectional for a Bidirectional), with Keras's glue:
    go_backwards as a flip, masks as :data:`HELPERS` ``present_first`` / ``forward_steps`` /
    ``backward_steps``, return_sequences=False as the last processed step, merge modes, states."""
    step = w.step
    module = w.layer
    bidirectional = step.class_name == "Bidirectional"
    if bidirectional:
        door = module.door  # type: ignore[attr-defined]
        forward, backward = door.forward_layer, door.backward_layer
        merge_mode, return_sequences, return_state = door.merge_mode, door.return_sequences, door.return_state
        plain = _check_cell(w, forward) & _check_cell(w, backward)
        if any(
            _activation_name(forward, k) != _activation_name(backward, k)
            for k in ("activation", "recurrent_activation")
        ):
            w.refuse("forward and backward layers of different activations")
        if forward.go_backwards or not backward.go_backwards:
            w.refuse("a forward layer with go_backwards=True is not supported")
        if forward.units != backward.units or forward.use_bias != backward.use_bias:
            w.refuse("forward and backward layers of different units or use_bias: nn.LSTM has one of each")
    else:
        forward, backward = module.cell, None  # type: ignore[attr-defined]
        merge_mode, return_sequences, return_state = None, forward.return_sequences, forward.return_state
        plain = _check_cell(w, forward)
    hidden = forward.units
    features = module.spec.input_shapes[0][-1]
    states = step.kwargs.get("initial_state")
    if states is None and step.list_input and len(step.inputs) > 1:
        states = step.inputs[1:]  # Keras 2 records the initial states as extra inputs
    unknown = set(step.kwargs) - {"initial_state"}
    if unknown:
        w.refuse(f"unsupported call arguments: {', '.join(sorted(unknown))}")
    shape = f"{features}, {hidden}" + ("" if forward.use_bias else ", has_bias=False")
    if plain:
        w.build(f"nn.LSTM({shape}, batch_first=True{', bidirectional=True' if bidirectional else ''})")
    else:
        w.helper("KerasLSTM")
        used = {
            _activation_name(cell, key)
            for cell in (forward, backward)
            if cell is not None
            for key in ("activation", "recurrent_activation")
        }
        w.cell.module.lstm_activations.update(used)
        for name in sorted(used & {"tanh", "linear", "hard_sigmoid", "hard_sigmoid_keras2"}):
            w.helper(name)  # module-level functions KerasLSTM's table names
        activations = ", ".join(
            f"{key}={_activation_name(forward, key)!r}" for key in ("activation", "recurrent_activation")
        )
        w.build(
            f"KerasLSTM({shape}{', bidirectional=True' if bidirectional else ''}, {activations})",
            "nn.LSTM computes tanh and sigmoid gates only: the step written out with Keras's activations",
        )
    _lstm_params(w, forward, "")
    if backward is not None:
        _lstm_params(w, backward, "_reverse")

    x, mask = w.x, w.mask(0)
    attr = w.attr
    call_args: list[str] = []
    if states is not None:
        if len(states) != (4 if bidirectional else 2):
            w.refuse(f"initial_state of {len(states)} tensors")
        if bidirectional:
            h0, c0 = f"ops.stack(({states[0]}, {states[2]}))", f"ops.stack(({states[1]}, {states[3]}))"
        else:
            h0, c0 = f"{states[0]}.expand_dims(0)", f"{states[1]}.expand_dims(0)"
        call_args.append(f"hx=({h0}, {c0})")
    step_mask = mask
    if not bidirectional and forward.go_backwards:
        w.line("# go_backwards: Keras reads the sequence (and its mask) from its end")
        reversed_x = w.temp(f"{attr}_reversed")
        w.line(f"{reversed_x} = ops.flip({x}, (1,))")
        x = reversed_x
        if mask is not None:
            step_mask = w.temp(f"{attr}_reversed_mask")
            w.line(f"{step_mask} = ops.flip({mask}, (1,))")
    if step_mask is not None:
        present, lengths = w.temp(f"{attr}_present"), w.temp(f"{attr}_lengths")
        w.line("# Keras skips masked steps (h and c kept): the LSTM runs on the present steps only")
        w.line(f"{present}, {lengths} = {w.helper('present_first')}({x}, {step_mask})")
        x = present
        call_args.append(f"seq_length={lengths}")
    outputs = list(step.outputs)
    whole = return_sequences and (not bidirectional or merge_mode == "concat")
    sequence = outputs[0] if whole else w.temp(f"{attr}_steps")
    h, c = (w.temp(f"{attr}_h"), w.temp(f"{attr}_c")) if return_state else ("_", "_")
    w.line(
        f"{sequence}, {f'({h}, {c})' if return_state else '_'} = self.{attr}({', '.join([x, *call_args])})"
    )
    if step_mask is not None:
        steps_at = w.helper("forward_steps")
        if bidirectional:
            both = (not forward.zero_output_for_mask, not backward.zero_output_for_mask)
            if both == (False, False):
                w.line("# Keras's outputs at masked steps: zeros (its layers have zero_output_for_mask)")
            else:
                w.line("# Keras's outputs at masked steps: the forward's of the previous present step, the")
                w.line(
                    "# backward's of the next one (zeros where there is none or with zero_output_for_mask)"
                )
            halves = (w.temp(f"{attr}_forward"), w.temp(f"{attr}_backward"))
            w.line(f"{halves[0]} = {steps_at}({sequence}[..., :{hidden}], {step_mask}, previous={both[0]})")
            w.line(
                f"{halves[1]} = {w.helper('backward_steps')}({sequence}[..., {hidden}:], {step_mask}, "
                f"previous={both[1]})"
            )
            w.line(f"{sequence} = ops.cat(({halves[0]}, {halves[1]}), -1)")
        else:
            previous = not forward.zero_output_for_mask
            what = "the previous present step's output (zeros before)" if previous else "zeros"
            w.line(f"# Keras's output at a masked step: {what}")
            w.line(f"{sequence} = {steps_at}({sequence}, {step_mask}, previous={previous})")
    results = 2 if bidirectional and merge_mode is None else 1
    if bidirectional:
        if return_sequences:
            first, second = f"{sequence}[..., :{hidden}]", f"{sequence}[..., {hidden}:]"
        else:
            w.line(
                "# return_sequences=False: each direction's last processed step (the backward's is step 0)"
            )
            first, second = f"{sequence}[:, -1, :{hidden}]", f"{sequence}[:, 0, {hidden}:]"
        if merge_mode is None:
            w.line(f"{outputs[0]}, {outputs[1]} = {first}, {second}  # merge_mode=None")
        elif merge_mode == "concat":
            if not whole:
                w.line(f"{outputs[0]} = ops.cat(({first}, {second}), -1)")
        else:
            merged = {
                "sum": f"{first} + {second}",
                "mul": f"{first} * {second}",
                "ave": f"({first} + {second}) / 2",
            }[merge_mode]
            w.line(f"{outputs[0]} = {merged}  # merge_mode={merge_mode!r}")
    elif not return_sequences:
        w.line(f"{outputs[0]} = {sequence}[:, -1]  # return_sequences=False: the last processed step")
    if return_state:
        if bidirectional:
            w.line(f"{', '.join(outputs[results:])} = {h}[0], {c}[0], {h}[1], {c}[1]")
        else:
            w.line(f"{outputs[1]}, {outputs[2]} = {h}[0], {c}[0]")
    for index in range(len(outputs)):
        w.set_mask(index, w.mask(0) if return_sequences and index < results else None)
