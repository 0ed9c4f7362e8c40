"""`driftloop train` with ``retrain.coverage`` on a real sqlite MLflow store: a retraining set
the champion never scores high fails with exit 2 and one line naming the decile, its share and
the floor, and registers nothing; a full one passes and its run carries the audit's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.cli import main
from kernel.settings import CommonSettings
from kernel.spec import load_spec
from registry import open_registry
from tests.conftest import CHURN_SPEC


def test_train_fails_below_the_coverage_floor_and_logs_the_figures_above_it(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(CHURN_SPEC.read_text() + "retrain:\n  coverage:\n    min_decile_share: 0.04\n")
    data = tmp_path / "churn.parquet"
    assert main(["generate", "--days", "3", "--rows-per-day", "500", "--out", str(data)]) == 0
    assert main(["train", "--spec", str(spec), "--data", str(data), "--alias", "champion"]) == 0
    registry = open_registry(CommonSettings())
    bundle = registry.download("churn", 1, tmp_path / "v1")
    frame = pd.read_parquet(data)
    features = load_spec(spec).features.all
    scores = registry.load_model(bundle).predict_proba(frame[features])[:, 1]
    narrow = tmp_path / "narrow.parquet"
    frame[scores < np.quantile(scores, 0.8)].to_parquet(narrow, index=False)
    capsys.readouterr()

    code = main(["train", "--spec", str(spec), "--data", str(narrow)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: coverage audit against champion v1: decile ")
    assert "below retrain.coverage.min_decile_share 4.00%" in err and "\n" not in err
    assert [v.version for v in registry.find_versions("churn", {})] == [1]

    assert main(["train", "--spec", str(spec), "--data", str(data)]) == 0
    v2 = registry.get_version("churn", 2)
    assert v2.tags["driftloop.coverage"].startswith("passed against champion v1 (1500 rows)")
    from mlflow import MlflowClient

    run = MlflowClient(CommonSettings().resolved_tracking_uri).get_run(str(v2.run_id))
    shares = json.loads(run.data.params["coverage.decile_shares"])
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert min(shares) >= 0.04
    assert run.data.params["coverage.champion_version"] == "1"
    assert registry.aliases("churn") == {"champion": 1}
