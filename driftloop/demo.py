"""``driftloop demo``: the whole loop on the embedded default, on synthetic data with drift.

It generates churn data whose label process changes half way (concept drift), trains the
first champion, starts the serving app and the controller as real processes on 127.0.0.1,
and then plays simulated days: each day's traffic goes to ``/predict``, the day's labels
arrive at its end through ``/feedback``, ``driftloop drift-check`` judges the day and posts its
verdict to the controller. The controller retrains, evaluates the challenger, and promotes it
when the gate says so; the serving app follows the alias.

Everything runs in simulated time (kernel/clock.py), so the same seed tells the same story
on any machine, under any load. Two clock files, both written only here:

- the *world's* clock (the serving app's ``DRIFTLOOP_SIMULATED_CLOCK_FILE``) is set to each
  request's own time before it is sent, and to the day's end when its labels are posted:
  log rows and labels carry simulated stamps;
- the *controller's* clock moves once a day, to the day's end, only after the day's rows
  and labels are in the log (``/metrics``: rows and labels written). The controller sees
  predictions before its instant and labels up to it, so what it sees at an instant is
  fixed before it gets there. The demo then waits until a reconcile pass that started
  after the move was quiet (``GET /status``, ``loop``), runs the day's drift check (the
  verdict triggers at that same instant), and waits again. Training runs while the
  controller's clock stands still, so it takes no simulated time; cooldowns, probation,
  training windows, gate looks and label arrival are all in simulated time.

Shadow scoring is not sampled (``DRIFTLOOP_SERVING_SHADOW_ADAPTIVE=false``), and before a
day starts the serving app must serve the versions the aliases name.

``--scenario tickets`` tells the same loop on the support-ticket classifier
(examples/tickets/spec.yaml, training/generate_tickets.py): from the onset day network tickets
are written in slang the training vocabulary never had, more each day; the out-of-distribution
share and the text content drift rise, a retrain on the recent labelled tickets is shadowed
and gated on macro-F1. The timeline and the plot add the day's OOD share.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from driftloop.demo_timeline import (
    LEGEND,
    TEXT_LEGEND,
    DayRow,
    Event,
    champion_moves,
    format_row,
    header,
    plot,
    write_json,
)
from driftloop.processes import (
    Child,
    ProcessGroup,
    driftloop_command,
    free_port,
    wait_http,
    wait_until,
)
from kernel.clock import write_instant

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPEC = EXAMPLES / "churn" / "spec.yaml"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Story:
    """What one demo scenario is made of: its model, data and words."""

    name: str                 # --scenario
    model: str                # the spec's model_name
    spec: Path
    kind: str                 # training/cli.py's --kind: which generator
    drift: str                # the generator's scenario from the onset day
    id_column: str
    target: str
    what: str                 # "[1/4] generated ... rows" and the plot's title
    metric: str               # the timeline's column
    metric_name: str          # the plot's axis
    text: bool = False        # text model: the timeline's OOD column
    #: ``retrain.window`` of the demo's spec; None keeps the spec's (``auto``)
    retrain_window: str | None = None

    def generate(self, days: int, onset: int, rows_per_day: int, seed: int,
                 start: datetime) -> Any:
        from training import generate as churn
        from training import generate_tickets as tickets

        module = tickets if self.kind == "tickets" else churn
        return module.generate(days, scenario=churn.Scenario(self.drift, onset),
                               rows_per_day=rows_per_day, seed=seed, start=start)

    def label(self, value: Any) -> Any:
        """A label as a client sends it: the class name, or 0/1."""
        return str(value) if self.text else int(value)


STORIES = {
    "churn": Story("churn", "churn", SPEC, "churn", "concept", "customer_id", "churned",
                   "churn rows", "AUC", "ROC AUC"),
    "tickets": Story("tickets", "tickets", EXAMPLES / "tickets" / "spec.yaml", "tickets",
                     "slang", "ticket_id", "label", "support tickets", "F1", "macro-F1",
                     text=True,
                     # slang adds words for the same intents: the tickets before it keep
                     # their labels' meaning, so a retrain keeps them and adds the new ones
                     retrain_window="all"),
}
DRIFT_WORDS = {"concept": "concept drift", "slang": "slang in network tickets"}
CATCH_UP_SECONDS = 300.0  # a retrain and its gate, on a loaded machine


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@dataclass
class Demo:
    home: Path
    days: int
    onset: int
    train_days: int
    rows_per_day: int
    seed: int
    story: Story = STORIES["churn"]
    group: ProcessGroup = field(init=False)
    timeline: list[DayRow] = field(default_factory=list)
    serving_url: str = ""
    controller_url: str = ""
    controller_token: str = field(default_factory=lambda: secrets.token_hex(16))
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    feedback_token: str = field(default_factory=lambda: secrets.token_hex(16))
    env: dict[str, str] = field(default_factory=dict)
    day0: datetime | None = None          # the simulated start of day 0
    sent_rows: int = 0
    sent_labels: int = 0
    seen_cycles: set[str] = field(default_factory=set)
    seen_decisions: set[str] = field(default_factory=set)
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def world_clock(self) -> Path:
        return self.home / "clock" / "world"

    @property
    def controller_clock(self) -> Path:
        return self.home / "clock" / "controller"

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

    def driftloop(self, *args: str, check: bool = True,
                  clock: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**_os_environ(), **self.env}
        if clock is not None:
            env["DRIFTLOOP_SIMULATED_CLOCK_FILE"] = str(clock)
        proc = subprocess.run(driftloop_command(*args), capture_output=True, text=True, env=env)
        if check and proc.returncode not in (0, 1):
            raise RuntimeError(f"driftloop {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def prepare(self) -> list[Any]:
        from training.generate import DEFAULT_START

        self.env = {
            "DRIFTLOOP_HOME": str(self.home),
            "DRIFTLOOP_CONTROLLER_TOKEN": self.controller_token,
            "DRIFTLOOP_ADMIN_TOKEN": self.admin_token,
            "DRIFTLOOP_FEEDBACK_TOKEN": self.feedback_token,
            "MLFLOW_TRACKING_URI": "",  # the embedded default, whatever the shell says
        }
        self.day0 = DEFAULT_START
        story = self.story
        data = story.generate(self.days, self.onset, self.rows_per_day, self.seed, self.day0)
        day_of = (data["ts"].dt.normalize() - data["ts"].min().normalize()).dt.days
        history = data[day_of < self.train_days]
        history_path = self.home / "data" / "history.parquet"
        history_path.parent.mkdir(parents=True)
        history.to_parquet(history_path, index=False)
        # a drift-triggered retrain trains from the located change once retrain.min_rows
        # labelled rows exist since it (default 3,000): here, half a simulated day's labels
        window = f"  window: {story.retrain_window}\n" if story.retrain_window else ""
        spec = (story.spec.read_text() + "history: [data/history.parquet]\n"
                f"retrain:\n  min_rows: {max(100, self.rows_per_day // 2)}\n{window}")
        (self.home / "spec.yaml").write_text(spec)
        self.say(f"[1/4] generated {len(data):,} {story.what} over {self.days} days "
                 f"({DRIFT_WORDS[story.drift]} from day {self.onset}); training the first "
                 f"champion on days 0-{self.train_days - 1}...")
        out = self.driftloop("train", "--spec", str(self.home / "spec.yaml"), "--data",
                             str(history_path), "--alias", "champion", "--tag", "trigger=bootstrap")
        self.say("      " + out.stdout.strip().splitlines()[-1])
        return [data[day_of == d] for d in range(self.train_days, self.days)]

    def start_of(self, day: int) -> datetime:
        assert self.day0 is not None
        return self.day0 + day * DAY

    def start_services(self) -> None:
        serving_port, controller_port = free_port(), free_port()
        self.serving_url = f"http://127.0.0.1:{serving_port}"
        self.controller_url = f"http://127.0.0.1:{controller_port}"
        first = self.start_of(self.train_days)
        write_instant(self.world_clock, first)
        write_instant(self.controller_clock, first)
        self.env.update({
            "DRIFTLOOP_SERVING_PORT": str(serving_port),
            "DRIFTLOOP_SERVING_POLL_INTERVAL": "1",
            "DRIFTLOOP_LOG_FLUSH_INTERVAL": "0.2",
            "DRIFTLOOP_SERVING_SHADOW_ADAPTIVE": "false",  # every request shadowed, every run
            "DRIFTLOOP_CONTROLLER_PORT": str(controller_port),
            "DRIFTLOOP_CONTROLLER_URL": self.controller_url,
            "DRIFTLOOP_CONTROLLER_SPECS": str(self.home / "spec.yaml"),
            "DRIFTLOOP_SERVING_URL": self.serving_url,
            "DRIFTLOOP_CONTROLLER_TICK_SECONDS": "0.1",  # wall seconds: how fast it catches up
            # simulated seconds, like every other time of the controller's
            "DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS": "3600",
            "DRIFTLOOP_CONTROLLER_COOLDOWN_SECONDS": str(12 * 3600),
            "DRIFTLOOP_CONTROLLER_PROBATION_SECONDS": str(2 * 86_400),
            "DRIFTLOOP_CONTROLLER_MIN_PAIRS": "200",
        })
        self.say(f"[2/4] starting the serving app ({self.serving_url}) and the controller "
                 f"({self.controller_url}), both on simulated time...")
        serving = self.group.start("serving", driftloop_command("serve", "--model",
                                                                self.story.model),
                                   env={**self.env, "DRIFTLOOP_SIMULATED_CLOCK_FILE":
                                        str(self.world_clock)})
        controller = self.group.start("controller", driftloop_command("controller"),
                                      env={**self.env, "DRIFTLOOP_SIMULATED_CLOCK_FILE":
                                           str(self.controller_clock)})
        self.children = {"serving": serving, "controller": controller}
        wait_http(f"{self.serving_url}/readyz", timeout=90, child=serving)
        wait_http(f"{self.controller_url}/healthz", timeout=90, child=controller)

    # -- the simulated days --------------------------------------------------------

    def play(self, frames: list[Any]) -> None:
        self.say(f"[3/4] playing {len(frames)} simulated days: each request at its own time, "
                 "the labels at the day's end, then the daily drift check\n")
        text = self.story.text
        self.say((TEXT_LEGEND if text else LEGEND) + "\n")
        self.say(header(self.story.metric, text=text))
        with httpx.Client(timeout=30) as client:
            for index, frame in enumerate(frames):
                day = self.train_days + index
                row = self.play_day(client, day, frame)
                self.timeline.append(row)
                self.say(format_row(row, text=text))

    def play_day(self, client: httpx.Client, day: int, frame: Any) -> DayRow:
        start, end = self.start_of(day), self.start_of(day + 1)
        self.serving_follows(client)
        story = self.story
        features = [c for c in frame.columns if c not in (story.id_column, "ts", story.target)]
        records = frame[features].to_dict("records")
        ids = [f"d{day}-{cid}" for cid in frame[story.id_column]]
        failed = 0
        versions: dict[int, int] = {}
        # one request at a time, each at its own simulated time: the log's order is the same
        # on every run
        for record, rid, ts in zip(records, ids, frame["ts"], strict=True):
            write_instant(self.world_clock, ts.floor("us").to_pydatetime())
            resp = client.post(f"{self.serving_url}/predict", json={**record, "request_id": rid})
            if resp.status_code != 200:
                failed += 1
                continue
            version = resp.json().get("model_version")
            versions[version] = versions.get(version, 0) + 1
        self.sent_rows += len(records) - failed
        write_instant(self.world_clock, end)  # the day's labels arrive at its end
        labels = [{"request_id": rid, "label": story.label(y)}
                  for rid, y in zip(ids, frame[story.target], strict=True)]
        for first in range(0, len(labels), 500):
            client.post(f"{self.serving_url}/feedback", json={"labels": labels[first:first + 500]},
                        headers={"Authorization": f"Bearer {self.feedback_token}"}
                        ).raise_for_status()
        self.sent_labels += len(labels)
        self.logged(client)
        write_instant(self.controller_clock, end)
        self.caught_up(client, end)
        live = max(versions, key=lambda v: versions[v]) if versions else None
        verdict = self.check(start, end, live)
        status = self.caught_up(client, end)
        row = DayRow(day=day, phase="drift" if day >= self.onset else "stable",
                     requests=len(records), failed=failed, live_version=live)
        if verdict:
            perf = verdict.get("performance") or {}
            row.status = verdict["status"]
            row.drift_share = verdict.get("drift_share")
            row.realised, row.baseline = perf.get("value"), perf.get("baseline")
            texts = verdict.get("text_columns") or []
            if texts and texts[0].get("ood_share") is not None:
                row.ood_share = float(texts[0]["ood_share"])
        self.take_status(row, status)
        return row

    def take_status(self, row: DayRow, model: dict[str, Any]) -> None:
        """The controller's state after the day, the cycle it started that day, the decisions
        it made that day: each cycle and decision is shown on one day only."""
        row.state = str(model.get("state", "-"))
        cycle = model.get("cycle") or {}
        if cycle.get("id") and cycle["id"] not in self.seen_cycles:
            self.seen_cycles.add(cycle["id"])
            reasons = cycle.get("reasons") or []
            row.trigger = ", ".join(str(r) for r in reasons) or "-"
        new = [d for d in model.get("last_decisions") or []
               if _decision_key(d) not in self.seen_decisions]
        for d in sorted(new, key=lambda d: str(d.get("decided_at", ""))):
            self.seen_decisions.add(_decision_key(d))
            row.events.append(Event.from_decision(d))

    def check(self, since: datetime, until: datetime, version: int | None) -> dict[str, Any] | None:
        """The daily check of the version that served most of the day."""
        out = self.home / "reports" / "demo"
        pick = ["--version", str(version)] if version else []
        proc = self.driftloop("drift-check", "--model", self.story.model, *pick,
                              "--since", since.isoformat(),
                              "--until", until.isoformat(), "--post-to", self.controller_url,
                              "--out", str(out), clock=self.controller_clock)
        found = re.search(r"^verdict: (.+\.json)$", proc.stdout, re.MULTILINE)
        if not found:
            self.say(f"      drift-check wrote no verdict: {proc.stderr.strip()[-300:]}")
            return None
        return dict(json.loads(Path(found.group(1)).read_text()))

    # -- waiting for the services, never a blind sleep -------------------------------

    def model_status(self, client: httpx.Client) -> dict[str, Any]:
        return _model_status(client.get(f"{self.controller_url}/status").json(),
                             self.story.model)

    def caught_up(self, client: httpx.Client, at: datetime) -> dict[str, Any]:
        """Wait for a quiet reconcile pass at ``at`` that started after this call (every
        trigger taken, no state changed, no training running); the model's status then."""
        started = self.model_status(client)["loop"]["passes_started"]
        found: dict[str, Any] = {}

        def done() -> bool:
            status = self.model_status(client)
            last = status["loop"]["last_pass"]
            if last and last["seq"] > started and last["quiet"] \
                    and datetime.fromisoformat(last["at"]) == at:
                found.update(status)
                return True
            return False

        wait_until(done, timeout=CATCH_UP_SECONDS, interval=0.1,
                   what=f"the controller to catch up at {at.isoformat()}",
                   child=self.children["controller"])
        return found

    def logged(self, client: httpx.Client) -> None:
        """Wait until every answered request and every label is in the log (shadow scores
        included: a shadowed row is logged once scored)."""
        def done() -> bool:
            text = client.get(f"{self.serving_url}/metrics").text
            return (_counter(text, "driftloop_log_rows_written_total") >= self.sent_rows
                    and _counter(text, "driftloop_log_labels_written_total") >= self.sent_labels)

        wait_until(done, timeout=60, interval=0.1, what="the prediction log to be written",
                   child=self.children["serving"])

    def serving_follows(self, client: httpx.Client) -> None:
        """Wait until serving answers with the champion and shadows the challenger the
        registry's aliases name (it is told to reload after a move, and polls)."""
        def done() -> bool:
            aliases = self.model_status(client).get("aliases") or {}
            live = client.get(f"{self.serving_url}/model").json()
            return ((live.get("champion") or {}).get("version") == aliases.get("champion")
                    and (live.get("challenger") or {}).get("version") == aliases.get("challenger"))

        wait_until(done, timeout=60, interval=0.1, what="serving to follow the aliases",
                   child=self.children["serving"])

    # -- the end -------------------------------------------------------------------

    def finish(self) -> None:
        with httpx.Client(timeout=10) as client:
            live = client.get(f"{self.serving_url}/model").json()
        events = [e for r in self.timeline for e in r.events]
        moves = self.moves()
        reports = self.home / "reports"
        write_json(reports / "demo-timeline.json", self.timeline, seed=self.seed, moves=moves)
        drawn = plot(reports / "demo-metric.png", self.timeline, moves, onset=self.onset,
                     metric=self.story.metric_name,
                     title=f"driftloop demo: {DRIFT_WORDS[self.story.drift]}, retrain, "
                     "shadow gate, promotion")
        html = sorted(reports.rglob("*.html"), key=lambda p: p.stat().st_mtime)
        self.say("\n[4/4] done.")
        champion = live.get("champion") or {}
        challenger = live.get("challenger") or {}
        self.say(f"  serving now: {live.get('model', self.story.model)} "
                 f"v{champion.get('version')} "
                 f"(@champion)" + (f", shadowing v{challenger.get('version')} (@challenger)"
                                   if challenger else ""))
        for event in events:
            self.say(f"  decision: {event.long()}")
        self.say("\nWhere to look:")
        self.say(f"  MLflow UI (decision runs in 'driftloop-decisions', version tags, drift reports "
                 f"in 'driftloop-monitoring'):\n    DRIFTLOOP_HOME={self.home} driftloop ui  "
                 "# then open http://127.0.0.1:5000")
        self.say(f"  promotion history:    DRIFTLOOP_HOME={self.home} driftloop history "
                 f"--model {self.story.model}")
        if html:
            self.say(f"  latest drift report: {html[-1]}")
        self.say(f"  timeline (JSON):     {reports / 'demo-timeline.json'}")
        if drawn:
            self.say(f"  metric over time:    {drawn}")
        self.say(f"  logs of the services: {self.home / 'logs'}")

    def moves(self) -> list[dict[str, Any]]:
        """The champion's moves, from the registry's own record (``driftloop history``)."""
        proc = self.driftloop("history", "--model", self.story.model, "--json", check=False)
        try:
            history = json.loads(proc.stdout)
        except ValueError:
            self.say(f"      driftloop history failed: {proc.stderr.strip()[-300:]}")
            return []
        items = history.get("moves", history) if isinstance(history, dict) else history
        assert self.day0 is not None
        return champion_moves(items, day0=self.day0, since=self.start_of(self.train_days))


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _decision_key(d: dict[str, Any]) -> str:
    return f"{d.get('cycle_id')}:{d.get('kind')}:{d.get('outcome')}"


