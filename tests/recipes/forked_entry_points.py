"""Run many entry points (recipes, CLIs) as users run them, each in a process of its own, paying the imports once.

    python tests/recipes/forked_entry_points.py CASES.json OUT_DIR

CASES.json maps a case name to {"argv": what follows `python` (a script path, or "-m" and a module, then its
arguments), "env": variables to set, "path": directories put first on sys.path (as PYTHONPATH would)}. The driver
imports the libraries every entry point loads (torch, transformers, TRL, ...), then forks one child per case, in
turn; the child sets argv, env and sys.path as `python ARGV` would and runs the script or module as `__main__`.
OUT_DIR/<case>.json gets the child's exit status, stdout and stderr (an uncaught exception prints its traceback and
exits 1, as the interpreter does).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path

# What every recipe imports first: loaded here once, shared by the forked children.
import accelerate  # noqa: F401
import datasets  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
import trl  # noqa: F401

import posttrain.training  # noqa: F401

TIMEOUT_S = 300


def _child(case: dict, out: Path) -> int:
    for stream, fd in (("stdout", 1), ("stderr", 2)):
        os.dup2(os.open(out.with_suffix(f".{stream}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    signal.alarm(TIMEOUT_S)
    os.environ.update(case.get("env", {}))
    sys.path[:0] = case.get("path", [])
    argv = case["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, str(Path(argv[0]).resolve().parent))
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        atexit._run_exitfuncs()  # as the interpreter does on exit (worker pools, logging)
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, case in cases.items():
        out = out_dir / f"{name}.json"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_child(case, out))
        _, status = os.waitpid(pid, 0)
        out.write_text(json.dumps({
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.with_suffix(".stdout").read_text(errors="replace"),
            "stderr": out.with_suffix(".stderr").read_text(errors="replace"),
        }))


if __name__ == "__main__":
    main()
