"""Distillation units: config, shard store, readability and selection, and whole runs with a scripted teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.distill import ShardStore, load_distill_config, parse_config, run_distill
from data_tools.distill.config import SelectionConfig
from data_tools.distill.select import choose, foreign_share, readability
from posttrain.errors import UserError
from posttrain.generation import Completion
from rewards.think_format import split_think


def base_config(tmp_path: Path, **extra) -> dict:
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "m1", "prompt": "What is 6*7?", "solution": "42", "domain": "math"},
        {"id": "m2", "prompt": "What is 2+2?", "solution": "4", "domain": "math"},
        {"id": "c1", "prompt": "Write add(a, b).", "tests": "assert add(1, 2) == 3\nassert add(0, 5) == 5",
         "domain": "code"},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"output_dir": str(tmp_path / "out"),
            "prompts": [{"path": str(prompts), "fields": {"domain": "domain"}, "name": "mine"}],
            "teacher": {"backend": "openai", "model": "scripted", "base_url": "http://unused/v1"},
            "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 64}, "chunk_size": 2, **extra}


ANSWERS = {"What is 6*7?": "42", "What is 2+2?": "4"}
CODE_OK = "```python\ndef add(a, b):\n    return a + b\n```"


class ScriptedTeacher:
    """Sample 0: wrong; 1: right, long; 2: right, short; 3: right but no </think>. Counts its calls."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def generate(self, conversations, counts, seed):
        self.calls.append(list(counts))
        out = []
        for conversation, count in zip(conversations, counts, strict=True):
            user = conversation[-1]["content"]
            right = f"The answer is \\boxed{{{ANSWERS[user]}}}." if user in ANSWERS else CODE_OK
            wrong = "The answer is \\boxed{0}." if user in ANSWERS else "```python\ndef add(a, b):\n    return a\n```"
            texts = [f"<think>guess</think>{wrong}", f"<think>{'let me check carefully. ' * 5}</think>{right}",
                     f"<think>quick</think>{right}", f"<think>no close {right}"]
            out.append([Completion(t, num_tokens=len(t)) for t in texts[:count]])
        return out

    def close(self):
        pass


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    with pytest.raises(ValueError, match=r"sampling: n=4 needs temperature > 0"):
        parse_config({**data, "sampling": {"n": 4, "temperature": 0}})
    with pytest.raises(ValueError, match=r"selection: unknown option\(s\) \['polcy'\]; valid options"):
        parse_config({**data, "selection": {"polcy": "all"}})
    with pytest.raises(ValueError, match=r"teacher: backend: 'tgi' is not one of \['hf', 'openai', 'vllm'\]"):
        parse_config({**data, "teacher": {"backend": "tgi", "model": "m"}})
    missing = parse_config({**data, "teacher": {"model": str(tmp_path / "missing")}})
    with pytest.raises(ValueError, match="teacher.model: checkpoint .*missing does not exist"):
        run_distill(missing)
    with pytest.raises(ValueError, match="expected key=value"):
        load_distill_config(data, ["sampling.n"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"learning_rate": 1e-4, "generation": data}))
    assert load_distill_config(recipe, ["sampling.n=2", "selection.policy=all"]).sampling.n == 2


def test_shard_store_cuts_torn_tail_rotates_and_keys_once(tmp_path: Path) -> None:
    directory = tmp_path / "samples"
    with ShardStore(directory, shard_size=3) as store:
        store.append([{"prompt_id": "p", "sample_index": i} for i in range(4)])
        assert [p.name for p in store.shards()] == ["samples-00000.jsonl", "samples-00001.jsonl"]
        with pytest.raises(UserError, match="another distillation run is writing here"):
            ShardStore(directory).open()
    # A kill in the middle of a write: half a line at the end of the last shard.
    with (directory / "samples-00001.jsonl").open("a") as fh:
        fh.write('{"prompt_id": "p", "sample_ind')
    with ShardStore(directory, shard_size=3) as store:
        assert sorted(store.load()) == [("p", i) for i in range(4)]
        # A failed request is superseded by a later success; a second success is ignored.
        store.append([{"prompt_id": "q", "sample_index": 0, "error": "HTTP 503"},
                      {"prompt_id": "q", "sample_index": 0, "text": "ok"},
                      {"prompt_id": "q", "sample_index": 0, "text": "dup"}])
        assert store.load()[("q", 0)]["text"] == "ok"
    assert (directory / "samples-00001.jsonl").read_text().count("\n") == 3  # torn line gone, appends after it


