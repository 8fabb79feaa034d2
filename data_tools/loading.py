"""What the recipes call: a training set or a prompt set from whatever path a user gives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from data_tools.generators import prompt_dataset
from data_tools.mix import STATS_FILE, build_mix, load_mix
from data_tools.sources import read_source
from posttrain.errors import MissingFileError, UserError

_SPEC_SUFFIXES = (".yaml", ".yml")


def _read_any(path: str, require_response: bool) -> Dataset:
    """A built mix dir as is, else any source the mix builder reads (domain tag `unknown` unless rows carry one)."""
    if (Path(path) / STATS_FILE).is_file():
        return load_mix(path)
    return read_source({"path": path, "domain": "unknown"}, require_response=require_response)


def load_sft_dataset(path: str | Path, workdir: str | Path | None = None) -> Dataset:
    """SFT rows from a mix spec YAML (built into `workdir` once, rebuilt when the spec changes), a built mix dir,
    or any file or `datasets` dir the mix builder reads.

    >>> import tempfile
    >>> ds = load_sft_dataset("recipes/configs/examples/mix_sources.yaml", workdir=tempfile.mkdtemp())
    >>> {"messages", "input_ids", "solution"} <= set(ds.column_names)
    True
    """
    path = str(path)
    if not path.endswith(_SPEC_SUFFIXES):
        return _read_any(path, require_response=True)
    if workdir is None:
        raise ValueError(f"load_sft_dataset({path!r}): a mix spec needs a workdir to build the mix into")
    if not Path(path).is_file():
        raise MissingFileError(f"mix spec {path}: no such file")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    stats_path = Path(workdir) / STATS_FILE
    if stats_path.is_file() and json.loads(stats_path.read_text()).get("spec_sha256") == digest:
        return load_mix(workdir)
    build_mix(path, workdir, overwrite=True)
    return load_mix(workdir)


def split_at_answer(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """A conversation's prompt (every turn before the first assistant one, a system turn included) and that first
    answer's text (None when there is none).

    >>> split_at_answer([{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}])
    ([{'role': 'user', 'content': '2+3?'}], '5')
    """
    end = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return messages[:end], messages[end]["content"] if end < len(messages) else None


def load_prompts(
    dataset_path: str | Path | None = None, tasks: str | Sequence[str] = ("arithmetic",), n: int = 2000, seed: int = 0,
    split: str = "train", unlabeled: Sequence[str] = (), unlabeled_n: int | None = None, **options: Any,
) -> Dataset:
    """A prompt set for GRPO or eval: `prompt` (a one-message user conversation), `solution`, `tests`,
    `entry_point`, `id`, `domain`, `source`, `reference` (the worked answer, None where the rows have none). From
    `dataset_path` (a built mix dir or any source the mix builder reads; everything before the first assistant
    turn is the prompt, that turn the reference) or, when None, `n` builtin prompts per task in `tasks`, those of
    `unlabeled_n` (default `n`) per task in `unlabeled` without labels.

    >>> load_prompts(tasks=["arithmetic"], n=3).column_names[:2]
    ['prompt', 'solution']
    """
    if dataset_path is not None and unlabeled:
        raise UserError(f"unlabeled tasks {list(unlabeled)} are builtin tasks: they do not apply to {dataset_path} "
                        "(leave the labels out of the file instead)")
    if dataset_path is None:
        return prompt_dataset(tasks, n, seed=seed, split=split, unlabeled=unlabeled, unlabeled_n=unlabeled_n,
                              **options)
    rows = _read_any(str(dataset_path), require_response=False)

    def to_prompt(messages: list[dict[str, str]]) -> dict[str, Any]:
        prompt, reference = split_at_answer(messages)
        return {"prompt": prompt, "reference": reference}

    columns = ["solution", "tests", "entry_point", "id", "domain", "source"]
    rows = rows.map(to_prompt, input_columns="messages", remove_columns=[c for c in rows.column_names
                                                                           if c not in columns])
    return rows.select_columns(["prompt", *columns, "reference"])


def tokenized_rows(
    data: str, tokenizer: Any, limit: int | None = None, seed: int = 0, model: Any = None, max_new_tokens: int = 0,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Tokenized rows (`input_ids`, `assistant_masks`) from `data`, as `posttrain.model.acceptance.acceptance_on_rows`
    takes them: any dataset the mix builder reads (JSONL, Parquet, CSV, a `datasets` dir, a built mix) or
    `builtin:<task>[:split]` (default split heldout).

    With `model` and `max_new_tokens` > 0 the answers are replaced by the model's own greedy completions of the
    prompts (everything before the first assistant turn), `posttrain.generation.generate` with that many new tokens.
    """
    from posttrain.generation import own_completions
    from posttrain.model.acceptance import tokenize_conversations

    if data.startswith("builtin:"):
        _, task, *split = data.split(":")
        source = {"builtin": task, "rows": limit or 200, "split": split[0] if split else "heldout"}
    else:
        source = {"path": data, "domain": "unknown"}
        if limit:
            source["rows"] = limit
    generating = model is not None and max_new_tokens > 0
    ds = read_source(source, seed=seed, **({"require_response": False} if generating else {"tokenizer": tokenizer}))
    if limit is not None:
        ds = ds.select(range(min(limit, ds.num_rows)))
    if generating:
        prompts = [split_at_answer(m)[0] for m in ds["messages"]]
        answered = own_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   desc="greedy completions")
        return tokenize_conversations(tokenizer, answered)
    return [{"input_ids": r["input_ids"], "assistant_masks": r["assistant_masks"]}
            for r in ds.select_columns(["input_ids", "assistant_masks"])]


