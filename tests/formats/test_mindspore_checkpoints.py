"""MindSpore .ckpt files: real MindSpore 2.10 files read here with identical tensors, our files read back,
MindSpore's load_param_into_net rules, and clear errors for bad files.
(tools/live/check_mindspore_reads_ours.py checks, with real MindSpore, that it reads our files.)"""

from __future__ import annotations

import json
import os
import pathlib
import stat

import numpy as np
import pytest
import torch

import unilstm
from unilstm.mindspore import (
    LSTM,
    CheckpointError,
    load_checkpoint,
    load_param_into_net,
    mindspore_named_parameters,
    save_checkpoint,
)

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "mindspore"
WRITTEN = json.loads((FIXTURES / "checkpoints.json").read_text())


def raw_bytes(value: torch.Tensor) -> bytes:
    tensor = value.contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


@pytest.mark.parametrize("name", [n for n, meta in WRITTEN.items() if not meta.get("encrypted")])
def test_reads_mindspore_files_bit_for_bit(name: str) -> None:
    params = load_checkpoint(FIXTURES / name)
    entries = WRITTEN[name]["entries"]
    assert list(params) == list(entries)  # same names, same order
    for key, expected in entries.items():
        value = params[key]
        if "str" in expected:
            assert value == expected["str"]
            continue
        if isinstance(value, (bool, int, float)):  # 0-d Int64 / Float32 / Bool: Python values
            assert expected["shape"] == [] and expected["dtype"] in ("Int64", "Float32", "Bool")
            value = torch.tensor(
                value,
                dtype={"Int64": torch.int64, "Float32": torch.float32, "Bool": torch.bool}[expected["dtype"]],
            )
        assert list(value.shape) == expected["shape"], key
        assert raw_bytes(value) == bytes.fromhex(expected["hex"]), key


def test_mindspore_file_loads_into_front_door_and_runs() -> None:
    config = WRITTEN["lstm_l2_bi.ckpt"]["config"]
    net = LSTM(**config)
    assert load_param_into_net(net, load_checkpoint(FIXTURES / "lstm_l2_bi.ckpt")) == ([], [])
    crc_net = LSTM(**config)
    load_param_into_net(crc_net, load_checkpoint(FIXTURES / "lstm_l2_bi_crc.ckpt"))
    for (_, a), (_, b) in zip(net.named_parameters(), crc_net.named_parameters(), strict=True):
        assert torch.equal(a, b)


def test_float16_checkpoint_keeps_dtype() -> None:
    params = load_checkpoint(FIXTURES / "lstm_float16.ckpt")
    assert all(v.dtype == torch.float16 for v in params.values())
    net = LSTM(2, 3, dtype="float16")
    assert load_param_into_net(net, params, strict_load=True) == ([], [])


def test_prefix_loads_encoder_of_bigger_cell() -> None:
    path = FIXTURES / "encoder_in_cell.ckpt"
    everything = load_checkpoint(path)
    assert everything["epoch_num"] == 7 and everything["step_num"] == 2**40
    assert everything["lr"] == 0.25 and everything["done"] is True
    assert everything["note"] == "trained on 中文 data"
    encoder = load_checkpoint(path, prefix="encoder.")
    assert sorted(encoder) == sorted(name for name, _ in LSTM(3, 4, 2, bidirectional=True).named_parameters())
    net = LSTM(**WRITTEN["encoder_in_cell.ckpt"]["config"])
    assert load_param_into_net(net, encoder, strict_load=True) == ([], [])
    assert torch.equal(net.weight_hh_l1_reverse, everything["encoder.weight_hh_l1_reverse"])
    with pytest.raises(
        CheckpointError, match=r"encoder_in_cell.ckpt.*no entry starts with prefix 'decoder\.'"
    ):
        load_checkpoint(path, prefix="decoder.")


