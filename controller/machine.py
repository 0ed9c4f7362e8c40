"""The controller's vocabulary (pure): per-model state, events in, actions out.

``controller.core.decide`` maps (state, event, now) to (state, actions) over these frozen
dataclasses; ``controller.codec`` persists the state as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

Phase = Literal["idle", "training", "shadow", "deciding", "cooldown", "failed"]
PHASES: tuple[Phase, ...] = ("idle", "training", "shadow", "deciding", "cooldown", "failed")
ACTIVE: frozenset[str] = frozenset({"training", "shadow", "deciding"})
Outcome = Literal["promote", "reject", "wait", "no_change"]  # no_change: same data or scores
MAX_REASONS = 50                         # reasons kept per cycle; more are only counted
SOURCES = ("alertmanager", "verdict", "manual", "schedule", "labels", "performance", "slo",
           "holdout")
EVIDENCE = ("shadow", "offline_replay")  # the gate's evidence sources


@dataclass(frozen=True)
class GateDecision:
    outcome: Outcome
    reasons: tuple[str, ...]
    metric: str
    n: int
    evidence: str = "none"           # shadow | offline_replay | none
    champion_metric: float | None = None
    challenger_metric: float | None = None
    difference: float | None = None  # sign-adjusted: positive = challenger better
    ci_low: float | None = None
    ci_high: float | None = None
    margin: float | None = None
    min_pairs: int | None = None
    broken: bool = False
    extra: dict[str, float] = field(default_factory=dict, compare=False)

    def with_reason(self, reason: str, *, outcome: Outcome | None = None) -> GateDecision:
        return replace(self, reasons=(*self.reasons, reason), outcome=outcome or self.outcome)


def broken(metric: str, reason: str, *, evidence: str = "none", n: int = 0) -> GateDecision:
    """A challenger that failed to load, broke the input schema or returned bad scores."""
    return GateDecision("reject", (f"challenger is broken: {reason}",), metric, n,
                        evidence=evidence, broken=True)


@dataclass(frozen=True)
class Policy:
    cooldown: timedelta = timedelta(hours=6)
    failed_backoff: timedelta = timedelta(minutes=30)
    training_timeout: timedelta = timedelta(hours=1)
    training_attempts: int = 3
    evaluation_timeout: timedelta = timedelta(hours=72)  # > a typical label delay (a day)
    probation: timedelta = timedelta(hours=24)
    rollback_margin: float = 0.02           # realised metric clearly below the old champion's
    performance_threshold: float | None = None  # realised metric below this triggers a retrain
    lower_is_better: bool = False
    require_superiority: Literal["never", "scheduled", "always"] = "never"  # gate: CI low > 0


# -- state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    outcome: str                         # promoted | rejected | no_change | rolled_back | failed
    new_champion: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cycle:
    id: str
    started_at: datetime
    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    manual: bool = False
    attempt: int = 0
    launched_at: datetime | None = None
    holdout_from: datetime | None = None  # recent rows from here on were kept out of training
    challenger: int | None = None
    shadow_since: datetime | None = None
    champion: int | None = None           # the champion the gate compared against
    evidence: str | None = None           # shadow | offline_replay: chosen at the first look, kept
    gate: GateDecision | None = None
    plan: Literal["promote", "reject", "no_change", "fail"] | None = None
    plan_reasons: tuple[str, ...] = ()
    result: Result | None = None
    merged: int = 0                      # triggers merged in (reasons keep the first MAX_REASONS)


@dataclass(frozen=True)
class Override:
    """A rollback or a manual promotion, durable until carried out and recorded."""

    id: str
    kind: Literal["rollback", "manual_rollback", "manual_promote"]
    requested_at: datetime
    reason: str
    actor: str
    from_version: int | None             # the champion when requested
    to_version: int | None               # the version champion should point at
    result: Result | None = None


@dataclass(frozen=True)
class Probation:
    cycle_id: str
    version: int                         # the promoted champion
    previous: int | None
    until: datetime
    baseline: float | None = None        # the old champion's last realised metric


@dataclass(frozen=True)
class ModelState:
    model: str
    phase: Phase = "idle"
    since: datetime | None = None        # when the phase was entered
    until: datetime | None = None        # end of cooldown / failed backoff
    seq: int = 0
    cycle: Cycle | None = None
    deferred: tuple[str, ...] = ()       # automatic triggers held back by the cooldown
    deferred_sources: tuple[str, ...] = ()
    deferred_count: int = 0
    last_trained_at: datetime | None = None
    last_cycle_id: str | None = None
    last_outcome: str | None = None
    probation: Probation | None = None
    override: Override | None = None
    last_realised: tuple[int, float] | None = None   # (version, realised metric) from a verdict
    chain_drawdown: float = 0.0          # <= 0: lower bound, champion vs the best of its chain
    chain_anchor: int | None = None      # the version whose promotion started the chain


# -- events ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Trigger:
    source: str
    reason: str
    manual: bool = False


@dataclass(frozen=True)
class RollbackRequested:
    reason: str
    source: str                          # manual | alertmanager | performance
    champion: int | None                 # resolved by the shell when the request is taken
    previous: int | None
    actor: str = "controller"
    manual: bool = False


@dataclass(frozen=True)
class PromoteRequested:
    version: int
    reason: str
    champion: int | None
    actor: str = "human"


@dataclass(frozen=True)
class PerformanceObserved:
    """The live version's realised metric from a verdict (what probation and rollback use)."""

    version: int
    value: float | None
    degraded: bool = False
    reason: str = ""


