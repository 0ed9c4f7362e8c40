"""Fixtures shared by every tier. Each test gets its own home, store and names."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pytest

from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
CHURN_SPEC = ROOT / "examples" / "churn" / "spec.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedded default for this test; the environment points at it."""
    path = tmp_path / "dl-home"
    monkeypatch.setenv("DRIFTLOOP_HOME", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture
def settings(home: Path) -> CommonSettings:
    return CommonSettings()


@pytest.fixture(scope="session")
def churn_spec() -> DatasetSpec:
    return load_spec(CHURN_SPEC)


@pytest.fixture
def unique_model_spec(churn_spec: DatasetSpec) -> DatasetSpec:
    """The churn spec under a registered-model name no other test uses."""
    return churn_spec.model_copy(update={"model_name": f"churn-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="session")
def churn_frame() -> pd.DataFrame:
    from training.generate import generate

    return generate(6, rows_per_day=400, seed=11)


@pytest.fixture
def churn_file(tmp_path: Path, churn_frame: pd.DataFrame) -> Path:
    path = tmp_path / "churn.parquet"
    churn_frame.to_parquet(path, index=False)
    return path


def require_binary(name: str, package: str = "prometheus prometheus-alertmanager") -> str:
    """The path of a binary the test needs; skip without it, except in CI where that fails."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not installed (apt-get install {package})"
    if os.environ.get("DRIFTLOOP_REQUIRE_E2E") or os.environ.get("CI"):
        pytest.fail(message + ": required in CI", pytrace=False)
    pytest.skip(message)
