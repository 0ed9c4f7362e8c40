"""Both apps, as real processes on 127.0.0.1, against clients that hold connections open:
nothing sent, headers sent a byte at a time, a body that never finishes, and unauthenticated
50 MB bodies to every mutating endpoint. Each is a 4xx or a closed connection, never a 5xx
or a connection kept forever, and the server's memory does not grow with refused bodies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from driftloop.processes import free_port
from kernel.settings import CommonSettings
from kernel.spec import load_spec
from registry import open_registry
from training.generate import generate
from training.train import train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIMEOUTS = {"DRIFTLOOP_HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS": "1"}


def _start(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environ.update(env)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "driftloop.cli", *args, "--port",
                                 str(port)], cwd=ROOT, env=environ, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no answer on /healthz: " + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, psutil.Process]]]:
    home = tmp_path_factory.mktemp("slow-clients")
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    data = home / "churn.parquet"
    generate(2, rows_per_day=300, seed=3).to_parquet(data, index=False)
    train(spec, [data], open_registry(CommonSettings(home=home)), alias="champion", seed=0)
    env = {"DRIFTLOOP_HOME": str(home), **TIMEOUTS}
    serving, serving_port = _start(["serve"], {**env, "DRIFTLOOP_MODEL": spec.model_name,
                                               "DRIFTLOOP_FEEDBACK_TOKEN": "f",
                                               "DRIFTLOOP_ADMIN_TOKEN": "a"},
                                   home / "serving.log")
    controller, controller_port = _start(
        ["controller"], {**env, "DRIFTLOOP_CONTROLLER_TOKEN": "c",
                         "DRIFTLOOP_CONTROLLER_SPECS": str(ROOT / "examples/churn/spec.yaml")},
        home / "controller.log")
    try:
        yield {"serving": (serving_port, psutil.Process(serving.pid)),
               "controller": (controller_port, psutil.Process(controller.pid))}
    finally:
        for proc in (serving, controller):
            proc.terminate()
            proc.wait(timeout=30)


def _until_closed(sock: socket.socket, limit: float = 15) -> bytes:
    """What the server sends until it closes the connection (AssertionError if it does not
    within ``limit`` seconds, far above the 1 s timeouts)."""
    sock.settimeout(limit)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"connection still open after {limit} s: {got!r}") from None
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.parametrize("app", ["serving", "controller"])
def test_a_connection_that_sends_nothing_is_closed(apps, app: str) -> None:
    port, _ = apps[app]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer


@pytest.mark.parametrize("app", ["serving", "controller"])
def test_headers_sent_a_byte_at_a_time_are_cut_off(apps, app: str) -> None:
    port, _ = apps[app]
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > 15:
                    raise AssertionError("the server kept reading slow headers for 15 s")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer


@pytest.mark.parametrize(("app", "path", "token"), [
    ("serving", "/feedback", "f"), ("serving", "/predict", None),
    ("controller", "/retrain", "c"), ("controller", "/webhooks/alertmanager", "c")])
def test_a_body_that_never_finishes_is_refused_with_408(apps, app: str, path: str,
                                                        token: str | None) -> None:
    port, _ = apps[app]
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n").encode() + auth + b"\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b'{"model": "ch')  # and nothing more
        answer = _until_closed(sock)
    status = answer.split(b" ", 2)[1] if answer else b""
    assert status == b"408", answer  # the body deadline, not a worker held forever


MUTATING = [("serving", "/feedback"), ("serving", "/admin/reload"), ("controller", "/retrain"),
            ("controller", "/promote"), ("controller", "/rollback"),
            ("controller", "/verdicts"), ("controller", "/webhooks/alertmanager")]


def test_unauthenticated_50_mb_bodies_are_refused_before_they_are_read(apps) -> None:
    body = b"[" * (50 * 1024 * 1024)
    before = {app: proc.memory_info().rss for app, (_, proc) in apps.items()}
    for _ in range(3):
        for app, path in MUTATING:
            port, _ = apps[app]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                try:
                    r = client.post(path, content=body,
                                    headers={"content-type": "application/json"})
                except httpx.TransportError:
                    continue  # closed while we were still sending: refused, not read
                assert r.status_code == 401, (app, path, r.status_code, r.text[:200])
    for app, (_, proc) in apps.items():
        grown = proc.memory_info().rss - before[app]
        # 3 x 50 MB per endpoint were sent; a body held in memory would show as +50 MB
        assert grown < 30 * 1024 * 1024, (app, grown)
