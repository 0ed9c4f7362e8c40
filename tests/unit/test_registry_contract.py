"""One contract for every ModelRegistry adapter: the in-memory fake here, and the real
MLflow adapter on a temporary sqlite store (tests/integration/test_registry_mlflow.py runs
this same class with another fixture)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from registry import (
    ANY,
    AliasConflict,
    DecisionRecord,
    ModelRegistry,
    NewVersion,
    VersionNotFound,
)
from registry.bundle import Bundle
from registry.memory import InMemoryRegistry
from training.train import evaluate, fit, package, split


@pytest.fixture(scope="module")
def new_version_factory(churn_spec, churn_frame):
    from kernel.tables import conform

    data = conform(churn_frame, churn_spec)
    parts = split(data, churn_spec)
    fitted = fit(parts, churn_spec)
    evaluation = evaluate(fitted, parts, churn_spec)
    base = package(churn_spec, data, parts, fitted, evaluation, tags={"driftloop.trigger": "test"})

    def make(name: str, **tags: str) -> NewVersion:
        from dataclasses import replace

        return replace(base, name=name, tags={**base.tags, **tags})

    return make


class RegistryContract:
    """Subclasses provide a ``registry`` fixture."""

    @pytest.fixture
    def name(self) -> str:
        return f"m-{uuid.uuid4().hex[:8]}"

    def test_register_numbers_versions_and_keeps_tags(self, registry: ModelRegistry, name,
                                                      new_version_factory):
        v1 = registry.register(new_version_factory(name, **{"driftloop.cycle_id": "c1"}))
        v2 = registry.register(new_version_factory(name, **{"driftloop.cycle_id": "c2"}))
        assert (v1.version, v2.version) == (1, 2)
        assert registry.get_version(name, 2).tags["driftloop.cycle_id"] == "c2"
        assert "driftloop.data_hash" in v1.tags

    def test_missing_things(self, registry: ModelRegistry, name):
        assert registry.get_alias(name, "champion") is None
        assert registry.aliases(name) == {}
        with pytest.raises(VersionNotFound):
            registry.get_version(name, 7)

    def test_alias_compare_and_set(self, registry: ModelRegistry, name, new_version_factory):
        for _ in range(3):
            registry.register(new_version_factory(name))
        registry.set_alias(name, "champion", 1, expected=None)
        with pytest.raises(AliasConflict) as lost:
            registry.set_alias(name, "champion", 2, expected=None)
        assert lost.value.actual == 1
        registry.set_alias(name, "champion", 2, expected=1)
        with pytest.raises(AliasConflict):
            registry.set_alias(name, "champion", 3, expected=1)
        registry.set_alias(name, "previous", 1, expected=ANY)
        assert registry.aliases(name) == {"champion": 2, "previous": 1}
        champion = registry.get_alias(name, "champion")
        assert champion is not None and champion.version == 2
        registry.delete_alias(name, "previous", expected=1)
        registry.delete_alias(name, "previous")  # already gone: no error
        assert registry.aliases(name) == {"champion": 2}

    def test_concurrent_movers_one_wins(self, registry: ModelRegistry, name, new_version_factory):
        for _ in range(3):
            registry.register(new_version_factory(name))
        registry.set_alias(name, "champion", 1)
        outcomes: list[str] = []

        def move(to: int) -> None:
            try:
                registry.set_alias(name, "champion", to, expected=1)
                outcomes.append(f"won {to}")
            except AliasConflict:
                outcomes.append("lost")

        threads = [threading.Thread(target=move, args=(v,)) for v in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes)[0] == "lost" and len(outcomes) == 2
        winner = int(next(o for o in outcomes if o.startswith("won")).split()[1])
        assert registry.aliases(name)["champion"] == winner

    def test_tags_and_find(self, registry: ModelRegistry, name, new_version_factory):
        registry.register(new_version_factory(name, **{"driftloop.cycle_id": "a"}))
        registry.register(new_version_factory(name, **{"driftloop.cycle_id": "b"}))
        registry.set_tags(name, 1, {"driftloop.decision": "rejected"})
        assert registry.get_version(name, 1).tags["driftloop.decision"] == "rejected"
        found = registry.find_versions(name, {"driftloop.cycle_id": "b"})
        assert [v.version for v in found] == [2]
        assert registry.find_versions(name, {"driftloop.cycle_id": "zzz"}) == []

    def test_description_replaced(self, registry: ModelRegistry, name, new_version_factory):
        registry.register(new_version_factory(name))
        registry.set_description(name, 1, "**Latest decision**: promoted")
        assert registry.get_version(name, 1).description == "**Latest decision**: promoted"
        with pytest.raises(VersionNotFound):
            registry.set_description(name, 9, "x")

    def test_download_bundle_and_load(self, registry: ModelRegistry, name, new_version_factory,
                                      tmp_path: Path, churn_spec):
        new = new_version_factory(name)
        registry.register(new)
        bundle = Bundle(registry.download(name, 1, tmp_path / "bundle"))
        assert bundle.is_complete()
        assert bundle.spec.features.all == churn_spec.features.all
        assert list(bundle.reference.columns) == churn_spec.features.all
        assert {"label", "score"} <= set(bundle.validation.columns)
        assert bundle.metrics["roc_auc"] == pytest.approx(new.metrics["roc_auc"])
        model = registry.load_model(bundle.root)
        scores = model.predict_proba(bundle.validation[churn_spec.features.all])[:, 1]
        np.testing.assert_allclose(scores, bundle.validation["score"], rtol=0, atol=1e-12)

    def test_decisions_are_idempotent_by_cycle(self, registry: ModelRegistry, name):
        record = DecisionRecord(model=name, kind="gate", outcome="promoted", cycle_id="cyc-1",
                                decided_at=datetime(2026, 1, 2, tzinfo=UTC), champion_version=1,
                                challenger_version=2, new_champion_version=2,
                                triggers=("alertmanager:DriftShareHigh",),
                                reasons=("ci low -0.001 >= -0.005",), evidence="shadow",
                                metric="roc_auc", n=812, champion_metric=0.71,
                                challenger_metric=0.78, difference=0.07, ci_low=0.05,
                                ci_high=0.09, margin=0.005)
        first = registry.record_decision(record)
        again = registry.record_decision(record)
        assert first.run_id and again.run_id == first.run_id
        listed = registry.list_decisions(name)
        assert len(listed) == 1
        assert listed[0].challenger_metric == pytest.approx(0.78)
        assert listed[0].triggers == ("alertmanager:DriftShareHigh",)
        assert listed[0].title == f"{name} v2 -> champion (promoted, +0.070)"
        rollback = registry.record_decision(DecisionRecord(
            model=name, kind="rollback", outcome="rolled_back", cycle_id="cyc-2",
            decided_at=datetime(2026, 1, 3, tzinfo=UTC), champion_version=2,
            challenger_version=1, new_champion_version=1, evidence="realised",
            extra={"realised_metric": 0.61}))
        (latest, _) = registry.list_decisions(name)
        assert latest.run_id == rollback.run_id and latest.extra == {"realised_metric": 0.61}

    def test_log_run_returns_an_id(self, registry: ModelRegistry, name, tmp_path: Path):
        report = tmp_path / "verdict.json"
        report.write_text("{}")
        run_id = registry.log_run("driftloop-monitoring", f"check {name}", params={"model": name},
                                  metrics={"drift_share": 0.1}, tags={"driftloop.model": name},
                                  files=[report])
        assert isinstance(run_id, str) and run_id


class TestFakeRegistry(RegistryContract):
    @pytest.fixture
    def registry(self) -> InMemoryRegistry:
        return InMemoryRegistry()

    def test_outage_is_retryable(self, registry: InMemoryRegistry):
        from kernel.errors import RetryableError

        registry.down = True
        with pytest.raises(RetryableError):
            registry.aliases("m")