def test_load_param_into_net_rules_like_mindspore() -> None:
    """Measured on MindSpore 2.10: unknown names never raise (even strict), they come back in ckpt_not_loaded;
    non-strict loading finds a prefix (encoder.) by suffix; strict does not and refuses dtype conversion."""
    everything = load_checkpoint(FIXTURES / "encoder_in_cell.ckpt")
    config = WRITTEN["encoder_in_cell.ckpt"]["config"]
    loose = LSTM(**config)
    not_loaded, ckpt_not_loaded = load_param_into_net(loose, everything)
    assert not_loaded == [] and ckpt_not_loaded == list(everything)  # MindSpore keeps prefixed names there
    assert torch.equal(loose.weight_ih_l0, everything["encoder.weight_ih_l0"])
    strict = LSTM(**config)
    with pytest.warns(UserWarning, match="not loaded"):
        not_loaded, ckpt_not_loaded = load_param_into_net(strict, everything, strict_load=True)
    assert not_loaded == [name for name, _ in strict.parameters_and_names()]
    assert ckpt_not_loaded == list(everything)
    exact = load_checkpoint(FIXTURES / "encoder_in_cell.ckpt", prefix="encoder.")
    exact["unknown.weight"] = torch.zeros(3)
    assert load_param_into_net(LSTM(**config), exact, strict_load=True) == ([], ["unknown.weight"])
    halves = {k: v.half() for k, v in exact.items() if k != "unknown.weight"}
    converted = LSTM(**config)
    assert load_param_into_net(converted, halves) == ([], [])
    assert converted.weight_ih_l0.dtype == torch.float32
    with pytest.raises(RuntimeError, match=r"weight_ih_l0 has dtype torch.float32 .* torch.float16.*strict"):
        load_param_into_net(LSTM(**config), halves, strict_load=True)
    with pytest.raises(RuntimeError, match=r"weight_ih_l0 has shape \(16, 3\) in the net and \(16, 5\)"):
        load_param_into_net(LSTM(**config), {"weight_ih_l0": torch.zeros(16, 5)})
    with pytest.raises(TypeError, match="strict_load must be a bool"):
        load_param_into_net(LSTM(**config), exact, strict_load=1)
    with pytest.raises(TypeError, match="net must be an nn.Module"):
        load_param_into_net(object(), exact)


def test_round_trip_every_dtype_and_append_dict(tmp_path: pathlib.Path) -> None:
    original = load_checkpoint(FIXTURES / "dtypes.ckpt")
    path = tmp_path / "copy.ckpt"
    save_checkpoint(
        original, path, append_dict={"epoch": 3, "rate": 0.5, "tag": "ok", "flag": False}, crc=True
    )
    back = load_checkpoint(path)
    assert list(back) == list(original) + ["epoch", "rate", "tag", "flag"]
    for key, value in original.items():
        if isinstance(value, torch.Tensor):
            assert back[key].dtype == value.dtype and raw_bytes(back[key]) == raw_bytes(value), key
        else:
            assert back[key] == value and type(back[key]) is type(value), key
    assert (back["epoch"], back["rate"], back["tag"], back["flag"]) == (3, 0.5, "ok", False)
    # byte-identical to MindSpore's own file for the same entries
    same = tmp_path / "same.ckpt"
    save_checkpoint(original, same)
    assert same.read_bytes() == (FIXTURES / "dtypes.ckpt").read_bytes()


def test_writes_mindspore_identical_lstm_file(tmp_path: pathlib.Path) -> None:
    """Our file for the same LSTM weights is byte for byte MindSpore's (same order, types, layout)."""
    net = LSTM(**WRITTEN["lstm_l2_bi.ckpt"]["config"])
    load_param_into_net(net, load_checkpoint(FIXTURES / "lstm_l2_bi.ckpt"))
    save_checkpoint(net, tmp_path / "ours.ckpt")
    assert (tmp_path / "ours.ckpt").read_bytes() == (FIXTURES / "lstm_l2_bi.ckpt").read_bytes()
    save_checkpoint(net, tmp_path / "ours_crc.ckpt", crc=True)
    assert (tmp_path / "ours_crc.ckpt").read_bytes() == (FIXTURES / "lstm_l2_bi_crc.ckpt").read_bytes()


def test_canonical_and_nested_modules_save_under_mindspore_names(tmp_path: pathlib.Path) -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Linear(5, 3)
            self.encoder = unilstm.LSTM(3, 4, 2, bidirectional=True)
            self.head = torch.nn.Linear(8, 2)

    model = Model()
    names = [name for name, _ in mindspore_named_parameters(model)]
    assert names[:3] == ["embedding.weight", "embedding.bias", "encoder.weight_ih_l0"]
    assert names[6] == "encoder.weight_hh_l0" and names[-1] == "head.bias"
    save_checkpoint(model, tmp_path / "model.ckpt")
    loaded = load_checkpoint(tmp_path / "model.ckpt", prefix="encoder.")
    net = LSTM(3, 4, 2, bidirectional=True)
    assert load_param_into_net(net, loaded, strict_load=True) == ([], [])
    x = torch.randn(4, 2, 3)
    assert torch.equal(net(x)[0], model.encoder(x)[0])
    # torch.nn.LSTM's state_dict too: torch names are MindSpore names
    save_checkpoint(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "torch.ckpt")
    assert set(load_checkpoint(tmp_path / "torch.ckpt")) == {
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
    }


