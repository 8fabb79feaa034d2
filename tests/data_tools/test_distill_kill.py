"""Crash safety: kill -9 a real `posttrain distill generate` (hf backend, tiny checkpoint) part-way, run the same
command again, and check that every (prompt id, sample index) is on disk exactly once and the selection agrees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from data_tools.distill import ShardStore, load_distill_config, run_distill
from data_tools.distill.run import select_traces

pytestmark = pytest.mark.integration

PROMPTS, N = 24, 3


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "posttrain.app.cli", "distill", "generate", "--config", str(config)]


@pytest.mark.slow
def test_kill_and_rerun_loses_and_duplicates_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    accept = tmp_path / "accept.py"  # a verifier passing everything, so the selection has rows to be consistent on
    accept.write_text("def accept(prompts, completions, **columns):\n    return [1.0] * len(completions)\n")
    out = tmp_path / "out"
    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(out), "prompts": [{"builtin": "arithmetic", "rows": PROMPTS}], "system_prompt": None,
        "teacher": {"backend": "hf", "model": str(tiny_checkpoint), "device": "cpu", "batch_size": 2},
        "sampling": {"n": N, "temperature": 1.0, "max_new_tokens": 6, "seed": 3},
        "verify": {"rewards": [f"{accept}:accept"]},
        "selection": {"policy": "all", "k": 2, "require_think": False, "max_foreign_script": 1.0,
                      "drop_truncated": False},
        "chunk_size": 2, "shard_size": 20,
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.Popen(_command(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "samples" / "samples-00000.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (shard.is_file() and shard.stat().st_size > 0):
            assert first.poll() is None, "the first run ended before writing any sample"
            assert time.monotonic() < deadline, "no sample written within 120 s"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "COMPLETE").exists()
    written = sum(len(p.read_bytes().splitlines()) for p in (out / "samples").glob("*.jsonl"))
    assert 0 < written < PROMPTS * N, "the kill did not land part-way"

    second = subprocess.run(_command(config), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (out / "COMPLETE").is_file()

    store = ShardStore(out / "samples")
    raw = list(store.iter_raw())
    keys = Counter((r["prompt_id"], r["sample_index"]) for r in raw)
    prompt_ids = [json.loads(line)["id"] for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert len(raw) == PROMPTS * N and max(keys.values()) == 1
    assert set(keys) == {(p, j) for p in prompt_ids for j in range(N)}

    cfg = load_distill_config(config)
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    expected, stats = select_traces(cfg, prompts, store.load())
    selected = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert selected == expected and stats["samples"] == PROMPTS * N
    assert len({r["id"] for r in selected}) == len(selected) > 0
    assert max(Counter(r["provenance"]["prompt_id"] for r in selected).values()) <= 2

    # Once more: complete, so nothing is generated.
    assert run_distill(cfg).skipped
