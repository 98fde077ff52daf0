"""``load_model``: a whole Keras model file as a :class:`~.model.KerasModel`.

The model is built from its config first, without weights; then every layer's stored arrays are compared
with what the layer needs (count, shape, and for legacy ``.h5`` the weight's name) before any is read; then
they are read (charged to the file's byte budget) and loaded.

Legacy ``.h5`` files keep one group per top-level layer; a nested model's group lists its sublayers'
arrays in Keras's ``trainable_weights + non_trainable_weights`` order (a sublayer with ``trainable: false``,
and BatchNormalization's moving statistics, count as non-trainable), which is rebuilt here from the config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..formats.keras_files import KerasFileError
from ..formats.keras_files.model_store import KerasModelFile, StoredWeight, open_keras_model
from .base import KerasLayer, KerasModelError
from .model import CustomLayer, KerasModel, build_model

#: Keras weights that are never trainable (they live in ``non_trainable_weights``).
_NON_TRAINABLE_NAMES = frozenset({"moving_mean", "moving_variance"})

PathLike = str | os.PathLike


def load_model(
    path: PathLike,
    custom_objects: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | PathLike | None = None,
    max_bytes: int | None = None,
) -> KerasModel:
    """A whole Keras model as a ``torch.nn.Module``, without TensorFlow or Keras.

    Args:
        path: ``.keras`` (Keras 3, tf-keras), legacy ``.h5`` (Keras 3, tf-keras / tf.keras 2.x, Keras
            2.0-2.2), or a weights-only ``.weights.h5`` / ``save_weights`` ``.h5`` together with ``config``.
        custom_objects: Keras class name -> a :class:`~.base.KerasLayer` subclass, or a factory
            ``factory(config: dict, weights: list[np.ndarray]) -> torch.nn.Module`` for layers this library
            does not run (the module is called on the layer's input tensor(s); its output carries no mask).
        config: the model's config for weights-only files (a dict, a ``model.to_json()`` file, or a
            ``.keras`` file); overrides the file's own.
        max_bytes: the most weight bytes the read may allocate (default ``$UNILSTM_MAX_FILE_BYTES``, 1 GiB).

    Returns:
        a :class:`~.model.KerasModel` in eval mode: ``model(x)`` or ``model(x1, x2)`` runs it as Keras's
        ``model(inputs, training=False)``; ``.train()`` gives ``training=True``.

    Raises:
        KerasFileError: the file is unreadable, hostile, older than Keras 2.0, or its weights do not fit the
            model's layers.
        KerasModelError: the model holds a layer this library does not run (named by class, name and
            place), or a config that is not a valid layer.
    """
    with open_keras_model(path, config=config, max_bytes=max_bytes) as stored:
        try:
            model = build_model(stored.config, stored.keras2, custom_objects)
        except KerasModelError as error:
            raise KerasModelError(f"{stored.path}: {error}") from None
        load_weights(model, stored)
    model.eval()
    return model


def _expected(layer: KerasLayer) -> list[tuple[str, tuple[int | None, ...]]]:
    shapes = layer.weight_shapes()
    names = list(layer.weight_names) + [f"weight_{i}" for i in range(len(layer.weight_names), len(shapes))]
    return list(zip(names, shapes, strict=False))


def _base_name(stored_name: str) -> str:
    return stored_name.rsplit("/", 1)[-1].removesuffix(":0")


def _check(stored: KerasModelFile, layer: KerasLayer, arrays: list[StoredWeight], legacy: bool) -> None:
    expected = _expected(layer)
    where = layer.spec.where
    if isinstance(layer, CustomLayer):
        return
    if len(arrays) != len(expected):
        raise KerasFileError(
            f"{stored.path}: {where}: the file stores {len(arrays)} arrays for it "
            f"({[a.entry for a in arrays][:6]}), the layer needs {len(expected)} "
            f"({', '.join(f'{n} {s}' for n, s in expected)})"
        )
    for array, (name, shape) in zip(arrays, expected, strict=True):
        if array.shape != tuple(shape):
            raise KerasFileError(
                f"{stored.path}: {where}: entry {array.entry!r} has shape {array.shape}; the layer's {name} "
                f"needs {tuple(shape)}"
            )
        if legacy and not name.startswith("weight_") and _base_name(array.name) != name:
            raise KerasFileError(
                f"{stored.path}: {where}: entry {array.entry!r} stands where the layer's {name} belongs; the "
                "file's weights do not follow its config"
            )


def _read(arrays: list[StoredWeight]) -> list[Any]:
    return [array.read() for array in arrays]


def load_weights(model: KerasModel, stored: KerasModelFile) -> None:
    """Check, read and load every layer's stored arrays into ``model`` (built from ``stored.config``)."""
    legacy = stored.file_format == "legacy.h5"
    _load_into(model, stored, (), legacy)


def _leaves(model: KerasModel, trainable: bool) -> list[tuple[KerasLayer, int, bool]]:
    """(layer, weight index, trainable) of every weight under ``model``, in layer order."""
    found = []
    for _, entry, layer in model.layers:
        layer_trainable = trainable and entry.config.get("trainable", True) is not False
        if isinstance(layer, KerasModel):
            found += _leaves(layer, layer_trainable)
            continue
        for index, (name, _) in enumerate(_expected(layer)):
            found.append((layer, index, layer_trainable and name not in _NON_TRAINABLE_NAMES))
    return found


def _load_into(model: KerasModel, stored: KerasModelFile, names: tuple[str, ...], legacy: bool) -> None:
    for _, entry, layer in model.layers:
        path = names + (entry.name,)
        if isinstance(layer, KerasModel) and not (legacy and not names):
            _load_into(layer, stored, path, legacy)
            continue
        arrays = stored.layer_weights(path, entry.class_name, entry.config)
        if isinstance(layer, KerasModel):  # a nested model in a legacy .h5: one flat list for all of it
            _load_nested_legacy(layer, stored, arrays, entry.config.get("trainable", True) is not False)
            continue
        _check(stored, layer, arrays, legacy)
        layer.load(_read(arrays))


def _load_nested_legacy(
    model: KerasModel, stored: KerasModelFile, arrays: list[StoredWeight], trainable: bool
) -> None:
    leaves = _leaves(model, trainable)
    ordered = [leaf for leaf in leaves if leaf[2]] + [leaf for leaf in leaves if not leaf[2]]
    if len(arrays) != len(ordered):
        raise KerasFileError(
            f"{stored.path}: {model.spec.where}: the file stores {len(arrays)} arrays for this nested model, "
            f"its layers need {len(ordered)}"
        )
    per_layer: dict[int, dict[int, StoredWeight]] = {}
    for array, (layer, index, _) in zip(arrays, ordered, strict=True):
        per_layer.setdefault(id(layer), {})[index] = array
    layers = {id(layer): layer for layer, _, _ in leaves}
    for key, by_index in per_layer.items():
        layer = layers[key]
        picked = [by_index[i] for i in range(len(by_index))]
        _check(stored, layer, picked, True)
    for key, by_index in per_layer.items():
        layers[key].load(_read([by_index[i] for i in range(len(by_index))]))
