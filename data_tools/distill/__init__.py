"""R1-style distillation: sample reasoning traces from a teacher, verify them with `rewards`, keep the readable
verified ones (rejection sampling), and write them as SFT rows the mix builder and the SFT recipe read.

Public API:

- `load_distill_config(path_or_mapping, overrides) -> DistillConfig` (`config`): the YAML config, validated.
- `run_distill(config, backend=None) -> DistillResult` (`run`): generate (resumable, crash-safe), verify, select,
  write `selected.jsonl` + `stats.json`; returns at once when the output is complete.
- `make_backend(teacher, sampling)`, `HFBackend`, `OpenAIBackend`, `VLLMBackend` (`backends`), each sampling
  `posttrain.generation.Completion`s.
- `ShardStore` (`shards`): the append-only sample store; `readability`, `choose` (`select`).

CLI: `posttrain distill generate --config CONFIG.yaml [key=value ...]`; recipe: `recipes/distill.py`.
"""

from data_tools.distill.backends import HFBackend, OpenAIBackend, VLLMBackend, make_backend
from data_tools.distill.config import (
    R1_SYSTEM_PROMPT,
    DistillConfig,
    SamplingConfig,
    SelectionConfig,
    TeacherConfig,
    VerifyConfig,
    load_distill_config,
    parse_config,
)
from data_tools.distill.run import DistillResult, run_distill
from data_tools.distill.shards import ShardStore

__all__ = [
    "R1_SYSTEM_PROMPT",
    "DistillConfig",
    "DistillResult",
    "HFBackend",
    "OpenAIBackend",
    "SamplingConfig",
    "SelectionConfig",
    "ShardStore",
    "TeacherConfig",
    "VLLMBackend",
    "VerifyConfig",
    "load_distill_config",
    "make_backend",
    "parse_config",
    "run_distill",
]
