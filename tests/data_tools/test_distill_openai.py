"""The `openai` teacher backend against a real `transformers serve` of the tiny checkpoint on loopback, and its
retry / failure handling against a scripted stub server."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_tools.distill import OpenAIBackend, SamplingConfig, TeacherConfig, parse_config, run_distill

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_checkpoint: Path) -> Iterator[tuple[str, str]]:
    """(base_url, model) of `transformers serve` on the tiny checkpoint; the server is killed at the end."""
    # The CLI sits next to this interpreter (the venv's bin/), which need not be on PATH (make test calls
    # .venv/bin/python directly); the dev extra installs transformers[serving], so a missing CLI is a failure.
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    assert cli, "the `transformers` CLI is not installed (pip install 'transformers[serving]')"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [cli, "serve", str(tiny_checkpoint), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not come up within 90 s"
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_checkpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        proc.stderr.close()


def test_openai_backend_samples_from_a_real_server(served: tuple[str, str], tmp_path: Path) -> None:
    base_url, model = served
    teacher = TeacherConfig(backend="openai", model=model, base_url=base_url, max_concurrency=2, max_retries=1,
                            request_timeout=60)
    backend = OpenAIBackend(teacher, SamplingConfig(n=2, temperature=1.0, max_new_tokens=8))
    out = backend.generate([[{"role": "user", "content": "What is 2+3?"}],
                            [{"role": "user", "content": "Reverse 'abc'."}]], [2, 1], seed=0)
    assert [len(s) for s in out] == [2, 1]
    assert all(g.error is None and isinstance(g.text, str) for s in out for g in s), out

    # A whole run through the served teacher: every sample generated, verified and counted.
    config = parse_config({
        "output_dir": str(tmp_path / "out"), "prompts": [{"builtin": "arithmetic", "rows": 3}], "system_prompt": None,
        "teacher": {"backend": "openai", "model": model, "base_url": base_url, "max_concurrency": 2},
        "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 8},
    })
    result = run_distill(config)
    assert result.stats["samples"] == 6 and result.stats["errors"] == 0
    assert result.stats["by_source"]["builtin:arithmetic"]["samples"] == 6


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next (status, body) of the server's script."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        status, body = self.server.script.pop(0) if self.server.script else (200, None)
        body = body or {"choices": [{"message": {"content": "<think>x</think>ok"}, "finish_reason": "stop"}],
                        "usage": {"completion_tokens": 3}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def stub() -> Iterator[http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.script, server.requests = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _backend(url: str, retries: int = 3) -> OpenAIBackend:
    teacher = TeacherConfig(backend="openai", model="m", base_url=url, max_retries=retries, request_timeout=5)
    return OpenAIBackend(teacher, SamplingConfig(n=1, temperature=0.0, max_new_tokens=4))


def test_retries_with_backoff_then_records_errors(stub: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{stub.server_address[1]}/v1"
    messages = [{"role": "user", "content": "hi"}]
    stub.script = [(429, {"error": "slow down"}), (503, {"error": "busy"})]
    result = _backend(url).request(messages, seed=0)
    assert (result.text, result.num_tokens, result.error, stub.requests) == ("<think>x</think>ok", 3, None, 3)

    stub.requests, stub.script = 0, [(400, {"error": "bad request"})]
    failed = _backend(url).request(messages, seed=0)
    assert failed.text is None and "HTTP 400" in failed.error and stub.requests == 1  # not retried

    stub.requests, stub.script = 0, [(500, {"error": "boom"})] * 5
    exhausted = _backend(url, retries=2).request(messages, seed=0)
    assert "gave up after 3 attempts: HTTP 500" in exhausted.error and stub.requests == 3

    refused = _backend(f"http://127.0.0.1:{_free_port()}/v1", retries=1).request(messages, seed=0)
    assert refused.text is None and "gave up after 2 attempts" in refused.error
