"""Move trained LSTMs between Keras files, MindSpore checkpoints, torch state dicts, safetensors and ONNX.

Python API::

    layers = unilstm.load("model.keras")                 # front-door layers, ready to call
    unilstm.save(layers, "model.ckpt", prefix="encoder.")
    report = unilstm.convert("model.keras", "model.onnx")  # write, then prove the numbers match

How it works. Every file is read into :class:`Unit` s: one LSTM stack each, described by an
:class:`~unilstm.spec.LSTMSpec` (what it computes), its parameters in torch layout (canonical names
``weight_ih_l0`` ...), and for Keras layers the Keras-only output conventions (:class:`KerasGlue`:
return_sequences, Bidirectional merge mode ...). A Keras stack of LSTMs that feed each other (adjacent in a
Sequential model, returning sequences, same cell) becomes one multi-layer unit when the target is torch,
MindSpore or ONNX. Writing checks that the target framework can express each unit's semantics and refuses
with :class:`ConversionError` naming every feature it cannot (``weights_only=True`` writes the weights
anyway). :func:`convert` then verifies: it reads the written file back, runs the source semantics and the
target semantics (plus the glue the emitted code uses) through the engine, or through onnxruntime for
ONNX, on random inputs with and without right-padded masks, and reports the largest difference per output.
The target is written to a temporary file next to it and renamed over the destination only when the check
passes, so a failed conversion leaves the user's files untouched.

Formats (``--from`` / ``--to`` names): ``keras`` (.keras), ``weights.h5`` (Keras 3 weights store), ``h5``
(legacy Keras .h5, read only), ``ckpt`` (MindSpore), ``pt`` (.pt / .pth torch state dict), ``safetensors``,
``onnx`` (write only).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .formats import layout
from .formats.torch_files import TorchFileError
from .layer import LSTM, parameter_names
from .spec import LSTMSpec

PathLike = str | os.PathLike

FORMATS = ("keras", "weights.h5", "h5", "ckpt", "pt", "safetensors", "onnx")
READABLE = ("keras", "weights.h5", "h5", "ckpt", "pt", "safetensors")
WRITABLE = ("keras", "weights.h5", "ckpt", "pt", "safetensors", "onnx")
FRAMEWORK_OF = {
    "keras": "keras",
    "weights.h5": "keras",
    "h5": "keras",
    "ckpt": "mindspore",
    "pt": "torch",
    "safetensors": "torch",
    "onnx": "onnx",
}
METADATA_KEY = "unilstm.units"
_PARAM = re.compile(
    r"^(?P<prefix>.*?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)"
    r"(?P<reverse>_reverse)?$"
)
# Keras arguments that act only while training (losses and weight projections after optimizer steps).
_KERAS_TRAINING_PENALTIES = (
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)
_KERAS_INFERENCE_ONLY = (
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "unit_forget_bias",
    *_KERAS_TRAINING_PENALTIES,
    "seed",
    "unroll",
    "trainable",
    "implementation",
    "use_cudnn",
)


class ConversionError(ValueError):
    """A conversion that cannot be done as asked: an unreadable file, a format that cannot hold the layers,
    or semantics the target framework cannot express. The message names the file, layer and feature."""


class VerificationError(ConversionError):
    """The target's numbers differ from the source's by more than the tolerance (see ``report``)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# -- formats -----------------------------------------------------------------------------------------------


def detect_format(path: PathLike, given: str | None = None) -> str:
    """The format name of ``path`` (see :data:`FORMATS`): ``given`` when set, else from the extension."""
    if given is not None:
        if given not in FORMATS:
            raise ConversionError(f"format: unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    name = Path(path).name.lower()
    if name.endswith(".weights.h5"):
        return "weights.h5"
    suffix = Path(name).suffix
    table = {
        ".keras": "keras",
        ".h5": "h5",
        ".hdf5": "h5",
        ".ckpt": "ckpt",
        ".pt": "pt",
        ".pth": "pt",
        ".bin": "pt",
        ".safetensors": "safetensors",
        ".onnx": "onnx",
    }
    if suffix in table:
        return table[suffix]
    raise ConversionError(
        f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; expected .keras, "
        ".weights.h5, .h5, .ckpt, .pt, .pth, .safetensors or .onnx, or give it with --from / --to"
    )


# -- the units -----------------------------------------------------------------------------------------------


@dataclass
class KerasGlue:
    """What a Keras layer does beyond the LSTM stack: its output conventions and its stored config.

    Attributes:
        class_name: ``"LSTM"`` or ``"Bidirectional"``.
        return_sequences: all outputs (True) or only the last one in processing order.
        return_state: the layer also returns its final states.
        merge_mode: a Bidirectional's ``concat`` / ``sum`` / ``mul`` / ``ave`` / ``None``.
        configs: the stored config of every Keras layer in the unit (one per layer of the stack).
        names: the Keras layer names (one per layer of the stack).
        keras2: written by Keras 2 (tf-keras): ``hard_sigmoid`` is Keras 2's.
        time_major: tf-keras's time_major=True.
    """

    class_name: str = "LSTM"
    return_sequences: bool = False
    return_state: bool = False
    merge_mode: str | None = "concat"
    configs: list[dict[str, Any] | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    keras2: bool = False
    time_major: bool = False


@dataclass
class Unit:
    """One LSTM stack as the converter sees it.

    Attributes:
        name: the layer's name (or key) in the source file, or the prefix of its parameters.
        spec: what it computes (Keras semantics included: activations, go_backwards, masked outputs).
        state: its parameters in torch layout under canonical names (``weight_ih_l0`` ...).
        framework: ``"keras"``, ``"mindspore"`` or ``"torch"``: whose conventions the source follows.
        keras: Keras's output conventions, for units read from Keras files.
        notes: what was not interpreted or is assumed (shown by ``inspect``).
        config_stored: False when the file holds weights only and the configuration is assumed.
    """

    name: str
    spec: LSTMSpec
    state: OrderedDict[str, Tensor]
    framework: str
    keras: KerasGlue | None = None
    notes: list[str] = field(default_factory=list)
    config_stored: bool = True
    blocking: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.state.values())).dtype

    def layer(self, *, batch_first: bool | None = None, dtype: torch.dtype | None = None) -> LSTM:
        """A canonical :class:`unilstm.LSTM` computing this unit (eval mode)."""
        spec = self.spec if batch_first is None else replace(self.spec, batch_first=batch_first)
        module = LSTM.from_spec(spec, dtype=dtype or self.dtype)
        with torch.no_grad():
            for name in parameter_names(spec):
                getattr(module, name).copy_(self.state[name].to(dtype or self.dtype))
        return module.eval()

    def describe(self) -> str:
        s = self.spec
        parts = [f"input_size={s.input_size}", f"hidden_size={s.hidden_size}"]
        if s.num_layers > 1:
            parts.append(f"num_layers={s.num_layers}")
        if s.bidirectional:
            parts.append("bidirectional")
        if not s.bias:
            parts.append("bias=False")
        if s.proj_size:
            parts.append(f"proj_size={s.proj_size}")
        if s.activation != "tanh":
            parts.append(f"activation={_activation_text(s.activation)}")
        if s.recurrent_activation != "sigmoid":
            parts.append(f"recurrent_activation={_activation_text(s.recurrent_activation)}")
        if s.go_backwards:
            parts.append("go_backwards")
        if self.keras is not None:
            parts.append(f"return_sequences={self.keras.return_sequences}")
            if self.keras.class_name == "Bidirectional":
                parts.append(f"merge_mode={self.keras.merge_mode}")
        return f"{self.name!r}: {', '.join(parts)}, {str(self.dtype).replace('torch.', '')}"


def _activation_text(value: object) -> str:
    if value is None or isinstance(value, str):
        return repr(value)
    return getattr(value, "__name__", repr(value))


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


# -- reading -------------------------------------------------------------------------------------------------


def _keras_activation(value: object, keras2: bool, custom_objects: dict[str, Any], where: str) -> object:
    from .activations import REGISTRY

    if (
        isinstance(value, dict)
        and value.get("class_name") == "function"
        and isinstance(value.get("config"), str)
    ):
        value = value["config"]
    if value is None or value == "linear":
        return None if value is None else "linear"
    if isinstance(value, str):
        if value in custom_objects:
            return custom_objects[value]
        if keras2 and value == "hard_sigmoid":
            return "hard_sigmoid_keras2"
        if value in REGISTRY:
            return value
        raise ConversionError(
            f"{where}: activation {value!r} is not a Keras built-in; pass custom_objects={{{value!r}: fn}}"
        )
    raise ConversionError(f"{where}: cannot read the activation {value!r}")