def test_readability_filters_and_policies() -> None:
    cfg = SelectionConfig(max_tokens=50)
    ok = {"text": "<think>\n 6*7=42 \n</think>\nThe answer is 42.", "num_tokens": 12}
    assert readability(ok, "What is 6*7?", cfg) == ("<think>\n6*7=42\n</think>\nThe answer is 42.", None)
    assert readability({**ok, "truncated": True}, "q", cfg) == (None, "truncated")
    assert readability({**ok, "num_tokens": 51}, "q", cfg) == (None, "too_long")
    assert readability({"text": "<think>a</think>"}, "q", cfg) == (None, "unbalanced_think")
    assert readability({"text": "<think>a</think>b</think>c"}, "q", cfg) == (None, "unbalanced_think")
    assert readability({"text": "<think>计算 6*7 等于 42</think>The answer is 42."}, "What is 6*7?", cfg) == (
        None, "language_mixing")
    assert readability({"text": "<think>θ = π/2</think>So θ is 90 degrees."}, "angle?", cfg)[1] is None
    assert split_think("7</think>42", think_in_prompt=True) == ("7", "42")
    assert foreign_share("abc", "LATIN") == 0.0
    rows = [{"sample_index": i, "assistant": t, "num_tokens": n} for i, (t, n) in
            enumerate([("a", 9), ("b", 3), ("c", 3), ("d", 1), ("e", 5)])]
    assert [r["sample_index"] for r in choose(rows, SelectionConfig(policy="shortest"))] == [3]
    assert [r["sample_index"] for r in choose(rows, SelectionConfig(policy="all", k=3))] == [0, 1, 2]
    votes = [{"sample_index": i, "assistant": t} for i, t in enumerate(["x", "y", "z", "y", "x", "y"])]
    assert [r["sample_index"] for r in choose(votes, SelectionConfig(policy="majority"))] == [1]
    assert choose([], SelectionConfig(policy="majority")) == []


