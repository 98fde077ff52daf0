"""ONNX import: LSTM nodes read back into one canonical LSTM, checked against ONNX's own LSTM node test cases,
torch.onnx exports of torch.nn.LSTM, tf2onnx conversions of Keras models (committed fixtures), onnxruntime on
crafted graphs for every attribute, and hostile files."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest
import torch

import unilstm
from unilstm.activations import ParametricActivation
from unilstm.convert import convert, reading
from unilstm.formats.onnx_import import OnnxFileError, read_onnx_lstms

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "onnx"
TOL = 2e-6


# -- running a loaded layer the way ONNX writes its outputs --------------------------------------------------


def onnx_outputs(layer, x, *, layout=0, lengths=None, initial=None, reverse=False) -> dict[str, np.ndarray]:
    """The loaded layer's results in the ONNX node's shapes: Y (T, D, B, H) (layout 1: (B, T, D, H)), Y_h,
    Y_c (D, B, H) (layout 1: (B, D, H)); ``initial`` in the node's layout too."""
    x = torch.as_tensor(x)
    state = None
    if initial is not None:
        state = tuple(torch.as_tensor(s) for s in initial)
        if layout == 1:
            state = tuple(s.transpose(0, 1).contiguous() for s in state)
    with torch.no_grad():
        out, (h, c) = layer(x, state, lengths=None if lengths is None else torch.as_tensor(lengths).long())
    d = layer.spec.num_directions
    if layout == 1:
        y = out.reshape(out.shape[0], out.shape[1], d, -1)
        y = y.flip(1) if reverse else y
        return {"Y": y.numpy(), "Y_h": h.transpose(0, 1).numpy(), "Y_c": c.transpose(0, 1).numpy()}
    y = out.reshape(out.shape[0], out.shape[1], d, -1).permute(0, 2, 1, 3)
    y = y.flip(0) if reverse else y
    return {"Y": y.numpy(), "Y_h": h.numpy(), "Y_c": c.numpy()}


