import pickle
import subprocess
import sys
import textwrap

import pytest

from rewards import check_columns, get_reward, list_rewards

BUILTINS = ["math", "code", "text", "format", "length", "repetition", "steps", "reward_model", "judge", "vote",
            "self_judge"]


def shout(prompts, completions, **kwargs):
    """A user reward: 1.0 for completions in capitals."""
    return [float(c.isupper()) for c in completions]


def test_builtins_resolve_by_name_with_their_name_for_trl_logging():
    for name in ["math", "code", "format", "length", "repetition", "steps"]:
        assert get_reward(name).__name__ == name


def test_dict_spec_configures_a_builtin():
    reward = get_reward({"name": "code", "timeout": 3, "memory_mb": 256})
    assert (reward.timeout, reward.limits.memory_mb, reward.required_columns) == (3, 256, ("tests",))


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"reward 'code' rejected params \['tmeout'\].*options are \[.*'timeout'"):
        get_reward({"name": "code", "tmeout": 3})


def test_unknown_name_lists_the_builtins():
    with pytest.raises(ValueError, match=r"unknown reward 'maths': use one of \['code', 'format'"):
        get_reward("maths")


def test_module_and_file_specs_resolve_functions(tmp_path):
    assert get_reward(f"{__name__}:shout")(completions=["HI", "hi"]) == [1.0, 0.0]
    path = tmp_path / "my_rewards.py"
    path.write_text("def exclaim(prompts, completions, **kw):\n    return [c.count('!') * 1.0 for c in completions]\n")
    reward = get_reward(f"{path}:exclaim")
    assert (reward.__name__, reward(completions=["a!!"])) == ("exclaim", [2.0])


def test_missing_file_or_attribute_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_reward(f"{tmp_path}/nope.py:f")
    with pytest.raises(ValueError, match=r"has no attribute 'nope'"):
        get_reward("rewards.registry:nope")


def test_a_raising_user_reward_scores_none_and_is_counted(caplog):
    def broken(prompts, completions, **kwargs):
        raise KeyError("boom")

    reward = get_reward(broken)
    assert reward(completions=["a", "b"]) == [None, None]
    assert reward(completions=["c"]) == [None]
    assert reward.stats.as_dict() == {"rows": 3, "failures": 3, "first_error": "KeyError: 'boom'"}
    assert sum("boom" in r.getMessage() for r in caplog.records) == 1  # logged once, not per batch


def test_a_builtin_that_raises_mid_batch_uses_its_fallback(monkeypatch):
    reward = get_reward("format")
    monkeypatch.setattr(type(reward), "_score", lambda self, text: 1 / 0)
    assert reward(completions=["<think>a</think> b"]) == [None]
    assert reward.failures == 1 and reward.stats.first_error.startswith("ZeroDivisionError")


def test_check_columns_names_the_reward_and_missing_column():
    funcs = [get_reward("math"), get_reward("format")]
    check_columns(funcs, ["prompt", "solution"])
    with pytest.raises(ValueError, match=r"reward 'math' needs column 'solution', which the dataset lacks"):
        check_columns(funcs, ["prompt", "answer"])


def test_list_shows_builtins_first():
    assert [info.name for info in list_rewards()][: len(BUILTINS)] == BUILTINS


@pytest.mark.integration
def test_installed_plugin_is_found_through_its_entry_point(tmp_path):
    package = tmp_path / "posttrain_test_plugin"
    (package / "posttrain_test_plugin").mkdir(parents=True)
    (package / "posttrain_test_plugin" / "__init__.py").write_text(textwrap.dedent("""
        def make_exact(target="yes"):
            def exact(prompts, completions, **kwargs):
                return [float(c.strip() == target) for c in completions]
            return exact
    """))
    (package / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "posttrain-test-plugin"
        version = "0.0.1"
        [project.entry-points."posttrain.rewards"]
        exact = "posttrain_test_plugin:make_exact"
    """))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["install", "--no-build-isolation", "--no-deps", "--no-index", str(package)], check=True)
    try:
        assert ("exact", "plugin (posttrain-test-plugin)") in [(i.name, i.origin) for i in list_rewards()]
        reward = get_reward({"name": "exact", "target": "no"})
        assert (reward.__name__, reward(completions=["no", "yes"])) == ("exact", [1.0, 0.0])
        listed = subprocess.run([sys.executable, "-m", "posttrain.app.cli", "rewards", "list"], capture_output=True,
                                text=True, check=True).stdout
        assert "exact" in listed and "posttrain_test_plugin:make_exact" in listed
    finally:
        subprocess.run(pip + ["uninstall", "-y", "posttrain-test-plugin"], check=True)
    with pytest.raises(ValueError, match="unknown reward 'exact'"):
        get_reward("exact")


def test_check_columns_validates_values_of_the_given_rows():
    rows = [{"tests": "assert True"}, {"tests": None}, {"tests": 7}]
    with pytest.raises(ValueError, match=r"reward 'code': column 'tests' in row 2 is 7; expected a string"):
        check_columns([get_reward("code")], ["tests"], rows=rows)


@pytest.mark.parametrize("name", ["math", "code", "format", "length", "repetition"])
def test_builtins_survive_pickling_for_worker_processes(name):
    reward = get_reward(name)
    reward.stats.record(1, [RuntimeError("before")])
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == name and copy.stats.failures == 1
    assert copy(completions=[r"<think>a</think> \boxed{1}"], solution=["1"], tests=["assert True"]) == \
        reward(completions=[r"<think>a</think> \boxed{1}"], solution=["1"], tests=["assert True"])


def test_failure_rate_goes_to_trls_log_metric():
    logged: list = []

    def half_broken(prompts, completions, **kwargs):
        raise RuntimeError("down")

    get_reward("format")(completions=["<think>a</think> b"], log_metric=lambda k, v: logged.append((k, v)))
    get_reward(half_broken)(completions=["a", "b"], log_metric=lambda k, v: logged.append((k, v)))
    assert logged == [("rewards/format/failure_rate", 0.0), ("rewards/half_broken/failure_rate", 1.0)]
