"""Writing ``.keras`` / ``.weights.h5`` files that real Keras 3 opens, from :class:`KerasLayerRecord` s."""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...keras_names import KERAS2_HARD_SIGMOID, snake_case
from ..atomic import atomic_write_bytes
from ..hdf5 import require_h5py
from .records import (
    _LSTM_CLASSES,
    WRITTEN_KERAS_VERSION,
    KerasLayerRecord,
    PathLike,
    _is_lstm_shapes,
    lstm_configs,
)


# -- writing --------------------------------------------------------------------------------------------
def _layer_output_shape(record: KerasLayerRecord, shape: list) -> list:
    """The output shape of a layer (batch first, None for unknown), to chain build configs."""
    assert record.config is not None  # _check_writable refused records without a config
    configs = lstm_configs(record.class_name, record.config)
    units = int(record.weights[1].shape[0])
    inner = configs[0] if configs else {}
    return_sequences = bool(inner.get("return_sequences", False))
    width = units
    if record.class_name == "Bidirectional" and record.config.get("merge_mode", "concat") == "concat":
        width = 2 * units
    return [shape[0], shape[1], width] if return_sequences else [shape[0], width]


def _serialized_layer(record: KerasLayerRecord, input_shape: list) -> dict:
    return {
        "module": "keras.layers",
        "class_name": record.class_name,
        "config": record.config,
        "registered_name": None,
        "build_config": {"input_shape": list(input_shape)},
    }


def _check_writable(record: KerasLayerRecord, index: int, shape: list, last: bool) -> None:
    where = f"layers[{index}] ({record.class_name} {record.name!r})"
    if record.class_name not in _LSTM_CLASSES:
        raise ValueError(
            f"{where}: expected an LSTM or a Bidirectional(LSTM), got class {record.class_name!r}"
        )
    if not isinstance(record.config, dict):
        raise ValueError(f"{where}: a config dict is needed to write a .keras file, got {record.config!r}")
    layer_configs = lstm_configs(record.class_name, record.config)
    if record.class_name == "Bidirectional" and not layer_configs:
        raise ValueError(f"{where}: the Bidirectional config has no 'layer' entry")
    if (
        record.class_name == "Bidirectional"
        and record.config.get("merge_mode", "concat") is None
        and not last
    ):
        raise ValueError(f"{where}: merge_mode=None gives two outputs; only the last layer may have it")
    halves = (
        [record.weights]
        if record.class_name == "LSTM"
        else [record.weights[: len(record.weights) // 2], record.weights[len(record.weights) // 2 :]]
    )
    if not all(_is_lstm_shapes(h) for h in halves):
        raise ValueError(
            f"{where}: expected Keras-layout kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,), got "
            f"shapes {[tuple(np.shape(w)) for w in record.weights]}"
        )
    if len(shape) != 3:
        raise ValueError(f"{where}: needs a sequence input, but the previous layer returns a single step")
    if record.input_size != shape[-1]:
        raise ValueError(
            f"{where}: its kernel reads {record.input_size} features, the previous layer gives {shape[-1]} "
            f"(input shape {tuple(shape)})"
        )
    for config in layer_configs:
        for forbidden in ("time_major",):
            if config.get(forbidden):
                raise ValueError(
                    f"{where}: Keras 3 has no {forbidden}=True; it cannot be written to a .keras file"
                )
        if config.get("return_state") and not last:
            raise ValueError(
                f"{where}: return_state=True gives several outputs; only the last layer may have it"
            )


#: config keys Keras 2 writes that Keras 3's LSTM refuses (shape hints belong to the InputLayer).
_KERAS2_ONLY_KEYS = ("batch_input_shape", "input_shape", "input_dim", "batch_size")


def keras3_lstm_config(config: dict, where: str, keras2: bool = False) -> dict:
    """An LSTM config made fit for Keras 3's ``LSTM.from_config``: Keras 2's shape hints and
    ``time_major=False`` dropped; a clear error for what Keras 3 cannot express (``time_major=True``,
    Keras 2's hard_sigmoid, Python callables as activations, values JSON cannot hold).

    Args:
        config: an LSTM config dict (from a Keras file or ``unilstm.keras.LSTM.get_config()``).
        where: names the layer in error messages.
        keras2: the config comes from Keras 2, so ``'hard_sigmoid'`` means Keras 2's.
    """
    config = {k: v for k, v in config.items() if k not in _KERAS2_ONLY_KEYS}
    if config.pop("time_major", False):
        raise ValueError(
            f"{where}: Keras 3 has no time_major=True; such a layer cannot be written to a Keras 3 file"
        )
    for argument in ("activation", "recurrent_activation"):
        value = config.get(argument)
        if value == KERAS2_HARD_SIGMOID or (keras2 and value == "hard_sigmoid"):
            raise ValueError(
                f"{where}: {argument} is Keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1), which Keras 3 "
                "does not have (Keras 3's is clip(x / 6 + 0.5, 0, 1)); it cannot be written to a Keras 3 file"
            )
        if value is not None and not isinstance(value, (str, dict)):
            raise ValueError(
                f"{where}: {argument} is a Python callable ({getattr(value, '__name__', value)!r}); "
                "Keras files can only name built-in activations"
            )
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: the layer's config cannot be written as JSON ({error})") from None
    return config


def keras3_record(record: KerasLayerRecord, index: int = 0) -> KerasLayerRecord:
    """``record`` with its config made fit for Keras 3 (see :func:`keras3_lstm_config`); Bidirectional
    members get the ``module`` / ``registered_name`` entries of Keras 3's serialization."""
    where = f"layers[{index}] ({record.class_name} {record.name!r})"
    if not isinstance(record.config, dict):
        raise ValueError(f"{where}: a config dict is needed to write a .keras file, got {record.config!r}")
    keras2 = record.is_keras2
    if record.class_name == "LSTM":
        config = keras3_lstm_config(record.config, where, keras2)
    else:
        config = {k: v for k, v in record.config.items() if k not in _KERAS2_ONLY_KEYS}
        for member in ("layer", "backward_layer"):
            inner = config.get(member)
            if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
                inner_config = keras3_lstm_config(inner["config"], f"{where} {member}", keras2)
                config[member] = _serialized({**inner, "config": inner_config})
    return replace(record, config=config)


def build_sequential_config(
    records: Sequence[KerasLayerRecord],
    input_shape: Sequence[int | None],
    batch_size: int | None = None,
    name: str = "sequential",
) -> dict:
    """The serialized Keras 3 Sequential model (config.json) holding ``records`` after an InputLayer of
    ``(batch_size, *input_shape)``."""
    shape: list = [batch_size, *input_shape]
    policy = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": "float32"},
        "registered_name": None,
    }
    layers = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {
                "batch_shape": list(shape),
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": "input_layer",
                "optional": False,
            },
            "registered_name": None,
        }
    ]
    for index, record in enumerate(records):
        _check_writable(record, index, shape, last=index == len(records) - 1)
        layers.append(_serialized_layer(record, shape))
        shape = _layer_output_shape(record, shape)
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": name, "trainable": True, "dtype": policy, "layers": layers},
        "registered_name": None,
        "build_config": {"input_shape": [batch_size, *input_shape]},
        "compile_config": None,
    }


