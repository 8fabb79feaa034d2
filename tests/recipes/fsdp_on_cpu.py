"""Run a recipe under accelerate's FSDP2 on CPU processes (gloo): `python fsdp_on_cpu.py recipes/sft.py ARGS`.

accelerate 1.15 selects FSDP only for accelerator devices; with CPU processes it keeps the FSDP plugin it built
from the launch config (`ACCELERATE_USE_FSDP`, `FSDP_*`) but runs them as plain DDP (MULTI_CPU). This launcher
wraps `AcceleratorState.__init__` so that, where a plugin was given and only the device check said no, the state
is FSDP with that plugin. Everything after that is accelerate's and the Trainer's own FSDP2 code: `fully_shard` of
each decoder layer over a gloo device mesh, DTensor parameters, the FSDP checkpoint save/load and
`get_model_state_dict` consolidation.
"""

from __future__ import annotations

import os
import runpy
import sys

from accelerate import state as accelerate_state
from accelerate.utils import DistributedType

_init = accelerate_state.AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


if __name__ == "__main__":
    accelerate_state.AcceleratorState.__init__ = _init_with_fsdp_on_cpu
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
