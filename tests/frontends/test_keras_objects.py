"""Keras regularizers, constraints and initializers in unilstm.keras against real Keras numbers
(tests/fixtures/keras/{losses,constraints,initializers}.npz from tools/fixtures/make_keras_fixtures.py)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.keras import (
    LSTM,
    Bidirectional,
    apply_constraints,
    constrain,
    constraints,
    initializers,
    regularizers,
)

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras"


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


# -- regularizers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["k3", "k2"])
def test_layer_losses_match_keras(tag):
    """Activity losses of output, h and c (each / batch) then kernel, recurrent and bias regularizers."""
    data = load("losses")
    layer = LSTM.from_config(json.loads(str(data[f"{tag}_config"])))
    layer.set_weights([data[f"{tag}_w_{i}"] for i in range(3)])
    layer(data[f"{tag}_x"])
    got = np.array([float(v.detach()) for v in layer.losses])
    np.testing.assert_allclose(got, data[f"{tag}_losses"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tag", ["k3bi", "k2bi"])
def test_bidirectional_losses_match_keras(tag):
    """Bidirectional(LSTM(kernel_regularizer='l2', activity_regularizer='l1', return_state=True),
    activity_regularizer=L2(0.1)): 13 losses, in each Keras's own order. tf-keras's config does not keep the
    wrapper's activity_regularizer (measured), so it is set again here."""
    data = load("losses")
    layer = Bidirectional.from_config(json.loads(str(data[f"{tag}_config"])))
    if tag == "k2bi":
        layer.activity_regularizer = regularizers.L2(0.1)
    layer.set_weights([data[f"{tag}_w_{i}"] for i in range(6)])
    layer(data[f"{tag}_x"])
    got = np.array([float(v.detach()) for v in layer.losses])
    np.testing.assert_allclose(got, data[f"{tag}_losses"], rtol=1e-5, atol=1e-7)


def test_losses_are_differentiable_and_refresh_each_call():
    layer = LSTM(3, kernel_regularizer="l2", activity_regularizer="l1", return_state=True)
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    layer(x)
    assert len(layer.losses) == 4  # 3 activity (output, h, c) + 1 kernel
    grads = torch.autograd.grad(sum(layer.losses), layer.trainable_weights, allow_unused=True)
    assert grads[0] is not None and float(grads[0].abs().sum()) > 0
    layer(x[:1])
    assert len(layer.losses) == 4


@pytest.mark.parametrize(
    "name, key", [("l1", "reg_l1"), ("l2", "reg_l2"), ("l1l2", "reg_l1l2"), ("l1_l2", "reg_l1_l2_k2")]
)
def test_regularizer_strings_match_keras(name, key):
    data = load("losses")
    got = float(regularizers.get(name)(torch.tensor(data["reg_w"])))
    np.testing.assert_allclose(got, float(data[key]), rtol=1e-5)


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_regularizer_matches_keras(mode):
    data = load("losses")
    got = float(regularizers.OrthogonalRegularizer(0.1, mode)(torch.tensor(data["reg_w"])))
    np.testing.assert_allclose(
        got, float(data["reg_orth_rows" if mode == "rows" else "reg_orth_cols"]), rtol=1e-5
    )


def test_orthogonal_regularizer_on_bias_is_an_error():
    layer = LSTM(2, bias_regularizer="orthogonal_regularizer")
    layer.build((1, 2, 3))
    with pytest.raises(ValueError, match="rank 2"):
        layer.losses  # noqa: B018


# -- constraints ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["max_norm", "max_norm_axis1", "min_max_norm", "non_neg", "unit_norm"])
def test_constraints_match_keras(key):
    data = load("constraints")
    config = json.loads(str(data[f"{key}_config"]))
    constraint = constraints.get(config)
    for part in ("kernel", "bias"):
        if f"{key}_{part}" in data:
            got = constraint(torch.tensor(data[part])).numpy()
            np.testing.assert_allclose(
                got, data[f"{key}_{part}"], rtol=1e-6, atol=1e-6, err_msg=f"{key} {part}"
            )


