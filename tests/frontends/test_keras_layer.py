"""unilstm.keras.LSTM / Bidirectional: configs from real Keras, dropout structure, states, torch interop,
errors."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm import activations
from unilstm.keras import LSTM, Bidirectional
from unilstm.kernels import DirectionRun, DirectionWeights, run_direction_reference
from unilstm.kernels.dispatch import draw_dropout_mask

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras"
CONFIGS = json.loads((FIXTURES / "configs.json").read_text())
CONFIG_CASES = [(tag, key) for tag in ("k3", "k2") for key in CONFIGS[tag]]
RNG = np.random.default_rng(7)


def rnd(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- configs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag, key", CONFIG_CASES)
def test_real_configs_round_trip_exactly(tag, key):
    """from_config(config).get_config() == config for configs dumped by Keras 3.15.1 and tf-keras 2.21."""
    entry = CONFIGS[tag][key]
    cls = Bidirectional if entry["class_name"] == "Bidirectional" else LSTM
    layer = cls.from_config(entry["config"])
    assert json.dumps(layer.get_config(), sort_keys=True) == json.dumps(entry["config"], sort_keys=True)
    again = cls.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_serialized_form_is_accepted():
    entry = CONFIGS["k3"]["full"]
    layer = LSTM.from_config({"module": "keras.layers", "class_name": "LSTM", "config": entry["config"]})
    assert layer.units == 3 and layer.go_backwards and layer.stateful
    with pytest.raises(ValueError, match="expected class_name in \\['LSTM'\\], got 'GRU'"):
        LSTM.from_config({"class_name": "GRU", "config": entry["config"]})


def test_keras2_configs_keep_keras2_hard_sigmoid():
    k2 = LSTM.from_config(CONFIGS["k2"]["full"]["config"])
    k3 = LSTM.from_config(CONFIGS["k3"]["full"]["config"])
    assert k2.recurrent_activation == "hard_sigmoid_keras2" and k3.recurrent_activation == "hard_sigmoid"
    assert k2.get_config()["recurrent_activation"] == "hard_sigmoid"
    forced = LSTM.from_config(CONFIGS["k3"]["full"]["config"], keras2=True)
    assert forced.recurrent_activation == "hard_sigmoid_keras2"
    x = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(
        activations.resolve("hard_sigmoid_keras2")(x), torch.clamp(0.2 * x + 0.5, 0, 1)
    )
    torch.testing.assert_close(activations.resolve("hard_sigmoid")(x), torch.clamp(x / 6 + 0.5, 0, 1))


def test_unknown_keyword_arguments_are_errors():
    with pytest.raises(ValueError, match="Unrecognized keyword arguments passed to LSTM: {'foo': 1}"):
        LSTM(3, foo=1)
    with pytest.raises(ValueError, match="Unrecognized keyword arguments passed to Bidirectional"):
        Bidirectional(LSTM(3), bar=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units: expected a positive integer, got 0"),
        ({"units": 2, "activation": "nope"}, "activation: unknown activation 'nope'"),
        ({"units": 2, "activation": "threshold"}, "threshold"),
        ({"units": 2, "use_cudnn": "yes"}, "use_cudnn: expected one of"),
        ({"units": 2, "implementation": 3}, "implementation: expected 0, 1 or 2, got 3"),
        ({"units": 2, "dtype": "mixed_float16"}, "mixed precision"),
        ({"units": 2, "dtype": "int32"}, "dtype: expected one of"),
        ({"units": 2, "seed": "a"}, "seed: expected an int or None"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LSTM(**kwargs)


def test_call_errors_name_the_argument():
    layer = LSTM(3)
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        layer(np.zeros((2, 4), np.float32))
    layer(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 4"):
        layer(np.zeros((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match="mask: expected shape \\(2, 5\\)"):
        layer(np.zeros((2, 5, 4), np.float32), mask=np.ones((5, 2), bool))
    with pytest.raises(ValueError, match="initial_state\\[1\\]: expected shape \\(2, 3\\)"):
        layer(np.zeros((2, 5, 4), np.float32), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="has 2 states \\[h0, c0\\], but was passed 1"):
        layer(np.zeros((2, 5, 4), np.float32), initial_state=[np.zeros((2, 3))])
    with pytest.raises(
        ValueError, match="set_weights: recurrent_kernel .* has shape \\(3, 12\\), got \\(4, 12\\)"
    ):
        layer.set_weights([np.zeros((4, 12)), np.zeros((4, 12)), np.zeros(12)])
    with pytest.raises(ValueError, match="merge_mode: expected one of"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="different `go_backwards`"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3))
    with pytest.raises(ValueError, match='same value for attribute "return_sequences"'):
        Bidirectional(LSTM(3), backward_layer=LSTM(3, go_backwards=True, return_sequences=True))


# -- dropout --------------------------------------------------------------------------------------------
def _zero_input_grads(layer, x, **kwargs):
    x = torch.tensor(x, requires_grad=True)
    out = layer(x, training=True, **kwargs)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad == 0


def test_input_dropout_mask_is_the_same_at_every_step_and_only_in_training():
    layer = LSTM(6, dropout=0.5, return_sequences=True, seed=1)
    x = rnd(4, 7, 5)
    dropped = _zero_input_grads(layer, x)  # (B, T, F): True where x[b, t, f] was dropped
    assert bool((dropped == dropped[:, :1]).all()), "the input mask changes between steps"
    assert 0 < int(dropped[:, 0].sum()) < dropped[:, 0].numel()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer(x, training=False))
        assert not torch.allclose(layer(x, training=True), layer(x))


def test_per_gate_masks_when_recurrent_dropout():
    """recurrent_dropout > 0 makes Keras draw four masks per dropout (one per gate): an input feature has a
    zero gradient only where all four gate masks drop it, which happens less often than one mask would."""
    layer = LSTM(8, dropout=0.5, recurrent_dropout=0.3, return_sequences=True, seed=2)
    assert layer.implementation == 1
    dropped = _zero_input_grads(layer, rnd(64, 4, 16))[:, 1:]  # at t = 0, c_{-1} = 0 makes df vanish
    assert bool((dropped == dropped[:, :1]).all())
    assert 0.0 < float(dropped[:, 0].float().mean()) < 0.2  # about 0.5 ** 4, not 0.5


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.4])
def test_dropout_equals_the_reference_with_the_same_masks(recurrent_dropout):
    """With seed s the layer's masks are the first draws of torch.Generator().manual_seed(s): input mask
    (B, F) (or (4, B, F)), then recurrent mask (B, H) (or (4, B, H)), values 0 or 1 / (1 - rate), reused at
    every step; the outputs equal the reference loop run with those masks."""
    rate = 0.3
    layer = LSTM(5, dropout=rate, recurrent_dropout=recurrent_dropout, return_sequences=True, seed=11)
    x = torch.tensor(rnd(3, 6, 4))
    with torch.no_grad():
        out = layer(x, training=True)
    per_gate = recurrent_dropout > 0
    generator = torch.Generator().manual_seed(11)
    mx = draw_dropout_mask(rate, torch.empty(3, 4), per_gate, generator)
    mh = draw_dropout_mask(recurrent_dropout, torch.empty(3, 5), per_gate, generator)
    assert all(v == 0.0 or v == pytest.approx(1 / (1 - rate)) for v in torch.unique(mx).tolist())
    kernel, recurrent, bias = layer.weights
    weights = DirectionWeights(w_ih=kernel.t(), w_hh=recurrent.t(), b_ih=bias)
    run = DirectionRun(torch.tanh, torch.sigmoid, input_dropout_mask=mx, recurrent_dropout_mask=mh)
    with torch.no_grad():
        expected, _, _ = run_direction_reference(
            x.transpose(0, 1), torch.zeros(3, 5), torch.zeros(3, 5), weights, run
        )
    torch.testing.assert_close(out, expected.transpose(0, 1), atol=1e-6, rtol=1e-5)


def test_dropout_keep_rate_and_scaling():
    generator = torch.Generator().manual_seed(0)
    mask = draw_dropout_mask(0.25, torch.empty(400, 300), False, generator)
    values = torch.unique(mask).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75)
    assert abs(float((mask > 0).float().mean()) - 0.75) < 0.01


def test_dropout_is_reproducible_with_seed_and_new_at_each_call():
    def make():
        torch.manual_seed(0)
        return LSTM(4, dropout=0.4, recurrent_dropout=0.2, seed=5)

    a, b = make(), make()
    x = rnd(2, 5, 3)
    with torch.no_grad():
        first_a, first_b = a(x, training=True), b(x, training=True)
        torch.testing.assert_close(first_a, first_b)
        assert not torch.allclose(a(x, training=True), first_a)  # a new mask per call
    unseeded = LSTM(4, dropout=0.4)
    unseeded(x)
    torch.manual_seed(3)
    y1 = unseeded(x, training=True)
    torch.manual_seed(3)
    torch.testing.assert_close(unseeded(x, training=True), y1)


def test_train_mode_is_keras_fit():
    layer = LSTM(4, dropout=0.9, seed=0)
    x = rnd(2, 3, 3)
    assert not layer.training  # created in eval mode: a plain call is Keras's inference call
    with torch.no_grad():
        reference = layer(x)
        layer.train()
        assert not torch.allclose(layer(x), reference)
        torch.testing.assert_close(layer(x, training=False), reference)


# -- states ---------------------------------------------------------------------------------------------
def test_stateful_batch_size_and_reset():
    layer = LSTM(3, stateful=True, return_state=True)
    x = rnd(2, 4, 5)
    _, h1, c1 = layer(x)
    torch.testing.assert_close(layer.states[0], h1.detach())
    with pytest.raises(ValueError, match="expected batch size 2, received batch size 3"):
        layer(rnd(3, 4, 5))
    layer.reset_states()
    assert float(layer.states[0].abs().sum()) == 0.0
    h, c = rnd(2, 3), rnd(2, 3)
    layer.reset_states([h, c])
    np.testing.assert_array_equal(layer.states[0].numpy(), h)
    with pytest.raises(ValueError, match="states\\[0\\] .* must have shape \\(2, 3\\), got \\(4, 3\\)"):
        layer.reset_states([rnd(4, 3), rnd(4, 3)])
    with pytest.raises(AttributeError, match=r"^Layer must be stateful\. "):
        LSTM(3).reset_states()
    with pytest.raises(ValueError, match="batch size must be static"):
        LSTM(3, stateful=True).build((None, 4, 5))


def test_stateful_explicit_initial_state_overrides_stored_state():
    """Keras 3's rule (tf-keras ignores it once the stored state is non-zero)."""
    layer = LSTM(3, stateful=True)
    plain = LSTM(3)
    x = rnd(2, 4, 5)
    layer(x)
    plain.set_weights(layer.get_weights())
    state = [rnd(2, 3), rnd(2, 3)]
    with torch.no_grad():
        torch.testing.assert_close(layer(x, initial_state=state), plain(x, initial_state=state))


