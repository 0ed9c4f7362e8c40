"""The controller's store across releases: schema migrations (Alembic, at start-up) and the
retention purge, on SQLite and on a throwaway PostgreSQL (the cluster fixture of
test_controller_postgres.py).

The previous release made its tables with ``metadata.create_all`` and kept no revision:
``_previous_release_metadata`` below is that schema, copied from its controller/store.py.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controller import migrations
from controller.codec import state_from_json
from controller.store import Store, metadata
from kernel.spec import DatasetSpec
from tests.unit.controller_harness import make_world
from tests.unit.test_controller_codec import V1_FULL, _full_state

try:
    from tests.integration.test_controller_postgres import cluster  # noqa: F401 (a fixture)
except pytest.skip.Exception:   # psycopg not installed: the PostgreSQL cases skip
    cluster = None

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
_OPTS = {"version_table": migrations.VERSION_TABLE}


def _previous_release_metadata() -> sa.MetaData:
    """The tables as the release before migrations declared them (create_all, no revision)."""
    md, ts = sa.MetaData(), sa.DateTime(timezone=True)
    sa.Table("model_state", md, sa.Column("model", sa.String(200), primary_key=True),
             sa.Column("state", sa.Text, nullable=False),
             sa.Column("revision", sa.Integer, nullable=False),
             sa.Column("updated_at", ts, nullable=False))
    sa.Table("notifications", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("source", sa.String(40), nullable=False),
             sa.Column("received_at", ts, nullable=False), sa.Column("body", sa.Text, nullable=False))
    sa.Table("triggers", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("model", sa.String(200), nullable=False, index=True),
             sa.Column("source", sa.String(40), nullable=False),
             sa.Column("action", sa.String(40), nullable=False),
             sa.Column("dedup_key", sa.String(500), unique=True, nullable=True),
             sa.Column("reason", sa.Text, nullable=False),
             sa.Column("actor", sa.String(200), nullable=True),
             sa.Column("version", sa.Integer, nullable=True),
             sa.Column("value", sa.Float, nullable=True),
             sa.Column("notification_id", sa.Integer, nullable=True),
             sa.Column("received_at", ts, nullable=False),
             sa.Column("status", sa.String(20), nullable=False),
             sa.Column("outcome", sa.String(40), nullable=True),
             sa.Column("cycle_id", sa.String(200), nullable=True),
             sa.Column("processed_at", ts, nullable=True))
    sa.Table("cycles", md, sa.Column("cycle_id", sa.String(200), primary_key=True),
             sa.Column("model", sa.String(200), nullable=False, index=True),
             sa.Column("started_at", ts, nullable=False),
             sa.Column("phase", sa.String(20), nullable=False),
             sa.Column("outcome", sa.String(40), nullable=True),
             sa.Column("challenger", sa.Integer, nullable=True),
             sa.Column("champion", sa.Integer, nullable=True),
             sa.Column("reasons", sa.Text, nullable=False),
             sa.Column("updated_at", ts, nullable=False))
    sa.Table("decisions", md, sa.Column("cycle_id", sa.String(200), primary_key=True),
             sa.Column("kind", sa.String(40), primary_key=True),
             sa.Column("model", sa.String(200), nullable=False, index=True),
             sa.Column("outcome", sa.String(40), nullable=False),
             sa.Column("record", sa.Text, nullable=False),
             sa.Column("created_at", ts, nullable=False))
    sa.Table("leases", md, sa.Column("name", sa.String(200), primary_key=True),
             sa.Column("holder", sa.String(200), nullable=False),
             sa.Column("expires_at", sa.Float, nullable=False))
    return md


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controller.db'}"
    if cluster is None:
        pytest.skip("psycopg not installed")
    return str(request.getfixturevalue("cluster").new_database())


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, for building and inspecting it from outside."""
    plain = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield plain
    plain.dispose()


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts=_OPTS), metadata))


def _version(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {migrations.VERSION_TABLE}"))]


def _indexes(engine: sa.Engine, table: str) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(engine).get_indexes(table)}


def test_a_new_database_is_made_at_head_and_matches_the_tables(db_url: str,
                                                               engine: sa.Engine) -> None:
    store = Store(db_url)
    try:
        assert store.schema_revision() == migrations.head() == "0003"
        assert _version(engine) == ["0003"]
        assert _schema_diff(engine) == []   # the migrations make exactly store.metadata
        assert store.migrate() == "0003"    # a second start: nothing to do
    finally:
        store.close()


def test_the_baseline_revision_is_the_previous_release_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
    with engine.connect() as conn:
        assert list(compare_metadata(MigrationContext.configure(conn, opts=_OPTS),
                                     _previous_release_metadata())) == []
    assert _version(engine) == [migrations.BASELINE]


