"""Preference pairs from a policy's own verified samples: sample each prompt n times, verify with `rewards`, pair a
correct sample with an incorrect one of the same prompt.

Sampling and verification are distillation's (`data_tools.distill`): the same prompt sources, backends, append-only
sample shards keyed by (prompt id, sample index) and generation fingerprint, so a killed run resumes where its
samples stop and a finished one returns at once. Layout of `output_dir`:

- `run.json`, `prompts.jsonl`, `samples/`: as in distillation (see `data_tools.distill.run`).
- `train.jsonl`, `heldout.jsonl`: pairs in TRL's explicit-prompt conversational preference layout (`prompt`,
  `chosen`, `rejected` as message lists) with `id`, `domain`, `source`, `solution` and `provenance`; held-out
  pairs come from held-out prompts (a prompt's pairs are all on one side).
- `stats.json` / `stats.md`: samples, accuracy, prompts all right / all wrong / paired, pairs per split.
- `COMPLETE`: written last.

Pairing, per prompt: the distinct non-empty correct texts C and incorrect texts I (a verifier applied and
failed; failed requests and samples no verifier applies to are neither), in sample order; pair i is
(C[i mod |C|], I[i mod |I|]) for i < min(max(|C|, |I|), pairs_per_prompt): every sample is used before any pair
repeats a side, and no two pairs are equal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.distill.config import DistillConfig, SamplingConfig, TeacherConfig, VerifyConfig, apply_overrides
from data_tools.distill.run import COMPLETE, generate_samples, prepare_run
from data_tools.distill.select import Verifier
from data_tools.spec import from_mapping, read_yaml
from posttrain.errors import UserError
from posttrain.files import write_atomic

logger = logging.getLogger(__name__)

TRAIN_FILE, HELDOUT_FILE = "train.jsonl", "heldout.jsonl"


@dataclass
class PreferenceConfig:
    """A preference-data run: prompts, the policy that samples them, sampling, verification, pairing, split."""

    output_dir: str = field(metadata={"help": "Where samples/, train.jsonl, heldout.jsonl, stats and COMPLETE go."})
    prompts: list[dict[str, Any]] = field(
        metadata={"help": "Prompt sources in the mix spec's format (builtin/path/hub, rows, split, ...), with the "
                  "verifiers' columns (e.g. `solution`): any prompt set the GRPO recipe reads."}
    )
    policy: TeacherConfig = field(metadata={"help": "The policy sampled (distillation's teacher options)."})
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=8), metadata={"help": "Sampling."})
    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"help": "Verifiers (rewards specs)."})
    system_prompt: str | None = field(default=None, metadata={"help": "System turn of every prompt; null: none."})
    prompt_template: str = field(default="{prompt}", metadata={"help": "The last user turn, {prompt} replaced."})
    pairs_per_prompt: int = field(default=4, metadata={"help": "Most pairs kept per prompt."})
    heldout: float = field(default=0.1, metadata={"help": "Share of prompts whose pairs are held out."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the prompt-level train / held-out split."})
    chunk_size: int = field(default=64, metadata={"help": "Prompts per generate-verify-append round."})
    shard_size: int = field(default=10_000, metadata={"help": "Sample records per shard file."})

    def __post_init__(self) -> None:
        if self.pairs_per_prompt < 1:
            raise UserError(f"pairs_per_prompt: expected a whole number >= 1, got {self.pairs_per_prompt}")
        if not 0 <= self.heldout < 1:
            raise UserError(f"heldout: expected a share in [0, 1), got {self.heldout}")
        if self.sampling.n < 2:
            raise UserError(f"sampling.n: pairs need at least 2 samples per prompt, got {self.sampling.n}")

    def generation(self) -> DistillConfig:
        """The sampling part as a distillation config: what the shared sample store and fingerprint read."""
        return DistillConfig(output_dir=self.output_dir, prompts=self.prompts, teacher=self.policy,
                             sampling=self.sampling, verify=self.verify, system_prompt=self.system_prompt,
                             prompt_template=self.prompt_template, chunk_size=self.chunk_size,
                             shard_size=self.shard_size)

    def pairing_fingerprint(self) -> str:
        """Hash of the options that decide the pairs and the split (not the samples)."""
        key = [self.pairs_per_prompt, self.heldout, self.split_seed]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def load_preference_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> PreferenceConfig:
    """A validated `PreferenceConfig` from a YAML file or a mapping, with `a.b=value` overrides.

    >>> cfg = load_preference_config({"output_dir": "o", "prompts": [{"builtin": "arithmetic", "rows": 4}],
    ...                               "policy": {"model": "ckpt"}}, ["sampling.n=4"])
    >>> cfg.sampling.n, cfg.verify.rewards, cfg.heldout
    (4, ['math', 'code'], 0.1)
    """
    if isinstance(source, dict):
        data, where = source, "preference config"
    else:
        data, where = read_yaml(Path(source), "preference config"), str(source)
    data = apply_overrides(data or {}, overrides or [])
    if not isinstance(data.get("prompts"), list) or not data["prompts"]:
        raise UserError(f"{where}: prompts: expected a non-empty list of sources, e.g. "
                        "[{builtin: arithmetic, rows: 500}] or [{path: prompts.jsonl, domain: math}]")
    for name in ("output_dir", "policy"):
        if name not in data:
            raise UserError(f"{where}: {name}: required" + (", e.g. {backend: hf, model: outputs/tiny/sft/final}"
                                                            if name == "policy" else ""))
    for name, cls in (("policy", TeacherConfig), ("sampling", SamplingConfig), ("verify", VerifyConfig)):
        if name in data:
            data[name] = from_mapping(cls, data[name], f"{where}: {name}")
    return from_mapping(PreferenceConfig, data, where)


def is_heldout(prompt_id: str, share: float, seed: int) -> bool:
    """Whether a prompt's pairs are held out: a hash of (seed, prompt id), so the split survives a resume.

    >>> sum(is_heldout(f"p{i}", 0.25, 0) for i in range(1000))
    252
    """
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def pair_samples(correct: list[dict[str, Any]], wrong: list[dict[str, Any]], k: int) -> list[tuple[dict, dict]]:
    """Pairs (chosen, rejected) of one prompt's samples, deduplicated by text, round robin (see the module doc).

    Empty (or blank) texts are left out: a pair needs two answers, and preference readers refuse an empty side.

    >>> right, bad = [{"text": t} for t in ("4", "4", "four")], [{"text": "5"}, {"text": " "}]
    >>> [(c["text"], r["text"]) for c, r in pair_samples(right, bad, k=4)]
    [('4', '5'), ('four', '5')]
    """
    def distinct(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for sample in samples:
            if sample["text"].strip():
                seen.setdefault(sample["text"].strip(), sample)
        return list(seen.values())

    correct, wrong = distinct(correct), distinct(wrong)
    if not correct or not wrong:
        return []
    return [(correct[i % len(correct)], wrong[i % len(wrong)]) for i in range(min(max(len(correct), len(wrong)), k))]


def make_pairs(config: PreferenceConfig, prompts: list[dict[str, Any]],
               records: dict[tuple[str, int], dict[str, Any]]) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(train rows, held-out rows, stats) from the verified samples (pure: the same records give the same rows)."""
    counts: Counter = Counter()
    lengths: dict[str, list[int]] = {"chosen": [], "rejected": []}
    splits: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for row in prompts:
        correct, wrong = [], []
        for j in range(config.sampling.n):
            record = records.get((row["id"], j))
            if record is None:
                continue
            counts["samples"] += 1
            if record.get("error"):
                counts["errors"] += 1
            elif record["verified"]:
                correct.append(record)
            elif any(s is not None for s in record["scores"].values()):
                wrong.append(record)
            else:
                counts["unscored"] += 1
        counts["correct"] += len(correct)
        counts["incorrect"] += len(wrong)
        counts["prompts_all_correct"] += bool(correct) and not wrong
        counts["prompts_all_wrong"] += bool(wrong) and not correct
        pairs = pair_samples(correct, wrong, config.pairs_per_prompt)
        counts["prompts_paired"] += bool(pairs)
        heldout = is_heldout(row["id"], config.heldout, config.split_seed)
        for number, (chosen, rejected) in enumerate(pairs):
            for side, record in (("chosen", chosen), ("rejected", rejected)):
                if record.get("num_tokens") is not None:
                    lengths[side].append(record["num_tokens"])
            splits[heldout].append({
                "id": f"{row['id']}#{number}", "domain": row["domain"], "source": row["source"],
                "prompt": row["teacher_messages"],
                "chosen": [{"role": "assistant", "content": chosen["text"]}],
                "rejected": [{"role": "assistant", "content": rejected["text"]}],
                "solution": row["solution"],
                "provenance": {"prompt_id": row["id"], "chosen_index": chosen["sample_index"],
                               "rejected_index": rejected["sample_index"], "chosen_scores": chosen["scores"],
                               "rejected_scores": rejected["scores"], "policy": config.policy.model},
            })
    scored = counts["correct"] + counts["incorrect"]
    stats = {
        "prompts": len(prompts), **{k: counts[k] for k in ("samples", "errors", "unscored", "correct", "incorrect",
                                                           "prompts_all_correct", "prompts_all_wrong",
                                                           "prompts_paired")},
        "accuracy": round(counts["correct"] / scored, 4) if scored else 0.0,
        "pairs": {"train": len(splits[False]), "heldout": len(splits[True])},
        "mean_tokens": {side: round(statistics.fmean(v), 1) if v else None for side, v in lengths.items()},
        "policy": config.policy.model, "sampling": dataclasses.asdict(config.sampling),
        "verifiers": config.verify.rewards, "pairs_per_prompt": config.pairs_per_prompt, "heldout": config.heldout,
    }
    return splits[False], splits[True], stats


