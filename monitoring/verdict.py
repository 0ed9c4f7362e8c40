"""The verdict: one drift and performance (realised and estimated) judgement for one model version
over one window. A versioned JSON document that ``driftloop drift-check`` writes,
logs to MLflow, posts to the controller and exposes as gauges.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VERDICT_SCHEMA_VERSION = 1

Status = Literal["ok", "drift", "degraded", "estimated_degraded", "insufficient_data"]
#: Every status, in precedence order after insufficient_data (monitoring/check.py, outcome).
STATUSES: tuple[str, ...] = ("ok", "drift", "degraded", "estimated_degraded", "insufficient_data")
#: What an ``estimated_degraded`` outcome asks of the controller (spec drift.estimated_action).
EstimatedAction = Literal["ticket", "retrain", "none"]
#: The level a drift share reached (spec drift.levels; docs/monitoring.md, "Drift levels").
DriftLevel = Literal["none", "ticket", "retrain"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnDrift(_Model):
    column: str
    kind: Literal["numerical", "categorical", "score"]
    method: str                      # Evidently's method id, e.g. "ks", "wasserstein", "jensenshannon"
    score: float                     # p-value for tests, distance for distance methods
    threshold: float
    drifted: bool
    # the summary engine: |score - exact score| <= score_bound (docs/monitoring.md); None on
    # the exact path
    score_bound: float | None = None
    # the population stability index of every feature (exact path), whatever its method, and
    # its band: below 0.1 none, 0.1 to 0.2 moderate, 0.2 and above significant
    psi: float | None = None
    psi_band: Literal["none", "moderate", "significant"] | None = None
    # spec drift.calibrated_thresholds: the threshold is the reference's own (mean + k sd of
    # the distance between resamples of it), not the method's fixed one
    calibrated: bool = False


class ColumnQuality(_Model):
    column: str
    missing_share: float = 0.0
    reference_missing_share: float = 0.0
    unseen_categories: list[str] = Field(default_factory=list)
    unseen_share: float = 0.0
    out_of_range_share: float = 0.0
    flagged: bool = False


class Performance(_Model):
    metric: str
    value: float | None              # realised on the labelled rows of the window
    baseline: float                  # the version's validation metric
    tolerance: float
    labelled_rows: int
    lower_is_better: bool = False
    degraded: bool = False


class EstimatedPerformance(_Model):
    """The label-free estimate (CBPE, kernel/calibration.py) of the window's performance."""

    metric: str
    value: float | None              # None: no estimate (``note`` says why)
    lower: float | None = None       # value -/+ band_sigmas sampling errors at this row count
    upper: float | None = None
    sampling_error: float | None = None
    band_sigmas: float = 3.0
    baseline: float | None = None    # the version's validation metric, as realised uses
    tolerance: float = 0.0
    rows: int = 0                    # scored rows the estimate read
    lower_is_better: bool = False
    degraded: bool = False           # the estimate is worse than baseline by more than tolerance
    # realised performance had enough labels (drift.min_labelled_rows): it decides, not this
    superseded: bool = False
    action: EstimatedAction = "ticket"
    method: str = "cbpe"
    calibration: str | None = None   # "isotonic"; None for a version without one
    metrics: dict[str, float] = Field(default_factory=dict)     # roc_auc, accuracy, f1, ...
    confusion: dict[str, float] = Field(default_factory=dict)   # expected tp fp tn fn shares
    note: str | None = None

    @property
    def alarming(self) -> bool:
        return self.degraded and not self.superseded


class MultivariateDrift(_Model):
    """A domain classifier told reference rows from current rows (monitoring/multivariate.py)."""

    method: str = "domain_classifier"
    auc: float                       # cross-validated ROC AUC, reference (0) vs current (1)
    threshold: float                 # from reference-vs-reference splits: mean + 3 std
    null_auc_mean: float
    null_auc_std: float
    rows_per_side: int
    drifted: bool
    top_features: list[str] = Field(default_factory=list)       # most separating first
    auc_drops: list[float] = Field(default_factory=list)        # AUC lost when each is permuted


