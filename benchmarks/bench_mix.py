"""Benchmark: build a mix of N rows with `data_tools` against TRL's `SFTTrainer` tokenizing the same rows itself.

    python benchmarks/bench_mix.py --rows 1500000 --baseline-rows 150000 --num_proc 2

Input: JSONL files in the OpenAI `messages` layout, written once from the builtin generators (arithmetic, word
problems, text tasks; not timed). Each measured phase runs in its own process, its peak RSS sampled over the
whole process tree (workers included) and read from `getrusage`:

- `build`: `build_mix` on all N rows (read, validate, exact + near dedupe, decontamination against builtin
  held-out sets, tokenize with assistant masks, sample, shuffle, save) with `--num_proc` workers.
- `build-subset`: the same on the first `--baseline-rows` rows of every file.
- `trl`: `SFTTrainer(...)` given those same subset rows as a raw `messages` dataset, `assistant_only_loss=True`
  (so it computes the same masks), its default `dataset_num_proc` (one process), and again with `--num_proc`;
  the constructor's fixed cost (measured on 64 rows) is subtracted, leaving its dataset preparation.
- `trl-pretokenized`: `SFTTrainer(...)` given our mix of the subset: what is left of its preparation.

Ratios compare rows/s on identical rows. The baseline runs on the subset because at its speed the full N would
take most of the time budget; the script also prints the linear extrapolation to N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import Pool
from pathlib import Path

# Rows per generator task (shares of --rows); knobs widened so every task has enough distinct problems.
TASK_SHARES = {"arithmetic": (0.6, {"max_digits": 4, "mul_max_digits": [3, 2]}),
               "word_problems": (0.2, {"max_number": 80}),
               "text_tasks": (0.2, {"max_length": 9})}


@dataclass
class BenchArgs:
    """Benchmark options."""

    rows: int = field(default=1_500_000, metadata={"help": "Rows of the full build."})
    baseline_rows: int = field(default=150_000, metadata={"help": "Rows of the like-for-like subset."})
    num_proc: int = field(default=2, metadata={"help": "Worker processes."})
    workdir: str = field(default="outputs/bench_mix", metadata={"help": "Input files, outputs and results."})


class PeakRss:
    """Peak resident memory of this process and all its descendants, sampled every 0.2 s."""

    def __init__(self) -> None:
        import psutil

        self._root, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self._root, *self._root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass  # a worker that just exited
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _write_task(job: tuple[str, int, dict, str]) -> str:
    from data_tools.generators import iter_rows

    task, n, options, path = job
    with open(path, "w") as f:
        for row in iter_rows(task, n, seed=0, **options):
            f.write(json.dumps({"id": row["id"], "messages": row["messages"], "solution": row["solution"]}) + "\n")
    return path


def write_inputs(folder: Path, rows: int, num_proc: int) -> list[Path]:
    """The benchmark's JSONL files for `rows` rows (a smaller `rows` gives a prefix of each file)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(task, int(rows * share), options, str(folder / f"{task}.jsonl"))
            for task, (share, options) in TASK_SHARES.items()]
    if all(Path(job[3]).is_file() for job in jobs):
        return [Path(job[3]) for job in jobs]
    with Pool(num_proc) as pool:
        return [Path(p) for p in pool.map(_write_task, jobs)]


def spec_for(files: list[Path], num_proc: int) -> dict:
    """The benchmark's mix spec: every file, all rows, decontaminated against the builtin held-out splits."""
    return {
        "seed": 0, "num_proc": num_proc, "max_tokens": 512,
        "sources": [{"path": str(p), "domain": p.stem, "name": p.stem} for p in files],
        "decontaminate": {"against": [{"builtin": t, "split": "heldout", "rows": 500} for t in TASK_SHARES]},
    }


def phase_build(files: list[Path], output: Path, num_proc: int) -> dict:
    from data_tools import build_mix, parse_spec

    stats = build_mix(parse_spec(spec_for(files, num_proc)), output, overwrite=True)
    return {"rows_in": stats["rows_read"], "rows_out": stats["rows"], "dropped": stats["dropped"]}


def _trainer_seconds(dataset, num_proc: int | None, workdir: str, assistant_only_loss: bool = True) -> float:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from posttrain.model.presets import PRESETS
    from posttrain.tokenizer import build_tokenizer

    model = DeepseekV3ForCausalLM(DeepseekV3Config(**PRESETS["tiny"]))
    args = SFTConfig(output_dir=workdir, assistant_only_loss=assistant_only_loss, dataset_num_proc=num_proc, report_to=[],
                     use_cpu=True, bf16=False, max_length=1024)
    start = time.perf_counter()
    SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=build_tokenizer())
    return time.perf_counter() - start


