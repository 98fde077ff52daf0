"""The parts every MindSpore model-code emitter shares: the module being written (its Cells, parameters and
helpers), the :class:`StepWriter` an emitter writes one step with, and the registry of emitters by Keras
class (:func:`emitter`). The emitters live in ``model_code_mindspore`` (LSTMs), ``..._layers`` and
``..._merging``; :func:`~.model_code_mindspore.emit_mindspore_model` walks the program."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from .file_kinds import ConversionError
from .model_code_mindspore_helpers import HELPERS, NEEDS
from .model_program import Program, Step

# -- the module being written ------------------------------------------------------------------------------


@dataclass
class _Module:
    """What the whole generated module collects: its parameters, the helpers it uses, its classes."""

    params: dict[str, np.ndarray] = field(default_factory=dict)
    helpers: list[str] = field(default_factory=list)
    lstm_activations: set[str] = field(default_factory=set)  # what KerasLSTM's table needs
    classes: list[str] = field(default_factory=list)
    class_names: set[str] = field(default_factory=set)

    def use(self, helper: str) -> str:
        """Define ``helper`` (and the helpers it calls) in the module; returns its name."""
        for needed in NEEDS.get(helper, ()):
            self.use(needed)
        if helper not in self.helpers:
            self.helpers.append(helper)
            self.helpers.sort(key=list(HELPERS).index)
        return helper

    def class_name(self, model_name: str) -> str:
        name = "".join(part[:1].upper() + part[1:] for part in re.split(r"\W|_", model_name) if part)
        name = name if name and not name[0].isdigit() else "Model" + name
        candidate, count = name, 2
        while candidate in self.class_names or candidate in HELPERS:
            candidate, count = f"{name}{count}", count + 1
        self.class_names.add(candidate)
        return candidate


class _Cell:
    """One generated ``nn.Cell`` class: the ``__init__`` and ``construct`` lines of a :class:`Program`."""

    def __init__(self, program: Program, module: _Module, prefix: str) -> None:
        self.program = program
        self.module = module
        self.prefix = prefix
        self.init: list[str] = []
        self.body: list[str] = []
        self.built: set[str] = set()
        self.alias: dict[str, str] = {}  # a mask variable -> the variable holding it (masks passed on)
        self.mask_lines: dict[int, str] = {}  # body line -> the mask it defines (dropped if never used)
        self.taken: set[str] = set(program.inputs)
        for step in program.steps:
            self.taken.update(step.outputs)
            self.taken.update(m for m in step.output_masks if m)

    def temp(self, name: str) -> str:
        candidate, count = name, 2
        while candidate in self.taken:
            candidate, count = f"{name}_{count}", count + 1
        self.taken.add(candidate)
        return candidate


class StepWriter:
    """What an emitter for one layer call sees: the step, its (resolved) inputs and masks, and ways to add
    ``__init__`` lines, ``construct`` lines, parameters and output masks."""

    def __init__(self, step: Step, cell: _Cell) -> None:
        self.step = step
        self.cell = cell
        self.attr = step.attribute
        self.first_call = step.attribute not in cell.built
        cell.built.add(step.attribute)
        self.masks_set: set[int] = set()

    # names
    @property
    def where(self) -> str:
        return f"{self.step.class_name} {self.step.layer!r}"

    @property
    def layer(self) -> Any:
        """The loaded Keras layer (its config checked, its weights as torch parameters)."""
        if self.step.module is None:
            self.refuse("has no loaded layer")
        return self.step.module

    @property
    def keras2(self) -> bool:
        return self.step.keras2

    @property
    def x(self) -> str:
        if not self.step.inputs:
            self.refuse("is called on no tensor")
        return self.step.inputs[0]

    def mask(self, index: int = 0) -> str | None:
        masks = self.step.input_masks
        name = masks[index] if index < len(masks) else None
        return None if name is None else self.cell.alias.get(name, name)

    def out(self, index: int = 0) -> str:
        return self.step.outputs[index]

    def temp(self, name: str) -> str:
        return self.cell.temp(name)

    # code
    def line(self, text: str) -> None:
        self.cell.body.append(text)

    def build(self, constructor: str, comment: str | None = None) -> None:
        """``self.<attr> = <constructor>`` in ``__init__`` (once, for a layer called several times)."""
        if self.first_call:
            if comment:
                self.cell.init.append(f"# {comment}")
            self.cell.init.append(f"self.{self.attr} = {constructor}")

    def param(self, name: str, array: np.ndarray) -> None:
        """The value of parameter ``<attr>.<name>`` (float32, C order)."""
        if self.first_call:
            key = f"{self.cell.prefix}{self.attr}.{name}"
            self.cell.module.params[key] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))

    def helper(self, name: str) -> str:
        return self.cell.module.use(name)

    def set_mask(self, index: int, expression: str | None) -> None:
        """Output ``index`` carries the mask ``expression`` (a variable: passed on as is; None: Keras
        attaches none). Only written where the program says the output carries a mask."""
        self.masks_set.add(index)
        target = self.step.output_masks[index]
        if target is None:
            return
        if expression is None:
            self.refuse("Keras attaches a mask to its output here that the generated code cannot compute")
        if expression.isidentifier():
            self.cell.alias[target] = expression
        else:
            self.mask_line(target, f"{target} = {expression}")

    def mask_line(self, mask: str, text: str) -> None:
        """A line defining the mask variable ``mask`` (left out of the module when nothing uses it)."""
        self.cell.mask_lines[len(self.cell.body)] = mask
        self.line(text)

    def pass_mask(self) -> None:
        """The layer passes its input's mask on (to its only output)."""
        self.set_mask(0, self.mask(0))

    def refuse(self, reason: str) -> NoReturn:
        raise ConversionError(f"MindSpore code: {self.where}: {reason}")


Emitter = Callable[[StepWriter], None]
#: Keras class name -> the function writing its MindSpore code (filled in by the layer modules).
EMITTERS: dict[str, Emitter] = {}


def emitter(*class_names: str) -> Callable[[Emitter], Emitter]:
    def register(function: Emitter) -> Emitter:
        for name in class_names:
            EMITTERS[name] = function
        return function

    return register


# -- entry point ------------------------------------------------------------------------------------------
