"""tf-keras's own LSTM tests, ported to the Keras door.

Source: keras-team/tf-keras, ``tf_keras/layers/rnn/lstm_test.py`` (commit dd0a7237b9b2, 2026-03-22): the
classes ``LSTMGraphRewriteTest`` and ``LSTMLayerTest`` (many tests appear in both; each is ported once).
Tolerances are tf's (``assertAllClose``: atol = rtol = 1e-6 unless the test gives others). Translation:
numpy in, torch out; a Keras ``Sequential``/``Model`` becomes the door's layers called in turn (a
``torch.nn.Embedding`` with ``mask = ids != 0`` for ``Embedding(mask_zero=True)``; ``Masking()`` gives
``mask = (x != 0).any(-1)``); ``fit``/``train_on_batch`` becomes torch SGD steps on the same loss,
``predict`` a call without gradients in eval mode; ``keras.regularizers.l1`` / ``constraints.max_norm``
are Keras's aliases of ``L1`` / ``MaxNorm``. Where the source only checks that training runs, the port
checks that the step runs and changes the weights.

Ported: ``test_static_shape_inference_LSTM`` (as ``compute_output_shape``), ``test_dynamic_behavior_LSTM``,
``test_stacking_LSTM``, ``test_from_config_LSTM``, ``test_specify_initial_state_keras_tensor`` and
``..._non_keras_tensor`` (initial states given as tensors reach the output and train),
``test_reset_states_with_values`` (but its last lines, which assign ``tf.Variable`` states),
``test_specify_state_with_masking``, ``test_return_state``, ``test_state_reuse``,
``test_implementation_mode_LSTM`` (0, 1, 2: both classes' versions: layer test, constraints, Masking +
fit), ``test_masking_with_stacking_LSTM`` (``LSTMGraphRewriteTest``'s version, two LSTM layers),
``test_lstm_model_save_load`` (through the door's ``.weights.h5``: it cannot write legacy ``.h5``, README),
``test_lstm_output_on_multiple_kernel`` (CPU against CUDA; skipped without CUDA),
``test_return_sequences_LSTM``, ``test_float64_LSTM``, ``test_regularizers_LSTM``,
``test_statefulness_LSTM`` (``LSTMGraphRewriteTest``'s version, with the mixed-padding check),
``test_stateful_LSTM_training``, ``test_dropout_LSTM``, ``test_bidirectional``,
``test_explicit_device_with_go_backward_and_mask``, ``test_with_fully_masked_inputs`` (plus: the fully
masked row's output is zeros, Keras's rule), ``test_deepcopy``,
``test_recurrent_dropout_with_implementation_restriction``, ``test_constraints_LSTM``,
``test_with_masking_layer_LSTM``.

Left out:
- ``test_could_use_defun_backend``, ``test_use_on_default_activation_with_gpu_kernel``,
  ``test_LSTM_runtime``, ``test_LSTM_runtime_with_mask``, ``test_LSTM_runtime_with_cond``: TensorFlow's
  kernel selection (``_could_use_gpu_kernel``, ``return_runtime``, grappler).
- ``test_v1_session_behavior``: TF1 graphs and sessions.
- ``test_dropout_variable_name``: TF variable names of the dropout generator.
- ``test_initial_states_as_other_inputs``: initial states passed as extra members of a list input, tf-keras's
  functional API; the door takes them as ``initial_state=`` (README).
- ``LSTMLayerTest.test_masking_with_stacking_LSTM`` (``RNN([LSTMCell, ...])``) is ported in
  ``test_keras_rnn.py`` on ``unilstm.keras.RNN``. ``test_deep_copy_LSTM`` is ported in
  ``test_keras_cell.py`` on ``unilstm.keras.LSTMCell``.
- ``test_cloned_weight_names``: ``keras.models.clone_model`` and TF variable names.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, Bidirectional, constraints, load_weights, regularizers, save_model

RNG = np.random.default_rng(13)


def random(*shape):
    return RNG.random(shape)


def assert_all_close(a, b, atol=1e-6, rtol=1e-6):
    """tf.test.TestCase.assertAllClose (same defaults)."""

    def as_numpy(value):
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    np.testing.assert_allclose(as_numpy(a), as_numpy(b), atol=atol, rtol=rtol)


def layer_test(kwargs, input_shape, input_dtype="float32"):
    """tf-keras's ``test_utils.layer_test``: the layer runs on random input, its output has the expected
    shape and dtype, ``from_config(get_config())`` repeats the config, and a copy made from the config with
    the same weights computes the same output."""
    layer = LSTM(**kwargs)
    x = 10 * RNG.random(input_shape).astype(input_dtype)
    with torch.no_grad():
        y = layer(x)
    expected = layer.compute_output_shape(input_shape)
    assert tuple(y.shape) == expected
    assert y.dtype == {"float32": torch.float32, "float64": torch.float64}[input_dtype]
    again = LSTM.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    again.set_weights(layer.get_weights())
    with torch.no_grad():
        assert_all_close(again(x), y, atol=1e-6, rtol=1e-6)
    return layer


def sgd_step(modules, loss_fn, lr=0.01):
    """One ``train_on_batch``: an SGD step on ``loss_fn()``; returns the loss and asserts weights moved."""
    for module in modules:
        module.train()
    loss = loss_fn()  # builds unbuilt layers, as Keras's first call
    parameters = [p for m in modules for p in m.parameters()]
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(parameters, lr=lr)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for module in modules:
        module.eval()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, parameters, strict=True))
    return loss


def mse(y, target):
    return ((y - torch.as_tensor(target, dtype=y.dtype)) ** 2).mean()


def categorical_crossentropy(y, target):
    y = y / y.sum(-1, keepdim=True)
    return -(torch.as_tensor(target, dtype=y.dtype) * torch.log(y.clamp_min(1e-7))).sum(-1).mean()


def masking(x):
    """Keras's ``Masking()``: a step counts where any feature is non-zero."""
    return (np.asarray(x) != 0).any(-1)


