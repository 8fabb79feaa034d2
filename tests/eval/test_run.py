"""The CLI and `eval.evaluate` end to end on tiny checkpoints: outputs, plots, and errors that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval import evaluate
from eval.report import markdown_report, plot
from eval.run import main
from eval.scoring import Result

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_two_checkpoint_run_writes_results_report_and_plot(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(tiny_run / "checkpoint-1"), "--model", str(tiny_run / "checkpoint-2"),
            "--benchmark", "arithmetic", "--benchmark", "python_functions", "--limit", "2",
            "--num_samples", "2", "--k", "1,2", "--max_new_tokens", "8", "--output", str(out)]
    assert main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["num_samples"] == 2 and results["config"]["k"] == [1, 2]
    pairs = [(Path(r["model"]).name, r["benchmark"], r["step"]) for r in results["results"]]
    assert pairs == [("checkpoint-1", "arithmetic", 1), ("checkpoint-1", "python_functions", 1),
                     ("checkpoint-2", "arithmetic", 2), ("checkpoint-2", "python_functions", 2)]
    for result in results["results"]:
        assert len(result["samples"]) == 4  # 2 problems x 2 samples
        assert {"pass@1", "pass@2", "mean_reward", "mean_response_tokens"} <= set(result["metrics"])
        assert ("maj@2" in result["metrics"]) == (result["benchmark"] == "arithmetic")  # no vote on code
        assert all(1 <= s["response_tokens"] <= 8 and s["reward"] is not None for s in result["samples"])

    report = (out / "report.md").read_text()
    assert "| checkpoint | arithmetic | python_functions |" in report
    assert "| checkpoint-1 |" in report and "| checkpoint-2 |" in report
    assert (out / "plot.png").read_bytes().startswith(PNG)
    assert "checkpoint-2  python_functions: pass@1=" in capsys.readouterr().out


def test_a_run_directory_stands_for_its_checkpoints_in_step_order(tiny_run: Path, tmp_path: Path) -> None:
    results = evaluate([tiny_run], ["arithmetic"], limit=1, max_new_tokens=4, output_dir=tmp_path)
    assert [r.step for r in results] == [1, 2]
    assert 0.0 <= results[0].metrics["pass@1"] <= 1.0


def test_plot_is_a_curve_over_steps_for_checkpoints_and_bars_otherwise(tmp_path: Path) -> None:
    def result(model: str, step: int | None, value: float) -> Result:
        return Result(model, "gsm8k", {"pass@1": value, "mean_reward": value, "mean_response_tokens": 9.0,
                                       "num_problems": 1, "num_samples": 1, "unscored": 0}, [], step)

    steps = [result("run/checkpoint-10", 10, 0.1), result("run/checkpoint-20", 20, 0.3)]
    assert plot(steps, tmp_path / "curve.png") == "curve"
    named = [result("sft", None, 0.2), result("grpo", None, 0.4)]
    assert plot(named, tmp_path / "bars.png") == "bars"
    assert (tmp_path / "bars.png").read_bytes().startswith(PNG)
    table = markdown_report(named, {"num_samples": 1})
    assert "| sft | 20.0 |" in table and "| grpo | 40.0 |" in table


def test_missing_checkpoint_is_named_before_anything_loads(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "nope"), "--benchmark", "arithmetic", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"checkpoint {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


def test_unknown_benchmark_on_the_command_line_lists_the_known_ones(tiny_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_run), "--benchmark", "mmlu", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert "unknown benchmark 'mmlu'" in err and "'arithmetic'" in err and "'humaneval'" in err


def test_a_bad_benchmark_file_is_one_line_before_any_model_loads(tiny_run: Path, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    import eval.harness

    monkeypatch.setattr(eval.harness, "load_checkpoint", lambda *a, **k: pytest.fail("a model was loaded"))
    bench = tmp_path / "bad.jsonl"
    bench.write_text('{"prompt": "1+1?", "solution": "2"}\n{"prompt": "2+2?", "solution": ["4"]}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tiny_run), "--benchmark", str(bench), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{bench} row 2: field 'solution'" in err and "Traceback" not in err


def test_k_above_num_samples_is_refused(tiny_run: Path) -> None:
    with pytest.raises(ValueError, match="raise --num_samples"):
        evaluate([tiny_run], ["arithmetic"], num_samples=2, k=[1, 8])


def test_run_py_works_as_a_script_from_any_directory(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "eval" / "run.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--benchmark" in done.stdout and "humaneval" in done.stdout
