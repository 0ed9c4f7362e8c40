"""The controller through registry faults at every step of every action.

A whole cycle of one model (trigger -> train -> challenger -> gate -> promote or reject ->
record -> cooldown; or a manual rollback or promotion) runs through
``Controller.reconcile_once`` with fakes while its Nth registry call fails once, for every N
the cycle makes, before the call lands and after it (the answer lost). A second model's
cycle runs in the same passes, untouched by the faults.

The documented end states:

- **retryable** (``RegistryUnavailable``): the cycle completes on later passes as if nothing
  happened: exactly one decision (registry and store), one trained version, and the aliases
  the outcome implies (promotion: @champion new, @previous old, no @challenger).
- **permanent** (``RegistryError``): the model's cycle ends failed with the error as its
  reason (in the decision record, or in the notification when the record itself cannot be
  written), at most one decision, @champion where the record says it is (a move half done
  is recorded as it stands); the other model's cycle completes. An override whose trigger
  cannot be taken (its alias read fails) starts nothing. A permanent error after the
  decision run is written (the versions' copies of it) is logged and the outcome stands.

Either way, at most ``K`` passes after the fault the model is in a terminal state (no pass
fails forever), and a later pass changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from controller.machine import ACTIVE, GateDecision, ModelState
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from registry import NewVersion
from registry.memory import InMemoryRegistry
from registry.port import RegistryError, RegistryUnavailable
from tests.unit.faults import FaultyRegistry
from tests.unit.test_controller_reconcile import Clock, LogReader, TaggingLauncher

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
K = 5                   # passes after the fault within which the model reaches its end state
FAULTY, CLEAN = "alpha", "beta"
PERMANENT = "INVALID_PARAMETER_VALUE: a permanent refusal (injected)"

#: the champion before each scenario's cycle
BEFORE = {"promote": 1, "reject": 1, "rollback": 2, "manual_promote": 1}
#: scenario -> (trigger action, gate outcome, expected decision kind and outcome, aliases)
SCENARIOS = {
    "promote": ("retrain", "promote", "gate", "promoted", {"champion": 2, "previous": 1}),
    "reject": ("retrain", "reject", "gate", "rejected", {"champion": 1}),
    "rollback": ("rollback", None, "manual_rollback", "rolled_back",
                 {"champion": 1, "previous": 2}),
    "manual_promote": ("promote", None, "manual_promote", "promoted",
                       {"champion": 2, "previous": 1}),
}


class GateEvaluator:
    def __init__(self, outcome: str) -> None:
        self.outcome = outcome

    def evaluate(self, spec: DatasetSpec, challenger: int, *, shadow_since: datetime,
                 holdout_from: datetime | None, now: datetime,
                 evidence: str | None = None) -> tuple[GateDecision, int | None]:
        return GateDecision(self.outcome, (f"{self.outcome} on n=400",), spec.metric,  # type: ignore[arg-type]
                            400, evidence="shadow", champion_metric=0.70,
                            challenger_metric=0.74, difference=0.04, ci_low=0.01,
                            ci_high=0.07, margin=0.01), 1


@dataclass
class Notes:
    url: str = "fake://notify"
    texts: list[str] = field(default_factory=list)

    def send(self, text: str) -> bool:
        self.texts.append(text)
        return True


@dataclass
class World:
    controller: Controller
    inner: InMemoryRegistry
    faulty: FaultyRegistry
    store: Store
    clock: Clock
    notes: Notes

    def state(self, model: str) -> ModelState:
        return self.controller.load(model)[0]

    def done(self, model: str) -> bool:
        s = self.state(model)
        return s.override is None and s.phase not in ACTIVE \
            and not self.store.pending_triggers(model)

    def passes(self, n: int) -> None:
        for _ in range(n):
            self.controller.reconcile_once()
            self.clock.now += timedelta(minutes=1)

    def close(self) -> None:
        self.controller._side.shutdown(wait=True)   # the notifications sent, before reading
        self.store.close()


def _version(registry: InMemoryRegistry, name: str) -> int:
    empty = pd.DataFrame()
    return registry.register(NewVersion(name, None, "", empty, empty, empty, {}, {}, {})).version


def make_world(tmp_path: Path, spec: DatasetSpec, scenario: str, *, fail_at: int | None = None,
               error: Callable[[], Exception] | None = None, after: bool = False,
               always: str | None = None) -> World:
    action, gate, *_ = SCENARIOS[scenario]
    inner = InMemoryRegistry()
    faulty = FaultyRegistry(inner, model=FAULTY, fail_at=fail_at, error=error, after=after,
                            always=always)
    clock = Clock(NOW)
    store = Store("sqlite://")
    models = {}
    for name in (FAULTY, CLEAN):
        first = _version(inner, name)
        inner.set_alias(name, "champion", first)
        if action != "retrain":
            second = _version(inner, name)
            if action == "rollback":
                inner.set_alias(name, "champion", second)
                inner.set_alias(name, "previous", first)
        models[name] = Managed(spec.model_copy(update={"model_name": name, "history": [],
                                                        "source": None}),
                               tmp_path / f"{name}.yaml")
        store.add_trigger(model=name, source="manual", action=action, reason="go", now=NOW,
                          actor="tester", version=2 if action == "promote" else None)
    settings = ControllerSettings(home=tmp_path / "home", controller_recent_days=14,
                                  controller_evaluate_every_seconds=0,
                                  controller_labels_check_seconds=10**9)
    notes = Notes()
    controller = Controller(
        settings, store=store, registry=faulty,
        launcher=TaggingLauncher(faulty),  # type: ignore[arg-type]
        reader=LogReader(spec, start=NOW - timedelta(days=3), until=NOW,
                         step=timedelta(minutes=10)),
        evaluator=GateEvaluator(gate or "wait"),  # type: ignore[arg-type]
        models=models, metrics=ControllerMetrics.create(), notifier=notes,  # type: ignore[arg-type]
        clock=clock)
    return World(controller, inner, faulty, store, clock, notes)


def _run(world: World) -> int:
    """Passes until the faulty model is done (and K more must not be needed after the fault)."""
    for n in range(1, 40):
        world.passes(1)
        if world.done(FAULTY) and world.done(CLEAN) and world.faulty.fired is not None:
            return n
        if world.faulty.fired is None and world.done(FAULTY) and world.faulty.fail_at is not None:
            return n                # the cycle made fewer calls than fail_at: nothing to test
    return 40


def _calls(tmp_path: Path, spec: DatasetSpec, scenario: str) -> list[str]:
    world = make_world(tmp_path / "count", spec, scenario)
    try:
        world.passes(8)
        assert world.done(FAULTY), world.state(FAULTY)
        return list(world.faulty.calls)
    finally:
        world.close()


def _check_clean(world: World, scenario: str) -> list[str]:
    """The untouched model's cycle completed as the scenario says."""
    _, _, kind, outcome, aliases = SCENARIOS[scenario]
    found = [(d.kind, d.outcome) for d in world.inner.list_decisions(CLEAN)]
    problems = []
    if found != [(kind, outcome)]:
        problems.append(f"{CLEAN}: decisions {found}")
    if world.inner.aliases(CLEAN) != aliases:
        problems.append(f"{CLEAN}: aliases {world.inner.aliases(CLEAN)}")
    return problems


