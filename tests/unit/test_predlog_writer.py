"""The log writer's decisions without a disk: failure reasons, typed tables, escaping,
health with a given clock, the shutdown line, and the serving metrics that export it all."""

from __future__ import annotations

import errno
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogWriter
from monitoring.predlog.schema import escape_text, prediction_table, prediction_types
from monitoring.predlog.writer import failure_reason
from serving.metrics import ServingMetrics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


class MemoryStore(LogStore):
    """A store that keeps tables in a dict; ``error`` makes every write raise it."""

    def __init__(self) -> None:
        super().__init__("/nonexistent-memory-store")
        self.tables: dict[str, list[pa.Table]] = {}
        self.error: BaseException | None = None

    def write(self, table: pa.Table, directory: str, **kwargs: object) -> str:
        if self.error is not None:
            raise self.error
        self.tables.setdefault(directory.removeprefix(self.root + "/"), []).append(table)
        return directory


def row(i: int, **extra: object) -> dict:
    return {"ts": T0 + i, "request_id": f"r{i}", "model_name": "m", "model_version": 1,
            "score": 0.5, "prediction": 1, **extra}


@pytest.mark.parametrize(("exc", "reason"), [
    (OSError(errno.ENOSPC, "No space left on device"), "no_space"),
    (OSError("Error writing bytes. Detail: [errno 28] No space left on device"), "no_space"),
    (OSError(errno.EROFS, "Read-only file system"), "read_only"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission"),
    (OSError(errno.EIO, "Input/output error"), "io"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), "io"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "encode"),
    (pa.ArrowInvalid("bad"), "encode"),
    (RuntimeError("?"), "other"),
])
def test_failure_reasons(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason


def test_escape_text_keeps_good_text_and_escapes_lone_surrogates() -> None:
    assert escape_text("héllo ☃") == "héllo ☃"
    assert escape_text("a\ud800b") == "a\\ud800b"


def test_declared_types_win_over_values() -> None:
    spec = DatasetSpec.model_validate({"model_name": "m", "target": "y", "timestamp_column": "t",
                                       "features": {"numerical": ["n"], "categorical": ["c"]}})
    table = prediction_table([row(0, n=None, c=None), row(1, n=2, c=3)], prediction_types(spec))
    assert table.schema.field("n").type == pa.float64()
    assert table.schema.field("c").type == pa.string()
    assert table["c"].to_pylist() == [None, "3"]
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    inferred = prediction_table([row(0, other=None)])
    assert inferred.schema.field("other").type == pa.string()
    mixed = prediction_table([row(0, other=1), row(1, other="x")])
    assert mixed["other"].to_pylist() == ["1", "x"]


def test_labels_are_partitioned_by_model() -> None:
    store = MemoryStore()
    writer = PredictionLogWriter(store)
    writer.append_label("r1", 1, model="a", received_at=datetime(2026, 3, 1, tzinfo=UTC))
    writer.append_label("r2", 0, model="b", received_at=datetime(2026, 3, 2, tzinfo=UTC))
    assert writer.flush() == 2
    assert sorted(store.tables) == ["labels/model=a/date=2026-03-01",
                                    "labels/model=b/date=2026-03-02"]
    assert store.tables["labels/model=a/date=2026-03-01"][0].column_names == [
        "request_id", "label", "received_at"]


def test_health_follows_the_store_and_the_clock() -> None:
    store = MemoryStore()
    writer = PredictionLogWriter(store, stall_after=10)
    assert writer.health() == (True, "ok")
    store.error = OSError(errno.ENOSPC, "No space left on device")
    writer.append(row(0))
    writer.flush()
    ok, reason = writer.health()
    assert not ok and reason.startswith("prediction log flush failing (no_space:")
    store.error = None
    writer.flush()
    assert writer.health().ok
    writer.append(row(1))
    assert not writer.health(now=writer.stats.last_flush_ok_at + 11).ok


def test_the_shutdown_line_names_written_spooled_and_lost() -> None:
    store = MemoryStore()
    writer = PredictionLogWriter(store, max_buffer=2)
    for i in range(3):
        writer.append(row(i))
    writer.flush()
    store.error = OSError(errno.EROFS, "Read-only file system")
    writer.append(row(3))
    writer.close()
    assert writer.summary() == ("log rows: 2 written, 0 spooled, 2 lost (buffer_full 1, "
                                "shutdown 1); labels: 0 written, 0 spooled, 0 lost")


def test_the_serving_metrics_export_every_writer_figure() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, "m")
    store = MemoryStore()
    writer = PredictionLogWriter(store, max_buffer=1)
    store.error = OSError(errno.ENOSPC, "No space left on device")
    writer.append(row(0))
    writer.append(row(1))
    writer.flush()
    for _ in range(2):  # syncing twice adds nothing twice
        metrics.sync_log_writer(writer.stats, writer.health().ok)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("driftloop_log_flush_errors_total", reason="no_space") == 1
    assert value("driftloop_log_rows_lost_total", kind="prediction", reason="buffer_full") == 1
    assert value("driftloop_log_rows_dropped_total") == 1
    assert value("driftloop_log_buffered_rows") == 1
    assert value("driftloop_log_writer_healthy") == 0
    store.error = None
    writer.flush()
    metrics.sync_log_writer(writer.stats, writer.health().ok)
    assert value("driftloop_log_rows_written_total") == 1
    assert value("driftloop_log_writer_healthy") == 1
    assert value("driftloop_log_last_flush_success_timestamp_seconds") == pytest.approx(
        writer.stats.last_flush_ok_at)