def load_preferences(path: str | Path) -> Dataset:
    """Preference pairs in TRL's explicit-prompt conversational layout (`prompt`, `chosen`, `rejected` as message
    lists, plus `id`, `domain`, `source`, `solution`), from any file or `datasets` dir the mix builder reads whose
    rows are in a preference layout (`chosen` / `rejected`, explicit or implicit prompt; see `data_tools.layouts`).

    >>> import json, tempfile
    >>> rows = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> _ = rows.write(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\\n"); rows.close()
    >>> pair = load_preferences(rows.name)[0]
    >>> pair["prompt"], pair["chosen"][0]["content"], pair["rejected"][0]["content"]
    ([{'role': 'user', 'content': '2+2?'}], '4', '5')
    """
    rows = _read_any(str(path), require_response=True)
    if "rejected" not in rows.column_names:
        raise UserError(f"{path}: not preference data: expected TRL's preference layout, columns `chosen` and "
                        f"`rejected` (with an explicit `prompt` or a shared conversation start); found "
                        f"{sorted(rows.column_names)}")

    def to_pair(messages: list[dict[str, str]]) -> dict[str, Any]:
        prompt, _ = split_at_answer(messages)
        return {"prompt": prompt, "chosen": messages[len(prompt):]}

    columns = ["rejected", "id", "domain", "source", "solution"]
    rows = rows.map(to_pair, input_columns="messages",
                    remove_columns=[c for c in rows.column_names if c not in columns])
    return rows.select_columns(["prompt", "chosen", *columns])


def load_preference_splits(path: str | Path, eval_path: str | Path | None = None, eval_size: int = 0,
                           seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """(train, held-out) preference pairs (`load_preferences` layout) for reward-model training.

    `path` is a `posttrain data preferences` output dir (its `train.jsonl`, and its `heldout.jsonl` as the held-out
    split unless `eval_path` is given) or any preference file or dir. Without a held-out split, `eval_size` pairs are
    drawn from the training ones (seeded); 0 gives none.
    """
    from data_tools.preferences import HELDOUT_FILE, TRAIN_FILE

    root = Path(path)
    if root.is_dir() and (root / TRAIN_FILE).is_file():
        heldout = root / HELDOUT_FILE
        if eval_path is None and heldout.is_file() and heldout.stat().st_size:
            eval_path = heldout
        root = root / TRAIN_FILE
    train = load_preferences(root)
    if eval_path is not None:
        return train, load_preferences(eval_path)
    if eval_size > 0:
        if eval_size >= train.num_rows:
            raise UserError(f"--eval_size {eval_size}: {path} has only {train.num_rows} pairs; hold out fewer")
        split = train.train_test_split(test_size=eval_size, seed=seed)
        return split["train"], split["test"]
    return train, None