def stats_markdown(stats: dict[str, Any]) -> str:
    """A human summary of `stats.json`."""
    return "\n".join([
        f"# Preference pairs: {stats['policy']}", "",
        f"{stats['prompts']} prompts x {stats['sampling']['n']} samples: {stats['samples']} samples, "
        f"{stats['correct']} correct, {stats['incorrect']} incorrect (accuracy {stats['accuracy']:.1%}), "
        f"{stats['unscored']} unscored, {stats['errors']} failed requests.", "",
        f"Prompts: {stats['prompts_paired']} paired, {stats['prompts_all_correct']} all correct, "
        f"{stats['prompts_all_wrong']} all wrong.", "",
        f"Pairs: {stats['pairs']['train']} train, {stats['pairs']['heldout']} held out "
        f"(held-out share of prompts {stats['heldout']}); mean tokens chosen {stats['mean_tokens']['chosen']}, "
        f"rejected {stats['mean_tokens']['rejected']}.", "",
    ])


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run_preferences(config: PreferenceConfig, backend: Any = None) -> dict[str, Any]:
    """Sample, verify and pair (resumable; returns at once when complete); returns the stats.

    `backend` replaces the configured policy (tests use a scripted one); it is not closed here.
    """
    out = Path(config.output_dir)
    generation = config.generation()
    marker = {"fingerprint": generation.generation_fingerprint(), "pairing": config.pairing_fingerprint()}
    if (out / COMPLETE).is_file():
        done = json.loads((out / COMPLETE).read_text())
        if {k: done.get(k) for k in marker} == marker and not done.get("errors"):
            return json.loads((out / "stats.json").read_text())
    prompts = prepare_run(generation, out)
    verifier = Verifier(config.verify)
    verifier.check(["prompt", "solution", "tests", "entry_point", "id", "domain", "source"])
    records = generate_samples(generation, prompts, verifier, backend, section="policy")
    train, heldout, stats = make_pairs(config, prompts, records)
    (out / COMPLETE).unlink(missing_ok=True)
    write_atomic(out / TRAIN_FILE, _jsonl(train))
    write_atomic(out / HELDOUT_FILE, _jsonl(heldout))
    write_atomic(out / "stats.json", json.dumps(stats, indent=2))
    write_atomic(out / "stats.md", stats_markdown(stats))
    write_atomic(out / COMPLETE, json.dumps({**marker, "errors": stats["errors"], "pairs": stats["pairs"]}))
    logger.info("preferences: %d pairs (%d held out) from %d samples, accuracy %.1f%%", len(train) + len(heldout),
                len(heldout), stats["samples"], 100 * stats["accuracy"])
    return stats
