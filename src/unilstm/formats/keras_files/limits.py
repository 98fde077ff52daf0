"""How much a Keras file may make the reader decompress and allocate.

A small file can declare a great deal: a zip member whose header claims a small size but inflates to
gigabytes, a gzip-compressed HDF5 dataset of zeros, an unallocated HDF5 dataset of any declared shape. The
reader therefore bounds, per file read:

- the weight arrays it reads, together, and the ``model.weights.h5`` member of a ``.keras`` zip, by
  ``max_bytes``: the keyword argument of the public readers, else the environment variable
  ``UNILSTM_MAX_FILE_BYTES``, else :data:`DEFAULT_MAX_FILE_BYTES` (1 GiB);
- ``config.json`` and ``metadata.json`` of a ``.keras`` zip and the ``model_config`` attribute of a legacy
  ``.h5``, by ``UNILSTM_MAX_CONFIG_BYTES``, else :data:`DEFAULT_MAX_CONFIG_BYTES` (16 MiB): a parsed JSON
  document takes up to some 30 times its size in memory.

Sizes may be given as a plain number of bytes or with a suffix: ``4G``, ``4GiB``, ``512M``, ``64k``
(powers of 1024). Past a bound the reader raises :class:`KerasFileError` naming the file, the entry, the
size and how to raise the bound.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from .records import KerasFileError

#: The default bound on the weight bytes one file read may allocate (see the module docstring).
DEFAULT_MAX_FILE_BYTES = 1 << 30
#: The default bound on one JSON document (config.json, metadata.json, model_config).
DEFAULT_MAX_CONFIG_BYTES = 16 << 20
MAX_FILE_BYTES_ENV = "UNILSTM_MAX_FILE_BYTES"
MAX_CONFIG_BYTES_ENV = "UNILSTM_MAX_CONFIG_BYTES"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_READ_CHUNK = 1 << 20


def _parse_size(text: str, variable: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"{variable}={text!r}: expected a positive number of bytes, optionally with a suffix k, M, G, T "
            "(powers of 1024), e.g. 4G"
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def max_file_bytes(given: int | None = None) -> int:
    """The bound on weight bytes per file: ``given``, else ``$UNILSTM_MAX_FILE_BYTES``, else 1 GiB."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given <= 0:
            raise ValueError(f"max_bytes: expected a positive int (bytes), got {given!r}")
        return given
    text = os.environ.get(MAX_FILE_BYTES_ENV)
    return _parse_size(text, MAX_FILE_BYTES_ENV) if text else DEFAULT_MAX_FILE_BYTES


def max_config_bytes() -> int:
    """The bound on one JSON document: ``$UNILSTM_MAX_CONFIG_BYTES``, else 16 MiB."""
    text = os.environ.get(MAX_CONFIG_BYTES_ENV)
    return _parse_size(text, MAX_CONFIG_BYTES_ENV) if text else DEFAULT_MAX_CONFIG_BYTES


def _how_to_raise(keyword: bool) -> str:
    if keyword:
        return f"pass max_bytes= or set {MAX_FILE_BYTES_ENV} (e.g. {MAX_FILE_BYTES_ENV}=4G) to allow more"
    return f"set {MAX_CONFIG_BYTES_ENV} (e.g. {MAX_CONFIG_BYTES_ENV}=64M) to allow more"


class ByteBudget:
    """The weight bytes one file read may still allocate; :meth:`charge` before each allocation."""

    def __init__(self, limit: int, path: Path) -> None:
        self.limit = limit
        self.used = 0
        self.path = path

    def charge(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.limit:
            raise KerasFileError(
                f"{self.path}: {what} needs {nbytes} bytes, which takes this file past the limit of "
                f"{self.limit} bytes a Keras file read may allocate ({self.used} already used); "
                f"{_how_to_raise(True)}"
            )
        self.used += nbytes


def read_member(archive: zipfile.ZipFile, member: str, limit: int, path: Path, weights: bool) -> bytes:
    """A zip member's bytes, refusing one past ``limit`` by its declared size and, since declared sizes can
    lie, while inflating it (never more than ``limit`` + 1 MiB is inflated)."""
    info = archive.getinfo(member)
    advice = _how_to_raise(weights)
    if info.file_size > limit:
        raise KerasFileError(
            f"{path}: member {member} declares {info.file_size} bytes unpacked ({info.compress_size} "
            f"packed), more than the limit of {limit}; {advice}"
        )
    pieces: list[bytes] = []
    total = 0
    with archive.open(info) as handle:
        while True:
            piece = handle.read(_READ_CHUNK)
            if not piece:
                break
            total += len(piece)
            if total > limit:
                raise KerasFileError(
                    f"{path}: member {member} unpacks to more than the limit of {limit} bytes (its header "
                    f"declares {info.file_size}); {advice}"
                )
            pieces.append(piece)
    return b"".join(pieces)
