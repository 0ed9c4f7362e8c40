"""`driftloop demo` as a user runs it: to the end (small), and stopped with Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from driftloop.processes import driftloop_command

pytestmark = pytest.mark.timeout(900)


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def urls(output: str) -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:\d+", output.split("[3/4]")[0])


def test_demo_runs_to_the_end_and_cleans_up(tmp_path: Path):
    home = tmp_path / "demo-home"
    (home / "leftover").mkdir(parents=True)  # a previous run's state is wiped, not reused
    proc = subprocess.run(
        driftloop_command("demo", "--home", str(home), "--days", "9", "--onset", "5",
                          "--train-days", "3", "--rows-per-day", "800"),
        capture_output=True, text=True, timeout=840, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert not (home / "leftover").exists()
    table = [line for line in out.splitlines() if re.match(r"\s+\d+\s+(stable|drift)\s", line)]
    assert len(table) == 6
    drift_days = [line for line in table if " drift " in line]
    assert any("!degraded" in line for line in drift_days), out
    assert all(" 0  " in line.split("v")[0] for line in table)  # no failed request, any day
    assert "promoted v2 vs v1" in out and "CI [" in out, out
    live = re.search(r"serving now: churn v(\d+) \(@champion\)", out)
    assert live and int(live.group(1)) >= 2, out  # a later cycle may have promoted v3 too
    assert f"DRIFTLOOP_HOME={home} driftloop ui" in out
    assert (home / "reports" / "demo-metric.png").stat().st_size > 10_000
    assert list((home / "reports").rglob("*.html"))
    assert not any(listening(u) for u in urls(out)), "the demo left a service running"


def test_ctrl_c_stops_every_process(tmp_path: Path):
    proc = subprocess.Popen(driftloop_command("demo", "--home", str(tmp_path / "h")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    seen = ""
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while "[3/4]" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "[3/4]" in seen, seen
    services = urls(seen)
    assert len(services) == 2 and all(listening(u) for u in services)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest
    assert not any(listening(u) for u in services)
