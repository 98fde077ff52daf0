"""tf-keras's own Bidirectional tests, ported to the Keras door.

Source: keras-team/tf-keras, ``tf_keras/layers/rnn/bidirectional_test.py`` (commit dd0a7237b9b2,
2026-03-22). Tolerances are tf's (``assertAllClose``: atol = rtol = 1e-6 unless the test gives others).
Translation: numpy in, torch out; ``keras.backend.function`` / ``Model.predict`` become calls without
gradients; ``Masking()`` gives ``mask = (x != 0).any(-1)``; ``fit`` one torch SGD step on the same loss.
Where a test wraps ``SimpleRNN`` only to test the wrapper (weights, trainable, losses, statefulness), it is
adapted to ``LSTM`` and says so; the counts change only where an LSTM has more states.

Ported: ``test_bidirectional_invalid_init`` (the same ValueError, with the door's message),
``test_Bidirectional_merged_value``, ``test_Bidirectional_dropout``, ``test_Bidirectional_state_reuse``,
``test_Bidirectional_state_reuse_with_np_input``, ``test_Bidirectional_output_shape`` (LSTM),
``test_Bidirectional_last_output_with_masking``, ``test_Bidirectional_sequence_output_with_masking``
(LSTM), ``test_custom_backward_layer_error_check``, ``test_custom_backward_layer_serialization``,
``test_reset_states`` (adapted: LSTM, four states); adapted from SimpleRNN to LSTM: ``test_bidirectional``
(merge modes, training, compute_output_shape, config), ``test_bidirectional_weight_loading``,
``test_bidirectional_stacked``, ``test_bidirectional_statefulness``, ``test_Bidirectional_trainable``,
``test_Bidirectional_losses`` (without ``add_loss``, which the door does not have).

Left out:
- ``test_rnn_layer_name``, ``test_custom_backward_rnn_layer_name``: tf-keras writes the wrapped layer's own
  name into the config; the door writes Keras 3's config (``forward_<name>``) unless the wrapper came from a
  tf-keras config (README: Keras 3 signature and configs).
- ``test_full_input_spec``: relies on tf-keras ignoring ``initial_state`` on a stateful layer whose state is
  non-zero, which the README lists as not reproduced (the door follows Keras 3).
- ``test_Bidirectional_with_time_major_input``, ``test_rnn_with_customized_cell``,
  ``test_rnn_with_customized_cell_stacking``, ``test_wrapped_rnn_cell``,
  ``test_Bidirectional_nested_state_reuse``, ``test_Bidirectional_with_constants``,
  ``test_Bidirectional_with_constants_layer_passing_initial_state``: custom cells, ``RNN``, ``LSTMCell``,
  cell wrappers and constants, which the door does not offer.
- ``test_custom_backward_layer``: SimpleRNN with TF checkpoint tracking and ``model_from_json``.
- ``test_Bidirectional_output_shape_return_types``: SimpleRNN subclasses overriding ``call``.
- ``test_Bidirectional_updates``: TF1 graph-mode ``layer.updates``.
- ``test_Bidirectional_ragged_input``: ragged tensors.
- ``test_trainable_parameter_argument``: ``keras.models.clone_model``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, Bidirectional

RNG = np.random.default_rng(31)


def assert_all_close(a, b, atol=1e-6, rtol=1e-6):
    """tf.test.TestCase.assertAllClose (same defaults)."""

    def as_numpy(value):
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    np.testing.assert_allclose(as_numpy(a), as_numpy(b), atol=atol, rtol=rtol)


def to_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def masking(x):
    """Keras's ``Masking()``: a step counts where any feature is non-zero."""
    return (np.asarray(x) != 0).any(-1)


def sgd_step(layer, loss_fn, lr=0.01):
    """One ``fit`` step: SGD on ``loss_fn()``; asserts it ran and moved the weights."""
    layer.train()
    loss = loss_fn()
    parameters = list(layer.parameters())
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(parameters, lr=lr)
    loss.backward()
    optimizer.step()
    layer.eval()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, parameters, strict=True))


def mse(y, target):
    return ((y - torch.as_tensor(target, dtype=y.dtype)) ** 2).mean()


