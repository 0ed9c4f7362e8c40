"""The drift-check core: reference + current frame -> Verdict. No I/O.

``check_frames`` is what ``driftloop drift-check`` (monitoring/job.py), the
controller and the backtest call. Per-column drift uses the fast statistics
(monitoring/stats.py), identical to Evidently's; methods the fast path lacks fall back
to Evidently (monitoring/drift.py, imported only then).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from kernel.calibration import (
    BAND_SIGMAS,
    REPORTED,
    Calibration,
    expected_confusion,
    expected_metric,
)
from kernel.metrics import metric_value, multiclass_value
from kernel.segments import segment_keys
from kernel.spec import TIME_SEGMENTS, DatasetSpec
from kernel.text import TextProfile, TextStats
from monitoring import stats
from monitoring.quality import QualityThresholds, ReferenceProfile, column_quality
from monitoring.verdict import (
    ColumnDrift,
    ColumnQuality,
    DriftLevel,
    EstimatedPerformance,
    MultivariateDrift,
    Performance,
    PredictionAlarm,
    SegmentDrift,
    Status,
    TextColumn,
    Verdict,
)

SCORE_COLUMN = "score"
LABEL_COLUMN = "label"
PREDICTION_COLUMN = "prediction"          # a multi-class model's predicted class, as text
PROBABILITIES_COLUMN = "probabilities"    # its class probabilities, in the version's order


@dataclass
class Reference:
    """What a version brings to a check: its spec, reference features, validation scores,
    metrics and score calibration (None for versions trained before label-free estimates).
    Sorted columns and the quality profile are computed once and reused.

    A multi-class version brings its ``classes`` (predict_proba order) and its validation
    slice's predicted classes (the class-drift reference); a version with text columns
    their profiles (kernel/text.py), which turn each text column into descriptor columns
    (``<column>:length``, ...) for drift."""

    spec: DatasetSpec
    features: pd.DataFrame
    validation_scores: np.ndarray | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    calibration: Calibration | None = None
    classes: tuple[str, ...] | None = None
    validation_predictions: pd.Series | None = None
    text_profiles: Mapping[str, TextProfile] = field(default_factory=dict)

    @classmethod
    def from_bundle(cls, bundle: Any) -> Reference:
        """From a ``registry.bundle.Bundle`` (or anything with spec/reference/validation/metrics
        and, optionally, calibration)."""
        validation = bundle.validation
        scores = (validation[SCORE_COLUMN].to_numpy(dtype=float)
                  if SCORE_COLUMN in validation.columns else None)
        stored = getattr(bundle, "calibration", None)
        calibration = Calibration.from_dict(stored) if stored else None
        classes = getattr(bundle, "classes", None)
        predictions = (validation[PREDICTION_COLUMN].astype(str)
                       if classes is not None and PREDICTION_COLUMN in validation.columns
                       else None)
        return cls(bundle.spec, bundle.reference, scores, dict(bundle.metrics), calibration,
                   None if classes is None else tuple(str(c) for c in classes), predictions,
                   dict(getattr(bundle, "text_profiles", None) or {}))

    def kind(self, column: str) -> stats.Kind:
        return "categorical" if column in self.spec.features.categorical else "numerical"

    @property
    def profiled_text(self) -> list[str]:
        """The text columns with a profile (a version without one has no descriptors)."""
        return [c for c in self.spec.features.text if c in self.text_profiles]

    @property
    def drift_columns(self) -> list[str]:
        """What per-column drift compares: the tabular features, then each profiled text
        column's descriptors."""
        from monitoring.text_drift import descriptor_columns

        return [*self.spec.features.tabular,
                *(d for c in self.profiled_text for d in descriptor_columns(c))]

    def text_stats(self, frame: pd.DataFrame) -> dict[str, TextStats]:
        """The descriptors and OOD flags of ``frame``'s profiled text columns, each text split
        into words once (monitoring/text_drift.py ``text_stats_of``); none without any."""
        if not self.profiled_text:
            return {}
        from monitoring.text_drift import text_stats_of

        return text_stats_of(frame, {c: self.text_profiles[c] for c in self.profiled_text})

    @cached_property
    def reference_text_stats(self) -> dict[str, TextStats]:
        return self.text_stats(self.features)

    def drift_frame(self, frame: pd.DataFrame,
                    texts: Mapping[str, TextStats] | None = None) -> pd.DataFrame:
        """``frame``'s tabular features plus the descriptor columns of its texts (``texts``:
        its :meth:`text_stats`, when the caller has them)."""
        if not self.profiled_text:
            return frame
        from monitoring.text_drift import descriptor_frame

        extra = descriptor_frame(frame, {c: self.text_profiles[c] for c in self.profiled_text},
                                 self.text_stats(frame) if texts is None else texts)
        return pd.concat([frame[self.spec.features.tabular], extra], axis=1)

    @cached_property
    def reference_drift_frame(self) -> pd.DataFrame:
        return self.drift_frame(self.features, self.reference_text_stats)

    @cached_property
    def samples(self) -> dict[str, stats.Sample]:
        frame = self.reference_drift_frame
        return {c: stats.sample_of(frame[c], self.kind(c)) for c in self.drift_columns}

    @cached_property
    def prediction_sample(self) -> stats.Sample | None:
        """The validation slice's predicted classes (multi-class versions)."""
        if self.validation_predictions is None:
            return None
        return stats.sample_of(self.validation_predictions, "categorical")

    @cached_property
    def score_sample(self) -> stats.NumericSample | None:
        return None if self.validation_scores is None else stats.NumericSample(self.validation_scores)

    @cached_property
    def distance_nulls(self) -> dict[tuple[str, str, int], tuple[float, float]]:
        """Calibrated thresholds' null (mean, sd) by (column, method, window rows), filled on
        use (:func:`calibrate`)."""
        return {}

    @cached_property
    def null_aucs(self) -> dict[int, list[float]]:
        """The domain classifier's reference-vs-reference AUCs by rows a side (filled on use)."""
        return {}

    @cached_property
    def segment_references(self) -> dict[str, Reference] | None:
        """The reference split by the spec's ``drift.segments`` (kernel/segments.py keys):
        one Reference per segment, built once. None when the spec has no segments or the
        reference cannot be segmented (a time segment on a reference without timestamps:
        a version trained before segments were set)."""
        segments = self.spec.drift.segments
        if segments is None or segment_column(self.features, self.spec) is None:
            return None
        keys = segment_keys(self.features, self.spec, segment_column(self.features, self.spec))
        return {str(key): Reference(self.spec, self.features[(keys == key).to_numpy()]
                                    .reset_index(drop=True), text_profiles=self.text_profiles)
                for key in keys.unique()}

    @cached_property
    def profile(self) -> ReferenceProfile:
        spec = self.spec
        return ReferenceProfile.of(self.features, spec.features.numerical, spec.features.categorical)


