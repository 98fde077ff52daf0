"""What a Keras model file holds, layer by layer, for ``unilstm inspect``: every layer with its class, what
it is called on, its output shape, its stored weights and whether :func:`~.loading.load_model` runs it. An
unsupported layer is reported, not refused, and the layers after it are listed without shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..formats.keras_files.model_store import open_keras_model
from .base import KerasLayer, KerasModelError
from .graph import refs_in
from .loading import PathLike
from .model import KerasModel, build_model


def describe_model(path: PathLike, *, config: Mapping[str, Any] | PathLike | None = None) -> dict[str, Any]:
    """A JSON-able description of the whole model in ``path`` (see the module docstring)."""
    problems: dict[str, str] = {}
    with open_keras_model(path, config=config) as stored:
        model = build_model(stored.config, stored.keras2, None, problems)
        layers = _describe(model, stored, (), problems)
        return {
            "name": model.graph.name,
            "class_name": model.graph.class_name,
            "keras_version": stored.keras_version,
            "file_format": stored.file_format,
            "keras2_semantics": stored.keras2,
            "inputs": [
                {
                    "name": r.layer,
                    "shape": list(model.graph.layers[r.layer].input_shape or ()),
                    "dtype": model.graph.layers[r.layer].input_dtype,
                }
                for r in model.graph.inputs
            ],
            "outputs": [r.layer for r in model.graph.outputs],
            "layers": layers,
            "supported": not problems,
        }


def _describe(model: KerasModel, stored: Any, names: tuple[str, ...], problems: dict[str, str]) -> list[dict]:
    built = {entry.name: layer for _, entry, layer in model.layers}
    found = []
    for entry in model.graph.layers.values():
        row: dict[str, Any] = {
            "name": "/".join(names + (entry.name,)),
            "class_name": entry.class_name,
            "kind": entry.kind,
            "called_on": sorted({r.layer for call in entry.calls for r in refs_in(call.args)}),
        }
        layer = built.get(entry.name)
        if entry.kind == "input":
            row["output_shape"] = list(entry.input_shape or ())
        if layer is not None:
            try:
                row["output_shape"] = _shape_json(layer.output_shape(layer.spec.input_shapes))
            except KerasModelError:
                row["output_shape"] = None
            if not isinstance(layer, KerasModel):
                row["weights"] = _weights(layer, stored, names + (entry.name,), bool(names))
        if entry.name in problems:
            row["supported"] = False
            row["problem"] = problems[entry.name]
        elif entry.kind in ("layer", "model", "operation") and layer is None and entry.kind != "operation":
            row["supported"] = False
        else:
            row["supported"] = True
        found.append(row)
        if isinstance(layer, KerasModel):
            found += _describe(layer, stored, names + (entry.name,), problems)
    return found


def _weights(layer: KerasLayer, stored: Any, names: tuple[str, ...], nested: bool) -> list[dict[str, Any]]:
    expected = list(zip(layer.weight_names, (list(s) for s in layer.weight_shapes()), strict=False))
    if nested and stored.file_format == "legacy.h5":  # stored with the whole nested model, not per layer
        return [{"name": name, "shape": shape} for name, shape in expected]
    try:
        arrays = stored.layer_weights(names, layer.spec.class_name, layer.spec.config)
    except ValueError as error:
        return [{"error": str(error)}]
    described = []
    for position, array in enumerate(arrays):
        row: dict[str, Any] = {"name": array.name, "shape": list(array.shape), "dtype": array.dtype}
        if position < len(expected):
            row["name"] = expected[position][0]
            if expected[position][1] != list(array.shape):
                row["expected_shape"] = expected[position][1]
        row["entry"] = array.entry
        described.append(row)
    return described


def _shape_json(shape: Any) -> Any:
    if isinstance(shape, list):
        return [list(s) for s in shape]
    return list(shape)


def format_model(info: Mapping[str, Any]) -> str:
    """:func:`describe_model`'s result as text, one line per layer."""
    lines = [
        f"  model {info['name']!r} ({info['class_name']}, Keras {info['keras_version'] or '?'}, "
        f"{'Keras 2' if info['keras2_semantics'] else 'Keras 3'} semantics): "
        f"{'every layer supported' if info['supported'] else 'has unsupported layers'}"
    ]
    for layer in info["layers"]:
        mark = "ok " if layer["supported"] else "NO "
        shape = layer.get("output_shape")
        weights = layer.get("weights") or []
        params = ", ".join(f"{w['name']} {tuple(w['shape'])}" for w in weights if "shape" in w)
        text = f"    {mark}{layer['name']} ({layer['class_name']}) -> {shape}"
        if layer["called_on"]:
            text += f" <- {', '.join(layer['called_on'])}"
        if params:
            text += f" [{params}]"
        lines.append(text)
        if "problem" in layer:
            lines.append(f"        {layer['problem']}")
    return "\n".join(lines)
