"""Backtest: replay a labelled history in time order through the live controller.

What runs is the live controller itself: ``controller.reconcile.Controller`` (the shell
around the pure ``controller.core.decide``), its evaluator and gate
(``controller.evidence.Evaluator``, ``controller.gate``), its verdict intake
(``controller.intake.take_verdict``) and its retrain-data rule (``controller.recent``), all
built from the same ``ControllerSettings`` as live. Only the ports differ: a simulated
clock, an in-memory registry, a prediction log that holds the replayed rows
(:class:`~backtest.replay.ReplayLog`: labels become visible only when they would
have arrived) and a launcher that trains in this process.

The walk, per period after the initial ones, in ticks of ``tick``:

1. the rows of the tick are served: scored by the champion of the moment (and by the
   challenger in shadow when one is set), and appended to the replay log;
2. the clock moves to the end of the tick;
3. at the end of a period, the drift check (``monitoring.check.check_frames``, the fast
   path) judges the period's rows of the champion, and the realised metric is judged on
   the rows whose labels arrived in the last period; the verdict enters through the
   controller's own intake, as ``POST /verdicts`` does;
4. the controller's reconcile step runs: triggers, retrains, the gate, promotions.

Two reference policies are replayed beside the configured one: never retrain (the first
champion serves everything) and retrain every period (trained on what the controller's
retrain would see, swapped in without a gate: an upper bound on freshness).

A multi-class spec (``classes:``) replays the same way, through the same live pieces: labels
are decoded by the spec's class codec (``DatasetSpec.class_codec``), the replay log carries
each version's class probabilities as serving logs them, the drift check and the evaluator
take their multi-class paths (class drift, text drift, ``controller.gate_classes``), and the
realised metrics are ``kernel.metrics.multiclass_value`` on each policy's probabilities put
in the history's class order (``controller.gate_classes.aligned``). The label-free estimate
(CBPE) is binary only: a multi-class replay reports it as ``n/a (binary only)``.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from backtest.adapters import BacktestPolicy, ClockedRegistry, InProcessLauncher
from backtest.replay import ReplayLog, SimClock
from controller.evidence import Evaluator, ModelCache, version_classes
from controller.gate_classes import aligned
from controller.intake import take_verdict
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.store import Store
from kernel.errors import DataError, UsageError
from kernel.frames import fill_missing_text
from kernel.metrics import metric_value, multiclass_value
from kernel.spec import DatasetSpec
from kernel.tables import conform, read_table
from monitoring.check import Reference, check_frames, outcome, performance
from monitoring.verdict import Verdict
from registry import ALIAS_CHALLENGER, ALIAS_CHAMPION, TAG_PREFIX

log = logging.getLogger(__name__)

POLICIES = ("never", "configured", "every_period")
#: What a multi-class replay reports for the label-free estimate (CBPE is for binary scores).
ESTIMATE_BINARY_ONLY = "n/a (binary only)"
NEVER_VISIBLE = pd.Timestamp.max.tz_localize("UTC").floor("D")


@dataclass(frozen=True)
class BacktestConfig:
    period: timedelta = timedelta(days=1)
    months: int = 0                   # > 0: periods are this many calendar months (not period)
    initial_periods: int = 3
    label_delay: timedelta = timedelta(days=1)
    tick: timedelta = timedelta(hours=1)
    stable_until: datetime | None = None
    onset: datetime | None = None
    seed: int = 0
    baselines: bool = True            # also replay "never" and "every_period"


@dataclass
class History:
    """The replay's input: conformed rows in time order, labels and when they arrive."""

    frame: pd.DataFrame               # features, timestamp, target (may be NaN), id
    y: np.ndarray                     # 0/1 (multi-class: index in classes), -1 unlabelled
    label_at: pd.Series               # when each label becomes visible (far future: never)
    request_ids: pd.Series
    #: multi-class: the classes, sorted class texts (as training orders them): the listed
    #: ones, or with ``classes: infer`` the history's; None for a binary spec
    classes: tuple[str, ...] | None = None
    #: each label as the log stores it (the class text; binary: the target as text)
    label_text: pd.Series | None = None


