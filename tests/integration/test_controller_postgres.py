"""The controller's state store on a real PostgreSQL: a throwaway cluster (initdb into a
temporary directory, the server on a free 127.0.0.1 port with its socket in that directory,
stopped at the end), one fresh database per test.

What the docs promise for several replicas, checked where it matters: the alert dedup key is
unique under concurrent inserts, a lease is never held by two replicas, the state's revision
is a compare-and-swap, decisions are recorded once, and two controllers stepping the same
model at once start one retrain.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e .[dev])")

from controller.codec import state_from_json, state_to_json  # noqa: E402
from controller.machine import Cycle, ModelState  # noqa: E402
from controller.metrics import ControllerMetrics  # noqa: E402
from controller.reconcile import Controller, Managed  # noqa: E402
from controller.settings import ControllerSettings  # noqa: E402
from controller.store import StaleState, Store  # noqa: E402
from driftloop.processes import free_port as _free_port  # noqa: E402
from kernel.spec import DatasetSpec  # noqa: E402
from tests.unit.test_controller_reconcile import (  # noqa: E402
    NOW,
    CountingEvaluator,
    LogReader,
    TaggingLauncher,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _initdb() -> Path:
    """PostgreSQL's server binaries (Debian keeps them out of PATH); skip locally without
    them, fail in CI where they must be installed (.ci/ensure-binaries)."""
    found = shutil.which("initdb")
    candidates = ([found] if found else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    message = "PostgreSQL server binaries not installed (apt-get install postgresql)"
    if os.environ.get("DRIFTLOOP_REQUIRE_E2E") or os.environ.get("CI"):
        pytest.fail(message + ": required in CI", pytrace=False)
    pytest.skip(message)


@dataclass
class Cluster:
    port: int

    def admin(self) -> Any:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, connect_timeout=5)

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _initdb()
    as_postgres: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="driftloop-pg-"))
    if os.geteuid() == 0:   # the server refuses to run as root: run it as the postgres user
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, sockets = root / "data", root / "sockets"
    run = [*as_postgres]
    subprocess.run([*run, "mkdir", "-p", str(sockets)], check=True)
    done = subprocess.run([*run, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                           "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [*run, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        stdout=log, stderr=subprocess.STDOUT)
    cluster = Cluster(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (root / "server.log").read_text()
            try:
                cluster.admin().close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)   # polling for readiness, not a fixed wait
        yield cluster
    finally:
        subprocess.run([*run, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast",
                        "-w", "-t", "20"], capture_output=True, timeout=30)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:   # runuser does not pass every signal on
            subprocess.run([*run, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m",
                            "immediate", "-w"], capture_output=True, timeout=30)
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def url(cluster: Cluster) -> str:
    return cluster.new_database()


@pytest.fixture
def replicas(url: str) -> Iterator[list[Store]]:
    stores = [Store(url), Store(url)]
    yield stores
    for store in stores:
        store.close()


def _race(n: int, fn: Callable[[int], Any], workers: int = 16) -> list[Any]:
    """Run ``fn(0..n-1)`` on ``workers`` threads released together."""
    start = threading.Barrier(min(workers, n))

    def go(i: int) -> Any:
        if i < workers:
            start.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(go, range(n)))


def test_two_replicas_create_the_schema_at_once(url: str) -> None:
    stores = _race(2, lambda _: Store(url), workers=2)
    try:
        assert all(s.engine.dialect.name == "postgresql" for s in stores)
        assert stores[0].load("churn") == (None, 0)
    finally:
        for store in stores:
            store.close()


def test_dedup_key_inserts_once_under_concurrent_deliveries(replicas: list[Store]) -> None:
    def deliver(i: int) -> int | None:
        return replicas[i % 2].add_trigger(model="churn", source="alertmanager",
                                           action="retrain", reason=f"copy {i}", now=T0,
                                           dedup_key="am:fp:2026-03-01T10:00:00+00:00")

    ids = _race(300, deliver)
    assert sum(i is not None for i in ids) == 1
    (row,) = replicas[1].pending_triggers("churn")
    assert row.dedup_key == "am:fp:2026-03-01T10:00:00+00:00" and row.received_at == T0
    # distinct keys and keyless intents all go in
    others = _race(40, lambda i: replicas[i % 2].add_trigger(
        model="churn", source="verdict", action="retrain", reason="r", now=T0,
        dedup_key=None if i % 2 else f"k{i}"))
    assert None not in others and len(set(others)) == 40
    assert len(replicas[0].pending_triggers("churn")) == 41


def test_a_lease_is_never_held_by_two_replicas(replicas: list[Store]) -> None:
    # fresh leases: every round, replicas racing for the same name, exactly one wins
    for name in (f"model:m{r}" for r in range(20)):
        won = _race(8, lambda i, name=name: replicas[i % 2].acquire_lease(
            name, f"holder{i}", ttl=30, now=1000.0), workers=8)
        assert sum(won) == 1, won
    # the holder renews; nobody else gets it until it expires
    assert replicas[0].acquire_lease("model:churn", "a", ttl=30, now=1000.0)
    assert not replicas[1].acquire_lease("model:churn", "b", ttl=30, now=1020.0)
    assert replicas[0].acquire_lease("model:churn", "a", ttl=30, now=1020.0)
    assert not replicas[1].acquire_lease("model:churn", "b", ttl=30, now=1049.0)
    # expired: replicas racing to take it over, exactly one does
    won = _race(8, lambda i: replicas[i % 2].acquire_lease("model:churn", f"new{i}", ttl=30,
                                                           now=1051.0), workers=8)
    assert sum(won) == 1, won
    assert not replicas[0].acquire_lease("model:churn", "a", ttl=30, now=1052.0)
    replicas[0].release_lease("model:churn", "a")          # not the holder: no effect
    assert not replicas[0].acquire_lease("model:churn", "a", ttl=30, now=1053.0)


def test_state_round_trips_and_the_revision_is_compare_and_swap(replicas: list[Store]) -> None:
    one, two = replicas
    cycle = Cycle("churn-c1", T0, reasons=("drift: DriftHigh",), sources=("alertmanager",),
                  holdout_from=T0 - timedelta(hours=5))
    state = ModelState("churn", phase="training", since=T0, cycle=cycle, seq=1)
    trigger = one.add_trigger(model="churn", source="alertmanager", action="retrain",
                              reason="DriftHigh", now=T0, dedup_key="am:x")
    assert trigger is not None
    row = {"cycle_id": "churn-c1", "model": "churn", "started_at": T0, "phase": "training",
           "outcome": None, "challenger": None, "champion": 3, "reasons": list(cycle.reasons)}
    revision = one.save("churn", state_to_json(state), 0, now=T0,
                        trigger_done=(trigger, "started", "churn-c1"), cycle=row)
    text, loaded_revision = two.load("churn")
    assert loaded_revision == revision == 1 and state_from_json(text) == state
    # the trigger was marked done and the cycle written in the same transaction
    assert two.pending_triggers("churn") == []
    assert two.get_trigger(trigger).outcome == "started"
    (cycle_row,) = two.cycles_of("churn")
    assert cycle_row["started_at"] == T0 and cycle_row["reasons"] == ["drift: DriftHigh"]
    # a second first-save and a save at a stale revision are refused
    with pytest.raises(StaleState):
        two.save("churn", state_to_json(ModelState("churn")), 0, now=T0)
    shadow = ModelState("churn", phase="shadow", since=T0, cycle=cycle, seq=2)
    assert one.save("churn", state_to_json(shadow), 1, now=T0,
                    cycle={**row, "phase": "shadow", "challenger": 4}) == 2
    with pytest.raises(StaleState):
        two.save("churn", state_to_json(ModelState("churn")), 1, now=T0)
    assert state_from_json(two.load("churn")[0]) == shadow
    assert two.cycles_of("churn")[0]["challenger"] == 4
    # replicas racing from the same revision: exactly one write wins
    results = _race(10, lambda i: _try_save(replicas[i % 2], shadow, 2), workers=10)
    assert sorted(results) == [False] * 9 + [True]
    assert two.load("churn")[1] == 3


def _try_save(store: Store, state: ModelState, revision: int) -> bool:
    try:
        store.save(state.model, state_to_json(state), revision, now=T0)
        return True
    except StaleState:
        return False


def test_decisions_are_recorded_once(replicas: list[Store]) -> None:
    def record(i: int) -> bool:
        return replicas[i % 2].save_decision(cycle_id="churn-c1", kind="gate", model="churn",
                                             outcome="promoted", record=f'{{"copy": {i}}}',
                                             now=T0 + timedelta(seconds=i))

    assert sum(_race(20, record)) == 1
    assert replicas[0].save_decision(cycle_id="churn-c1", kind="rollback", model="churn",
                                     outcome="rolled_back", record='{"copy": "rb"}',
                                     now=T0 + timedelta(hours=1))
    decisions = replicas[1].decisions_of("churn")
    assert len(decisions) == 2 and decisions[0] == {"copy": "rb"}   # newest first
    assert "copy" in decisions[1]


def test_two_controllers_on_one_database_start_one_retrain(url: str, tmp_path: Path,
                                                          churn_spec: DatasetSpec) -> None:
    from registry.memory import InMemoryRegistry

    registry = InMemoryRegistry()
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [], "source": None})
    reader = LogReader(churn_spec, start=NOW - timedelta(days=3), until=NOW,
                       step=timedelta(minutes=10))
    launcher = TaggingLauncher(registry)
    stores = [Store(url), Store(url)]
    controllers = [
        Controller(ControllerSettings(home=tmp_path / f"home{i}", controller_recent_days=3),
                   store=store, registry=registry, launcher=launcher,  # type: ignore[arg-type]
                   reader=reader, evaluator=CountingEvaluator(),  # type: ignore[arg-type]
                   models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                   metrics=ControllerMetrics.create(), clock=lambda: NOW)
        for i, store in enumerate(stores)]
    try:
        for i in range(30):
            stores[i % 2].add_trigger(model="churn", source="alertmanager", action="retrain",
                                      reason=f"alert {i % 3}", now=NOW, dedup_key=f"am:{i % 3}")
        _race(6, lambda i: controllers[i % 2].reconcile_once(), workers=6)
        _race(6, lambda i: controllers[i % 2].reconcile_once(), workers=6)
        assert len(launcher.requests) == 1
        assert len({r.cycle_id for r in launcher.requests}) == 1
        state = controllers[1].step("churn")
        assert state.phase == "shadow" and state.cycle.merged == 2
        assert sorted(state.cycle.reasons) == [f"alertmanager: alert {i}" for i in range(3)]
        done = stores[0].triggers_of("churn")
        assert len(done) == 3 and {r.status for r in done} == {"done"}
        assert sorted(r.outcome for r in done) == ["merged", "merged", "started"]
    finally:
        for store in stores:
            store.close()
