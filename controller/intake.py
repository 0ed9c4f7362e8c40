"""Validation of what arrives: Alertmanager webhooks (version 4) and drift verdicts.

Intake only records intent (rows in the store); the reconcile loop acts. What an alert does
comes from its labels, never from its name: ``driftloop_action`` (retrain | rollback | none)
and ``model``. Resolved alerts are recorded and never trigger. The same alert
(fingerprint + startsAt) inserts once, however often and concurrently it is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from controller.store import Store
from monitoring.verdict import Performance, Verdict

ACTION_LABEL = "driftloop_action"
MODEL_LABEL = "model"
ACTIONS = ("retrain", "rollback", "none")
#: Versions are stored as SQL integers: a verdict about a larger one is refused.
MAX_VERSION = 2**31 - 1
_JSON: TypeAdapter[Any] = TypeAdapter(Any)


class IntakeError(ValueError):
    """The payload is malformed; the message is the reason given with the 400."""


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # noqa: N815  (Alertmanager's field names)
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = Field(min_length=1)


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: Literal["4"]  # the payload version this reads (checked first, for the message)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    alerts: list[Alert]
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815


@dataclass
class IntakeResult:
    accepted: int = 0
    duplicates: int = 0
    resolved: int = 0
    ignored: int = 0
    trigger_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)  # (source, outcome) for metrics

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "resolved": self.resolved, "ignored": self.ignored,
                "trigger_ids": self.trigger_ids, "notes": self.notes}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def parse_alertmanager(body: bytes) -> AlertmanagerPayload:
    try:
        # pydantic's parser, not json.loads: invalid UTF-8, lone surrogates, numbers past
        # 4,300 digits and deep nesting are all a validation error here (json.loads lets some
        # through and raises RecursionError on "[" * 100000)
        data = _JSON.validate_json(body)
    except ValidationError as exc:
        raise IntakeError(f"malformed JSON: {exc.errors()[0]['msg']}") from None
    if not isinstance(data, dict):
        raise IntakeError("the payload must be a JSON object")
    if str(data.get("version")) != "4":
        raise IntakeError(f"unsupported Alertmanager payload version {data.get('version')!r} "
                          "(expected \"4\")")
    try:
        return AlertmanagerPayload.model_validate(data)
    except ValidationError as exc:
        raise IntakeError(_first_error(exc)) from None


def take_alertmanager(store: Store, body: bytes, *, models: set[str], now: datetime,
                      ) -> IntakeResult:
    payload = parse_alertmanager(body)
    notification = store.add_notification("alertmanager", body.decode(), now=now)
    result = IntakeResult()
    if payload.truncatedAlerts:
        result.notes.append(f"{payload.truncatedAlerts} alerts truncated by Alertmanager")
    for alert in payload.alerts:
        action = alert.labels.get(ACTION_LABEL, "none")
        model = alert.labels.get(MODEL_LABEL, "")
        name = alert.labels.get("alertname", "alert")
        key = f"am:{alert.fingerprint}:{alert.startsAt.isoformat()}"
        summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
        reason = f"{name} ({alert.fingerprint})" + (f": {summary}" if summary else "")
        if alert.status == "resolved":
            store.add_trigger(model=model or "-", source="alertmanager", action=action,
                              reason=reason, now=now, dedup_key=key + ":resolved",
                              notification_id=notification, status="resolved")
            result.resolved += 1
            result.counts.append(("alertmanager", "resolved"))
            continue
        if action not in ("retrain", "rollback") or model not in models:
            why = (f"{name}: action {action!r} does nothing" if action not in ACTIONS[:2]
                   else f"{name}: model {model!r} is not managed here")
            store.add_trigger(model=model or "-", source="alertmanager", action=action,
                              reason=reason, now=now, dedup_key=key + ":ignored",
                              notification_id=notification, status="ignored")
            result.ignored += 1
            result.notes.append(why)
            result.counts.append(("alertmanager", "ignored"))
            continue
        trigger_id = store.add_trigger(model=model, source="alertmanager", action=action,
                                       reason=reason, now=now, dedup_key=key,
                                       notification_id=notification)
        if trigger_id is None:
            result.duplicates += 1
            result.counts.append(("alertmanager", "duplicate"))
        else:
            result.accepted += 1
            result.trigger_ids.append(trigger_id)
    return result


def parse_verdict(body: bytes) -> Verdict:
    try:
        verdict = Verdict.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise IntakeError(f"malformed JSON: {exc.errors()[0]['msg']}") from None
        raise IntakeError(_first_error(exc)) from None
    if not 0 <= verdict.version <= MAX_VERSION:
        raise IntakeError(f"version: {verdict.version} is not a version (0 to {MAX_VERSION})")
    return verdict


def take_verdict(store: Store, body: bytes, verdict: Verdict, *, models: set[str],
                 now: datetime) -> IntakeResult:
    """A drift verdict triggers a retrain (at the ticket level of two drift levels it is
    recorded, action ``ticket``, never acted on); a performance judgement feeds the performance
    trigger and the automatic rollback (the reconcile loop decides with the core). A
    degraded label-free estimate (without a realised judgement) does what its ``action``
    says: ``ticket`` (the default) is recorded, never acted on; ``retrain`` triggers one."""
    result = IntakeResult()
    if verdict.model not in models:
        result.ignored += 1
        result.notes.append(f"model {verdict.model!r} is not managed here")
        result.counts.append(("verdict", "ignored"))
        return result
    notification = store.add_notification("verdict", body.decode(), now=now)
    base = f"verdict:{verdict.model}:{verdict.version}:{verdict.window_start.isoformat()}:" \
           f"{verdict.window_end.isoformat()}"
    perf = verdict.performance
    if perf is not None and perf.value is not None:
        degraded = "degraded" if perf.degraded else "ok"
        reason = (f"realised {perf.metric} {perf.value:.4f} on {perf.labelled_rows} labelled rows "
                  f"(baseline {perf.baseline:.4f}, {degraded})")
        added = store.add_trigger(model=verdict.model, source="performance",
                                  action="degraded" if perf.degraded else "performance",
                                  reason=reason, now=now, dedup_key=base + ":performance",
                                  version=verdict.version, value=perf.value,
                                  notification_id=notification)
        _count(result, added, "performance")
    _estimate(store, verdict, perf, base, notification, result, now)
    _drift(store, verdict, base, notification, result, now)
    if not result.trigger_ids and not result.duplicates and not any(
            n.startswith("ticket: ") for n in result.notes):
        result.notes.append(f"verdict {verdict.status}: nothing to do")
        result.counts.append(("verdict", "ignored"))
    return result


def _drift(store: Store, verdict: Verdict, base: str, notification: int,
           result: IntakeResult, now: datetime) -> None:
    """A drift verdict: a retrain trigger, or at the ticket level a recorded ticket."""
    ticket_level = verdict.drift_level == "ticket" and not verdict.quality_flagged
    if verdict.status == "drift" and ticket_level:
        # the ticket level of two drift levels (spec drift.levels): recorded, never a retrain
        alarm = verdict.prediction_alarm
        why = (f"share {verdict.drift_share} >= {verdict.drift_ticket_threshold}"
               if verdict.drift_ticket_threshold is not None
               and (verdict.drift_share or 0) >= verdict.drift_ticket_threshold
               else f"prediction drift ({alarm.statistic} {alarm.value:.4f} > "
               f"{alarm.threshold:.4f})" if alarm is not None and alarm.drifted
               and alarm.level == "ticket"
               else "multivariate drift (domain classifier)")
        reason = (f"drift on v{verdict.version} at the ticket level: {why}, below the "
                  f"retrain level {verdict.drift_share_threshold} "
                  f"({', '.join(verdict.drifted_columns[:5])})")
        added = store.add_trigger(model=verdict.model, source="verdict", action="ticket",
                                  reason=reason, now=now, dedup_key=base + ":drift",
                                  version=verdict.version, notification_id=notification,
                                  status="ignored")
        result.notes.append(f"ticket: {reason}")
        result.counts.append(("verdict", "duplicate" if added is None else "ticket"))
        result.duplicates += added is None
    elif verdict.status == "drift":
        alarm = verdict.prediction_alarm
        share = verdict.drift_share or 0
        reason = (f"drift on v{verdict.version}: share {verdict.drift_share} >= "
                  f"{verdict.drift_share_threshold} ({', '.join(verdict.drifted_columns[:5])})"
                  if share >= verdict.drift_share_threshold or alarm is None
                  or not alarm.drifted else
                  f"prediction drift on v{verdict.version}: {alarm.statistic} "
                  f"{alarm.value:.4f} > {alarm.threshold:.4f} (drift share {share})")
        added = store.add_trigger(model=verdict.model, source="verdict", action="retrain",
                                  reason=reason, now=now, dedup_key=base + ":drift",
                                  version=verdict.version, notification_id=notification)
        _count(result, added, "verdict")


def _estimate(store: Store, verdict: Verdict, perf: Performance | None, base: str,
              notification: int, result: IntakeResult, now: datetime) -> None:
    """A label-free estimate below tolerance (and no realised judgement): by default a
    ticket (recorded, never a retrain: the estimate cannot see concept drift and is wrong
    when the calibration is); a retrain only when the spec's drift.estimated_action says so."""
    est = verdict.estimated
    if est is None or est.value is None or not est.alarming or est.action == "none" or (
            perf is not None and perf.value is not None):
        return
    band = ("" if est.lower is None or est.upper is None
            else f", band [{est.lower:.4f}, {est.upper:.4f}]")
    baseline = "" if est.baseline is None else f", baseline {est.baseline:.4f}"
    reason = (f"estimated {est.metric} {est.value:.4f} without labels on {est.rows} "
              f"scores{band}{baseline}: {est.action}")
    if est.action == "retrain":
        added = store.add_trigger(model=verdict.model, source="verdict", action="retrain",
                                  reason=reason, now=now, dedup_key=base + ":estimated",
                                  version=verdict.version, value=est.value,
                                  notification_id=notification)
        _count(result, added, "verdict")
    else:
        added = store.add_trigger(model=verdict.model, source="verdict", action="ticket",
                                  reason=reason, now=now, dedup_key=base + ":estimated",
                                  version=verdict.version, value=est.value,
                                  notification_id=notification, status="ignored")
        result.notes.append(f"ticket: {reason}")
        result.counts.append(("verdict", "duplicate" if added is None else "ticket"))
        if added is None:
            result.duplicates += 1


def _count(result: IntakeResult, added: int | None, source: str) -> None:
    if added is None:
        result.duplicates += 1
        result.counts.append((source, "duplicate"))
    else:
        result.accepted += 1
        result.trigger_ids.append(added)
