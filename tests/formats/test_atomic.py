"""formats.atomic: every writer's atomic write (whole file or nothing, destination's permissions kept)."""

from __future__ import annotations

import os
import stat

import pytest

from unilstm.formats.atomic import atomic_file, atomic_path, atomic_write_bytes


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