@pytest.mark.parametrize("mode", ["sum", "concat", "ave", "mul"])
def test_bidirectional_adapted_to_lstm(mode):
    samples, dim, timesteps, output_dim = 2, 2, 2, 2
    x = RNG.random((samples, timesteps, dim))
    target_dim = 2 * output_dim if mode == "concat" else output_dim
    y = RNG.random((samples, target_dim))
    layer = Bidirectional(LSTM(output_dim), merge_mode=mode, input_shape=(timesteps, dim))
    sgd_step(layer, lambda: mse(layer(x), y))
    with torch.no_grad():
        ref_shape = tuple(layer(x).shape)
    assert layer.compute_output_shape((None, timesteps, dim)) == (None, *ref_shape[1:])
    again = Bidirectional.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_bidirectional_invalid_init():
    x = torch.zeros((1, 1))
    with pytest.raises(ValueError, match="layer: expected a unilstm.keras.LSTM instance"):
        Bidirectional(x)


def test_bidirectional_weight_loading_adapted_to_lstm():
    samples, dim, timesteps, output_dim = 2, 2, 2, 2
    x = RNG.random((samples, timesteps, dim))
    layer = Bidirectional(LSTM(output_dim), input_shape=(timesteps, dim))
    with torch.no_grad():
        y_ref = layer(x)
        weights = layer.get_weights()
        layer.set_weights(weights)
        y = layer(x)
    assert_all_close(y, y_ref)


def test_bidirectional_stacked_adapted_to_lstm():
    samples, dim, timesteps, output_dim, mode = 2, 2, 2, 2, "sum"
    x = RNG.random((samples, timesteps, dim))
    y = RNG.random((samples, output_dim))
    first = Bidirectional(
        LSTM(output_dim, return_sequences=True), merge_mode=mode, input_shape=(timesteps, dim)
    )
    second = Bidirectional(LSTM(output_dim), merge_mode=mode)
    stack = torch.nn.Sequential(first, second)
    sgd_step(stack, lambda: mse(second(first(x)), y))
    single = Bidirectional(LSTM(output_dim), merge_mode=mode)
    sgd_step(single, lambda: mse(single(x), y))


def test_bidirectional_statefulness_adapted_to_lstm():
    samples, dim, timesteps, output_dim, mode = 2, 2, 2, 2, "sum"
    x = RNG.random((samples, timesteps, dim))
    y = RNG.random((samples, output_dim))
    bidi_rnn = Bidirectional(LSTM(output_dim, stateful=True), merge_mode=mode)
    assert bidi_rnn.stateful

    def predict(batch_size=1):
        with torch.no_grad():
            return torch.cat([bidi_rnn(x[i : i + batch_size]) for i in range(0, samples, batch_size)])

    y_1 = predict()
    bidi_rnn.reset_states()
    y_2 = predict()
    assert_all_close(y_1, y_2)
    sgd_step(bidi_rnn, lambda: mse(bidi_rnn(x[:1]), y[:1]))


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave", "concat", None])
def test_Bidirectional_merged_value(merge_mode):  # noqa: N802 (the source's name)
    samples, dim, timesteps, units = 2, 5, 3, 3
    x = RNG.random((samples, timesteps, dim))
    if merge_mode == "sum":
        def merge_func(y, y_rev):
            return y + y_rev
    elif merge_mode == "mul":
        def merge_func(y, y_rev):
            return y * y_rev
    elif merge_mode == "ave":
        def merge_func(y, y_rev):
            return (y + y_rev) / 2
    elif merge_mode == "concat":
        def merge_func(y, y_rev):
            return np.concatenate((y, y_rev), axis=-1)
    else:
        def merge_func(y, y_rev):
            return [y, y_rev]

    # basic case
    layer = Bidirectional(LSTM(units, return_sequences=True), merge_mode=merge_mode)
    with torch.no_grad():
        y_merged = to_list(layer(x))
        f_forward = layer.forward_layer(x).numpy()
        f_backward = np.flip(layer.backward_layer(x).numpy(), 1)
    y_expected = to_list(merge_func(f_forward, f_backward))
    assert len(y_merged) == len(y_expected)
    for x1, x2 in zip(y_merged, y_expected, strict=True):
        assert_all_close(x1, x2, atol=1e-5)

    # test return_state
    layer = Bidirectional(LSTM(units, return_state=True), merge_mode=merge_mode)
    with torch.no_grad():
        y_merged = to_list(layer(x))
        y_forward = [t.numpy() for t in layer.forward_layer(x)]
        y_backward = [t.numpy() for t in layer.backward_layer(x)]
    n_states = 2
    y_expected = to_list(merge_func(y_forward[0], y_backward[0]))
    assert len(y_merged) == len(y_expected) + n_states * 2
    for x1, x2 in zip(y_merged, y_expected, strict=False):
        assert_all_close(x1, x2, atol=1e-5)

    y_merged = y_merged[-n_states * 2 :]
    y_forward = y_forward[-n_states:]
    y_backward = y_backward[-n_states:]
    for state_birnn, state_inner in zip(y_merged, y_forward + y_backward, strict=True):
        assert_all_close(state_birnn, state_inner, atol=1e-5)


