"""Cell variants in the file formats: the ONNX exporter writes peepholes (``P``), gate clip (``clip``),
coupled gates (``input_forget``), parametric and separate output activations and the forget bias natively,
checked with onnxruntime against the engine, and refuses the rest by spec field; torch files carry a
description."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import unilstm
from unilstm.activations import parametric
from unilstm.formats import torch_files
from unilstm.formats.layout import to_onnx_peepholes
from unilstm.formats.onnx_export import OnnxExportError, build_graph, export_problems, run_onnx

TOL = 2e-6


def randomised(layer: unilstm.LSTM, seed: int, scale: float = 2.0) -> unilstm.LSTM:
    """``layer`` with every parameter drawn from N(0, scale) (wide enough that clips act), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return layer.eval()


# -- ONNX export --------------------------------------------------------------------------------------------

#: variants the ONNX LSTM operator takes: keyword arguments of unilstm.LSTM, and the node attribute or
#: input that must carry them
EXPORTED = {
    "peepholes": ({"peepholes": True}, "P"),
    "gate_clip": ({"gate_clip": 0.4}, "clip"),
    "coupled_gates": ({"coupled_gates": True}, "input_forget"),
    "forget_bias": ({"forget_bias": 1.0}, "B"),
    "forget_bias_no_bias": ({"forget_bias": 1.0, "bias": False}, "B"),
    "output_activation": ({"output_activation": "softsign"}, "activations"),
    "affine_output": ({"output_activation": parametric("affine", 0.8, 0.1)}, "activation_beta"),
    "scaled_tanh": ({"activation": parametric("scaled_tanh", 1.5, 0.7)}, "activation_beta"),
    "hard_sigmoid_ab": ({"recurrent_activation": parametric("hard_sigmoid", 0.3, 0.4)}, "activation_beta"),
    "leaky_relu_alpha": ({"activation": parametric("leaky_relu", 0.05)}, "activation_alpha"),
    "thresholded_relu": ({"output_activation": parametric("thresholded_relu", 0.1)}, "activation_alpha"),
    "elu_alpha": ({"activation": parametric("elu", 0.6)}, "activation_alpha"),
}


def lstm_node(model):
    [node] = [n for n in model.graph.node if n.op_type == "LSTM"][:1]
    return node


def carried(model, what: str) -> bool:
    """Whether the first LSTM node carries ``what`` (an attribute name, or input ``"B"`` / ``"P"``)."""
    node = lstm_node(model)
    if what in ("B", "P"):
        index = 3 if what == "B" else 7
        return len(node.input) > index and node.input[index] != ""
    return any(attribute.name == what for attribute in node.attribute)


@pytest.mark.parametrize("case", sorted(EXPORTED))
def test_each_exported_variant_matches_onnxruntime(case):
    kwargs, carrier = EXPORTED[case]
    layer = randomised(unilstm.LSTM(3, 4, **kwargs), seed=len(case))
    plain = randomised(unilstm.LSTM(3, 4, bias=kwargs.get("bias", True)), seed=len(case))
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        expected = [t.numpy() for t in (layer(x, lengths=lengths)[0], *layer(x, lengths=lengths)[1])]
        unchanged = plain(x, lengths=lengths)[0].numpy()
    model = build_graph(layer, lengths=True)
    assert carried(model, carrier)
    got = run_onnx(model, x.numpy(), lengths=lengths.numpy())
    # relative to the results' size: unbounded activations (elu) reach 10 in float32
    scale = max(1.0, max(float(np.abs(b).max()) for b in expected))
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True)) < TOL * scale
    assert float(np.abs(expected[0] - unchanged).max()) > 1e-3  # the variant changes the numbers


def test_everything_onnx_takes_at_once_in_a_bidirectional_backwards_stack():
    """Two layers, both directions, go_backwards, Keras's previous-output masking, lengths with an empty
    sequence and initial states, with peepholes, clip, coupled gates, forget bias and three parametric or
    separate activations: onnxruntime computes the engine's numbers."""
    layer = randomised(
        unilstm.LSTM(
            3, 4, 2, bidirectional=True, batch_first=True, go_backwards=True, masked_output="previous",
            peepholes=True, gate_clip=1.5, coupled_gates=True, forget_bias=0.5,
            activation=parametric("scaled_tanh", 1.2, 0.9), output_activation="softsign",
            recurrent_activation=parametric("hard_sigmoid", 0.25, 0.5),
        ),
        seed=3,
        scale=1.0,
    )
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 3, generator=generator)
    h0, c0 = torch.randn(2, 4, 3, 4, generator=generator)
    lengths = torch.tensor([5, 2, 0])
    with torch.no_grad():
        out, (h, c) = layer(x, (h0, c0), lengths=lengths)
    model = build_graph(layer, lengths=True, initial_states=True)
    got = run_onnx(model, x.numpy(), lengths=lengths.numpy(), state=(h0, c0))
    diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, (out, h, c), strict=True))
    assert diff < TOL


