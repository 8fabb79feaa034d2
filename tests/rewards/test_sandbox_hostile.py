"""One hostile program per sandbox guarantee: each scores 0, nothing escapes or is left running, we survive."""

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from rewards import sandbox as sandbox_module
from rewards.sandbox import Sandbox, SandboxLimits, _readable_by_others, detect_isolation

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
LEFTOVER = "pt-leftover"  # process name hostile programs give to what they leave behind
# Renames the calling process so a leftover is recognisable in /proc from outside any namespace.
NAME_ME = f"import ctypes; ctypes.CDLL(None).prctl(15, {LEFTOVER.encode()!r}, 0, 0, 0)\n"


def leftovers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == LEFTOVER:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.fixture
def listener():
    """A loopback TCP listener in our network namespace; `accepted` records every connection it gets."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def hostile_programs(marker: str, port: int) -> dict[str, str]:
    home, cwd = Path.home() / marker, Path.cwd() / marker
    me = os.getpid()
    return {
        "infinite loop": "while True:\n    pass",
        "sleep forever": "import time\ntime.sleep(10**6)",
        "many forks": NAME_ME + "import os, time\nfor _ in range(10**4):\n    try:\n        os.fork()\n"
                      "    except OSError:\n        pass\ntime.sleep(30)",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 28))",
        "write to $HOME": f"open({str(home)!r}, 'w').write('pwned')",
        "write to caller's directory": f"open({str(cwd)!r}, 'w').write('pwned')",
        "loopback connection": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 1).sendall(b'x')",
        "secret environment variable": "import os\nassert os.environ['POSTTRAIN_TEST_SECRET'] == 's3cret'",
        "secret via /proc": f"assert b's3cret' in open('/proc/{me}/environ', 'rb').read()",
        "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)",
        "kill the caller": f"import os, signal\nos.kill({me}, signal.SIGKILL)",
        "kill the process group": "import os, signal\nos.killpg(0, signal.SIGKILL)",
        "kill everything": "import os, signal\nos.kill(-1, signal.SIGKILL)\nassert False",
        "stdout flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 1_000_000)",
        "detached daemon": NAME_ME + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                           "        time.sleep(10**6)\nassert False",
        "exit(0)": "exit(0)\nassert False",
        "sys.exit(0)": "import sys\nsys.exit(0)\nassert False",
        "os._exit(0)": "import os\nos._exit(0)\nassert False",
        "raise SystemExit": "raise SystemExit(0)",
        "quit()": "quit()",
    }


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(SandboxLimits(timeout=TIMEOUT, memory_mb=512), workers=4)
    yield box
    box.close()


def test_every_hostile_program_fails_and_nothing_escapes(sandbox, listener, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_TEST_SECRET", "s3cret")
    port, accepted = listener
    marker = f"posttrain-pwned-{uuid.uuid4().hex}"
    programs = hostile_programs(marker, port)
    start = time.monotonic()
    verdicts = dict(zip(programs, sandbox.run(list(programs.values())), strict=True))
    elapsed = time.monotonic() - start
    assert {name: v.status for name, v in verdicts.items() if v.passed} == {}
    assert all(v.time_s < TIMEOUT + 1.0 for v in verdicts.values()), {n: v.time_s for n, v in verdicts.items()}
    assert elapsed < 4 * TIMEOUT + 5  # 20 programs on 4 slots; the slow ones are bounded by TIMEOUT
    assert not (Path.home() / marker).exists() and not (Path.cwd() / marker).exists()
    assert accepted == []
    assert leftovers() == []
    # The sandbox still works after all that, and so do we.
    assert [v.passed for v in sandbox.run(["assert 1 + 1 == 2"] * 4)] == [True] * 4


def test_early_exits_report_why(sandbox):
    statuses = [v.status for v in sandbox.run(["exit(0)", "import os\nos._exit(0)", "1/0"])]
    assert statuses == ["early exit", "early exit", "failed: ZeroDivisionError: division by zero"]


def test_program_sees_only_its_own_empty_directory_and_scrubbed_environment(sandbox):
    program = (
        "import os\n"
        "assert os.listdir('.') == ['output.txt'], os.listdir('.')\n"
        "assert os.environ['HOME'] == os.getcwd() and 'POSTTRAIN_TEST_SECRET' not in os.environ\n"
        "open('scratch.txt', 'w').write('ok')\n"
    )
    assert [v.passed for v in sandbox.run([program] * 2)] == [True, True]


def test_temporary_directories_are_removed(sandbox):
    sandbox.run(["open('big.bin', 'wb').write(b'0' * 1000)"] * 8)
    scratch = Path(sandbox_module._scratch_root() or tempfile.gettempdir())
    slot_dirs = list(scratch.glob("posttrain-sandbox-*"))
    assert slot_dirs and all(list(d.iterdir()) == [] for d in slot_dirs)


def test_file_size_limit_stops_large_writes():
    box = Sandbox(SandboxLimits(timeout=TIMEOUT, max_file_mb=1), workers=1)
    try:
        verdicts = box.run(["open('f', 'wb').write(b'0' * (2 << 20))", "open('f', 'wb').write(b'0' * 1000)"])
    finally:
        box.close()
    assert [v.passed for v in verdicts] == [False, True]


def weaker_isolations() -> list[str]:
    """`unshare` always; `none` unless we are root with a Python other uids cannot read (refused, tested below)."""
    return ["unshare"] + ([] if os.geteuid() == 0 and not _readable_by_others(sys.base_prefix) else ["none"])


@pytest.mark.parametrize("isolation", weaker_isolations())
def test_weaker_isolation_still_bounds_and_cleans_up_with_one_warning(isolation, caplog):
    sandbox_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="rewards.sandbox"):
        box = Sandbox(SandboxLimits(timeout=1.0), workers=2, isolation=isolation)
        Sandbox(SandboxLimits(timeout=1.0), workers=1, isolation=isolation).close()
    try:
        programs = hostile_programs("unused", 9)
        names = ["infinite loop", "detached daemon", "exit(0)", "os._exit(0)", "kill the caller"]
        verdicts = box.run([programs[n] for n in names] + ["assert sum(range(4)) == 6"])
    finally:
        box.close()
    assert [v.passed for v in verdicts] == [False] * len(names) + [True]
    assert leftovers() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "install bubblewrap" in warnings[0]


def test_root_without_namespaces_refuses_when_programs_would_run_as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox_module, "_readable_by_others", lambda path: False)
    with pytest.raises(RuntimeError, match="refusing to run programs as root without namespaces.*bubblewrap"):
        Sandbox(workers=1, isolation="none")


def test_auto_isolation_prefers_bubblewrap_where_it_works():
    assert detect_isolation() in ("bwrap", "unshare", "none")
    if Path("/usr/bin/bwrap").exists():
        assert detect_isolation() == "bwrap"


def test_a_slot_killed_while_idle_is_restarted_without_blaming_the_next_program():
    box = Sandbox(SandboxLimits(timeout=TIMEOUT), workers=1)
    try:
        assert box.run(["pass"])[0].passed
        slot = box._slots.get()
        box._slots.put(slot)
        os.killpg(slot.process.pid, signal.SIGKILL)
        slot.process.wait()
        assert [v.passed for v in box.run(["assert 2 + 2 == 4"] * 2)] == [True, True]
    finally:
        box.close()