# -- shapes, configs ------------------------------------------------------------------------------------
def test_static_shape_inference_LSTM():  # noqa: N802 (the source's name)
    timesteps, embedding_dim, units = 3, 4, 2
    layer = LSTM(units, return_sequences=True)
    assert layer.compute_output_shape((None, timesteps, embedding_dim)) == (None, timesteps, units)


def test_dynamic_behavior_LSTM():  # noqa: N802
    num_samples, timesteps, embedding_dim, units = 2, 3, 4, 2
    layer = LSTM(units, input_shape=(None, embedding_dim))
    x = random(num_samples, timesteps, embedding_dim)
    y = random(num_samples, units)
    sgd_step([layer], lambda: mse(layer(x), y), lr=0.001)


def test_stacking_LSTM():  # noqa: N802
    inputs = random(2, 3, 4)
    targets = np.abs(random(2, 3, 5))
    targets /= targets.sum(axis=-1, keepdims=True)
    first = LSTM(10, return_sequences=True, unroll=False)
    second = LSTM(5, return_sequences=True, unroll=False)
    sgd_step([first, second], lambda: categorical_crossentropy(second(first(inputs)), targets))


def test_from_config_LSTM():  # noqa: N802
    for stateful in (False, True):
        l1 = LSTM(units=1, stateful=stateful)
        l2 = LSTM.from_config(l1.get_config())
        assert l1.get_config() == l2.get_config()


# -- states -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keras_tensor", [True, False])
def test_specify_initial_state(keras_tensor):
    """``test_specify_initial_state_keras_tensor`` (states are model inputs) and ``..._non_keras_tensor``
    (states are random variables): the given states are used (the output depends on them) and the model
    trains."""
    num_states, timesteps, embedding_dim, units, num_samples = 2, 3, 4, 3, 2
    layer = LSTM(units)
    inputs = random(num_samples, timesteps, embedding_dim)
    if keras_tensor:
        initial_state = [torch.tensor(random(num_samples, units), dtype=torch.float32, requires_grad=True)
                         for _ in range(num_states)]
    else:
        initial_state = [torch.randn(num_samples, units, requires_grad=True) for _ in range(num_states)]
    targets = random(num_samples, units)
    output = layer(inputs, initial_state=initial_state)
    grads = torch.autograd.grad(output.sum(), initial_state)
    assert all(float(g.abs().sum()) > 0 for g in grads)
    sgd_step([layer], lambda: categorical_crossentropy(layer(inputs, initial_state=initial_state), targets))


