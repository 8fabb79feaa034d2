"""A bounded pool of worker processes that answers each task within a wall-clock bound.

math-verify bounds its own work with `signal.alarm`, which works only in the main thread of the main interpreter;
GRPO calls rewards from the trainer's thread and the eval harness from threads of its own. So verification runs
with math-verify's timeouts off, in worker processes this pool kills and restarts when a task overruns: the caller
gets a `TimeoutError` for that task within `timeout` seconds of its dispatch, from any thread or process.

Workers are plain `python -c` subprocesses talking over pipes (not `multiprocessing` start methods), so a user's
script without an `if __name__ == "__main__"` guard is never re-imported in a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

_READY = "ready"
# The worker's import of the task function (sympy, for math) must not count against any task's time.
_START_TIMEOUT_S = 120.0
_SERVE = """
import ctypes, importlib, os, sys
from multiprocessing.connection import Connection
# Die with the thread that started us (the pool's spawner thread, which lives as long as its process): a worker
# stuck in a pathological task must not outlive its pool.
ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != int(sys.argv[4]):
    sys.exit(0)
conn_in, conn_out = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
module, _, name = sys.argv[3].partition(":")
func = getattr(importlib.import_module(module), name)
warmup = conn_in.recv()
if warmup is not None:
    func(*warmup)
conn_out.send("ready")
while True:
    try:
        args = conn_in.recv()
    except EOFError:
        break
    try:
        conn_out.send((True, func(*args)))
    except Exception as exc:
        conn_out.send((False, f"{type(exc).__name__}: {exc}"))
"""


_spawners: dict[int, ThreadPoolExecutor] = {}


def _spawner() -> ThreadPoolExecutor:
    """This process's one long-lived thread that starts workers. A worker dies with the thread that started it
    (PR_SET_PDEATHSIG is per thread), so that must not be a caller's short-lived thread."""
    pid = os.getpid()
    if pid not in _spawners:  # after fork, the parent's thread does not exist here
        _spawners[pid] = ThreadPoolExecutor(1, thread_name_prefix="worker-spawner")
    return _spawners[pid]


class _Worker:
    """One worker subprocess and its two pipe ends."""

    def __init__(self, target: str, warmup: tuple[Any, ...] | None) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        # The package root goes on the path so the worker imports the same `rewards` the caller did.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                           os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-c", _SERVE, str(task_r), str(result_w), target, str(os.getpid())]
        self.process = _spawner().submit(subprocess.Popen, command, pass_fds=(task_r, result_w), env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True).result()
        os.close(task_r)
        os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.tasks.send(warmup)
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        """Kill the worker (it may be stuck in C code that ignores everything else) and close its pipes."""
        self.process.kill()
        self.process.wait()
        self.tasks.close()
        self.results.close()


class WorkerPool:
    """Run `module:function` on argument tuples in `workers` processes, each call bounded by `timeout` seconds.

    `warmup`, if given, is one call each worker makes before it takes tasks, so lazy initialisation (sympy's
    LaTeX parser builds itself on first use) is not charged to the first task.

    `map` returns, per task, the function's result, a `TimeoutError`, or a `RuntimeError` carrying the worker's
    exception message. Thread-safe; a pool used after `fork` starts fresh workers in the child.
    """

    def __init__(self, target: str, workers: int, timeout: float, warmup: tuple[Any, ...] | None = None) -> None:
        if workers < 1 or timeout <= 0:
            raise ValueError(f"WorkerPool needs workers >= 1 and timeout > 0, got workers={workers}, timeout={timeout}")
        self.target, self.size, self.timeout, self.warmup = target, workers, timeout, warmup
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self.restarts = 0
        weakref.finalize(self, _kill_all, self._workers, self._pid)

    def start(self) -> None:
        """Start the workers and wait until all are ready (else the first `map` starts them)."""
        with self._lock:
            self._fill()
            while not all(w.ready for w in self._workers):
                self._run([])

    def map(self, tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run every task; results come back in task order."""
        with self._lock:
            self._fill()
            try:
                return self._run(tasks)
            except BaseException:
                # Workers may hold tasks of this call; their late answers must not reach the next one.
                _kill_all(self._workers, self._pid)
                self._workers.clear()
                raise

    def _fill(self) -> None:
        if self._pid != os.getpid():
            # Pipes inherited through fork belong to the parent's workers.
            # (A worker also exits by itself once its task pipe closes, so none outlives its owner.)
            self._workers.clear()
            self._pid = os.getpid()
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self.target, self.warmup))

    def _run(self, tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Dispatch `tasks`; with none, one round of waiting for workers' messages (used by `start`)."""
        results: list[Any] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        busy = 0
        first = True
        while pending or busy or first:
            first = False
            for worker in self._workers:
                if worker.ready and worker.job is None and pending:
                    job = pending.popleft()
                    try:
                        worker.tasks.send(tasks[job])
                    except OSError:
                        # The worker died while idle: not this task's fault, so it goes to another worker.
                        pending.appendleft(job)
                        self._replace(worker, results, RuntimeError("verifier worker died"))
                        continue
                    worker.job, worker.deadline = job, time.monotonic() + self.timeout
                    busy += 1
            now = time.monotonic()
            # Idle workers have no deadline (their last one is stale): only busy and starting ones bound the wait.
            deadlines = [w.deadline if w.job is not None else w.started + _START_TIMEOUT_S
                         for w in self._workers if w.job is not None or not w.ready]
            timeout = max(0.0, min(deadlines) - now) if deadlines else 0.0
            for conn in wait([w.results for w in self._workers], timeout=timeout):
                worker = next(w for w in self._workers if w.results is conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    busy -= self._replace(worker, results, RuntimeError("verifier worker died"))
                    continue
                if message == _READY:
                    worker.ready = True
                    continue
                ok, value = message
                results[worker.job] = value if ok else RuntimeError(value)
                worker.job = None
                busy -= 1
            now = time.monotonic()
            for worker in list(self._workers):
                late = worker.deadline if worker.job is not None else worker.started + _START_TIMEOUT_S
                if (worker.job is not None or not worker.ready) and now >= late:
                    busy -= self._replace(worker, results, TimeoutError(f"no answer within {self.timeout:g} s"))
        return results

    def _replace(self, worker: _Worker, results: list[Any], error: Exception) -> int:
        """Kill `worker`, fail its task with `error`, start a replacement; returns 1 if a task was failed."""
        # Killed from outside (its starting thread ended, say) rather than failed by itself.
        killed = worker.process.poll() == -9
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self.target, self.warmup)
        self.restarts += 1
        if not worker.ready and not killed:
            # Not a bad input but a broken setup (an import error, say): every task would fail the same way.
            raise RuntimeError(f"the worker for {self.target} did not start: {error}; run "
                               f"`python -c 'import {self.target.partition(':')[0]}'` to see why")
        if worker.job is None:
            return 0
        results[worker.job] = error
        return 1

    def close(self) -> None:
        """Stop all workers."""
        with self._lock:
            _kill_all(self._workers, self._pid)
            self._workers.clear()


def _kill_all(workers: list[_Worker], owner: int) -> None:
    if os.getpid() == owner:
        for worker in workers:
            worker.kill()

