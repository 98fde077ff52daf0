"""Whole Keras model files: the model config and every layer's stored weights, for
:func:`unilstm.keras.load_model`.

Where a layer's weights sit (measured on files written by Keras 3.15, tf-keras 2.21 and laid out as Keras
2.2.4 writes them):

- Keras 3 store (``.keras`` zip's ``model.weights.h5``, ``.weights.h5``): one group per layer at
  ``layers/<key>`` where ``key`` is the snake-case class name with a counter per container, counted over
  the container's config entries in order (InputLayer included; operations such as Keras 3's recorded
  ``NotEqual`` are not layers and hold no group). A nested model nests ``layers/``. Arrays are
  ``<group>/vars/0, 1, ...`` in ``get_weights()`` order; an LSTM's are under ``cell/vars``, a
  Bidirectional's under ``forward_layer/`` and ``backward_layer/``, a TimeDistributed's under ``layer/``.
  Keras 3 writes each layer's name as the attribute ``name`` of its ``vars`` group, which is checked.
- legacy ``.h5`` (``model.save("m.h5")`` of every Keras since 2.0, tf-keras ``save_weights("w.h5")``): a
  group per **top-level** layer name under ``model_weights/`` (or the root), whose attribute
  ``weight_names`` lists its arrays in Keras's ``trainable_weights + non_trainable_weights`` order; a nested
  model's group lists all of its sublayers' arrays that way.

Hostile files: every HDF5 read goes through :func:`unilstm.formats.hdf5.open_hdf5` (no external storage,
virtual datasets or links out of the file); a :class:`StoredWeight` tells its shape and dtype before it is
read, the caller compares them with what the layer needs, and :meth:`StoredWeight.read` charges the bytes to
the file's budget (``max_bytes``, ``$UNILSTM_MAX_FILE_BYTES``, 1 GiB) before allocating them. Every refusal
is a :class:`KerasFileError` naming the file and the entry.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...keras_names import snake_case
from ..hdf5 import dataset_bytes, open_hdf5, require_h5py
from .limits import ByteBudget, max_config_bytes, max_file_bytes, read_member
from .reading import (
    _group,
    _hdf5_signature_later,
    _json_member,
    _legacy_version,
    _listing,
    _model_config_attribute,
    _open_zip,
    _parse_json,
    _read_head,
    legacy_root,
)
from .records import (
    _HDF5_SIGNATURE,
    _ZIP_SIGNATURES,
    KerasFileError,
    PathLike,
    _attr_list,
    _is_model_entry,
    _text,
    _unwrap_layer,
)
from .stored import _check_dtype, _read

#: Nested models deeper than this are refused (a crafted config could nest without end).
MAX_NESTING = 32

_OLDEST_READ = (2, 0)


@dataclass
class StoredWeight:
    """One array of a layer as the file declares it, not read yet."""

    name: str
    entry: str
    shape: tuple[int, ...]
    dtype: str
    _dataset: Any
    _file: KerasModelFile

    def read(self) -> np.ndarray:
        """The array (float16/32/64; Keras's bfloat16 as float32), its bytes charged to the file's budget."""
        widened = 2 if self._dataset.dtype.kind != "f" else 1
        self._file.budget.charge(
            widened * dataset_bytes(self._dataset), f"dataset {self.entry!r} {self.shape} {self.dtype}"
        )
        return _read(self._dataset, self._file.path)


class KerasModelFile:
    """An open Keras model file: its model config, the Keras version that wrote it, and its weights by
    layer. Made by :func:`open_keras_model`; valid inside its ``with`` block."""

    def __init__(
        self, path: Path, config: dict[str, Any], version: str | None, file_format: str, store: Any
    ) -> None:
        self.path = path
        self.config = config
        self.keras_version = version
        self.file_format = file_format
        self.budget = ByteBudget(0, path)
        self._store = store
        self._groups: dict[tuple[str, ...], str] = {}
        if file_format != "legacy.h5":
            self._index_keras3(config, (), "", 0)

    @property
    def keras2(self) -> bool:
        """True for files of Keras < 3 (tf-keras 2.x, Keras 2.0-2.2): their layers keep Keras 2 semantics."""
        return keras2_file(self.keras_version, self.config)

    # -- Keras 3 store ----------------------------------------------------------------------------------
    def _index_keras3(
        self, model: Mapping[str, Any], names: tuple[str, ...], prefix: str, depth: int
    ) -> None:
        if depth > MAX_NESTING:
            raise KerasFileError(f"{self.path}: models nested more than {MAX_NESTING} deep; refused")
        counters: dict[str, int] = {}
        for entry in model_layer_entries(model, self.path):
            class_name = entry["class_name"]
            if is_operation_entry(entry):
                continue
            base = snake_case("Functional" if class_name == "Model" else class_name)
            count = counters.get(base, -1) + 1
            counters[base] = count
            key = base if count == 0 else f"{base}_{count}"
            name = layer_name(entry)
            self._groups[names + (name,)] = f"layers/{prefix}{key}"
            if is_model_entry(entry):
                self._index_keras3(entry, names + (name,), f"{prefix}{key}/layers/", depth + 1)

    def _keras3_group(self, names: tuple[str, ...]) -> Any:
        where = self._groups.get(names)
        group = self._store.get(where) if where is not None else None
        if group is None or not hasattr(group, "keys"):
            raise KerasFileError(
                f"{self.path}: the config has layer {'/'.join(names)!r} but the weights store has no group "
                f"{where or '(none)'}"
            )
        stored_name = _vars_name(group)
        if stored_name is not None and stored_name != names[-1]:
            raise KerasFileError(
                f"{self.path}: the weights store's group {where} belongs to layer {stored_name!r}, the "
                f"config "
                f"puts layer {names[-1]!r} there; the file's config and weights disagree"
            )
        return group

    def _vars(self, group: Any, where: str) -> list[StoredWeight]:
        holder = _group(group, "vars", self.path)
        if holder is None:
            return []
        keys = sorted(holder.keys(), key=lambda k: (0, int(k)) if k.isdigit() else (1, 0))
        if any(not k.isdigit() for k in keys) or keys != [str(i) for i in range(len(keys))]:
            raise KerasFileError(
                f"{self.path}: {where}/vars holds {_listing(keys)}; expected arrays named 0, 1, 2 ..."
            )
        return [self._weight(holder[k], f"{where}/vars/{k}", f"{where}/{k}") for k in keys]

    def _keras3_weights(self, group: Any, class_name: str, config: Mapping[str, Any], where: str):
        if class_name in ("LSTM", "CuDNNLSTM"):
            cell = _group(group, "cell", self.path)
            return self._vars(cell, f"{where}/cell") if cell is not None else []
        if class_name == "Bidirectional":
            found: list[StoredWeight] = []
            for member, direction in (("layer", "forward_layer"), ("backward_layer", "backward_layer")):
                inner = config.get(member) or config.get("layer")
                sub = _group(group, direction, self.path)
                if sub is None:
                    raise KerasFileError(f"{self.path}: no group {where}/{direction} for a Bidirectional")
                inner_class, inner_config = _serialized(inner, self.path, where)
                found += self._keras3_weights(sub, inner_class, inner_config, f"{where}/{direction}")
            return found
        if class_name == "TimeDistributed":
            inner_class, inner_config = _serialized(config.get("layer"), self.path, where)
            sub = _group(group, "layer", self.path)
            return self._keras3_weights(sub, inner_class, inner_config, f"{where}/layer") if sub else []
        return self._vars(group, where)

    # -- legacy .h5 -------------------------------------------------------------------------------------
    def _legacy_weights(self, names: tuple[str, ...]) -> list[StoredWeight]:
        root = self._store.get("model_weights", self._store)
        if len(names) != 1:
            raise KerasFileError(f"{self.path}: legacy .h5 files keep weights per top-level layer only")
        layer_names = _attr_list(root, "layer_names") or []
        if names[0] not in layer_names or names[0] not in root:
            return []
        group = _group(root, names[0], self.path)
        found = []
        for weight_name in _attr_list(group, "weight_names") or []:
            if weight_name not in group:
                raise KerasFileError(
                    f"{self.path}: legacy .h5 lists weight {weight_name!r} under {group.name} but it is "
                    "missing"
                )
            found.append(self._weight(group[weight_name], f"{group.name}/{weight_name}", weight_name))
        return found

    def _weight(self, dataset: Any, entry: str, name: str) -> StoredWeight:
        if hasattr(dataset, "keys") or not hasattr(dataset, "dtype"):
            raise KerasFileError(f"{self.path}: expected a weight array at {entry!r}, found a group")
        _check_dtype(dataset, self.path)
        return StoredWeight(
            name, entry, tuple(int(n) for n in dataset.shape), str(dataset.dtype), dataset, self
        )

    # -- the one query ----------------------------------------------------------------------------------
    def layer_weights(
        self, names: tuple[str, ...], class_name: str, config: Mapping[str, Any]
    ) -> list[StoredWeight]:
        """The stored arrays of the layer at ``names`` (its name, after the names of the models holding
        it), in ``get_weights()`` order for the Keras 3 store; for legacy ``.h5`` (top-level layers only) in
        the file's ``trainable + non_trainable`` order."""
        if self.file_format == "legacy.h5":
            return self._legacy_weights(names)
        group = self._keras3_group(names)
        return self._keras3_weights(group, class_name, config, self._groups[names])


def keras2_file(version: str | None, config: Mapping[str, Any] | None) -> bool:
    """Whether a file is Keras < 3: its version when it says, else its config's shape (Keras 3 configs carry
    ``module`` keys and dict-shaped ``inbound_nodes``)."""
    if version:
        major = re.match(r"\s*(\d+)", version)
        if major:
            return int(major.group(1)) < 3
    text = json.dumps(config)[:200_000] if config is not None else ""
    return '"module"' not in text


def model_layer_entries(model: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    """The serialized layers of a serialized model: ``config["layers"]``, or Keras 2.0-2.2's Sequential
    config, which is the list itself."""
    config = model.get("config")
    layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not isinstance(layers, list):
        raise KerasFileError(f"{path}: model {layer_name(model)!r} has no list of layers in its config")
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise KerasFileError(
                f"{path}: a layer entry of model {layer_name(model)!r} is not a serialized layer"
            )
        if not isinstance(entry.get("config", {}), dict):
            raise KerasFileError(
                f"{path}: layer entry {entry.get('class_name')!r} has a config that is not a dict"
            )
    return layers


def layer_name(entry: Mapping[str, Any]) -> str:
    """A serialized layer's name (its ``name``, else its config's)."""
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
    return str(name) if name is not None else str(entry.get("class_name", "?"))


def is_model_entry(entry: Mapping[str, Any]) -> bool:
    """A serialized Sequential / Functional / Model (a model nested as a layer)."""
    return isinstance(entry.get("class_name"), str) and _is_model_entry(*_unwrap_layer(entry))


def is_operation_entry(entry: Mapping[str, Any]) -> bool:
    """A Keras 3 operation recorded in a functional graph (``keras.ops.not_equal`` of an Embedding's mask
    ...): module ``keras.src.ops.*``, or in a legacy ``.h5`` (which drops modules) a config with neither
    ``trainable`` nor a ``dtype`` (every Keras 3 layer's config has one of them; an operation's holds its
    name and arguments, ``ConvertToTensor``'s a ``dtype`` of null)."""
    module = entry.get("module")
    if isinstance(module, str):
        return module.startswith("keras.src.ops")
    config = entry.get("config")
    return (
        isinstance(config, dict)
        and "trainable" not in config
        and config.get("dtype") is None
        and entry.get("class_name") != "InputLayer"
        and not is_model_entry(entry)
    )


def _serialized(entry: Any, path: Path, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise KerasFileError(f"{path}: the wrapper at {where} has no serialized inner layer")
    config = entry.get("config")
    return entry["class_name"], config if isinstance(config, dict) else {}


def _vars_name(group: Any) -> str | None:
    vars_group = group.get("vars")
    if vars_group is not None and hasattr(vars_group, "attrs") and "name" in vars_group.attrs:
        return _text(vars_group.attrs["name"])
    return None


def _load_config_source(source: Mapping[str, Any] | PathLike, path: Path) -> tuple[dict, str | None]:
    """A config given beside a weights-only file: a dict, a ``.json`` file (``model.to_json()``) or a
    ``.keras`` file (its ``config.json``)."""
    if isinstance(source, Mapping):
        return dict(source), None
    config_path = Path(source)
    head = _read_head(config_path)
    if head.startswith(_ZIP_SIGNATURES):
        with _open_zip(config_path) as archive:
            config = _json_member(archive, "config.json", config_path)
            names = set(archive.namelist())
            metadata = _json_member(archive, "metadata.json", config_path) if "metadata.json" in names else {}
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    else:
        if config_path.stat().st_size > max_config_bytes():
            _parse_json(b" " * (max_config_bytes() + 1), config_path, "the config file")
        config = _parse_json(config_path.read_bytes(), config_path, "the config file")
        version = config.get("keras_version") if isinstance(config, dict) else None
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasFileError(f"{config_path}: not a serialized Keras model (no class_name)")
    return config, version


def _check_version(path: Path, version: str | None) -> None:
    if not version:
        return
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) < _OLDEST_READ:
        raise KerasFileError(
            f"{path}: written by Keras {version}; files older than Keras 2.0 (Keras 1 configs and weight "
            "layouts) are not read. Load it in Keras 2.x and save it again."
        )


@contextmanager
def open_keras_model(
    path: PathLike, *, config: Mapping[str, Any] | PathLike | None = None, max_bytes: int | None = None
) -> Iterator[KerasModelFile]:
    """Open a whole-model Keras file for reading.

    Args:
        path: ``.keras`` (Keras 3 or tf-keras), legacy ``.h5`` (any Keras since 2.0), or a weights-only
            ``.weights.h5`` / tf-keras ``save_weights`` ``.h5``, which need ``config``.
        config: the model's config for a weights-only file: a dict, the path of a ``.json`` file written
            by ``model.to_json()``, or of a ``.keras`` file; it overrides a config the file carries.
        max_bytes: the most weight bytes the read may allocate (default ``$UNILSTM_MAX_FILE_BYTES`` or
            1 GiB).

    Raises:
        KerasFileError: the file is missing, corrupt, not a Keras model file, older than Keras 2.0, or has no
            config and none was given.
    """
    path = Path(path)
    limit = max_file_bytes(max_bytes)
    require_h5py()
    head = _read_head(path)
    given, given_version = _load_config_source(config, path) if config is not None else (None, None)
    stored: Any = None
    version: str | None = None
    if head.startswith(_ZIP_SIGNATURES):
        try:
            with _open_zip(path) as archive:
                names = set(archive.namelist())
                if "model.weights.h5" not in names:
                    raise KerasFileError(
                        f"{path}: a .keras archive must hold model.weights.h5; it holds {_listing(names)}"
                    )
                stored = _json_member(archive, "config.json", path) if "config.json" in names else None
                metadata = _json_member(archive, "metadata.json", path) if "metadata.json" in names else {}
                weights = read_member(archive, "model.weights.h5", limit, path, weights=True)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise KerasFileError(f"{path}: a member of the .keras archive is corrupt ({error})") from None
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        store = open_hdf5(io.BytesIO(weights), f"{path}: model.weights.h5", KerasFileError)
        file_format = "keras"
    elif head.startswith(_HDF5_SIGNATURE) or _hdf5_signature_later(path):
        store = open_hdf5(path, str(path), KerasFileError)
        file_format = ""
    else:
        raise KerasFileError(
            f"{path}: not a Keras file: expected a .keras zip archive or an HDF5 file (.h5, .weights.h5), "
            f"got a file starting with {head[:8]!r}"
        )
    try:
        try:
            opened = _describe(path, store, file_format, stored, version, given, given_version, limit)
        except KerasFileError:
            raise
        except (KeyError, TypeError, ValueError, OSError, AttributeError) as error:
            raise KerasFileError(
                f"{path}: cannot read this Keras model file, it looks corrupt "
                f"({type(error).__name__}: {error})"
            ) from None
        yield opened
    finally:
        store.close()


def _describe(
    path: Path,
    store: Any,
    file_format: str,
    stored: Any,
    version: str | None,
    given: dict | None,
    given_version: str | None,
    limit: int,
) -> KerasModelFile:
    if not file_format:
        root = legacy_root(store, path)
        if root is None:
            file_format = "weights.h5"
        else:
            file_format = "legacy.h5"
            version = _legacy_version(store, root)
            stored = _model_config_attribute(store, path)
    _check_version(path, version)
    model_config = given if given is not None else stored
    if not isinstance(model_config, dict) or "class_name" not in model_config:
        raise KerasFileError(
            f"{path}: holds weights but no model config; pass config= (the model's .json from "
            "model.to_json(), or its .keras file)"
        )
    opened = KerasModelFile(path, model_config, version or given_version, file_format, store)
    opened.budget = ByteBudget(limit, path)
    return opened