def test_run_verifies_selects_and_writes_mix_readable_rows(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    config = parse_config(base_config(tmp_path))
    result = run_distill(config, backend=teacher)
    stats = result.stats
    assert (stats["prompts"], stats["samples"], stats["verified"], stats["kept"]) == (3, 12, 9, 3)
    assert stats["by_domain"]["math"]["acceptance_rate"] == 0.75 and stats["by_domain"]["code"]["samples"] == 4
    assert stats["by_source"]["mine"]["kept"] == 3
    assert stats["rejections"] == {"not_selected": 3, "unbalanced_think": 3, "unverified": 3}
    rows = [json.loads(line) for line in result.data_path.read_text().splitlines()]
    assert [r["provenance"]["sample_index"] for r in rows] == [2, 2, 2]  # the shortest verified readable one
    first = rows[0]
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["content"].startswith("<think>\nquick")
    assert first["provenance"]["verifiers"] == {"math": 1.0, "code": None}
    assert first["provenance"]["teacher"]["model"] == "scripted" and first["provenance"]["sampling"]["n"] == 4
    code_row = next(r for r in rows if r["domain"] == "code")
    assert code_row["provenance"]["verifiers"] == {"math": None, "code": 1.0}

    # The mix builder's reader takes the output as an SFT source.
    from data_tools.sources import read_source

    read = read_source({"path": str(result.data_path), "fields": {"domain": "domain"}})
    assert read.num_rows == 3 and sorted(read["domain"]) == ["code", "math", "math"]

    # Same config: skipped; another selection policy: reselected from the stored samples, nothing generated.
    assert run_distill(config, backend=teacher).skipped
    calls = len(teacher.calls)
    again = run_distill(parse_config(base_config(tmp_path, selection={"policy": "all", "k": 2})), backend=teacher)
    assert len(teacher.calls) == calls and again.stats["kept"] == 6
    with pytest.raises(ValueError, match="holds samples of another config"):
        run_distill(parse_config(base_config(tmp_path, system_prompt=None)), backend=teacher)


def test_both_sample_kinds_original_response_and_system_prompted_trace(tmp_path: Path) -> None:
    """DeepSeek-V3's two SFT sample kinds: <problem, original response> and <system prompt, problem, teacher's
    response>; prompts whose source has no response get only the second."""
    prompts = tmp_path / "with_answers.jsonl"
    prompts.write_text(json.dumps({"id": "m1", "prompt": "What is 6*7?", "response": "6*7 = 42. \\boxed{42}",
                                   "solution": "42"}) + "\n" + json.dumps({"id": "m2", "prompt": "What is 2+2?",
                                                                          "solution": "4"}) + "\n")
    config = base_config(tmp_path, system_prompt="Think first.", selection={"original_responses": True})
    config["prompts"] = [{"path": str(prompts), "name": "mine", "domain": "math"}]
    result = run_distill(parse_config(config), backend=ScriptedTeacher())
    rows = {r["id"]: r for r in map(json.loads, result.data_path.read_text().splitlines())}
    assert sorted(rows) == ["m1#2", "m1#original", "m2#2"]
    original = rows["m1#original"]
    assert [m["role"] for m in original["messages"]] == ["user", "assistant"]
    assert original["messages"][1]["content"] == "6*7 = 42. \\boxed{42}"
    assert original["provenance"] == {"prompt_id": "m1", "verdict": "original"}
    assert [m["role"] for m in rows["m1#2"]["messages"]] == ["system", "user", "assistant"]
    assert (result.stats["kept"], result.stats["originals"]) == (2, 1)

    # A teacher sampled without a system prompt; its rows get one: reselected from the stored samples.
    config["selection"]["sft_system_prompt"] = "Reason, then answer."
    again = run_distill(parse_config(config), backend=ScriptedTeacher())
    trace = next(r for r in map(json.loads, again.data_path.read_text().splitlines()) if r["id"] == "m1#2")
    assert trace["messages"][0] == {"role": "system", "content": "Reason, then answer."}
    assert sum(m["role"] == "system" for m in trace["messages"]) == 1


def test_failed_requests_are_recorded_then_retried(tmp_path: Path) -> None:
    class Flaky(ScriptedTeacher):
        def __init__(self, fail: bool) -> None:
            super().__init__()
            self.fail = fail

        def generate(self, conversations, counts, seed):
            out = super().generate(conversations, counts, seed)
            return [[Completion(None, error="HTTP 503") for _ in s] for s in out] if self.fail else out

    config = parse_config(base_config(tmp_path, sampling={"n": 4, "temperature": 1.0}))
    first = run_distill(config, backend=Flaky(fail=True))
    assert first.stats["errors"] == 12 and first.stats["kept"] == 0
    teacher = Flaky(fail=False)
    second = run_distill(config, backend=teacher)  # not skipped: failed samples are asked for again
    assert not second.skipped and second.stats["errors"] == 0 and second.stats["kept"] == 3
    assert sum(sum(c) for c in teacher.calls) == 12


def test_vllm_backend_is_optional(tiny_checkpoint: Path) -> None:
    import importlib.util

    from data_tools.distill import SamplingConfig, TeacherConfig, make_backend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: the CPU suite does not run it")
    with pytest.raises(ImportError, match=r"pip install 'posttrain\[vllm\]'"):
        make_backend(TeacherConfig(backend="vllm", model=str(tiny_checkpoint)), SamplingConfig(n=1, temperature=0))


def test_a_gold_no_verifier_can_read_keeps_no_trace():
    from data_tools.distill.config import VerifyConfig
    from data_tools.distill.select import Verifier

    verifier = Verifier(VerifyConfig(rewards=["math", "code"]))
    rows = [{"solution": "forty three"}, {"solution": r"$\boxed{2}, \boxed{3}$"}, {"solution": r"$\boxed{2}, \boxed{3}$"}]
    scores = verifier.score(rows, ["The answer is 43.", r"\boxed{3}", r"\boxed{3, 2}"])
    assert scores == [{"math": None, "code": None}, {"math": 0.0, "code": None}, {"math": 1.0, "code": None}]
    assert [verifier.verdict(s) for s in scores] == [False, False, True]
