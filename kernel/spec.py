"""The dataset spec: one YAML file per model, validated with pydantic.

It names the registered model, the columns and their roles, the metric the
promotion gate uses and the estimator. Every part reads it: training fits to
it, serving builds the request schema from it, monitoring knows which columns
to check, the controller knows which metric to compare. A version carries its
spec as an artifact, so a version is self-describing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel.errors import SpecError
from kernel.labels import ClassCodec, LabelCodec

Metric = Literal["roc_auc", "log_loss", "accuracy", "f1", "average_precision", "brier",
                 "macro_f1"]

#: Metrics a multi-class spec (``classes:`` set) may name; ``macro_f1`` is its default.
MULTICLASS_METRICS: frozenset[str] = frozenset({"macro_f1", "accuracy", "log_loss"})

#: Metrics where a lower value is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier"})

#: Columns of the prediction log; features may not use these names.
RESERVED_COLUMNS: tuple[str, ...] = (
    "ts", "request_id", "model_name", "model_version", "score", "prediction",
    "shadow_version", "shadow_score", "latency_ms", "label", "label_received_at",
    "probabilities", "shadow_probabilities",
)

DriftMethod = Literal[
    "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "kl_div", "hellinger",
    "anderson", "cramer_von_mises", "empirical_mmd", "t_test", "mannw", "g_test", "fisher_exact",
    "TVD", "energy_distance", "ed",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    numerical: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    text: list[str] = Field(default_factory=list, description="Free-text columns (TF-IDF "
                            "at training; length, out-of-vocabulary share and content drift "
                            "in monitoring).")

    @property
    def all(self) -> list[str]:
        return [*self.numerical, *self.categorical, *self.text]

    @property
    def tabular(self) -> list[str]:
        """The numerical and categorical columns (every feature but text)."""
        return [*self.numerical, *self.categorical]


class TextSettings(_Strict):
    """How text columns are vectorised and when a request is out of distribution
    (docs/spec.md, "text")."""

    analyzer: Literal["word", "char_wb", "word+char"] = Field(
        "word+char", description="TF-IDF on word n-grams, character n-grams within word "
        "boundaries, or both side by side.")
    word_ngrams: tuple[int, int] = Field((1, 2), description="Word n-gram range.")
    char_ngrams: tuple[int, int] = Field((2, 4), description="Character n-gram range.")
    max_features: int = Field(50_000, ge=10, description="Vocabulary size per analyzer.")
    min_df: int = Field(2, ge=1, description="A term in fewer training rows is dropped.")
    ood_oov_share: float | None = Field(
        None, ge=0, le=1, description="A request whose share of word tokens out of the "
        "training vocabulary is above this is out of distribution; unset: the 99th "
        "percentile of the validation rows' shares, recorded with the version.")
    ood_patterns: list[str] = Field(
        default_factory=list, description="Regular expressions (case-insensitive); a text "
        "that matches one is out of distribution whatever its OOV share.")

    @field_validator("word_ngrams", "char_ngrams")
    @classmethod
    def _ngram_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high <= 8:
            raise ValueError(f"n-gram range must be 1 <= low <= high <= 8, got {list(value)}")
        return value

    @field_validator("ood_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"ood_patterns: {pattern!r} is not a regular expression: "
                                 f"{exc}") from None
        return value


class Estimator(_Strict):
    kind: Literal["logistic_regression", "hist_gradient_boosting"] = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)


class ColumnDriftSettings(_Strict):
    method: DriftMethod | None = None
    threshold: float | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _evidently_id(cls, value: Any) -> Any:
        # Evidently knows the energy distance as "ed"; the long name is accepted for it.
        return "ed" if value == "energy_distance" else value


class DriftLevels(_Strict):
    """Two levels of dataset drift (docs/spec.md, "drift.levels"): a share of drifted columns
    at or above ``ticket`` opens a ticket, at or above ``retrain`` is a retrain candidate."""

    ticket: float = Field(0.3, gt=0, le=1, description="Drift share for a ticket.")
    retrain: float = Field(0.6, gt=0, le=1, description="Drift share for a retrain.")

    @model_validator(mode="after")
    def _ordered(self) -> DriftLevels:
        if self.ticket > self.retrain:
            raise ValueError(f"levels: ticket {self.ticket} is above retrain {self.retrain}")
        return self


class DomainClassifierSettings(_Strict):
    """Multivariate drift by a domain classifier (docs/monitoring.md, "Multivariate drift")."""

    sample_rows: int = Field(5000, ge=100, description="Rows a side the classifier reads.")
    folds: int = Field(3, ge=2, le=10, description="Cross-validation folds.")


#: Timestamp buckets a spec may segment by; anything else names a categorical feature.
TIME_SEGMENTS: frozenset[str] = frozenset({"day_of_week", "hour_of_day", "weekend"})


class SegmentSettings(_Strict):
    """Segmented (seasonal) references (docs/monitoring.md, "Segments"): each window's rows
    are compared with the reference rows of their own segment."""

    by: str = Field(..., description="day_of_week, hour_of_day (buckets of hour_buckets "
                    "hours), weekend (Saturday and Sunday against the other days, UTC) of "
                    "the timestamp column, or a categorical feature.")
    hour_buckets: int = Field(6, ge=1, le=24, description="Width in hours of an hour_of_day "
                              "segment (24 must be a multiple of it).")
    min_rows: int = Field(100, ge=1, description="A segment with fewer rows in the window or "
                          "the reference is not judged on its own (reported as skipped).")

    @field_validator("hour_buckets")
    @classmethod
    def _divides_day(cls, value: int) -> int:
        if 24 % value:
            raise ValueError(f"hour_buckets must divide 24, got {value}")
        return value


class PredictionDriftSettings(_Strict):
    """Prediction drift that raises a verdict by itself (docs/monitoring.md, "Prediction
    drift")."""

    level: Literal["ticket", "retrain"] = Field(
        "ticket", description="The drift level a prediction drift alone reaches.")
    sigmas: float = Field(3.0, gt=0, description="Threshold: the mean plus this many standard "
                          "deviations of the statistic between resamples of the validation "
                          "slice (of the window's size) and the slice itself.")


class CalibratedThresholds(_Strict):
    """Distance thresholds set from the reference's own variation (docs/monitoring.md,
    "Calibrated thresholds")."""

    sigmas: float = Field(3.0, gt=0, description="A column drifts when its distance is above "
                          "the mean plus this many standard deviations of the distance "
                          "between resamples of its reference (of the window's size).")
    resamples: int = Field(30, ge=5, le=500, description="Resamples behind each threshold.")


class DriftSettings(_Strict):
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted columns for dataset drift.")
    min_rows: int = Field(200, ge=1, description="Fewer rows in a window: insufficient_data.")
    min_labelled_rows: int = Field(100, ge=1, description="Fewer labelled rows: no performance verdict.")
    per_column: dict[str, ColumnDriftSettings] = Field(default_factory=dict)
    performance_tolerance: float = Field(
        0.05, ge=0, description="Degraded when the realised metric is worse than the "
        "validation baseline by more than this (absolute).",
    )
    levels: DriftLevels | None = Field(
        None, description="Two drift levels (ticket, retrain); unset: one level, drift_share, "
        "the retrain threshold as before.")
    domain_classifier: DomainClassifierSettings | None = Field(
        None, description="Multivariate drift by a domain classifier (imports scikit-learn; "
        "unset: not run). Drift there raises the drift level to at least ticket.")
    segments: SegmentSettings | None = Field(
        None, description="Compare each window with the reference of its own segment (day of "
        "week, hour of day, weekend or a categorical column); unset: one reference.")
    calibrated_thresholds: CalibratedThresholds | None = Field(
        None, description="Replace the distance methods' fixed thresholds (Wasserstein, "
        "Jensen-Shannon, PSI) by mean + sigmas x sd of the distance between resamples of the "
        "reference (of its segment, with segments); unset: the methods' own thresholds.")
    prediction_drift: PredictionDriftSettings | None = Field(
        None, description="Let prediction drift raise a verdict by itself, at a threshold "
        "set from the reference; unset: prediction drift is reported, never alarmed.")
    estimated_action: Literal["ticket", "retrain", "none"] = Field(
        "ticket", description="What an estimated_degraded verdict (the label-free estimate "
        "worse than the baseline by more than performance_tolerance, without enough labels "
        "for a realised one) asks of the controller: ticket (recorded, an alert with "
        "driftloop_action none; no retrain), retrain, or none.",
    )

    @property
    def retrain_share(self) -> float:
        """The drift share of a retrain: ``levels.retrain`` when levels are set, else
        ``drift_share`` (specs written before levels keep their meaning)."""
        return self.levels.retrain if self.levels is not None else self.drift_share

    @property
    def ticket_share(self) -> float | None:
        """The drift share of a ticket: ``levels.ticket``; None without levels."""
        return self.levels.ticket if self.levels is not None else None


def _window_days(value: Any) -> Any:
    """``auto``, ``all``, a number of days, or ``"N days"`` / ``"Nd"``."""
    if isinstance(value, str) and value.strip() not in ("auto", "all"):
        text = value.strip().lower()
        for unit in (" days", " day", "days", "day", "d"):
            if text.endswith(unit):
                text = text[: -len(unit)].strip()
                break
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"window: expected auto, all or N days, got {value!r}") from None
    return value