@dataclass(frozen=True)
class TrainingLaunched:
    cycle_id: str
    attempt: int
    holdout_from: datetime | None = None


@dataclass(frozen=True)
class TrainingSucceeded:
    cycle_id: str
    version: int


@dataclass(frozen=True)
class TrainingFailed:
    cycle_id: str
    reason: str
    retryable: bool = True


@dataclass(frozen=True)
class TrainingTimedOut:
    cycle_id: str


@dataclass(frozen=True)
class ShadowEvidence:
    cycle_id: str
    gate: GateDecision
    champion: int | None


@dataclass(frozen=True)
class PromotionDone:
    """The registry part of a promote / reject / rollback / manual promote is done."""

    cycle_id: str
    outcome: str
    new_champion: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionRecorded:
    cycle_id: str


@dataclass(frozen=True)
class StepFailed:
    """A permanent error in one model's step (not retryable, not caught by an action's own
    guard): the model's cycle ends failed with the reason; other models go on. ``cycle_id``
    names the cycle or override whose action failed (None: the step itself, outside an
    action: the current cycle, else the pending override)."""

    reason: str
    cycle_id: str | None = None


Event = (Tick | Trigger | RollbackRequested | PromoteRequested | PerformanceObserved | TrainingLaunched
         | TrainingSucceeded | TrainingFailed | TrainingTimedOut | ShadowEvidence | PromotionDone
         | DecisionRecorded | StepFailed)


# -- actions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchTraining:
    model: str
    cycle_id: str
    attempt: int
    reasons: tuple[str, ...]
    sources: tuple[str, ...]
    started_at: datetime | None = None   # data windows end here: a relaunch sees the same rows


@dataclass(frozen=True)
class CheckTraining:
    model: str
    cycle_id: str
    attempt: int


@dataclass(frozen=True)
class SetChallenger:
    model: str
    cycle_id: str
    version: int


@dataclass(frozen=True)
class Evaluate:
    model: str
    cycle_id: str
    challenger: int
    shadow_since: datetime
    holdout_from: datetime | None
    evidence: str | None = None          # the cycle's evidence source once chosen (never switched)


@dataclass(frozen=True)
class Promote:
    model: str
    cycle_id: str
    challenger: int
    champion: int | None                 # compare-and-set expectation
    kind: str = "gate"                   # gate | manual_promote


@dataclass(frozen=True)
class Reject:
    model: str
    cycle_id: str
    challenger: int | None
    champion: int | None
    reasons: tuple[str, ...]
    outcome: str = "rejected"            # rejected | no_change: the alias stays either way


@dataclass(frozen=True)
class Rollback:
    model: str
    cycle_id: str
    from_version: int | None
    to_version: int | None
    kind: str                            # rollback | manual_rollback


@dataclass(frozen=True)
class RecordDecision:
    model: str
    cycle_id: str
    kind: str                            # gate | rollback | manual_promote | manual_rollback
    outcome: str
    champion: int | None
    challenger: int | None
    new_champion: int | None
    triggers: tuple[str, ...]
    reasons: tuple[str, ...]
    gate: GateDecision | None = None
    actor: str = "controller"


@dataclass(frozen=True)
class Notify:
    model: str
    text: str


@dataclass(frozen=True)
class ReloadServing:
    model: str


Action = (LaunchTraining | CheckTraining | SetChallenger | Evaluate | Promote | Reject | Rollback
          | RecordDecision | Notify | ReloadServing)

#: Actions that are re-emitted until done; the others are fire-and-forget side effects.
DURABLE = (LaunchTraining, CheckTraining, SetChallenger, Evaluate, Promote, Reject, Rollback,
           RecordDecision)
