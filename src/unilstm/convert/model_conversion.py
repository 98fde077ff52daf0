"""Whole Keras models to torch (code + ``.pt`` / ``.safetensors``), MindSpore (code + ``.ckpt``) and ONNX.

A Keras model file whose graph holds more than a chain of LSTMs (an Embedding, a Dense, a BatchNorm between
LSTMs, two inputs, several outputs ...) is converted whole: it is loaded with
:func:`unilstm.keras.load_model`, turned into a :class:`~.model_program.Program`, and written by the
target's writer (``model_code_torch``, ``model_code_mindspore``, ``model_onnx``), each of which refuses by
name a layer it cannot express. Then the written target is checked against the loaded source on random
inputs (integer ids right-padded with 0 where the model takes ids):

- torch: the generated module is imported and loads the written weights;
- ONNX: onnxruntime runs the written graph;
- MindSpore (not installed here): the written ``.ckpt`` is read back and must hold exactly the parameters the
  generated Cell loads, value for value; its numbers are checked in real MindSpore by
  ``tools/live/check_emitted_mindspore_models.py``.

Differences are ``max |target - source| / max(1, max |source|)`` per model output; reports are
``{"outputs": {case: {output: difference}}}``, for torch and ONNX targets also ``{"layers": {case: {layer:
difference}}}`` (each top-level layer's outputs against the generated module's variables, or the graph's
values, of the same name; informative: only the model's outputs decide).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..formats.keras_files.model_store import is_model_entry, is_operation_entry
from ..formats.keras_files.reading import read_keras_model_config
from ..keras_model import KerasModel, load_model
from ..keras_model.graph import Ref
from .file_kinds import FRAMEWORK_OF, ConversionError, PathLike
from .model_program import Program, model_program, takes_ids
from .verification import _max_abs_difference, _scale

_LSTM_CLASSES = ("InputLayer", "LSTM", "Bidirectional", "CuDNNLSTM")


def is_whole_model(source: PathLike, fmt: str) -> bool:
    """A Keras model file that is more than LSTMs one after the other (other layers, nested models, several
    inputs or outputs): it converts as a whole model."""
    if FRAMEWORK_OF[fmt] != "keras" or fmt == "weights.h5":
        return False
    config = read_keras_model_config(source)
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers")
    if not isinstance(layers, list):
        return False
    if isinstance(inner, dict) and any(
        _count(inner.get(key)) > 1 for key in ("input_layers", "output_layers")
    ):
        return True
    return any(
        isinstance(entry, dict)
        and not is_operation_entry(entry)
        and (is_model_entry(entry) or entry.get("class_name") not in _LSTM_CLASSES)
        for entry in layers
    )


def _count(refs: Any) -> int:
    """How many tensors ``input_layers`` / ``output_layers`` name (Keras 3 writes one as a flat triple)."""
    if isinstance(refs, list) and refs and isinstance(refs[0], list):
        return len(refs)
    return 1 if refs else 0


def sample_inputs(model: KerasModel, seed: int, batch: int = 3, steps: int = 7) -> list[Tensor]:
    """Random inputs of the model's shapes: floats, or ids in [1, vocabulary) right-padded with 0 (row 0
    full, the others shorter) where it takes ids."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = _smallest_vocabulary(model)
    inputs = []
    id_positions = takes_ids(model)
    for position, (shape, dtype) in enumerate(zip(model.input_shapes, model.input_dtypes, strict=True)):
        sizes = [batch if i == 0 else (steps if s is None else s) for i, s in enumerate(shape)]
        if dtype.startswith(("int", "uint")) or position in id_positions:
            ids = torch.randint(1, max(2, vocabulary), sizes, generator=generator)
            if ids.dim() >= 2:
                for row in range(1, ids.shape[0]):
                    ids[row, max(1, ids.shape[1] - 2 * row) :] = 0
            inputs.append(ids)
        else:
            inputs.append(torch.randn(sizes, generator=generator))
    return inputs


def _smallest_vocabulary(model: KerasModel) -> int:
    sizes = [
        int(layer.spec.config.get("input_dim", 2))
        for _, entry, layer in _all_layers(model)
        if entry.class_name == "Embedding"
    ]
    return min(sizes) if sizes else 2