class PredictionAlarm(_Model):
    """Prediction drift judged by itself (spec drift.prediction_drift): the statistic of the
    window against the validation slice, and a threshold from the validation slice alone
    (monitoring/check.py ``prediction_alarm``)."""

    statistic: str                   # wasserstein (normed, on scores) | tvd (predicted classes)
    value: float
    threshold: float                 # null_mean + sigmas * null_std
    null_mean: float                 # the statistic between resamples of the validation slice
    null_std: float
    sigmas: float
    resamples: int
    rows: int                        # window rows the statistic read
    reference_rows: int
    level: DriftLevel                # the level a drift here reaches
    drifted: bool


class SegmentDrift(_Model):
    """One segment of a segmented check (spec drift.segments): the window's rows of the
    segment against the reference's rows of the same segment."""

    segment: str
    rows: int
    reference_rows: int
    drift_share: float | None = None   # None: not judged (``skipped`` says why)
    drifted_columns: list[str] = Field(default_factory=list)
    level: DriftLevel | None = None
    skipped: str | None = None


class TextColumn(_Model):
    """A text column's checks: content drift (a domain classifier on the texts, Evidently's
    text_content_drift method), and by the version's text profile the out-of-distribution
    share and the mean out-of-vocabulary share, beside the reference's."""

    column: str
    method: str                          # abs_text_content_drift | perc_text_content_drift
    auc: float
    threshold: float
    drifted: bool
    typical_current: list[str] = Field(default_factory=list)
    typical_reference: list[str] = Field(default_factory=list)
    ood_share: float | None = None
    reference_ood_share: float | None = None
    oov_share: float | None = None
    reference_oov_share: float | None = None


class Verdict(_Model):
    schema_version: int = VERDICT_SCHEMA_VERSION
    model: str
    version: int
    window_start: datetime
    window_end: datetime
    created_at: datetime
    rows: int
    labelled_rows: int
    status: Status
    reasons: list[str] = Field(default_factory=list)
    drift_share: float | None = None          # share of drifted feature columns
    drift_share_threshold: float
    # the level the drift share reached: retrain (at or above drift_share_threshold, the
    # retrain level), ticket (at or above drift_ticket_threshold, spec drift.levels) or none
    drift_level: DriftLevel | None = None
    drift_ticket_threshold: float | None = None
    drifted_columns: list[str] = Field(default_factory=list)
    columns: list[ColumnDrift] = Field(default_factory=list)
    prediction_drift: ColumnDrift | None = None
    prediction_alarm: PredictionAlarm | None = None   # spec drift.prediction_drift only
    # spec drift.segments: what the window was segmented by, and each segment's result; the
    # verdict's columns and drift share are those of the segment that drifted most
    segmented_by: str | None = None
    segments: list[SegmentDrift] = Field(default_factory=list)
    multivariate: MultivariateDrift | None = None   # spec drift.domain_classifier only
    text_columns: list[TextColumn] = Field(default_factory=list)   # specs with text features
    data_quality: list[ColumnQuality] = Field(default_factory=list)
    quality_flagged: bool = False
    performance: Performance | None = None            # realised, on the labelled rows
    estimated: EstimatedPerformance | None = None     # estimated from the scores alone
    report_path: str | None = None
    report_sampled_rows: int | None = None    # set when the HTML report used a capped sample
    run_id: str | None = None
    # labels received in the window whose request id matches no prediction of the model
    # made in the window or DRIFTLOOP_LABEL_MATCH_DAYS before it (prediction-log source only)
    labels_unmatched: int | None = None
    source: str = "prediction_log"            # or the --current file
    # which path computed it: "exact" (every row in memory) or "summary" (merged column
    # summaries, monitoring/summary/; DRIFTLOOP_DRIFT_ENGINE)
    engine: str = "exact"

    @property
    def alarming(self) -> bool:
        return self.status in ("drift", "degraded", "estimated_degraded")

    @property
    def exit_code(self) -> int:
        return 1 if self.alarming else 0