def _to_result(r: stats.ColumnResult, calibrated: bool = False) -> ColumnDrift:
    score = r.score if np.isfinite(r.score) else (0.0 if r.method in ("ks", "chisquare", "z")
                                                   else 1.0)
    return ColumnDrift(column=r.column, kind=r.kind, method=r.method, score=float(score),
                       threshold=float(r.threshold), drifted=bool(r.drifted),
                       calibrated=calibrated)


def current_samples(reference: Reference, current: pd.DataFrame,
                    texts: Mapping[str, TextStats] | None = None) -> dict[str, stats.Sample]:
    """``current`` is the window, or already its drift frame (descriptor columns in it);
    ``texts`` its ``reference.text_stats(current)`` when the caller has them."""
    frame = current if all(c in current.columns for c in reference.drift_columns) \
        else reference.drift_frame(current, texts)
    return {c: stats.sample_of(frame[c], reference.kind(c)) for c in reference.drift_columns}


def feature_drift(reference: Reference, current: pd.DataFrame,
                  samples: dict[str, stats.Sample] | None = None) -> list[stats.ColumnResult]:
    """Per-column drift of every drift column (features; a text column's descriptors), with
    the spec's per-column overrides."""
    spec = reference.spec
    samples = samples or current_samples(reference, current)
    out = []
    for col in reference.drift_columns:
        kind = reference.kind(col)
        override = spec.drift.per_column.get(col)
        method = override.method if override else None
        threshold = override.threshold if override else None
        cur = samples[col]
        try:
            result = stats.column_drift(col, reference.samples[col], cur, kind,
                                        method=method, threshold=threshold)
            if spec.drift.calibrated_thresholds is not None and threshold is None:
                result = calibrate(reference, result, cur)
            if col not in spec.features.tabular:
                result = _descriptor_significance(result, reference.samples[col], cur)
            out.append(result)
        except stats.UnsupportedMethod:
            from monitoring import drift  # Evidently, only for methods the fast path lacks

            out.append(drift.column_drift(col, reference.features[col], current[col], kind,
                                          method=str(method), threshold=threshold))
    return out


#: Methods whose score is a distance (drift at or above the threshold): the ones a calibrated
#: threshold replaces. P-value tests keep their significance level.
DISTANCE_METHODS = frozenset({"wasserstein", "jensenshannon", "psi"})
#: A resample draws at most this many rows a side (more: a slightly higher threshold).
CALIBRATION_ROWS = 20_000


def calibrate(reference: Reference, result: stats.ColumnResult,
              cur: stats.Sample) -> stats.ColumnResult:
    """``result`` with its threshold set from the reference alone (spec
    drift.calibrated_thresholds): the mean plus ``sigmas`` standard deviations of the same
    distance between two resamples of the column's reference sample, one of the reference's
    size and one of the window's (each at most ``CALIBRATION_ROWS``), as NannyML sets its
    thresholds from the reference's chunk-to-chunk variation. A distance of an unchanged
    world then alarms about as often whatever the window's size, where a fixed threshold
    alarms on small windows from sampling noise alone. P-value tests are left as they are."""
    settings = reference.spec.drift.calibrated_thresholds
    ref = reference.samples[result.column]
    if settings is None or result.method not in DISTANCE_METHODS or not ref.n or not cur.n:
        return result
    drawn_ref, drawn_cur = min(ref.n, CALIBRATION_ROWS), min(cur.n, CALIBRATION_ROWS)
    key = (result.column, result.method, drawn_cur)
    if key not in reference.distance_nulls:
        rng = np.random.default_rng(23)
        values = []
        for _ in range(settings.resamples):
            a, b = _resample(ref, drawn_ref, rng), _resample(ref, drawn_cur, rng)
            values.append(stats.column_drift(result.column, a, b, result.kind,
                                             method=result.method).score)
        null = np.asarray(values, dtype=float)
        reference.distance_nulls[key] = (float(null.mean()), float(null.std(ddof=1)))
    mean, std = reference.distance_nulls[key]
    limit = mean + settings.sigmas * std
    return stats.ColumnResult(result.column, result.kind, result.method, result.score,
                              limit, bool(result.score >= limit))


