"""Atomic file writes, for every writer in unilstm: a file appears whole or not at all.

The bytes go to a temporary file in the destination's folder (a rename is only atomic within one file
system), are flushed to disk, get the destination's permissions (a new file: the usual ``0o666 & ~umask``,
not the temporary file's ``0o600``), and ``os.replace`` puts the file in place. On any error the temporary
file is removed and an existing destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PathLike = str | os.PathLike


def _folder_of(target: Path) -> Path:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"path: the folder {str(directory)!r} does not exist (writing {str(target)!r})"
        )
    return directory


def _temporary_name(target: Path) -> Path:
    """A fresh name next to ``target`` that keeps its extension (writers check it: ``.keras``, ``.ckpt``)."""
    return target.parent / f".unilstm-{secrets.token_hex(4)}-{target.name}"


def _destination_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _replace(temporary: Path, target: Path) -> None:
    if os.name == "nt" and target.exists():  # Windows cannot replace a read-only file
        os.chmod(target, 0o600)
    os.replace(temporary, target)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[BinaryIO]:
    """An open binary file whose content replaces ``path`` atomically when the block ends without error."""
    target = Path(path)
    temporary = _temporary_name(Path(_folder_of(target), target.name))
    mode = _destination_mode(target)
    try:
        with open(temporary, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        _replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_bytes(path: PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (see the module docstring); returns ``path`` as a Path."""
    with atomic_file(path) as handle:
        handle.write(payload)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (same extension) for writers that take a path; when the block ends
    without error the file written there replaces ``path`` (with ``path``'s permissions when it exists),
    else it is removed. Lets a caller check what it wrote before the destination changes."""
    target = Path(path)
    temporary = _temporary_name(target)
    try:
        yield temporary
        if target.exists():
            os.chmod(temporary, _destination_mode(target))
        _replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