def test_a_batch_the_store_cannot_encode_is_counted_and_never_retried() -> None:
    store = MemoryStore()
    writer = PredictionLogWriter(store)
    writer.append(row(0))
    store.error = pa.ArrowInvalid("cannot write this batch")
    assert writer.flush() == 0
    store.error = None
    writer.append(row(1))
    assert writer.flush() == 1
    assert writer.stats.rows_lost == {"unencodable": 1} and writer.stats.rows_written == 1
    assert writer.health().ok


def test_a_large_flush_is_encoded_in_pieces_with_one_type_per_column(monkeypatch) -> None:
    """More rows than one encoding step: one table, in order, a bad value escaped in its own
    piece, and an undeclared column null in the first piece and numeric in a later one
    keeps a single (numeric) type."""
    from monitoring.predlog import writer as writer_module

    monkeypatch.setattr(writer_module, "_ENCODE_CHUNK", 4)
    store = MemoryStore()
    writer = PredictionLogWriter(store)
    for i in range(10):
        writer.append(row(i, extra_col=None if i < 4 else i, comment="\ud800" if i == 6 else "ok"))
    assert writer.flush() == 10
    (tables,) = store.tables.values()
    (table,) = tables
    assert table.column("request_id").to_pylist() == [f"r{i}" for i in range(10)]
    assert pa.types.is_integer(table.schema.field("extra_col").type)
    assert table.column("extra_col").to_pylist() == [None] * 4 + list(range(4, 10))
    assert table.column("comment").to_pylist()[6] == escape_text("\ud800")
    assert writer.stats.values_escaped == 1 and writer.stats.rows_lost == {}


def test_pieces_whose_inferred_types_cannot_be_joined_are_encoded_again_whole(monkeypatch
                                                                              ) -> None:
    from monitoring.predlog import writer as writer_module

    monkeypatch.setattr(writer_module, "_ENCODE_CHUNK", 2)
    store = MemoryStore()
    writer = PredictionLogWriter(store)
    for i, value in enumerate([1, 2, "a", "b"]):  # int64 piece, then a string piece
        writer.append(row(i, note=value))
    assert writer.flush() == 4
    (table,) = next(iter(store.tables.values()))
    assert table.column("note").to_pylist() == ["1", "2", "a", "b"]
