"""Keras files: real files written by Keras 3 and tf-keras (tests/fixtures/keras_files, made by
tools/fixtures/make_keras_file_fixtures.py) read with identical arrays and Keras's numbers; our files read
back; atomic writes; clear errors for corrupt, truncated, foreign and empty files."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")

import h5py  # noqa: E402

import unilstm  # noqa: E402
from unilstm.formats import keras_files as kf  # noqa: E402
from unilstm.formats.keras_files import KerasFileError, read_keras_lstm_layers, write_keras_model  # noqa: E402
from unilstm.formats.layout import torch_from_keras  # noqa: E402
from unilstm.frontends.keras_files import record_from_layer  # noqa: E402
from unilstm.keras_names import stored_activation_name  # noqa: E402

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras_files"

#: fixture file -> (reference npz stem, expected keys in read order)
FILES = {
    "k3_seq.keras": ("k3_seq", ["lstm", "lstm_1", "bidirectional"]),
    "k3_seq.weights.h5": ("k3_seq", ["bidirectional", "lstm", "lstm_1"]),
    "k3_seq_legacy.h5": ("k3_seq", ["encoder", "lstm", "bidirectional"]),
    "k3_func.keras": ("k3_func", ["sequential/lstm", "bidirectional", "lstm"]),
    "k3_func.weights.h5": ("k3_func", ["bidirectional", "lstm", "sequential/lstm"]),
    "k3_func_legacy.h5": ("k3_func", ["inner/inner_lstm", "bi", "last"]),
    "tfk_seq.h5": ("tfk_seq", ["lstm", "lstm_1", "bidirectional"]),
    "tfk_seq.keras": ("tfk_seq", ["lstm", "lstm_1", "bidirectional"]),
    "tfk_seq_weights.h5": ("tfk_seq", ["lstm", "lstm_1", "bidirectional"]),
    "tfk_nested.h5": ("tfk_nested", ["inner/lstm_3", "bi", "last"]),
}
WITH_CONFIG = [name for name in FILES if not name.endswith("weights.h5")]


def my_act(x: torch.Tensor) -> torch.Tensor:
    """The custom activation of tfk_seq (0.5 * tanh in the fixture script)."""
    return 0.5 * torch.tanh(x)


def reference(stem: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{stem}.npz") as data:
        return dict(data)


def reference_index(record: kf.KerasLayerRecord, position: int, names: list[str]) -> int:
    return names.index(record.name) if record.name in names else position


# -- a plain oracle: a record's numbers through the canonical layer, independent of the Keras front door ----
def _activation(value, keras2: bool):
    value = stored_activation_name(value)
    if value == "my_act":
        return my_act
    if keras2 and value == "hard_sigmoid":
        return "hard_sigmoid_keras2"
    return value


def _run_lstm(config: dict, weights: list[np.ndarray], x: torch.Tensor, keras2: bool) -> torch.Tensor:
    units = weights[1].shape[0]
    layer = unilstm.LSTM(
        weights[0].shape[0],
        units,
        batch_first=True,
        bias=len(weights) == 3,
        activation=_activation(config.get("activation", "tanh"), keras2),
        recurrent_activation=_activation(config.get("recurrent_activation", "sigmoid"), keras2),
        go_backwards=bool(config.get("go_backwards", False)),
        masked_output="previous",
    )
    with torch.no_grad():
        for name, array in torch_from_keras(*weights).items():
            getattr(layer, name + "_l0").copy_(torch.from_numpy(array))
    out, (h, _) = layer(x)
    return out if config.get("return_sequences") else h[0]


def run_record(record: kf.KerasLayerRecord, x: np.ndarray) -> np.ndarray:
    """What Keras computes for a record with config (default call: no mask, no initial state)."""
    xt = torch.from_numpy(x)
    keras2 = record.is_keras2
    with torch.no_grad():
        if record.class_name == "LSTM":
            return _run_lstm(record.config, record.weights, xt, keras2).numpy()
        half = len(record.weights) // 2
        forward_config = record.config["layer"]["config"]
        backward = record.config.get("backward_layer")
        backward_config = (
            backward["config"]
            if backward
            else {**forward_config, "go_backwards": not forward_config["go_backwards"]}
        )
        y_f = _run_lstm(forward_config, record.weights[:half], xt, keras2)
        y_b = _run_lstm(backward_config, record.weights[half:], xt, keras2)
        if forward_config.get("return_sequences"):
            y_b = torch.flip(y_b, dims=[1])
        mode = record.config.get("merge_mode", "concat")
        merged = {
            "concat": lambda: torch.cat([y_f, y_b], dim=-1),
            "sum": lambda: y_f + y_b,
            "mul": lambda: y_f * y_b,
            "ave": lambda: (y_f + y_b) / 2,
        }[mode]()
        return merged.numpy()


# -- real files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("filename", list(FILES))
def test_real_files_read_with_identical_arrays(filename: str) -> None:
    stem, keys = FILES[filename]
    records = read_keras_lstm_layers(FIXTURES / filename)
    ref = reference(stem)
    names = [str(n) for n in ref["names"]]
    assert [r.key for r in records] == keys
    assert sorted(r.name for r in records if r.name) == sorted(
        n for n in names if any(r.name == n for r in records)
    )
    for position, record in enumerate(records):
        i = reference_index(record, position, names)
        expected = [ref[f"w_{i}_{j}"] for j in range(sum(k.startswith(f"w_{i}_") for k in ref))]
        assert len(record.weights) == len(expected)
        for got, want in zip(record.weights, expected, strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
        assert record.class_name == ("Bidirectional" if len(expected) in (4, 6) else "LSTM")
        assert record.is_keras2 == filename.startswith("tfk")


@pytest.mark.parametrize("filename", WITH_CONFIG)
def test_real_files_give_kerass_numbers(filename: str) -> None:
    stem, _ = FILES[filename]
    ref = reference(stem)
    names = [str(n) for n in ref["names"]]
    for position, record in enumerate(read_keras_lstm_layers(FIXTURES / filename)):
        i = reference_index(record, position, names)
        np.testing.assert_allclose(run_record(record, ref[f"in_{i}"]), ref[f"out_{i}"], rtol=1e-5, atol=2e-6)


def test_keras2_hard_sigmoid_is_kept_and_keras3_is_not() -> None:
    tfk = read_keras_lstm_layers(FIXTURES / "tfk_seq.h5")[0]
    assert tfk.config["recurrent_activation"] == "hard_sigmoid" and tfk.is_keras2
    k3 = read_keras_lstm_layers(FIXTURES / "k3_seq_legacy.h5")[1]  # Keras 3's own legacy .h5
    assert k3.config["recurrent_activation"] == "hard_sigmoid" and not k3.is_keras2
    assert "time_major" in read_keras_lstm_layers(FIXTURES / "tfk_seq.keras")[0].config


# -- choosing a layer -----------------------------------------------------------------------------------
def test_several_lstms_without_key_list_the_choices() -> None:
    path = FIXTURES / "k3_seq.weights.h5"
    records = read_keras_lstm_layers(path)
    with pytest.raises(KerasFileError) as caught:
        kf.select_record(records, None, path, ("LSTM",))
    message = str(caught.value)
    assert str(path) in message and "key=" in message
    assert "'lstm'" in message and "'lstm_1'" in message and "'encoder'" in message
    assert kf.select_record(records, None, path, ("Bidirectional",)).key == "bidirectional"
    assert kf.select_record(records, "lstm_1", path, ("LSTM",)).name == "lstm"
    assert kf.select_record(records, "encoder", path, ("LSTM",)).key == "lstm"  # a layer name works too


def test_missing_key_names_the_file_and_the_choices() -> None:
    path = FIXTURES / "tfk_seq.h5"
    records = read_keras_lstm_layers(path)
    with pytest.raises(KerasFileError, match=r"no layer with key 'nope'.*'lstm_1'") as caught:
        kf.select_record(records, "nope", path)
    assert str(path) in str(caught.value)
    with pytest.raises(KerasFileError, match="is a Bidirectional, expected LSTM"):
        kf.select_record(records, "bidirectional", path, ("LSTM",))


# -- our files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_written_files_read_back(tmp_path: pathlib.Path, suffix: str) -> None:
    records = read_keras_lstm_layers(FIXTURES / "k3_seq.keras")
    target = tmp_path / f"model{suffix}"
    write_keras_model(records, target, (6, 3))
    back = read_keras_lstm_layers(target)
    if suffix == ".keras":
        assert [r.key for r in back] == ["lstm", "lstm_1", "bidirectional"]
        assert [r.config for r in back] == [r.config for r in records]
        assert back[0].keras_version == kf.WRITTEN_KERAS_VERSION
    back = sorted(back, key=lambda r: ["lstm", "lstm_1", "bidirectional"].index(r.key))
    assert [r.name for r in back] == [r.name for r in records]
    for ours, theirs in zip(back, records, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(ours.weights, theirs.weights, strict=True))
    assert os.listdir(tmp_path) == [target.name]


def test_written_keras_file_layout(tmp_path: pathlib.Path) -> None:
    """The same members and HDF5 groups as Keras 3's own .keras file of that model."""
    records = read_keras_lstm_layers(FIXTURES / "k3_seq.keras")
    target = write_keras_model(records, tmp_path / "m.keras", (None, 3))
    with zipfile.ZipFile(target) as ours, zipfile.ZipFile(FIXTURES / "k3_seq.keras") as theirs:
        assert sorted(ours.namelist()) == sorted(theirs.namelist())
        config = json.loads(ours.read("config.json"))
        assert config["config"]["layers"][0]["config"]["batch_shape"] == [None, None, 3]
        assert config["config"]["layers"][3]["build_config"] == {"input_shape": [None, None, 4]}

        def tree(data: bytes) -> set[str]:
            import io

            names: set[str] = set()
            with h5py.File(io.BytesIO(data), "r") as store:
                store.visit(names.add)
            return names

        theirs_tree = {n for n in tree(theirs.read("model.weights.h5")) if not n.startswith("layers/dense")}
        assert tree(ours.read("model.weights.h5")) == theirs_tree


