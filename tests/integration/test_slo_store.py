"""The SLO tables of the controller's store (migration 0003) on SQLite and PostgreSQL: the
history read from a time on (with the last evaluation before it), the purge, and an
exhaustion stored with its trigger in one transaction, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.store import SloEvaluationRow, Store

# the database fixture (SQLite, and a throwaway PostgreSQL when psycopg is installed) and the
# cluster it draws PostgreSQL databases from
from tests.integration.test_controller_migrations import cluster, db_url  # noqa: F401

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _row(minutes: int, status: str = "bad", slo: str = "auc") -> SloEvaluationRow:
    return SloEvaluationRow(model="churn", slo=slo, evaluated_at=T0 + timedelta(minutes=minutes),
                            status=status, source="realised" if status != "unknown" else None,
                            value=0.8 if status != "unknown" else None, objective=0.91,
                            rows=500, version=3, note=f"look at {minutes}")


def test_slo_history_purge_and_exhaustion(db_url: str) -> None:  # noqa: F811 (the fixture)
    store = Store(db_url)
    try:
        for minutes in (0, 5, 10, 15, 20):
            store.add_slo_evaluation(_row(minutes, "good" if minutes < 10 else "bad"))
        store.add_slo_evaluation(_row(7, slo="other"))
        since = store.slo_evaluations_of("churn", "auc", since=T0 + timedelta(minutes=12))
        # from 12 min on, and the last one before (10 min): its time reaches into the window
        assert [r.evaluated_at for r in since] == [T0 + timedelta(minutes=m) for m in (10, 15, 20)]
        assert since[0] == _row(10)
        assert store.purge_slo_evaluations("churn", "auc", T0 + timedelta(minutes=12)) == 2
        assert [r.note for r in store.slo_evaluations_of("churn", "auc")] == [
            "look at 10", "look at 15", "look at 20"]
        assert len(store.slo_evaluations_of("churn", "other")) == 1      # another SLO's: kept

        at = T0 + timedelta(minutes=20)
        trigger = {"source": "slo", "action": "retrain", "reason": "SLO auc: exhausted",
                   "dedup_key": f"slo:churn:auc:{at.isoformat()}"}
        assert store.last_slo_exhaustion("churn", "auc") is None
        assert store.add_slo_exhaustion(model="churn", slo="auc", at=at, action="retrain",
                                        remaining=-0.1, trigger=trigger)
        assert not store.add_slo_exhaustion(model="churn", slo="auc", at=at, action="retrain",
                                            remaining=-0.1, trigger=trigger)   # once
        assert store.last_slo_exhaustion("churn", "auc") == at
        pending = store.pending_triggers("churn")
        assert [(t.source, t.action, t.reason, t.received_at) for t in pending] == [
            ("slo", "retrain", "SLO auc: exhausted", at)]
    finally:
        store.close()
