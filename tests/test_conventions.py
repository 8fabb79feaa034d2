"""Script conventions hold in every module: no sys.path edits, no recipe loaded by path, flags with underscores."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layers import project_modules

MODULES = project_modules()


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "attr", getattr(n.func, "id", None)) == name]


def sys_path_edits(source: str) -> list[int]:
    """Lines that assign to, insert into or append to `sys.path`.

    >>> sys_path_edits("import sys\\nsys.path.insert(0, '.')\\nsys.path[0] = 'x'\\nprint(sys.path)\\n")
    [2, 3]
    """
    lines = []
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t.value if isinstance(t, ast.Subscript) else t for t in targets), None)
        if isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", "") == "sys":
            lines.append(node.lineno)
    return sorted(set(lines))


def hyphenated_flags(source: str) -> list[str]:
    """Long options given to `add_argument` with a hyphen inside (TRL's and ours are spelled with underscores).

    >>> hyphenated_flags("p.add_argument('--batch-size')\\np.add_argument('--batch_size', '-b')\\n")
    ['--batch-size']
    """
    return [arg.value for call in _calls(ast.parse(source), "add_argument") for arg in call.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--")
            and "-" in arg.value[2:]]


@pytest.mark.parametrize("module", [m for m, _ in MODULES])
def test_no_script_edits_sys_path_or_uses_hyphenated_flags(module: str) -> None:
    source = Path(dict(MODULES)[module]).read_text()
    assert sys_path_edits(source) == []
    assert hyphenated_flags(source) == []


def test_no_recipe_loads_another_by_path() -> None:
    for module, path in MODULES:
        if module.startswith("recipes."):
            assert _calls(ast.parse(path.read_text()), "spec_from_file_location") == [], path