def _calibrated(spec: DatasetSpec, result: stats.ColumnResult) -> bool:
    """Whether :func:`calibrate` set ``result``'s threshold."""
    override = spec.drift.per_column.get(result.column)
    return (spec.drift.calibrated_thresholds is not None
            and (override is None or override.threshold is None)
            and result.method in {*DISTANCE_METHODS, DESCRIPTOR_METHOD})


def _resample(sample: stats.Sample, n: int, rng: np.random.Generator) -> stats.Sample:
    """``n`` rows drawn with replacement from ``sample``'s non-missing values."""
    if isinstance(sample, stats.NumericSample):
        return stats.NumericSample(rng.choice(sample.values, n))
    values, counts = sample.factorized
    return stats.CategoricalSample.from_counts(values, rng.multinomial(n, counts / counts.sum()))


#: A text descriptor's distance drift that must also be significant (docs/monitoring.md).
DESCRIPTOR_METHOD = "wasserstein_ks"


def _descriptor_significance(result: stats.ColumnResult, ref: stats.Sample,
                             cur: stats.Sample) -> stats.ColumnResult:
    """A text descriptor compared by normed Wasserstein (a reference of more than 1,000 rows:
    method ``wasserstein_ks``, the score the distance) drifts when the distance reaches its
    threshold *and* the two-sample KS test says the window's values are not a sample of the
    reference's distribution (p below ``KS_SIGNIFICANCE``). The distance alone ignores the
    window's size, and the four descriptors of one text move together: a few hundred texts
    that happen to be longer than usual flag three or four of them at once, a dataset-drift
    alarm from sampling noise. On large windows any distance above the threshold is
    significant: the verdict is the distance's."""
    if result.method != "wasserstein" or not isinstance(ref, stats.NumericSample) or \
            not isinstance(cur, stats.NumericSample):
        return result
    drifted = result.drifted and stats.ks_p(ref, cur) < KS_SIGNIFICANCE  # KS only when needed
    return stats.ColumnResult(result.column, result.kind, DESCRIPTOR_METHOD, result.score,
                              result.threshold, bool(drifted))


#: The KS p-value below which a descriptor's distance drift is significant.
KS_SIGNIFICANCE = 0.05


def text_columns(reference: Reference, current: pd.DataFrame,
                 texts: Mapping[str, TextStats] | None = None) -> list[TextColumn]:
    """Each text column: content drift (a domain classifier on the texts, as Evidently's
    text_content_drift), the out-of-distribution share by the version's rule against the
    reference's, and the mean OOV share of both sides. ``texts``: the window's
    ``reference.text_stats(current)`` when the caller has them (the descriptors' pass)."""
    from monitoring.text_drift import content_drift

    if texts is None:
        texts = reference.text_stats(current)
    out = []
    for column in reference.spec.features.text:
        content = content_drift(column, reference.features[column].tolist(),
                                current[column].tolist())
        row: dict[str, Any] = dict(
            column=column, method=content.method, auc=content.auc,
            threshold=content.threshold, drifted=content.drifted,
            typical_current=content.typical_current,
            typical_reference=content.typical_reference)
        if column in reference.text_profiles:
            cur, ref = texts[column], reference.reference_text_stats[column]
            row.update(ood_share=cur.ood_share, reference_ood_share=ref.ood_share,
                       oov_share=cur.mean_oov, reference_oov_share=ref.mean_oov)
        out.append(TextColumn(**row))
    return out


#: Class drift's test on a validation slice of at most ``stats.SMALL_REFERENCE_ROWS`` rows
#: with three classes or more predicted (docs/monitoring.md, "Text columns and multi-class
#: models").
HOMOGENEITY = "chisquare_homogeneity"


def class_drift(reference: Reference, current: pd.DataFrame) -> ColumnDrift | None:
    """A multi-class model's predicted classes against its validation slice's.

    Evidently's choice of method by the reference's size, with one change: where it would
    take its chi-square goodness-of-fit test (a small validation slice, three classes or
    more), the chi-square test of homogeneity on both sides' counts (:func:`homogeneity_p`).
    The goodness-of-fit test takes the validation slice's class shares as exact; they are a
    sample too, so with a few hundred validation rows it flags windows of an unchanged world
    far more often than its 5% (docs/monitoring.md)."""
    if reference.prediction_sample is None or PREDICTION_COLUMN not in current.columns:
        return None
    predicted = current[PREDICTION_COLUMN]
    predicted = predicted.where(predicted.isna(), predicted.astype(str))
    ref, cur = reference.prediction_sample, stats.sample_of(predicted, "categorical")
    if ref.n and cur.n and stats.default_method(ref, cur, "categorical") == "chisquare":
        limit = stats.DEFAULT_THRESHOLDS["chisquare"]
        p = homogeneity_p(ref, cur)
        return ColumnDrift(column=PREDICTION_COLUMN, kind="categorical", method=HOMOGENEITY,
                           score=p, threshold=limit, drifted=p < limit)
    return _to_result(stats.column_drift(PREDICTION_COLUMN, ref, cur, "categorical"))


