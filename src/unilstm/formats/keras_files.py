"""Keras weight files: read LSTM layers from ``.keras``, ``.weights.h5`` and legacy ``.h5`` files, and write
``.keras`` / ``.weights.h5`` files that real Keras 3 opens.

This module works on plain data (numpy arrays in Keras layout and Keras config dicts); it imports neither
TensorFlow nor Keras. ``h5py`` is needed (``pip install unilstm[keras]``) and imported only when a file is
read or written.

What the files hold (measured on Keras 3.15 and tf-keras 2.21):

- ``.keras``: a zip with ``config.json`` (the model, serialized), ``metadata.json`` (``keras_version``) and
  ``model.weights.h5``. ``.weights.h5`` (``model.save_weights``) is that HDF5 file on its own.
  Inside it an LSTM's arrays are at ``layers/<key>/cell/vars/{0,1,2}`` = kernel (F, 4H), recurrent_kernel
  (H, 4H), bias (4H,). The **key** is the snake-case class name plus a counter per container, in container
  order (``lstm``, ``lstm_1``, ``bidirectional``), not the layer's name. A Bidirectional keeps its two LSTMs
  at ``layers/bidirectional/forward_layer/...`` and ``.../backward_layer/...``; a nested model nests
  ``layers/`` (key ``sequential/lstm``). Keras 3 also stores each layer's name as the attribute ``name`` of
  its ``vars`` group; tf-keras does not.
- legacy ``.h5`` (``model.save('m.h5')``, or tf-keras ``save_weights('w.h5')``): groups per layer **name**
  under ``model_weights/`` (or at the root for weights-only files); each group's ``weight_names`` attribute
  lists its arrays in order (tf-keras names end in ``:0``, Keras 3's do not). The root attribute
  ``model_config`` holds the model's config as JSON (absent in weights-only files), ``keras_version`` the
  writer's version.

The records this module returns use **keys**: for ``.keras``/``.weights.h5`` the path of the layer's group
below ``layers/`` with the inner ``layers/`` removed (``lstm``, ``lstm_1``, ``bidirectional``,
``sequential/lstm``); for legacy ``.h5`` the layer's name (``nested_model/inner_lstm`` inside a nested
model). Files with a config (``.keras``, legacy ``.h5`` from ``model.save``) give their layers in model
order; a weights-only file carries no order (HDF5 lists groups alphabetically), so its layers come sorted by
key (``bidirectional``, ``lstm``, ``lstm_1``, ...) or, for tf-keras ``save_weights`` .h5, in its
``layer_names`` order.

Entry points: :func:`read_keras_lstm_layers` and :func:`write_keras_model` on plain data;
:func:`load_weights`, :func:`load_layers` and :func:`save_model` on ``unilstm.keras`` layers (re-exported
there).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
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
        return any(_has_keras2_keys(c) for c in _lstm_configs(self.class_name, self.config))

    def describe(self) -> str:
        """A one-line description for error messages: ``'lstm_1' (LSTM 'encoder', 5 units)``."""
        units = int(self.weights[1].shape[0]) if len(self.weights) > 1 else "?"
        label = f"{self.class_name} {self.name!r}" if self.name else self.class_name
        return f"{self.key!r} ({label}, {units} units)"


# -- helpers ---------------------------------------------------------------------------------------------
def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading and writing Keras files needs h5py: pip install 'unilstm[keras]' (or pip install h5py)"
        ) from error
    return h5py


def snake_case(class_name: str) -> str:
    """Keras 3's ``naming.to_snake_case``: ``'LSTM'`` -> ``'lstm'``, ``'MyLayer'`` -> ``'my_layer'``."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _has_keras2_keys(config: dict | None) -> bool:
    return isinstance(config, dict) and ("time_major" in config or "implementation" in config)


def _lstm_configs(class_name: str, config: dict | None) -> list[dict]:
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


