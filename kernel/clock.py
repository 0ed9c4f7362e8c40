"""The clock every deployable stamps time with: the wall clock, or a simulated one.

Production reads the wall clock (``WallClock``). ``DRIFTLOOP_SIMULATED_CLOCK_FILE`` (demo and
testing only) names a file holding one ISO 8601 instant; a ``FileClock`` reads it at every
call, so whoever writes the file (``driftloop demo``) decides what time it is for the
processes that read it: the serving app's log rows and labels, the controller's cycles,
cooldowns, training windows and gate looks, a drift check's verdict. Time stands still between
two writes; it never moves by itself, so the same writes give the same story on any machine,
under any load. ``write_instant`` replaces the file atomically: a reader sees the old instant
or the new one, never half of one.
"""

from __future__ import annotations

import os
import time as _time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from kernel.errors import UsageError

CLOCK_ENV = "DRIFTLOOP_SIMULATED_CLOCK_FILE"


class ClockError(UsageError):
    """The simulated clock's file is missing or does not hold an instant (a setting that
    names a wrong file: one line and exit 2 from the CLI)."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    def time(self) -> float:
        """The current instant as epoch seconds (``time.time()``'s unit)."""
        ...


@dataclass(frozen=True)
class WallClock:
    """The wall clock: what production uses."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return _time.time()


@dataclass(frozen=True)
class FileClock:
    """The instant written in ``path``, read at every call (a few microseconds: demo only)."""

    path: Path

    def now(self) -> datetime:
        return read_instant(self.path)

    def time(self) -> float:
        return self.now().timestamp()


def clock_for(path: Path | str | None) -> Clock:
    """The simulated clock of ``path``, or the wall clock when no file is named."""
    return FileClock(Path(path)) if path else WallClock()


def read_instant(path: Path) -> datetime:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ClockError(f"simulated clock {path}: {exc.strerror or exc}") from None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ClockError(f"simulated clock {path}: {text[:60]!r} is not an ISO 8601 "
                         "instant") from None
    if at.tzinfo is None:
        raise ClockError(f"simulated clock {path}: {text!r} has no UTC offset")
    return at.astimezone(UTC)


def write_instant(path: Path, at: datetime) -> None:
    """Set the simulated clock of ``path`` to ``at`` (aware), atomically."""
    if at.tzinfo is None:
        raise ValueError("a simulated instant needs a timezone")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(at.astimezone(UTC).isoformat())
    os.replace(tmp, path)
