"""No promotion without a change, through the reconcile shell with hand-written fakes: a
retrain that reproduces the champion's training data ends ``no_change``, the alias stays,
one decision is recorded with the challenger's training rows per source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from controller.evidence import Evaluator, ModelCache
from controller.launcher import LaunchRequest, LaunchStatus
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from registry import TAG_PREFIX, NewVersion
from registry.memory import InMemoryRegistry

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HASH = "5f0c1e9a2b7d4c3e8f6a"


def _tags(**extra: str) -> dict[str, str]:
    return {TAG_PREFIX + "data_hash": HASH, TAG_PREFIX + "train_rows_history": "13000",
            TAG_PREFIX + "train_rows_recent": "0", **{TAG_PREFIX + k: v for k, v in extra.items()}}


class EmptyLog:
    """A prediction log with no rows: nothing but the data hash can decide here."""

    def window(self, model: str, since: datetime, until: datetime, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        return pd.DataFrame(columns=["ts", "request_id", "label", "label_received_at"])


class SameDataLauncher:
    """Training that reproduces the champion: a version with the champion's data hash."""

    def __init__(self, registry: InMemoryRegistry) -> None:
        self.registry = registry

    def launch(self, request: LaunchRequest) -> str:
        empty = pd.DataFrame()
        self.registry.register(NewVersion(request.model, None, "", empty, empty, empty, {}, {},
                                          _tags(cycle_id=request.cycle_id)))
        return "registered"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("exited", 0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_retrain_that_reproduces_the_champion_is_no_change(tmp_path: Path,
                                                            churn_spec: DatasetSpec) -> None:
    registry = InMemoryRegistry()
    empty = pd.DataFrame()
    champion = registry.register(NewVersion("churn", None, "", empty, empty, empty, {}, {},
                                            _tags()))
    registry.set_alias("churn", "champion", champion.version)
    history = tmp_path / "history.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(history)   # the launcher fake never reads it
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [str(history)],
                                         "source": None})
    settings = ControllerSettings(home=tmp_path / "home", controller_evaluate_every_seconds=0)
    clock = Clock(NOW)
    store = Store("sqlite://")
    log = EmptyLog()
    evaluator = Evaluator(registry, log, ModelCache(registry, tmp_path / "bundles"))  # type: ignore[arg-type]
    controller = Controller(settings, store=store, registry=registry,
                            launcher=SameDataLauncher(registry), reader=log,  # type: ignore[arg-type]
                            evaluator=evaluator,
                            models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                            metrics=ControllerMetrics.create(), clock=clock)
    try:
        store.add_trigger(model="churn", source="manual", action="retrain", reason="go",
                          now=clock())
        controller.reconcile_once()
        clock.now += timedelta(minutes=1)
        controller.reconcile_once()
        state, _ = controller.load("churn")
        assert state.phase == "cooldown" and state.last_outcome == "no_change"
        assert state.until is not None and state.until - state.since == \
            timedelta(seconds=settings.controller_cooldown_seconds)
        aliases = registry.aliases("churn")
        assert aliases["champion"] == champion.version and "challenger" not in aliases
        assert [d.outcome for d in registry.decisions] == ["no_change"]
        record = registry.decisions[0]
        assert record.challenger_version == 2 and record.new_champion_version == champion.version
        assert any("same data as champion v1" in r for r in record.reasons)
        assert record.extra["challenger_train_rows_history"] == 13000.0
        assert record.extra["challenger_train_rows_recent"] == 0.0
        assert [d["outcome"] for d in store.decisions_of("churn")] == ["no_change"]
        assert registry.get_version("churn", 2).tags[TAG_PREFIX + "decision"] == "no_change"
    finally:
        store.close()
