"""Data tools: builtin verifiable task generators and the SFT mix builder.

- `data_tools.generators`: `generate`, `iter_rows`, `prompt_dataset`, `TASKS` (offline, seeded, train/heldout).
- `build_mix(spec, output, on_error="raise")`: a YAML mix spec -> a training-ready `datasets` dir + stats.
- `load_mix(path)`: a built mix; `read_source(source)`: any source the builder reads, as canonical rows.
- `load_sft_dataset(path, workdir)` and `load_prompts(...)`: what the SFT and GRPO recipes call.
"""

from data_tools.loading import load_prompts, load_sft_dataset
from data_tools.mix import build_mix, load_mix, load_tokenizer
from data_tools.sources import read_source
from data_tools.spec import DecontaminateSpec, DedupeSpec, MixSpec, SourceSpec, load_spec, parse_spec

__all__ = [
    "DecontaminateSpec",
    "DedupeSpec",
    "MixSpec",
    "SourceSpec",
    "build_mix",
    "load_mix",
    "load_prompts",
    "load_sft_dataset",
    "load_spec",
    "load_tokenizer",
    "parse_spec",
    "read_source",
]
