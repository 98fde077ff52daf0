"""``unilstm inspect`` and the layer-level readers on whole Keras models: the whole graph is shown (class,
inputs, output shape, stored weights, supported or not), and Keras 2.2 files (Sequential configs as a list,
CuDNNLSTM) are read, not reported empty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import unilstm
from unilstm import cli
from unilstm.keras import load_model
from unilstm.keras_model.description import describe_model

pytest.importorskip("h5py")
MODELS = Path(__file__).parents[1] / "fixtures" / "keras_models"


def test_inspect_shows_every_layer_of_the_graph(capsys):
    assert cli.main(["inspect", str(MODELS / "k3_tagger.keras")]) == 0
    text = capsys.readouterr().out
    assert "every layer supported" in text
    assert "ok embedding (Embedding) -> [None, 7, 8]" in text
    assert "(Bidirectional)" in text and "(TimeDistributed)" in text
    assert "embeddings (50, 8)" in text


def test_inspect_json_reports_unsupported_layers_by_name(tmp_path, capsys):
    config = json.loads((MODELS / "k3_tagger.json").read_text())
    for entry in config["config"]["layers"]:
        if entry["class_name"] == "TimeDistributed":
            entry["class_name"] = "MyTagger"
    (tmp_path / "custom.json").write_text(json.dumps(config))
    info = describe_model(MODELS / "k3_tagger.weights.h5", config=tmp_path / "custom.json")
    assert not info["supported"]
    rows = {row["name"]: row for row in info["layers"]}
    bad = [row for row in info["layers"] if row["class_name"] == "MyTagger"]
    assert bad and not bad[0]["supported"] and "'MyTagger' is not supported" in bad[0]["problem"]
    assert rows["embedding"]["supported"] and rows["embedding"]["weights"][0]["shape"] == [50, 8]


def test_keras22_files_are_read_by_the_layer_readers(capsys):
    layers = unilstm.load(MODELS / "k22_seq.h5")
    assert layers and all(type(layer).__name__ == "LSTM" for layer in layers)
    assert cli.main(["inspect", str(MODELS / "k22_seq.h5")]) == 0
    text = capsys.readouterr().out
    assert "hard_sigmoid_keras2" in text and "Keras 2.2.4, Keras 2 semantics" in text


def test_cudnn_lstm_is_read_as_the_lstm_it_computes():
    """The layer-level reader gives the LSTM Keras's own loader makes of a CuDNNLSTM; the whole model, run on
    that, matches tf-keras's reference."""
    data = np.load(MODELS / "k22_cudnn.npz")
    model = load_model(MODELS / "k22_cudnn.h5")
    layers = unilstm.load(MODELS / "k22_cudnn.h5")
    assert [type(layer).__name__ for layer in layers] == ["LSTM", "LSTM"]
    cell = model.cu_dnnlstm_1.cell
    torch.testing.assert_close(layers[0].kernel, cell.kernel)
    with torch.no_grad():
        np.testing.assert_allclose(model(data["input_0"]).numpy(), data["output_0"], rtol=1e-5, atol=1e-6)
