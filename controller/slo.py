"""Model-performance SLOs with an error budget (docs/slo.md; the spec's ``slo:`` list).

Each SLO says: the champion's metric on the rolling ``window_days`` labelled window of the
prediction log must meet ``objective`` (at least; at most for log_loss and brier) for a
``budget`` share of the time over ``period_days``. Every ``controller_slo_check_seconds`` (on
the controller's clock) the reconcile pass evaluates each SLO of each model:

- ``judge``: a window of the log -> an ``Evaluation``: *good* (objective met), *bad*, or
  *unknown* (fewer labelled rows than ``drift.min_labelled_rows`` and no estimate). With
  ``estimated: true`` a window without enough labels is judged on the label-free CBPE
  estimate (monitoring/check.py ``estimated_performance``), and the evaluation says so
  (``source: estimated``); realised performance always wins when labels suffice.
- ``budget_of``: the stored evaluations -> a ``Budget``: each evaluation counts from its
  time until the next one (at most ``hold``: a controller that was down counts nothing);
  bad time over the period, the budget consumed (bad time / ((1 - budget) x period)) and
  what remains. Unknown time is neither good nor bad.
- ``SloMonitor``: the shell: reads the window, stores the evaluation (the history survives a
  restart), exports the metrics (controller/metrics.py) and, when the budget is exhausted,
  does what ``on_exhausted`` says: ``retrain`` (a trigger of source ``slo``), ``ticket``
  (recorded, never acted on) or ``none``; once per period per SLO, across restarts.

The burn rates and their alerts are Prometheus' (monitoring/prometheus/rules/slo.yml), from
``driftloop_slo_objective_met`` and ``driftloop_slo_budget``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from controller.metrics import ControllerMetrics
from controller.store import SloEvaluationRow, Store
from kernel.errors import RetryableError
from kernel.spec import LOWER_IS_BETTER, DatasetSpec, SloSettings
from monitoring.check import Reference, estimated_performance, realised_metric
from monitoring.predlog import WindowReader
from registry import ALIAS_CHAMPION, ModelRegistry

log = logging.getLogger(__name__)

SOURCE = "slo"   # the source of the triggers an exhausted budget adds
Status = Literal["good", "bad", "unknown"]
ReferenceOf = Callable[[str, int], Reference | None]


@dataclass(frozen=True)
class Evaluation:
    """One look at an SLO: the metric on its window and whether it met the objective."""

    status: Status
    source: Literal["realised", "estimated"] | None
    value: float | None
    objective: float
    rows: int          # labelled rows (realised), scored rows (estimated), labelled (unknown)
    note: str


def objective_met(value: float, objective: float, *, lower_is_better: bool) -> bool:
    return value <= objective if lower_is_better else value >= objective


def slo_metric(slo: SloSettings, spec: DatasetSpec) -> str:
    return slo.metric or spec.metric


def judge(slo: SloSettings, spec: DatasetSpec, window: pd.DataFrame, *,
          reference: Callable[[], Reference | None] | None = None) -> Evaluation:
    """The SLO on the champion's rows of its window (``window``: the log's columns, labels
    joined). ``reference`` gives the champion's ``Reference`` (its classes, its calibration),
    asked only when needed: a multi-class spec without listed classes, or an estimate."""
    metric = slo_metric(slo, spec)
    lower = metric in LOWER_IS_BETTER
    scored = "score" in window.columns
    labelled = (window[window["label"].notna() & window["score"].notna()]
                if scored and "label" in window.columns else window.iloc[0:0])
    need = spec.drift.min_labelled_rows
    why = f"{len(labelled)} labelled rows < drift.min_labelled_rows {need}"
    if len(labelled) >= need:
        classes = spec.listed_classes
        if spec.is_multiclass and classes is None and reference is not None:
            ref = reference()
            classes = list(ref.classes) if ref is not None and ref.classes else None
        value = realised_metric(spec, metric, labelled, classes)
        if value is not None:
            met = objective_met(value, slo.objective, lower_is_better=lower)
            return Evaluation("good" if met else "bad", "realised", value, slo.objective,
                              len(labelled), f"realised {metric} {value:.4f} on "
                              f"{len(labelled)} labelled rows "
                              f"{'meets' if met else 'misses'} the objective {slo.objective:g}")
        why = f"realised {metric} undefined on {len(labelled)} labelled rows"
    if not slo.estimated:
        return Evaluation("unknown", None, None, slo.objective, len(labelled), why)
    ref = reference() if reference is not None and not spec.is_multiclass else None
    if ref is None:
        return Evaluation("unknown", None, None, slo.objective, len(labelled),
                          f"{why}; no label-free estimate ("
                          f"{'multi-class model' if spec.is_multiclass else 'no reference'})")
    est = estimated_performance(ref, window)
    value = None if est is None or est.value is None else est.metrics.get(metric)
    if est is None or value is None or not np.isfinite(value):
        note = "no score column" if est is None else (est.note or f"CBPE does not estimate "
                                                       f"{metric} (only {sorted(est.metrics)})")
        return Evaluation("unknown", None, None, slo.objective, len(labelled),
                          f"{why}; no label-free estimate ({note})")
    met = objective_met(value, slo.objective, lower_is_better=lower)
    return Evaluation("good" if met else "bad", "estimated", float(value), slo.objective,
                      est.rows, f"estimated {metric} {value:.4f} without labels on {est.rows} "
                      f"scores (CBPE; {why}) {'meets' if met else 'misses'} the objective "
                      f"{slo.objective:g}")


@dataclass(frozen=True)
class Budget:
    """The error budget over one period, from the evaluations' good and bad time."""

    good_seconds: float
    bad_seconds: float
    budget: float
    period_seconds: float

    @property
    def bad_share(self) -> float | None:
        """Bad time over judged (good or bad) time; None when nothing was judged."""
        judged = self.good_seconds + self.bad_seconds
        return self.bad_seconds / judged if judged > 0 else None

    @property
    def allowed_seconds(self) -> float:
        """The error budget in seconds (to the microsecond: 1 - 0.995 is not 0.005 in floats,
        and 3.6 h of bad time must spend a 99.5% monthly budget exactly)."""
        return round((1.0 - self.budget) * self.period_seconds, 6)

    @property
    def consumed(self) -> float:
        return self.bad_seconds / self.allowed_seconds

    @property
    def remaining(self) -> float:
        """1 - consumed: 1 untouched, 0 or below exhausted (below: overspent)."""
        return 1.0 - self.consumed

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