def test_Bidirectional_dropout():  # noqa: N802
    samples, dim, timesteps, units, merge_mode = 2, 5, 3, 3, "sum"
    x = RNG.random((samples, timesteps, dim))

    wrapped = Bidirectional(LSTM(units, dropout=0.2, recurrent_dropout=0.2), merge_mode=merge_mode)
    outputs = to_list(wrapped(x, training=True))
    assert tuple(outputs[0].shape) == (samples, units)

    wrapped = Bidirectional(LSTM(units, dropout=0.2, return_state=True), merge_mode=merge_mode)
    with torch.no_grad():
        y1 = to_list(wrapped(x))
        y2 = to_list(wrapped(x))
    for x1, x2 in zip(y1, y2, strict=True):
        assert_all_close(x1, x2, atol=1e-5)


def test_Bidirectional_state_reuse():  # noqa: N802
    samples, dim, timesteps, units = 2, 5, 3, 3
    input1 = RNG.random((samples, timesteps, dim))
    input2 = RNG.random((samples, timesteps, dim))
    layer = Bidirectional(LSTM(units, return_state=True, return_sequences=True))
    with torch.no_grad():
        state = layer(input1)[1:]

    # test passing invalid initial_state: passing a tensor
    with pytest.raises(ValueError):
        Bidirectional(LSTM(units))(input2, initial_state=state[0])

    # test valid usage: passing a list
    with torch.no_grad():
        output = Bidirectional(LSTM(units))(input2, initial_state=list(state))
    assert tuple(output.shape) == (samples, 2 * units)


def test_Bidirectional_state_reuse_with_np_input():  # noqa: N802
    samples, dim, timesteps, units = 2, 5, 3, 3
    input1 = RNG.random((samples, timesteps, dim)).astype(np.float32)
    layer = Bidirectional(LSTM(units, return_state=True, return_sequences=True))
    state = layer(input1)[1:]
    input2 = RNG.random((samples, timesteps, dim)).astype(np.float32)
    output = Bidirectional(LSTM(units))(input2, initial_state=state)
    assert tuple(output.shape) == (samples, 2 * units)


def test_Bidirectional_trainable_adapted_to_lstm():  # noqa: N802
    layer = Bidirectional(LSTM(3))
    layer(np.zeros((1, 3, 2), np.float32))
    assert len(layer.trainable_weights) == 6
    layer.trainable = False
    assert not layer.trainable_weights
    layer.trainable = True
    assert len(layer.trainable_weights) == 6


def test_Bidirectional_losses_adapted_to_lstm():  # noqa: N802
    layer = Bidirectional(LSTM(3, kernel_regularizer="l1", bias_regularizer="l1", activity_regularizer="l1"))
    layer(np.ones((2, 3, 2), np.float32))
    assert len(layer.losses) == 6


def test_Bidirectional_output_shape():  # noqa: N802
    input_shape = [None, 2, 1]
    num_state = 4

    wrapper = Bidirectional(LSTM(3))
    output_shape = wrapper.compute_output_shape(input_shape)
    assert list(output_shape) == [None, 6]

    wrapper = Bidirectional(LSTM(3, return_state=True))
    output_shape = wrapper.compute_output_shape(input_shape)
    # 1 for output and the rest for forward and backward states
    assert len(output_shape) == 1 + num_state
    assert list(output_shape[0]) == [None, 6]
    for shape in output_shape[1:]:
        assert list(shape) == [None, 3]

    wrapper = Bidirectional(LSTM(3, return_state=True), merge_mode=None)
    output_shape = wrapper.compute_output_shape(input_shape)
    # 1 for forward output and 1 for backward output, and the rest for states
    assert len(output_shape) == 2 + num_state
    for shape in output_shape:
        assert list(shape) == [None, 3]


