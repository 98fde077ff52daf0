"""Hostile and damaged .ckpt / .safetensors / .pt files at the format readers: shapes that numpy or torch
cannot describe, names that are not text, repeated names, a required CRC, and a seeded fuzz over real and
unilstm-written files in which only the documented error types may escape."""

from __future__ import annotations

import json
import os
import pathlib
import random
import stat
import struct

import pytest
import torch

from unilstm.formats.mindspore_ckpt import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from unilstm.formats.torch_files import (
    TorchFileError,
    parse_safetensors,
    read_torch_file,
    safetensors_bytes,
    torch_file_bytes,
)
from unilstm.mindspore import LSTM

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "mindspore"
WRITTEN = json.loads((FIXTURES / "checkpoints.json").read_text())
PLAIN_FIXTURES = sorted(name for name, meta in WRITTEN.items() if not meta.get("encrypted"))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry(tag: bytes, type_name: bytes, dims: list[int], content: bytes) -> bytes:
    """One appended ``Checkpoint`` message holding one ``Value``, as MindSpore writes it."""
    tensor = b"".join(varint(1 << 3) + varint(d % 2**64) for d in dims)
    tensor += field(2, type_name) + field(3, content)
    return field(1, field(1, tag) + field(2, tensor))


# -- shapes, names, CRC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [[0, 2**62], [0, 2**40, 2**40], [2**62, 0, 3]])
def test_an_empty_tensor_with_an_impossible_shape_is_a_checkpoint_error(tmp_path, dims):
    """Guards: dims such as [0, 2**62] (no bytes needed) reached numpy, whose ValueError escaped; the
    shape is now checked, with Python integers, before any numpy call."""
    path = tmp_path / "huge.ckpt"
    path.write_bytes(entry(b"w", b"Float32", dims, b""))
    with pytest.raises(CheckpointError, match=r"huge.ckpt: entry 'w': shape .* too large"):
        load_checkpoint(path)


def test_an_empty_tensor_with_a_describable_shape_still_loads(tmp_path):
    """The bound is what numpy and torch can index: a wide empty tensor within it reads as before."""
    path = tmp_path / "wide.ckpt"
    path.write_bytes(entry(b"w", b"Float32", [0, 2**61 - 1], b"") + entry(b"v", b"Int8", [0, 5], b""))
    values = load_checkpoint(path)
    assert values["w"].shape == (0, 2**61 - 1) and values["v"].shape == (0, 5)


def test_a_name_that_is_not_utf8_is_a_checkpoint_error_naming_the_byte(tmp_path):
    """Guards: a tag with invalid UTF-8 came back as a bytes key; it is a CheckpointError at its offset."""
    first = entry(b"ok", b"Float32", [1], b"\0\0\0\0")
    path = tmp_path / "names.ckpt"
    path.write_bytes(first + entry(b"\xff\xfe", b"Float32", [1], b"\0\0\0\0"))
    with pytest.raises(CheckpointError, match=rf"names.ckpt: .*entry at byte {len(first)} has a name that"):
        load_checkpoint(path)


def test_a_repeated_name_is_refused_not_silently_replaced(tmp_path):
    """Guards: a second entry under a name already read replaced the first without a word."""
    one = entry(b"w", b"Float32", [1], b"\0\0\x80\x3f")
    path = tmp_path / "twice.ckpt"
    path.write_bytes(one + entry(b"b", b"Float32", [1], b"\0\0\0\0") + entry(b"w", b"Float32", [1], bytes(4)))
    with pytest.raises(CheckpointError, match=r"twice.ckpt: corrupted: entry 'w' at byte \d+ repeats"):
        load_checkpoint(path)


def test_require_crc_refuses_a_missing_or_wrong_trailer(tmp_path):
    """Guards: a cut that removes the CRC trailer looked like a file that never had one; require_crc=True
    refuses it, and checks the CRC even where crc_check=False."""
    whole = (FIXTURES / "lstm_l2_bi_crc.ckpt").read_bytes()
    assert load_checkpoint(FIXTURES / "lstm_l2_bi_crc.ckpt", require_crc=True)
    assert read_checkpoint(FIXTURES / "lstm_l2_bi_crc.ckpt").crc is True
    path = tmp_path / "cut.ckpt"
    path.write_bytes(whole[:-17])  # exactly the trailer gone: a valid checkpoint without CRC
    assert read_checkpoint(path).crc is False and load_checkpoint(path)  # MindSpore reads it too
    with pytest.raises(CheckpointError, match=r"cut.ckpt: no CRC32 trailer, and require_crc=True"):
        load_checkpoint(path, require_crc=True)
    damaged = bytearray(whole)
    damaged[50] ^= 4
    path.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"cut.ckpt: CRC32 check failed"):
        load_checkpoint(path, crc_check=False, require_crc=True)
    with pytest.raises(TypeError, match="require_crc must be a bool"):
        load_checkpoint(path, require_crc="yes")


def test_read_checkpoint_counts_every_entry_whatever_the_prefix():
    contents = read_checkpoint(FIXTURES / "encoder_in_cell.ckpt", prefix="encoder.")
    assert contents.entries == len(load_checkpoint(FIXTURES / "encoder_in_cell.ckpt"))
    assert contents.entries > len(contents.values) and contents.crc is False