@dataclass
class PeriodRow:
    index: int
    start: datetime
    end: datetime
    rows: int
    labelled_at_end: int              # labels of this period's rows visible at its end
    status: str
    drift_share: float | None
    drifted: list[str]
    checked_metric: float | None      # what the performance check saw (delayed labels)
    realised: dict[str, float | None]  # per policy, on all labels of the period (hindsight)
    live_version: int                 # the champion at the end of the period
    served_versions: list[int]
    shadow_version: int | None
    triggers: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    reasons: list[str] = field(default_factory=list)
    # the label-free (CBPE) estimate of the metric on the period's rows and its band; None
    # for a champion without a calibration (docs/monitoring.md, "Estimated performance")
    estimated: float | None = None
    estimated_band: tuple[float, float] | None = None

    @property
    def in_band(self) -> bool | None:
        """Whether the hindsight realised metric of the period lies inside the estimate's
        band (None when either is missing)."""
        realised = self.realised.get("configured")
        if realised is None or self.estimated_band is None:
            return None
        return self.estimated_band[0] <= realised <= self.estimated_band[1]

    @property
    def alarm(self) -> bool:
        return self.status in ("drift", "degraded")

    @property
    def cycle_started(self) -> bool:
        return any(t["outcome"] == "started" for t in self.triggers)


@dataclass
class BacktestResult:
    spec: DatasetSpec
    config: BacktestConfig
    policy: BacktestPolicy
    origin: datetime
    replay_start: datetime
    periods: list[PeriodRow]
    overall: dict[str, dict[str, float | None]]   # policy -> {all, stable, after_onset}
    decisions: list[dict[str, Any]]
    cycles: list[dict[str, Any]]
    versions: int
    label_reads: int
    label_violations: int
    seconds: float = 0.0
    version_tags: dict[int, dict[str, str]] = field(default_factory=dict)  # each version's tags
    classes: tuple[str, ...] | None = None    # multi-class: the history's class order

    def summary(self) -> dict[str, Any]:
        outcomes = [d["outcome"] for d in self.decisions if d["kind"] == "gate"]
        stable = [p for p in self.periods
                  if self.config.stable_until is not None and p.end <= self.config.stable_until]
        onset = self.config.onset
        detection = promotion = None
        if onset is not None:
            alarmed = [p for p in self.periods if p.end > onset and (p.alarm or p.cycle_started)]
            if alarmed:
                detection = (alarmed[0].end - onset).total_seconds()
            promoted = [d for d in self.decisions if d["outcome"] == "promoted"
                        and d["decided_at"] > onset]
            if promoted:
                promotion = (promoted[0]["decided_at"] - onset).total_seconds()
        return {
            "model": self.spec.model_name, "metric": self.spec.metric,
            "lower_is_better": self.spec.lower_is_better,
            "periods": len(self.periods), "rows": int(sum(p.rows for p in self.periods)),
            "retrains": len(self.cycles), "promotions": outcomes.count("promoted"),
            "rejections": outcomes.count("rejected"), "no_change": outcomes.count("no_change"),
            "failed": outcomes.count("failed"),
            "rollbacks": sum(d["outcome"] == "rolled_back" for d in self.decisions),
            "stable_periods": len(stable),
            "false_alarms": sum(p.alarm for p in stable),
            "false_retrains": sum(p.cycle_started for p in stable),
            "detection_delay_seconds": detection, "promotion_delay_seconds": promotion,
            "metric_overall": self.overall,
            "estimate_periods": sum(p.in_band is not None for p in self.periods),
            "estimate_in_band": sum(bool(p.in_band) for p in self.periods),
            # label-free estimates (CBPE) are for binary scores: said, not failed
            "estimate_note": ESTIMATE_BINARY_ONLY if self.spec.is_multiclass else None,
            "label_reads": self.label_reads, "label_violations": self.label_violations,
            "seconds": round(self.seconds, 2),
        }