def homogeneity_p(ref: stats.Sample, cur: stats.Sample) -> float:
    """The p-value of Pearson's chi-square test of homogeneity (no continuity correction) on
    the 2 x k table of both samples' counts over the values either has: the null is that
    both are drawn from one distribution, whose shares are estimated from both sides, so
    the reference's own sampling error is part of the test. scipy's ``chi2_contingency``."""
    from scipy.stats import chi2_contingency

    ref_values, ref_counts = ref.factorized
    cur_values, cur_counts = cur.factorized
    ref_of = dict(zip(ref_values.tolist(), ref_counts.tolist(), strict=True))
    cur_of = dict(zip(cur_values.tolist(), cur_counts.tolist(), strict=True))
    keys = [k for k in dict.fromkeys([*ref_of, *cur_of]) if ref_of.get(k, 0) + cur_of.get(k, 0)]
    if len(keys) < 2:
        return 1.0  # one value on both sides: nothing moved
    table = np.array([[ref_of.get(k, 0) for k in keys], [cur_of.get(k, 0) for k in keys]])
    return float(chi2_contingency(table, correction=False).pvalue)


def realised_metric(spec: DatasetSpec, metric: str, labelled: pd.DataFrame,
                    classes: tuple[str, ...] | list[str] | None) -> float | None:
    """``metric`` on labelled rows (the log's ``label`` and ``score`` or ``probabilities``),
    decoded by the spec's one decoder (kernel/labels.py). Labels it cannot read, and rows
    whose class probabilities do not fit ``classes``, are left out; None when nothing is
    left, when a multi-class spec has no classes or no probabilities, or when the metric is
    undefined (one class only)."""
    if spec.is_multiclass:
        if classes is None or PROBABILITIES_COLUMN not in labelled.columns:
            return None
        y = spec.class_codec(classes).decode_many(labelled[LABEL_COLUMN], strict=False)
        rows = list(labelled[PROBABILITIES_COLUMN])
        fits = np.array([p is not None and len(p) == len(classes) for p in rows], dtype=bool)
        keep = (y >= 0) & fits
        if not keep.any():
            return None
        matrix = np.array([list(rows[i]) for i in np.flatnonzero(keep)], dtype=float)
        value = multiclass_value(metric, y[keep], matrix)
    else:
        y = spec.labels.decode_many(labelled[LABEL_COLUMN], strict=False)
        known = y >= 0
        value = metric_value(metric, y[known],
                             labelled[SCORE_COLUMN].to_numpy(dtype=float)[known])
    return float(value) if np.isfinite(value) else None


def worse_by(value: float, baseline: float, *, lower_is_better: bool) -> float:
    """How much worse ``value`` is than ``baseline`` (positive: worse)."""
    return value - baseline if lower_is_better else baseline - value


def performance(reference: Reference, current: pd.DataFrame) -> Performance | None:
    spec = reference.spec
    baseline = reference.metrics.get(spec.metric)
    if baseline is None or LABEL_COLUMN not in current.columns or SCORE_COLUMN not in current:
        return None
    labelled = current[current[LABEL_COLUMN].notna() & current[SCORE_COLUMN].notna()]
    tolerance = spec.drift.performance_tolerance
    value = None
    if len(labelled) >= spec.drift.min_labelled_rows:
        value = realised_metric(spec, spec.metric, labelled, reference.classes)
    worse = None if value is None else worse_by(value, float(baseline),
                                                 lower_is_better=spec.lower_is_better)
    return Performance(metric=spec.metric, value=value, baseline=float(baseline),
                       tolerance=tolerance, labelled_rows=len(labelled),
                       lower_is_better=spec.lower_is_better,
                       degraded=worse is not None and worse > tolerance)


