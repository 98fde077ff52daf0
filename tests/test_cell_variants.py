"""The cell variants in the canonical layer (unilstm.LSTM): parameters, their names and initial values, the
layer equal to the reference loop run direction by direction, equivalences that hold by the maths (forget
bias = bias, coupled gates leave the forget block unused), zoneout's draws and expectation, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import unilstm
from unilstm.activations import ParametricActivation, parametric
from unilstm.kernels import DirectionRun, run_direction_reference
from unilstm.spec import LSTMSpec

VARIANTS = {
    "layer_norm": {"layer_norm": True},
    "peepholes": {"peepholes": True},
    "gate_clip": {"gate_clip": 0.5},
    "cell_clip": {"cell_clip": 0.4},
    "proj_clip": {"proj_size": 3, "proj_clip": 0.3},
    "coupled_gates": {"coupled_gates": True},
    "zoneout": {"zoneout_hidden": 0.3, "zoneout_cell": 0.2},
    "forget_bias": {"forget_bias": 1.0},
    "output_activation": {"output_activation": "relu"},
    "parametric": {"activation": parametric("scaled_tanh", 1.2, 0.8),
                   "recurrent_activation": parametric("hard_sigmoid")},
    "all": {"layer_norm": True, "peepholes": True, "gate_clip": 2.0, "cell_clip": 1.5, "proj_size": 3,
            "proj_clip": 0.9, "zoneout_hidden": 0.1, "zoneout_cell": 0.2, "forget_bias": 0.5},
}


def make(seed: int = 0, **kwargs) -> unilstm.LSTM:
    torch.manual_seed(seed)
    layer = unilstm.LSTM(4, 5, dtype=torch.float64, **kwargs)
    with torch.no_grad():  # layer-norm gains and biases away from their neutral 1 and 0
        for name, parameter in layer.named_parameters():
            if name.startswith("ln_"):
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return layer


def reference_stack(layer: unilstm.LSTM, x, mask, training_zoneout=None):
    """The layer's result computed by run_direction_reference per layer and direction (time-major x, no
    dropout): the test's own composition of the stack, independent of dispatch."""
    spec = layer.spec
    weights = layer.direction_weights()
    out_act = spec.cell_output_activation
    resolve = unilstm.activations.resolve
    layer_input = x.flip(0) if spec.go_backwards else x
    step_mask = None if mask is None else (mask.t().flip(0) if spec.go_backwards else mask.t())
    h_n, c_n = [], []
    for directions in weights:
        outs = []
        for d, w in enumerate(directions):
            run = DirectionRun(
                resolve(spec.activation), resolve(spec.recurrent_activation), step_mask, d == 1,
                spec.masked_output == "zero",
                output_activation=None if out_act == spec.activation else resolve(out_act),
                forget_bias=spec.forget_bias, gate_clip=spec.gate_clip, cell_clip=spec.cell_clip,
                proj_clip=spec.proj_clip, coupled_gates=spec.coupled_gates,
                zoneout_hidden=spec.zoneout_hidden, zoneout_cell=spec.zoneout_cell,
                layer_norm_eps=spec.layer_norm_eps,
            )
            h0 = x.new_zeros(x.shape[1], spec.output_size)
            c0 = x.new_zeros(x.shape[1], spec.hidden_size)
            out, h, c = run_direction_reference(layer_input, h0, c0, w, run)
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outs, dim=-1)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_equals_reference_per_direction(name, bidirectional):
    layer = make(bidirectional=bidirectional, num_layers=2, masked_output="previous", **VARIANTS[name])
    layer.eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 4, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=gen) > 0.3
    out, (h, c) = layer(x, mask=mask)
    want_out, want_h, want_c = reference_stack(layer, x, mask)
    torch.testing.assert_close(out, want_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, want_h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, want_c, rtol=1e-10, atol=1e-12)


def test_go_backwards_and_stateful_with_variants():
    kwargs = {"layer_norm": True, "peepholes": True, "go_backwards": True, "zoneout_hidden": 0.2}
    layer = make(**kwargs, stateful=True).eval()
    x = torch.randn(8, 2, 4, dtype=torch.float64)
    whole, _ = make(**kwargs).eval()(x)
    first, _ = layer(x[4:])  # go_backwards: the later half is processed first
    second, _ = layer(x[:4])
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=1e-10, atol=1e-12)


