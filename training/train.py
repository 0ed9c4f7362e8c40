"""Training as stage functions returning typed results.

``load -> split -> fit -> evaluate -> package`` and then the registry registers
the version. ``driftloop train`` (training/cli.py) and the controller's local
launcher both run exactly this.
"""

from __future__ import annotations

import json
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

from kernel.calibration import fit_calibration
from kernel.errors import DataError
from kernel.frames import fill_missing_text
from kernel.metrics import all_metrics, multiclass_metrics
from kernel.spec import TIME_SEGMENTS, DatasetSpec
from kernel.text import TextProfile
from registry import TAG_PREFIX as TAG
from registry import ModelRegistry, NewVersion, VersionInfo
from training import coverage as coverage_audit
from training.coverage import CoverageReport
from training.data import (
    RECENT,
    SOURCE_COLUMN,
    Loaded,
    class_labels_of,
    data_hash,
    labels_of,
    load_inputs,
)
from training.pipeline import build_pipeline

log = logging.getLogger(__name__)

MIN_ROWS_PER_CLASS = 5
CHANCE_AUC = 0.55        # at or below: a useless model (warned, refused as challenger)


@dataclass(frozen=True)
class Split:
    """Rows and labels: 0/1 for a binary spec; class texts for a multi-class one, whose
    ``classes`` are the fitted model's ``classes_`` (sorted class texts)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    y_train: np.ndarray
    y_validation: np.ndarray
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Fitted:
    model: Any
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    scores: np.ndarray                       # positive-class (binary) or top probability
    metrics: dict[str, float]
    probabilities: np.ndarray | None = None  # multi-class: every class, in Split.classes order
    #: multi-class: the validation log loss of predicting the training class shares
    prior_log_loss: float | None = None


@dataclass(frozen=True)
class TrainResult:
    version: VersionInfo
    metrics: dict[str, float]
    rows: int
    data_hash: str
    seconds: float
    alias: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def validation_rows(n: int, fraction: float) -> np.ndarray:
    """Systematic, time-stratified: rows ``i`` (in time order) where ``floor((i + 1) * fraction)``
    steps up validate (every fifth row for 0.2). Every stretch of the window, the newest recent
    rows included, keeps ``1 - fraction`` of its rows (give or take one) for training
    (docs/controller.md, "Retraining data")."""
    i = np.arange(n)
    return np.flatnonzero(np.floor((i + 1) * fraction) > np.floor(i * fraction))


def model_input(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The feature columns as the pipeline takes them (a missing text as the empty text)."""
    return fill_missing_text(frame[spec.features.all], spec.features.text)


def _split_classes(data: pd.DataFrame, spec: DatasetSpec, is_val: np.ndarray) -> Split:
    y = class_labels_of(data, spec)
    y_train, y_val = y[~is_val], y[is_val]
    counts = pd.Series(y_train).value_counts()
    wanted = spec.listed_classes or sorted(counts.index)
    short = {c: int(counts.get(c, 0)) for c in wanted if counts.get(c, 0) < MIN_ROWS_PER_CLASS}
    if short:
        raise DataError(f"training slice has too few rows of classes {short}; need at least "
                        f"{MIN_ROWS_PER_CLASS} of each class")
    if len(wanted) < 2:
        raise DataError(f"target {spec.target!r} has one class only ({wanted}): cannot train")
    if pd.Series(y_val).nunique() < 2:
        raise DataError("validation slice has fewer than two classes: cannot validate")
    return Split(data.iloc[~is_val], data.iloc[is_val], y_train, y_val,
                 tuple(sorted(str(c) for c in wanted)))


def split(data: pd.DataFrame, spec: DatasetSpec) -> Split:
    """Training and validation rows, both in time order (:func:`validation_rows`)."""
    if spec.is_multiclass:
        chosen = validation_rows(len(data), spec.validation_fraction)
        is_val = np.zeros(len(data), dtype=bool)
        is_val[chosen] = True
        if len(data) - len(chosen) < 2 * MIN_ROWS_PER_CLASS or len(chosen) < 2 * MIN_ROWS_PER_CLASS:
            raise DataError(f"too few rows to train and validate: {len(data)}")
        return _split_classes(data, spec, is_val)
    y = labels_of(data, spec)
    if len(np.unique(y)) < 2:
        raise DataError(f"target {spec.target!r} has one class only "
                        f"(positive label {spec.positive_label!r}): cannot train")
    chosen = validation_rows(len(data), spec.validation_fraction)
    is_val = np.zeros(len(data), dtype=bool)
    is_val[chosen] = True
    n_val = int(is_val.sum())
    if len(data) - n_val < 2 * MIN_ROWS_PER_CLASS or n_val < 2 * MIN_ROWS_PER_CLASS:
        raise DataError(f"too few rows to train and validate: {len(data)}")
    y_train, y_val = y[~is_val], y[is_val]
    for name, part in (("training", y_train), ("validation", y_val)):
        counts = np.bincount(part, minlength=2)
        if counts.min() < MIN_ROWS_PER_CLASS:
            raise DataError(f"{name} slice has {counts[1]} positive and {counts[0]} negative "
                            f"rows; need at least {MIN_ROWS_PER_CLASS} of each")
    return Split(data.iloc[~is_val], data.iloc[is_val], y_train, y_val)