def test_reset_states_with_values():
    num_states, timesteps, embedding_dim, units, num_samples = 2, 3, 4, 3, 2
    layer = LSTM(units, stateful=True)
    layer.build((num_samples, timesteps, embedding_dim))
    initial_weight_count = len(layer.weights)
    layer.reset_states()
    assert len(layer.states) == num_states
    assert layer.states[0] is not None
    assert_all_close(layer.states[0], np.zeros(tuple(layer.states[0].shape)), atol=1e-4)
    state_shapes = [tuple(state.shape) for state in layer.states]
    values = [np.ones(shape) for shape in state_shapes]
    layer.reset_states(values)
    assert_all_close(layer.states[0], np.ones(tuple(layer.states[0].shape)), atol=1e-4)

    # Test with invalid data
    with pytest.raises(ValueError):
        layer.reset_states([1] * (len(layer.states) + 1))

    assert initial_weight_count == len(layer.weights)


def test_specify_state_with_masking():
    num_states, timesteps, embedding_dim, units, num_samples = 2, 3, 4, 3, 2
    layer = LSTM(units)
    inputs = random(num_samples, timesteps, embedding_dim)
    initial_state = [random(num_samples, units) for _ in range(num_states)]
    targets = random(num_samples, units)
    # the source calls Masking() and drops its output, so the LSTM sees no mask
    sgd_step([layer], lambda: categorical_crossentropy(layer(inputs, initial_state=initial_state), targets))


def test_return_state():
    num_states, timesteps, embedding_dim, units, num_samples = 2, 3, 4, 3, 2
    layer = LSTM(units, return_state=True, stateful=True)
    inputs = random(num_samples, timesteps, embedding_dim)
    with torch.no_grad():
        outputs = layer(inputs, mask=masking(inputs))
    state = outputs[1:]
    assert len(state) == num_states
    assert_all_close(layer.states[0], state[0], atol=1e-4)


def test_state_reuse():
    timesteps, embedding_dim, units, num_samples = 3, 4, 3, 2
    layer = LSTM(units, return_state=True, return_sequences=True)
    second = LSTM(units)
    inputs = random(num_samples, timesteps, embedding_dim)
    with torch.no_grad():
        output, *state = layer(inputs)
        result = second(output, initial_state=state)
        fresh = second(output)
    assert tuple(result.shape) == (num_samples, units)
    assert not torch.allclose(result, fresh)  # the states were used


# -- implementations, regularizers, constraints -------------------------------------------------------------
@pytest.mark.parametrize("implementation_mode", [0, 1, 2])
def test_implementation_mode_LSTM(implementation_mode):  # noqa: N802
    """Guards issue 13 item 7: tf-keras (and Keras 3) accept ``implementation=0``; the door refused it.
    Both compute it as 2 (one mask per dropout), and tf-keras's ``from_config`` turns 0 into 1."""
    num_samples, timesteps, embedding_dim, units = 2, 3, 4, 2
    layer = layer_test(
        {"units": units, "implementation": implementation_mode},
        input_shape=(num_samples, timesteps, embedding_dim),
    )
    assert layer.implementation == implementation_mode
    tf_keras_config = {**layer.get_config(), "implementation": implementation_mode, "time_major": False}
    assert LSTM.from_config(tf_keras_config).implementation == (1 if implementation_mode == 0 else
                                                               implementation_mode)

    k_constraint = constraints.MaxNorm(0.01)
    r_constraint = constraints.MaxNorm(0.01)
    b_constraint = constraints.MaxNorm(0.01)
    layer = LSTM(
        5,
        return_sequences=False,
        weights=None,
        input_shape=(None, embedding_dim),
        kernel_constraint=k_constraint,
        recurrent_constraint=r_constraint,
        bias_constraint=b_constraint,
    )
    layer.build((None, None, embedding_dim))
    assert layer.kernel_constraint == k_constraint
    assert layer.recurrent_constraint == r_constraint
    assert layer.bias_constraint == b_constraint

    inputs = random(2, 3, 4)
    targets = np.abs(random(2, 3, 5))
    targets /= targets.sum(axis=-1, keepdims=True)
    layer = LSTM(units=5, return_sequences=True, unroll=False)
    sgd_step([layer], lambda: categorical_crossentropy(layer(inputs, mask=masking(inputs)), targets))


