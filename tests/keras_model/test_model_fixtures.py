"""The whole-model fixture set of ``tests/fixtures/keras_models/`` is complete and self-consistent.

No loader is involved: these checks read the files with h5py and zipfile only, so that a regeneration by
``tools/fixtures/make_keras_model_fixtures.py`` that drops a model, a format or an array fails here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "keras_models"

MODELS = [
    "tagger", "tagger_sum", "sign", "charlm", "forecast", "nested", "shared", "encdec", "masking",
    "cnn_lstm", "attention", "zoo", "hard_sigmoid", "finetune", "stateful",
]  # fmt: skip
#: the files each generation writes per model (besides the .npz)
FORMATS = {"k3": [".keras", ".h5", ".weights.h5", ".json"], "tfk": [".h5", ".keras"]}
KERAS22 = ["seq", "func", "hard_sigmoid", "bidirectional", "cudnn"]
#: models whose first input is ids with padding (mask_zero)
ID_MODELS = {"tagger", "tagger_sum", "attention", "finetune"}
ID_MODELS_22 = {"seq", "func", "bidirectional"}
MODEL_SUFFIXES = (".keras", ".h5", ".json")


def all_names() -> list[str]:
    return [f"{g}_{m}" for g in FORMATS for m in MODELS] + [f"k22_{m}" for m in KERAS22]


def load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("spec"))), arrays


def numbered(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    found = []
    while f"{prefix}_{len(found)}" in arrays:
        found.append(arrays[f"{prefix}_{len(found)}"])
    return found


def test_every_model_is_written_in_every_format_of_its_generation() -> None:
    missing = [
        f"{g}_{m}{s}" for g, suffixes in FORMATS.items() for m in MODELS for s in [*suffixes, ".npz"]
        if not (FIXTURES / f"{g}_{m}{s}").is_file()
    ]  # fmt: skip
    missing += [
        f"k22_{m}{s}" for m in KERAS22 for s in (".h5", ".npz") if not (FIXTURES / f"k22_{m}{s}").is_file()
    ]
    if not (FIXTURES / "k1_refused.h5").is_file():
        missing.append("k1_refused.h5")
    assert missing == []


def test_every_model_file_has_its_npz_and_nothing_is_unexpected() -> None:
    expected = {f"{name}.npz" for name in all_names()} | {"k1_refused.h5"}
    expected |= {f"{g}_{m}{s}" for g, suffixes in FORMATS.items() for m in MODELS for s in suffixes}
    expected |= {f"k22_{m}.h5" for m in KERAS22}
    present = {path.name for path in FIXTURES.iterdir()}
    assert present == expected
    for path in FIXTURES.iterdir():
        if path.name.endswith(MODEL_SUFFIXES) and path.name != "k1_refused.h5":
            stem = path.name.split(".")[0]
            assert (FIXTURES / f"{stem}.npz").is_file(), path.name


def test_the_folder_stays_small() -> None:
    # HDF5 writes about 2 kB of metadata per group, so a Keras file is 15-75 kB whatever its weights
    sizes = {path.name: path.stat().st_size for path in FIXTURES.iterdir()}
    assert max(sizes.values()) < 100_000, max(sizes, key=sizes.__getitem__)
    assert sum(sizes.values()) < 3_000_000


@pytest.mark.parametrize("name", all_names())
def test_npz_is_self_consistent(name: str) -> None:
    spec, arrays = load(name)
    generation, model = name.split("_", 1)
    assert spec["generation"] == generation and spec["model"] == model
    inputs, outputs = numbered(arrays, "input"), numbered(arrays, "output")
    assert inputs and outputs
    assert [list(o.shape) for o in outputs] == spec["output_shapes"]
    for array in inputs + outputs:
        assert np.all(np.isfinite(array)), name
        assert array.shape[0] == 3
    for output in outputs:
        assert output.dtype == np.float32
        assert np.abs(output).max() > 0  # random weights: a zero output means something was not set
    for file in spec["files"]:
        assert (FIXTURES / file).is_file(), file
    assert spec["layers"], name
    if generation == "k3":
        assert spec["keras"].startswith("3.")
    elif generation == "tfk":
        assert spec["keras"].startswith("2.")
    else:
        assert spec["keras"] == "2.2.4"


@pytest.mark.parametrize("name", [f"{g}_{m}" for g in FORMATS for m in sorted(ID_MODELS)]
                         + [f"k22_{m}" for m in sorted(ID_MODELS_22)])  # fmt: skip
def test_id_inputs_have_padding_at_the_end_and_in_the_middle(name: str) -> None:
    ids = load(name)[1]["input_0"]
    assert ids.dtype == np.int32 and ids.ndim == 2
    assert (ids[:, -1] == 0).any(), "no row ends with padding"
    middle = ids[:, 1:-1] == 0
    later = np.array([(ids[r, c + 2 :] != 0).any() for r, c in zip(*np.nonzero(middle), strict=True)])
    assert later.any(), "no padding id in the middle of a row"
    assert (ids != 0).all(axis=1).any(), "no full row"


@pytest.mark.parametrize("generation", list(FORMATS))
def test_finetune_records_y_and_a_gradient_per_trainable_weight(generation: str) -> None:
    spec, arrays = load(f"{generation}_finetune")
    assert arrays["y"].shape == arrays["output_0"].shape
    grads = {k: v for k, v in arrays.items() if k.startswith("grad_")}
    layers = {key.split("/")[0][len("grad_") :] for key in grads}
    assert len(layers) == 3  # embedding, lstm, dense
    short = sorted(key.split("/")[1] for key in grads)
    assert short == sorted(["embeddings", "kernel", "recurrent_kernel", "bias", "kernel", "bias"])
    for key, grad in grads.items():
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, key
    loss = np.mean((arrays["output_0"] - arrays["y"]) ** 2)
    assert np.isclose(loss, arrays["loss"], rtol=1e-5)


@pytest.mark.parametrize("name", [f"{g}_{m}" for g in FORMATS for m in MODELS])
def test_keras_archives_hold_config_metadata_and_weights(name: str) -> None:
    spec = load(name)[0]
    with zipfile.ZipFile(FIXTURES / f"{name}.keras") as archive:
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())
        metadata = json.loads(archive.read("metadata.json"))
        config = json.loads(archive.read("config.json"))
    assert metadata["keras_version"] == spec["keras"]
    assert config["class_name"] == spec["model_class"]


@pytest.mark.parametrize("name", [f"{g}_{m}" for g in FORMATS for m in MODELS])
def test_legacy_h5_holds_config_and_layer_names(name: str) -> None:
    spec = load(name)[0]
    with h5py.File(FIXTURES / f"{name}.h5", "r") as f:
        assert _text(f.attrs["keras_version"]) == spec["keras"]
        config = json.loads(_text(f.attrs["model_config"]))
        layer_names = [_text(n) for n in f["model_weights"].attrs["layer_names"]]
        for layer in layer_names:
            group = f["model_weights"][layer]
            for weight in group.attrs["weight_names"]:
                assert isinstance(group[_text(weight)], h5py.Dataset), (layer, weight)
    assert config["class_name"] == spec["model_class"]
    assert layer_names


def test_keras3_weights_h5_has_its_json_config() -> None:
    for model in MODELS:
        config = json.loads((FIXTURES / f"k3_{model}.json").read_text())
        assert config["class_name"] in ("Functional", "Sequential"), model
        with h5py.File(FIXTURES / f"k3_{model}.weights.h5", "r") as f:
            assert "layers" in f, model


def _text(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("model", KERAS22)
def test_keras22_files_are_laid_out_as_keras_2_2_4_wrote_them(model: str) -> None:
    with h5py.File(FIXTURES / f"k22_{model}.h5", "r") as f:
        # Keras 2.2 wrote encoded bytes: fixed-length HDF5 strings
        for key in ("keras_version", "backend", "model_config", "training_config"):
            assert f.attrs.get_id(key).dtype.kind == "S", key
        assert f["model_weights"].attrs.get_id("layer_names").dtype.kind == "S"
        assert _text(f.attrs["keras_version"]).startswith("2.2.")
        assert _text(f.attrs["backend"]) == "tensorflow"
        assert "training_config" in f.attrs
        config = json.loads(_text(f.attrs["model_config"]))
        weights = f["model_weights"]
        assert _text(weights.attrs["keras_version"]).startswith("2.2.")
        layer_names = [_text(n) for n in weights.attrs["layer_names"]]
        for layer in layer_names:
            for weight in weights[layer].attrs["weight_names"]:
                name = _text(weight)
                assert name.endswith(":0") and name.split("/")[0] == layer, name
                assert isinstance(weights[layer][name], h5py.Dataset)
    if config["class_name"] == "Sequential":
        assert isinstance(config["config"], list)  # Keras 2.2: a plain list of layers
        assert "batch_input_shape" in config["config"][0]["config"]
        assert layer_names == [entry["config"]["name"] for entry in config["config"]]
    else:
        assert config["class_name"] == "Model"
        layers = config["config"]["layers"]
        assert layer_names == [entry["name"] for entry in layers]
        for entry in layers:
            for node in entry["inbound_nodes"]:
                for inbound in node:
                    assert len(inbound) == 4 and inbound[1:] == [0, 0, {}], inbound


def test_keras22_cudnn_weights_have_cudnn_shapes() -> None:
    with h5py.File(FIXTURES / "k22_cudnn.h5", "r") as f:
        config = json.loads(_text(f.attrs["model_config"]))
        first = config["config"][0]
        assert first["class_name"] == "CuDNNLSTM"
        assert "activation" not in first["config"] and "implementation" not in first["config"]
        units, features = first["config"]["units"], first["config"]["batch_input_shape"][-1]
        group = f["model_weights"][first["config"]["name"]]
        shapes = [group[_text(n)].shape for n in group.attrs["weight_names"]]
    assert shapes == [(features, 4 * units), (units, 4 * units), (8 * units,)]


def test_keras1_file_claims_keras_1() -> None:
    with h5py.File(FIXTURES / "k1_refused.h5", "r") as f:
        assert _text(f.attrs["keras_version"]) == "1.2.2"
        config = json.loads(_text(f.attrs["model_config"]))
    assert "output_dim" in config["config"][0]["config"]
