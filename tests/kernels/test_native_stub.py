"""The type stub of the compiled module (``native/_lstm_cell.pyi``) describes what the build exports: the
same names, constants of the stated types, and as many positional parameters as each entry point parses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from kernel_cases import needs_extension

from unilstm.kernels.native import _extension

STUB = Path(_extension.__file__).with_name("_lstm_cell.pyi")
_TYPES = {"int": int, "dict[str, int]": dict, "tuple[str, ...]": tuple}


def _stub() -> tuple[dict[str, ast.FunctionDef], dict[str, str]]:
    tree = ast.parse(STUB.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    constants = {
        node.target.id: ast.unparse(node.annotation)
        for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    return functions, constants


@needs_extension
def test_the_stub_names_what_the_module_exports():
    functions, constants = _stub()
    module = _extension._lstm_cell
    exported = {name for name in dir(module) if not name.startswith("__")}
    assert set(functions) | set(constants) == exported
    for name, annotation in constants.items():
        assert isinstance(getattr(module, name), _TYPES[annotation]), name


@needs_extension
@pytest.mark.parametrize("name", [
    name for name, node in _stub()[0].items() if node.args.posonlyargs
])
def test_the_stub_gives_each_entry_point_its_arity(name):
    """The C entry points parse a fixed number of integers and say how many when given none."""
    node = _stub()[0][name]
    with pytest.raises(TypeError) as error:
        getattr(_extension._lstm_cell, name)()
    expected = re.search(r"expected (\w+)", str(error.value))
    assert expected is not None, str(error.value)
    count = {"two": 2}.get(expected.group(1)) or int(expected.group(1))
    assert len(node.args.posonlyargs) == count
