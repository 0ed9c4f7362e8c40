"""The writer: rows buffered in memory, written in batches by a background thread."""

from __future__ import annotations

import collections
import logging
import operator
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from monitoring.predlog.schema import LABEL_SCHEMA, META_TYPES
from monitoring.predlog.store import LogStore, keep_sample

log = logging.getLogger(__name__)

_EPOCH_DAY = date(1970, 1, 1)



@dataclass
class WriterStats:
    rows_written: int = 0
    labels_written: int = 0
    rows_dropped: int = 0
    flushes: int = 0
    flush_errors: int = 0
    last_flush_lag_seconds: float = 0.0
    buffered: int = 0


@dataclass
class PredictionLogWriter:
    """Buffers rows in memory and writes them in batches from a background thread.

    ``append`` is cheap and never blocks on I/O. Rows are flushed at least every
    ``flush_interval`` seconds and on ``close()``. A failed flush keeps its rows and
    retries on the next tick; only beyond ``max_buffer`` rows are the oldest dropped
    (and counted).
    """

    store: LogStore
    flush_interval: float = 1.0
    max_buffer: int = 2_000_000
    sample_rate: float = 1.0
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._labels: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def append(self, row: dict[str, Any]) -> bool:
        """Queue one prediction row (reserved columns plus features). False if sampled out.

        ``ts`` is an aware datetime or, cheaper on a request path, ``time.time()`` epoch
        seconds; both are stored as the same UTC timestamp."""
        if self.sample_rate < 1.0 and not keep_sample(row["request_id"], self.sample_rate):
            return False
        self._rows.append(row)
        if len(self._rows) > self.max_buffer:
            self._rows.popleft()
            self.stats.rows_dropped += 1
        return True

    def append_label(self, request_id: str, label: Any, received_at: datetime | None = None) -> None:
        self._labels.append({"request_id": str(request_id), "label": str(label),
                             "received_at": received_at or datetime.now(UTC)})

    def flush(self) -> int:
        """Write what is buffered now; returns rows written. Safe from any thread."""
        with self._flush_lock:
            written = self._flush_predictions() + self._flush_labels()
            self.stats.buffered = len(self._rows) + len(self._labels)
            return written

    def _drain(self, queue: collections.deque[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        while queue:
            out.append(queue.popleft())
        return out

    def _flush_predictions(self) -> int:
        rows = self._drain(self._rows)
        if not rows:
            return 0
        stamps = [r["ts"] for r in rows]
        if all(type(t) is float for t in stamps):
            # epoch seconds (the serving path's time.time()): day and age computed in numpy
            seconds = np.array(stamps)
            oldest = float(seconds.min())
            days = (seconds // 86_400).astype(np.int64)
            models = {r["model_name"] for r in rows}
            if len(models) == 1 and days[0] == days.min() == days.max():
                day = (_EPOCH_DAY + timedelta(days=int(days[0]))).isoformat()
                groups: dict[tuple[str, str], list[dict[str, Any]]] = {(models.pop(), day): rows}
            else:
                groups = collections.defaultdict(list)
                for row, day in zip(rows, days.tolist(), strict=True):
                    iso = (_EPOCH_DAY + timedelta(days=day)).isoformat()
                    groups[(row["model_name"], iso)].append(row)
        else:
            for row in rows:  # a mix: everything as aware datetimes
                if type(row["ts"]) is float:
                    row["ts"] = datetime.fromtimestamp(row["ts"], UTC)
            oldest = min(r["ts"] for r in rows).timestamp()
            groups = collections.defaultdict(list)
            for row in rows:
                groups[(row["model_name"], row["ts"].date().isoformat())].append(row)
        done: list[tuple[str, str]] = []
        try:
            for (model, day), group in groups.items():
                table = _prediction_table(group)
                self.store.write(table, self.store.path("predictions", f"model={model}", f"date={day}"))
                done.append((model, day))
                self.stats.rows_written += len(group)
        except Exception:
            self.stats.flush_errors += 1
            log.exception("prediction log flush failed; %d rows kept for the next try",
                          sum(len(g) for k, g in groups.items() if k not in done))
            for key, group in groups.items():
                if key not in done:
                    self._rows.extendleft(reversed(group))
            return sum(len(groups[k]) for k in done)
        self.stats.flushes += 1
        self.stats.last_flush_lag_seconds = time.time() - oldest
        return len(rows)

    def _flush_labels(self) -> int:
        rows = self._drain(self._labels)
        if not rows:
            return 0
        by_day: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for row in rows:
            by_day[row["received_at"].date().isoformat()].append(row)
        try:
            for day, group in sorted(by_day.items()):
                table = pa.Table.from_pylist(group, schema=LABEL_SCHEMA)
                self.store.write(table, self.store.path("labels", f"date={day}"))
                by_day[day] = []
                self.stats.labels_written += len(group)
        except Exception:
            self.stats.flush_errors += 1
            log.exception("label log flush failed; labels kept for the next try")
            for group in by_day.values():
                self._labels.extendleft(reversed(group))
            return 0
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def close(self) -> None:
        """Stop the thread and flush everything buffered (called on shutdown/SIGTERM)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for _ in range(3):
            self.flush()
            if not self._rows and not self._labels:
                break


def _columns(rows: list[dict[str, Any]]) -> dict[str, Sequence[Any]]:
    """Rows to columns. The common case (every row has the same keys) transposes in C
    (itemgetter + zip), which keeps the flush thread's hold on the GIL short."""
    keys = list(rows[0])
    try:
        if set(map(len, rows)) == {len(keys)}:  # counted in C
            picked = map(operator.itemgetter(*keys), rows)
            values = list(zip(*picked, strict=True)) if len(keys) > 1 else [
                [row[keys[0]] for row in rows]]
            return dict(zip(keys, values, strict=True))
    except KeyError:
        pass
    names = dict.fromkeys(k for row in rows for k in row)
    return {name: [row.get(name) for row in rows] for name in names}


def _prediction_table(rows: list[dict[str, Any]]) -> pa.Table:
    arrays, names = [], []
    for name, values in _columns(rows).items():
        kind = META_TYPES.get(name)
        if name == "ts" and values and type(values[0]) is float:
            # epoch seconds -> microseconds, converted in one vectorised step
            micros = np.rint(np.asarray(values, dtype=np.float64) * 1e6).astype(np.int64)
            array = pa.array(micros, type=pa.int64()).cast(kind)
        elif kind is None:
            array = pa.array(values, from_pandas=True)
            if pa.types.is_null(array.type):
                array = array.cast(pa.float64())
        else:
            array = pa.array(values, type=kind, from_pandas=True)
        arrays.append(array)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)
