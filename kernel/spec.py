"""The dataset spec: one YAML file per model, validated with pydantic.

It names the registered model, the columns and their roles, the metric the
promotion gate uses and the estimator. Every part reads it: training fits to
it, serving builds the request schema from it, monitoring knows which columns
to check, the controller knows which metric to compare. A version carries its
spec as an artifact, so a version is self-describing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel.errors import SpecError
from kernel.labels import LabelCodec

Metric = Literal["roc_auc", "log_loss", "accuracy", "f1", "average_precision", "brier"]

#: Metrics where a lower value is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier"})

#: Columns of the prediction log; features may not use these names.
RESERVED_COLUMNS: tuple[str, ...] = (
    "ts", "request_id", "model_name", "model_version", "score", "prediction",
    "shadow_version", "shadow_score", "latency_ms", "label", "label_received_at",
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

    @property
    def all(self) -> list[str]:
        return [*self.numerical, *self.categorical]


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


class DatasetSpec(_Strict):
    """What a model is trained on and judged by."""

    model_name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    target: str
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
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    history: list[str] = Field(
        default_factory=list,
        description="Training history (CSV/Parquet paths, relative to the spec file) used by retrains.",
    )
    source: Path | None = Field(None, exclude=True)

    @field_validator("features")
    @classmethod
    def _features_not_empty(cls, value: Features) -> Features:
        if not value.all:
            raise ValueError("at least one numerical or categorical feature is required")
        reserved = sorted(set(value.all) & set(RESERVED_COLUMNS))
        if reserved:
            raise ValueError(f"feature names reserved by the prediction log: {reserved}")
        dupes = {c for c in value.all if value.all.count(c) > 1}
        if dupes:
            raise ValueError(f"columns listed twice: {sorted(dupes)}")
        return value

    @model_validator(mode="after")
    def _roles_distinct(self) -> DatasetSpec:
        roles = [self.target, self.timestamp_column] + ([self.id_column] if self.id_column else [])
        clash = sorted(set(roles) & set(self.features.all))
        if clash:
            raise ValueError(f"columns used both as a feature and as target/id/timestamp: {clash}")
        unknown = sorted(set(self.drift.per_column) - set(self.features.all))
        if unknown:
            raise ValueError(f"drift.per_column names columns that are not features: {unknown}")
        return self

    @property
    def labels(self) -> LabelCodec:
        """The spec's one label decoder (kernel/labels.py): every reader of labels uses it."""
        return LabelCodec(self.positive_label, self.negative_label)

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def history_paths(self) -> list[Path]:
        base = self.source.parent if self.source else Path.cwd()
        return [(base / p) for p in self.history]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


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
    """Parse a spec stored as an artifact of a model version."""
    return parse_spec(yaml.safe_load(text))
