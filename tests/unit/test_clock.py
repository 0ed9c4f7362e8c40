"""The simulated clock (kernel/clock.py): the wall clock unless DRIFTLOOP_SIMULATED_CLOCK_FILE
names a file; time stands still between two writes; a bad file is one clear error; the
serving app stamps log rows and labels with it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kernel.clock import ClockError, FileClock, WallClock, clock_for, read_instant, write_instant
from kernel.errors import UsageError
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogWriter
from registry.memory import InMemoryRegistry
from serving.app import create_app
from tests.unit.test_serving_app import FEEDBACK, make_settings, running, sample_record
from training.train import train

AT = datetime(2026, 1, 7, 6, 30, 15, 123456, tzinfo=UTC)


def test_without_a_file_it_is_the_wall_clock() -> None:
    clock = clock_for(None)
    assert isinstance(clock, WallClock)
    assert abs(clock.time() - time.time()) < 1
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1
    assert clock.now().tzinfo is not None


def test_the_file_says_what_time_it_is_and_time_stands_still_between_writes(
        tmp_path: Path) -> None:
    path = tmp_path / "clock" / "now"
    write_instant(path, AT)
    clock = clock_for(path)
    assert isinstance(clock, FileClock)
    assert clock.now() == AT == clock.now()
    assert clock.time() == AT.timestamp()
    write_instant(path, AT + timedelta(days=1))
    assert clock.now() == AT + timedelta(days=1)
    assert list(path.parent.iterdir()) == [path]  # written atomically, no temporary file left


def test_an_instant_in_another_zone_reads_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "now"
    write_instant(path, AT.astimezone(timezone(timedelta(hours=2))))
    assert read_instant(path) == AT and read_instant(path).tzinfo == UTC


@pytest.mark.parametrize("text, says", [(None, "No such file"),
                                        ("tomorrow", "is not an ISO 8601 instant"),
                                        ("2026-01-07T06:30:00", "has no UTC offset")])
def test_a_missing_or_bad_file_is_a_usage_error_naming_it(tmp_path: Path, text: str | None,
                                                          says: str) -> None:
    path = tmp_path / "now"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ClockError, match=says) as caught:
        FileClock(path).now()
    assert isinstance(caught.value, UsageError) and str(path) in str(caught.value)


def test_a_naive_instant_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_instant(tmp_path / "now", datetime(2026, 1, 7))


def test_the_setting_chooses_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(CommonSettings(home=tmp_path).clock(), WallClock)
    path = tmp_path / "now"
    write_instant(path, AT)
    monkeypatch.setenv("DRIFTLOOP_SIMULATED_CLOCK_FILE", str(path))
    assert CommonSettings(home=tmp_path).clock().now() == AT


@dataclass
class KeepingWriter(PredictionLogWriter):
    """The real writer, keeping a copy of the rows and labels it was handed."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    labels: list[datetime | None] = field(default_factory=list)

    def append(self, row: dict[str, Any]) -> bool:
        self.rows.append(dict(row))
        return super().append(row)

    def append_label(self, request_id: str, label: Any, *, model: str,
                     received_at: datetime | None = None) -> None:
        self.labels.append(received_at)
        super().append_label(request_id, label, model=model, received_at=received_at)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serving_stamps_rows_and_labels_with_the_simulated_clock(
        home: Path, unique_model_spec: DatasetSpec, churn_file: Path, churn_frame: pd.DataFrame,
        anyio_backend: str) -> None:
    record = sample_record(churn_frame, unique_model_spec)
    registry = InMemoryRegistry()
    train(unique_model_spec, [churn_file], registry, alias="champion")
    path = home / "clock"
    write_instant(path, AT)
    writer = KeepingWriter(LogStore(home / "log"))
    settings = make_settings(home, unique_model_spec, simulated_clock_file=path)
    app = create_app(settings, registry=registry, log_writer=writer)
    async with running(app) as client:
        one = await client.post("/predict", json={**record, "request_id": "a"})
        write_instant(path, AT + timedelta(hours=1))
        batch = await client.post("/predict/batch", json={"records": [record, record]})
        write_instant(path, AT + timedelta(days=1))
        label = await client.post("/feedback", json={"request_id": "a", "label": 1},
                                  headers=FEEDBACK)
    assert one.status_code == batch.status_code == 200 and label.status_code == 202
    assert [r["ts"] for r in writer.rows] == [AT.timestamp()] + \
        [(AT + timedelta(hours=1)).timestamp()] * 2
    assert writer.labels == [AT + timedelta(days=1)]
