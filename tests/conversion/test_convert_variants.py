"""Cell variants through conversion: torch files (.pt, .safetensors) save and load every variant by name with
its spec; MindSpore and Keras targets fold the forget bias into the bias and refuse every other variant by
its spec field and the layer; ONNX targets take what the operator has (checked with onnxruntime)."""

from __future__ import annotations

import dataclasses
import importlib
from collections import OrderedDict

import pytest
import torch

import unilstm
from unilstm.activations import parametric
from unilstm.formats import torch_files
from unilstm.formats.mindspore_ckpt import load_checkpoint

cv = importlib.import_module("unilstm.convert")

#: every variant at once (the ones with tensors of their own, the run-time ones, a parametric activation)
EVERYTHING = dict(
    num_layers=2, bidirectional=True, batch_first=True, proj_size=2, layer_norm=True, layer_norm_eps=1e-3,
    peepholes=True, gate_clip=1.5, cell_clip=0.8, proj_clip=0.6, coupled_gates=True, zoneout_hidden=0.1,
    zoneout_cell=0.2, forget_bias=0.5, output_activation=parametric("scaled_tanh", 1.1, 0.9),
)


def randomised(layer: unilstm.LSTM, seed: int = 0) -> unilstm.LSTM:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return layer.eval()


def outputs(layer: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out, (h, c) = layer.eval()(x)
    return [out, h, c]


X = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(9))


# -- torch files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_every_variant_saves_and_loads_back_by_name_with_its_spec(tmp_path, suffix):
    layer = randomised(unilstm.LSTM(3, 4, **EVERYTHING))
    path = cv.save(layer, tmp_path / f"v{suffix}")
    [again] = cv.load(path)
    assert type(again) is unilstm.LSTM and again.spec == layer.spec
    assert list(again.state_dict()) == list(layer.state_dict())
    pairs = zip(again.state_dict().values(), layer.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert all(torch.equal(a, b) for a, b in zip(outputs(again, X), outputs(layer, X), strict=True))


def test_convert_pt_to_safetensors_and_back_keeps_every_variant(tmp_path):
    layer = randomised(unilstm.LSTM(3, 4, **EVERYTHING), seed=1)
    cv.save(layer, tmp_path / "a.pt")
    report = cv.convert(tmp_path / "a.pt", tmp_path / "b.safetensors")
    assert report.verified and report.max_difference == 0.0
    cv.convert(tmp_path / "b.safetensors", tmp_path / "c.pt")
    [again] = cv.load(tmp_path / "c.pt")
    assert again.spec == layer.spec
    assert all(torch.equal(a, b) for a, b in zip(outputs(again, X), outputs(layer, X), strict=True))


def test_weights_only_conversion_between_torch_files_is_still_verified(tmp_path):
    layer = randomised(unilstm.LSTM(3, 4, peepholes=True, layer_norm=True, forget_bias=0.5), seed=2)
    cv.save(layer, tmp_path / "a.pt", weights_only=True)
    report = cv.convert(tmp_path / "a.pt", tmp_path / "b.safetensors", weights_only=True)
    assert report.verified and report.max_difference == 0.0


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_an_onnx_stack_with_variants_converts_to_torch_files_with_its_activations(tmp_path, suffix):
    layer = randomised(unilstm.LSTM(
        3, 4, bidirectional=True, peepholes=True, gate_clip=2.0, coupled_gates=True,
        activation=parametric("scaled_tanh", 1.25, 0.75), output_activation="softsign",
    ))
    cv.save(layer, tmp_path / "a.onnx")
    report = cv.convert(tmp_path / "a.onnx", tmp_path / f"b{suffix}")
    assert report.verified and report.max_difference < 1e-6
    [again] = cv.load(tmp_path / f"b{suffix}")
    assert again.spec.activation == parametric("scaled_tanh", 1.25, 0.75)
    assert again.spec.cell_variants == ("peepholes", "gate_clip", "coupled_gates", "output_activation")


def test_the_cli_converts_pt_to_safetensors_keeping_every_variant(tmp_path, capsys):
    from unilstm import cli

    layer = randomised(unilstm.LSTM(3, 4, **EVERYTHING), seed=5)
    cv.save(layer, tmp_path / "a.pt")
    assert cli.main(["convert", "-q", str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors")]) == 0
    [again] = cv.load(tmp_path / "b.safetensors")
    assert again.spec == layer.spec
    assert all(torch.equal(a, b) for a, b in zip(outputs(again, X), outputs(layer, X), strict=True))


def test_a_plain_pt_holds_no_description_and_torch_loads_it(tmp_path):
    cv.save(randomised(unilstm.LSTM(3, 4)), tmp_path / "plain.pt")
    state = torch.load(tmp_path / "plain.pt", weights_only=True)
    torch.nn.LSTM(3, 4).load_state_dict(state)
    assert cv.METADATA_KEY not in str(list(state))


def test_plain_weights_with_variant_names_read_as_those_variants(tmp_path):
    """A state dict without description (another program's): weight_ph_* gives peepholes, ln_* layer
    norm; the run-time variants are then torch's defaults."""
    layer = randomised(unilstm.LSTM(3, 4, 2, peepholes=True, layer_norm=True))
    torch.save(layer.state_dict(), tmp_path / "bare.pt")
    [unit] = cv.read_units(tmp_path / "bare.pt")
    assert unit.spec.peepholes and unit.spec.layer_norm and not unit.config_stored
    assert unit.spec.cell_variants == ("layer_norm", "peepholes")


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda s: s.pop("ln_bias_c_l1"), r"missing \['ln_bias_c_l1'\].*layer_norm"),
        (lambda s: s.pop("weight_ph_l0"), r"missing \['weight_ph_l0'\].*peepholes"),
        (lambda s: s.__setitem__("weight_ph_l1", torch.zeros(5)), r"weight_ph_l1 has shape \(5,\), expected"),
        (lambda s: s.__setitem__("ln_weight_c_l0", torch.zeros(16)), r"ln_weight_c_l0 has shape \(16,\)"),
    ],
)
def test_variant_tensors_missing_or_misshapen_are_refused_by_name(tmp_path, edit, needle):
    state = OrderedDict(randomised(unilstm.LSTM(3, 4, 2, peepholes=True, layer_norm=True)).state_dict())
    edit(state)
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(torch_files.TorchFileError, match=needle):
        cv.read_units(tmp_path / "cut.pt")


