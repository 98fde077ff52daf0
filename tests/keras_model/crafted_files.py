"""Small Keras model files laid out by hand with h5py, as Keras writes them, for the structure and hostility
tests (the parity tests read files real Keras wrote, in tests/fixtures/keras_models/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def lstm_weights(features: int, units: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0, 0.4, (features, 4 * units)).astype(np.float32),
        rng.normal(0, 0.4, (units, 4 * units)).astype(np.float32),
        rng.normal(0, 0.2, (4 * units,)).astype(np.float32),
    ]


def write_legacy_h5(
    path: Path,
    model_config: dict[str, Any] | None,
    layers: dict[str, list[tuple[str, np.ndarray]]],
    keras_version: str = "2.2.4",
) -> Path:
    """A legacy .h5 as Keras 2.2.4's ``save_model`` lays it out: root attributes, ``model_weights`` with
    ``layer_names``, one group per layer with ``weight_names`` and the arrays at those names."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = keras_version.encode()
        handle.attrs["backend"] = b"tensorflow"
        if model_config is not None:
            handle.attrs["model_config"] = json.dumps(model_config).encode()
        weights = handle.create_group("model_weights")
        weights.attrs["layer_names"] = [name.encode() for name in layers]
        weights.attrs["keras_version"] = keras_version.encode()
        for name, arrays in layers.items():
            group = weights.create_group(name)
            group.attrs["weight_names"] = [n.encode() for n, _ in arrays]
            for weight_name, array in arrays:
                group.create_dataset(weight_name, data=array)
    return path


def keras22_lstm(
    name: str, units: int, batch_input_shape: list | None = None, **extra: Any
) -> dict[str, Any]:
    """A Keras 2.2.4 LSTM layer entry."""
    config: dict[str, Any] = {
        "name": name,
        "trainable": True,
        "units": units,
        "activation": "tanh",
        "recurrent_activation": "hard_sigmoid",
        "use_bias": True,
        "unit_forget_bias": True,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "implementation": 1,
        "return_sequences": False,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
    }
    if batch_input_shape is not None:
        config["batch_input_shape"] = batch_input_shape
        config["dtype"] = "float32"
    config.update(extra)
    return {"class_name": "LSTM", "config": config}


def keras22_sequential(layers: list[dict[str, Any]], name: str = "sequential_1") -> dict[str, Any]:
    """Keras 2.2's Sequential config: the list of layers itself."""
    return {"class_name": "Sequential", "config": layers, "name": name}


def lstm_group(name: str, arrays: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [
        (f"{name}/{w}:0", a) for w, a in zip(("kernel", "recurrent_kernel", "bias"), arrays, strict=False)
    ]
