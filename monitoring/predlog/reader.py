"""The readers: windows of one model's predictions, by time and version, labels joined.

Each file is opened once (its footer and the wanted columns that exist in it). A file that
cannot be read (corrupt, truncated, not a log file) is skipped, logged and counted in
``stats.files_skipped`` by reason; it never fails the window. Files whose column types differ
(an all-null categorical once written as double) are cast to one type per column, text
winning. A partition is read as its compacted files plus the flush files no compacted file's
manifest names, so rows are never counted twice while compaction runs (monitoring/predlog/
compact.py); a file that vanishes between the listing and the read makes the partition be
listed again. ``IncrementalLogReader`` keeps what it read and opens only new files.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kernel.errors import DataError
from monitoring.predlog.schema import LABEL_SCHEMA, META_TYPES, MULTICLASS_TYPES
from monitoring.predlog.store import FileEntry, LogStore, decode_manifest

log = logging.getLogger(__name__)

FILE_COLUMN = "_file"  # labels: the flush file a row came from (ties on received_at)
_RELISTS = 32


class LogReadError(DataError):
    """The log could not be read at all: a listing failed, or a window's files were all
    unreadable. drift-check prints it as one line and exits 2."""


class _Vanished(Exception):
    """A listed file disappeared before it was read (compaction or expiry ran)."""


@dataclass(frozen=True)
class _Kind:
    expected: dict[str, pa.DataType]
    required: frozenset[str]
    tag_file: bool
    #: a second declared type a column may be stored with (a multi-class model's rows:
    #: ``prediction`` as text), kept as it is rather than cast to ``expected``
    alternative: dict[str, pa.DataType] = field(default_factory=dict)


_PREDICTIONS = _Kind(dict(META_TYPES), frozenset({"ts", "request_id"}), tag_file=False,
                     alternative=dict(MULTICLASS_TYPES))
_LABELS = _Kind({f.name: f.type for f in LABEL_SCHEMA}, frozenset(LABEL_SCHEMA.names),
                tag_file=True)


@dataclass
class ReaderStats:
    """What a reader did, cumulative: files opened and their bytes, rows decoded, files
    skipped by reason, partitions listed and listed again after a file vanished."""

    files_opened: int = 0
    bytes_opened: int = 0
    rows_decoded: int = 0
    files_read: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)
    files_superseded: int = 0
    partitions_listed: int = 0
    relists: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.files_skipped.values())


def _days(since: datetime, until: datetime) -> list[str]:
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _target(types: list[pa.DataType]) -> pa.DataType:
    """One type for a column seen with several: text wins, then Arrow's permissive
    promotion, else text."""
    real = [t for t in types if not pa.types.is_null(t)]
    if not real:
        return pa.null()
    if any(pa.types.is_string(t) or pa.types.is_large_string(t) for t in real):
        return pa.string()
    if all(t == real[0] for t in real):
        return real[0]
    try:
        fields = [pa.schema([("x", t)]) for t in real]
        return pa.unify_schemas(fields, promote_options="permissive").field("x").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
        return pa.string()


def _same_kind(typ: pa.DataType, declared: pa.DataType) -> bool:
    """``typ`` is ``declared`` up to string width and a list's item name (Parquet reads
    ``list<item>`` back as ``list<element>``)."""
    if pa.types.is_string(declared):
        return pa.types.is_string(typ) or pa.types.is_large_string(typ)
    if pa.types.is_list(declared) or pa.types.is_large_list(declared):
        return (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and \
            typ.value_type == declared.value_type
    return typ == declared


def _conform(table: pa.Table, kind: _Kind, name: str) -> pa.Table:
    """Reserved columns to their declared types, dictionaries decoded, metadata dropped."""
    arrays, names = [], []
    for column, f in zip(table.columns, table.schema, strict=True):
        typ = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        want = kind.expected.get(f.name)
        other = kind.alternative.get(f.name)
        if other is not None and _same_kind(typ, other):
            want = other
        if want is None and pa.types.is_large_string(typ):
            want = pa.string()
        target = want or typ
        arrays.append(column if column.type == target else column.cast(target))
        names.append(f.name)
    if kind.tag_file and FILE_COLUMN not in names:
        arrays.append(pa.chunked_array([pa.array([name] * table.num_rows, pa.string())]))
        names.append(FILE_COLUMN)
    return pa.Table.from_arrays(arrays, names=names)


def _labels_frame(table: pa.Table | None) -> pd.DataFrame:
    if table is None or not table.num_rows:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                             "received_at": pd.Series(dtype="datetime64[us, UTC]")})
    return table.select(["request_id", "label", "received_at", FILE_COLUMN]).to_pandas()


class WindowReader(Protocol):
    """What the controller reads from a log: a window of one model's predictions with
    labels joined. ``PredictionLogReader`` is one; the backtest's replay log is another."""

    def window(self, model: str, since: datetime, until: datetime, *,
               version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame: ...


class PredictionLogReader:
    """Windows of the prediction log, by time and model version, with labels joined.
    Every call reads the window's files afresh (``IncrementalLogReader`` does not)."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.stats = ReaderStats()

    # -- one file, one partition -------------------------------------------------------------
    def _skip(self, entry: FileEntry, reason: str, exc: BaseException | str) -> None:
        self.stats.files_skipped[reason] = self.stats.files_skipped.get(reason, 0) + 1
        log.warning("prediction log: skipped %s (%s): %s", entry.path, reason, exc)

    def _gone(self, path: str) -> bool:
        try:
            return self.store.fs.get_file_info(path).type.name == "NotFound"
        except OSError:
            return False

    def _open(self, entry: FileEntry, columns: list[str] | None,
              kind: _Kind) -> tuple[pa.Table | None, frozenset[str]]:
        """One file, opened once: (its conformed rows or None when skipped, the names its
        manifest says it replaces). Raises ``_Vanished`` if it is gone."""
        try:
            source = self.store.fs.open_input_file(entry.path)
        except FileNotFoundError:
            raise _Vanished(entry.path) from None
        except OSError as exc:
            if self._gone(entry.path):
                raise _Vanished(entry.path) from None
            self._skip(entry, "unopenable", exc)
            return None, frozenset()
        self.stats.files_opened += 1
        self.stats.bytes_opened += entry.size
        try:
            with source:
                parquet = pq.ParquetFile(source)
                schema = parquet.schema_arrow
                missing = kind.required - set(schema.names)
                if missing:
                    self._skip(entry, "foreign_schema", f"no column {sorted(missing)}")
                    return None, frozenset()
                manifest = decode_manifest(schema.metadata) if entry.compacted else frozenset()
                names = None if columns is None else [c for c in columns if c in schema.names]
                if names is not None and kind.tag_file and FILE_COLUMN in schema.names:
                    names.append(FILE_COLUMN)
                table = parquet.read(columns=names)
        except (pa.ArrowException, OSError, ValueError) as exc:
            if self._gone(entry.path):
                raise _Vanished(entry.path) from None
            self._skip(entry, "unreadable", exc)
            return None, frozenset()
        try:
            table = _conform(table, kind, entry.name)
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError) as exc:
            self._skip(entry, "bad_types", exc)
            return None, frozenset()
        self.stats.files_read += 1
        self.stats.rows_decoded += table.num_rows
        return table, manifest

    def _list(self, directory: str) -> list[FileEntry]:
        try:
            entries = self.store.entries(directory)
        except OSError as exc:
            raise LogReadError(f"cannot list the prediction log at {directory}: {exc}") from exc
        self.stats.partitions_listed += 1
        return entries

    def _concat(self, tables: list[pa.Table]) -> pa.Table | None:
        """One table from several: one type per column (``_target``), missing columns as
        nulls, column order as first seen."""
        tables = [t for t in tables if t is not None]
        if not tables:
            return None
        first = tables[0].schema
        if all(t.schema.equals(first) for t in tables[1:]):
            return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        seen: dict[str, list[pa.DataType]] = {}
        for t in tables:
            for f in t.schema:
                seen.setdefault(f.name, []).append(f.type)
        schema = pa.schema([(name, _target(types)) for name, types in seen.items()])
        out = []
        for t in tables:
            arrays = []
            for f in schema:
                if f.name in t.column_names:
                    column = t[f.name]
                    arrays.append(column if column.type == f.type else column.cast(f.type))
                else:
                    arrays.append(pa.nulls(t.num_rows, f.type))
            out.append(pa.Table.from_arrays(arrays, schema=schema))
        return pa.concat_tables(out)

    def _partition(self, directory: str, columns: list[str] | None,
                   kind: _Kind) -> pa.Table | None:
        """A partition's rows: its compacted files, then the flush files no manifest names."""
        opened: dict[str, tuple[pa.Table | None, frozenset[str]]] = {}  # kept across relists
        for _ in range(_RELISTS):
            entries = self._list(directory)
            try:
                got: dict[str, pa.Table] = {}
                replaced: set[str] = set()
                for entry in (e for e in entries if e.compacted):
                    if entry.name not in opened:
                        opened[entry.name] = self._open(entry, columns, kind)
                    table, manifest = opened[entry.name]
                    replaced |= manifest
                    if table is not None:
                        got[entry.name] = table
                for entry in (e for e in entries if not e.compacted):
                    if entry.name in replaced:
                        continue
                    if entry.name not in opened:
                        opened[entry.name] = self._open(entry, columns, kind)
                    table, _ = opened[entry.name]
                    if table is not None:
                        got[entry.name] = table
            except _Vanished:
                # A compaction replaced what we listed: list again; what was opened is kept
                # (files never change), so each relist only opens what is new.
                self.stats.relists += 1
                continue
            self.stats.files_superseded += len(replaced & {e.name for e in entries})
            return self._concat([t for n, t in sorted(got.items()) if n not in replaced])
        raise LogReadError(f"{directory}: files kept vanishing between listing and reading")

    # -- predictions --------------------------------------------------------------------------
    def _predictions_table(self, model: str, since: datetime, until: datetime, *,
                           version: int | None, columns: list[str] | None) -> pa.Table | None:
        """The window as one Arrow table: filtered and ordered by ``ts`` in Arrow, each
        step skipped when it would change nothing (a day's partition of one version,
        written in time order, needs neither), so a day of traffic is not copied twice."""
        base = self.store.path("predictions", f"model={model}")
        wanted = None if columns is None else list(dict.fromkeys([*columns, "ts", "model_version"]))
        skipped = self.stats.skipped
        table = self._concat([t for day in _days(since, until)
                              if (t := self._partition(f"{base}/date={day}", wanted,
                                                       _PREDICTIONS)) is not None])
        if table is None:
            if self.stats.skipped > skipped:
                raise LogReadError(f"no readable prediction log file for {model} in "
                                   f"[{since.isoformat()}, {until.isoformat()}): "
                                   f"{self.stats.skipped - skipped} unreadable")
            return None
        if wanted is not None:
            table = table.select([c for c in wanted if c in table.column_names])
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
            return pd.DataFrame(columns=list(META_TYPES))
        return table.to_pandas()

    # -- labels -------------------------------------------------------------------------------
    def _label_partitions(self, model: str | None) -> list[tuple[str, str]]:
        """(day, directory) of every label partition for ``model``: its own
        ``labels/model=<m>/date=<d>`` and the legacy ``labels/date=<d>``; every model's when
        ``model`` is None."""
        base = self.store.path("labels")
        try:
            top = self.store.partitions(base)
        except OSError as exc:
            raise LogReadError(f"cannot list the label log at {base}: {exc}") from exc
        out = [(p.removeprefix("date="), f"{base}/{p}") for p in top if p.startswith("date=")]
        models = [p for p in top if p.startswith("model=")] if model is None else [
            f"model={model}"]
        for m in models:
            out += [(p.removeprefix("date="), f"{base}/{m}/{p}")
                    for p in self.store.partitions(f"{base}/{m}") if p.startswith("date=")]
        return out

    def labels(self, *, since: datetime | None = None, as_of: datetime | None = None,
               model: str | None = None) -> pd.DataFrame:
        """Labels received in ``[since, as_of]``, the last per request id: the latest
        ``received_at`` wins; on equal ``received_at`` the row from the later-named file
        (``part-<ms>-<pid>-<rand>``, kept through compaction), then the later row in it."""
        days = self._label_partitions(model)
        if since is not None:
            days = [(d, p) for d, p in days if d >= since.date().isoformat()]
        if as_of is not None:
            days = [(d, p) for d, p in days if d <= as_of.date().isoformat()]
        frame = _labels_frame(self._concat(
            [t for _, p in sorted(days) if (t := self._partition(p, None, _LABELS)) is not None]))
        if not len(frame):
            return frame
        if as_of is not None:
            frame = frame[frame["received_at"] <= pd.Timestamp(as_of)]
        frame = frame.sort_values(["received_at", FILE_COLUMN], kind="stable")
        frame = frame.drop_duplicates("request_id", keep="last").drop(columns=[FILE_COLUMN])
        return frame.reset_index(drop=True)

    def unmatched_labels(self, model: str, since: datetime, until: datetime, *,
                         lookback: timedelta) -> int:
        """How many request ids labelled for ``model`` (``labels/model=<m>/``; the legacy
        partitions name no model and are not counted) with ``since <= received_at < until``
        match no prediction of ``model`` with ``since - lookback <= ts < until``.

        Predictions are read only when there is a label to match, newest day first, and
        only their ``request_id`` (and ``ts`` on a day the bounds cut); the count stops
        reading once every label has matched. Unreadable files are skipped: their labels
        count as unmatched."""
        base = self.store.path("labels", f"model={model}")
        ids: list[pa.Array] = []
        for day in _days(since, until):
            table = self._partition(f"{base}/date={day}", ["request_id", "received_at"], _LABELS)
            if table is not None and table.num_rows:
                at = table["received_at"]
                keep = pc.and_(pc.greater_equal(at, pa.scalar(since, at.type)),
                               pc.less(at, pa.scalar(until, at.type)))
                ids += table.filter(keep)["request_id"].chunks
        if not ids:
            return 0
        pending = pc.drop_null(pc.unique(pa.chunked_array(ids, pa.string()).combine_chunks()))
        start = since - lookback
        base = self.store.path("predictions", f"model={model}")
        for day in reversed(_days(start, until)):
            if not len(pending):
                break
            first = datetime.fromisoformat(day).replace(tzinfo=since.tzinfo)
            whole = start <= first and first + timedelta(days=1) <= until
            table = self._partition(f"{base}/date={day}",
                                    ["request_id"] if whole else ["request_id", "ts"],
                                    _PREDICTIONS)
            if table is None or not table.num_rows:
                continue
            if not whole:
                ts = table["ts"]
                table = table.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)),
                                             pc.less(ts, pa.scalar(until, ts.type))))
            seen = table["request_id"].combine_chunks()
            pending = pending.filter(pc.invert(pc.is_in(pending, value_set=seen)))
        return len(pending)

    # -- the window ---------------------------------------------------------------------------
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
        labels = self.labels(since=since, as_of=labels_as_of, model=model)
        if table is None:
            frame = pd.DataFrame(columns=list(META_TYPES) if columns is None
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


@dataclass
class _Cached:
    """What an incremental reader holds of one partition: its rows as one table, which
    file each run of rows came from, the manifests of its compacted files, and files that
    were unreadable (files are immutable: never tried again)."""

    table: pa.Table | None = None
    spans: list[tuple[str, int]] = field(default_factory=list)
    manifests: dict[str, frozenset[str]] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)

    def drop(self, names: set[str]) -> None:
        if not names & {n for n, _ in self.spans} or self.table is None:
            return
        kept, spans, start = [], [], 0
        for name, rows in self.spans:
            if name not in names:
                kept.append(self.table.slice(start, rows))
                spans.append((name, rows))
            start += rows
        self.spans = spans
        self.table = pa.concat_tables(kept) if kept else None