class CoverageSettings(_Strict):
    """The coverage audit of a retraining set (docs/controller.md, "Coverage audit")."""

    min_decile_share: float = Field(
        0.02, ge=0, le=0.1, description="Each decile of the champion's validation scores must "
        "hold at least this share of the retraining rows (scored by the champion).")
    min_segment_share: float | None = Field(
        None, ge=0, le=1, description="With drift.segments: each segment of the champion's "
        "reference must hold at least this share of the retraining rows.")


class RetrainSettings(_Strict):
    """How a retrain chooses its rows (docs/spec.md, "retrain")."""

    window: Literal["auto", "all"] | float = Field(
        "auto", description="auto: a drift- or degraded-triggered retrain trains on the rows "
        "from the detected change onward (others keep the controller's window); all: every "
        "row; N days: the last N days.")
    min_rows: int = Field(3000, ge=1, description="With window auto after a change: fewer "
                          "labelled rows since the change and the retrain waits for labels.")
    max_wait_hours: float = Field(168.0, gt=0, description="How long a retrain waits for "
                                  "min_rows labelled rows since the change before it fails.")
    refit: bool = Field(True, description="After validation, refit the same estimator on "
                        "every row of the window (validation slice included): what serves.")

    coverage: CoverageSettings | None = Field(
        None, description="Audit each retraining set's coverage against the champion: below "
        "a floor the retrain fails with that reason instead of producing a version.")

    @field_validator("window", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        return _window_days(value)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, float) and not value > 0:
            raise ValueError(f"window: N days must be positive, got {value}")
        return value


