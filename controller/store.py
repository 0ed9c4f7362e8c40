"""The controller's persisted state (SQLAlchemy Core): SQLite by default, PostgreSQL by URL.

Tables:

- ``model_state``: one JSON state per model with a revision (optimistic concurrency);
- ``notifications``: the raw body of every accepted webhook request;
- ``triggers``: one row per intent (alert, verdict, manual command, built-in trigger), with a
  unique ``dedup_key`` (Alertmanager: ``am:<fingerprint>:<startsAt>``) so duplicate and
  concurrent deliveries insert once, whatever the number of replicas;
- ``cycles``: one row per cycle (history for ``/status``);
- ``decisions``: the local copy of every decision, keyed by (cycle_id, kind);
- ``leases``: which replica works on which model now, so two never run the same cycle;
- ``slo_evaluations``: each SLO evaluation of a model (good, bad, unknown), the history its
  error budget is computed from (controller/slo.py), kept for the SLO's period;
- ``slo_exhaustions``: each exhausted error budget and what the controller did about it.

The schema is migrated (Alembic, ``controller/migrations``) when a store is opened, one
replica at a time; ``metadata`` below is the schema at the newest revision. Notifications
and finished triggers older than the retention are purged (``purge``); pending triggers,
cycles, decisions and states are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from controller import migrations

log = logging.getLogger(__name__)

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)

model_state = sa.Table(
    "model_state", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)
notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("received_at", _TS, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
triggers = sa.Table(
    "triggers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("source", sa.String(40), nullable=False),
    # retrain | rollback | promote | performance | degraded | none
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("dedup_key", sa.String(500), unique=True, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("notification_id", sa.Integer, nullable=True),
    sa.Column("received_at", _TS, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),   # pending | done | resolved | ignored
    sa.Column("outcome", sa.String(40), nullable=True),
    sa.Column("cycle_id", sa.String(200), nullable=True),
    sa.Column("processed_at", _TS, nullable=True),
)
sa.Index("ix_triggers_model_status", triggers.c.model, triggers.c.status)   # revision 0002
sa.Index("ix_notifications_received_at", notifications.c.received_at)      # revision 0002
cycles = sa.Table(
    "cycles", metadata,
    sa.Column("cycle_id", sa.String(200), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("phase", sa.String(20), nullable=False),
    sa.Column("outcome", sa.String(40), nullable=True),
    sa.Column("challenger", sa.Integer, nullable=True),
    sa.Column("champion", sa.Integer, nullable=True),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)
decisions = sa.Table(
    "decisions", metadata,
    sa.Column("cycle_id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)
leases = sa.Table(
    "leases", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

slo_evaluations = sa.Table(                                                 # revision 0003
    "slo_evaluations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("slo", sa.String(100), nullable=False),
    sa.Column("evaluated_at", _TS, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),      # good | bad | unknown
    sa.Column("source", sa.String(20), nullable=True),       # realised | estimated
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("objective", sa.Float, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("note", sa.Text, nullable=False),
)
sa.Index("ix_slo_evaluations_model_slo_at", slo_evaluations.c.model, slo_evaluations.c.slo,
         slo_evaluations.c.evaluated_at)
slo_exhaustions = sa.Table(                                                 # revision 0003
    "slo_exhaustions", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("slo", sa.String(100), primary_key=True),
    sa.Column("exhausted_at", _TS, primary_key=True),
    sa.Column("action", sa.String(20), nullable=False),       # retrain | ticket | none
    sa.Column("remaining", sa.Float, nullable=False),
    sa.Column("trigger_id", sa.Integer, nullable=True),
)


_SCHEMA_LOCK = 0x64726966746C6F6F & 0x7FFFFFFFFFFFFFFF  # "driftloo": advisory lock key
FINISHED = ("done", "resolved", "ignored")   # trigger statuses the purge may delete
PURGE_EVERY = timedelta(hours=1)


class StaleState(Exception):
    """Someone else saved this model's state since it was loaded."""


@dataclass(frozen=True)
class TriggerRow:
    id: int
    model: str
    source: str
    action: str
    reason: str
    actor: str | None
    version: int | None
    value: float | None
    dedup_key: str | None
    received_at: datetime
    status: str
    outcome: str | None
    cycle_id: str | None


