import json

import pytest

from posttrain.app.cli import main


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_list_prints_one_line_per_builtin(capsys):
    assert main(["rewards", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:11]] == ["math", "code", "text", "format", "length", "repetition",
                                                        "steps", "reward_model", "judge", "vote", "self_judge"]


def test_check_prints_one_result_per_row_in_order_and_exits_zero(tmp_path, capsys):
    rows = [{"prompt": "6*7?", "completion": r"\boxed{42}", "solution": "42"},
            {"prompt": "6*7?", "completion": "The answer is 41.", "solution": "#### 42"},
            {"prompt": "?", "completion": "no idea", "solution": None}]
    assert main(["rewards", "check", "math", "--input", write_rows(tmp_path / "rows.jsonl", rows)]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["row"], r["reward"]) for r in results] == [(0, 1.0), (1, 0.0), (2, None)]
    assert all(r["time_s"] >= 0 for r in results)


def test_check_takes_a_json_spec(tmp_path, capsys):
    rows = [{"prompt": "add", "completion": "def add(a, b): return a + b", "tests": ["assert add(1, 2) == 3"]},
            {"prompt": "add", "completion": "while True: pass", "tests": "assert add(1, 2) == 3"}]
    spec = json.dumps({"name": "code", "timeout": 1})
    assert main(["rewards", "check", spec, "--input", write_rows(tmp_path / "rows.jsonl", rows)]) == 0
    assert [json.loads(line)["reward"] for line in capsys.readouterr().out.splitlines()] == [1.0, 0.0]


def test_check_reports_a_missing_column_before_scoring(tmp_path, capsys):
    rows = [{"prompt": "p", "completion": "c", "solution": "1"}]
    assert main(["rewards", "check", "code", "--input", write_rows(tmp_path / "rows.jsonl", rows)]) == 2
    assert "posttrain rewards check: error: reward 'code' needs column 'tests'" in capsys.readouterr().err


def test_check_names_the_line_of_a_bad_row(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"completion": "a"}\n{"prompt": "no completion"}\n')
    assert main(["rewards", "check", "format", "--input", str(path)]) == 2
    assert "rows.jsonl row 2: field 'completion': each row needs a 'completion'" in capsys.readouterr().err