def test_write_is_atomic(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = read_keras_lstm_layers(FIXTURES / "k3_seq.keras")
    target = tmp_path / "m.keras"
    target.write_bytes(b"old content")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_keras_model(records, target, (6, 3))
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["m.keras"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="reads 3 features"):
        write_keras_model(records, tmp_path / "bad.keras", (6, 5))
    assert os.listdir(tmp_path) == ["m.keras"]
    write_keras_model(records, target, (6, 3))
    assert [r.key for r in read_keras_lstm_layers(target)] == ["lstm", "lstm_1", "bidirectional"]
    assert os.listdir(tmp_path) == ["m.keras"]


def test_write_rejects_what_keras3_cannot_hold(tmp_path: pathlib.Path) -> None:
    records = read_keras_lstm_layers(FIXTURES / "k3_seq.keras")
    with pytest.raises(ValueError, match=r"must end in \.keras or \.weights\.h5"):
        write_keras_model(records, tmp_path / "m.h5", (6, 3))
    with pytest.raises(ValueError, match="without the batch size"):
        write_keras_model(records, tmp_path / "m.keras", (2, 6, 3))
    last = records[2]
    single = kf.KerasLayerRecord(
        "x", "x", "LSTM", {**records[0].config, "return_sequences": False}, records[0].weights
    )
    with pytest.raises(ValueError, match="single step"):
        write_keras_model([single, last], tmp_path / "m.keras", (6, 3))
    stateful = kf.KerasLayerRecord(
        "x", "x", "LSTM", {**records[0].config, "stateful": True}, records[0].weights
    )
    with pytest.raises(ValueError, match="batch_size"):
        write_keras_model([stateful], tmp_path / "m.keras", (6, 3))
    write_keras_model([stateful], tmp_path / "m.keras", (6, 3), batch_size=2)
    assert os.listdir(tmp_path) == ["m.keras"]


# -- bad files --------------------------------------------------------------------------------------------
def _bad_files(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    files = {}

    def put(name: str, data: bytes) -> None:
        files[name] = tmp_path / name
        files[name].write_bytes(data)

    for source in ("k3_seq.keras", "k3_seq.weights.h5", "tfk_seq.h5"):
        data = (FIXTURES / source).read_bytes()
        put("truncated_" + source, data[: len(data) // 2])
        put("short_" + source, data[:100])
        rng = np.random.default_rng(len(data))
        for part in range(1, 8):
            corrupt = bytearray(data)
            start = len(data) * part // 8
            corrupt[start : start + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
            put(f"corrupt{part}_" + source, bytes(corrupt[: len(data)]))
    put("empty.keras", b"")
    put("text.h5", b"this is not a Keras file\n" * 10)
    put("config.json.keras", json.dumps({"class_name": "Sequential"}).encode())
    foreign_zip = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    files["foreign.keras"] = foreign_zip
    foreign_h5 = tmp_path / "foreign.weights.h5"
    with h5py.File(foreign_h5, "w") as store:
        store.create_dataset("data", data=np.arange(5))
    files["foreign.weights.h5"] = foreign_h5
    bad_member = tmp_path / "badconfig.keras"
    with zipfile.ZipFile(FIXTURES / "k3_seq.keras") as source, zipfile.ZipFile(bad_member, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", source.read("model.weights.h5"))
    files["badconfig.keras"] = bad_member
    no_weights = tmp_path / "noweights.keras"
    with zipfile.ZipFile(FIXTURES / "k3_seq.keras") as source, zipfile.ZipFile(no_weights, "w") as archive:
        archive.writestr("config.json", source.read("config.json"))
        archive.writestr("model.weights.h5", b"")
    files["noweights.keras"] = no_weights
    directory = tmp_path / "dir.keras"
    directory.mkdir()
    files["dir.keras"] = directory
    files["missing.keras"] = tmp_path / "missing.keras"
    return files


def test_bad_files_give_a_clear_error_naming_the_file(tmp_path: pathlib.Path) -> None:
    for name, path in _bad_files(tmp_path).items():
        try:
            records = read_keras_lstm_layers(path)
        except KerasFileError as error:
            assert str(path) in str(error), (name, str(error))
            assert "Traceback" not in str(error)
            continue
        # a corruption that misses every array still reads: it must then give the right arrays
        assert name.startswith("corrupt"), (name, records)
        source = name.split("_", 1)[1]
        originals = read_keras_lstm_layers(FIXTURES / source)
        assert [r.key for r in records] == [r.key for r in originals]


def test_error_messages_say_what_was_expected(tmp_path: pathlib.Path) -> None:
    files = _bad_files(tmp_path)
    expectations = {
        "empty.keras": "empty",
        "text.h5": "not a Keras file",
        "foreign.keras": "must hold config.json and model.weights.h5",
        "foreign.weights.h5": "not a Keras file",
        "missing.keras": "no such file",
        "dir.keras": "directory",
        "truncated_k3_seq.keras": "zip",
        "badconfig.keras": "corrupt",
        "noweights.keras": "HDF5",
    }
    for name, words in expectations.items():
        with pytest.raises(KerasFileError, match=words):
            read_keras_lstm_layers(files[name])


def test_keras_file_error_is_a_value_error() -> None:
    assert issubclass(KerasFileError, ValueError)


def test_copies_keep_working(tmp_path: pathlib.Path) -> None:
    """The reader goes by content, not by suffix."""
    copy = tmp_path / "renamed.bin"
    shutil.copy(FIXTURES / "k3_seq.keras", copy)
    assert [r.key for r in read_keras_lstm_layers(copy)] == ["lstm", "lstm_1", "bidirectional"]


# -- through the Keras front door (unilstm.keras) ---------------------------------------------------------
@pytest.fixture
def ukeras():
    module = pytest.importorskip("unilstm.keras")
    if not hasattr(module, "load_layers"):
        pytest.skip("unilstm.keras does not re-export the Keras file functions")
    return module


def _numpy(value) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        value = value[0]
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@pytest.mark.parametrize("filename", WITH_CONFIG)
def test_load_layers_give_kerass_numbers(ukeras, filename: str) -> None:
    stem, _ = FILES[filename]
    ref = reference(stem)
    names = [str(n) for n in ref["names"]]
    records = read_keras_lstm_layers(FIXTURES / filename)
    layers = ukeras.load_layers(FIXTURES / filename, custom_objects={"my_act": my_act})
    assert len(layers) == len(records)
    for position, (layer, record) in enumerate(zip(layers, records, strict=True)):
        i = reference_index(record, position, names)
        assert isinstance(
            layer, ukeras.Bidirectional if record.class_name == "Bidirectional" else ukeras.LSTM
        )
        for got, want in zip(layer.get_weights(), record.weights, strict=True):
            assert np.array_equal(np.asarray(got), want)
        np.testing.assert_allclose(_numpy(layer(ref[f"in_{i}"])), ref[f"out_{i}"], rtol=1e-5, atol=2e-6)


def test_load_layers_needs_custom_objects_for_custom_activations(ukeras) -> None:
    path = FIXTURES / "tfk_seq.h5"
    with pytest.raises(KerasFileError, match=r"'my_act'.*custom_objects") as caught:
        ukeras.load_layers(path)
    assert str(path) in str(caught.value)


def test_load_layers_refuses_weights_only_files(ukeras) -> None:
    with pytest.raises(KerasFileError, match="weights-only.*load_weights"):
        ukeras.load_layers(FIXTURES / "k3_seq.weights.h5")


def test_load_weights_by_key(ukeras) -> None:
    ref = reference("k3_seq")
    for filename, key in (
        ("k3_seq.weights.h5", "lstm"),
        ("k3_seq.keras", "encoder"),
        ("k3_seq_legacy.h5", "encoder"),
    ):
        layer = ukeras.LSTM(5, return_sequences=True)
        assert ukeras.load_weights(layer, FIXTURES / filename, key=key) is layer
        for j, got in enumerate(layer.get_weights()):
            assert np.array_equal(np.asarray(got), ref[f"w_0_{j}"])
        np.testing.assert_allclose(_numpy(layer(ref["in_0"])), ref["out_0"], rtol=1e-5, atol=2e-6)


def test_load_weights_bidirectional_needs_no_key_when_alone(ukeras) -> None:
    ref = reference("k3_seq")
    layer = ukeras.Bidirectional(ukeras.LSTM(3))
    ukeras.load_weights(layer, FIXTURES / "k3_seq.weights.h5")
    np.testing.assert_allclose(_numpy(layer(ref["in_2"])), ref["out_2"], rtol=1e-5, atol=2e-6)


def test_load_weights_errors(ukeras) -> None:
    path = FIXTURES / "k3_seq.weights.h5"
    with pytest.raises(KerasFileError, match=r"pass key=.*'lstm'.*'lstm_1'"):
        ukeras.load_weights(ukeras.LSTM(4), path)
    with pytest.raises(KerasFileError, match="weight shapes"):
        ukeras.load_weights(ukeras.LSTM(7), path, key="lstm")
    with pytest.raises(KerasFileError, match="no layer with key 'lstm_9'"):
        ukeras.load_weights(ukeras.LSTM(4), path, key="lstm_9")
    with pytest.raises(TypeError, match="unilstm.keras.LSTM"):
        ukeras.load_weights(torch.nn.LSTM(3, 4), path)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_save_model_round_trip(ukeras, tmp_path: pathlib.Path, suffix: str) -> None:
    ref = reference("k3_seq")
    layers = ukeras.load_layers(FIXTURES / "k3_seq.keras")
    target = tmp_path / f"ours{suffix}"
    ukeras.save_model(layers, target, input_shape=(6, 3))
    assert os.listdir(tmp_path) == [target.name]
    if suffix == ".keras":
        again = ukeras.load_layers(target)
    else:
        again = [
            ukeras.LSTM(5, return_sequences=True),
            ukeras.LSTM(
                4,
                return_sequences=True,
                use_bias=False,
                activation="relu",
                recurrent_activation="hard_sigmoid",
            ),
            ukeras.Bidirectional(ukeras.LSTM(3)),
        ]
        for layer, key in zip(again, ("lstm", "lstm_1", "bidirectional"), strict=True):
            ukeras.load_weights(layer, target, key=key)
    y = ref["x"]
    for layer in again:
        y = _numpy(layer(y))
    np.testing.assert_allclose(y, ref["out_2"], rtol=1e-5, atol=2e-6)


def test_save_model_refuses_what_keras3_lacks(ukeras, tmp_path: pathlib.Path) -> None:
    layers = ukeras.load_layers(FIXTURES / "tfk_seq.h5", custom_objects={"my_act": my_act})
    with pytest.raises(ValueError, match="Keras 2's hard_sigmoid"):
        ukeras.save_model(layers[:1], tmp_path / "m.keras", input_shape=(6, 3))
    with pytest.raises(ValueError, match="callable"):
        ukeras.save_model(layers[1:2], tmp_path / "m.keras", input_shape=(6, 4))
    assert os.listdir(tmp_path) == []


def test_store_keys_sort_naturally_whatever_their_characters() -> None:
    keys = ["lstm_10", "lstm", "odd\nname_2", "lstm_2", "odd\nname"]
    expected = ["lstm", "lstm_2", "lstm_10", "odd\nname", "odd\nname_2"]
    assert sorted(keys, key=kf.reading._natural_key) == expected


def test_legacy_attributes_split_in_chunks(tmp_path: pathlib.Path) -> None:
    """Keras splits HDF5 attributes over 64 kB into name0, name1, ... (many layers or long weight names)."""
    target = tmp_path / "chunked.h5"
    shutil.copy(FIXTURES / "tfk_seq.h5", target)
    with h5py.File(target, "r+") as store:
        root = store["model_weights"]
        names = list(root.attrs["layer_names"])
        del root.attrs["layer_names"]
        root.attrs["layer_names0"] = names[:2]
        root.attrs["layer_names1"] = names[2:]
    assert [r.key for r in read_keras_lstm_layers(target)] == ["lstm", "lstm_1", "bidirectional"]


def test_tf_keras_weights_only_h5_by_layer_name(ukeras) -> None:
    ref = reference("tfk_seq")
    layer = ukeras.LSTM(3, return_sequences=True)
    ukeras.load_weights(layer, FIXTURES / "tfk_seq_weights.h5", key="lstm_1")
    for j, got in enumerate(layer.get_weights()):
        assert np.array_equal(got, ref[f"w_1_{j}"])


def test_missing_h5py_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"unilstm\[keras\]"):
        read_keras_lstm_layers(FIXTURES / "k3_seq.keras")


def test_records_of_layers_say_which_hard_sigmoid(ukeras, tmp_path: pathlib.Path) -> None:
    keras2_layer = ukeras.load_layers(FIXTURES / "tfk_seq.h5", custom_objects={"my_act": my_act})[0]
    assert record_from_layer(keras2_layer).is_keras2
    keras3_layer = ukeras.load_layers(FIXTURES / "k3_seq_legacy.h5")[1]
    assert not record_from_layer(keras3_layer).is_keras2
    ukeras.save_model([keras3_layer], tmp_path / "k3.keras", input_shape=(None, 5))
    assert read_keras_lstm_layers(tmp_path / "k3.keras")[0].config["recurrent_activation"] == "hard_sigmoid"
    odd = ukeras.LSTM(2, recurrent_activation="hard_sigmoid_keras2")
    odd.build((None, None, 3))
    with pytest.raises(ValueError, match="no Keras config can say that"):
        ukeras.save_model([odd], tmp_path / "odd.keras", input_shape=(None, 3))
    assert os.listdir(tmp_path) == ["k3.keras"]


def test_save_model_builds_unbuilt_layers_like_a_sequential(tmp_path):
    from unilstm.keras import LSTM, Bidirectional, load_layers, save_model

    torch.manual_seed(0)
    stack = [Bidirectional(LSTM(4, return_sequences=True)), LSTM(3, return_sequences=True), LSTM(2)]
    path = save_model(stack, tmp_path / "built.keras", input_shape=(None, 5))
    assert [layer.built for layer in stack] == [True, True, True]
    assert stack[1].get_weights()[0].shape == (8, 12)  # fed by the concatenated 2 x 4 features
    x = np.random.RandomState(0).randn(2, 6, 5).astype(np.float32)
    loaded = load_layers(path)
    want = stack[2](stack[1](stack[0](x)))
    got = loaded[2](loaded[1](loaded[0](x)))
    assert float((got - want).detach().abs().max()) == 0.0


def test_unilstm_load_reads_tf_keras_save_weights_h5() -> None:
    """Guards: unilstm.load refused tf-keras save_weights .h5 files (no model_config: load_layers said
    "weights-only") that convert and inspect read; it now reads them as .weights.h5 files are read."""
    ref = reference("tfk_seq")
    layers = unilstm.load(FIXTURES / "tfk_seq_weights.h5")
    assert len(layers) == 3
    kernel, recurrent, bias = ref["w_0_0"], ref["w_0_1"], ref["w_0_2"]
    assert layers[0].spec.input_size == kernel.shape[0] and layers[0].spec.hidden_size == recurrent.shape[0]
    assert layers[2].spec.bidirectional
    state = {name: tensor.detach().numpy() for name, tensor in layers[0].state_dict().items()}
    assert np.array_equal(torch_from_keras(kernel, recurrent, bias)["weight_ih"], state["weight_ih_l0"])
