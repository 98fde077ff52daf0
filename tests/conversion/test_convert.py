"""unilstm.convert: reading every format into units, exact round trips, verification, refusals, emitted torch
code, the load/save API, and a fuzz test over damaged files."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unilstm
from unilstm.formats import torch_files
from unilstm.formats.keras_files import KerasFileError, KerasLayerRecord, write_keras_model
from unilstm.formats.mindspore_ckpt import CheckpointError, load_checkpoint
from unilstm.parameter_names import parameter_names
from unilstm.spec import LSTMSpec

cv = importlib.import_module("unilstm.convert")  # the module (robust to a top-level convert function)

FIXTURES = Path(__file__).parents[1] / "fixtures"
KERAS = FIXTURES / "keras_files"
MS_CKPT = FIXTURES / "mindspore" / "lstm_l2_bi.ckpt"
pytest.importorskip("h5py")


def my_act(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.tanh(x)


def keras_record(
    index,
    features,
    units,
    *,
    bi=False,
    merge="concat",
    rs=True,
    gb=False,
    zo=False,
    activation="tanh",
    seed=0,
):
    """A Keras 3 LSTM / Bidirectional record with random weights, as Keras stores it."""
    rng = np.random.default_rng(seed + index)
    name = f"layer_{index}"
    config = cv.keras_layer_config(name, LSTMSpec(features, units, activation=activation), rs, zo)
    config["go_backwards"] = gb
    weights = []
    for _ in range(2 if bi else 1):
        weights += [
            (rng.standard_normal((features, 4 * units)) * 0.5).astype(np.float32),
            (rng.standard_normal((units, 4 * units)) * 0.5).astype(np.float32),
            (rng.standard_normal(4 * units) * 0.5).astype(np.float32),
        ]
    if not bi:
        return KerasLayerRecord(name, name, "LSTM", config, weights, None, "keras")
    backward = dict(config, go_backwards=not gb, name=f"backward_{name}")
    wrapper = {
        "name": name,
        "merge_mode": merge,
        "layer": {"class_name": "LSTM", "config": config},
        "backward_layer": {"class_name": "LSTM", "config": backward},
    }
    return KerasLayerRecord(name, name, "Bidirectional", wrapper, weights, None, "keras")


def keras_file(path, records):
    write_keras_model(records, path, (None, records[0].input_size))
    return path


# -- reading ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["k3_seq.keras", "k3_seq_legacy.h5", "tfk_seq.keras", "tfk_seq.h5", "tfk_nested.h5"]
)
def test_keras_semantics_reproduce_real_keras(name):
    """The units read from Keras files compute what real Keras computed (fixtures from Keras 3 / tf-keras)."""
    stem = name.split(".")[0].replace("_legacy", "")
    expected = np.load(KERAS / f"{stem}.npz")
    units = cv.read_units(KERAS / name, custom_objects={"my_act": my_act})
    for index, unit in enumerate(units):
        out = cv.run_source(unit, torch.from_numpy(expected[f"in_{index}"]), None)["output"]
        assert np.abs(out.numpy() - expected[f"out_{index}"]).max() < 1e-6, unit.name


def test_keras2_hard_sigmoid_and_custom_activations_are_kept():
    units = cv.read_units(KERAS / "tfk_seq.h5", custom_objects={"my_act": my_act})
    assert units[1].spec.activation is my_act
    units = cv.read_units(KERAS / "tfk_seq.h5")  # readable; the layer is blocked until my_act is given
    assert "custom_objects={'my_act': fn}" in units[1].blocking
    with pytest.raises(cv.ConversionError, match="my_act"):
        cv.convert(KERAS / "tfk_seq.h5", KERAS.parent / "never_written.keras")
    assert not (KERAS.parent / "never_written.keras").exists()


def test_bidirectional_with_a_different_backward_layer_is_blocked_only_when_converted(tmp_path):
    units = cv.read_units(KERAS / "k3_func.keras")
    assert units[1].blocking and "activation" in units[1].blocking
    with pytest.raises(cv.ConversionError, match="backward layer differs"):
        cv.convert(KERAS / "k3_func.keras", tmp_path / "out.keras")
    report = cv.convert(KERAS / "k3_func.keras", tmp_path / "out.keras", layer="last")
    assert report.verified and report.max_difference == 0.0


def test_mindspore_checkpoint_reads_as_one_stack():
    [unit] = cv.read_units(MS_CKPT)
    assert unit.framework == "mindspore"
    assert (unit.spec.num_layers, unit.spec.bidirectional, unit.spec.hidden_size) == (2, True, 4)


# -- round trips ---------------------------------------------------------------------------------------------

STATE_FORMATS = ["pt", "safetensors", "ckpt"]


@pytest.mark.parametrize("first,second", list(itertools.permutations(STATE_FORMATS, 2)))
def test_state_dict_round_trips_are_bit_identical(first, second, tmp_path):
    original = load_checkpoint(MS_CKPT)
    a, b, c = tmp_path / f"a.{first}", tmp_path / f"b.{second}", tmp_path / f"c.{first}"
    cv.convert(MS_CKPT, a)
    cv.convert(a, b)
    cv.convert(b, c)
    for path in (a, b, c):
        [unit] = cv.read_units(path)
        for name, tensor in unit.state.items():
            assert tensor.dtype == original[name].dtype
            assert torch.equal(tensor, original[name]), (path, name)


@pytest.mark.parametrize("middle", ["pt", "safetensors", "ckpt", "keras", "weights.h5"])
def test_keras_round_trips_keep_keras_weights_bit_identical(middle, tmp_path):
    source = keras_file(
        tmp_path / "src.keras", [keras_record(0, 3, 4, bi=True), keras_record(1, 8, 4, rs=False)]
    )
    there = tmp_path / ("mid." + middle)
    back = tmp_path / "back.keras"
    cv.convert(source, there)
    if middle == "weights.h5":  # no configs in it: compare the stored arrays themselves
        back = there
    else:
        cv.convert(there, back, source_format=middle)

    def arrays(path):
        found = [w for u in cv.read_units(path) for w in cv.keras_records([u])[0].weights]
        return sorted(found, key=lambda w: (w.shape, w.tobytes()))

    before, after = arrays(source), arrays(back)
    assert len(before) == len(after)
    for x, y in zip(before, after, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint32), y.view(np.uint32))


def test_torch_biases_are_summed_into_keras_and_come_back_equal(tmp_path):
    cv.convert(MS_CKPT, tmp_path / "m.keras")
    cv.convert(tmp_path / "m.keras", tmp_path / "back.pt")
    original = load_checkpoint(MS_CKPT)
    [unit] = cv.read_units(tmp_path / "back.pt")
    assert torch.equal(unit.state["weight_ih_l1_reverse"], original["weight_ih_l1_reverse"])
    assert torch.equal(unit.state["bias_ih_l0"], original["bias_ih_l0"] + original["bias_hh_l0"])
    assert not torch.any(unit.state["bias_hh_l0"])


TARGETS = ["x.pt", "x.pth", "x.safetensors", "x.ckpt", "x.keras", "x.weights.h5", "x.onnx"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["ckpt", "pt", "safetensors", "keras", "weights.h5"])
def test_every_pair_converts_and_verifies(source, target, tmp_path):
    start = tmp_path / f"start.{source}"
    if source in ("keras", "weights.h5"):
        keras_file(start, [keras_record(0, 3, 4, bi=True, rs=False)])
    else:
        cv.convert(MS_CKPT, start)
    report = cv.convert(start, tmp_path / target)
    assert report.verified
    assert report.max_difference < 1e-6
    assert (tmp_path / target).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({start.name, target})


# -- structure mapping and Keras glue -----------------------------------------------------------------------

GLUE_CASES = (
    [
        [keras_record(0, 3, 4, rs=rs, gb=gb, zo=zo)]
        for rs, gb, zo in itertools.product([True, False], [False, True], [False, True])
    ]
    + [
        [keras_record(0, 3, 4, bi=True, merge=merge, rs=rs)]
        for rs, merge in itertools.product([True, False], ["concat", "sum", "mul", "ave"])
    ]
    + [
        [keras_record(0, 3, 4), keras_record(1, 4, 4), keras_record(2, 4, 4, rs=False)],
        [keras_record(0, 3, 4, bi=True), keras_record(1, 8, 4, bi=True, rs=False, merge="ave")],
    ]
)


@pytest.mark.parametrize(
    "records",
    GLUE_CASES,
    ids=lambda records: "-".join(
        f"{r.class_name}{'' if r.class_name == 'LSTM' else r.config['merge_mode']}" for r in records
    ),
)
@pytest.mark.parametrize("target", ["pt", "ckpt", "onnx"])
def test_keras_semantics_survive_into_torch_mindspore_and_onnx(records, target, tmp_path):
    source = keras_file(tmp_path / "src.keras", records)
    report = cv.convert(source, tmp_path / f"out.{target}")
    assert report.verified and report.max_difference < 1e-6
    assert len(report.layers) == 1  # stacks become one multi-layer LSTM


def test_a_keras_stack_becomes_one_multi_layer_lstm(tmp_path):
    source = keras_file(
        tmp_path / "s.keras", [keras_record(0, 3, 4), keras_record(1, 4, 4), keras_record(2, 4, 4)]
    )
    cv.convert(source, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert sorted(state) == sorted(unilstm.LSTM(3, 4, 3).state_dict())


def test_layers_that_do_not_stack_get_their_own_prefixes(tmp_path):
    source = keras_file(tmp_path / "s.keras", [keras_record(0, 3, 4), keras_record(1, 4, 5, rs=False)])
    cv.convert(source, tmp_path / "s.ckpt", prefix="encoder.")
    names = [k for k in load_checkpoint(tmp_path / "s.ckpt") if k.endswith("_l0")]
    assert "encoder.layer_0.weight_ih_l0" in names and "encoder.layer_1.weight_ih_l0" in names


def test_mindspore_order_and_prefix(tmp_path):
    cv.convert(MS_CKPT, tmp_path / "p.ckpt", prefix="encoder.")
    names = [k for k in load_checkpoint(tmp_path / "p.ckpt") if k.startswith("encoder.")]
    kinds = [n.split(".")[1].rsplit("_l", 1)[0] for n in names]
    assert kinds == sorted(kinds, key=["weight_ih", "weight_hh", "bias_ih", "bias_hh"].index)
    [unit] = cv.read_units(tmp_path / "p.ckpt", prefix="encoder.")
    assert unit.spec.num_layers == 2


# -- refusals and safety -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,needle",
    [
        ("x.ckpt", "activation='relu': mindspore.nn.LSTM computes tanh only"),
        ("x.pt", "activation='relu': torch.nn.LSTM computes tanh only"),
    ],
)
def test_inexpressible_semantics_stop_with_the_feature_named(target, needle, tmp_path):
    source = keras_file(
        tmp_path / "s.keras", [keras_record(0, 3, 4, activation="relu"), keras_record(1, 4, 4, rs=False)]
    )
    with pytest.raises(cv.ConversionError, match=needle.replace("(", r"\(")):
        cv.convert(source, tmp_path / target)
    assert not (tmp_path / target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.keras"]


def test_a_keras_sequential_becomes_one_onnx_chain_and_unordered_layers_are_refused(tmp_path):
    records = [
        keras_record(0, 3, 4, activation="relu"),
        keras_record(1, 4, 4, bi=True, rs=False, merge="sum"),
    ]
    source = keras_file(tmp_path / "s.keras", records)
    report = cv.convert(source, tmp_path / "chain.onnx")
    assert report.verified and report.max_difference < 1e-6
    [(name, cases)] = report.differences.items()
    assert set(cases["no mask"]) == {"output", "h_n[layer_0]", "c_n[layer_0]", "h_n[layer_1]", "c_n[layer_1]"}
    with pytest.raises(cv.ConversionError, match="not known to follow"):
        cv.convert(KERAS / "tfk_nested.h5", tmp_path / "nested.onnx", lstm_only=True)
    assert not (tmp_path / "nested.onnx").exists()


def test_weights_only_writes_anyway_without_verification(tmp_path):
    source = keras_file(tmp_path / "s.keras", [keras_record(0, 3, 4, activation="relu")])
    report = cv.convert(source, tmp_path / "x.ckpt", weights_only=True)
    assert not report.verified and (tmp_path / "x.ckpt").exists()


def test_a_failed_verification_leaves_the_existing_target_untouched(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    target.write_bytes(b"the user's own file")
    api = importlib.import_module("unilstm.convert.api")  # where convert() looks verify up
    monkeypatch.setattr(api, "verify", lambda *a, **k: {"lstm": {"no mask": {"output": 0.5}}})
    with pytest.raises(cv.VerificationError, match="0.5 > tolerance"):
        cv.convert(MS_CKPT, target)
    assert target.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(cv.ConversionError, match="cannot tell the format"):
        cv.convert(MS_CKPT, tmp_path / "x.weird")
    with pytest.raises(cv.ConversionError, match="no such file"):
        cv.convert(tmp_path / "missing.pt", tmp_path / "x.ckpt")
    with pytest.raises(cv.ConversionError, match="no such file"):
        cv.read_units(tmp_path / "x.onnx")


# -- emitted torch code ---------------------------------------------------------------------------


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "records",
    [
        [keras_record(0, 3, 4, rs=False)],
        [keras_record(0, 3, 4, gb=True, zo=True)],
        [keras_record(0, 3, 4, gb=True)],
        [keras_record(0, 3, 4, gb=True, rs=False)],
        [keras_record(0, 3, 4, gb=True), keras_record(1, 4, 5, rs=False)],
        [keras_record(0, 3, 4), keras_record(1, 4, 4, gb=True, rs=False)],
        [keras_record(0, 3, 4, bi=True, rs=False, merge="sum")],
        [keras_record(0, 3, 4), keras_record(1, 4, 4, rs=False)],
        [keras_record(0, 3, 4), keras_record(1, 4, 5, rs=False, zo=True)],
    ],
)
@pytest.mark.parametrize("target", ["pt", "safetensors"])
def test_emitted_torch_code_runs_and_gives_the_keras_numbers(records, target, tmp_path):
    if target == "safetensors":
        pytest.importorskip("safetensors")
    source = keras_file(tmp_path / "s.keras", records)
    cv.convert(source, tmp_path / f"w.{target}", emit_code=tmp_path / "rebuilt.py")
    model = _import(tmp_path / "rebuilt.py").load(str(tmp_path / f"w.{target}"))
    assert all(isinstance(m, torch.nn.LSTM) for m in model.children())
    units = cv.read_units(source)
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6)[None] < torch.tensor([6, 3, 1])[:, None]
    for m in [None, mask]:
        value = x
        for unit in units:
            expected = cv.run_source(unit, value, None if m is None else m.sum(1))
            value = expected["output"]
        with torch.no_grad():
            got, states = model(x, m)
        assert len(states) == len(list(model.children()))
        assert (got - value).abs().max() < 1e-6
        directions = len(states[-1])  # Keras's states of the last layer, one (h, c) per direction
        for index, name in enumerate(("h_n", "c_n")):
            got_state = torch.stack([pair[index] for pair in states[-1]])
            assert (got_state - expected[name][-directions:]).abs().max() < 1e-6


@pytest.mark.parametrize("rs", [True, False])
@pytest.mark.parametrize("zo", [True, False])
def test_go_backwards_with_a_mask_matches_keras_in_the_glue(zo, rs, tmp_path):
    """Keras's go_backwards reverses input and mask over the whole sequence (LSTM(go_backwards=True)(x, mask)
    == LSTM()(x[:, ::-1], mask[:, ::-1])): the torch glue (valid prefix reversed, run with lengths, outputs
    moved behind the padded steps' zeros) gives the engine's numbers, lengths 0 and T included."""
    keras = pytest.importorskip("unilstm.keras")
    source = keras_file(tmp_path / "s.keras", [keras_record(0, 3, 5, gb=True, zo=zo, rs=rs)])
    [unit] = cv.read_units(source)
    [front] = cv.load(source)
    x = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([6, 3, 1, 0, 5])
    mask = torch.arange(6)[None] < lengths[:, None]
    config = dict(front.get_config(), go_backwards=False)
    forward = type(front).from_config(config)
    forward(x)
    forward.load_state_dict(front.state_dict())
    with torch.no_grad():
        by_definition = forward(x.flip(1), mask=mask.flip(1))
        assert torch.equal(front(x, mask=mask), by_definition)
    expected = cv.run_source(unit, x, lengths)
    assert (expected["output"] - by_definition).abs().max() < 1e-6
    target = unilstm.LSTM.from_spec(cv.plain_torch_spec(unit.spec))
    with torch.no_grad():
        for name in parameter_names(target.spec):
            getattr(target, name).copy_(unit.state[name])
    got = cv.torch_glue_run(unit, target.eval(), x, lengths)
    for key, value in expected.items():
        assert (got[key] - value).abs().max() < 1e-6, key
    assert keras is not None


def test_go_backwards_verification_covers_masked_inputs(tmp_path):
    source = keras_file(tmp_path / "s.keras", [keras_record(0, 3, 4, gb=True, rs=False)])
    for target in ("w.pt", "w.ckpt", "w.onnx", "w.keras"):
        if target.endswith(".onnx"):
            pytest.importorskip("onnxruntime")
        report = cv.convert(source, tmp_path / target)
        assert report.verified and report.max_difference < 1e-6, target
        [cases] = report.differences.values()
        assert any(case.startswith("lengths") for case in cases), (target, list(cases))


def test_emitted_torch_code_for_time_major_go_backwards_with_a_mask(tmp_path):
    """tf-keras's time_major=True (Keras 3 files cannot hold it): the unit of a batch-major layer with the
    time-major glue, emitted directly."""
    from dataclasses import replace

    source = keras_file(tmp_path / "s.keras", [keras_record(0, 3, 4, gb=True)])
    cv.convert(source, tmp_path / "w.pt")
    [unit] = cv.read_units(source)
    spec, glue = replace(unit.spec, batch_first=False), replace(unit.keras, time_major=True)
    unit = replace(unit, spec=spec, keras=glue)
    (tmp_path / "rebuilt.py").write_text(cv.emit_code([unit], "pt", tmp_path / "w.pt"))
    model = _import(tmp_path / "rebuilt.py").load(str(tmp_path / "w.pt"))
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6)[None] < torch.tensor([6, 3, 1])[:, None]
    for m in [None, mask]:
        expected = cv.run_source(unit, x, None if m is None else m.sum(1))
        with torch.no_grad():
            got, [[(h, c)]] = model(x.transpose(0, 1), m)
        assert (got - expected["output"]).abs().max() < 1e-6
        assert (h - expected["h_n"][0]).abs().max() < 1e-6 and (c - expected["c_n"][0]).abs().max() < 1e-6


def test_emit_code_refuses_onnx_and_keras_targets(tmp_path):
    with pytest.raises(cv.ConversionError, match="torch or MindSpore"):
        cv.convert(MS_CKPT, tmp_path / "x.onnx", emit_code=tmp_path / "m.py")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "m.py").exists()


# -- the Python API ---------------------------------------------------------------------------------------


def test_load_gives_front_door_layers(tmp_path):
    [ms] = cv.load(MS_CKPT)
    from unilstm.frontends import mindspore as ms_front
    from unilstm.frontends import torch as torch_front

    assert isinstance(ms, ms_front.LSTM)
    cv.save(ms, tmp_path / "t.pt")
    [pt] = cv.load(tmp_path / "t.pt")
    assert isinstance(pt, torch_front.LSTM)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        assert torch.equal(ms(x)[0], pt(x)[0])


def test_load_keras_file_gives_keras_layers():
    keras = pytest.importorskip("unilstm.keras")
    layers = cv.load(KERAS / "k3_seq.keras")
    assert [type(layer) for layer in layers] == [keras.LSTM, keras.LSTM, keras.Bidirectional]


def test_save_keras_front_door_layers_to_every_format(tmp_path):
    keras = pytest.importorskip("unilstm.keras")
    layers = cv.load(KERAS / "k3_seq.keras")
    cv.save(layers, tmp_path / "k.keras")
    cv.save(layers, tmp_path / "k.safetensors", weights_only=True)
    with pytest.raises(cv.ConversionError, match="relu"):
        cv.save(layers, tmp_path / "k.ckpt")
    cv.save(layers, tmp_path / "k.ckpt", weights_only=True)
    again = cv.load(tmp_path / "k.keras")
    assert isinstance(again[0], keras.LSTM)
    for a, b in zip(layers, again, strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            assert np.array_equal(x, y)


def test_save_torch_layer_with_prefix_and_onnx(tmp_path):
    from unilstm.frontends import torch as torch_front

    net = torch_front.LSTM(3, 4, num_layers=2)
    cv.save(net, tmp_path / "n.ckpt", prefix="encoder.")
    assert "encoder.weight_hh_l1" in load_checkpoint(tmp_path / "n.ckpt")
    cv.save(net, tmp_path / "n.onnx")
    with pytest.raises(cv.ConversionError, match="proj_size"):
        cv.save(torch_front.LSTM(3, 4, proj_size=2), tmp_path / "p.ckpt")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_save_refuses_a_fifo_and_a_keras_name_keras_cannot_open(tmp_path):
    """Guards: save() replaced a FIFO with a regular file, and a Keras format under another name failed
    naming an internal temporary."""
    from unilstm.frontends import torch as torch_front

    net = torch_front.LSTM(3, 4)
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(cv.ConversionError, match=r"pipe\.pt: is a FIFO"):
        cv.save(net, tmp_path / "pipe.pt")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.pt").st_mode)
    keras_name = r"n\.h5: a Keras model file's name must end in \.keras"
    with pytest.raises(cv.ConversionError, match=keras_name) as refused:
        cv.save(net, tmp_path / "n.h5", format="keras")
    assert ".unilstm-" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.pt"]


def test_inspect_describes_layers_and_notes(tmp_path):
    info = cv.inspect_file(KERAS / "k3_seq.weights.h5")
    assert info["framework"] == "keras"
    assert {layer["name"] for layer in info["layers"]} == {"encoder", "lstm", "bidirectional"}
    assert all(not layer["config_stored"] for layer in info["layers"])
    text = cv.format_inspection(cv.inspect_file(MS_CKPT))
    assert "weight_ih_l1_reverse: (16, 8) float32" in text


# -- torch files ----------------------------------------------------------------------------------------


def test_safetensors_files_match_the_safetensors_package(tmp_path):
    package = pytest.importorskip("safetensors.torch")
    state = unilstm.LSTM(3, 4, 2, bidirectional=True).state_dict()
    state["half"] = torch.randn(2, 3).to(torch.bfloat16)
    torch_files.save_state_dict(state, tmp_path / "ours.safetensors", metadata={"k": "v"})
    theirs = package.load_file(tmp_path / "ours.safetensors")
    assert all(torch.equal(theirs[k], state[k]) for k in state)
    package.save_file(state, tmp_path / "theirs.safetensors", metadata={"a": "b"})
    read, metadata = torch_files.read_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"a": "b"} and all(torch.equal(read[k], state[k]) for k in state)


def test_torch_files_refuse_pickled_modules_and_name_the_file(tmp_path):
    torch.save(torch.nn.LSTM(3, 4), tmp_path / "module.pt")
    with pytest.raises(torch_files.TorchFileError, match="state_dict"):
        torch_files.load_state_dict(tmp_path / "module.pt")
    with pytest.raises(torch_files.TorchFileError, match="prefix 'nope.'"):
        torch_files.save_state_dict(torch.nn.LSTM(3, 4), tmp_path / "s.pt")
        torch_files.load_state_dict(tmp_path / "s.pt", prefix="nope.")


def test_nested_training_checkpoints_are_flattened(tmp_path):
    torch.save({"model": {"encoder": torch.nn.LSTM(3, 4).state_dict()}, "epoch": 3}, tmp_path / "ck.pt")
    [unit] = cv.read_units(tmp_path / "ck.pt")
    assert unit.name == "model.encoder"
    assert any("epoch (int)" in note for note in unit.notes)


# -- fuzz: damaged files ------------------------------------------------------------------------------------

CLEAR_ERRORS = (cv.ConversionError, KerasFileError, CheckpointError, torch_files.TorchFileError)


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    files = {
        "ckpt": MS_CKPT.read_bytes(),
        "keras": (KERAS / "k3_seq.keras").read_bytes(),
        "h5": (KERAS / "tfk_nested.h5").read_bytes(),
        "weights.h5": (KERAS / "k3_seq.weights.h5").read_bytes(),
    }
    for fmt in ("pt", "safetensors"):
        cv.convert(MS_CKPT, folder / f"x.{fmt}")
        files[fmt] = (folder / f"x.{fmt}").read_bytes()
    return files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(["ckpt", "keras", "h5", "weights.h5", "pt", "safetensors"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
    target=st.sampled_from(["y.pt", "y.ckpt", "y.keras", "y.safetensors"]),
)
def test_damaged_files_raise_only_clear_errors_and_leave_no_half_written_target(
    real_files, tmp_path_factory, fmt, cut, flips, target
):
    folder = tmp_path_factory.mktemp("fuzz")
    data = bytearray(real_files[fmt])
    for where, value in flips:
        data[int(where * (len(data) - 1))] ^= value
    data = bytes(data[: max(1, int(len(data) * cut))]) if cut < 0.98 else bytes(data)
    source = folder / f"damaged.{fmt}"
    source.write_bytes(data)
    existing = folder / target
    existing.write_bytes(b"keep me")
    try:
        cv.convert(source, existing, weights_only=True)
    except CLEAR_ERRORS:
        assert existing.read_bytes() == b"keep me"
    else:
        cv.read_units(existing)  # a finished target is a whole, readable file
    leftovers = sorted(p.name for p in folder.iterdir())
    assert leftovers == sorted({source.name, existing.name})
    shutil.rmtree(folder)


@pytest.mark.parametrize("target", ["h.pt", "h.safetensors", "h.ckpt", "h.keras", "h.onnx"])
def test_float16_checkpoints_keep_their_dtype_where_the_format_can(target, tmp_path):
    source = FIXTURES / "mindspore" / "lstm_float16.ckpt"
    report = cv.convert(source, tmp_path / target)
    assert report.verified and report.max_difference < 1e-6
    if target.endswith((".keras", ".onnx")):
        assert any("cast from float16 to float32" in note for note in report.notes)
    else:
        [unit] = cv.read_units(tmp_path / target)
        original = load_checkpoint(source)
        assert all(torch.equal(t, original[n]) and t.dtype == torch.float16 for n, t in unit.state.items())


def test_emitted_code_for_a_time_major_mindspore_source_returns_its_states(tmp_path):
    cv.convert(MS_CKPT, tmp_path / "w.pt", emit_code=tmp_path / "rebuilt.py")
    model = _import(tmp_path / "rebuilt.py").load(str(tmp_path / "w.pt"))
    [unit] = cv.read_units(MS_CKPT)
    x = torch.randn(7, 3, 3)
    mask = torch.arange(7)[None] < torch.tensor([7, 4, 1])[:, None]
    with torch.no_grad():
        out, [(h, c)] = model(x, mask)
    expected = cv.run_source(unit, x.transpose(0, 1), mask.sum(1))
    assert torch.equal(out.transpose(0, 1), expected["output"])
    assert torch.equal(h, expected["h_n"]) and torch.equal(c, expected["c_n"])


@pytest.mark.parametrize(
    "options",
    [
        {"go_backwards": True},
        {"go_backwards": True, "batch_first": True},
        {"masked_output": "previous", "batch_first": True},
        {"masked_output": "previous", "bidirectional": True},
    ],
)
@pytest.mark.parametrize("target", ["pt", "safetensors"])
def test_go_backwards_and_previous_outputs_of_a_unilstm_layer_convert_with_glue(options, target, tmp_path):
    """A unilstm layer's go_backwards / "previous" outputs (no Keras record): the conversion verifies and the
    emitted torch code applies the same glue as for Keras sources."""
    layer = unilstm.LSTM(3, 4, **options)
    unilstm.save(layer, tmp_path / "source.safetensors")
    out_file = tmp_path / f"w.{target}"
    cv.convert(tmp_path / "source.safetensors", out_file, emit_code=tmp_path / "rebuilt.py")
    model = _import(tmp_path / "rebuilt.py").load(str(out_file))
    [unit] = cv.read_units(tmp_path / "source.safetensors")
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6)[None] < torch.tensor([6, 3, 1])[:, None]
    for m in [None, mask]:
        expected = cv.run_source(unit, x, None if m is None else m.sum(1))
        with torch.no_grad():
            got, [(h, c)] = model(x if options.get("batch_first") else x.transpose(0, 1), m)
        got = got if options.get("batch_first") else got.transpose(0, 1)
        torch.testing.assert_close(got, expected["output"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(h, expected["h_n"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c, expected["c_n"], atol=1e-6, rtol=1e-6)
