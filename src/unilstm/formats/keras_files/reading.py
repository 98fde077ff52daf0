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

from ...keras_names import snake_case
from ..hdf5 import open_hdf5, require_h5py
from .limits import ByteBudget, max_config_bytes, max_file_bytes, read_member
from .records import (
    _HDF5_SIGNATURE,
    _LSTM_CLASSES,
    _ZIP_SIGNATURES,
    KerasFileError,
    KerasLayerRecord,
    PathLike,
    _attr_list,
    _is_cudnn_shapes,
    _is_lstm_entry,
    _is_lstm_shapes,
    _is_model_entry,
    _text,
    _unwrap_layer,
)
from .stored import PendingLayer, finish_records


def read_keras_lstm_layers(path: PathLike, *, max_bytes: int | None = None) -> list[KerasLayerRecord]:
    """Every LSTM and Bidirectional(LSTM) layer of a Keras file, in model order (nested models included).

    Args:
        path: a ``.keras`` file (zip), a ``.weights.h5`` file or a legacy ``.h5`` file, written by Keras 3 or
            tf-keras. The format is recognised from the content, not the suffix.
        max_bytes: the most bytes of weights (and of the ``.keras`` zip's weights member) this read may
            allocate; by default ``$UNILSTM_MAX_FILE_BYTES`` or 1 GiB (see :mod:`.limits`).

    Returns:
        one :class:`KerasLayerRecord` per layer; ``config`` is ``None`` for weights-only files (then LSTMs
        are recognised by their key, ``lstm[_N]`` / ``bidirectional[_N]``, or their weight names, and by
        their shapes). Weights are float16, float32 or float64 arrays (Keras's bfloat16 is read as float32).

    Raises:
        KerasFileError: the file is missing, empty, truncated, corrupt or not a Keras file; it links to or
            stores data in other files; a weight is not a float array, or its shape does not fit the layer's
            config; the file needs more than ``max_bytes``.
    """
    path = Path(path)
    budget = ByteBudget(max_file_bytes(max_bytes), path)
    require_h5py()  # a missing h5py is an ImportError, not a bad file
    head = _read_head(path)
    try:
        if head.startswith(_ZIP_SIGNATURES):
            return _read_keras_zip(path, budget)
        if head.startswith(_HDF5_SIGNATURE) or _hdf5_signature_later(path):
            return _read_h5_file(path, budget)
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


def read_keras_model_config(path: PathLike) -> dict[str, Any] | None:
    """The serialized model of a ``.keras`` file (``config.json``) or a legacy ``.h5`` file (its
    ``model_config`` attribute), None when the file holds none. Bounded and checked as
    :func:`read_keras_lstm_layers`.

    Raises:
        KerasFileError: the file is unreadable, or its config is not valid JSON or too large.
    """
    path = Path(path)
    require_h5py()
    head = _read_head(path)
    try:
        if head.startswith(_ZIP_SIGNATURES):
            with _open_zip(path) as archive:
                if "config.json" not in archive.namelist():
                    return None
                config = _json_member(archive, "config.json", path)
            return config if isinstance(config, dict) else None
        with open_hdf5(path, str(path), KerasFileError) as store:
            return _model_config_attribute(store, path)
    except KerasFileError:
        raise
    except Exception as error:
        raise KerasFileError(
            f"{path}: cannot read this Keras file's config ({type(error).__name__}: {error})"
        ) from None


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


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise KerasFileError(
            f"{path}: not a readable .keras zip archive, it looks truncated ({error})"
        ) from None


def _parse_json(text: bytes | str, path: Path, where: str) -> Any:
    limit = max_config_bytes()
    if len(text) > limit:
        raise KerasFileError(
            f"{path}: {where} holds {len(text)} bytes of JSON, more than the limit of {limit}; set "
            "UNILSTM_MAX_CONFIG_BYTES (e.g. UNILSTM_MAX_CONFIG_BYTES=64M) to allow more"
        )
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise KerasFileError(
            f"{path}: {where} is corrupt: not valid JSON ({type(error).__name__}: {error})"
        ) from None


def _json_member(archive: zipfile.ZipFile, member: str, path: Path) -> Any:
    return _parse_json(read_member(archive, member, max_config_bytes(), path, weights=False), path, member)


