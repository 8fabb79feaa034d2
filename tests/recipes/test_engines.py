"""SFT (MTP loss on) and GRPO (MTP-drafted rollouts) with 2 CPU processes under DDP, ZeRO-3 and FSDP2 (the shipped
accelerate configs), full and LoRA: every checkpoint and the `final/` are plain transformers checkpoints with the
trained MTP weights and the router biases (LoRA: base + adapter equals the merged final), and resume is exact:
resumed from a checkpoint past a torn one, or killed at random moments and resumed, a run logs the same loss at
every step and ends with the same weights as the run that was never stopped."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from posttrain.model import load_model
from posttrain.training import COMPLETE
from tests.recipes.conftest import REPO, assert_same_run, launch, launch_command, log_history

STEPS = 4
MODES = {"full": [], "lora": ["--use_peft", "true", "--lora_r", "4"]}
# Killed at random moments (slow): each engine once, full and LoRA both
KILLED = ["ddp-full", "zero3-lora", "fsdp2-full", "fsdp2-lora"]
NAMES = ["ddp-full", "ddp-lora", "zero3-full", "fsdp2-full", "zero3-lora", "fsdp2-lora"]
SLOW = ["zero3-lora", "fsdp2-lora"]
CASES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in NAMES]


def _args(rows: Path, base: Path, out: Path, case: str) -> list[str]:
    mode = case.split("-")[1]
    return ["--config", "recipes/configs/tiny/sft.yaml", "--model_name_or_path", str(base),
            "--dataset_path", str(rows), "--output_dir", str(out),
            "--eval_size", "0", "--eval_strategy", "no", "--max_length", "64", "--per_device_train_batch_size", "2",
            "--max_steps", str(STEPS), "--save_steps", "1", "--logging_steps", "1", "--report_to", "none",
            "--disable_tqdm", "true", "--cpu_threads", "1", *MODES[mode]]


@pytest.fixture(scope="module", params=CASES)
def reference(request, tmp_path_factory: pytest.TempPathFactory, sft_rows: Path, tiny_checkpoint: Path):
    """(case, output dir) of a run from `tiny_checkpoint` that was never stopped, checkpointed after every step."""
    out = tmp_path_factory.mktemp(f"reference-{request.param}")
    launch("sft", *_args(sft_rows, tiny_checkpoint, out, request.param), engine=request.param.split("-")[0],
           timeout=900)
    return request.param, out


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_final_is_a_plain_checkpoint_with_the_mtp_weights_and_the_trained_router_biases(reference, tiny_checkpoint):
    case, ref = reference
    final, last = ref / "final", ref / f"checkpoint-{STEPS}"
    ids = torch.tensor([[5, 17, 230, 9, 41]])
    plain = AutoModelForCausalLM.from_pretrained(final)
    assert _logits(plain, ids).shape == (1, 5, plain.config.vocab_size)
    saved = load_file(final / "model.safetensors")
    n = plain.config.num_hidden_layers
    assert {f"model.layers.{n}.eh_proj.weight", f"model.layers.{n}.mlp.experts.0.gate_proj.weight"} <= saved.keys()
    bias = saved["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert bias.abs().max() > 0  # the bias update ran and its result was saved
    assert "mtp_loss" in log_history(last)[0]  # the MTP layer trained (the recipe's default MTP weight)
    ours = load_model(final)
    if case.endswith("lora"):  # the adapter carries the biases: base + adapter is the merged model
        adapted = PeftModel.from_pretrained(load_model(tiny_checkpoint), last)
        torch.testing.assert_close(_logits(adapted, ids), _logits(ours, ids), atol=1e-5, rtol=1e-5)
    else:  # the last checkpoint is a plain one too, the final holds its weights, and the MTP layer moved
        theirs, mine = load_model(last).state_dict(), ours.state_dict()
        assert [k for k in mine if not torch.equal(mine[k], theirs[k])] == []
        base = load_file(tiny_checkpoint / "model.safetensors")[f"model.layers.{n}.eh_proj.weight"]
        assert not torch.equal(saved[f"model.layers.{n}.eh_proj.weight"], base)


def _torn_start(ref: Path, run: Path) -> Path:
    """`run` as a kill during the save of checkpoint-3 leaves it: checkpoint-2 whole, checkpoint-3 with some files
    written and no marker, save_model's temporary dir; returns the torn checkpoint."""
    run.mkdir()
    shutil.copytree(ref / "checkpoint-2", run / "checkpoint-2")
    torn = run / "checkpoint-3"
    shutil.copytree(ref / "checkpoint-3", torn)
    (torn / COMPLETE).unlink()
    (torn / "optimizer.pt").write_bytes(b"cut short")
    (run / ".final.tmp-4242").mkdir()
    return torn