def _unwrap_layer(entry: Any) -> tuple[str, dict]:
    """(class_name, config) of a serialized layer ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise ValueError(f"a layer entry must be a dict with a class_name, got {type(entry).__name__}")
    config = entry.get("config")
    return entry["class_name"], config if isinstance(config, dict) else {}


def _is_lstm_entry(class_name: str, config: dict) -> bool:
    if class_name == "LSTM":
        return True
    if class_name == "Bidirectional":
        inner = config.get("layer")
        return isinstance(inner, dict) and inner.get("class_name") == "LSTM"
    return False


def _is_model_entry(class_name: str, config: dict) -> bool:
    return class_name in _MODEL_CLASSES or isinstance(config.get("layers"), list)


# -- reading ---------------------------------------------------------------------------------------------
def read_keras_lstm_layers(path: PathLike) -> list[KerasLayerRecord]:
    """Every LSTM and Bidirectional(LSTM) layer of a Keras file, in model order (nested models included).

    Args:
        path: a ``.keras`` file (zip), a ``.weights.h5`` file or a legacy ``.h5`` file, written by Keras 3 or
            tf-keras. The format is recognised from the content, not the suffix.

    Returns:
        one :class:`KerasLayerRecord` per layer; ``config`` is ``None`` for weights-only files (then LSTMs
        are recognised by their key, ``lstm[_N]`` / ``bidirectional[_N]``, or their weight names, and by
        their shapes).

    Raises:
        KerasFileError: the file is missing, empty, truncated, corrupt or not a Keras file.
    """
    path = Path(path)
    _h5py()  # a missing h5py is an ImportError, not a bad file
    head = _read_head(path)
    try:
        if head.startswith(_ZIP_SIGNATURES):
            return _read_keras_zip(path)
        if head.startswith(_HDF5_SIGNATURE) or _hdf5_signature_later(path):
            return _read_h5_file(path)
    except KerasFileError:
        raise
    except Exception as error:  # corrupt bytes surface as any error of h5py, zipfile or zlib
        raise KerasFileError(
            f"{path}: cannot read this Keras file, it looks corrupt or truncated ({type(error).__name__}: "
            f"{error})"
        ) from None
    raise KerasFileError(
        f"{path}: not a Keras file: expected a .keras zip archive or an HDF5 file (.weights.h5, legacy .h5), "
        f"got a file starting with {head[:8]!r}"
    )


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise KerasFileError(f"{path}: no such file (expected a .keras, .weights.h5 or .h5 file)") from None
    except IsADirectoryError:
        raise KerasFileError(f"{path}: is a directory, expected a .keras, .weights.h5 or .h5 file") from None
    except OSError as error:
        raise KerasFileError(f"{path}: cannot open it ({error})") from None
    if not head:
        raise KerasFileError(f"{path}: the file is empty (expected a .keras, .weights.h5 or .h5 file)")
    return head


def _hdf5_signature_later(path: Path) -> bool:
    """HDF5 allows a user block: the signature may sit at 512, 1024, 2048 ... bytes."""
    with open(path, "rb") as handle:
        offset = 512
        while True:
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return False
            if chunk == _HDF5_SIGNATURE:
                return True
            offset *= 2


def _listing(names: Any, limit: int = 8) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "nothing"


def _open_h5(source, path: Path):
    h5py = _h5py()
    try:
        return h5py.File(source, "r")
    except (OSError, ValueError) as error:
        raise KerasFileError(
            f"{path}: not a readable HDF5 file, it looks corrupt or truncated ({error})"
        ) from None


def _read_keras_zip(path: Path) -> list[KerasLayerRecord]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise KerasFileError(
            f"{path}: not a readable .keras zip archive, it looks truncated ({error})"
        ) from None
    with archive:
        names = set(archive.namelist())
        missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
        if missing:
            extra = " (sharded weights are not supported)" if "model.weights.json" in names else ""
            raise KerasFileError(
                f"{path}: a .keras archive must hold config.json and model.weights.h5; missing "
                f"{', '.join(missing)}{extra}; it holds {_listing(names)}"
            )
        try:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as error:
            raise KerasFileError(f"{path}: a member of the .keras archive is corrupt ({error})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasFileError(f"{path}: config.json is not a serialized Keras model (no class_name)")
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    with _open_h5(io.BytesIO(weights), path) as store:
        if "layers" not in store and "vars" not in store:
            raise KerasFileError(f"{path}: model.weights.h5 is not a Keras weights store (no 'layers' group)")
        return _records_from_config(store, config, version, "keras", path)


def _read_h5_file(path: Path) -> list[KerasLayerRecord]:
    with _open_h5(path, path) as store:
        if "layers" in store or ("vars" in store and "model_weights" not in store):
            return _records_from_store(store.get("layers"), "", None, "weights.h5", path)
        root = store.get("model_weights", store)
        if _attr_list(root, "layer_names") is None:
            raise KerasFileError(
                f"{path}: an HDF5 file but not a Keras file: expected a 'layers' group (.weights.h5) or "
                f"'model_weights' / a 'layer_names' attribute (legacy .h5); found {_listing(store.keys())}"
            )
        return _read_legacy(store, root, path)


# Keras 3 weights store -------------------------------------------------------------------------------------
def _vars_name(group) -> str | None:
    vars_group = group.get("vars")
    if vars_group is not None and "name" in vars_group.attrs:
        return _text(vars_group.attrs["name"])
    return None


def _cell_arrays(group, path: Path, where: str) -> list[np.ndarray] | None:
    """The arrays of ``<group>/cell/vars`` in index order, None when there is no such group."""
    cell = group.get("cell")
    vars_group = cell.get("vars") if cell is not None else None
    if vars_group is None:
        return None
    keys = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [np.asarray(vars_group[k][()]) for k in keys]


def _lstm_arrays(group, path: Path, where: str) -> list[np.ndarray]:
    arrays = _cell_arrays(group, path, where)
    if arrays is None or not _is_lstm_shapes(arrays):
        found = "nothing" if arrays is None else [tuple(a.shape) for a in arrays]
        raise KerasFileError(
            f"{path}: expected an LSTM's kernel (F, 4H), recurrent_kernel (H, 4H) and bias (4H,) at "
            f"{where}/cell/vars, found {found}"
        )
    return arrays


def _store_layer_weights(group, class_name: str, path: Path, where: str) -> list[np.ndarray]:
    if class_name == "LSTM":
        return _lstm_arrays(group, path, where)
    arrays = []
    for direction in ("forward_layer", "backward_layer"):
        sub = group.get(direction)
        if sub is None:
            raise KerasFileError(
                f"{path}: expected a Bidirectional's {direction} group at {where}/{direction}"
            )
        arrays += _lstm_arrays(sub, path, f"{where}/{direction}")
    return arrays


def _records_from_config(
    store, model_config: dict, version: str | None, file_format: str, path: Path
) -> list[KerasLayerRecord]:
    """Walk a serialized model and the weights store side by side."""
    records: list[KerasLayerRecord] = []
    top_class, top_config = _unwrap_layer(model_config)
    if _is_model_entry(top_class, top_config):
        _walk_config(
            store.get("layers"), top_config.get("layers", []), "", version, file_format, path, records
        )
    elif _is_lstm_entry(top_class, top_config):  # a file holding a bare layer
        weights = _store_layer_weights(store, top_class, path, "/")
        records.append(
            KerasLayerRecord(
                top_class.lower(),
                top_config.get("name"),
                top_class,
                top_config,
                weights,
                version,
                file_format,
            )
        )
    return records


def _walk_config(layers_group, entries: list, prefix: str, version, file_format, path, records) -> None:
    counters: dict[str, int] = {}
    for entry in entries:
        class_name, config = _unwrap_layer(entry)
        base = snake_case("Functional" if class_name == "Model" else class_name)
        if base in counters:
            counters[base] += 1
            key = f"{base}_{counters[base]}"
        else:
            counters[base] = 0
            key = base
        is_lstm = _is_lstm_entry(class_name, config)
        is_model = _is_model_entry(class_name, config)
        if not (is_lstm or is_model):
            continue
        name = config.get("name")
        group = layers_group.get(key) if layers_group is not None else None
        if group is not None and name and _vars_name(group) not in (None, name):
            group, key = _find_by_name(layers_group, name, base, group, key)
        where = f"layers/{prefix}{key}"
        if group is None:
            raise KerasFileError(
                f"{path}: the config has {class_name} {name!r} but the weights store has no group {where}"
            )
        if is_model:
            _walk_config(
                group.get("layers"),
                config.get("layers", []),
                f"{prefix}{key}/",
                version,
                file_format,
                path,
                records,
            )
            continue
        weights = _store_layer_weights(group, class_name, path, where)
        records.append(
            KerasLayerRecord(prefix + key, name, class_name, config, weights, version, file_format)
        )


def _find_by_name(layers_group, name: str, base: str, group, key: str):
    for other in layers_group:
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", other) and _vars_name(layers_group[other]) == name:
            return layers_group[other], other
    return group, key


def _records_from_store(
    layers_group, prefix: str, version, file_format, path: Path
) -> list[KerasLayerRecord]:
    """Walk a weights store without a config: keys ``lstm[_N]`` and ``bidirectional[_N]`` with LSTM shapes."""
    records: list[KerasLayerRecord] = []
    if layers_group is None:
        return records
    for key in sorted(layers_group.keys(), key=_natural_key):
        group = layers_group[key]
        where = f"layers/{prefix}{key}"
        if not hasattr(group, "keys"):
            continue
        if "layers" in group:
            records += _records_from_store(group["layers"], f"{prefix}{key}/", version, file_format, path)
        elif re.fullmatch(r"lstm(_\d+)?", key):  # the key of class LSTM: it must hold an LSTM's arrays
            arrays = _lstm_arrays(group, path, where)
            records.append(
                KerasLayerRecord(prefix + key, _vars_name(group), "LSTM", None, arrays, version, file_format)
            )
        elif re.fullmatch(r"bidirectional(_\d+)?", key):
            directions = [group.get(d) for d in ("forward_layer", "backward_layer")]
            if any(d is None for d in directions):
                raise KerasFileError(f"{path}: expected forward_layer and backward_layer groups in {where}")
            arrays = [_cell_arrays(d, path, where) for d in directions]
            if any(a is None for a in arrays):
                raise KerasFileError(
                    f"{path}: expected cell/vars arrays in {where}'s forward and backward layers"
                )
            if all(_is_lstm_shapes(a) for a in arrays):  # else a Bidirectional of another RNN: not ours
                records.append(
                    KerasLayerRecord(
                        prefix + key,
                        _vars_name(group),
                        "Bidirectional",
                        None,
                        arrays[0] + arrays[1],
                        version,
                        file_format,
                    )
                )
    return records


def _natural_key(text: str) -> tuple:
    """Order ``lstm``, ``lstm_1``, ``lstm_2``, ``lstm_10`` (HDF5 lists children alphabetically)."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", text)
    return (match.group(1), int(match.group(2)) if match.group(2) else -1)


