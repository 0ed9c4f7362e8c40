"""`driftloop demo` as a user runs it: to the end (small, twice with the same seed: the same
story), and stopped with Ctrl-C."""

from __future__ import annotations

import json
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


SMALL = ("--days", "9", "--onset", "5", "--train-days", "3", "--rows-per-day", "800")
ROW = re.compile(r"\s+\d+\s+(stable|drift)\s")


def story(out: str) -> list[str]:
    """What the demo tells: the table's rows, what serves at the end, the decisions (with
    their reasons). None of it is a wall-clock stamp, a port or a path."""
    lines = out.splitlines()
    keep = [line for line in lines if ROW.match(line) or line.startswith("  serving now:")]
    for i, line in enumerate(lines):
        if line.startswith("  decision:"):
            keep.append(line)
            if i + 1 < len(lines) and lines[i + 1].startswith("    reasons:"):
                keep.append(lines[i + 1])
    return keep


def check_run(home: Path, out: str) -> None:
    assert not (home / "leftover").exists()
    table = [line for line in out.splitlines() if ROW.match(line)]
    assert len(table) == 6
    drift_days = [line for line in table if " drift " in line]
    assert any("!degraded" in line for line in drift_days), out
    assert all(" 0  " in line.split("v")[0] for line in table)  # no failed request, any day
    promotions = [line for line in table if "promoted v2 over v1" in line]
    assert len(promotions) == 1, out  # on the day it was decided, and on no other day
    assert "decision: promoted v2 vs v1" in out and "CI [" in out, out
    assert "drift: share of the feature columns" in out and "base: that version's" in out
    live = re.search(r"serving now: churn v(\d+) \(@champion\)", out)
    assert live and int(live.group(1)) >= 2, out  # a later cycle may have promoted v3 too
    assert f"DRIFTLOOP_HOME={home} driftloop ui" in out
    assert (home / "reports" / "demo-metric.png").stat().st_size > 10_000
    assert list((home / "reports").rglob("*.html"))
    assert not any(listening(u) for u in urls(out)), "the demo left a service running"


def test_the_same_seed_tells_the_same_story_twice(tmp_path: Path):
    """Two runs at once (each loads the machine for the other): in simulated time they still
    make the same decisions on the same days, to the last digit."""
    homes = [tmp_path / run / "demo-home" for run in ("a", "b")]
    (homes[0] / "leftover").mkdir(parents=True)  # a previous run's state is wiped, not reused
    homes[1].parent.mkdir()
    procs = [subprocess.Popen(driftloop_command("demo", "--home", str(home), *SMALL),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=home.parent) for home in homes]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=840)
        assert proc.returncode == 0, out + err
        outs.append(out)
    for home, out in zip(homes, outs, strict=True):
        check_run(home, out)
    first, second = story(outs[0]), story(outs[1])
    assert first == second, "\n".join(first + ["--- against ---"] + second)
    timelines = [json.loads((home / "reports" / "demo-timeline.json").read_text())
                 for home in homes]
    assert timelines[0] == timelines[1]
    events = [e for day in timelines[0]["days"] for e in day["events"]]
    assert any(e["outcome"] == "promoted" and e["challenger"] == 2 for e in events)
    assert timelines[0]["champion_moves"][0]["from"] == 1


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
