"""The description unilstm stores next to the weights (``unilstm.units``), and files that must never read as
another model: cut checkpoints (entry count and CRC flag in the description), LSTM structures that are not
whole, descriptions whose fields or sizes do not fit the tensors, and a seeded fuzz over the readers."""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import unilstm
from unilstm.formats.mindspore_ckpt import CheckpointError, load_checkpoint, save_checkpoint
from unilstm.formats.torch_files import TorchFileError, read_safetensors, safetensors_bytes

cv = importlib.import_module("unilstm.convert")

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mindspore"
MS_CKPT = FIXTURES / "lstm_l2_bi.ckpt"
KEY = cv.METADATA_KEY
CLEAR_ERRORS = (cv.ConversionError, CheckpointError, TorchFileError)


def write(units, path: Path, **options) -> Path:
    """``units`` written as ``path``'s format (weights only: relu stacks are for the description's sake)."""
    cv.write_units(units, path, path.suffix.lstrip("."), **{"weights_only": True, **options})
    return path


def relu_units(prefix_name: str = "lstm") -> list:
    """A stack whose activation only the description carries."""
    torch.manual_seed(0)
    layer = unilstm.LSTM(3, 4, 2, activation="relu", batch_first=True)
    unit = cv.unit_from_layer(layer)
    unit.name = prefix_name
    return [unit]


