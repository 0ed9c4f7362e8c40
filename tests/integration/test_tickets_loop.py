"""The example ticket model (text, five classes) through the loop on simulated days: trained
on `driftloop generate --kind tickets` data, served by a real `driftloop serve` on loopback,
each ticket sent to /predict at its own simulated time (DRIFTLOOP_SIMULATED_CLOCK_FILE, as
`driftloop demo` plays a day), the day's labels posted to /feedback at its end, then
`driftloop drift-check` for the day.

- ``none``: 14 simulated days, no alarm on any (every drift-check exits 0).
- ``slang``: the onset day, after the ``none`` days: the served OOD counter
  (``driftloop_text_ood_total{column="body"}``) rises well above the ``none`` run's, the
  verdict's text drift test for ``body`` is flagged, and drift-check exits 1.

One trained champion for the module; one serving process per scenario, reused across its
days."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from driftloop.processes import ProcessGroup, driftloop_command, free_port, wait_http, wait_until
from kernel.clock import write_instant
from kernel.settings import CommonSettings
from kernel.spec import DatasetSpec, spec_from_yaml
from registry import open_registry
from training.generate import DEFAULT_START, Scenario
from training.generate_tickets import generate
from training.train import train

ROOT = Path(__file__).resolve().parents[2]
TRAIN_DAYS = 8            # 8 x ROWS_PER_DAY training tickets (a validation slice of a fifth)
NONE_DAYS = 14
SLANG_DAYS = 1            # the onset day (40% of network tickets in slang)
ROWS_PER_DAY = 500
SEED = 16
DAY = timedelta(days=1)


@dataclass
class Champion:
    home: Path
    spec: DatasetSpec
    feedback_token: str = field(default_factory=lambda: secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {"DRIFTLOOP_HOME": str(self.home), "MLFLOW_TRACKING_URI": "",
                "DRIFTLOOP_MODEL": self.spec.model_name,
                "DRIFTLOOP_FEEDBACK_TOKEN": self.feedback_token,
                "DRIFTLOOP_LOG_FLUSH_INTERVAL": "0.2"}


@dataclass
class DayResult:
    day: int
    exit_code: int
    verdict: dict[str, Any]
    output: str


@dataclass
class Run:
    """One scenario's days: each day's drift-check and the served text counters."""

    days: list[DayResult]
    ood: float            # driftloop_text_ood_total{column="body"} after the last day
    requests: int


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """The example ticket spec (a model name of its own) trained on TRAIN_DAYS of the
    ``none`` scenario, registered as champion in a home of the module's."""
    home = tmp_path_factory.mktemp("tickets") / "home"
    spec = spec_from_yaml((ROOT / "examples" / "tickets" / "spec.yaml").read_text())
    spec = spec.model_copy(update={"model_name": f"tickets-{uuid.uuid4().hex[:8]}"})
    data = home.parent / "history.parquet"
    history = generate(TRAIN_DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)
    history.to_parquet(data, index=False)
    train(spec, [data], open_registry(CommonSettings(home=home)), alias="champion")
    return Champion(home, spec)


