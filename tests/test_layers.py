"""Imports point one way: foundation <- rewards <- data_tools <- eval <- application (see docs/architecture.md).

Every import is checked, the ones inside functions and `importlib.import_module("...")` calls included: an import
deferred into a function does not make an upward dependency go away, it only hides it until that line runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer and the ones before it. The longest matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("posttrain",)),  # model, generation, files, tokenizer, training glue
    ("rewards", ("rewards",)),
    ("data_tools", ("data_tools",)),
    ("eval", ("eval",)),
    ("application", ("posttrain.app", "recipes", "benchmarks")),
]
PACKAGES = ("posttrain", "rewards", "data_tools", "eval", "recipes", "benchmarks")


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a project module (longest prefix match), None for a module outside the project."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    return best


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, at any depth, relative ones resolved against `module`.

    >>> imported_modules("def f():\\n    from eval import harness\\n", "rewards.base")
    [(2, 'eval')]
    """
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            else:
                found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args):
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                arg = arg.values[0]  # f"pkg.sub.{name}": the constant head names the package
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value.rstrip(".")))
    return found


def upward_imports(source: str, module: str) -> list[str]:
    """Each import in `source` that points from `module`'s layer to a higher one, as `line: target (layer)`.

    >>> upward_imports("import torch\\nfrom posttrain.model import load_model\\n", "eval.harness")
    []
    >>> upward_imports("def f():\\n    import eval\\n", "data_tools.mix")
    ['2: eval (eval)']
    """
    own = layer_of(module)
    return [f"{line}: {target} ({LAYERS[layer_of(target)][0]})" for line, target in imported_modules(source, module)
            if layer_of(target) is not None and layer_of(target) > own]


def project_modules() -> list[tuple[str, Path]]:
    files = sorted(f for package in PACKAGES for f in (REPO / package).rglob("*.py"))
    return [(".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"), f) for f in files]


def test_every_module_has_a_layer() -> None:
    modules = project_modules()
    assert len(modules) > 50
    assert [m for m, _ in modules if layer_of(m) is None] == []


@pytest.mark.parametrize("module", [m for m, _ in project_modules()])
def test_imports_point_down_the_layers(module: str) -> None:
    path = dict(project_modules())[module]
    layer = LAYERS[layer_of(module)][0]
    assert upward_imports(path.read_text(), module) == [], f"{path} ({layer}) imports a higher layer"


def test_an_upward_import_inside_a_function_is_caught() -> None:
    source = "import json\n\ndef run():\n    import importlib\n    importlib.import_module('posttrain.app.cli')\n"
    assert upward_imports(source, "posttrain.model.io") == ["5: posttrain.app.cli (application)"]
    assert upward_imports("from . import harness\n", "eval.run") == []
    assert upward_imports("from ..app import cli\n", "posttrain.model.io") == ["1: posttrain.app (application)"]
