"""`driftloop demo --scenario tickets` end to end: the support-ticket text classifier meets
slang, the OOD share and the text drift rise, a retrain on the labelled tickets is judged
against the champion on the same recent rows and promoted by the multi-class gate; and a
challenger trained on shuffled labels, by an outside CI job the controller's webhook launcher
starts, is never promoted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop.processes import driftloop_command
from tests.e2e.test_demo import listening, urls

pytestmark = pytest.mark.timeout(900)

TICKETS_SPEC = Path(__file__).resolve().parents[2] / "examples" / "tickets" / "spec.yaml"
SMALL = ("--scenario", "tickets", "--train-days", "3", "--onset", "5", "--rows-per-day", "800")
ROW = re.compile(r"^\s+(\d+)\s+(stable|drift)\s")


def run_demo(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(driftloop_command("demo", "--home", str(home), *SMALL, *args),
                          capture_output=True, text=True, timeout=840, cwd=home.parent,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(listening(u) for u in urls(proc.stdout)), "the demo left a service running"
    return proc.stdout


def timeline(home: Path) -> list[dict[str, Any]]:
    days: list[dict[str, Any]] = json.loads(
        (home / "reports" / "demo-timeline.json").read_text())["days"]
    return days


def test_slang_raises_the_ood_share_and_a_retrain_that_learned_it_is_promoted(tmp_path: Path):
    home = tmp_path / "demo-home"
    out = run_demo(home, "--days", "8")
    assert "OOD" in out and "F1" in out and "macro-F1" in out  # the ticket legend and header
    table = [line for line in out.splitlines() if ROW.match(line)]
    assert len(table) == 5, out
    days = timeline(home)
    stable = [d for d in days if d["phase"] == "stable"]
    onset = next(d for d in days if d["phase"] == "drift")
    assert all(d["ood_share"] is not None and d["status"] == "ok" for d in stable), days
    # slang in 40% of the network tickets (30% of all): well above the typo rate of before
    assert onset["ood_share"] > 4 * max(d["ood_share"] for d in stable), days
    assert onset["status"] in ("drift", "degraded"), onset
    assert onset["live_version"] == 1
    # the gate's numbers, on macro-F1, with a lower bound above -margin
    events = [e for d in days for e in d["events"]]
    promoted = [e for e in events if e["outcome"] == "promoted"]
    assert promoted and promoted[0]["champion"] == 1 and promoted[0]["challenger"] == 2, events
    first = promoted[0]
    assert first["metric"] == "macro_f1" and first["n"] >= 200
    assert first["ci_low"] >= -first["margin"], first
    assert first["challenger_metric"] > first["champion_metric"], first
    assert re.search(r"decision: promoted v2 vs v1: macro_f1 diff \+0\.\d{3} CI \[", out), out
    # the versions that trained on the slang tickets know its words: by the last day the OOD
    # share is back below half the onset day's (v2 trains on the rows before the gate's
    # holdout, the onset day's most recent ones, so it has seen little slang yet)
    assert days[-1]["live_version"] >= 2 and days[-1]["ood_share"] < onset["ood_share"] / 2, days
    live = re.search(r"serving now: tickets v(\d+) \(@champion\)", out)
    assert live and int(live.group(1)) >= 2, out
    assert (home / "reports" / "demo-metric.png").stat().st_size > 10_000


class ShuffledLabelsCI:
    """A stand-in for the CI job the webhook launcher starts (Jenkins, a pipeline trigger):
    it answers 201 and trains a version on the demo's history with its labels shuffled, tagged
    with the cycle id the controller waits for. The first cycle gets every label shuffled; a
    later one a third of them (a model better than chance, worse than the champion)."""

    def __init__(self, home: Path, workdir: Path) -> None:
        self.home, self.workdir = home, workdir
        self.requests: list[dict[str, str]] = []
        self.trained: list[subprocess.CompletedProcess[str]] = []
        self.threads: list[threading.Thread] = []
        ci = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ci.requests.append(body)
                self.send_response(201)
                self.end_headers()
                thread = threading.Thread(target=ci.train, args=(body, len(ci.requests)))
                ci.threads.append(thread)
                thread.start()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/job/retrain/build"

    def train(self, body: dict[str, str], n: int) -> None:
        share = 1.0 if n == 1 else 1 / 3
        frame = pd.read_parquet(self.home / "data" / "history.parquet")
        rng = np.random.default_rng(n)
        rows = rng.choice(len(frame), int(share * len(frame)), replace=False)
        labels = frame["label"].to_numpy(copy=True)
        labels[rows] = rng.permutation(labels[rows])
        frame["label"] = labels
        data = self.workdir / f"shuffled-{n}.parquet"
        frame.to_parquet(data, index=False)
        spec = self.workdir / "spec.yaml"  # the example spec: no history beside the data
        spec.write_text(TICKETS_SPEC.read_text())
        env = {**os.environ, "DRIFTLOOP_HOME": str(self.home), "MLFLOW_TRACKING_URI": "",
               "DRIFTLOOP_SIMULATED_CLOCK_FILE": str(self.home / "clock" / "controller")}
        self.trained.append(subprocess.run(driftloop_command(
            "train", "--spec", str(spec), "--data", str(data),
            "--tag", f"cycle_id={body['cycle_id']}", "--tag", f"attempt={body['attempt']}",
            "--tag", f"trigger={body['reason'][:200]}", "--tag", "launcher=ci-standin",
            "--tag", f"shuffled_share={share:.2f}"),
            capture_output=True, text=True, env=env, timeout=300))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join(timeout=300)


def test_a_challenger_trained_on_shuffled_labels_is_never_promoted(tmp_path: Path):
    home = tmp_path / "demo-home"
    (tmp_path / "ci").mkdir()
    ci = ShuffledLabelsCI(home, tmp_path / "ci")
    try:
        out = run_demo(home, "--days", "9", env={
            "DRIFTLOOP_CONTROLLER_LAUNCHER": "webhook",
            "DRIFTLOOP_CONTROLLER_WEBHOOK_URL": ci.url,
            "DRIFTLOOP_CONTROLLER_WEBHOOK_BODY": json.dumps(
                {"model": "${model}", "cycle_id": "${cycle_id}", "attempt": "${attempt}",
                 "reason": "${reason}"}),
        })
    finally:
        ci.stop()
    assert len(ci.requests) >= 2, out  # the slang triggered retrains, through the webhook
    assert all(r["model"] == "tickets" and r["cycle_id"] for r in ci.requests)
    assert all(p.returncode == 0 for p in ci.trained), [p.stderr[-500:] for p in ci.trained]
    assert "useless" in ci.trained[0].stderr  # training itself says so
    days = timeline(home)
    events = [e for d in days for e in d["events"]]
    assert not [e for e in events if e["outcome"] == "promoted"], events
    assert all(d["live_version"] == 1 for d in days), days
    assert "serving now: tickets v1 (@champion)" in out, out
    # the fully shuffled version is refused as challenger before any pair is judged
    assert any(e["outcome"] == "failed" and e["challenger"] is None
               and any("v2 refused as challenger" in r and "no better than predicting the "
                       "training class shares" in r for r in e["reasons"]) for e in events), events
    # the partly shuffled ones reached the multi-class gate, which said no, with numbers:
    # clearly worse (the whole confidence sequence below -margin)
    gated = [e for e in events if e["challenger"] and e["outcome"] == "rejected"]
    assert gated, events
    for e in gated:
        assert e["champion"] == 1 and e["metric"] == "macro_f1" and e["n"] >= 200, e
        assert e["challenger_metric"] < e["champion_metric"], e
        assert e["ci_high"] < -e["margin"], e