def test_time_major_and_unroll():
    torch.manual_seed(0)
    batch_major = LSTM(3, return_sequences=True)
    time_major = LSTM(3, return_sequences=True, time_major=True, unroll=True)
    x = rnd(2, 6, 4)
    mask = RNG.random((2, 6)) > 0.3
    with torch.no_grad():
        y = batch_major(x, mask=mask)
        time_major.set_weights(batch_major.get_weights())
        torch.testing.assert_close(time_major(x.transpose(1, 0, 2), mask=mask.T), y.transpose(0, 1))


# -- torch interop --------------------------------------------------------------------------------------
def test_weights_are_leaf_parameters_in_keras_layout():
    layer = Bidirectional(LSTM(4, return_sequences=True))
    out = layer(rnd(2, 3, 5))
    assert [tuple(w.shape) for w in layer.forward_layer.weights] == [(5, 16), (4, 16), (16,)]
    assert all(isinstance(w, torch.nn.Parameter) and w.is_leaf for w in layer.trainable_weights)
    grads = torch.autograd.grad(out.sum(), layer.trainable_weights)
    assert len(grads) == 6 and all(
        g.shape == w.shape for g, w in zip(grads, layer.trainable_weights, strict=True)
    )
    assert sorted(layer.state_dict()) == sorted(
        f"{d}_layer.{n}" for d in ("forward", "backward") for n in ("kernel", "recurrent_kernel", "bias")
    )
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 6