# legacy .h5 ------------------------------------------------------------------------------------------------
def _legacy_arrays(group, path: Path) -> tuple[list[str], list[np.ndarray]]:
    names = _attr_list(group, "weight_names") or []
    arrays = []
    for name in names:
        if name not in group:
            raise KerasFileError(
                f"{path}: legacy .h5 lists weight {name!r} under {group.name} but it is missing"
            )
        arrays.append(np.asarray(group[name][()]))
    return names, arrays


def _legacy_version(store, root) -> str | None:
    for holder in (root, store):
        if "keras_version" in holder.attrs:
            return _text(holder.attrs["keras_version"])
    return None


def _read_legacy(store, root, path: Path) -> list[KerasLayerRecord]:
    version = _legacy_version(store, root)
    model_config = None
    if "model_config" in store.attrs:
        try:
            model_config = json.loads(_text(store.attrs["model_config"]))
        except json.JSONDecodeError as error:
            raise KerasFileError(f"{path}: the model_config attribute is not valid JSON ({error})") from None
    layer_names = _attr_list(root, "layer_names") or []
    records: list[KerasLayerRecord] = []
    if model_config is None:
        for layer_name in layer_names:
            if layer_name not in root:
                continue
            names, arrays = _legacy_arrays(root[layer_name], path)
            class_name = _classify_by_weight_names(names, arrays)
            if class_name:
                records.append(
                    KerasLayerRecord(layer_name, layer_name, class_name, None, arrays, version, "legacy.h5")
                )
        return records
    top_class, top_config = _unwrap_layer(model_config)
    entries = {}
    _index_legacy_entries(top_config.get("layers", []), entries) if _is_model_entry(
        top_class, top_config
    ) else None
    for layer_name in layer_names:
        entry = entries.get(layer_name)
        if entry is None or layer_name not in root:
            continue
        class_name, config = entry
        names, arrays = _legacy_arrays(root[layer_name], path)
        if _is_lstm_entry(class_name, config):
            _check_legacy_shapes(class_name, arrays, path, layer_name)
            records.append(
                KerasLayerRecord(layer_name, layer_name, class_name, config, arrays, version, "legacy.h5")
            )
        elif _is_model_entry(class_name, config):
            records += _legacy_nested(layer_name, config, names, arrays, version, path)
    return records