def _read_keras_zip(path: Path, budget: ByteBudget) -> list[KerasLayerRecord]:
    with _open_zip(path) as archive:
        names = set(archive.namelist())
        missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
        if missing:
            extra = " (sharded weights are not supported)" if "model.weights.json" in names else ""
            raise KerasFileError(
                f"{path}: a .keras archive must hold config.json and model.weights.h5; missing "
                f"{', '.join(missing)}{extra}; it holds {_listing(names)}"
            )
        try:
            config = _json_member(archive, "config.json", path)
            metadata = _json_member(archive, "metadata.json", path) if "metadata.json" in names else {}
            weights = read_member(archive, "model.weights.h5", budget.limit, path, weights=True)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise KerasFileError(f"{path}: a member of the .keras archive is corrupt ({error})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasFileError(f"{path}: config.json is not a serialized Keras model (no class_name)")
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    with open_hdf5(io.BytesIO(weights), f"{path}: model.weights.h5", KerasFileError) as store:
        if "layers" not in store and "vars" not in store:
            raise KerasFileError(f"{path}: model.weights.h5 is not a Keras weights store (no 'layers' group)")
        return finish_records(_layers_from_config(store, config, version, "keras", path), path, budget)


def _read_h5_file(path: Path, budget: ByteBudget) -> list[KerasLayerRecord]:
    with open_hdf5(path, str(path), KerasFileError) as store:
        root = legacy_root(store, path)
        if root is None:
            layers = _layers_from_store(_group(store, "layers", path), "", None, "weights.h5", path)
        else:
            layers = _read_legacy(store, root, path)
        return finish_records(layers, path, budget)


def legacy_root(store: Any, path: Path) -> Any:
    """None for a Keras 3 weights store (``.weights.h5``: a ``layers`` group); for a legacy ``.h5`` the
    group holding its layers (``model_weights``, or the root of a ``save_weights`` file). Anything else is
    refused: an HDF5 file but not a Keras one."""
    if "layers" in store or ("vars" in store and "model_weights" not in store):
        return None
    weights_group = _group(store, "model_weights", path)
    root = store if weights_group is None else weights_group
    if _attr_list(root, "layer_names") is None:
        raise KerasFileError(
            f"{path}: an HDF5 file but not a Keras file: expected a 'layers' group (.weights.h5) "
            "or 'model_weights' / a 'layer_names' attribute (legacy .h5); found "
            f"{_listing(store.keys())}"
        )
    return root


def _group(parent, name: str, path: Path):
    """``parent[name]`` when it is a group, None when absent; a dataset there is a malformed file."""
    found = parent.get(name)
    if found is not None and not hasattr(found, "keys"):
        raise KerasFileError(f"{path}: expected a group at {found.name!r}, found a dataset")
    return found


def _dataset(parent, name: str, path: Path):
    found = parent[name]
    if hasattr(found, "keys") or not hasattr(found, "dtype"):
        raise KerasFileError(f"{path}: expected a weight array at {found.name!r}, found a group")
    return found


# Keras 3 weights store -------------------------------------------------------------------------------------
def _vars_name(group) -> str | None:
    vars_group = group.get("vars")
    if vars_group is not None and "name" in vars_group.attrs:
        return _text(vars_group.attrs["name"])
    return None


def _cell_datasets(group, path: Path) -> list[Any] | None:
    """The datasets of ``<group>/cell/vars`` in index order, None when there is no such group."""
    cell = _group(group, "cell", path)
    vars_group = _group(cell, "vars", path) if cell is not None else None
    if vars_group is None:
        return None
    keys = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [_dataset(vars_group, k, path) for k in keys]


def _lstm_datasets(group, path: Path, where: str) -> list[Any]:
    datasets = _cell_datasets(group, path)
    if datasets is None or not _is_lstm_shapes(datasets):
        found = "nothing" if datasets is None else [d.shape for d in datasets]
        raise KerasFileError(
            f"{path}: expected an LSTM's kernel (F, 4H), recurrent_kernel (H, 4H) and bias (4H,) at "
            f"{where}/cell/vars, found {found}"
        )
    return datasets


def _store_layer_datasets(group, class_name: str, path: Path, where: str) -> list[Any]:
    if class_name == "LSTM":
        return _lstm_datasets(group, path, where)
    datasets = []
    for direction in ("forward_layer", "backward_layer"):
        sub = _group(group, direction, path)
        if sub is None:
            raise KerasFileError(
                f"{path}: expected a Bidirectional's {direction} group at {where}/{direction}"
            )
        datasets += _lstm_datasets(sub, path, f"{where}/{direction}")
    return datasets


def _layers_from_config(
    store, model_config: dict, version: str | None, file_format: str, path: Path
) -> list[PendingLayer]:
    """Walk a serialized model and the weights store side by side."""
    layers: list[PendingLayer] = []
    top_class, top_config = _unwrap_layer(model_config)
    if _is_model_entry(top_class, top_config):
        entries = top_config.get("layers", [])
        _walk_config(
            _group(store, "layers", path),
            entries if isinstance(entries, list) else [],
            "",
            version,
            file_format,
            path,
            layers,
        )
    elif _is_lstm_entry(top_class, top_config):  # a file holding a bare layer
        datasets = _store_layer_datasets(store, top_class, path, "/")
        layers.append(
            PendingLayer(
                top_class.lower(),
                top_config.get("name"),
                top_class,
                top_config,
                datasets,
                version,
                file_format,
                "/",
            )
        )
    return layers


def _walk_config(layers_group, entries: list, prefix: str, version, file_format, path, layers) -> None:
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
        group = _group(layers_group, key, path) if layers_group is not None else None
        if group is not None and name and _vars_name(group) not in (None, name):
            group, key = _find_by_name(layers_group, name, base, group, key)
        where = f"layers/{prefix}{key}"
        if group is None:
            raise KerasFileError(
                f"{path}: the config has {class_name} {name!r} but the weights store has no group {where}"
            )
        if is_model:
            inner = config.get("layers", [])
            _walk_config(
                _group(group, "layers", path),
                inner if isinstance(inner, list) else [],
                f"{prefix}{key}/",
                version,
                file_format,
                path,
                layers,
            )
            continue
        datasets = _store_layer_datasets(group, class_name, path, where)
        layers.append(
            PendingLayer(prefix + key, name, class_name, config, datasets, version, file_format, where)
        )


def _find_by_name(layers_group, name: str, base: str, group, key: str):
    for other in layers_group:
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", other) and _vars_name(layers_group[other]) == name:
            return layers_group[other], other
    return group, key


def _layers_from_store(layers_group, prefix: str, version, file_format, path: Path) -> list[PendingLayer]:
    """Walk a weights store without a config: keys ``lstm[_N]`` and ``bidirectional[_N]`` with LSTM shapes."""
    layers: list[PendingLayer] = []
    if layers_group is None:
        return layers
    for key in sorted(layers_group.keys(), key=_natural_key):
        group = layers_group[key]
        where = f"layers/{prefix}{key}"
        if not hasattr(group, "keys"):
            continue
        if "layers" in group:
            layers += _layers_from_store(
                _group(group, "layers", path), f"{prefix}{key}/", version, file_format, path
            )
        elif re.fullmatch(r"lstm(_\d+)?", key):  # the key of class LSTM: it must hold an LSTM's arrays
            datasets = _lstm_datasets(group, path, where)
            layers.append(
                PendingLayer(
                    prefix + key, _vars_name(group), "LSTM", None, datasets, version, file_format, where
                )
            )
        elif re.fullmatch(r"bidirectional(_\d+)?", key):
            forward_group = _group(group, "forward_layer", path)
            backward_group = _group(group, "backward_layer", path)
            if forward_group is None or backward_group is None:
                raise KerasFileError(f"{path}: expected forward_layer and backward_layer groups in {where}")
            forward = _cell_datasets(forward_group, path)
            backward = _cell_datasets(backward_group, path)
            if forward is None or backward is None:
                raise KerasFileError(
                    f"{path}: expected cell/vars arrays in {where}'s forward and backward layers"
                )
            # else a Bidirectional of another RNN: not ours
            if _is_lstm_shapes(forward) and _is_lstm_shapes(backward):
                layers.append(
                    PendingLayer(
                        prefix + key,
                        _vars_name(group),
                        "Bidirectional",
                        None,
                        forward + backward,
                        version,
                        file_format,
                        where,
                    )
                )
    return layers


def _natural_key(text: str) -> tuple:
    """Order ``lstm``, ``lstm_1``, ``lstm_2``, ``lstm_10`` (HDF5 lists children alphabetically)."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", text, flags=re.DOTALL)
    assert match is not None  # (.*?) with DOTALL matches any text
    return (match.group(1), int(match.group(2)) if match.group(2) else -1)


# legacy .h5 ------------------------------------------------------------------------------------------------
def _legacy_datasets(group, path: Path) -> tuple[list[str], list[Any]]:
    names = _attr_list(group, "weight_names") or []
    datasets = []
    for name in names:
        if name not in group:
            raise KerasFileError(
                f"{path}: legacy .h5 lists weight {name!r} under {group.name} but it is missing"
            )
        datasets.append(_dataset(group, name, path))
    return names, datasets


def _legacy_version(store, root) -> str | None:
    for holder in (root, store):
        if "keras_version" in holder.attrs:
            return _text(holder.attrs["keras_version"])
    return None


def _model_config_attribute(store, path: Path) -> dict | None:
    if "model_config" not in store.attrs:
        return None
    config = _parse_json(_text(store.attrs["model_config"]), path, "the model_config attribute")
    return config if isinstance(config, dict) else None


def _read_legacy(store, root, path: Path) -> list[PendingLayer]:
    version = _legacy_version(store, root)
    model_config = _model_config_attribute(store, path)
    layer_names = _attr_list(root, "layer_names") or []
    layers: list[PendingLayer] = []
    if model_config is None:
        for layer_name in layer_names:
            if layer_name not in root:
                continue
            names, datasets = _legacy_datasets(_group(root, layer_name, path), path)
            class_name = _classify_by_weight_names(names, datasets)
            if class_name:
                layers.append(
                    PendingLayer(
                        layer_name, layer_name, class_name, None, datasets, version, "legacy.h5", layer_name
                    )
                )
        return layers
    top_class, top_config = _unwrap_layer(model_config)
    entries: dict[str, tuple[str, dict]] = {}
    if _is_model_entry(top_class, top_config) and isinstance(top_config.get("layers"), list):
        _index_legacy_entries(top_config["layers"], entries)
    for layer_name in layer_names:
        entry = entries.get(layer_name)
        if entry is None or layer_name not in root:
            continue
        class_name, config = entry
        names, datasets = _legacy_datasets(_group(root, layer_name, path), path)
        if _is_lstm_entry(class_name, config):
            _check_legacy_shapes(class_name, datasets, path, layer_name)
            layers.append(
                PendingLayer(
                    layer_name, layer_name, class_name, config, datasets, version, "legacy.h5", layer_name
                )
            )
        elif _is_model_entry(class_name, config):
            layers += _legacy_nested(layer_name, config, names, datasets, version, path)
    return layers


def _index_legacy_entries(entries: list, index: dict[str, tuple[str, dict]]) -> None:
    for entry in entries:
        class_name, config = _unwrap_layer(entry)
        if isinstance(config.get("name"), str):
            index[config["name"]] = (class_name, config)


def _check_legacy_shapes(class_name: str, datasets: list[Any], path: Path, where: str) -> None:
    if class_name == "CuDNNLSTM":
        if not _is_cudnn_shapes(datasets):
            raise KerasFileError(
                f"{path}: CuDNNLSTM {where!r}: expected kernel (F, 4H), recurrent_kernel (H, 4H), "
                f"bias (8H,), "
                f"found shapes {[d.shape for d in datasets]}"
            )
        return
    half = len(datasets) // 2
    halves = [datasets] if class_name == "LSTM" else [datasets[:half], datasets[half:]]
    if not all(_is_lstm_shapes(h) for h in halves) or (class_name != "LSTM" and len(datasets) % 2):
        raise KerasFileError(
            f"{path}: {class_name} {where!r}: expected kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,) "
            f"per LSTM, found shapes {[d.shape for d in datasets]}"
        )


def _classify_by_weight_names(names: list[str], datasets: list[Any]) -> str | None:
    """LSTM / Bidirectional for a weights-only legacy group, from the names ``.../lstm_cell/kernel:0`` and
    the shapes (a Bidirectional holds two LSTMs' arrays, forward then backward)."""
    pattern = r"lstm_cell[^/]*/(kernel|recurrent_kernel|bias)(:0)?$"
    if not names or not all(re.search(pattern, n) for n in names):
        return None
    half = len(datasets) // 2
    if len(datasets) in (4, 6) and _is_lstm_shapes(datasets[:half]) and _is_lstm_shapes(datasets[half:]):
        return "Bidirectional"
    return "LSTM" if _is_lstm_shapes(datasets) else None


def _legacy_nested(
    model_name: str, model_config: dict, names: list[str], datasets: list[Any], version, path: Path
) -> list[PendingLayer]:
    """Split a nested model's weights by sublayer: its weight names carry the sublayer's name as a path
    component (``inner_lstm/lstm_cell/kernel:0``)."""
    layers = []
    entries = model_config.get("layers", [])
    for entry in entries if isinstance(entries, list) else []:
        class_name, config = _unwrap_layer(entry)
        sub_name = config.get("name")
        if not _is_lstm_entry(class_name, config) or not sub_name:
            continue
        picked = [d for n, d in zip(names, datasets, strict=True) if sub_name in n.split("/")]
        key = f"{model_name}/{sub_name}"
        _check_legacy_shapes(class_name, picked, path, key)
        layers.append(PendingLayer(key, sub_name, class_name, config, picked, version, "legacy.h5", key))
    return layers


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

