"""unilstm.keras against fixtures made by real Keras 3.15.1 (tf.keras) and tf-keras 2.21
(tools/fixtures/make_keras_fixtures.py): outputs, states and gradients, from the real configs and weights."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, Bidirectional

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras"
CASES = sorted(p.stem for p in FIXTURES.glob("k[23]_*.npz"))
OUT_ATOL = 1e-5
#: exponential activations reach 1e7 in these fixtures: float32 then agrees to about 3e-5 relative
OUT_RTOL = {"k3_act_exponential": 1e-4}
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def make_layer(data):
    config = json.loads(str(data["config"]))
    keras2 = str(data["keras"]) == "2"
    cls = Bidirectional if str(data["class_name"]) == "Bidirectional" else LSTM
    layer = cls.from_config(config, keras2=keras2)
    weights = [data[f"weights_{i}"] for i in range(sum(k.startswith("weights_") for k in data))]
    layer.set_weights(weights)
    return layer


def as_list(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def test_fixture_matrix_is_there():
    assert len(CASES) >= 60, CASES


@pytest.mark.parametrize("name", CASES)
def test_outputs_match_keras(name):
    data = load(name)
    layer = make_layer(data)
    for k in range(int(data["calls"])):
        if f"c{k}_reset" in data:
            layer.reset_states()
        kwargs = {}
        if f"c{k}_mask" in data:
            kwargs["mask"] = data[f"c{k}_mask"]
        states = [data[f"c{k}_state_{i}"] for i in range(4) if f"c{k}_state_{i}" in data]
        if states:
            kwargs["initial_state"] = states
        with torch.no_grad():
            outs = as_list(layer(data[f"c{k}_x"], **kwargs))
        expected = [data[f"c{k}_out_{i}"] for i in range(10) if f"c{k}_out_{i}" in data]
        assert len(outs) == len(expected)
        for i, (got, want) in enumerate(zip(outs, expected, strict=False)):
            assert isinstance(got, torch.Tensor)
            assert tuple(got.shape) == want.shape, (name, k, i)
            np.testing.assert_allclose(
                got.numpy(),
                want,
                atol=OUT_ATOL,
                rtol=OUT_RTOL.get(name, 0),
                err_msg=f"{name} call {k} out {i}",
            )


GRAD_CASES = [n for n in CASES if "c0_grad_x" in np.load(FIXTURES / f"{n}.npz").files]


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_match_keras(name):
    data = load(name)
    layer = make_layer(data)
    x = torch.tensor(data["c0_x"], requires_grad=True)
    kwargs = {}
    if "c0_mask" in data:
        kwargs["mask"] = data["c0_mask"]
    states = [
        torch.tensor(data[f"c0_state_{i}"], requires_grad=True) for i in range(4) if f"c0_state_{i}" in data
    ]
    if states:
        kwargs["initial_state"] = states
    outs = as_list(layer(x, **kwargs))
    loss = sum((o * torch.tensor(data[f"c0_cot_{i}"])).sum() for i, o in enumerate(outs))
    weights = layer.trainable_weights
    grads = torch.autograd.grad(loss, [x, *states, *weights])
    expected = [data["c0_grad_x"]] + [data[f"c0_grad_state_{i}"] for i in range(len(states))]
    expected += [data[f"c0_grad_w_{i}"] for i in range(len(weights))]
    labels = ["x"] + [f"state_{i}" for i in range(len(states))] + [f"w_{i}" for i in range(len(weights))]
    for label, got, want in zip(labels, grads, expected, strict=False):
        np.testing.assert_allclose(
            got.numpy(), want, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=f"{name} d{label}"
        )


def test_keras_documented_example():
    layer = LSTM(16, return_sequences=True, return_state=True)
    output, h, c = layer(np.ones((3, 5, 10), dtype=np.float32))
    assert tuple(output.shape) == (3, 5, 16) and tuple(h.shape) == (3, 16) and tuple(c.shape) == (3, 16)
    torch.testing.assert_close(output[:, -1], h)