def _index_legacy_entries(entries: list, index: dict) -> None:
    for entry in entries:
        class_name, config = _unwrap_layer(entry)
        if isinstance(config.get("name"), str):
            index[config["name"]] = (class_name, config)


def _check_legacy_shapes(class_name: str, arrays: list[np.ndarray], path: Path, where: str) -> None:
    halves = [arrays] if class_name == "LSTM" else [arrays[: len(arrays) // 2], arrays[len(arrays) // 2 :]]
    if not all(_is_lstm_shapes(h) for h in halves) or (class_name != "LSTM" and len(arrays) % 2):
        raise KerasFileError(
            f"{path}: {class_name} {where!r}: expected kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,) "
            f"per LSTM, found shapes {[tuple(a.shape) for a in arrays]}"
        )


def _classify_by_weight_names(names: list[str], arrays: list[np.ndarray]) -> str | None:
    """LSTM / Bidirectional for a weights-only legacy group, from the names ``.../lstm_cell/kernel:0`` and
    the shapes (a Bidirectional holds two LSTMs' arrays, forward then backward)."""
    pattern = r"lstm_cell[^/]*/(kernel|recurrent_kernel|bias)(:0)?$"
    if not names or not all(re.search(pattern, n) for n in names):
        return None
    half = len(arrays) // 2
    if len(arrays) in (4, 6) and _is_lstm_shapes(arrays[:half]) and _is_lstm_shapes(arrays[half:]):
        return "Bidirectional"
    return "LSTM" if _is_lstm_shapes(arrays) else None


def _legacy_nested(
    model_name: str, model_config: dict, names: list[str], arrays: list[np.ndarray], version, path: Path
) -> list[KerasLayerRecord]:
    """Split a nested model's weights by sublayer: its weight names carry the sublayer's name as a path
    component (``inner_lstm/lstm_cell/kernel:0``)."""
    records = []
    for entry in model_config.get("layers", []):
        class_name, config = _unwrap_layer(entry)
        sub_name = config.get("name")
        if not _is_lstm_entry(class_name, config) or not sub_name:
            continue
        picked = [a for n, a in zip(names, arrays, strict=True) if sub_name in n.split("/")]
        key = f"{model_name}/{sub_name}"
        _check_legacy_shapes(class_name, picked, path, key)
        records.append(KerasLayerRecord(key, sub_name, class_name, config, picked, version, "legacy.h5"))
    return records


# -- choosing one -------------------------------------------------------------------------------------------
def select_record(
    records: Sequence[KerasLayerRecord],
    key: str | None,
    path: PathLike,
    class_names: Sequence[str] = _LSTM_CLASSES,
) -> KerasLayerRecord:
    """The record ``key`` names (a key first, else a unique layer name), or the only one of ``class_names``
    when ``key`` is None. Errors list the choices."""
    choices = ", ".join(r.describe() for r in records) or "none"
    if key is not None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__}")
        found = [r for r in records if r.key == key] or [r for r in records if r.name == key]
        if len(found) != 1:
            why = "no layer" if not found else "several layers"
            raise KerasFileError(f"{path}: {why} with key {key!r}; the LSTM layers in it are: {choices}")
        record = found[0]
        if record.class_name not in class_names:
            raise KerasFileError(
                f"{path}: key {key!r} is a {record.class_name}, expected {' or '.join(class_names)}"
            )
        return record
    fitting = [r for r in records if r.class_name in class_names]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        raise KerasFileError(
            f"{path}: no {' or '.join(class_names)} layer in this file; the LSTM layers in it are: {choices}"
        )
    raise KerasFileError(
        f"{path}: holds {len(fitting)} {' / '.join(class_names)} layers, pass key= to pick one: "
        + ", ".join(r.describe() for r in fitting)
    )


# -- writing --------------------------------------------------------------------------------------------
def _layer_output_shape(record: KerasLayerRecord, shape: list) -> list:
    """The output shape of a layer (batch first, None for unknown), to chain build configs."""
    configs = _lstm_configs(record.class_name, record.config)
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
    lstm_configs = _lstm_configs(record.class_name, record.config)
    if record.class_name == "Bidirectional" and not lstm_configs:
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
    for config in lstm_configs:
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
        if value == _KERAS2_HARD_SIGMOID or (keras2 and value == "hard_sigmoid"):
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


def _store_keys(records: Sequence[KerasLayerRecord]) -> list[str]:
    counters: dict[str, int] = {}
    keys = []
    for record in records:
        base = snake_case(record.class_name)
        counters[base] = counters.get(base, -1) + 1
        keys.append(base if counters[base] == 0 else f"{base}_{counters[base]}")
    return keys


def weights_store_bytes(records: Sequence[KerasLayerRecord], model_name: str = "sequential") -> bytes:
    """A Keras 3 ``model.weights.h5`` for a Sequential of ``records``, as bytes (Keras 3.15's layout)."""
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        layers = store.create_group("layers")
        for key, record in zip(_store_keys(records), records, strict=True):
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
        configs = _lstm_configs(record.class_name, record.config)
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


def atomic_write_bytes(path: PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same directory and ``os.replace``;
    nothing is left behind on error."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"path: the directory {str(directory)!r} does not exist (writing {str(path)!r})"
        )
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed or removed
        dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)  # a temporary file is 0600; give it a normal file's mode
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


