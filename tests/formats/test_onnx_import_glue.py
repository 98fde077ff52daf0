"""ONNX import of the glue beyond a plain chain: direction-swapping Gathers (derived, checked against
onnxruntime in every combination), several independent stacks in one graph, constant sequence_lens and
initial states (``read_onnx_lstms(..., constants=True)``), and the length masks' refusals."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from test_onnx_import import ort_run

import unilstm
from unilstm.formats.onnx_import import OnnxFileError, read_onnx_lstms

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

F, H, B, T = 3, 4, 3, 5
TOL = 2e-6


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")



class Graph:
    """A graph under construction: initializers, nodes, graph inputs and outputs."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", F])]
        self.outputs: list = []
        self.count = 0

    def const(self, array) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weights(self, d: int, features: int) -> list[str]:
        def draw(*shape):
            return (0.5 * self.rng.standard_normal(shape)).astype(np.float32)

        return [
            self.const(draw(d, 4 * H, features)),
            self.const(draw(d, 4 * H, H)),
            self.const(draw(d, 8 * H)),
        ]

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        self.count += 1
        names = [f"{op.lower()}{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attrs))
        return names

    def output(self, name: str) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))

    def model(self):
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def swap(self, value: str, axis: int) -> str:
        return self.node("Gather", [value, self.const(np.asarray([1, 0], np.int64))], axis=axis)[0]

    def as_sequence(self, y: str) -> str:
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3])[0]
        return self.node("Reshape", [y, self.const(np.asarray([0, 0, -1], np.int64))])[0]

    def flip(self, value: str) -> str:
        ends = [self.const(np.asarray([v], np.int64)) for v in (-1, np.iinfo(np.int64).min, 0, -1)]
        return self.node("Slice", [value, *ends])[0]


def load(model, path) -> unilstm.LSTM:
    path.write_bytes(model.SerializeToString())
    [layer] = unilstm.load(path)
    return layer


# -- direction swaps, derived --------------------------------------------------------------------------


@pytest.mark.parametrize("between,last,flip", list(itertools.product([False, True], repeat=3)))
def test_every_direction_swap_reads_as_derived(between, last, flip, tmp_path):
    """Two bidirectional nodes; node 1 reads node 0's Y with its directions swapped or not, the graph returns
    node 1's Y (swapped or not, flipped in time or not) and both nodes' Y_h (swapped as the output). The
    module docstring's derivation: go_backwards = the output's swap; the layer's output is the graph's,
    flipped in time where the flip differs from go_backwards; h_n is the graph's states."""
    g = Graph(int(between) + 2 * int(last) + 4 * int(flip))
    y0, h0, _ = g.node("LSTM", ["X", *g.weights(2, F)], 3, hidden_size=H, direction="bidirectional")
    x1 = g.as_sequence(g.swap(y0, 1) if between else y0)
    y1, h1, _ = g.node("LSTM", [x1, *g.weights(2, 2 * H)], 3, hidden_size=H, direction="bidirectional")
    out = g.as_sequence(g.swap(y1, 1) if last else y1)
    out = g.flip(out) if flip else out
    h0, h1 = (g.swap(h, 0) if last else h for h in (h0, h1))
    h_n = g.node("Concat", [h0, h1], axis=0)[0]
    g.output(out)
    g.output(h_n)
    model = g.model()
    x = np.random.default_rng(1).standard_normal((T, B, F)).astype(np.float32)
    expected = ort_run(model, {"X": x})
    layer = load(model, tmp_path / "swaps.onnx")
    assert layer.spec.go_backwards == last
    with torch.no_grad():
        output, (h, _) = layer(torch.from_numpy(x))
    if flip != last:
        output = output.flip(0)
    assert float(np.abs(output.numpy() - expected[out]).max()) < TOL
    assert float(np.abs(h.numpy() - expected[h_n]).max()) < TOL
    [stack] = read_onnx_lstms(tmp_path / "swaps.onnx")
    text = "the layer's output" + (" (T, B, D*H) flipped in time" if flip != last else "")
    assert f"graph output {out!r} = {text}" in stack.notes
    assert f"graph output {h_n!r} = the layer's h_n" in stack.notes


def test_states_swapped_against_the_output_are_described(tmp_path):
    g = Graph(3)
    y, h, _ = g.node("LSTM", ["X", *g.weights(2, F)], 3, hidden_size=H, direction="bidirectional")
    out = g.flip(g.as_sequence(g.swap(y, 1)))
    g.output(out)
    g.output(h)  # not swapped: the layer's (go_backwards) h_n with its two rows exchanged
    model = g.model()
    x = np.random.default_rng(2).standard_normal((T, B, F)).astype(np.float32)
    expected = ort_run(model, {"X": x})
    layer = load(model, tmp_path / "rows.onnx")
    with torch.no_grad():
        _, (h_n, _) = layer(torch.from_numpy(x))
    assert float(np.abs(h_n.numpy()[::-1] - expected[h]).max()) < TOL
    [stack] = read_onnx_lstms(tmp_path / "rows.onnx")
    assert (
        f"graph output {h!r} = the layer's h_n with each layer's two direction rows exchanged" in stack.notes
    )


