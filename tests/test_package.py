"""The package as a user gets it: ``python -m build`` makes an sdist that holds what a build needs and nothing
else; a wheel built from that sdist installs into a fresh virtual environment and works, with the C kernel
compiled, and again where no C compiler is found (``CC=/nonexistent``: the install still succeeds and the
pure-torch kernels compute).

No network: the builds run without isolation (``build`` and ``setuptools>=77`` come with the dev extra), and
the fresh environment gets its dependencies from this one without seeing anything else of it. It is made
``--without-pip`` and without system site-packages; pip runs from here with ``--python`` and ``--no-index``.
A ``.pth`` file puts one directory on its path that holds links to exactly the distributions the wheel
declares (torch, numpy, protobuf) and those they require in turn, as installed here. So pip must resolve
every declared requirement against them (one that this environment lacks fails the install), and a module
the wheel imports without declaring it (h5py, onnx, this checkout's editable unilstm) is simply not there.

Those tests are slow (the C file takes most of a minute at -O3 on a loaded core): ``-m "not slow"``
deselects them locally; CI (``make test``) runs them. The first test, of the version and the command line
from the checkout, is quick.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # a dependency of build, which the dev extra installs
from packaging.utils import canonicalize_name

import unilstm
from unilstm import cli

ROOT = Path(__file__).resolve().parents[1]
# the sdist is built from a copy of the checkout without what .gitignore names (environments, caches, build
# outputs: a clean clone has none of them)
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".refenv", ".*_cache", ".hypothesis", "build", "dist", "*.egg-info", "__pycache__",
    "*.so", "*.py[cod]", "rank_0",
)
NATIVE = "src/unilstm/kernels/native"
# everything a build from the sdist reads: setup.py execs activation_ids.py and compiles the C file with
# its header; the wheel then ships py.typed and the extension's stub
SDIST_NEEDS = [
    "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "PKG-INFO",
    f"{NATIVE}/_lstm_cell.c", f"{NATIVE}/_lstm_cell_body.h", f"{NATIVE}/_lstm_cell.pyi",
    "src/unilstm/kernels/activation_ids.py", "src/unilstm/py.typed", "src/unilstm/_version.py",
]
# build outputs and the repository's own tooling: the sdist builds and installs the package, the suite runs
# from the repository (its 6 MB of framework-written fixtures and the reference environments stay there)
SDIST_REFUSES = re.compile(r"(\.so|\.pyc|\.o)$|__pycache__|^(tests|tools|benchmarks|docs|\.ci)/")

SMOKE = r"""
import json, sys
import torch
import unilstm
import unilstm.torch
from unilstm.kernels import dispatch, native

compiled = sys.argv[1] == "1"
assert unilstm.__file__.startswith(sys.prefix), unilstm.__file__  # the wheel's copy, not the checkout's
assert native.available() is compiled, native.unavailable_reason()
report = {"version": unilstm.__version__, "reason": native.unavailable_reason()}

# the torch door against torch.nn.LSTM, on the default route and (with the extension) forced into C
torch.manual_seed(0)
ours = unilstm.torch.LSTM(4, 6, bidirectional=True).double()
theirs = torch.nn.LSTM(4, 6, bidirectional=True).double()
theirs.load_state_dict(ours.state_dict())
x = torch.randn(5, 3, 4, dtype=torch.float64)
expected = theirs(x)[0]
for kernel in ["default"] + (["native"] if compiled else []):
    dispatch.force_kernel(None if kernel == "default" else kernel)
    report["torch door, " + kernel] = (ours(x)[0] - expected).abs().max().item()
dispatch.force_kernel(None)

# a cell only the direction kernels compute (relu): its default route, values and gradients, against the
# reference loop
layer = unilstm.LSTM(4, 6, activation="relu").double()
results = []
for kernel in (None, "reference"):
    dispatch.force_kernel(kernel)
    inputs = x.clone().requires_grad_()
    output = layer(inputs)[0]
    output.square().sum().backward()
    results.append((output.detach(), inputs.grad))
