"""A retrain learns from production (issue 20): 13,000 old-world rows of history plus 3,000
recent labelled rows of a changed world in a real prediction log. The controller's retrain
file (controller/recent.py) and ``training.train.train`` on a real MLflow sqlite store: the
recent rows are in training (tags), the drift reference is drawn from them, the scores move
and the retrained version beats the champion on the newest holdout. Shuffled labels give a
version tagged useless."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.recent import labelled_rows, write_retrain_rows
from kernel.metrics import metric_value
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec
from monitoring.predlog import PredictionLogWriter, open_log
from registry import TAG_PREFIX as TAG
from registry.bundle import Bundle
from registry.mlflow_registry import MlflowRegistry
from training.generate import Scenario, generate
from training.train import train

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec):
    """History file (13 old days), a champion on it, 3 changed days in the log, labelled."""
    model = f"rd-{uuid.uuid4().hex[:8]}"
    spec = churn_spec.model_copy(update={"model_name": model})
    frame = generate(16, scenario=Scenario("concept", 13), rows_per_day=1000, seed=11,
                     start=NOW - timedelta(days=16))
    history, recent = frame.iloc[:13_000], frame.iloc[13_000:]
    history_path = tmp_path / "history.parquet"
    history.to_parquet(history_path, index=False)
    registry = MlflowRegistry.from_settings(CommonSettings(home=tmp_path / "home"))
    champion = train(spec, [history_path], registry, alias="champion")
    store, reader = open_log(tmp_path / "log")
    writer = PredictionLogWriter(store)
    for row in recent.to_dict("records"):
        writer.append({"ts": row["ts"].floor("us").to_pydatetime(),
                       "request_id": row["customer_id"], "model_name": model,
                       "model_version": champion.version.version, "score": 0.5,
                       "prediction": 0, "shadow_version": None, "shadow_score": None,
                       "latency_ms": 1.0, **{c: row[c] for c in spec.features.all}})
        writer.append_label(row["customer_id"], row["churned"], model=model)
    writer.close()
    return spec, registry, champion, history_path, reader


def test_a_retrain_trains_on_the_recent_rows_and_beats_the_champion_on_the_holdout(
        world, tmp_path: Path) -> None:
    spec, registry, champion, history_path, reader = world
    now = datetime.now(UTC)  # labels arrived just now
    data = write_retrain_rows(reader, spec, now=now, days=14, holdout_fraction=0.2,
                              dest=tmp_path / "cycle.parquet")
    assert data.path is not None and data.holdout_from is not None
    assert data.rows == 2400  # 3,000 labelled rows, the newest 20 % kept for the replay
    retrained = train(spec, [history_path, data.path], registry, until=data.holdout_from)
    tags = registry.get_version(spec.model_name, retrained.version.version).tags

    # the documented share: 1 - validation_fraction of the recent rows, give or take one
    recent_in_training = int(tags[TAG + "train_rows_recent"])
    assert abs(recent_in_training - (1 - spec.validation_fraction) * data.rows) <= 1
    assert int(tags[TAG + "train_rows_history"]) + recent_in_training == int(
        tags[TAG + "train_rows"])
    assert tags[TAG + "split"] == "systematic"
    assert tags[TAG + "reference"] == "recent"
    assert int(tags[TAG + "reference_rows"]) == recent_in_training
    assert tags[TAG + "useless"] == "false"
    old_tags = registry.get_version(spec.model_name, champion.version.version).tags
    assert old_tags[TAG + "train_rows_recent"] == "0" and old_tags[TAG + "reference"] == "window"
    # the retrain's recorded sources are the history, not the cycle's transient file
    assert tags[TAG + "data_sources"] == f'["{history_path.resolve()}"]'

    holdout = labelled_rows(reader, spec, data.holdout_from, now)
    assert len(holdout) == 600
    y = spec.labels.decode_many(holdout["label"])
    scores = {}
    for name, version in (("champion", champion), ("retrained", retrained)):
        bundle = registry.download(spec.model_name, version.version.version, tmp_path / name)
        fitted = registry.load_model(bundle)
        scores[name] = fitted.predict_proba(holdout[spec.features.all])[:, 1]
        if name == "retrained":
            assert len(Bundle(bundle).reference) == recent_in_training
    assert not np.allclose(scores["champion"], scores["retrained"], atol=1e-6)
    auc = {name: metric_value("roc_auc", y, s) for name, s in scores.items()}
    # the concept scenario reverses several effects: 1,920 new-world rows among 12,320 move
    # the model only part of the way (documented; the retrain window is the lever below)
    assert auc["retrained"] > auc["champion"] + 0.02, auc

    # with the controller's retrain window (2 days of history before the recent rows)
    since = NOW - timedelta(days=5)
    windowed = train(spec, [history_path, data.path], registry, since=since,
                     until=data.holdout_from)
    fitted = registry.load_model(registry.download(spec.model_name, windowed.version.version,
                                                   tmp_path / "windowed"))
    auc["windowed"] = metric_value("roc_auc", y, fitted.predict_proba(
        holdout[spec.features.all])[:, 1])
    assert auc["windowed"] > auc["retrained"] + 0.1, auc


def test_shuffled_labels_give_a_version_tagged_useless(world, tmp_path: Path) -> None:
    spec, registry, _, history_path, _ = world
    frame = pd.read_parquet(history_path)
    frame["churned"] = np.random.default_rng(3).permutation(frame["churned"].to_numpy())
    shuffled = tmp_path / "shuffled.parquet"
    frame.to_parquet(shuffled, index=False)
    result = train(spec, [shuffled], registry)
    tags = registry.get_version(spec.model_name, result.version.version).tags
    assert tags[TAG + "useless"] == "true"
    assert "chance level" in tags[TAG + "useless_reason"]
    assert result.details["useless"] == tags[TAG + "useless_reason"]