def test_chunked_tensors(tmp_path: pathlib.Path) -> None:
    net = LSTM(3, 4)
    path = tmp_path / "chunked.ckpt"
    save_checkpoint(net, path, chunk_bytes=20)  # weight_ih_l0 (16, 3) float32 = 192 bytes: 10 chunks
    assert path.read_bytes().count(b"weight_ih_l0") == 10
    back = load_checkpoint(path)
    assert all(torch.equal(back[name], p) for name, p in net.named_parameters())


def test_atomic_write_and_mode(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "net.ckpt"
    save_checkpoint(LSTM(2, 2), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400  # like MindSpore
    save_checkpoint(LSTM(2, 2), path, file_mode=None)  # overwrites a read-only file, as MindSpore does
    assert os.listdir(tmp_path) == ["net.ckpt"]

    class Exploding(dict):
        def items(self):
            yield "weight", torch.zeros(2)
            raise RuntimeError("boom")

    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(Exploding(), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["net.ckpt"]  # no half file, no temp


def test_save_rejects_unsupported_values(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        TypeError, match=r"'x' must be a tensor, numpy array, int, float, bool or str, got list"
    ):
        save_checkpoint({"x": [1, 2]}, tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match=r"complex64, which MindSpore checkpoints cannot hold"):
        save_checkpoint({"x": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match="append_dict must be a dict"):
        save_checkpoint({}, tmp_path / "a.ckpt", append_dict=[("a", 1)])
    assert not list(tmp_path.iterdir())


def test_crc_mismatch_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    data = bytearray((FIXTURES / "lstm_l2_bi_crc.ckpt").read_bytes())
    data[100] ^= 1
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged.ckpt: CRC32 check failed"):
        load_checkpoint(path)
    assert load_checkpoint(path, crc_check=False)  # MindSpore's default: the trailer is not checked


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"encrypted.ckpt: the checkpoint is encrypted \(AES-GCM\)"),
        (b"", r"bad.ckpt: the file is empty"),
        (
            b"hello world, not a checkpoint at all" * 3,
            r"bad.ckpt: not a MindSpore checkpoint: byte 0 is 0x68",
        ),
        (b"\x0a\xff", r"bad.ckpt: truncated or corrupted"),
        (b"\x0a\x05\x0a\x03abc", r"bad.ckpt: entry 'abc' holds no tensor"),
        (b"\x0a\x08\x0a\x01a\x12\x03\x12\x01F", r"bad.ckpt: entry 'a': unsupported tensor type 'F'"),
        (b"PK\x03\x04" + bytes(40), r"bad.ckpt: not a MindSpore checkpoint"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: pathlib.Path, content: bytes | None, message: str) -> None:
    path = FIXTURES / "encrypted.ckpt" if content is None else tmp_path / "bad.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_every_truncation_of_a_real_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    data = (FIXTURES / "encoder_in_cell.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    boundaries = 0
    for size in range(1, len(data)):
        path.write_bytes(data[:size])
        try:
            load_checkpoint(path)
            boundaries += 1  # cut exactly between two entries: a shorter valid checkpoint
        except CheckpointError as error:
            assert "cut.ckpt" in str(error)
    assert boundaries == len(load_checkpoint(FIXTURES / "encoder_in_cell.ckpt")) - 1  # only entry boundaries


def test_checkpoint_error_is_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)


def test_sizes_that_do_not_add_up(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "odd.ckpt"
    save_checkpoint({"w": torch.zeros(4)}, path, file_mode=None)
    data = path.read_bytes().replace(b"Float32", b"Float64")
    path.write_bytes(data)
    with pytest.raises(
        CheckpointError, match=r"entry 'w': Float64 with shape \[4\] needs 32 bytes.*holds 16"
    ):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes().replace(b"Float64", b"Cplx128"))
    with pytest.raises(CheckpointError, match=r"unsupported tensor type 'Cplx128'"):
        load_checkpoint(path)


def test_numpy_values_keep_their_dtype(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "np.ckpt"
    save_checkpoint({"a": np.arange(3, dtype=np.int32), "b": np.float64(1.5), "c": np.str_("x")}, path)
    back = load_checkpoint(path)
    assert back["a"].dtype == torch.int32 and back["b"].dtype == torch.float64 and back["c"] == "x"
