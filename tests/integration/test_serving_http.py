"""The serving app as a real process (uvicorn on loopback) on a real MLflow sqlite store:
alias moves are followed, a broken version is refused while the old one keeps serving,
no request fails across swaps under load, bad requests get 4xx with reasons, and after
SIGTERM with two workers the log holds exactly the answered predictions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop.processes import free_port
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, load_spec
from monitoring.predlog import LogStore, PredictionLogReader
from registry import ModelRegistry, open_registry
from training.generate import generate
from training.train import fit, package, split, train

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "integration-feedback"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}

# The broken model below is pickled by value: the server process need not import tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class NaNScores:
    """Wraps a fitted pipeline and answers NaN: a version that must never go live."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.full((len(X), 2), np.nan)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    output: Path

    def tail(self) -> str:
        return self.output.read_text()[-3000:] if self.output.exists() else ""


def start_server(home: Path, model: str, *, workers: int = 1, **env: str) -> Server:
    port = free_port()
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")}
    environ.update({"DRIFTLOOP_HOME": str(home), "DRIFTLOOP_MODEL": model,
                    "DRIFTLOOP_ADMIN_TOKEN": TOKEN, "DRIFTLOOP_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
                    "DRIFTLOOP_SERVING_POLL_INTERVAL": "0.5",
                    "DRIFTLOOP_SERVING_RETRY_INTERVAL": "0.5", **env})
    output = home / f"server-{port}.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", "serve", "--port", str(port),
             "--workers", str(workers)], cwd=ROOT, env=environ, stdout=sink,
            stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", output)
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"server exited {process.returncode}:\n{server.tail()}")
            try:
                if client.get("/readyz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    stop(server)
    raise AssertionError(f"server not ready in time:\n{server.tail()}")


def stop(server: Server, timeout: float = 60) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=timeout)


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Store:
    home: Path
    spec: DatasetSpec
    registry: ModelRegistry
    data: Path
    frame: pd.DataFrame
    versions: list[int]

    def record(self, i: int = 0) -> dict[str, Any]:
        row = self.frame.iloc[i]
        out: dict[str, Any] = {c: float(row[c]) for c in self.spec.features.numerical}
        out.update({c: str(row[c]) for c in self.spec.features.categorical})
        return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    home = tmp_path_factory.mktemp("serving-http") / "home"
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    spec = spec.model_copy(update={"model_name": f"churn-{uuid.uuid4().hex[:8]}"})
    frame = generate(5, rows_per_day=400, seed=5)
    data = home.parent / "churn.parquet"
    frame.to_parquet(data, index=False)
    registry = open_registry(CommonSettings(home=home))
    v1 = train(spec, [data], registry, alias="champion", seed=0).version.version
    v2 = train(spec, [data], registry, seed=1).version.version
    return Store(home, spec, registry, data, frame, [v1, v2])


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[Server]:
    running = start_server(store.home, store.spec.model_name)
    yield running
    stop(running)


def live_version(client: httpx.Client) -> int | None:
    champion = client.get("/model").json()["champion"]
    return champion and champion["version"]


def test_follows_alias_and_refuses_a_broken_version(store: Store, server: Server) -> None:
    name = store.spec.model_name
    v1, v2 = store.versions
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert live_version(client) == v1
        store.registry.set_alias(name, "champion", v2)
        wait_for(lambda: live_version(client) == v2, what="the poll to load v2")
        assert client.post("/predict", json=store.record()).json()["model_version"] == v2
        # a version whose model scores NaN, registered like any other
        frame = store.frame
        parts = split(frame, store.spec)
        fitted = fit(parts, store.spec)
        from training.train import Evaluation
        good = package(store.spec, frame, parts, fitted,
                       Evaluation(np.full(len(parts.validation), 0.5), {"roc_auc": 0.5}),
                       tags={})
        broken = store.registry.register(replace(good, model=NaNScores(fitted.model))).version
        store.registry.set_alias(name, "champion", broken)
        r = client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 409 and r.json()["outcome"] == "rejected"
        assert "non-finite" in r.json()["detail"]
        assert client.post("/admin/reload").status_code == 401
        served = client.post("/predict", json=store.record(3))
        assert served.status_code == 200 and served.json()["model_version"] == v2
        described = client.get("/model").json()
        assert described["champion"]["version"] == v2
        assert str(broken) in described["rejected"]
        assert described["champion"]["fast_path"] == "linear"
        metrics = client.get("/metrics").text
        assert f'driftloop_model_reloads_total{{model="{name}",outcome="rejected"}} 1.0' in metrics
        assert f'driftloop_model_info{{alias="champion",model="{name}",version="{v2}"}} 1.0' \
            in metrics
        store.registry.set_alias(name, "champion", v2)


