"""The local summary engine: a window of the prediction log as merged partition summaries.

Each day partition (``predictions/model=<m>/date=<d>/``) is read as the reader reads it (its
compacted files plus the flush files no manifest names), streamed in record batches with
pyarrow (``batch_rows`` rows at a time, from the memory setting), restricted to the checked
version, and reduced to a ``WindowSummary``. A day the window covers whole is stored beside
the log::

    summaries/model=<m>/version=<v>/date=<d>.json

with the summary format, the reference's fingerprint and the names of the files it
summarised. The next check reuses it while the partition holds exactly those files (a new
flush file or a compaction makes it be summarised again) and the fingerprint matches.
Partial days at the window's edges are summarised afresh and not stored. The reference's own
summary is stored once per version beside them (``reference.json``,
``monitoring.summary.stored``) and read by every later check.

Realised performance needs each labelled prediction's score: when the window has labels, the
engine streams ``request_id`` and ``score`` of the window's files and keeps the labelled
rows only (``stats.label_rows_scanned``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.check import LABEL_COLUMN, SCORE_COLUMN, Reference, performance
from monitoring.predlog.reader import LogReadError, PredictionLogReader
from monitoring.predlog.reader import _days as _days  # the reader's days of a window
from monitoring.predlog.store import LogStore, decode_manifest
from monitoring.summary.stored import read_json, write_json
from monitoring.summary.window import SUMMARY_FORMAT, ReferenceSummary, WindowSummary
from monitoring.verdict import Performance, Verdict

log = logging.getLogger(__name__)

_RELISTS = 8
#: bytes one row of one column may take while a batch is summarised (the Arrow batch, its
#: float copy, z, bucket indices and a sort's scratch)
_BYTES_PER_CELL = 64


@dataclass
class EngineStats:
    """What the engine read: raw rows summarised (after the version filter), files opened,
    partitions summarised and reused from the store, rows scanned for labelled scores, and
    whether the reference's summary was computed or read from the store."""

    rows_read: int = 0
    files_read: int = 0
    files_skipped: int = 0
    partitions_summarised: int = 0
    partitions_reused: int = 0
    partitions_stored: int = 0
    label_rows_scanned: int = 0
    reference_summarised: int = 0
    reference_reused: int = 0