def test_dtype_and_inputs_are_cast():
    layer = LSTM(2, dtype="float64", return_state=True)
    out, h, c = layer(np.ones((1, 2, 3), dtype=np.float32))
    assert out.dtype == torch.float64 and layer.kernel.dtype == torch.float64
    layer32 = LSTM(2)
    assert layer32(torch.ones(1, 2, 3, dtype=torch.float64)).dtype == torch.float32


def test_callable_activation_and_none():
    layer = LSTM(
        3, activation=lambda t: torch.clamp(t, -1, 1), recurrent_activation=None, return_sequences=True
    )
    linear = LSTM(3, activation="hard_tanh", recurrent_activation="linear", return_sequences=True)
    x = rnd(2, 4, 3)
    layer(x)
    linear.set_weights(layer.get_weights())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), linear(x))


def test_bidirectional_weights_argument_time_major_and_states():
    torch.manual_seed(0)
    reference = Bidirectional(LSTM(3, return_sequences=True, return_state=True), merge_mode="sum")
    x = rnd(2, 5, 4)
    out, *states = reference(x)
    assert len(states) == 4 and tuple(out.shape) == (2, 5, 3)
    weights = reference.get_weights()
    again = Bidirectional(LSTM(3, return_sequences=True, return_state=True), "sum", weights=weights)
    time_major = Bidirectional(LSTM(3, return_sequences=True, return_state=True, time_major=True), "sum")
    time_major.set_weights(reference.get_weights())
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], out)
        got, *got_states = time_major(x.transpose(1, 0, 2))
        torch.testing.assert_close(got.transpose(0, 1), out)
        for a, b in zip(got_states, states, strict=True):
            torch.testing.assert_close(a, b)
    stateful = Bidirectional(LSTM(3, stateful=True))
    stateful(x)
    stateful.reset_states([rnd(2, 3) for _ in range(4)])
    assert len(stateful.states) == 4
    with pytest.raises(AttributeError, match=r"^Layer must be stateful\. "):
        reference.reset_states()


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_same_numbers_as_the_canonical_layer(go_backwards, activation):
    """The front door only translates: the canonical unilstm.LSTM with the converted weights
    (formats.layout.torch_from_keras) and the same options computes the same outputs and states."""
    import unilstm
    from unilstm.formats.layout import torch_from_keras

    torch.manual_seed(1)
    keras_layer = LSTM(
        4, activation=activation, go_backwards=go_backwards, return_sequences=True, return_state=True
    )
    x = rnd(3, 6, 5)
    mask = RNG.random((3, 6)) > 0.3
    out, h, c = keras_layer(x, mask=mask)
    canonical = unilstm.LSTM(
        5, 4, batch_first=True, activation=activation, go_backwards=go_backwards, masked_output="previous"
    )
    state = {f"{k}_l0": torch.tensor(v) for k, v in torch_from_keras(*keras_layer.get_weights()).items()}
    canonical.load_state_dict(state)
    expected, (h_n, c_n) = canonical(torch.tensor(x), mask=torch.tensor(mask))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h, h_n[0])
    torch.testing.assert_close(c, c_n[0])


