"""The prediction and label log on a real directory: nothing written is lost, windows
are exact, labels join last-wins whenever they arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter, keep_sample

T0 = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)


def row(i: int, *, version: int = 1, ts: datetime = T0, model: str = "m") -> dict:
    return {"ts": ts, "request_id": f"r{i}", "model_name": model, "model_version": version,
            "score": i / 1000, "prediction": int(i % 2), "shadow_version": None,
            "shadow_score": None, "latency_ms": 0.5, "x": float(i), "c": "a" if i % 3 else None}


@pytest.fixture
def log(tmp_path: Path) -> tuple[PredictionLogWriter, PredictionLogReader]:
    store = LogStore(tmp_path / "log")
    return PredictionLogWriter(store, flush_interval=0.05), PredictionLogReader(store)


def test_round_trip_partitions_by_day_and_windows_exactly(log, tmp_path):
    writer, reader = log
    for i in range(100):
        writer.append(row(i, ts=T0 + timedelta(seconds=i)))  # crosses midnight at i=60
    writer.close()
    days = sorted(p.name for p in (tmp_path / "log" / "predictions" / "model=m").iterdir())
    assert days == ["date=2026-03-01", "date=2026-03-02"]
    everything = reader.predictions("m", T0, T0 + timedelta(hours=1))
    assert len(everything) == 100 and everything["ts"].is_monotonic_increasing
    second_day = reader.predictions("m", datetime(2026, 3, 2, tzinfo=UTC),
                                    datetime(2026, 3, 3, tzinfo=UTC))
    assert list(second_day["request_id"]) == [f"r{i}" for i in range(60, 100)]
    assert everything["c"].isna().sum() == 34  # missing categories stay missing
    assert writer.stats.rows_written == 100 and writer.stats.rows_dropped == 0


def test_versions_never_mix_and_labels_join_last_wins(log):
    writer, reader = log
    for i in range(10):
        writer.append(row(i, version=1 + i % 2))
    writer.append_label("r3", 1, model="m")  # before its prediction is even flushed
    writer.flush()
    writer.append_label("r3", 0, model="m")
    writer.append_label("r4", "yes", model="m")
    writer.append_label("never-predicted", 1, model="m")
    writer.close()
    frame = reader.window("m", T0 - timedelta(minutes=1), T0 + timedelta(minutes=1), version=2)
    assert set(frame["model_version"]) == {2} and len(frame) == 5
    labels = dict(zip(frame["request_id"], frame["label"], strict=True))
    assert labels["r3"] == "0"
    ones = reader.window("m", T0 - timedelta(minutes=1), T0 + timedelta(minutes=1), version=1)
    assert dict(zip(ones["request_id"], ones["label"], strict=True))["r4"] == "yes"


def test_labels_as_of_hides_later_labels(log):
    writer, reader = log
    writer.append(row(1))
    writer.append_label("r1", 1, model="m", received_at=T0 + timedelta(days=2))
    writer.close()
    window = (T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert reader.window("m", *window)["label"].tolist() == ["1"]
    hidden = reader.window("m", *window, labels_as_of=T0 + timedelta(days=1))
    assert hidden["label"].isna().all()


def test_failed_flush_keeps_rows_for_the_next_try(tmp_path):
    class Flaky(LogStore):
        fail = True

        def write(self, table, directory):
            if self.fail:
                raise OSError("disk full")
            return super().write(table, directory)

    store = Flaky(tmp_path / "log")
    writer, reader = PredictionLogWriter(store), PredictionLogReader(store)
    for i in range(20):
        writer.append(row(i))
    assert writer.flush() == 0 and writer.stats.flush_errors == 1
    store.fail = False
    writer.close()
    assert len(reader.predictions("m", T0, T0 + timedelta(minutes=1))) == 20


def test_overflow_drops_oldest_and_counts(tmp_path):
    writer = PredictionLogWriter(LogStore(tmp_path / "log"), max_buffer=5)
    for i in range(8):
        writer.append(row(i))
    assert writer.stats.rows_dropped == 3
    writer.close()
    frame = PredictionLogReader(writer.store).predictions("m", T0, T0 + timedelta(minutes=1))
    assert frame["request_id"].tolist() == ["r3", "r4", "r5", "r6", "r7"]


def test_sampling_is_deterministic_by_request_id():
    kept = [keep_sample(f"req-{i}", 0.25) for i in range(4000)]
    assert 0.2 < sum(kept) / len(kept) < 0.3
    assert kept == [keep_sample(f"req-{i}", 0.25) for i in range(4000)]


def test_background_thread_flushes_without_close(log):
    import time

    writer, reader = log
    writer.start()
    writer.append(row(1))
    deadline = time.monotonic() + 10
    while writer.stats.rows_written == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(reader.predictions("m", T0, T0 + timedelta(minutes=1))) == 1
    writer.close()


def test_epoch_float_timestamps_land_in_the_right_day(log):
    """Serving stamps rows with time.time(); the writer converts them in bulk."""
    writer, reader = log
    before_midnight = datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()
    for i, ts in enumerate([before_midnight, before_midnight + 1.0]):
        writer.append({**row(i), "ts": ts})
    writer.close()
    first = reader.predictions("m", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    second = reader.predictions("m", datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert first["request_id"].tolist() == ["r0"] and second["request_id"].tolist() == ["r1"]
    assert first["ts"].iloc[0] == pd.Timestamp("2026-03-01 23:59:59.5", tz="UTC")
