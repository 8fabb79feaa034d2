"""Helpers for running the recipes as users do: `accelerate launch` subprocesses, and in-process for errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
CPU2 = REPO / "recipes" / "accelerate" / "cpu2.yaml"
# A warning line Python prints for a file of ours (not the libraries in a venv under the repo).
_OUR_WARNING = re.compile(rf"{re.escape(str(REPO))}/(?!\.venv/)\S+\.py:\d+: (FutureWarning|DeprecationWarning)")


def load_recipe(name: str) -> ModuleType:
    """Import `recipes/<name>.py` as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# 2 CPU processes under each engine: the shipped accelerate config, sized down to this machine.
ENGINES = {
    "ddp": ["--config_file", str(CPU2)],
    "zero3": ["--config_file", "recipes/accelerate/zero3.yaml", "--num_processes", "2", "--mixed_precision", "no"],
    "fsdp2": ["--config_file", "recipes/accelerate/fsdp2.yaml", "--num_processes", "2", "--mixed_precision", "no"],
}
FSDP_ON_CPU = "tests/recipes/fsdp_on_cpu.py"  # accelerate selects FSDP on accelerators only (see the file)


def launch_command(recipe: str, *args: str, processes: int = 2, engine: str = "ddp",
                   wrappers: tuple[str, ...] = ()) -> list[str]:
    """`accelerate launch` of `recipes/<recipe>.py ARGS` on 2 CPU processes under `engine`, or on one process;
    `wrappers` are launcher scripts run in front of the recipe (`python WRAPPER recipes/<recipe>.py ARGS`)."""
    launcher = ENGINES[engine] if processes == 2 else ["--cpu", "--num_processes", "1", "--mixed_precision", "no"]
    script = [FSDP_ON_CPU] if engine == "fsdp2" else []
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher, *script, *wrappers,
            f"recipes/{recipe}.py", *args]


def launch(recipe: str, *args: str, processes: int = 2, env: dict[str, str] | None = None, timeout: int = 300,
           engine: str = "ddp", wrappers: tuple[str, ...] = ()):
    """Run `launch_command(...)` from the repo root; fails the test with the output's tail if it fails."""
    cmd = launch_command(recipe, *args, processes=processes, engine=engine, wrappers=wrappers)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONWARNINGS": "default::DeprecationWarning,default::FutureWarning", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ours = [line for line in proc.stderr.splitlines() if _OUR_WARNING.match(line)]
    assert not ours, "warnings from our code in a launched recipe:\n" + "\n".join(ours)
    return proc


def log_history(checkpoint: Path) -> list[dict]:
    """The trainer's logged metrics as saved in a checkpoint."""
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def losses(checkpoint: Path) -> dict[int, float]:
    """step -> training loss, as logged up to `checkpoint`."""
    return {h["step"]: h["loss"] for h in log_history(checkpoint) if "loss" in h}


def assert_same_run(run: Path, reference: Path, steps: int) -> None:
    """`run` logged the same loss at every step as `reference` and saved bit-identical final weights."""
    assert losses(run / f"checkpoint-{steps}") == losses(reference / f"checkpoint-{steps}")
    assert len(losses(run / f"checkpoint-{steps}")) == steps
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []


@pytest.fixture(scope="session")
def sft_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small JSONL of prompt/response rows in the builtin tasks' style."""
    path = tmp_path_factory.mktemp("sft") / "rows.jsonl"
    with path.open("w") as f:
        for i in range(64):
            a, b = i * 7 % 50, i * 3 % 40
            f.write(json.dumps({"prompt": f"What is {a} + {b}?",
                                "response": f"<think>{a}+{b}={a + b}</think> The answer is \\boxed{{{a + b}}}."}) + "\n")
    return path