# -- the layer-level API (unilstm.keras.load_weights / load_layers / save_model) ---------------------------
_KERAS2_HARD_SIGMOID = "hard_sigmoid_keras2"
_KERAS2_SEMANTICS = "2"  # keras_version of records from front-door layers with Keras 2 semantics


def _keras_classes():
    from .. import keras as front  # the Keras front door; imported late (it re-exports this module's API)

    return front.LSTM, front.Bidirectional


def _activation_name(value: Any) -> Any:
    """A serialized Keras activation -> its name: ``'tanh'`` stays, ``{'class_name': 'function', 'config':
    'my_act'}`` (a custom function) gives ``'my_act'``; anything else is returned unchanged."""
    if (
        isinstance(value, dict)
        and value.get("class_name") == "function"
        and isinstance(value.get("config"), str)
    ):
        return value["config"]
    return value


def _prepare_lstm_config(config: dict, custom_objects: dict[str, Any], where: str) -> dict:
    from ..activations import REGISTRY

    config = dict(config)
    for argument in ("activation", "recurrent_activation"):
        if argument not in config:
            continue
        value = _activation_name(config[argument])
        if isinstance(value, str):
            if value in custom_objects:
                value = custom_objects[value]
            elif value.rsplit(".", 1)[-1] not in REGISTRY:
                raise KerasFileError(
                    f"{where}: {argument} {value!r} is not a Keras built-in; pass custom_objects="
                    f"{{{value!r}: <a function on torch tensors>}}"
                )
        config[argument] = value
    return config