def boundary_cuts(data: bytes) -> list[int]:
    """The lengths at which ``data`` cut short is still a well-formed checkpoint: the end of every entry
    but the last (each entry is protobuf field 1, tag 0x0a, then a varint length)."""
    ends, position = [], 0
    while position < len(data) and data[position : position + 7] != b"crc_num":
        assert data[position] == 0x0A
        length, shift = 0, 0
        position += 1
        while True:
            byte = data[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        position += length
        ends.append(position)
    return ends[:-1]


def same_tensors(units, expected) -> bool:
    """The same stacks (in order) with the same parameter names and bits."""
    if len(units) != len(expected):
        return False
    return all(
        list(a.state) == list(b.state) and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
        for a, b in zip(units, expected, strict=True)
    )


# -- cut checkpoints -----------------------------------------------------------------------------------------


def test_every_cut_at_an_entry_boundary_of_a_converted_checkpoint_is_refused(tmp_path):
    """Guards issue 13 item 2: a converted .ckpt cut between two entries loaded as a smaller model (no bias:
    outputs off by 0.3) and convert exited 0. The description, written first, states the entry count."""
    cv.convert(MS_CKPT, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cuts = boundary_cuts(data)
    assert len(cuts) == 16  # after the description and after each of the 15 parameters but the last
    for size in cuts:
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"cut.ckpt: entry 'unilstm.units': .*should hold 17"):
            cv.read_units(cut)
        with pytest.raises(CheckpointError):
            cv.convert(cut, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_reordered_entries_of_a_converted_checkpoint_read_as_the_same_model(tmp_path):
    """The entry count refuses lost entries, not a different order: names, not positions, carry meaning."""
    cv.convert(MS_CKPT, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    ends = [0, *boundary_cuts(data), len(data)]
    pieces = [data[a:b] for a, b in zip(ends, ends[1:], strict=False)]
    pieces[2], pieces[9] = pieces[9], pieces[2]
    (tmp_path / "shuffled.ckpt").write_bytes(b"".join(pieces))
    assert same_tensors(cv.read_units(tmp_path / "shuffled.ckpt"), cv.read_units(MS_CKPT))


def test_a_converted_checkpoint_with_crc_refuses_the_loss_of_its_trailer(tmp_path):
    """Guards: with crc=True, a cut that removes only the trailer looked like a file without CRC."""
    [unit] = cv.read_units(MS_CKPT)
    path = write([unit], tmp_path / "crc.ckpt", crc=True)
    data = path.read_bytes()
    assert data[-17:-10] == b"crc_num"
    [back] = cv.read_units(path, require_crc=True)
    assert same_tensors([back], [unit])
    path.write_bytes(data[:-17])
    with pytest.raises(CheckpointError, match=r"crc.ckpt: entry 'unilstm.units': .*CRC32 trailer, which is"):
        cv.read_units(path)
    with pytest.raises(CheckpointError, match=r"crc.ckpt: no CRC32 trailer, and require_crc=True"):
        cv.read_units(path, require_crc=True)


def test_require_crc_for_files_without_one(tmp_path):
    """require_crc is the reading side of crc=True: a .ckpt without trailer is refused, other formats have
    none to require."""
    with pytest.raises(CheckpointError, match=r"lstm_l2_bi.ckpt: no CRC32 trailer"):
        cv.read_units(MS_CKPT, require_crc=True)
    assert cv.read_units(FIXTURES / "lstm_l2_bi_crc.ckpt", require_crc=True)
    cv.convert(MS_CKPT, tmp_path / "x.safetensors")
    with pytest.raises(cv.ConversionError, match=r"x.safetensors: require_crc: only MindSpore .ckpt files"):
        cv.read_units(tmp_path / "x.safetensors", require_crc=True)


def test_a_mindspore_checkpoint_cut_anywhere_is_refused_or_whole_but_for_its_biases(tmp_path):
    """Guards: a MindSpore file (no description) cut between entries must not read as a quietly different
    layer. MindSpore lists every weight_ih, weight_hh, bias_ih, bias_hh: every cut leaves a structure that is
    not one whole LSTM (CheckpointError), except the cut right before the biases, which is indistinguishable
    from a bias-free LSTM (require_crc closes that gap for files saved with a CRC)."""
    data = MS_CKPT.read_bytes()
    [whole] = cv.read_units(MS_CKPT)
    cut = tmp_path / "cut.ckpt"
    outcomes = []
    for size in boundary_cuts(data):
        cut.write_bytes(data[:size])
        try:
            [unit] = cv.read_units(cut)
        except CheckpointError as error:
            assert "cut.ckpt" in str(error)
            outcomes.append("refused")
        else:
            assert unit.spec == dataclasses.replace(whole.spec, bias=False)
            assert all(torch.equal(t, whole.state[n]) for n, t in unit.state.items())
            outcomes.append("no bias")
    assert outcomes.count("no bias") == 1 and outcomes.count("refused") == 14


def test_a_bias_missing_for_one_direction_is_a_checkpoint_error(tmp_path):
    """Guards: an incomplete structure is the format's error (the README promises a CheckpointError)."""
    values = load_checkpoint(MS_CKPT)
    del values["bias_hh_l1_reverse"]
    save_checkpoint(values, tmp_path / "partial.ckpt", file_mode=None)
    with pytest.raises(
        CheckpointError, match=r"partial.ckpt: LSTM '\(no prefix\)': .*missing \['bias_hh_l1_reverse'\]"
    ):
        cv.read_units(tmp_path / "partial.ckpt")


def test_a_layer_number_far_beyond_the_tensors_is_refused_at_once(tmp_path):
    """Guards: ``weight_hh_l1000000`` made the reader list millions of expected names before refusing."""
    state = {"weight_ih_l0": torch.zeros(16, 3), "weight_hh_l1000000": torch.zeros(16, 4)}
    torch.save(state, tmp_path / "far.pt")
    with pytest.raises(TorchFileError, match=r"far.pt: LSTM .*name layer 1000000 but hold only 2 tensors"):
        cv.read_units(tmp_path / "far.pt")


# -- descriptions --------------------------------------------------------------------------------------------


def edit_description(path: Path, target: Path, edit) -> Path:
    """``path`` rewritten to ``target`` with its description passed through ``edit`` (JSON text in, out)."""
    if path.suffix == ".ckpt":
        values = load_checkpoint(path)
        values[KEY] = edit(values[KEY])
        save_checkpoint(values, target, file_mode=None)
    else:
        tensors, metadata = read_safetensors(path)
        metadata[KEY] = edit(metadata[KEY])
        target.write_bytes(safetensors_bytes(tensors, metadata))
    return target


def spec_edit(**changes):
    def edit(text: str) -> str:
        entries = json.loads(text)
        entries[0]["spec"].update(changes)
        return json.dumps(entries)

    return edit


def entry_edit(**changes):
    def edit(text: str) -> str:
        entries = json.loads(text)
        entries[0].update(changes)
        return json.dumps(entries)

    return edit


BAD_DESCRIPTIONS = [
    (spec_edit(hidden_size=100000), r"spec field 'hidden_size' says 100000, the stored tensors give 4"),
    (spec_edit(hidden_size=7), r"spec field 'hidden_size' says 7, the stored tensors give 4"),
    (spec_edit(num_layers=3), r"spec field 'num_layers' says 3, the stored tensors give 2"),
    (spec_edit(bias=False), r"spec field 'bias' says False, the stored tensors give True"),
    (spec_edit(activation="bogus"), r"spec field 'activation' has an invalid value 'bogus'"),
    (spec_edit(batch_first="yes"), r"spec field 'batch_first' has an invalid value 'yes'"),
    (spec_edit(dropout=2.0), r"spec field 'dropout' has an invalid value 2.0"),
    (spec_edit(input_dropout=float("nan")), r"spec field 'input_dropout' has an invalid value nan"),
    (spec_edit(num_layers=True), r"spec field 'num_layers' has an invalid value True"),
    (spec_edit(masked_output="last"), r"spec field 'masked_output' has an invalid value 'last'"),
    (spec_edit(zoneout_depth=True), r"unknown spec field\(s\) \['zoneout_depth'\]"),
    (spec_edit(peepholes=True), r"spec field 'peepholes' says True, the stored tensors give False"),
    (entry_edit(keras={"class_name": "GRU"}), r"keras field 'class_name' has an invalid value 'GRU'"),
    (entry_edit(keras={"class_name": "Bidirectional"}), r"does not fit bidirectional=False"),
    (entry_edit(framework="jax"), r"'framework' must be one of"),
    (entry_edit(prefix=3), r"'prefix' must be a string"),
    (entry_edit(spec=[]), r"'spec' must be an object"),
    (entry_edit(colour="red"), r"unknown field\(s\) \['colour'\]"),
    (lambda text: "not json", r"not valid JSON"),
    (lambda text: "{}", r"expected a JSON list of objects"),
    (lambda text: "[" * 100_000 + "]" * 100_000, r"not valid JSON \(RecursionError"),
]


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("edit, message", BAD_DESCRIPTIONS)
def test_a_description_that_does_not_fit_is_the_formats_error(tmp_path, suffix, edit, message):
    """Guards issue 13 item 3: hidden_size 100000 made unilstm.load allocate 160 GB, 7 instead of 6 gave a
    size-mismatch RuntimeError and ``inspect`` showed 7, bad values gave bare ValueError/TypeError. Every
    field is checked, every size against the tensors, before anything is built."""
    source = write(relu_units(), tmp_path / f"good{suffix}", weights_only=True)
    assert cv.read_units(source)[0].spec.activation == "relu"
    bad = edit_description(source, tmp_path / f"bad{suffix}", edit)
    error = CheckpointError if suffix == ".ckpt" else TorchFileError
    where = r"entry 'unilstm.units'" if suffix == ".ckpt" else r"__metadata__ 'unilstm.units'"
    with pytest.raises(error, match=rf"bad{suffix}: {where}.*{message}"):
        cv.read_units(bad)
    with pytest.raises(error, match=rf"bad{suffix}: {where}"):
        unilstm.load(bad)
    with pytest.raises(error, match=rf"bad{suffix}: {where}"):
        cv.inspect_file(bad)


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"entries": 0, "crc": False}, r"'checkpoint' must be"),
        ({"entries": 11, "crc": False}, r"should hold 11 entries, it holds 9"),
        ({"entries": 9, "crc": True}, r"written with a CRC32 trailer, which is missing"),
        ({"entries": 9}, r"'checkpoint' must be"),
    ],
)
def test_checkpoint_facts_are_checked(tmp_path, facts, message):
    source = write(relu_units(), tmp_path / "good.ckpt", weights_only=True)
    bad = edit_description(source, tmp_path / "bad.ckpt", entry_edit(checkpoint=facts))
    with pytest.raises(CheckpointError, match=rf"bad.ckpt: entry 'unilstm.units'.*{message}"):
        cv.read_units(bad)


