"""A real serving process whose prediction log is on a read-only filesystem (a tmpfs
remounted read-only; root only): every answered prediction is accounted for by the
shutdown line after SIGTERM, and readiness, the flush-error metric and the
spool say so, and the next start replays the spool."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, load_spec
from monitoring.predlog import LogStore, PredictionLogReader
from registry import open_registry
from tests.integration.test_predlog_durability import remount, tmpfs
from tests.integration.test_serving_http import start_server, stop, wait_for
from training.generate import generate
from training.train import train

ROOT = Path(__file__).resolve().parents[2]
CLOSED = re.compile(r"log rows: (\d+) written, (\d+) spooled(?: to \S+)?, (\d+) lost")


@dataclass
class Served:
    home: Path
    disk: Path
    spec: DatasetSpec
    records: list[dict]


def champion_home(tmp_path: Path, *, days: int = 3,
                  seed: int = 7) -> tuple[Path, DatasetSpec, list[dict]]:
    """A home with a trained churn champion (a unique model name) and request records drawn
    from its own data."""
    home = tmp_path / "home"
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    spec = spec.model_copy(update={"model_name": f"churn-{uuid.uuid4().hex[:8]}"})
    frame = generate(days, rows_per_day=300, seed=seed)
    data = tmp_path / "churn.parquet"
    frame.to_parquet(data, index=False)
    train(spec, [data], open_registry(CommonSettings(home=home)), alias="champion", seed=0)
    records = []
    for i in range(len(frame)):
        row = frame.iloc[i]
        record = {c: float(row[c]) for c in spec.features.numerical}
        record.update({c: str(row[c]) for c in spec.features.categorical})
        records.append(record)
    return home, spec, records


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    home, spec, records = champion_home(tmp_path)
    with tmpfs(tmp_path / "disk", "8m") as disk:
        (disk / "log").mkdir()
        yield Served(home, disk, spec, records)


def answer(url: str, records: list[dict], n: int) -> int:
    answered = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(n):
            r = client.post("/predict", json=records[i % len(records)])
            assert r.status_code == 200, r.text
            answered += 1
    return answered


def closed_line(text: str) -> tuple[int, int, int]:
    found = CLOSED.findall(text)
    assert found, text[-3000:]
    written, spooled, lost = map(int, found[-1])
    return written, spooled, lost


def test_sigterm_with_a_read_only_log_accounts_for_every_answered_row(served: Served) -> None:
    env = {"DRIFTLOOP_LOG_URI": str(served.disk / "log"),
           "DRIFTLOOP_LOG_SPOOL_DIR": str(served.home / "spool")}
    server = start_server(served.home, served.spec.model_name, **env)
    try:
        remount(served.disk, "ro")
        answered = answer(server.url, served.records, 300)
    finally:
        code = stop(server)
    assert code in (0, -15), server.tail()  # uvicorn re-raises SIGTERM once shut down
    written, spooled, lost = closed_line(server.output.read_text())
    assert written == 0 and written + spooled + lost == answered


def test_a_read_only_log_fails_readiness_spools_at_sigterm_and_replays(served: Served) -> None:
    env = {"DRIFTLOOP_LOG_URI": str(served.disk / "log"),
           "DRIFTLOOP_LOG_SPOOL_DIR": str(served.home / "spool")}
    server = start_server(served.home, served.spec.model_name, **env)
    try:
        remount(served.disk, "ro")
        answered = answer(server.url, served.records, 300)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r,
                             timeout=20, what="readiness to fail")
            assert "read_only" in ready.text
            metrics = client.get("/metrics").text
            assert 'driftloop_log_flush_errors_total{reason="read_only"}' in metrics
            assert "driftloop_log_writer_healthy 0.0" in metrics
    finally:
        code = stop(server)
    assert code in (0, -15), server.tail()
    assert closed_line(server.output.read_text()) == (0, answered, 0)

    remount(served.disk, "rw")
    again = start_server(served.home, served.spec.model_name, **env)
    try:
        with httpx.Client(base_url=again.url, timeout=10) as client:
            wait_for(lambda: 'driftloop_log_rows_replayed_total{kind="prediction"} '
                     f"{float(answered)}" in client.get("/metrics").text, timeout=30,
                     what="the spool's replay")
    finally:
        stop(again)
    now = datetime.now(UTC)
    frame = PredictionLogReader(LogStore(served.disk / "log")).window(
        served.spec.model_name, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert len(frame) == answered
