"""Run a recipe recording its mix builds and loads: `python record_data_loads.py recipes/sft.py ARGS`.

Each process appends one JSON line per `build_mix` / `load_mix` call that `data_tools.loading` makes to
`$RECORD_DATA_LOADS/rank<RANK>.jsonl`: the call, its start and end (wall clock), and for a load the rows' sha256,
so a test can tell how many processes built the mix, whether the others waited for it, and what each one read.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import time
from pathlib import Path

from data_tools import loading


def _recorded(name: str, fn):
    def call(*args, **kwargs):
        start = time.time()
        out = fn(*args, **kwargs)
        entry = {"call": name, "start": start, "end": time.time()}
        if name == "load_mix":
            entry["rows_sha256"] = hashlib.sha256(json.dumps(out.to_list(), sort_keys=True).encode()).hexdigest()
        log = Path(os.environ["RECORD_DATA_LOADS"]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        return out

    return call


if __name__ == "__main__":
    loading.build_mix = _recorded("build_mix", loading.build_mix)
    loading.load_mix = _recorded("load_mix", loading.load_mix)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
