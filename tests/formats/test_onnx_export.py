"""ONNX export: the standard LSTM operator, checked with onnxruntime against the engine."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import unilstm
from unilstm import export_onnx
from unilstm.formats.layout import to_onnx_gates
from unilstm.formats.onnx_export import OnnxExportError, build_graph, run_onnx

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOL = 2e-6
ACTIVATIONS = [
    ("tanh", "sigmoid"),
    ("relu", "hard_sigmoid"),
    (None, "hard_sigmoid_keras2"),
    ("elu", "softsign"),
    ("softplus", "sigmoid"),
    ("tanh", "leaky_relu"),
    ("linear", "sigmoid"),
]


def _engine(layer, x, lengths, state):
    with torch.no_grad():
        out, (h, c) = layer(x, state, lengths=lengths)
    return out.numpy(), h.numpy(), c.numpy()


def _max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


GRID = list(
    itertools.product(
        [1, 2],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        [False, True],  # go_backwards
        ["zero", "previous"],  # masked_output
        [False, True],  # lengths
        [False, True],  # initial states
    )
)


@pytest.mark.parametrize("layers,bi,batch_first,go_backwards,masked,lengths,states", GRID)
def test_structure_matches_engine(layers, bi, batch_first, go_backwards, masked, lengths, states, tmp_path):
    torch.manual_seed(hash((layers, bi, batch_first, go_backwards, masked, lengths, states)) % 1000)
    layer = unilstm.LSTM(
        5,
        6,
        layers,
        bidirectional=bi,
        batch_first=batch_first,
        go_backwards=go_backwards,
        masked_output=masked,
    ).eval()
    steps, batch, d = 7, 4, 2 if bi else 1
    x = torch.randn(batch, steps, 5) if batch_first else torch.randn(steps, batch, 5)
    ln = torch.tensor([7, 3, 0, 1]) if lengths else None
    state = (torch.randn(layers * d, batch, 6), torch.randn(layers * d, batch, 6)) if states else None
    path = export_onnx(layer, tmp_path / "m.onnx", lengths=lengths, initial_states=states)
    got = run_onnx(path, x, lengths=ln, state=state)
    assert _max_diff(got, _engine(layer, x, ln, state)) < TOL


@pytest.mark.parametrize("activation,recurrent_activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_activations_match_engine(activation, recurrent_activation, bias):
    torch.manual_seed(1)
    layer = unilstm.LSTM(
        4,
        5,
        2,
        bidirectional=True,
        bias=bias,
        activation=activation,
        recurrent_activation=recurrent_activation,
    ).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(0.5)  # keep unbounded activations away from overflow
    x = torch.randn(6, 3, 4)
    ln = torch.tensor([6, 2, 4])
    got = run_onnx(build_graph(layer, lengths=True), x, lengths=ln)
    assert _max_diff(got, _engine(layer, x, ln, None)) < TOL


def test_callables_that_are_known_functions_export():
    layer = unilstm.LSTM(3, 4, activation=torch.tanh, recurrent_activation=torch.sigmoid).eval()
    x = torch.randn(5, 2, 3)
    assert _max_diff(run_onnx(build_graph(layer), x), _engine(layer, x, None, None)) < TOL


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_keras_output_glue(merge_mode, return_sequences, go_backwards):
    """return_sequences=False gives each direction's last output in its processing order; merges apply."""
    torch.manual_seed(2)
    layer = unilstm.LSTM(
        3, 4, bidirectional=True, batch_first=True, go_backwards=go_backwards, masked_output="previous"
    ).eval()
    x = torch.randn(3, 6, 3)
    ln = torch.tensor([6, 2, 4])
    out, _, _ = run_onnx(
        build_graph(layer, lengths=True, return_sequences=return_sequences, merge_mode=merge_mode),
        x,
        lengths=ln,
    )
    with torch.no_grad():
        ref, _ = layer(x, lengths=ln)
    if not return_sequences:
        first, last = (0, -1) if not go_backwards else (-1, 0)
        ref = torch.cat([ref[:, last, :4], ref[:, first, 4:]], -1)
    fwd, bwd = ref[..., :4], ref[..., 4:]
    ref = {"concat": ref, "sum": fwd + bwd, "mul": fwd * bwd, "ave": (fwd + bwd) / 2}[merge_mode]
    assert np.abs(out - ref.numpy()).max() < TOL


def test_keras_front_door_layer_exports_with_its_conventions(tmp_path):
    keras = pytest.importorskip("unilstm.keras")
    layer = keras.Bidirectional(keras.LSTM(4, return_sequences=False), merge_mode="sum")
    layer.build((None, None, 3))
    path = export_onnx(layer, tmp_path / "k.onnx", lengths=True)
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out, _, _ = run_onnx(path, x, lengths=mask.sum(1))
    with torch.no_grad():
        ref = layer(x, mask=mask)
    assert np.abs(out - ref.numpy()).max() < TOL


def test_weights_use_onnx_gate_order_and_split_bias():
    onnx = pytest.importorskip("onnx")
    layer = unilstm.LSTM(3, 2)
    model = build_graph(layer)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    w, r, b = (inits[name] for name in node.input[1:4])
    assert np.array_equal(w[0], to_onnx_gates(layer.weight_ih_l0.detach().numpy()))
    assert np.array_equal(r[0], to_onnx_gates(layer.weight_hh_l0.detach().numpy()))
    expected_b = np.concatenate(
        [to_onnx_gates(layer.bias_ih_l0.detach().numpy()), to_onnx_gates(layer.bias_hh_l0.detach().numpy())]
    )
    assert np.array_equal(b[0], expected_b)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"proj_size": 2}, "proj_size=2"),
        ({"activation": "gelu"}, "activation='gelu'"),
        ({"recurrent_activation": "hard_tanh"}, "recurrent_activation='hard_tanh'"),
        ({"activation": lambda v: v * 2}, "callable '<lambda>'"),
    ],
)
def test_inexpressible_features_are_named(kwargs, needle):
    with pytest.raises(OnnxExportError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        build_graph(unilstm.LSTM(3, 4, **kwargs))


def test_other_refusals(tmp_path):
    with pytest.raises(OnnxExportError, match="not built"):
        build_graph(unilstm.LSTM(None, 4))
    with pytest.raises(OnnxExportError, match="opset"):
        build_graph(unilstm.LSTM(3, 4), opset=9)
    with pytest.raises(OnnxExportError, match="merge_mode='sum' needs a bidirectional"):
        build_graph(unilstm.LSTM(3, 4), merge_mode="sum")
    with pytest.raises(TypeError, match="front-door"):
        export_onnx(object(), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_dropout_is_a_training_feature_and_is_not_exported():
    layer = unilstm.LSTM(3, 4, 2, dropout=0.3, input_dropout=0.2, recurrent_dropout=0.4).eval()
    x = torch.randn(5, 2, 3)
    assert _max_diff(run_onnx(build_graph(layer), x), _engine(layer, x, None, None)) < TOL
