"""Reading, compacting and expiring the log on a real directory. The ``check_*`` scenarios
take a ``LogStore`` and run on S3 too (tests/integration/test_predlog_s3.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter
from monitoring.predlog.compact import Compactor, expire
from monitoring.predlog.reader import IncrementalLogReader, LogReadError
from monitoring.predlog.schema import LABEL_SCHEMA, META_TYPES

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(hours=1), T0 + timedelta(days=1)
LATER = timedelta(hours=3)  # "now" for a compaction run that finds every file old enough


def row(i: int, *, model: str = "m", ts: datetime = T0) -> dict:
    return {"ts": ts + timedelta(milliseconds=i), "request_id": f"r{i}", "model_name": model,
            "model_version": 1, "score": i / 1000, "prediction": i % 2, "shadow_version": None,
            "shadow_score": None, "latency_ms": 0.5, "x": float(i), "c": "a" if i % 3 else "b"}


def write_rows(store: LogStore, start: int, stop: int, *, per_file: int = 10) -> None:
    writer = PredictionLogWriter(store, flush_interval=3600)
    for i in range(start, stop):
        writer.append(row(i))
        if (i - start + 1) % per_file == 0:
            writer.flush()
    writer.close()


def prediction_dir(store: LogStore, model: str = "m", day: str = "2026-03-01") -> str:
    return store.path("predictions", f"model={model}", f"date={day}")


def ids(reader: PredictionLogReader) -> list[str]:
    return list(reader.window("m", SINCE, UNTIL)["request_id"])


def put(store: LogStore, directory: str, name: str, table: pa.Table) -> None:
    store.fs.create_dir(directory, recursive=True)
    pq.write_table(table, f"{directory}/{name}", filesystem=store.fs)


def put_bytes(store: LogStore, path: str, data: bytes) -> None:
    with store.fs.open_output_stream(path) as out:
        out.write(data)


def labels(rows: list[tuple[str, str, datetime]]) -> pa.Table:
    return pa.Table.from_pylist([{"request_id": r, "label": v, "received_at": t}
                                 for r, v, t in rows], schema=LABEL_SCHEMA)


def compact(store: LogStore, now: datetime | None = None):
    return Compactor(store, older_than=timedelta(0)).run(now=now or datetime.now(UTC) + LATER)


# -- scenarios, run on every store ---------------------------------------------------------

def check_bad_files_are_skipped_and_counted(store: LogStore) -> None:
    write_rows(store, 0, 30)
    directory = prediction_dir(store)
    good = store.files(directory)[0]
    with store.fs.open_input_file(good) as f:
        whole = f.read()
    put_bytes(store, f"{directory}/part-1-1-corrupt.parquet", b"not parquet at all" * 10)
    put_bytes(store, f"{directory}/part-2-1-trunc.parquet", whole[: len(whole) // 2])
    put(store, directory, "part-3-1-foreign.parquet", pa.table({"what": [1, 2]}))
    reader = PredictionLogReader(store)
    assert sorted(ids(reader), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(30)]
    assert reader.stats.files_skipped == {"unreadable": 2, "foreign_schema": 1}
    assert reader.stats.files_opened == 6  # each file once: 3 good, 3 bad


def check_column_types_unify_text_winning(store: LogStore) -> None:
    directory = prediction_dir(store)
    base = {"ts": [T0], "request_id": ["old"], "model_name": ["m"], "model_version": [1],
            "score": [0.5]}
    types = {k: META_TYPES[k] for k in base}
    old = pa.table({**base, "c": [None]}, schema=pa.schema([*types.items(), ("c", pa.float64())]))
    new = pa.table({**base, "request_id": ["new"], "c": ["x"]},
                   schema=pa.schema([*types.items(), ("c", pa.string())]))
    put(store, directory, "part-1-1-old.parquet", old)
    put(store, directory, "part-2-1-new.parquet", new)
    put(store, directory, "part-3-1-nocol.parquet",
        pa.table({**base, "request_id": ["bare"]}, schema=pa.schema(list(types.items()))))
    frame = PredictionLogReader(store).window("m", SINCE, UNTIL, columns=["c", "score"],
                                              categorical=["c"])
    assert len(frame) == 3
    assert sorted(frame["c"].dropna()) == ["x"] and frame["c"].isna().sum() == 2


def check_unreadable_window_raises(store: LogStore) -> None:
    directory = prediction_dir(store)
    store.fs.create_dir(directory, recursive=True)
    put_bytes(store, f"{directory}/part-1-1-corrupt.parquet", b"garbage")
    with pytest.raises(LogReadError, match="unreadable"):
        PredictionLogReader(store).window("m", SINCE, UNTIL)


def check_labels_per_model_last_wins(store: LogStore) -> None:
    write_rows(store, 0, 5)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    mine = store.path("labels", "model=m", "date=2026-03-01")
    # two processes (pids 111 and 222): r1 by received_at although 222's file sorts later;
    # r2 on equal received_at: the later file name wins
    put(store, mine, "part-1772366350000-222-bbbb.parquet",
        labels([("r1", "late-name-early-label", t1), ("r2", "later-file", t1)]))
    put(store, mine, "part-1772366300000-111-aaaa.parquet",
        labels([("r1", "winner", t2), ("r2", "earlier-file", t1)]))
    put(store, store.path("labels", "date=2026-03-01"), "part-1772366000000-9-legacy.parquet",
        labels([("r3", "legacy", t1)]))
    put(store, store.path("labels", "model=other", "date=2026-03-01"),
        "part-1772366000000-9-other.parquet", labels([("r4", "other model's", t1)]))

    def joined() -> dict[str, str | None]:
        frame = PredictionLogReader(store).window("m", SINCE, UNTIL)
        return {r: (None if v != v else v) for r, v in zip(frame["request_id"], frame["label"],
                                                           strict=True)}

    expected = {"r0": None, "r1": "winner", "r2": "later-file", "r3": "legacy", "r4": None}
    assert joined() == expected
    compact(store)
    assert len(store.files(mine)) == 1 and store.files(mine)[0].split("/")[-1].startswith(
        "compacted-")
    assert joined() == expected  # the same after compaction (each row keeps its file name)


def check_compaction_keeps_every_row_once(store: LogStore) -> None:
    write_rows(store, 0, 200, per_file=10)
    directory = prediction_dir(store)
    before = ids(PredictionLogReader(store))
    assert len(store.files(directory)) == 20
    report = compact(store)
    assert report.files_in == 20 and report.files_out >= 1 and report.rows == 200
    names = [p.rsplit("/", 1)[-1] for p in store.files(directory)]
    assert names and all(n.startswith("compacted-") for n in names)
    reader = PredictionLogReader(store)
    assert ids(reader) == before and reader.stats.files_opened == len(names)


def check_interrupted_compaction_is_finished_later(store: LogStore) -> None:
    write_rows(store, 0, 50, per_file=10)
    directory = prediction_dir(store)
    before = ids(PredictionLogReader(store))
    crashing = Compactor(store, older_than=timedelta(0))
    kept: list[str] = []
    crashing.store = _NoDelete(store, kept)  # the process dies before deleting its sources
    crashing.run(now=datetime.now(UTC) + LATER)
    assert len(kept) == 5 and len(store.files(directory)) == 6
    reader = IncrementalLogReader(store)
    assert ids(reader) == before and ids(PredictionLogReader(store)) == before  # never twice
    report = compact(store)
    assert report.finished == 5 and len(store.files(directory)) == 1
    assert ids(reader) == before


def check_young_files_are_left_alone(store: LogStore) -> None:
    write_rows(store, 0, 30)
    report = Compactor(store, older_than=timedelta(hours=1)).run()
    assert report.files_in == 0 and len(store.files(prediction_dir(store))) == 3


def check_incremental_reader_opens_only_new_files(store: LogStore) -> None:
    write_rows(store, 0, 40, per_file=10)
    reader = IncrementalLogReader(store)
    assert len(ids(reader)) == 40 and reader.stats.files_opened == 4
    assert len(ids(reader)) == 40 and reader.stats.files_opened == 4  # nothing new: nothing read
    write_rows(store, 40, 60, per_file=10)
    assert len(ids(reader)) == 60 and reader.stats.files_opened == 6
    compact(store)
    got = ids(reader)
    assert sorted(got) == sorted(f"r{i}" for i in range(60)) and reader.stats.files_opened == 7
    assert ids(reader) == ids(PredictionLogReader(store))


def check_concurrent_writes_compaction_and_reads(store: LogStore, *, flushes: int = 60) -> None:
    """A writer flushing, a compactor compacting and two readers reading, at once: every
    read holds each row once and every row flushed before it began."""
    stop = threading.Event()
    errors: list[BaseException] = []
    writer = PredictionLogWriter(store, flush_interval=3600)
    written = [0]

    def write() -> None:
        try:
            for n in range(flushes):
                for i in range(n * 20, n * 20 + 20):
                    writer.append(row(i))
                writer.flush()
                written[0] = (n + 1) * 20
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def compact_loop() -> None:
        try:
            while not stop.is_set():
                compact(store)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=compact_loop)]
    for t in threads:
        t.start()
    full, incremental = PredictionLogReader(store), IncrementalLogReader(store)
    reads = 0
    while not stop.is_set() or reads < 2:
        for reader in (full, incremental):
            floor = written[0]
            got = ids(reader)
            assert len(got) == len(set(got)), "a row was read twice"
            assert {f"r{i}" for i in range(floor)} <= set(got), "a flushed row was missed"
        reads += 1
    for t in threads:
        t.join()
    assert not errors, errors
    compact(store)
    everything = {f"r{i}" for i in range(flushes * 20)}
    for reader in (full, incremental, PredictionLogReader(store)):
        got = ids(reader)
        assert len(got) == len(everything) and set(got) == everything


def check_expire_deletes_old_partitions(store: LogStore) -> None:
    write_rows(store, 0, 10)
    put(store, store.path("labels", "model=m", "date=2026-03-01"), "part-1-1-x.parquet",
        labels([("r1", "1", T0)]))
    put(store, store.path("labels", "date=2026-02-01"), "part-1-1-x.parquet",
        labels([("r2", "1", T0)]))
    report = expire(store, days=10, today=datetime(2026, 3, 5).date())
    assert [p.removeprefix(store.root + "/") for p in report.partitions] == [
        "labels/date=2026-02-01"]
    expire(store, days=1, today=datetime(2026, 3, 5).date())
    assert ids(PredictionLogReader(store)) == []
    assert store.files(store.path("labels", "model=m", "date=2026-03-01")) == []


class _NoDelete(LogStore):
    """The store of a compactor that crashes right after writing its compacted file."""

    def __init__(self, inner: LogStore, kept: list[str]) -> None:
        self.fs, self.root, self.local, self.uri = inner.fs, inner.root, inner.local, inner.uri
        self.kept = kept

    def delete(self, path: str) -> bool:
        self.kept.append(path)
        return True


SCENARIOS = [check_bad_files_are_skipped_and_counted, check_column_types_unify_text_winning,
             check_unreadable_window_raises, check_labels_per_model_last_wins,
             check_compaction_keeps_every_row_once, check_interrupted_compaction_is_finished_later,
             check_young_files_are_left_alone, check_incremental_reader_opens_only_new_files,
             check_concurrent_writes_compaction_and_reads, check_expire_deletes_old_partitions]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_on_local_disk(scenario, tmp_path: Path) -> None:
    scenario(LogStore(tmp_path / "log"))


def test_closed_hour_ends_as_one_file(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "log")
    write_rows(store, 0, 30)
    now = datetime.now(UTC)
    Compactor(store, older_than=timedelta(0)).run(now=now + timedelta(seconds=1))
    write_rows(store, 30, 60)
    Compactor(store, older_than=timedelta(0)).run(now=now + timedelta(seconds=2))
    assert len(store.files(prediction_dir(store))) >= 2  # two pieces while the hour is open
    Compactor(store, older_than=timedelta(0)).run(now=now + LATER)
    files = store.files(prediction_dir(store))
    assert len(files) <= 2  # one per hour the flushes fell in (two if they spanned one)
    assert sorted(ids(PredictionLogReader(store))) == sorted(f"r{i}" for i in range(60))


def test_drift_check_reads_an_unreadable_log_as_an_error_not_drift(tmp_path: Path, monkeypatch):
    """drift-check's window read raises a DriftloopError (exit 2, one line), never drift."""
    from types import SimpleNamespace

    from kernel.errors import DriftloopError
    from monitoring.job import _read_window
    from monitoring.settings import MonitoringSettings

    store = LogStore(tmp_path / "log")
    check_unreadable_window_raises(store)  # leaves one corrupt file in the window
    monkeypatch.setenv("DRIFTLOOP_LOG_URI", str(tmp_path / "log"))
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    features = SimpleNamespace(all=["x", "c"], categorical=["c"])
    reference = SimpleNamespace(spec=SimpleNamespace(features=features), classes=None)  # binary
    with pytest.raises(DriftloopError, match="no readable prediction log file") as caught:
        _read_window(MonitoringSettings(), reference, "m", 1, SINCE, UNTIL)
    assert "\n" not in str(caught.value)
