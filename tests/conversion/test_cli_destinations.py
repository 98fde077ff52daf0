"""``unilstm convert``'s destinations and failures: never the source, only regular files or new paths, the
destination's permissions kept, read-only files refused, leftovers of killed runs removed, usage errors for
impossible tolerances, every failure exit 2 with one line and no traceback."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unilstm import cli
from unilstm.formats import atomic

FIXTURES = Path(__file__).parents[1] / "fixtures"
MS_CKPT = FIXTURES / "mindspore" / "lstm_l2_bi.ckpt"
K3_SEQ = FIXTURES / "keras_files" / "k3_seq.keras"
pytest.importorskip("h5py")
cv = importlib.import_module("unilstm.convert")
api = importlib.import_module("unilstm.convert.api")  # where convert() looks verify up


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".unilstm-"))


def _run_cli(*argv: str, code: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (exit statuses and tracebacks as a user sees them); ``code`` runs first."""
    main = "from unilstm import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
    script = f"import sys\n{textwrap.dedent(code)}\n{main}"
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=timeout
    )


# -- never the source ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "emit-code"])
def test_converting_a_file_onto_itself_is_refused_and_the_source_kept(tmp_path, capsys, how):
    """Guards: `unilstm convert m.keras m.keras` exited 0 and overwrote its source with the LSTMs alone."""
    source = tmp_path / "m.keras"
    shutil.copy(K3_SEQ, source)
    before = source.read_bytes()
    argv = ["convert", str(source)]
    if how == "same path":
        argv.append(str(source))
    elif how == "symlink":
        (tmp_path / "link.keras").symlink_to(source)
        argv.append(str(tmp_path / "link.keras"))
    elif how == "hard link":
        os.link(source, tmp_path / "other.keras")
        argv.append(str(tmp_path / "other.keras"))
    else:
        argv += [str(tmp_path / "m.pt"), "--layer", "encoder", "--emit-code", str(source)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "is the source file itself" in err and err.count("\n") == 1
    assert source.read_bytes() == before
    assert not (tmp_path / "m.pt").exists() and _leftovers(tmp_path) == []


def test_emit_code_onto_the_target_is_refused(tmp_path, capsys):
    """Guards: --emit-code naming the target wrote the code, then the target over it (or the reverse)."""
    target = tmp_path / "m.pt"
    assert cli.main(["convert", str(MS_CKPT), str(target), "--emit-code", str(target)]) == 2
    assert "is the conversion's target file" in capsys.readouterr().err and not target.exists()


# -- what is at the destination ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.ckpt", "m.pt", "m.safetensors", "m.onnx", "m.keras", "m.weights.h5"])
def test_overwriting_keeps_the_destinations_mode(tmp_path, capsys, name):
    """Guards the destination's permissions through every writer (the issue saw 0600 become 0644; the ckpt
    writer sets 0400 on what it writes)."""
    if name.endswith((".safetensors", ".onnx")):
        pytest.importorskip(name.rsplit(".", 1)[1])
    target = tmp_path / name
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    assert cli.main(["convert", "-q", str(MS_CKPT), str(target)]) == 0, capsys.readouterr().err
    assert target.read_bytes() != b"old" and _mode(target) == 0o600
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_read_only_destination_is_refused_as_cp_refuses_it(tmp_path, capsys, monkeypatch):
    """Guards: a 0444 destination was replaced silently; a file the user may not write is refused (the
    check is the system's own: root may write it, as cp does)."""
    target = tmp_path / "m.pt"
    target.write_bytes(b"mine")
    os.chmod(target, 0o444)
    if os.access(target, os.W_OK):  # root: emulate a user who may not write it
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == target else real_access(p, m))
    assert cli.main(["convert", str(MS_CKPT), str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target}: is read-only (mode 0444)" in err and err.count("\n") == 1
    assert target.read_bytes() == b"mine" and _mode(target) == 0o444 and _leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_at_the_destination_is_refused_and_stays_a_fifo(tmp_path, capsys):
    """Guards: a FIFO at the destination was replaced by a regular file."""
    target = tmp_path / "m.ckpt"
    os.mkfifo(target)
    assert cli.main(["convert", str(MS_CKPT), str(target)]) == 2
    assert "is a FIFO" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and os.listdir(tmp_path) == ["m.ckpt"]


def test_a_link_at_the_destination_is_written_through(tmp_path, capsys):
    """Guards: a link at the destination was replaced by a regular file (cp writes through it)."""
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "m.pt"
    real.write_bytes(b"old")
    link = tmp_path / "latest.pt"
    link.symlink_to(real)
    assert cli.main(["convert", "-q", str(MS_CKPT), str(link)]) == 0, capsys.readouterr().err
    assert link.is_symlink() and real.read_bytes() != b"old"
    assert len(cv.read_units(link)) == 1 and os.listdir(tmp_path / "runs") == ["m.pt"]


@pytest.mark.parametrize(
    ("fmt", "name"), [("keras", "leg.h5"), ("keras", "m.weights.h5"), ("weights.h5", "w.h5")]
)
def test_a_keras_target_whose_name_keras_cannot_open_is_refused_by_its_name(tmp_path, capsys, fmt, name):
    """Guards: `--to keras` to a name not ending in .keras failed naming an internal temporary."""
    assert cli.main(["convert", str(MS_CKPT), str(tmp_path / name), "--to", fmt]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / name}: a Keras" in err and ".unilstm-" not in err
    assert os.listdir(tmp_path) == []


# -- failures: exit 2, one line ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "-1", "-0.5", "abc", "-inf"])
def test_an_impossible_tolerance_is_a_usage_error(tmp_path, capsys, value):
    """Guards: --tolerance nan and -1 were accepted, then every conversion failed with exit 1."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(["convert", str(MS_CKPT), str(tmp_path / "m.pt"), f"--tolerance={value}"])
    assert stopped.value.code == 2
    assert f"--tolerance: expected a number >= 0, got {value!r}" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(cv.ConversionError, match="tolerance: expected a number >= 0"):
        cv.convert(MS_CKPT, tmp_path / "m.pt", tolerance=float("nan"))


def test_zero_and_infinite_tolerances_are_accepted(tmp_path, capsys):
    """Guards the boundary of the usage check: 0 (exact) and inf (anything) are real tolerances."""
    assert cli.main(["convert", "-q", str(MS_CKPT), str(tmp_path / "a.pt"), "--tolerance", "0"]) == 0
    assert cli.main(["convert", "-q", str(MS_CKPT), str(tmp_path / "b.pt"), "--tolerance", "inf"]) == 0
    assert (tmp_path / "a.pt").is_file() and (tmp_path / "b.pt").is_file()


def test_an_unexpected_error_exits_2_with_one_line_and_no_traceback(tmp_path):
    """Guards: a RuntimeError (the engine's, a writer's) left with a traceback and exit 1, which means
    "numbers differ"; the temporary was not named in place of the target."""
    target = tmp_path / "m.pt"
    patch = """
        import unilstm.convert.api as api
        def broken(units, fmt, path, **kwargs):
            raise RuntimeError(f"cannot run {path}")
        api.verify = broken
    """
    result = _run_cli("convert", "-q", str(MS_CKPT), str(target), code=patch)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert f"{target}: converting failed (RuntimeError: cannot run {target})" in result.stderr
    assert os.listdir(tmp_path) == []


def test_verification_errors_name_the_target_not_the_temporary(tmp_path):
    """Guards: a written file that could not be read back was named by its temporary's name."""
    [unit] = cv.read_units(MS_CKPT)
    temporary = tmp_path / ".unilstm-partial-0000-1-01234567-m.pt"
    temporary.write_bytes(b"\x00 not a torch file")
    with pytest.raises(cv.ConversionError) as refused:
        cv.verify([unit], "pt", temporary, display=tmp_path / "m.pt")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'm.pt'}: verification: reading the written file back failed")
    assert ".unilstm-partial" not in message


