"""Run untrusted Python programs locally, isolated, in a bounded pool; each gets a pass/fail verdict.

What it guarantees, per program:
- its own process session and temporary directory (removed after); stdin empty, stdout/stderr to a file there;
- wall-clock and CPU-time limits, address-space, process-count and file-size limits, no core dumps;
- a scrubbed environment (HOME and TMPDIR point at its directory);
- with bubblewrap (`bwrap`): new pid, network, IPC and UTS namespaces; a read-only view of `/`, an empty
  read-only `/tmp` and the home directory hidden (the Python installation is bound back read-only), so the only
  writable place is its directory and there is no network but an isolated loopback;
- when we are root, every slot runs programs under its own unprivileged uid (`uid_base + slot`), so process
  limits hold and a program cannot signal, trace or write into anything of ours (without bubblewrap this needs
  a Python installation other uids can read);
- every process it started is killed before its verdict returns (the whole pid namespace, else all processes
  of the slot uid, else every descendant of the slot, which orphans re-parent to);
- it passes only by running to its end: `exit(0)`, `os._exit(0)` or `SystemExit` before that is a failure.

What it does not guarantee: protection against kernel exploits; secrecy of files readable by everyone; with
`unshare` (no bubblewrap) the filesystem is not made read-only (a slot uid still cannot write our files, but
programs that must run as root, Python being unreadable to other uids, can); with neither, no namespaces at all,
and it refuses outright to run programs as root that way. A program that reads the runner's own memory (its frames) can
forge a pass: this stops accidental and lazy reward hacks, not an adversary aiming at the verifier itself.
A warning names the isolation in use whenever it is weaker than bubblewrap.

Programs run in "slots": long-lived sandboxed Python processes (see `sandbox_zygote.py`) that fork one child per
program, so a program costs a fork, not an interpreter start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from posttrain.errors import UserError

logger = logging.getLogger(__name__)

ISOLATIONS = ("auto", "bwrap", "unshare", "none")
_ZYGOTE = (Path(__file__).with_name("sandbox_zygote.py")).read_text()
_START_TIMEOUT_S = 30.0
# Beyond the program's own timeout, the time a slot may take to fork, clean up and answer.
_ANSWER_GRACE_S = 5.0
_BWRAP_WORKDIR = "/tmp/sandbox"
_WEAKER = {
    "unshare": "bubblewrap (bwrap) not found: code sandbox uses `unshare` (pid/network namespaces) without a "
               "read-only filesystem{who}; install bubblewrap for full isolation",
    "none": "neither bubblewrap nor unshare works here: code sandbox runs programs WITHOUT namespaces (only "
            "rlimits and a separate session{who}); install bubblewrap for isolation",
}
_WHO = {
    "slot uid": ", as a private unprivileged uid per slot",
    "root": " and AS ROOT (Python is not readable by other users): file writes are not blocked",
    "us": ", as our own user",
}


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits."""

    timeout: float = 5.0  # wall-clock seconds; the CPU-time limit is this, rounded up
    memory_mb: int = 1024  # address space
    max_processes: int = 32
    max_file_mb: int = 16

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise UserError(f"sandbox limit {name} must be > 0, got {value}")


@dataclass(frozen=True)
class Verdict:
    """A program's outcome: `passed`, and `status` ("passed", "timeout", "early exit", "failed: <last line>",
    "killed by SIGXCPU", ...)."""

    passed: bool
    status: str
    time_s: float


