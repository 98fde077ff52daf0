"""Reading files into :class:`~unilstm.interchange.InterchangeLSTM` s: Keras layer records, torch-named
parameters grouped by prefix (with the semantics unilstm recorded next to them), and merging a Keras stack of
LSTMs that feed each other into one multi-layer LSTM."""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..formats import layout
from ..formats.keras_files import (
    KerasFileError,
    KerasLayerRecord,
    lstm_configs,
    read_keras_lstm_layers,
    read_keras_model_config,
)
from ..formats.mindspore_ckpt import CheckpointError, load_checkpoint
from ..formats.torch_files import TorchFileError, read_safetensors, read_torch_file, strip_prefix
from ..interchange import InterchangeLSTM, KerasConventions
from ..keras_names import UnknownKerasActivationError, activation_from_stored_config
from ..parameter_names import (
    parameter_names,
    parameter_shape,
    parameter_suffix,
    parse_parameter_name,
    with_layer,
)
from ..spec import ActivationLike, LSTMSpec
from .file_kinds import FRAMEWORK_OF, METADATA_KEY, READABLE, ConversionError, PathLike, detect_format


def _keras_activation(
    value: object, keras2: bool, custom_objects: dict[str, Any], where: str
) -> ActivationLike:
    try:
        return activation_from_stored_config(value, keras2, custom_objects)
    except UnknownKerasActivationError as error:
        name = error.args[0]
        raise ConversionError(
            f"{where}: activation {name!r} is not a Keras built-in; pass custom_objects={{{name!r}: fn}}"
        ) from None
    except TypeError as error:
        raise ConversionError(f"{where}: {error}") from None


def from_keras_record(
    record: KerasLayerRecord, path: PathLike, custom_objects: dict[str, Any]
) -> InterchangeLSTM:
    """The LSTM stack of a Keras layer record; what no target can express is recorded in ``blocking``."""
    where = f"{path}: layer {record.describe()}"
    bidirectional = record.class_name == "Bidirectional"
    halves = (
        [record.weights[: len(record.weights) // 2], record.weights[len(record.weights) // 2 :]]
        if bidirectional
        else [record.weights]
    )
    configs = lstm_configs(record.class_name, record.config)
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
                state[kind + parameter_suffix(0, direction)] = torch.from_numpy(
                    np.ascontiguousarray(torch_arrays[kind])
                )
    merge = record.config.get("merge_mode", "concat") if (bidirectional and record.config) else "concat"
    glue = KerasConventions(
        class_name=record.class_name,
        return_sequences=return_sequences,
        return_state=bool(config.get("return_state", False)),
        merge_mode=merge,
        configs=[record.config],
        names=[record.name or record.key],
        keras2=keras2,
        time_major=time_major,
    )
    unit = InterchangeLSTM(record.name or record.key, spec, state, "keras", glue, notes, stored)
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
        config = read_keras_model_config(path)
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
        parsed = parse_parameter_name(name)
        if parsed is None or not isinstance(tensor, Tensor):
            other.append(name)
            continue
        groups.setdefault(parsed.prefix, OrderedDict())[name[len(parsed.prefix) :]] = tensor
    return groups, other


def _spec_from_state(state: OrderedDict[str, Tensor], where: str) -> LSTMSpec:
    """torch.nn.LSTM's configuration from its parameters' names and shapes."""
    # every name in a group parsed as a parameter name (_group_state): the filter only informs the checker
    layers = 1 + max(parsed.layer for parsed in map(parse_parameter_name, state) if parsed is not None)
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


def spec_json(unit: InterchangeLSTM) -> dict[str, Any]:
    """The semantics unilstm records next to the weights (and ``inspect`` shows): spec and Keras conventions
    as JSON values (callable activations as ``"<callable>"``)."""
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
) -> list[InterchangeLSTM]:
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
        unit = InterchangeLSTM(prefix.rstrip(".") or "lstm", spec, state, framework)
        entry = described.get(prefix)
        if entry is not None:
            _apply_described(unit, entry, where)
        units.append(unit)
    if other:
        units[0].notes.append(
            f"not LSTM parameters, ignored: {', '.join(other[:10])}" + (" ..." if len(other) > 10 else "")
        )
    return units


def _apply_described(unit: InterchangeLSTM, entry: dict, where: str) -> None:
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
        unit.keras = KerasConventions(
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
) -> list[InterchangeLSTM]:
    """Read the LSTM layers of ``path`` as :class:`InterchangeLSTM` s (see the module docstring).

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
    except (ConversionError, TorchFileError, KerasFileError, CheckpointError):
        raise
    except Exception as error:
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


def _read_units(
    path: PathLike, fmt: str, prefix: str | None, custom_objects: dict[str, Any]
) -> list[InterchangeLSTM]:
    if FRAMEWORK_OF[fmt] == "keras":
        records = read_keras_lstm_layers(path)
        if not records:
            raise ConversionError(f"{path}: no LSTM or Bidirectional(LSTM) layer in this Keras file")
        units = [from_keras_record(r, path, custom_objects) for r in records]
        sequence = _keras_sequence(path) if fmt != "weights.h5" else None
        return _mark_adjacent(units, sequence)
    if fmt == "ckpt":
        values = load_checkpoint(path, prefix=prefix)
        tensors = OrderedDict((k, v) for k, v in values.items() if isinstance(v, Tensor))
        stored_metadata = values.get(METADATA_KEY)
        metadata = {METADATA_KEY: stored_metadata} if isinstance(stored_metadata, str) else None
        return _units_from_state(tensors, str(path), "mindspore", metadata)
    if fmt == "safetensors":
        tensors, metadata = read_safetensors(path)
    else:
        tensors, skipped = read_torch_file(path)
        metadata = None
    tensors = strip_prefix(tensors, prefix, str(path))
    units = _units_from_state(tensors, str(path), "torch", metadata)
    if fmt == "pt" and skipped:
        units[0].notes.append(f"not tensors, ignored: {', '.join(skipped[:10])}")
    return units


def _mark_adjacent(units: list[InterchangeLSTM], sequence: list[str] | None) -> list[InterchangeLSTM]:
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


def _mergeable(first: InterchangeLSTM, second: InterchangeLSTM) -> str | None:
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


def merge_stacks(units: list[InterchangeLSTM]) -> list[InterchangeLSTM]:
    """Merge runs of Keras layers that form one multi-layer LSTM (see :func:`_mergeable`)."""
    merged: list[InterchangeLSTM] = []
    for unit in units:
        if merged and _mergeable(merged[-1], unit) is None:
            top = merged[-1]
            assert top.keras is not None and unit.keras is not None  # _mergeable merges Keras units only
            layers = top.spec.num_layers
            state = OrderedDict(top.state)
            for name, tensor in unit.state.items():
                state[with_layer(name, layers)] = tensor
            spec = replace(top.spec, num_layers=layers + 1, masked_output=unit.spec.masked_output)
            glue = replace(
                unit.keras,
                configs=top.keras.configs + unit.keras.configs,
                names=top.keras.names + unit.keras.names,
            )
            merged[-1] = InterchangeLSTM(
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
                InterchangeLSTM(
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