def test_constraints_after_an_optimizer_step_match_keras():
    """One SGD(0.5) step on sum(LSTM(x)^2) with max_norm / unit_norm / non_neg, as Keras 3's optimizer."""
    data = load("constraints")
    layer = LSTM(3, kernel_constraint="max_norm", recurrent_constraint="unit_norm", bias_constraint="non_neg")
    layer.set_weights([data[f"step_w0_{i}"] for i in range(3)])
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    handle = constrain(optimizer, layer)
    loss = (layer(data["step_x"]) ** 2).sum()
    loss.backward()
    optimizer.step()
    handle.remove()
    for i, got in enumerate(layer.get_weights()):
        np.testing.assert_allclose(got, data[f"step_w1_{i}"], rtol=1e-5, atol=1e-6)


def test_constraints_are_not_applied_at_init_and_apply_to_bidirectional():
    layer = LSTM(3, kernel_constraint=constraints.MaxNorm(0.01), kernel_initializer="ones")
    bi = Bidirectional(layer)
    bi.build((2, 4, 5))
    assert float(bi.forward_layer.kernel.detach().abs().min()) == 1.0  # no constraint at init
    apply_constraints(bi)
    for sub in (bi.forward_layer, bi.backward_layer):
        norms = sub.kernel.detach().norm(dim=0)
        assert float(norms.max()) <= 0.01 + 1e-6


# -- initializers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ufb", [True, False])
@pytest.mark.parametrize("init", ["zeros", "ones", "constant"])
def test_bias_initialization_matches_keras(init, ufb):
    """unit_forget_bias SETS the forget block to 1; the other blocks keep bias_initializer."""
    data = load("initializers")
    arg = {"class_name": "Constant", "config": {"value": 0.5}} if init == "constant" else init
    layer = LSTM(3, unit_forget_bias=ufb, bias_initializer=arg)
    layer.build((3, 5, 4))
    np.testing.assert_array_equal(layer.get_weights()[2], data[f"bias_{init}_{int(ufb)}"])


def test_identity_initializer_matches_keras():
    data = load("initializers")
    layer = LSTM(3, kernel_initializer="identity", recurrent_initializer=initializers.Identity(2.0))
    layer.build((3, 5, 4))
    kernel, recurrent, _ = layer.get_weights()
    np.testing.assert_array_equal(kernel, data["identity_kernel"])
    np.testing.assert_array_equal(recurrent, data["identity_recurrent"])


def test_default_initializers_follow_keras_laws():
    """glorot_uniform over the whole (F, 4H) kernel: |w| <= sqrt(6 / (F + 4H)); orthogonal over the whole
    (H, 4H) recurrent kernel: R R^T = I_H (Keras's own values, in the fixture, satisfy the same)."""
    data = load("initializers")
    torch.manual_seed(0)
    layer = LSTM(8)
    layer.build((3, 5, 6))
    kernel, recurrent, _ = layer.get_weights()
    for k, r in ((kernel, recurrent), (data["default_kernel"], data["default_recurrent"])):
        limit = np.sqrt(6.0 / (6 + 32))
        assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
        np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-5)
        assert not np.allclose(r[:, :8] @ r[:, :8].T, np.eye(8), atol=1e-2)  # blocks are not orthogonal


