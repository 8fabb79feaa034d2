"""posttrain.files: a file or a directory is replaced whole or left as it was; JSONL errors name file, row, field."""

from __future__ import annotations

import gzip

import pytest

from posttrain.files import RowError, read_jsonl, replacing, replacing_dir, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "stats.json"
    write_atomic(path, "old")
    assert write_atomic(path, "new ü") == path
    assert path.read_text(encoding="utf-8") == "new ü"
    assert [p.name for p in path.parent.iterdir()] == ["stats.json"]


def test_a_writer_that_fails_leaves_the_previous_file(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_a_directory_is_replaced_whole_or_left_as_it_was(tmp_path):
    out = tmp_path / "mix"
    with replacing_dir(out) as tmp:
        (tmp / "stats.json").write_text("1")
    with pytest.raises(RuntimeError), replacing_dir(out) as tmp:
        (tmp / "stats.json").write_text("2")
        raise RuntimeError("killed mid-build")
    assert (out / "stats.json").read_text() == "1"
    with replacing_dir(out) as tmp:
        (tmp / "data").mkdir()
        (tmp / "data" / "shard.arrow").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["data"]
    assert [p.name for p in tmp_path.iterdir()] == ["mix"]


def test_jsonl_errors_name_the_file_the_row_and_the_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c"}\n[1]\n{bad\n')
    assert next(read_jsonl(path, required=["completion"])) == (1, {"prompt": "a", "completion": "b"})
    with pytest.raises(RowError, match=r"rows.jsonl row 3: field 'completion': missing") as missing:
        list(read_jsonl(path, required=["completion"]))
    assert (missing.value.line, missing.value.field) == (3, "completion")
    with pytest.raises(RowError, match=r"rows.jsonl row 4: expected a JSON object, got list"):
        list(read_jsonl(path))
    with pytest.raises(FileNotFoundError, match="absent.jsonl does not exist"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


def test_jsonl_reads_gzip_and_stops_at_a_torn_last_line(tmp_path):
    packed = tmp_path / "rows.jsonl.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write('{"id": 1}\n{"id": 2}\n')
    assert [row["id"] for _, row in read_jsonl(packed)] == [1, 2]
    torn = tmp_path / "samples.jsonl"
    torn.write_text('{"id": 1}\n{"id": 2')
    assert [row["id"] for _, row in read_jsonl(torn, torn_tail=True)] == [1]
    with pytest.raises(RowError, match="row 2: not valid JSON"):
        list(read_jsonl(torn))
