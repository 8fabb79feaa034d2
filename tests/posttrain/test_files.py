"""posttrain.files: a file is replaced whole or left as it was."""

from __future__ import annotations

import pytest

from posttrain.files import replacing, write_atomic


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