# -- input ------------------------------------------------------------------------------------

def load_history(spec: DatasetSpec, data_paths: Sequence[Path], labels_path: Path | None,
                 label_delay: timedelta) -> History:
    """Read and conform the history. Labels come from the target column (visible at
    ``ts + label_delay``) or from ``labels_path`` joined on the spec's id column (visible at
    the later of the file's own timestamp column, when it has one, and ``ts + label_delay``)."""
    if not data_paths:
        raise UsageError("--data: at least one file")
    frames = [conform(read_table(p), spec, require_target=labels_path is None, name=str(p))
              for p in data_paths]
    frame = pd.concat(frames, ignore_index=True, sort=False)
    ts = spec.timestamp_column
    frame = frame.sort_values(ts, kind="stable").reset_index(drop=True)
    arrives = frame[ts] + pd.Timedelta(label_delay)
    if labels_path is not None:
        if not spec.id_column:
            raise UsageError("--labels needs the spec's id_column to join labels to rows")
        labels = read_table(labels_path)
        missing = [c for c in (spec.id_column, spec.target) if c not in labels.columns]
        if missing:
            raise DataError(f"{labels_path}: missing columns {missing}")
        labels = labels.drop_duplicates(spec.id_column, keep="last")
        keep = [spec.id_column, spec.target] + ([ts] if ts in labels.columns else [])
        labels = labels[keep].rename(columns={spec.target: "__label", ts: "__label_ts"})
        labels[spec.id_column] = labels[spec.id_column].astype(str)
        frame = frame.drop(columns=[spec.target], errors="ignore")
        frame["__id"] = frame[spec.id_column].astype(str)
        frame = frame.merge(labels, left_on="__id", right_on=spec.id_column, how="left",
                            suffixes=("", "__l")).drop(columns=["__id"])
        frame = frame.drop(columns=[c for c in frame.columns if c.endswith("__l")])
        frame[spec.target] = frame.pop("__label")
        if "__label_ts" in frame:
            given = pd.to_datetime(frame.pop("__label_ts"), utc=True, errors="coerce",
                                   format="mixed")
            arrives = arrives.where(given.isna() | (given <= arrives), given)
    has_label = frame[spec.target].notna().to_numpy()
    y = np.full(len(frame), -1, dtype=np.int64)
    classes = None
    text = frame[spec.target].astype(str)
    if spec.is_multiclass:
        y, classes, text = _class_labels(spec, frame[spec.target], has_label)
    elif has_label.any():
        y[has_label] = spec.labels.decode_many(frame.loc[has_label, spec.target])
    arrives = arrives.where(has_label, NEVER_VISIBLE)
    if spec.id_column and spec.id_column in frame.columns:
        ids = frame[spec.id_column].astype(str)
    else:
        ids = pd.Series([f"row-{i}" for i in range(len(frame))])
    return History(frame, y, arrives.reset_index(drop=True), ids.reset_index(drop=True),
                   classes, text.reset_index(drop=True))


def _class_labels(spec: DatasetSpec, target: pd.Series, has_label: np.ndarray) -> tuple[
        np.ndarray, tuple[str, ...], pd.Series]:
    """A multi-class target by the spec's class codec: (index of each label in the sorted
    classes, -1 unlabelled; the classes; each label's class text). A label that is no listed
    class is a data error naming it, as in training."""
    from kernel.labels import LabelError

    texts = np.full(len(target), None, dtype=object)
    try:
        texts[has_label] = spec.class_codec().canonical_many(target[has_label])
    except LabelError as exc:
        raise DataError(f"target {spec.target!r}: {exc}") from None
    listed = spec.listed_classes
    classes = tuple(sorted(listed if listed is not None else {str(t) for t in texts[has_label]}))
    if len(classes) < 2:
        raise DataError(f"target {spec.target!r}: the history has fewer than two classes "
                        f"({list(classes)})")
    y = np.full(len(target), -1, dtype=np.int64)
    if has_label.any():
        y[has_label] = spec.class_codec(classes).decode_many(texts[has_label])
    return y, classes, pd.Series(texts, index=target.index, dtype=object)


