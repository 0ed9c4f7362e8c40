"""``driftloop demo``: the whole loop on the embedded default, on synthetic data with drift.

It generates churn data whose label process changes half way (concept drift), trains the
first champion, starts the serving app and the controller as real processes on 127.0.0.1,
and then plays simulated days: each day's traffic goes to ``/predict``, the day's labels
arrive at its end through ``/feedback``, ``driftloop drift-check`` judges the day and posts its
verdict to the controller. The controller retrains, shadow-evaluates the challenger on the
following traffic, and promotes it when the gate says so; the serving app follows the alias.
A simulated day takes a few seconds of wall time.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from driftloop.processes import ProcessGroup, driftloop_command, free_port, wait_http, wait_until

SPEC = Path(__file__).resolve().parent.parent / "examples" / "churn" / "spec.yaml"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@dataclass
class DayRow:
    day: int
    phase: str
    requests: int
    failed: int
    live_version: int | None
    status: str = "-"
    drift_share: float | None = None
    realised: float | None = None
    baseline: float | None = None
    trigger: str = "-"
    state: str = "-"
    decision: str = "-"


@dataclass
class Demo:
    home: Path
    days: int
    onset: int
    train_days: int
    rows_per_day: int
    seed: int
    group: ProcessGroup = field(init=False)
    timeline: list[DayRow] = field(default_factory=list)
    serving_url: str = ""
    controller_url: str = ""
    controller_token: str = field(default_factory=lambda: secrets.token_hex(16))
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    feedback_token: str = field(default_factory=lambda: secrets.token_hex(16))
    env: dict[str, str] = field(default_factory=dict)

    # -- set-up --------------------------------------------------------------------

    def run(self) -> int:
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        self.group = ProcessGroup(self.home / "logs")
        try:
            frames = self.prepare()
            self.start_services()
            self.play(frames)
            self.finish()
        finally:
            self.group.stop()
        return 0

    def say(self, message: str) -> None:
        typer.echo(message)

    def driftloop(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(driftloop_command(*args), capture_output=True, text=True,
                              env={**_os_environ(), **self.env})
        if check and proc.returncode not in (0, 1):
            raise RuntimeError(f"driftloop {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def prepare(self) -> list[Any]:
        from training.generate import Scenario, generate

        self.env = {
            "DRIFTLOOP_HOME": str(self.home),
            "DRIFTLOOP_CONTROLLER_TOKEN": self.controller_token,
            "DRIFTLOOP_ADMIN_TOKEN": self.admin_token,
            "DRIFTLOOP_FEEDBACK_TOKEN": self.feedback_token,
            "MLFLOW_TRACKING_URI": "",  # the embedded default, whatever the shell says
        }
        data = generate(self.days, scenario=Scenario("concept", self.onset),
                        rows_per_day=self.rows_per_day, seed=self.seed)
        day_of = (data["ts"].dt.normalize() - data["ts"].min().normalize()).dt.days
        history = data[day_of < self.train_days]
        history_path = self.home / "data" / "history.parquet"
        history_path.parent.mkdir(parents=True)
        history.to_parquet(history_path, index=False)
        # a drift-triggered retrain trains from the located change once retrain.min_rows
        # labelled rows exist since it (default 3,000): here, half a simulated day's labels
        spec = (SPEC.read_text() + "history: [data/history.parquet]\n"
                f"retrain:\n  min_rows: {max(100, self.rows_per_day // 2)}\n")
        (self.home / "spec.yaml").write_text(spec)
        self.say(f"[1/4] generated {len(data):,} churn rows over {self.days} days "
                 f"(concept drift from day {self.onset}); training the first champion on days "
                 f"0-{self.train_days - 1}...")
        out = self.driftloop("train", "--spec", str(self.home / "spec.yaml"), "--data",
                             str(history_path), "--alias", "champion", "--tag", "trigger=bootstrap")
        self.say("      " + out.stdout.strip().splitlines()[-1])
        return [data[day_of == d] for d in range(self.train_days, self.days)]

    def start_services(self) -> None:
        serving_port, controller_port = free_port(), free_port()
        self.serving_url = f"http://127.0.0.1:{serving_port}"
        self.controller_url = f"http://127.0.0.1:{controller_port}"
        self.env.update({
            "DRIFTLOOP_SERVING_PORT": str(serving_port),
            "DRIFTLOOP_SERVING_POLL_INTERVAL": "1",
            "DRIFTLOOP_CONTROLLER_PORT": str(controller_port),
            "DRIFTLOOP_CONTROLLER_URL": self.controller_url,
            "DRIFTLOOP_CONTROLLER_SPECS": str(self.home / "spec.yaml"),
            "DRIFTLOOP_SERVING_URL": self.serving_url,
            # A simulated day lasts seconds, so the controller's clocks are set in seconds too.
            "DRIFTLOOP_CONTROLLER_TICK_SECONDS": "0.5",
            "DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS": "2",
            "DRIFTLOOP_CONTROLLER_COOLDOWN_SECONDS": "20",
            "DRIFTLOOP_CONTROLLER_RETRAIN_WINDOW_DAYS": "0.0003",
            "DRIFTLOOP_CONTROLLER_RECENT_DAYS": "0.0003",
            "DRIFTLOOP_CONTROLLER_MIN_PAIRS": "200",
        })
        self.say(f"[2/4] starting the serving app ({self.serving_url}) and the controller "
                 f"({self.controller_url})...")
        serving = self.group.start("serving", driftloop_command("serve", "--model", "churn"),
                                   env=self.env)
        controller = self.group.start("controller", driftloop_command("controller"), env=self.env)
        wait_http(f"{self.serving_url}/readyz", timeout=90, child=serving)
        wait_http(f"{self.controller_url}/healthz", timeout=90, child=controller)

    # -- the simulated days --------------------------------------------------------

    def play(self, frames: list[Any]) -> None:
        self.say(f"[3/4] playing {len(frames)} days of traffic; labels arrive at the end of "
                 "each day, then the daily drift check runs\n")
        self.say(f"{'day':>3}  {'phase':<7} {'reqs':>5} {'fail':>4}  {'live':>4}  "
                 f"{'verdict':<17} {'drift':>5}  {'AUC':>5} {'(base)':>7}  {'controller':<9} "
                 f"{'trigger':<22} decision")
        with httpx.Client(timeout=30) as client:
            for index, frame in enumerate(frames):
                day = self.train_days + index
                row = self.play_day(client, day, frame)
                self.timeline.append(row)
                self.say(_format(row))
            self.wait_for_quiet(client)

    def play_day(self, client: httpx.Client, day: int, frame: Any) -> DayRow:
        features = [c for c in frame.columns if c not in ("customer_id", "ts", "churned")]
        records = frame[features].to_dict("records")
        ids = [f"d{day}-{cid}" for cid in frame["customer_id"]]
        since = datetime.now(UTC)
        failed = 0
        versions: dict[int, int] = {}

        def send(i: int) -> tuple[int, int | None]:
            body = {**records[i], "request_id": ids[i]}
            resp = client.post(f"{self.serving_url}/predict", json=body)
            return resp.status_code, resp.json().get("model_version") if resp.is_success else None

        with ThreadPoolExecutor(max_workers=8) as pool:
            for code, version in pool.map(send, range(len(records))):
                if code != 200:
                    failed += 1
                elif version is not None:
                    versions[version] = versions.get(version, 0) + 1
        labels = [{"request_id": rid, "label": int(y)} for rid, y in zip(ids, frame["churned"],
                                                                          strict=True)]
        for start in range(0, len(labels), 500):
            client.post(f"{self.serving_url}/feedback", json={"labels": labels[start:start + 500]},
                        headers={"Authorization": f"Bearer {self.feedback_token}"}
                        ).raise_for_status()
        until = datetime.now(UTC)
        time.sleep(1.2)  # the log flushes at least every second: let the day's rows land
        live = max(versions, key=lambda v: versions[v]) if versions else None
        verdict = self.check(since, until, live)
        status = self.controller_status(client)
        row = DayRow(day=day, phase="drift" if day >= self.onset else "stable",
                     requests=len(records), failed=failed, live_version=live)
        if verdict:
            perf = verdict.get("performance") or {}
            row.status = verdict["status"]
            row.drift_share = verdict.get("drift_share")
            row.realised, row.baseline = perf.get("value"), perf.get("baseline")
        row.state, row.trigger, row.decision = status
        if row.state == "training":
            try:
                self.wait_state(client, lambda s: s != "training", 120)
            except TimeoutError:  # e.g. waiting for labels: the next day may bring them
                self.say("      (the controller is still training; playing the next day)")
            row.state = self.controller_status(client)[0]
        return row

    def check(self, since: datetime, until: datetime, version: int | None) -> dict[str, Any] | None:
        """The daily check of the version that served most of the day."""
        out = self.home / "reports" / "demo"
        pick = ["--version", str(version)] if version else []
        proc = self.driftloop("drift-check", "--model", "churn", *pick, "--since", since.isoformat(),
                              "--until", until.isoformat(), "--post-to", self.controller_url,
                              "--out", str(out))
        paths = sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not paths:
            self.say(f"      drift-check wrote no verdict: {proc.stderr.strip()[-300:]}")
            return None
        return json.loads(paths[-1].read_text())

    def controller_status(self, client: httpx.Client) -> tuple[str, str, str]:
        data = client.get(f"{self.controller_url}/status").json()
        model = _model_status(data, "churn")
        state = str(model.get("state", "-"))
        cycle = model.get("cycle") or model.get("current_cycle") or {}
        reasons = cycle.get("reasons") or cycle.get("triggers") or []
        trigger = ", ".join(str(r) for r in reasons)[:22] if reasons else "-"
        decisions = model.get("decisions") or model.get("last_decisions") or []
        decision = _format_decision(decisions[0]) if decisions else "-"
        return state, trigger, decision

    def wait_state(self, client: httpx.Client, ok: Any, timeout: float) -> None:
        wait_until(lambda: ok(self.controller_status(client)[0]), timeout=timeout,
                   what="the controller", interval=0.5)

    def wait_for_quiet(self, client: httpx.Client) -> None:
        """After the last day, give a running cycle time to end (bounded)."""
        try:
            self.wait_state(client, lambda s: s in ("idle", "cooldown", "failed"), 60)
        except TimeoutError:
            self.say("      (the controller is still busy; the status below is where it is)")

    # -- the end -------------------------------------------------------------------

    def finish(self) -> None:
        with httpx.Client(timeout=10) as client:
            live = client.get(f"{self.serving_url}/model").json()
            status = client.get(f"{self.controller_url}/status").json()
        model = _model_status(status, "churn")
        decisions = model.get("decisions") or model.get("last_decisions") or []
        plot = self.plot()
        reports = sorted((self.home / "reports").rglob("*.html"), key=lambda p: p.stat().st_mtime)
        self.say("\n[4/4] done.")
        champion = live.get("champion") or {}
        challenger = live.get("challenger") or {}
        self.say(f"  serving now: {live.get('model', 'churn')} v{champion.get('version')} "
                 f"(@champion)" + (f", shadowing v{challenger.get('version')} (@challenger)"
                                   if challenger else ""))
        for decision in decisions[:3]:
            self.say(f"  decision: {_format_decision(decision, long=True)}")
        self.say("\nWhere to look:")
        self.say(f"  MLflow UI (decision runs in 'driftloop-decisions', version tags, drift reports "
                 f"in 'driftloop-monitoring'):\n    DRIFTLOOP_HOME={self.home} driftloop ui  "
                 "# then open http://127.0.0.1:5000")
        if reports:
            self.say(f"  latest drift report: {reports[-1]}")
        if plot:
            self.say(f"  metric over time:    {plot}")
        self.say(f"  logs of the services: {self.home / 'logs'}")

    def plot(self) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        points = [(r.day, r.realised) for r in self.timeline if r.realised is not None]
        if not points:
            return None
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label="realised ROC AUC of the live model")
        base = next((r.baseline for r in self.timeline if r.baseline is not None), None)
        if base is not None:
            ax.axhline(base, color="grey", linestyle=":", label="first champion's validation AUC")
        ax.axvline(self.onset - 0.5, color="red", linestyle="--", label="drift onset")
        versions = [(r.day, r.live_version) for r in self.timeline]
        for (_, before), (day, after) in zip(versions, versions[1:], strict=False):
            if before is not None and after is not None and after != before:
                ax.axvline(day - 0.5, color="green", linestyle="-.",
                           label=f"promotion: v{before} -> v{after}")
        ax.set_xlabel("simulated day")
        ax.set_ylabel("ROC AUC")
        ax.set_title("driftloop demo: concept drift, retrain, shadow gate, promotion")
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        path = self.home / "reports" / "demo-metric.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _model_status(data: dict[str, Any], name: str) -> dict[str, Any]:
    models = data.get("models", data)
    if isinstance(models, list):
        return next((m for m in models if m.get("model") == name or m.get("name") == name), {})
    return models.get(name, {}) if isinstance(models, dict) else {}


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _format_decision(d: dict[str, Any], long: bool = False) -> str:
    outcome = d.get("outcome", "?")
    text = (f"{outcome} v{d.get('challenger_version')} vs v{d.get('champion_version')}: "
            f"{d.get('metric', '')} diff {_num(d.get('difference'), '+.3f')} CI "
            f"[{_num(d.get('ci_low'), '+.3f')}, {_num(d.get('ci_high'), '+.3f')}] "
            f"n={d.get('n')} ({d.get('evidence')})")
    if long and d.get("reasons"):
        text += "\n    reasons: " + "; ".join(d["reasons"])
    return text


def _format(r: DayRow) -> str:
    flagged = "!" if r.status in ("drift", "degraded") else " "
    return (f"{r.day:>3}  {r.phase:<7} {r.requests:>5} {r.failed:>4}  "
            f"{'v' + str(r.live_version) if r.live_version else '-':>4}  {flagged}{r.status:<16} "
            f"{_num(r.drift_share, '.2f'):>5}  {_num(r.realised):>5} ({_num(r.baseline)})  "
            f"{r.state:<9} {r.trigger:<22} {r.decision}")


def demo(
    home: Annotated[Path, typer.Option(help="Where the demo's store, logs and reports go "
                                       "(wiped at the start).")] = Path(".driftloop-demo"),
    days: Annotated[int, typer.Option(min=6, help="Simulated days in all.")] = 12,
    onset: Annotated[int, typer.Option(help="Day the concept drift starts.")] = 7,
    train_days: Annotated[int, typer.Option(help="Days the first champion is trained on.")] = 4,
    rows_per_day: Annotated[int, typer.Option(min=200, help="Requests per simulated day.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed of the demo data.")] = 7,
) -> None:
    """Run the whole loop on the embedded default: drift, retrain, shadow gate, promotion."""
    from kernel.errors import UsageError

    if not train_days < onset < days:
        raise UsageError("need --train-days < --onset < --days")
    try:
        Demo(home.resolve(), days, onset, train_days, rows_per_day, seed).run()
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the demo's processes were stopped", err=True)
        raise typer.Exit(130) from None