def test_glu_is_refused_clearly():
    with pytest.raises(ValueError, match="glu"):
        LSTM(4, activation="glu")


def test_keras_api_extras():
    layer = LSTM(4, return_sequences=True, return_state=True)
    assert layer.compute_output_shape((2, 7, 3)) == ((2, 7, 4), (2, 4), (2, 4))
    layer.build((2, 7, 3))
    assert layer.count_params() == 4 * 4 * (3 + 4 + 1)
    assert [tuple(s.shape) for s in layer.get_initial_state(5)] == [(5, 4), (5, 4)]
    bi = Bidirectional(LSTM(4, return_state=True), merge_mode=None)
    assert bi.compute_output_shape((2, 7, 3)) == ((2, 4), (2, 4), (2, 4), (2, 4), (2, 4), (2, 4))
    assert Bidirectional(LSTM(4, return_sequences=True)).compute_output_shape((2, 7, 3)) == (2, 7, 8)
    x, state = rnd(2, 7, 3), [rnd(2, 4), rnd(2, 4)]
    with torch.no_grad():  # Keras's positional order: (inputs, initial_state, mask, training)
        torch.testing.assert_close(layer(x, state)[0], layer(x, initial_state=state)[0])


def test_tf_keras_first_layer_config_keeps_batch_input_shape():
    config = dict(CONFIGS["k2"]["default"]["config"], batch_input_shape=[None, 5, 3])
    assert LSTM.from_config(config).get_config() == config
