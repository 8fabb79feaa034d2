"""Benchmarks load, template their prompts, reject bad input by name, and score reference answers at 100%."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.generators import generate as generate_task

from eval.benchmarks import DEFAULT_TEMPLATES, load_benchmark
from eval.scoring import score
from tests.conftest import GSM8K, needs_gsm8k



def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_humaneval_canonical_solutions_score_100_percent() -> None:
    bench = load_benchmark("humaneval")
    assert len(bench.rows) == 164
    result = score(bench, [[row["reference"]] for row in bench.rows])
    assert result.metrics["pass@1"] == 1.0
    assert "maj@1" not in result.metrics  # code answers are not voted on


def test_humaneval_wrong_solutions_score_0_percent() -> None:
    bench = load_benchmark("humaneval", limit=3)
    result = score(bench, [["```python\ndef nothing():\n    pass\n```"]] * 3)
    assert result.metrics["pass@1"] == 0.0


@needs_gsm8k
def test_gsm8k_gold_answers_score_100_percent() -> None:
    bench = load_benchmark(f"gsm8k:{GSM8K}")
    assert len(bench.rows) == 1319
    result = score(bench, [[row["reference"]] for row in bench.rows], ks=[1])
    assert result.metrics["pass@1"] == 1.0
    assert result.metrics["maj@1"] == 1.0


@needs_gsm8k
def test_gsm8k_prompts_get_the_default_template_unless_overridden() -> None:
    question = json.loads(GSM8K.read_text().splitlines()[0])["question"]
    default = load_benchmark(f"gsm8k:{GSM8K}", limit=1).rows[0]["prompt"]
    assert default == DEFAULT_TEMPLATES["gsm8k"].replace("{prompt}", question)
    assert default.endswith("within \\boxed{}.")
    custom = load_benchmark(f"gsm8k:{GSM8K}", prompt_template="Q: {prompt}\nA:", limit=1).rows[0]["prompt"]
    assert custom == f"Q: {question}\nA:"


def test_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'nope'.*'gsm8k'.*'humaneval'"):
        load_benchmark("nope")


def test_jsonl_row_missing_a_column_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "1+1?", "solution": "2"}, {"prompt": "2+2?"}])
    with pytest.raises(ValueError, match=rf"{path} row 2: field 'solution': missing"):
        load_benchmark(str(path))
    path = _write_jsonl(tmp_path / "code.jsonl", [{"tests": "assert f() == 1"}])
    with pytest.raises(ValueError, match=rf"{path} row 1: field 'prompt': missing"):
        load_benchmark(str(path))


def test_jsonl_row_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "solution": "1"}\n\n{"prompt": \n')
    with pytest.raises(ValueError, match=rf"{path} row 3: not valid JSON"):
        load_benchmark(str(path))


def test_a_file_that_is_not_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a", "solution": "1"}\n{"prompt": "caf\xe9", "solution": "2"}\n')
    with pytest.raises(ValueError, match=rf"{path} row 2: byte 0xe9 at column 16 is not UTF-8; re-encode"):
        load_benchmark(str(path))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": 42, "solution": "1"}, r"row 2: field 'prompt': 42 \(int\); expected a string or a list of chat"),
        ({"prompt": [{"role": "user"}], "solution": "1"}, r"row 2: field 'prompt': .*expected a string or a list"),
        ({"prompt": "  ", "solution": "1"}, r"row 2: field 'prompt': '  ' \(str\)"),
        ({"prompt": "a", "solution": [1, 2]}, r"row 2: field 'solution': reward 'math': .*\[1, 2\]; expected a string"),
    ],
)
def test_a_malformed_field_names_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "1+1?", "solution": "2"}, row])
    with pytest.raises(ValueError, match=rf"{path} {message}"):
        load_benchmark(str(path), limit=1)  # every row is checked, not only those kept


def test_a_malformed_code_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "code.jsonl", [{"prompt": "def f():", "tests": "assert f() == 1",
                                                  "entry_point": "not a name"}])
    with pytest.raises(ValueError, match=rf"{path} row 1: field 'entry_point': reward 'code'"):
        load_benchmark(str(path))


def test_chat_message_prompts_are_accepted(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": "1+1?"}], "solution": "2"}])
    assert load_benchmark(str(path)).rows[0]["prompt"][0]["content"] == "1+1?"


def test_missing_jsonl_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.jsonl does not exist"):
        load_benchmark(str(tmp_path / "absent.jsonl"))


def test_any_jsonl_is_scored_by_math_or_code_reward_from_its_columns(tmp_path: Path) -> None:
    math = load_benchmark(str(_write_jsonl(tmp_path / "sums.jsonl", [{"prompt": "1+1?", "solution": "2"}])))
    assert (math.name, math.reward) == ("sums", "math")
    assert score(math, [["\\boxed{2}", "\\boxed{3}"]], ks=[1, 2]).metrics["pass@2"] == 1.0
    rows = [{"prompt": "Write f.", "tests": ["assert f() == 1", "assert f() + 1 == 2"]}]
    code = load_benchmark(str(_write_jsonl(tmp_path / "funcs.jsonl", rows)))
    assert (code.name, code.reward) == ("funcs", "code")
    assert score(code, [["```python\ndef f():\n    return 1\n```"]]).metrics["pass@1"] == 1.0


def test_template_replaces_only_the_prompt_placeholder(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "x={y}", "solution": "1"}])
    bench = load_benchmark(str(path), prompt_template="{prompt} in \\boxed{}")
    assert bench.rows[0]["prompt"] == "x={y} in \\boxed{}"


@pytest.mark.parametrize("task", ["arithmetic", "word_problems", "python_functions", "text_tasks"])
def test_builtin_heldout_reference_answers_score_100_percent(task: str) -> None:
    bench = load_benchmark(task, limit=20)
    assert len(bench.rows) == 20 and bench.reward == {"python_functions": "code", "text_tasks": "text"}.get(task, "math")
    assert score(bench, [[row["reference"]] for row in bench.rows]).metrics["pass@1"] == 1.0


def test_text_tasks_score_exact_text_not_a_product_of_symbols() -> None:
    # math-verify reads "qyqv" and "vqyq" as the same product of four symbols: text answers are compared as text.
    bench = load_benchmark("text_tasks", limit=20)
    wrong = [[row["reference"].replace(row["solution"], row["solution"][::-1])] for row in bench.rows]
    palindromes = sum(row["solution"] == row["solution"][::-1] for row in bench.rows)
    assert score(bench, wrong).metrics["pass@1"] == palindromes / 20


def test_builtin_benchmark_is_the_generators_heldout_split_with_prompts_unchanged() -> None:
    heldout = generate_task("word_problems", 5, seed=0, split="heldout")
    rows = load_benchmark("word_problems", limit=5).rows
    assert [(r["id"], r["prompt"]) for r in rows] == [(r["id"], r["prompt"]) for r in heldout]


@needs_gsm8k
def test_plain_gsm8k_reads_the_hub_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    asked = []
    local = [json.loads(line) for line in GSM8K.read_text().splitlines()[:3]]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: asked.append((args, kwargs)) or local)
    bench = load_benchmark("gsm8k")
    assert asked == [(("openai/gsm8k", "main"), {"split": "test"})]
    assert [row["solution"] for row in bench.rows] == [row["answer"] for row in local]