def store_keys(records: Sequence[KerasLayerRecord]) -> list[str]:
    counters: dict[str, int] = {}
    keys = []
    for record in records:
        base = snake_case(record.class_name)
        counters[base] = counters.get(base, -1) + 1
        keys.append(base if counters[base] == 0 else f"{base}_{counters[base]}")
    return keys


def weights_store_bytes(records: Sequence[KerasLayerRecord], model_name: str = "sequential") -> bytes:
    """A Keras 3 ``model.weights.h5`` for a Sequential of ``records``, as bytes (Keras 3.15's layout)."""
    h5py = require_h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        layers = store.create_group("layers")
        for key, record in zip(store_keys(records), records, strict=True):
            group = layers.create_group(key)
            group.create_group("vars").attrs["name"] = record.name or key
            if record.class_name == "LSTM":
                _write_cell(group, record.weights)
            else:
                half = len(record.weights) // 2
                for direction, arrays in (
                    ("forward_layer", record.weights[:half]),
                    ("backward_layer", record.weights[half:]),
                ):
                    sub = group.create_group(direction)
                    prefix = "forward_" if direction == "forward_layer" else "backward_"
                    inner = record.name or key
                    sub.create_group("vars").attrs["name"] = f"{prefix}{inner}"
                    _write_cell(sub, arrays)
        store.create_group("vars").attrs["name"] = model_name
    return buffer.getvalue()


def _write_cell(group, arrays: Sequence[np.ndarray]) -> None:
    cell_vars = group.create_group("cell").create_group("vars")
    cell_vars.attrs["name"] = "lstm_cell"
    for index, array in enumerate(arrays):
        cell_vars.create_dataset(str(index), data=np.ascontiguousarray(array))


def write_keras_model(
    records: Sequence[KerasLayerRecord],
    path: PathLike,
    input_shape: Sequence[int | None],
    *,
    batch_size: int | None = None,
    name: str = "sequential",
) -> Path:
    """Write a Sequential model of ``records`` that Keras 3 opens: a ``.keras`` archive, or when ``path`` ends
    in ``.weights.h5`` only the weights store (``model.load_weights`` on a model of the same layers).

    Args:
        records: LSTM / Bidirectional records with Keras 3 configs and Keras-layout weights, in model order.
        path: the file to write; must end in ``.keras`` or ``.weights.h5``.
        input_shape: the input's shape without the batch dimension, ``(T, F)``; T may be None.
        batch_size: a fixed batch size for the InputLayer (needed by stateful layers), or None.
        name: the Sequential model's name.

    The file appears whole or not at all: it is written to a temporary file in the same directory and moved
    into place with ``os.replace``; on any error the temporary file is removed.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".weights.h5") else path.suffix
    if suffix not in (".keras", ".weights.h5"):
        raise ValueError(f"path must end in .keras or .weights.h5, got {str(path)!r}")
    if not records:
        raise ValueError("records: expected at least one LSTM or Bidirectional layer, got none")
    input_shape = list(input_shape)
    if len(input_shape) != 2 or any(d is not None and (not isinstance(d, int) or d < 1) for d in input_shape):
        raise ValueError(
            f"input_shape must be (steps, features) without the batch size, got {tuple(input_shape)}"
        )
    if input_shape[1] is None:
        raise ValueError(f"input_shape: the number of features must be known, got {tuple(input_shape)}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    for index, record in enumerate(records):
        configs = lstm_configs(record.class_name, record.config)
        if batch_size is None and any(c.get("stateful") for c in configs):
            raise ValueError(f"layers[{index}] is stateful: Keras needs a fixed batch_size for it, got None")
    records = [keras3_record(record, index) for index, record in enumerate(records)]
    model_config = build_sequential_config(records, input_shape, batch_size, name)
    weights = weights_store_bytes(records, name)
    if suffix == ".weights.h5":
        payload = weights
    else:
        metadata = {
            "keras_version": WRITTEN_KERAS_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(model_config))
            archive.writestr("model.weights.h5", weights)
        payload = buffer.getvalue()
    atomic_write_bytes(path, payload)
    return path


def _serialized(entry: Any) -> Any:
    if isinstance(entry, dict) and "class_name" in entry:
        return {"module": "keras.layers", "registered_name": None, **entry}
    return entry
