"""TF1's ``LSTMCell`` (peepholes, cell_clip, num_proj + proj_clip, forget_bias) against unilstm.LSTM with the
same variants: fixtures written by real TensorFlow 2.21 (tools/fixtures/make_tf1_variant_fixtures.py, in
float64), TF1 weights mapped onto unilstm's names and compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import unilstm

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tf1_variants"
CASES = sorted(path.stem for path in FIXTURES.glob("*.npz"))


def tf1_gates_to_torch(array: np.ndarray) -> np.ndarray:
    """TF1 gate blocks [i, j, f, o] (j the candidate) along axis 0 -> torch's [i, f, g, o]."""
    i, j, f, o = np.split(array, 4, axis=0)
    return np.concatenate([i, f, j, o], axis=0)


def tf1_layer(data: dict[str, np.ndarray]) -> tuple[unilstm.LSTM, dict]:
    """A float64 unilstm.LSTM computing the fixture's TF1 cell, and the cell's arguments."""
    config = json.loads(str(data["config"]))
    features = data["x"].shape[-1]
    hidden = data["bias"].shape[0] // 4
    layer = unilstm.LSTM(
        features,
        hidden,
        proj_size=config.get("num_proj") or 0,
        peepholes=bool(config.get("use_peepholes")),
        cell_clip=config.get("cell_clip"),
        proj_clip=config.get("proj_clip"),
        forget_bias=config.get("forget_bias", 1.0),  # TF1's default
        dtype=torch.float64,
    )
    kernel = data["kernel"]  # (F + P, 4H) over [x, h]
    values = {
        "weight_ih_l0": tf1_gates_to_torch(kernel[:features].T),
        "weight_hh_l0": tf1_gates_to_torch(kernel[features:].T),
        "bias_ih_l0": tf1_gates_to_torch(data["bias"]),
        "bias_hh_l0": np.zeros(4 * hidden),
    }
    if config.get("use_peepholes"):
        values["weight_ph_l0"] = np.concatenate([data["w_i_diag"], data["w_f_diag"], data["w_o_diag"]])
    if config.get("num_proj"):
        values["weight_hr_l0"] = data["projection/kernel"].T  # (H, P) -> torch's (P, H)
    with torch.no_grad():
        for name, value in values.items():
            getattr(layer, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return layer.eval(), config


def test_the_fixtures_cover_every_tf1_variant():
    assert set(CASES) >= {"forget_bias_default", "peepholes", "cell_clip", "proj_clip", "all"}


@pytest.mark.parametrize("case", CASES)
def test_unilstm_computes_tf1_lstmcell(case):
    data = dict(np.load(FIXTURES / f"{case}.npz"))
    layer, config = tf1_layer(data)
    x = torch.from_numpy(data["x"])
    h0 = torch.from_numpy(data["h0"]).unsqueeze(0)
    c0 = torch.from_numpy(data["c0"]).unsqueeze(0)
    with torch.no_grad():
        out, (h_n, c_n) = layer(x, (h0, c0))
    expected = torch.from_numpy(data["outputs"])
    # float64 on both sides: what is left is summation order (measured: <= 8.9e-16)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12), (out - expected).abs().max()
    assert torch.allclose(h_n[0], torch.from_numpy(data["h_n"]), rtol=0, atol=1e-12)
    assert torch.allclose(c_n[0], torch.from_numpy(data["c_n"]), rtol=0, atol=1e-12)
    if config.get("cell_clip") is not None:  # the clip acted: some cell state sits on the bound
        assert torch.isclose(c_n.abs().max(), torch.tensor(config["cell_clip"], dtype=torch.float64))
    if config.get("proj_clip") is not None:
        assert bool((expected.abs() == config["proj_clip"]).any())


def test_float32_layer_within_1e_5_of_tf1():
    """The same layer in float32 (what users run) stays within 1e-5 of TF1's float64 numbers."""
    data = dict(np.load(FIXTURES / "all.npz"))
    layer, _ = tf1_layer(data)
    layer = layer.float()
    x = torch.from_numpy(data["x"]).float()
    state = (torch.from_numpy(data["h0"]).float()[None], torch.from_numpy(data["c0"]).float()[None])
    with torch.no_grad():
        out, _ = layer(x, state)
    assert float((out.double() - torch.from_numpy(data["outputs"])).abs().max()) < 1e-5


def test_without_forget_bias_the_default_cell_differs():
    """TF1's default forget_bias=1.0 is in the numbers: dropping it changes them (the fold is not a no-op)."""
    data = dict(np.load(FIXTURES / "forget_bias_default.npz"))
    layer, _ = tf1_layer(data)
    plain = unilstm.LSTM(layer.spec.input_size, layer.spec.hidden_size, dtype=torch.float64)
    plain.load_state_dict(layer.state_dict())
    x = torch.from_numpy(data["x"])
    state = (torch.from_numpy(data["h0"])[None], torch.from_numpy(data["c0"])[None])
    with torch.no_grad():
        out, _ = plain.eval()(x, state)
    assert float((out - torch.from_numpy(data["outputs"])).abs().max()) > 1e-3