def _all_layers(model: KerasModel) -> list[tuple[str, Any, Any]]:
    found = []
    for name, entry, layer in model.layers:
        found.append((name, entry, layer))
        if isinstance(layer, KerasModel):
            found += _all_layers(layer)
    return found


def _as_list(value: Any) -> list[Tensor]:
    if isinstance(value, (list, tuple)):
        return [torch.as_tensor(np.asarray(v)) if not isinstance(v, Tensor) else v for v in value]
    return [value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))]


def _difference(got: Tensor, want: Tensor) -> float:
    """The report's difference (:data:`~.verification.DIFFERENCE`) in float64; infinite for another shape."""
    got = got.detach().to(torch.float64)
    want = want.detach().to(torch.float64)
    if got.shape != want.shape:
        return float("inf")
    return _max_abs_difference(got, want) / _scale(want)


def compare_outputs(
    source: KerasModel, run_target: Callable[[list[Tensor]], Any], output_names: list[str], seeds: int = 2
) -> dict[str, dict[str, float]]:
    """``{case: {output: difference}}`` of the target against the loaded source on random inputs."""
    report: dict[str, dict[str, float]] = {}
    for seed in range(seeds):
        inputs = sample_inputs(source, seed)
        with torch.no_grad():
            expected = _as_list(source(*inputs))
        got = _as_list(run_target(inputs))
        if len(got) != len(expected):
            raise ConversionError(
                f"verification: the target returns {len(got)} outputs, the source model {len(expected)}"
            )
        case = f"random inputs {seed}" + (
            " (ids right-padded)" if any(not t.is_floating_point() for t in inputs) else ""
        )
        report[case] = {
            name: _difference(g, e) for name, g, e in zip(output_names, got, expected, strict=True)
        }
    return report


def source_values(model: KerasModel, inputs: list[Tensor]) -> dict[Ref, Tensor]:
    """Every tensor the top-level graph of ``model`` computes on ``inputs``, by graph tensor."""
    return model.trace(*inputs)[id(model)][0]


def forward_locals(module: Any, inputs: list[Tensor]) -> dict[str, Any]:
    """The local variables of ``module.forward`` when it returns (the generated code names them after the
    program's variables)."""
    captured: dict[str, Any] = {}
    code = type(module).forward.__code__

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        sys.setprofile(previous)
    return captured


def layer_differences(
    source: KerasModel, program: Program, target: Any, inputs: list[Tensor]
) -> dict[str, float]:
    """Per layer of the top-level graph, the largest difference between its outputs in the source and the
    same variables in the generated module (layers whose outputs the generated code does not keep under the
    program's names are left out)."""
    expected = source_values(source, inputs)
    got = forward_locals(target, inputs)
    found: dict[str, float] = {}
    for step in program.steps:
        worst = None
        for variable in step.outputs:
            ref = program.variables.get(variable)
            value = got.get(variable)
            if ref is None or ref not in expected or not isinstance(value, Tensor):
                continue
            difference = _difference(value, expected[ref])
            worst = difference if worst is None else max(worst, difference)
        if worst is not None:
            found[f"{step.layer} ({step.class_name})"] = max(
                worst, found.get(f"{step.layer} ({step.class_name})", 0.0)
            )
    return found