def test_initial_states_gathered_against_the_layers_order_are_refused(tmp_path):
    g = Graph(4)
    g.inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "B", H]))
    starts = [g.const(np.asarray([v], np.int64)) for v in (0, 2, 0)]
    rows = g.node("Slice", ["h0", *starts])[0]
    y, _, _ = g.node(
        "LSTM", ["X", *g.weights(2, F), "", g.swap(rows, 0)], 3, hidden_size=H, direction="bidirectional"
    )
    g.output(g.as_sequence(y))  # not swapped: a forward layer, whose state rows are [forward, backward]
    path = tmp_path / "h0.onnx"
    path.write_bytes(g.model().SerializeToString())
    with pytest.raises(OnnxFileError, match="in the other order than the layer's directions") as info:
        unilstm.load(path)
    assert str(path) in str(info.value)


# -- several stacks ----------------------------------------------------------------------------------------


def test_two_independent_stacks_load_as_two_layers(tmp_path):
    g = Graph(5)
    g.inputs.append(helper.make_tensor_value_info("X2", TensorProto.FLOAT, ["T", "B", F]))
    y_a, _, _ = g.node("LSTM", ["X", *g.weights(2, F)], 3, hidden_size=H, direction="bidirectional")
    y_b, h_b, _ = g.node("LSTM", ["X2", *g.weights(1, F)], 3, hidden_size=H, direction="reverse")
    y_a = g.as_sequence(y_a)
    for name in (y_a, y_b, h_b):
        g.output(name)
    model = g.model()
    rng = np.random.default_rng(3)
    x, x2 = (rng.standard_normal((T, B, F)).astype(np.float32) for _ in range(2))
    expected = ort_run(model, {"X": x, "X2": x2})
    path = tmp_path / "two.onnx"
    path.write_bytes(model.SerializeToString())
    first, second = unilstm.load(path)
    assert first.spec.bidirectional and not first.spec.go_backwards
    assert second.spec.go_backwards and not second.spec.bidirectional
    with torch.no_grad():
        out_a, _ = first(torch.from_numpy(x))
        out_b, (h, _) = second(torch.from_numpy(x2))
    assert float(np.abs(out_a.numpy() - expected[y_a]).max()) < TOL
    # direction=reverse writes each output at its time index: the layer's output flipped in time
    assert float(np.abs(out_b.flip(0).numpy() - expected[y_b][:, 0]).max()) < TOL
    assert float(np.abs(h.numpy() - expected[h_b]).max()) < TOL
    stacks = read_onnx_lstms(path)
    assert [s.inputs["input"] for s in stacks] == ["X", "X2"]
    assert all("one of 2 LSTM stacks" in " ".join(s.notes) for s in stacks)
    assert len({s.name for s in stacks}) == 2


def test_an_output_mixing_two_stacks_is_refused(tmp_path):
    g = Graph(6)
    _, h_a, _ = g.node("LSTM", ["X", *g.weights(1, F)], 3, hidden_size=H)
    _, h_b, _ = g.node("LSTM", ["X", *g.weights(1, F)], 3, hidden_size=H)
    g.output(g.node("Concat", [h_a, h_b], axis=0)[0])
    path = tmp_path / "mixed.onnx"
    path.write_bytes(g.model().SerializeToString())
    with pytest.raises(OnnxFileError, match="not one LSTM stack's output or states"):
        read_onnx_lstms(path)


