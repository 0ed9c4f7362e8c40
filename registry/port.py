"""What driftloop needs from a model registry, independent of MLflow.

A model version is self-describing: next to the model it carries the dataset
spec, a reference sample of the training features, the validation scores and
labels, its metrics and a hash of its training data. ``download`` lays those out
locally as a *bundle*::

    <dest>/model/                  the MLflow model (sklearn flavor)
    <dest>/driftloop/spec.yaml     the dataset spec
    <dest>/driftloop/reference.parquet   training features sample (drift reference)
    <dest>/driftloop/validation.parquet  validation features, label and score
    <dest>/driftloop/metrics.json        validation metrics
    <dest>/driftloop/calibration.json    score calibration (versions trained since CBPE)
    <dest>/driftloop/classes.json        a multi-class version's classes (predict_proba order)
    <dest>/driftloop/text_profiles.json  vocabulary and OOD rule per text column
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

import pandas as pd

from kernel.errors import DriftloopError, RetryableError

ALIAS_CHAMPION: Final = "champion"
ALIAS_CHALLENGER: Final = "challenger"
ALIAS_PREVIOUS: Final = "previous"

TAG_PREFIX: Final = "driftloop."
DECISIONS_EXPERIMENT: Final = "driftloop-decisions"
MONITORING_EXPERIMENT: Final = "driftloop-monitoring"
BACKTEST_EXPERIMENT: Final = "driftloop-backtest"
TRAINING_EXPERIMENT: Final = "driftloop-training"

#: MLflow 3 opens an experiment in its model-training view (runs, not GenAI traces) when it
#: carries this tag with this value (the UI's CUSTOM_MODEL_DEVELOPMENT kind).
EXPERIMENT_KIND_TAG: Final = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING: Final = "custom_model_development"
#: MLflow 3.17's UI takes its view from a "workflow type" instead (the header's switch, kept in
#: the URL and the browser's storage); links into the UI carry this to open on runs.
UI_TRAINING_VIEW: Final = "?workflowType=machine_learning"

BUNDLE_DIR: Final = "driftloop"
MODEL_DIR: Final = "model"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: Pass as ``expected`` to skip the compare in compare-and-set.
ANY: Final[Any] = _Any()


class RegistryError(DriftloopError):
    """A registry operation failed for a reason retrying will not fix."""


class RegistryUnavailable(RegistryError, RetryableError):
    """The registry could not be reached; try again later."""


class VersionNotFound(RegistryError):
    """No such registered model or version."""


class AliasConflict(RegistryError):
    """Compare-and-set lost: the alias no longer points where the caller believed."""

    def __init__(self, name: str, alias: str, expected: int | None, actual: int | None):
        super().__init__(f"{name}@{alias} points at {actual}, expected {expected}: "
                         "someone else moved it first")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    run_id: str | None
    source: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_at: datetime | None = None
    description: str | None = None


@dataclass(frozen=True)
class NewVersion:
    """Everything training hands the registry to make one self-describing version."""

    name: str
    model: Any                       # a fitted sklearn estimator with predict_proba
    spec_yaml: str
    input_example: pd.DataFrame      # a few rows of features, for the signature
    reference: pd.DataFrame          # training features sample (drift reference)
    validation: pd.DataFrame         # validation features + "label" + "score"
    metrics: Mapping[str, float]
    params: Mapping[str, Any]
    tags: Mapping[str, str]          # driftloop.* tags set on the version at creation
    run_name: str = "train"
    pip_requirements: Sequence[str] = ()
    # the score calibration and chunk spreads for label-free estimates (kernel/calibration.py,
    # Calibration.to_dict); None for a version without one
    calibration: Mapping[str, Any] | None = None
    # a multi-class version's classes, as text, in the order of its predict_proba columns
    classes: Sequence[str] | None = None
    # per text column, its kernel.text.TextProfile.to_dict(); empty without text features
    text_profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionRecord:
    """One promotion-gate decision, rollback or manual override, as the audit trail keeps it."""

    model: str
    kind: str                        # gate | rollback | manual_promote | manual_rollback | foreign
    outcome: str                     # promoted | rejected | rolled_back | failed | moved
    cycle_id: str
    decided_at: datetime
    champion_version: int | None = None
    challenger_version: int | None = None
    new_champion_version: int | None = None
    triggers: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    evidence: str | None = None      # shadow | offline_replay | none
    metric: str | None = None
    n: int | None = None
    champion_metric: float | None = None
    challenger_metric: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    margin: float | None = None
    actor: str = "controller"
    run_id: str | None = None
    #: more numbers logged as metrics, e.g. the realised metrics behind an automatic rollback
    extra: Mapping[str, float] = field(default_factory=dict)
    trigger_run_id: str | None = None  # the verdict run that triggered the cycle, when known
    #: kind ``foreign`` (an alias moved outside driftloop): the alias; its version before is
    #: ``champion_version`` and after ``new_champion_version`` (None: unset), whichever alias
    alias: str | None = None

    @property
    def title(self) -> str:
        """A run name a person can read: model, versions and outcome."""
        return decision_title(self)

    def to_json(self) -> str:
        from dataclasses import asdict
        data = asdict(self)
        data["decided_at"] = self.decided_at.isoformat()
        return json.dumps(data, default=str, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> DecisionRecord:
        data = json.loads(text)
        data["decided_at"] = datetime.fromisoformat(data["decided_at"])
        data["triggers"] = tuple(data.get("triggers") or ())
        data["reasons"] = tuple(data.get("reasons") or ())
        data["extra"] = dict(data.get("extra") or {})
        known = {f.name for f in fields(DecisionRecord)}
        return DecisionRecord(**{k: v for k, v in data.items() if k in known})


def version_label(version: int | None) -> str:
    """``v3``, or ``none`` where no version is known (never ``vNone``)."""
    return "none" if version is None else f"v{version}"


def signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def decision_title(r: DecisionRecord) -> str:
    """``churn v2 -> champion (promoted, +0.271)``, ``churn v2 rejected (-0.013)``,
    ``churn rolled back v2 -> v1``, ``churn training failed``."""
    m, v = r.model, version_label
    if r.kind == "foreign":
        return (f"{m}@{r.alias} {v(r.champion_version)} -> {v(r.new_champion_version)} "
                "(moved outside driftloop)")
    by = f" (manual, by {r.actor})" if r.kind.startswith("manual") else ""
    diff = f", {signed(r.difference)}" if r.difference is not None else ""
    if r.kind in ("rollback", "manual_rollback"):
        if r.outcome == "rolled_back":
            return f"{m} rolled back {v(r.champion_version)} -> {v(r.new_champion_version)}{by}"
        return f"{m} rollback from {v(r.champion_version)} {r.outcome}{by}"
    if r.kind == "manual_promote":
        if r.outcome == "promoted":
            return f"{m} {v(r.challenger_version)} -> champion{by}"
        return f"{m} manual promotion of {v(r.challenger_version)} {r.outcome}{by}"
    if r.challenger_version is None:
        return f"{m} training failed" if r.outcome == "failed" else f"{m} cycle {r.outcome}"
    if r.outcome == "promoted":
        return f"{m} {v(r.challenger_version)} -> champion (promoted{diff})"
    if r.outcome == "rejected":
        return f"{m} {v(r.challenger_version)} rejected" + (
            f" ({signed(r.difference)})" if r.difference is not None else "")
    return f"{m} {v(r.challenger_version)} {r.outcome}"


class ModelRegistry(Protocol):
    """The port. Versions are ints; a missing alias is ``None``, not an error."""

    def register(self, new: NewVersion) -> VersionInfo:
        """Log a run with the model and its reference artifacts, and create a version.

        All or nothing: a failure leaves no version behind.
        """
        ...

    def get_version(self, name: str, version: int) -> VersionInfo: ...

    def get_alias(self, name: str, alias: str) -> VersionInfo | None: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def set_alias(self, name: str, alias: str, version: int, *, expected: Any = ANY) -> None:
        """Point ``alias`` at ``version``; with ``expected`` only if it still points there
        (``None``: only if unset). Raises AliasConflict when that no longer holds."""
        ...

    def delete_alias(self, name: str, alias: str, *, expected: Any = ANY) -> None: ...

    def set_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None: ...

    def set_description(self, name: str, version: int, text: str) -> None:
        """Replace the version's description (markdown in the MLflow UI)."""
        ...

    def find_versions(self, name: str, tags: Mapping[str, str]) -> list[VersionInfo]:
        """Versions of ``name`` carrying all of ``tags``, newest first."""
        ...

    def download(self, name: str, version: int, dest: Path) -> Path:
        """Lay out the version's bundle under ``dest`` (see module doc); return ``dest``."""
        ...

    def load_model(self, bundle: Path) -> Any:
        """The fitted estimator from a downloaded bundle."""
        ...

    def record_decision(self, record: DecisionRecord) -> DecisionRecord:
        """Log the decision as a run; idempotent by (cycle_id, kind). Returns it with run_id."""
        ...

    def list_decisions(self, name: str, limit: int = 50) -> list[DecisionRecord]: ...

    def log_run(self, experiment: str, run_name: str, *, params: Mapping[str, Any] = {},
                metrics: Mapping[str, float] = {}, tags: Mapping[str, str] = {},
                files: Sequence[Path] = ()) -> str:
        """A plain run (verdicts, backtests): returns its id."""
        ...
