"""The distillation config: prompts, teacher, sampling, verification, selection; YAML in, validated dataclasses out.

A config file is either a distillation config itself or a recipe config (`recipes/distill.py`) whose
`generation:` mapping is one. Every mistake names the option and what would be right; `load_distill_config` takes
`key.sub=value` overrides (values parsed as YAML) the way the command line gives them.

>>> cfg = parse_config({"output_dir": "out", "prompts": [{"builtin": "arithmetic", "rows": 4}],
...                     "teacher": {"model": "ckpt"}, "sampling": {"n": 4, "temperature": 0.8}})
>>> cfg.teacher.backend, cfg.sampling.n, cfg.selection.policy
('hf', 4, 'shortest')
>>> parse_config({"output_dir": "out", "prompts": [], "teacher": {"model": "m"}})
Traceback (most recent call last):
...
posttrain.errors.UserError: distill config: prompts: expected a non-empty list of sources (mix-spec source mappings such as {builtin: arithmetic, rows: 200} or {path: data.jsonl, domain: math})
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.config_files import apply_overrides, from_mapping, read_yaml
from posttrain.errors import UserError

TEACHER_BACKENDS = ("hf", "openai", "vllm")
POLICIES = ("shortest", "all", "majority")
SFT_PROMPTS = ("teacher", "original")

# R1-style instruction: reason inside <think> </think>, then answer. Our own wording.
R1_SYSTEM_PROMPT = (
    "You are a careful assistant. First think the problem through step by step inside <think> </think> tags, "
    "then write the final answer after </think>. Put a final numeric or symbolic answer in \\boxed{}; give code "
    "in one ```python block."
)


@dataclass
class TeacherConfig:
    """Which model writes the traces, and how it is reached."""

    backend: str = field(default="hf", metadata={"help": f"One of {TEACHER_BACKENDS}."})
    model: str | None = field(
        default=None,
        metadata={"help": "hf/vllm: checkpoint dir. openai: the request's `model` (for `transformers serve`, the "
                  "served path)."},
    )
    base_url: str | None = field(
        default=None, metadata={"help": "openai: the endpoint up to /v1, e.g. http://127.0.0.1:8000/v1."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "openai: environment variable holding the API key (optional)."}
    )
    max_concurrency: int = field(default=8, metadata={"help": "openai: requests in flight at once."})
    max_retries: int = field(
        default=5, metadata={"help": "openai: retries after 408/409/429/5xx, timeouts and refused connections (the "
                             "openai client's, 0.5 s doubling to 8 s, or the server's Retry-After)."}
    )
    request_timeout: float = field(default=600.0, metadata={"help": "openai: seconds per request."})
    device: str = field(default="auto", metadata={"help": "hf: auto, cpu or cuda[:N]."})
    batch_size: int = field(default=16, metadata={"help": "hf: prompts per generate call (each with n samples)."})
    speculative: bool = field(
        default=False,
        metadata={"help": "hf: decode with the teacher's own MTP module as drafter (same samples' distribution, "
                  "fewer main-model steps; posttrain.model.speculative)."},
    )
    vllm_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "vllm: extra `vllm.LLM` arguments."})

    def __post_init__(self) -> None:
        if self.backend not in TEACHER_BACKENDS:
            raise UserError(f"backend: {self.backend!r} is not one of {list(TEACHER_BACKENDS)}")
        if not self.model:
            raise UserError("model: required (a checkpoint dir for hf/vllm, the served model name for openai)")
        if self.backend == "openai" and not self.base_url:
            raise UserError("base_url: required for backend openai, e.g. http://127.0.0.1:8000/v1")
        for name in ("max_concurrency", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: expected a whole number >= 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.request_timeout <= 0:
            raise UserError("max_retries must be >= 0, request_timeout > 0")


@dataclass
class SamplingConfig:
    """How each prompt is sampled: `n` samples with these parameters."""

    n: int = field(default=4, metadata={"help": "Samples per prompt."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy, then n must be 1)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Longest completion in tokens."})
    seed: int = field(default=0, metadata={"help": "Base seed; each generation round derives its own from it."})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"n: expected a whole number >= 1, got {self.n}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.temperature == 0 and self.n > 1:
            raise UserError(f"n={self.n} needs temperature > 0 (e.g. 0.8): greedy decoding gives one sample")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: expected >= 1, got {self.max_new_tokens}")


@dataclass
class VerifyConfig:
    """Verification through the `rewards` package: a sample is verified when every verifier that applies to its row
    (scores it, not None) gives at least `min_score`, and at least one applies."""

    rewards: list[Any] = field(
        default_factory=lambda: ["math", "code"],
        metadata={"help": "Reward specs for `rewards.get_reward`: names, module:function, file.py:function, plugins "
                  "or {name: ..., **params}."},
    )
    min_score: float = field(default=1.0, metadata={"help": "Score a verifier must give (1.0: all tests pass)."})

    def __post_init__(self) -> None:
        if not self.rewards:
            raise UserError("rewards: expected at least one verifier, e.g. [math, code]")


@dataclass
class SelectionConfig:
    """Rejection sampling over the verified samples of each prompt, after the readability filters."""

    policy: str = field(default="shortest", metadata={"help": f"One of {POLICIES}: the shortest correct sample, "
                                                               "all correct ones up to k, or the most frequent "
                                                               "correct completion (ties: lowest sample index)."})
    k: int = field(default=4, metadata={"help": "policy all: most samples kept per prompt."})
    dedupe: bool = field(default=True, metadata={"help": "Keep one of identical completions of a prompt."})
    max_tokens: int | None = field(default=None, metadata={"help": "Length cap (completion tokens); null: none."})
    drop_truncated: bool = field(default=True, metadata={"help": "Drop samples cut at max_new_tokens."})
    require_think: bool = field(default=True, metadata={"help": "Need exactly one balanced <think>...</think> first."})
    think_in_prompt: bool = field(
        default=False, metadata={"help": "The teacher's chat template opens <think> itself: completions hold only "
                                         "</think>; the opening tag is put back."}
    )
    max_foreign_script: float = field(
        default=0.05, metadata={"help": "Language mixing: most share of letters outside the prompt's script."}
    )
    sft_prompt: str = field(
        default="teacher", metadata={"help": f"One of {SFT_PROMPTS}: SFT rows keep the teacher's conversation "
                                             "(system prompt, template) or the source's own prompt."}
    )
    sft_system_prompt: str | None = field(
        default=None, metadata={"help": "System turn of the kept traces' SFT rows (replacing the teacher's, if any): "
                                        "DeepSeek-V3's <system prompt, problem, R1 response> rows, the system prompt "
                                        "asking for the reasoner's style, when the teacher samples without one."}
    )
    original_responses: bool = field(
        default=False, metadata={"help": "Also write each prompt's own response from its source as an SFT row "
                                         "(DeepSeek-V3's <problem, original response> beside <system prompt, "
                                         "problem, teacher response>); prompts without one get none."}
    )

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"policy: {self.policy!r} is not one of {list(POLICIES)}")
        if self.sft_prompt not in SFT_PROMPTS:
            raise UserError(f"sft_prompt: {self.sft_prompt!r} is not one of {list(SFT_PROMPTS)}")
        if self.k < 1:
            raise UserError(f"k: expected >= 1, got {self.k}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"max_tokens: expected >= 1 or null, got {self.max_tokens}")
        if not 0 <= self.max_foreign_script <= 1:
            raise UserError(f"max_foreign_script: expected a fraction in [0, 1], got {self.max_foreign_script}")


@dataclass
class DistillConfig:
    """A whole distillation run."""

    output_dir: str = field(metadata={"help": "Where samples/, selected.jsonl, stats and the COMPLETE marker go."})
    prompts: list[dict[str, Any]] = field(
        metadata={"help": "Sources in the mix spec's format (builtin/path/hub, rows, split, fields, ...)."}
    )
    teacher: TeacherConfig = field(metadata={"help": "The teacher model and backend."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "Sampling parameters."})
    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"help": "Verifiers."})
    selection: SelectionConfig = field(default_factory=SelectionConfig, metadata={"help": "Rejection sampling."})
    system_prompt: str | None = field(
        default=R1_SYSTEM_PROMPT, metadata={"help": "System turn of every teacher prompt; null for none."}
    )
    prompt_template: str = field(
        default="{prompt}", metadata={"help": "The last user turn becomes this, with {prompt} replaced by it."}
    )
    chunk_size: int = field(default=64, metadata={"help": "Prompts per generate-verify-append round."})
    shard_size: int = field(default=10_000, metadata={"help": "Sample records per shard file."})

    def __post_init__(self) -> None:
        if "{prompt}" not in self.prompt_template:
            raise UserError(f"prompt_template: must contain {{prompt}}, got {self.prompt_template!r}")
        if self.chunk_size < 1 or self.shard_size < 1:
            raise UserError("chunk_size and shard_size: expected whole numbers >= 1")

    def generation_fingerprint(self) -> str:
        """Hash of everything that decides which samples are generated and how they are verified; samples on disk
        from a run with another fingerprint are not reused."""
        teacher = {k: v for k, v in dataclasses.asdict(self.teacher).items()
                   if k in ("backend", "model", "base_url", "vllm_kwargs")}
        key = {"prompts": self.prompts, "teacher": teacher, "sampling": dataclasses.asdict(self.sampling),
               "verify": dataclasses.asdict(self.verify), "system_prompt": self.system_prompt,
               "prompt_template": self.prompt_template}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what `parse_config` reads back)."""
        return dataclasses.asdict(self)