def estimated_performance(reference: Reference, current: pd.DataFrame,
                          realised: Performance | None = None) -> EstimatedPerformance | None:
    """CBPE (kernel/calibration.py) on the window's scores: the spec's metric and
    ``REPORTED`` ones, the expected confusion matrix (shares of rows) and a band of
    ``BAND_SIGMAS`` sampling errors. ``superseded`` when ``realised`` had enough labels.
    None without a score column; a value of None, with the reason, for a version without a
    calibration or without a baseline."""
    spec = reference.spec
    if SCORE_COLUMN not in current.columns:
        return None
    baseline = reference.metrics.get(spec.metric)
    tolerance = spec.drift.performance_tolerance
    base: dict[str, Any] = dict(metric=spec.metric, baseline=None if baseline is None else float(baseline),
                tolerance=tolerance, lower_is_better=spec.lower_is_better,
                action=spec.drift.estimated_action, band_sigmas=BAND_SIGMAS,
                superseded=realised is not None and realised.value is not None)
    calibration = reference.calibration
    if calibration is None and spec.is_multiclass:
        return EstimatedPerformance(**base, value=None, note="no estimate: label-free "
                                    "estimates (CBPE) are for binary models")
    if calibration is None:
        return EstimatedPerformance(**base, value=None, note="no estimate: the version has no "
                                    "score calibration (trained before label-free estimates)")
    scores = current[SCORE_COLUMN].to_numpy(dtype=float)
    scores = scores[np.isfinite(scores)]
    if not scores.size:
        return EstimatedPerformance(**base, value=None, calibration=calibration.method,
                                    note="no estimate: no scored rows in the window")
    p = calibration.apply(scores)
    confusion = expected_confusion(p, scores)
    names = list(dict.fromkeys([spec.metric, *REPORTED]))
    values = {m: expected_metric(m, p, scores, confusion) for m in names}
    value = values[spec.metric]
    if not np.isfinite(value):
        return EstimatedPerformance(**base, value=None, calibration=calibration.method,
                                    rows=int(scores.size), note=f"no estimate: expected "
                                    f"{spec.metric} is undefined on this window")
    error = calibration.sampling_error(spec.metric, int(scores.size))
    lower = upper = None
    if error is not None:
        lower, upper = value - BAND_SIGMAS * error, value + BAND_SIGMAS * error
        if spec.metric != "log_loss":  # every other metric lies in [0, 1]
            lower, upper = max(lower, 0.0), min(upper, 1.0)
    worse = None if baseline is None else (value - baseline if spec.lower_is_better
                                           else baseline - value)
    n = float(scores.size)
    return EstimatedPerformance(
        **base, value=float(value), lower=lower, upper=upper, sampling_error=error,
        rows=int(scores.size), degraded=worse is not None and worse > tolerance,
        calibration=calibration.method,
        metrics={m: float(v) for m, v in values.items() if np.isfinite(v)},
        confusion={k: v / n for k, v in confusion.items()},
        note=None if baseline is not None else "no baseline metric: the estimate judges nothing")


def outcome(perf: Performance | None, estimated: EstimatedPerformance | None, *,
            dataset_drift: bool, quality_flagged: bool) -> Status:
    """The verdict's status: realised degradation, then drift (data drift or data quality),
    then a degraded estimate (only while realised performance lacks labels: realised always
    wins), then ok."""
    if perf is not None and perf.degraded:
        return "degraded"
    if dataset_drift or quality_flagged:
        return "drift"  # prediction drift alone is reported, not alarmed (docs/monitoring.md)
    if estimated is not None and estimated.alarming and not (perf is not None
                                                             and perf.value is not None):
        return "estimated_degraded"
    return "ok"


def _window(current: pd.DataFrame, spec: DatasetSpec, now: datetime) -> tuple[datetime, datetime]:
    for col in ("ts", spec.timestamp_column):
        if col in current.columns and len(current):
            ts = pd.to_datetime(current[col], utc=True, errors="coerce").dropna()
            if len(ts):
                return ts.min().to_pydatetime(warn=False), ts.max().to_pydatetime(warn=False)
    return now, now


def check_frames(reference: Reference, current: pd.DataFrame, *, model: str | None = None,
                 version: int = 0, window_start: datetime | None = None,
                 window_end: datetime | None = None, now: datetime | None = None,
                 source: str = "prediction_log",
                 quality: QualityThresholds = QualityThresholds()) -> Verdict:
    """One verdict for ``current`` (features, optional ``score`` and ``label`` columns)."""
    spec = reference.spec
    now = now or datetime.now(UTC)
    if window_start is None or window_end is None:
        start, end = _window(current, spec, now)
        window_start, window_end = window_start or start, window_end or end
    labelled = int(current[LABEL_COLUMN].notna().sum()) if LABEL_COLUMN in current else 0
    base = dict(model=model or spec.model_name, version=int(version), window_start=window_start,
                window_end=window_end, created_at=now, rows=len(current), labelled_rows=labelled,
                drift_share_threshold=spec.drift.retrain_share,
                drift_ticket_threshold=spec.drift.ticket_share, source=source)
    if len(current) < spec.drift.min_rows:
        return Verdict(**base, status="insufficient_data",
                       reasons=[f"{len(current)} rows in the window, fewer than "
                                f"drift.min_rows={spec.drift.min_rows}: no verdict on drift"])
    missing = [c for c in spec.features.all if c not in current.columns]
    if missing:
        from kernel.errors import DataError

        raise DataError(f"current data lacks feature columns {missing}")
    profiled = reference.text_stats(current)   # each text split into words once
    texts = text_columns(reference, current, profiled) if spec.features.text else []
    segmented = segmented_drift(reference, current, texts)
    if segmented.judged is not None:   # the segment that drifted most speaks for the window
        judged, results, samples = segmented.judged
    else:
        judged = reference
        samples = current_samples(reference, current, profiled)
        results = feature_drift(reference, current, samples)
    share = _share(results, texts)
    columns = [_with_psi(_to_result(r, _calibrated(spec, r)), judged.samples[r.column],
                         samples[r.column]) for r in results]
    drifted = [r.column for r in results if r.drifted] + [t.column for t in texts if t.drifted]
    prediction = class_drift(reference, current)
    if prediction is None and reference.score_sample is not None and \
            SCORE_COLUMN in current.columns and reference.classes is None:
        pred = stats.column_drift(SCORE_COLUMN, reference.score_sample,
                                  stats.NumericSample(current[SCORE_COLUMN]), "score")
        prediction = _to_result(pred)
    # quality reads the whole window: a judged segment's samples are only its rows
    quality_rows = column_quality(reference.profile, current, spec.features.numerical,
                                  spec.features.categorical, quality,
                                  samples if segmented.judged is None else None)
    perf = performance(reference, current)
    estimated = estimated_performance(reference, current, perf)
    level = drift_level(share, spec.drift.retrain_share, spec.drift.ticket_share)
    multivariate = multivariate_drift(reference, current)
    if multivariate is not None and multivariate.drifted and level == "none":
        level = "ticket"   # a change no single column shows: a person looks first
    alarm = prediction_alarm(reference, current)
    if alarm is not None and alarm.drifted and LEVEL_ORDER[alarm.level] > LEVEL_ORDER[level]:
        level = alarm.level   # prediction drift by itself (spec drift.prediction_drift)
    reasons = [*segmented.reasons,
               *_reasons(share, spec.drift.retrain_share, drifted, prediction, quality_rows,
                         perf)]
    if alarm is not None and alarm.drifted:
        reasons.append(alarm_reason(alarm))
    ticket_share = spec.drift.ticket_share
    if level == "ticket" and ticket_share is not None and share >= ticket_share:
        reasons.insert(0, f"data drift at the ticket level: share {share:.2f} >= "
                       f"{ticket_share:.2f} (a retrain at {spec.drift.retrain_share:.2f})"
                       f": a ticket, no retrain ({', '.join(drifted)})")
    reasons += text_reasons(texts)
    reasons += estimate_reasons(estimated)
    if multivariate is not None and multivariate.drifted:
        reasons.append(f"multivariate drift: a domain classifier tells current rows from the "
                       f"reference with ROC AUC {multivariate.auc:.3f} > "
                       f"{multivariate.threshold:.3f} (reference against itself "
                       f"{multivariate.null_auc_mean:.3f}); most separating: "
                       f"{', '.join(multivariate.top_features) or '-'}")
    flagged = any(q.flagged for q in quality_rows)
    status = outcome(perf, estimated, dataset_drift=level != "none", quality_flagged=flagged)
    return Verdict(**base, status=status, reasons=reasons, drift_share=share, drift_level=level,
                   drifted_columns=drifted, columns=columns, prediction_drift=prediction,
                   prediction_alarm=alarm, segments=segmented.segments,
                   segmented_by=None if spec.drift.segments is None else spec.drift.segments.by,
                   data_quality=quality_rows, quality_flagged=flagged, performance=perf,
                   estimated=estimated, multivariate=multivariate, text_columns=texts)