def test_peepholes_and_forget_bias_are_stored_in_onnx_order():
    layer = randomised(unilstm.LSTM(3, 2, peepholes=True, forget_bias=0.75, bias=False), seed=5)
    model = build_graph(layer)
    initializers = {i.name: i for i in model.graph.initializer}
    node = lstm_node(model)
    from onnx import numpy_helper

    p = numpy_helper.to_array(initializers[node.input[7]])
    ph = layer.weight_ph_l0.detach().numpy()
    assert np.array_equal(p[0], np.concatenate([ph[0:2], ph[4:6], ph[2:4]]))  # [p_i, p_o, p_f]
    assert np.array_equal(to_onnx_peepholes(ph), p[0])
    b = numpy_helper.to_array(initializers[node.input[3]])
    # no bias: B is zeros but for the forget block of Wb (ONNX [i, o, f, c]: the third block)
    assert np.array_equal(b[0], np.array([0, 0, 0, 0, 0.75, 0.75, 0, 0] + [0] * 8, dtype=np.float32))


#: variants the ONNX LSTM operator lacks, and the spec field its refusal must name
REFUSED = {
    "layer_norm": ({"layer_norm": True}, "layer_norm=True"),
    "cell_clip": ({"cell_clip": 0.5}, "cell_clip=0.5"),
    "proj_clip": ({"proj_size": 2, "proj_clip": 0.5}, "proj_clip=0.5"),
    "zoneout_hidden": ({"zoneout_hidden": 0.1}, "zoneout_hidden=0.1"),
    "zoneout_cell": ({"zoneout_cell": 0.2}, "zoneout_cell=0.2"),
    "output_activation": ({"output_activation": "gelu"}, "output_activation='gelu'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_variants_onnx_lacks_are_refused_by_field(case):
    kwargs, needle = REFUSED[case]
    layer = unilstm.LSTM(3, 4, **kwargs).eval()  # zoneout too in inference: no node mixes the states
    with pytest.raises(OnnxExportError, match=needle.replace("(", r"\(")):
        build_graph(layer)


def test_every_refused_field_is_named_at_once():
    spec = unilstm.LSTM(3, 4, 1, proj_size=2, proj_clip=0.3, layer_norm=True, cell_clip=1.0).spec
    problems = export_problems(spec)
    assert [p.split("=")[0] for p in problems] == ["proj_size", "layer_norm", "cell_clip", "proj_clip"]


# -- torch files --------------------------------------------------------------------------------------------


def test_torch_files_keep_metadata_under_their_own_entry(tmp_path):
    state = unilstm.LSTM(3, 4, peepholes=True).state_dict()
    path = torch_files.save_state_dict(state, tmp_path / "v.pt", metadata={"unilstm.units": "[]"})
    tensors, skipped, metadata = torch_files.read_torch_payload(path)
    assert metadata == {"unilstm.units": "[]"} and not skipped
    assert list(tensors) == list(state) and all(torch.equal(tensors[k], state[k]) for k in state)
    again, skipped_again = torch_files.read_torch_file(path)
    assert list(again) == list(state) and skipped_again == []


def test_torch_refuses_a_torch_file_with_a_description(tmp_path):
    """unilstm writes one into a .pt only for cell variants: torch.nn.LSTM must not load such a file even
    where the tensor names are its own (a gate clip has none of its own), as it computes another cell."""
    state = unilstm.LSTM(3, 4).state_dict()
    path = torch_files.save_state_dict(state, tmp_path / "v.pt", metadata={"unilstm.units": "[]"})
    with pytest.raises(RuntimeError, match="__metadata__"):
        torch.nn.LSTM(3, 4).load_state_dict(torch.load(path, weights_only=True))


def test_a_foreign_metadata_entry_is_not_taken_for_a_description(tmp_path):
    buffer = io.BytesIO()
    torch.save({"weight_ih_l0": torch.zeros(8, 3), "__metadata__": {"a": 1}}, buffer)
    (tmp_path / "f.pt").write_bytes(buffer.getvalue())
    _, skipped, metadata = torch_files.read_torch_payload(tmp_path / "f.pt")
    assert metadata == {} and skipped == ["__metadata__.a (int)"]
    with pytest.raises(ValueError, match="str to str"):
        torch_files.torch_file_bytes({"w": torch.zeros(1)}, {"k": 1})  # type: ignore[dict-item]
