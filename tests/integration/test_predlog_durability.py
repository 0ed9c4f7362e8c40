"""The prediction log under attack, on real directories: rows typed by the spec whatever a
batch holds, text that is not UTF-8, a full disk and a read-only one (real tmpfs mounts when
root), SIGTERM into the spool and its replay by the next process. Every appended row ends up
written, spooled or counted as lost with a reason."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter
from monitoring.predlog.writer import WriterStats

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = (T0 - timedelta(minutes=1), T0 + timedelta(hours=1))


def spec(model: str = "m") -> DatasetSpec:
    return DatasetSpec.model_validate({
        "model_name": model, "target": "y", "timestamp_column": "ts0",
        "features": {"numerical": ["x"], "categorical": ["contract_type"]}})


def row(i: int, *, contract: str | None = "monthly", x: float | None = 1.0,
        model: str = "m") -> dict:
    return {"ts": T0 + timedelta(seconds=i), "request_id": f"r{i}", "model_name": model,
            "model_version": 1, "score": 0.5, "prediction": 1, "shadow_version": None,
            "shadow_score": None, "latency_ms": 0.5, "x": x, "contract_type": contract}


def accounted(stats: WriterStats) -> int:
    return (stats.rows_written + stats.rows_spooled + sum(stats.rows_lost.values())
            + stats.buffered)


# --- typed rows -----------------------------------------------------------------------------


def test_a_null_category_flushed_alone_is_still_a_string_and_the_day_reads(tmp_path):
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    writer.register_spec(spec())
    writer.append(row(0, contract=None, x=None))
    assert writer.flush() == 1
    for i in range(1, 6):
        writer.append(row(i))
    writer.close()
    files = sorted((tmp_path / "log/predictions/model=m/date=2026-03-01").glob("*.parquet"))
    assert len(files) == 2
    for path in files:
        schema = pq.read_schema(path)
        assert schema.field("contract_type").type == pa.string()
        assert schema.field("x").type == pa.float64()
    frame = PredictionLogReader(store).window("m", *WINDOW)
    assert len(frame) == 6
    assert frame["contract_type"].tolist() == [None, *["monthly"] * 5]


def test_undeclared_all_null_columns_become_strings(tmp_path):
    writer = PredictionLogWriter(LogStore(tmp_path / "log"))  # no spec registered
    writer.append({**row(0), "extra": None})
    writer.close()
    (path,) = (tmp_path / "log/predictions/model=m/date=2026-03-01").glob("*.parquet")
    assert pq.read_schema(path).field("extra").type == pa.string()


def test_versions_of_a_model_share_its_feature_types(tmp_path, caplog):
    writer = PredictionLogWriter(LogStore(tmp_path / "log"))
    writer.register_spec(spec())
    changed = DatasetSpec.model_validate({
        "model_name": "m", "target": "y", "timestamp_column": "ts0",
        "features": {"numerical": ["contract_type", "tenure"], "categorical": []}})
    writer.register_spec(changed)  # a later version: new feature added, old type kept
    writer.append({**row(0), "tenure": 3})
    writer.close()
    (path,) = (tmp_path / "log/predictions/model=m/date=2026-03-01").glob("*.parquet")
    schema = pq.read_schema(path)
    assert schema.field("contract_type").type == pa.string()
    assert schema.field("tenure").type == pa.float64()
    assert "keeping string" in caplog.text


# --- text that cannot be stored --------------------------------------------------------------


def test_a_lone_surrogate_never_poisons_the_writer(tmp_path):
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    writer.register_spec(spec())
    writer.append(row(0))
    writer.append({**row(1, contract="\ud800bad"), "request_id": "r1\udfff"})
    writer.append(row(2))
    writer.append_label("r1\udfff", "1\ud800", model="m")
    writer.append_label("r2", 1, model="m")
    assert writer.flush() == 5
    writer.append(row(3))
    assert writer.flush() == 1
    writer.close()
    s = writer.stats
    assert s.flush_errors == 0 and s.rows_written == 4 and s.values_escaped == 2
    frame = PredictionLogReader(store).window("m", *WINDOW)
    assert frame["request_id"].tolist() == ["r0", "r1\\udfff", "r2", "r3"]
    assert frame["contract_type"].tolist()[1] == "\\ud800bad"
    assert frame.set_index("request_id")["label"].to_dict()["r1\\udfff"] == "1\\ud800"


def test_a_row_its_declared_types_cannot_hold_is_left_out_and_counted(tmp_path):
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    writer.register_spec(spec())
    for i in range(40):
        writer.append(row(i, x="not a number" if i == 17 else float(i)))  # type: ignore[arg-type]
    writer.append(row(40, contract=7))  # type: ignore[arg-type]  # a number for a category
    writer.close()
    s = writer.stats
    assert s.rows_written == 40 and s.rows_lost == {"unencodable": 1}
    assert s.flush_errors_by_reason == {"encode": 1}
    assert accounted(s) == 41
    frame = PredictionLogReader(store).window("m", *WINDOW)
    assert "r17" not in set(frame["request_id"]) and frame["contract_type"].iloc[-1] == "7"


# --- a failing store: counted, unhealthy, kept, and written when it recovers ----------------


class Flaky(LogStore):
    error: OSError | None = OSError(28, "No space left on device")

    def write(self, table, directory, **kwargs):
        if self.error is not None:
            raise self.error
        return super().write(table, directory, **kwargs)


def test_a_failing_store_is_counted_unhealthy_and_caught_up_on_recovery(tmp_path):
    store = Flaky(tmp_path / "log")
    writer = PredictionLogWriter(store, max_buffer=50, stall_after=5)
    for i in range(30):
        writer.append(row(i))
    writer.append_label("r1", 1, model="m")
    assert writer.flush() == 0
    health = writer.health()
    assert not health.ok and "no_space" in health.reason and "31 rows buffered" in health.reason
    store.error = OSError(30, "Read-only file system")
    for i in range(30, 60):
        writer.append(row(i))  # 60 > max_buffer: the 10 oldest go
    writer.flush()
    s = writer.stats
    assert s.flush_errors_by_reason == {"no_space": 2, "read_only": 2}  # rows and labels
    assert s.rows_lost == {"buffer_full": 10} and s.rows_dropped == 10
    store.error = None
    assert writer.flush() == 51
    assert writer.health().ok and writer.stats.last_error is None
    assert accounted(writer.stats) == 60
    frame = PredictionLogReader(store).window("m", *WINDOW)
    assert frame["request_id"].tolist() == [f"r{i}" for i in range(10, 60)]


def test_health_fails_when_nothing_is_written_for_stall_after_seconds(tmp_path):
    writer = PredictionLogWriter(LogStore(tmp_path / "log"), stall_after=30)
    now = writer.health().ok and writer._started_at
    writer.append(row(0))
    assert writer.health(now=now + 29).ok
    stalled = writer.health(now=now + 31)
    assert not stalled.ok and "nothing written" in stalled.reason
    writer.flush()
    assert writer.health(now=writer.stats.last_flush_ok_at + 31).ok  # nothing buffered
    writer.close()
    assert not writer.health().ok


def test_close_spools_what_the_store_refuses_and_the_next_writer_replays_it(tmp_path, caplog):
    store, spool = Flaky(tmp_path / "log"), tmp_path / "spool"
    writer = PredictionLogWriter(store, spool_dir=spool)
    writer.register_spec(spec())
    for i in range(25):
        writer.append(row(i, contract=None if i % 2 else "yearly"))
    writer.append_label("r3", 1, model="m")
    caplog.set_level("INFO")
    writer.close()
    s = writer.stats
    assert (s.rows_written, s.rows_spooled, s.labels_spooled, s.rows_lost) == (0, 25, 1, {})
    assert s.spool_pending_rows == 26
    assert "log rows: 0 written, 25 spooled to" in caplog.text and "0 lost" in caplog.text
    assert len(list(spool.rglob("spool-*.arrow"))) == 2

    store.error = None
    again = PredictionLogWriter(store, spool_dir=spool)
    assert again.flush() == 0  # nothing of its own; the spool goes in after the good flush
    assert (again.stats.rows_replayed, again.stats.labels_replayed) == (25, 1)
    assert again.stats.spool_pending_rows == 0 and not list(spool.rglob("*.arrow"))
    frame = PredictionLogReader(store).window("m", *WINDOW)
    assert len(frame) == 25 and frame.set_index("request_id")["label"]["r3"] == "1"
    assert pq.read_schema(next((tmp_path / "log/predictions").rglob("*.parquet"))).field(
        "contract_type").type == pa.string()


def test_without_a_spool_rows_the_store_refuses_at_close_are_lost_and_said_so(tmp_path, caplog):
    writer = PredictionLogWriter(Flaky(tmp_path / "log"))
    for i in range(7):
        writer.append(row(i))
    caplog.set_level("INFO")
    writer.close()
    assert writer.stats.rows_lost == {"shutdown": 7} and accounted(writer.stats) == 7
    assert "7 lost (shutdown 7)" in caplog.text


def test_a_spool_claimed_by_a_dead_process_is_replayed(tmp_path):
    store, spool = Flaky(tmp_path / "log"), tmp_path / "spool"
    writer = PredictionLogWriter(store, spool_dir=spool)
    writer.append(row(0))
    writer.close()
    (path,) = spool.rglob("spool-*.arrow")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path.rename(path.with_name(f"{path.name}.{dead}.replaying"))
    store.error = None
    again = PredictionLogWriter(store, spool_dir=spool)
    again.flush()
    assert again.stats.rows_replayed == 1


# --- real mounts: a full disk and a read-only one -------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def test_a_full_disk_is_reported_and_every_row_written_once_space_returns(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as out:
            out.write(b"\0" * 1024 * 1024)  # fills the tmpfs (256k) and stops there
        store = LogStore(disk / "log")
        writer = PredictionLogWriter(store, spool_dir=tmp_path / "spool")
        writer.register_spec(spec())
        for i in range(2000):
            writer.append(row(i))
        assert writer.flush() == 0
        assert writer.stats.flush_errors_by_reason == {"no_space": 1}  # no labels to write
        assert not writer.health().ok and "no_space" in writer.health().reason
        filler.unlink()
        assert writer.flush() == 2000 and writer.health().ok
        writer.close()
        assert writer.stats.rows_written == 2000 and accounted(writer.stats) == 2000
        assert len(PredictionLogReader(store).window("m", *WINDOW)) == 2000


def test_a_read_only_log_goes_to_the_spool_on_close_and_back_on_the_next_start(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        store = LogStore(disk / "log")
        (disk / "log").mkdir()
        remount(disk, "ro")
        writer = PredictionLogWriter(store, spool_dir=tmp_path / "spool")
        for i in range(500):
            writer.append(row(i))
            writer.append_label(f"r{i}", i % 2, model="m")
        assert writer.flush() == 0
        assert set(writer.stats.flush_errors_by_reason) == {"read_only"}
        writer.close()
        s = writer.stats
        assert (s.rows_spooled, s.labels_spooled, s.rows_lost, s.labels_lost) == (500, 500, {}, {})
        remount(disk, "rw")
        again = PredictionLogWriter(store, spool_dir=tmp_path / "spool")
        again.flush()
        assert (again.stats.rows_replayed, again.stats.labels_replayed) == (500, 500)
        frame = PredictionLogReader(store).window("m", *WINDOW)
        assert len(frame) == 500 and frame["label"].notna().all()


# --- a real process stopped with SIGTERM ---------------------------------------------------

CHILD = textwrap.dedent("""
    import json, signal, sys, threading
    from datetime import UTC, datetime
    from monitoring.predlog import LogStore, PredictionLogWriter

    log, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    writer = PredictionLogWriter(LogStore(log), flush_interval=0.05, spool_dir=spool).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ts = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    for i in range(n):
        writer.append({"ts": ts + i / 1000, "request_id": f"r{i}", "model_name": "m",
                       "model_version": 1, "score": 0.5, "prediction": 1, "x": float(i)})
    print("appended", flush=True)
    stop.wait(60)
    writer.close()
    s = writer.stats
    print(json.dumps({"written": s.rows_written, "spooled": s.rows_spooled,
                      "lost": sum(s.rows_lost.values()), "errors": s.flush_errors_by_reason,
                      "healthy": writer.health().ok}), flush=True)
""")


def test_sigterm_on_a_read_only_log_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        (disk / "log").mkdir()
        remount(disk, "ro")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(disk / "log"), str(tmp_path / "spool"), "20000"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "appended"
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
        result = json.loads(out.strip().splitlines()[-1])
        assert result["written"] + result["spooled"] + result["lost"] == 20000
        assert result["spooled"] == 20000 and result["lost"] == 0
        assert result["errors"].get("read_only", 0) >= 1
        remount(disk, "rw")
        store = LogStore(disk / "log")
        again = PredictionLogWriter(store, spool_dir=tmp_path / "spool")
        again.flush()
        assert again.stats.rows_replayed == 20000
        assert len(PredictionLogReader(store).window("m", *WINDOW)) == 20000
