"""``unilstm inspect``: what a file holds, layer by layer."""

from __future__ import annotations

from typing import Any

from ..formats.keras_files import KerasFileError
from ..formats.onnx_export import require_onnx
from ..formats.onnx_import import OnnxFileError, parse_onnx_file
from ..keras_model.description import describe_model, format_model
from .file_kinds import FRAMEWORK_OF, ConversionError, PathLike, detect_format
from .reading import read_units, spec_json


def inspect_file(path: PathLike, fmt: str | None = None, *, require_crc: bool = False) -> dict[str, Any]:
    """A description of every LSTM layer in ``path``: framework, shapes, dtypes, configuration where stored,
    and anything not interpreted."""
    fmt = detect_format(path, fmt)
    if fmt == "onnx":
        return _inspect_onnx(path)
    model = _keras_model(path) if fmt in ("keras", "h5", "weights.h5") else None
    try:
        units = read_units(path, fmt=fmt, require_crc=require_crc)
    except ValueError:
        if model is None:
            raise
        units = []  # a Keras model without LSTM layers: its graph is still worth showing
    layers = []
    for unit in units:
        entry: dict[str, Any] = {
            "name": unit.name,
            "config": spec_json(unit)["spec"],
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
    info: dict[str, Any] = {"file": str(path), "format": fmt, "framework": FRAMEWORK_OF[fmt]}
    info["layers"] = layers
    if model is not None:
        info["model"] = model
    return info


def _keras_model(path: PathLike) -> dict[str, Any] | None:
    """The whole-model description of a Keras file with a model config (None for weights-only files)."""
    try:
        return describe_model(path)
    except KerasFileError:
        return None


def _inspect_onnx(path: PathLike) -> dict[str, Any]:
    onnx = require_onnx()
    try:  # external data is never loaded: inspection shows the graph, not the weights
        model = parse_onnx_file(path)
    except OnnxFileError as error:
        raise ConversionError(str(error)) from None
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
    if "model" in info:
        lines.append(format_model(info["model"]))
    return "\n".join(lines)