def test_Bidirectional_last_output_with_masking():  # noqa: N802
    samples, dim, timesteps, units, merge_mode = 2, 5, 3, 3, "concat"
    x = RNG.random((samples, timesteps, dim))
    # clear the first record's timestep 2. Last output should be same as state, not zeroed.
    x[0, 2] = 0
    wrapped = Bidirectional(LSTM(units, return_state=True), merge_mode=merge_mode)
    outputs = to_list(wrapped(x, mask=masking(x), training=True))
    assert len(outputs) == 5
    assert tuple(outputs[0].shape) == (samples, units * 2)
    with torch.no_grad():
        y = to_list(wrapped(x, mask=masking(x)))
    assert len(y) == 5
    assert_all_close(y[0], np.concatenate([y[1].numpy(), y[3].numpy()], axis=1))


def test_Bidirectional_sequence_output_with_masking():  # noqa: N802
    samples, dim, timesteps, units, merge_mode = 2, 5, 3, 3, "concat"
    x = RNG.random((samples, timesteps, dim))
    # clear the first record's timestep 2, and expect the output of timestep 2 is also 0s.
    x[0, 2] = 0
    wrapped = Bidirectional(LSTM(units, return_sequences=True), merge_mode=merge_mode)
    outputs = to_list(wrapped(x, mask=masking(x), training=True))
    assert len(outputs) == 1
    assert tuple(outputs[0].shape) == (samples, timesteps, units * 2)
    with torch.no_grad():
        y = to_list(wrapped(x, mask=masking(x)))
    assert len(y) == 1
    assert_all_close(y[0][0, 2], np.zeros(units * 2))


def test_custom_backward_layer_error_check():
    units = 2
    forward_layer = LSTM(units)
    backward_layer = LSTM(units)
    with pytest.raises(ValueError, match="should have different `go_backwards` value."):
        Bidirectional(forward_layer, merge_mode="concat", backward_layer=backward_layer)

    for attr in ("stateful", "return_sequences", "return_state"):
        kwargs = {attr: True}
        backward_layer = LSTM(units, go_backwards=True, **kwargs)
        with pytest.raises(ValueError, match='expected to have the same value for attribute "' + attr):
            Bidirectional(forward_layer, merge_mode="concat", backward_layer=backward_layer)


def test_custom_backward_layer_serialization():
    units = 2
    forward_layer = LSTM(units)
    backward_layer = LSTM(units, go_backwards=True)
    layer = Bidirectional(forward_layer, merge_mode="concat", backward_layer=backward_layer)
    config = layer.get_config()
    layer_from_config = Bidirectional.from_config(config)
    new_config = layer_from_config.get_config()
    assert config == new_config


def test_reset_states_adapted_to_lstm():
    """Guards the ``states`` check: a dict was read as a list of its keys (tf-keras refuses it)."""
    ref_state = RNG.random((1, 3)).astype(np.float32)
    inp = np.zeros((1, 2, 3), np.float32)
    stateful = LSTM(units=3, stateful=True)
    stateless = LSTM(units=3, stateful=False)
    bid_stateless = Bidirectional(stateless)
    bid_stateful = Bidirectional(stateful)
    bid_stateless(inp)
    bid_stateful(inp)

    with pytest.raises(AttributeError, match="Layer must be stateful."):
        bid_stateless.reset_states()
    with pytest.raises(AttributeError, match="Layer must be stateful."):
        bid_stateless.reset_states([])

    bid_stateful.reset_states()
    bid_stateful.reset_states([ref_state] * 4)  # an LSTM has two states per direction
    assert_all_close(bid_stateful.states[3], ref_state)

    with pytest.raises(
        ValueError, match="Unrecognized value for `states`. Expected `states` to be list or tuple"
    ):
        bid_stateful.reset_states({})
