"""The reconcile loop: the I/O shell around the pure core.

Each pass, per managed model and under that model's lease: load the persisted state, turn
pending triggers into events (each saved together with its trigger marked done, in one
transaction: no lost trigger), tick, and carry the resulting actions out through the ports.
Every action is idempotent, keyed by the cycle id, and its result comes back as an event.
Retryable errors leave the state as it is for the next pass; permanent ones end the step
with a recorded failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.codec import state_from_json, state_to_json
from controller.core import decide, trigger_outcome
from controller.evidence import Evaluator
from controller.foreign import ForeignMoves
from controller.history import record_on_versions
from controller.holdout import HoldoutMonitor
from controller.launcher import Launcher, LaunchError, LaunchRequest
from controller.machine import (
    Action,
    CheckTraining,
    DecisionRecorded,
    Evaluate,
    Event,
    GateDecision,
    LaunchTraining,
    ModelState,
    Notify,
    PerformanceObserved,
    Promote,
    PromoteRequested,
    PromotionDone,
    RecordDecision,
    Reject,
    ReloadServing,
    Rollback,
    RollbackRequested,
    SetChallenger,
    ShadowEvidence,
    StepFailed,
    Tick,
    TrainingFailed,
    TrainingLaunched,
    TrainingSucceeded,
    Trigger,
)
from controller.metrics import ControllerMetrics
from controller.notify import Notifier, ServingReloader
from controller.recent import (
    CHANGE_SOURCES,
    Window,
    change_start,
    choose_window,
    history_of,
    write_retrain_rows,
)
from controller.schedule import last_fire
from controller.settings import ControllerSettings
from controller.slo import SloMonitor
from controller.store import StaleState, Store, TriggerRow
from kernel.errors import RetryableError
from kernel.spec import DatasetSpec
from monitoring.check import Reference
from monitoring.predlog import WindowReader
from registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    TAG_PREFIX,
    AliasConflict,
    DecisionRecord,
    ModelRegistry,
    VersionNotFound,
)

log = logging.getLogger(__name__)
TAG = TAG_PREFIX
CRASH_ENV = "DRIFTLOOP_CONTROLLER_CRASH_AT"


class ActionFailed(Exception):
    """A permanent error in one action, tagged with the cycle (or override) it was for, so
    that the failure ends that one (``StepFailed.cycle_id``) and not whichever is current."""

    def __init__(self, cycle_id: str | None, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cycle_id = cycle_id


@dataclass(frozen=True)
class Pass:
    """One completed reconcile pass: its number, the controller's clock when it started, and
    whether it was quiet (took no trigger, changed no state, failed nothing, and left no
    training running). A quiet pass that started after some change means the controller has
    caught up with it at that instant: what ``driftloop demo`` waits for before it moves
    its simulated clock (``GET /status``, ``loop``)."""

    seq: int
    at: datetime
    quiet: bool


def _launched_holdout(dest: Path) -> datetime | None:
    """The holdout cut a cycle's launch recorded beside its rows (``<cycle>.holdout``; None
    if it recorded none)."""
    try:
        return datetime.fromisoformat(dest.with_suffix(".holdout").read_text().strip())
    except (OSError, ValueError):
        return None


def _training_running(state: ModelState) -> bool:
    c = state.cycle
    return state.phase == "training" and c is not None and c.launched_at is not None


@dataclass(frozen=True)
class Managed:
    spec: DatasetSpec
    spec_path: Path


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _cycle_of(row: TriggerRow, state: ModelState, outcome: str) -> str | None:
    """The cycle a trigger started or joined: an override's own id for promote and rollback
    (the retrain cycle kept in the state through the cooldown is not theirs)."""
    if row.action in ("promote", "rollback"):
        return state.override.id if state.override is not None else None
    if state.cycle is not None and outcome in ("started", "merged"):
        return state.cycle.id
    return state.override.id if state.override is not None else None


class Controller:
    def __init__(self, settings: ControllerSettings, *, store: Store, registry: ModelRegistry,
                 launcher: Launcher, reader: WindowReader, evaluator: Evaluator,
                 models: dict[str, Managed], metrics: ControllerMetrics,
                 notifier: Notifier | None = None, reloader: ServingReloader | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 crash_at: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.reader = reader
        self.evaluator = evaluator
        self.models = models
        self.metrics = metrics
        self.notifier = notifier
        self.reloader = reloader
        self.clock = clock
        self.crash_at = crash_at
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = clock()
        self.wake = threading.Event()
        self._side = ThreadPoolExecutor(max_workers=2, thread_name_prefix="controller-side")
        self._last_eval: dict[str, datetime] = {}
        self._last_labels_check: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self.errors = 0
        self.passes_started = 0
        self.last_pass: Pass | None = None
        self._saves = 0
        self.foreign = ForeignMoves(registry, clock, settings.controller_foreign_check_seconds)
        self.slo = SloMonitor(store=store, registry=registry, reader=reader, metrics=metrics,
                              every_seconds=settings.controller_slo_check_seconds,
                              reference_of=self._slo_reference)
        self.holdout = HoldoutMonitor(store=store, registry=registry, metrics=metrics,
                                      cache=lambda: self.evaluator.cache)

    # -- state ------------------------------------------------------------------------------

    def policy(self, model: str):  # noqa: ANN201
        return self.settings.policy(lower_is_better=self.models[model].spec.lower_is_better)

    def load(self, model: str) -> tuple[ModelState, int]:
        text, revision = self.store.load(model)
        return (ModelState(model) if text is None else state_from_json(text)), revision

    def _save(self, state: ModelState, revision: int,
              trigger_done: tuple[int, str, str | None] | None = None) -> int:
        cycle = None
        if state.cycle is not None:
            c = state.cycle
            outcome = c.result.outcome if c.result is not None else None
            cycle = {"cycle_id": c.id, "model": state.model, "started_at": c.started_at,
                     "phase": state.phase if state.phase != "idle" else "done",
                     "outcome": outcome, "challenger": c.challenger, "champion": c.champion,
                     "reasons": list(c.reasons)}
        revision = self.store.save(state.model, state_to_json(state), revision, now=self.clock(),
                                   trigger_done=trigger_done, cycle=cycle)
        self._saves += 1
        self.metrics.set_phase(state.model, state.phase)
        self._crash(state.phase)
        return revision

    def _crash(self, point: str) -> None:
        """Test hook: ``DRIFTLOOP_CONTROLLER_CRASH_AT=<point>`` kills this process with SIGKILL."""
        if self.crash_at and self.crash_at == point:
            log.warning("crash hook %s: SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.reconcile_once()
                self.store.purge_due(self.clock(), self.settings.controller_retention_days)
            except Exception:
                self.errors += 1
                log.exception("reconcile pass failed")
            self.wake.wait(self.settings.controller_tick_seconds)
            self.wake.clear()
        self._side.shutdown(wait=False)

    def reconcile_once(self) -> None:
        with self._lock:
            self.passes_started += 1
            seq, at, saves, errors = self.passes_started, self.clock(), self._saves, self.errors
            running = False
            for model in self.models:
                now_wall = time.time()
                if not self.store.acquire_lease(f"model:{model}", self.holder,
                                                ttl=self.settings.controller_lease_seconds,
                                                now=now_wall):
                    running = True  # another replica holds it: not caught up here
                    continue
                try:
                    state = self.step(model)
                    running = running or _training_running(state)
                    self.notice_foreign(state)
                except StaleState:
                    log.warning("state of %s changed under us; next pass", model)
                except RetryableError as exc:
                    self.errors += 1
                    log.warning("%s: retrying later: %s", model, exc)
                except Exception as exc:  # permanent: this model's cycle fails, others go on
                    self.errors += 1
                    log.exception("%s: permanent error; its cycle ends failed", model)
                    self._step_failed(model, exc)
            self.last_pass = Pass(seq, at, quiet=self._saves == saves and self.errors == errors
                                  and not running)

    def notice_foreign(self, state: ModelState) -> None:
        """Record alias moves made outside driftloop (controller/foreign.py), once; skipped
        while a decision is under way. A failure here is logged: it never fails a cycle."""
        try:
            self.foreign.check(state.model,
                               busy=state.phase == "deciding" or state.override is not None)
        except RetryableError as exc:
            log.warning("%s: foreign alias moves not checked: %s", state.model, exc)
        except Exception:
            self.errors += 1
            log.exception("%s: foreign alias moves not checked", state.model)

    def _step_failed(self, model: str, exc: Exception) -> None:
        """Feed a permanent error to the decision core as ``StepFailed`` and carry out what it
        says (a failed decision, a notification). An error here too is logged: the next pass
        sees the same state and tries again."""
        try:
            state, revision = self.load(model)
            failed = (StepFailed(str(exc), exc.cycle_id) if isinstance(exc, ActionFailed)
                      else StepFailed(f"{type(exc).__name__}: {exc}"))
            new, actions = decide(state, failed, self.clock(), self.policy(model))
            if new != state:
                revision = self._save(new, revision)
            self._run(new, revision, actions)
        except Exception:
            self.errors += 1
            log.exception("%s: could not end the cycle after a permanent error", model)

    def step(self, model: str) -> ModelState:
        state, revision = self.load(model)
        if revision == 0:
            revision = self._save(state, revision)
        self._builtin_triggers(model, state)
        for row in self.store.pending_triggers(model):
            try:
                event = self._event_for(row, state)
            except RetryableError:
                raise
            except Exception:  # a trigger that cannot be read must not block the model
                log.exception("%s: trigger %s cannot be taken", model, row.id)
                revision = self._save(state, revision, (row.id, "failed", None))
                self.metrics.triggers.labels(source=row.source, outcome="failed").inc()
                continue
            new, actions = ((state, ()) if event is None
                            else decide(state, event, self.clock(), self.policy(model)))
            outcome = trigger_outcome(state, new) if event is not None else "ignored"
            if isinstance(event, PerformanceObserved) and outcome == "ignored":
                outcome = "recorded"
            cycle_id = _cycle_of(row, new, outcome)
            revision = self._save(new, revision, (row.id, outcome, cycle_id))
            self.metrics.triggers.labels(source=row.source, outcome=outcome).inc()
            state = new
            state, revision = self._run(state, revision, actions)
        new, actions = decide(state, Tick(), self.clock(), self.policy(model))
        if new != state:
            revision = self._save(new, revision)
        return self._run(new, revision, actions)[0]

    def _run(self, state: ModelState, revision: int,
             actions: tuple[Action, ...]) -> tuple[ModelState, int]:
        pending = list(actions)
        for _ in range(100):
            if not pending:
                break
            action = pending.pop(0)
            try:
                event = self._execute(state, action)
            except (RetryableError, StaleState):
                raise
            except Exception as exc:  # permanent: it ends the cycle this action was for
                raise ActionFailed(getattr(action, "cycle_id", None), exc) from exc
            if event is None:
                continue
            new, more = decide(state, event, self.clock(), self.policy(state.model))
            if new != state:
                revision = self._save(new, revision)
            state = new
            pending = [*more, *(a for a in pending if isinstance(a, Notify | ReloadServing))]
        return state, revision

    # -- events from intake -----------------------------------------------------------------

    def _event_for(self, row: TriggerRow, state: ModelState) -> Event | None:
        manual = row.source == "manual"
        if row.action == "retrain":
            return Trigger(row.source, row.reason, manual=manual)
        if row.action in ("performance", "degraded"):
            # "degraded" is its own action; rows stored before it carried the flag in actor
            degraded = row.action == "degraded" or row.actor == "degraded"
            return PerformanceObserved(row.version or 0, row.value, degraded=degraded,
                                       reason=row.reason)
        aliases = self.registry.aliases(row.model)
        if row.action == "rollback":
            return RollbackRequested(row.reason, row.source, aliases.get(ALIAS_CHAMPION),
                                     aliases.get(ALIAS_PREVIOUS), actor=row.actor or "controller",
                                     manual=manual)
        if row.action == "promote" and row.version is not None:
            return PromoteRequested(row.version, row.reason, aliases.get(ALIAS_CHAMPION),
                                    actor=row.actor or "human")
        return None

    @staticmethod
    def _due(last: dict[str, datetime], key: str, now: datetime, every: float) -> bool:
        """Throttle on the controller's clock: due when ``every`` seconds passed since the last
        time, or when the clock went back (a wall-clock step must not stall the loop)."""
        before = last.get(key)
        if before is None:
            return True
        elapsed = (now - before).total_seconds()
        return elapsed >= every or elapsed < 0

    def _builtin_triggers(self, model: str, state: ModelState) -> None:
        now = self.clock()
        # SLOs (controller/slo.py): an exhausted error budget adds its own trigger (source slo)
        self.errors += self.slo.check(model, self.models[model].spec, now)
        # the static holdout (controller/holdout.py): a drop adds its own trigger (source holdout)
        self.errors += self.holdout.check(model, self.models[model].spec, now)
        expr = self.settings.controller_schedule
        if expr:
            slot = last_fire(expr, now)
            if slot is not None and slot > self.started_at:
                self.store.add_trigger(model=model, source="schedule", action="retrain",
                                       reason=f"scheduled ({expr}) at {slot.isoformat()}",
                                       now=now, dedup_key=f"schedule:{model}:{slot.isoformat()}")
        wanted = self.settings.controller_retrain_labelled_rows
        every = self.settings.controller_labels_check_seconds
        if wanted and self._due(self._last_labels_check, model, now, every):
            self._last_labels_check[model] = now
            since = state.last_trained_at
            if since is None:
                champion = self.registry.get_alias(model, ALIAS_CHAMPION)
                since = champion.created_at if champion is not None else None
            if since is not None:
                # this model's predictions of the recent window whose label came in since then
                start = since - timedelta(days=max(self.settings.controller_recent_days, 1.0))
                fresh = self._fresh_labels(model, start, now, since)
                if fresh >= wanted:
                    self.store.add_trigger(
                        model=model, source="labels", action="retrain", now=now,
                        reason=f"{fresh} labels received since {since.isoformat()} "
                        f"(threshold {wanted})", dedup_key=f"labels:{model}:{since.isoformat()}")

    def _slo_reference(self, model: str, version: int) -> Reference | None:
        """The champion's reference for an SLO (its classes, its CBPE calibration)."""
        return Reference.from_bundle(self.evaluator.cache.bundle(model, version))

    def _fresh_labels(self, model: str, start: datetime, now: datetime, since: datetime) -> int:
        """Labels received since ``since`` for predictions of ``[start, now)``: a reader that
        counts them itself (the backtest's replay log) is asked to, else from the window."""
        count = getattr(self.reader, "count_labels", None)
        if count is not None:
            return int(count(model, start, now, received_since=since, as_of=now))
        rows = self.reader.window(model, start, now, labels_as_of=now)
        return int((rows["label"].notna() & (rows["label_received_at"] >= since)).sum()
                   ) if len(rows) else 0

    # -- actions ----------------------------------------------------------------------------

    def _execute(self, state: ModelState, action: Action) -> Event | None:
        match action:
            case LaunchTraining():
                return self._launch(action)
            case CheckTraining():
                return self._check_training(action)
            case SetChallenger():
                if self.registry.aliases(action.model).get(ALIAS_CHALLENGER) != action.version:
                    self.registry.set_alias(action.model, ALIAS_CHALLENGER, action.version)
                return None
            case Evaluate():
                return self._evaluate(action)
            case Promote():
                return self._moved(action.model, action.champion, self._guard(
                    action.model, action.cycle_id, lambda: self._promote(action)))
            case Reject():
                return self._guard(action.model, action.cycle_id, lambda: self._reject(action))
            case Rollback():
                return self._moved(action.model, action.from_version, self._guard(
                    action.model, action.cycle_id, lambda: self._rollback(action)))
            case RecordDecision():
                return self._record(action)
            case Notify():
                if self.notifier is not None and self.notifier.url:
                    self._side.submit(self.notifier.send, action.text)
                return None
            case ReloadServing():
                if self.reloader is not None and self.reloader.url:
                    self._side.submit(self.reloader.reload)
                return None
        return None

    def _moved(self, model: str, old: int | None, done: Event) -> Event:
        """Note where the controller itself put @champion and @previous (a record given up
        later must not make its own move look foreign: controller/foreign.py)."""
        if isinstance(done, PromotionDone) and done.new_champion is not None \
                and done.outcome in ("promoted", "rolled_back", "failed"):
            self.foreign.ours(model, {ALIAS_CHAMPION: done.new_champion, ALIAS_PREVIOUS: old})
        return done

    def _guard(self, model: str, cycle_id: str, fn: Callable[[], Event]) -> Event:
        try:
            return fn()
        except RetryableError:
            raise
        except Exception as exc:  # permanent: the step fails with its reason recorded
            log.exception("%s failed permanently", cycle_id)
            # the record names the champion as it is, also when the move was half done
            try:
                current = self.registry.aliases(model).get(ALIAS_CHAMPION)
            except Exception:
                log.warning("%s: champion unknown after the failure", cycle_id, exc_info=True)
                current = None
            return PromotionDone(cycle_id, "failed", current, (f"failed: {exc}",))

    def _window(self, a: LaunchTraining, spec: DatasetSpec, now: datetime) -> Window:
        """The cycle's training window (controller/recent.py): the change the alarms on the
        champion locate, for a drift- or degraded-triggered cycle under ``retrain.window auto``."""
        change = None
        if set(a.sources) & CHANGE_SOURCES and self.settings.controller_recent_days > 0:
            champion = self.registry.aliases(a.model).get(ALIAS_CHAMPION)
            lookback = timedelta(days=max(self.settings.controller_recent_days, 1.0))
            change = change_start(self.store.triggers_of(a.model, limit=10_000), champion=champion,
                                  before=now, lookback=lookback)
        return choose_window(spec, a.sources, now=now, change=change,
                             controller_days=self.settings.controller_retrain_window_days)

    def _launch(self, a: LaunchTraining) -> Event | None:
        managed = self.models[a.model]
        spec = managed.spec
        s = self.settings
        # Windows end at the cycle start, so a relaunch after a crash cuts the same holdout
        # (a change window ends when its labels suffice: the relaunch is caught by _trained).
        now = a.started_at or self.clock()
        window = self._window(a, spec, now)
        since = window.since
        champion = None if spec.history else self.registry.get_alias(a.model, ALIAS_CHAMPION)
        history = history_of(spec, champion)  # no history: the champion's recorded sources
        if history.since is not None and (since is None or history.since > since):
            since = history.since
        # the holdout cut is taken inside the training window, so --until > --since
        dest = s.home_dir / "controller" / "data" / f"{a.cycle_id}.parquet"
        if window.kind == "change":  # waiting for labels: rows served since the change count too
            now = self.clock()
        data = write_retrain_rows(self.reader, spec, now=now, days=s.controller_recent_days,
                                  holdout_fraction=s.controller_holdout_fraction, since=since,
                                  labels_as_of=self.clock(), dest=dest)
        if window.kind == "change" and data.labelled < spec.retrain.min_rows:
            return self._wait_for_labels(a, spec, window, data.labelled)
        if data.note:
            log.warning("%s: %s", a.cycle_id, data.note)
        if self._trained(a.model, a.cycle_id) is not None:
            # an earlier attempt finished while we were down: never retrain twice, and keep
            # the holdout cut it trained before (a change window's "now" has moved on since)
            return TrainingLaunched(a.cycle_id, a.attempt,
                                    _launched_holdout(dest) or data.holdout_from)
        paths = list(history.paths)
        if data.path is not None:
            paths.append(data.path)
        if not paths:
            return TrainingFailed(a.cycle_id, "no training data: no history files "
                                  f"({history.note}) and the prediction log no recent "
                                  "labelled rows", False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_suffix(".window.json").write_text(json.dumps(window.tags()))
        if data.holdout_from is not None:
            dest.with_suffix(".holdout").write_text(data.holdout_from.isoformat())
        request = LaunchRequest(a.model, a.cycle_id, a.attempt, managed.spec_path, tuple(paths),
                                reason=", ".join(a.sources) or "manual", since=since,
                                until=data.holdout_from, recent_path=data.path)
        try:
            detail = self.launcher.launch(request)
        except RetryableError as exc:
            return TrainingFailed(a.cycle_id, f"launch failed: {exc}", True)
        except LaunchError as exc:
            return TrainingFailed(a.cycle_id, f"launch refused: {exc}", False)
        log.info("%s attempt %d: %s (history: %s; %d recent rows; %s)", a.cycle_id, a.attempt,
                 detail, history.note, data.rows, window.reason)
        self._crash("launched")
        return TrainingLaunched(a.cycle_id, a.attempt, data.holdout_from)

    def _wait_for_labels(self, a: LaunchTraining, spec: DatasetSpec, window: Window,
                         labelled: int) -> Event | None:
        """Too few labelled rows since the change: no event (the core asks again next tick)
        until ``retrain.max_wait_hours`` after the cycle start, then the cycle fails."""
        waited = self.clock() - (a.started_at or self.clock())
        why = (f"{labelled} labelled rows since the change at "
               f"{window.since.isoformat() if window.since else '?'} < retrain.min_rows "
               f"{spec.retrain.min_rows}")
        if waited >= timedelta(hours=spec.retrain.max_wait_hours):
            return TrainingFailed(a.cycle_id, f"{why} after waiting "
                                  f"{spec.retrain.max_wait_hours:g}h: not training on the old "
                                  "world", False)
        log.info("%s: waiting for labels: %s", a.cycle_id, why)
        return None

    def _trained(self, model: str, cycle_id: str) -> int | None:
        found = self.registry.find_versions(model, {TAG + "cycle_id": cycle_id})
        return min(v.version for v in found) if found else None

    def _succeeded(self, a: CheckTraining, version: int) -> Event:
        """The trained version becomes challenger, unless training tagged it useless (at
        chance level): then the cycle fails with that reason (permanent, no retry)."""
        tags = self.registry.get_version(a.model, version).tags
        if tags.get(TAG + "useless") == "true":
            return TrainingFailed(a.cycle_id, f"v{version} refused as challenger: "
                                  f"{tags.get(TAG + 'useless_reason', 'useless')}", False)
        chosen = self.settings.home_dir / "controller" / "data" / f"{a.cycle_id}.window.json"
        if TAG + "window" not in tags and chosen.is_file():  # the window the launch chose
            self.registry.set_tags(a.model, version, json.loads(chosen.read_text()))
        return TrainingSucceeded(a.cycle_id, version)

    def _check_training(self, a: CheckTraining) -> Event | None:
        version = self._trained(a.model, a.cycle_id)
        if version is not None:
            return self._succeeded(a, version)
        status = self.launcher.status(a.cycle_id, a.attempt)
        if status.status in ("running", "unknown"):
            return None
        version = self._trained(a.model, a.cycle_id)
        if version is not None:
            return self._succeeded(a, version)
        if status.status == "exited":
            code = status.returncode
            return TrainingFailed(a.cycle_id, f"driftloop train exited with {code} without a "
                                  f"version: {status.detail}", code != 2)
        return TrainingFailed(a.cycle_id, "the training process is gone without registering "
                              f"a version: {status.detail}", True)

    def _evaluate(self, a: Evaluate) -> Event | None:
        now = self.clock()
        if not self._due(self._last_eval, a.cycle_id, now,
                         self.settings.controller_evaluate_every_seconds):
            return None
        self._last_eval[a.cycle_id] = now
        spec = self.models[a.model].spec
        decision, champion = self.evaluator.evaluate(spec, a.challenger, shadow_since=a.shadow_since,
                                                     holdout_from=a.holdout_from, now=now,
                                                     evidence=a.evidence)
        self.metrics.gate_pairs.labels(model=a.model).set(decision.n)
        if decision.difference is not None and decision.ci_low is not None:
            self.metrics.gate_difference.labels(model=a.model).set(decision.difference)
            self.metrics.gate_ci_low.labels(model=a.model).set(decision.ci_low)
        log.info("%s gate: %s (%s)", a.cycle_id, decision.outcome, "; ".join(decision.reasons))
        return ShadowEvidence(a.cycle_id, decision, champion)

    def _gate_tags(self, gate: GateDecision | None) -> dict[str, str]:
        """The summary of the latest decision's numbers: every key always written (blank when
        the decision had none), so a later decision never leaves an earlier one's numbers."""
        if gate is None:
            return {TAG + k: "" for k in ("gate_evidence", "gate_n", "gate_metric",
                                          "gate_difference", "gate_ci_low", "gate_ci_high",
                                          "gate_margin")}
        return {TAG + "gate_evidence": gate.evidence, TAG + "gate_n": str(gate.n),
                TAG + "gate_metric": gate.metric,
                TAG + "gate_difference": _fmt(gate.difference),
                TAG + "gate_ci_low": _fmt(gate.ci_low), TAG + "gate_ci_high": _fmt(gate.ci_high),
                TAG + "gate_margin": _fmt(gate.margin)}

    def _cycle_gate(self, model: str, cycle_id: str) -> GateDecision | None:
        state, _ = self.load(model)
        return state.cycle.gate if state.cycle is not None and state.cycle.id == cycle_id else None

    def _promote(self, a: Promote) -> Event:
        reg, name = self.registry, a.model
        current = reg.aliases(name).get(ALIAS_CHAMPION)
        old = a.champion
        if current != a.challenger:
            if current != old:
                return PromotionDone(a.cycle_id, "rejected", current, (
                    f"champion moved from v{old} to v{current} during the cycle: not promoted",))
            reg.get_version(name, a.challenger)  # VersionNotFound: permanent
            try:
                reg.set_alias(name, ALIAS_CHAMPION, a.challenger, expected=old)
            except AliasConflict as exc:
                return PromotionDone(a.cycle_id, "rejected", exc.actual, (str(exc),))
        self._crash("promoting")
        if old is not None and old != a.challenger:
            reg.set_alias(name, ALIAS_PREVIOUS, old)
        if reg.aliases(name).get(ALIAS_CHALLENGER) == a.challenger:
            reg.delete_alias(name, ALIAS_CHALLENGER, expected=a.challenger)
        now = self.clock().isoformat()
        gate = self._cycle_gate(name, a.cycle_id) if a.kind == "gate" else None
        reg.set_tags(name, a.challenger, {
            TAG + "decision": "promoted" if a.kind == "gate" else "manually_promoted",
            TAG + "decision_cycle_id": a.cycle_id, TAG + "decided_at": now,
            TAG + "replaced_version": str(old), **self._gate_tags(gate)})
        if old is not None and old != a.challenger:
            reg.set_tags(name, old, {TAG + "replaced_by": str(a.challenger),
                                     TAG + "replaced_at": now,
                                     TAG + "replaced_in_cycle": a.cycle_id})
        return PromotionDone(a.cycle_id, "promoted", a.challenger)

    def _reject(self, a: Reject) -> Event:
        reg, name = self.registry, a.model
        now = self.clock().isoformat()
        if a.challenger is not None:
            if reg.aliases(name).get(ALIAS_CHALLENGER) == a.challenger:
                with contextlib.suppress(AliasConflict):
                    reg.delete_alias(name, ALIAS_CHALLENGER, expected=a.challenger)
            gate = self._cycle_gate(name, a.cycle_id)
            reg.set_tags(name, a.challenger, {
                TAG + "decision": a.outcome, TAG + "decision_cycle_id": a.cycle_id,
                TAG + "decided_at": now, TAG + "compared_with": str(a.champion),
                TAG + "decision_reason": "; ".join(a.reasons)[-500:], **self._gate_tags(gate)})
        if a.champion is not None:
            reg.set_tags(name, a.champion, {TAG + "last_challenge": f"v{a.challenger} {a.outcome}",
                                            TAG + "last_challenge_cycle_id": a.cycle_id})
        current = reg.aliases(name).get(ALIAS_CHAMPION)
        return PromotionDone(a.cycle_id, a.outcome, current)

    def _rollback(self, a: Rollback) -> Event:
        reg, name = self.registry, a.model
        if a.to_version is None:
            return PromotionDone(a.cycle_id, "failed", a.from_version,
                                 ("no @previous version to roll back to",))
        current = reg.aliases(name).get(ALIAS_CHAMPION)
        if current != a.to_version:
            if current != a.from_version:
                return PromotionDone(a.cycle_id, "failed", current, (
                    f"champion moved from v{a.from_version} to v{current}: not rolled back",))
            reg.set_alias(name, ALIAS_CHAMPION, a.to_version, expected=a.from_version)
        self._crash("promoting")
        if a.from_version is not None:
            reg.set_alias(name, ALIAS_PREVIOUS, a.from_version)
            reg.set_tags(name, a.from_version, {TAG + "decision": "rolled_back",
                                                TAG + "decision_cycle_id": a.cycle_id,
                                                TAG + "decided_at": self.clock().isoformat(),
                                                **self._gate_tags(None)})
        reg.set_tags(name, a.to_version, {TAG + "restored_in": a.cycle_id})
        return PromotionDone(a.cycle_id, "rolled_back", a.to_version)

    def _realised(self, a: RecordDecision) -> dict[str, float | None]:
        """For a rollback or an override, the realised numbers known when it was decided:
        the champion's last realised metric and (within probation) the old champion's."""
        if a.kind == "gate":
            return {}
        state, _ = self.load(a.model)
        p = state.probation
        now = state.last_realised[1] if state.last_realised is not None \
            and state.last_realised[0] == a.champion else None
        baseline = p.baseline if p is not None and p.version == a.champion \
            and p.previous == a.challenger else None
        sign = -1.0 if self.models[a.model].spec.lower_is_better else 1.0
        return {"champion_metric": now, "challenger_metric": baseline,
                "difference": None if now is None or baseline is None else sign * (baseline - now),
                "margin": self.policy(a.model).rollback_margin if a.kind == "rollback" else None}

    def _train_rows(self, model: str, version: int | None) -> dict[str, float]:
        """The challenger's training rows per source, from its version tags (what an auditor
        reads in the decision: how many recent rows it learned from); none known: empty."""
        if version is None:
            return {}
        try:
            tags = self.registry.get_version(model, version).tags
        except VersionNotFound:
            return {}
        out = {}
        for source in ("history", "recent"):
            value = tags.get(f"{TAG}train_rows_{source}", "")
            if value.isdigit():
                out[f"challenger_train_rows_{source}"] = float(value)
        served = tags.get(f"{TAG}served_rows", "")
        if served.isdigit():
            out["challenger_served_rows"] = float(served)
        return out

    def _window_reason(self, model: str, version: int | None) -> tuple[str, ...]:
        """The challenger's training window and why (its version tags), for the decision."""
        if version is None:
            return ()
        try:
            tags = self.registry.get_version(model, version).tags
        except VersionNotFound:
            return ()
        why = tags.get(f"{TAG}window_reason")
        refit = "refit on every row of the window" if tags.get(f"{TAG}refit") == "true" else \
            "served as validated (no refit)"
        return (f"challenger v{version} training window: {why}; {refit}",) if why else ()

    def _record(self, a: RecordDecision) -> Event:
        spec = self.models[a.model].spec
        g = a.gate
        realised = self._realised(a)
        extra = {k: v for k, v in (("realised_metric", realised.get("champion_metric")),
                                   ("realised_baseline", realised.get("challenger_metric")))
                 if v is not None}
        reasons = a.reasons
        if a.kind == "gate":
            extra.update(self._train_rows(a.model, a.challenger))
            reasons = (*reasons, *self._window_reason(a.model, a.challenger))
        run_ids = [m.group(1) for t in a.triggers
                   if (m := re.search(r"\brun[ =]([0-9a-f]{32})\b", t))]
        record = DecisionRecord(
            model=a.model, kind=a.kind, outcome=a.outcome, cycle_id=a.cycle_id,
            decided_at=self.clock(), champion_version=a.champion, challenger_version=a.challenger,
            new_champion_version=a.new_champion, triggers=a.triggers, reasons=reasons,
            evidence=g.evidence if g is not None else "none", metric=spec.metric,
            n=g.n if g is not None else None,
            champion_metric=g.champion_metric if g else None,
            challenger_metric=g.challenger_metric if g else None,
            difference=g.difference if g else None, ci_low=g.ci_low if g else None,
            ci_high=g.ci_high if g else None, margin=g.margin if g else None, actor=a.actor,
            extra=extra, trigger_run_id=run_ids[0] if run_ids else None)
        if g is None and realised:
            record = replace(record, evidence="realised" if extra else "none",
                             champion_metric=realised["champion_metric"],
                             challenger_metric=realised["challenger_metric"],
                             difference=realised["difference"], margin=realised["margin"])
        saved = self.registry.record_decision(record)
        try:
            record_on_versions(self.registry, saved)
        except RetryableError:
            raise
        except Exception:  # the decision run holds it: the versions' copies are not worth a
            log.exception("%s: decision tags on the versions not written", a.cycle_id)  # fail
        if self.store.save_decision(cycle_id=a.cycle_id, kind=a.kind, model=a.model,
                                    outcome=a.outcome, record=saved.to_json(), now=self.clock()):
            self.metrics.cycles.labels(model=a.model, outcome=a.outcome).inc()
        self.metrics.last_decision.labels(model=a.model).set(saved.decided_at.timestamp())
        self._crash("recorded")
        return DecisionRecorded(a.cycle_id)

    # -- status ------------------------------------------------------------------------------

    def loop_status(self) -> dict[str, object]:
        """Where the reconcile loop is: passes started, the last completed one (``Pass``)."""
        last = self.last_pass
        return {"passes_started": self.passes_started,
                "last_pass": None if last is None else {"seq": last.seq, "at": last.at,
                                                        "quiet": last.quiet}}

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        loop = self.loop_status()
        for model in self.models:
            state, _ = self.load(model)
            try:
                aliases: dict[str, int] | str = self.registry.aliases(model)
            except RetryableError as exc:
                aliases = f"registry unavailable: {exc}"
            cycle = state.cycle
            out[model] = {
                "state": state.phase, "since": state.since, "until": state.until,
                "aliases": aliases,
                "cycle": None if cycle is None else {
                    "id": cycle.id, "started_at": cycle.started_at, "reasons": cycle.reasons,
                    "attempt": cycle.attempt, "launched_at": cycle.launched_at,
                    "challenger": cycle.challenger,
                    "champion": cycle.champion, "plan": cycle.plan,
                    "gate": None if cycle.gate is None else {
                        "outcome": cycle.gate.outcome, "n": cycle.gate.n,
                        "reasons": cycle.gate.reasons, "evidence": cycle.gate.evidence},
                    "result": None if cycle.result is None else cycle.result.outcome},
                "deferred": state.deferred,
                "probation": None if state.probation is None else {
                    "version": state.probation.version, "until": state.probation.until},
                "override": None if state.override is None else {
                    "id": state.override.id, "kind": state.override.kind},
                "last_decisions": self.store.decisions_of(model, limit=5),
                "loop": loop,
            }
        return out

