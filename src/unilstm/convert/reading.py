"""Reading files into :class:`~unilstm.interchange.InterchangeLSTM` s: Keras layer records, torch-named
parameters grouped by prefix (with the semantics unilstm recorded next to them), and merging a Keras stack of
LSTMs that feed each other into one multi-layer LSTM."""

from __future__ import annotations

import contextlib
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
from ..formats.mindspore_ckpt import CheckpointError, read_checkpoint
from ..formats.onnx_import import OnnxFileError, read_onnx_lstms
from ..formats.torch_files import TorchFileError, read_safetensors, read_torch_payload, strip_prefix
from ..interchange import InterchangeLSTM, KerasConventions
from ..keras_names import UnknownKerasActivationError, activation_from_stored_config
from ..parameter_names import (
    LAYER_NORM_KINDS,
    PEEPHOLE_KINDS,
    parameter_names,
    parameter_shape,
    parameter_suffix,
    parse_parameter_name,
    with_layer,
)
from ..spec import ActivationLike, LSTMSpec
from . import descriptions
from .descriptions import spec_json as spec_json  # inspection's import, from before its move
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
    inner = config.get("config")
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers", [])  # Keras 2.0-2.2: a list
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


def _spec_from_state(state: OrderedDict[str, Tensor], where: str, error: type[ValueError]) -> LSTMSpec:
    """torch.nn.LSTM's configuration from its parameters' names and shapes; ``error`` (the format's) when they
    do not form one whole LSTM: a bias for some layers or directions and not others, a weight missing, a
    shape or dtype that does not fit. A cut file must never read as a smaller LSTM."""
    # every name in a group parsed as a parameter name (_group_state): the filter only informs the checker
    layers = 1 + max(parsed.layer for parsed in map(parse_parameter_name, state) if parsed is not None)
    if layers > len(state):  # every layer has at least two weights: no need to list a billion names
        raise error(
            f"{where}: the LSTM parameters name layer {layers - 1} but hold only {len(state)} tensors"
        )
    bidirectional = any(n.endswith("_reverse") for n in state)
    bias = "bias_ih_l0" in state or "bias_hh_l0" in state
    # the cell variants with tensors of their own: any one of their names asks for all of them, so that a
    # file missing some is refused by name below instead of read as another cell
    kinds = {parsed.kind for parsed in map(parse_parameter_name, state) if parsed is not None}
    peepholes = bool(kinds & set(PEEPHOLE_KINDS))
    layer_norm = bool(kinds & set(LAYER_NORM_KINDS))
    try:
        proj = int(state["weight_hr_l0"].shape[0]) if "weight_hr_l0" in state else 0
        w_ih = state["weight_ih_l0"]
        hidden = int(state["weight_hh_l0"].shape[0]) // 4
        spec = LSTMSpec(
            int(w_ih.shape[1]),
            hidden,
            layers,
            bias=bias,
            bidirectional=bidirectional,
            proj_size=proj,
            peepholes=peepholes,
            layer_norm=layer_norm,
        )
    except (KeyError, IndexError, ValueError, TypeError) as problem:
        raise error(f"{where}: the LSTM parameters are incomplete or inconsistent ({problem})") from None
    expected = parameter_names(spec)
    if sorted(expected) != sorted(state):
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        raise error(
            f"{where}: the LSTM parameters do not form a torch LSTM: missing {missing}, unexpected {extra}"
            + _variant_hint(peepholes, layer_norm)
        )
    for name in expected:
        want = parameter_shape(spec, name)
        if tuple(state[name].shape) != want:
            raise error(
                f"{where}: {name} has shape {tuple(state[name].shape)}, expected {want} for "
                f"hidden_size={hidden}"
            )
        if not state[name].is_floating_point():
            raise error(f"{where}: {name} has dtype {state[name].dtype}, expected a float dtype")
    return spec