def single_node_model(node_inputs, arrays, attrs, outputs=("Y", "Y_h", "Y_c"), graph_inputs=(), opset=17):
    """One LSTM node: ``arrays`` (name -> array) become initializers except those in ``graph_inputs``."""
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items() if n not in graph_inputs]
    infos = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(arrays[n].dtype), None)
        for n in graph_inputs
    ]
    node = helper.make_node("LSTM", list(node_inputs), [o if o else "" for o in outputs], **attrs)
    out_infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    graph = helper.make_graph([node], "g", infos, out_infos, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def load_model(model, path) -> unilstm.LSTM:
    path.write_bytes(model.SerializeToString())
    [layer] = unilstm.load(path)
    assert isinstance(layer, unilstm.LSTM)
    return layer


def ort_run(model, feed) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def max_diff(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
    assert theirs
    return max(float(np.abs(ours[k] - v).max()) for k, v in theirs.items())


# -- (a) ONNX's own LSTM node test cases ------------------------------------------------------------------


def onnx_node_cases() -> list[tuple[str, object, list, list]]:
    """Every case ``onnx.backend.test.case.node.lstm`` defines (name, node, inputs, expected outputs)."""
    from onnx.backend.test.case.node import lstm as cases

    found = []
    original = cases.expect
    cases.expect = lambda node, inputs, outputs, name, **kw: found.append((name, node, inputs, outputs))
    try:
        for attribute in sorted(vars(cases.LSTM)):
            if attribute.startswith("export"):
                getattr(cases.LSTM, attribute)()
    finally:
        cases.expect = original
    return found


ONNX_CASES = onnx_node_cases()


def test_onnx_defines_the_six_cases_we_read():
    assert sorted(name for name, *_ in ONNX_CASES) == [
        "test_lstm_batchwise",
        "test_lstm_bidirectional",
        "test_lstm_defaults",
        "test_lstm_reverse",
        "test_lstm_with_initial_bias",
        "test_lstm_with_peepholes",
    ]


@pytest.mark.parametrize("case", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_node_cases_with_weights_as_initializers(case, tmp_path):
    name, node, inputs, expected = case
    names = [n for n in node.input if n]
    arrays = dict(zip(names, inputs, strict=True))
    runtime = [n for n in ("X", "sequence_lens", "initial_h", "initial_c") if n in arrays]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    model = single_node_model(node.input, arrays, attrs, list(node.output), runtime)
    layer = load_model(model, tmp_path / f"{name}.onnx")
    layout = attrs.get("layout", 0)
    assert layer.spec.batch_first == (layout == 1)
    assert layer.spec.peepholes == ("P" in arrays)
    ours = onnx_outputs(
        layer,
        arrays["X"],
        layout=layout,
        lengths=arrays.get("sequence_lens"),
        initial=(arrays["initial_h"], arrays["initial_c"]) if "initial_h" in arrays else None,
        reverse=attrs.get("direction") == "reverse",
    )
    labels = {"Y": "Y", "Y_h": "Y_h", "Y_c": "Y_c"}
    present = [labels[o] for o in node.output if o]
    assert max_diff(ours, dict(zip(present, expected, strict=True))) < TOL


# -- (b) torch.onnx exports of torch.nn.LSTM ---------------------------------------------------------------

TORCH_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True, bias=False),
    dict(num_layers=2, bidirectional=True, batch_first=True, state=True),
]


def torch_export(kwargs, path):
    kwargs = dict(kwargs)
    state = kwargs.pop("state", False)
    torch.manual_seed(len(path.name))
    lstm = torch.nn.LSTM(3, 4, **kwargs).eval()
    x = torch.randn(2, 5, 3) if kwargs.get("batch_first") else torch.randn(5, 2, 3)
    rows = lstm.num_layers * (2 if lstm.bidirectional else 1)
    h0, c0 = torch.randn(rows, 2, 4), torch.randn(rows, 2, 4)
    args = (x, (h0, c0)) if state else (x,)
    names = ["x", "h0", "c0"] if state else ["x"]
    axes = {"x": {0: "a", 1: "b"}, **({"h0": {1: "a"}, "c0": {1: "a"}} if state else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            lstm, args, path, dynamo=False, input_names=names, output_names=["y", "h", "c"], dynamic_axes=axes
        )
    return lstm, args


@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_torch_onnx_exports_load_as_one_stack(kwargs, tmp_path):
    path = tmp_path / "torch.onnx"
    lstm, args = torch_export(kwargs, path)
    [layer] = unilstm.load(path)
    assert type(layer) is unilstm.LSTM
    spec = layer.spec
    assert (spec.num_layers, spec.bidirectional, spec.batch_first, spec.bias) == (
        lstm.num_layers,
        lstm.bidirectional,
        lstm.batch_first,
        lstm.bias,
    )
    assert spec.is_standard_cell
    with torch.no_grad():
        ours = layer(*args)
        theirs = lstm(*args)
    tensors = [args[0], *args[1]] if len(args) > 1 else [args[0]]
    runtime = ort_run(
        onnx.load(path), {n: t.numpy() for n, t in zip(["x", "h0", "c0"], tensors, strict=False)}
    )
    flat_ours = [ours[0], *ours[1]]
    for a, b, r in zip(
        flat_ours, [theirs[0], *theirs[1]], [runtime["y"], runtime["h"], runtime["c"]], strict=True
    ):
        assert float((a - b).abs().max()) < TOL
        assert float(np.abs(a.numpy() - r).max()) < TOL


def test_a_torch_export_converts_to_every_format(tmp_path):
    pytest.importorskip("h5py")
    path = tmp_path / "torch.onnx"
    torch_export(dict(num_layers=2, bidirectional=True), path)
    for target in ("t.pt", "t.safetensors", "t.ckpt", "t.keras"):
        report = convert(path, tmp_path / target)
        assert report.verified and report.max_difference < 1e-5, (target, report.max_difference)
    [back] = unilstm.load(tmp_path / "t.pt")
    assert back.spec.num_layers == 2 and back.spec.bidirectional


# -- tf2onnx conversions of Keras models (tools/fixtures/make_onnx_fixtures.py) -----------------------------


@pytest.mark.parametrize("name", ["lstm", "stack2", "bidir2"])
def test_tf2onnx_keras_models_match_keras(name):
    data = np.load(FIXTURES / f"tf2onnx_{name}.npz")
    [layer] = unilstm.load(FIXTURES / f"tf2onnx_{name}.onnx")
    assert layer.spec.batch_first
    assert layer.spec.num_layers == (1 if name == "lstm" else 2)
    with torch.no_grad():
        out, _ = layer(torch.from_numpy(data["x"]))
    assert float(np.abs(out.numpy() - data["out"]).max()) < TOL


# -- (c) crafted single nodes, every attribute, against onnxruntime -----------------------------------------

T, B, F, H = 5, 3, 4, 3


def crafted(seed, *, directions=1, bias=True, peepholes=False, lengths=None, initial=False, scale=0.5):
    rng = np.random.default_rng(seed)
    arrays = {
        "X": rng.standard_normal((T, B, F)).astype(np.float32),
        "W": (scale * rng.standard_normal((directions, 4 * H, F))).astype(np.float32),
        "R": (scale * rng.standard_normal((directions, 4 * H, H))).astype(np.float32),
    }
    names = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        arrays["B"] = (scale * rng.standard_normal((directions, 8 * H))).astype(np.float32)
        names[3] = "B"
    if lengths is not None:
        arrays["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
        names[4] = "sequence_lens"
    if initial:
        arrays["initial_h"] = rng.standard_normal((directions, B, H)).astype(np.float32)
        arrays["initial_c"] = rng.standard_normal((directions, B, H)).astype(np.float32)
        names[5:7] = ["initial_h", "initial_c"]
    if peepholes:
        arrays["P"] = rng.standard_normal((directions, 3 * H)).astype(np.float32)
        names[7] = "P"
    while names[-1] == "":
        names.pop()
    return names, arrays


def check_against_ort(tmp_path, attrs, **case) -> unilstm.LSTM:
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    names, arrays = crafted(7, directions=directions, **case)
    runtime = [n for n in ("X", "sequence_lens", "initial_h", "initial_c") if n in arrays]
    attrs = {"hidden_size": H, **attrs}
    model = single_node_model(names, arrays, attrs, graph_inputs=runtime)
    expected = ort_run(model, {n: arrays[n] for n in runtime})
    layer = load_model(model, tmp_path / "crafted.onnx")
    ours = onnx_outputs(
        layer,
        arrays["X"],
        lengths=arrays.get("sequence_lens"),
        initial=(arrays["initial_h"], arrays["initial_c"]) if "initial_h" in arrays else None,
        reverse=attrs.get("direction") == "reverse",
    )
    assert max_diff(ours, expected) < 1e-6  # measured: 2.4e-7 at most (float32; ORT has no float64 LSTM)
    return layer


ACTIVATION_CASES = [
    (["Sigmoid", "Tanh", "Tanh"], {}),
    (["HardSigmoid", "Relu", "Softsign"], {"activation_alpha": [0.3], "activation_beta": [0.4]}),
    (["Sigmoid", "Affine", "Tanh"], {"activation_alpha": [0.7], "activation_beta": [0.1]}),
    (["Sigmoid", "LeakyRelu", "Elu"], {"activation_alpha": [0.05, 0.8]}),
    (["Sigmoid", "ThresholdedRelu", "Softplus"], {"activation_alpha": [0.2]}),
    (
        ["Sigmoid", "ScaledTanh", "ScaledTanh"],
        {"activation_alpha": [1.5, 0.5], "activation_beta": [0.7, 2.0]},
    ),
    (["HardSigmoid", "Elu", "LeakyRelu"], {}),  # defaults onnxruntime shares with ONNX
    (["sigmoid", "tanh", "relu"], {}),  # onnxruntime compares names in lower case
]


@pytest.mark.parametrize(
    "names,numbers", ACTIVATION_CASES, ids=lambda v: "-".join(v) if isinstance(v, list) else ""
)
def test_every_activation_with_alpha_and_beta_matches_onnxruntime(names, numbers, tmp_path):
    layer = check_against_ort(tmp_path, {"activations": names, **numbers}, peepholes=True)
    spec = layer.spec
    if names[1] == "Affine":
        assert spec.activation == ParametricActivation(
            "affine", float(np.float32(0.7)), float(np.float32(0.1))
        )
    if names[2] != names[1]:
        assert "output_activation" in spec.cell_variants


def test_the_exporters_parametric_forms_come_back_as_names(tmp_path):
    layer = check_against_ort(
        tmp_path,
        {
            "activations": ["HardSigmoid", "Affine", "LeakyRelu"],
            "activation_alpha": [0.2, 1.0, 0.2],
            "activation_beta": [0.5, 0.0],
        },
    )
    assert (layer.spec.recurrent_activation, layer.spec.activation, layer.spec.output_activation) == (
        "hard_sigmoid_keras2",
        "linear",
        "leaky_relu",
    )


ATTRIBUTE_CASES = {
    "peepholes": ({}, dict(peepholes=True)),
    "clip": ({"clip": 0.4}, dict(peepholes=True, scale=2.0)),
    "input_forget": ({"input_forget": 1}, dict(peepholes=True)),
    "no_bias": ({}, dict(bias=False)),
    "lengths": ({}, dict(lengths=[5, 2, 1])),
    "initial_states": ({}, dict(initial=True)),
    "reverse": ({"direction": "reverse"}, dict(peepholes=True)),
    "reverse_lengths_states": ({"direction": "reverse"}, dict(lengths=[4, 5, 1], initial=True)),
    "bidirectional": ({"direction": "bidirectional"}, dict(peepholes=True, lengths=[5, 3, 2], initial=True)),
    "everything": (
        {
            "direction": "bidirectional",
            "clip": 0.6,
            "input_forget": 1,
            "activations": ["HardSigmoid", "Softsign", "Elu"] * 2,
            "activation_alpha": [0.25, 0.9] * 2,
            "activation_beta": [0.45] * 2,
        },
        dict(peepholes=True, lengths=[5, 4, 1], initial=True, scale=1.5),
    ),
}


@pytest.mark.parametrize("name", list(ATTRIBUTE_CASES))
def test_every_attribute_and_input_matches_onnxruntime(name, tmp_path):
    attrs, case = ATTRIBUTE_CASES[name]
    layer = check_against_ort(tmp_path, attrs, **case)
    spec = layer.spec
    assert spec.gate_clip == (None if "clip" not in attrs else float(np.float32(attrs["clip"])))
    assert spec.coupled_gates == bool(attrs.get("input_forget"))
    assert spec.go_backwards == (attrs.get("direction") == "reverse")
    assert spec.bias == case.get("bias", True) and spec.peepholes == case.get("peepholes", False)


def test_layout_1_equals_the_layout_0_node_in_onnxruntime(tmp_path):
    names, arrays = crafted(3, directions=2, peepholes=True, lengths=[5, 2, 4], initial=True)
    runtime = ["X", "sequence_lens", "initial_h", "initial_c"]
    attrs = {"hidden_size": H, "direction": "bidirectional", "clip": 1.0}
    expected = ort_run(
        single_node_model(names, arrays, attrs, graph_inputs=runtime), {n: arrays[n] for n in runtime}
    )
    batchwise = dict(
        arrays,
        X=arrays["X"].transpose(1, 0, 2).copy(),
        initial_h=arrays["initial_h"].transpose(1, 0, 2).copy(),
        initial_c=arrays["initial_c"].transpose(1, 0, 2).copy(),
    )
    layer = load_model(
        single_node_model(names, batchwise, {**attrs, "layout": 1}, graph_inputs=runtime),
        tmp_path / "layout1.onnx",
    )
    assert layer.spec.batch_first
    ours = onnx_outputs(
        layer,
        batchwise["X"],
        layout=1,
        lengths=arrays["sequence_lens"],
        initial=(batchwise["initial_h"], batchwise["initial_c"]),
    )
    assert (
        max_diff(
            ours,
            {
                "Y": expected["Y"].transpose(2, 0, 1, 3),
                "Y_h": expected["Y_h"].transpose(1, 0, 2),
                "Y_c": expected["Y_c"].transpose(1, 0, 2),
            },
        )
        < 1e-6
    )


def test_length_zero_with_initial_states_is_the_documented_difference(tmp_path):
    names, arrays = crafted(5, lengths=[5, 0, 2], initial=True)
    runtime = ["X", "sequence_lens", "initial_h", "initial_c"]
    model = single_node_model(names, arrays, {"hidden_size": H}, graph_inputs=runtime)
    expected = ort_run(model, {n: arrays[n] for n in runtime})
    layer = load_model(model, tmp_path / "zero.onnx")
    ours = onnx_outputs(
        layer,
        arrays["X"],
        lengths=arrays["sequence_lens"],
        initial=(arrays["initial_h"], arrays["initial_c"]),
    )
    assert np.all(expected["Y_h"][:, 1] == 0)  # onnxruntime: zeros
    assert np.allclose(ours["Y_h"][:, 1], arrays["initial_h"][:, 1])  # the layer: the initial state
    keep = [0, 2]
    assert np.abs(ours["Y_h"][:, keep] - expected["Y_h"][:, keep]).max() < 1e-6
    assert np.abs(ours["Y"] - expected["Y"]).max() < 1e-6
    assert any("length 0" in note for note in reading.read_units(tmp_path / "zero.onnx")[0].notes)


# -- unilstm's own exports come back ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            num_layers=2,
            bidirectional=True,
            batch_first=True,
            activation="relu",
            recurrent_activation="hard_sigmoid",
        ),
        dict(num_layers=2, go_backwards=True),
        dict(num_layers=1, activation=None, recurrent_activation="hard_sigmoid_keras2"),
    ],
    ids=["bidir-relu", "go_backwards", "linear"],
)
def test_unilstm_exports_round_trip(kwargs, tmp_path):
    torch.manual_seed(3)
    layer = unilstm.LSTM(4, 5, **kwargs).eval()
    path = unilstm.export_onnx(layer, tmp_path / "own.onnx", lengths=True)
    [back] = unilstm.load(path)
    expected = {**kwargs, "activation": kwargs.get("activation", "tanh")}
    for key, value in expected.items():
        assert getattr(back.spec, key) == (value if value is not None else "linear"), key
    x = torch.randn(2, 6, 4) if layer.spec.batch_first else torch.randn(6, 2, 4)
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        a, (ha, ca) = layer(x, lengths=lengths)
        b, (hb, cb) = back(x, lengths=lengths)
    assert max(float((a - b).abs().max()), float((ha - hb).abs().max()), float((ca - cb).abs().max())) < 1e-6


