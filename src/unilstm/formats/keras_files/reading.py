"""Reading LSTM layers from ``.keras``, ``.weights.h5`` and legacy ``.h5`` files (see
:mod:`unilstm.formats.keras_files` for what the files hold), and choosing one of them."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...keras_names import snake_case
from .records import (
    _HDF5_SIGNATURE,
    _LSTM_CLASSES,
    _ZIP_SIGNATURES,
    KerasFileError,
    KerasLayerRecord,
    PathLike,
    _attr_list,
    _h5py,
    _is_lstm_entry,
    _is_lstm_shapes,
    _is_model_entry,
    _text,
    _unwrap_layer,
)


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
            f"{path}: cannot read this Keras file, it looks corrupt or truncated "
            f"({type(error).__name__}: {error})"
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
            forward_group, backward_group = group.get("forward_layer"), group.get("backward_layer")
            if forward_group is None or backward_group is None:
                raise KerasFileError(f"{path}: expected forward_layer and backward_layer groups in {where}")
            forward_arrays = _cell_arrays(forward_group, path, where)
            backward_arrays = _cell_arrays(backward_group, path, where)
            if forward_arrays is None or backward_arrays is None:
                raise KerasFileError(
                    f"{path}: expected cell/vars arrays in {where}'s forward and backward layers"
                )
            # else a Bidirectional of another RNN: not ours
            if _is_lstm_shapes(forward_arrays) and _is_lstm_shapes(backward_arrays):
                records.append(
                    KerasLayerRecord(
                        prefix + key,
                        _vars_name(group),
                        "Bidirectional",
                        None,
                        forward_arrays + backward_arrays,
                        version,
                        file_format,
                    )
                )
    return records


def _natural_key(text: str) -> tuple:
    """Order ``lstm``, ``lstm_1``, ``lstm_2``, ``lstm_10`` (HDF5 lists children alphabetically)."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", text, flags=re.DOTALL)
    assert match is not None  # (.*?) with DOTALL matches any text
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
    entries: dict[str, tuple[str, dict]] = {}
    if _is_model_entry(top_class, top_config):
        _index_legacy_entries(top_config.get("layers", []), entries)
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


def _index_legacy_entries(entries: list, index: dict[str, tuple[str, dict]]) -> None:
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

