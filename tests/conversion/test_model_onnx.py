"""Whole Keras models exported as one ONNX graph (:func:`unilstm.convert.model_onnx.export_model_onnx`),
checked with ``onnx.checker`` and run with onnxruntime against ``unilstm.keras.load_model``.

Every fixture model of ``tests/fixtures/keras_models/`` the export supports runs on the fixture's own inputs
where they fit the export's assumptions (ids with padding 0 only at the end of a row), else on the same ids
with each inner 0 replaced by 1; it equals the loaded model within 1e-5 relative (+1e-6 absolute), and
Keras's own outputs where the fixture's inputs were used. Layers and situations the fixtures lack are
checked on models built from configs with random weights; refusals are checked by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from unilstm.convert import model_program as program_module  # noqa: E402
from unilstm.convert.file_kinds import ConversionError  # noqa: E402
from unilstm.convert.model_onnx import export_model_onnx  # noqa: E402
from unilstm.convert.model_program import model_program  # noqa: E402
from unilstm.keras import load_model  # noqa: E402
from unilstm.keras_model.model import KerasModel  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "keras_models"
MODELS = [
    "tagger", "tagger_sum", "sign", "charlm", "forecast", "nested", "shared", "encdec", "cnn_lstm",
    "attention", "zoo", "hard_sigmoid", "finetune",
]  # fmt: skip
FILES = [f"{g}_{m}.keras" for g in ("k3", "tfk") for m in MODELS] + [
    f"k22_{m}.h5" for m in ("seq", "func", "hard_sigmoid", "bidirectional", "cudnn")
]
_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}


def run_onnx(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {
        i.name: np.asarray(x).astype(_TYPES[i.type])
        for i, x in zip(session.get_inputs(), inputs, strict=True)
    }
    return list(session.run(None, feed))


def run_torch(model: KerasModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*[torch.as_tensor(x) for x in inputs])
    return [t.numpy() for t in (out if isinstance(out, list) else [out])]


def assert_close(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def right_padded(ids: np.ndarray) -> np.ndarray:
    """The ids with every 0 before a row's last nonzero id replaced by 1: padding only at the end."""
    out = ids.copy()
    for row in out.reshape(-1, out.shape[-1]):
        length = len(row) - int(np.argmax(row[::-1] != 0)) if row.any() else 0
        row[:length][row[:length] == 0] = 1
    return out


def fixture_inputs(name: str) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """(inputs, Keras's outputs, whether the inputs are the fixture's own)."""
    with np.load(FIXTURES / f"{name.split('.')[0]}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    inputs = [arrays[f"input_{i}"] for i in range(len([k for k in arrays if k.startswith("input_")]))]
    outputs = [arrays[f"output_{i}"] for i in range(len([k for k in arrays if k.startswith("output_")]))]
    fitted = [right_padded(x) if x.dtype.kind in "iu" else x for x in inputs]
    return fitted, outputs, all(np.array_equal(a, b) for a, b in zip(fitted, inputs, strict=True))


def _program(model: KerasModel, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    if name == "k22_func.h5":
        # Keras 2.2 declares the ids input float32; the probe's random floats would be negative ids
        original = program_module._probe_inputs
        monkeypatch.setattr(program_module, "_probe_inputs", lambda m: [x.abs() for x in original(m)])
    return model_program(model)


@pytest.mark.parametrize("name", FILES)
def test_fixture_models_export_and_match(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(FIXTURES / name)
    exported = export_model_onnx(_program(model, name, monkeypatch))
    onnx.checker.check_model(exported, full_check=True)
    inputs, keras_outputs, own = fixture_inputs(name)
    got = run_onnx(exported, inputs)
    assert_close(got, run_torch(model, inputs))
    if own:
        assert_close(got, keras_outputs)


def test_graph_inputs_outputs_and_names() -> None:
    model = load_model(FIXTURES / "k3_tagger.keras")
    exported = export_model_onnx(model_program(model))
    graph = exported.graph
    (ids,) = graph.input
    assert ids.name == "x_input_layer"
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT32
    dims = [d.dim_param or d.dim_value for d in ids.type.tensor_type.shape.dim]
    assert dims == ["batch", 7]
    assert [o.name for o in graph.output] == ["time_distributed"]
    names = {i.name for i in graph.initializer}
    assert {
        "embedding.embeddings",
        "bidirectional.forward_layer.W",
        "bidirectional.backward_layer.R",
    } <= names
    ops = [n.op_type for n in graph.node]
    assert ops.count("LSTM") == 4 and "Gather" in ops and "ReduceSum" in ops
    assert exported.opset_import[0].version == 17
    assert export_model_onnx(model_program(model), opset=18).opset_import[0].version == 18


def test_the_batch_and_open_sizes_are_dynamic() -> None:
    model = load_model(FIXTURES / "k3_charlm.keras")
    exported = export_model_onnx(model_program(model))
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(5, 7, 4)).astype(np.float32), rng.normal(size=(5, 5, 4)).astype(np.float32)]
    assert_close(run_onnx(exported, inputs), run_torch(model, inputs))


@pytest.mark.parametrize("name", ["k3_masking.keras", "tfk_masking.keras"])
def test_an_lstm_fed_a_mask_with_gaps_is_refused_by_name(name: str) -> None:
    program = model_program(load_model(FIXTURES / name))
    with pytest.raises(ConversionError, match=r"LSTM 'lstm': its mask can have gaps .*Masking 'masking'"):
        export_model_onnx(program)


def test_a_bad_opset_is_refused() -> None:
    program = model_program(load_model(FIXTURES / "k3_forecast.keras"))
    with pytest.raises(ConversionError, match="opset must be an int >= 13"):
        export_model_onnx(program, opset=11)
