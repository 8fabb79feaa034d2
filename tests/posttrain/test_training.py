"""The trainer callback on real short `transformers.Trainer` and TRL `SFTTrainer` runs of the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from posttrain.cpu_threads import cores_per_process, set_cpu_threads
from posttrain.model import add_training_callbacks, load_model, training_callbacks
from posttrain.tokenizer import build_tokenizer
from posttrain.trainer_metrics import LogsCallbackMetrics
from posttrain.training import ModelArguments, build_model_and_tokenizer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class LoggingTrainer(LogsCallbackMetrics, Trainer):
    """transformers' `Trainer` logging our callbacks' metrics."""


def _lm_dataset(n: int = 16, length: int = 24) -> Dataset:
    ids = torch.randint(10, 1000, (n, length), generator=torch.Generator().manual_seed(0)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def _args(tmp_path, **kw) -> dict:
    return dict(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2,
                logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, **kw)


def test_trainer_run_updates_biases_and_logs_router_and_mtp_metrics(tmp_path):
    torch.manual_seed(0)
    model = load_model("tiny", seq_balance_alpha=1e-3)
    trainer = LoggingTrainer(model=model, args=TrainingArguments(**_args(tmp_path)), train_dataset=_lm_dataset(),
                             callbacks=training_callbacks(model, gamma=1e-3))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        expected = {"router/maxvio", "router/maxvio/layer_1", "router/maxvio/layer_4", "mtp_loss", "seq_balance_loss"}
        assert expected <= set(h)
    assert model.aux_grad_scale == 0.5  # 1 / gradient_accumulation_steps
    bias = model.model.layers[1].mlp.gate.e_score_correction_bias
    assert bias.abs().max() > 0 and abs(bias.mean().item()) < 1e-6


class _Reporter(TrainerCallback):
    """Stands for TensorBoard and the other reporters, which the Trainer calls before callbacks added later."""

    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_added_training_callbacks_reach_reporters_and_log_history(tmp_path):
    model = load_model("tiny", mtp_loss_weight=0.0)
    reporter = _Reporter()
    trainer = LoggingTrainer(model=model, args=TrainingArguments(**_args(tmp_path)), train_dataset=_lm_dataset(),
                             callbacks=[reporter])
    add_training_callbacks(trainer, gamma=0.0, log_expert_loads=True)
    trainer.train()
    assert "router/maxvio" in reporter.logs[0]
    first = trainer.state.log_history[0]
    assert "router/load/layer_1/expert_15" in first and "mtp_loss" not in first
    assert "router/maxvio/layer_4" not in first  # the MTP layer does not route when MTP does not train
    assert model.model.layers[1].mlp.gate.e_score_correction_bias.abs().max() == 0  # gamma=0: statistics only


def test_sft_trainer_packed_assistant_only_trains_mtp_through_trl_fused_head(tmp_path):
    from trl import SFTConfig

    from posttrain.training import SFTTrainer

    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=0.3)
    eh_proj = model.model.layers[model.config.num_hidden_layers].eh_proj.weight.detach().clone()
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"The answer is {2 * i}."}]} for i in range(16)]
    args = SFTConfig(**_args(tmp_path), packing=True, assistant_only_loss=True, max_length=128, bf16=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=build_tokenizer(), callbacks=training_callbacks(model))
    assert "forward" in model.__dict__  # TRL replaced the forward with its fused LM head
    trainer.train()
    assert all("mtp_loss" in h and "router/maxvio" in h for h in trainer.state.log_history if "loss" in h)
    assert not torch.equal(eh_proj, model.model.layers[model.config.num_hidden_layers].eh_proj.weight)


@pytest.mark.slow
def test_grpo_trainer_runs_with_the_callback_and_mtp_off(tmp_path):
    from trl import GRPOConfig

    from posttrain.training import GRPOTrainer

    torch.manual_seed(0)
    model = load_model("tiny", mtp_loss_weight=0.0)
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}]} for i in range(8)])
    args = GRPOConfig(**{**_args(tmp_path), "gradient_accumulation_steps": 1, "max_steps": 1}, num_generations=4,
                      max_completion_length=4, bf16=False, gradient_checkpointing=False)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [1.0 * len(c) for c in completions],
                          args=args, train_dataset=prompts, processing_class=build_tokenizer(),
                          callbacks=training_callbacks(model))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all("router/maxvio" in h and "mtp_loss" not in h for h in logs)
    assert model.model.layers[1].mlp.gate.e_score_correction_bias.abs().max() > 0


_DDP_SCRIPT = """
import json, os, sys, torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from posttrain.model import load_model, training_callbacks
from posttrain.trainer_metrics import LogsCallbackMetrics
torch.manual_seed(0)
model = load_model("tiny")
rank_data = torch.randint(10, 1000, (16, 24), generator=torch.Generator().manual_seed(0)).tolist()
ds = Dataset.from_dict({"input_ids": rank_data, "labels": rank_data})
args = TrainingArguments(output_dir=sys.argv[1], per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         max_steps=2, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
                         use_cpu=True)
trainer = type("LoggingTrainer", (LogsCallbackMetrics, Trainer), {})(model=model, args=args, train_dataset=ds,
                                                                    callbacks=training_callbacks(model))
