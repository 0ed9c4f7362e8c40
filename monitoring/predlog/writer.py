"""The writer: rows buffered in memory, written in batches by a background thread.

Every row appended is accounted for: written to the store, put in the spool (at close, when
the store cannot take it; replayed on the next start and after any successful flush), or
lost with a reason (``stats.LOST_REASONS``), counted in :class:`WriterStats` and named in the
shutdown line. Failed flushes are counted by reason (``stats.FLUSH_ERROR_REASONS``) and keep their
rows for the next try; :meth:`PredictionLogWriter.health` says whether the log is keeping up.
A process killed with SIGKILL loses what was buffered: at most ``flush_interval`` seconds of
rows while the store works (more, up to ``max_buffer`` rows, while it fails).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kernel.spec import DatasetSpec
from monitoring.predlog.schema import (
    META_TYPES,
    MULTICLASS_TYPES,
    escape_text,
    feature_types,
    label_table,
    prediction_table,
    salvage,
)
from monitoring.predlog.spool import Spool
from monitoring.predlog.stats import (
    WriterHealth,
    WriterStats,
    failure_reason,
)
from monitoring.predlog.store import LogStore, keep_sample

log = logging.getLogger(__name__)

_EPOCH_DAY = date(1970, 1, 1)
_REPLAY_FILES_PER_FLUSH = 16
_REPEAT_LOG_SECONDS = 60.0
# Rows converted to Arrow per step of a flush (the GIL is yielded between steps).
_ENCODE_CHUNK = 1024

#: The two kinds of rows, each under its own top directory of the store.
PREDICTIONS, LABELS = "predictions", "labels"

Rows = list[dict[str, Any]]
Builder = Callable[[Rows], pa.Table]


@dataclass
class PredictionLogWriter:
    """Buffers rows in memory and writes them in batches from a background thread.

    ``append`` is cheap and never blocks on I/O. Rows are flushed at least every
    ``flush_interval`` seconds and on ``close()``. A failed flush keeps its rows and
    retries on the next tick; only beyond ``max_buffer`` rows (and labels) are the oldest
    dropped, counted as lost ``buffer_full``. At ``close()`` what still cannot be written
    goes to ``spool_dir`` (lost ``shutdown`` when there is none or it fails too).
    ``health()`` fails while flushes fail or when buffered rows waited ``stall_after``
    seconds without a successful flush.
    """

    store: LogStore
    flush_interval: float = 1.0
    max_buffer: int = 2_000_000
    sample_rate: float = 1.0
    spool_dir: str | Path | None = None
    stall_after: float = 30.0
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._labels: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._types: dict[str, dict[str, pa.DataType]] = {}
        self._spool = Spool(self.spool_dir) if self.spool_dir is not None else None
        self._spool_checked = False
        self._started_at = time.time()
        self._closed = False
        self._logged_error_at: dict[str, float] = {}

    # --- the request path ---------------------------------------------------------------

    def register_spec(self, spec: DatasetSpec) -> None:
        """Declare the feature types of ``spec.model_name``'s rows (call when a version
        loads). Versions of a model share them: a new feature is added; a feature a later
        spec declares with another type keeps its first type (a day's files stay readable).
        A multi-class spec's reserved columns (``MULTICLASS_TYPES``: the class as text, the
        probability lists) are declared once any of its versions loads, and stay (a binary
        version's 1/0 are then stored as text, as the reader's "text wins" reads them)."""
        declared = feature_types(spec)
        with self._count_lock:
            types = dict(self._types.get(spec.model_name, META_TYPES))
            if spec.is_multiclass:
                types.update(MULTICLASS_TYPES)
            for name, kind in declared.items():
                if name in types and types[name] != kind:
                    log.warning("model %s: feature %s declared %s, keeping %s in the log",
                                spec.model_name, name, kind, types[name])
                    continue
                types[name] = kind
            self._types[spec.model_name] = types

    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def append(self, row: dict[str, Any]) -> bool:
        """Queue one prediction row (reserved columns plus features). False if sampled out.

        ``ts`` is an aware datetime or, cheaper on a request path, ``time.time()`` epoch
        seconds; both are stored as the same UTC timestamp."""
        if self.sample_rate < 1.0 and not self._keep(row["request_id"]):
            return False
        self._rows.append(row)
        if len(self._rows) > self.max_buffer:
            self._trim()
        return True

    def append_label(self, request_id: str, label: Any, *, model: str,
                     received_at: datetime | None = None) -> None:
        """Queue one label for ``model``'s prediction ``request_id`` (stored as text under
        ``labels/model=<model>/date=<received day>/``)."""
        self._labels.append({"request_id": str(request_id), "label": str(label),
                             "received_at": received_at or datetime.now(UTC), "model": model})
        if len(self._labels) > self.max_buffer:
            self._trim()

    def _keep(self, request_id: str) -> bool:
        try:
            return keep_sample(request_id, self.sample_rate)
        except UnicodeEncodeError:
            return keep_sample(escape_text(request_id), self.sample_rate)

    def _trim(self) -> None:
        with self._count_lock:
            for queue, lost in ((self._rows, self.stats.rows_lost),
                                (self._labels, self.stats.labels_lost)):
                extra = len(queue) - self.max_buffer
                for _ in range(max(extra, 0)):
                    queue.popleft()
                if extra > 0:
                    lost["buffer_full"] = lost.get("buffer_full", 0) + extra

    # --- health ---------------------------------------------------------------------------

    def health(self, now: float | None = None) -> WriterHealth:
        """``(ok, reason)``: not ok while the last flush failed, when buffered rows have
        waited ``stall_after`` seconds since the last successful flush, when the flush
        thread died, or after close."""
        now = time.time() if now is None else now
        s = self.stats
        buffered = len(self._rows) + len(self._labels)
        if self._closed:
            return WriterHealth(False, "the prediction log writer is closed")
        if self._thread is not None and not self._thread.is_alive():
            return WriterHealth(False, "the prediction log's flush thread is not running")
        if s.last_error is not None:
            return WriterHealth(False, f"prediction log flush failing ({s.last_error}); "
                                       f"{buffered} rows buffered")
        since = s.last_flush_ok_at if s.last_flush_ok_at is not None else self._started_at
        if buffered and now - since > self.stall_after:
            return WriterHealth(False, f"nothing written to the prediction log for "
                                       f"{now - since:.0f}s; {buffered} rows buffered")
        return WriterHealth(True, "ok")

    def summary(self) -> str:
        """The shutdown line's numbers: written, spooled and lost (by reason)."""
        s = self.stats

        def lost(counts: dict[str, int]) -> str:
            total = sum(counts.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
            return f"{total} lost" + (f" ({detail})" if detail else "")

        where = f" to {self.spool_dir}" if self.spool_dir is not None else ""
        return (f"log rows: {s.rows_written} written, {s.rows_spooled} spooled{where}, "
                f"{lost(s.rows_lost)}; labels: {s.labels_written} written, "
                f"{s.labels_spooled} spooled, {lost(s.labels_lost)}")

    # --- flushing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered now (and replay the spool once the store takes writes);
        returns rows and labels written. Safe from any thread."""
        with self._flush_lock:
            if not self._spool_checked:
                self._check_spool()
            rows_ok, rows = self._flush_predictions()
            labels_ok, labels = self._flush_labels()
            if rows_ok and labels_ok:
                self.stats.last_flush_ok_at = time.time()
                self.stats.last_error = None
                if self.stats.spool_pending_rows:
                    self._replay()
            self.stats.buffered = len(self._rows) + len(self._labels)
            return rows + labels

    def _failed(self, exc: BaseException, what: str, kept: int) -> None:
        reason = failure_reason(exc)
        s = self.stats
        s.flush_errors += 1
        s.flush_errors_by_reason[reason] = s.flush_errors_by_reason.get(reason, 0) + 1
        repeated = s.last_error is not None and s.last_error.startswith(reason)
        s.last_error = f"{reason}: {exc}"
        now = time.monotonic()
        if not repeated or now - self._logged_error_at.get(what, -1e9) >= _REPEAT_LOG_SECONDS:
            self._logged_error_at[what] = now  # once a minute while the same failure lasts
            log.error("%s flush failed (%s: %s); %d kept for the next try (%d failed "
                      "flushes so far)", what, reason, exc, kept, s.flush_errors)

    def _unencodable(self, lost: dict[str, int], escaped: int, dropped: int) -> None:
        self.stats.values_escaped += escaped
        if escaped:
            log.warning("%d log rows had text that is not UTF-8; stored escaped", escaped)
        if dropped:
            with self._count_lock:
                lost["unencodable"] = lost.get("unencodable", 0) + dropped
            s = self.stats
            s.flush_errors_by_reason["encode"] = s.flush_errors_by_reason.get("encode", 0) + 1
            s.flush_errors += 1
            log.error("%d log rows could not be stored and were left out (unencodable)", dropped)

    def _requeue(self, queue: collections.deque[dict[str, Any]], rows: Rows) -> None:
        queue.extendleft(reversed(rows))
        if len(queue) > self.max_buffer:
            self._trim()

    def _flush_predictions(self) -> tuple[bool, int]:
        rows = _drain(self._rows)
        if not rows:
            return True, 0
        groups, oldest = self._group_predictions(rows)
        ok, written = self._write_groups(PREDICTIONS, sorted(groups.items()))
        if ok:
            self.stats.flushes += 1
            if oldest is not None:
                self.stats.last_flush_lag_seconds = time.time() - oldest
        return ok, written

    def _flush_labels(self) -> tuple[bool, int]:
        rows = _drain(self._labels)
        if not rows:
            return True, 0
        return self._write_groups(LABELS, sorted(_group_labels(rows).items()))

    def _write_groups(self, kind: str, pending: list[tuple[tuple[str, str], Rows]]
                      ) -> tuple[bool, int]:
        """Write each (model, day) group of ``kind`` as one file. On the first failure of
        the store, the group and all after it go back to the front of the buffer (the next
        flush retries them); a group the store cannot encode is counted lost, never retried."""
        queue, lost = self._queue(kind)
        what = "prediction log" if kind == PREDICTIONS else "label log"
        written = 0
        while pending:
            (model, day), group = pending[0]
            table, kept = self._encode(group, self._builder(kind, model), lost)
            try:
                if table is not None:
                    self.store.write(table, self.store.path(kind, f"model={model}",
                                                            f"date={day}"))
            except Exception as exc:
                if failure_reason(exc) == "encode":  # this batch, not the store: never retried
                    log.exception("%s: %d rows the store cannot encode", what, len(kept))
                    self._unencodable(lost, 0, len(kept))
                    pending.pop(0)
                    continue
                left = kept + [r for _, g in pending[1:] for r in g]
                self._requeue(queue, left)
                self._failed(exc, what, len(left))
                return False, written
            pending.pop(0)
            written += len(kept)
            if kind == PREDICTIONS:
                self.stats.rows_written += len(kept)
            else:
                self.stats.labels_written += len(kept)
        return True, written

    def _queue(self, kind: str) -> tuple[collections.deque[dict[str, Any]], dict[str, int]]:
        """The buffer of ``kind`` and its lost-rows counts."""
        if kind == PREDICTIONS:
            return self._rows, self.stats.rows_lost
        return self._labels, self.stats.labels_lost

    def _builder(self, kind: str, model: str) -> Builder:
        return self._prediction_builder(model) if kind == PREDICTIONS else label_table

    def _prediction_builder(self, model: str) -> Builder:
        types = self._types.get(model, META_TYPES)
        return lambda rows: prediction_table(rows, types)

    def _encode(self, rows: Rows, build: Builder, lost: dict[str, int]
                ) -> tuple[pa.Table | None, Rows]:
        """The table for ``rows`` and the rows in it: all of them, unless some could not be
        stored (escaped, or left out and counted as lost ``unencodable``).

        Python objects become Arrow arrays while holding the GIL, which the request path
        needs too: a second's rows at a few thousand requests a second held it for 7-40 ms
        at a time, a stall in the p99 of every request that arrived meanwhile. So the rows
        are converted ``_ENCODE_CHUNK`` at a time (under a millisecond each), yielding the
        GIL in between, and the chunks are joined without a copy."""
        if len(rows) <= _ENCODE_CHUNK:
            return self._encode_chunk(rows, build, lost)
        tables, kept = [], []
        for start in range(0, len(rows), _ENCODE_CHUNK):
            table, chunk = self._encode_chunk(rows[start:start + _ENCODE_CHUNK], build, lost)
            if table is not None:
                tables.append(table)
                kept.extend(chunk)
            time.sleep(0)  # let the event loop run between chunks
        if not tables:
            return None, []
        try:  # columns inferred per chunk (undeclared extras) may differ: widen if they can
            return pa.concat_tables(tables, promote_options="permissive"), kept
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return self._encode_chunk(kept, build, lost)  # one conversion infers one type

    def _encode_chunk(self, rows: Rows, build: Builder, lost: dict[str, int]
                      ) -> tuple[pa.Table | None, Rows]:
        try:
            return build(rows), rows
        except Exception:
            table, kept, escaped, dropped = salvage(rows, build)
            self._unencodable(lost, escaped, dropped)
            return table, kept

    def _group_predictions(self, rows: Rows) -> tuple[dict[tuple[str, str], Rows], float | None]:
        try:
            return _group(rows)
        except Exception:  # a row without a usable ts or model_name: group one by one
            usable = []
            for row in rows:
                try:
                    _group([dict(row)])
                    usable.append(row)
                except Exception:
                    pass
            self._unencodable(self.stats.rows_lost, 0, len(rows) - len(usable))
            return _group(usable) if usable else ({}, None)

    # --- the spool ------------------------------------------------------------------------

    def _check_spool(self) -> None:
        self._spool_checked = True
        if self._spool is None:
            return
        try:
            self._spool.recover()
            self.stats.spool_pending_rows = self._spool.pending_rows()
        except OSError as exc:
            log.error("cannot read the log spool %s: %s", self.spool_dir, exc)
        if self.stats.spool_pending_rows:
            log.info("log spool %s holds %d rows; replaying them into the store",
                     self.spool_dir, self.stats.spool_pending_rows)

    def _replay(self) -> None:
        assert self._spool is not None
        result = self._spool.replay(self.store, max_files=_REPLAY_FILES_PER_FLUSH)
        self.stats.rows_replayed += result.rows.get("predictions", 0)
        self.stats.labels_replayed += result.rows.get("labels", 0)
        with self._count_lock:
            for kind, n in result.corrupt.items():
                lost = self.stats.rows_lost if kind == "predictions" else self.stats.labels_lost
                lost["spool_corrupt"] = lost.get("spool_corrupt", 0) + n
        if result.error is not None:
            self._failed(result.error, "log spool replay", self.stats.spool_pending_rows)
        with contextlib.suppress(OSError):
            self.stats.spool_pending_rows = self._spool.pending_rows()

    def _spool_remaining(self) -> None:
        """At close: what the store did not take goes to the spool, else is lost."""
        for kind in (PREDICTIONS, LABELS):
            queue, lost = self._queue(kind)
            rows = _drain(queue)
            if not rows:
                continue
            groups = (self._group_predictions(rows)[0] if kind == PREDICTIONS
                      else _group_labels(rows))
            for (model, day), group in groups.items():
                table, kept = self._encode(group, self._builder(kind, model), lost)
                if table is None:
                    continue
                try:
                    if self._spool is None:
                        raise OSError("no spool directory is configured")
                    self._spool.put(f"{kind}/model={model}/date={day}", table)
                except Exception as exc:
                    with self._count_lock:
                        lost["shutdown"] = lost.get("shutdown", 0) + len(kept)
                    log.error("%d %s rows could not be spooled and are lost: %s",
                              len(kept), kind, exc)
                    continue
                if kind == PREDICTIONS:
                    self.stats.rows_spooled += len(kept)
                else:
                    self.stats.labels_spooled += len(kept)
                self.stats.spool_pending_rows += len(kept)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # never let the flush thread die: the next tick retries
                log.exception("prediction log flush raised")

    def close(self) -> None:
        """Stop the thread, flush everything buffered, spool what the store does not take
        (called on shutdown/SIGTERM) and log the summary line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for _ in range(3):
            self.flush()
            if not self._rows and not self._labels:
                break
        with self._flush_lock:
            self._spool_remaining()
            self.stats.buffered = len(self._rows) + len(self._labels)
            self._closed = True
        s = self.stats
        incomplete = (s.rows_spooled or s.labels_spooled or any(s.rows_lost.values())
                      or any(s.labels_lost.values()))
        log.log(logging.WARNING if incomplete else logging.INFO, "prediction log closed: %s",
                self.summary())


def _drain(queue: collections.deque[dict[str, Any]]) -> Rows:
    return [queue.popleft() for _ in range(len(queue))]


def _group_labels(rows: Rows) -> dict[tuple[str, str], Rows]:
    """Labels by (model, UTC day received)."""
    groups: dict[tuple[str, str], Rows] = collections.defaultdict(list)
    for row in rows:
        groups[(row["model"], row["received_at"].date().isoformat())].append(row)
    return groups


def _group(rows: Rows) -> tuple[dict[tuple[str, str], Rows], float | None]:
    """Rows by (model, UTC day), and the oldest row's epoch seconds."""
    stamps = [r["ts"] for r in rows]
    if all(type(t) is float for t in stamps):
        # epoch seconds (the serving path's time.time()): day and age computed in numpy
        seconds = np.array(stamps)
        oldest = float(seconds.min())
        days = (seconds // 86_400).astype(np.int64)
        models = {r["model_name"] for r in rows}
        if len(models) == 1 and days[0] == days.min() == days.max():
            day = (_EPOCH_DAY + timedelta(days=int(days[0]))).isoformat()
            return {(models.pop(), day): rows}, oldest
        groups: dict[tuple[str, str], Rows] = collections.defaultdict(list)
        for row, number in zip(rows, days.tolist(), strict=True):
            groups[(row["model_name"], (_EPOCH_DAY + timedelta(days=number)).isoformat())
                   ].append(row)
        return groups, oldest
    for row in rows:  # a mix: everything as aware datetimes
        if type(row["ts"]) is float:
            row["ts"] = datetime.fromtimestamp(row["ts"], UTC)
    oldest = min(r["ts"] for r in rows).timestamp()
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["model_name"], row["ts"].date().isoformat())].append(row)
    return groups, oldest
