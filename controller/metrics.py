"""Every Prometheus metric of the controller, built against an injected CollectorRegistry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.machine import PHASES

VERDICT_STATUSES = ("ok", "drift", "degraded", "estimated_degraded", "insufficient_data")
DRIFT_LEVELS = ("none", "ticket", "retrain")


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
