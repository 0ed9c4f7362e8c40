"""Starting driftloop's own services as child processes and stopping them cleanly.

Used by ``driftloop demo`` and the end-to-end tests: free loopback ports, readiness by
polling (never a fixed sleep), and a group that stops every child on exit, on an error
and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def driftloop_command(*args: str) -> list[str]:
    """The ``driftloop`` console script next to this interpreter (or ``python -m``)."""
    script = Path(sys.executable).parent / "driftloop"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "driftloop.cli", *args]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Children started here are stopped by ``stop()`` (SIGTERM, then SIGKILL)."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, cwd=cwd,
                                    start_new_session=True)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def stop(self, child: Child | None = None, *, timeout: float = 20.0,
             sig: int = signal.SIGTERM) -> None:
        targets = [child] if child else list(reversed(self.children))
        for c in targets:
            if c.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, sig)
        for c in targets:
            try:
                c.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait(timeout=5)
            if child is None or c is child:
                with contextlib.suppress(ValueError):
                    self.children.remove(c)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1,
               child: Child | None = None) -> None:
    """Poll ``check`` until it is true; raise TimeoutError naming ``what`` (with the child's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}) while waiting for "
                               f"{what}:\n{child.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    detail = f"\n{child.tail()}" if child is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def wait_http(url: str, *, timeout: float, child: Child | None = None,
              status: int = 200) -> None:
    def ok() -> bool:
        return httpx.get(url, timeout=2.0).status_code == status

    wait_until(ok, timeout=timeout, what=f"GET {url} -> {status}", child=child)
