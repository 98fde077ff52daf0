"""From the datasets the reader found to :class:`KerasLayerRecord` s: every declared shape and dtype is
checked against what the layer needs (and against its config, when the file has one), the bytes to read are
charged to the file's budget (:mod:`.limits`), and only then is any array read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hdf5 import dataset_bytes, read_dataset
from .limits import ByteBudget
from .records import (
    KerasFileError,
    KerasLayerRecord,
    _is_cudnn_shapes,
    _is_lstm_shapes,
    _text,
    cudnn_as_lstm,
)

_FLOAT_SIZES = (2, 4, 8)
_ACCEPTED = "float16, float32, float64 (or Keras's bfloat16)"


@dataclass
class PendingLayer:
    """A layer found in a file whose arrays are not read yet: ``datasets`` are open ``h5py.Dataset`` s in
    Keras's ``get_weights()`` order (a Bidirectional's forward layer's, then its backward layer's)."""

    key: str
    name: str | None
    class_name: str
    config: dict[str, Any] | None
    datasets: list[Any]
    keras_version: str | None
    file_format: str
    where: str


def _is_bfloat16(dataset: Any, dtype: np.dtype) -> bool:
    """Keras 3 stores bfloat16 weights as 2-byte opaque values with the attribute ``dtype="bfloat16"``."""
    if dtype.itemsize != 2 or dtype.kind not in "Vu":
        return False
    return "dtype" in dataset.attrs and _text(dataset.attrs["dtype"]) == "bfloat16"


def _check_dtype(dataset: Any, path: Path) -> None:
    try:
        dtype = dataset.dtype
    except (TypeError, ValueError):  # HDF5 types numpy has no equivalent of (bitfields, times)
        raise KerasFileError(
            f"{path}: dataset {dataset.name!r} stores an HDF5 type with no numpy equivalent; expected "
            f"{_ACCEPTED}"
        ) from None
    if (dtype.kind == "f" and dtype.itemsize in _FLOAT_SIZES) or _is_bfloat16(dataset, dtype):
        return
    raise KerasFileError(f"{path}: dataset {dataset.name!r} has dtype {dtype}; expected {_ACCEPTED}")


def _halves(layer: PendingLayer) -> list[list[Any]]:
    if layer.class_name == "LSTM":
        return [layer.datasets]
    half = len(layer.datasets) // 2
    return [layer.datasets[:half], layer.datasets[half:]]


def _inner_config(layer: PendingLayer, member: str, path: Path) -> dict | None:
    assert layer.config is not None
    inner = layer.config.get(member)
    if inner is None and member == "backward_layer":
        return None
    if (
        not isinstance(inner, dict)
        or inner.get("class_name") != "LSTM"
        or not isinstance(inner.get("config"), dict)
    ):
        raise KerasFileError(
            f"{path}: Bidirectional {layer.name!r} at {layer.where}: its config's {member!r} entry must be a "
            f"serialized LSTM {{'class_name': 'LSTM', 'config': {{...}}}}, got {_shown(inner)}"
        )
    return inner["config"]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _direction_configs(layer: PendingLayer, path: Path) -> list[dict]:
    """The config each stored direction was made from (Keras builds a missing backward_layer from the forward
    one, with the same sizes)."""
    assert layer.config is not None
    if layer.class_name == "LSTM":
        return [layer.config]
    forward = _inner_config(layer, "layer", path)
    backward = _inner_config(layer, "backward_layer", path)
    assert forward is not None
    return [forward, backward if backward is not None else forward]


def _check_config(layer: PendingLayer, path: Path) -> None:
    """``units`` and ``use_bias`` of the config against the stored shapes: a layer built from the config must
    take exactly the stored arrays."""
    labels = ["the layer"] if layer.class_name == "LSTM" else ["the forward layer", "the backward layer"]
    for config, arrays, label in zip(_direction_configs(layer, path), _halves(layer), labels, strict=True):
        stored_units = int(arrays[1].shape[0])
        where = f"{layer.class_name} {layer.name!r} at {layer.where}"
        if "units" in config:
            units = config["units"]
            if isinstance(units, bool) or not isinstance(units, int) or units != stored_units:
                raise KerasFileError(
                    f"{path}: {where}: the config of {label} says units={_shown(units)}, but its stored "
                    f"recurrent_kernel has shape {tuple(arrays[1].shape)} ({stored_units} units)"
                )
        use_bias = config.get("use_bias", True)
        if not (isinstance(use_bias, bool) or (isinstance(use_bias, int) and use_bias in (0, 1))):
            raise KerasFileError(
                f"{path}: {where}: the config of {label} has use_bias={_shown(use_bias)}, expected true/false"
            )
        if bool(use_bias) != (len(arrays) == 3):
            raise KerasFileError(
                f"{path}: {where}: the config of {label} says use_bias={use_bias}, but {len(arrays)} arrays "
                f"are stored ({'kernel, recurrent_kernel, bias' if len(arrays) == 3 else 'no bias'})"
            )


def _check_shapes(layer: PendingLayer, path: Path) -> None:
    if layer.class_name == "CuDNNLSTM":
        if not _is_cudnn_shapes(layer.datasets):
            raise KerasFileError(
                f"{path}: CuDNNLSTM {layer.name!r} at {layer.where}: expected kernel (F, 4H), "
                f"recurrent_kernel "
                f"(H, 4H), bias (8H,), found shapes {[d.shape for d in layer.datasets]}"
            )
        return
    halves = _halves(layer)
    odd = layer.class_name != "LSTM" and len(layer.datasets) % 2
    if odd or not all(_is_lstm_shapes(h) for h in halves):
        raise KerasFileError(
            f"{path}: {layer.class_name} {layer.name!r} at {layer.where}: expected kernel (F, 4H), "
            f"recurrent_kernel (H, 4H), bias (4H,) per LSTM, found shapes "
            f"{[d.shape for d in layer.datasets]}"
        )


def _read(dataset: Any, path: Path) -> np.ndarray:
    array = read_dataset(dataset, str(path), KerasFileError)
    if array.dtype.kind != "f":  # bfloat16: the upper half of a float32, exactly
        bits = np.ascontiguousarray(array).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def finish_records(layers: list[PendingLayer], path: Path, budget: ByteBudget) -> list[KerasLayerRecord]:
    """Check every layer's datasets (dtype, LSTM shapes, config), charge their bytes to ``budget``, then read
    them. Nothing is read before every check has passed."""
    for layer in layers:
        for dataset in layer.datasets:
            _check_dtype(dataset, path)
        _check_shapes(layer, path)
        if layer.config is not None and layer.class_name != "CuDNNLSTM":
            _check_config(layer, path)
    for layer in layers:
        for dataset in layer.datasets:
            widened = 2 if dataset.dtype.kind != "f" else 1  # bfloat16 is read as float32
            budget.charge(
                widened * dataset_bytes(dataset), f"dataset {dataset.name!r} {dataset.shape} {dataset.dtype}"
            )
    return [_record(layer, [_read(dataset, path) for dataset in layer.datasets]) for layer in layers]


def _record(layer: PendingLayer, arrays: list[np.ndarray]) -> KerasLayerRecord:
    """The record of a read layer; Keras 2's CuDNNLSTM becomes the LSTM that computes the same."""
    class_name, config = layer.class_name, layer.config
    if class_name == "CuDNNLSTM":
        config, arrays = cudnn_as_lstm(config or {}, arrays)
        class_name = "LSTM"
    return KerasLayerRecord(
        layer.key, layer.name, class_name, config, arrays, layer.keras_version, layer.file_format
    )