def _variant_hint(peepholes: bool, layer_norm: bool) -> str:
    used = [name for name, on in (("peepholes", peepholes), ("layer_norm", layer_norm)) if on]
    return f" (with the cell variant(s) {', '.join(used)} its names ask for)" if used else ""


def _units_from_state(
    tensors: OrderedDict[str, Tensor],
    where: str,
    framework: str,
    error: type[ValueError],
    described: dict[str, dict[str, Any]] | None = None,
    description_where: str = "",
    kept_prefix: str | None = None,
) -> list[InterchangeLSTM]:
    """The LSTM stacks among ``tensors``, with the semantics ``described`` (by prefix) stores for them; a file
    with a description must hold exactly the stacks it lists. ``kept_prefix``: what the reader already
    stripped from the names (``--source-prefix``), part of each stack's :attr:`source_prefix`."""
    groups, other = _group_state(tensors, where)
    if not groups:
        shown = ", ".join(list(tensors)[:8]) or "none"
        if described:
            raise error(
                f"{description_where}: describes LSTMs under {sorted(described)}, but the file holds no LSTM "
                f"parameters; names: {shown}"
            )
        raise ConversionError(f"{where}: no LSTM parameters (weight_ih_l0 ...) in this file; names: {shown}")
    if described is not None:
        absent = sorted(set(described) - set(groups))
        undescribed = sorted(set(groups) - set(described))
        if absent or undescribed:
            raise error(
                f"{description_where}: the LSTMs it describes and the file's do not match: described but "
                f"missing {absent}, present but not described {undescribed}; the file is cut or was edited"
            )
    units = []
    for prefix, state in groups.items():
        spec = _spec_from_state(state, f"{where}: LSTM {prefix or '(no prefix)'!r}", error)
        state = OrderedDict((name, state[name]) for name in parameter_names(spec))
        unit = InterchangeLSTM(prefix.rstrip(".") or "lstm", spec, state, framework)
        unit.source_prefix = (kept_prefix or "") + prefix
        if described is not None:
            descriptions.apply(unit, described[prefix], f"{description_where}: LSTM {prefix!r}", error)
        else:  # plain weights: batch_first, activations ... are torch's defaults, assumed
            unit.config_stored = False
        units.append(unit)
    if other:
        units[0].notes.append(
            f"not LSTM parameters, ignored: {', '.join(other[:10])}" + (" ..." if len(other) > 10 else "")
        )
    return units


def read_units(
    path: PathLike,
    *,
    fmt: str | None = None,
    layer: str | None = None,
    prefix: str | None = None,
    custom_objects: dict[str, Any] | None = None,
    require_crc: bool = False,
    batch_first: bool | None = None,
) -> list[InterchangeLSTM]:
    """Read the LSTM layers of ``path`` as :class:`InterchangeLSTM` s (see the module docstring).

    Args:
        fmt: the format name; from the extension when None.
        layer: keep only the layer with this name / key (Keras) or parameter prefix (torch, MindSpore).
        prefix: keep only parameters under this prefix, without it (``"encoder."``), for .ckpt/.pt files.
        custom_objects: Keras custom activations by stored name -> function on torch tensors.
        require_crc: a .ckpt source must end with a CRC32 trailer that matches (see
            :func:`unilstm.formats.mindspore_ckpt.load_checkpoint`); other formats have none to require.
        batch_first: the layout of the calls (True: (B, T, F) inputs), for files that store no call
            configuration (a MindSpore .ckpt, a .pt of plain weights: read as time-major unless told); it
            overrides what a file says.

    Raises:
        ConversionError (and the format readers' own ValueError subclasses, KerasFileError, CheckpointError,
        TorchFileError): unreadable files (cut, damaged, a description that does not fit the weights), no
        LSTM in them, no such layer.
    """
    fmt = detect_format(path, fmt)
    if fmt not in READABLE:
        raise ConversionError(f"{path}: {fmt} files can be written, not read")
    if not isinstance(require_crc, bool):
        raise TypeError(f"require_crc must be a bool, got {type(require_crc).__name__} {require_crc!r}")
    if require_crc and fmt != "ckpt":
        raise ConversionError(f"{path}: require_crc: only MindSpore .ckpt files carry a CRC, not {fmt} files")
    if not Path(path).is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        units = _read_units(path, fmt, prefix, dict(custom_objects or {}), require_crc)
    except (ConversionError, TorchFileError, KerasFileError, CheckpointError, OnnxFileError):
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
    if batch_first is not None:
        for unit in units:
            stored = "" if not unit.config_stored else f", the file says {unit.spec.batch_first}"
            unit.spec = replace(unit.spec, batch_first=bool(batch_first))
            unit.notes.append(f"batch_first={bool(batch_first)} as given{stored}")
    return units


