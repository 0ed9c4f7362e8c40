"""The two requests that used to poison or stop the log, sent to a real serving process:
a null categorical flushed alone (written as double: every reader of the day failed) and a
lone surrogate in a feature and in a request id (every later flush failed). Afterwards the
day reads whole through the drift check's command and the controller's reader, and every
answered prediction is in the log. And kill -9 of a writing process loses at most what it
had buffered since its last flush."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from driftloop.cli import main
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogReader, open_log
from tests.integration.test_predlog_serving import champion_home
from tests.integration.test_serving_http import (
    FEEDBACK_TOKEN,
    Server,
    start_server,
    stop,
    wait_for,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, DatasetSpec, list[dict], Path]]:
    home, spec, records = champion_home(tmp_path, days=4, seed=11)
    server = start_server(home, spec.model_name)
    try:
        yield server, spec, records, home
    finally:
        stop(server)


def _written(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("driftloop_log_rows_written_total"):
            return float(line.split()[-1])
    return 0.0


def test_a_null_categorical_and_lone_surrogates_never_poison_the_day(served, capsys) -> None:
    server, spec, records, home = served
    categorical = spec.features.categorical[0]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        alone = {**records[0], categorical: None}  # a legitimate missing value
        r = client.post("/predict", json={**alone, "request_id": "null-alone"})
        assert r.status_code == 200, r.text
        wait_for(lambda: _written(client) >= 1, what="the null row flushed alone")

        poisoned = client.post("/predict", content=json.dumps(
            {**records[1], categorical: "\ud800"}).encode(), headers={
                "content-type": "application/json"})
        assert poisoned.status_code == 422 and categorical in poisoned.text
        bad_id = client.post("/predict", content=json.dumps(
            {**records[1], "request_id": "\udfff"}).encode(), headers={
                "content-type": "application/json"})
        assert bad_id.status_code == 422 and "request_id" in bad_id.text
        label = client.post("/feedback", content=json.dumps(
            {"request_id": "\udfff", "label": 1}).encode(), headers={
                "content-type": "application/json", "authorization": f"Bearer {FEEDBACK_TOKEN}"})
        assert label.status_code == 422

        answered = 1
        ids = []
        for i in range(2, 262):
            r = client.post("/predict", json={**records[i], "request_id": f"r{i}"})
            assert r.status_code == 200, r.text
            ids.append(f"r{i}")
            answered += 1
        labels = [{"request_id": rid, "label": i % 2} for i, rid in enumerate(ids)]
        r = client.post("/feedback", json={"labels": labels},
                        headers={"authorization": f"Bearer {FEEDBACK_TOKEN}"})
        assert r.status_code == 202
        wait_for(lambda: _written(client) >= answered, what="every answered row written")
        assert _written(client) == answered
        assert client.get("/readyz").status_code == 200

    # the drift check reads the whole day (it used to exit 1 on an ArrowTypeError)
    os.environ["DRIFTLOOP_HOME"] = str(home)
    try:
        code = main(["drift-check", "--model", spec.model_name])
    finally:
        del os.environ["DRIFTLOOP_HOME"]
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    assert "Traceback" not in captured.err
    verdict = json.loads(sorted((home / "reports" / spec.model_name).glob("verdict-*.json")
                                )[-1].read_text())
    assert verdict["rows"] == answered
    # the controller's reader sees every row, the null one with a missing (string) value
    now = datetime.now(UTC)
    _, reader = open_log(CommonSettings(home=home).resolved_log_uri, incremental=True)
    window = reader.window(spec.model_name, now - timedelta(days=1), now + timedelta(minutes=1),
                           labels_as_of=now + timedelta(minutes=1))
    assert len(window) == answered
    null_row = window[window["request_id"] == "null-alone"]
    assert null_row[categorical].isna().all()
    wait_for(lambda: reader.window(spec.model_name, now - timedelta(days=1),
                                   now + timedelta(minutes=1),
                                   labels_as_of=now + timedelta(minutes=1))["label"].notna().sum()
             == len(ids), what="the labels flushed and joined")


WRITER = textwrap.dedent("""
    import sys, time
    from monitoring.predlog import LogStore, PredictionLogWriter
    writer = PredictionLogWriter(LogStore(sys.argv[1]), flush_interval=0.2).start()
    appended = 0
    while True:
        for _ in range(50):
            writer.append({"ts": time.time(), "request_id": f"id-{appended}", "model_name": "m",
                           "model_version": 1, "score": 0.5, "prediction": 0, "x": 1.0})
            appended += 1
        print(f"appended {appended} written {writer.stats.rows_written}", flush=True)
        time.sleep(0.01)
""")


def test_kill_9_loses_at_most_what_was_buffered_since_the_last_flush(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:  # until a few flushes have happened
        last = line
        if int(line.split()[3]) >= 2_000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    tail = [last, *proc.stdout.read().splitlines()]
    appended, written = (int(v) for v in tail[-1].split()[1::2])
    rows = PredictionLogReader(LogStore(log)).predictions(
        "m", datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1))
    stored = rows["request_id"].tolist()
    assert len(stored) == len(set(stored))  # no row twice, no half-written file read
    # everything reported flushed survived; what was lost was only ever in the buffer (the
    # process may have appended one more batch of 50 after its last line)
    assert written <= len(stored) <= appended + 50
    assert set(stored) == {f"id-{i}" for i in range(len(stored))}
