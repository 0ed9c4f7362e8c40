"""The prediction and label log: append-only Parquet, partitioned by day.

Layout under the log root (a local directory or any URI pyarrow.fs opens, such
as ``s3://bucket/prefix``)::

    predictions/model=<name>/date=YYYY-MM-DD/part-<ms>-<pid>-<seq>.parquet
    labels/date=YYYY-MM-DD/part-<ms>-<pid>-<seq>.parquet

Every process writes its own files (pid and a sequence in the name), so several
serving workers never contend. A day's window is read by listing only that
day's partitions. Prediction rows carry the reserved columns below plus one
column per feature; label rows carry ``request_id``, ``label`` (as text) and
``received_at``. Labels are joined at read time, the last one for a request
winning, so a label may arrive before or after its prediction is flushed.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import operator
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kernel.spec import RESERVED_COLUMNS

log = logging.getLogger(__name__)

_META_TYPES = {
    "ts": pa.timestamp("us", tz="UTC"), "request_id": pa.string(), "model_name": pa.string(),
    "model_version": pa.int64(), "score": pa.float64(), "prediction": pa.int8(),
    "shadow_version": pa.int64(), "shadow_score": pa.float64(), "latency_ms": pa.float32(),
}
_EPOCH_DAY = date(1970, 1, 1)
_REPEATING = frozenset({"model_version", "prediction", "shadow_version"})
_UNIQUE = frozenset({"request_id"})
_LABEL_SCHEMA = pa.schema([("request_id", pa.string()), ("label", pa.string()),
                           ("received_at", pa.timestamp("us", tz="UTC"))])


class LogStore:
    """Where the log lives: a pyarrow filesystem and a root path on it."""

    def __init__(self, uri: str | Path) -> None:
        text = str(uri)
        if "://" in text:
            self.fs, self.root = pafs.FileSystem.from_uri(text)
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, self.root, self.local = pafs.LocalFileSystem(), str(Path(text).resolve()), True
        self.uri = text

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def write(self, table: pa.Table, directory: str) -> str:
        self.fs.create_dir(directory, recursive=True)
        name = f"part-{int(time.time() * 1000)}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        final = f"{directory}/{name}"
        # Dictionary pages only where values repeat (names, categories, classes, versions):
        # on unique ids, times and scores they made the write about 2.5x slower and the
        # file about 15% larger.
        repeating = [f.name for f in table.schema
                     if f.name in _REPEATING or (pa.types.is_string(f.type)
                                                 and f.name not in _UNIQUE)]
        # Locally: write then rename, so readers never see a half-written file.
        target = f"{directory}/.{name}.tmp" if self.local else final
        pq.write_table(table, target, filesystem=self.fs, use_dictionary=repeating)
        if self.local:
            self.fs.move(target, final)
        return final

    def files(self, directory: str) -> list[str]:
        selector = pafs.FileSelector(directory, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith("."))

    def partitions(self, directory: str) -> list[str]:
        selector = pafs.FileSelector(directory, allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.Directory)


def keep_sample(request_id: str, rate: float) -> bool:
    """Deterministic sampling by request id, so a prediction and its label agree."""
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 < rate


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
                table = pa.Table.from_pylist(group, schema=_LABEL_SCHEMA)
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
        kind = _META_TYPES.get(name)
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


def _days(since: datetime, until: datetime) -> list[str]:
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


class WindowReader(Protocol):
    """What the controller reads from a log: a window of one model's predictions with
    labels joined. ``PredictionLogReader`` is one; the backtest's replay log is another."""

    def window(self, model: str, since: datetime, until: datetime, *,
               version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame: ...


class PredictionLogReader:
    """Windows of the prediction log, by time and model version, with labels joined."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def _read(self, files: Iterable[str], columns: list[str] | None = None) -> pa.Table | None:
        tables = []
        for path in files:
            if columns is None:
                table = pq.read_table(path, filesystem=self.store.fs)
            else:  # decode only the wanted columns (those this file has)
                names = pq.read_schema(path, filesystem=self.store.fs).names
                table = pq.read_table(path, filesystem=self.store.fs,
                                      columns=[c for c in columns if c in names])
            tables.append(table)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def _predictions_table(self, model: str, since: datetime, until: datetime, *,
                           version: int | None, columns: list[str] | None) -> pa.Table | None:
        """The window as one Arrow table: filtered and ordered by ``ts`` in Arrow, each
        step skipped when it would change nothing (a day's partition of one version,
        written in time order, needs neither), so a day of traffic is not copied twice."""
        base = self.store.path("predictions", f"model={model}")
        wanted = None if columns is None else list(dict.fromkeys([*columns, "ts", "model_version"]))
        files = [f for day in _days(since, until) for f in self.store.files(f"{base}/date={day}")]
        table = self._read(files, wanted)
        if table is None:
            return None
        ts = table["ts"]
        keep = pc.and_(pc.greater_equal(ts, pa.scalar(since, ts.type)),
                       pc.less(ts, pa.scalar(until, ts.type)))
        if version is not None:
            keep = pc.and_(keep, pc.equal(table["model_version"], int(version)))
        if keep.null_count or not pc.all(keep).as_py():
            table = table.filter(keep)
        stamps = table["ts"].to_numpy()
        if stamps.size > 1 and not bool(np.all(stamps[1:] >= stamps[:-1])):
            table = table.take(pc.sort_indices(table, [("ts", "ascending")]))  # stable
        return table

    def predictions(self, model: str, since: datetime, until: datetime, *,
                    version: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Rows with ``since <= ts < until`` (and of ``version`` when given), ordered by time."""
        table = self._predictions_table(model, since, until, version=version, columns=columns)
        if table is None:
            return pd.DataFrame(columns=list(_META_TYPES))
        return table.to_pandas()

    def labels(self, *, since: datetime | None = None, as_of: datetime | None = None) -> pd.DataFrame:
        """Labels received in ``[since, as_of]``, the last per request id."""
        base = self.store.path("labels")
        days = [p.removeprefix("date=") for p in self.store.partitions(base)]
        if since is not None:
            days = [d for d in days if d >= since.date().isoformat()]
        if as_of is not None:
            days = [d for d in days if d <= as_of.date().isoformat()]
        table = self._read(f for d in days for f in self.store.files(f"{base}/date={d}"))
        if table is None:
            return pd.DataFrame({"request_id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                                 "received_at": pd.Series(dtype="datetime64[us, UTC]")})
        frame = table.to_pandas()
        if as_of is not None:
            frame = frame[frame["received_at"] <= pd.Timestamp(as_of)]
        frame = frame.sort_values("received_at", kind="stable")
        return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               labels_as_of: datetime | None = None, columns: list[str] | None = None,
               categorical: Sequence[str] = ()) -> pd.DataFrame:
        """Predictions in the window with ``label`` and ``label_received_at`` joined (missing
        where none).

        ``labels_as_of`` hides labels received later (backtests and replays must pass it).
        ``columns`` limits the prediction columns read (``ts`` and ``model_version`` always
        come; ``request_id`` is read for the join and kept only when asked for).
        ``categorical`` columns come as pandas ``category`` (dictionary-encoded in Arrow):
        a day of repeated strings is then a column of small codes.
        """
        wanted = None if columns is None else [*columns, "request_id"]
        table = self._predictions_table(model, since, until, version=version, columns=wanted)
        labels = self.labels(since=since, as_of=labels_as_of)
        if table is None:
            frame = pd.DataFrame(columns=list(_META_TYPES) if columns is None
                                 else list(dict.fromkeys([*columns, "ts", "model_version"])))
            frame["label"] = pd.Series(dtype=object)
            frame["label_received_at"] = pd.Series(dtype="datetime64[us, UTC]")
            return frame
        # A hash lookup of each request id among the labels' (Arrow, in C++), then a take:
        # the prediction rows keep their order and nothing is merged in pandas.
        at = pc.index_in(table["request_id"], value_set=pa.array(labels["request_id"], pa.string()))
        table = table.append_column("label", pa.array(labels["label"], pa.string()).take(at))
        table = table.append_column("label_received_at", pa.array(
            labels["received_at"], pa.timestamp("us", tz="UTC")).take(at))
        if columns is not None and "request_id" not in columns:
            table = table.drop_columns(["request_id"])
        for name in categorical:
            at_column = table.schema.get_field_index(name)
            if at_column >= 0 and not pa.types.is_dictionary(table.schema.field(name).type):
                table = table.set_column(at_column, name, pc.dictionary_encode(table[name]))
        return table.to_pandas()


def open_log(uri: str | Path) -> tuple[LogStore, PredictionLogReader]:
    store = LogStore(uri)
    return store, PredictionLogReader(store)


__all__ = ["RESERVED_COLUMNS", "LogStore", "PredictionLogReader", "PredictionLogWriter",
           "WindowReader", "WriterStats", "keep_sample", "open_log"]
