"""How many torch threads each process runs on a CPU: the machine's cores shared out among the local processes.

One owner for both ends: the pipeline asks how many threads to give each rank it launches (`launch_threads`),
and a recipe applies `--cpu_threads` in its own process (`set_cpu_threads`).

>>> cores_per_process(1) >= cores_per_process(2) >= 1
True
"""

from __future__ import annotations

import os

import torch


def cores_per_process(num_processes: int) -> int:
    """The cores this process may run on, shared out among `num_processes` local processes (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // num_processes)


def launch_threads(num_processes: int) -> int:
    """OMP threads for each of `num_processes` ranks: `OMP_NUM_THREADS` if set, else the cores shared out.

    `accelerate launch` without `--cpu` sets OMP_NUM_THREADS=1, which halves CPU training speed on two cores.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return cores_per_process(num_processes)


def set_cpu_threads(cpu_threads: str | None) -> int:
    """Apply `--cpu_threads` to torch (see `posttrain.training.ModelArguments.cpu_threads`): a number, 'auto' (the
    cores shared among `LOCAL_WORLD_SIZE` processes) or None (keep the launcher's); returns the thread count in use.

    >>> set_cpu_threads(None) == torch.get_num_threads()
    True
    """
    if cpu_threads == "auto":
        torch.set_num_threads(cores_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    elif cpu_threads is not None:
        torch.set_num_threads(int(cpu_threads))
    return torch.get_num_threads()