def import_generated(code_path: Path, name: str = "unilstm_generated_model") -> Any:
    """Import a generated module from its file (not from ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(name, code_path)
    if spec is None or spec.loader is None:
        raise ConversionError(f"{code_path}: cannot import the generated module")
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(name, None)
    spec.loader.exec_module(module)
    return module


def load_source(source: PathLike) -> tuple[KerasModel, Program]:
    """The loaded source model and its program (a refusal of either names the file)."""
    model = load_model(source)
    return model, model_program(model)


def write_torch_target(program: Program, path: Path, fmt: str, shown: Path) -> tuple[str, list[str]]:
    """Write the weights (under the generated module's names) to ``path``; returns the module's source and
    the written names."""
    from .model_code_torch import emit_torch_model

    code, state = emit_torch_model(program, shown.name)
    tensors = {name: tensor.detach().contiguous() for name, tensor in state.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return code, list(tensors)


def verify_torch_target(source: KerasModel, program: Program, code: str, weights: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        code_path = Path(folder) / "generated_model.py"
        code_path.write_text(code, encoding="utf-8")
        module = import_generated(code_path)
        target = module.load(weights)
        target.eval()

        def run(inputs: list[Tensor]) -> Any:
            with torch.no_grad():
                return target(*inputs)

        report: dict[str, Any] = {"outputs": compare_outputs(source, run, program.outputs)}
        layers = layer_differences(source, program, target, sample_inputs(source, 0))
        if layers:
            report["layers"] = {"random inputs 0": layers}
        return report


def write_mindspore_target(program: Program, path: Path, shown: Path, crc: bool) -> tuple[str, dict]:
    from ..formats.mindspore_ckpt import save_checkpoint
    from .model_code_mindspore import emit_mindspore_model

    code, parameters = emit_mindspore_model(program, shown.name)
    save_checkpoint(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in parameters.items()},
        path,
        crc=crc,
        file_mode=None,
    )
    return code, parameters


def verify_mindspore_target(parameters: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    """The written .ckpt read back holds exactly ``parameters``: ``{entry: difference}``."""
    from ..formats.mindspore_ckpt import load_checkpoint

    stored = load_checkpoint(path)
    missing = sorted(set(parameters) - set(stored))
    extra = sorted(set(stored) - set(parameters))
    if missing or extra:
        raise ConversionError(f"verification: the written checkpoint lacks {missing} and has {extra} extra")
    return {
        "parameters": {
            "read back": {
                name: _difference(torch.as_tensor(np.asarray(stored[name])), torch.as_tensor(value))
                for name, value in parameters.items()
            }
        }
    }


def write_onnx_target(program: Program, path: Path, opset: int | None) -> Any:
    from ..formats.onnx_export import write_model
    from .model_onnx import export_model_onnx

    graph = export_model_onnx(program, opset)
    write_model(graph, path)
    return graph


def verify_onnx_target(source: KerasModel, program: Program, path: Path) -> dict[str, Any]:
    """The written graph in onnxruntime against the source: its outputs, and every top-level layer's output
    (the graph names each step's output after the program's variable; they are read as extra outputs of a
    copy of the graph)."""
    from ..formats.onnx_export import require_onnx, require_onnxruntime

    onnx = require_onnx()
    ort = require_onnxruntime()
    graph = onnx.load(str(path))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    kinds = {i.name: i.type for i in session.get_inputs()}

    def feed(inputs: list[Tensor]) -> dict[str, np.ndarray]:
        values = {}
        for name, tensor in zip(names, inputs, strict=True):
            array = tensor.numpy()
            if "int32" in kinds[name]:
                values[name] = array.astype(np.int32)
            elif "int64" in kinds[name]:
                values[name] = array.astype(np.int64)
            else:
                values[name] = array.astype(np.float32)
        return values

    def run(inputs: list[Tensor]) -> Any:
        return [torch.from_numpy(np.asarray(v)) for v in session.run(None, feed(inputs))]

    report: dict[str, Any] = {"outputs": compare_outputs(source, run, program.outputs)}
    layers = _onnx_layer_differences(source, program, graph, feed, onnx, ort)
    if layers:
        report["layers"] = {"random inputs 0": layers}
    return report


def _onnx_layer_differences(
    source: KerasModel, program: Program, graph: Any, feed: Callable[[list[Tensor]], Any], onnx: Any, ort: Any
) -> dict[str, float]:
    try:
        inferred = onnx.shape_inference.infer_shapes(graph)
    except Exception:  # shape inference is best effort; the outputs above were compared anyway
        return {}
    typed = {info.name: info for info in inferred.graph.value_info}
    wanted = [v for step in program.steps for v in step.outputs if v in typed and v not in program.outputs]
    if not wanted:
        return {}
    extended = onnx.ModelProto()
    extended.CopyFrom(graph)
    extended.graph.output.extend([typed[name] for name in wanted])
    session = ort.InferenceSession(extended.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = sample_inputs(source, 0)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed(inputs)), strict=True))
    expected = source_values(source, inputs)
    found: dict[str, float] = {}
    for step in program.steps:
        label = f"{step.layer} ({step.class_name})"
        for variable in step.outputs:
            ref = program.variables.get(variable)
            if variable in values and ref in expected:
                difference = _difference(torch.from_numpy(np.asarray(values[variable])), expected[ref])
                found[label] = max(found.get(label, 0.0), difference)
    return found
