import doctest
import importlib

import pytest

MODULES = ["rewards", "rewards.base", "rewards.registry", "rewards.answer_extraction", "rewards.math_accuracy",
           "rewards.code_execution", "rewards.think_format", "rewards.length_shaping", "rewards.repetition",
           "rewards.reference_steps", "rewards.completion_length", "rewards.model_inputs", "rewards.judge", "posttrain.app.commands.rewards"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
