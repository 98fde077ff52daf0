"""Keras files on ``unilstm.keras`` layers: :func:`load_weights`, :func:`load_layers` and :func:`save_model`
(re-exported by ``unilstm.keras``), on top of the plain-data reader and writer in
:mod:`unilstm.formats.keras_files`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.keras_files import (
    WRITTEN_KERAS_VERSION,
    KerasFileError,
    KerasLayerRecord,
    read_keras_lstm_layers,
    select_record,
    write_keras_model,
)
from ..formats.keras_files.records import PathLike
from ..keras_names import KERAS2_HARD_SIGMOID, is_keras_builtin, stored_activation_name
from . import keras_initializers
from .keras import LSTM
from .keras_bidirectional import Bidirectional

__all__ = ["KerasFileError", "load_layers", "load_weights", "record_from_layer", "save_model"]

_KERAS2_SEMANTICS = "2"  # keras_version of records from front-door layers with Keras 2 semantics


def _prepare_lstm_config(config: dict, custom_objects: dict[str, Any], where: str) -> dict:
    config = dict(config)
    for argument in ("activation", "recurrent_activation"):
        if argument not in config:
            continue
        value = stored_activation_name(config[argument])
        if isinstance(value, str):
            if value in custom_objects:
                value = custom_objects[value]
            elif not is_keras_builtin(value):
                raise KerasFileError(
                    f"{where}: {argument} {value!r} is not a Keras built-in; pass custom_objects="
                    f"{{{value!r}: <a function on torch tensors>}}"
                )
        config[argument] = value
    return config


def _prepare_config(
    class_name: str, layer_config: dict[str, Any], custom_objects: dict[str, Any], where: str
) -> dict:
    """A record's config, ready for the front door's ``from_config``: custom activations resolved through
    ``custom_objects`` (a clear error for unknown ones)."""
    if class_name == "LSTM":
        return _prepare_lstm_config(layer_config, custom_objects, where)
    config = dict(layer_config)
    for member in ("layer", "backward_layer"):
        inner = config.get(member)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            config[member] = {
                **inner,
                "config": _prepare_lstm_config(inner["config"], custom_objects, f"{where} {member}"),
            }
    return config


def _build_input_shape(record: KerasLayerRecord) -> tuple[None, None, int]:
    return (None, None, record.input_size)


def _lstms(layer: Any) -> list[LSTM]:
    return [layer] if isinstance(layer, LSTM) else [layer.forward_layer, layer.backward_layer]


def _shapes_for(layer: Any, features: int) -> list[tuple[int, ...]]:
    """The weight shapes ``layer`` has, or would have once built for ``features`` inputs (from its sizes,
    without building it)."""
    if layer.built:
        return [tuple(w.shape) for w in layer.weights]
    shapes: list[tuple[int, ...]] = []
    for lstm in _lstms(layer):
        gates = 4 * lstm.units
        shapes += [(features, gates), (lstm.units, gates)] + ([(gates,)] if lstm.use_bias else [])
    return shapes


def _check_fits(layer: Any, record: KerasLayerRecord, path: PathLike, whose: str) -> None:
    expected = _shapes_for(layer, record.input_size)
    stored = [tuple(w.shape) for w in record.weights]
    if expected != stored:
        raise KerasFileError(
            f"{path}: layer {record.describe()} has weight shapes {stored}, but {whose} has {expected}"
        )


def _fill(layer: Any, record: KerasLayerRecord, path: PathLike) -> None:
    """Build ``layer`` (when needed) and set the record's weights. The initializers are not run: every value
    they would make is overwritten (a large orthogonal initialisation takes seconds)."""
    try:
        if not layer.built:
            lstms = _lstms(layer)
            saved = [(m.kernel_initializer, m.recurrent_initializer, m.bias_initializer) for m in lstms]
            zeros = keras_initializers.get("zeros")
            try:
                for lstm in lstms:
                    lstm.kernel_initializer = lstm.recurrent_initializer = lstm.bias_initializer = zeros
                layer.build(_build_input_shape(record))
            finally:
                for lstm, (kernel, recurrent, bias) in zip(lstms, saved, strict=True):
                    lstm.kernel_initializer, lstm.recurrent_initializer = kernel, recurrent
                    lstm.bias_initializer = bias
        layer.set_weights(record.weights)
    except (TypeError, ValueError) as error:
        if isinstance(error, KerasFileError):
            raise
        raise KerasFileError(
            f"{path}: layer {record.describe()}: cannot take its weights: {error}"
        ) from error


def load_weights(layer: Any, path: PathLike, key: str | None = None, *, max_bytes: int | None = None) -> Any:
    """Load an LSTM's or a Bidirectional's weights from a Keras file into ``layer`` (a
    ``unilstm.keras.LSTM`` or ``unilstm.keras.Bidirectional``), building it first when needed.

    Args:
        layer: the layer to fill; its kind (LSTM or Bidirectional) and sizes must match the stored layer's.
        path: a ``.keras``, ``.weights.h5`` or legacy ``.h5`` file written by Keras 3 or tf-keras.
        key: which layer when the file holds several of that kind: the key of :class:`KerasLayerRecord`
            (``'lstm'``, ``'lstm_1'``, ``'bidirectional'``, ``'sequential/lstm'``; for legacy .h5 the layer's
            name) or a layer name the file records. The error message lists the choices.
        max_bytes: the most bytes of weights reading the file may allocate (default
            ``$UNILSTM_MAX_FILE_BYTES`` or 1 GiB; see :mod:`unilstm.formats.keras_files.limits`).

    Returns:
        ``layer``.

    Raises:
        KerasFileError: unreadable or hostile file, no such key, several candidates and no key, or the
            arrays' shapes do not fit ``layer`` (checked before ``layer`` is built).
    """
    if isinstance(layer, Bidirectional):
        wanted = ("Bidirectional",)
    elif isinstance(layer, LSTM):
        wanted = ("LSTM",)
    else:
        raise TypeError(
            f"layer must be a unilstm.keras.LSTM or unilstm.keras.Bidirectional, got {type(layer).__name__}"
        )
    record = select_record(read_keras_lstm_layers(path, max_bytes=max_bytes), key, path, wanted)
    _check_fits(layer, record, path, "the given layer")
    _fill(layer, record, path)
    return layer


def load_layers(
    path: PathLike, custom_objects: dict[str, Any] | None = None, *, max_bytes: int | None = None
) -> list[Any]:
    """Every LSTM and Bidirectional(LSTM) layer of a ``.keras`` or legacy ``.h5`` model file, as
    ``unilstm.keras`` layers built from the stored configs, with the stored weights, in model order (layers of
    nested models included).

    Layers that come from Keras 2 (the file's keras_version < 3, or configs with ``time_major`` /
    ``implementation``) keep Keras 2's ``hard_sigmoid`` (``clip(0.2 x + 0.5, 0, 1)``), so their numbers are
    reproduced. Custom activations (stored by name) are looked up in ``custom_objects``: a dict from the
    stored name to a function on torch tensors. Each config's sizes are checked against the stored arrays
    before any layer is made, and layers are built without running their initializers. ``max_bytes``: as
    :func:`load_weights`.

    Raises:
        KerasFileError: unreadable or hostile file; a weights-only file (no configs: use
            :func:`load_weights`); an activation neither built in nor in ``custom_objects``; a config that
            does not fit its weights.
    """
    custom_objects = dict(custom_objects or {})
    records = read_keras_lstm_layers(path, max_bytes=max_bytes)
    layers = []
    for record in records:
        if record.config is None:
            raise KerasFileError(
                f"{path}: a weights-only file has no layer configs; build the layers yourself and use "
                f"load_weights(layer, path, key=...) (layers in it: "
                f"{', '.join(r.describe() for r in records)})"
            )
        config = _prepare_config(
            record.class_name, record.config, custom_objects, f"{path}: layer {record.describe()}"
        )
        cls = LSTM if record.class_name == "LSTM" else Bidirectional
        try:
            layer = cls.from_config(config, keras2=record.is_keras2)
        except (TypeError, ValueError, KeyError) as error:
            raise KerasFileError(
                f"{path}: layer {record.describe()}: its config was refused: {error}"
            ) from error
        _check_fits(layer, record, path, "its config")
        _fill(layer, record, path)
        layers.append(layer)
    return layers


def record_from_layer(layer: Any, index: int = 0) -> KerasLayerRecord:
    """A :class:`KerasLayerRecord` of a built ``unilstm.keras`` LSTM or Bidirectional: its ``get_config()``,
    its ``get_weights()``, and ``keras_version`` ``'2'`` for a layer with Keras 2 semantics (from a Keras 2
    config) so that :attr:`KerasLayerRecord.is_keras2` tells which ``hard_sigmoid`` the config means.
    :func:`write_keras_model` makes the config fit for Keras 3 (or refuses what Keras 3 cannot express).

    Raises:
        TypeError: ``layer`` is not a Keras front-door layer.
        ValueError: not built, or an activation no Keras config can name (a Python callable).
    """
    where = f"layers[{index}]"
    if isinstance(layer, Bidirectional):
        class_name = "Bidirectional"
    elif isinstance(layer, LSTM):
        class_name = "LSTM"
    else:
        raise TypeError(f"{where} must be a unilstm.keras.LSTM or Bidirectional, got {type(layer).__name__}")
    if not getattr(layer, "built", True):
        raise ValueError(f"{where} ({class_name}) is not built: call it once or build(input_shape) first")
    label = f"{where} ({class_name} {getattr(layer, 'name', '')!r})"
    keras2 = bool(getattr(layer, "_keras2", False))  # the front door's flag: Keras 2 semantics (hard_sigmoid)
    inner_layers = [layer] if class_name == "LSTM" else [layer.forward_layer, layer.backward_layer]
    for inner in inner_layers:
        for argument in ("activation", "recurrent_activation"):
            value = getattr(inner, argument, None)
            if value == KERAS2_HARD_SIGMOID and not keras2:
                raise ValueError(
                    f"{label}: {argument} is Keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1), in a layer "
                    "with Keras 3 semantics; no Keras config can say that (use a Keras 2 config: "
                    "from_config(..., keras2=True))"
                )
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"{label}: {argument} is a Python callable "
                    f"({getattr(value, '__name__', value)!r}); Keras files can only name built-in activations"
                )
    config = layer.get_config()
    return KerasLayerRecord(
        f"layer_{index}",
        config.get("name"),
        class_name,
        config,
        [np.asarray(w) for w in layer.get_weights()],
        # which hard_sigmoid the config's 'hard_sigmoid' means: Keras 2's for layers from Keras 2 configs
        keras_version=_KERAS2_SEMANTICS if keras2 else WRITTEN_KERAS_VERSION,
    )


def save_model(
    layers: Sequence[Any], path: PathLike, input_shape: Sequence[int | None], *, batch_size: int | None = None
) -> Path:
    """Write ``layers`` (``unilstm.keras`` LSTMs / Bidirectionals, in order; unbuilt ones are built for the
    features the previous layer outputs, as a Keras Sequential would) as a Keras 3 Sequential
    model: a ``.keras`` file that ``keras.saving.load_model`` opens, or, when ``path`` ends in
    ``.weights.h5``, its weights for ``model.load_weights`` on the same architecture.

    Args:
        layers: the layers, each fed by the previous one (all but the last need ``return_sequences=True``).
        path: ends in ``.keras`` or ``.weights.h5``.
        input_shape: the model's input shape without the batch: ``(steps, features)``, steps may be None.
        batch_size: the fixed batch size stateful layers need; None otherwise.

    Written atomically (a temporary file in the same directory, then ``os.replace``).
    """
    if not isinstance(layers, (list, tuple)):
        layers = [layers]
    _build_in_order(layers, input_shape, batch_size)
    records = [record_from_layer(layer, index) for index, layer in enumerate(layers)]
    return write_keras_model(records, path, input_shape, batch_size=batch_size)


def _build_in_order(layers: Sequence[Any], input_shape: Sequence[int | None], batch_size: int | None) -> None:
    """Build the unbuilt layers as a Keras Sequential would: each one for the features the previous one
    outputs (``units``; twice that for a Bidirectional with merge_mode 'concat')."""
    features = tuple(input_shape)[-1] if len(tuple(input_shape)) else None
    for layer in layers:
        if not hasattr(layer, "built") or features is None:
            return
        if not layer.built:
            layer.build((batch_size, None, features))
        units = getattr(getattr(layer, "forward_layer", layer), "units", None)
        if units is None:
            return
        features = 2 * units if getattr(layer, "merge_mode", None) == "concat" else units
