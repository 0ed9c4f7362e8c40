"""Every Prometheus metric of the controller, built against an injected CollectorRegistry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.machine import PHASES

VERDICT_STATUSES = ("ok", "drift", "degraded", "estimated_degraded", "insufficient_data")
DRIFT_LEVELS = ("none", "ticket", "retrain")
SLO_SOURCES = ("realised", "estimated")


@dataclass
class ControllerMetrics:
    registry: CollectorRegistry
    triggers: Counter
    cycles: Counter
    state: Gauge
    last_decision: Gauge
    gate_difference: Gauge
    gate_ci_low: Gauge
    gate_pairs: Gauge
    drift_share: Gauge
    verdict_status: Gauge
    drift_level: Gauge
    slo_info: Gauge
    slo_objective: Gauge
    slo_budget: Gauge
    slo_objective_met: Gauge
    slo_metric_value: Gauge
    slo_error_budget_remaining: Gauge
    slo_evaluated: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ControllerMetrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            triggers=Counter("driftloop_controller_triggers_total",
                             "Triggers by source and how they were taken (started, merged, "
                             "deferred, ignored, duplicate, resolved, invalid; ticket: a degraded "
                             "label-free estimate, recorded only).",
                             ["source", "outcome"], registry=r),
            cycles=Counter("driftloop_controller_cycles_total",
                           "Finished cycles and overrides by outcome.", ["model", "outcome"],
                           registry=r),
            state=Gauge("driftloop_controller_state", "1 for the model's current phase.",
                        ["model", "state"], registry=r),
            last_decision=Gauge("driftloop_controller_last_decision_timestamp_seconds",
                                "When the last decision was recorded.", ["model"], registry=r),
            gate_difference=Gauge("driftloop_controller_gate_difference",
                                  "Last gate difference (positive = challenger better).",
                                  ["model"], registry=r),
            gate_ci_low=Gauge("driftloop_controller_gate_ci_low",
                              "Lower bound of the last gate interval.", ["model"], registry=r),
            gate_pairs=Gauge("driftloop_controller_gate_pairs",
                             "Labelled pairs behind the last gate evaluation.", ["model"],
                             registry=r),
            drift_share=Gauge("driftloop_drift_share",
                              "Share of drifted columns in the last posted verdict.", ["model"],
                              registry=r),
            verdict_status=Gauge("driftloop_verdict_status",
                                 "1 for the status of the last posted verdict.",
                                 ["model", "status"], registry=r),
            drift_level=Gauge("driftloop_verdict_drift_level",
                              "1 for the drift level of the last posted verdict (none, "
                              "ticket, retrain).", ["model", "level"], registry=r),
            **_slo_gauges(r),
        )

    def set_phase(self, model: str, phase: str) -> None:
        for name in PHASES:
            self.state.labels(model=model, state=name).set(1 if name == phase else 0)

    def set_verdict(self, model: str, status: str, drift_share: float | None,
                    drift_level: str | None = None) -> None:
        for name in VERDICT_STATUSES:
            self.verdict_status.labels(model=model, status=name).set(1 if name == status else 0)
        if drift_level is not None:
            for name in DRIFT_LEVELS:
                self.drift_level.labels(model=model, level=name).set(
                    1 if name == drift_level else 0)
        if drift_share is not None:
            self.drift_share.labels(model=model).set(drift_share)

    def set_slo(self, model: str, slo: str, *, info: dict[str, str], objective: float,
                budget: float, met: bool | None, value: float | None, source: str | None,
                remaining: float, evaluated_at: float) -> None:
        """One SLO's series after an evaluation (or, after a restart, the stored last one)."""
        self.slo_info.labels(model=model, slo=slo, **info).set(1)
        self.slo_objective.labels(model=model, slo=slo).set(objective)
        self.slo_budget.labels(model=model, slo=slo).set(budget)
        if met is None:
            self.slo_objective_met.remove(model, slo)
        else:
            self.slo_objective_met.labels(model=model, slo=slo).set(1 if met else 0)
        for name in SLO_SOURCES:
            if name == source and value is not None:
                self.slo_metric_value.labels(model=model, slo=slo, source=name).set(value)
            else:
                self.slo_metric_value.remove(model, slo, name)
        self.slo_error_budget_remaining.labels(model=model, slo=slo).set(remaining)
        self.slo_evaluated.labels(model=model, slo=slo).set(evaluated_at)



def _slo_gauges(r: CollectorRegistry) -> dict[str, Gauge]:
    """The SLO series (controller/slo.py, docs/slo.md): one per model and SLO of its spec."""
    slo = ["model", "slo"]
    return {
        "slo_info": Gauge(
            "driftloop_slo_info", "1 per SLO, carrying its spec settings (severities of the "
            "burn alerts, what an exhausted budget does).",
            [*slo, "metric", "fast_burn", "slow_burn", "on_exhausted"], registry=r),
        "slo_objective": Gauge(
            "driftloop_slo_objective", "The SLO's objective for its metric (at least; at most "
            "for log_loss and brier).", slo, registry=r),
        "slo_budget": Gauge(
            "driftloop_slo_budget", "The SLO's target share of good time over its period "
            "(1 - budget is the error budget).", slo, registry=r),
        "slo_objective_met": Gauge(
            "driftloop_slo_objective_met", "1 when the last evaluation met the objective, 0 "
            "when it did not; absent when it could not judge (too few labels).", slo,
            registry=r),
        "slo_metric_value": Gauge(
            "driftloop_slo_metric_value", "The champion's metric on the SLO's rolling window "
            "at the last evaluation: realised from labels, or estimated without them (CBPE).",
            [*slo, "source"], registry=r),
        "slo_error_budget_remaining": Gauge(
            "driftloop_slo_error_budget_remaining", "Share of the error budget left over the "
            "SLO's period (1: untouched, 0 or below: exhausted).", slo, registry=r),
        "slo_evaluated": Gauge(
            "driftloop_slo_last_evaluation_timestamp_seconds", "When the SLO was last "
            "evaluated.", slo, registry=r),
    }