def _unit_from_keras_record(record: Any, path: PathLike, custom_objects: dict[str, Any]) -> Unit:
    from .formats.keras_files import _lstm_configs

    where = f"{path}: layer {record.describe()}"
    bidirectional = record.class_name == "Bidirectional"
    halves = (
        [record.weights[: len(record.weights) // 2], record.weights[len(record.weights) // 2 :]]
        if bidirectional
        else [record.weights]
    )
    configs = _lstm_configs(record.class_name, record.config)
    stored = bool(configs)
    config = configs[0] if configs else {}
    if bidirectional and len(configs) == 2:
        keys = ("units", "activation", "recurrent_activation", "use_bias")
        differing = [k for k in keys if configs[0].get(k) != configs[1].get(k)]
    else:
        differing = []
    keras2 = record.is_keras2
    notes = (
        []
        if stored
        else [
            "weights only: no config stored, Keras defaults assumed (tanh, sigmoid, return_sequences=False)"
        ]
    )
    unreadable = []
    try:
        activation = _keras_activation(config.get("activation", "tanh"), keras2, custom_objects, where)
    except ConversionError as error:
        activation, unreadable = "tanh", [str(error).split(": ", 2)[-1]]
    try:
        recurrent = _keras_activation(
            config.get("recurrent_activation", "sigmoid"), keras2, custom_objects, where
        )
    except ConversionError as error:
        recurrent, unreadable = "sigmoid", [*unreadable, str(error).split(": ", 2)[-1]]
    return_sequences = bool(config.get("return_sequences", False))
    zero_output = bool(config.get("zero_output_for_mask", False)) or (bidirectional and return_sequences)
    time_major = bool(config.get("time_major", False))
    dropout = float(config.get("dropout", 0.0) or 0.0)
    recurrent_dropout = float(config.get("recurrent_dropout", 0.0) or 0.0)
    kernel, recurrent_kernel = halves[0][0], halves[0][1]
    spec = LSTMSpec(
        input_size=int(kernel.shape[0]),
        hidden_size=int(recurrent_kernel.shape[0]),
        bias=len(halves[0]) == 3,
        batch_first=not time_major,
        bidirectional=bidirectional,
        activation=activation,
        recurrent_activation=recurrent,
        input_dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        per_gate_dropout=recurrent_dropout > 0,
        go_backwards=bool(config.get("go_backwards", False)),
        masked_output="zero" if zero_output else "previous",
        stateful=bool(config.get("stateful", False)),
    )
    state: OrderedDict[str, Tensor] = OrderedDict()
    for direction, arrays in enumerate(halves):
        torch_arrays = layout.torch_from_keras(*arrays)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if kind in torch_arrays:
                state[kind + _suffix(0, direction)] = torch.from_numpy(
                    np.ascontiguousarray(torch_arrays[kind])
                )
    merge = record.config.get("merge_mode", "concat") if (bidirectional and record.config) else "concat"
    glue = KerasGlue(
        class_name=record.class_name,
        return_sequences=return_sequences,
        return_state=bool(config.get("return_state", False)),
        merge_mode=merge,
        configs=[record.config],
        names=[record.name or record.key],
        keras2=keras2,
        time_major=time_major,
    )
    unit = Unit(record.name or record.key, spec, state, "keras", glue, notes, stored)
    if unreadable:
        unit.blocking = "; ".join(unreadable)
        unit.notes.append(unit.blocking)
    elif differing:
        unit.blocking = (
            f"its backward layer differs from the forward one ({', '.join(differing)}): one bidirectional "
            "LSTM cannot express it"
        )
        unit.notes.append(unit.blocking)
    return unit


def _keras_sequence(path: PathLike) -> list[str] | None:
    """The layer names of a top-level Sequential model in a .keras / legacy .h5 file, in order (None when the
    file holds no Sequential config)."""
    config = None
    with contextlib.suppress(Exception):
        import zipfile

        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    if config is None:
        with contextlib.suppress(Exception):
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
                if raw is not None:
                    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        return None
    layers = config.get("config", {}).get("layers", [])
    return [
        entry.get("config", {}).get("name") for entry in layers if entry.get("class_name") != "InputLayer"
    ]


def _group_state(
    tensors: OrderedDict[str, Tensor], where: str
) -> tuple[dict[str, OrderedDict[str, Tensor]], list[str]]:
    """Split tensors into LSTMs by name prefix; returns ({prefix: canonical state}, names not understood)."""
    groups: dict[str, OrderedDict[str, Tensor]] = OrderedDict()
    other: list[str] = []
    for name, tensor in tensors.items():
        match = _PARAM.match(name)
        if match is None or not isinstance(tensor, Tensor):
            other.append(name)
            continue
        groups.setdefault(match["prefix"], OrderedDict())[name[len(match["prefix"]) :]] = tensor
    return groups, other


def _spec_from_state(state: OrderedDict[str, Tensor], where: str) -> LSTMSpec:
    """torch.nn.LSTM's configuration from its parameters' names and shapes."""
    layers = 1 + max(int(_PARAM.match(n)["layer"]) for n in state)
    bidirectional = any(n.endswith("_reverse") for n in state)
    bias = "bias_ih_l0" in state
    proj = int(state["weight_hr_l0"].shape[0]) if "weight_hr_l0" in state else 0
    try:
        w_ih = state["weight_ih_l0"]
        hidden = int(state["weight_hh_l0"].shape[0]) // 4
        spec = LSTMSpec(
            int(w_ih.shape[1]), hidden, layers, bias=bias, bidirectional=bidirectional, proj_size=proj
        )
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise ConversionError(
            f"{where}: the LSTM parameters are incomplete or inconsistent ({error})"
        ) from None
    expected = parameter_names(spec)
    if sorted(expected) != sorted(state):
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        raise ConversionError(
            f"{where}: the LSTM parameters do not form a torch LSTM: missing {missing}, unexpected {extra}"
        )
    from .layer import parameter_shape

    for name in expected:
        want = parameter_shape(spec, name)
        if tuple(state[name].shape) != want:
            raise ConversionError(
                f"{where}: {name} has shape {tuple(state[name].shape)}, expected {want} for "
                f"hidden_size={hidden}"
            )
        if not state[name].is_floating_point():
            raise ConversionError(f"{where}: {name} has dtype {state[name].dtype}, expected a float dtype")
    return spec


def _spec_to_json(unit: Unit) -> dict[str, Any]:
    spec = {k: getattr(unit.spec, k) for k in LSTMSpec.__dataclass_fields__}
    for key in ("activation", "recurrent_activation"):
        if not (spec[key] is None or isinstance(spec[key], str)):
            spec[key] = "<callable>"
    keras = None
    if unit.keras is not None:
        keras = {
            "class_name": unit.keras.class_name,
            "return_sequences": unit.keras.return_sequences,
            "return_state": unit.keras.return_state,
            "merge_mode": unit.keras.merge_mode,
            "names": unit.keras.names,
            "keras2": unit.keras.keras2,
        }
    return {"name": unit.name, "framework": unit.framework, "spec": spec, "keras": keras}


def _units_from_state(
    tensors: OrderedDict[str, Tensor], where: str, framework: str, metadata: dict[str, str] | None = None
) -> list[Unit]:
    groups, other = _group_state(tensors, where)
    if not groups:
        shown = ", ".join(list(tensors)[:8]) or "none"
        raise ConversionError(f"{where}: no LSTM parameters (weight_ih_l0 ...) in this file; names: {shown}")
    described: dict[str, dict] = {}
    if metadata and METADATA_KEY in metadata:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            described = {entry["prefix"]: entry for entry in json.loads(metadata[METADATA_KEY])}
    units = []
    for prefix, state in groups.items():
        spec = _spec_from_state(state, f"{where}: LSTM {prefix or '(no prefix)'!r}")
        state = OrderedDict((name, state[name]) for name in parameter_names(spec))
        unit = Unit(prefix.rstrip(".") or "lstm", spec, state, framework)
        entry = described.get(prefix)
        if entry is not None:
            _apply_described(unit, entry, where)
        units.append(unit)
    if other:
        units[0].notes.append(
            f"not LSTM parameters, ignored: {', '.join(other[:10])}" + (" ..." if len(other) > 10 else "")
        )
    return units


def _apply_described(unit: Unit, entry: dict, where: str) -> None:
    """Restore the semantics unilstm stored next to the weights (safetensors metadata, a .ckpt str entry)."""
    stored = entry.get("spec") or {}
    names = {k: stored[k] for k in LSTMSpec.__dataclass_fields__ if k in stored}
    for key in ("activation", "recurrent_activation"):
        if names.get(key) == "<callable>":
            names.pop(key)
            unit.notes.append(f"{key} was a Python callable; tanh/sigmoid assumed")
    try:
        candidate = replace(unit.spec, **{k: v for k, v in names.items() if k != "input_size"})
    except (TypeError, ValueError) as error:
        unit.notes.append(f"stored semantics ignored ({error})")
        return
    if parameter_names(candidate) != parameter_names(unit.spec):
        unit.notes.append("stored semantics do not fit the weights; ignored")
        return
    unit.spec = candidate
    unit.framework = entry.get("framework", unit.framework)
    unit.name = entry.get("name", unit.name)
    keras = entry.get("keras")
    if isinstance(keras, dict):
        unit.keras = KerasGlue(
            class_name=keras.get("class_name", "LSTM"),
            return_sequences=bool(keras.get("return_sequences")),
            return_state=bool(keras.get("return_state")),
            merge_mode=keras.get("merge_mode", "concat"),
            configs=[None],
            names=list(keras.get("names") or [unit.name]),
            keras2=bool(keras.get("keras2")),
        )


def read_units(
    path: PathLike,
    *,
    fmt: str | None = None,
    layer: str | None = None,
    prefix: str | None = None,
    custom_objects: dict[str, Any] | None = None,
) -> list[Unit]:
    """Read the LSTM layers of ``path`` as :class:`Unit` s (see the module docstring).

    Args:
        fmt: the format name; from the extension when None.
        layer: keep only the layer with this name / key (Keras) or parameter prefix (torch, MindSpore).
        prefix: keep only parameters under this prefix, without it (``"encoder."``), for .ckpt/.pt files.
        custom_objects: Keras custom activations by stored name -> function on torch tensors.

    Raises:
        ConversionError (and the format readers' own ValueError subclasses, KerasFileError, CheckpointError,
        TorchFileError): unreadable files, no LSTM in them, no such layer.
    """
    fmt = detect_format(path, fmt)
    if fmt not in READABLE:
        raise ConversionError(f"{path}: {fmt} files can be written, not read")
    if not Path(path).is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        units = _read_units(path, fmt, prefix, dict(custom_objects or {}))
    except (ConversionError, TorchFileError):
        raise
    except Exception as error:
        from .formats.keras_files import KerasFileError
        from .formats.mindspore_ckpt import CheckpointError

        if isinstance(error, (KerasFileError, CheckpointError)):
            raise
        raise ConversionError(
            f"{path}: cannot read this {fmt} file ({type(error).__name__}: {error})"
        ) from None
    if layer is not None:
        chosen = [u for u in units if u.name == layer or (u.keras and layer in u.keras.names)]
        if not chosen:
            raise ConversionError(
                f"{path}: no LSTM layer named {layer!r}; layers: " + ", ".join(repr(u.name) for u in units)
            )
        units = chosen
    return units


def _read_units(path: PathLike, fmt: str, prefix: str | None, custom_objects: dict[str, Any]) -> list[Unit]:
    if FRAMEWORK_OF[fmt] == "keras":
        from .formats.keras_files import read_keras_lstm_layers

        records = read_keras_lstm_layers(path)
        if not records:
            raise ConversionError(f"{path}: no LSTM or Bidirectional(LSTM) layer in this Keras file")
        units = [_unit_from_keras_record(r, path, custom_objects) for r in records]
        sequence = _keras_sequence(path) if fmt != "weights.h5" else None
        return _mark_adjacent(units, sequence)
    if fmt == "ckpt":
        from .formats.mindspore_ckpt import load_checkpoint

        values = load_checkpoint(path, prefix=prefix)
        tensors = OrderedDict((k, v) for k, v in values.items() if isinstance(v, Tensor))
        metadata = {METADATA_KEY: values[METADATA_KEY]} if isinstance(values.get(METADATA_KEY), str) else None
        return _units_from_state(tensors, str(path), "mindspore", metadata)
    from .formats.torch_files import _strip_prefix, read_safetensors, read_torch_file

    if fmt == "safetensors":
        tensors, metadata = read_safetensors(path)
    else:
        tensors, skipped = read_torch_file(path)
        metadata = None
    tensors = _strip_prefix(tensors, prefix, str(path))
    units = _units_from_state(tensors, str(path), "torch", metadata)
    if fmt == "pt" and skipped:
        units[0].notes.append(f"not tensors, ignored: {', '.join(skipped[:10])}")
    return units


def _mark_adjacent(units: list[Unit], sequence: list[str] | None) -> list[Unit]:
    """Record in each Keras unit whether it directly follows the previous unit in a Sequential model."""
    if sequence is None:
        return units
    positions = {name: index for index, name in enumerate(sequence)}
    for previous, unit in zip(units, units[1:], strict=False):
        a = positions.get(previous.keras.names[-1]) if previous.keras else None
        b = positions.get(unit.keras.names[0]) if unit.keras else None
        if a is not None and b is not None and b == a + 1:
            unit.notes.append("follows the previous layer")
    return units


# -- merging a Keras stack ----------------------------------------------------------------------------------


def _mergeable(first: Unit, second: Unit) -> str | None:
    """None when ``second`` stacked on ``first`` is one multi-layer LSTM numerically, else why not."""
    a, b = first.spec, second.spec
    if "follows the previous layer" not in second.notes:
        return "not adjacent in a Sequential model"
    if first.keras is None or second.keras is None:
        return "not Keras layers"
    if not first.keras.return_sequences or first.keras.return_state:
        return "the first does not return sequences"
    if first.keras.class_name == "Bidirectional" and first.keras.merge_mode != "concat":
        return f"merge_mode={first.keras.merge_mode!r} (only concat stacks)"
    for key in (
        "hidden_size",
        "bias",
        "bidirectional",
        "activation",
        "recurrent_activation",
        "input_dropout",
        "recurrent_dropout",
        "batch_first",
    ):
        if getattr(a, key) != getattr(b, key):
            return f"different {key}"
    if a.go_backwards or b.go_backwards or a.stateful or b.stateful:
        return "go_backwards or stateful"
    if first.dtype != second.dtype:
        return "different dtypes"
    return None


def merge_stacks(units: list[Unit]) -> list[Unit]:
    """Merge runs of Keras layers that form one multi-layer LSTM (see :func:`_mergeable`)."""
    merged: list[Unit] = []
    for unit in units:
        if merged and _mergeable(merged[-1], unit) is None:
            top = merged[-1]
            layers = top.spec.num_layers
            state = OrderedDict(top.state)
            for name, tensor in unit.state.items():
                state[name.replace("_l0", f"_l{layers}")] = tensor
            spec = replace(top.spec, num_layers=layers + 1, masked_output=unit.spec.masked_output)
            glue = replace(
                unit.keras,
                configs=top.keras.configs + unit.keras.configs,
                names=top.keras.names + unit.keras.names,
            )
            merged[-1] = Unit(
                f"{top.name}+{unit.name}",
                spec,
                state,
                "keras",
                glue,
                top.notes + [n for n in unit.notes if n not in top.notes],
                top.config_stored,
            )
        else:
            merged.append(
                Unit(
                    unit.name,
                    unit.spec,
                    OrderedDict(unit.state),
                    unit.framework,
                    unit.keras,
                    list(unit.notes),
                    unit.config_stored,
                )
            )
    return merged


# -- what a target can express ----------------------------------------------------------------------------


def target_problems(unit: Unit, target: str) -> list[str]:
    """Every feature of ``unit`` that framework ``target`` cannot express (empty when it can)."""
    s = unit.spec
    problems = []
    name = {"torch": "torch.nn.LSTM", "mindspore": "mindspore.nn.LSTM"}.get(target, target)
    if target in ("torch", "mindspore"):
        if s.activation != "tanh":
            problems.append(f"activation={_activation_text(s.activation)}: {name} computes tanh only")
        if s.recurrent_activation != "sigmoid":
            problems.append(
                f"recurrent_activation={_activation_text(s.recurrent_activation)}: {name} gates with "
                "sigmoid only"
            )
        if target == "mindspore" and s.proj_size:
            problems.append(f"proj_size={s.proj_size}: mindspore.nn.LSTM has no projection")
        if s.go_backwards and s.bidirectional:
            problems.append("go_backwards on a Bidirectional: no glue for it")
    elif target == "keras":
        if s.proj_size:
            problems.append(f"proj_size={s.proj_size}: Keras's LSTM has no projection")
        for key in ("activation", "recurrent_activation"):
            value = getattr(s, key)
            if value == "hard_sigmoid_keras2":
                problems.append(
                    f"{key}=Keras 2's hard_sigmoid (clip(0.2x+0.5)): Keras 3 files cannot name it"
                )
            elif not (value is None or isinstance(value, str)):
                problems.append(f"{key}={_activation_text(value)}: Keras files can only name built-ins")
        if unit.framework != "keras" and s.num_layers > 1 and s.dropout:
            problems.append(f"dropout={s.dropout} between layers: Keras LSTMs have none (training only)")
    elif target == "onnx":
        from .formats.onnx_export import OnnxExportError, check_exportable

        try:
            check_exportable(s)
        except OnnxExportError as error:
            problems.append(str(error))
        if unit.keras is not None and unit.keras.merge_mode is None:
            problems.append("merge_mode=None (two outputs): the ONNX graph returns one output")
    return problems


# -- running semantics --------------------------------------------------------------------------------------


def _merge(out: Tensor, merge_mode: str | None, hidden: int) -> Tensor:
    if merge_mode in (None, "concat"):
        return out
    forward, backward = out[..., :hidden], out[..., hidden:]
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    return (forward + backward) / 2


def keras_outputs(unit: Unit, out: Tensor, h_n: Tensor, c_n: Tensor) -> dict[str, Tensor]:
    """Keras's outputs from a canonical run (batch-major out (B, T, D*H), h_n, c_n (L*D, B, H))."""
    glue = unit.keras
    hidden = unit.spec.hidden_size
    if glue.return_sequences:
        output = out
    elif unit.spec.bidirectional:
        # forward: last step of its processing order; backward: its processing order ends at time 0
        first, last = (0, -1) if not unit.spec.go_backwards else (-1, 0)
        output = torch.cat([out[:, last, :hidden], out[:, first, hidden:]], dim=-1)
    else:
        output = out[:, -1]
    return {"output": _merge(output, glue.merge_mode, hidden), "h_n": h_n, "c_n": c_n}


def run_source(unit: Unit, x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
    """The unit's own semantics on batch-major ``x`` (B, T, F): output batch-major, h_n, c_n."""
    with torch.no_grad():
        out, (h_n, c_n) = unit.layer(batch_first=True, dtype=x.dtype)(x, lengths=lengths)
    if unit.keras is not None:
        return keras_outputs(unit, out, h_n, c_n)
    return {"output": out, "h_n": h_n, "c_n": c_n}


def torch_glue_run(unit: Unit, target_layer: LSTM, x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
    """torch / MindSpore semantics (tanh, sigmoid, packed lengths, zeros past a length) of ``target_layer``
    plus the glue the emitted code applies for the source's Keras conventions."""
    keras = unit.keras
    backwards = keras is not None and unit.spec.go_backwards
    if backwards:
        x = x.flip(1) if lengths is None else gather_steps(x, reversed_prefix_index(lengths, x.shape[1]))
    with torch.no_grad():
        out, (h_n, c_n) = target_layer(x, lengths=lengths)
    if keras is None:
        return {"output": out, "h_n": h_n, "c_n": c_n}
    hidden = unit.spec.hidden_size
    if backwards and lengths is not None:
        # Keras's processing order: the padded steps first (zeros; the state stays initial), then the valid
        # prefix reversed, which the packed run left at the front; so "previous output" needs no fix here
        out = gather_steps(out, processing_order_index(lengths, out.shape[1]))
    elif lengths is not None and unit.spec.masked_output == "previous":
        out = previous_output_fix(out, h_n[-unit.spec.num_directions], lengths, hidden)
    return keras_outputs(unit, out, h_n, c_n)


def reversed_prefix_index(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) time indices that reverse each row's valid prefix: step t < len reads step len-1-t (steps past
    the length read padding, which a run with lengths ignores). Keras's go_backwards with a right-padded mask
    processes exactly these valid steps, after the padded ones (which leave the state alone)."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return (lengths.long().unsqueeze(1) - 1 - t + steps) % steps


def processing_order_index(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) time indices taking a run on :func:`reversed_prefix_index` input (valid outputs at the front,
    zeros past the length) to Keras's go_backwards output order: T-len zeros, then the len valid outputs."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return (t + lengths.long().unsqueeze(1)) % steps


def gather_steps(values: Tensor, index: Tensor) -> Tensor:
    """values (B, T, F) gathered along time with a (B, T) index."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def previous_output_fix(out: Tensor, last_h: Tensor, lengths: Tensor, hidden: int) -> Tensor:
    """Keras's default masked output: past each length the forward direction repeats its last valid output
    (its final h; zeros for an empty sequence) instead of zeros. out (B, T, D*H), last_h (B, H)."""
    steps = out.shape[1]
    padded = torch.arange(steps).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T)
    fill = torch.where((lengths > 0).unsqueeze(1), last_h, torch.zeros_like(last_h)).unsqueeze(1)
    forward = torch.where(padded.unsqueeze(-1), fill, out[..., :hidden])
    return torch.cat([forward, out[..., hidden:]], dim=-1)


def _plain_torch_spec(spec: LSTMSpec) -> LSTMSpec:
    return LSTMSpec(
        spec.input_size,
        spec.hidden_size,
        spec.num_layers,
        bias=spec.bias,
        batch_first=True,
        bidirectional=spec.bidirectional,
        proj_size=spec.proj_size,
    )


# -- writing ------------------------------------------------------------------------------------------------


def _unit_prefixes(units: list[Unit], prefix: str) -> list[str]:
    if len(units) == 1:
        return [prefix]
    seen: dict[str, int] = {}
    result = []
    for unit in units:
        base = re.sub(r"\W", "_", unit.name.split("+")[0]) or "lstm"
        if base[0].isdigit():
            base = "lstm_" + base
        seen[base] = seen.get(base, -1) + 1
        result.append(f"{prefix}{base}{'' if seen[base] == 0 else f'_{seen[base]}'}.")
    return result


def _keras_config(name: str, spec: LSTMSpec, return_sequences: bool, zero_output: bool) -> dict[str, Any]:
    def act(value: object) -> object:
        return "linear" if value is None else value

    return {
        "name": name,
        "trainable": True,
        "return_sequences": return_sequences,
        "return_state": False,
        "go_backwards": spec.go_backwards,
        "stateful": spec.stateful,
        "unroll": False,
        "zero_output_for_mask": zero_output,
        "units": spec.hidden_size,
        "activation": act(spec.activation),
        "recurrent_activation": act(spec.recurrent_activation),
        "use_bias": spec.bias,
        "unit_forget_bias": True,
        "dropout": spec.input_dropout,
        "recurrent_dropout": spec.recurrent_dropout,
        "seed": None,
    }


def _keras_weights(unit: Unit, layer: int, direction: int) -> list[np.ndarray]:
    sfx = _suffix(layer, direction)
    s = unit.state
    arrays = layout.keras_from_torch(
        s["weight_ih" + sfx], s["weight_hh" + sfx], s.get("bias_ih" + sfx), s.get("bias_hh" + sfx)
    )
    if unit.spec.bias and not bool(torch.any(s["bias_hh" + sfx] != 0)):
        arrays[2] = s["bias_ih" + sfx].detach().cpu().numpy().copy()  # keep the bits (-0.0 stays -0.0)
    return arrays


def keras_records(units: list[Unit]) -> list[Any]:
    """Keras 3 layer records (config + Keras-layout weights) for ``units``: each layer of a stack becomes a
    Keras LSTM, a bidirectional layer a Bidirectional(LSTM)."""
    from .formats.keras_files import KerasLayerRecord

    records = []
    used: set[str] = set()
    for unit in units:
        s = unit.spec
        for layer in range(s.num_layers):
            stored = unit.keras.configs[layer] if unit.keras and layer < len(unit.keras.configs) else None
            last = layer == s.num_layers - 1
            if unit.keras is not None:
                return_sequences = unit.keras.return_sequences if last else True
            else:
                return_sequences = True
            name = (
                unit.keras.names[layer]
                if unit.keras and layer < len(unit.keras.names)
                else f"{unit.name}_l{layer}"
                if s.num_layers > 1
                else unit.name
            )
            name = re.sub(r"[^\w]", "_", name)
            while name in used:
                name += "_"
            used.add(name)
            weights = []
            for direction in range(s.num_directions):
                weights += _keras_weights(unit, layer, direction)
            if stored is not None and unit.framework == "keras":
                config = json.loads(json.dumps(stored))
            else:
                zero = unit.keras is None or s.masked_output == "zero"
                inner = _keras_config(
                    name if not s.bidirectional else f"forward_{name}", s, return_sequences, zero
                )
                if s.bidirectional:
                    merge = unit.keras.merge_mode if unit.keras and last else "concat"
                    config = {
                        "name": name,
                        "trainable": True,
                        "merge_mode": merge,
                        "layer": {
                            "module": "keras.layers",
                            "class_name": "LSTM",
                            "config": inner,
                            "registered_name": None,
                        },
                    }
                else:
                    config = inner
            class_name = "Bidirectional" if s.bidirectional else "LSTM"
            records.append(KerasLayerRecord(name, name, class_name, config, weights, None, "keras"))
    return records


def _ckpt_payload(units: list[Unit], prefixes: list[str]) -> tuple[OrderedDict[str, Tensor], str]:
    from .formats.mindspore_ckpt import mindspore_parameter_order

    tensors: OrderedDict[str, Tensor] = OrderedDict()
    for unit, prefix in zip(units, prefixes, strict=False):
        for name in mindspore_parameter_order(list(unit.state)):
            tensors[prefix + name] = unit.state[name]
    return tensors, _describe_json(units, prefixes)


def _describe_json(units: list[Unit], prefixes: list[str]) -> str:
    entries = []
    for unit, prefix in zip(units, prefixes, strict=False):
        entry = _spec_to_json(unit)
        entry["prefix"] = prefix
        entries.append(entry)
    return json.dumps(entries)


def as_float32_for(units: list[Unit], framework: str) -> list[Unit]:
    """Keras files (float32 policy) and ONNX Runtime's LSTM (float32 only) get float32 weights; a note says
    so for units of another dtype."""
    if framework not in ("keras", "onnx"):
        return units
    result = []
    for unit in units:
        if unit.dtype != torch.float32:
            state = OrderedDict((name, tensor.to(torch.float32)) for name, tensor in unit.state.items())
            note = f"weights cast from {str(unit.dtype).replace('torch.', '')} to float32 for {framework}"
            unit = replace(unit, state=state, notes=[*unit.notes, note])
        result.append(unit)
    return result


def _onnx_chain_problem(units: list[Unit]) -> str | None:
    """None when ``units`` feed each other in a Keras Sequential (so one ONNX graph can chain them)."""
    for previous, unit in zip(units, units[1:], strict=False):
        if previous.keras is None or unit.keras is None or "follows the previous layer" not in unit.notes:
            return f"{unit.name!r} is not known to follow {previous.name!r} in a Sequential model"
        if not previous.keras.return_sequences or previous.keras.merge_mode is None:
            return f"{previous.name!r} does not return one sequence to {unit.name!r}"
    return None


def write_units(
    units: list[Unit],
    path: PathLike,
    fmt: str,
    *,
    prefix: str = "",
    weights_only: bool = False,
    opset: int | None = None,
    input_steps: int | None = None,
    display: PathLike | None = None,
) -> None:
    """Write ``units`` to ``path`` in format ``fmt`` (directly: :func:`convert` passes a temporary path).

    Raises:
        ConversionError: the format cannot hold the units, or (unless ``weights_only``) the target framework
            cannot express their semantics; the message lists every problem.
    """
    framework = FRAMEWORK_OF[fmt]
    shown = display if display is not None else path
    if fmt not in WRITABLE:
        raise ConversionError(f"{shown}: writing {fmt} files is not supported; write .keras or .weights.h5")
    blocked = [f"layer {unit.name!r}: {unit.blocking}" for unit in units if unit.blocking]
    if blocked:
        raise ConversionError(
            f"{shown}: cannot convert:\n  - " + "\n  - ".join(blocked) + "\n(pick other layers with --layer)"
        )
    problems = [f"layer {unit.name!r}: {p}" for unit in units for p in target_problems(unit, framework)]
    if framework == "onnx" and len(units) > 1 and _onnx_chain_problem(units):
        problems.append(
            f"an ONNX file holds one chain of LSTMs; {_onnx_chain_problem(units)} "
            f"({', '.join(repr(u.name) for u in units)}): pick one with --layer"
        )
    if problems and (not weights_only or framework == "onnx"):
        raise ConversionError(
            f"{shown}: {framework} cannot express the source's semantics:\n  - "
            + "\n  - ".join(problems)
            + ("\n(--weights-only writes the weights anyway)" if framework != "onnx" else "")
        )
    try:
        _write(units, path, fmt, prefix, opset, input_steps)
    except ConversionError:
        raise
    except (ValueError, TypeError) as error:
        raise ConversionError(f"{shown}: cannot write these layers as {fmt}: {error}") from None


def _write(
    units: list[Unit], path: PathLike, fmt: str, prefix: str, opset: int | None, input_steps: int | None
) -> None:
    prefixes = _unit_prefixes(units, prefix)
    if fmt in ("keras", "weights.h5"):
        from .formats.keras_files import write_keras_model

        records = keras_records(units)
        write_keras_model(records, path, (input_steps, units[0].spec.input_size))
    elif fmt == "ckpt":
        from .formats.mindspore_ckpt import save_checkpoint

        tensors, described = _ckpt_payload(units, prefixes)
        save_checkpoint(tensors, path, append_dict={METADATA_KEY: described})
    elif fmt in ("pt", "safetensors"):
        from .formats.torch_files import save_state_dict

        tensors = OrderedDict()
        for unit, unit_prefix in zip(units, prefixes, strict=False):
            for name, tensor in unit.state.items():
                tensors[unit_prefix + name] = tensor
        metadata = {METADATA_KEY: _describe_json(units, prefixes)} if fmt == "safetensors" else None
        save_state_dict(
            tensors, path, kind="safetensors" if fmt == "safetensors" else "torch", metadata=metadata
        )
    elif fmt == "onnx":
        from .formats.onnx_export import DEFAULT_OPSET, build_chain, write_model

        stages = [
            (
                unit.layer(),
                unit.keras.return_sequences if unit.keras else True,
                unit.keras.merge_mode if unit.keras and unit.spec.bidirectional else "concat",
            )
            for unit in units
        ]
        write_model(build_chain(stages, opset=opset or DEFAULT_OPSET, lengths=True), path)


# -- verification -------------------------------------------------------------------------------------------


def _inputs(unit: Unit, seed: int, batch: int = 3, steps: int = 7) -> list[tuple[Tensor, Tensor | None]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, unit.spec.input_size, generator=generator, dtype=torch.float32)
    return [(x, None), (x, torch.tensor([steps, max(1, steps - 3), 1][:batch]))]


def _target_runner(
    target_units: list[Unit], target_fmt: str, path: Path, source: list[Unit]
) -> list[Callable[[Tensor, Tensor | None], dict[str, Tensor]]]:
    """Per source unit: a function running the written target (read back from ``path``) with the glue."""
    framework = FRAMEWORK_OF[target_fmt]
    runners = []
    if framework == "onnx" and len(source) > 1:
        from .formats.onnx_export import run_onnx

        def run_chain(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
            use = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1])
            values = run_onnx(path, x.numpy(), lengths=use.numpy(), all_outputs=True)
            result = {"output": torch.from_numpy(values["output"])}
            for index, unit in enumerate(source):
                result[f"h_n[{unit.name}]"] = torch.from_numpy(values[f"h_n_{index}"])
                result[f"c_n[{unit.name}]"] = torch.from_numpy(values[f"c_n_{index}"])
            return result

        return [run_chain]
    if framework == "onnx":
        from .formats.onnx_export import run_onnx

        unit = source[0]

        def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
            feed = x if unit.spec.batch_first else x.transpose(0, 1)
            use = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1])
            out, h, c = run_onnx(path, feed.numpy(), lengths=use.numpy())
            out_t = torch.from_numpy(out)
            if not unit.spec.batch_first and out_t.dim() == 3:
                out_t = out_t.transpose(0, 1)
            return {"output": out_t, "h_n": torch.from_numpy(h), "c_n": torch.from_numpy(c)}

        return [run]
    if framework == "keras":
        by_layer = [u for u in target_units]
        index = 0
        for unit in source:
            chain = by_layer[index : index + unit.spec.num_layers]
            index += unit.spec.num_layers
            runners.append(_keras_chain_runner(unit, chain))
        return runners
    for unit, target in zip(source, target_units, strict=False):
        layer = LSTM.from_spec(_plain_torch_spec(target.spec), dtype=torch.float32)
        with torch.no_grad():
            for name in parameter_names(layer.spec):
                getattr(layer, name).copy_(target.state[name].float())
        layer.eval()
        runners.append(lambda x, lengths, u=unit, m=layer: torch_glue_run(u, m, x, lengths))
    return runners


def _keras_chain_runner(
    unit: Unit, chain: list[Unit]
) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        hs, cs = [], []
        value = x
        result: dict[str, Tensor] = {}
        for link in chain:
            result = run_source(link, value, lengths)
            hs.append(result["h_n"])
            cs.append(result["c_n"])
            value = result["output"]
        return {"output": result["output"], "h_n": torch.cat(hs), "c_n": torch.cat(cs)}

    return run


def _with_written_configs(source: list[Unit], path: Path) -> list[Unit]:
    """A weights-only Keras file read back with the configs of the model it was written for (the weights go
    into that architecture), matched by storage key."""
    from .formats.keras_files import KerasLayerRecord, _store_keys, read_keras_lstm_layers

    written = keras_records(source)
    stored = {r.key: r for r in read_keras_lstm_layers(path)}
    units = []
    for key, record in zip(_store_keys(written), written, strict=True):
        if key not in stored:
            raise ConversionError(f"{path}: the weights of layer {record.name!r} (key {key!r}) are missing")
        again = KerasLayerRecord(key, record.name, record.class_name, record.config, stored[key].weights)
        units.append(_unit_from_keras_record(again, path, {}))
    return units


def verify(source: list[Unit], target_fmt: str, path: Path, *, seed: int = 0) -> dict[str, Any]:
    """Run source and written target on random inputs; ``{layer: {case: {output: max |diff|}}}``."""
    framework = FRAMEWORK_OF[target_fmt]
    if framework == "onnx":
        target_units: list[Unit] = []
    else:
        target_units = read_units(path, fmt=target_fmt)
        if target_fmt == "weights.h5":
            target_units = _with_written_configs(source, path)
        if framework != "keras" and len(target_units) != len(source):
            raise ConversionError(f"{path}: read back {len(target_units)} LSTMs, wrote {len(source)}")
    runners = _target_runner(target_units, target_fmt, path, source)
    if framework == "onnx" and len(source) > 1:
        return {
            "+".join(u.name for u in source): _compare(_source_chain(source), runners[0], source[0], seed)
        }
    report: dict[str, Any] = {}
    for index, (unit, runner) in enumerate(zip(source, runners, strict=False)):
        report[unit.name] = _compare(
            lambda x, lengths, u=unit: run_source(u, x, lengths), runner, unit, seed + index
        )
    return report


def _source_chain(units: list[Unit]) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    """The source semantics of Keras layers feeding each other: final output and every layer's states."""

    def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        result: dict[str, Tensor] = {}
        value = x
        for unit in units:
            step = run_source(unit, value, lengths)
            value = step["output"]
            result[f"h_n[{unit.name}]"], result[f"c_n[{unit.name}]"] = step["h_n"], step["c_n"]
        return {"output": value, **result}

    return run


def _compare(
    expected_run: Callable[[Tensor, Tensor | None], dict[str, Tensor]],
    runner: Callable[[Tensor, Tensor | None], dict[str, Tensor]],
    unit: Unit,
    seed: int,
) -> dict[str, Any]:
    diffs: dict[str, Any] = {}
    for x, lengths in _inputs(unit, seed):
        expected = expected_run(x, lengths)
        try:
            got = runner(x, lengths)
        except ConversionError:
            raise
        except Exception as error:  # the target could not be run (onnxruntime refusing it ...)
            raise ConversionError(
                f"verification: running the written target failed ({type(error).__name__}: {error})"
            ) from None
        case = "no mask" if lengths is None else f"lengths {lengths.tolist()}"
        diffs[case] = {}
        for key, value in expected.items():
            if key not in got:
                continue
            other = got[key].to(value.dtype)
            if other.shape != value.shape:
                raise ConversionError(
                    f"verification: {unit.name!r} {key} has shape {tuple(other.shape)} in "
                    f"the target, {tuple(value.shape)} in the source"
                )
            diffs[case][key] = _max_abs_difference(other, value)
    return diffs


def _max_abs_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b|, where equal values (infinities included) and NaN in both count as 0 and a NaN in one
    only as infinity."""
    if a.numel() == 0:
        return 0.0
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max())


def max_difference(report: dict[str, Any]) -> float:
    return max(
        (d for cases in report.values() for outs in cases.values() for d in outs.values()), default=0.0
    )


# -- conversion ---------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What :func:`convert` did."""

    source: str
    target: str
    source_format: str
    target_format: str
    layers: list[str]
    differences: dict[str, Any]
    max_difference: float
    tolerance: float
    verified: bool
    notes: list[str]
    emitted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _temporary_path(target: Path) -> Path:
    return target.parent / f".unilstm-{secrets.token_hex(4)}-{target.name}"


def convert(
    source: PathLike,
    target: PathLike,
    *,
    source_format: str | None = None,
    target_format: str | None = None,
    layer: str | None = None,
    prefix: str = "",
    source_prefix: str | None = None,
    weights_only: bool = False,
    tolerance: float = 1e-5,
    verify_numbers: bool = True,
    emit_code: PathLike | None = None,
    custom_objects: dict[str, Any] | None = None,
    opset: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert ``source`` to ``target`` and prove the numbers match.

    Example::

        >>> report = unilstm.convert("model.keras", "model.ckpt", prefix="encoder.", emit_code="model_ms.py")
        >>> report.max_difference
        2.384185791015625e-07

    Args:
        source, target: files; formats from the extensions or ``source_format`` / ``target_format``.
        layer: convert only this layer (Keras name or key, or parameter prefix).
        prefix: put this in front of every parameter name written (``"encoder."``); several layers get
            their own sub-prefix (``encoder.lstm_1.``).
        source_prefix: read only parameters under this prefix from a .ckpt / .pt / .safetensors source.
        weights_only: write the weights even where the target cannot express the semantics (no check).
        tolerance: the largest accepted absolute difference.
        emit_code: also write a Python module rebuilding the model in the target framework (torch or
            MindSpore targets) with the glue Keras semantics need.

    Raises:
        ConversionError: unreadable source, inexpressible semantics; VerificationError: the numbers differ
        by more than ``tolerance`` (the target is then not written). Existing files are never half-written.
    """
    say = progress or (lambda message: None)
    src_fmt = detect_format(source, source_format)
    dst_fmt = detect_format(target, target_format)
    if dst_fmt not in WRITABLE:
        raise ConversionError(f"{target}: writing {dst_fmt} files is not supported")
    say(f"reading {source} ({src_fmt})")
    units = read_units(source, fmt=src_fmt, layer=layer, prefix=source_prefix, custom_objects=custom_objects)
    framework = FRAMEWORK_OF[dst_fmt]
    if framework in ("torch", "mindspore", "onnx"):
        units = merge_stacks(units)
    units = as_float32_for(units, framework)
    notes = [f"{u.name}: {n}" for u in units for n in u.notes if n != "follows the previous layer"]
    for unit in units:
        for config in unit.keras.configs if unit.keras else []:
            for key in _ignored_keras_arguments(config):
                notes.append(
                    f"{unit.name}: Keras argument {key} has no effect on inference numbers and is not "
                    f"carried to {framework}"
                )
    destination = Path(target)
    if not destination.parent.is_dir():
        raise ConversionError(f"{target}: the folder {str(destination.parent)!r} does not exist")
    temporary = _temporary_path(destination)
    report: dict[str, Any] = {}
    try:
        say(f"writing {len(units)} LSTM(s) as {dst_fmt}")
        write_units(
            units, temporary, dst_fmt, prefix=prefix, weights_only=weights_only, opset=opset, display=target
        )
        checked = verify_numbers and not (weights_only and any(target_problems(u, framework) for u in units))
        if checked:
            say("verifying")
            report = verify(units, dst_fmt, temporary)
        worst = max_difference(report)
        if checked and not worst <= tolerance:
            raise VerificationError(
                f"{target}: the target's numbers differ from the source's by {worst:.3g} > tolerance "
                f"{tolerance:g}; nothing was written",
                report,
            )
        emitted = None
        if emit_code is not None:
            emitted = str(write_emitted_code(units, emit_code, dst_fmt, destination, prefix))
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return ConversionReport(
        str(source),
        str(target),
        src_fmt,
        dst_fmt,
        [u.describe() for u in units],
        report,
        max_difference(report),
        tolerance,
        bool(report),
        notes,
        emitted,
    )


def _ignored_keras_arguments(config: dict | None) -> list[str]:
    if not isinstance(config, dict):
        return []
    inner = config.get("layer", {}).get("config", config) if "layer" in config else config
    found = []
    for key in _KERAS_TRAINING_PENALTIES:
        if inner.get(key) is not None:
            found.append(f"{key}={_short(inner[key])}")
    for key in ("dropout", "recurrent_dropout"):
        if inner.get(key):
            found.append(f"{key}={inner[key]}")
    if inner.get("stateful"):
        found.append("stateful=True (carry h_n, c_n between calls yourself)")
    return found


def _short(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("class_name", value))
    return repr(value)


# -- inspect ------------------------------------------------------------------------------------------------


def inspect_file(path: PathLike, fmt: str | None = None) -> dict[str, Any]:
    """A description of every LSTM layer in ``path``: framework, shapes, dtypes, configuration where stored,
    and anything not interpreted."""
    fmt = detect_format(path, fmt)
    if fmt == "onnx":
        return _inspect_onnx(path)
    units = read_units(path, fmt=fmt)
    layers = []
    for unit in units:
        entry: dict[str, Any] = {
            "name": unit.name,
            "config": _spec_to_json(unit)["spec"],
            "config_stored": unit.config_stored,
            "parameters": {
                n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                for n, t in unit.state.items()
            },
            "notes": [n for n in unit.notes if n != "follows the previous layer"],
        }
        if unit.keras is not None:
            entry["keras"] = {
                "class_name": unit.keras.class_name,
                "names": unit.keras.names,
                "return_sequences": unit.keras.return_sequences,
                "return_state": unit.keras.return_state,
                "merge_mode": unit.keras.merge_mode,
                "keras2": unit.keras.keras2,
            }
        layers.append(entry)
    return {"file": str(path), "format": fmt, "framework": FRAMEWORK_OF[fmt], "layers": layers}


def _inspect_onnx(path: PathLike) -> dict[str, Any]:
    from .formats.onnx_export import require_onnx

    onnx = require_onnx()
    try:
        model = onnx.load(os.fspath(path))
    except Exception as error:
        raise ConversionError(f"{path}: not a readable ONNX file ({type(error).__name__}: {error})") from None
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "LSTM":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {
            k: (
                v.decode()
                if isinstance(v, bytes)
                else [x.decode() if isinstance(x, bytes) else x for x in v]
                if isinstance(v, list)
                else v
            )
            for k, v in attrs.items()
        }
        layers.append(
            {
                "name": node.name or node.output[0],
                "attributes": attrs,
                "W": inits.get(node.input[1]),
                "R": inits.get(node.input[2]),
            }
        )
    return {
        "file": str(path),
        "format": "onnx",
        "framework": "onnx",
        "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "layers": layers,
    }


def format_inspection(info: dict[str, Any]) -> str:
    """``inspect_file``'s result as text."""
    lines = [f"{info['file']}: {info['format']} ({info['framework']})"]
    if info["format"] == "onnx":
        lines.append(f"  opset {info['opset']}, inputs {info['inputs']}, outputs {info['outputs']}")
        for layer in info["layers"]:
            lines.append(
                f"  LSTM node {layer['name']}: W {layer['W']}, R {layer['R']}, {layer['attributes']}"
            )
        return "\n".join(lines)
    for layer in info["layers"]:
        c = layer["config"]
        head = f"  {layer['name']}"
        if "keras" in layer:
            head += f" [{layer['keras']['class_name']} {', '.join(layer['keras']['names'])}]"
        lines.append(head)
        lines.append(
            f"    input_size={c['input_size']} hidden_size={c['hidden_size']} num_layers={c['num_layers']} "
            f"bidirectional={c['bidirectional']} bias={c['bias']} proj_size={c['proj_size']}"
        )
        stored = "" if layer["config_stored"] else " (not stored: assumed)"
        lines.append(
            f"    activation={c['activation']!r} recurrent_activation={c['recurrent_activation']!r} "
            f"go_backwards={c['go_backwards']} masked_output={c['masked_output']!r}{stored}"
        )
        if "keras" in layer:
            k = layer["keras"]
            lines.append(
                f"    keras: return_sequences={k['return_sequences']} return_state={k['return_state']}"
                f" merge_mode={k['merge_mode']!r} keras2={k['keras2']}"
            )
        for name, p in layer["parameters"].items():
            lines.append(f"    {name}: {tuple(p['shape'])} {p['dtype']}")
        for note in layer["notes"]:
            lines.append(f"    note: {note}")
    return "\n".join(lines)


# -- the Python API: load / save ----------------------------------------------------------------------------


def _front_door_layer(unit: Unit) -> torch.nn.Module:
    s = unit.spec
    if unit.framework == "mindspore" and s.is_standard_cell and not s.proj_size:
        from .frontends.mindspore import LSTM as MindSporeLSTM  # noqa: N811

        layer: LSTM = MindSporeLSTM(
            s.input_size,
            s.hidden_size,
            s.num_layers,
            has_bias=s.bias,
            batch_first=s.batch_first,
            bidirectional=s.bidirectional,
            dtype=unit.dtype,
        )
    elif unit.framework == "torch" and s.is_standard_cell and not s.go_backwards:
        from .frontends.torch import LSTM as TorchLSTM  # noqa: N811

        layer = TorchLSTM(
            s.input_size,
            s.hidden_size,
            s.num_layers,
            bias=s.bias,
            batch_first=s.batch_first,
            bidirectional=s.bidirectional,
            proj_size=s.proj_size,
            dtype=unit.dtype,
        )
    else:
        return unit.layer()
    with torch.no_grad():
        for name, tensor in unit.state.items():
            getattr(layer, name).copy_(tensor)
    return layer


def load(
    path: PathLike,
    *,
    format: str | None = None,
    layer: str | None = None,
    prefix: str | None = None,
    custom_objects: dict[str, Any] | None = None,
) -> list[torch.nn.Module]:
    """The LSTM layers of any supported file as ready front-door layers.

    Keras files (.keras, legacy .h5 with configs) give ``unilstm.keras`` layers when that front door is
    installed (else canonical ``unilstm.LSTM`` s with the Keras semantics); MindSpore .ckpt files give
    ``unilstm.mindspore.LSTM``; .pt / .pth / .safetensors give ``unilstm.torch.LSTM`` (a canonical
    ``unilstm.LSTM`` where a safetensors file written by unilstm records semantics torch lacks).

    Example::

        >>> [net] = unilstm.load("model.ckpt", prefix="encoder.")
        >>> output, (h_n, c_n) = net(x)

    Raises:
        ConversionError, KerasFileError, CheckpointError, TorchFileError: unreadable files, no LSTM in them.
    """
    fmt = detect_format(path, format)
    if FRAMEWORK_OF[fmt] == "keras" and fmt != "weights.h5":
        with contextlib.suppress(ImportError):
            from . import keras as _front  # noqa: F401  (the Keras front door, when it exists)
            from .formats.keras_files import load_layers

            layers = load_layers(path, custom_objects=custom_objects)
            if layer is not None:
                layers = [m for m in layers if getattr(m, "name", None) == layer] or layers[:0]
                if not layers:
                    raise ConversionError(f"{path}: no LSTM layer named {layer!r}")
            return layers
    units = read_units(path, fmt=fmt, layer=layer, prefix=prefix, custom_objects=custom_objects)
    return [_front_door_layer(unit) for unit in units]


def unit_from_layer(module: object, index: int = 0) -> Unit:
    """A :class:`Unit` for a unilstm layer: canonical, torch or MindSpore front door, or a Keras front-door
    LSTM / Bidirectional."""
    if isinstance(module, LSTM):
        framework = type(module).__module__.rsplit(".", 1)[-1]
        framework = framework if framework in ("torch", "mindspore") else "torch"
        state = OrderedDict((n, getattr(module, n).detach().clone()) for n in parameter_names(module.spec))
        return Unit(f"lstm_{index}" if index else "lstm", module.spec, state, framework)
    from .formats.keras_files import record_from_layer

    try:
        record = record_from_layer(module, index)
    except TypeError:
        raise TypeError(
            f"layers[{index}]: expected a unilstm LSTM (canonical or front door), got {type(module).__name__}"
        ) from None
    return _unit_from_keras_record(record, f"layers[{index}]", {})


def save(
    layers: object,
    path: PathLike,
    *,
    format: str | None = None,
    prefix: str = "",
    weights_only: bool = False,
    opset: int | None = None,
) -> Path:
    """Write unilstm layers (canonical or front-door, one or a list) to any writable format.

    Example::

        >>> net = unilstm.torch.LSTM(8, 16, num_layers=2)
        >>> unilstm.save(net, "lstm.ckpt", prefix="encoder.")     # MindSpore names encoder.weight_ih_l0 ...
        >>> unilstm.save(net, "lstm.onnx")

    Several layers are written under sub-prefixes (``lstm.``, ``lstm_1.``) in torch / MindSpore files, as
    consecutive layers in Keras files. The write is atomic.

    Raises:
        ConversionError: the target cannot express a layer's semantics (unless ``weights_only``).
    """
    modules = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    units = [unit_from_layer(m, i) for i, m in enumerate(modules)]
    units = as_float32_for(units, FRAMEWORK_OF[detect_format(path, format)])
    fmt = detect_format(path, format)
    target = Path(path)
    temporary = _temporary_path(target)
    try:
        write_units(
            units, temporary, fmt, prefix=prefix, weights_only=weights_only, opset=opset, display=path
        )
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


# -- emitted code -------------------------------------------------------------------------------------------


def write_emitted_code(
    units: list[Unit], path: PathLike, target_fmt: str, target_file: Path, prefix: str
) -> Path:
    """Write the Python module that rebuilds ``units`` in the target framework (see :func:`emit_code`)."""
    from .formats.torch_files import atomic_write_bytes

    text = emit_code(units, target_fmt, target_file, prefix)
    return atomic_write_bytes(path, text.encode("utf-8"))


def emit_code(units: list[Unit], target_fmt: str, target_file: Path, prefix: str = "") -> str:
    """Source of a module for torch (.pt / .safetensors targets) or MindSpore (.ckpt targets) that builds the
    model, loads the converted weights and reproduces the source's call semantics."""
    framework = FRAMEWORK_OF[target_fmt]
    if framework not in ("torch", "mindspore"):
        raise ConversionError(
            f"--emit-code: writes torch or MindSpore code; the target {target_fmt} is neither"
        )
    for unit in units:
        problems = target_problems(unit, framework)
        if problems:
            raise ConversionError(f"--emit-code: layer {unit.name!r}: " + "; ".join(problems))
    prefixes = _unit_prefixes(units, prefix)
    ms = framework == "mindspore"
    head = units[0]
    time_major = head.keras.time_major if head.keras else not head.spec.batch_first
    layout = "(T, B, F), time-major" if time_major else "(B, T, F), batch-major"
    lines = [
        f'"""Rebuilds the LSTM layers converted to {target_file.name} in {"MindSpore" if ms else "torch"}.',
        "",
        "Generated by `unilstm convert`. `load()` returns the model with the converted weights. Call it like",
        f"the source model: `output, states = model(x, mask=None)` with x {layout} and an optional",
        "right-padded mask (B, T) bool (True for real steps). `states` holds one entry per converted layer:",
        "Keras's [(h, c) per direction] for Keras layers, (h_n, c_n) for torch / MindSpore ones.",
        '"""',
        "",
    ]
    if ms:
        lines += ["import mindspore", "from mindspore import nn, ops", ""]
    else:
        lines += [
            "import torch",
            "from torch import nn",
            "from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence",
            "",
        ]
    lines.append(f"WEIGHTS = {str(target_file)!r}")
    lines.append("")
    lines.append("")
    base = "nn.Cell" if ms else "nn.Module"
    lines += [
        f"class Model({base}):",
        '    """The converted layers, applied one after the other."""',
        "",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    attrs = []
    for index, unit in enumerate(units):
        attr = f"lstm{index}"
        attrs.append(attr)
        s = unit.spec
        batch_first = not (unit.keras and unit.keras.time_major) if unit.keras else s.batch_first
        lines.append(f"        # {unit.describe()}")
        for note in _emit_notes(unit, framework):
            lines.append(f"        # {note}")
        if ms:
            lines.append(
                f"        self.{attr} = nn.LSTM({s.input_size}, {s.hidden_size}, num_layers={s.num_layers}, "
                f"has_bias={s.bias}, batch_first={batch_first}, bidirectional={s.bidirectional})"
            )
        else:
            proj = f", proj_size={s.proj_size}" if s.proj_size else ""
            lines.append(
                f"        self.{attr} = nn.LSTM({s.input_size}, {s.hidden_size}, num_layers={s.num_layers}, "
                f"bias={s.bias}, batch_first={batch_first}, bidirectional={s.bidirectional}{proj})"
            )
    lines.append("")
    call = "construct" if ms else "forward"
    lines += [
        f"    def {call}(self, x, mask=None):",
        f'        """x: {layout}; mask: None or (B, T) bool, True for real steps, right-padded."""',
        "        lengths = None if mask is None else "
        + ("mask.astype(mindspore.int32).sum(1)" if ms else "mask.long().sum(1)"),
        "        states = []",
    ]
    for attr in attrs:
        lines.append(f"        x, state = self._run_{attr}(x, lengths)")
        lines.append("        states.append(state)")
    lines += ["        return x, states", ""]
    for attr, unit in zip(attrs, units, strict=False):
        lines += _emit_unit_run(attr, unit, ms)
    lines += [
        "",
        "def load(path=WEIGHTS):",
        '    """The model with the converted weights (eval mode)."""',
        "    model = Model()",
    ]
    if ms:
        lines += [
            "    params = mindspore.load_checkpoint(path)",
            "    # MindSpore names a sub-cell's parameters by attribute path: lstm0.weight_ih_l0 ...",
            "    renamed = {}",
        ]
        for attr, unit_prefix in zip(attrs, prefixes, strict=False):
            lines += [
                f"    renamed.update({{{attr!r} + '.' + k[len({unit_prefix!r}):]: v "
                f"for k, v in params.items() if k.startswith({unit_prefix!r}) and not isinstance(v, str)}})"
            ]
        lines += [
            "    missing, _ = mindspore.load_param_into_net(model, renamed, strict_load=True)",
            "    if missing:",
            "        raise ValueError(f'{path}: no values for {missing}')",
        ]
        lines += ["    model.set_train(False)", "    return model"]
    else:
        if target_fmt == "safetensors":
            lines += ["    from safetensors.torch import load_file", "", "    state = load_file(path)"]
        else:
            lines += ["    state = torch.load(path, weights_only=True)"]
        for attr, unit_prefix in zip(attrs, prefixes, strict=False):
            lines.append(
                f"    model.{attr}.load_state_dict({{k[len({unit_prefix!r}):]: v for k, v in state.items() "
                f"if k.startswith({unit_prefix!r})}})"
            )
        lines += ["    return model.eval()"]
    lines.append("")
    return "\n".join(lines)


def _emit_notes(unit: Unit, framework: str) -> list[str]:
    notes = []
    s = unit.spec
    if unit.keras is None:
        return notes
    names = "MindSpore" if framework == "mindspore" else "torch"
    if s.go_backwards:
        notes.append(
            "Keras go_backwards=True: the input is flipped in time here (with a mask: each sequence's "
            "valid prefix, Keras's padded steps coming first); outputs stay in processing order"
        )
    if s.masked_output == "previous" and not s.go_backwards:
        notes.append(
            f"Keras masking: past a sequence's length Keras repeats the last output, {names} gives "
            "zeros; the glue below repeats the final h"
        )
    if not unit.keras.return_sequences:
        notes.append("Keras return_sequences=False: only the last output is returned")
    if unit.keras.class_name == "Bidirectional":
        notes.append(f"Keras Bidirectional merge_mode={unit.keras.merge_mode!r}: merged below")
    if s.stateful:
        notes.append(f"Keras stateful=True: {names}'s LSTM keeps no state; pass the returned (h, c) back in")
    if s.input_dropout or s.recurrent_dropout:
        notes.append(
            f"Keras dropout={s.input_dropout}, recurrent_dropout={s.recurrent_dropout}: {names}'s "
            "LSTM has no variational dropout; inference is unaffected, for training use unilstm.LSTM"
        )
    for config in unit.keras.configs:
        for key in _ignored_keras_arguments(config):
            if "dropout" not in key and "stateful" not in key:
                notes.append(
                    f"Keras {key}: no counterpart in {names}'s LSTM; add it to the loss / optimizer "
                    "step yourself"
                )
    if unit.keras.time_major:
        notes.append("tf-keras time_major=True: input is (T, B, F)")
    notes.append(
        "Keras starts from zero states: no initial state is passed; h and c come out squeezed per "
        "direction as Keras returns them"
    )
    return notes


def _emit_backwards_input(time_axis: int, ms: bool) -> list[str]:
    """Keras go_backwards on the input: a flip in time, or with a mask each sequence's valid prefix reversed
    (Keras reverses input and mask together, so its padded steps come first and change nothing)."""
    flip = "ops.flip" if ms else "torch.flip"
    lines = [
        "        if lengths is None:  # Keras go_backwards: the sequence reversed in time",
        f"            x = {flip}(x, ({time_axis},))",
        "        else:  # with a mask: the padded steps come first (no effect), then the valid ones reversed",
        f"            steps = x.shape[{time_axis}]",
    ]
    if ms:
        lines += [
            "            t = ops.expand_dims(ops.arange(steps).astype(lengths.dtype), 0)",
            "            index = (ops.expand_dims(lengths, 1) - 1 - t + steps) % steps  # (B, T)",
        ]
        if time_axis == 0:
            lines.append("            index = ops.transpose(index, (1, 0))")
        lines.append(
            f"            x = ops.gather_elements(x, {time_axis}, "
            "ops.expand_dims(index, -1).broadcast_to(x.shape))"
        )
    else:
        lines += [
            "            t = torch.arange(steps, device=x.device).unsqueeze(0)",
            "            index = (lengths.unsqueeze(1) - 1 - t + steps) % steps  # (B, T)",
        ]
        if time_axis == 0:
            lines.append("            index = index.t()")
        lines.append(
            f"            x = torch.gather(x, {time_axis}, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))"
        )
    return lines


def _emit_unit_run(attr: str, unit: Unit, ms: bool) -> list[str]:
    s = unit.spec
    keras = unit.keras
    hidden = s.hidden_size
    directions = s.num_directions
    lines = [f"    def _run_{attr}(self, x, lengths):"]
    time_axis = 0 if (keras and keras.time_major) or (not keras and not s.batch_first) else 1
    backwards = bool(keras and s.go_backwards)
    if backwards:
        lines += _emit_backwards_input(time_axis, ms)
    if ms:
        lines += [f"        out, (h, c) = self.{attr}(x, seq_length=lengths)"]
    else:
        lines += [
            "        if lengths is None:",
            f"            out, (h, c) = self.{attr}(x)",
            "        else:",
            f"            packed = pack_padded_sequence(x, lengths.cpu(), batch_first={time_axis == 1}, "
            "enforce_sorted=False)",
            f"            out, (h, c) = self.{attr}(packed)",
            f"            out, _ = pad_packed_sequence(out, batch_first={time_axis == 1}, "
            f"total_length=x.shape[{time_axis}])",
        ]
    if keras is None:
        lines += ["        return out, (h, c)", ""]
        return lines
    if time_axis == 0:
        lines.append(
            f"        out = {'ops.transpose(out, (1, 0, 2))' if ms else 'out.transpose(0, 1)'}"
            "  # to batch-major for the glue"
        )
    if backwards:
        if ms:
            lines += [
                "        if lengths is not None:  # Keras's order: T-len zeros (padding), then valid outputs",
                "            index = (ops.expand_dims(ops.arange(out.shape[1]).astype(lengths.dtype), 0) "
                "+ ops.expand_dims(lengths, 1)) % out.shape[1]",
                "            out = ops.gather_elements(out, 1, "
                "ops.expand_dims(index, -1).broadcast_to(out.shape))",
            ]
        else:
            lines += [
                "        if lengths is not None:  # Keras's order: T-len zeros (padding), then valid outputs",
                "            index = (torch.arange(out.shape[1], device=out.device) + lengths.unsqueeze(1)) "
                "% out.shape[1]",
                "            out = torch.gather(out, 1, index.unsqueeze(-1).expand(-1, -1, out.shape[-1]))",
            ]
    elif s.masked_output == "previous":
        last_h = f"h[{-directions}]"
        if ms:
            lines += [
                "        if lengths is not None:  # Keras repeats the last valid output past the length",
                "            steps = out.shape[1]",
                "            padded = ops.expand_dims(ops.arange(steps), 0) >= ops.expand_dims(lengths, 1)",
                f"            fill = ops.expand_dims({last_h} * "
                "ops.expand_dims((lengths > 0).astype(out.dtype), 1), 1)",
                f"            forward = ops.where(ops.expand_dims(padded, -1), fill.broadcast_to("
                f"(out.shape[0], steps, {hidden})), out[:, :, :{hidden}])",
                f"            out = ops.cat((forward, out[:, :, {hidden}:]), -1) if {directions} == 2 "
                "else forward",
            ]
        else:
            lines += [
                "        if lengths is not None:  # Keras repeats the last valid output past the length",
                "            padded = torch.arange(out.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)",
                f"            fill = ({last_h} * (lengths > 0).unsqueeze(1).to(out.dtype)).unsqueeze(1)",
                f"            forward = torch.where(padded.unsqueeze(-1), fill, out[..., :{hidden}])",
                f"            out = torch.cat([forward, out[..., {hidden}:]], -1)",
            ]
    cat = "ops.cat" if ms else "torch.cat"
    if not keras.return_sequences:
        if s.bidirectional:
            first, last = (0, -1) if not s.go_backwards else (-1, 0)
            lines.append(
                f"        out = {cat}((out[:, {last}, :{hidden}], out[:, {first}, {hidden}:]), -1)"
                "  # each direction's last output"
            )
        else:
            lines.append("        out = out[:, -1]  # return_sequences=False")
    if s.bidirectional and keras.merge_mode not in ("concat", None):
        fwd, bwd = f"out[..., :{hidden}]", f"out[..., {hidden}:]"
        expr = {"sum": f"{fwd} + {bwd}", "mul": f"{fwd} * {bwd}", "ave": f"({fwd} + {bwd}) / 2"}[
            keras.merge_mode
        ]
        lines.append(f"        out = {expr}  # merge_mode={keras.merge_mode!r}")
    elif s.bidirectional and keras.merge_mode is None:
        lines.append(f"        out = [out[..., :{hidden}], out[..., {hidden}:]]  # merge_mode=None")
    lines += [
        "        # Keras's states: (h, c) of the last layer, one pair per direction, each (B, H)",
        "        states = [(h[-1], c[-1])]"
        if directions == 1
        else "        states = [(h[-2], c[-2]), (h[-1], c[-1])]",
        "        return out, states",
        "",
    ]
    return lines


def main_json(obj: Any) -> str:
    """JSON text of a report (floats kept exact)."""
    return json.dumps(obj, indent=2, default=str)