def test_recurrent_dropout_with_implementation_restriction():
    layer = LSTM(2, recurrent_dropout=0.1, implementation=2)
    # The implementation is force to 1 due to the limit of recurrent_dropout.
    assert layer.implementation == 1


def test_regularizers_LSTM():  # noqa: N802
    embedding_dim = 4
    layer = LSTM(
        5,
        return_sequences=False,
        weights=None,
        input_shape=(None, embedding_dim),
        kernel_regularizer=regularizers.L1(0.01),
        recurrent_regularizer=regularizers.L1(0.01),
        bias_regularizer="l2",
        activity_regularizer="l1",
    )
    layer.build((None, None, 2))
    assert len(layer.losses) == 3
    layer(np.ones((2, 3, 2)))
    assert len(layer.losses) == 4


def test_constraints_LSTM():  # noqa: N802
    embedding_dim = 4
    k_constraint = constraints.MaxNorm(0.01)
    r_constraint = constraints.MaxNorm(0.01)
    b_constraint = constraints.MaxNorm(0.01)
    layer = LSTM(
        5,
        return_sequences=False,
        weights=None,
        input_shape=(None, embedding_dim),
        kernel_constraint=k_constraint,
        recurrent_constraint=r_constraint,
        bias_constraint=b_constraint,
    )
    layer.build((None, None, embedding_dim))
    assert layer.kernel_constraint == k_constraint
    assert layer.recurrent_constraint == r_constraint
    assert layer.bias_constraint == b_constraint


# -- masking -------------------------------------------------------------------------------------------------
def test_masking_with_stacking_LSTM():  # noqa: N802
    inputs = random(2, 3, 4)
    targets = np.abs(random(2, 3, 5))
    targets /= targets.sum(axis=-1, keepdims=True)
    first = LSTM(10, return_sequences=True, unroll=False)
    second = LSTM(5, return_sequences=True, unroll=False)
    mask = masking(inputs)
    sgd_step([first, second], lambda: categorical_crossentropy(second(first(inputs, mask=mask), mask=mask),
                                                                targets))


@pytest.mark.parametrize("unroll", [True, False])
def test_with_masking_layer_LSTM(unroll):  # noqa: N802
    inputs = random(2, 3, 4)
    targets = np.abs(random(2, 3, 5))
    targets /= targets.sum(axis=-1, keepdims=True)
    layer = LSTM(units=5, return_sequences=True, unroll=unroll)
    sgd_step([layer], lambda: categorical_crossentropy(layer(inputs, mask=masking(inputs)), targets))


def test_explicit_device_with_go_backward_and_mask():
    batch_size, timestep, masksteps, units = 8, 7, 5, 4
    inputs = RNG.standard_normal((batch_size, timestep, units)).astype(np.float32)
    mask = np.ones((batch_size, timestep)).astype(bool)
    mask[:, masksteps:] = 0

    lstm_layer = LSTM(units, return_sequences=True, go_backwards=True)
    with torch.no_grad():
        outputs_masked = lstm_layer(inputs, mask=torch.tensor(mask))
        outputs_trimmed = lstm_layer(inputs[:, :masksteps])
    assert_all_close(outputs_masked[:, -masksteps:], outputs_trimmed)