def _counter(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def play(champion: Champion, scenario: Scenario, days: int, first_day: int) -> Run:
    """Serve ``days`` simulated days of ``scenario`` (days ``first_day`` on of the seed's
    stream, after the training days) with one serving process, and check each day."""
    spec, model = champion.spec, champion.spec.model_name
    frame = generate(first_day + days, rows_per_day=ROWS_PER_DAY, seed=SEED, scenario=scenario)
    day_of = (frame["ts"] - pd.Timestamp(DEFAULT_START)).dt.days
    clock = champion.home.parent / f"clock-{scenario.name}"
    write_instant(clock, DEFAULT_START + first_day * DAY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**champion.env(), "DRIFTLOOP_SIMULATED_CLOCK_FILE": str(clock)}
    results: list[DayResult] = []
    sent = labelled = 0
    with ProcessGroup(champion.home.parent / f"logs-{scenario.name}") as group, \
            httpx.Client(base_url=url, timeout=30) as client:
        serving = group.start("serving", driftloop_command("serve", "--port", str(port)),
                              env=env, cwd=ROOT)
        wait_http(f"{url}/readyz", timeout=120, child=serving)
        for day in range(first_day, first_day + days):
            tickets = frame[day_of == day]
            for row in tickets.to_dict("records"):
                write_instant(clock, row["ts"].floor("us").to_pydatetime())
                record = {c: row[c] for c in spec.features.all}
                answer = client.post("/predict", json={**record, "request_id": row["ticket_id"]})
                assert answer.status_code == 200, answer.text
                assert answer.json()["prediction"] in (spec.listed_classes or ())
            sent += len(tickets)
            end = DEFAULT_START + (day + 1) * DAY
            write_instant(clock, end)      # the day's labels arrive at its end
            labels = [{"request_id": r, "label": y}
                      for r, y in zip(tickets["ticket_id"], tickets["label"], strict=True)]
            client.post("/feedback", json={"labels": labels}, headers={
                "Authorization": f"Bearer {champion.feedback_token}"}).raise_for_status()
            labelled += len(labels)

            def logged(rows: int = sent, labels: int = labelled) -> bool:
                text = client.get("/metrics").text
                return (_counter(text, "driftloop_log_rows_written_total") >= rows
                        and _counter(text, "driftloop_log_labels_written_total") >= labels)

            wait_until(logged, timeout=60, what="the day's rows and labels in the log",
                       child=serving)
            results.append(drift_check(champion, clock, day, end))
        metrics = client.get("/metrics").text
    ood = _counter(metrics, "driftloop_text_ood_total", model=model, column="body")
    return Run(results, ood, sent)


def drift_check(champion: Champion, clock: Path, day: int, end: datetime) -> DayResult:
    out = champion.home.parent / "reports"
    proc = subprocess.run(
        driftloop_command("drift-check", "--model", champion.spec.model_name,
                          "--since", (end - DAY).isoformat(), "--until", end.isoformat(),
                          "--no-report", "--out", str(out)),
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**_environ(), **champion.env(), "DRIFTLOOP_SIMULATED_CLOCK_FILE": str(clock)})
    output = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), output
    found = re.search(r"^verdict: (.+\.json)$", proc.stdout, re.MULTILINE)
    assert found, output
    return DayResult(day, proc.returncode, json.loads(Path(found.group(1)).read_text()), output)


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR",
                         "DRIFTLOOP_SIMULATED_CLOCK_FILE")}


@pytest.fixture(scope="module")
def runs(champion: Champion) -> Iterator[dict[str, Run]]:
    """``none`` for NONE_DAYS from the first day after training, then ``slang`` from its
    onset, the next day (the simulated days of the two never overlap: one log)."""
    onset = TRAIN_DAYS + NONE_DAYS
    yield {"none": play(champion, Scenario("none"), NONE_DAYS, TRAIN_DAYS),
           "slang": play(champion, Scenario("slang", onset), SLANG_DAYS, onset)}


def test_none_raises_no_alarm_on_any_of_14_days(runs: dict[str, Run]) -> None:
    none = runs["none"]
    assert len(none.days) == NONE_DAYS
    for day in none.days:
        verdict = day.verdict
        assert day.exit_code == 0, day.output
        assert verdict["status"] == "ok", day.output
        assert verdict["rows"] == ROWS_PER_DAY and verdict["labelled_rows"] == ROWS_PER_DAY
        (text,) = verdict["text_columns"]
        assert not text["drifted"], day.output
        assert verdict["performance"]["value"] is not None
        assert verdict["prediction_drift"]["method"] == "chisquare_homogeneity"
    assert none.requests == NONE_DAYS * ROWS_PER_DAY


def test_slang_raises_the_ood_counter_and_text_drift_and_exits_1(runs: dict[str, Run]) -> None:
    slang, none = runs["slang"], runs["none"]
    # per ticket served: slang's OOD rate well above the unchanged world's
    slang_rate, none_rate = slang.ood / slang.requests, none.ood / none.requests
    assert slang_rate > 0.08 and slang_rate > 4 * none_rate, (slang_rate, none_rate)
    for day in slang.days:
        verdict = day.verdict
        assert day.exit_code == 1, day.output
        assert verdict["status"] in ("drift", "degraded")
        (text,) = verdict["text_columns"]
        assert text["column"] == "body" and text["drifted"], text
        assert text["auc"] > text["threshold"]
        assert "body" in verdict["drifted_columns"]
        assert text["ood_share"] > 2 * text["reference_ood_share"]
        assert any(r.startswith("text content drift on body") for r in verdict["reasons"])
