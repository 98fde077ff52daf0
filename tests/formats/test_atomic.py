"""formats.atomic: every writer's atomic write (whole file or nothing, destination's permissions kept, only
regular files or new paths replaced, leftovers of killed writers removed)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unilstm.formats import atomic
from unilstm.formats.atomic import (
    PARTIAL_PREFIX,
    DestinationError,
    atomic_file,
    atomic_path,
    atomic_write_bytes,
    check_destination,
    remove_stale_temporaries,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_usual_mode_and_nothing_else_is_left(tmp_path):
    target = atomic_write_bytes(tmp_path / "a.bin", b"payload")
    assert target.read_bytes() == b"payload"
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(target) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["a.bin"]


def test_replacing_keeps_the_destinations_permissions(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o640


def test_an_error_while_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "a.bin", b"x")


def test_atomic_path_keeps_the_extension_and_replaces_only_on_success(tmp_path):
    target = tmp_path / "m.weights.h5"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="check failed"), atomic_path(target) as temporary:
        assert temporary.name.endswith(".weights.h5") and temporary.parent == tmp_path
        temporary.write_bytes(b"new")
        raise ValueError("check failed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.weights.h5"]
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["m.weights.h5"]


# -- destinations: regular files and new paths only; links written through ---------------------------------


def test_a_fifo_at_the_destination_is_refused_and_left_a_fifo(tmp_path):
    """Guards: a FIFO at the destination was replaced by a regular file (os.replace renames over anything)."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(DestinationError, match=r"pipe\.pt: is a FIFO .*regular file or a new path"):
        atomic_write_bytes(fifo, b"x")
    with pytest.raises(DestinationError, match="FIFO"), atomic_path(fifo):
        pass
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe.pt"]


def test_a_device_at_the_destination_is_refused(tmp_path):
    """Guards: a device node at the destination was replaced by a regular file."""
    device = tmp_path / "null.ckpt"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("making a device node needs root (and a POSIX system)")
    with pytest.raises(DestinationError, match="is a character device"):
        atomic_write_bytes(device, b"x")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_a_folder_at_the_destination_is_refused_with_its_name(tmp_path):
    """Guards: a folder at the destination gave the system's IsADirectoryError naming our temporary."""
    (tmp_path / "out.pt").mkdir()
    with pytest.raises(DestinationError, match=r"out\.pt: is a folder"):
        atomic_write_bytes(tmp_path / "out.pt", b"x")
    assert os.listdir(tmp_path) == ["out.pt"]


def test_a_link_is_written_through_and_stays_a_link(tmp_path):
    """Guards: a link at the destination was replaced by a regular file, leaving the file it named as it was
    (cp, torch.save and Keras write through it)."""
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "m.bin"
    real.write_bytes(b"old")
    os.chmod(real, 0o600)
    link = tmp_path / "m.bin"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new" and _mode(real) == 0o600
    with atomic_path(link) as temporary:
        assert temporary.parent == real.parent  # the rename stays on the real file's file system
        temporary.write_bytes(b"newer")
    assert link.is_symlink() and real.read_bytes() == b"newer"
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "real"] and os.listdir(tmp_path / "real") == ["m.bin"]


def test_a_link_to_nothing_is_refused(tmp_path):
    """Guards: a dangling link was replaced by a regular file (cp refuses to write through one)."""
    link = tmp_path / "m.bin"
    link.symlink_to(tmp_path / "gone.bin")
    with pytest.raises(DestinationError, match="link to a missing file"):
        atomic_write_bytes(link, b"x")
    assert link.is_symlink() and not (tmp_path / "gone.bin").exists()


@pytest.mark.parametrize("mode", [0o600, 0o444, 0o640, 0o755])
def test_replacing_keeps_every_mode(tmp_path, mode):
    """Guards the destination's permissions through both writers (0600 must not become 0644)."""
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chmod(target, mode)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == mode
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"newer")
    assert target.read_bytes() == b"newer" and _mode(target) == mode


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_replacing_keeps_the_owner_where_the_process_may(tmp_path):
    """Guards: a file replaced by root became root's (cp into an existing file keeps its owner)."""
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chown(target, 12345, 23456)
    atomic_write_bytes(target, b"new")
    info = os.stat(target)
    assert (info.st_uid, info.st_gid) == (12345, 23456) and target.read_bytes() == b"new"


