"""Every `>>>` example in the data_tools docstrings runs and holds."""

import doctest
import importlib

import pytest

MODULES = ["data_tools.generators", "data_tools.generators.problem", "data_tools.generators.registry",
           "data_tools.generators.arithmetic", "data_tools.layouts", "data_tools.spec", "data_tools.text_hashes",
           "data_tools.process", "data_tools.selection", "data_tools.stats", "data_tools.sources", "data_tools.mix",
           "data_tools.loading"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