def test_with_fully_masked_inputs():
    num_samples, timestep, embedding_dim, vocab_size, units = 8, 5, 4, 20, 2
    inputs = RNG.integers(0, vocab_size, size=(num_samples, timestep))
    # Set the first inputs to be fully zero.
    inputs[0, :] = 0
    embedding = torch.nn.Embedding(vocab_size, embedding_dim)
    layer = LSTM(units)
    ids = torch.as_tensor(inputs)
    with torch.no_grad():
        output = layer(embedding(ids), mask=ids != 0)
    assert tuple(output.shape) == (num_samples, units) and bool(torch.isfinite(output).all())
    assert float(output[0].abs().max()) == 0.0  # no step counted: the initial (zero) output


# -- stateful models -------------------------------------------------------------------------------------
def test_statefulness_LSTM():  # noqa: N802
    num_samples, timesteps, embedding_dim, units = 2, 3, 4, 2
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(4, embedding_dim)
    layer = LSTM(units, return_sequences=False, stateful=True, weights=None)

    def model(ids):
        ids = torch.as_tensor(ids, dtype=torch.long)
        return layer(embedding(ids), mask=ids != 0)

    def predict(ids):
        with torch.no_grad():
            return model(ids).numpy()

    out1 = predict(np.ones((num_samples, timesteps)))
    assert out1.shape == (num_samples, units)

    # train once so that the states change
    sgd_step([embedding, layer], lambda: mse(model(np.ones((num_samples, timesteps))),
                                             np.ones((num_samples, units))))
    out2 = predict(np.ones((num_samples, timesteps)))

    # if the state is not reset, output should be different
    assert out1.max() != out2.max()

    # check that output changes after states are reset
    # (even though the model itself didn't change)
    layer.reset_states()
    out3 = predict(np.ones((num_samples, timesteps)))
    assert out2.max() != out3.max()

    # check that container-level reset_states() works
    layer.reset_states()
    out4 = predict(np.ones((num_samples, timesteps)))
    assert_all_close(out3, out4, atol=1e-5)

    # check that the call to `predict` updated the states
    out5 = predict(np.ones((num_samples, timesteps)))
    assert out4.max() != out5.max()

    # Check masking
    layer.reset_states()

    left_padded_input = np.ones((num_samples, timesteps))
    left_padded_input[0, :1] = 0
    left_padded_input[1, :2] = 0
    out6 = predict(left_padded_input)

    layer.reset_states()

    right_padded_input = np.ones((num_samples, timesteps))
    right_padded_input[0, -1:] = 0
    right_padded_input[1, -2:] = 0
    out7 = predict(right_padded_input)

    layer.reset_states()

    mix_padded_input = np.ones((num_samples, timesteps))
    mix_padded_input[0, 1] = 0
    mix_padded_input[1, 0] = 0
    mix_padded_input[1, 2] = 0
    out8 = predict(mix_padded_input)

    assert_all_close(out7, out6, atol=1e-5)
    assert_all_close(out8, out7, atol=1e-5)


def test_stateful_LSTM_training():  # noqa: N802
    vocab_size, embedding_dim, batch_size, timestep, units = 20, 10, 8, 12, 5
    x = RNG.integers(0, vocab_size, size=(batch_size, timestep))
    y = RNG.integers(0, vocab_size, size=(batch_size, timestep))
    embedding = torch.nn.Embedding(vocab_size, embedding_dim)
    layer = LSTM(units, return_sequences=True, stateful=True)
    dense = torch.nn.Linear(units, vocab_size)

    def loss():
        logits = dense(layer(embedding(torch.as_tensor(x))))
        targets = torch.as_tensor(y).reshape(-1)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets)

    sgd_step([embedding, layer, dense], loss)
    assert layer.states is not None and float(layer.states[0].abs().sum()) > 0


def test_dropout_LSTM():  # noqa: N802
    num_samples, timesteps, embedding_dim, units = 2, 3, 4, 2
    layer = layer_test(
        {"units": units, "dropout": 0.1, "recurrent_dropout": 0.1},
        input_shape=(num_samples, timesteps, embedding_dim),
    )
    x = random(num_samples, timesteps, embedding_dim)
    assert tuple(layer(x, training=True).shape) == (num_samples, units)


