"""Whole Keras models exported as one ONNX graph (:func:`unilstm.convert.model_onnx.export_model_onnx`),
checked with ``onnx.checker`` and run with onnxruntime against ``unilstm.keras.load_model``.

Every fixture model of ``tests/fixtures/keras_models/`` the export supports runs on the fixture's own inputs
where they fit the export's assumptions (ids with padding 0 only at the end of a row), else on the same ids
with each inner 0 replaced by 1; it equals the loaded model within 1e-5 relative (+1e-6 absolute), and
Keras's own outputs where the fixture's inputs were used. Layers and situations the fixtures lack are
checked on models built from configs with random weights; refusals are checked by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from unilstm.convert.file_kinds import ConversionError  # noqa: E402
from unilstm.convert.model_onnx import export_model_onnx  # noqa: E402
from unilstm.convert.model_onnx_layers import ACTIVATIONS  # noqa: E402
from unilstm.convert.model_program import model_program  # noqa: E402
from unilstm.keras import load_model  # noqa: E402
from unilstm.keras_model.model import KerasModel, build_model  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "keras_models"
MODELS = [
    "tagger", "tagger_sum", "sign", "charlm", "forecast", "nested", "shared", "encdec", "cnn_lstm",
    "attention", "zoo", "hard_sigmoid", "finetune",
]  # fmt: skip
FILES = [f"{g}_{m}.keras" for g in ("k3", "tfk") for m in MODELS] + [
    f"k22_{m}.h5" for m in ("seq", "func", "hard_sigmoid", "bidirectional", "cudnn")
]
_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}


def run_onnx(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {
        i.name: np.asarray(x).astype(_TYPES[i.type])
        for i, x in zip(session.get_inputs(), inputs, strict=True)
    }
    return list(session.run(None, feed))


def run_torch(model: KerasModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*[torch.as_tensor(x) for x in inputs])
    return [t.numpy() for t in (out if isinstance(out, list) else [out])]


def assert_close(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def right_padded(ids: np.ndarray) -> np.ndarray:
    """The ids with every 0 before a row's last nonzero id replaced by 1: padding only at the end."""
    out = ids.copy()
    for row in out.reshape(-1, out.shape[-1]):
        length = len(row) - int(np.argmax(row[::-1] != 0)) if row.any() else 0
        row[:length][row[:length] == 0] = 1
    return out


