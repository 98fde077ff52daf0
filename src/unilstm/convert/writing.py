"""Writing :class:`~unilstm.interchange.InterchangeLSTM` s to any writable format, after checking that the
target framework can express their semantics."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..formats import layout
from ..formats.keras_files import KerasLayerRecord, write_keras_model
from ..formats.mindspore_ckpt import mindspore_parameter_order, save_checkpoint
from ..formats.onnx_export import DEFAULT_OPSET, build_chain, write_model
from ..formats.torch_files import save_state_dict
from ..interchange import InterchangeLSTM
from ..parameter_names import parameter_suffix
from ..spec import LSTMSpec
from .descriptions import describe
from .file_kinds import FRAMEWORK_OF, METADATA_KEY, WRITABLE, ConversionError, PathLike
from .semantics import canonical_layer, target_problems


def unit_prefixes(units: list[InterchangeLSTM], prefix: str | None) -> list[str]:
    """The name prefix of each stack in one file: ``prefix`` alone for one stack, else ``prefix`` plus a
    sub-prefix per stack from its name (``encoder.lstm.``, ``encoder.lstm_1.``). ``None`` keeps each
    stack's prefix in its state-dict source (``lstm.weight_ih_l0`` stays ``lstm.weight_ih_l0``, so the
    framework's own loader finds it in the same network), and is ``""`` for Keras sources."""
    if prefix is None:
        kept = [unit.source_prefix for unit in units]
        if all(kept) and len(set(kept)) == len(kept):
            return kept
        prefix = ""
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


def keras_layer_config(
    name: str, spec: LSTMSpec, return_sequences: bool, zero_output: bool
) -> dict[str, Any]:
    """A Keras 3 LSTM config computing ``spec`` (``zero_output``: Keras's zero_output_for_mask)."""

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


def _keras_weights(unit: InterchangeLSTM, layer: int, direction: int) -> list[np.ndarray]:
    sfx = parameter_suffix(layer, direction)
    s = unit.state
    arrays = layout.keras_from_torch(
        s["weight_ih" + sfx], s["weight_hh" + sfx], s.get("bias_ih" + sfx), s.get("bias_hh" + sfx)
    )
    if unit.spec.bias and not bool(torch.any(s["bias_hh" + sfx] != 0)):
        arrays[2] = s["bias_ih" + sfx].detach().cpu().numpy().copy()  # keep the bits (-0.0 stays -0.0)
    return arrays