def _month_start(when: pd.Timestamp) -> pd.Timestamp:
    return when.normalize().replace(day=1)


def _months_between(origin: pd.Timestamp, when: pd.Timestamp) -> int:
    return (when.year - origin.year) * 12 + when.month - origin.month


def _floor(when: pd.Timestamp, period: timedelta) -> pd.Timestamp:
    day = when.normalize()
    if period >= timedelta(days=1) or (timedelta(days=1) % period):
        return day
    steps = (when - day) // pd.Timedelta(period)
    return day + steps * pd.Timedelta(period)


def period_verdict(reader: Any, reference: Reference, version: int, start: datetime,
                   end: datetime, *, lookback: timedelta) -> Verdict:
    """The period's verdict for ``version`` (any PredictionLogReader-like ``reader``): drift
    on the period's rows (fast path), realised metric on the rows of the last ``lookback``
    whose labels had arrived by ``end``."""
    name = reference.spec.model_name
    current = reader.window(name, start, end, version=version, labels_as_of=end)
    verdict = check_frames(reference, current.drop(columns=["label"], errors="ignore"),
                           model=name, version=version, window_start=start, window_end=end,
                           now=end, source="backtest")
    recent = reader.window(name, end - lookback, end, version=version, labels_as_of=end)
    recent = recent[recent["label"].notna()]
    perf = performance(reference, recent)
    if perf is None or perf.value is None:
        return verdict
    estimated = verdict.estimated
    if estimated is not None:  # realised performance decides from here
        estimated = estimated.model_copy(update={"superseded": True})
    status = verdict.status
    if status != "insufficient_data":
        status = outcome(perf, estimated, dataset_drift=(verdict.drift_share or 0.0)
                         >= verdict.drift_share_threshold, quality_flagged=verdict.quality_flagged)
    return verdict.model_copy(update={
        "performance": perf, "status": status, "labelled_rows": len(recent),
        "estimated": estimated,
        "reasons": [*verdict.reasons, f"performance {'degraded' if perf.degraded else 'ok'}: "
                    f"{perf.metric} {perf.value:.4f} vs validation {perf.baseline:.4f} on "
                    f"{perf.labelled_rows} rows labelled by {end.isoformat()}"]})


# -- the replay -------------------------------------------------------------------------------