def fixture_inputs(name: str) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """(inputs, Keras's outputs, whether the inputs are the fixture's own)."""
    with np.load(FIXTURES / f"{name.split('.')[0]}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    inputs = [arrays[f"input_{i}"] for i in range(len([k for k in arrays if k.startswith("input_")]))]
    outputs = [arrays[f"output_{i}"] for i in range(len([k for k in arrays if k.startswith("output_")]))]
    fitted = [right_padded(x) if x.dtype.kind in "iu" else x for x in inputs]
    return fitted, outputs, all(np.array_equal(a, b) for a, b in zip(fitted, inputs, strict=True))


def _program(model: KerasModel, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """(Keras 2.2 declares ids inputs float32: model_program probes them with ids all the same.)"""
    return model_program(model)


@pytest.mark.parametrize("name", FILES)
def test_fixture_models_export_and_match(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(FIXTURES / name)
    exported = export_model_onnx(_program(model, name, monkeypatch))
    onnx.checker.check_model(exported, full_check=True)
    inputs, keras_outputs, own = fixture_inputs(name)
    got = run_onnx(exported, inputs)
    assert_close(got, run_torch(model, inputs))
    if own:
        assert_close(got, keras_outputs)


def test_graph_inputs_outputs_and_names() -> None:
    model = load_model(FIXTURES / "k3_tagger.keras")
    exported = export_model_onnx(model_program(model))
    graph = exported.graph
    (ids,) = graph.input
    assert ids.name == "x_input_layer"
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT32
    dims = [d.dim_param or d.dim_value for d in ids.type.tensor_type.shape.dim]
    assert dims == ["batch", 7]
    assert [o.name for o in graph.output] == ["time_distributed"]
    names = {i.name for i in graph.initializer}
    assert {
        "embedding.embeddings",
        "bidirectional.forward_layer.W",
        "bidirectional.backward_layer.R",
    } <= names
    ops = [n.op_type for n in graph.node]
    assert ops.count("LSTM") == 4 and "Gather" in ops and "ReduceSum" in ops
    assert exported.opset_import[0].version == 17
    inputs, _, _ = fixture_inputs("k3_tagger.keras")
    for opset in (13, 18, 21):
        newer = export_model_onnx(model_program(model), opset=opset)
        assert newer.opset_import[0].version == opset
        assert_close(run_onnx(newer, inputs), run_torch(model, inputs))


def test_the_batch_and_open_sizes_are_dynamic() -> None:
    model = load_model(FIXTURES / "k3_charlm.keras")
    exported = export_model_onnx(model_program(model))
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(5, 7, 4)).astype(np.float32), rng.normal(size=(5, 5, 4)).astype(np.float32)]
    assert_close(run_onnx(exported, inputs), run_torch(model, inputs))


@pytest.mark.parametrize("name", ["k3_masking.keras", "tfk_masking.keras"])
def test_an_lstm_fed_a_mask_with_gaps_is_refused_by_name(name: str) -> None:
    program = model_program(load_model(FIXTURES / name))
    with pytest.raises(ConversionError, match=r"LSTM 'lstm': its mask can have gaps .*Masking 'masking'"):
        export_model_onnx(program)


def test_a_bad_opset_is_refused() -> None:
    program = model_program(load_model(FIXTURES / "k3_forecast.keras"))
    with pytest.raises(ConversionError, match="opset must be an int >= 13"):
        export_model_onnx(program, opset=11)


# -- models built from configs, random weights -------------------------------------------------------------


def _layer(name: str, class_name: str, inbound: list[Any] | None = None, **config: Any) -> dict[str, Any]:
    """A tf-keras-style functional layer entry; ``inbound``: one call, a list of tensors ``[layer, node,
    index, kwargs]`` (a layer name alone is ``[name, 0, 0, {}]``)."""
    call = [[t, 0, 0, {}] if isinstance(t, str) else t for t in (inbound or [])]
    entry = {"name": name, "trainable": True, **config}
    return {"name": name, "class_name": class_name, "config": entry, "inbound_nodes": [call]}


def _inputs(**shapes: Any) -> list[dict[str, Any]]:
    entries = []
    for name, shape in shapes.items():
        dtype = "int32" if name.startswith("ids") else "float32"
        config = {"batch_input_shape": shape, "dtype": dtype, "name": name}
        entries.append({"name": name, "class_name": "InputLayer", "config": config, "inbound_nodes": []})
    return entries


def build(
    layers: list[dict[str, Any]], outputs: list[str], keras2: bool = False, seed: int = 0
) -> KerasModel:
    """A functional model of ``layers`` (inputs first) with random weights."""
    inputs = [[e["name"], 0, 0] for e in layers if e["class_name"] == "InputLayer"]
    config = {
        "class_name": "Model",
        "config": {
            "name": "built",
            "layers": layers,
            "input_layers": inputs,
            "output_layers": [[o, 0, 0] if isinstance(o, str) else o for o in outputs],
        },
    }
    model = build_model(config, keras2, None)
    rng = np.random.default_rng(seed)
    for _, _, module in model.layers:
        arrays = []
        for name, shape in zip(module.weight_names, module.weight_shapes(), strict=True):
            array = rng.normal(0.0, 0.5, shape).astype(np.float32)
            arrays.append(np.abs(array) + 0.5 if "variance" in name else array)
        module.load(arrays)
    return model


def sample(model: KerasModel, batch: int = 4, steps: int = 6, seed: int = 2) -> list[np.ndarray]:
    """Inputs for ``model``: normal floats; right-padded ids with lengths steps, steps - 2, 1, 0 ..."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in zip(model.input_shapes, model.input_dtypes, strict=True):
        sizes = [batch if i == 0 else (steps if s is None else s) for i, s in enumerate(shape)]
        if dtype.startswith("int"):
            ids = rng.integers(1, 9, sizes).astype(np.int32)
            for row, length in enumerate([sizes[1], sizes[1] - 2, 1, 0][:batch]):
                ids[row, length:] = 0
            out.append(ids)
        else:
            out.append(rng.normal(size=sizes).astype(np.float32))
    return out


def check(model: KerasModel, opset: int | None = None, **sizes: int) -> Any:
    exported = export_model_onnx(model_program(model), opset=opset)
    onnx.checker.check_model(exported, full_check=True)
    inputs = sample(model, **sizes)
    assert_close(run_onnx(exported, inputs), run_torch(model, inputs))
    return exported


LSTM = {"units": 3, "return_sequences": True}


@pytest.mark.parametrize("keras2", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"go_backwards": True},
        {"zero_output_for_mask": True},
        {"return_sequences": False},
        {"return_sequences": False, "go_backwards": True},
        {"activation": "relu", "recurrent_activation": "hard_sigmoid", "use_bias": False},
        {"activation": None, "recurrent_activation": "tanh"},
        {"activation": "elu", "recurrent_activation": "softsign"},
        {"activation": "softplus", "recurrent_activation": "leaky_relu"},
    ],
)
def test_lstm_options_with_an_ids_mask(options: dict[str, Any], keras2: bool) -> None:
    if keras2 and "zero_output_for_mask" in options:
        pytest.skip("a Keras 3 argument")
    model = build(
        [
            *_inputs(ids=[None, None]),
            _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=4, mask_zero=True),
            _layer("lstm", "LSTM", ["embedding"], **{**LSTM, **options}),
            _layer("dense", "Dense", ["lstm"], units=2),
        ],
        ["dense"],
        keras2,
    )
    check(model)


@pytest.mark.parametrize("masked", [False, True])
def test_return_state_and_initial_state(masked: bool) -> None:
    states = [["encoder", 0, 1, {}], ["encoder", 0, 2, {}]]
    model = build(
        [
            *_inputs(ids=[None, None], x=[None, 5, 3]),
            _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=3, mask_zero=masked),
            _layer("encoder", "LSTM", ["x"], units=4, return_state=True),
            _layer(
                "decoder", "LSTM", ["embedding", *states], units=4, return_sequences=True, return_state=True
            ),
            _layer("back", "LSTM", ["embedding", *states], units=4, go_backwards=True),
        ],
        ["decoder", "back"],
        keras2=True,
    )
    exported = check(model)
    assert len(exported.graph.output) == 2


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_merge_modes(merge_mode: str | None, return_sequences: bool) -> None:
    inner = {
        "class_name": "LSTM",
        "config": {"name": "lstm", "units": 3, "return_sequences": return_sequences},
    }
    outputs = ["bidirectional"] if merge_mode is not None else []
    layers = [
        *_inputs(ids=[None, None]),
        _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=4, mask_zero=True),
        _layer("bidirectional", "Bidirectional", ["embedding"], layer=inner, merge_mode=merge_mode),
    ]
    if merge_mode is None:
        layers.append(_layer("add", "Add", [["bidirectional", 0, 0, {}], ["bidirectional", 0, 1, {}]]))
        outputs = ["add"]
    check(build(layers, outputs))


def test_bidirectional_return_state_and_a_different_backward_layer() -> None:
    forward = {"class_name": "LSTM", "config": {"name": "f", "units": 3, "return_state": True}}
    backward = {
        "class_name": "LSTM",
        "config": {"name": "b", "units": 3, "go_backwards": True, "return_state": True, "activation": "relu"},
    }
    model = build(
        [
            *_inputs(ids=[None, None]),
            _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=4, mask_zero=True),
            _layer("bi", "Bidirectional", ["embedding"], layer=forward, backward_layer=backward),
            _layer("concatenate", "Concatenate", [["bi", 0, i, {}] for i in range(5)]),
        ],
        ["concatenate"],
    )
    check(model)


@pytest.mark.parametrize("keras2", [False, True])
def test_merges_and_concatenate_with_masks_feed_an_lstm(keras2: bool) -> None:
    embed = {"input_dim": 9, "output_dim": 3, "mask_zero": True}
    merges = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]
    layers = [
        *_inputs(ids=[None, 6], ids_2=[None, 6], x=[None, 6, 3]),
        _layer("e1", "Embedding", ["ids"], **embed),
        _layer("e2", "Embedding", ["ids_2"], **embed),
    ]
    for merge in merges:
        layers.append(_layer(merge.lower(), merge, ["e1", "e2"]))
    layers.append(_layer("with_plain", "Multiply", ["e1", "x"]))
    layers.append(_layer("concatenate", "Concatenate", [m.lower() for m in merges] + ["with_plain"]))
    layers.append(_layer("lstm", "LSTM", ["concatenate"], units=3, return_sequences=True))
    layers.append(_layer("pooled", "GlobalAveragePooling1D", ["lstm"]))
    check(build(layers, ["pooled", "maximum", "multiply"], keras2), batch=4)


@pytest.mark.parametrize("keras2", [False, True])
@pytest.mark.parametrize("with_lstm", [False, True])
def test_concatenate_along_time_gives_a_mask_an_lstm_cannot_take(with_lstm: bool, keras2: bool) -> None:
    embed = {"input_dim": 9, "output_dim": 3, "mask_zero": True}
    layers = [
        *_inputs(ids=[None, 6], ids_2=[None, 6]),
        _layer("e1", "Embedding", ["ids"], **embed),
        _layer("e2", "Embedding", ["ids_2"], **embed),
        _layer("concatenate", "Concatenate", ["e1", "e2"], axis=1),
        _layer("pooled", "GlobalAveragePooling1D", ["concatenate"]),
    ]
    if not with_lstm:
        check(build(layers, ["pooled"], keras2))
        return
    model = build([*layers, _layer("lstm", "LSTM", ["concatenate"], units=3)], ["pooled", "lstm"], keras2)
    with pytest.raises(ConversionError, match=r"LSTM 'lstm': its mask can have gaps .*along the time axis"):
        export_model_onnx(model_program(model))


@pytest.mark.parametrize("keras2", [False, True])
def test_masking_is_exported_where_no_lstm_needs_its_mask(keras2: bool) -> None:
    model = build(
        [
            *_inputs(x=[None, 6, 3]),
            _layer("masking", "Masking", ["x"], mask_value=0.0),
            _layer("dense", "Dense", ["masking"], units=2),
            _layer("pooled", "GlobalAveragePooling1D", ["dense"]),
        ],
        ["pooled"],
        keras2,
    )
    exported = export_model_onnx(model_program(model))
    inputs = sample(model)
    inputs[0][:, 2] = 0.0
    assert_close(run_onnx(exported, inputs), run_torch(model, inputs))


@pytest.mark.parametrize("keras2", [False, True])
@pytest.mark.parametrize("steps", [7, 8])
def test_convolution_and_pooling(keras2: bool, steps: int) -> None:
    conv = {"filters": 4, "kernel_size": 3}
    model = build(
        [
            *_inputs(x=[None, None, 4], y=[None, 4, None]),
            _layer("same", "Conv1D", ["x"], **conv, padding="same", strides=2, activation="relu"),
            _layer("causal", "Conv1D", ["x"], **conv, padding="causal", dilation_rate=2, use_bias=False),
            _layer(
                "grouped", "Conv1D", ["y"], filters=4, kernel_size=2, groups=2, data_format="channels_first"
            ),
            _layer("max", "MaxPooling1D", ["causal"], pool_size=3, strides=2, padding="same"),
            _layer("avg", "AveragePooling1D", ["causal"], pool_size=2, padding="same"),
            _layer("avg_valid", "AveragePooling1D", ["same"], pool_size=2),
            _layer("gmax", "GlobalMaxPooling1D", ["grouped"], data_format="channels_first", keepdims=True),
            _layer("gavg", "GlobalAveragePooling1D", ["max"]),
            _layer("flat", "Flatten", ["gmax"]),
        ],
        ["gavg", "avg", "avg_valid", "flat"],
        keras2,
    )
    check(model, steps=steps)


@pytest.mark.parametrize("keras2", [False, True])
def test_attention_variants_with_masks(keras2: bool) -> None:
    embed = {"input_dim": 9, "output_dim": 4, "mask_zero": True}
    causal = {"use_causal_mask": True, "return_attention_scores": True}
    layers = [
        *_inputs(ids=[None, None], ids_2=[None, None]),
        _layer("q", "Embedding", ["ids"], **embed),
        _layer("v", "Embedding", ["ids_2"], **embed),
        _layer("dot", "Attention", ["q", "v"], use_scale=True),
        _layer("additive", "AdditiveAttention", ["q", "v", "v"]),
        _layer("normalized", "Dot", ["q", "v"], axes=2, normalize=True),
    ]
    outputs = ["dot", "additive", "normalized"]
    if not keras2:
        layers.append(_layer("concat", "Attention", ["q", "v"], score_mode="concat", use_scale=True))
        layers.append(_layer("causal", "Attention", [["q", 0, 0, causal], "v"]))
        outputs += ["concat", "causal"]
    model = build(layers, outputs, keras2)
    exported = check(model)
    if not keras2:
        assert len(exported.graph.output) == 5
        scores = build(
            [*layers[:4], _layer("s", "Attention", [["q", 0, 0, causal], "v"])], [["s", 0, 0], ["s", 0, 1]]
        )
        check(scores)


@pytest.mark.parametrize("keras2", [False, True])
def test_normalization_and_shape_layers(keras2: bool) -> None:
    layers = [
        *_inputs(x=[None, 6, 4]),
        _layer("bn", "BatchNormalization", ["x"], axis=1, epsilon=0.01, center=False),
        _layer("ln", "LayerNormalization", ["bn"], axis=[1, 2], epsilon=0.001, scale=False),
        _layer("permute", "Permute", ["ln"], dims=[2, 1]),
        _layer("reshape", "Reshape", ["permute"], target_shape=[3, -1]),
        _layer("flatten", "Flatten", ["reshape"]),
        _layer("repeat", "RepeatVector", ["flatten"], n=2),
        _layer("dense", "Dense", ["repeat"], units=3, activation="softmax"),
    ]
    if not keras2:
        layers.append(_layer("rms", "LayerNormalization", ["x"], rms_scaling=True))
    model = build(layers, ["dense"] + ([] if keras2 else ["rms"]), keras2)
    check(model, opset=18)
    check(model, opset=13)


def test_time_distributed_layers() -> None:
    inner_lstm = {"class_name": "LSTM", "config": {"name": "inner", "units": 2}}
    inner_bn = {"class_name": "BatchNormalization", "config": {"name": "inner_bn"}}
    inner_dense = {"class_name": "Dense", "config": {"name": "inner_dense", "units": 3}}
    model = build(
        [
            *_inputs(x=[None, 3, 5, 4], ids=[None, 5]),
            _layer("per_sequence", "TimeDistributed", ["x"], layer=inner_lstm),
            _layer("per_step", "TimeDistributed", ["per_sequence"], layer=inner_bn),
            _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=4, mask_zero=True),
            _layer("tagged", "TimeDistributed", ["embedding"], layer=inner_dense),
            _layer("lstm", "LSTM", ["tagged"], units=2),
        ],
        ["per_step", "lstm"],
    )
    check(model)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_dense_activation(name: str) -> None:
    model = build(
        [*_inputs(x=[None, 6, 4]), _layer("dense", "Dense", ["x"], units=4, activation=name)], ["dense"]
    )
    check(model)


def test_nested_models_and_shared_layers_keep_their_weights_once() -> None:
    model = load_model(FIXTURES / "k3_nested.keras")
    names = [i.name for i in export_model_onnx(model_program(model)).graph.initializer]
    assert "sequential.lstm.cell.W" in names and "lstm_1.cell.W" in names
    shared = export_model_onnx(model_program(load_model(FIXTURES / "k3_shared.keras")))
    assert [i.name for i in shared.graph.initializer].count("lstm.cell.W") == 1
    assert [n.op_type for n in shared.graph.node].count("LSTM") == 2


# -- refusals ---------------------------------------------------------------------------------------------


def _refused(layers: list[dict[str, Any]], outputs: list[str], pattern: str, keras2: bool = False) -> None:
    model = build(layers, outputs, keras2)
    with pytest.raises(ConversionError, match=pattern):
        export_model_onnx(model_program(model))


def test_an_activation_onnx_lacks_is_refused_by_name() -> None:
    dense = _layer("dense", "Dense", ["x"], units=4, activation="sparsemax")
    _refused(
        [*_inputs(x=[None, 6, 4]), dense], ["dense"], r"Dense 'dense': activation 'sparsemax' has no ONNX"
    )
    lstm = _layer("lstm", "LSTM", ["x"], units=3, activation="selu")
    _refused([*_inputs(x=[None, 6, 4]), lstm], ["lstm"], r"LSTM 'lstm': activation='selu' has no counterpart")


def test_a_stateful_lstm_is_refused() -> None:
    lstm = _layer("lstm", "LSTM", ["x"], units=3, stateful=True)
    _refused([*_inputs(x=[2, 6, 4]), lstm], ["lstm"], r"LSTM 'lstm': stateful=True")


def test_a_custom_layer_is_refused_by_class_and_name() -> None:
    config = {
        "class_name": "Model",
        "config": {
            "name": "custom",
            "layers": [*_inputs(x=[None, 6, 4]), _layer("mine", "MyLayer", ["x"])],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["mine", 0, 0]],
        },
    }
    model = build_model(config, False, {"MyLayer": lambda config, weights: torch.nn.Identity()})
    with pytest.raises(
        ConversionError, match=r"MyLayer 'mine': Keras layer class 'MyLayer' has no ONNX export"
    ):
        export_model_onnx(model_program(model))


def _tensor(name: str, index: int = 0) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, index]}}


def _operation(name: str, class_name: str, *args: Any) -> dict[str, Any]:
    """A Keras 3 operation entry (``keras.ops.not_equal(ids, 0)`` ...)."""
    node = {"args": [_tensor(a) if isinstance(a, str) else a for a in args], "kwargs": {}}
    module = "keras.src.ops.numpy"
    return {
        "module": module,
        "class_name": class_name,
        "name": name,
        "config": {"name": name},
        "inbound_nodes": [node],
    }


@pytest.mark.parametrize("negated", [False, True])
def test_keras3_recorded_mask_operations(negated: bool) -> None:
    mask = "logical_not" if negated else "not_equal"
    lstm = _layer("lstm", "LSTM", units=3, return_sequences=True)
    lstm["inbound_nodes"] = [{"args": [_tensor("embedding")], "kwargs": {"mask": _tensor(mask)}}]
    layers = [
        *_inputs(ids=[None, None]),
        _layer("embedding", "Embedding", ["ids"], input_dim=9, output_dim=4),
        _operation("not_equal", "NotEqual", "ids", 0),
        _operation("logical_not", "LogicalNot", "not_equal"),
        lstm,
    ]
    model = build(layers, ["lstm"])
    if negated:
        with pytest.raises(ConversionError, match=r"LSTM 'lstm': its mask can have gaps .*LogicalNot"):
            export_model_onnx(model_program(model))
    else:
        check(model)
