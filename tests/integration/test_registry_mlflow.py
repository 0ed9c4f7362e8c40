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