def phase_trl(files: list[Path], num_proc: int | None, workdir: str) -> dict:
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=[str(p) for p in files], split="train", cache_dir=workdir)
    dataset = dataset.select_columns(["messages"])
    fixed = _trainer_seconds(dataset.select(range(64)), num_proc, workdir)
    total = _trainer_seconds(dataset, num_proc, workdir)
    return {"rows_in": dataset.num_rows, "constructor_fixed_seconds": round(fixed, 2),
            "seconds_override": round(total - fixed, 2)}


def phase_trl_pretokenized(mix_dir: Path, workdir: str) -> dict:
    from data_tools import load_mix

    mix = load_mix(mix_dir).select_columns(["input_ids", "assistant_masks"])
    # TRL refuses assistant_only_loss on a tokenized dataset; it applies the `assistant_masks` column regardless.
    fixed = _trainer_seconds(mix.select(range(64)), None, workdir, assistant_only_loss=False)
    total = _trainer_seconds(mix, None, workdir, assistant_only_loss=False)
    return {"rows_in": mix.num_rows, "seconds_override": round(total - fixed, 2)}


def run_phase(argv: list[str]) -> dict:
    """Run one phase (`--phase NAME ...`) here, measured."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", required=True)
    parser.add_argument("--files", nargs="+", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--num_proc", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as rss:
        start = time.perf_counter()
        if args.phase == "build":
            result = phase_build(args.files, args.output, args.num_proc)
        elif args.phase == "trl":
            result = phase_trl(args.files, args.num_proc, tmp)
        else:
            result = phase_trl_pretokenized(args.output, tmp)
        seconds = result.pop("seconds_override", None) or time.perf_counter() - start
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    kib, kib_children = own.ru_maxrss, children.ru_maxrss
    # CPU seconds of the whole tree: on a shared machine they move far less than wall-clock seconds do.
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return {**result, "seconds": round(seconds, 1), "rows_per_second": round(result["rows_in"] / seconds),
            "cpu_seconds_whole_phase": round(cpu, 1),
            "peak_rss_tree_gib": round(rss.peak / 2**30, 2), "peak_rss_main_gib": round(kib / 2**20, 2),
            "peak_rss_largest_child_gib": round(kib_children / 2**20, 2)}


def measured(phase: str, **kwargs: object) -> dict:
    """Run a phase in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, "--phase", phase]
    for key, value in kwargs.items():
        if value is None:
            continue
        cmd += [f"--{key.replace('_', '-')}", *([str(v) for v in value] if isinstance(value, list) else [str(value)])]
    print("$", " ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    """Prepare inputs, run every phase, print and save the results."""
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BenchArgs).parse_args_into_dataclasses()
    work = Path(args.workdir)
    start = time.perf_counter()
    full = write_inputs(work / f"input-{args.rows}", args.rows, args.num_proc)
    subset = write_inputs(work / f"input-{args.baseline_rows}", args.baseline_rows, args.num_proc)
    print(f"inputs ready in {time.perf_counter() - start:.0f} s", flush=True)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "command": "python benchmarks/bench_mix.py " + " ".join(sys.argv[1:]),
        "build_subset": measured("build", files=subset, output=work / "mix-subset", num_proc=args.num_proc),
        "trl_subset_default": measured("trl", files=subset),
        f"trl_subset_num_proc_{args.num_proc}": measured("trl", files=subset, num_proc=args.num_proc),
        "trl_on_our_mix_subset": measured("trl-pretokenized", output=work / "mix-subset"),
        "build_full": measured("build", files=full, output=work / "mix-full", num_proc=args.num_proc),
    }
    ours = results["build_subset"]["rows_per_second"]
    for key in ("trl_subset_default", f"trl_subset_num_proc_{args.num_proc}"):
        trl = results[key]
        results[f"ratio_vs_{key}"] = round(ours / trl["rows_per_second"], 2)
        results[f"{key}_extrapolated_full_seconds"] = round(args.rows / trl["rows_per_second"])
    both = results["build_subset"]["seconds"] + results["trl_on_our_mix_subset"]["seconds"]
    results["ratio_vs_trl_subset_default_including_trl_on_our_mix"] = round(
        results["trl_subset_default"]["seconds"] / both, 2)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if "--phase" in sys.argv:
        print(json.dumps(run_phase(sys.argv[1:])))
    else:
        main()
