"""The same log scenarios on an S3 server (moto, on 127.0.0.1): no rename, no atomic move,
only whole-object puts, listings and deletes."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from monitoring.predlog import LogStore, PredictionLogReader
from tests.conftest import ROOT
from tests.integration.test_predlog_compaction import SCENARIOS, write_rows

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the log URI points at a prefix in it, the endpoint in its query."""
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    bucket = f"log-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_bucket(
                     Bucket=bucket)
    return f"s3://{bucket}/prefix?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_on_s3(scenario, s3_uri: str) -> None:
    scenario(LogStore(s3_uri))


def test_cli_compacts_and_expires_on_s3(s3_uri: str, tmp_path) -> None:
    store = LogStore(s3_uri)
    write_rows(store, 0, 50)
    env = {"DRIFTLOOP_LOG_URI": s3_uri, "DRIFTLOOP_HOME": str(tmp_path / "home"),
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "PATH": ""}

    def driftloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "driftloop.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    done = driftloop("log", "compact", "--older-than", "0s")
    assert done.returncode == 0, done.stderr
    assert "files ->" in done.stdout and "compacted 5 files into 1" in done.stdout
    assert len(PredictionLogReader(store).window("m", datetime(2026, 3, 1, tzinfo=UTC),
                                                 datetime(2026, 3, 2, tzinfo=UTC))) == 50
    bad = driftloop("log", "compact", "--older-than", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --older-than")
    none = driftloop("log", "expire")
    assert none.returncode == 2 and "no retention" in none.stderr
    gone = driftloop("log", "expire", "--days", "1")
    assert gone.returncode == 0 and "deleted 1 partitions" in gone.stdout
    assert store.partitions(store.path("predictions", "model=m")) == [] or not store.files(
        store.path("predictions", "model=m", "date=2026-03-01"))
