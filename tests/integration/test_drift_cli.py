"""``driftloop drift-check`` end to end on the embedded default (real MLflow sqlite)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from driftloop.cli import main
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore
from registry import open_registry
from tests.integration.test_drift_check import log_day
from training.generate import DEFAULT_START, Scenario, generate
from training.train import train

DAY = DEFAULT_START + timedelta(days=5)


def test_drift_check_command_exits_1_on_drift_and_logs_a_run(
        unique_model_spec: DatasetSpec, settings: CommonSettings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = unique_model_spec
    data = generate(6, scenario=Scenario("unit_bug", 5), rows_per_day=500, seed=4)
    path = tmp_path / "data.parquet"
    data.to_parquet(path, index=False)
    registry = open_registry(settings)
    version = train(spec, [path], registry, until=DAY, alias="champion").version.version
    model = registry.load_model(registry.download(spec.model_name, version, tmp_path / "b"))
    log_day(LogStore(settings.resolved_log_uri), spec, model, data[data.ts >= pd.Timestamp(DAY)],
            version)

    code = main(["drift-check", "--model", spec.model_name, "--since", DAY.isoformat(),
                 "--until", (DAY + timedelta(days=1)).isoformat()])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"{spec.model_name} v{version}: degraded (500 rows, 500 labelled" in out
    assert "monthly_charges" in out
    files = sorted((settings.reports_dir / spec.model_name).glob("verdict-*"))
    assert [f.suffix for f in files] == [".html", ".json"]
    verdict = json.loads(files[1].read_text())
    assert verdict["status"] == "degraded" and verdict["run_id"]

    import mlflow

    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    run = client.get_run(verdict["run_id"])
    assert run.data.tags["driftloop.status"] == "degraded"
    assert run.data.tags["driftloop.version"] == str(version)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {files[0].name, files[1].name} <= names

    assert main(["drift-check", "--model", spec.model_name, "--version", "99"]) == 2
    assert main(["drift-check", "--model", spec.model_name, "--post-to", "http://x"]) == 2
    assert "DRIFTLOOP_CONTROLLER_TOKEN" in capsys.readouterr().err
