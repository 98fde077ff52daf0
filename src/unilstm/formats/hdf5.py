"""The one way unilstm opens an HDF5 file for reading: :func:`open_hdf5` checks the whole file before any
data is read, and :func:`read_dataset` reads one dataset after checking what it stores.

HDF5 can make a read fetch bytes from outside the file: a dataset with *external storage* (its data lives in
other files named in the dataset's creation properties), a *virtual dataset* (its data is assembled from
datasets in other files), an *external link* (a group entry that opens another file), a *soft link* (an entry
that names a path, possibly pointing nowhere or elsewhere) and *user-defined links*. A Keras file holds none
of them: its groups and datasets are all reached by hard links. :func:`open_hdf5` walks every link of the file
and every dataset's creation properties (metadata only) and refuses the file when anything is not a hard link
to an object inside it, or a dataset's data does not live in it, so that no byte of another file is ever read
as a weight.

:func:`read_dataset` refuses a dataset that declares more data than it stores (an unallocated dataset whose
reading would allocate and fill its whole declared size) and reports the bytes a read allocates
(:func:`dataset_bytes`) so that callers can bound them before reading.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np

#: What a checked reader raises: the caller's format error, built from a message that names the file.
ErrorType = Callable[[str], Exception]

_LINK_KINDS = {1: "a soft link", 64: "an external link"}


def require_h5py() -> Any:
    """Import ``h5py`` (every HDF5 read and write: Keras .h5, .weights.h5, .keras), or say how to get it."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading and writing HDF5 files (Keras .h5, .weights.h5, .keras) needs h5py: "
            "pip install 'unilstm[keras]' (or pip install h5py)"
        ) from error
    return h5py


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def open_hdf5(source: str | os.PathLike | io.BytesIO, name: str, error: ErrorType) -> Any:
    """Open an HDF5 file read-only and check it (see the module docstring); the caller closes it.

    Args:
        source: a path or an in-memory file (the weights store inside a ``.keras`` zip).
        name: how messages name the file (``model.keras``, ``model.keras: model.weights.h5``).
        error: the caller's format error type (``KerasFileError``); every refusal is one, naming ``name``
            and the entry.

    Returns:
        an open ``h5py.File``.
    """
    h5py = require_h5py()
    try:
        handle = h5py.File(source, "r")
    except (OSError, ValueError) as failure:
        raise error(f"{name}: not a readable HDF5 file, it looks corrupt or truncated ({failure})") from None
    try:
        check_hdf5_structure(handle, name, error)
    except BaseException:
        handle.close()
        raise
    return handle


def check_hdf5_structure(handle: Any, name: str, error: ErrorType) -> None:
    """Refuse any link that is not a hard link, and any dataset whose data lives outside the file (external
    storage, virtual datasets). Reads metadata only; each object is visited once (hard links may form
    cycles)."""
    from h5py import h5d, h5l, h5o

    seen: set[int] = set()
    pending: list[tuple[Any, str]] = [(handle.id, "/")]
    while pending:
        group, where = pending.pop()
        for raw in group:
            entry = f"{where.rstrip('/')}/{_text(raw)}"
            kind = group.links.get_info(raw).type
            if kind != h5l.TYPE_HARD:
                target = ""
                if kind == h5l.TYPE_SOFT:
                    target = f" to {_text(group.links.get_val(raw))!r}"
                elif kind == h5l.TYPE_EXTERNAL:
                    file, inside = group.links.get_val(raw)
                    target = f" to {_text(inside)!r} in file {_text(file)!r}"
                what = _LINK_KINDS.get(kind, f"a user-defined link (class {kind})")
                raise error(
                    f"{name}: entry {entry!r} is {what}{target}; only hard links to objects inside the file "
                    "are read (HDF5 links can make a read open other files)"
                )
            info = h5o.get_info(group, raw)
            if info.addr in seen:
                continue
            seen.add(info.addr)
            if info.type == h5o.TYPE_GROUP:
                pending.append((h5o.open(group, raw), entry))
            elif info.type == h5o.TYPE_DATASET:
                _check_dataset_storage(h5o.open(group, raw), entry, name, error, h5d)


def _check_dataset_storage(dataset: Any, entry: str, name: str, error: ErrorType, h5d: Any) -> None:
    plist = dataset.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        raise error(
            f"{name}: dataset {entry!r} is a virtual dataset (its data comes from other files); refused"
        )
    if plist.get_external_count() > 0:
        files = [plist.get_external(i)[0] for i in range(plist.get_external_count())]
        raise error(
            f"{name}: dataset {entry!r} keeps its data in external files {files!r}; refused (only data "
            "stored inside the file is read)"
        )


def dataset_bytes(dataset: Any) -> int:
    """The bytes reading ``dataset`` allocates: its declared size, or one chunk when a chunk is larger (HDF5
    decompresses whole chunks)."""
    shape = dataset.shape or ()
    itemsize = dataset.dtype.itemsize
    declared = prod(int(n) for n in shape) * itemsize
    chunks = dataset.chunks
    chunk = prod(int(n) for n in chunks) * itemsize if chunks else 0
    return max(declared, chunk)


def read_dataset(dataset: Any, name: str, error: ErrorType) -> np.ndarray:
    """The array of ``dataset`` (an ``h5py.Dataset`` of a file opened by :func:`open_hdf5`), refusing one
    that declares data it does not store: an unallocated dataset (every value the fill value) or contiguous
    storage shorter than its declared size."""
    from h5py import h5d

    shape = dataset.shape or ()
    declared = prod(int(n) for n in shape) * dataset.dtype.itemsize
    if declared:
        stored = dataset.id.get_storage_size()
        layout = dataset.id.get_create_plist().get_layout()
        if stored == 0 or (layout == h5d.CONTIGUOUS and stored < declared):
            raise error(
                f"{name}: dataset {dataset.name!r} declares {declared} bytes ({tuple(shape)}, "
                f"{dataset.dtype}) but stores {stored}: no weights are written in it"
            )
    return np.asarray(dataset[()])