def keras_records(units: list[InterchangeLSTM]) -> list[KerasLayerRecord]:
    """Keras 3 layer records (config + Keras-layout weights) for ``units``: each layer of a stack becomes a
    Keras LSTM, a bidirectional layer a Bidirectional(LSTM)."""
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
                inner = keras_layer_config(
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


def _ckpt_payload(
    units: list[InterchangeLSTM], prefixes: list[str], crc: bool
) -> OrderedDict[str, Tensor | str]:
    """The entries of a .ckpt file: the description first, stating how many entries the file holds and
    whether a CRC trailer ends it, so that a reader can tell a cut file (any cut leaves it fewer entries than
    it states, or no trailer) from a whole one; then each stack's parameters in MindSpore's order."""
    tensors: OrderedDict[str, Tensor] = OrderedDict()
    for unit, prefix in zip(units, prefixes, strict=False):
        for name in mindspore_parameter_order(list(unit.state)):
            tensors[prefix + name] = unit.state[name]
    facts = {"entries": len(tensors) + 1, "crc": crc}
    entries: OrderedDict[str, Tensor | str] = OrderedDict()
    entries[METADATA_KEY] = describe(units, prefixes, facts)
    entries.update(tensors)
    return entries


def as_float32_for(units: list[InterchangeLSTM], framework: str) -> list[InterchangeLSTM]:
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


def fold_forget_bias(unit: InterchangeLSTM) -> InterchangeLSTM:
    """``unit`` with its ``forget_bias`` added to the forget block (H:2H, torch's [i, f, g, o]) of every
    ``bias_ih`` and the spec's ``forget_bias`` 0: the same sum z_f at every step, for targets that have no
    run-time forget bias (Keras, MindSpore). A unit without bias or forget bias is returned as it is (writing
    refuses the first before it gets here, unless only weights are asked for)."""
    if unit.spec.forget_bias == 0.0 or not unit.spec.bias:
        return unit
    hidden = unit.spec.hidden_size
    state = OrderedDict(unit.state)
    for name in state:
        if name.startswith("bias_ih"):
            folded = state[name].detach().clone()
            folded[hidden : 2 * hidden] += unit.spec.forget_bias
            state[name] = folded
    note = f"forget_bias={unit.spec.forget_bias} folded into the forget gate's bias"
    return replace(unit, spec=replace(unit.spec, forget_bias=0.0), state=state, notes=[*unit.notes, note])


def _onnx_chain_problem(units: list[InterchangeLSTM]) -> str | None:
    """None when ``units`` feed each other in a Keras Sequential (so one ONNX graph can chain them)."""
    for previous, unit in zip(units, units[1:], strict=False):
        if previous.keras is None or unit.keras is None or "follows the previous layer" not in unit.notes:
            return f"{unit.name!r} is not known to follow {previous.name!r} in a Sequential model"
        if not previous.keras.return_sequences or previous.keras.merge_mode is None:
            return f"{previous.name!r} does not return one sequence to {unit.name!r}"
    return None


def write_units(
    units: list[InterchangeLSTM],
    path: PathLike,
    fmt: str,
    *,
    prefix: str | None = None,
    weights_only: bool = False,
    opset: int | None = None,
    input_steps: int | None = None,
    display: PathLike | None = None,
    crc: bool = False,
) -> None:
    """Write ``units`` to ``path`` in format ``fmt`` (directly: :func:`convert` passes a temporary path).
    ``crc``: end a .ckpt file with MindSpore's CRC32 trailer (readers can then require it).

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
    stored = fmt in ("pt", "safetensors")  # unilstm's torch files record the cell variants
    problems = [
        f"layer {unit.name!r}: {p}"
        for unit in units
        for p in target_problems(unit, framework, variants_stored=stored)
    ]
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
        _write(units, path, fmt, prefix, opset, input_steps, crc)
    except ConversionError:
        raise
    except (ValueError, TypeError) as error:
        raise ConversionError(f"{shown}: cannot write these layers as {fmt}: {error}") from None


def _write(
    units: list[InterchangeLSTM],
    path: PathLike,
    fmt: str,
    prefix: str | None,
    opset: int | None,
    input_steps: int | None,
    crc: bool = False,
) -> None:
    prefixes = unit_prefixes(units, prefix)
    if fmt in ("keras", "weights.h5", "ckpt"):  # Keras's and MindSpore's LSTMs take it in their bias
        units = [fold_forget_bias(unit) for unit in units]
    if fmt in ("keras", "weights.h5"):
        records = keras_records(units)
        write_keras_model(records, path, (input_steps, units[0].spec.input_size))
    elif fmt == "ckpt":
        save_checkpoint(_ckpt_payload(units, prefixes, crc), path, crc=crc)
    elif fmt in ("pt", "safetensors"):
        tensors = OrderedDict()
        for unit, unit_prefix in zip(units, prefixes, strict=False):
            for name, tensor in unit.state.items():
                tensors[unit_prefix + name] = tensor
        # a .pt holds the description only for cell variants: plain ones stay loadable by
        # torch.nn.LSTM.load_state_dict, which a variant's file must not be (it would compute another cell)
        described = fmt == "safetensors" or any(unit.spec.cell_variants for unit in units)
        metadata = {METADATA_KEY: describe(units, prefixes)} if described else None
        save_state_dict(
            tensors, path, kind="safetensors" if fmt == "safetensors" else "torch", metadata=metadata
        )
    elif fmt == "onnx":
        stages = [
            (
                canonical_layer(unit),
                unit.keras.return_sequences if unit.keras else True,
                unit.keras.merge_mode if unit.keras and unit.spec.bidirectional else "concat",
            )
            for unit in units
        ]
        write_model(build_chain(stages, opset=opset or DEFAULT_OPSET, lengths=True), path)