def test_a_description_that_denies_the_peephole_tensors_is_refused(tmp_path):
    layer = randomised(unilstm.LSTM(3, 4, peepholes=True))
    cv.save(layer, tmp_path / "v.safetensors")
    tensors, metadata = torch_files.read_safetensors(tmp_path / "v.safetensors")
    metadata[cv.METADATA_KEY] = metadata[cv.METADATA_KEY].replace('"peepholes": true', '"peepholes": false')
    torch_files.save_state_dict(tensors, tmp_path / "edited.safetensors", metadata=metadata)
    with pytest.raises(torch_files.TorchFileError, match="'peepholes' says False"):
        cv.read_units(tmp_path / "edited.safetensors")


def test_torch_nn_lstm_code_is_not_emitted_for_variants(tmp_path):
    cv.save(randomised(unilstm.LSTM(3, 4, peepholes=True)), tmp_path / "v.safetensors")
    with pytest.raises(cv.ConversionError, match="peepholes=True: torch.nn.LSTM has no peephole"):
        cv.convert(tmp_path / "v.safetensors", tmp_path / "w.pt", emit_code=tmp_path / "m.py")


# -- MindSpore and Keras targets ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ckpt", ".keras"])
def test_forget_bias_folds_into_the_bias_exactly(tmp_path, suffix):
    layer = randomised(unilstm.LSTM(3, 4, bidirectional=True, batch_first=True, forget_bias=1.0), seed=2)
    cv.save(layer, tmp_path / "fb.safetensors")
    report = cv.convert(tmp_path / "fb.safetensors", tmp_path / f"fb{suffix}")
    assert report.verified and report.max_difference < 1e-6
    [unit] = cv.read_units(tmp_path / f"fb{suffix}")
    assert unit.spec.forget_bias == 0.0
    fold = torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8)  # torch's f block: H:2H
    if suffix == ".keras":  # one Keras bias: the sum of torch's two, plus the forget bias
        for sfx in ("_l0", "_l0_reverse"):
            expected = getattr(layer, "bias_ih" + sfx) + getattr(layer, "bias_hh" + sfx) + fold
            assert torch.allclose(unit.state["bias_ih" + sfx], expected.detach(), rtol=0, atol=1e-6)
    if suffix == ".ckpt":
        stored = load_checkpoint(tmp_path / "fb.ckpt")
        for sfx in ("_l0", "_l0_reverse"):
            bias = getattr(layer, "bias_ih" + sfx).detach()
            expected = bias + fold
            assert torch.equal(stored["bias_ih" + sfx], expected)
            assert torch.equal(stored["bias_hh" + sfx], getattr(layer, "bias_hh" + sfx).detach())
        [plain] = cv.load(tmp_path / "fb.ckpt")  # a front door's plain cell, with the folded bias
        assert plain.spec.is_standard_cell and plain.spec.batch_first
        pairs = zip(outputs(plain, X), outputs(layer, X), strict=True)
        assert max(float((a - b).abs().max()) for a, b in pairs) < 1e-6


@pytest.mark.parametrize("suffix", [".ckpt", ".keras"])
def test_forget_bias_without_bias_is_refused(tmp_path, suffix):
    layer = randomised(unilstm.LSTM(3, 4, bias=False, forget_bias=1.0))
    with pytest.raises(cv.ConversionError, match=r"layer 'lstm': forget_bias=1.0 with bias=False: .*no bias"):
        cv.save(layer, tmp_path / f"nb{suffix}")
    assert not (tmp_path / f"nb{suffix}").exists()


