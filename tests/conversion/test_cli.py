"""The ``unilstm`` command line: convert, inspect, bench."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from unilstm import cli
from unilstm.formats.mindspore_ckpt import load_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures"
MS_CKPT = FIXTURES / "mindspore" / "lstm_l2_bi.ckpt"
K3_SEQ = FIXTURES / "keras_files" / "k3_seq.keras"
pytest.importorskip("h5py")


def test_convert_prints_differences_per_output(tmp_path, capsys):
    assert cli.main(["convert", str(MS_CKPT), str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "lstm [no mask]: max |difference| output" in out
    assert "h_n" in out and "c_n" in out and "verified: max difference" in out
    assert (tmp_path / "m.onnx").is_file()


def test_quiet_prints_nothing(tmp_path, capsys):
    assert cli.main(["convert", "-q", str(MS_CKPT), str(tmp_path / "m.pt")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_json_report(tmp_path, capsys):
    assert cli.main(["convert", "--json", str(MS_CKPT), str(tmp_path / "m.keras")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["verified"] and report["max_difference"] <= 1e-5
    assert set(report["differences"]["lstm"]["no mask"]) == {"output", "h_n", "c_n"}


def test_prefix_and_layer_options(tmp_path, capsys):
    assert (
        cli.main(
            [
                "convert",
                "-q",
                str(K3_SEQ),
                str(tmp_path / "e.ckpt"),
                "--layer",
                "encoder",
                "--prefix",
                "encoder.",
            ]
        )
        == 0
    )
    assert "encoder.weight_ih_l0" in load_checkpoint(tmp_path / "e.ckpt")
    assert (
        cli.main(
            ["convert", "-q", str(tmp_path / "e.ckpt"), str(tmp_path / "e.pt"), "--source-prefix", "encoder."]
        )
        == 0
    )


def test_inexpressible_semantics_exit_2_and_write_nothing(tmp_path, capsys):
    target = tmp_path / "x.ckpt"
    assert cli.main(["convert", "--lstm-only", str(K3_SEQ), str(target)]) == 2
    err = capsys.readouterr().err
    assert "activation='relu': mindspore.nn.LSTM computes tanh only" in err
    assert "--weights-only" in err
    assert not target.exists()
    assert cli.main(["convert", "-q", "--lstm-only", "--weights-only", str(K3_SEQ), str(target)]) == 0
    assert target.exists()


def test_tolerance_failure_exits_1_and_keeps_the_existing_file(tmp_path, capsys, monkeypatch):
    target = tmp_path / "x.pt"
    target.write_bytes(b"mine")
    api = importlib.import_module("unilstm.convert.api")  # where convert() looks verify up
    monkeypatch.setattr(api, "verify", lambda *a, **k: {"lstm": {"no mask": {"output": 0.5}}})
    assert cli.main(["convert", str(MS_CKPT), str(target), "--tolerance=1e-3"]) == 1
    assert target.read_bytes() == b"mine"
    assert "nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_emit_code(tmp_path, capsys):
    assert (
        cli.main(
            [
                "convert",
                str(K3_SEQ),
                str(tmp_path / "e.pt"),
                "--layer",
                "encoder",
                "--emit-code",
                str(tmp_path / "model.py"),
            ]
        )
        == 0
    )
    code = (tmp_path / "model.py").read_text()
    assert "nn.LSTM(3, 5, num_layers=1, bias=True, batch_first=True, bidirectional=False)" in code
    assert "Keras masking" in code


def test_go_backwards_is_verified_with_a_mask_and_emitted_without_a_caveat(tmp_path, capsys):
    import importlib

    import numpy as np

    from unilstm.formats.keras_files import KerasLayerRecord, write_keras_model
    from unilstm.spec import LSTMSpec

    cv = importlib.import_module("unilstm.convert")
    config = dict(cv.keras_layer_config("back", LSTMSpec(3, 4), True, False), go_backwards=True)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(shape).astype(np.float32) * 0.5 for shape in ((3, 16), (4, 16), (16,))]
    record = KerasLayerRecord("back", "back", "LSTM", config, weights, None, "keras")
    write_keras_model([record], tmp_path / "b.keras", (None, 3))
    argv = ["convert", "--json", str(tmp_path / "b.keras"), str(tmp_path / "b.ckpt")]
    assert cli.main([*argv, "--emit-code", str(tmp_path / "model_ms.py")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["max_difference"] <= 1e-6
    assert any(case.startswith("lengths") for case in report["differences"]["back"])
    code = (tmp_path / "model_ms.py").read_text()
    assert "ops.gather_elements" in code and "not exact" not in code


def test_unreadable_source_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00\x01garbage")
    assert cli.main(["convert", str(bad), str(tmp_path / "o.pt")]) == 2
    assert str(bad) in capsys.readouterr().err
    assert cli.main(["convert", "--json", str(bad), str(tmp_path / "o.pt")]) == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_inspect_text_and_json(tmp_path, capsys):
    assert cli.main(["inspect", str(K3_SEQ)]) == 0
    text = capsys.readouterr().out
    assert "keras (keras)" in text and "activation='relu'" in text and "weight_ih_l0: (20, 3) float32" in text
    assert cli.main(["inspect", "--json", str(MS_CKPT)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["framework"] == "mindspore" and info["layers"][0]["config"]["num_layers"] == 2
    cli.main(["convert", "-q", str(MS_CKPT), str(tmp_path / "m.onnx")])
    capsys.readouterr()
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 0
    assert "'direction': 'bidirectional'" in capsys.readouterr().out


def test_bench_subcommand_delegates(monkeypatch, capsys):
    calls = []
    fake = type(sys)("unilstm.bench")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "unilstm.bench", fake)
    assert cli.main(["bench", "--quick", "--help"]) == 0
    assert calls == [["--quick", "--help"]]


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "convert" in capsys.readouterr().out


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "unilstm", "inspect", str(MS_CKPT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "mindspore" in result.stdout


def test_crc_flags_write_and_require_the_trailer(tmp_path, capsys):
    """``--crc`` ends a .ckpt target with the CRC32 trailer; ``--require-crc`` refuses a source or an
    inspected file without one (exit 2) and reads one with it, so a cut file cannot pass for a whole one."""
    plain, with_crc = tmp_path / "plain.ckpt", tmp_path / "crc.ckpt"
    assert cli.main(["convert", "-q", str(MS_CKPT), str(plain)]) == 0
    assert cli.main(["convert", "-q", "--crc", str(MS_CKPT), str(with_crc)]) == 0
    assert b"crc_num" in with_crc.read_bytes() and b"crc_num" not in plain.read_bytes()
    capsys.readouterr()
    assert cli.main(["convert", "-q", "--require-crc", str(plain), str(tmp_path / "a.pt")]) == 2
    assert "crc" in capsys.readouterr().err.lower()
    assert cli.main(["inspect", "--require-crc", str(plain)]) == 2
    assert cli.main(["convert", "-q", "--require-crc", str(with_crc), str(tmp_path / "b.pt")]) == 0
    assert cli.main(["inspect", "--require-crc", str(with_crc)]) == 0
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(with_crc.read_bytes()[:-30])
    assert cli.main(["convert", "-q", "--require-crc", str(cut), str(tmp_path / "c.pt")]) == 2
