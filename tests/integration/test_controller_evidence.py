"""Which evidence decides: an offline replay on labelled rows since the cycle began, unless
the operator asked for live shadow pairs only (DRIFTLOOP_CONTROLLER_OFFLINE_REPLAY=false)."""

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

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def champion_challenger_and_traffic(tmp_path: Path, spec, *, seed: int, rows: int,
                                    start: datetime) -> tuple[InMemoryRegistry, LogStore]:
    """v1 (champion) and v2 (trained on slightly other rows), and ``rows`` labelled requests
    answered by the champion from ``start`` on, labels an hour later: no shadow scores."""
    registry = InMemoryRegistry()
    data = conform(generate(3, rows_per_day=800, seed=seed), spec)
    # the challenger learns from other rows (same data would be no_change, not a promotion)
    for fit_seed, part in ((1, data), (2, data.iloc[10:].reset_index(drop=True))):
        parts = split(part, spec)
        fitted = fit(parts, spec, seed=fit_seed)
        registry.register(package(spec, part, parts, fitted, evaluate(fitted, parts, spec),
                                  tags={}))
    registry.set_alias(spec.model_name, "champion", 1)
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    champion = registry.load_model(registry.download(spec.model_name, 1, tmp_path / "b1"))
    live = data.tail(rows)
    scores = champion.predict_proba(live[spec.features.all])[:, 1]
    for i, (row, score) in enumerate(zip(live.to_dict("records"), scores, strict=True)):
        writer.append({"ts": start + timedelta(seconds=i), "request_id": f"r{i}",
                       "model_name": spec.model_name, "model_version": 1, "score": float(score),
                       "prediction": int(score > 0.5), "shadow_version": None,
                       "shadow_score": None, "latency_ms": 1.0,
                       **{f: row[f] for f in spec.features.all}})
        writer.append_label(f"r{i}", row["churned"], model=spec.model_name,
                            received_at=start + timedelta(hours=1))
    writer.close()
    return registry, store


def test_replay_decides_unless_only_shadow_pairs_may(tmp_path: Path, churn_spec):
    spec = churn_spec
    registry, store = champion_challenger_and_traffic(tmp_path, spec, seed=5, rows=400,
                                                      start=START)
    registry.set_alias(spec.model_name, "challenger", 2)
    # Labelled traffic since the cycle began, answered by the champion before serving had
    # loaded the challenger: no shadow scores.
    reader = PredictionLogReader(store)
    policy = GatePolicy(min_pairs=200, margin=0.5)  # two near-identical models: promote

    def decide(replay: bool):
        evaluator = Evaluator(registry, reader, ModelCache(registry, tmp_path / f"c{replay}"),
                              policy, offline_replay=replay)
        return evaluator.evaluate(spec, 2, shadow_since=START, holdout_from=None,
                                  now=START + timedelta(hours=2))[0]

    replayed = decide(True)
    assert (replayed.evidence, replayed.n, replayed.outcome) == ("offline_replay", 400, "promote")
    waiting = decide(False)
    assert (waiting.evidence, waiting.n, waiting.outcome) == ("shadow", 0, "wait")
