"""The evidence source is the cycle's, chosen at its first look and never switched: a cycle
that started on shadow pairs keeps waiting for them even when a replay would decide now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.evidence import Evaluator, ModelCache
from controller.gate import GatePolicy
from kernel.tables import conform
from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter
from registry.memory import InMemoryRegistry
from training.generate import generate
from training.train import evaluate, fit, package, split

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_the_recorded_source_is_kept(tmp_path: Path, churn_spec):
    spec = churn_spec
    registry = InMemoryRegistry()
    data = conform(generate(3, rows_per_day=800, seed=7), spec)
    # the challenger learns from other rows (same data would be no_change, not a promotion)
    for seed, rows in ((1, data), (2, data.iloc[10:].reset_index(drop=True))):
        parts = split(rows, spec)
        fitted = fit(parts, spec, seed=seed)
        registry.register(package(spec, rows, parts, fitted, evaluate(fitted, parts, spec),
                                  tags={}))
    registry.set_alias(spec.model_name, "champion", 1)
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    champion = registry.load_model(registry.download(spec.model_name, 1, tmp_path / "b1"))
    live = data.tail(300)
    scores = champion.predict_proba(live[spec.features.all])[:, 1]
    for i, (row, score) in enumerate(zip(live.to_dict("records"), scores, strict=True)):
        writer.append({"ts": START + timedelta(seconds=i), "request_id": f"q{i}",
                       "model_name": spec.model_name, "model_version": 1, "score": float(score),
                       "prediction": int(score > 0.5), "shadow_version": None,
                       "shadow_score": None, "latency_ms": 1.0,
                       **{f: row[f] for f in spec.features.all}})
        writer.append_label(f"q{i}", row["churned"], model=spec.model_name,
                            received_at=START + timedelta(hours=1))
    writer.close()
    evaluator = Evaluator(registry, PredictionLogReader(store),
                          ModelCache(registry, tmp_path / "cache"),
                          GatePolicy(min_pairs=200, margin=0.5), offline_replay=True)
    assert evaluator.source() == "offline_replay"
    now = START + timedelta(hours=2)
    first = evaluator.evaluate(spec, 2, shadow_since=START, holdout_from=None, now=now)[0]
    assert (first.evidence, first.n, first.outcome) == ("offline_replay", 300, "promote")
    kept = evaluator.evaluate(spec, 2, shadow_since=START, holdout_from=None, now=now,
                              evidence="shadow")[0]
    assert (kept.evidence, kept.n, kept.outcome) == ("shadow", 0, "wait")