# --- segments (spec drift.segments; docs/monitoring.md, "Segments") ------------------------


def segment_column(frame: pd.DataFrame, spec: DatasetSpec) -> str | None:
    """The column of ``frame`` that segments read: a categorical ``by`` itself; for a time
    segment the spec's timestamp column, else the prediction log's ``ts`` (the time a
    prediction was made); None when ``frame`` has neither."""
    segments = spec.drift.segments
    if segments is None:
        return None
    if segments.by not in TIME_SEGMENTS:
        return segments.by if segments.by in frame.columns else None
    return next((c for c in (spec.timestamp_column, "ts") if c in frame.columns), None)


@dataclass
class Segmented:
    """What :func:`segmented_drift` found: each segment's result, the judged segment's
    (reference, drift results, window samples) when one was judged, and reasons."""

    segments: list[SegmentDrift] = field(default_factory=list)
    judged: tuple[Reference, list[stats.ColumnResult], dict[str, stats.Sample]] | None = None
    reasons: list[str] = field(default_factory=list)


def segmented_drift(reference: Reference, current: pd.DataFrame,
                    texts: list[TextColumn]) -> Segmented:
    """Each segment of the window against the reference rows of its own segment. A segment
    with fewer than ``segments.min_rows`` rows on either side is skipped (reported, not
    judged). The segment with the largest drift share is the window's result (its columns,
    share and level), so a weekend window is compared with the weekends of the reference,
    not with a reference that is five-sevenths weekdays. Without a judged segment the
    window is compared with the whole reference, and a reason says so."""
    spec = reference.spec
    settings = spec.drift.segments
    if settings is None:
        return Segmented()
    by_segment = reference.segment_references
    column = segment_column(current, spec)
    if by_segment is None or column is None:
        side = "the version's reference" if by_segment is None else "the window"
        return Segmented(reasons=[f"segments by {settings.by}: {side} has no "
                                  f"{'timestamps' if settings.by in TIME_SEGMENTS else settings.by}"
                                  " (a version trained before drift.segments was set?): "
                                  "compared with the whole reference"])
    keys = segment_keys(current, spec, column)
    out = Segmented()
    best: tuple[float, Reference, list[stats.ColumnResult], dict[str, stats.Sample]] | None = None
    for key in sorted(keys.unique().tolist()):
        part = current[(keys == key).to_numpy()]
        ref = by_segment.get(str(key))
        ref_rows = 0 if ref is None else len(ref.features)
        if len(part) < settings.min_rows or ref_rows < settings.min_rows:
            out.segments.append(SegmentDrift(
                segment=str(key), rows=len(part), reference_rows=ref_rows,
                skipped=f"fewer than segments.min_rows={settings.min_rows} rows "
                f"({len(part)} in the window, {ref_rows} in the reference)"))
            continue
        assert ref is not None
        samples = current_samples(ref, part)
        results = feature_drift(ref, part, samples)
        share = _share(results, texts)
        out.segments.append(SegmentDrift(
            segment=str(key), rows=len(part), reference_rows=ref_rows, drift_share=share,
            drifted_columns=[r.column for r in results if r.drifted],
            level=drift_level(share, spec.drift.retrain_share, spec.drift.ticket_share)))
        if best is None or share > best[0]:
            best = (share, ref, results, samples)
    judged = [s for s in out.segments if s.drift_share is not None]
    if best is None:
        out.reasons.append(f"segments by {settings.by}: no segment had "
                           f"{settings.min_rows} rows on both sides: compared with the whole "
                           "reference")
        return out
    out.judged = best[1:]
    drifted = [s for s in judged if s.level not in (None, "none")]
    summary = ", ".join(f"{s.segment} {s.drift_share:.2f}" for s in judged)
    out.reasons.append(
        f"segments by {settings.by}: each compared with its own reference ({summary}); "
        + (f"drifted: {', '.join(s.segment for s in drifted)}" if drifted else "none drifted"))
    return out