def _fill_previous_release(engine: sa.Engine) -> None:
    md = _previous_release_metadata()
    md.create_all(engine)
    t = md.tables
    with engine.begin() as conn:
        conn.execute(t["model_state"].insert().values(model="churn", state=V1_FULL, revision=4,
                                                      updated_at=T0))
        conn.execute(t["notifications"].insert().values(source="alertmanager", received_at=T0,
                                                        body='{"version": "4"}'))
        conn.execute(t["triggers"].insert(), [
            {"model": "churn", "source": "alertmanager", "action": "retrain", "reason": "old",
             "dedup_key": "am:a", "notification_id": 1, "received_at": T0, "status": "done",
             "outcome": "started", "cycle_id": "churn-c3", "processed_at": T0},
            {"model": "churn", "source": "manual", "action": "retrain", "reason": "waiting",
             "dedup_key": None, "notification_id": None, "received_at": T0, "status": "pending",
             "outcome": None, "cycle_id": None, "processed_at": None}])
        conn.execute(t["cycles"].insert().values(
            cycle_id="churn-c3", model="churn", started_at=T0, phase="shadow", outcome=None,
            challenger=7, champion=6, reasons='["alertmanager: DriftHigh"]', updated_at=T0))
        conn.execute(t["decisions"].insert().values(cycle_id="churn-c2", kind="gate", model="churn",
                                                    outcome="promoted", record='{"v": 6}',
                                                    created_at=T0))
        conn.execute(t["leases"].insert().values(name="model:churn", holder="old", expires_at=1.0))


def test_a_database_of_the_previous_release_is_stamped_then_upgraded(db_url: str,
                                                                    engine: sa.Engine) -> None:
    _fill_previous_release(engine)
    assert migrations.VERSION_TABLE not in sa.inspect(engine).get_table_names()
    store = Store(db_url)
    try:
        assert _version(engine) == ["0003"] and _schema_diff(engine) == []
        assert {"ix_triggers_model_status"} <= _indexes(engine, "triggers")
        assert {"ix_notifications_received_at"} <= _indexes(engine, "notifications")
        # every row survived and reads through the new code
        text, revision = store.load("churn")
        assert revision == 4 and text is not None and state_from_json(text) == _full_state()
        assert [r.reason for r in store.pending_triggers("churn")] == ["waiting"]
        assert [r.dedup_key for r in store.triggers_of("churn")] == [None, "am:a"]
        assert store.add_trigger(model="churn", source="alertmanager", action="retrain",
                                 reason="dup", now=T0, dedup_key="am:a") is None  # still unique
        (cycle,) = store.cycles_of("churn")
        assert cycle["started_at"] == T0 and cycle["reasons"] == ["alertmanager: DriftHigh"]
        assert store.decisions_of("churn") == [{"v": 6}]
        assert store.count_notifications() == 1
        assert not store.acquire_lease("model:churn", "new", ttl=30, now=0.5)
        assert store.acquire_lease("model:churn", "new", ttl=30, now=2.0)
    finally:
        store.close()


def test_replicas_starting_together_migrate_once(db_url: str, engine: sa.Engine) -> None:
    _fill_previous_release(engine)
    start = threading.Barrier(4)

    def open_store(_: int) -> Store:
        start.wait(timeout=30)
        return Store(db_url)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, range(4)))
    try:
        assert _version(engine) == ["0003"] and _schema_diff(engine) == []
        assert all(s.load("churn")[1] == 4 for s in stores)
    finally:
        for store in stores:
            store.close()


def test_a_replica_opening_while_another_holds_the_write_lock_waits(tmp_path: Path) -> None:
    """Switching a rollback-journal SQLite file to WAL needs it to itself, and SQLite does
    not wait for that: a replica starting mid-migration failed "database is locked" at once
    (seen in CI). It now waits, as a write would, and opens once the lock is released."""
    path = tmp_path / "controller.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        store = Store(f"sqlite:///{path}")
    finally:
        release.join()
        holder.close()
    try:
        assert store.schema_revision() == migrations.head()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_a_database_migrated_by_a_newer_release_is_refused(db_url: str,
                                                           engine: sa.Engine) -> None:
    Store(db_url).close()
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0999'"))
    with pytest.raises(migrations.SchemaError, match="revision 0999, which this release does not"):
        Store(db_url)


def test_a_database_shared_with_mlflow_keeps_both_revisions(db_url: str,
                                                            engine: sa.Engine) -> None:
    """MLflow keeps its revision in alembic_version; the controller's is its own table."""
    _fill_previous_release(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1')"))
    store = Store(db_url)
    try:
        assert _version(engine) == ["0003"] and store.load("churn")[1] == 4
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")
                                ).scalars().all() == ["1b5f0d9ad7c1"]
    finally:
        store.close()


