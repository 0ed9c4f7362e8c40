"""What a prediction log writer counts, and how a store's failure is named.

Every row appended to a writer is accounted for in :class:`WriterStats`: written, spooled, lost
with a reason (``LOST_REASONS``) or still buffered. Failed flushes are counted by reason
(``FLUSH_ERROR_REASONS``, from :func:`failure_reason`); the serving metrics export all of it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

#: Why rows were lost (``WriterStats.rows_lost`` / ``labels_lost``, a bounded label set).
LOST_REASONS = ("buffer_full", "unencodable", "shutdown", "spool_corrupt")
#: Why a flush failed (``WriterStats.flush_errors_by_reason``).
FLUSH_ERROR_REASONS = ("no_space", "read_only", "permission", "io", "encode", "other")

def failure_reason(exc: BaseException) -> str:
    """One of ``FLUSH_ERROR_REASONS`` for a store's exception."""
    if isinstance(exc, UnicodeError | pa.ArrowInvalid | pa.ArrowTypeError):
        return "encode"
    if isinstance(exc, OSError):
        code, text = exc.errno, str(exc)
        if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
            return "no_space"
        if code == errno.EROFS or "Read-only file system" in text:
            return "read_only"
        if code in (errno.EACCES, errno.EPERM) or "ermission denied" in text:
            return "permission"
        return "io"
    return "other"


@dataclass
class WriterStats:
    """Running totals of one writer. Invariant, per kind (rows, labels): appended ==
    written + spooled + lost + still buffered (replayed rows came from an earlier spool)."""

    rows_written: int = 0
    labels_written: int = 0
    flushes: int = 0
    flush_errors: int = 0
    last_flush_lag_seconds: float = 0.0
    buffered: int = 0
    flush_errors_by_reason: dict[str, int] = field(default_factory=dict)
    rows_lost: dict[str, int] = field(default_factory=dict)
    labels_lost: dict[str, int] = field(default_factory=dict)
    rows_spooled: int = 0
    labels_spooled: int = 0
    rows_replayed: int = 0
    labels_replayed: int = 0
    spool_pending_rows: int = 0  # rows and labels waiting in the spool directory
    values_escaped: int = 0  # rows stored with unencodable text escaped
    last_flush_ok_at: float | None = None  # epoch seconds of the last flush that failed nothing
    last_error: str | None = None  # "<reason>: <message>" while flushes fail, else None

    @property
    def rows_dropped(self) -> int:
        """Rows dropped because the buffer was full (the oldest first)."""
        return self.rows_lost.get("buffer_full", 0)


class WriterHealth(NamedTuple):
    ok: bool
    reason: str