def _prepare_config(record: KerasLayerRecord, custom_objects: dict[str, Any], where: str) -> dict:
    """The record's config, ready for the front door's ``from_config``: custom activations resolved through
    ``custom_objects`` (a clear error for unknown ones)."""
    if record.class_name == "LSTM":
        return _prepare_lstm_config(record.config, custom_objects, where)
    config = dict(record.config)
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


def load_weights(layer: Any, path: PathLike, key: str | None = None) -> Any:
    """Load an LSTM's or a Bidirectional's weights from a Keras file into ``layer`` (a
    ``unilstm.keras.LSTM`` or ``unilstm.keras.Bidirectional``), building it first when needed.

    Args:
        layer: the layer to fill; its kind (LSTM or Bidirectional) and sizes must match the stored layer's.
        path: a ``.keras``, ``.weights.h5`` or legacy ``.h5`` file written by Keras 3 or tf-keras.
        key: which layer when the file holds several of that kind: the key of :class:`KerasLayerRecord`
            (``'lstm'``, ``'lstm_1'``, ``'bidirectional'``, ``'sequential/lstm'``; for legacy .h5 the layer's
            name) or a layer name the file records. The error message lists the choices.

    Returns:
        ``layer``.

    Raises:
        KerasFileError: unreadable file, no such key, several candidates and no key, or the arrays' shapes
            do not fit ``layer``.
    """
    lstm_class, bidirectional_class = _keras_classes()
    if isinstance(layer, bidirectional_class):
        wanted = ("Bidirectional",)
    elif isinstance(layer, lstm_class):
        wanted = ("LSTM",)
    else:
        raise TypeError(
            f"layer must be a unilstm.keras.LSTM or unilstm.keras.Bidirectional, got {type(layer).__name__}"
        )
    record = select_record(read_keras_lstm_layers(path), key, path, wanted)
    if not getattr(layer, "built", False):
        layer.build(_build_input_shape(record))
    current = [np.shape(w) for w in layer.get_weights()]
    stored = [tuple(w.shape) for w in record.weights]
    if [tuple(s) for s in current] != stored:
        raise KerasFileError(
            f"{path}: layer {record.describe()} has weight shapes {stored}, but the given layer has {current}"
        )
    layer.set_weights(record.weights)
    return layer