@pytest.mark.parametrize(
    "name, check",
    [
        ("glorot_normal", lambda w: abs(w.std() - np.sqrt(2 / (60 + 80))) < 0.01),
        ("he_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / 60)),
        ("he_normal", lambda w: np.abs(w).max() <= 2 * np.sqrt(2 / 60) / 0.8796 + 1e-6),
        ("lecun_uniform", lambda w: np.abs(w).max() <= np.sqrt(3 / 60)),
        ("lecun_normal", lambda w: abs(w.std() - np.sqrt(1 / 60)) < 0.01),
        ("random_normal", lambda w: abs(w.std() - 0.05) < 0.005),
        ("RandomUniform", lambda w: np.abs(w).max() <= 0.05),
        ("truncated_normal", lambda w: np.abs(w).max() <= 0.1),
        ("ones", lambda w: (w == 1).all()),
        ("zero", lambda w: (w == 0).all()),
        (
            {
                "class_name": "VarianceScaling",
                "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
            },
            lambda w: np.abs(w).max() <= np.sqrt(3 * 2 / 80),
        ),
        (lambda shape, dtype=None: torch.full(shape, 0.25), lambda w: (w == 0.25).all()),
        (np.full((60, 80), 3.0, dtype=np.float32), lambda w: (w == 3).all()),
    ],
)
def test_initializers_by_name_dict_and_callable(name, check):
    layer = LSTM(20, kernel_initializer=name)
    layer.build((1, 2, 60))
    assert check(layer.get_weights()[0])


def test_seeded_initializer_is_reproducible_and_global_seed_reproduces_unseeded():
    a = initializers.GlorotUniform(seed=3)((4, 8))
    b = initializers.GlorotUniform(seed=3)((4, 8))
    torch.testing.assert_close(a, b)
    torch.manual_seed(1)
    first = LSTM(3)
    first.build((1, 2, 4))
    torch.manual_seed(1)
    second = LSTM(3)
    second.build((1, 2, 4))
    for x, y in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_unknown_objects_are_errors():
    with pytest.raises(ValueError, match="kernel_initializer: unknown initializer 'glorot'"):
        LSTM(2, kernel_initializer="glorot")
    with pytest.raises(ValueError, match="kernel_regularizer: unknown regularizer"):
        LSTM(2, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="bias_constraint: unknown constraint class 'Radial'"):
        LSTM(2, bias_constraint={"class_name": "Radial", "config": {}})
    with pytest.raises(ValueError, match="STFT"):
        LSTM(2, kernel_initializer="stft").build((1, 2, 3))


def test_none_initializer_is_an_error_naming_the_argument():
    layer = LSTM(2, kernel_initializer=None)
    with pytest.raises(TypeError, match="kernel_initializer: None cannot initialize a weight"):
        layer.build((1, 2, 3))


def test_three_sgd_steps_match_a_keras_training_loop():
    """A custom Keras 3 loop: loss = <y, cot> + sum(layer.losses) with L1L2 / l2 weight regularizers, an l1
    activity regularizer, max_norm and non_neg constraints, masks, SGD(0.3), three steps. The torch loop adds
    ``sum(layer.losses)`` and lets :func:`constrain` apply the constraints after each step."""
    data = load("training")
    layer = LSTM(
        3,
        return_sequences=True,
        kernel_regularizer=regularizers.L1L2(0.01, 0.02),
        recurrent_regularizer="l2",
        activity_regularizer="l1",
        kernel_constraint=constraints.MaxNorm(1.0),
        bias_constraint="non_neg",
    )
    layer.set_weights([data[f"w0_{i}"] for i in range(3)])
    optimizer = torch.optim.SGD(layer.trainable_weights, lr=0.3)
    constrain(optimizer, layer)
    layer.train()
    for step in range(3):
        optimizer.zero_grad()
        y = layer(data[f"x_{step}"], mask=data[f"mask_{step}"])
        loss = (y * torch.tensor(data[f"cot_{step}"])).sum() + sum(layer.losses)
        np.testing.assert_allclose(float(loss.detach()), float(data[f"loss_{step}"]), rtol=1e-5)
        loss.backward()
        optimizer.step()
    for i, got in enumerate(layer.get_weights()):
        np.testing.assert_allclose(got, data[f"w3_{i}"], rtol=1e-4, atol=1e-6)