def _check_retryable(world: World, scenario: str) -> list[str]:
    _, _, kind, outcome, aliases = SCENARIOS[scenario]
    state = world.state(FAULTY)
    problems = []
    decisions = [(d.kind, d.outcome) for d in world.inner.list_decisions(FAULTY)]
    if decisions != [(kind, outcome)]:
        problems.append(f"decisions {decisions}")
    stored = [(d["kind"], d["outcome"]) for d in world.store.decisions_of(FAULTY)]
    if stored != [(kind, outcome)]:
        problems.append(f"store decisions {stored}")
    if world.inner.aliases(FAULTY) != aliases:
        problems.append(f"aliases {world.inner.aliases(FAULTY)} (want {aliases})")
    versions = len(world.inner.find_versions(FAULTY, {}))
    if versions != 2:
        problems.append(f"{versions} versions")
    wanted = outcome if kind == "gate" else f"{kind}:{outcome}"
    if state.last_outcome != wanted:
        problems.append(f"last outcome {state.last_outcome} (phase {state.phase})")
    return problems


def _check_permanent(world: World, scenario: str) -> list[str]:
    _, _, kind, _, _ = SCENARIOS[scenario]
    state = world.state(FAULTY)
    problems = []
    wanted = "failed" if kind == "gate" else f"{kind}:failed"
    decisions = world.inner.list_decisions(FAULTY)
    champion = world.inner.aliases(FAULTY).get("champion")
    if state.last_outcome is None and state.seq == 0:
        # the trigger itself could not be taken (an override reads the aliases first): it is
        # marked failed and nothing starts
        if decisions or champion != BEFORE[scenario]:
            problems.append(f"no cycle, yet {len(decisions)} decisions, champion v{champion}")
        return problems
    if state.last_outcome != wanted:
        problems.append(f"last outcome {state.last_outcome} (phase {state.phase})")
    if len(decisions) > 1:
        problems.append(f"{len(decisions)} decisions")
    said = [r for d in decisions for r in d.reasons] + world.notes.texts
    if not any("permanent refusal" in r for r in said):
        problems.append(f"the reason is nowhere: {said}")
    if decisions and champion != BEFORE[scenario] \
            and decisions[0].new_champion_version != champion:
        problems.append(f"the record says champion v{decisions[0].new_champion_version}, "
                        f"the registry v{champion}")
    if len(world.inner.find_versions(FAULTY, {})) > 2:
        problems.append("trained twice")
    return problems


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("kind", ["retryable", "permanent"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_registry_fault_at_every_call_of_a_cycle(tmp_path: Path, churn_spec: DatasetSpec,
                                                   scenario: str, kind: str,
                                                   after: bool) -> None:
    calls = _calls(tmp_path, churn_spec, scenario)
    error: Callable[[], Exception] = (
        (lambda: RegistryUnavailable("connection refused (injected)")) if kind == "retryable"
        else (lambda: RegistryError(PERMANENT)))
    failures: list[str] = []
    for n in range(1, len(calls) + 1):
        world = make_world(tmp_path / f"n{n}", churn_spec, scenario, fail_at=n, error=error,
                           after=after)
        try:
            took = _run(world)
            fired = world.faulty.fired
            if fired is None:
                failures.append(f"N={n}: the fault never fired ({world.faulty.calls})")
                continue
            at = len(world.faulty.calls)
            problems = []
            if not world.done(FAULTY):
                problems.append(f"not done after {took} passes: {world.state(FAULTY).phase}")
            before = world.state(FAULTY), world.inner.aliases(FAULTY), \
                len(world.inner.list_decisions(FAULTY))
            world.passes(2)              # a settled model stays settled
            after_ = world.state(FAULTY), world.inner.aliases(FAULTY), \
                len(world.inner.list_decisions(FAULTY))
            if before != after_:
                problems.append("changed after it was done")
            # a permanent error after the decision run is written (in the versions' copies
            # of it) is logged: the recorded outcome stands, as after a retryable one
            landed = n > calls.index("record_decision") + 1
            check = _check_retryable if kind == "retryable" or landed else _check_permanent
            problems += check(world, scenario)
            problems += _check_clean(world, scenario)
            if took > K + 3:
                problems.append(f"{took} passes")
            if problems:
                failures.append(f"N={n} {fired} (calls {at}): " + "; ".join(problems))
        finally:
            world.close()
    assert not failures, f"{scenario} {kind} ({len(calls)} calls: {calls}):\n" + "\n".join(failures)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_record_that_always_fails_gives_up_and_says_so(tmp_path: Path, churn_spec: DatasetSpec,
                                                         scenario: str) -> None:
    """A registry that refuses every decision run: the cycle or override is given up after
    its move (failed, notified with the reason) instead of failing on every pass."""
    world = make_world(tmp_path, churn_spec, scenario, error=lambda: RegistryError(PERMANENT),
                       always="record_decision")
    try:
        world.passes(K)
        state = world.state(FAULTY)
        assert world.done(FAULTY), state
        kind = SCENARIOS[scenario][2]
        assert state.last_outcome == ("failed" if kind == "gate" else f"{kind}:failed")
        assert world.inner.list_decisions(FAULTY) == []
        tries = world.faulty.calls.count("record_decision")
        world.passes(3)
        assert world.faulty.calls.count("record_decision") == tries == 1
        assert world.inner.aliases(FAULTY) == SCENARIOS[scenario][4]  # the move stands
        assert _check_clean(world, scenario) == []
    finally:
        world.close()
    assert any("not recorded" in t and "permanent refusal" in t and t.startswith(FAULTY)
               for t in world.notes.texts), world.notes.texts
