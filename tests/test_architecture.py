"""The package's import structure: no cycles, formats below the front doors and conversion, small modules.

Every module of src/unilstm is parsed with ``ast`` (imports at any depth, inside functions too; relative
imports resolved) into a graph of imports between unilstm modules. One function per rule, so that rules are
easy to add. ``python tests/test_architecture.py`` prints the graph (module -> the unilstm modules it
imports).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "unilstm"
MAX_LINES = 800

# Modules allowed over MAX_LINES, each with the reason it cannot be split; the test fails for any other.
LONG_MODULES_ALLOWED: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..formats import x`` inside unilstm.convert.api ->
    unilstm.formats)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_extension_module(name: str) -> bool:
    """A compiled module (its C source or its built library sits in the package folder): not in the graph."""
    *package, leaf = name.split(".")
    folder = SOURCE.joinpath(*package)
    built = [*folder.glob(f"{leaf}.*.so"), *folder.glob(f"{leaf}.*.pyd")]
    return (folder / f"{leaf}.c").exists() or bool(built)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The unilstm modules ``module`` imports, anywhere in its body. ``from package import name`` counts as
    an import of the submodule ``package.name`` when that is a module, else of ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            names = []
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if _is_extension_module(submodule):
                    continue
                names.append(submodule if submodule in known else target)
        else:
            continue
        for name in names:
            while name and name not in known and "." in name:
                name = name.rsplit(".", 1)[0]  # `import unilstm.formats.layout as l` -> a known module
            if name in known and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _importers_of(graph: dict[str, set[str]], importer_prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    """``importer -> imported`` for every module under ``importer_prefix`` importing a forbidden module (a
    name in ``forbidden`` or below it)."""

    def matches(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if matches(module, (importer_prefix,))
        for target in targets
        if matches(target, forbidden)
    )


# -- the rules --------------------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_formats_import_no_front_door_and_no_conversion() -> None:
    front_doors = ("unilstm.frontends", "unilstm.keras", "unilstm.mindspore", "unilstm.torch")
    forbidden = (*front_doors, "unilstm.convert")
    offenders = _importers_of(import_graph(), "unilstm.formats", forbidden)
    assert not offenders, "formats must not import front doors or conversion:\n" + "\n".join(offenders)


def test_formats_import_no_layer_and_no_kernels() -> None:
    offenders = _importers_of(import_graph(), "unilstm.formats", ("unilstm.layer", "unilstm.kernels"))
    assert not offenders, "formats work on plain data, not on layers:\n" + "\n".join(offenders)


def test_interchange_imports_no_formats() -> None:
    offenders = _importers_of(import_graph(), "unilstm.interchange", ("unilstm.formats",))
    assert not offenders, "the interchange model sits below the formats:\n" + "\n".join(offenders)


def test_bottom_modules_import_only_each_other() -> None:
    bottom = (
        "unilstm.spec",
        "unilstm.activations",
        "unilstm.parameter_names",
        "unilstm.keras_names",
        "unilstm.interchange",
        "unilstm.steps",
    )
    graph = import_graph()
    offenders = sorted(
        f"{module} -> {target}" for module in bottom for target in graph[module] if target not in bottom
    )
    assert not offenders, "the bottom modules import only each other:\n" + "\n".join(offenders)


def test_front_doors_reach_the_kernels_only_through_the_canonical_layer() -> None:
    graph = import_graph()
    offenders = [
        line
        for door in (
            "unilstm.frontends", "unilstm.keras", "unilstm.keras3", "unilstm.mindspore", "unilstm.torch",
        )
        for line in _importers_of(graph, door, ("unilstm.kernels",))
    ]
    assert not offenders, "front doors go through unilstm.layer, not to the kernels:\n" + "\n".join(offenders)


def test_kernels_know_no_layer_front_door_format_or_conversion() -> None:
    forbidden = (
        "unilstm.layer", "unilstm.frontends", "unilstm.keras", "unilstm.mindspore", "unilstm.torch",
        "unilstm.formats", "unilstm.convert",
    )
    offenders = _importers_of(import_graph(), "unilstm.kernels", forbidden)
    assert not offenders, "kernels sit below the layer:\n" + "\n".join(offenders)


def test_no_module_over_the_line_limit() -> None:
    too_long = []
    for module, path in module_files().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and module not in LONG_MODULES_ALLOWED:
            too_long.append(f"{module}: {lines} lines")
    assert not too_long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(too_long)


def test_the_allow_list_names_only_long_modules() -> None:
    files = module_files()
    stale = [
        module
        for module in sorted(LONG_MODULES_ALLOWED)
        if module not in files or len(files[module].read_text(encoding="utf-8").splitlines()) <= MAX_LINES
    ]
    assert not stale, f"no longer over {MAX_LINES} lines, remove from LONG_MODULES_ALLOWED: {stale}"


def main() -> None:
    for module, targets in sorted(import_graph().items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '(nothing in unilstm)'}")


if __name__ == "__main__":
    sys.exit(main())


def test_whole_keras_models_sit_on_the_keras_door() -> None:
    """unilstm.keras_model runs layers through the Keras door's LSTM and reads files through the formats;
    it reaches neither the kernels nor the conversion package nor the other front doors, and nothing below it
    imports it."""
    graph = import_graph()
    forbidden = (
        "unilstm.kernels", "unilstm.convert", "unilstm.mindspore", "unilstm.torch",
        "unilstm.frontends.mindspore", "unilstm.frontends.torch",
    )
    offenders = _importers_of(graph, "unilstm.keras_model", forbidden)
    for lower in ("unilstm.formats", "unilstm.frontends", "unilstm.layer", "unilstm.kernels"):
        offenders += _importers_of(graph, lower, ("unilstm.keras_model",))
    assert not offenders, "keras_model sits on the Keras door and the formats:\n" + "\n".join(offenders)
