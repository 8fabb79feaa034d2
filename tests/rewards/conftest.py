"""Shared rewards: their worker pools and sandbox slots start once per test session, not once per test."""

import pytest

from rewards import get_reward


@pytest.fixture(scope="session")
def math_reward():
    return get_reward("math")


@pytest.fixture(scope="session")
def code_reward():
    reward = get_reward({"name": "code", "timeout": 2, "workers": 4})
    yield reward
    reward.sandbox().close()