@functools.cache
def detect_isolation() -> str:
    """The strongest isolation that works on this machine: "bwrap", "unshare" or "none"."""
    probe = [sys.executable, "-I", "-c", "pass"]
    for mode in ("bwrap", "unshare"):
        if shutil.which(mode) is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                done = subprocess.run(_wrap(mode, tmp) + probe, capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                return mode
            logger.debug("sandbox probe %s failed: %s", mode, done.stderr.decode(errors="replace"))
    return "none"


def _wrap(mode: str, slot_dir: str) -> list[str]:
    """The command prefix that puts a process into `mode`'s namespaces."""
    unprivileged = os.geteuid() != 0
    if mode == "bwrap":
        cmd = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        cmd += ["--unshare-user"] if unprivileged else []
        cmd += ["--ro-bind", "/", "/", "--tmpfs", "/tmp", *_python_kept_visible("/tmp")]
        cmd += ["--bind", slot_dir, _BWRAP_WORKDIR, "--remount-ro", "/tmp"]
        home = os.path.expanduser("~")
        if home not in ("/", "") and os.path.isdir(home):
            cmd += ["--perms", "0755", "--tmpfs", home, *_python_kept_visible(home), "--remount-ro", home]
        return cmd + ["--dev", "/dev", "--proc", "/proc", "--clearenv", "--setenv", "LANG", "C.UTF-8"]
    if mode == "unshare":
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts"]
        return cmd + (["--user", "--map-root-user"] if unprivileged else [])
    return []


def _python_kept_visible(root: str) -> list[str]:
    """bwrap arguments that put this interpreter's directories under `root` back after `root` became a tmpfs."""
    cmd = []
    for path in _python_paths_under(root):
        # Directories bwrap creates on the way are 0700; the slot uid must traverse them.
        for parent in reversed(Path(path).parents):
            if str(parent).startswith(root.rstrip("/") + "/"):
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", path, path]
    return cmd


def _python_paths_under(home: str) -> list[str]:
    """This interpreter's installation directories inside `home`, which must stay visible in the sandbox."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(sys.executable).resolve().parent.parent)}
    inside = sorted(p for p in candidates if p.startswith(home.rstrip("/") + "/") and os.path.isdir(p))
    # Keep only outermost directories: bwrap mounts them in order, and a parent mounted later would hide a child.
    return [p for p in inside if not any(p != q and p.startswith(q + "/") for q in inside)]


def _readable_by_others(path: str) -> bool:
    """Whether an unprivileged uid can read the Python installation at `path` (every directory on the way)."""
    parts = Path(path).resolve().parts
    return all(os.stat(os.path.join(*parts[: i + 1])).st_mode & stat.S_IXOTH for i in range(1, len(parts)))


class _Slot:
    """One sandboxed zygote process; `run` sends it a program and reads its verdict."""

    def __init__(self, index: int, mode: str, uid_base: int) -> None:
        self.index, self.mode = index, mode
        root = os.geteuid() == 0
        # A private uid per slot makes RLIMIT_NPROC count only this slot's programs and keeps them off our files;
        # without bwrap's mounts that uid must still be able to read the interpreter.
        self.uid = uid_base + index if root and (mode == "bwrap" or _readable_by_others(sys.base_prefix)) else None
        self.extra_processes = 0 if self.uid is not None else _processes_of(os.getuid())
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = ""

    def start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"posttrain-sandbox-{self.index}-", dir=_scratch_root())
        os.chmod(self.dir, 0o755)
        cleanup = "namespace" if self.mode != "none" else ("uid" if self.uid is not None else "descendants")
        workdir = _BWRAP_WORKDIR if self.mode == "bwrap" else self.dir
        config = json.dumps({"workdir": workdir, "uid": self.uid, "cleanup": cleanup})
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(
            _wrap(self.mode, self.dir) + [sys.executable, "-I", "-c", _ZYGOTE, config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
        )
        if self._read(time.monotonic() + _START_TIMEOUT_S) is None:
            error = self._stop()
            raise RuntimeError(f"code sandbox ({self.mode}) failed to start: {error or 'no answer'}; "
                               "pass isolation='none' to run without namespaces")

    def run(self, source: str, limits: SandboxLimits) -> Verdict:
        job = {"source": source, **asdict(limits)}
        job["max_processes"] += self.extra_processes
        data = json.dumps(job).encode()
        message = struct.pack("!I", len(data)) + data
        if not self._send(message):
            # The slot had died while idle (killed from outside): not this program's doing, so a fresh slot runs it.
            self._stop()
            if not self._send(message):
                raise RuntimeError(f"code sandbox ({self.mode}): a fresh slot died before running a program")
        start = time.monotonic()
        answer = self._read(start + limits.timeout + _ANSWER_GRACE_S)
        if answer is None:
            # The program took the slot down with it (killed its parent, say): a failure; a fresh slot follows.
            self._stop()
            return Verdict(False, "killed the sandbox", time.monotonic() - start)
        return Verdict(**answer)

    def _send(self, message: bytes) -> bool:
        """Hand a job to the zygote, starting it first if needed; False if it died before taking it."""
        if self.process is None:
            self.start()
        try:
            self.process.stdin.write(message)
            self.process.stdin.flush()
        except OSError:
            return False
        return self._read(time.monotonic() + _ANSWER_GRACE_S) is not None

    def _read(self, deadline: float) -> dict | None:
        """One length-prefixed JSON message from the zygote, or None on EOF or past `deadline`."""
        fd = self.process.stdout.fileno()
        data = b""
        need = 4
        while len(data) < need:
            try:
                if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    return None
                chunk = os.read(fd, need - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            if need == 4 and len(data) == 4:
                need += struct.unpack("!I", data)[0]
        return json.loads(data[4:])

    def _stop(self) -> str:
        """Kill the slot's process group and remove its directory; returns what it wrote to stderr."""
        error = ""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            error = self.process.stderr.read(2000).decode(errors="replace").strip()
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                with contextlib.suppress(OSError):  # stdin may hold a job the dead zygote never read
                    stream.close()
            self.process = None
        if self.uid is not None and self.mode == "none":
            _kill_uid(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)
        return error


@functools.cache
def _scratch_root() -> str | None:
    """Where slot directories go: /dev/shm when it is a roomy tmpfs (creating and removing a directory per
    program costs ~4 ms on a journaled disk, ~0.01 ms there), else the system temporary directory."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = shm.f_bavail * shm.f_frsize >= 1 << 30
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK) else None


def _processes_of(uid: int) -> int:
    """How many processes `uid` has now (RLIMIT_NPROC counts them all, not only the sandbox's)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _kill_uid(uid: int) -> None:
    subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_warned: set[str] = set()


class Sandbox:
    """A bounded pool of `workers` sandbox slots.

    `isolation` is "auto" (the strongest available: bwrap, then unshare, then none), or one of those three.
    `uid_base`: when running as root, slot i runs programs as uid `uid_base + i` (uids that own nothing).
    """

    def __init__(self, limits: SandboxLimits | None = None, workers: int = 0, isolation: str = "auto",
                 uid_base: int = 61000) -> None:
        if isolation not in ISOLATIONS:
            raise UserError(f"sandbox isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits = limits or SandboxLimits()
        self.mode = detect_isolation() if isolation == "auto" else isolation
        self.workers = workers or min(8, 2 * (os.cpu_count() or 1))
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        all_slots = [_Slot(i, self.mode, uid_base) for i in range(self.workers)]
        for slot in all_slots:
            self._slots.put(slot)
        who = "slot uid" if all_slots[0].uid is not None else ("root" if os.geteuid() == 0 else "us")
        if self.mode == "none" and who == "root":
            # Root without namespaces could kill or overwrite anything: never run untrusted code that way.
            raise RuntimeError("code sandbox: refusing to run programs as root without namespaces, since Python "
                               f"({sys.base_prefix}) is not readable by an unprivileged uid; install bubblewrap "
                               "(apt-get install bubblewrap) or util-linux `unshare`, or use a Python installation "
                               "outside root's home")
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        weakref.finalize(self, _shutdown, all_slots, self._executor)
        if self.mode in _WEAKER and self.mode not in _warned:
            _warned.add(self.mode)
            logger.warning(_WEAKER[self.mode].format(who=_WHO[who]))

    def run(self, sources: list[str]) -> list[Verdict]:
        """Run each program in its own sandboxed process, in parallel; verdicts in input order."""
        return list(self._executor.map(self._run_one, sources))

    def _run_one(self, source: str) -> Verdict:
        slot = self._slots.get()
        try:
            return slot.run(source, self.limits)
        finally:
            self._slots.put(slot)

    def close(self) -> None:
        """Stop every slot and remove its directory."""
        slots = []
        while not self._slots.empty():
            slots.append(self._slots.get())
        _shutdown(slots, self._executor)


def _shutdown(slots: list[_Slot], executor: ThreadPoolExecutor) -> None:
    executor.shutdown(wait=False)
    for slot in slots:
        slot._stop()