def _source_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(history rows, recent rows) of a frame (no source column: all history)."""
    if SOURCE_COLUMN not in frame.columns:
        return len(frame), 0
    recent = int((frame[SOURCE_COLUMN] == RECENT).sum())
    return len(frame) - recent, recent


def reference_sample(parts: Split, spec: DatasetSpec, *, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """The drift reference and what it is: the recent training rows (``recent``) when a
    retrain had at least ``drift.min_rows`` of them, so that the reference is the world the
    version was retrained for; otherwise the whole training window (``window``). At most
    ``reference_rows``, sampled at random."""
    train = parts.train
    kind = "window"
    if SOURCE_COLUMN in train.columns:
        recent = train[train[SOURCE_COLUMN] == RECENT]
        if len(recent) >= spec.drift.min_rows:
            train, kind = recent, "recent"
    segments = spec.drift.segments
    timed = segments is not None and segments.by in TIME_SEGMENTS \
        and spec.timestamp_column in train.columns   # time segments read the reference's times
    reference = train[[*spec.features.all, *([spec.timestamp_column] if timed else [])]]
    if len(reference) > spec.reference_rows:
        reference = reference.sample(spec.reference_rows, random_state=seed).sort_index()
    return reference, kind


def usefulness(metrics: Mapping[str, float], spec: DatasetSpec,
               prior_log_loss: float | None = None) -> str | None:
    """Why a validation result is no better than chance (None when it is useful): ROC AUC at
    most ``CHANCE_AUC`` (binary), a log loss no better than predicting the training class
    shares (multi-class, ``prior_log_loss``), or the spec's metric worse than
    ``min_validation_metric``."""
    loss = metrics.get("log_loss")
    if prior_log_loss is not None and loss is not None and loss >= prior_log_loss:
        return (f"validation log_loss {loss:.4f} is no better than predicting the training "
                f"class shares ({prior_log_loss:.4f})")
    auc = metrics.get("roc_auc")
    if auc is not None and auc <= CHANCE_AUC:
        return f"validation roc_auc {auc:.4f} is at chance level (<= {CHANCE_AUC})"
    floor = spec.min_validation_metric
    value = metrics.get(spec.metric)
    if floor is not None and value is not None:
        worse = value > floor if spec.lower_is_better else value < floor
        if worse:
            return f"validation {spec.metric} {value:.4f} is worse than min_validation_metric {floor}"
    return None


def fit(parts: Split, spec: DatasetSpec, *, seed: int = 0) -> Fitted:
    started = time.perf_counter()
    pipeline = build_pipeline(spec, seed=seed)
    _fit(pipeline, model_input(parts.train, spec), parts.y_train)
    return Fitted(pipeline, time.perf_counter() - started)


def _fit(pipeline: Any, x: pd.DataFrame, y: np.ndarray) -> None:
    try:
        pipeline.fit(x, y)
    except ValueError as exc:
        if "vocabulary" in str(exc):  # TfidfVectorizer: no term kept by min_df / max_df
            raise DataError(f"text columns: {exc} (lower text.min_df?)") from None
        raise


def refit(data: pd.DataFrame, spec: DatasetSpec, *, seed: int = 0) -> Fitted:
    """The same estimator fitted on every row of the window, the validation slice included:
    what serves when ``retrain.refit`` is on (its validation metric is the first fit's)."""
    started = time.perf_counter()
    pipeline = build_pipeline(spec, seed=seed)
    y = class_labels_of(data, spec) if spec.is_multiclass else labels_of(data, spec)
    _fit(pipeline, model_input(data, spec), y)
    return Fitted(pipeline, time.perf_counter() - started)


def evaluate(fitted: Fitted, parts: Split, spec: DatasetSpec) -> Evaluation:
    proba = fitted.model.predict_proba(model_input(parts.validation, spec))
    if parts.classes is None:
        scores = proba[:, 1]
        return Evaluation(scores, all_metrics(parts.y_validation, scores, primary=spec.metric))
    fitted_classes = tuple(str(c) for c in fitted.model.classes_)
    if fitted_classes != parts.classes:
        raise DataError(f"the model's classes {list(fitted_classes)} are not the training "
                        f"slice's {list(parts.classes)}")
    index = {c: i for i, c in enumerate(parts.classes)}
    y = np.array([index[str(c)] for c in parts.y_validation], dtype=np.int64)
    shares = pd.Series(parts.y_train).map(str).value_counts(normalize=True)
    prior = np.array([shares.get(c, 0.0) for c in parts.classes])
    prior_loss = float(-np.log(np.clip(prior[y], 1e-15, 1.0)).mean())
    return Evaluation(proba.max(axis=1), multiclass_metrics(y, proba, parts.classes,
                                                            primary=spec.metric),
                      probabilities=proba, prior_log_loss=prior_loss)


def text_profiles(parts: Split, spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """Each text column's profile (kernel/text.py), from the training rows; its OOD
    threshold from the validation rows unless the spec sets one."""
    settings = spec.text
    return {column: TextProfile.fit(
        column, parts.train[column], parts.validation[column], min_df=settings.min_df,
        max_words=settings.max_features, ood_oov_share=settings.ood_oov_share,
        patterns=settings.ood_patterns).to_dict() for column in spec.features.text}


def metric_key(name: str) -> str:
    """``name`` as an MLflow metric key (letters, digits, ``_-. :/``; others as ``_``)."""
    return "".join(ch if ch.isalnum() or ch in "_-. :/" else "_" for ch in name)


def lineage_tags(loaded: Loaded, *, since: datetime | None = None,
                 until: datetime | None = None) -> dict[str, str]:
    """Where the training data came from, so a retrain can find it again: the history
    inputs' absolute paths (JSON) and the window given (``--since``/``--until``)."""
    tags = {TAG + "data_sources": json.dumps(list(loaded.history_paths))}
    if since is not None:
        tags[TAG + "data_since"] = since.isoformat()
    if until is not None:
        tags[TAG + "data_until"] = until.isoformat()
    return tags


def package(spec: DatasetSpec, data: pd.DataFrame, parts: Split, fitted: Fitted,
            evaluation: Evaluation, *, tags: Mapping[str, str], seed: int = 0,
            served: Fitted | None = None, coverage: CoverageReport | None = None) -> NewVersion:
    """The version to register: ``served`` (the refit on every row) when given, else
    ``fitted``. The validation metric is always ``fitted``'s on rows it did not see; the
    stored validation scores are the served model's (the prediction-drift reference)."""
    features = spec.features.all
    reference, reference_kind = reference_sample(parts, spec, seed=seed)
    validation = parts.validation[features].copy()
    validation["label"] = parts.y_validation
    if parts.classes is not None and evaluation.probabilities is not None:
        top = evaluation.probabilities.argmax(axis=1)  # the class-drift reference
        validation["prediction"] = np.asarray(parts.classes, dtype=object)[top]
    model = served.model if served is not None else fitted.model
    if served is None:
        validation["score"] = evaluation.scores
    else:
        served_proba = model.predict_proba(model_input(parts.validation, spec))
        validation["score"] = served_proba[:, 1] if parts.classes is None \
            else served_proba.max(axis=1)
    ts = data[spec.timestamp_column]
    digest = data_hash(data, [spec.timestamp_column, *features, spec.target])
    history, recent = _source_counts(parts.train)
    useless = usefulness(evaluation.metrics, spec, evaluation.prior_log_loss)
    all_tags = {
        TAG + "data_hash": digest,
        TAG + "train_rows": str(len(parts.train)),
        TAG + "train_rows_history": str(history),
        TAG + "train_rows_recent": str(recent),
        TAG + "validation_rows": str(len(parts.validation)),
        TAG + "validation_rows_recent": str(_source_counts(parts.validation)[1]),
        TAG + "split": "systematic",
        TAG + "refit": "true" if served is not None else "false",
        TAG + "served_rows": str(len(data) if served is not None else len(parts.train)),
        TAG + "reference": reference_kind,
        TAG + "reference_rows": str(len(reference)),
        TAG + "train_window": f"{ts.min().isoformat()}/{ts.max().isoformat()}",
        TAG + "metric": spec.metric,
        TAG + "validation_" + spec.metric: f"{evaluation.metrics[spec.metric]:.6f}",
        TAG + "estimator": spec.estimator.kind,
        TAG + "useless": "true" if useless else "false",
        **({TAG + "useless_reason": useless} if useless else {}),
        **({TAG + "coverage": coverage.summary()} if coverage is not None else {}),
        **{k: str(v) for k, v in tags.items()},
    }
    calibration = None
    if parts.classes is None:  # label-free estimates (CBPE) are for binary scores
        calibration = fit_calibration(parts.y_validation, evaluation.scores,
                                      metrics=[spec.metric], seed=seed)
        all_tags[TAG + "calibration"] = (f"{calibration.method} ({calibration.rows} "
                                         "validation rows)")
    else:
        all_tags[TAG + "classes"] = json.dumps(list(parts.classes))
    params = {"estimator": spec.estimator.kind, "rows": len(data), "seed": seed,
              "refit": served is not None,
              "validation_fraction": spec.validation_fraction,
              **{f"estimator.{k}": v for k, v in spec.estimator.params.items()},
              **(coverage.params() if coverage is not None else {})}
    return NewVersion(
        name=spec.model_name, model=model, spec_yaml=spec.to_yaml(),
        input_example=parts.train[features].head(5).reset_index(drop=True),
        reference=reference.reset_index(drop=True), validation=validation.reset_index(drop=True),
        metrics={metric_key(k): v for k, v in evaluation.metrics.items()}, params=params,
        tags=all_tags, run_name=f"train {spec.model_name}", pip_requirements=pip_requirements(),
        calibration=None if calibration is None else calibration.to_dict(),
        classes=parts.classes, text_profiles=text_profiles(parts, spec),
    )


def pip_requirements() -> list[str]:
    """Pinned explicitly: MLflow's own inference costs seconds per model and lists strays."""
    names = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
    return [f"{n}=={metadata.version(n)}" for n in names]


def audit_coverage(spec: DatasetSpec, data: pd.DataFrame,
                   registry: ModelRegistry) -> CoverageReport | None:
    """With ``retrain.coverage`` and a champion: audit the retraining rows against it
    (training/coverage.py) before anything is fitted; below a floor raise CoverageError (a
    DataError: no version). None without the setting or a champion."""
    if spec.retrain.coverage is None:
        return None
    with coverage_audit.load_champion(registry, spec.model_name) as champion:
        if champion is None:
            log.info("coverage audit skipped: %s has no champion yet", spec.model_name)
            return None
        report = coverage_audit.check(data, spec, champion)
    log.info("%s: %s", spec.model_name, report.summary())
    return report


def train(spec: DatasetSpec, data_paths: Sequence[str | Path], registry: ModelRegistry, *,
          since: datetime | None = None, until: datetime | None = None,
          alias: str | None = None, tags: Mapping[str, str] = {}, seed: int = 0) -> TrainResult:
    """Fit, evaluate, log and register a version; optionally point ``alias`` at it.

    A version at chance level (:func:`usefulness`) is still registered, tagged
    ``driftloop.useless=true`` with the reason (``details["useless"]``): the CLI warns and the
    controller refuses it as challenger. With ``retrain.coverage`` and a champion, the rows
    are audited first (:func:`audit_coverage`): below a floor nothing is fitted or
    registered."""
    started = time.perf_counter()
    loaded = load_inputs(data_paths, spec, since=since, until=until)
    data = loaded.data
    coverage = audit_coverage(spec, data, registry)
    parts = split(data, spec)
    fitted = fit(parts, spec, seed=seed)
    evaluation = evaluate(fitted, parts, spec)
    bad = {k: v for k, v in evaluation.metrics.items() if not np.isfinite(v)}
    if bad:
        raise DataError(f"validation metrics are not finite: {bad}")
    served = refit(data, spec, seed=seed) if spec.retrain.refit else None
    new = package(spec, data, parts, fitted, evaluation, seed=seed, served=served,
                  coverage=coverage, tags={**lineage_tags(loaded, since=since, until=until), **tags})
    version = registry.register(new)
    if alias:
        registry.set_alias(spec.model_name, alias, version.version)
    elapsed = time.perf_counter() - started
    useless = new.tags.get(TAG + "useless_reason")
    if useless:  # the CLI warns (one line on stderr); callers read details["useless"]
        log.info("%s v%s is useless: %s", spec.model_name, version.version, useless)
    log.info("registered %s v%s (%s=%.4f) in %.1fs", spec.model_name, version.version,
             spec.metric, evaluation.metrics[spec.metric], elapsed)
    return TrainResult(version=version, metrics=evaluation.metrics, rows=len(data),
                       data_hash=new.tags[TAG + "data_hash"], seconds=elapsed, alias=alias,
                       details={"fit_seconds": fitted.seconds + (served.seconds if served else 0.0),
                                "useless": useless, "refit": served is not None,
                                "coverage": coverage,
                                "train_rows_recent": int(new.tags[TAG + "train_rows_recent"])})