# -- killed runs ---------------------------------------------------------------------------------------------


_SLOW_VERIFY = """
    import pathlib, sys, time
    import unilstm.convert.api as api
    marker = pathlib.Path(sys.argv.pop())
    def slow(units, fmt, path, **kwargs):
        marker.write_text(str(path))  # the written temporary is there now
        {then}
    api.verify = slow
"""


def _wait_for(marker: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the conversion did not reach verification"
        time.sleep(0.05)


@pytest.mark.skipif(os.name == "nt", reason="kill -9 is POSIX")
def test_the_leftover_of_a_killed_run_is_removed_by_the_next_and_nothing_else(tmp_path, capsys):
    """Guards: after kill -9 the hidden temporary (hundreds of MB for big models) stayed next to the
    destination forever; the next write to that folder removes it, and only it."""
    out = tmp_path / "out"
    out.mkdir()
    foreign = [".unilstm-0123abcd-out.ckpt", ".unilstm-partial-notes.txt", "notes.txt"]
    for name in foreign:
        (out / name).write_bytes(b"not ours")
    marker = tmp_path / "marker"
    script = textwrap.dedent(_SLOW_VERIFY.format(then="time.sleep(120)"))
    script += "\nfrom unilstm import cli\nsys.exit(cli.main(sys.argv[1:]))\n"
    process = subprocess.Popen(
        [sys.executable, "-c", script, "convert", "-q", str(MS_CKPT), str(out / "m.ckpt"), str(marker)]
    )
    try:
        _wait_for(marker, process)
    finally:
        process.kill()
        process.wait()
    [left] = [name for name in _leftovers(out) if name not in foreign]
    assert left.startswith(f".unilstm-partial-{atomic._host_tag()}-{process.pid}-")
    assert left.endswith("m.ckpt")
    assert cli.main(["convert", "-q", str(MS_CKPT), str(out / "other.pt")]) == 0
    assert sorted(os.listdir(out)) == sorted([*foreign, "other.pt"])


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM ends a process outright on Windows")
def test_sigterm_removes_the_temporary_on_the_way_out(tmp_path):
    """Guards: SIGTERM (the default of kill, systemd, Docker) ended the process without removing its
    temporary."""
    marker = tmp_path / "marker"
    then = "import os, signal; os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)"
    result = _run_cli(
        "convert", "-q", str(MS_CKPT), str(tmp_path / "m.ckpt"), str(marker),
        code=_SLOW_VERIFY.format(then=then),
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert marker.exists() and sorted(os.listdir(tmp_path)) == ["marker"]