def test_return_sequences_LSTM():  # noqa: N802
    layer_test({"units": 2, "return_sequences": True}, input_shape=(2, 3, 4))


def test_float64_LSTM():  # noqa: N802
    layer_test({"units": 2, "return_sequences": True, "dtype": "float64"}, input_shape=(2, 3, 4),
               input_dtype="float64")


def test_bidirectional():
    batch, timestep, vocab_size = 128, 20, 1000
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(vocab_size, 64)
    first = Bidirectional(LSTM(64, return_sequences=True))
    second = Bidirectional(LSTM(32))
    dense1, dense2 = torch.nn.Linear(64, 64), torch.nn.Linear(64, 1)

    def model(ids):
        h = second(first(embedding(torch.as_tensor(ids))))
        return torch.sigmoid(dense2(torch.relu(dense1(h))))[:, 0]

    x = RNG.integers(0, vocab_size, size=(batch, timestep))
    y = RNG.integers(0, 1, size=(batch,))
    modules = [embedding, first, second, dense1, dense2]
    sgd_step(modules, lambda: torch.nn.functional.binary_cross_entropy(model(x), torch.as_tensor(y).float()))
    with torch.no_grad():
        assert tuple(model(x).shape) == (batch,)


# -- files, devices, copies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias, bias_initializer", [(True, "zeros"), (False, "zeros"),
                                                        (True, "random_uniform")])
def test_lstm_model_save_load(tmp_path, use_bias, bias_initializer):
    path = tmp_path / "test.weights.h5"
    batch, timestep, input_dim, units = 10, 3, 5, 2
    x = random(batch, timestep, input_dim)

    def build_model():
        return LSTM(units, use_bias=use_bias, bias_initializer=bias_initializer)

    layer = build_model()
    with torch.no_grad():
        y_ref = layer(x)
    save_model([layer], path, input_shape=(timestep, input_dim))

    new_layer = build_model()
    new_layer.build((None, timestep, input_dim))
    load_weights(new_layer, path)
    with torch.no_grad():
        y = new_layer(x)
    assert_all_close(y, y_ref)
    for a, b in zip(layer.get_weights(), new_layer.get_weights(), strict=True):
        assert_all_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the source's GPU half)")
def test_lstm_output_on_multiple_kernel():
    x_train = random(100, 4, 10).astype(np.float32)
    cpu_layer = LSTM(8)
    with torch.no_grad():
        y_1 = cpu_layer(x_train)
    gpu_layer = LSTM(8)
    gpu_layer.build((None, 4, 10))
    gpu_layer.set_weights(cpu_layer.get_weights())
    gpu_layer.to("cuda")
    with torch.no_grad():
        y_2 = gpu_layer(x_train)
    assert y_2.device.type == "cuda"
    assert_all_close(y_1, y_2)


def test_deepcopy():
    """Guards issue 13 item 7: a copy of an unbuilt layer drew the same weights as the original (its
    unseeded initializers' seeds were copied); both Kerases draw new ones."""
    original_layer = LSTM(5)
    copied_layer = copy.deepcopy(original_layer)
    assert copied_layer.units == 5
    assert original_layer.get_config() == original_layer.get_config()

    # Copy layer before layer call on inputs without weight initialization.
    inputs = RNG.normal(size=[32, 10, 8]).astype(np.float32)
    original_layer = LSTM(4)
    copied_layer = copy.deepcopy(original_layer)
    with torch.no_grad():
        outputs = original_layer(inputs)
        copied_outputs = copied_layer(inputs)
    assert not np.allclose(outputs.numpy(), copied_outputs.numpy(), atol=1e-6, rtol=1e-6)

    # Copy layer after layer call on inputs with weight initialization.
    original_layer = LSTM(4)
    with torch.no_grad():
        outputs = original_layer(inputs)
        copied_layer = copy.deepcopy(original_layer)
        copied_outputs = copied_layer(inputs)
    assert_all_close(outputs, copied_outputs)