def _counter(text: str, name: str) -> float:
    """The sum of a Prometheus counter's samples in an exposition."""
    return sum(float(m.group(1)) for m in re.finditer(
        rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def _model_status(data: dict[str, Any], name: str) -> dict[str, Any]:
    models = data.get("models", data)
    if isinstance(models, list):
        return next((m for m in models if m.get("model") == name or m.get("name") == name), {})
    return models.get(name, {}) if isinstance(models, dict) else {}


def demo(
    home: Annotated[Path, typer.Option(help="Where the demo's store, logs and reports go "
                                       "(wiped at the start).")] = Path(".driftloop-demo"),
    days: Annotated[int, typer.Option(min=6, help="Simulated days in all.")] = 12,
    onset: Annotated[int, typer.Option(help="Day the concept drift starts.")] = 7,
    train_days: Annotated[int, typer.Option(help="Days the first champion is trained on.")] = 4,
    rows_per_day: Annotated[int, typer.Option(min=200, help="Requests per simulated day.")] = 1500,
    seed: Annotated[int, typer.Option(help="Random seed of the demo data (the same seed "
                                      "tells the same story).")] = 7,
    scenario: Annotated[str, typer.Option(help="churn: a churn model whose label process "
                                          "changes (concept drift); tickets: a support-ticket "
                                          "text classifier over five classes whose network "
                                          "tickets turn to new slang.")] = "churn",
) -> None:
    """Run the whole loop on the embedded default, in simulated time: drift, retrain, shadow
    gate, promotion."""
    from kernel.errors import UsageError

    if scenario not in STORIES:
        raise UsageError(f"--scenario: {scenario!r} is not one of {', '.join(STORIES)}")
    if not train_days < onset < days:
        raise UsageError("need --train-days < --onset < --days")
    try:
        Demo(home.resolve(), days, onset, train_days, rows_per_day, seed,
             STORIES[scenario]).run()
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the demo's processes were stopped", err=True)
        raise typer.Exit(130) from None
