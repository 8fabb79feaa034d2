"""Self-speculative decoding with the MTP drafter against plain `generate`, side by side in one run.

    python benchmarks/bench_mtp.py --model outputs/tiny/sft/final [--prompts 64] [--batch_sizes 1 16]

Same model, same prompts (builtin held-out tasks through the chat template), greedy, `posttrain.generation.generate`
with and without `speculative=True`; the two outputs are checked to be the same text. Reported per batch size:

    tokens/s          generated tokens (end token included) / wall seconds, both paths
    speed-up          plain seconds / speculative seconds
    alpha             drafts accepted / drafts made, in the speculative run (tokens per main step = 1 + alpha)
    c                 one MTP drafting call / one main-model decode forward, both as they run: mean seconds over
                      every call of one instrumented run of each path (hooks on the backbone, a timer around
                      `draft_step`; prefills left out)
    v                 one main-model forward in the speculative run (2 tokens per row, the verify step) / one in the
                      plain run, measured the same way
    c_micro, v_micro  the same ratios micro-timed on a synthetic cached batch (1 MTP slot, context 64): noisier,
                      and they leave out the drafting step's second attention slot; in the JSON
    ideal             (1 + alpha) / (1 + c), the issue's bound; `of ideal` = speed-up / ideal

On a GPU at small batch v is ~1 (the verify step is as cheap as a decode step); on a CPU it is not, and v > 1 is
paid on every step, so the measured speed-up stays below (1 + alpha) / (1 + c): (1 + alpha) / (v + c) is the
CPU-honest bound, reported too. Threads are pinned (`--threads`, default 1) so the figures are stable on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from posttrain.touchpoints import CACHE_KWARG


def _time(fn, reps: int, chunks: int = 5) -> float:
    """Seconds per call: the fastest of `chunks` timed chunks (interference on a shared machine only adds)."""
    fn()
    n = max(1, reps // chunks)
    best = float("inf")
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


@torch.inference_mode()
def step_costs(model, batch: int, context: int = 64, reps: int = 30) -> dict[str, float]:
    """Seconds of one cached main decode step (1 and 2 tokens per row) and one cached MTP step, batch `batch`."""
    from transformers.cache_utils import DynamicCache

    from posttrain.model.mtp import mtp_layers
    from posttrain.model.speculative import draft_step, main_pass

    ids = torch.randint(10, model.config.vocab_size, (batch, context + 1))
    attn = torch.ones(batch, context + 2, dtype=torch.long)
    cache, mtp_cache = DynamicCache(config=model.config), DynamicCache()
    pos = torch.arange(context + 1).expand(batch, -1)
    main = main_pass(model, input_ids=ids[:, :context], attention_mask=attn[:, :context], position_ids=pos[:, :context],
                     **{CACHE_KWARG: cache}, use_cache=True)
    layer = mtp_layers(model)[0]
    draft_step(model, layer, main.hidden, ids[:, 1:], pos[:, :context], main.mask, main.rotary, mtp_cache)
    one = main_pass(model, input_ids=ids[:, context:], attention_mask=attn[:, : context + 1],  # the MTP slot's mask
                    position_ids=pos[:, context:], **{CACHE_KWARG: cache}, use_cache=True)
    cache.crop(-1)

    def main_step(n):
        def run():
            model.model(input_ids=ids[:, :n], attention_mask=attn[:, : context + n],
                        position_ids=pos[:, :n] + context, **{CACHE_KWARG: cache}, use_cache=True)
            model.lm_head(torch.zeros(batch, n, model.config.hidden_size))
            cache.crop(-n)
        return run

    def mtp_step():
        draft_step(model, layer, one.hidden, ids[:, :1], pos[:, context:], one.mask, one.rotary, mtp_cache)
        mtp_cache.crop(-1)

    return {"main_1": _time(main_step(1), reps), "main_2": _time(main_step(2), reps), "mtp_1": _time(mtp_step, reps)}


def run_costs(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> dict[str, float]:
    """Mean seconds of a main-model decode step (backbone + LM head) in plain decoding (`main_1`), of the verify
    step in speculative decoding (`main_2`) and of an MTP drafting call (`mtp`, its block and head), from one
    instrumented run of each path; prefills are left out."""
    import posttrain.model.speculative as speculative
    from posttrain.generation import generate

    calls: dict[str, list[float]] = {}
    started: list[float] = []
    width = [0]  # query tokens per row of the latest backbone forward: 1 or 2 in a decode step, more in a prefill
    drafting_now = [False]  # the LM head also runs inside the MTP call; count it there only

    def before(module, args, kwargs):
        started.append(time.perf_counter())

    def after(name):
        def hook(module, args, kwargs, output):
            elapsed = time.perf_counter() - started.pop()
            if module is model.model:
                width[0] = (kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape[1]
            if width[0] <= 2 and not drafting_now[0]:  # the head after a prefill counts as prefill too
                calls.setdefault(f"{name}_{width[0]}", []).append(elapsed)
        return hook

    drafting = speculative.draft_step

    def timed_mtp(model, layer, hidden, *args, **kwargs):
        start, drafting_now[0] = time.perf_counter(), True
        try:
            return drafting(model, layer, hidden, *args, **kwargs)
        finally:
            drafting_now[0] = False
            if hidden.shape[1] <= 2:
                calls.setdefault("mtp", []).append(time.perf_counter() - start)

    handles = [module.register_forward_pre_hook(before, with_kwargs=True) for module in (model.model, model.lm_head)]
    handles += [model.model.register_forward_hook(after("backbone"), with_kwargs=True),
                model.lm_head.register_forward_hook(after("head"), with_kwargs=True)]
    speculative.draft_step = timed_mtp
    try:
        generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc="plain")
        generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc="spec",
                 speculative=True)
    finally:
        speculative.draft_step = drafting
        for handle in handles:
            handle.remove()
    mean = {name: sum(times) / len(times) for name, times in calls.items()}
    costs = {"mtp": mean["mtp"]}
    for tokens in (1, 2):  # query tokens per row: plain decode step, verify step
        if f"backbone_{tokens}" in mean:
            costs[f"main_{tokens}"] = mean[f"backbone_{tokens}"] + mean.get(f"head_{tokens}", 0.0)
    return costs


def run(model_dir: str, num_prompts: int, batch_sizes: list[int], max_new_tokens: int, tasks: list[str],
        repeats: int = 3) -> dict:
    from data_tools.generators import generate as builtin_rows
    from posttrain.generation import encode_prompts, generate, load_checkpoint
    from posttrain.model.speculative import SpeculativeStats

    model, tokenizer = load_checkpoint(model_dir, device="cpu")
    per_task = max(1, num_prompts // len(tasks))
    prompts = encode_prompts(tokenizer, [r["prompt"] for t in tasks for r in builtin_rows(t, per_task, split="heldout")])
    results = []
    for bs in batch_sizes:
        plain_s = spec_s = float("inf")
        for _ in range(repeats):  # alternate the two paths; the fastest of each (a shared machine only slows down)
            start = time.perf_counter()
            ref = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=bs, desc="plain")
            plain_s = min(plain_s, time.perf_counter() - start)
            stats = SpeculativeStats()
            start = time.perf_counter()
            spec = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=bs, desc="spec",
                            speculative=True, stats=stats)
            spec_s = min(spec_s, time.perf_counter() - start)
        tokens = sum(c[0].num_tokens for c in ref)
        same = sum(a[0].text == b[0].text for a, b in zip(ref, spec, strict=True))
        costs, micro = run_costs(model, tokenizer, prompts, bs, max_new_tokens), step_costs(model, bs)
        alpha = stats.acceptance
        c = costs["mtp"] / costs["main_1"]
        v = costs.get("main_2", costs["main_1"]) / costs["main_1"]
        ideal = (1 + alpha) / (1 + c)
        speedup = plain_s / spec_s
        results.append({
            "batch_size": bs, "prompts": len(prompts), "tokens": tokens, "identical_outputs": same,
            "plain_tokens_per_s": tokens / plain_s, "spec_tokens_per_s": tokens / spec_s, "speedup": speedup,
            "alpha": alpha, "c": c, "v": v, "ideal": ideal, "of_ideal": speedup / ideal,
            "cpu_bound": (1 + alpha) / (v + c), "of_cpu_bound": speedup / ((1 + alpha) / (v + c)),
            "c_micro": micro["mtp_1"] / micro["main_1"], "v_micro": micro["main_2"] / micro["main_1"],
            "step_seconds": costs, "micro_step_seconds": micro,
        })
    return {"model": model_dir, "max_new_tokens": max_new_tokens, "tasks": tasks, "repeats": repeats,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(), "results": results}


def table(report: dict) -> str:
    header = ("| batch | plain tok/s | spec tok/s | speed-up | alpha | c | v | ideal (1+a)/(1+c) | of ideal | "
              "(1+a)/(v+c) | c, v micro | identical |")
    lines = [header, "|---" * 12 + "|"]
    for r in report["results"]:
        lines.append(
            f"| {r['batch_size']} | {r['plain_tokens_per_s']:.1f} | {r['spec_tokens_per_s']:.1f} | {r['speedup']:.2f}x "
            f"| {r['alpha']:.3f} | {r['c']:.3f} | {r['v']:.2f} | {r['ideal']:.2f}x | {100 * r['of_ideal']:.0f}% "
            f"| {r['cpu_bound']:.2f}x | {r['c_micro']:.3f}, {r['v_micro']:.2f} | {r['identical_outputs']}/{r['prompts']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint dir with an MTP module (e.g. a tiny SFT final)")
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts in all (default 64)")
    parser.add_argument("--tasks", nargs="+", default=["arithmetic", "word_problems"], help="builtin tasks")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16], help="generation batch sizes")
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed runs per path; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a shared CPU)")
    parser.add_argument("--output", default="outputs/bench_mtp.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = run(args.model, args.prompts, args.batch_sizes, args.max_new_tokens, args.tasks, args.repeats)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