@dataclass(frozen=True)
class SloEvaluationRow:
    """One stored SLO evaluation (controller/slo.py ``Evaluation``)."""

    model: str
    slo: str
    evaluated_at: datetime
    status: str                 # good | bad | unknown
    source: str | None          # realised | estimated; None when unknown
    value: float | None
    objective: float
    rows: int
    version: int | None
    note: str


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT returns its primary key"
    return int(key[0])


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: datetime | None) -> datetime | None: ...
def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive values
        return value.replace(tzinfo=UTC)
    return value


#: How long a SQLite connection waits for another's write lock before giving up.
SQLITE_BUSY_SECONDS = 30.0


def _use_wal(cursor: Any, timeout: float = SQLITE_BUSY_SECONDS) -> None:
    """Put the database in WAL mode (persistent: once set, a read of the mode is all).

    Switching needs the database to itself and SQLite does not call its busy handler for it:
    a replica starting while another migrates got "database is locked" at once. So the
    switch is retried, with backoff, for as long as a write would wait."""
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def make_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                               "timeout": SQLITE_BUSY_SECONDS}}
    if url in ("sqlite://", "sqlite:///:memory:"):
        kwargs["poolclass"] = sa.pool.StaticPool
    else:
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["pool_size"] = 8
        kwargs["max_overflow"] = 32
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None   # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000:.0f}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")   # writers queue instead of failing to upgrade

    return engine


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        # SQLite has one writer at a time; queueing writers of this process on a lock is far
        # fairer and faster than SQLite's sleep-and-retry busy handler (kept for other processes).
        self._lock: Any = threading.Lock() if url.startswith("sqlite") else contextlib.nullcontext()
        self._purged_at: datetime | None = None
        try:
            self.migrate()
        except BaseException:
            self.engine.dispose()   # a store that cannot start holds no connections
            raise

    def migrate(self) -> str | None:
        """Bring the schema to the newest revision, in one transaction; returns the revision
        found (None: an empty database). Replicas starting together would race on CREATE
        TABLE: on PostgreSQL they queue on a transaction-scoped advisory lock; on SQLite the
        transaction starts with BEGIN IMMEDIATE (``make_engine``), which takes the database's
        one write lock, so the next process waits and then finds the schema at head."""
        with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            return migrations.upgrade(conn)

    def schema_revision(self) -> str | None:
        with self._tx() as conn:
            return migrations.current(conn)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- intake -------------------------------------------------------------------------

    def add_notification(self, source: str, body: str, *, now: datetime) -> int:
        with self._tx() as conn:
            result = conn.execute(notifications.insert().values(source=source, received_at=now,
                                                                body=body))
            return _new_id(result)

    def add_trigger(self, *, model: str, source: str, action: str, reason: str, now: datetime,
                    dedup_key: str | None = None, actor: str | None = None,
                    version: int | None = None, value: float | None = None,
                    notification_id: int | None = None, status: str = "pending") -> int | None:
        """Insert one intent; ``None`` when its dedup key was already taken (a duplicate)."""
        try:
            with self._tx() as conn:
                if dedup_key is not None and conn.execute(sa.select(triggers.c.id).where(
                        triggers.c.dedup_key == dedup_key)).first() is not None:
                    return None  # cheap path; the unique constraint still decides races
                result = conn.execute(triggers.insert().values(
                    model=model, source=source, action=action, reason=reason,
                    dedup_key=dedup_key, actor=actor, version=version, value=value,
                    notification_id=notification_id, received_at=now, status=status))
                return _new_id(result)
        except IntegrityError:
            return None

    def pending_triggers(self, model: str) -> list[TriggerRow]:
        query = (sa.select(triggers).where(triggers.c.model == model,
                                           triggers.c.status == "pending")
                 .order_by(triggers.c.id))
        with self._tx() as conn:
            return [_trigger_row(r) for r in conn.execute(query)]

    def get_trigger(self, trigger_id: int) -> TriggerRow | None:
        with self._tx() as conn:
            row = conn.execute(sa.select(triggers).where(triggers.c.id == trigger_id)).first()
        return None if row is None else _trigger_row(row)

    def triggers_of(self, model: str | None = None, limit: int = 1000) -> list[TriggerRow]:
        query = sa.select(triggers).order_by(triggers.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(triggers.c.model == model)
        with self._tx() as conn:
            return [_trigger_row(r) for r in conn.execute(query)]

    def count_notifications(self) -> int:
        with self._tx() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(notifications))
                       .scalar_one())

    # -- retention ----------------------------------------------------------------------

    def purge(self, older_than: datetime) -> tuple[int, int]:
        """Delete notification bodies received before ``older_than`` and finished triggers
        (done, resolved, ignored) last touched before it; returns (notifications, triggers)
        deleted. Pending triggers and the bodies they came in, cycles, decisions, states and
        leases are never deleted."""
        older_than = older_than.astimezone(UTC)   # SQLite compares the stored UTC text
        touched = sa.func.coalesce(triggers.c.processed_at, triggers.c.received_at)
        still_needed = sa.select(triggers.c.notification_id).where(
            triggers.c.status == "pending", triggers.c.notification_id.is_not(None))
        with self._tx() as conn:
            gone_triggers = conn.execute(triggers.delete().where(
                triggers.c.status.in_(FINISHED), touched < older_than)).rowcount
            gone_bodies = conn.execute(notifications.delete().where(
                notifications.c.received_at < older_than,
                notifications.c.id.not_in(still_needed))).rowcount
        if gone_bodies or gone_triggers:
            log.info("retention: deleted %d notification bodies and %d finished triggers "
                     "from before %s", gone_bodies, gone_triggers, older_than.isoformat())
        return gone_bodies, gone_triggers

    def purge_due(self, now: datetime, retention_days: float) -> tuple[int, int] | None:
        """``purge`` what is older than ``retention_days`` (0: keep everything), at most once
        per ``PURGE_EVERY`` per store; None when not due. The reconcile loop calls it."""
        if retention_days <= 0 or (self._purged_at is not None
                                   and now - self._purged_at < PURGE_EVERY):
            return None
        self._purged_at = now
        return self.purge(now - timedelta(days=retention_days))

    # -- state --------------------------------------------------------------------------

    def load(self, model: str) -> tuple[str | None, int]:
        with self._tx() as conn:
            row = conn.execute(sa.select(model_state.c.state, model_state.c.revision)
                               .where(model_state.c.model == model)).first()
        return (None, 0) if row is None else (row.state, int(row.revision))

    def save(self, model: str, state: str, revision: int, *, now: datetime,
             trigger_done: tuple[int, str, str | None] | None = None,
             cycle: dict[str, Any] | None = None) -> int:
        """Write the state if still at ``revision`` (else StaleState), with the trigger that
        caused it marked done and the cycle row upserted, in one transaction."""
        with self._tx() as conn:
            if revision == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(model_state.insert().values(
                            model=model, state=state, revision=1, updated_at=now))
                except IntegrityError:
                    raise StaleState(model) from None
            else:
                done = conn.execute(model_state.update().where(
                    model_state.c.model == model, model_state.c.revision == revision)
                    .values(state=state, revision=revision + 1, updated_at=now))
                if done.rowcount != 1:
                    raise StaleState(model)
            if trigger_done is not None:
                trigger_id, outcome, cycle_id = trigger_done
                conn.execute(triggers.update().where(triggers.c.id == trigger_id).values(
                    status="done", outcome=outcome, cycle_id=cycle_id, processed_at=now))
            if cycle is not None:
                values = {**cycle, "updated_at": now, "reasons": json.dumps(cycle["reasons"])}
                changed = conn.execute(cycles.update().where(
                    cycles.c.cycle_id == cycle["cycle_id"]).values(**values))
                if changed.rowcount == 0:
                    conn.execute(cycles.insert().values(**values))
        return revision + 1

    def cycles_of(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        query = (sa.select(cycles).where(cycles.c.model == model)
                 .order_by(cycles.c.started_at.desc()).limit(limit))
        with self._tx() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["reasons"] = json.loads(row["reasons"])
            row["started_at"] = _utc(row["started_at"])
            row["updated_at"] = _utc(row["updated_at"])
        return rows

    # -- decisions ----------------------------------------------------------------------

    def save_decision(self, *, cycle_id: str, kind: str, model: str, outcome: str,
                      record: str, now: datetime) -> bool:
        try:
            with self._tx() as conn:
                conn.execute(decisions.insert().values(cycle_id=cycle_id, kind=kind, model=model,
                                                       outcome=outcome, record=record,
                                                       created_at=now))
            return True
        except IntegrityError:
            return False

    def decisions_of(self, model: str, limit: int = 10) -> list[dict[str, Any]]:
        query = (sa.select(decisions).where(decisions.c.model == model)
                 .order_by(decisions.c.created_at.desc()).limit(limit))
        with self._tx() as conn:
            return [json.loads(r.record) for r in conn.execute(query)]

    # -- leases -------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        """Take or renew ``name`` for ``ttl`` seconds; False while another holder has it."""
        with self._tx() as conn:
            done = conn.execute(leases.update().where(
                leases.c.name == name,
                sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl))
            if done.rowcount == 1:
                return True
            try:
                with conn.begin_nested():
                    conn.execute(leases.insert().values(name=name, holder=holder,
                                                        expires_at=now + ttl))
                return True
            except IntegrityError:
                return False

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    # -- SLOs ---------------------------------------------------------------------------

    def add_slo_evaluation(self, row: SloEvaluationRow) -> None:
        with self._tx() as conn:
            conn.execute(slo_evaluations.insert().values(
                model=row.model, slo=row.slo, evaluated_at=row.evaluated_at, status=row.status,
                source=row.source, value=row.value, objective=row.objective, rows=row.rows,
                version=row.version, note=row.note))

    def slo_evaluations_of(self, model: str, slo: str, *,
                           since: datetime | None = None) -> list[SloEvaluationRow]:
        """The evaluations of one SLO, oldest first; from ``since`` on, and the last one
        before it (whose time still counts from ``since``)."""
        where = [slo_evaluations.c.model == model, slo_evaluations.c.slo == slo]
        query = sa.select(slo_evaluations).where(*where).order_by(slo_evaluations.c.evaluated_at,
                                                                  slo_evaluations.c.id)
        with self._tx() as conn:
            before: list[Any] = []
            if since is not None:
                since = since.astimezone(UTC)
                query = query.where(slo_evaluations.c.evaluated_at >= since)
                before = list(conn.execute(
                    sa.select(slo_evaluations).where(*where,
                                                     slo_evaluations.c.evaluated_at < since)
                    .order_by(slo_evaluations.c.evaluated_at.desc(),
                              slo_evaluations.c.id.desc()).limit(1)))
            rows = [*before, *conn.execute(query)]
        return [_slo_row(r) for r in rows]

    def purge_slo_evaluations(self, model: str, slo: str, before: datetime) -> int:
        """Delete one SLO's evaluations older than ``before``, except the newest of them
        (its time may still reach into the period)."""
        before = before.astimezone(UTC)
        where = [slo_evaluations.c.model == model, slo_evaluations.c.slo == slo]
        with self._tx() as conn:
            keep = conn.execute(sa.select(slo_evaluations.c.id).where(
                *where, slo_evaluations.c.evaluated_at < before)
                .order_by(slo_evaluations.c.evaluated_at.desc(), slo_evaluations.c.id.desc())
                .limit(1)).scalar()
            if keep is None:
                return 0
            return int(conn.execute(slo_evaluations.delete().where(
                *where, slo_evaluations.c.evaluated_at < before,
                slo_evaluations.c.id != keep)).rowcount)

    def add_slo_exhaustion(self, *, model: str, slo: str, at: datetime, action: str,
                           remaining: float, trigger: dict[str, Any] | None = None) -> bool:
        """Record an exhausted budget and, with it in one transaction, the trigger it asks for
        (``trigger``: the ``add_trigger`` fields but model and now); False when that one was
        recorded already (nothing is inserted then)."""
        try:
            with self._tx() as conn:
                trigger_id = None
                if trigger is not None:
                    trigger_id = _new_id(conn.execute(triggers.insert().values(
                        **{"status": "pending", **trigger, "model": model, "received_at": at})))
                conn.execute(slo_exhaustions.insert().values(
                    model=model, slo=slo, exhausted_at=at, action=action, remaining=remaining,
                    trigger_id=trigger_id))
            return True
        except IntegrityError:
            return False

    def last_slo_exhaustion(self, model: str, slo: str) -> datetime | None:
        with self._tx() as conn:
            at = conn.execute(sa.select(sa.func.max(slo_exhaustions.c.exhausted_at)).where(
                slo_exhaustions.c.model == model, slo_exhaustions.c.slo == slo)).scalar()
        return _utc(at)


def _slo_row(row: Any) -> SloEvaluationRow:
    m = row._mapping
    return SloEvaluationRow(model=m["model"], slo=m["slo"], evaluated_at=_utc(m["evaluated_at"]),
                            status=m["status"], source=m["source"], value=m["value"],
                            objective=m["objective"], rows=m["rows"], version=m["version"],
                            note=m["note"])


def _trigger_row(row: Any) -> TriggerRow:
    m = row._mapping
    return TriggerRow(id=m["id"], model=m["model"], source=m["source"], action=m["action"],
                      reason=m["reason"], actor=m["actor"], version=m["version"], value=m["value"],
                      dedup_key=m["dedup_key"], received_at=_utc(m["received_at"]),
                      status=m["status"], outcome=m["outcome"], cycle_id=m["cycle_id"])
