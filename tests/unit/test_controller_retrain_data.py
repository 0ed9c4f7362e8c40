"""Where a retrain's data comes from, and what the controller does with a useless version, on
fakes (InMemoryRegistry, an in-memory store, a launcher that only records): a spec without
``history:`` retrains on the files the champion records it was trained on (those still there);
a version training tagged ``driftloop.useless=true`` never becomes challenger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from controller.recent import history_of, write_retrain_rows
from controller.reconcile import Managed
from kernel.spec import DatasetSpec
from registry import ALIAS_CHALLENGER, ALIAS_CHAMPION, TAG_PREFIX, NewVersion, VersionInfo
from registry.memory import InMemoryRegistry
from tests.unit.controller_harness import World, make_world
from training.data import HISTORY, RECENT, SOURCE_COLUMN, load_inputs

TAG = TAG_PREFIX


def _version(registry: InMemoryRegistry, tags: dict[str, str]) -> int:
    empty = pd.DataFrame()
    return registry.register(NewVersion("churn", model=None, spec_yaml="", input_example=empty,
                                        reference=empty, validation=empty, metrics={},
                                        params={}, tags=tags)).version


def _champion(tags: dict[str, str]) -> VersionInfo:
    return VersionInfo("churn", 1, None, "", tags)


def test_history_of_a_spec_with_history_is_its_existing_files(churn_spec: DatasetSpec,
                                                               tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x")
    spec = churn_spec.model_copy(update={"history": ["a.csv", "gone.csv"],
                                         "source": tmp_path / "spec.yaml"})
    found = history_of(spec, _champion({TAG + "data_sources": json.dumps(["/elsewhere.csv"])}))
    assert found.paths == (tmp_path / "a.csv",) and found.note == "spec history"


def test_history_of_a_spec_without_history_is_the_champions_readable_sources(
        churn_spec: DatasetSpec, tmp_path: Path) -> None:
    kept = tmp_path / "kept.parquet"
    kept.write_text("x")
    spec = churn_spec.model_copy(update={"history": [], "source": None})
    found = history_of(spec, _champion({
        TAG + "data_sources": json.dumps([str(kept), str(tmp_path / "gone.parquet")]),
        TAG + "data_since": "2026-01-02T00:00:00+00:00"}))
    assert found.paths == (kept,)
    assert found.since == datetime(2026, 1, 2, tzinfo=UTC)
    assert "1 of 2 files" in found.note and "gone.parquet" in found.note
    assert history_of(spec, None).paths == ()
    assert history_of(spec, _champion({})).paths == ()  # trained before sources were recorded
    assert history_of(spec, _champion({TAG + "data_sources": "{not json"})).paths == ()


def _world_without_history(tmp_path: Path, churn_spec: DatasetSpec) -> World:
    world = make_world(tmp_path, churn_spec)
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [], "source": None})
    world.controller.models["churn"] = Managed(spec, tmp_path / "spec.yaml")
    return world


def _retrain(world: World) -> None:
    world.store.add_trigger(model="churn", source="manual", action="retrain",
                            reason="test", now=datetime.now(UTC))
    world.controller.step("churn")


def test_a_retrain_without_history_trains_on_the_champions_recorded_data(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = _world_without_history(tmp_path, churn_spec)
    data = tmp_path / "own-data.parquet"
    data.write_text("x")
    since = "2026-01-05T00:00:00+00:00"
    v1 = _version(world.registry, {TAG + "data_sources": json.dumps([str(data)]),
                                   TAG + "data_since": since})
    world.registry.set_alias("churn", ALIAS_CHAMPION, v1)
    _retrain(world)
    [request] = world.launcher.requests
    assert request.data_paths == (data,)
    assert request.since == datetime.fromisoformat(since)


def test_without_history_or_recorded_sources_the_cycle_fails_saying_so(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = _world_without_history(tmp_path, churn_spec)
    v1 = _version(world.registry, {TAG + "data_sources": json.dumps([str(tmp_path / "gone")])})
    world.registry.set_alias("churn", ALIAS_CHAMPION, v1)
    _retrain(world)
    assert world.launcher.requests == []
    [decision] = world.store.decisions_of("churn", limit=5)
    assert decision["outcome"] == "failed"
    assert "0 of 1 files" in json.dumps(decision)


def test_a_useless_version_is_refused_as_challenger_and_the_cycle_fails(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = make_world(tmp_path, churn_spec)
    world.registry.set_alias("churn", ALIAS_CHAMPION, _version(world.registry, {}))
    _retrain(world)
    [request] = world.launcher.requests
    reason = "validation roc_auc 0.5012 is at chance level (<= 0.55)"
    _version(world.registry, {TAG + "cycle_id": request.cycle_id, TAG + "useless": "true",
                              TAG + "useless_reason": reason})
    world.controller.step("churn")
    state, _ = world.controller.load("churn")
    assert state.phase == "failed"
    assert ALIAS_CHALLENGER not in world.registry.aliases("churn")
    [decision] = world.store.decisions_of("churn", limit=5)
    assert decision["outcome"] == "failed"
    assert f"v2 refused as challenger: {reason}" in json.dumps(decision)
    assert len(world.launcher.requests) == 1  # permanent: not retrained


def test_a_useful_version_goes_to_the_gate(tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = make_world(tmp_path, churn_spec)
    world.registry.set_alias("churn", ALIAS_CHAMPION, _version(world.registry, {}))
    _retrain(world)
    [request] = world.launcher.requests
    v2 = _version(world.registry, {TAG + "cycle_id": request.cycle_id, TAG + "useless": "false"})
    world.controller.step("churn")
    # it became challenger and the gate judged it (an empty fake version: broken, rejected)
    [decision] = world.store.decisions_of("churn", limit=5)
    assert decision["outcome"] == "rejected" and decision["challenger_version"] == v2
    assert "challenger is broken" in decision["reasons"][0]
    assert world.registry.get_version("churn", v2).tags.get(TAG + "decision") == "rejected"


class _Log:
    """The prediction log's reader: 200 labelled predictions, one a minute, before NOW."""

    def __init__(self, spec: DatasetSpec) -> None:
        ts = pd.date_range(NOW - pd.Timedelta(minutes=200), NOW, freq="1min", inclusive="left")
        self.frame = pd.DataFrame({"ts": ts, "request_id": [f"r{i}" for i in range(200)],
                                   "label": ["1", "0"] * 100, "label_received_at": ts})
        for col in spec.features.numerical:
            self.frame[col] = 1.0
        for col in spec.features.categorical:
            self.frame[col] = "a"

    def window(self, model: str, since: datetime, until: datetime, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        return self.frame


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_the_cycles_file_marks_its_rows_recent_and_training_reads_them_so(
        churn_spec: DatasetSpec, tmp_path: Path) -> None:
    data = write_retrain_rows(_Log(churn_spec), churn_spec, now=NOW, days=1,
                              holdout_fraction=0.25, dest=tmp_path / "cycle.parquet")
    assert data.path is not None and data.rows == 150
    history = tmp_path / "history.parquet"
    pd.read_parquet(data.path).drop(columns=[SOURCE_COLUMN]).assign(
        customer_id=lambda f: "h" + f["customer_id"]).to_parquet(history)
    loaded = load_inputs([history, data.path], churn_spec)
    assert loaded.history_paths == (str(history.resolve()),)
    assert loaded.data[SOURCE_COLUMN].value_counts().to_dict() == {HISTORY: 150, RECENT: 150}