def test_save_with_file_mode_none_gives_a_new_file_the_process_default(tmp_path):
    """Guards the docstring's promise (the issue saw 0600): a new file gets 0o666 & ~umask."""
    umask = os.umask(0o022)
    try:
        save_checkpoint(LSTM(2, 2), tmp_path / "new.ckpt", file_mode=None)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "new.ckpt").st_mode) == 0o644


# -- safetensors headers ----------------------------------------------------------------------------------


def safetensors_with_header(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("shape", [[0, 2**62], [0, 2**70], [2**33, 2**33, 0]])
def test_a_safetensors_shape_too_large_to_describe_is_a_torch_file_error(shape):
    """Guards: an empty tensor's shape went to torch.empty unchecked (overflow errors, or strides that
    wrap); the same bound as .ckpt applies."""
    data = safetensors_with_header({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    with pytest.raises(TorchFileError, match=r"x.safetensors: tensor 'w' has shape .* too large"):
        parse_safetensors(data, "x.safetensors")


def test_a_deeply_nested_safetensors_header_is_a_torch_file_error():
    """Guards: json's RecursionError escaped for a header of nested lists."""
    text = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(TorchFileError, match=r"x.safetensors: the safetensors header nests too deeply"):
        parse_safetensors(struct.pack("<Q", len(text)) + text, "x.safetensors")


# -- fuzz -------------------------------------------------------------------------------------------------


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Damaged copies of ``data``: cuts, flipped bytes, inserted and deleted runs, big varints."""
    result = []
    for _ in range(count):
        kind = rng.randrange(5)
        damaged = bytearray(data)
        if kind == 0:
            damaged = damaged[: rng.randrange(len(data))]
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] ^= rng.randint(1, 255)
        elif kind == 2:
            at = rng.randrange(len(damaged))
            damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 3:
            at = rng.randrange(len(damaged))
            del damaged[at : at + rng.randint(1, 32)]
        else:
            at = rng.randrange(len(damaged))
            damaged[at : at + 10] = b"\xff" * 9 + b"\x7f"
        result.append(bytes(damaged))
    return result


def _written_files(folder: pathlib.Path) -> dict[str, bytes]:
    """Files unilstm itself writes: .ckpt with and without CRC, safetensors with metadata, torch.save."""
    torch.manual_seed(0)
    net = LSTM(3, 4, 2, bidirectional=True)
    state = dict(net.named_parameters())
    files = {}
    for crc in (False, True):
        path = folder / f"written_{crc}.ckpt"
        save_checkpoint(net, path, append_dict={"epoch": 3, "note": "text"}, crc=crc, file_mode=None)
        files[f"ours_crc{crc}.ckpt"] = path.read_bytes()
        path.unlink()
    files["ours.safetensors"] = safetensors_bytes(state, {"k": "v"})
    files["ours.pt"] = torch_file_bytes(state)
    return files


def _read(name: str, path: pathlib.Path) -> object:
    if name.endswith(".ckpt"):
        return load_checkpoint(path)
    if name.endswith(".safetensors"):
        return parse_safetensors(path.read_bytes(), str(path))
    return read_torch_file(path)


def test_damaged_files_raise_only_the_documented_errors(tmp_path):
    """Seeded fuzz over every plain MindSpore fixture and every kind of file unilstm writes: each damaged
    copy either reads or raises CheckpointError / TorchFileError naming the file (never numpy's ValueError,
    protobuf's, torch's RuntimeError, a RecursionError or a bytes key)."""
    rng = random.Random(1313)
    sources = {name: (FIXTURES / name).read_bytes() for name in PLAIN_FIXTURES}
    sources.update(_written_files(tmp_path))
    checked = 0
    for name, data in sources.items():
        path = tmp_path / ("damaged" + pathlib.Path(name).suffix)
        for damaged in mutations(data, rng, 120):
            path.write_bytes(damaged)
            try:
                result = _read(name, path)
            except (CheckpointError, TorchFileError) as error:
                assert "damaged" in str(error), str(error)
            else:
                values = result if isinstance(result, dict) else result[0]
                assert all(isinstance(key, str) for key in values)
            checked += 1
    assert checked == 120 * len(sources)


def test_any_change_to_a_crc_checkpoint_is_refused_when_the_crc_is_required(tmp_path):
    """With require_crc=True a file saved with crc=True reads as itself or not at all: every cut, flip,
    insertion or deletion is refused (CRC32 catches every error burst up to 32 bits, and a cut loses the
    trailer)."""
    data = _written_files(tmp_path)["ours_crcTrue.ckpt"]
    path = tmp_path / "ours.ckpt"
    path.write_bytes(data)
    original = load_checkpoint(path, require_crc=True)
    rng = random.Random(7)
    refused = 0
    for damaged in mutations(data, rng, 200):
        path.write_bytes(damaged)
        try:
            values = load_checkpoint(path, require_crc=True)
        except CheckpointError:
            refused += 1
            continue
        assert list(values) == list(original)  # a mutation that left the content as it was
        for key, value in original.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(values[key], value), key
            else:
                assert values[key] == value, key
    assert refused >= 195
