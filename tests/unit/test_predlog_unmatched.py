"""Labels that match no prediction: counted per window, over a lookback, on an in-memory
filesystem; a label written before its prediction is joined (and no longer counted) once the
prediction arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow.fs import _MockFileSystem

from monitoring.predlog.reader import PredictionLogReader
from monitoring.predlog.schema import LABEL_SCHEMA, META_TYPES
from monitoring.predlog.store import LogStore

D1 = datetime(2026, 3, 1, tzinfo=UTC)
D2 = D1 + timedelta(days=1)
WEEK = timedelta(days=7)


@pytest.fixture
def store() -> LogStore:
    return LogStore.on(_MockFileSystem(), "log")


def put(store: LogStore, directory: str, name: str, table: pa.Table) -> None:
    store.fs.create_dir(store.path(directory), recursive=True)
    pq.write_table(table, store.path(directory, name), filesystem=store.fs)


def predictions(store: LogStore, at: datetime, *ids: str, model: str = "m") -> None:
    put(store, f"predictions/model={model}/date={at.date()}",
        f"part-{int(at.timestamp() * 1000)}-1-{ids[0]}.parquet",
        pa.table({"ts": pa.array([at] * len(ids), META_TYPES["ts"]), "request_id": list(ids),
                  "model_version": pa.array([1] * len(ids))}))


def labels(store: LogStore, at: datetime, *ids: str, model: str = "m") -> None:
    put(store, f"labels/model={model}/date={at.date()}",
        f"part-{int(at.timestamp() * 1000)}-1-{ids[0]}.parquet",
        pa.Table.from_pylist([{"request_id": r, "label": "1", "received_at": at} for r in ids],
                             schema=LABEL_SCHEMA))


def test_labels_for_unknown_request_ids_across_two_days_are_counted(store):
    predictions(store, D1 - timedelta(days=3), "old")            # within the lookback
    predictions(store, D1 + timedelta(hours=2), "a1", "a2")
    predictions(store, D2 + timedelta(hours=5), "b1")
    predictions(store, D2 + timedelta(hours=1), "other", model="x")  # another model's
    labels(store, D1 + timedelta(hours=3), "a1", "a2", "old", "ghost1")
    labels(store, D2 + timedelta(hours=6), "b1", "ghost2", "other", "ghost1")  # ghost1 again
    labels(store, D2 + timedelta(days=1, hours=1), "ghost3")      # received after the window
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D2 + timedelta(days=1), lookback=WEEK) == 3
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 1          # day one: ghost1
    assert reader.unmatched_labels("m", D2, D2 + timedelta(days=1), lookback=WEEK) == 3
    # a prediction older than the lookback does not match
    assert reader.unmatched_labels("m", D1, D2, lookback=timedelta(days=1)) == 2


def test_a_prediction_made_after_the_window_does_not_match(store):
    labels(store, D1 + timedelta(hours=1), "late")
    predictions(store, D1 + timedelta(hours=5), "late")
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D1 + timedelta(hours=4), lookback=WEEK) == 1
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 0


def test_a_label_before_its_prediction_is_joined_once_the_prediction_is_written(store):
    labels(store, D1 + timedelta(hours=1), "early")
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 1
    assert len(reader.window("m", D1, D2)) == 0
    predictions(store, D1 + timedelta(hours=2), "early")
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 0
    window = reader.window("m", D1, D2)
    assert list(window["request_id"]) == ["early"] and list(window["label"]) == ["1"]


def test_no_labels_reads_no_predictions(store):
    for day in range(8):
        predictions(store, D1 - timedelta(days=day), f"r{day}")
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 0
    assert reader.stats.files_opened == 0


def test_each_prediction_file_is_opened_once(store):
    for day in range(1, 4):
        predictions(store, D1 - timedelta(days=day), f"r{day}")
    labels(store, D1 + timedelta(hours=1), "r3", "nobody")
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 1
    assert reader.stats.files_opened == 1 + 3  # the label file, then each prediction day


def test_unreadable_prediction_files_are_skipped(store):
    directory = store.path(f"predictions/model=m/date={D1.date()}")
    store.fs.create_dir(directory, recursive=True)
    with store.fs.open_output_stream(f"{directory}/part-1-1-bad.parquet") as out:
        out.write(b"nope")
    predictions(store, D1 + timedelta(hours=1), "a")
    labels(store, D1 + timedelta(hours=2), "a", "b")
    reader = PredictionLogReader(store)
    assert reader.unmatched_labels("m", D1, D2, lookback=WEEK) == 1
    assert reader.stats.files_skipped == {"unreadable": 1}
