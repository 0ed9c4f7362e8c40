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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class DecisionRecord:
    """One promotion-gate decision, rollback or manual override, as the audit trail keeps it."""

    model: str
    kind: str                        # gate | rollback | manual_promote | manual_rollback
    outcome: str                     # promoted | rejected | rolled_back | failed
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
        return DecisionRecord(**data)


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
