"""The registry contract against real MLflow on a temporary sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.mlflow_registry import MlflowRegistry
from tests.unit.test_registry_contract import RegistryContract, new_version_factory  # noqa: F401


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-store")


class TestMlflowRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, mlflow_store: Path) -> MlflowRegistry:
        return MlflowRegistry(f"sqlite:///{mlflow_store / 'mlflow.db'}",
                              artifact_root=(mlflow_store / "artifacts").as_uri(),
                              lock_dir=mlflow_store / "locks")

    def test_unreachable_server_is_retryable(self):
        from kernel.errors import RetryableError

        down = MlflowRegistry("http://127.0.0.1:9")  # discard port: nothing listens
        with pytest.raises(RetryableError):
            down.get_alias("churn", "champion")

    def test_version_shows_signature_and_artifacts(self, registry: MlflowRegistry, tmp_path,
                                                   new_version_factory):  # noqa: F811
        from mlflow.models import Model

        info = registry.register(new_version_factory("sig-check"))
        bundle = registry.download("sig-check", info.version, tmp_path / "b")
        model = Model.load(str(bundle / "model"))
        assert model.signature is not None
        assert "tenure_months" in model.signature.inputs.input_names()
        assert model.flavors["python_function"]["predict_fn"] == "predict_proba"
        artifacts = {a.path for a in registry._client.list_artifacts(info.run_id, "driftloop")}
        assert {"driftloop/reference.parquet", "driftloop/spec.yaml"} <= artifacts


def test_failed_register_leaves_no_version(mlflow_store: Path, new_version_factory):  # noqa: F811
    from dataclasses import replace

    registry = MlflowRegistry(f"sqlite:///{mlflow_store / 'mlflow.db'}",
                              artifact_root=(mlflow_store / "artifacts").as_uri())

    class NoProba:
        def predict(self, frame):
            return [0] * len(frame)

    with pytest.raises(AttributeError):
        registry.register(replace(new_version_factory("half"), model=NoProba()))
    assert registry.find_versions("half", {}) == []
    runs = registry._client.search_runs(
        [registry._experiment_id("driftloop-training")],
        filter_string="tags.`driftloop.model` = 'half'")
    assert [r.info.status for r in runs] == ["FAILED"]


class _FailingOnce:
    """Wraps the MLflow client: the named call fails once as an outage would (a connection
    refused), every other call goes through."""

    def __init__(self, client, method: str) -> None:
        self._client, self._method, self.failed = client, method, False

    def __getattr__(self, name: str):
        target = getattr(self._client, name)
        if name != self._method or self.failed:
            return target

        def fail(*args, **kwargs):
            self.failed = True
            raise ConnectionRefusedError("connection refused (injected)")
        return fail


@pytest.mark.parametrize("step", ["log_batch", "log_text", "set_terminated"])
def test_a_decision_record_interrupted_at_any_step_is_completed_once(tmp_path: Path,
                                                                     step: str) -> None:
    from datetime import UTC, datetime

    from kernel.errors import RetryableError
    from registry.port import DECISIONS_EXPERIMENT, DecisionRecord

    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_root=(tmp_path / "artifacts").as_uri(),
                              lock_dir=tmp_path / "locks")
    record = DecisionRecord(model="m", kind="gate", outcome="promoted", cycle_id=f"c-{step}",
                            decided_at=datetime(2026, 1, 2, tzinfo=UTC), champion_version=1,
                            challenger_version=2, new_champion_version=2, triggers=("manual",),
                            reasons=("better",), evidence="shadow", metric="roc_auc", n=300,
                            champion_metric=0.7, challenger_metric=0.75, difference=0.05,
                            ci_low=0.01, ci_high=0.09, margin=0.01)
    real = registry._client
    registry._client = _FailingOnce(real, step)
    with pytest.raises(RetryableError):
        registry.record_decision(record)  # the registry "died" between two steps
    assert registry._client.failed
    registry._client = real

    saved = registry.record_decision(record)  # the next pass completes the same run
    again = registry.record_decision(record)
    assert saved.run_id == again.run_id
    runs = real.search_runs([real.get_experiment_by_name(DECISIONS_EXPERIMENT).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["difference"] == pytest.approx(0.05)
    assert [d.run_id for d in registry.list_decisions("m")] == [saved.run_id]