@pytest.mark.parametrize("reference", [c for c in NAMES if c not in KILLED], indirect=True)  # KILLED: below
def test_resume_past_a_torn_checkpoint_reproduces_the_uninterrupted_run(reference, sft_rows: Path, tiny_checkpoint,
                                                                        tmp_path: Path):
    case, ref = reference
    run = tmp_path / "run"
    torn = _torn_start(ref, run)
    proc = launch("sft", *_args(sft_rows, tiny_checkpoint, run, case), "--resume_from_checkpoint", "true",
                  engine=case.split("-")[0])
    assert f"Removed {torn}" in proc.stdout and not (run / ".final.tmp-4242").exists()
    assert proc.stdout.count("'loss':") == 2  # steps 3 and 4 ran here
    assert_same_run(run, ref, STEPS)


def _kill_launch(proc: subprocess.Popen) -> None:
    """SIGKILL a launch and every worker at once, as a lost machine stops them: torch's elastic launcher starts each
    worker in a session of its own, so killing the launcher's process group would leave the workers training."""
    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("reference", KILLED, indirect=True)  # minutes per case
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_run(reference, sft_rows: Path, tiny_checkpoint,
                                                                        tmp_path: Path):
    """From a torn checkpoint-3 (as above), a launch resumes past it and is killed at a random moment after it
    starts saving (often during a save); the next launch resumes from whatever that left."""
    case, ref = reference
    engine = case.split("-")[0]
    run, rng = tmp_path / "run", random.Random(18)
    torn = _torn_start(ref, run)
    args = [*_args(sft_rows, tiny_checkpoint, run, case), "--resume_from_checkpoint", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(launch_command("sft", *args, engine=engine), cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        removed, deadline = False, time.monotonic() + 240
        # until the launch has removed the torn checkpoint-3 and begun saving its own
        while proc.poll() is None and not (removed and torn.exists()) and time.monotonic() < deadline:
            removed = removed or f"Removed {torn}" in (tmp_path / "killed.log").read_text()
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, "the launch ended before it could be killed"
        _kill_launch(proc)
        proc.wait(timeout=60)
    assert f"Removed {torn}" in (tmp_path / "killed.log").read_text()
    launch("sft", *args, engine=engine)
    assert not (run / ".final.tmp-4242").exists()
    assert_same_run(run, ref, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "zero3", "fsdp2"])
def test_grpo_with_mtp_drafted_rollouts_runs_to_a_plain_final_checkpoint(engine: str, tiny_checkpoint: Path,
                                                                          tmp_path: Path):
    proc = launch("grpo", "--config", "recipes/configs/tiny/grpo.yaml", "--model_name_or_path", str(tiny_checkpoint),
                  "--output_dir", str(tmp_path), "--max_steps", "2", "--num_prompts", "16", "--num_generations", "2",
                  "--per_device_train_batch_size", "2", "--max_completion_length", "8", "--save_strategy", "no",
                  "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--cpu_threads", "1",
                  "--speculative_generation", "true", engine=engine, timeout=900)
    assert proc.stdout.count("'mtp/acceptance':") == 2  # every step's rollouts were drafted by the MTP layer
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert plain(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, plain.config.vocab_size)
    saved = load_file(tmp_path / "final" / "model.safetensors")
    n = plain.config.num_hidden_layers
    assert f"model.layers.{n}.eh_proj.weight" in saved
    assert saved["model.layers.1.mlp.gate.e_score_correction_bias"].abs().max() > 0