def test_described_and_stored_stacks_must_match(tmp_path):
    """Guards: a stack whose tensors are gone (or tensors nobody described) was read as a smaller model."""
    units = relu_units("first") + relu_units("second")
    source = write(units, tmp_path / "two.safetensors")
    assert [u.spec.activation for u in cv.read_units(source)] == ["relu", "relu"]
    tensors, metadata = read_safetensors(source)
    kept = OrderedDict((n, t) for n, t in tensors.items() if not n.startswith("second."))
    (tmp_path / "one.safetensors").write_bytes(safetensors_bytes(kept, metadata))
    with pytest.raises(TorchFileError, match=r"one.safetensors: __metadata__ .*missing \['second.'\]"):
        cv.read_units(tmp_path / "one.safetensors")
    extra = OrderedDict(tensors)
    extra.update((f"third.{n[len('first.') :]}", t) for n, t in tensors.items() if n.startswith("first."))
    (tmp_path / "three.safetensors").write_bytes(safetensors_bytes(extra, metadata))
    with pytest.raises(TorchFileError, match=r"present but not described \['third.'\]"):
        cv.read_units(tmp_path / "three.safetensors")


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_the_description_applies_under_a_source_prefix(tmp_path, suffix):
    """Guards: reading with ``prefix=`` lost the stored semantics (relu read as tanh)."""
    path = write(relu_units(), tmp_path / f"p{suffix}", prefix="encoder.", weights_only=True)
    [unit] = cv.read_units(path, prefix="encoder.")
    assert unit.spec.activation == "relu" and unit.spec.batch_first