def test_parameters_names_shapes_and_initial_values():
    layer = unilstm.LSTM(3, 4, bidirectional=True, peepholes=True, layer_norm=True)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:9] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ph_l0", "ln_weight_ih_l0",
        "ln_bias_ih_l0", "ln_weight_hh_l0", "ln_bias_hh_l0",
    ]
    assert layer.weight_ph_l0_reverse.shape == (12,)
    assert layer.ln_weight_ih_l0.shape == (16,) and layer.ln_bias_hh_l0_reverse.shape == (16,)
    assert layer.ln_weight_c_l0.shape == (4,) and layer.ln_bias_c_l0.shape == (4,)
    assert torch.equal(layer.ln_weight_c_l0, torch.ones(4))
    assert torch.equal(layer.ln_bias_ih_l0, torch.zeros(16))
    peephole = layer.weight_ph_l0.detach()
    assert float(peephole.abs().max()) <= 0.5 and float(peephole.std()) > 0  # U(-1/sqrt(H), 1/sqrt(H))
    copy = unilstm.LSTM(3, 4, bidirectional=True, peepholes=True, layer_norm=True)
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(copy(x)[0], layer(x)[0], rtol=0, atol=0)
    assert "layer_norm=True" in repr(layer) and "peepholes=True" in repr(layer)


def test_lazy_layer_with_variants_builds():
    layer = unilstm.LSTM(None, 4, layer_norm=True, peepholes=True)
    out, _ = layer(torch.randn(3, 2, 6))
    assert out.shape == (3, 2, 4) and layer.weight_ih_l0.shape == (16, 6)
    assert torch.equal(layer.ln_weight_ih_l0, torch.ones(16))


def test_forget_bias_equals_adding_it_to_the_forget_bias_block():
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    with_bias = make(forget_bias=1.0, peepholes=True).eval()
    plain = make(peepholes=True).eval()
    with torch.no_grad():
        plain.bias_hh_l0[5:10] += 1.0  # the f block of [i, f, g, o], H = 5
    torch.testing.assert_close(with_bias(x)[0], plain(x)[0], rtol=1e-12, atol=1e-12)


def test_coupled_gates_leave_the_forget_block_without_gradient():
    layer = make(coupled_gates=True)
    layer(torch.randn(5, 2, 4, dtype=torch.float64))[0].sum().backward()
    grad = layer.weight_ih_l0.grad
    assert grad is not None
    assert torch.equal(grad[5:10], torch.zeros_like(grad[5:10]))
    assert float(grad[:5].abs().sum()) > 0 and float(grad[10:].abs().sum()) > 0


def test_every_variant_parameter_trains():
    layer = make(**VARIANTS["all"])
    layer(torch.randn(5, 2, 4, dtype=torch.float64))[0].square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_zoneout_draws_in_training_and_uses_the_rate_in_inference():
    layer = make(zoneout_hidden=0.5, zoneout_cell=0.5)
    x = torch.randn(6, 4, 4, dtype=torch.float64)
    layer.train()
    a = layer(x, generator=torch.Generator().manual_seed(3))[0]
    b = layer(x, generator=torch.Generator().manual_seed(3))[0]
    c = layer(x, generator=torch.Generator().manual_seed(4))[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # a training draw keeps some units exactly at their previous value: h_t == h_{t-1} somewhere
    assert bool((a[1:] == a[:-1]).any())
    layer.eval()
    inference = layer(x)[0]
    want = reference_stack(layer, x, None)[0]
    torch.testing.assert_close(inference, want, rtol=1e-10, atol=1e-12)


def test_training_zoneout_draw_matches_reference_with_the_same_draws():
    layer = make(zoneout_hidden=0.4, zoneout_cell=0.3)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    got = layer(x, training=True, generator=torch.Generator().manual_seed(7))[0]
    from unilstm.kernels.dispatch import zoneout_weights

    gen = torch.Generator().manual_seed(7)
    zeros = x.new_zeros(3, 5)
    keep_h = zoneout_weights(0.4, 5, zeros, True, gen)  # h's draws, then c's, from the layer's generator
    keep_c = zoneout_weights(0.3, 5, zeros, True, gen)
    (w,), = layer.direction_weights()
    run = DirectionRun(torch.tanh, torch.sigmoid, zoneout_hidden=keep_h, zoneout_cell=keep_c)
    want = run_direction_reference(x, zeros, zeros, w, run)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_output_activation_same_is_the_activation():
    spec = LSTMSpec(3, 4, activation="relu")
    assert spec.cell_output_activation == "relu" and spec.cell_variants == ()
    assert dataclasses.replace(spec, output_activation="relu").cell_variants == ()
    assert dataclasses.replace(spec, output_activation="tanh").cell_variants == ("output_activation",)
    assert not dataclasses.replace(spec, gate_clip=1.0).is_standard_cell


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"proj_clip": 1.0}, ValueError, "proj_clip needs a projection"),
    ({"gate_clip": -1.0}, ValueError, "gate_clip must be > 0"),
    ({"cell_clip": float("inf")}, TypeError, "cell_clip must be a finite float"),
    ({"zoneout_hidden": 1.5}, ValueError, "zoneout_hidden must be a float in"),
    ({"forget_bias": "1"}, TypeError, "forget_bias must be a finite float"),
    ({"layer_norm_eps": 0.0}, ValueError, "layer_norm_eps must be > 0"),
    ({"output_activation": "swoosh"}, ValueError, "output_activation: unknown activation 'swoosh'"),
])
def test_invalid_variant_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        unilstm.LSTM(3, 4, **kwargs)