trainer.train()
rank = trainer.args.process_index
with open(f"{sys.argv[1]}/log_{rank}.json", "w") as f:
    json.dump(trainer.state.log_history, f)
trainer.end()  # destroys the process group: exiting with gloo threads alive can abort a rank at teardown
# ... and even after it a rank now and then aborted in interpreter teardown ("terminate called without an
# active exception"): everything checked is written, so leave without running the C++ destructors
sys.stdout.flush(); sys.stderr.flush(); os._exit(0)
"""


@pytest.mark.slow
def test_two_cpu_processes_reduce_loads_across_ranks(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    # `accelerate launch --cpu --num_processes 2` starts a single process (accelerate 1.15): use torchrun;
    # --standalone picks a free port, so concurrent runs on the machine do not collide on 29500
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, timeout=180, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    logs = [json.loads((tmp_path / f"log_{r}.json").read_text()) for r in (0, 1)]
    steps = [[h for h in log if "loss" in h] for log in logs]
    assert len(steps[0]) == 2 and "train_runtime" in logs[1][-1]
    for a, b in zip(*steps, strict=True):  # ranks saw different data, the all-reduced loads agree
        assert a["router/maxvio"] == b["router/maxvio"] and a["mtp_loss"] == b["mtp_loss"]


def test_cpu_threads_auto_shares_the_cores_among_local_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_cpu_threads("auto") == cores_per_process(2) == max(1, len(os.sched_getaffinity(0)) // 2)
        assert set_cpu_threads("1") == 1
        assert set_cpu_threads(None) == 1  # unset keeps what the launcher (or a previous call) chose
    finally:
        torch.set_num_threads(before)


def test_random_init_from_a_preset_repeats_with_the_training_seed():
    args = ModelArguments(model_name_or_path="tiny")
    first, _ = build_model_and_tokenizer(args, seed=42)
    torch.manual_seed(1234)  # whatever ran before must not matter
    again, _ = build_model_and_tokenizer(args, seed=42)
    other, _ = build_model_and_tokenizer(args, seed=43)
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values()))


def test_bad_cpu_threads_is_a_clear_error():
    for bad in ("many", "0"):
        with pytest.raises(ValueError, match=f"--cpu_threads '{bad}'"):
            ModelArguments(cpu_threads=bad)


def test_moe_callback_gives_the_extras_the_fp16_grad_scalers_scale(tmp_path):
    model = load_model("tiny")
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    callback = training_callbacks(model, grad_scaler=scaler)[0]
    args = TrainingArguments(**_args(tmp_path))
    callback.on_step_begin(args, None, None)
    assert model.loss_scale == 256.0
    scaler.scale(torch.ones(()))  # a step's backward starts the scaler's state
    scaler.update(128.0)  # it backs off (as after an overflow); the next step follows it
    callback.on_step_begin(args, None, None)
    assert model.loss_scale == 128.0


def test_add_training_callbacks_refuses_a_trainer_that_would_not_log_them(tmp_path):
    trainer = Trainer(model=load_model("tiny"), args=TrainingArguments(**_args(tmp_path)), train_dataset=_lm_dataset())
    with pytest.raises(TypeError, match="LogsCallbackMetrics"):
        add_training_callbacks(trainer)


def test_resume_picks_the_newest_marked_checkpoint_and_removes_what_a_kill_left(tmp_path):
    from posttrain.training import COMPLETE, FINAL_DIR, last_complete_checkpoint, remove_torn

    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / COMPLETE).write_text("{}")
    (tmp_path / "checkpoint-4" / ".adapter_model.safetensors.tmp-7").write_text("")
    (tmp_path / ".final.old-9").mkdir()  # save_model moved final/ away and was killed before the rename
    resume = last_complete_checkpoint(tmp_path)
    assert resume == str(tmp_path / "checkpoint-4")  # checkpoint-6 has a trainer state but no marker
    removed = remove_torn(tmp_path, resume)
    assert sorted(p.name for p in removed) == [".adapter_model.safetensors.tmp-7", "checkpoint-6"]
    assert (tmp_path / FINAL_DIR).is_dir() and (tmp_path / "checkpoint-2").is_dir()


def test_reward_trainer_eval_accuracy_and_margin_are_means_over_pairs_not_batches(tiny_checkpoint, tmp_path):
    from trl import RewardConfig

    from posttrain.training import RewardTrainer, build_reward_model_and_tokenizer

    pairs = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                "chosen": [{"role": "assistant", "content": f"\\boxed{{{2 * i}}}"}],
                                "rejected": [{"role": "assistant", "content": f"maybe {i * 7 % 5}"}]}
                               for i in range(5)])
    model, tokenizer = build_reward_model_and_tokenizer(ModelArguments(model_name_or_path=str(tiny_checkpoint)),
                                                        seed=0)
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=64,
                        per_device_eval_batch_size=4)  # 5 pairs: batches of 4 and 1
    trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, eval_dataset=pairs,
                            processing_class=tokenizer)
    results = trainer.evaluate()
    with torch.no_grad():
        margins = [(model(input_ids=torch.tensor([row["chosen_ids"]])).logits
                    - model(input_ids=torch.tensor([row["rejected_ids"]])).logits).item()
                   for row in trainer.eval_dataset]
    assert results["eval_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 5)
    assert results["eval_margin"] == pytest.approx(sum(margins) / 5, abs=1e-4)
