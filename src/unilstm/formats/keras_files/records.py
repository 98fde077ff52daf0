"""Keras file records: :class:`KerasLayerRecord` (one LSTM or Bidirectional(LSTM) layer as a Keras file
stores it), :class:`KerasFileError`, and the helpers the reader and the writer share."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PathLike = str | os.PathLike

#: The Keras 3 version whose file layout :func:`write_keras_model` reproduces (written to metadata.json).
WRITTEN_KERAS_VERSION = "3.15.1"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_MODEL_CLASSES = ("Sequential", "Functional", "Model")
_LSTM_CLASSES = ("LSTM", "Bidirectional")


class KerasFileError(ValueError):
    """A file is not a Keras file this module can read (corrupt, truncated, foreign, or without the
    requested layer). The message names the file and what was expected."""


@dataclass(frozen=True)
class KerasLayerRecord:
    """One LSTM or Bidirectional(LSTM) layer as a Keras file stores it.

    Attributes:
        key: where the layer sits in the file (see the module docstring); ``load_weights(key=)`` takes it.
        name: the layer's name (from the config or the ``vars`` group), ``None`` when the file does not say.
        class_name: ``"LSTM"`` or ``"Bidirectional"``.
        config: the layer's Keras config dict (the ``"config"`` member of its serialized form, what
            ``from_config`` takes), ``None`` for weights-only files.
        weights: the arrays in Keras's ``get_weights()`` order and layout: ``[kernel (F, 4H),
            recurrent_kernel (H, 4H), bias (4H,)]`` (no bias when ``use_bias=False``); for a Bidirectional the
            forward layer's arrays then the backward layer's.
        keras_version: the version of Keras that wrote the file, when it says (``"2.21.0"``, ``"3.15.1"``);
            it decides which ``hard_sigmoid`` the config means (see :attr:`is_keras2`).
        file_format: ``"keras"`` (zip), ``"weights.h5"`` (Keras 3 weights store) or ``"legacy.h5"``.
    """

    key: str
    name: str | None
    class_name: str
    config: dict[str, Any] | None
    weights: list[np.ndarray] = field(repr=False)
    keras_version: str | None = None
    file_format: str = "keras"

    @property
    def input_size(self) -> int:
        """F, the features the layer reads (rows of the first kernel)."""
        return int(self.weights[0].shape[0])

    @property
    def is_keras2(self) -> bool:
        """True when the layer comes from Keras 2 (tf-keras, Keras < 3): the file's keras_version says so, or
        when the version is unknown, the config has Keras 2-only keys (``time_major``, ``implementation``).
        Such a layer's ``hard_sigmoid`` is Keras 2's ``clip(0.2 x + 0.5, 0, 1)``."""
        if self.keras_version:
            major = re.match(r"\s*(\d+)", self.keras_version)
            if major:
                return int(major.group(1)) < 3
        return any(_has_keras2_keys(c) for c in lstm_configs(self.class_name, self.config))

    def describe(self) -> str:
        """A one-line description for error messages: ``'lstm_1' (LSTM 'encoder', 5 units)``."""
        units = int(self.weights[1].shape[0]) if len(self.weights) > 1 else "?"
        label = f"{self.class_name} {self.name!r}" if self.name else self.class_name
        return f"{self.key!r} ({label}, {units} units)"


# -- helpers ---------------------------------------------------------------------------------------------
def cudnn_as_lstm(
    config: dict[str, Any], weights: list[np.ndarray]
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Keras 2's ``CuDNNLSTM`` as the LSTM that computes the same: sigmoid and tanh, and the weights Keras's
    own loader (``_convert_rnn_weights``) gives an LSTM from them (see :func:`cudnn_as_lstm_weights`)."""
    lstm = {k: v for k, v in config.items() if k not in ("batch_input_shape",)}
    lstm.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True, implementation=2)
    return lstm, cudnn_as_lstm_weights(weights)