# --- prediction drift by itself (spec drift.prediction_drift) -----------------------------

#: Resamples of the validation slice behind a prediction-drift threshold.
PREDICTION_RESAMPLES = 60
#: Window rows a resample draws at most (a larger window gets this threshold: a little
#: higher than its own, never lower).
PREDICTION_RESAMPLE_ROWS = 50_000

LEVEL_ORDER: dict[str, int] = {"none": 0, "ticket": 1, "retrain": 2}


def prediction_alarm(reference: Reference, current: pd.DataFrame) -> PredictionAlarm | None:
    """Prediction drift against a threshold set from the reference alone: the statistic
    (the normed Wasserstein distance of the scores; for a multi-class model the total
    variation distance of the predicted classes' shares) between the window and the
    validation slice, against the mean plus ``sigmas`` standard deviations of the same
    statistic between two resamples drawn from the validation slice, one of its size and
    one of the window's (the null: both sides from one distribution, each with its own
    sampling error). Seeded: one reference and window size give one threshold."""
    settings = reference.spec.drift.prediction_drift
    if settings is None:
        return None
    rng = np.random.default_rng(17)
    if reference.classes is not None:
        if reference.validation_predictions is None or PREDICTION_COLUMN not in current:
            return None
        labels = list(reference.classes)
        ref_counts = _class_counts(reference.validation_predictions, labels)
        cur_counts = _class_counts(current[PREDICTION_COLUMN], labels)
        n_ref, n_cur = int(ref_counts.sum()), int(cur_counts.sum())
        if not n_ref or not n_cur:
            return None
        shares = ref_counts / n_ref
        value = _tvd(ref_counts / n_ref, cur_counts / n_cur)
        drawn = min(n_cur, PREDICTION_RESAMPLE_ROWS)
        null = np.array([_tvd(rng.multinomial(n_ref, shares) / n_ref,
                              rng.multinomial(drawn, shares) / drawn)
                         for _ in range(PREDICTION_RESAMPLES)])
        statistic = "tvd"
    else:
        if reference.score_sample is None or SCORE_COLUMN not in current.columns:
            return None
        ref_sample = reference.score_sample
        cur_sample = stats.NumericSample(current[SCORE_COLUMN])
        n_ref, n_cur = ref_sample.n, cur_sample.n
        if not n_ref or not n_cur:
            return None
        value = stats.wasserstein_norm(ref_sample, cur_sample)
        drawn = min(n_cur, PREDICTION_RESAMPLE_ROWS)
        scale = max(ref_sample.std, 0.001)
        from scipy.stats import wasserstein_distance

        null = np.array([wasserstein_distance(rng.choice(ref_sample.values, n_ref),
                                              rng.choice(ref_sample.values, drawn)) / scale
                         for _ in range(PREDICTION_RESAMPLES)])
        statistic = "wasserstein"
    mean, std = float(null.mean()), float(null.std(ddof=1))
    threshold = mean + settings.sigmas * std
    return PredictionAlarm(statistic=statistic, value=float(value), threshold=threshold,
                           null_mean=mean, null_std=std, sigmas=settings.sigmas,
                           resamples=PREDICTION_RESAMPLES, rows=n_cur, reference_rows=n_ref,
                           level=settings.level, drifted=bool(value > threshold))


def _class_counts(values: pd.Series, labels: list[str]) -> np.ndarray:
    known = values.dropna().astype(str)
    counts = known.value_counts()
    return np.array([int(counts.get(c, 0)) for c in labels], dtype=float)


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def alarm_reason(alarm: PredictionAlarm) -> str:
    what = "score" if alarm.statistic == "wasserstein" else "predicted classes"
    return (f"prediction drift by itself: {what} {alarm.statistic} {alarm.value:.4f} > "
            f"{alarm.threshold:.4f} (validation resamples {alarm.null_mean:.4f} + "
            f"{alarm.sigmas:g} x {alarm.null_std:.4f}; {alarm.rows} rows): the "
            f"{alarm.level} level")


def _share(results: list[stats.ColumnResult], texts: list[TextColumn]) -> float:
    """The drifted share of every drift signal: each drift column (a text column's
    descriptors among them) and each text column's content drift."""
    total = len(results) + len(texts)
    if not total:
        return 0.0
    return (sum(1 for r in results if r.drifted) + sum(1 for t in texts if t.drifted)) / total