class SloSettings(_Strict):
    """A model-performance SLO with an error budget (docs/slo.md)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$",
                             description="Label of its metrics and alerts; default "
                             "<metric>-<window_days>d.")
    metric: Metric | None = Field(None, description="Default: the spec's metric.")
    objective: float = Field(..., description="The metric must be at least this (at most, "
                             "for log_loss and brier) on the rolling window.")
    window_days: float = Field(7.0, gt=0, description="The rolling labelled window.")
    budget: float = Field(0.995, gt=0, lt=1, description="Target share of good time over "
                          "period_days; 1 - budget is the error budget.")
    period_days: float = Field(30.0, gt=0, description="The budget's period.")
    estimated: bool = Field(False, description="Count the label-free estimate (marked "
                            "estimated) when the window lacks labels for a realised value.")
    fast_burn: Literal["page", "ticket"] = Field(
        "page", description="Severity of the fast-burn alert (14.4x over 1 h and 5 min).")
    slow_burn: Literal["page", "ticket"] = Field(
        "ticket", description="Severity of the slow-burn alerts (6x over 6 h and 30 min, 1x "
        "over 3 d and 6 h).")
    on_exhausted: Literal["retrain", "ticket", "none"] = Field(
        "retrain", description="What a burned budget asks of the controller.")

    def label(self, spec_metric: str) -> str:
        """The SLO's name: its own, else ``<metric>-<window_days>d``."""
        return self.name or f"{self.metric or spec_metric}-{self.window_days:g}d"


