"""unilstm.keras3.LSTM against keras.layers.LSTM, both on Keras 3's torch backend in this process.

keras reads its backend once per process, at its first import: this module sets KERAS_BACKEND=torch around
that import and skips when keras was already imported with another backend (no other test imports keras).
Every parity test builds Keras's layer first and gives ours its weights (``set_weights``), so both compute
from the same numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if "keras" in sys.modules:
    if sys.modules["keras"].backend.backend() != "torch":
        pytest.skip("keras was imported with another backend in this process", allow_module_level=True)
    keras = sys.modules["keras"]
else:
    _previous = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        keras = pytest.importorskip("keras")
    finally:  # keras has read it; leave the environment of later tests and subprocesses as it was
        if _previous is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = _previous

import torch  # noqa: E402

k3 = pytest.importorskip("unilstm.keras3")

# Keras 3.15.1's torch backend calls np.array(x, copy=False) on torch tensors under numpy 2: not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

B, T, F, H = 4, 7, 3, 5


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, T, F)).astype("float32")


# rows with gaps, a fully masked row, a row masked only at its start: Keras's "previous output" rules
_GAPPY_MASK = np.array(
    [
        [1, 1, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0, 0],
    ],
    dtype=bool,
)


def _flat(result) -> list[np.ndarray]:
    items = result if isinstance(result, (list, tuple)) else [result]
    return [keras.ops.convert_to_numpy(item) for item in items]


@pytest.fixture
def keras_loop_forbidden(monkeypatch):
    """Makes Keras's own time loop fail: a call that passes ran on unilstm's engine."""

    def forbidden(*args, **kwargs):
        raise AssertionError("keras.layers.LSTM.inner_loop ran: the engine was bypassed")

    def forbid() -> None:
        monkeypatch.setattr(keras.layers.LSTM, "inner_loop", forbidden)

    return forbid


SPECS = {
    "default": {},
    "relu": {"activation": "relu"},
    "linear_hard_sigmoid": {"activation": None, "recurrent_activation": "hard_sigmoid"},
    "tanh_sigmoid_swish": {"activation": "silu", "recurrent_activation": "tanh"},
    "no_bias": {"use_bias": False},
    "no_forget_bias_init": {"unit_forget_bias": False, "bias_initializer": "ones"},
    "sequences": {"return_sequences": True},
    "state": {"return_state": True, "return_sequences": True},
    "go_backwards": {"go_backwards": True, "return_sequences": True, "return_state": True},
    "dropout_inference": {"dropout": 0.3, "recurrent_dropout": 0.4, "return_sequences": True},
    "implementation_1": {"implementation": 1, "return_sequences": True},
    "unroll": {"unroll": True, "return_sequences": True},
    "use_cudnn_false": {"use_cudnn": False},
}


@pytest.mark.parametrize("masked", [False, True], ids=["all_steps", "mask_with_gaps"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_predictions_equal_keras(name: str, masked: bool, keras_loop_forbidden) -> None:
    kwargs = SPECS[name]
    x = _data()
    mask = _GAPPY_MASK if masked else None
    keras.utils.set_random_seed(1)
    ref = keras.layers.LSTM(H, **kwargs)
    expected = _flat(ref(x, mask=mask))
    ours = k3.LSTM(H, **kwargs)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    got = _flat(ours(x, mask=mask))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    assert ours.get_config() == {**ref.get_config(), "name": ours.name}


@pytest.mark.parametrize("sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["previous", "zero"])
def test_masked_outputs_and_initial_state(zero_output: bool, sequences: bool, keras_loop_forbidden) -> None:
    """zero_output_for_mask (what Bidirectional sets) and a given initial state, with gaps, backwards."""
    x = _data(2)
    rng = np.random.default_rng(3)
    h0, c0 = (rng.standard_normal((B, H)).astype("float32") for _ in range(2))
    kwargs = {"return_sequences": sequences, "return_state": True, "go_backwards": True,
              "zero_output_for_mask": zero_output}
    ref = keras.layers.LSTM(H, **kwargs)
    expected = _flat(ref(x, initial_state=[h0, c0], mask=_GAPPY_MASK))
    ours = k3.LSTM(H, **kwargs)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    for g, e in zip(_flat(ours(x, initial_state=[h0, c0], mask=_GAPPY_MASK)), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)


def test_stateful_carries_states_like_keras(keras_loop_forbidden) -> None:
    x1, x2 = _data(4), _data(5)
    ref = keras.layers.LSTM(H, stateful=True, return_sequences=True)
    expected = [_flat(ref(x1))[0], _flat(ref(x2))[0]]
    ours = k3.LSTM(H, stateful=True, return_sequences=True)
    ours.build(x1.shape)
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    got = [_flat(ours(x1))[0], _flat(ours(x2))[0]]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    for ref_state, our_state in zip(ref.states, ours.states, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(our_state), keras.ops.convert_to_numpy(ref_state), atol=1e-5
        )
    ours.reset_states()
    assert not np.any(keras.ops.convert_to_numpy(ours.states[0]))


@pytest.mark.parametrize("masked", [False, True], ids=["all_steps", "mask_with_gaps"])
def test_float64_layer_equals_keras(masked: bool, keras_loop_forbidden) -> None:
    """float64 end to end. Keras's masked loop rounds through float32 somewhere (measured: 1.7e-8 from a
    float64 loop written out by hand, against 5.6e-17 for ours), hence the looser bound with a mask."""
    x = _data(6).astype("float64")
    mask = _GAPPY_MASK if masked else None
    ref = keras.layers.LSTM(H, dtype="float64", return_sequences=True)
    expected = _flat(ref(x, mask=mask))[0]
    ours = k3.LSTM(H, dtype="float64", return_sequences=True)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    got = _flat(ours(x, mask=mask))[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 if masked else 1e-12)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_in_the_policy_dtype(policy: str, keras_loop_forbidden) -> None:
    """float32 variables, half-precision compute (Keras's autocast of ``variable.value``): outputs within
    half precision's rounding of Keras's (measured 2.4e-4 float16, 9.8e-4 bfloat16), float32 gradients."""
    x = _data(13)
    ref = keras.layers.LSTM(H, return_sequences=True, dtype=policy)
    expected = _flat(ref(x, mask=_GAPPY_MASK))[0].astype("float32")
    ours = k3.LSTM(H, return_sequences=True, dtype=policy)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    out = ours(x, mask=_GAPPY_MASK)
    assert out.dtype == {"mixed_float16": torch.float16, "mixed_bfloat16": torch.bfloat16}[policy]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out.float()), expected, rtol=0, atol=4e-3)
    out.float().square().sum().backward()
    assert ours.cell.kernel.value.grad.dtype == torch.float32


def test_activation_outside_the_registry_runs_keras_loop() -> None:
    """A custom activation has no engine equivalent: Keras's own loop computes it (same numbers)."""

    def scaled_tanh(v):
        return 0.5 * keras.ops.tanh(v)

    x = _data(7)
    ref = keras.layers.LSTM(H, activation=scaled_tanh)
    expected = _flat(ref(x))[0]
    ours = k3.LSTM(H, activation=scaled_tanh)
    ours.build(x.shape)
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(_flat(ours(x))[0], expected, rtol=0, atol=1e-6)


# -- training ----------------------------------------------------------------------------------------------


def _model(layer_class, kwargs: dict, masking: bool):
    layers = [keras.Input((T, F))]
    if masking:
        layers.append(keras.layers.Masking(0.0))
    layers += [layer_class(H, **kwargs), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def _train(model, x: np.ndarray, y: np.ndarray) -> tuple[list[float], float, np.ndarray]:
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    loss = model.evaluate(x, y, batch_size=8, verbose=0)
    return history.history["loss"], float(loss), model.predict(x, batch_size=8, verbose=0)


TRAINING = {
    "standard": ({}, False),
    "relu_masking": ({"activation": "relu"}, True),
    "dropout_backwards": ({"dropout": 0.3, "seed": 5, "go_backwards": True}, True),
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_fit_evaluate_predict_equal_keras(name: str, keras_loop_forbidden) -> None:
    """A few Adam steps from the same initial weights: losses within 1e-4 relative. The shared input
    dropout mask is Keras's own, so dropout training matches too."""
    kwargs, masking = TRAINING[name]
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, T, F)).astype("float32")
    x[1, 4:] = 0.0  # padding the Masking layer masks
    x[5, :2] = 0.0
    y = rng.standard_normal((8, 1)).astype("float32")
    keras.utils.set_random_seed(2)
    ref = _model(keras.layers.LSTM, kwargs, masking)
    ours = _model(k3.LSTM, kwargs, masking)
    ours.set_weights(ref.get_weights())
    expected = _train(ref, x, y)
    keras_loop_forbidden()
    got = _train(ours, x, y)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-4)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-4, atol=1e-5)
    assert expected[0][-1] < expected[0][0]  # it trained
    for g, e in zip(ours.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-5)