# -- constants -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("directions", [1, 2])
def test_constant_lengths_and_states_come_with_the_stack(directions, tmp_path):
    """Two layers; the first starts from zeros, the second from constant states; constant lengths."""
    g = Graph(7 + directions)
    rng = np.random.default_rng(directions)
    lengths = g.const(np.asarray([T, 0, 2], np.int32))
    d = directions
    states = [g.const(rng.standard_normal((d, B, H)).astype(np.float32)) for _ in range(2)]
    attrs = dict(hidden_size=H, direction="bidirectional" if d == 2 else "forward")
    y0, h0, c0 = g.node("LSTM", ["X", *g.weights(d, F), lengths], 3, **attrs)
    y1, h1, c1 = g.node("LSTM", [g.as_sequence(y0), *g.weights(d, d * H), lengths, *states], 3, **attrs)
    out = g.as_sequence(y1)
    h_n = g.node("Concat", [h0, h1], axis=0)[0]
    c_n = g.node("Concat", [c0, c1], axis=0)[0]
    for name in (out, h_n, c_n):
        g.output(name)
    model = g.model()
    path = tmp_path / "constants.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxFileError, match=r"sequence_lens is a constant .*constants=True"):
        unilstm.load(path)
    [stack] = read_onnx_lstms(path, constants=True)
    assert stack.lengths.tolist() == [T, 0, 2]
    layer = unilstm.LSTM.from_spec(stack.spec)
    layer.load_state_dict(stack.state)
    x = rng.standard_normal((T, B, F)).astype(np.float32)
    expected = ort_run(model, {"X": x})
    state = tuple(torch.from_numpy(s) for s in stack.initial_state)
    assert float(np.abs(stack.initial_state[0][:d]).max()) == 0.0  # the first layer's zeros
    with torch.no_grad():
        output, (h, c) = layer.eval()(torch.from_numpy(x), state, lengths=torch.from_numpy(stack.lengths))
    assert float(np.abs(output.numpy() - expected[out]).max()) < TOL
    valid = [0, 2]  # length 0: onnxruntime gives zeros, the layer its initial state (documented)
    assert float(np.abs(h.numpy()[:, valid] - expected[h_n][:, valid]).max()) < TOL
    assert float(np.abs(c.numpy()[:, valid] - expected[c_n][:, valid]).max()) < TOL
    assert any("state=stack.initial_state" in note for note in stack.notes)


# -- the length masks ------------------------------------------------------------------------------------


def own_export(tmp_path, **export):
    torch.manual_seed(0)
    layer = unilstm.LSTM(F, H, 2, bidirectional=True, go_backwards=True, masked_output="previous").eval()
    return unilstm.export_onnx(layer, tmp_path / "own.onnx", lengths=True, **export)


def test_masks_that_read_another_input_than_the_lengths_are_refused(tmp_path):
    model = onnx.load(str(own_export(tmp_path, initial_states=True)))
    model.graph.input.append(helper.make_tensor_value_info("other", TensorProto.INT64, ["B"]))
    for kind, match in (
        ("Equal", "length-0 mask reads 'other'"),
        ("Unsqueeze", "previous-output mask reads"),
    ):
        edited = type(model)()
        edited.CopyFrom(model)
        for node in edited.graph.node:  # every such mask (one per layer for the length-0 states)
            if node.op_type == kind and "lengths" in node.input:
                node.input[list(node.input).index("lengths")] = "other"
        path = tmp_path / f"{kind}.onnx"
        path.write_bytes(edited.SerializeToString())
        with pytest.raises(OnnxFileError, match=match):
            read_onnx_lstms(path)


def test_a_fuzz_of_our_own_glue_lets_only_onnx_file_errors_escape(tmp_path):
    """Inputs of the swap, mask, Where, last-output and merge nodes rewired at random: a read gives stacks or
    OnnxFileError."""
    rng = random.Random(19)
    seeds = [
        onnx.load(str(own_export(tmp_path, initial_states=True))),
        onnx.load(str(own_export(tmp_path, return_sequences=False, merge_mode="ave"))),
    ]
    path = tmp_path / "fuzz.onnx"
    loaded = 0
    kinds = ("Gather", "Where", "Less", "Equal", "Range", "Split", "Add", "Mul", "Concat", "Slice")
    for _ in range(60):
        model = type(seeds[0])()
        model.CopyFrom(rng.choice(seeds))
        glue = [n for n in model.graph.node if n.op_type in kinds]
        names = [o for n in model.graph.node for o in n.output] + [i.name for i in model.graph.input] + [""]
        for _ in range(rng.randint(1, 2)):
            node = rng.choice(glue)
            node.input[rng.randrange(len(node.input))] = rng.choice(names)
        path.write_bytes(model.SerializeToString())
        try:
            read_onnx_lstms(path)
            loaded += 1
        except OnnxFileError as error:
            assert str(path) in str(error)
    assert loaded < 60


def test_a_stack_reading_one_direction_of_another_is_refused(tmp_path):
    g = Graph(8)
    y, _, _ = g.node("LSTM", ["X", *g.weights(2, F)], 3, hidden_size=H, direction="bidirectional")
    ends = [g.const(np.asarray([v], np.int64)) for v in (0, 1, 1)]
    forward = g.node("Squeeze", [g.node("Slice", [y, *ends])[0], ends[1]])[0]  # (T, B, H): direction 0
    y2, _, _ = g.node("LSTM", [forward, *g.weights(1, H)], 3, hidden_size=H)
    g.output(y2)
    path = tmp_path / "part.onnx"
    path.write_bytes(g.model().SerializeToString())
    with pytest.raises(OnnxFileError, match="another LSTM stack's whole output as a sequence") as info:
        unilstm.load(path)
    assert str(path) in str(info.value)