class HoldoutSettings(_Strict):
    """A static, fully labelled holdout re-scored by the champion on a schedule
    (docs/controller.md, "Static holdout")."""

    path: str = Field(..., description="CSV or Parquet with the features and the target, "
                      "relative to the spec file.")
    every_hours: float = Field(24.0, gt=0, description="How often the champion re-scores it "
                               "(and once after each promotion).")
    tolerance: float | None = Field(
        None, ge=0, description="A drop worse than this against the previous champion's "
        "holdout metric is degraded; default drift.performance_tolerance.")
    action: Literal["retrain", "ticket", "none"] = Field(
        "retrain", description="What a degraded holdout asks of the controller.")


class DatasetSpec(_Strict):
    """What a model is trained on and judged by."""

    model_name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    target: str
    classes: list[str | int] | Literal["infer"] | None = Field(
        None, description="Multi-class target: the classes listed, or infer (the training "
        "rows' classes, recorded with the version). Unset: binary, by positive_label.")
    positive_label: Any = 1
    negative_label: Any = None
    id_column: str | None = None
    timestamp_column: str
    features: Features
    metric: Metric = "roc_auc"
    estimator: Estimator = Field(default_factory=Estimator)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    reference_rows: int = Field(50_000, ge=100, le=1_000_000)
    min_validation_metric: float | None = Field(
        None, description="A version whose validation metric is worse than this is useless: "
        "driftloop train warns and the controller does not make it challenger.",
    )
    text: TextSettings = Field(default_factory=TextSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    slo: list[SloSettings] = Field(
        default_factory=list, description="Model-performance SLOs with an error budget "
        "(docs/slo.md).")
    holdout: HoldoutSettings | None = Field(
        None, description="A static labelled holdout the champion re-scores on a schedule.")
    history: list[str] = Field(
        default_factory=list,
        description="Training history (CSV/Parquet paths, relative to the spec file) used by retrains.",
    )
    source: Path | None = Field(None, exclude=True)

    @field_validator("features")
    @classmethod
    def _features_not_empty(cls, value: Features) -> Features:
        if not value.all:
            raise ValueError("at least one numerical, categorical or text feature is required")
        reserved = sorted(set(value.all) & set(RESERVED_COLUMNS))
        if reserved:
            raise ValueError(f"feature names reserved by the prediction log: {reserved}")
        dupes = {c for c in value.all if value.all.count(c) > 1}
        if dupes:
            raise ValueError(f"columns listed twice: {sorted(dupes)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _multiclass_metric(cls, data: Any) -> Any:
        # A multi-class spec without a metric is judged by macro-F1 (roc_auc is binary here).
        if isinstance(data, dict) and data.get("classes") is not None and "metric" not in data:
            return {**data, "metric": "macro_f1"}
        return data

    @field_validator("classes")
    @classmethod
    def _classes_distinct(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) < 2:
                raise ValueError(f"classes: at least two are needed, got {value}")
            texts = [str(c) for c in value]
            if len(set(texts)) != len(texts):
                raise ValueError(f"classes listed twice: {value}")
        return value

    @model_validator(mode="after")
    def _multiclass_consistent(self) -> DatasetSpec:
        if self.is_multiclass:
            if self.metric not in MULTICLASS_METRICS:
                raise ValueError(f"metric {self.metric} is binary; a multi-class spec takes "
                                 f"{sorted(MULTICLASS_METRICS)}")
            # set explicitly (even to its default) it would read as binary: refused, named
            for name in ("positive_label", "negative_label"):
                if name in self.model_fields_set:
                    raise ValueError(f"{name} is for binary specs; classes: lists them all")
        elif self.metric == "macro_f1":
            raise ValueError("metric macro_f1 needs classes: (a multi-class target)")
        if self.features.text and self.estimator.kind != "logistic_regression":
            raise ValueError(f"estimator {self.estimator.kind} cannot take text features "
                             "(sparse TF-IDF); use logistic_regression")
        return self

    @model_validator(mode="after")
    def _roles_distinct(self) -> DatasetSpec:
        roles = [self.target, self.timestamp_column] + ([self.id_column] if self.id_column else [])
        clash = sorted(set(roles) & set(self.features.all))
        if clash:
            raise ValueError(f"columns used both as a feature and as target/id/timestamp: {clash}")
        unknown = sorted(set(self.drift.per_column) - set(self.features.all))
        if unknown:
            raise ValueError(f"drift.per_column names columns that are not features: {unknown}")
        segments = self.drift.segments
        if segments is not None and segments.by not in TIME_SEGMENTS \
                and segments.by not in self.features.categorical:
            raise ValueError(f"drift.segments.by: {segments.by!r} is neither "
                             f"{', '.join(sorted(TIME_SEGMENTS))} nor a categorical feature")
        coverage = self.retrain.coverage
        if coverage is not None and coverage.min_segment_share is not None and segments is None:
            raise ValueError("retrain.coverage.min_segment_share needs drift.segments")
        names = [s.label(self.metric) for s in self.slo]
        if len(set(names)) != len(names):
            raise ValueError(f"slo: names must be distinct, got {names}")
        for slo in self.slo:
            metric = slo.metric or self.metric
            fits = metric in MULTICLASS_METRICS if self.is_multiclass else metric != "macro_f1"
            if not fits:
                raise ValueError(f"slo {slo.label(self.metric)}: metric {metric} does not "
                                 f"fit a {'multi-class' if self.is_multiclass else 'binary'} "
                                 "spec")
            if metric != "log_loss" and not 0 <= slo.objective <= 1:
                raise ValueError(f"slo {slo.label(self.metric)}: objective {slo.objective} "
                                 f"is outside [0, 1] for {metric}")
        return self

    @property
    def labels(self) -> LabelCodec:
        """The spec's one label decoder (kernel/labels.py): every reader of labels uses it."""
        return LabelCodec(self.positive_label, self.negative_label)

    def class_codec(self, classes: Sequence[str] | None = None) -> ClassCodec:
        """A multi-class spec's label decoder: over ``classes`` (a version's recorded
        classes) when given, else the listed ones (None for ``classes: infer``: any class)."""
        known = classes if classes is not None else self.listed_classes
        return ClassCodec(None if known is None else tuple(str(c) for c in known))

    @property
    def is_multiclass(self) -> bool:
        """A target with ``classes:`` (listed or inferred) rather than a positive label."""
        return self.classes is not None

    @property
    def listed_classes(self) -> list[str] | None:
        """The classes the spec lists, as text (the log and the API carry them as text);
        None for binary specs and ``classes: infer`` (the version records those)."""
        return [str(c) for c in self.classes] if isinstance(self.classes, list) else None

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def history_paths(self) -> list[Path]:
        base = self.source.parent if self.source else Path.cwd()
        return [(base / p) for p in self.history]

    def holdout_path(self) -> Path | None:
        """The static holdout file (``holdout.path``, relative to the spec file)."""
        if self.holdout is None:
            return None
        base = self.source.parent if self.source else Path.cwd()
        return base / self.holdout.path

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        if not self.slo:  # specs without SLOs read as they did before SLOs existed
            data.pop("slo", None)
        if self.is_multiclass:  # binary-only fields: a multi-class spec refuses them
            data.pop("positive_label", None)
            data.pop("negative_label", None)
        if not self.features.text:  # tabular specs read as they did before text existed
            data.pop("text", None)
            data["features"].pop("text", None)
        return yaml.safe_dump(data, sort_keys=False)


def parse_spec(data: Any, *, source: Path | None = None) -> DatasetSpec:
    """Validate a parsed YAML document; raise SpecError naming the first bad field."""
    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise SpecError(f"{where}spec must be a mapping, got {type(data).__name__}")
    try:
        return DatasetSpec.model_validate({**data, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "spec"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise SpecError(f"{where}{field}: {err['msg']}{more}") from None


def load_spec(path: str | Path) -> DatasetSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_spec(data, source=path.resolve())


def spec_from_yaml(text: str) -> DatasetSpec:
    """Parse a spec stored as an artifact of a model version. A multi-class version stored
    before binary-only fields were refused carries the default ``positive_label: 1`` (its
    ``to_yaml`` wrote every field): that default is dropped, not refused."""
    data = yaml.safe_load(text)
    if isinstance(data, dict) and data.get("classes") is not None \
            and data.get("positive_label", None) == 1 and "negative_label" not in data:
        data = {k: v for k, v in data.items() if k != "positive_label"}
    return parse_spec(data)