def test_parametric_activations_follow_onnx_formulas():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    cases = {
        parametric("affine", 2.0, 0.5): 2.0 * x + 0.5,
        parametric("leaky_relu"): torch.where(x >= 0, x, 0.01 * x),
        parametric("thresholded_relu", 1.0): torch.where(x > 1.0, x, torch.zeros_like(x)),
        parametric("scaled_tanh", 1.5, 0.5): 1.5 * torch.tanh(0.5 * x),
        parametric("hard_sigmoid"): torch.clamp(0.2 * x + 0.5, 0, 1),
        parametric("elu", 0.5): torch.where(x >= 0, x, 0.5 * (torch.exp(x) - 1)),
    }
    for activation, want in cases.items():
        torch.testing.assert_close(activation(x), want, rtol=1e-15, atol=1e-15)
    assert parametric("affine", 2, 0.5) == ParametricActivation("affine", 2.0, 0.5)
    assert hash(parametric("elu")) == hash(ParametricActivation("elu", 1.0))
    with pytest.raises(ValueError, match="unknown kind 'swish'"):
        parametric("swish")
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        parametric("elu", float("nan"))


def test_zoneout_draws_keep_a_unit_with_the_rate():
    from unilstm.kernels.dispatch import zoneout_weights

    state = torch.zeros(64, 32)
    keep = zoneout_weights(0.3, 200, state, True, torch.Generator().manual_seed(0))
    assert isinstance(keep, torch.Tensor) and keep.shape == (200, 64, 32)
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(float(keep.mean()) - 0.3) < 0.005  # 409600 draws: standard deviation 0.0007
    assert zoneout_weights(0.3, 200, state, False, None) == 0.3


def test_lengths_with_variants_equal_the_same_right_padded_mask():
    layer = make(num_layers=2, bidirectional=True, **VARIANTS["all"]).eval()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 0])
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    by_lengths, (h1, c1) = layer(x, lengths=lengths)
    by_mask, (h2, c2) = layer(x, mask=mask)
    torch.testing.assert_close(by_lengths, by_mask, rtol=0, atol=0)
    torch.testing.assert_close((h1, c1), (h2, c2), rtol=0, atol=0)
    torch.testing.assert_close(by_lengths, reference_stack(layer, x, mask)[0], rtol=1e-10, atol=1e-12)
    assert torch.equal(by_lengths[2:, 1], torch.zeros_like(by_lengths[2:, 1]))  # packed semantics


def test_variants_in_low_precision_follow_float64():
    kwargs = {"layer_norm": True, "peepholes": True, "forget_bias": 1.0, "zoneout_hidden": 0.1}
    exact = make(**kwargs).eval()
    x = torch.randn(8, 2, 4, dtype=torch.float64)
    want = exact(x)[0]
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        low = make(**kwargs).to(dtype).eval()
        got = low(x.to(dtype))[0].double()
        assert float((got - want).abs().max()) < tolerance, dtype