def parse_config(data: Any, where: str = "distill config") -> DistillConfig:
    """A validated `DistillConfig` from a parsed mapping; `where` (the file) prefixes every error."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, dict) for p in prompts):
        raise UserError(f"{where}: prompts: expected a non-empty list of sources (mix-spec source mappings such as "
                        "{builtin: arithmetic, rows: 200} or {path: data.jsonl, domain: math})")
    if "output_dir" not in data:
        raise UserError(f"{where}: output_dir: required (where samples and selected rows are written)")
    if "teacher" not in data:
        raise UserError(f"{where}: teacher: required, e.g. {{backend: hf, model: outputs/tiny/sft/final}}")
    for name, cls in (("teacher", TeacherConfig), ("sampling", SamplingConfig), ("verify", VerifyConfig),
                      ("selection", SelectionConfig)):
        if name in data:
            data[name] = from_mapping(cls, data[name], f"{where}: {name}")
    return from_mapping(DistillConfig, data, where)


def load_distill_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> DistillConfig:
    """Read a config YAML (a distillation config, or a recipe config with a `generation:` mapping) or a mapping,
    apply `key=value` overrides, and validate."""
    if isinstance(source, dict):
        data, where = source, "distill config"
    else:
        path = Path(source)
        data, where = read_yaml(path, "distill config"), str(path)
        if isinstance(data, dict) and isinstance(data.get("generation"), dict):
            data, where = data["generation"], f"{path}: generation"
    return parse_config(apply_overrides(data or {}, overrides or []), where)