def text_reasons(texts: list[TextColumn]) -> list[str]:
    out = []
    for t in texts:
        if t.drifted:
            words = ", ".join(t.typical_current[:5]) or "-"
            out.append(f"text content drift on {t.column}: a classifier tells current texts "
                       f"from the reference with ROC AUC {t.auc:.3f} > {t.threshold:.3f} "
                       f"({t.method}); typical of now: {words}")
        if t.ood_share is not None and t.reference_ood_share is not None and \
                t.ood_share > t.reference_ood_share:
            out.append(f"{t.column}: {t.ood_share:.1%} of texts out of distribution "
                       f"(reference {t.reference_ood_share:.1%}; mean OOV share "
                       f"{t.oov_share or 0:.1%} vs {t.reference_oov_share or 0:.1%})")
    return out


def multivariate_drift(reference: Reference, current: pd.DataFrame) -> MultivariateDrift | None:
    """The domain classifier (monitoring/multivariate.py, scikit-learn imported only then)
    when the spec asks for it and both sides have 100 rows a side or more."""
    settings = reference.spec.drift.domain_classifier
    if settings is None or min(len(reference.features) // 2, len(current)) < 100:
        return None
    from monitoring.multivariate import domain_classifier, null_aucs

    spec = reference.spec
    num, cat = spec.features.numerical, spec.features.categorical
    rows = int(min(settings.sample_rows, len(reference.features) // 2, len(current)))
    if rows not in reference.null_aucs:
        reference.null_aucs[rows] = null_aucs(reference.features, num, cat, rows=rows,
                                              folds=settings.folds, seed=1)
    r = domain_classifier(reference.features, current, num, cat, sample_rows=rows,
                          folds=settings.folds, null=reference.null_aucs[rows])
    return MultivariateDrift(auc=r.auc, threshold=r.threshold, null_auc_mean=r.null_mean,
                             null_auc_std=r.null_std, rows_per_side=r.rows_per_side,
                             drifted=r.drifted, top_features=[n for n, _ in r.top_features],
                             auc_drops=[d for _, d in r.top_features])


def drift_level(share: float, retrain: float, ticket: float | None) -> DriftLevel:
    """The level a drift share reached: ``retrain`` at or above ``retrain``, ``ticket`` at or
    above ``ticket`` (spec drift.levels; None: one level), else ``none``."""
    if share >= retrain:
        return "retrain"
    if ticket is not None and share >= ticket:
        return "ticket"
    return "none"


def _with_psi(column: ColumnDrift, ref: stats.Sample, cur: stats.Sample) -> ColumnDrift:
    """The column's PSI (its score when PSI is its method) and band, beside its own method."""
    value = column.score if column.method == "psi" else stats.psi(ref, cur)
    if not np.isfinite(value):
        return column
    return column.model_copy(update={"psi": float(value), "psi_band": stats.psi_band(value)})


def estimate_reasons(estimated: EstimatedPerformance | None) -> list[str]:
    if estimated is None:
        return []
    if estimated.value is None:
        return [estimated.note or "no estimate"]
    band = ("" if estimated.lower is None
            else f", band [{estimated.lower:.4f}, {estimated.upper:.4f}]")
    base = ("" if estimated.baseline is None else f" vs validation {estimated.baseline:.4f} "
            f"(tolerance {estimated.tolerance})")
    if estimated.superseded:
        verdict = "reported; realised performance decides"
    elif estimated.degraded:
        verdict = f"degraded: {estimated.action}"
    else:
        verdict = "within tolerance"
    return [f"estimated {estimated.metric} {estimated.value:.4f}{band}{base} from "
            f"{estimated.rows} scores without labels ({verdict})"]


def _reasons(share: float, limit: float, drifted: list[str], prediction: ColumnDrift | None,
             quality_rows: list[ColumnQuality], perf: Performance | None) -> list[str]:
    out = []
    if share >= limit:
        out.append(f"data drift: {len(drifted)} drifted columns, share {share:.2f} >= {limit:.2f} "
                   f"({', '.join(drifted)})")
    elif drifted:
        out.append(f"drift below the dataset threshold on {', '.join(drifted)} "
                   f"(share {share:.2f} < {limit:.2f})")
    if prediction is not None and prediction.drifted:
        out.append(f"prediction drift: score {prediction.method} {prediction.score:.3g} "
                   f"(threshold {prediction.threshold:.3g})")
    for q in quality_rows:
        if not q.flagged:
            continue
        parts = []
        if q.missing_share - q.reference_missing_share > 0:
            parts.append(f"missing {q.missing_share:.1%} (reference {q.reference_missing_share:.1%})")
        if q.unseen_share:
            parts.append(f"unseen categories {q.unseen_categories} in {q.unseen_share:.1%} of rows")
        if q.out_of_range_share:
            parts.append(f"{q.out_of_range_share:.1%} outside the reference range")
        out.append(f"data quality: {q.column}: {'; '.join(parts)}")
    if perf is not None and perf.value is not None:
        verb = "degraded" if perf.degraded else "within tolerance"
        out.append(f"performance {verb}: {perf.metric} {perf.value:.4f} vs validation "
                   f"{perf.baseline:.4f} (tolerance {perf.tolerance}) on {perf.labelled_rows} "
                   "labelled rows")
    return out
