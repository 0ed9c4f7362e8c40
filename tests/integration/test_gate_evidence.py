"""The evidence source is the cycle's, chosen at its first look and never switched: a cycle
that started on shadow pairs keeps waiting for them even when a replay would decide now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.evidence import Evaluator, ModelCache
from controller.gate import GatePolicy
from monitoring.predlog import PredictionLogReader
from tests.integration.test_controller_evidence import champion_challenger_and_traffic

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_the_recorded_source_is_kept(tmp_path: Path, churn_spec):
    spec = churn_spec
    registry, store = champion_challenger_and_traffic(tmp_path, spec, seed=7, rows=300,
                                                      start=START)
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
