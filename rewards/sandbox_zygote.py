"""The process inside one sandbox slot: forks one child per program, judges it, and cleans up after it.

Standard library only: `rewards.sandbox` passes this file's text to `python -I -c` inside the slot's namespaces.
Protocol on fds 0/1: 4-byte big-endian length + JSON; a first `{"ready": true}` once warm, then per job in,
`{"started": true}` and the verdict out. argv[1] is JSON: `workdir`, `uid` (run programs as this uid, or null),
`cleanup` ("namespace": kill every other process of our pid namespace; "uid": kill every process of `uid`;
"descendants": kill every process descended from us, which orphans re-parent to as we are a subreaper).
"""

# Warm the modules test programs use most, so a forked child does not pay for importing them.
import bisect  # noqa: E401,F401,E501
import builtins
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

WORKDIR = UID = CLEANUP = None  # set by main() from argv[1]
MB = 1 << 20
EARLY_EXIT = 3


def read_message():
    """The next job from the parent, or None once it has gone."""
    header = read_exactly(4)
    return json.loads(read_exactly(struct.unpack("!I", header)[0])) if header else None


def read_exactly(n):
    """n bytes from fd 0, or b"" at end of file."""
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def send(message):
    """One length-prefixed JSON message to the parent on fd 1."""
    data = json.dumps(message).encode()
    os.write(1, struct.pack("!I", len(data)) + data)


def child(job, workdir, report_fd, token):
    """Run the program in this forked process; write `token` to `report_fd` only if it ran to its end."""
    try:
        os.setsid()
        os.chdir(workdir)
        out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # Nothing of the zygote (its protocol pipe above all) stays reachable from the program.
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, 1 << 16)
        cpu = max(1, int(job["timeout"] + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (job["memory_mb"] * MB, job["memory_mb"] * MB))
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["max_file_mb"] * MB, job["max_file_mb"] * MB))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (job["max_processes"], job["max_processes"]))
        if UID is not None:
            os.setgroups([])
            os.setgid(UID)
            os.setuid(UID)
        os.environ.clear()
        os.environ.update(HOME=workdir, TMPDIR=workdir, PATH="/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8")
        sys.argv = ["solution.py"]
        code = compile(job["source"], "solution.py", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
        sys.stdout.flush()
        sys.stderr.flush()
    except SystemExit as exc:
        # exit(0) before the tests ran must not pass: only reaching the end does.
        print(f"\nearly exit: SystemExit({exc.code!r})", file=sys.stderr, flush=True)
        os._exit(EARLY_EXIT)
    except BaseException:  # noqa: BLE001 - any exception is a failed program
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os.write(report_fd, token)
    os._exit(0)


def kill_leftovers(pid):
    """Kill every process the program started, however it detached itself, and wait until they are gone."""
    for _ in range(2000):  # ~2 s at most: SIGKILL cannot be blocked, dying only takes the kernel a moment
        alive = survivors()
        if not alive:
            return
        if CLEANUP == "namespace":
            # We are pid 1 or 2 of our own pid namespace: -1 reaches only the program's processes.
            kill(-1)
        elif CLEANUP == "uid":
            helper = os.fork()
            if helper == 0:
                os.setuid(UID)
                kill(-1)  # every process of UID but this helper
                os._exit(0)
            os.waitpid(helper, 0)
        else:
            # We are a child subreaper: what the program left behind is re-parented to us as it is orphaned.
            for child_pid in alive:
                kill(child_pid)
        reap()
        time.sleep(0.001)


def survivors():
    """The processes still to go (zombies included, until their parent reaps them)."""
    if CLEANUP == "descendants":
        return own_children()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, me):
            if CLEANUP == "namespace" or real_uid(name) == UID:
                found.append(int(name))
    return found


def real_uid(pid):
    """The real uid of `pid`, or None if it is gone."""
    # Not the owner of /proc/<pid>: that is root for any process made non-dumpable by setuid.
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None


def kill(pid):
    """SIGKILL `pid` (or every reachable process, for -1), ignoring ones already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def own_children():
    """Pids of our direct children (orphans we adopted as subreaper included)."""
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def reap():
    """Collect every child that has exited, without waiting for the others."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def output_tail(workdir):
    """The last line the program wrote (stdout and stderr share a file), at most 200 characters."""
    try:
        with open(os.path.join(workdir, "output.txt"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 400))
            return [line[:200] for line in f.read().decode("utf-8", "replace").strip().splitlines()[-1:]]
    except (OSError, IndexError):
        return []


def run(job):
    """Run one program in a fresh directory and return its verdict as a dict."""
    workdir = tempfile.mkdtemp(dir=WORKDIR)
    if UID is not None:
        os.chown(workdir, UID, UID)
    token = os.urandom(16)
    report_r, report_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        child(job, workdir, report_w, token)
    os.close(report_w)
    pidfd = os.pidfd_open(pid)
    finished = select.select([pidfd], [], [], job["timeout"])[0]
    if not finished:
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    elapsed = time.monotonic() - start
    os.set_blocking(report_r, False)
    try:
        reported = os.read(report_r, 64)
    except BlockingIOError:
        reported = b""
    os.close(report_r)
    os.close(pidfd)
    kill_leftovers(pid)
    tail = output_tail(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    passed = bool(finished) and reported == token and os.waitstatus_to_exitcode(status) == 0
    if passed:
        verdict = "passed"
    elif not finished:
        verdict = "timeout"
    elif os.WIFSIGNALED(status):
        verdict = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    elif os.waitstatus_to_exitcode(status) in (0, EARLY_EXIT):  # os._exit(0) never reached the report
        verdict = "early exit"
    else:
        verdict = "failed" + (f": {tail[0]}" if tail else "")
    return {"passed": passed, "status": verdict, "time_s": elapsed}


def main():
    """Serve jobs until the parent closes our stdin."""
    global WORKDIR, UID, CLEANUP
    config = json.loads(sys.argv[1])
    WORKDIR, UID, CLEANUP = config["workdir"], config["uid"], config["cleanup"]
    if CLEANUP == "namespace" and os.getpid() > 2:
        # kill(-1) outside a fresh pid namespace would reach the whole machine.
        sys.exit("sandbox zygote: cleanup 'namespace' needs a new pid namespace")
    import ctypes

    # Not dumpable: a program running as our uid cannot ptrace us or open our /proc fds.
    libc = ctypes.CDLL(None)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    if CLEANUP == "descendants":
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 36
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    send({"ready": True})
    while (job := read_message()) is not None:
        send({"started": True})  # lets the parent tell "died before the program ran" from "killed by it"
        send(run(job))


if __name__ == "__main__":
    main()