#: every variant but forget_bias, and the text naming it in a refusal
NOT_FOLDABLE = {
    "layer_norm": ({"layer_norm": True}, "layer_norm=True: {} has no layer normalisation"),
    "peepholes": ({"peepholes": True}, "peepholes=True: {} has no peephole"),
    "gate_clip": ({"gate_clip": 0.5}, "gate_clip=0.5: {} does not clip the gate"),
    "cell_clip": ({"cell_clip": 0.5}, "cell_clip=0.5: {} does not clip the cell"),
    "coupled_gates": ({"coupled_gates": True}, "coupled_gates=True: {} has no coupled"),
    "zoneout_hidden": ({"zoneout_hidden": 0.1}, "zoneout_hidden=0.1: {} has no zoneout"),
    "zoneout_cell": ({"zoneout_cell": 0.1}, "zoneout_cell=0.1: {} has no zoneout"),
    "output_activation": ({"output_activation": "relu"}, "output_activation='relu': {} applies"),
}
TARGET_NAMES = {".ckpt": "mindspore.nn.LSTM", ".keras": "Keras's LSTM"}


@pytest.mark.parametrize("suffix", sorted(TARGET_NAMES))
@pytest.mark.parametrize("variant", sorted(NOT_FOLDABLE))
def test_other_variants_are_refused_by_field_and_layer(tmp_path, suffix, variant):
    kwargs, text = NOT_FOLDABLE[variant]
    layer = unilstm.LSTM(3, 4, **kwargs)
    needle = "layer 'lstm': " + text.format(TARGET_NAMES[suffix])
    with pytest.raises(cv.ConversionError, match=needle.replace("(", r"\(")):
        cv.save(layer, tmp_path / f"x{suffix}")


def test_proj_clip_is_refused_by_mindspore_with_the_projection(tmp_path):
    layer = unilstm.LSTM(3, 4, proj_size=2, proj_clip=0.5)
    with pytest.raises(cv.ConversionError) as refused:
        cv.save(layer, tmp_path / "p.ckpt")
    assert "proj_clip=0.5: mindspore.nn.LSTM does not clip" in str(refused.value)
    assert "proj_size=2: mindspore.nn.LSTM has no projection" in str(refused.value)


def test_weights_only_writes_a_variant_checkpoint_that_unilstm_reads_back(tmp_path):
    layer = randomised(unilstm.LSTM(3, 4, peepholes=True, gate_clip=0.7))
    cv.save(layer, tmp_path / "w.ckpt", weights_only=True)
    [unit] = cv.read_units(tmp_path / "w.ckpt")
    assert unit.spec.peepholes and unit.spec.gate_clip == 0.7
    assert torch.equal(unit.state["weight_ph_l0"], layer.weight_ph_l0.detach())


# -- ONNX targets -------------------------------------------------------------------------------------------


def test_convert_a_variant_file_to_onnx_is_verified_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    spec_args = dict(
        bidirectional=True, peepholes=True, gate_clip=1.0, coupled_gates=True, forget_bias=0.3,
        activation=parametric("scaled_tanh", 1.3, 0.8), output_activation=parametric("affine", 0.9, 0.1),
    )
    layer = randomised(unilstm.LSTM(3, 4, **spec_args), seed=4)
    # torch.nn.LSTM lacks scaled_tanh: weights_only writes it anyway, the description carrying the activation
    cv.save(layer, tmp_path / "v.safetensors", weights_only=True)
    report = cv.convert(tmp_path / "v.safetensors", tmp_path / "v.onnx")
    assert report.verified and report.max_difference < 1e-5


def test_onnx_target_refusals_name_the_field_and_the_layer(tmp_path):
    layer = unilstm.LSTM(3, 4, layer_norm=True, zoneout_cell=0.1)
    with pytest.raises(cv.ConversionError) as refused:
        cv.save(layer, tmp_path / "x.onnx")
    message = str(refused.value)
    assert "layer 'lstm': layer_norm=True: the ONNX LSTM operator has no layer normalisation" in message
    assert "layer 'lstm': zoneout_cell=0.1" in message
    assert not (tmp_path / "x.onnx").exists()


def test_inspect_shows_the_variants_a_file_stores(tmp_path):
    cv.save(randomised(unilstm.LSTM(3, 4, peepholes=True, forget_bias=1.0)), tmp_path / "v.pt")
    [unit] = cv.read_units(tmp_path / "v.pt")
    described = cv.reading.spec_json(unit)["spec"]
    assert described["peepholes"] is True and described["forget_bias"] == 1.0
    assert dataclasses.replace(unit.spec, forget_bias=0.0).cell_variants == ("peepholes",)
    assert "hidden_size=4, peepholes, forget_bias=1.0, float32" in unit.describe()