def test_check_destination_refuses_a_read_only_file_when_asked(tmp_path, monkeypatch):
    """Guards: a file the user may not write is refused (as cp refuses it) by the check writers of user
    destinations ask for, while a writable one and a new path pass."""
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o444)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: Path(p) != target and real_access(p, m, **k))
    with pytest.raises(DestinationError, match=r"a\.bin: is read-only \(mode 0444\)"):
        check_destination(target, must_be_writable=True)
    assert check_destination(target) == target  # the library's own writers (MindSpore's) replace it
    assert check_destination(tmp_path / "new.bin", must_be_writable=True) == tmp_path / "new.bin"


# -- temporaries: recognisable, and the leftovers of killed writers removed ----------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_are_named_with_host_and_pid_and_keep_the_extension(tmp_path):
    """Guards the recognisable name the leftover cleaning relies on."""
    with atomic_path(tmp_path / "m.weights.h5") as temporary:
        pattern = r"\.unilstm-partial-([0-9a-f]{4})-(\d+)-[0-9a-f]{8}-m\.weights\.h5"
        match = re.fullmatch(pattern, temporary.name)
        assert match is not None and int(match[2]) == os.getpid()
        temporary.write_bytes(b"x")
    long_name = "m" * 240 + ".keras"  # fits a file name; with our prefix it would not
    with atomic_path(tmp_path / long_name) as temporary:
        assert temporary.name.startswith(PARTIAL_PREFIX) and temporary.name.endswith("m.keras")
        assert len(temporary.name) <= 255
        temporary.write_bytes(b"y")
    assert (tmp_path / long_name).read_bytes() == b"y"


def test_a_writer_inside_atomic_path_writes_the_temporary_itself(tmp_path):
    """Guards: a writer called on atomic_path's temporary made a second temporary named after the first."""
    target = tmp_path / "m.ckpt"
    with atomic_path(target) as temporary:
        with atomic_file(temporary) as handle:
            assert [p.name for p in tmp_path.iterdir()] == [temporary.name]
            handle.write(b"payload")
        assert [p.name for p in tmp_path.iterdir()] == [temporary.name]
    assert target.read_bytes() == b"payload" and os.listdir(tmp_path) == ["m.ckpt"]


def test_leftovers_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    """Guards: temporaries left by a killed writer (kill -9) stayed forever; the cleaning must remove only
    temporaries of ours whose process is gone or that are old, never another file."""
    host = atomic._host_tag()
    other_host = "0000" if host != "0000" else "ffff"
    dead, alive = _dead_pid(), os.getppid()
    stale = [
        f".unilstm-partial-{host}-{dead}-0123abcd-out.ckpt",  # its process is gone
        f".unilstm-partial-{host}-{alive}-4567abcd-old.ckpt",  # old: its pid was reused
        f".unilstm-partial-{other_host}-{dead}-89abcdef-old.pt",  # old, from another host
    ]
    kept = [
        f".unilstm-partial-{host}-{alive}-0123abcd-live.ckpt",  # a live writer's
        f".unilstm-partial-{other_host}-{dead}-0123abcd-fresh.pt",  # another host's: its pid says nothing
        ".unilstm-0123abcd-out.ckpt",  # not our pattern
        ".unilstm-partial-notes.txt",
        "out.ckpt",
        "notes.txt",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    hour_ago = time.time() - atomic.STALE_AFTER_S - 60
    for name in stale[1:] + ["out.ckpt", ".unilstm-0123abcd-out.ckpt"]:
        os.utime(tmp_path / name, (hour_ago, hour_ago))
    folder = tmp_path / f".unilstm-partial-{host}-{dead}-0123abcd-dir.ckpt"
    folder.mkdir()
    link = tmp_path / f".unilstm-partial-{host}-{dead}-0123abcd-link.ckpt"
    link.symlink_to(tmp_path / "notes.txt")
    atomic_write_bytes(tmp_path / "new.bin", b"payload")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, folder.name, link.name, "new.bin"])
    assert remove_stale_temporaries(tmp_path) == []
