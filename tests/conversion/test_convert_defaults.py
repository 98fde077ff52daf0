"""Conversion defaults that real models showed wrong: the source's parameter prefix kept, differences judged
relative to the outputs' magnitude, --emit-code refused before anything runs, a Keras model's other layers
named in the report, the call layout of a .ckpt given on the command line, and generated code that finds
its weights next to itself."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from unilstm import cli
from unilstm.convert import ConversionError, convert, load
from unilstm.convert.verification import _compare
from unilstm.formats.mindspore_ckpt import load_checkpoint

pytest.importorskip("h5py")
MODELS = Path(__file__).parents[1] / "fixtures" / "keras_models"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, batch_first=True)
        self.fc = torch.nn.Linear(4, 2)


def _net_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    torch.save(_Net().state_dict(), path)
    return path


def test_a_ckpt_keeps_the_sources_prefix(tmp_path):
    """Before: lstm.weight_ih_l0 became weight_ih_l0, so load_param_into_net loaded nothing into a net that
    holds self.lstm."""
    convert(_net_file(tmp_path), tmp_path / "net.ckpt")
    names = [n for n in load_checkpoint(tmp_path / "net.ckpt") if not n.startswith("unilstm.")]
    assert names == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"]
    convert(_net_file(tmp_path), tmp_path / "flat.ckpt", prefix="")
    assert "weight_ih_l0" in load_checkpoint(tmp_path / "flat.ckpt")


def test_differences_are_relative_to_the_outputs_magnitude():
    """Before: a cell state of 4 rounded in float32 (1.01e-5 away) failed the absolute 1e-5."""

    class Unit:
        name = "lstm"
        spec = type("Spec", (), {"input_size": 2})()

    report = _compare(
        lambda x, lengths: {"c_n": torch.tensor([4.0, 0.5], dtype=torch.float64)},
        lambda x, lengths: {"c_n": torch.tensor([4.0 + 1.01e-5, 0.5], dtype=torch.float64)},
        Unit(),  # type: ignore[arg-type]
        0,
        (Path("t"), "t"),
    )
    for outputs in report.values():
        assert outputs["c_n"] == pytest.approx(1.01e-5 / 4.0)
    small = _compare(
        lambda x, lengths: {"h": torch.tensor([0.25], dtype=torch.float64)},
        lambda x, lengths: {"h": torch.tensor([0.25 + 3e-6], dtype=torch.float64)},
        Unit(),  # type: ignore[arg-type]
        0,
        (Path("t"), "t"),
    )
    assert all(o["h"] == pytest.approx(3e-6, rel=1e-3) for o in small.values())


def test_emit_code_without_a_code_form_is_refused_before_reading(tmp_path):
    said = []
    with pytest.raises(ConversionError, match="has no code form"):
        convert(_net_file(tmp_path), tmp_path / "x.onnx", emit_code=tmp_path / "x.py", progress=said.append)
    assert said == [] and not (tmp_path / "x.onnx").exists()


def test_a_keras_models_other_layers_are_named_in_the_report(tmp_path):
    """Before: an LSTM-only conversion of a Keras model dropped its Dense and BatchNorm layers without a
    word."""
    report = convert(MODELS / "k3_sign.keras", tmp_path / "sign.keras", layer=None)
    text = " ".join(report.notes)
    assert "'batch_normalization' (BatchNormalization)" in text and "'dense_1' (Dense)" in text


def test_batch_first_is_taken_for_a_ckpt(tmp_path, capsys):
    """A .ckpt stores no call layout: read time-major unless --batch-first says otherwise."""
    convert(_net_file(tmp_path), tmp_path / "net.ckpt")
    assert load(tmp_path / "net.ckpt")[0].batch_first is False
    status = cli.main(
        ["convert", "-q", "--batch-first", str(tmp_path / "net.ckpt"), str(tmp_path / "b.safetensors")]
    )
    assert status == 0
    assert load(tmp_path / "b.safetensors")[0].batch_first is True
    assert load(tmp_path / "net.ckpt", batch_first=True)[0].batch_first is True


def test_emitted_code_finds_its_weights_next_to_itself(tmp_path, monkeypatch):
    """Before: WEIGHTS held the path as given to convert, relative to the folder convert ran in."""
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    convert(_net_file(tmp_path), Path("out") / "net.pt", emit_code=Path("out") / "net_model.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = importlib.util.spec_from_file_location("net_model", folder / "net_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WEIGHTS == "net.pt"
    model = module.load()
    output, _ = model(torch.randn(5, 2, 3))
    assert output.shape == (5, 2, 4)
    assert os.getcwd() == str(elsewhere)