def test_no_failed_request_across_swaps_under_load(store: Store, server: Server) -> None:
    name = store.spec.model_name
    v1, v2 = store.versions
    failures: list[str] = []
    seen: set[int] = set()
    answered = [0]
    stop_flag = threading.Event()
    lock = threading.Lock()

    def hammer(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            i = k
            while not stop_flag.is_set():
                try:
                    r = client.post("/predict", json=store.record(i % 500))
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        with lock:
                            seen.add(r.json()["model_version"])
                            answered[0] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 7

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as admin:
            for version in (v1, v2, v1, v2):
                store.registry.set_alias(name, "champion", version)
                assert admin.post("/admin/reload", headers=AUTH).json()["version"] == version
                count = answered[0]
                wait_for(lambda c=count: answered[0] > c + 20, what="requests after the swap")
    finally:
        stop_flag.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen == {v1, v2}
    assert answered[0] > 80


def test_bad_requests_get_4xx_with_a_reason(store: Store, server: Server) -> None:
    good = store.record()
    raw = {"content-type": "application/json"}
    cases: list[tuple[str, str, Any]] = [
        ("/predict", "malformed", b'{"tenure_months": 1,,}'),
        ("/predict", "not utf-8", b'{"a": "\xff\xfe"}'),
        ("/predict", "wrong types", good | {"tenure_months": "ten", "contract_type": 2}),
        ("/predict", "unknown field", good | {"surprise": 1}),
        ("/predict", "NaN", b'{"tenure_months": NaN}'),
        ("/predict", "infinity", b'{"tenure_months": 1e999}'),
        ("/predict", "missing", {"tenure_months": 1.0}),
        ("/predict", "huge body", b'{"pad": "' + b"x" * 5_000_000 + b'"}'),
        ("/predict/batch", "empty batch", {"records": []}),
        ("/predict/batch", "no records", {"rows": [good]}),
        ("/predict/batch", "over the limit", {"records": [good] * 1001}),
        ("/predict/batch", "bad record", {"records": [good, good | {"support_tickets": None,
                                                                     "x": 1}]}),
        ("/feedback", "no label", {"request_id": "r1"}),
        ("/feedback", "malformed", b"{"),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, what, body in cases:
            auth = FEEDBACK if path == "/feedback" else {}
            if isinstance(body, bytes):
                r = client.post(path, content=body, headers=raw | auth)
            else:
                r = client.post(path, json=body, headers=auth)
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
            assert r.json()["detail"], what
        r = client.post("/predict", json=good | {"surprise": 1})
        assert r.json()["errors"] == {"surprise": "unknown field"}
        metrics = client.get("/metrics").text
        assert 'status="500"' not in metrics


def test_two_workers_log_every_answered_prediction_after_sigterm(store: Store) -> None:
    home = store.home.parent / "two-workers"
    name = store.spec.model_name
    registry = open_registry(CommonSettings(home=home))
    v1 = train(store.spec, [store.data], registry, alias="champion", seed=0).version.version
    v2 = train(store.spec, [store.data], registry, alias="challenger", seed=2).version.version
    server = start_server(home, name, workers=2)
    answered, lock = [0], threading.Lock()
    try:
        def client_loop(k: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for i in range(60):
                    r = client.post("/predict", json=store.record(k * 60 + i))
                    assert r.status_code == 200
                    with lock:
                        answered[0] += 1
                r = client.post("/predict/batch",
                                json={"records": [store.record(i) for i in range(5)]})
                assert r.status_code == 200
                with lock:
                    answered[0] += 5

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            text = client.get("/metrics").text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("driftloop_predictions_total{"))
        assert total == answered[0]  # aggregated over both workers
    finally:
        code = stop(server)
    assert code == 0, server.tail()
    now = datetime.now(UTC)
    rows = PredictionLogReader(LogStore(home / "log")).predictions(
        name, now - timedelta(hours=1), now + timedelta(hours=1))
    assert answered[0] == 4 * 65
    assert len(rows) == answered[0]
    assert rows["request_id"].is_unique
    assert (rows["model_version"] == v1).all()
    assert (rows["shadow_version"] == v2).all()  # shadow ran in both workers
