"""The `>>>` examples in the eval package's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["eval", "eval.benchmarks", "posttrain.generation", "eval.harness", "eval.metrics", "eval.report",
           "eval.run", "eval.scoring"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