def test_files_written_before_the_facts_still_read_with_their_semantics(tmp_path):
    """A description written last and without entry count (unilstm before this change) still applies; such
    files get the structure checks only."""
    [unit] = relu_units()
    tensors = OrderedDict((n, unit.state[n]) for n in unit.state)
    entry = {**cv.reading.spec_json(unit), "prefix": ""}
    path = tmp_path / "old.ckpt"
    save_checkpoint(tensors, path, append_dict={KEY: json.dumps([entry])}, file_mode=None)
    [back] = cv.read_units(path)
    assert back.spec == unit.spec and same_tensors([back], [unit])


def test_the_description_is_written_first_and_real_mindspore_names_follow(tmp_path):
    """The converted file keeps MindSpore's parameter bytes and order; only the description moved first."""
    cv.convert(MS_CKPT, tmp_path / "c.ckpt")
    values = load_checkpoint(tmp_path / "c.ckpt")
    assert list(values) == [KEY, *load_checkpoint(MS_CKPT)]
    facts = json.loads(values[KEY])[0]["checkpoint"]
    assert facts == {"entries": 17, "crc": False}


# -- fuzz ----------------------------------------------------------------------------------------------------


def damaged_copies(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    copies = []
    for _ in range(count):
        damaged = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            damaged = damaged[: rng.randrange(len(data))]
        elif kind == 1:
            for _ in range(rng.randint(1, 6)):
                damaged[rng.randrange(len(damaged))] ^= rng.randint(1, 255)
        elif kind == 2:
            at = rng.randrange(len(damaged))
            del damaged[at : at + rng.randint(1, 64)]
        else:
            at = rng.randrange(len(damaged))
            damaged[at:at] = damaged[rng.randrange(len(damaged)) :][: rng.randint(1, 64)]
        copies.append(bytes(damaged))
    return copies


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Files unilstm writes (.ckpt with and without CRC, .safetensors, .pt) with the units they hold."""
    folder = tmp_path_factory.mktemp("written")
    units = cv.read_units(FIXTURES / "encoder_in_cell.ckpt", prefix="encoder.") + relu_units("decoder")
    files = {}
    for name, options in [
        ("a.ckpt", {"weights_only": True}),
        ("crc.ckpt", {"weights_only": True, "crc": True}),
        ("a.safetensors", {"weights_only": True}),
        ("a.pt", {"weights_only": True}),
    ]:
        files[name] = write(units, folder / name, prefix="model.", **options).read_bytes()
    return files, cv.read_units(folder / "a.safetensors")


def test_fuzz_damaged_sources_raise_only_documented_errors(tmp_path, written):
    """Seeded fuzz over MindSpore's own files and unilstm's: read_units either reads or raises
    ConversionError / CheckpointError / TorchFileError naming the file; nothing else escapes."""
    files, _ = written
    originals = ("lstm_l2_bi_crc.ckpt", "encoder_in_cell.ckpt")
    sources = {name: (FIXTURES / name).read_bytes() for name in originals}
    sources.update(files)
    rng = random.Random(2026)
    for name, data in sources.items():
        path = tmp_path / f"damaged{Path(name).suffix}"
        for damaged in damaged_copies(data, rng, 60):
            path.write_bytes(damaged)
            try:
                cv.read_units(path)
            except CLEAR_ERRORS as error:
                assert "damaged" in str(error), str(error)


def test_fuzz_a_file_unilstm_wrote_reads_as_itself_or_not_at_all(tmp_path, written):
    """Seeded: every cut (anywhere) and every lost or repeated run of bytes in a file unilstm wrote is
    refused or reads back the same tensors and names, in every format; with a CRC required, flipped bytes
    too. (Flipped bytes inside tensor data of a file without CRC cannot be noticed by any reader: safetensors
    and .ckpt store no checksum unless asked, which is what ``crc=True`` and ``require_crc`` are for.)"""
    files, expected = written
    rng = random.Random(13)
    for name, data in files.items():
        path = tmp_path / f"damaged{Path(name).suffix}"
        copies = damaged_copies(data, rng, 80)
        structural = [d for d in copies if len(d) != len(data)]  # cuts, deletions, insertions
        for damaged in copies if name == "crc.ckpt" else structural:
            path.write_bytes(damaged)
            try:
                units = cv.read_units(path, require_crc=name == "crc.ckpt")
            except CLEAR_ERRORS:
                continue
            assert same_tensors(units, expected), name