def cudnn_as_lstm_weights(weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A CuDNNLSTM's stored ``[kernel (F, 4H), recurrent_kernel (H, 4H), bias (8H,)]`` as an LSTM's.

    CuDNNLSTM hands each gate's (F, H) kernel block to cuDNN flattened in row-major order, where cuDNN reads
    an (H, F) matrix W_g with gate = W_g x: so the LSTM's block is ``K_g.reshape(H, F).T`` (not ``K_g``),
    the recurrent block ``R_g.T``, and the bias the input half plus the recurrent half (Keras 2.2.4
    ``saving._convert_rnn_weights``, tf-keras ``hdf5_format._convert_rnn_weights``)."""
    kernel, recurrent, doubled = (np.asarray(w) for w in weights)
    units = recurrent.shape[0]
    features = kernel.shape[0]
    kernels = [block.reshape(units, features).T for block in np.hsplit(kernel, 4)]
    recurrents = [block.T for block in np.hsplit(recurrent, 4)]
    half = doubled.shape[0] // 2
    return [np.hstack(kernels), np.hstack(recurrents), doubled[:half] + doubled[half:]]


def _has_keras2_keys(config: dict | None) -> bool:
    return isinstance(config, dict) and ("time_major" in config or "implementation" in config)


def lstm_configs(class_name: str, config: dict | None) -> list[dict]:
    """The LSTM configs inside a layer config: itself, or a Bidirectional's forward and backward layers."""
    if not isinstance(config, dict):
        return []
    if class_name != "Bidirectional":
        return [config]
    found = []
    for member in ("layer", "backward_layer"):
        inner = config.get(member)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            found.append(inner["config"])
    return found


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _attr_list(group, name: str) -> list[str] | None:
    """A list-valued HDF5 attribute, also when Keras split it in chunks ``name0``, ``name1`` ..."""
    if name in group.attrs:
        values = group.attrs[name]
    elif f"{name}0" in group.attrs:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(list(group.attrs[f"{name}{chunk}"]))
            chunk += 1
    else:
        return None
    if isinstance(values, (str, bytes)):
        return [_text(values)]
    return [_text(v) for v in np.atleast_1d(values).tolist()] if len(np.atleast_1d(values)) else []


def _is_lstm_shapes(arrays: Sequence[np.ndarray]) -> bool:
    """kernel (F, 4H), recurrent_kernel (H, 4H) [, bias (4H,)]."""
    if len(arrays) not in (2, 3):
        return False
    kernel, recurrent = arrays[0], arrays[1]
    if kernel.ndim != 2 or recurrent.ndim != 2:
        return False
    units = recurrent.shape[0]
    ok = recurrent.shape[1] == 4 * units and kernel.shape[1] == 4 * units and units > 0
    if len(arrays) == 3:
        ok = ok and arrays[2].shape == (4 * units,)
    return ok


def _is_cudnn_shapes(datasets: Sequence[Any]) -> bool:
    """CuDNNLSTM: kernel (F, 4H), recurrent_kernel (H, 4H), bias (8H,): input bias then recurrent bias."""
    if len(datasets) != 3:
        return False
    units = datasets[1].shape[0] if len(datasets[1].shape) == 2 else 0
    return (
        units > 0
        and _is_lstm_shapes(datasets[:2])
        and tuple(datasets[2].shape) == (8 * units,)
    )


def _unwrap_layer(entry: Any) -> tuple[str, dict]:
    """(class_name, config) of a serialized layer ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise ValueError(f"a layer entry must be a dict with a class_name, got {type(entry).__name__}")
    config = entry.get("config")
    if isinstance(config, list):  # Keras 2.0-2.2 write a Sequential's config as its list of layers
        return entry["class_name"], {"layers": config}
    return entry["class_name"], config if isinstance(config, dict) else {}


def _is_lstm_entry(class_name: str, config: dict) -> bool:
    if class_name in ("LSTM", "CuDNNLSTM"):
        return True
    if class_name == "Bidirectional":
        inner = config.get("layer")
        return isinstance(inner, dict) and inner.get("class_name") == "LSTM"
    return False


def _is_model_entry(class_name: str, config: dict) -> bool:
    return class_name in _MODEL_CLASSES or isinstance(config.get("layers"), list)


