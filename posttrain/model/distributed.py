"""Expert parallelism at load time: transformers' `DistributedConfig(ep_size=..., fsdp_size=...)` with DeepSeek-V3's
own `base_model_ep_plan`, the MTP block's experts included.

With `ep_size` E and `fsdp_size` F (F processes in all, F a multiple of E) every routed-expert tensor is split by
expert over E ranks (`grouped_gemm`; tokens reach their experts through `ep_dispatch_experts`), and everything is
FSDP2-sharded over F (experts over F / E). The plan's patterns (`layers.*.mlp.experts`) match every decoder layer,
so the MTP layers, which sit at `model.layers.{num_hidden_layers + k}`, follow it too. The model's
`is_distributed_loading_by_transformers` is then set, which the `Trainer` reads: it neither wraps nor shards the
model again, saves by gathering on every rank, and refuses to checkpoint the optimizer (`save_only_model=True`
or `save_strategy="no"`; no resume).

Checkpoint dirs load sharded (`from_pretrained(distributed_config=...)`); a random init (a preset, a config.json)
is built whole in every process from the same seed and then sharded the same way (`distribute`).
`gather_state_dict` collects whole tensors for saving, so checkpoints are plain transformers ones.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from posttrain.errors import MissingPackageError, UserError

try:
    from transformers.distributed import DistributedConfig
except ImportError:  # transformers < 5.20 has no expert-parallel plans
    DistributedConfig = None


def distributed_config(ep_size: int = 1, fsdp_size: int | None = None) -> DistributedConfig | None:
    """The `DistributedConfig` for `ep_size` / `fsdp_size` (default: every process), or None when `ep_size` is 1 and
    `fsdp_size` unset: the model then loads whole and the launcher's engine (DDP, FSDP2, ZeRO-3) distributes it.

    >>> distributed_config() is None
    True
    """
    if ep_size < 1 or (fsdp_size is not None and fsdp_size < 1):
        raise UserError(f"--ep_size ({ep_size}) and --fsdp_size ({fsdp_size}) must be >= 1")
    if ep_size == 1 and fsdp_size is None:
        return None
    if DistributedConfig is None or "ep_size" not in DistributedConfig.__dataclass_fields__:
        import transformers

        raise MissingPackageError(f"--ep_size needs transformers' DistributedConfig(ep_size=...), which "
                                  f"{transformers.__version__} lacks; upgrade transformers")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = world if fsdp_size is None else fsdp_size
    if fsdp != world:
        raise UserError(f"--fsdp_size {fsdp} must equal the number of processes ({world}): launch with "
                        f"`torchrun --nproc_per_node {fsdp}` (or `accelerate launch --num_processes {fsdp}`)")
    if fsdp % ep_size:
        raise UserError(f"--ep_size {ep_size} must divide --fsdp_size {fsdp} (the experts are split over ep_size "
                        "ranks and FSDP-sharded over the rest)")
    return DistributedConfig(ep_size=ep_size, fsdp_size=fsdp)


def check_experts_split(model_config: PretrainedConfig, config: DistributedConfig) -> None:
    """The routed experts (of the main layers and MTP alike) must split evenly over `ep_size` ranks."""
    experts = model_config.n_routed_experts
    if experts % config.ep_size:
        raise UserError(f"--ep_size {config.ep_size} must divide n_routed_experts ({experts})")


def distribute(model: PreTrainedModel, config: DistributedConfig) -> PreTrainedModel:
    """Shard a model built whole in this process (the same seed on every rank) as `from_pretrained` shards one at
    load: the same two steps, around where it would load the weights."""
    check_experts_split(model.config, config)
    config, _, mesh = type(model).prepare_distribute_model(config)
    return type(model).maybe_distribute_model(model, config, mesh)


def sharded_at_load(model: nn.Module) -> bool:
    """True for a model `from_pretrained(distributed_config=...)` or `distribute` sharded."""
    return bool(getattr(model, "is_distributed_loading_by_transformers", False))


def gather_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Whole CPU tensors of a model sharded at load, on rank 0 ({} on the others); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return full if dist.get_rank() == 0 else {}