def test_recurrent_dropout_trains_seeded_and_is_off_at_inference(keras_loop_forbidden) -> None:
    """Per-gate masks come from the engine (not Keras's numbers): a seeded layer trains the same twice,
    dropout changes the training losses, and inference ignores it."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, T, F)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    keras.utils.set_random_seed(3)
    dropping = {"recurrent_dropout": 0.5, "seed": 11}
    models = [_model(k3.LSTM, dropping, False), _model(k3.LSTM, dropping, False), _model(k3.LSTM, {}, False)]
    for model in models[1:]:
        model.set_weights(models[0].get_weights())
    keras_loop_forbidden()
    losses = [_train(model, x, y)[0] for model in models]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    assert abs(losses[0][0] - losses[2][0]) > 1e-4
    models[2].set_weights(models[0].get_weights())
    np.testing.assert_array_equal(models[0].predict(x, verbose=0), models[2].predict(x, verbose=0))


# -- models, masks, files ----------------------------------------------------------------------------------


def _embedding_bidirectional(layer_class):
    tokens = keras.Input((T,), dtype="int32")
    embedded = keras.layers.Embedding(10, F, mask_zero=True)(tokens)
    both = keras.layers.Bidirectional(layer_class(H, return_sequences=True), merge_mode="concat")(embedded)
    last = keras.layers.Bidirectional(layer_class(H), merge_mode="sum")(both)
    return keras.Model(tokens, keras.layers.Dense(2)(last))


def test_bidirectional_with_embedding_masks(keras_loop_forbidden) -> None:
    tokens = np.random.default_rng(10).integers(1, 10, (B, T)).astype("int32")
    tokens[0, 3:] = 0  # right padding
    tokens[2, 1] = 0  # a gap
    tokens[3, :] = 0  # nothing
    keras.utils.set_random_seed(4)
    ref = _embedding_bidirectional(keras.layers.LSTM)
    ours = _embedding_bidirectional(k3.LSTM)
    ours.set_weights(ref.get_weights())
    expected = ref.predict(tokens, verbose=0)
    keras_loop_forbidden()
    bidirectional = ours.layers[2]
    assert type(bidirectional.forward_layer) is k3.LSTM and type(bidirectional.backward_layer) is k3.LSTM
    np.testing.assert_allclose(ours.predict(tokens, verbose=0), expected, rtol=0, atol=1e-5)


def test_save_and_load_model_round_trip(tmp_path: Path, keras_loop_forbidden) -> None:
    model = _embedding_bidirectional(k3.LSTM)
    tokens = np.random.default_rng(11).integers(0, 10, (B, T)).astype("int32")
    expected = model.predict(tokens, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    keras_loop_forbidden()
    loaded = keras.models.load_model(path)
    layer = loaded.layers[2].forward_layer
    assert type(layer) is k3.LSTM
    assert layer.get_config() == model.layers[2].forward_layer.get_config()
    np.testing.assert_array_equal(loaded.predict(tokens, verbose=0), expected)
    assert keras.saving.get_registered_name(k3.LSTM) == "unilstm>LSTM"


def test_gradients_reach_keras_variables(keras_loop_forbidden) -> None:
    """Torch autograd through the engine: the weights' gradients equal those through Keras's loop."""
    x = torch.as_tensor(_data(12))
    mask = torch.as_tensor(_GAPPY_MASK)
    ref = keras.layers.LSTM(H, return_sequences=True, activation="relu")
    ref(x, mask=mask).square().sum().backward()
    ours = k3.LSTM(H, return_sequences=True, activation="relu")
    ours.build(tuple(x.shape))
    ours.set_weights(ref.get_weights())
    keras_loop_forbidden()
    ours(x, mask=mask).square().sum().backward()
    for ref_var, our_var in zip(ref.trainable_variables, ours.trainable_variables, strict=True):
        assert our_var.value.grad is not None
        np.testing.assert_allclose(
            our_var.value.grad.numpy(), ref_var.value.grad.numpy(), rtol=1e-5, atol=1e-6
        )


def test_another_backend_is_refused_clearly() -> None:
    """Only the torch backend is installed here (the others need TensorFlow, JAX or SciPy): a fresh process
    imports keras on torch, then reports another backend before unilstm.keras3 is imported."""
    code = (
        "import keras\n"
        "keras.backend.backend = lambda: 'jax'\n"
        "try:\n    import unilstm.keras3\nexcept ImportError as error:\n    print(error)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "keras was imported with the 'jax' backend; set KERAS_BACKEND=torch" in done.stdout, done.stderr


def test_torch_compile_treats_the_engine_as_one_call(keras_loop_forbidden) -> None:
    """model.compile(jit_compile=True) runs torch.compile over the layer: the engine is a graph break
    (measured with Keras's trainer and inductor: fit losses equal keras.layers.LSTM's under jit_compile; the
    eager backend here checks the same tracing in a second)."""
    x = torch.as_tensor(_data(14))
    mask = torch.as_tensor(_GAPPY_MASK)
    layer = k3.LSTM(H, return_sequences=True)
    expected = layer(x, mask=mask)
    keras_loop_forbidden()
    compiled = torch.compile(lambda inputs, steps: layer(inputs, mask=steps), backend="eager")
    torch.testing.assert_close(compiled(x, mask), expected, rtol=0, atol=0)