def _read_units(
    path: PathLike, fmt: str, prefix: str | None, custom_objects: dict[str, Any], require_crc: bool
) -> list[InterchangeLSTM]:
    if FRAMEWORK_OF[fmt] == "keras":
        records = read_keras_lstm_layers(path)
        if not records:
            raise ConversionError(f"{path}: no LSTM or Bidirectional(LSTM) layer in this Keras file")
        units = [from_keras_record(r, path, custom_objects) for r in records]
        sequence = _keras_sequence(path) if fmt != "weights.h5" else None
        return _mark_adjacent(units, sequence)
    if fmt == "ckpt":
        return _read_checkpoint_units(path, prefix, require_crc)
    if fmt == "onnx":  # one stack of LSTM nodes; torch's conventions (zeros past a length)
        return [
            InterchangeLSTM(stack.name, stack.spec, stack.state, "torch", notes=stack.notes)
            for stack in read_onnx_lstms(path)
        ]
    if fmt == "safetensors":
        tensors, metadata = read_safetensors(path)
        skipped: list[str] = []
    else:  # a .pt unilstm wrote for cell variants holds the description as safetensors does
        tensors, skipped, metadata = read_torch_payload(path)
    where = f"{path}: __metadata__ {METADATA_KEY!r}"
    described = None
    if METADATA_KEY in metadata:
        entries = descriptions.parse(metadata[METADATA_KEY], where, TorchFileError)
        described = descriptions.by_prefix(entries, prefix)
    tensors = strip_prefix(tensors, prefix, str(path))
    units = _units_from_state(tensors, str(path), "torch", TorchFileError, described, where, prefix)
    if fmt == "pt" and skipped:
        units[0].notes.append(f"not tensors, ignored: {', '.join(skipped[:10])}")
    return units


def _read_checkpoint_units(path: PathLike, prefix: str | None, require_crc: bool) -> list[InterchangeLSTM]:
    """The stacks of a .ckpt file. The description unilstm writes first in its files states how many
    entries follow and whether a CRC trailer ends the file: a file cut at an entry boundary is refused."""
    contents = read_checkpoint(path, require_crc=require_crc)
    where = f"{path}: entry {METADATA_KEY!r}"
    described = None
    if METADATA_KEY in contents.values:
        entries = descriptions.parse(contents.values[METADATA_KEY], where, CheckpointError)
        descriptions.checkpoint_facts(entries, contents.entries, contents.crc, where, CheckpointError)
        described = descriptions.by_prefix(entries, prefix)
    values = contents.values
    if prefix is not None:
        values = {name[len(prefix) :]: v for name, v in values.items() if name.startswith(prefix)}
        if not values:
            shown = ", ".join(repr(n) for n in list(contents.values)[:8])
            raise CheckpointError(f"{path}: no entry starts with prefix {prefix!r}; names: {shown}")
    tensors = OrderedDict((k, v) for k, v in values.items() if isinstance(v, Tensor))
    return _units_from_state(tensors, str(path), "mindspore", CheckpointError, described, where, prefix)


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
            merged.append(replace(unit, state=OrderedDict(unit.state), notes=list(unit.notes)))
    return merged

