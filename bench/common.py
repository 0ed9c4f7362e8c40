"""Helpers shared by the benchmarks: timing a command with its peak memory, machine facts."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mib: float
    returncode: int
    output: str


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Wall time and peak resident memory (GNU time, the process and its children)."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    elapsed = time.perf_counter() - started
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    rss = int(match.group(1)) / 1024 if match else float("nan")
    return Measured(elapsed, rss, proc.returncode, proc.stdout + proc.stderr)


def machine() -> str:
    import importlib.metadata as md

    versions = ", ".join(f"{n} {md.version(n)}" for n in ("mlflow", "scikit-learn", "pandas"))
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{versions}; {datetime.now(UTC):%Y-%m-%d}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as ``uptime`` prints them ("0.52, 0.31, 0.20")."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def write_section(name: str, text: str) -> Path:
    out = ROOT / "docs" / "bench" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.rstrip() + "\n")
    return out
