"""`evaluate`: every checkpoint on every benchmark: generate, score with the rewards package, report.

Everything a user can get wrong (a missing checkpoint, an unknown benchmark, a malformed JSONL row, a k larger
than the number of samples) is checked before the first model loads.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from eval.benchmarks import Benchmark, load_benchmark
from posttrain.errors import MissingFileError, UserError
from posttrain.generation import check_sampling, encode_prompts, generate, generate_vllm, load_checkpoint, load_vllm
from eval.report import checkpoint_step, write_report, write_results
from eval.scoring import Result, score
from posttrain.model.speculative import SpeculativeStats

EVAL_BACKENDS = ("hf", "vllm")
SAMPLED_TEMPERATURE = 0.6  # DeepSeek-R1's recommended sampling temperature, the default when num_samples > 1


def resolve_models(paths: Sequence[str | Path]) -> list[Path]:
    """Checkpoint directories to evaluate, in order; a run directory without a `config.json` of its own stands
    for its `checkpoint-<step>` subdirectories, by step.

    >>> resolve_models(["/no/such/ckpt"])
    Traceback (most recent call last):
    ...
    posttrain.errors.MissingFileError: checkpoint /no/such/ckpt does not exist
    """
    resolved = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise MissingFileError(f"checkpoint {path} does not exist")
        if (path / "config.json").is_file():
            resolved.append(path)
            continue
        steps = sorted(
            (checkpoint_step(sub), sub)
            for sub in path.glob("checkpoint-*")
            if checkpoint_step(sub) is not None and (sub / "config.json").is_file()
        )
        if not steps:
            raise MissingFileError(
                f"{path} is not a checkpoint (no config.json) and holds no checkpoint-<step> directories"
            )
        resolved += [sub for _, sub in steps]
    if not resolved:
        raise UserError("no checkpoints given: pass at least one model path")
    return resolved


def evaluate(
    model_paths: Sequence[str | Path],
    benchmarks: Sequence[str | Benchmark],
    num_samples: int = 1,
    k: int | Sequence[int] = (1,),
    limit: int | None = None,
    output_dir: str | Path | None = None,
    *,
    temperature: float | None = None,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "auto",
    backend: str = "hf",
    prompt_template: str | None = None,
    chat_template: bool | None = None,
    speculative: bool = False,
) -> list[Result]:
    """Evaluate each checkpoint on each benchmark; with `output_dir`, write results.json, report.md, plot.png.

    `benchmarks` are specs for `eval.benchmarks.load_benchmark` (builtin task names, `gsm8k[:PATH]`,
    `humaneval[:PATH]`, JSONL paths), loaded with `prompt_template` and `limit`, or `Benchmark`s, used as given.
    `k` is the k (or a list of them) of pass@k and maj@k; each must be at most `num_samples`. `temperature`
    None means greedy for one sample and 0.6 for several; sampling is seeded with `seed` before each
    checkpoint x benchmark.
    `chat_template` None uses the tokenizer's chat template when it has one. `speculative` decodes with the
    checkpoint's MTP module as drafter (hf backend; same tokens when greedy); its acceptance lands in the metrics.
    `results.json` is rewritten after each checkpoint x benchmark, so a long run leaves partial results.

    Returns one `Result` per checkpoint x benchmark, checkpoint-major; e.g. held-out accuracy after a stage:
    ``evaluate(["runs/grpo"], ["gsm8k:test.jsonl"], limit=200)[0].metrics["pass@1"]``.
    """
    if speculative and backend != "hf":
        raise UserError("speculative decoding runs on the hf backend; vLLM has its own (--speculative-config)")
    if backend not in EVAL_BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use one of {list(EVAL_BACKENDS)}")
    if temperature is None:
        temperature = 0.0 if num_samples == 1 else SAMPLED_TEMPERATURE
    check_sampling(num_samples, temperature)
    ks = sorted({k} if isinstance(k, int) else set(k))
    if not ks or ks[0] < 1 or ks[-1] > num_samples:
        raise UserError(f"every k must be in 1..num_samples ({num_samples}), got {list(k)}: raise --num_samples")
    models = resolve_models(model_paths)
    benches = [b if isinstance(b, Benchmark) else load_benchmark(b, prompt_template, limit) for b in benchmarks]
    if not benches:
        raise UserError("no benchmarks given")
    out = Path(output_dir) if output_dir is not None else None
    config: dict[str, Any] = dict(
        num_samples=num_samples, k=ks, limit=limit, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, seed=seed, backend=backend, prompt_template=prompt_template,
    )
    sampling = dict(
        num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )

    results: list[Result] = []
    for path in models:
        if backend == "hf":
            engine, tokenizer = load_checkpoint(path, device)
        else:
            engine, tokenizer = load_vllm(path, seed), AutoTokenizer.from_pretrained(path)
        for bench in benches:
            prompts = encode_prompts(tokenizer, [row["prompt"] for row in bench.rows], chat_template)
            if backend == "hf":
                desc = f"{path.name} {bench.name}"
                stats = SpeculativeStats() if speculative else None
                completions = generate(engine, tokenizer, prompts, batch_size=batch_size, desc=desc,
                                       speculative=speculative, stats=stats, **sampling)
            else:
                stats, completions = None, generate_vllm(engine, prompts, **sampling)
            result = score(bench, completions, ks, model=str(path), step=checkpoint_step(path))
            if stats is not None:
                result.metrics["mtp_acceptance"] = stats.acceptance
            results.append(result)
            if out is not None:
                write_results(results, config, out)
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if out is not None:
        write_report(results, config, out)
    return results