def batch_rows(memory_mib: int, columns: int) -> int:
    """Rows per batch so that summarising one batch stays within ``memory_mib``."""
    return max(1024, int(memory_mib * 2**20 // (max(columns, 1) * _BYTES_PER_CELL)))


class _Vanished(Exception):
    pass


class SummaryEngine:
    """Windows of one model version as summaries, streamed in bounded memory."""

    def __init__(self, store: LogStore, reference: Reference, *, memory_mib: int = 256,
                 reference_summary: ReferenceSummary | None = None, use_store: bool = True) -> None:
        self.store = store
        self.reference = reference
        self._ref = reference_summary
        self._fingerprint: tuple[ReferenceSummary, str] | None = None
        self.use_store = use_store  # read and write stored day and reference summaries
        features = reference.spec.features.all
        self.columns = [*features, SCORE_COLUMN]
        self.batch_rows = batch_rows(memory_mib, len(self.columns) + 2)
        self.stats = EngineStats()
        self._current: WindowSummary | None = None

    # -- the reference's summary --------------------------------------------------------------
    @property
    def ref(self) -> ReferenceSummary:
        """The reference's summary: given, read from the store by ``prepare``, or computed."""
        if self._ref is None:
            self._ref = ReferenceSummary.of(self.reference)
            self.stats.reference_summarised += 1
        return self._ref

    @property
    def fingerprint(self) -> str:
        ref = self.ref
        if self._fingerprint is None or self._fingerprint[0] is not ref:
            self._fingerprint = (ref, ref.fingerprint())
        return self._fingerprint[1]

    def prepare(self, model: str, version: int) -> None:
        """The version's reference summary from the store (computed and stored once)."""
        if self._ref is not None or not self.use_store:
            return
        from monitoring.summary.stored import stored_reference

        self._ref, reused = stored_reference(self.store, model, version, self.reference)
        if reused:
            self.stats.reference_reused += 1
        else:
            self.stats.reference_summarised += 1

    # -- files of a partition ----------------------------------------------------------------
    def _effective(self, directory: str) -> list[str]:
        """The partition's files as the reader counts them: compacted files, then the flush
        files no compacted file's manifest names."""
        try:
            entries = self.store.entries(directory)
        except OSError as exc:
            raise LogReadError(f"cannot list the prediction log at {directory}: {exc}") from exc
        replaced: set[str] = set()
        for entry in (e for e in entries if e.compacted):
            try:
                schema = pq.read_schema(entry.path, filesystem=self.store.fs)
            except FileNotFoundError:
                raise _Vanished(entry.path) from None
            except (pa.ArrowException, OSError):
                continue  # unreadable: skipped below too
            replaced |= decode_manifest(schema.metadata)
        return [e.path for e in entries if e.name not in replaced]

    def _stream(self, path: str, version: int, since: datetime | None, until: datetime | None,
                columns: list[str]) -> bool:
        """Summarise one file's rows of the version (within the time bounds), batch by
        batch; False when the file was skipped as unreadable."""
        try:
            source = self.store.fs.open_input_file(path)
        except FileNotFoundError:
            raise _Vanished(path) from None
        try:
            with source:
                parquet = pq.ParquetFile(source)
                names = parquet.schema_arrow.names
                if "model_version" not in names or "ts" not in names:
                    self.stats.files_skipped += 1
                    return False
                wanted = [c for c in dict.fromkeys([*columns, "ts", "model_version"])
                          if c in names]
                for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=wanted):
                    keep = pc.equal(batch["model_version"], pa.scalar(version, pa.int64()))
                    ts = batch["ts"]
                    if since is not None:
                        keep = pc.and_(keep, pc.greater_equal(ts, pa.scalar(since, ts.type)))
                    if until is not None:
                        keep = pc.and_(keep, pc.less(ts, pa.scalar(until, ts.type)))
                    self._consume(batch.filter(keep))
                return True
        except FileNotFoundError:
            raise _Vanished(path) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            self.stats.files_skipped += 1
            log.warning("summary engine: skipped %s: %s", path, exc)
            return False

    def _consume(self, batch: pa.RecordBatch) -> None:
        part = self.ref.summarise(batch)
        self._current = part if self._current is None else self._current.merge(part)
        self.stats.rows_read += batch.num_rows

    def _summarise(self, files: list[str], version: int, since: datetime | None,
                   until: datetime | None) -> WindowSummary:
        self._current = None
        for path in files:
            if self._stream(path, version, since, until, self.columns):
                self.stats.files_read += 1
        return self._current if self._current is not None else self.ref.empty()

    # -- stored summaries ----------------------------------------------------------------------
    def _stored_path(self, model: str, version: int, day: str) -> str:
        return self.store.path("summaries", f"model={model}", f"version={version}",
                               f"date={day}.json")

    def _load(self, path: str, files: list[str]) -> WindowSummary | None:
        doc = read_json(self.store, path)
        try:
            if (doc["format"] != SUMMARY_FORMAT or doc["fingerprint"] != self.fingerprint
                    or doc["files"] != [p.rsplit("/", 1)[-1] for p in files]):
                return None
            return self.ref.load(doc["summary"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # missing or corrupt: summarised again and overwritten

    def _save(self, path: str, files: list[str], summary: WindowSummary) -> None:
        write_json(self.store, path, {"format": SUMMARY_FORMAT, "fingerprint": self.fingerprint,
                                      "files": [p.rsplit("/", 1)[-1] for p in files],
                                      "summary": summary.to_dict()})
        self.stats.partitions_stored += 1

    # -- a day, a window -----------------------------------------------------------------------
    def _day(self, model: str, version: int, day: str, since: datetime,
             until: datetime) -> WindowSummary:
        directory = self.store.path("predictions", f"model={model}", f"date={day}")
        start = datetime.fromisoformat(day).replace(tzinfo=since.tzinfo)
        whole = since <= start and start + timedelta(days=1) <= until
        for _ in range(_RELISTS):
            try:
                files = self._effective(directory)
                stored = self._stored_path(model, version, day)
                if whole and files and self.use_store:
                    cached = self._load(stored, files)
                    if cached is not None:
                        self.stats.partitions_reused += 1
                        return cached
                summary = self._summarise(files, version, None if whole else since,
                                          None if whole else until)
            except _Vanished:
                continue  # a compaction replaced what was listed: list again
            self.stats.partitions_summarised += 1
            if whole and files and self.use_store:
                try:
                    self._save(stored, files, summary)
                except OSError as exc:  # a read-only store still gets its verdict
                    log.warning("summary engine: cannot store %s: %s", stored, exc)
            return summary
        raise LogReadError(f"{directory}: files kept vanishing between listing and reading")

    def window(self, model: str, version: int, since: datetime, until: datetime) -> WindowSummary:
        self.prepare(model, version)
        total = self.ref.empty()
        for day in _days(since, until):
            total = total.merge(self._day(model, version, day, since, until))
        return total

    # -- labelled rows -------------------------------------------------------------------------
    def labelled(self, model: str, version: int, since: datetime,
                 until: datetime) -> tuple[int, Performance | None]:
        """(labelled rows of the window, realised performance) exactly as the exact path:
        labels joined by request id, the last one per request winning."""
        labels = PredictionLogReader(self.store).labels(since=since, model=model)
        if not len(labels):
            return 0, performance(self.reference, pd.DataFrame({LABEL_COLUMN: [],
                                                                SCORE_COLUMN: []}))
        ids = pa.array(labels["request_id"], pa.string())
        label_text = pa.array(labels["label"], pa.string())
        kept: list[pa.Table] = []
        for day in _days(since, until):
            directory = self.store.path("predictions", f"model={model}", f"date={day}")
            for path in self._effective(directory):
                kept += self._labelled_rows(path, version, since, until, ids, label_text)
        frame = (pa.concat_tables(kept).to_pandas() if kept
                 else pd.DataFrame({LABEL_COLUMN: [], SCORE_COLUMN: []}))
        return len(frame), performance(self.reference, frame)

    def _labelled_rows(self, path: str, version: int, since: datetime, until: datetime,
                       ids: pa.Array, label_text: pa.Array) -> list[pa.Table]:
        out = []
        try:
            parquet = pq.ParquetFile(self.store.fs.open_input_file(path))
            for batch in parquet.iter_batches(batch_size=self.batch_rows,
                                              columns=["request_id", SCORE_COLUMN, "ts",
                                                       "model_version"]):
                self.stats.label_rows_scanned += batch.num_rows
                ts = batch["ts"]
                keep = pc.and_(pc.equal(batch["model_version"], pa.scalar(version, pa.int64())),
                               pc.and_(pc.greater_equal(ts, pa.scalar(since, ts.type)),
                                       pc.less(ts, pa.scalar(until, ts.type))))
                at = pc.index_in(batch["request_id"], value_set=ids)
                keep = pc.and_(keep, pc.is_valid(at))
                chosen = batch.filter(keep)
                if chosen.num_rows:
                    where = pc.index_in(chosen["request_id"], value_set=ids)
                    out.append(pa.table({SCORE_COLUMN: chosen[SCORE_COLUMN],
                                         LABEL_COLUMN: label_text.take(where)}))
        except (pa.ArrowException, OSError, ValueError) as exc:
            log.warning("summary engine: skipped %s for labels: %s", path, exc)
        return out


def summary_check(uri: str, reference: Reference, *, model: str, version: int,
                  since: datetime, until: datetime, now: datetime | None = None,
                  memory_mib: int = 256, engine_name: str = "summary") -> Verdict:
    """One window's verdict from summaries (``DRIFTLOOP_DRIFT_ENGINE=summary``, or ``spark``
    for ``monitoring.summary.spark``): the window's summaries, stored ones reused, and its
    labelled rows."""
    from monitoring.summary.window import check_summary

    engine: SummaryEngine
    if engine_name == "spark":
        from monitoring.summary.spark import SparkSummaryEngine

        engine = SparkSummaryEngine(LogStore(uri), reference, memory_mib=memory_mib)
    else:
        engine = SummaryEngine(LogStore(uri), reference, memory_mib=memory_mib)
    window = engine.window(model, version, since, until)
    labelled, perf = engine.labelled(model, version, since, until)
    verdict = check_summary(reference, engine.ref, window, model=model, version=version,
                            window_start=since, window_end=until, now=now,
                            labelled_rows=labelled, performance=perf, engine=engine_name)
    log.info("summary engine: %d rows read from %d files, %d partitions summarised, %d reused, "
             "%d stored", engine.stats.rows_read, engine.stats.files_read,
             engine.stats.partitions_summarised, engine.stats.partitions_reused,
             engine.stats.partitions_stored)
    return verdict