class IncrementalLogReader(PredictionLogReader):
    """A reader that remembers: per partition, the files it read and their rows. The next
    ``window()`` lists the partitions and opens only files it has not seen; a file that
    disappeared was compacted (its rows go, the compacted file's come, the manifest
    dedupes). The controller's every-pass windows then re-read nothing they have. Holds at
    most ``max_partitions`` partitions (least recently used go first), in memory: the rows
    of every partition its windows touched."""

    def __init__(self, store: LogStore, *, max_partitions: int = 256) -> None:
        super().__init__(store)
        self.max_partitions = max_partitions
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._lock = threading.Lock()  # the controller's loop and its HTTP threads share one

    def _partition(self, directory: str, columns: list[str] | None,
                   kind: _Kind) -> pa.Table | None:
        with self._lock:
            return self._cached_partition(directory, columns, kind)

    def _cached_partition(self, directory: str, columns: list[str] | None,
                          kind: _Kind) -> pa.Table | None:
        cached = self._cache.pop(directory, None) or _Cached()
        self._cache[directory] = cached
        while len(self._cache) > self.max_partitions:
            self._cache.popitem(last=False)
        for _ in range(_RELISTS):
            entries = self._list(directory)
            try:
                self._refresh(cached, entries, kind)
            except _Vanished:
                self.stats.relists += 1
                continue
            table = cached.table
            if table is not None and columns is not None:
                keep = [*columns, FILE_COLUMN] if kind.tag_file else columns
                table = table.select([c for c in dict.fromkeys(keep) if c in table.column_names])
            return table
        raise LogReadError(f"{directory}: files kept vanishing between listing and reading")

    def _refresh(self, cached: _Cached, entries: Iterable[FileEntry], kind: _Kind) -> None:
        listed = {e.name: e for e in entries}
        gone = {n for n, _ in cached.spans if n not in listed}
        for name in [n for n in cached.manifests if n not in listed]:
            del cached.manifests[name]
        cached.bad &= set(listed)
        have = {n for n, _ in cached.spans}
        new: list[tuple[str, pa.Table]] = []
        manifests = dict(cached.manifests)  # committed only once every new file is read
        for entry in (e for e in listed.values() if e.compacted):
            if entry.name in have or entry.name in cached.bad or entry.name in manifests:
                continue
            table, manifest = self._open(entry, None, kind)  # may raise _Vanished
            if table is None:
                cached.bad.add(entry.name)
                continue
            manifests[entry.name] = manifest
            new.append((entry.name, table))
        replaced: set[str] = set().union(*manifests.values())
        cached.drop(gone | (replaced & have))
        new = [(n, t) for n, t in new if n not in replaced]
        have = {n for n, _ in cached.spans} | {n for n, _ in new}
        for entry in (e for e in listed.values() if not e.compacted):
            if entry.name in have or entry.name in replaced or entry.name in cached.bad:
                continue
            table, _ = self._open(entry, None, kind)
            if table is None:
                cached.bad.add(entry.name)
                continue
            new.append((entry.name, table))
        cached.manifests = manifests
        if new:
            merged = self._concat([cached.table, *[t for _, t in new]]
                                  if cached.table is not None else [t for _, t in new])
            if merged is not None and merged.num_columns and merged.column(0).num_chunks > 256:
                merged = merged.combine_chunks()
            cached.table = merged
            cached.spans += [(n, t.num_rows) for n, t in new]
        self.stats.files_superseded += len(replaced & set(listed))


def open_log(uri: str | Path, *, incremental: bool = False) -> tuple[LogStore, PredictionLogReader]:
    store = LogStore(uri)
    return store, (IncrementalLogReader(store) if incremental else PredictionLogReader(store))
