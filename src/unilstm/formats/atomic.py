"""Atomic file writes, for every writer in unilstm: a file appears whole or not at all.

The bytes go to a temporary file in the destination's folder (a rename is only atomic within one file
system), are flushed to disk, get the destination's permissions and, where the process may, its owner (a
new file gets the usual ``0o666 & ~umask``), and ``os.replace`` puts the file in place. On any error the
temporary file is removed and an existing destination is left as it was.

What is written: a regular file or a new path. A link is written through (the file it names is replaced and
the link stays, as ``cp`` does); a FIFO, a device, a socket or a folder at the destination, or a link to
nothing, is refused with :class:`DestinationError` before anything is written.

Temporaries are named ``.unilstm-partial-<host>-<pid>-<random>-<destination name>`` (the destination's name
last: writers check its extension). A process killed before it finishes (``kill -9``, a power cut) leaves
its temporary behind; every write removes such leftovers from the folder it writes to: those whose process
is gone (same host, checked by pid) and any older than :data:`STALE_AFTER_S`. Nothing else is removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PathLike = str | os.PathLike

PARTIAL_PREFIX = ".unilstm-partial-"
_PARTIAL = re.compile(
    r"\.unilstm-partial-(?P<host>[0-9a-f]{4})-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}-.+", re.DOTALL
)
#: A temporary of ours older than this (seconds) is a leftover even when its pid names a live process (pids
#: are reused) or another host wrote it; a write takes seconds, a conversion's check of it less than a minute.
STALE_AFTER_S = 3600.0
_NAME_MAX = 255  # bytes in one file name on the usual file systems
_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class DestinationError(OSError):
    """A destination unilstm does not write to: not a regular file (a FIFO, a device, a socket, a folder), a
    link to nothing, or (where the caller asks, see :func:`check_destination`) a file the user may not
    write. The message names the path and what is there."""


@functools.cache
def _host_tag() -> str:
    """Four hex digits naming this host, so that a pid is only checked on the host that wrote it."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:4]


def _folder_of(target: Path) -> Path:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"path: the folder {str(directory)!r} does not exist (writing {str(target)!r})"
        )
    return directory


def resolve_destination(path: PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path``, or the file a link at ``path`` names.

    Raises:
        DestinationError: ``path`` is a link to nothing (``cp`` does not write through those either).
    """
    target = Path(path)
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if not real.exists():
        raise DestinationError(
            f"{path}: is a link to a missing file ({os.readlink(target)!r}); not writing through it"
        )
    return real


def check_destination(path: PathLike, *, must_be_writable: bool = False) -> Path:
    """The file a write to ``path`` would replace (see :func:`resolve_destination`), after checking that it is
    a regular file or a new path in an existing folder; with ``must_be_writable`` also that the user may
    write an existing file (a read-only file is refused, as ``cp`` refuses it, rather than replaced).

    Raises:
        DestinationError: something other than a regular file is there, or a read-only one.
        FileNotFoundError: the folder does not exist.
    """
    target = resolve_destination(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        _folder_of(target)
        return target
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), "not a regular file")
        raise DestinationError(
            f"{path}: is {kind}; unilstm writes only to a regular file or a new path"
        )
    if must_be_writable and not os.access(target, os.W_OK):
        raise DestinationError(
            f"{path}: is read-only (mode {stat.S_IMODE(info.st_mode):04o}); not replacing a file you cannot "
            "write: make it writable or remove it first"
        )
    return target


def _temporary_name(target: Path) -> Path:
    """A fresh name next to ``target`` that keeps its extension (writers check it: ``.keras``, ``.ckpt``)."""
    prefix = f"{PARTIAL_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}-"
    name = target.name
    while len(prefix) + len(name.encode("utf-8", "surrogateescape")) > _NAME_MAX and len(name) > 1:
        name = name[1:]  # the name's end, with its extension, is what writers look at
    return target.parent / (prefix + name)


def _is_own_temporary(target: Path) -> bool:
    """Whether ``target`` is a temporary this process named (:func:`atomic_path` hands one to a writer)."""
    match = _PARTIAL.fullmatch(target.name)
    return match is not None and match["host"] == _host_tag() and int(match["pid"]) == os.getpid()


def _writer_gone(host: str, pid: int) -> bool:
    if host != _host_tag() or pid == os.getpid() or os.name == "nt":  # os.kill on Windows terminates
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return False
    return False


def remove_stale_temporaries(folder: PathLike, *, now: float | None = None) -> list[Path]:
    """Remove the temporaries of unilstm writes in ``folder`` whose writing process is gone (on this host) or
    that are older than :data:`STALE_AFTER_S`; returns the paths removed. Only regular files named as
    :func:`atomic_file` names its temporaries are considered."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = os.scandir(os.fspath(folder))
    except OSError:
        return removed
    with entries:
        for entry in entries:
            match = _PARTIAL.fullmatch(entry.name) if entry.name.startswith(PARTIAL_PREFIX) else None
            if match is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > STALE_AFTER_S or _writer_gone(match["host"], int(match["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _take_over(temporary: Path, target: Path) -> None:
    """Give ``temporary`` the permissions (and, where allowed, the owner) of an existing ``target``."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return  # a new file keeps what it was created with: 0o666 & ~umask, or what its writer set
    if hasattr(os, "chown"):
        mine = os.stat(temporary)
        if (mine.st_uid, mine.st_gid) != (info.st_uid, info.st_gid):
            with contextlib.suppress(OSError):  # only root may give a file away; others keep theirs
                os.chown(temporary, info.st_uid, info.st_gid)
    os.chmod(temporary, stat.S_IMODE(info.st_mode))  # after chown, which clears set-id bits


def _replace(temporary: Path, target: Path) -> None:
    if os.name == "nt" and target.exists():  # Windows cannot replace a read-only file
        os.chmod(target, 0o600)
    os.replace(temporary, target)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[BinaryIO]:
    """An open binary file whose content replaces ``path`` atomically when the block ends without error.

    Raises:
        DestinationError: ``path`` is not a regular file or a new path (see :func:`check_destination`).
        FileNotFoundError: the folder does not exist.
    """
    target = check_destination(path)
    if _is_own_temporary(target):  # inside atomic_path: the path is private already, and removed on error
        with open(target, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        return
    remove_stale_temporaries(target.parent)
    temporary = _temporary_name(target)
    try:
        with open(temporary, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _take_over(temporary, target)
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
    else it is removed. Lets a caller check what it wrote before the destination changes.

    Raises:
        DestinationError: ``path`` is not a regular file or a new path (see :func:`check_destination`).
        FileNotFoundError: the folder does not exist.
    """
    target = check_destination(path)
    remove_stale_temporaries(target.parent)
    temporary = _temporary_name(target)
    try:
        yield temporary
        _take_over(temporary, target)
        _replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
