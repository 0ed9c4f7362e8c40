"""Compaction and retention of the log: many one-second flush files become one file per
partition and hour; partitions older than the retention go.

The protocol needs no rename, so it holds on an object store as on a disk:

1. List a partition (``predictions/model=<m>/date=<d>``, ``labels/model=<m>/date=<d>`` or the
   legacy ``labels/date=<d>``). Flush files (``part-<ms>-…``) written more than ``older_than``
   ago are grouped by the UTC hour in their name; files still being written are never
   touched.
2. Read a group's files (unreadable ones are left where they are, counted), and write one
   ``compacted-<ms>-<pid>-<rand>.parquet`` whose Parquet key-value metadata lists the base
   names it replaces (its *manifest*). The file and its manifest become visible together.
3. Delete the sources. Readers ignore any file a visible compacted file's manifest names,
   so while both exist nothing is counted twice, and a reader that lists a source and then
   finds it gone lists the partition again.

A crash between 2 and 3 leaves sources next to the file that replaces them: invisible to
readers, and deleted by the next run (step 0: finish what a manifest says). Once an hour is
closed, its compacted pieces and late flush files are merged into one, so a closed day ends
as at most 24 files per writer-independent partition. Run one compactor per log at a time
(a cron job or the CLI); two at once could write two compacted files for the same sources.

Label files keep the name of the flush file each row came from (column ``_file``), so "last
label wins" (``received_at``, then file name) is the same before and after compaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.predlog.reader import (
    _LABELS,
    _PREDICTIONS,
    PredictionLogReader,
    _Kind,
    _Vanished,
)
from monitoring.predlog.store import (
    COMPACTED_PREFIX,
    FileEntry,
    LogStore,
    decode_manifest,
    encode_manifest,
)

log = logging.getLogger(__name__)

HOUR_KEY = b"driftloop.hour"
ROW_GROUP_ROWS = 1 << 20


@dataclass
class CompactionReport:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rows: int = 0
    finished: int = 0  # sources an earlier, interrupted run had replaced but not deleted
    unreadable: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ExpiryReport:
    partitions: list[str] = field(default_factory=list)


def _hour(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H")


def partitions(store: LogStore, *, model: str | None = None) -> list[tuple[str, str, _Kind]]:
    """(date, directory, kind) of every partition of the log (of ``model`` when given;
    the legacy model-less label partitions only when not)."""
    out: list[tuple[str, str, _Kind]] = []
    for area, kind in (("predictions", _PREDICTIONS), ("labels", _LABELS)):
        base = store.path(area)
        top = store.partitions(base)
        models = [p for p in top if p.startswith("model=")]
        if model is not None:
            models = [p for p in models if p == f"model={model}"]
        for m in models:
            out += [(p.removeprefix("date="), f"{base}/{m}/{p}", kind)
                    for p in store.partitions(f"{base}/{m}") if p.startswith("date=")]
        if area == "labels" and model is None:
            out += [(p.removeprefix("date="), f"{base}/{p}", kind)
                    for p in top if p.startswith("date=")]
    return out


class Compactor:
    """Compacts partitions of one log (see the module's docstring for the protocol)."""

    def __init__(self, store: LogStore, *, older_than: timedelta = timedelta(minutes=10),
                 progress: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.older_than = older_than
        self.progress = progress or (lambda _: None)
        self.reader = PredictionLogReader(store)

    def run(self, *, model: str | None = None, now: datetime | None = None) -> CompactionReport:
        now = now or datetime.now(UTC)
        report = CompactionReport()
        for _, directory, kind in partitions(self.store, model=model):
            try:
                self.partition(directory, kind, now=now, report=report)
            except (OSError, pa.ArrowException) as exc:
                report.errors.append(f"{directory}: {exc}")
                log.warning("compaction of %s failed: %s", directory, exc)
        return report

    def _manifest(self, entry: FileEntry) -> tuple[frozenset[str], str | None]:
        schema = pq.read_schema(entry.path, filesystem=self.store.fs)
        hour = (schema.metadata or {}).get(HOUR_KEY)
        return decode_manifest(schema.metadata), hour.decode() if hour else None

    def partition(self, directory: str, kind: _Kind, *, now: datetime,
                  report: CompactionReport) -> None:
        entries = self.store.entries(directory)
        compacted: dict[str, tuple[FileEntry, frozenset[str], str | None]] = {}
        for entry in (e for e in entries if e.compacted):
            try:
                manifest, hour = self._manifest(entry)
            except FileNotFoundError:
                continue
            compacted[entry.name] = (entry, manifest, hour)
        replaced = set().union(*(m for _, m, _ in compacted.values()))
        # 0. finish an interrupted run: whatever a visible manifest names goes
        for entry in entries:
            if entry.name in replaced and self.store.delete(entry.path):
                report.finished += 1
        live = {n: c for n, c in compacted.items() if n not in replaced}
        cutoff = (now - self.older_than).timestamp()
        groups: dict[str, list[FileEntry]] = {}
        for entry in entries:
            if not entry.compacted and entry.name not in replaced and entry.written < cutoff:
                groups.setdefault(_hour(entry.written), []).append(entry)
        for hour in sorted({*groups, *(h for _, _, h in live.values() if h)}):
            closed = (datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
                      + timedelta(hours=1)).timestamp() <= cutoff
            pieces = [e for e, _, h in live.values() if h == hour] if closed else []
            sources = groups.get(hour, []) + pieces
            if len(sources) < 2:
                continue
            report.partitions += 1
            self._merge(directory, kind, hour, sources,
                        {n for e in pieces for n in compacted[e.name][1]}, report)

    def _merge(self, directory: str, kind: _Kind, hour: str, sources: list[FileEntry],
               covered: set[str], report: CompactionReport) -> None:
        tables, names = [], []
        for entry in sources:
            try:
                table, _ = self.reader._open(entry, None, kind)
            except _Vanished:
                log.warning("%s vanished while compacting %s: left for the next run",
                            entry.path, directory)
                return
            if table is None:
                report.unreadable += 1  # left in place, still skipped by readers
                continue
            tables.append(table)
            names.append(entry.name)
        merged = self.reader._concat(tables)
        if merged is None or len(names) < 2:
            return
        if kind is _PREDICTIONS:
            merged = merged.take(pc.sort_indices(merged, [("ts", "ascending")]))
        metadata = {**encode_manifest([*names, *covered]), HOUR_KEY: hour.encode()}
        out = self.store.write(merged, directory, prefix=COMPACTED_PREFIX, metadata=metadata,
                               row_group_size=ROW_GROUP_ROWS)
        size = self.store.fs.get_file_info(out).size or 0
        used = [e for e in sources if e.name in set(names)]
        for entry in used:
            self.store.delete(entry.path)
        bytes_in = sum(e.size for e in used)
        report.files_in += len(used)
        report.files_out += 1
        report.bytes_in += bytes_in
        report.bytes_out += size
        report.rows += merged.num_rows
        self.progress(f"{directory.removeprefix(self.store.root + '/')} {hour}h: "
                      f"{len(used)} files -> 1 ({merged.num_rows} rows, "
                      f"{bytes_in / 2**20:.1f} -> {size / 2**20:.1f} MiB)")


def expire(store: LogStore, *, days: int, today: date | None = None, model: str | None = None,
           dry_run: bool = False, progress: Callable[[str], None] | None = None) -> ExpiryReport:
    """Delete every partition whose date is more than ``days`` days before ``today``
    (predictions and labels; the legacy label partitions only when ``model`` is None)."""
    today = today or datetime.now(UTC).date()
    first_kept = (today - timedelta(days=days)).isoformat()
    report = ExpiryReport()
    for day, directory, _ in partitions(store, model=model):
        if day < first_kept:
            if not dry_run:
                store.delete_dir(directory)
            report.partitions.append(directory)
            if progress:
                verb = "would delete" if dry_run else "deleted"
                progress(f"{verb} {directory.removeprefix(store.root + '/')}")
    return report
