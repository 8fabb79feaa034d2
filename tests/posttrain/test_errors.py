"""One owner for a user's mistake: the error types the packages raise and the one line the entry points print."""

from __future__ import annotations

import pytest

from posttrain.errors import MissingFileError, UserError, exit_on_user_error, option, parse_config
from posttrain.files import RowError


def test_user_errors_are_still_the_builtin_kinds_callers_catch():
    assert isinstance(UserError("x"), ValueError)
    assert isinstance(MissingFileError("x"), FileNotFoundError) and isinstance(MissingFileError("x"), UserError)


def test_exit_on_user_error_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error("recipes/x.py"), option("--dataset_path"):
        raise MissingFileError("data.jsonl: no such file")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "recipes/x.py: error: --dataset_path: data.jsonl: no such file\n"
    with pytest.raises(SystemExit), exit_on_user_error("recipes/x.py"):
        raise UserError("cannot load 'x': a library's message\n  on two lines")
    assert capsys.readouterr().err == "recipes/x.py: error: cannot load 'x': a library's message on two lines\n"


def test_option_keeps_the_error_and_a_message_that_names_its_own_option():
    with pytest.raises(RowError) as row_error, option("--dataset_path"):
        raise RowError("data.jsonl", 3, "missing", field="prompt")
    assert row_error.value.line == 3 and str(row_error.value).startswith("--dataset_path: data.jsonl row 3: ")
    with pytest.raises(UserError, match=r"^--eval_size 9: "), option("--dataset_path"):
        raise UserError("--eval_size 9: the file has 4 pairs; hold out fewer")


def test_other_errors_keep_their_traceback():
    with pytest.raises(KeyError), exit_on_user_error("recipes/x.py"):
        raise KeyError("a bug")


def test_parse_config_turns_a_missing_config_and_a_rejected_value_into_user_errors(tmp_path):
    def missing():
        open(tmp_path / "none.yaml")

    def rejected():
        raise ValueError("generation_batch_size (3) must be divisible by num_generations (2)")

    with pytest.raises(MissingFileError, match=r"^--config: .*none.yaml: no such file"):
        parse_config(missing)
    with pytest.raises(UserError, match="must be divisible"):
        parse_config(rejected)