def load_layers(path: PathLike, custom_objects: dict[str, Any] | None = None) -> list[Any]:
    """Every LSTM and Bidirectional(LSTM) layer of a ``.keras`` or legacy ``.h5`` model file, as
    ``unilstm.keras`` layers built from the stored configs, with the stored weights, in model order (layers of
    nested models included).

    Layers that come from Keras 2 (the file's keras_version < 3, or configs with ``time_major`` /
    ``implementation``) keep Keras 2's ``hard_sigmoid`` (``clip(0.2 x + 0.5, 0, 1)``), so their numbers are
    reproduced. Custom activations (stored by name) are looked up in ``custom_objects``: a dict from the
    stored name to a function on torch tensors.

    Raises:
        KerasFileError: unreadable file; a weights-only file (no configs: use :func:`load_weights`); an
            activation neither built in nor in ``custom_objects``.
    """
    custom_objects = dict(custom_objects or {})
    lstm_class, bidirectional_class = _keras_classes()
    records = read_keras_lstm_layers(path)
    layers = []
    for record in records:
        if record.config is None:
            raise KerasFileError(
                f"{path}: a weights-only file has no layer configs; build the layers yourself and use "
                f"load_weights(layer, path, key=...) (layers in it: "
                f"{', '.join(r.describe() for r in records)})"
            )
        config = _prepare_config(record, custom_objects, f"{path}: layer {record.describe()}")
        cls = lstm_class if record.class_name == "LSTM" else bidirectional_class
        try:
            layer = cls.from_config(config, keras2=record.is_keras2)
        except (TypeError, ValueError) as error:
            raise KerasFileError(
                f"{path}: layer {record.describe()}: its config was refused: {error}"
            ) from error
        layer.build(_build_input_shape(record))
        layer.set_weights(record.weights)
        layers.append(layer)
    return layers


def _serialized(entry: Any) -> Any:
    if isinstance(entry, dict) and "class_name" in entry:
        return {"module": "keras.layers", "registered_name": None, **entry}
    return entry


def record_from_layer(layer: Any, index: int = 0) -> KerasLayerRecord:
    """A :class:`KerasLayerRecord` of a built ``unilstm.keras`` LSTM or Bidirectional: its ``get_config()``,
    its ``get_weights()``, and ``keras_version`` ``'2'`` for a layer with Keras 2 semantics (from a Keras 2
    config) so that :attr:`KerasLayerRecord.is_keras2` tells which ``hard_sigmoid`` the config means.
    :func:`write_keras_model` makes the config fit for Keras 3 (or refuses what Keras 3 cannot express).

    Raises:
        TypeError: ``layer`` is not a Keras front-door layer.
        ValueError: not built, or an activation no Keras config can name (a Python callable).
    """
    lstm_class, bidirectional_class = _keras_classes()
    where = f"layers[{index}]"
    if isinstance(layer, bidirectional_class):
        class_name = "Bidirectional"
    elif isinstance(layer, lstm_class):
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
            if value == _KERAS2_HARD_SIGMOID and not keras2:
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
