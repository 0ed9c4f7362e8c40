"""drift-check counts the window's labels whose request id matches no prediction: in the
verdict (JSON and MLflow metric) and as a gauge of the verdict's push."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd

from kernel.spec import DatasetSpec
from monitoring.job import run_drift_check, verdict_registry
from monitoring.predlog import LogStore, PredictionLogWriter
from monitoring.settings import MonitoringSettings
from registry.memory import InMemoryRegistry
from tests.integration.test_drift_check import log_day
from training.generate import DEFAULT_START, generate
from training.train import train

DAY = DEFAULT_START + timedelta(days=6)


def test_verdict_counts_labels_for_unknown_request_ids(unique_model_spec: DatasetSpec,
                                                       tmp_path: Path, home: Path) -> None:
    spec = unique_model_spec
    data = generate(7, rows_per_day=300, seed=5)
    path = tmp_path / "data.parquet"
    data.to_parquet(path, index=False)
    registry = InMemoryRegistry()
    version = train(spec, [path], registry, until=DAY, alias="champion").version.version
    model = registry.load_model(registry.download(spec.model_name, version, tmp_path / "m"))
    settings = MonitoringSettings(home=home)
    store = LogStore(settings.resolved_log_uri)
    day = data[data.ts >= pd.Timestamp(DAY)]
    log_day(store, spec, model, day, version, label_share=0.0)
    known = [f"v{version}-{c}" for c in day["customer_id"][:20]]
    writer = PredictionLogWriter(store)
    writer.append({"ts": DAY - timedelta(days=3), "request_id": "before-the-window",
                   "model_name": spec.model_name, "model_version": version, "score": 0.5,
                   "prediction": 1, "shadow_version": None, "shadow_score": None,
                   "latency_ms": 1.0, **{c: day.iloc[0][c] for c in spec.features.all}})
    for n, received in enumerate([DAY + timedelta(hours=20), DAY + timedelta(hours=30)]):
        for rid in known[n * 10:(n + 1) * 10]:
            writer.append_label(rid, "1", model=spec.model_name, received_at=received)
        for rid in [f"wrong-{n}-{i}" for i in range(3 + n)]:   # 3 on day one, 4 on day two
            writer.append_label(rid, "0", model=spec.model_name, received_at=received)
    writer.append_label("before-the-window", "1", model=spec.model_name,
                        received_at=DAY + timedelta(hours=30))
    writer.close()

    outcome = run_drift_check(settings, registry, model=spec.model_name, since=DAY,
                              until=DAY + timedelta(days=2), report=False)
    verdict = outcome.verdict
    assert (verdict.rows, verdict.labelled_rows) == (300, 20)
    assert verdict.labels_unmatched == 7
    assert json.loads(outcome.json_path.read_text())["labels_unmatched"] == 7
    assert registry.runs[-1]["metrics"]["labels_unmatched"] == 7
    gauges = verdict_registry(verdict)
    assert gauges.get_sample_value("driftloop_drift_labels_unmatched",
                                   {"model": spec.model_name}) == 7
    # with a lookback of zero days the label of the older prediction never matched either
    short = run_drift_check(settings.model_copy(update={"label_match_days": 0}), registry,
                            model=spec.model_name, since=DAY, until=DAY + timedelta(days=2),
                            report=False)
    assert short.verdict.labels_unmatched == 8
    # a window without labels: zero, and a verdict from a file has no count and no gauge
    quiet = run_drift_check(settings, registry, model=spec.model_name,
                            since=DAY - timedelta(days=2), until=DAY - timedelta(days=1),
                            report=False)
    assert quiet.verdict.labels_unmatched == 0
    none = verdict_registry(verdict.model_copy(update={"labels_unmatched": None}))
    assert none.get_sample_value("driftloop_drift_labels_unmatched",
                                 {"model": spec.model_name}) is None
