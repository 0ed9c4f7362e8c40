"""The reader's rules on an in-memory filesystem: one type per column, manifests, what the
incremental reader opens, which label wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow.fs import _MockFileSystem

from monitoring.cli import _duration
from monitoring.predlog.reader import IncrementalLogReader, PredictionLogReader, _Cached, _target
from monitoring.predlog.schema import LABEL_SCHEMA, META_TYPES
from monitoring.predlog.store import LogStore, decode_manifest, encode_manifest

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = "predictions/model=m/date=2026-03-01"


@pytest.fixture
def store() -> LogStore:
    return LogStore.on(_MockFileSystem(), "log")


def put(store: LogStore, directory: str, name: str, table: pa.Table,
        metadata: dict[bytes, bytes] | None = None) -> None:
    store.fs.create_dir(store.path(directory), recursive=True)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, store.path(directory, name), filesystem=store.fs)


def predictions(*ids: str) -> pa.Table:
    return pa.table({"ts": pa.array([T0] * len(ids), META_TYPES["ts"]),
                     "request_id": list(ids), "model_version": pa.array([1] * len(ids))})


@pytest.mark.parametrize(("types", "expected"), [
    ([pa.float64(), pa.string()], pa.string()),  # an all-null categorical written as double
    ([pa.null(), pa.string()], pa.string()),
    ([pa.int64(), pa.float64()], pa.float64()),
    ([pa.int64(), pa.int64()], pa.int64()),
    ([pa.null()], pa.null()),
    ([pa.bool_(), pa.timestamp("us")], pa.string()),  # nothing in common: text
])
def test_one_type_per_column(types, expected):
    assert _target(types) == expected


def test_manifest_round_trip():
    names = [f"part-{i}-1-abc.parquet" for i in range(1000)]
    assert decode_manifest(encode_manifest(names)) == frozenset(names)
    assert decode_manifest(None) == frozenset() and decode_manifest({b"other": b"x"}) == frozenset()


def test_files_named_in_a_manifest_are_not_read(store):
    put(store, DAY, "part-1-1-a.parquet", predictions("r1"))
    put(store, DAY, "part-2-1-b.parquet", predictions("r2"))
    put(store, DAY, "part-3-1-c.parquet", predictions("r3"))
    put(store, DAY, "compacted-9-1-z.parquet", predictions("r1", "r2"),
        encode_manifest(["part-1-1-a.parquet", "part-2-1-b.parquet"]))
    reader = PredictionLogReader(store)
    frame = reader.predictions("m", T0, T0 + timedelta(hours=1))
    assert sorted(frame["request_id"]) == ["r1", "r2", "r3"]
    assert reader.stats.files_opened == 2 and reader.stats.files_superseded == 2


def test_incremental_reader_reads_each_file_once_and_follows_compaction(store):
    reader = IncrementalLogReader(store)
    since, until = T0, T0 + timedelta(hours=1)
    put(store, DAY, "part-1-1-a.parquet", predictions("r1"))
    assert list(reader.predictions("m", since, until)["request_id"]) == ["r1"]
    put(store, DAY, "part-2-1-b.parquet", predictions("r2"))
    assert sorted(reader.predictions("m", since, until)["request_id"]) == ["r1", "r2"]
    assert reader.stats.files_opened == 2 and reader.stats.rows_decoded == 2
    # compaction: the compacted file appears (its sources still there), then they go
    put(store, DAY, "compacted-9-1-z.parquet", predictions("r1", "r2"),
        encode_manifest(["part-1-1-a.parquet", "part-2-1-b.parquet"]))
    assert sorted(reader.predictions("m", since, until)["request_id"]) == ["r1", "r2"]
    store.fs.delete_file(store.path(DAY, "part-1-1-a.parquet"))
    store.fs.delete_file(store.path(DAY, "part-2-1-b.parquet"))
    assert sorted(reader.predictions("m", since, until)["request_id"]) == ["r1", "r2"]
    assert reader.stats.files_opened == 3


def test_an_unreadable_file_is_skipped_once(store):
    reader = IncrementalLogReader(store)
    put(store, DAY, "part-1-1-a.parquet", predictions("r1"))
    with store.fs.open_output_stream(store.path(DAY, "part-2-1-bad.parquet")) as out:
        out.write(b"nope")
    for _ in range(3):
        assert len(reader.predictions("m", T0, T0 + timedelta(hours=1))) == 1
    assert reader.stats.files_skipped == {"unreadable": 1}


def test_last_label_wins_by_received_at_then_file_name(store):
    def labels(*rows: tuple[str, str, int]) -> pa.Table:
        return pa.Table.from_pylist([{"request_id": r, "label": v,
                                      "received_at": T0 + timedelta(seconds=s)}
                                     for r, v, s in rows], schema=LABEL_SCHEMA)

    put(store, "labels/model=m/date=2026-03-01", "part-200-7-b.parquet",
        labels(("r1", "early", 1), ("r2", "later-file", 5)))
    put(store, "labels/model=m/date=2026-03-01", "part-100-8-a.parquet",
        labels(("r1", "late", 2), ("r2", "earlier-file", 5)))
    put(store, "labels/model=x/date=2026-03-01", "part-300-9-c.parquet", labels(("r3", "x", 1)))
    got = PredictionLogReader(store).labels(model="m", since=T0)
    assert dict(zip(got["request_id"], got["label"], strict=True)) == {
        "r1": "late", "r2": "later-file"}


def test_cached_partition_drops_the_rows_of_named_files():
    cached = _Cached(pa.table({"x": [1, 2, 3, 4, 5]}), [("a", 2), ("b", 1), ("c", 2)])
    cached.drop({"b"})
    assert cached.table is not None and cached.table["x"].to_pylist() == [1, 2, 4, 5]
    assert cached.spans == [("a", 2), ("c", 2)]
    cached.drop({"a", "c"})
    assert cached.table is None and cached.spans == []


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600),
                                               ("2h", 7200), ("1d", 86_400), ("0s", 0)])
def test_durations(text, seconds):
    assert _duration(text, option="--older-than") == seconds