def test_a_partial_schema_without_a_revision_is_refused(db_url: str, engine: sa.Engine) -> None:
    md = _previous_release_metadata()
    md.tables["leases"].create(engine)
    with pytest.raises(migrations.SchemaError, match="missing: cycles, decisions"):
        Store(db_url)


def test_the_latest_revision_downgrades_and_upgrades_again(db_url: str, engine: sa.Engine) -> None:
    Store(db_url).close()
    config = migrations.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, migrations.BASELINE)
    assert "ix_triggers_model_status" not in _indexes(engine, "triggers")
    assert _version(engine) == ["0001"]
    store = Store(db_url)
    try:
        assert _version(engine) == ["0003"] and _schema_diff(engine) == []
    finally:
        store.close()


# -- retention ------------------------------------------------------------------------------

def _stored(store: Store, *, days_old: float, status: str, body: bool = True) -> int | None:
    at = T0 - timedelta(days=days_old)
    note = store.add_notification("alertmanager", "x" * 100, now=at) if body else None
    trigger = store.add_trigger(model="churn", source="alertmanager", action="retrain",
                                reason=f"{status} {days_old}", now=at, notification_id=note,
                                status=status)
    assert trigger is not None
    if status == "done":
        store.save("churn", '{"model": "churn"}', store.load("churn")[1], now=at,
                   trigger_done=(trigger, "started", "c1"))
    return note


def test_purge_deletes_old_bodies_and_finished_triggers_only(db_url: str) -> None:
    store = Store(db_url)
    try:
        for status in ("done", "resolved", "ignored", "pending"):
            _stored(store, days_old=40, status=status)
            _stored(store, days_old=10, status=status)
        old_note = store.add_notification("verdict", "{}", now=T0 - timedelta(days=40))
        store.save("churn", '{"model": "churn"}', store.load("churn")[1], now=T0,
                   cycle={"cycle_id": "c1", "model": "churn", "started_at": T0 - timedelta(days=90),
                          "phase": "idle", "outcome": "promoted", "challenger": 2, "champion": 1,
                          "reasons": ["r"]})
        store.save_decision(cycle_id="c1", kind="gate", model="churn", outcome="promoted",
                            record="{}", now=T0 - timedelta(days=90))
        assert store.count_notifications() == 9

        # 40-day-old: 3 finished triggers go, with the bodies of 3 + the lone verdict body;
        # the old pending trigger and the body it came in stay
        assert store.purge(T0 - timedelta(days=30)) == (4, 3)
        left = {(r.status, r.reason) for r in store.triggers_of("churn")}
        assert left == {("pending", "pending 40"), ("done", "done 10"),
                        ("resolved", "resolved 10"), ("ignored", "ignored 10"),
                        ("pending", "pending 10")}
        assert store.count_notifications() == 5 and old_note is not None
        assert len(store.cycles_of("churn")) == 1 and len(store.decisions_of("churn")) == 1
        assert [r.reason for r in store.pending_triggers("churn")] == ["pending 40", "pending 10"]
        assert store.purge(T0 - timedelta(days=30)) == (0, 0)   # idempotent
    finally:
        store.close()


def test_purge_due_runs_at_most_hourly_and_never_when_disabled(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'retention.db'}")
    try:
        _stored(store, days_old=40, status="done")
        assert store.purge_due(T0, retention_days=0) is None          # 0: keep everything
        assert store.count_notifications() == 1
        assert store.purge_due(T0, retention_days=30) == (1, 1)
        _stored(store, days_old=40, status="ignored")
        assert store.purge_due(T0 + timedelta(minutes=59), retention_days=30) is None
        assert store.count_notifications() == 1
        assert store.purge_due(T0 + timedelta(hours=1), retention_days=30) == (1, 1)
    finally:
        store.close()


def test_the_reconcile_loop_purges(tmp_path: Path, churn_spec: DatasetSpec,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path, churn_spec, controller_retention_days=30)
    store, controller = world.store, world.controller
    controller.clock = lambda: T0
    _stored(store, days_old=40, status="ignored")
    _stored(store, days_old=40, status="pending")
    stop, purged = threading.Event(), []
    real = store.purge_due

    def purge_then_stop(now: datetime, retention_days: float) -> tuple[int, int] | None:
        purged.append(real(now, retention_days))
        stop.set()
        controller.wake.set()   # the loop's wait returns at once, then sees stop
        return purged[-1]

    monkeypatch.setattr(store, "purge_due", purge_then_stop)
    controller.run(stop)
    # the pass took the old pending trigger first (done now: kept by its processing time);
    # then both 40-day-old bodies and the ignored trigger went
    assert purged == [(2, 1)]
    (left,) = store.triggers_of("churn")
    assert left.reason == "pending 40" and left.status == "done"
