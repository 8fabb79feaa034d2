"""GPU check of the engines: SFT (full and LoRA) and GRPO under DDP, FSDP2 and ZeRO-3 on 2 GPUs, with an exact resume.

    python benchmarks/scale_gpu.py --preset small --out /tmp/scale_gpu    # ~2 GPUs, target: under 10 minutes

For each engine (the shipped accelerate config, 2 processes, bf16): SFT of the preset for 4 steps with a checkpoint
after each, then a run resumed from checkpoint-2 (the same losses at steps 3-4 and the same final tensors, to a
bf16 tolerance on GPUs); LoRA SFT for 2 steps (base + adapter equals the merged final); GRPO for 2 steps. Every
`final/` must load in plain transformers. Prints one JSON line per engine (seconds per launch, whether the resumed
losses equal the uninterrupted ones, the largest weight difference) and a summary; exits non-zero on a failed launch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"ddp": "recipes/accelerate/ddp.yaml", "fsdp2": "recipes/accelerate/fsdp2.yaml",
           "zero3": "recipes/accelerate/zero3.yaml"}


def _launch(engine: str, recipe: str, args: list[str]) -> float:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ENGINES[engine],
           "--num_processes", "2", f"recipes/{recipe}.py", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return time.perf_counter() - started


def _losses(run: Path, step: int) -> dict[int, float]:
    state = json.loads((run / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def _check_final(run: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    model(torch.tensor([[1, 2, 3]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="tiny or small")
    parser.add_argument("--out", default="outputs/scale_gpu")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    opts = parser.parse_args()
    out = Path(opts.out)
    shutil.rmtree(out, ignore_errors=True)
    sft = ["--config", f"recipes/configs/{opts.preset}/sft.yaml", "--dataset_path", "recipes/configs/tiny/mix.yaml",
           "--eval_strategy", "no", "--eval_size", "0", "--max_steps", "4", "--save_steps", "1", "--logging_steps",
           "1", "--report_to", "none", "--disable_tqdm", "true", "--bf16", "true", "--use_cpu", "false"]
    grpo = ["--config", f"recipes/configs/{opts.preset}/grpo.yaml", "--max_steps", "2", "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "true", "--bf16", "true", "--use_cpu", "false"]
    results = []
    for engine in opts.engines:
        ref, resumed, lora = out / engine / "sft", out / engine / "resumed", out / engine / "lora"
        seconds = _launch(engine, "sft", [*sft, "--output_dir", str(ref)])
        _check_final(ref)
        resumed.mkdir(parents=True)
        shutil.copytree(ref / "checkpoint-2", resumed / "checkpoint-2")
        seconds_resumed = _launch(engine, "sft", [*sft, "--output_dir", str(resumed), "--resume_from_checkpoint",
                                                  "true"])
        ours, theirs = _losses(resumed, 4), _losses(ref, 4)
        a, b = load_file(resumed / "final" / "model.safetensors"), load_file(ref / "final" / "model.safetensors")
        worst = max((x.float() - b[k].float()).abs().max().item() for k, x in a.items())
        seconds_lora = _launch(engine, "sft", [*sft, "--output_dir", str(lora), "--use_peft", "true",
                                               "--max_steps", "2"])
        _check_final(lora)
        seconds_grpo = _launch(engine, "grpo", [*grpo, "--output_dir", str(out / engine / "grpo")])
        _check_final(out / engine / "grpo")
        row = {"engine": engine, "sft_s": round(seconds, 1), "resumed_s": round(seconds_resumed, 1),
               "lora_s": round(seconds_lora, 1), "grpo_s": round(seconds_grpo, 1),
               "resume_losses_equal": ours == theirs, "resume_max_abs_weight_diff": worst}
        print(json.dumps(row), flush=True)
        results.append(row)
    host = os.uname().nodename
    gpus = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(json.dumps({"host": host, "gpu": gpus, "preset": opts.preset, "runs": results}))


if __name__ == "__main__":
    main()
