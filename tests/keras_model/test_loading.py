"""load_model on files laid out by hand as Keras 2.2 writes them: structure, semantics that differ between
Keras generations, parameters, and refusals of hostile or unsupported files. Parity with files real Keras
wrote: test_model_parity.py."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from crafted_files import keras22_lstm, keras22_sequential, lstm_group, lstm_weights, write_legacy_h5

from unilstm.keras import LSTM, KerasFileError, KerasModelError, load_model


def _stacked(tmp_path, recurrent_activation="hard_sigmoid", version="2.2.4"):
    first, second = lstm_weights(3, 4, seed=1), lstm_weights(4, 2, seed=2)
    config = keras22_sequential(
        [
            keras22_lstm(
                "lstm_1", 4, [None, 5, 3], return_sequences=True, recurrent_activation=recurrent_activation
            ),
            keras22_lstm("lstm_2", 2, recurrent_activation=recurrent_activation),
        ]
    )
    path = write_legacy_h5(
        tmp_path / "k22.h5",
        config,
        {"lstm_1": lstm_group("lstm_1", first), "lstm_2": lstm_group("lstm_2", second)},
        keras_version=version,
    )
    return path, config, first, second


def _reference(config, first, second, x, keras2):
    one = LSTM.from_config(config["config"][0]["config"], keras2=keras2)
    two = LSTM.from_config(config["config"][1]["config"], keras2=keras2)
    one.set_weights(first)
    two.set_weights(second)
    return two(one(torch.from_numpy(x)))


def test_keras22_sequential_list_config_keeps_keras2_hard_sigmoid(tmp_path):
    """A Keras 2.2 file (Sequential config as a list, batch_input_shape, lstm_1/kernel:0 names) loads and
    keeps Keras 2's hard_sigmoid, which differs from Keras 3's by far more than float error."""
    path, config, first, second = _stacked(tmp_path)
    model = load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    got = model(x)
    keras2 = _reference(config, first, second, x, keras2=True)
    keras3 = _reference(config, first, second, x, keras2=False)
    torch.testing.assert_close(got, keras2, rtol=1e-6, atol=1e-6)
    assert (got - keras3).abs().max() > 1e-3


def test_parameters_are_leaves_named_after_keras_layers_and_train(tmp_path):
    path, *_ = _stacked(tmp_path)
    model = load_model(path)
    names = sorted(name for name, _ in model.named_parameters())
    assert names == sorted(
        f"{layer}.cell.{w}" for layer in ("lstm_1", "lstm_2") for w in ("kernel", "recurrent_kernel", "bias")
    )
    assert not model.training
    x = torch.randn(3, 5, 3)
    loss = model(x).square().mean()
    loss.backward()
    assert all(p.is_leaf and p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.state_dict()["lstm_1.cell.kernel"].shape == (3, 16)


def test_keras1_files_are_refused_by_version(tmp_path):
    path, *_ = _stacked(tmp_path, version="1.2.2")
    with pytest.raises(KerasFileError, match=r"k22\.h5.*Keras 1\.2\.2.*older than Keras 2\.0"):
        load_model(path)


def test_weights_that_do_not_fit_the_config_are_refused_before_reading(tmp_path):
    """units in the config say 4, the arrays are for 3: refused naming the file, the layer and the entry."""
    first = lstm_weights(3, 3)
    config = keras22_sequential([keras22_lstm("lstm_1", 4, [None, 5, 3])])
    path = write_legacy_h5(tmp_path / "bad.h5", config, {"lstm_1": lstm_group("lstm_1", first)})
    with pytest.raises(KerasFileError, match=r"bad\.h5.*lstm_1.*kernel:0.*shape \(3, 12\).*needs \(3, 16\)"):
        load_model(path)


def test_a_huge_declared_layer_is_refused_without_allocating(tmp_path):
    """A crafted config declaring a billion units: the stored arrays do not fit; nothing that big is made."""
    config = keras22_sequential([keras22_lstm("lstm_1", 10**9, [None, 5, 3])])
    path = write_legacy_h5(tmp_path / "huge.h5", config, {"lstm_1": lstm_group("lstm_1", lstm_weights(3, 2))})
    with pytest.raises(
        KerasFileError, match=r"huge\.h5.*units must be a positive int|huge\.h5.*needs \(3, 4000000000\)"
    ):
        load_model(path)


def test_weights_out_of_order_are_refused(tmp_path):
    """The names in weight_names tell a swapped kernel and recurrent_kernel (same shapes when F == H)."""
    arrays = lstm_weights(4, 4)
    swapped = [
        ("lstm_1/recurrent_kernel:0", arrays[1]),
        ("lstm_1/kernel:0", arrays[0]),
        ("lstm_1/bias:0", arrays[2]),
    ]
    config = keras22_sequential([keras22_lstm("lstm_1", 4, [None, 5, 4])])
    path = write_legacy_h5(tmp_path / "swapped.h5", config, {"lstm_1": swapped})
    with pytest.raises(KerasFileError, match=r"swapped\.h5.*recurrent_kernel:0.*kernel belongs"):
        load_model(path)


def test_unsupported_layers_are_refused_by_class_name_and_place(tmp_path):
    config = keras22_sequential(
        [
            keras22_lstm("lstm_1", 4, [None, 5, 3], return_sequences=True),
            {"class_name": "GRU", "config": {"name": "gru_1", "trainable": True, "units": 2}},
        ]
    )
    path = write_legacy_h5(tmp_path / "gru.h5", config, {"lstm_1": lstm_group("lstm_1", lstm_weights(3, 4))})
    with pytest.raises(
        KerasModelError, match=r"gru\.h5.*GRU 'gru_1'.*'GRU' is not supported.*custom_objects"
    ):
        load_model(path)


def test_custom_objects_supply_a_torch_module(tmp_path):
    config = keras22_sequential(
        [
            keras22_lstm("lstm_1", 4, [None, 5, 3]),
            {"class_name": "Scale", "config": {"name": "scale_1", "trainable": True, "factor": 3.0}},
        ]
    )
    path = write_legacy_h5(
        tmp_path / "custom.h5", config, {"lstm_1": lstm_group("lstm_1", lstm_weights(3, 4)), "scale_1": []}
    )

    class Scale(torch.nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    class Learned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x * self.factor

    learned = load_model(path, custom_objects={"Scale": lambda config, weights: Learned()})
    assert "scale_1.module.factor" in dict(learned.named_parameters())  # registered before any call
    plain = load_model(path, custom_objects={"Scale": lambda config, weights: Scale(1.0)})
    scaled = load_model(path, custom_objects={"Scale": lambda config, weights: Scale(config["factor"])})
    x = np.ones((1, 5, 3), np.float32)
    torch.testing.assert_close(scaled(x), 3 * plain(x))


def test_a_weights_only_file_needs_a_config(tmp_path):
    path, config, *_ = _stacked(tmp_path)
    with h5py.File(path, "a") as handle:
        del handle.attrs["model_config"]
    with pytest.raises(KerasFileError, match="no model config; pass config="):
        load_model(path)
    config_file = tmp_path / "model.json"
    config_file.write_text(json.dumps(config))
    assert load_model(path, config=config_file)(np.zeros((1, 5, 3), np.float32)).shape == (1, 2)


def test_an_external_link_is_refused(tmp_path):
    path, *_ = _stacked(tmp_path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with h5py.File(path, "a") as handle:
        handle["model_weights/lstm_1/elsewhere"] = h5py.ExternalLink(str(other), "/x")
    with pytest.raises(KerasFileError, match="external link"):
        load_model(path)


def _functional(layers, inputs, outputs, name="model_1"):
    return {
        "class_name": "Model",
        "config": {"name": name, "layers": layers, "input_layers": inputs, "output_layers": outputs},
    }


def _input(name, shape):
    return {
        "name": name,
        "class_name": "InputLayer",
        "config": {"batch_input_shape": shape, "dtype": "float32", "sparse": False, "name": name},
        "inbound_nodes": [],
    }


def test_a_cycle_in_the_graph_is_refused(tmp_path):
    one = dict(
        keras22_lstm("lstm_1", 3, return_sequences=True),
        name="lstm_1",
        inbound_nodes=[[["lstm_2", 0, 0, {}]]],
    )
    two = dict(
        keras22_lstm("lstm_2", 3, return_sequences=True),
        name="lstm_2",
        inbound_nodes=[[["lstm_1", 0, 0, {}]]],
    )
    config = _functional([_input("input_1", [None, 5, 3]), one, two], [["input_1", 0, 0]], [["lstm_2", 0, 0]])
    path = write_legacy_h5(
        tmp_path / "cycle.h5",
        config,
        {
            "lstm_1": lstm_group("lstm_1", lstm_weights(3, 3)),
            "lstm_2": lstm_group("lstm_2", lstm_weights(3, 3)),
        },
    )
    with pytest.raises(KerasModelError, match="cycle"):
        load_model(path)


def test_models_nested_without_end_are_refused(tmp_path):
    inner = keras22_sequential([keras22_lstm("lstm_1", 3, [None, 5, 3])], name="m0")
    for depth in range(40):
        inner = keras22_sequential([dict(copy.deepcopy(inner), name=f"m{depth + 1}")], name=f"m{depth + 1}")
        inner["config"][0]["config"] = {"name": f"m{depth}", "layers": inner["config"][0]["config"]}
    path = write_legacy_h5(tmp_path / "deep.h5", inner, {})
    with pytest.raises(KerasFileError, match="nested more than 32 deep"):
        load_model(path)


def test_a_shared_layer_is_one_module_called_twice(tmp_path):
    shared = dict(
        keras22_lstm("lstm_1", 3), name="lstm_1", inbound_nodes=[[["a", 0, 0, {}]], [["b", 0, 0, {}]]]
    )
    config = _functional(
        [_input("a", [None, 5, 2]), _input("b", [None, 4, 2]), shared],
        [["a", 0, 0], ["b", 0, 0]],
        [["lstm_1", 0, 0], ["lstm_1", 1, 0]],
    )
    arrays = lstm_weights(2, 3)
    path = write_legacy_h5(tmp_path / "shared.h5", config, {"lstm_1": lstm_group("lstm_1", arrays)})
    model = load_model(path)
    xa, xb = torch.randn(2, 5, 2), torch.randn(2, 4, 2)
    ya, yb = model(xa, xb)
    reference = LSTM.from_config(shared["config"], keras2=True)
    reference.set_weights(arrays)
    torch.testing.assert_close(ya, reference(xa))
    torch.testing.assert_close(yb, reference(xb))
    assert len(list(model.parameters())) == 3


def test_inputs_of_the_wrong_shape_are_refused(tmp_path):
    path, *_ = _stacked(tmp_path)
    with pytest.raises(ValueError, match=r"expected shape \(None, 5, 3\), found shape \(2, 5, 4\)"):
        load_model(path)(np.zeros((2, 5, 4), np.float32))


FIXTURE_MODELS = Path(__file__).parent.parent / "fixtures" / "keras_models"


@pytest.mark.parametrize("name", ["k3_sign.keras", "tfk_sign.h5"])
def test_truncated_and_oversized_model_files_are_refused_naming_the_file(tmp_path, name):
    """A cut .keras / .h5 and a file past max_bytes are the format's KerasFileError naming the file."""
    data = (FIXTURE_MODELS / name).read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFileError, match=rf"cut_{re.escape(name)}: .*(truncated|corrupt)"):
        load_model(cut)
    with pytest.raises(KerasFileError, match=rf"{re.escape(name)}: .*limit of 1000"):
        load_model(FIXTURE_MODELS / name, max_bytes=1000)
