"""The mix builder: layouts, validation errors, cleaning, sampling, output and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools import build_mix, load_mix, load_prompts, load_sft_dataset, load_spec, parse_spec, read_source
from data_tools import sources as sources_module
from posttrain.app.cli import main
from posttrain.tokenizer import build_tokenizer


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows as JSON lines; a str row is written verbatim (for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"},
            {"role": "assistant", "content": f"It is {2 * i}."}]


@pytest.fixture
def layout_files(tmp_path: Path) -> dict[str, Path]:
    """One small file per layout, distinct texts throughout."""
    import pandas as pd
    from datasets import Dataset

    files = {
        "messages": write_jsonl(tmp_path / "messages.jsonl",
                                [{"messages": chat(i), "solution": str(2 * i), "id": f"m{i}"} for i in range(5)]),
        "sharegpt": write_jsonl(tmp_path / "sharegpt.jsonl", [
            {"conversations": [{"from": "human", "value": f"Say hello {i} times"},
                               {"from": "gpt", "value": "hello " * i}]} for i in range(1, 5)]),
    }
    alpaca = pd.DataFrame({"instruction": [f"Name fruit number {i}" for i in range(4)],
                           "input": ["", "red ones", "", "green ones"], "output": [f"fruit {i}" for i in range(4)]})
    files["alpaca"] = tmp_path / "alpaca.parquet"
    alpaca.to_parquet(files["alpaca"])
    files["prompt_response"] = tmp_path / "qa.csv"
    files["prompt_response"].write_text("question,answer,gold\nWhat is six times seven?,42,42\nCapital of France?,"
                                        "Paris,Paris\n")
    files["datasets_dir"] = tmp_path / "saved"
    Dataset.from_dict({"messages": [chat(i) for i in range(10, 13)]}).save_to_disk(str(files["datasets_dir"]))
    return files


def build(tmp_path: Path, spec: dict, **kwargs) -> tuple[dict, object]:
    out = tmp_path / "mix"
    stats = build_mix(parse_spec({"num_proc": 1, **spec}, "mix.yaml"), out, overwrite=True, **kwargs)
    return stats, load_mix(out)


def test_every_common_layout_maps_without_code(tmp_path, layout_files):
    spec = {"sources": [
        {"path": str(layout_files["messages"]), "domain": "math"},
        {"path": str(layout_files["sharegpt"]), "domain": "chat"},
        {"path": str(layout_files["alpaca"]), "domain": "chat"},
        {"path": str(layout_files["prompt_response"]), "domain": "qa",
         "fields": {"prompt": "question", "response": "answer", "solution": "gold"}},
        {"path": str(layout_files["datasets_dir"]), "domain": "chat", "name": "saved"},
    ]}
    stats, mix = build(tmp_path, spec)
    assert stats["rows"] == mix.num_rows == 5 + 4 + 4 + 2 + 3
    assert {"id", "domain", "source", "messages", "solution", "tests", "entry_point", "input_ids",
            "assistant_masks", "num_tokens"} <= set(mix.column_names)
    rows = {r["id"]: r for r in mix}
    assert rows["m3"]["solution"] == "6" and rows["m3"]["messages"] == chat(3)
    assert rows["qa.csv:1"]["messages"][1]["content"] == "42" and rows["qa.csv:1"]["solution"] == "42"
    assert rows["alpaca.parquet:2"]["messages"][0]["content"] == "Name fruit number 1\n\nred ones"
    assert rows["sharegpt.jsonl:2"]["messages"][1] == {"role": "assistant", "content": "hello hello "}
    assert stats["sources"]["saved"]["rows"] == 3 and stats["domains"]["chat"] == 11


def test_rows_are_tokenized_as_trl_would_with_assistant_masks(tmp_path, layout_files):
    _, mix = build(tmp_path, {"sources": [{"path": str(layout_files["messages"]), "domain": "math"}]})
    tokenizer = build_tokenizer()
    for row in mix:
        expected = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        assert row["input_ids"] == expected["input_ids"] and row["assistant_masks"] == expected["assistant_masks"]
        assert row["num_tokens"] == len(row["input_ids"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"bad.jsonl row 3, field '<line>': not valid JSON"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"bad.jsonl row 3, field 'messages\[0\].role': 'bot' is "
                                                             r"not one of \['assistant', 'system', 'user'\]"),
        ('{"messages": [{"role": "user", "content": 5}]}', r"row 3, field 'messages\[0\].content': expected a string"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', r"row 3, field 'messages': must end with a non-empty "
                                                               r"assistant turn"),
        ('{"messages": "x", "solution": 1}', r"row 3, field 'messages': expected a list of messages"),
    ],
)
def test_a_bad_row_names_file_row_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": chat(1)}, {"messages": chat(2)}, line])
    with pytest.raises(ValueError, match=message):
        build(tmp_path, {"sources": [{"path": str(path), "domain": "x", "layout": "messages"}]})


def test_on_error_skip_counts_bad_rows_and_keeps_row_numbers(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": chat(1)}, "{oops", "", {"messages": chat(4)},
                                                {"messages": []}])
    stats, mix = build(tmp_path, {"sources": [{"path": str(path), "domain": "x"}]}, on_error="skip")
    assert sorted(mix["id"]) == ["bad.jsonl:1", "bad.jsonl:4"]  # the blank line 3 is neither a row nor an error
    assert stats["dropped"]["invalid"] == 2 and stats["sources"]["bad.jsonl"]["read"] == 4
    assert stats["invalid_examples"][0].startswith(f"{path} row 2, field '<line>': not valid JSON")
    assert "messages" in stats["invalid_examples"][1] and "row 5" in stats["invalid_examples"][1]


def test_csv_missing_response_is_named(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("prompt,response\nhello,hi there\nsecond,\n")
    with pytest.raises(ValueError, match=r"qa.csv row 2, field 'response': missing or empty"):
        build(tmp_path, {"sources": [{"path": str(path), "domain": "x"}]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"sources": [{"path": "/nowhere/x.jsonl", "domain": "x"}]}, r"source 'x.jsonl' \(/nowhere/x.jsonl\): path "
                                                                      r"/nowhere/x.jsonl: no such file"),
        ({"sources": [{"builtin": "arithmetic", "weight": 0}], "total_rows": 10}, r"mix.yaml: weights: .* sum to zero"),
        ({"sources": [{"builtin": "arithmetic", "weight": 1}]}, r"mix.yaml: total_rows: required"),
        ({"sources": []}, r"mix.yaml: sources: the mix lists no sources"),
        ({"sources": [{"builtin": "arithmetic", "rows": 5, "colour": 1}]}, r"mix.yaml: sources\[0\]: unknown option"),
        ({"sources": [{"builtin": "arithmetic", "rows": 5, "options": {"max_digits": 0}}]},
         r"mix.yaml: sources\[0\]: arithmetic options max_digits"),
        ({"sources": [{"path": "a.jsonl"}]}, r"mix.yaml: sources\[0\]: domain: required"),
    ],
)
def test_bad_specs_are_clear_errors(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        build(tmp_path, spec)


def test_an_empty_source_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match=r"source 'empty.jsonl' .*: empty source"):
        build(tmp_path, {"sources": [{"path": str(path), "domain": "x", "layout": "messages"}]})


def test_a_zero_byte_file_is_the_empty_source_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^source 'empty.jsonl' \(\S+/empty.jsonl\): empty source \(no rows\)"):
        build(tmp_path, {"sources": [{"path": str(path), "domain": "x"}]})


@pytest.mark.parametrize("name", ["latin1.jsonl", "latin1.csv"])
def test_a_file_that_is_not_utf8_names_the_file_and_byte_offset(tmp_path, name):
    path = tmp_path / name
    head = b'{"prompt": "a", "response": "b"}\n' if name.endswith("jsonl") else b"prompt,response\na,b\n"
    path.write_bytes(head + (b'{"prompt": "caf\xe9", "response": "b"}\n' if name.endswith("jsonl") else b"caf\xe9,b\n"))
    offset = len(head) + (15 if name.endswith("jsonl") else 3)
    with pytest.raises(ValueError, match=rf"{name}\): byte 0xe9 at offset {offset} \(line \d\) is not UTF-8; re-encode"):
        build(tmp_path, {"sources": [{"path": str(path), "domain": "x"}]})


def test_on_error_skip_skips_unreadable_files_and_reports_them(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"messages": chat(i)} for i in range(3)])
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "response": "b"}\n')
    stats, mix = build(tmp_path, {"sources": [{"path": str(tmp_path / "*.jsonl"), "domain": "x"}]}, on_error="skip")
    assert mix.num_rows == 3 and stats["dropped"]["invalid"] == 2
    assert any("empty.jsonl: empty source" in m for m in stats["invalid_examples"])
    assert any("latin1.jsonl: byte 0xe9 at offset 15 (line 1)" in m for m in stats["invalid_examples"])
    assert read_source({"path": [str(good), str(tmp_path / "empty.jsonl")], "domain": "x"},
                       on_error="skip").num_rows == 3


def test_exact_dedupe_off_keeps_every_distinct_row(tmp_path):
    rows = [{"prompt": f"distinct question {i} about topic {7 * i}", "response": f"answer {i}"} for i in range(94)]
    path = write_jsonl(tmp_path / "distinct.jsonl", rows + rows[:2])
    stats, mix = build(tmp_path, {"dedupe": {"exact": False}, "sources": [{"path": str(path), "domain": "x"}]})
    assert mix.num_rows == 94 and stats["dropped"]["duplicate"] == 0 and stats["dropped"]["near_duplicate"] == 2
    stats, mix = build(tmp_path, {"dedupe": {"exact": False, "near": False},
                                  "sources": [{"path": str(path), "domain": "x"}]})
    assert mix.num_rows == 96 and not any(stats["dropped"].values())


def test_near_duplicates_are_the_pairs_at_or_above_the_threshold():
    import random

    import numpy as np

    from data_tools.selection import near_duplicates
    from data_tools.text_hashes import NearDuplicateHasher, jaccard

    rng, hasher, texts = random.Random(0), NearDuplicateHasher(threshold=0.8, num_perm=64, shingle=5), []
    for pair in range(300):  # a 200-word text and a copy with 0-20 words replaced; every pair its own words
        base = [f"p{pair}w{rng.randrange(10**6)}" for _ in range(200)]
        edited = list(base)
        for position in rng.sample(range(200), rng.randrange(21)):
            edited[position] = f"p{pair}new{position}"
        texts += [" ".join(base), " ".join(edited)]
    sets = hasher.shingle_sets(texts)
    similarity = np.array([jaccard(sets[i], sets[i + 1]) for i in range(0, len(texts), 2)])
    dropped = near_duplicates(hasher.band_keys(texts), 0.8, lambda rows: [sets[i] for i in rows])
    assert not dropped[0::2].any()  # the first of each pair is always kept
    assert ((0.7 < similarity) & (similarity < 0.9)).sum() > 50  # pairs near the threshold, on both sides
    assert (dropped[1::2] == (similarity >= 0.8)).all()


def test_exact_and_near_duplicates_are_dropped_and_counted(tmp_path):
    long = " ".join(f"word{i}" for i in range(60))
    rows = [{"prompt": long, "response": "ok"},
            {"prompt": "  " + long.upper(), "response": "OK"},  # same text after case and space normalization
            {"prompt": long + " extra", "response": "ok"},  # near duplicate
            {"prompt": "something else entirely", "response": "ok"}]
    path = write_jsonl(tmp_path / "dups.jsonl", rows)
    stats, mix = build(tmp_path, {"sources": [{"path": str(path), "domain": "x"}]})
    assert sorted(mix["id"]) == ["dups.jsonl:1", "dups.jsonl:4"]
    assert stats["dropped"]["duplicate"] == 1 and stats["dropped"]["near_duplicate"] == 1
    stats, _ = build(tmp_path, {"sources": [{"path": str(path), "domain": "x", "near_dedupe": False}]})
    assert stats["rows"] == 3


def test_decontamination_drops_eval_overlap_and_reports_it(tmp_path):
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "What is 17 + 25?", "solution": "42"},
                                                  {"prompt": "A farmer has 12 cows and buys 7 more; how many cows "
                                                             "does the farmer have now?"}])
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"prompt": "Please solve: what is 17 + 25? Show your work.", "response": "42"},
        {"prompt": "What is 17 + 26?", "response": "43"},
        {"prompt": "Hint: a farmer has 12 cows and buys 7 more; how many cows does the farmer have now?",
         "response": "19"},
    ])
    stats, mix = build(tmp_path, {
        "sources": [{"path": str(train), "domain": "math"}],
        "decontaminate": {"against": [{"path": str(evals), "domain": "math", "name": "my-eval"}]},
    })
    assert mix["id"] == ["train.jsonl:2"]
    assert stats["contaminated"] == {"my-eval": 2}
    report = [json.loads(line) for line in (tmp_path / "mix" / "decontaminated.jsonl").read_text().splitlines()]
    assert [(r["row"], r["eval_id"]) for r in report] == [(1, "my-eval:1"), (3, "my-eval:2")]
    assert "contaminated" in (tmp_path / "mix" / "stats.md").read_text()


def test_builtin_heldout_does_not_contaminate_builtin_train(tmp_path):
    spec = {"sources": [{"builtin": t, "rows": 300} for t in ("arithmetic", "word_problems", "text_tasks")],
            "decontaminate": {"against": [{"builtin": t, "rows": 100, "split": "heldout", "name": f"h:{t}"}
                                          for t in ("arithmetic", "word_problems", "text_tasks")]}}
    stats, _ = build(tmp_path, spec)
    assert stats["rows"] == 900 and stats["dropped"]["contaminated"] == 0


def test_token_length_filter_uses_the_target_tokenizer(tmp_path):
    rows = [{"prompt": "short", "response": "ok"}, {"prompt": "long " * 300, "response": "ok"}]
    stats, mix = build(tmp_path, {"sources": [{"path": str(write_jsonl(tmp_path / "l.jsonl", rows)), "domain": "x"}],
                                  "max_tokens": 64})
    assert mix["id"] == ["l.jsonl:1"] and stats["dropped"]["too_long"] == 1
    assert stats["tokens"]["max"] <= 64


def test_weights_share_total_rows_and_shortfalls_are_reported(tmp_path, layout_files):
    spec = {"seed": 3, "total_rows": 40, "sources": [
        {"builtin": "arithmetic", "weight": 3}, {"builtin": "text_tasks", "weight": 1},
        {"path": str(layout_files["messages"]), "domain": "math", "rows": 50},
    ]}
    stats, mix = build(tmp_path, spec)
    assert stats["sources"]["builtin:arithmetic"]["rows"] == 30 and stats["sources"]["builtin:text_tasks"]["rows"] == 10
    assert stats["shortfalls"] == {"messages.jsonl": 45}
    assert mix.num_rows == 45 and sorted(mix["source"])[0] == "builtin:arithmetic"


def test_sampling_and_shuffle_are_seeded_and_independent_of_workers(tmp_path, monkeypatch):
    spec = {"seed": 1, "sources": [{"builtin": "arithmetic", "rows": 400}, {"builtin": "text_tasks", "rows": 300}]}
    _, first = build(tmp_path, spec)
    ids = first["id"]
    monkeypatch.setattr(sources_module, "_MIN_ROWS_PER_WORKER", 50)
    _, again = build(tmp_path, spec, num_proc=2)
    assert again["id"] == ids and again["input_ids"] == first["input_ids"]
    _, other = build(tmp_path, {**spec, "seed": 2})
    assert other["id"] != ids
    assert ids != sorted(ids)  # shuffled across sources, not concatenated


def test_hub_sources_load_through_datasets_load_dataset(tmp_path):
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"messages": chat(i)} for i in range(3)])
    stats, mix = build(tmp_path, {"sources": [{"hub": str(folder), "domain": "chat", "name": "org/name"}]})
    assert mix.num_rows == 3 and set(mix["source"]) == {"org/name"}


def test_read_source_reads_prompt_sets_and_loaders_serve_the_recipes(tmp_path, layout_files):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2 + 3?", "solution": 5}])
    rows = read_source({"path": str(prompts), "domain": "math"}, require_response=False)
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2 + 3?"}] and rows[0]["solution"] == "5"
    loaded = load_prompts(str(prompts))
    assert loaded[0]["prompt"] == [{"role": "user", "content": "What is 2 + 3?"}] and loaded[0]["solution"] == "5"
    assert loaded[0]["reference"] is None
    answered = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "What is 2 + 3?", "response": "2+3=5", "solution": 5}])
    assert load_prompts(str(answered))[0]["reference"] == "2+3=5"
    assert load_prompts(tasks=["python_functions"], n=2, split="heldout")[0]["entry_point"]
    assert load_sft_dataset(str(layout_files["sharegpt"])).num_rows == 4


def test_load_sft_dataset_builds_a_spec_once(tmp_path):
    spec = tmp_path / "mix.yaml"
    spec.write_text("num_proc: 1\nsources:\n  - {builtin: arithmetic, rows: 20}\n")
    first = load_sft_dataset(spec, workdir=tmp_path / "data")
    stamp = (tmp_path / "data" / "stats.json").stat().st_mtime_ns
    assert load_sft_dataset(spec, workdir=tmp_path / "data")["id"] == first["id"]
    assert (tmp_path / "data" / "stats.json").stat().st_mtime_ns == stamp
    spec.write_text("num_proc: 1\nsources:\n  - {builtin: arithmetic, rows: 30}\n")
    assert load_sft_dataset(spec, workdir=tmp_path / "data").num_rows == 30


def test_cli_builds_and_reports_user_errors_in_one_line(tmp_path, capsys):
    spec, out = tmp_path / "mix.yaml", tmp_path / "out"
    spec.write_text("num_proc: 1\nsources:\n  - {builtin: arithmetic, rows: 30}\n  - {builtin: text_tasks, rows: 20}\n")
    assert main(["data", "build", "--config", str(spec), "--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert load_mix(out).num_rows == stats["rows"] == 50 and (out / "stats.md").is_file()
    assert f"{out}: 50 rows from 50 read" in capsys.readouterr().out
    assert main(["data", "build", "--config", str(spec), "--output", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["data", "build", "--config", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "o")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_the_tiny_default_mix_spec_is_valid_and_offline():
    spec = load_spec("recipes/configs/tiny/mix.yaml")
    assert spec.sources and all(s.builtin for s in spec.sources + spec.decontaminate.against)


def test_the_example_spec_builds_every_layout_and_reports_its_contamination(tmp_path):
    stats = build_mix("recipes/configs/examples/mix_sources.yaml", tmp_path / "mix", num_proc=1)
    mix = load_mix(tmp_path / "mix")
    assert stats["rows"] == mix.num_rows == 3 + 2 + 5 + 2 + 200
    assert stats["contaminated"] == {"my-eval": 1}
    rows = {r["id"]: r for r in mix}
    assert rows["om-4"]["entry_point"] == "double" and rows["om-1"]["messages"][0]["role"] == "system"
    assert rows["alpaca:alpaca.parquet:2"]["messages"][1]["content"] == "pots"
    assert rows["qa.csv:2"]["solution"] == "366"
