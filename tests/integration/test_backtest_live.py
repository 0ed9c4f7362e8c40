"""The backtest decides what the live loop decides on the same data.

The live side is assembled as a deployment assembles it: ``controller.app.build_controller``
and ``create_app`` (verdicts POSTed to ``/verdicts``), the real Parquet prediction log
(``PredictionLogWriter`` / ``PredictionLogReader``), a SQLite state store. Serving is played
by the test: each tick the champion of the moment scores the tick's rows (the challenger in
shadow), and labels are written when they arrive. Only the clock is simulated and the
retrain runs in process (``InProcessLauncher``, as in the backtest).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from backtest.adapters import ClockedRegistry, InProcessLauncher, load_policy
from backtest.engine import BacktestConfig, period_verdict, run_backtest
from backtest.replay import SimClock
from controller.app import build_controller, create_app
from controller.evidence import ModelCache
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import load_spec
from kernel.tables import write_table
from monitoring.check import Reference
from monitoring.predlog import LogStore, PredictionLogWriter
from registry import ALIAS_CHALLENGER, ALIAS_CHAMPION, TAG_PREFIX
from tests.conftest import CHURN_SPEC
from training.generate import Scenario, generate
from training.train import train

DAYS, ONSET_DAY, INITIAL = 9, 5, 3
START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = "retrain_window_days: 2\nmin_pairs: 150\n"


def _key(d: dict) -> tuple:
    return (d["kind"], d["outcome"], d["champion"], d["challenger"], d["new_champion"],
            d["evidence"], d["n"], None if d["difference"] is None else round(d["difference"], 6),
            d["decided_at"])


def test_backtest_decisions_match_the_live_controller(tmp_path: Path) -> None:
    frame = generate(DAYS, scenario=Scenario("concept", ONSET_DAY), rows_per_day=600, seed=5)
    frame["ts"] = frame["ts"].dt.floor("us")
    data = tmp_path / "concept.parquet"
    write_table(frame, data)
    (tmp_path / "policy.yaml").write_text(POLICY)
    spec = load_spec(CHURN_SPEC)  # 600 rows a day: a change window starts from 600 labels
    spec = spec.model_copy(update={"retrain": spec.retrain.model_copy(update={"min_rows": 600})})
    config = BacktestConfig(initial_periods=INITIAL, baselines=False)
    result = run_backtest(spec, CHURN_SPEC, [data], config=config,
                          policy=load_policy(tmp_path / "policy.yaml", home=tmp_path / "bt"))
    expected = [_key(d) for d in result.decisions]
    assert any(d["outcome"] == "promoted" for d in result.decisions)

    # -- the live loop on the same rows ---------------------------------------------------
    replay_start = START + timedelta(days=INITIAL)
    history = tmp_path / "history.parquet"
    frame[frame["ts"] < replay_start].to_parquet(history, index=False)
    live_spec_path = tmp_path / "spec.yaml"
    live_spec = spec.model_copy(update={"history": [str(history)]})
    live_spec_path.write_text(live_spec.to_yaml())
    live_spec = load_spec(live_spec_path)
    clock = SimClock(replay_start)
    registry = ClockedRegistry(clock)
    train(live_spec, [history], registry, alias=ALIAS_CHAMPION,
          tags={TAG_PREFIX + "cycle_id": "backtest-initial"})
    overrides = load_policy(tmp_path / "policy.yaml", home=tmp_path / "live").overrides
    settings = ControllerSettings(**overrides, home=tmp_path / "live", controller_token="t",
                                  controller_specs=str(live_spec_path),
                                  controller_evaluate_every_seconds=0,
                                  controller_labels_check_seconds=0)
    store = Store(f"sqlite:///{tmp_path / 'live-state.db'}")
    parts = build_controller(settings, registry=registry, store=store, clock=clock,
                             launcher=InProcessLauncher(live_spec, registry))
    writer = PredictionLogWriter(LogStore(settings.resolved_log_uri))
    cache = ModelCache(registry, tmp_path / "serving-cache")
    rows = frame[frame["ts"] >= replay_start].reset_index(drop=True)
    arrives = (rows["ts"] + pd.Timedelta(days=1)).dt.ceil("us")
    features = live_spec.features.all
    labelled = 0
    app = create_app(settings, parts=parts, run_loop=False)

    async def live_loop() -> None:
        nonlocal labelled
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://controller") as http:
            for day in range(INITIAL, DAYS):
                start = START + timedelta(days=day)
                end = start + timedelta(days=1)
                t = start
                while t < end:
                    nxt = t + timedelta(hours=1)
                    aliases = registry.aliases(live_spec.model_name)
                    champion, challenger = aliases[ALIAS_CHAMPION], aliases.get(ALIAS_CHALLENGER)
                    part = rows[(rows["ts"] >= t) & (rows["ts"] < nxt)]
                    if len(part):
                        scores = cache.model(live_spec.model_name, champion).predict_proba(
                            part[features])[:, 1]
                        shadow = None if challenger in (None, champion) else cache.model(
                            live_spec.model_name, challenger).predict_proba(part[features])[:, 1]
                        for i, (_, row) in enumerate(part.iterrows()):
                            writer.append({
                                "ts": row["ts"].to_pydatetime(), "request_id": row["customer_id"],
                                "model_name": live_spec.model_name, "model_version": champion,
                                "score": float(scores[i]), "prediction": int(scores[i] >= 0.5),
                                "shadow_version": None if shadow is None else challenger,
                                "shadow_score": None if shadow is None else float(shadow[i]),
                                "latency_ms": 0.0, **{c: row[c] for c in features}})
                    arrived = rows.index[(arrives <= pd.Timestamp(nxt))]
                    arrived = arrived[arrived < int((rows["ts"] < nxt).sum())]
                    for i in arrived[labelled:]:
                        writer.append_label(rows.at[i, "customer_id"], rows.at[i, "churned"],
                                            model=live_spec.model_name,
                                            received_at=arrives[i].to_pydatetime())
                    labelled = len(arrived)
                    writer.flush()
                    clock.advance(nxt)
                    if nxt == end:
                        version = registry.aliases(live_spec.model_name)[ALIAS_CHAMPION]
                        reference = Reference.from_bundle(cache.bundle(live_spec.model_name, version))
                        verdict = period_verdict(parts.controller.reader, reference, version, start,
                                                 end, lookback=timedelta(days=2))
                        answer = await http.post("/verdicts", content=verdict.model_dump_json(),
                                           headers={"Authorization": "Bearer t"})
                        assert answer.status_code == 200, answer.text
                    parts.controller.step(live_spec.model_name)
                    t = nxt

    asyncio.run(live_loop())
    writer.close()
    live = [_key({"kind": d.kind, "outcome": d.outcome, "champion": d.champion_version,
                  "challenger": d.challenger_version, "new_champion": d.new_champion_version,
                  "evidence": d.evidence, "n": d.n, "difference": d.difference,
                  "decided_at": d.decided_at}) for d in registry.decisions]
    assert live == expected
    assert np.isfinite([d["difference"] for d in result.decisions
                        if d["difference"] is not None]).all()
