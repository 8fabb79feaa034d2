"""Preference data: TRL's preference layouts through the shared readers, and `posttrain data preferences` (sampling,
verification, pairing, split, stats, resume after a kill) with a scripted policy and with a real tiny checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data_tools import load_preference_splits, load_preferences, read_source
from data_tools.distill import ShardStore
from data_tools.preferences import load_preference_config, make_pairs, run_preferences
from posttrain.generation import Completion

pytestmark = pytest.mark.integration

USER = {"role": "user", "content": "What is 2 + 2?"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("row", [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},  # explicit prompt, text
    {"prompt": [USER], "chosen": [{"role": "assistant", "content": "4"}],
     "rejected": [{"role": "assistant", "content": "5"}]},  # explicit prompt, conversational
    {"chosen": [USER, {"role": "assistant", "content": "4"}],
     "rejected": [USER, {"role": "assistant", "content": "5"}]},  # implicit prompt, conversational
    {"chosen": "What is 2 + 2? 4", "rejected": "What is 2 + 2? 5"},  # implicit prompt, text
], ids=["explicit-text", "explicit-chat", "implicit-chat", "implicit-text"])
def test_every_trl_preference_layout_reads_to_the_explicit_conversational_one(tmp_path: Path, row: dict):
    pair = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))[0]
    assert pair["prompt"] == [USER]
    assert pair["chosen"] == [{"role": "assistant", "content": "4"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "5"}]


def test_preference_rows_are_canonical_rows_too(tmp_path: Path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "solution": "4"}])
    row = read_source({"path": str(path), "domain": "math"})[0]
    assert row["messages"][-1] == {"role": "assistant", "content": "4"} and row["solution"] == "4"
    assert row["rejected"] == [{"role": "assistant", "content": "5"}]


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "2+2?", "chosen": "4", "rejected": ""}, r"row 1, field 'rejected'"),
    ({"prompt": "2+2?", "chosen": [{"role": "user", "content": "x"}], "rejected": "5"}, r"chosen\[0\]\.role"),
    ({"chosen": "abc", "rejected": "xyz"}, r"field 'chosen': no prompt column"),
])
def test_bad_preference_rows_name_the_file_row_and_field(tmp_path: Path, row: dict, message: str):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=message):
        load_preferences(path)


class ScriptedPolicy:
    """Per prompt, 4 samples: right, right (same text), wrong, no answer at all. Counts the samples it makes."""

    def __init__(self) -> None:
        self.made = 0

    def generate(self, conversations, counts, seed):
        out = []
        for conversation, count in zip(conversations, counts, strict=True):
            a, b = (int(x) for x in conversation[-1]["content"].removeprefix("What is ").rstrip("?").split(" + "))
            texts = [f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}", "hmm"]
            out.append([Completion(texts[j], num_tokens=3) for j in range(4 - count, 4)])
            self.made += count
        return out

    def close(self):
        pass


def prefs_config(tmp_path: Path, **extra) -> dict:
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + {i + 1}?", "solution": str(2 * i + 1)} for i in range(20)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    return {"output_dir": str(tmp_path / "out"), "prompts": [{"path": str(prompts), "domain": "math"}],
            "policy": {"backend": "openai", "model": "scripted", "base_url": "http://unused/v1"},
            "sampling": {"n": 4, "temperature": 1.0}, "verify": {"rewards": ["math"]}, "heldout": 0.25,
            "chunk_size": 3, **extra}


def test_pairs_right_with_wrong_answers_of_the_same_prompt_deduplicated_with_a_prompt_level_split(tmp_path: Path):
    config = load_preference_config(prefs_config(tmp_path))
    stats = run_preferences(config, backend=ScriptedPolicy())
    out = Path(config.output_dir)
    train, heldout = load_preference_splits(out)
    # Per prompt: one distinct right text, one wrong text (the no-answer sample is wrong too: math scores it 0).
    assert stats["correct"] == 40 and stats["incorrect"] == 40 and stats["accuracy"] == 0.5
    assert stats["pairs"]["train"] + stats["pairs"]["heldout"] == 40 == len(train) + len(heldout)
    assert 0 < len(heldout) < len(train)
    for pair in [*train, *heldout]:
        a, b = (int(x) for x in pair["prompt"][-1]["content"].removeprefix("What is ").rstrip("?").split(" + "))
        assert pair["chosen"][0]["content"] == f"\\boxed{{{a + b}}}" != pair["rejected"][0]["content"]
    lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    held = {json.loads(line)["provenance"]["prompt_id"] for line in (out / "heldout.jsonl").read_text().splitlines()}
    assert not held & {r["provenance"]["prompt_id"] for r in lines}  # a prompt's pairs sit on one side
    assert "held out" in (out / "stats.md").read_text()


def test_a_complete_run_returns_at_once_and_a_new_split_reuses_the_samples(tmp_path: Path):
    data = prefs_config(tmp_path)
    policy = ScriptedPolicy()
    first = run_preferences(load_preference_config(data), backend=policy)
    assert policy.made == 80
    assert run_preferences(load_preference_config(data), backend=policy) == first and policy.made == 80
    resplit = run_preferences(load_preference_config({**data, "heldout": 0.5}), backend=policy)
    assert policy.made == 80 and resplit["pairs"] != first["pairs"]


def test_resume_generates_only_the_missing_samples(tmp_path: Path):
    config = load_preference_config(prefs_config(tmp_path))
    policy = ScriptedPolicy()
    run_preferences(config, backend=policy)
    out = Path(config.output_dir)
    shard = out / "samples" / "samples-00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:30]) + lines[30][:10])  # as a kill leaves it: 30 records and a torn line
    (out / "COMPLETE").unlink()
    again = ScriptedPolicy()
    stats = run_preferences(config, backend=again)
    assert again.made == 50 and stats["samples"] == 80
    assert len(ShardStore(out / "samples").load()) == 80


def test_pairing_is_pure_and_skips_prompts_without_both_kinds(tmp_path: Path):
    config = load_preference_config(prefs_config(tmp_path, pairs_per_prompt=1))
    prompts = [{"id": "p", "domain": "math", "source": "s", "teacher_messages": [USER], "solution": "4"}]
    record = {"prompt_id": "p", "error": None, "num_tokens": 1}
    all_right = {("p", j): {**record, "sample_index": j, "text": "4", "verified": True, "scores": {"math": 1.0}}
                 for j in range(4)}
    train, heldout, stats = make_pairs(config, prompts, all_right)
    assert train == heldout == [] and stats["prompts_all_correct"] == 1 and stats["prompts_paired"] == 0


def test_config_mistakes_name_the_option(tmp_path: Path):
    with pytest.raises(ValueError, match="pairs need at least 2 samples"):
        load_preference_config(prefs_config(tmp_path, sampling={"n": 1, "temperature": 0.0}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['pairs'\]"):
        load_preference_config(prefs_config(tmp_path, pairs=3))
    with pytest.raises(ValueError, match="heldout"):
        load_preference_config(prefs_config(tmp_path, heldout=1.5))


@pytest.mark.slow
def test_cli_with_a_real_checkpoint_survives_a_kill(tiny_checkpoint: Path, tmp_path: Path):
    accept_even = tmp_path / "verify.py"  # a verifier that splits the samples: even-length texts are "right"
    accept_even.write_text("def even(prompts, completions, **columns):\n"
                           "    return [float(len(c if isinstance(c, str) else c[0]['content']) % 2 == 0)\n"
                           "            for c in completions]\n")
    out = tmp_path / "out"
    config = tmp_path / "prefs.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(out), "prompts": [{"builtin": "arithmetic", "rows": 24}],
        "policy": {"backend": "hf", "model": str(tiny_checkpoint), "device": "cpu", "batch_size": 2},
        "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 6, "seed": 1},
        "verify": {"rewards": [f"{accept_even}:even"]}, "chunk_size": 2, "shard_size": 20,
    }))
    command = [sys.executable, "-m", "posttrain.app.cli", "data", "preferences", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "samples" / "samples-00000.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (shard.is_file() and shard.stat().st_size > 0):
            assert first.poll() is None and time.monotonic() < deadline, "no sample written"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert not (out / "COMPLETE").exists()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    raw = list(ShardStore(out / "samples").iter_raw())
    assert len(raw) == 24 * 4 == len({(r["prompt_id"], r["sample_index"]) for r in raw})
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 96 and "Pairs:" in second.stdout
    train, heldout = load_preference_splits(out)
    assert len(train) + len(heldout) == stats["pairs"]["train"] + stats["pairs"]["heldout"] > 0
