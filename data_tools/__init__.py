"""Data tools: builtin verifiable task generators and the SFT mix builder.

- `data_tools.generators`: `generate`, `iter_rows`, `prompt_dataset`, `TASKS` (offline, seeded, train/heldout).
- `build_mix(spec, output, on_error="raise")`: a YAML mix spec -> a training-ready `datasets` dir + stats.
- `load_mix(path)`: a built mix; `read_source(source)`: any source the builder reads, as canonical rows.
- `load_sft_dataset(path, workdir)` and `load_prompts(...)`: what the SFT and GRPO recipes call; `tokenized_rows`:
  the rows `posttrain model mtp-acceptance` measures.
- `load_preferences(path)`, `load_preference_splits(...)`: preference pairs for the reward-model recipe.
- `data_tools.preferences`: preference pairs from a policy's verified samples (`posttrain data preferences`).

Names are imported on first use, so `import data_tools.generators` stays free of datasets and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_preference_splits": "data_tools.loading",
    "load_preferences": "data_tools.loading",
    "load_prompts": "data_tools.loading",
    "load_sft_dataset": "data_tools.loading",
    "tokenized_rows": "data_tools.loading",
    "build_mix": "data_tools.mix",
    "load_mix": "data_tools.mix",
    "read_source": "data_tools.sources",
    "DecontaminateSpec": "data_tools.spec",
    "DedupeSpec": "data_tools.spec",
    "MixSpec": "data_tools.spec",
    "SourceSpec": "data_tools.spec",
    "load_spec": "data_tools.spec",
    "parse_spec": "data_tools.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data_tools' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