dispatch.force_kernel(None)
report["relu cell, output"] = (results[0][0] - results[1][0]).abs().max().item()
report["relu cell, gradient"] = (results[0][1] - results[1][1]).abs().max().item()
print(json.dumps(report))
"""


def _environment() -> dict[str, str]:
    """This process's environment without what would let a child see the checkout or pip's configuration
    (the suite runs with PYTHONPATH=src; a user's pip.conf may name indexes)."""
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME") and not key.startswith("PIP_")
    }
    env.update(PYTHONNOUSERSITE="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(*command: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Runs the command; its standard output, or a failure showing the end of both outputs."""
    done = subprocess.run(
        [str(part) for part in command], env=env or _environment(), cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _dependency_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions these requirements need, and theirs, recursively (markers evaluated
    here, extras not followed: the wheel asks for none)."""
    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        distribution = metadata.distribution(name)
        found[name] = distribution
        pending += [Requirement(text) for text in distribution.requires or []]
    return list(found.values())


def _link_dependencies(requirements: list[str], target: Path) -> None:
    """Links in ``target`` to the top-level entries (packages, modules, .libs, .dist-info) of each
    distribution the requirements need, as recorded in its RECORD."""
    target.mkdir()
    for distribution in _dependency_closure(requirements):
        assert distribution.files, f"{distribution.metadata['Name']} has no RECORD"
        for top in {Path(file).parts[0] for file in distribution.files} - {"..", "__pycache__"}:
            source = Path(str(distribution.locate_file(top)))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)


def _fresh_environment(path: Path, dependencies: Path) -> Path:
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    site = _run(path / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    Path(site, "_unilstm_test_dependencies.pth").write_text(f"{dependencies}\n")
    return path / "bin/python"


def _install(python: Path, wheel: Path) -> None:
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-cache-dir", "--quiet",
        "--find-links", wheel.parent, "unilstm",
    )


@dataclass
class Built:
    """What the module's tests share: the sdist, the links to the dependencies, and the wheel build with
    the compiler (started at once, so that its most-of-a-minute of compiling overlaps the other tests)."""

    work: Path
    sdist: Path
    dependencies: Path
    compiled_build: subprocess.Popen[str] | None

    def unpack(self, name: str) -> Path:
        """The sdist unpacked into its own directory (an in-tree build writes there)."""
        with tarfile.open(self.sdist) as archive:
            archive.extractall(self.work / name, filter="data")
        (unpacked,) = (self.work / name).iterdir()
        return unpacked


def _start_wheel(unpacked: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m build --wheel`` from an unpacked sdist, into ``dist`` beside it."""
    out = unpacked.parent / "dist"
    return subprocess.Popen(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(unpacked)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish_wheel(build: subprocess.Popen[str], directory: Path) -> tuple[Path, str]:
    """The wheel the build of the sdist unpacked in ``directory`` made, and the build's log."""
    log, _ = build.communicate(timeout=600)
    assert build.returncode == 0, log[-6000:]
    (wheel,) = (directory / "dist").glob("unilstm-*.whl")
    return wheel, log


def _package_info(sdist: Path) -> str:
    """The sdist's PKG-INFO: the metadata every wheel built from it carries."""
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert member is not None
        return member.read().decode()


def _compiler() -> str | None:
    """The C compiler setuptools would call (``CC``, else the one Python was built with), if it exists."""
    name = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(name.split()[0])


def test_version_is_said_once_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from unilstm._version import __version__

    assert unilstm.__version__ is __version__ and re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"unilstm {__version__}\n"
    assert cli.main([]) == cli.EXIT_ERROR  # no command: the help, with the status of bad arguments
    printed = capsys.readouterr().out
    assert printed.startswith("usage: unilstm") and "--version" in printed and "convert" in printed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The sdist (``python -m build --sdist`` on a copy of the checkout), the compiled wheel's build under
    way, and the dependency links every fresh environment shares."""
    work = tmp_path_factory.mktemp("package")
    shutil.copytree(ROOT, work / "source", ignore=NOT_COPIED, symlinks=True)
    sdist_command = [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--outdir", work / "sdist"]
    _run(*sdist_command, work / "source")
    (sdist,) = (work / "sdist").glob("unilstm-*.tar.gz")
    shared = Built(work, sdist, work / "dependencies", None)
    if _compiler() is not None:
        shared.compiled_build = _start_wheel(shared.unpack("compiled"), _environment())
    try:
        # the wheel's own requirements, as the sdist's metadata says them (the extras' are not installed)
        requirements = email.parser.Parser().parsestr(_package_info(sdist)).get_all("Requires-Dist") or []
        _link_dependencies([text for text in requirements if "extra ==" not in text], shared.dependencies)
        yield shared
    finally:
        if shared.compiled_build is not None and shared.compiled_build.poll() is None:
            shared.compiled_build.kill()  # its test was deselected or failed before waiting for it
            shared.compiled_build.communicate()


def _smoke(built: Built, wheel: Path, name: str, compiled: bool) -> tuple[Path, dict]:
    """Installs the wheel into a fresh environment and runs SMOKE there; the environment's Python and
    SMOKE's report."""
    python = _fresh_environment(built.work / name, built.dependencies)
    _install(python, wheel)
    printed = _run(python, "-c", SMOKE, "1" if compiled else "0", cwd=built.work)
    return python, json.loads(printed.splitlines()[-1])


@pytest.mark.slow
def test_sdist_holds_what_a_build_needs_and_nothing_else(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    metadata_text = _package_info(built.sdist)
    assert set(SDIST_NEEDS) <= names, set(SDIST_NEEDS) - names
    assert not [name for name in names if SDIST_REFUSES.search(name)]
    version = re.search(r'__version__ = "(.+)"', (ROOT / "src/unilstm/_version.py").read_text())
    # the one version, read by setuptools without importing the package
    assert version and f"\nVersion: {version.group(1)}\n" in metadata_text
    for line in ("License-Expression: Apache-2.0", "Requires-Dist: torch>=2.4", "Keywords: lstm"):
        assert line in metadata_text


@pytest.mark.slow
def test_wheel_without_a_compiler_installs_and_runs_on_torch(built: Built) -> None:
    build = _start_wheel(built.unpack("fallback"), {**_environment(), "CC": "/nonexistent"})
    wheel, log = _finish_wheel(build, built.work / "fallback")
    assert "/nonexistent" in log  # the compiler it was told to use was tried, and failed
    assert not [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".so")]
    _, report = _smoke(built, wheel, "venv-fallback", compiled=False)
    assert "not built (No module named 'unilstm.kernels.native._lstm_cell')" in report["reason"], report
    assert report["torch door, default"] < 1e-12, report
    assert report["relu cell, output"] < 1e-12 and report["relu cell, gradient"] < 1e-12, report


@pytest.mark.slow
def test_wheel_with_the_compiled_kernel_installs_and_runs(built: Built) -> None:
    if built.compiled_build is None:
        pytest.skip("no C compiler on this machine: the test without one covers the install")
    wheel, _ = _finish_wheel(built.compiled_build, built.work / "compiled")
    contents = zipfile.ZipFile(wheel).namelist()
    assert [name for name in contents if re.fullmatch(r"unilstm/kernels/native/_lstm_cell\..*\.so", name)]
    assert {"unilstm/py.typed", "unilstm/kernels/native/_lstm_cell.pyi"} <= set(contents)
    assert not [name for name in contents if name.endswith((".c", ".h"))]  # sources stay in the sdist
    python, report = _smoke(built, wheel, "venv-compiled", compiled=True)
    assert report["torch door, default"] < 1e-12 and report["torch door, native"] < 1e-12, report
    assert report["relu cell, output"] < 1e-12 and report["relu cell, gradient"] < 1e-12, report
    # the console script and ``python -m unilstm`` of the installed package
    version = report["version"]
    assert _run(python.parent / "unilstm", "--version").strip() == f"unilstm {version}"
    assert _run(python, "-m", "unilstm", "--version").strip() == f"unilstm {version}"
    help_run = subprocess.run([python, "-m", "unilstm"], env=_environment(), capture_output=True, text=True)
    assert help_run.returncode == 2 and help_run.stdout.startswith("usage: unilstm")
    assert "convert" in help_run.stdout and "inspect" in help_run.stdout