def test_a_bare_reverse_node_notes_the_time_flip(tmp_path):
    names, arrays = crafted(9)
    model = single_node_model(names, arrays, {"hidden_size": H, "direction": "reverse"}, graph_inputs=["X"])
    path = tmp_path / "rev.onnx"
    path.write_bytes(model.SerializeToString())
    [stack] = read_onnx_lstms(path)
    assert stack.spec.go_backwards
    assert any("flipped in time" in note for note in stack.notes)


# -- (d) hostile files --------------------------------------------------------------------------------------


def plain_model():
    names, arrays = crafted(1, peepholes=True)
    return single_node_model(names, arrays, {"hidden_size": H}, graph_inputs=["X"])


def refused(tmp_path, model_or_bytes, match, **kwargs):
    path = tmp_path / "hostile.onnx"
    data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    path.write_bytes(data)
    with pytest.raises(OnnxFileError, match=match) as info:
        read_onnx_lstms(path, **kwargs)
    assert str(path) in str(info.value)
    return str(info.value)


def test_every_cut_of_a_file_is_refused(tmp_path):
    data = plain_model().SerializeToString()
    for cut in sorted({1, 7, len(data) // 3, len(data) // 2, len(data) - 40, len(data) - 3, len(data) - 1}):
        refused(tmp_path, data[:cut], ".")
    refused(tmp_path, b"\xff" * 64, "not an ONNX model")


def test_a_file_past_max_bytes_is_refused_before_reading(tmp_path):
    refused(tmp_path, plain_model(), "more than the limit", max_bytes=100)


def test_external_data_is_refused(tmp_path):
    model = plain_model()
    weights = next(t for t in model.graph.initializer if t.name == "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    refused(tmp_path, model, "initializer 'W': its data lies in an external file")


def test_inspect_never_opens_external_data(tmp_path):
    from unilstm.convert.inspection import inspect_file

    model = plain_model()
    weights = next(t for t in model.graph.initializer if t.name == "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "absent.bin"  # onnx.load would open it (and fail: it is absent)
    path = tmp_path / "external.onnx"
    path.write_bytes(model.SerializeToString())
    info = inspect_file(path)
    assert info["format"] == "onnx" and [layer["W"] for layer in info["layers"]] == [list(weights.dims)]


def test_unknown_operators_and_subgraphs_are_refused_by_name(tmp_path):
    model = plain_model()
    model.graph.node.append(helper.make_node("Relu", ["Y"], ["Z"], name="act"))
    refused(tmp_path, model, r"node 'act' \(Relu\): operator Relu is not read")
    model = plain_model()
    model.graph.node.append(helper.make_node("Gemm", ["Y", "W"], ["Z"], domain="com.microsoft"))
    refused(tmp_path, model, "operator com.microsoft::Gemm of another domain")


def test_wrong_initializer_shapes_and_dtypes_are_refused(tmp_path):
    model = plain_model()
    bias = next(t for t in model.graph.initializer if t.name == "B")
    bias.CopyFrom(numpy_helper.from_array(np.zeros((1, 4 * H), np.float32), "B"))
    refused(tmp_path, model, r"B \(initializer 'B'\) has dims \[1, 12\], expected \[1, 24\]")
    model = plain_model()
    recurrent = next(t for t in model.graph.initializer if t.name == "R")
    recurrent.CopyFrom(numpy_helper.from_array(np.zeros((1, H, 4 * H), np.float32), "R"))
    refused(tmp_path, model, r"hidden_size 3 but R \(initializer 'R'\) has dims \[1, 3, 12\]")
    model = plain_model()
    peepholes = next(t for t in model.graph.initializer if t.name == "P")
    peepholes.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(peepholes).astype(np.float64), "P"))
    refused(tmp_path, model, r"P \(initializer 'P'\) has dtype DOUBLE")
    model = plain_model()
    bias = next(t for t in model.graph.initializer if t.name == "B")
    bias.CopyFrom(numpy_helper.from_array(np.zeros((1, 8 * H), np.int32), "B"))
    refused(tmp_path, model, "has dtype INT32")


def test_huge_declared_dims_are_refused_without_allocating(tmp_path):
    model = plain_model()
    weights = next(t for t in model.graph.initializer if t.name == "W")
    weights.dims[:] = [1, 2**40, F]
    refused(tmp_path, model, r"initializer 'W': dims \[1, 1099511627776, 4\] declare .* more than the limit")
    model = plain_model()
    weights = next(t for t in model.graph.initializer if t.name == "W")
    weights.dims[:] = [1, 4 * H, F + 1]
    refused(tmp_path, model, "initializer 'W': holds 192 bytes where its dims")


GRAPH_REFUSALS = {
    "constant lengths": ("sequence_lens", r"sequence_lens is a constant .*\(path, constants=True\)"),
    "non-zero constant state": ("initial_h", r"initial_h \(non-zero\) is a constant .* constants=True"),
    "left-over alpha": ("alpha", "values more than the activations take"),
    "affine without alpha": ("affine", "defaults and onnxruntime's differ"),
    "directions differ": ("directions", "differ from the forward one's"),
    "unknown attribute": ("attribute", r"attributes \['weird'\]"),
    "a branch": ("branch", r"both read the Y of .* \(a branch\)"),
    "inner output": ("inner", "not the LSTM stack's output"),
}


def graph_case(kind):
    names, arrays = crafted(2, lengths=[5, 5, 5], initial=True)
    runtime = ["X", "sequence_lens", "initial_h", "initial_c"]
    if kind in ("branch", "inner"):
        names, arrays = crafted(2)
        runtime = ["X"]
    attrs = {"hidden_size": H}
    if kind == "sequence_lens":
        runtime.remove("sequence_lens")
    if kind == "initial_h":
        runtime.remove("initial_h")
    if kind == "alpha":
        attrs["activation_alpha"] = [0.5]
    if kind == "affine":
        attrs["activations"] = ["Sigmoid", "Affine", "Tanh"]
    if kind == "directions":
        names, arrays = crafted(2, directions=2)
        runtime = ["X"]
        attrs.update(
            direction="bidirectional", activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"]
        )
    if kind == "attribute":
        attrs["weird"] = 1
    model = single_node_model(names, arrays, attrs, graph_inputs=runtime)
    if kind in ("branch", "inner"):
        hidden = numpy_helper.from_array(np.zeros((1, 4 * H, H), np.float32), "R2")
        model.graph.initializer.append(hidden)
        model.graph.initializer.append(numpy_helper.from_array(np.asarray([1], np.int64), "axis1"))
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 4 * H, H), np.float32), "W2"))
        model.graph.node.append(helper.make_node("Squeeze", ["Y", "axis1"], ["seq"]))
        model.graph.node.append(helper.make_node("LSTM", ["seq", "W2", "R2"], ["Y2"], hidden_size=H))
        if kind == "branch":  # a third LSTM reads the first one's Y too
            model.graph.node.append(helper.make_node("LSTM", ["seq", "W2", "R2"], ["Y3"], hidden_size=H))
        model.graph.output.append(helper.make_tensor_value_info("Y2", TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("name", list(GRAPH_REFUSALS))
def test_graphs_that_are_not_one_expressible_stack_are_refused(name, tmp_path):
    kind, match = GRAPH_REFUSALS[name]
    refused(tmp_path, graph_case(kind), match)


def test_conversion_refusals_name_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(graph_case("sequence_lens").SerializeToString())
    with pytest.raises(OnnxFileError, match=str(path)):
        convert(path, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_seeded_fuzz_lets_only_onnx_file_errors_escape(tmp_path):
    """Bytes flipped, cut out and put in, and attributes, inputs and dims changed in real files: a read
    either gives a stack or refuses with OnnxFileError (never another exception)."""
    import random

    rng = random.Random(16)
    seeds = [plain_model(), onnx.load(FIXTURES / "tf2onnx_bidir2.onnx")]
    path = tmp_path / "fuzz.onnx"
    loaded = 0
    for _ in range(150):
        model = type(seeds[0])()
        model.CopyFrom(rng.choice(seeds))
        node = rng.choice(model.graph.node)
        if rng.random() < 0.5 and node.attribute:
            attribute = rng.choice(node.attribute)
            if attribute.type == onnx.AttributeProto.INT:
                attribute.i = rng.choice([-1, 0, 2, 2**40])
            elif attribute.type == onnx.AttributeProto.INTS and attribute.ints:
                attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice([-5, 3, 2**33])
            elif attribute.type == onnx.AttributeProto.STRINGS and attribute.strings:
                attribute.strings[0] = rng.choice([b"Affine", b"zz"])
        elif node.input:
            names = [n for other in model.graph.node for n in other.output] + [""]
            node.input[rng.randrange(len(node.input))] = rng.choice(names)
        data = bytearray(model.SerializeToString())
        for _ in range(rng.randint(0, 2)):
            at = rng.randrange(len(data))
            data[at : at + rng.randint(0, 3)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
        path.write_bytes(bytes(data))
        try:
            read_onnx_lstms(path)
            loaded += 1
        except OnnxFileError as error:
            assert str(path) in str(error)
    assert 0 < loaded < 150


def test_a_bidirectional_output_split_into_its_directions_is_described(tmp_path):
    names, arrays = crafted(4, directions=2)
    model = single_node_model(names, arrays, {"hidden_size": H, "direction": "bidirectional"}, ["Y"], ["X"])
    constants = {"zero": [0], "one": [1], "two": [2]}
    for name, values in constants.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    model.graph.output.pop()
    for half, (start, stop) in enumerate([("zero", "one"), ("one", "two")]):
        model.graph.node.append(helper.make_node("Slice", ["Y", start, stop, "one"], [f"part{half}"]))
        model.graph.node.append(helper.make_node("Squeeze", [f"part{half}", "one"], [f"half{half}"]))
        model.graph.output.append(helper.make_tensor_value_info(f"half{half}", TensorProto.FLOAT, None))
    path = tmp_path / "halves.onnx"
    path.write_bytes(model.SerializeToString())
    [stack] = read_onnx_lstms(path)
    assert stack.spec.bidirectional
    assert "graph output 'half1' = the backward half of the layer's output, with axes T, B, H" in stack.notes
    expected = ort_run(model, {"X": arrays["X"]})
    [layer] = unilstm.load(path)
    with torch.no_grad():
        out, _ = layer(torch.from_numpy(arrays["X"]))
    assert np.abs(out[..., H:].numpy() - expected["half1"]).max() < 1e-6


def test_weights_from_constant_nodes_load(tmp_path):
    model = plain_model()
    expected = ort_run(model, {"X": crafted(1, peepholes=True)[1]["X"]})
    for tensor in list(model.graph.initializer):
        model.graph.node.insert(0, helper.make_node("Constant", [], [tensor.name], value=tensor))
    del model.graph.initializer[:]
    layer = load_model(model, tmp_path / "constants.onnx")
    assert layer.spec.peepholes
    ours = onnx_outputs(layer, crafted(1, peepholes=True)[1]["X"])
    assert max_diff(ours, expected) < 1e-6


def test_functions_sparse_initializers_and_subgraphs_are_refused(tmp_path):
    model = plain_model()
    model.functions.append(onnx.FunctionProto(name="f", domain="custom"))
    refused(tmp_path, model, "defines functions")
    model = plain_model()
    values = numpy_helper.from_array(np.ones(2, np.float32), "S")
    indices = numpy_helper.from_array(np.asarray([0, 1], np.int64), "S_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    refused(tmp_path, model, "sparse initializer 'S'")
    model = plain_model()
    branch = helper.make_graph(
        [], "branch", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
    )
    model.graph.node.append(helper.make_node("If", ["cond"], ["Z"], then_branch=branch, else_branch=branch))
    refused(tmp_path, model, r"operator If is not read")


def test_a_layout_1_stack_equals_its_layout_0_twin_in_onnxruntime(tmp_path):
    """Two bidirectional nodes; between them Y (T, D, B, H) -> Transpose (0, 2, 1, 3) -> Reshape [0, 0, -1]
    with layout 0, and Y (B, T, D, H) -> Reshape [0, 0, -1] with layout 1; outputs Y and Y_h of both."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((T, B, F)).astype(np.float32)
    weights = {
        "W0": rng.standard_normal((2, 4 * H, F)),
        "R0": rng.standard_normal((2, 4 * H, H)),
        "W1": rng.standard_normal((2, 4 * H, 2 * H)),
        "R1": rng.standard_normal((2, 4 * H, H)),
        "B1": rng.standard_normal((2, 8 * H)),
        "shape": np.asarray([0, 0, -1]),
    }

    def model(layout):
        attrs = {"hidden_size": H, "direction": "bidirectional", "layout": layout}
        glue = [helper.make_node("Reshape", ["Y0", "shape"], ["seq"])]
        if layout == 0:
            glue.insert(0, helper.make_node("Transpose", ["Y0"], ["Y0t"], perm=[0, 2, 1, 3]))
            glue[1].input[0] = "Y0t"
        nodes = [
            helper.make_node("LSTM", ["X", "W0", "R0"], ["Y0", "h0"], **attrs),
            *glue,
            helper.make_node("LSTM", ["seq", "W1", "R1", "B1"], ["Y1", "h1"], **attrs),
            helper.make_node("Concat", ["h0", "h1"], ["h_n"], axis=0 if layout == 0 else 1),
        ]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y1", "h_n")]
        inits = [
            numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k)
            for k, v in weights.items()
        ]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
        graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    expected = ort_run(model(0), {"X": x})
    time_major = load_model(model(0), tmp_path / "layout0.onnx")
    batch_major = load_model(model(1), tmp_path / "layout1.onnx")
    assert (time_major.spec.num_layers, time_major.spec.batch_first, batch_major.spec.batch_first) == (
        2,
        False,
        True,
    )
    ours = onnx_outputs(time_major, x)
    ours_1 = onnx_outputs(batch_major, x.transpose(1, 0, 2).copy(), layout=1)
    assert np.abs(ours["Y"] - expected["Y1"]).max() < 1e-6
    assert np.abs(ours["Y_h"] - expected["h_n"]).max() < 1e-6
    assert np.abs(ours_1["Y"] - expected["Y1"].transpose(2, 0, 1, 3)).max() < 1e-6
    notes = reading.read_units(tmp_path / "layout1.onnx")[0].notes
    assert "graph output 'h_n' = the layer's h_n.transpose(0, 1)" in notes