def budget_of(evaluations: Sequence[tuple[datetime, str]], *, now: datetime,
              period: timedelta, budget: float, hold: timedelta) -> Budget:
    """Good and bad time over ``[now - period, now]`` from (time, status) pairs in time
    order: each counts until the next evaluation, ``now``, or ``hold`` after it."""
    start = now - period
    good = bad = 0.0
    for i, (at, status) in enumerate(evaluations):
        end = min(evaluations[i + 1][0] if i + 1 < len(evaluations) else now, at + hold, now)
        seconds = (end - max(at, start)).total_seconds()
        if seconds <= 0:
            continue
        if status == "good":
            good += seconds
        elif status == "bad":
            bad += seconds
    return Budget(good, bad, budget, period.total_seconds())


def _info(slo: SloSettings, metric: str) -> dict[str, str]:
    return {"metric": metric, "fast_burn": slo.fast_burn, "slow_burn": slo.slow_burn,
            "on_exhausted": slo.on_exhausted}


class SloMonitor:
    """Evaluates, stores and exports every SLO of a model, throttled on the controller's
    clock; adds the trigger or the ticket of an exhausted budget."""

    def __init__(self, *, store: Store, registry: ModelRegistry, reader: WindowReader,
                 metrics: ControllerMetrics, every_seconds: float,
                 reference_of: ReferenceOf | None = None) -> None:
        self.store = store
        self.registry = registry
        self.reader = reader
        self.metrics = metrics
        self.every = timedelta(seconds=every_seconds)
        # an evaluation counts this long without a newer one (two missed looks: nothing)
        self.hold = max(2 * self.every, timedelta(minutes=1))
        self.reference_of = reference_of
        self._last: dict[tuple[str, str], datetime] = {}
        self._references: dict[tuple[str, int], Reference | None] = {}

    def check(self, model: str, spec: DatasetSpec, now: datetime) -> int:
        """Evaluate each SLO of ``model`` that is due; returns the number that failed (each
        logged; a failure never stops the model's cycle, the next look tries again)."""
        failed = 0
        for slo in spec.slo:
            name = slo.label(spec.metric)
            key = (model, name)
            try:
                if key not in self._last:  # after a start: the stored history, exported
                    self._restore(model, spec, slo, now)
                last = self._last.get(key)
                if last is not None and timedelta(0) <= now - last < self.every:
                    continue
                self._last[key] = now
                self.evaluate(model, spec, slo, now)
            except RetryableError as exc:
                log.warning("%s: SLO %s not evaluated, retrying later: %s", model, name, exc)
            except Exception:
                failed += 1
                log.exception("%s: SLO %s not evaluated", model, name)
        return failed

    def _restore(self, model: str, spec: DatasetSpec, slo: SloSettings, now: datetime) -> None:
        """After a start: the stored history sets the throttle and the exported series (so a
        restart neither evaluates at once nor leaves the budget unexported until it does)."""
        name = slo.label(spec.metric)
        rows = self.store.slo_evaluations_of(model, name,
                                             since=now - timedelta(days=slo.period_days))
        if rows:
            self._last[(model, name)] = rows[-1].evaluated_at
            self._export(model, spec, slo, rows, now)

    def _reference(self, model: str, version: int) -> Reference | None:
        key = (model, version)
        if key not in self._references:
            self._references[key] = (None if self.reference_of is None
                                     else self.reference_of(model, version))
        return self._references[key]

    def evaluate(self, model: str, spec: DatasetSpec, slo: SloSettings,
                 now: datetime) -> tuple[Evaluation, Budget]:
        """One evaluation of one SLO now: judged, stored, exported, and acted on when the
        budget is exhausted."""
        name = slo.label(spec.metric)
        champion = self.registry.aliases(model).get(ALIAS_CHAMPION)
        if champion is None:
            evaluation = Evaluation("unknown", None, None, slo.objective, 0, "no champion")
        else:
            window = self.reader.window(model, now - timedelta(days=slo.window_days), now,
                                        version=champion, labels_as_of=now)
            evaluation = judge(slo, spec, window,
                               reference=lambda: self._reference(model, champion))
        log.info("%s SLO %s: %s (%s)", model, name, evaluation.status, evaluation.note)
        self.store.add_slo_evaluation(SloEvaluationRow(
            model=model, slo=name, evaluated_at=now, status=evaluation.status,
            source=evaluation.source, value=evaluation.value, objective=evaluation.objective,
            rows=evaluation.rows, version=champion, note=evaluation.note))
        period = timedelta(days=slo.period_days)
        self.store.purge_slo_evaluations(model, name, now - period)
        rows = self.store.slo_evaluations_of(model, name, since=now - period)
        budget = self._export(model, spec, slo, rows, now)
        if budget.exhausted:
            self._exhausted(model, spec, slo, budget, evaluation, now)
        return evaluation, budget

    def _export(self, model: str, spec: DatasetSpec, slo: SloSettings,
                rows: Sequence[SloEvaluationRow], now: datetime) -> Budget:
        budget = budget_of([(r.evaluated_at, r.status) for r in rows], now=now,
                           period=timedelta(days=slo.period_days), budget=slo.budget,
                           hold=self.hold)
        last = rows[-1]
        self.metrics.set_slo(model, slo.label(spec.metric),
                             info=_info(slo, slo_metric(slo, spec)), objective=slo.objective,
                             budget=slo.budget,
                             met=None if last.status == "unknown" else last.status == "good",
                             value=last.value, source=last.source, remaining=budget.remaining,
                             evaluated_at=last.evaluated_at.timestamp())
        return budget

    def _exhausted(self, model: str, spec: DatasetSpec, slo: SloSettings, budget: Budget,
                   evaluation: Evaluation, now: datetime) -> None:
        """Once per period per SLO (the last exhaustion is stored): the retrain trigger, the
        recorded ticket, or nothing, as ``on_exhausted`` says."""
        name = slo.label(spec.metric)
        period = timedelta(days=slo.period_days)
        last = self.store.last_slo_exhaustion(model, name)
        if last is not None and timedelta(0) <= now - last < period:
            return
        value = "" if evaluation.value is None else \
            f"; last {evaluation.source} {slo_metric(slo, spec)} {evaluation.value:.4f}"
        reason = (f"SLO {name}: error budget exhausted ({budget.consumed:.0%} of the "
                  f"{1 - slo.budget:.2%} error budget of {slo.period_days:g} days spent: "
                  f"{budget.bad_seconds / 3600:.2f} h bad{value} against the objective "
                  f"{slo.objective:g})")
        trigger: dict[str, object] | None = None
        key = f"{SOURCE}:{model}:{name}:{now.isoformat()}"
        if slo.on_exhausted == "retrain":
            trigger = {"source": SOURCE, "action": "retrain", "reason": reason,
                       "dedup_key": key}
        elif slo.on_exhausted == "ticket":
            trigger = {"source": SOURCE, "action": "ticket", "reason": reason,
                       "dedup_key": key, "status": "ignored"}
        if self.store.add_slo_exhaustion(model=model, slo=name, at=now, action=slo.on_exhausted,
                                         remaining=budget.remaining, trigger=trigger):
            log.warning("%s: %s: %s", model, reason, slo.on_exhausted)
            if slo.on_exhausted == "ticket":
                self.metrics.triggers.labels(source=SOURCE, outcome="ticket").inc()