class Replay:
    """One replay of the configured policy through the live controller shell."""

    def __init__(self, spec: DatasetSpec, spec_path: Path, history: History,
                 config: BacktestConfig, policy: BacktestPolicy, workdir: Path,
                 progress: Callable[[str], None] = lambda line: None) -> None:
        if config.initial_periods < 1:
            raise UsageError("--initial-periods must be at least 1")
        if config.period <= timedelta(0) or config.tick <= timedelta(0):
            raise UsageError("--period and --tick must be positive")
        self.spec = spec
        self.config = config
        self.policy = policy
        self.workdir = workdir
        self.progress = progress
        ts = history.frame[spec.timestamp_column]
        if config.months:
            first = _month_start(ts.iloc[0])
            self.origin = first.to_pydatetime()
            self.n_periods = _months_between(first, ts.iloc[-1]) // config.months + 1
            unit = f"{config.months} calendar month(s)"
        else:
            self.origin = _floor(ts.iloc[0], config.period).to_pydatetime()
            span = (ts.iloc[-1] - pd.Timestamp(self.origin)) / pd.Timedelta(config.period)
            self.n_periods = int(math.floor(span)) + 1
            unit = str(config.period)
        if self.n_periods <= config.initial_periods:
            raise UsageError(f"the data spans {self.n_periods} periods of {unit}; "
                             f"--initial-periods {config.initial_periods} leaves none to replay")
        self.replay_start = self.bound(config.initial_periods)
        cut = int((ts < pd.Timestamp(self.replay_start)).sum())  # rows are sorted by time
        self.initial = history.frame.iloc[:cut]
        self.initial_y = history.y[:cut]
        rest = slice(cut, len(history.frame))
        self.rows = history.frame.iloc[rest].reset_index(drop=True)
        self.y = history.y[rest]
        self.clock = SimClock(self.replay_start)
        self.registry = ClockedRegistry(self.clock)
        self.classes = history.classes
        target = history.label_text if history.label_text is not None else pd.Series(
            [None] * len(history.frame))
        self.log = ReplayLog(spec, self.rows, target.iloc[rest].reset_index(drop=True)
                             .astype(str), history.label_at.iloc[rest]
                             .reset_index(drop=True), history.request_ids.iloc[rest]
                             .reset_index(drop=True), self.y, self.clock)
        self.history_path = workdir / "history.parquet"
        labelled = self.initial[self.initial[spec.target].notna()]
        labelled.to_parquet(self.history_path, index=False)
        self.spec = spec.model_copy(update={"history": [str(self.history_path)]})
        self.settings = policy.settings
        self.store = Store(f"sqlite:///{workdir / 'controller-state.db'}")
        self.cache = ModelCache(self.registry, workdir / "bundles")
        self.launcher = InProcessLauncher(self.spec, self.registry, seed=config.seed)
        evaluator = Evaluator(self.registry, self.log, self.cache, self.settings.gate_policy(),
                              offline_replay=self.settings.controller_offline_replay)
        self.controller = Controller(
            self.settings, store=self.store, registry=self.registry, launcher=self.launcher,
            reader=self.log, evaluator=evaluator,
            models={self.spec.model_name: Managed(self.spec, spec_path)},
            metrics=ControllerMetrics.create(CollectorRegistry()), clock=self.clock)
        self._scores: dict[int, np.ndarray] = {}
        self._references: dict[int, Reference] = {}
        self._common: dict[int, np.ndarray] = {}   # multi-class: history class order
        # a missing text is the empty text, as training and serving score it
        self._features = fill_missing_text(self.rows[self.spec.features.all],
                                           self.spec.features.text)

    # -- helpers ----------------------------------------------------------------------------

    def bound(self, index: int) -> datetime:
        """Where period ``index`` starts (and ``index - 1`` ends): a multiple of the fixed
        length after the origin, or a calendar-month boundary with ``months``."""
        if self.config.months:
            offset = pd.DateOffset(months=index * self.config.months)
            return (pd.Timestamp(self.origin) + offset).to_pydatetime()
        return self.origin + index * self.config.period

    def scores(self, version: int) -> np.ndarray:
        """The version's scores on every replayed row (computed once; rows are independent):
        the positive-class probability, or a multi-class version's top probability (its
        probabilities then go to the replay log, as serving logs them)."""
        if version not in self._scores:
            model = self.cache.model(self.spec.model_name, version)
            proba = np.asarray(model.predict_proba(self._features), float)
            if self.classes is None:
                self._scores[version] = proba[:, 1]
            else:
                bundle = self.cache.bundle(self.spec.model_name, version)
                self.log.add_classes(version, version_classes(bundle, model), proba)
                self._scores[version] = proba.max(axis=1)
        return self._scores[version]

    def probabilities(self, version: int) -> np.ndarray:
        """A multi-class version's probabilities on every replayed row, in the history's
        class order (what the realised metrics compare)."""
        assert self.classes is not None
        if version not in self._common:
            self.scores(version)
            classes, matrix = self.log.probabilities_of(version)
            self._common[version] = self._aligned(matrix, classes)
        return self._common[version]

    def _aligned(self, matrix: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        assert self.classes is not None
        return aligned(matrix, [str(c) for c in classes], self.classes)

    def served_probabilities(self) -> np.ndarray:
        """The served version's probabilities of every row (history class order; NaN rows
        not served): the configured policy's, for the realised metrics."""
        assert self.classes is not None
        out = np.full((len(self.rows), len(self.classes)), np.nan)
        for version in np.unique(self.log.version):
            if version > 0:
                rows = self.log.version == version
                out[rows] = self.probabilities(int(version))[rows]
        return out

    def reference(self, version: int) -> Reference:
        if version not in self._references:
            bundle = self.cache.bundle(self.spec.model_name, version)
            self._references[version] = Reference.from_bundle(bundle)
        return self._references[version]

    def train_initial(self) -> int:
        from training.train import train

        result = train(self.spec, [self.history_path], self.registry, alias=ALIAS_CHAMPION,
                       tags={TAG_PREFIX + "cycle_id": "backtest-initial"}, seed=self.config.seed)
        return result.version.version

    def check(self, start: datetime, end: datetime) -> Verdict:
        version = self.registry.aliases(self.spec.model_name)[ALIAS_CHAMPION]
        return period_verdict(self.log, self.reference(version), version, start, end,
                              lookback=(end - start) + self.config.label_delay)

    def _intake(self, verdict: Verdict, now: datetime) -> None:
        """Into the controller through its own intake, with the policy's trigger switches."""
        sent = verdict
        perf = sent.performance
        if not self.policy.performance_trigger and perf is not None and perf.degraded:
            perf = perf.model_copy(update={"degraded": False})
            sent = sent.model_copy(update={"performance": perf})
        if sent.status == "degraded" and not (perf is not None and perf.degraded):
            drifted = (sent.drift_share or 0) >= sent.drift_share_threshold or sent.quality_flagged
            sent = sent.model_copy(update={"status": "drift" if drifted else "ok"})
        if not self.policy.drift_trigger and sent.status == "drift":
            sent = sent.model_copy(update={"status": "ok"})
        take_verdict(self.store, sent.model_dump_json().encode(), sent,
                     models={self.spec.model_name}, now=now)

    # -- the walk ---------------------------------------------------------------------------

    def run(self) -> list[PeriodRow]:
        name = self.spec.model_name
        first = self.train_initial()
        self.progress(f"initial champion v{first} trained on {len(self.initial)} rows before "
                      f"{self.replay_start.isoformat()}")
        rows_out: list[PeriodRow] = []
        seen_trigger = 0
        seen_decision = 0
        for index in range(self.config.initial_periods, self.n_periods):
            start, end = self.bound(index), self.bound(index + 1)
            part_start = self.log.index_before(start)
            served: list[int] = []
            shadow_seen: int | None = None
            t = start
            verdict = None
            while t < end:
                nxt = min(t + self.config.tick, end)
                aliases = self.registry.aliases(name)
                champion = aliases[ALIAS_CHAMPION]
                challenger = aliases.get(ALIAS_CHALLENGER)
                if challenger == champion:
                    challenger = None
                part = self.log.serve(nxt, champion, self.scores(champion), challenger,
                                      None if challenger is None else self.scores(challenger))
                if part.stop > part.start:
                    served.append(champion)
                    shadow_seen = challenger if challenger is not None else shadow_seen
                self.clock.advance(nxt)
                if nxt == end:
                    verdict = self.check(start, end)
                    self._intake(verdict, end)
                self.controller.step(name)
                t = nxt
            assert verdict is not None
            part = slice(part_start, self.log.served)
            triggers = [t for t in self.store.triggers_of(name, limit=1_000_000)
                        if t.id > seen_trigger]
            triggers.sort(key=lambda t: t.id)
            if triggers:
                seen_trigger = triggers[-1].id
            decisions = [_decision(d) for d in self.registry.decisions[seen_decision:]]
            seen_decision = len(self.registry.decisions)
            live = self.registry.aliases(name)[ALIAS_CHAMPION]
            labelled_at_end = int(self.log.labelled_by(end, part).sum())
            row = PeriodRow(
                index=index, start=start, end=end, rows=part.stop - part.start,
                labelled_at_end=labelled_at_end, status=verdict.status,
                drift_share=verdict.drift_share, drifted=list(verdict.drifted_columns),
                checked_metric=verdict.performance.value if verdict.performance else None,
                realised={"configured": self._metric(part, self._served(part))},
                live_version=live, served_versions=sorted(set(served)),
                shadow_version=shadow_seen,
                triggers=[{"source": t.source, "action": t.action, "outcome": t.outcome,
                           "reason": t.reason, "at": t.received_at} for t in triggers
                          if t.status != "ignored"],
                decisions=decisions, reasons=list(verdict.reasons),
                estimated=verdict.estimated.value if verdict.estimated else None,
                estimated_band=_band(verdict))
            rows_out.append(row)
            self.progress(_progress_line(row, self.spec.metric, len(rows_out),
                                         self.n_periods - self.config.initial_periods))
        return rows_out

    def _served(self, part: slice) -> np.ndarray:
        """The served scores of ``part`` (multi-class: probabilities, history class order)."""
        if self.classes is None:
            return self.log.score[part]
        out = np.full((part.stop - part.start, len(self.classes)), np.nan)
        versions = self.log.version[part]
        for version in np.unique(versions):
            if version > 0:
                out[versions == version] = self.probabilities(int(version))[part][
                    versions == version]
        return out

    def _metric(self, part: slice | np.ndarray, scores: np.ndarray) -> float | None:
        """The spec's metric on the labelled rows of ``part``: ``scores`` (binary) or class
        probabilities in the history's class order (multi-class, ``multiclass_value``)."""
        y = self.y[part]
        if scores.ndim == 2:
            keep = (y >= 0) & np.isfinite(scores).all(axis=1)
            value = multiclass_value(self.spec.metric, y[keep], scores[keep])
        else:
            keep = (y >= 0) & np.isfinite(scores)
            value = metric_value(self.spec.metric, y[keep], scores[keep])
        return value if np.isfinite(value) else None

    def policy_scores(self, version: int) -> np.ndarray:
        """A version's scores on every row, as the realised metrics take them."""
        return self.scores(version) if self.classes is None else self.probabilities(version)

    # -- reference policies -----------------------------------------------------------------

    def every_period_scores(self) -> np.ndarray:
        """Retrain at every period end on the controller's retrain data (history plus the
        labelled rows visible then, within ``recent_days``), swap in without a gate."""
        from training.train import fit, split

        spec = self.spec
        s = self.settings
        width = () if self.classes is None else (len(self.classes),)
        out = np.full((len(self.rows), *width), np.nan)
        model = self.cache.model(spec.model_name, 1)
        ts = self.rows[spec.timestamp_column]
        for index in range(self.config.initial_periods, self.n_periods):
            start, end = self.bound(index), self.bound(index + 1)
            if index > self.config.initial_periods:
                cut = pd.Timestamp(start)
                visible = self.log.labelled_by(cut)
                if s.controller_recent_days > 0:
                    visible &= (ts >= cut - pd.Timedelta(days=s.controller_recent_days)).to_numpy()
                else:
                    visible &= False
                frame = pd.concat([self.initial[self.initial[spec.target].notna()],
                                   self.rows[visible]], ignore_index=True)
                if s.controller_retrain_window_days:
                    frame = frame[frame[spec.timestamp_column]
                                  >= cut - pd.Timedelta(days=s.controller_retrain_window_days)]
                frame = frame.sort_values(spec.timestamp_column, kind="stable")
                try:
                    model = fit(split(frame.reset_index(drop=True), spec), spec,
                                seed=self.config.seed).model
                except DataError as exc:
                    log.info("every-period retrain at %s skipped: %s", start, exc)
            lo, hi = self.log.index_before(start), self.log.index_before(end)
            if hi > lo:
                proba = model.predict_proba(self._features.iloc[lo:hi])
                out[lo:hi] = proba[:, 1] if self.classes is None else self._aligned(
                    proba, [str(c) for c in model.classes_])
        return out


def _band(verdict: Verdict) -> tuple[float, float] | None:
    e = verdict.estimated
    if e is None or e.lower is None or e.upper is None:
        return None
    return (e.lower, e.upper)


def _decision(d: Any) -> dict[str, Any]:
    return {"cycle_id": d.cycle_id, "kind": d.kind, "outcome": d.outcome,
            "decided_at": d.decided_at, "champion": d.champion_version,
            "challenger": d.challenger_version, "new_champion": d.new_champion_version,
            "evidence": d.evidence, "n": d.n, "champion_metric": d.champion_metric,
            "challenger_metric": d.challenger_metric, "difference": d.difference,
            "ci_low": d.ci_low, "ci_high": d.ci_high, "margin": d.margin,
            "triggers": list(d.triggers), "reasons": list(d.reasons), "extra": dict(d.extra)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _progress_line(row: PeriodRow, metric: str, done: int, total: int) -> str:
    decided = ", ".join(d["outcome"] + (f" v{d['challenger']}" if d["challenger"] else "")
                        for d in row.decisions)
    started = "retrain started" if row.cycle_started else ""
    what = "; ".join(x for x in (started, decided) if x) or "-"
    return (f"[{done}/{total}] {row.start:%Y-%m-%d %H:%M} rows={row.rows} {row.status}"
            f" share={_fmt(row.drift_share)} {metric}={_fmt(row.realised.get('configured'))}"
            f" live=v{row.live_version} {what}")


# -- entry point ------------------------------------------------------------------------------

def run_backtest(spec: DatasetSpec, spec_path: Path, data_paths: Sequence[Path], *,
                 labels_path: Path | None = None, config: BacktestConfig = BacktestConfig(),
                 policy: BacktestPolicy, workdir: Path | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> BacktestResult:
    """Replay the history; returns the per-period table, decisions and totals."""
    import time

    started = time.perf_counter()
    history = load_history(spec, data_paths, labels_path, config.label_delay)
    with tempfile.TemporaryDirectory(prefix="driftloop-backtest-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        replay = Replay(spec, spec_path, history, config, policy, work, progress)
        try:
            periods = replay.run()
            configured = (replay.log.score.copy() if replay.classes is None
                          else replay.served_probabilities())
            per_policy = {"configured": configured}
            if config.baselines:
                progress("reference policies: never retrain, retrain every period")
                per_policy["never"] = replay.policy_scores(1)
                per_policy["every_period"] = replay.every_period_scores()
            for row in periods:
                lo = replay.log.index_before(row.start)
                hi = replay.log.index_before(row.end)
                for name, scores in per_policy.items():
                    if name != "configured":
                        row.realised[name] = replay._metric(slice(lo, hi), scores[lo:hi])
            overall = _overall(replay, per_policy, config)
            cycles = replay.store.cycles_of(spec.model_name, limit=1_000_000)
            decisions = [_decision(d) for d in replay.registry.decisions]
            audit = replay.log.audit
            violations = sum(r.newest_label is not None and r.newest_label > r.now
                             for r in audit)
            found = replay.registry.find_versions(spec.model_name, {})
            versions = len(found)
            tags = {v.version: dict(v.tags) for v in found}
        finally:
            replay.store.close()
    return BacktestResult(spec, config, policy, replay.origin, replay.replay_start, periods,
                          overall, decisions, cycles, versions, len(audit), violations,
                          time.perf_counter() - started, tags, replay.classes)


def _overall(replay: Replay, per_policy: dict[str, np.ndarray], config: BacktestConfig,
             ) -> dict[str, dict[str, float | None]]:
    ts = replay.rows[replay.spec.timestamp_column]
    masks: dict[str, np.ndarray] = {"all": np.ones(len(ts), dtype=bool)}
    if config.stable_until is not None:
        masks["stable"] = (ts < pd.Timestamp(config.stable_until)).to_numpy()
    if config.onset is not None:
        masks["after_onset"] = (ts >= pd.Timestamp(config.onset)).to_numpy()
    out: dict[str, dict[str, float | None]] = {}
    for name, scores in per_policy.items():
        out[name] = {}
        for label, mask in masks.items():
            idx = np.flatnonzero(mask)
            out[name][label] = replay._metric(idx, scores[idx]) if len(idx) else None
    return out
