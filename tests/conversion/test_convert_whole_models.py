"""``unilstm convert`` on whole Keras models (tests/fixtures/keras_models/): torch code + weights, ONNX,
checked against the loaded source and Keras's own outputs, every layer listed; the cases real models showed
wrong before (a BatchNormalization between LSTMs skipped by the generated code, two LSTMs side by side
chained, ONNX refusing a Dropout between LSTMs)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unilstm import cli
from unilstm.convert import convert
from unilstm.convert.file_kinds import ConversionError

pytest.importorskip("h5py")
MODELS = Path(__file__).parents[1] / "fixtures" / "keras_models"


def _inputs(stem: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    data = np.load(MODELS / f"{stem}.npz")
    count = len([k for k in data.files if k.startswith("input_")])
    outs = len([k for k in data.files if k.startswith("output_")])
    return [data[f"input_{i}"] for i in range(count)], [data[f"output_{i}"] for i in range(outs)]


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "source",
    [
        "k3_sign.keras",
        "tfk_charlm.h5",
        "k3_tagger.keras",
        "k22_cudnn.h5",
        "k3_encdec.keras",
        "tfk_nested.keras",
    ],
)
def test_a_whole_model_becomes_torch_code_that_computes_what_keras_computes(source, tmp_path):
    """k3_sign has BatchNormalization between its LSTMs (the LSTM-level code skipped it: off by 1.25);
    tfk_charlm has two LSTMs side by side on two inputs (the LSTM-level code chained them and crashed)."""
    stem = source.split(".")[0]
    report = convert(MODELS / source, tmp_path / f"{stem}.pt", emit_code=tmp_path / f"{stem}_model.py")
    assert report.verified and report.max_difference < 1e-5
    assert report.layers and all("(" in layer for layer in report.layers)
    assert set(report.differences) >= {"outputs", "layers"}
    module = _import(tmp_path / f"{stem}_model.py")
    model = module.load()
    inputs, expected = _inputs(stem)
    with torch.no_grad():
        got = model(*[torch.from_numpy(x) for x in inputs])
    got = got if isinstance(got, list) else [got]
    for tensor, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(tensor.numpy(), want, rtol=1e-5, atol=2e-6)


def test_a_pt_without_code_holds_the_whole_models_weights(tmp_path):
    convert(MODELS / "k3_sign.keras", tmp_path / "sign.safetensors")
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "sign.safetensors"))
    assert names == {
        f"{layer}.{weight}"
        for layer, weights in (
            ("lstm", ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")),
            ("lstm_1", ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")),
            ("dense", ("weight", "bias")),
            ("dense_1", ("weight", "bias")),
            ("batch_normalization", ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
            (
                "batch_normalization_1",
                ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
            ),
        )
        for weight in weights
    }


@pytest.mark.parametrize("source", ["k3_forecast.keras", "tfk_tagger.h5", "k3_cnn_lstm.keras"])
def test_a_whole_model_becomes_one_onnx_graph(source, tmp_path):
    """k3_forecast has Dropout between its LSTMs, which the LSTM-level export refused ("not known to
    follow")."""
    report = convert(MODELS / source, tmp_path / "model.onnx")
    assert report.verified and report.max_difference < 1e-5
    layers = report.differences["layers"]["random inputs 0"]
    assert len(layers) >= 3 and max(layers.values()) < 1e-5


def test_a_layer_onnx_cannot_run_is_refused_by_name_and_nothing_is_written(tmp_path):
    with pytest.raises(ConversionError, match="LSTM 'lstm'.*mask can have gaps"):
        convert(MODELS / "k3_masking.keras", tmp_path / "masking.onnx")
    assert not (tmp_path / "masking.onnx").exists()


def test_the_cli_reports_every_layer_of_a_whole_model(tmp_path, capsys):
    assert cli.main(["convert", "--json", str(MODELS / "k3_sign.keras"), str(tmp_path / "sign.pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    layers = report["differences"]["layers"]["random inputs 0"]
    assert any(name.startswith("batch_normalization") for name in layers)
    assert max(layers.values()) < 1e-5
    assert cli.main(["convert", str(MODELS / "k3_sign.keras"), str(tmp_path / "sign2.pt")]) == 0
    text = capsys.readouterr().out
    assert "max |difference|" in text and "batch_normalization (BatchNormalization)" in text


def test_lstm_only_keeps_the_layer_level_conversion(tmp_path):
    report = convert(MODELS / "k3_sign.keras", tmp_path / "lstms.pt", lstm_only=True)
    assert any("other layers are not in the target" in note for note in report.notes)


@pytest.mark.parametrize("target", ["model.pt", "model.ckpt", "model.onnx"])
def test_stateful_models_are_refused_by_name(tmp_path, target):
    with pytest.raises(ConversionError, match=r"LSTM 'lstm'.*stateful") as refused:
        convert(MODELS / "k3_stateful.keras", tmp_path / target)
    assert "stateful" in str(refused.value)
    assert not (tmp_path / target).exists()
