"""Training as stage functions returning typed results.

``load -> split -> fit -> evaluate -> package`` and then the registry registers
the version. ``driftloop train`` (training/cli.py) and the controller's local
launcher both run exactly this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kernel.errors import DataError
from kernel.metrics import all_metrics
from kernel.spec import DatasetSpec
from registry import TAG_PREFIX as TAG
from registry import ModelRegistry, NewVersion, VersionInfo
from training.data import data_hash, labels_of, load_frames
from training.pipeline import build_pipeline

log = logging.getLogger(__name__)

MIN_ROWS_PER_CLASS = 5


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    y_train: np.ndarray
    y_validation: np.ndarray


@dataclass(frozen=True)
class Fitted:
    model: Any
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    scores: np.ndarray
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    version: VersionInfo
    metrics: dict[str, float]
    rows: int
    data_hash: str
    seconds: float
    alias: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def split(data: pd.DataFrame, spec: DatasetSpec) -> Split:
    """Time-ordered: the last ``validation_fraction`` of rows (by timestamp) validate."""
    y = labels_of(data, spec)
    if len(np.unique(y)) < 2:
        raise DataError(f"target {spec.target!r} has one class only "
                        f"(positive label {spec.positive_label!r}): cannot train")
    cut = int(round(len(data) * (1 - spec.validation_fraction)))
    if cut < 2 * MIN_ROWS_PER_CLASS or len(data) - cut < 2 * MIN_ROWS_PER_CLASS:
        raise DataError(f"too few rows to train and validate: {len(data)}")
    y_train, y_val = y[:cut], y[cut:]
    for name, part in (("training", y_train), ("validation", y_val)):
        counts = np.bincount(part, minlength=2)
        if counts.min() < MIN_ROWS_PER_CLASS:
            raise DataError(f"{name} slice has {counts[1]} positive and {counts[0]} negative "
                            f"rows; need at least {MIN_ROWS_PER_CLASS} of each")
    return Split(data.iloc[:cut], data.iloc[cut:], y_train, y_val)


def fit(parts: Split, spec: DatasetSpec, *, seed: int = 0) -> Fitted:
    started = time.perf_counter()
    pipeline = build_pipeline(spec, seed=seed)
    pipeline.fit(parts.train[spec.features.all], parts.y_train)
    return Fitted(pipeline, time.perf_counter() - started)


def evaluate(fitted: Fitted, parts: Split, spec: DatasetSpec) -> Evaluation:
    scores = fitted.model.predict_proba(parts.validation[spec.features.all])[:, 1]
    return Evaluation(scores, all_metrics(parts.y_validation, scores, primary=spec.metric))


def package(spec: DatasetSpec, data: pd.DataFrame, parts: Split, fitted: Fitted,
            evaluation: Evaluation, *, tags: Mapping[str, str], seed: int = 0) -> NewVersion:
    features = spec.features.all
    reference = parts.train[features]
    if len(reference) > spec.reference_rows:
        reference = reference.sample(spec.reference_rows, random_state=seed).sort_index()
    validation = parts.validation[features].copy()
    validation["label"] = parts.y_validation
    validation["score"] = evaluation.scores
    ts = data[spec.timestamp_column]
    digest = data_hash(data, [spec.timestamp_column, *features, spec.target])
    all_tags = {
        TAG + "data_hash": digest,
        TAG + "train_rows": str(len(parts.train)),
        TAG + "validation_rows": str(len(parts.validation)),
        TAG + "train_window": f"{ts.min().isoformat()}/{ts.max().isoformat()}",
        TAG + "metric": spec.metric,
        TAG + "validation_" + spec.metric: f"{evaluation.metrics[spec.metric]:.6f}",
        TAG + "estimator": spec.estimator.kind,
        **{k: str(v) for k, v in tags.items()},
    }
    params = {"estimator": spec.estimator.kind, "rows": len(data), "seed": seed,
              "validation_fraction": spec.validation_fraction,
              **{f"estimator.{k}": v for k, v in spec.estimator.params.items()}}
    return NewVersion(
        name=spec.model_name, model=fitted.model, spec_yaml=spec.to_yaml(),
        input_example=parts.train[features].head(5).reset_index(drop=True),
        reference=reference.reset_index(drop=True), validation=validation.reset_index(drop=True),
        metrics=evaluation.metrics, params=params, tags=all_tags,
        run_name=f"train {spec.model_name}", pip_requirements=pip_requirements(),
    )


def pip_requirements() -> list[str]:
    """Pinned explicitly: MLflow's own inference costs seconds per model and lists strays."""
    names = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
    return [f"{n}=={metadata.version(n)}" for n in names]


def train(spec: DatasetSpec, data_paths: Sequence[str | Path], registry: ModelRegistry, *,
          since: datetime | None = None, until: datetime | None = None,
          alias: str | None = None, tags: Mapping[str, str] = {}, seed: int = 0) -> TrainResult:
    """Fit, evaluate, log and register a version; optionally point ``alias`` at it."""
    started = time.perf_counter()
    data = load_frames(data_paths, spec, since=since, until=until)
    parts = split(data, spec)
    fitted = fit(parts, spec, seed=seed)
    evaluation = evaluate(fitted, parts, spec)
    bad = {k: v for k, v in evaluation.metrics.items() if not np.isfinite(v)}
    if bad:
        raise DataError(f"validation metrics are not finite: {bad}")
    new = package(spec, data, parts, fitted, evaluation, tags=tags, seed=seed)
    version = registry.register(new)
    if alias:
        registry.set_alias(spec.model_name, alias, version.version)
    elapsed = time.perf_counter() - started
    log.info("registered %s v%s (%s=%.4f) in %.1fs", spec.model_name, version.version,
             spec.metric, evaluation.metrics[spec.metric], elapsed)
    return TrainResult(version=version, metrics=evaluation.metrics, rows=len(data),
                       data_hash=new.tags[TAG + "data_hash"], seconds=elapsed, alias=alias,
                       details={"fit_seconds": fitted.seconds})
