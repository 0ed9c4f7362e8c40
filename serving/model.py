"""A loaded model version: downloaded (or taken from the local cache), checked, compiled.

``build`` is the only way a version gets into the app. It scores the version's reference
sample with the fitted pipeline (shape: two columns, or one per class of a multi-class
version, in the order its ``classes.json`` records; finite probabilities in [0, 1]) and
refuses the version otherwise (``VersionRejected``); it then compiles the fast path and
keeps it only when it matches ``predict_proba`` (every class's probability) within
``FAST_PATH_TOLERANCE`` on that sample and its probes (missing values, unseen categories,
missing, empty and unseen text; see serving/fastpath/check.py).

A missing text (``null``) is scored as the empty text: the pipeline sees ``""``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from kernel.errors import DriftloopError
from kernel.spec import DatasetSpec
from kernel.text import TextProfile
from registry.bundle import Bundle
from registry.port import ModelRegistry
from serving.fastpath import FastPath, NotCompilable, compile_pipeline, verify
from serving.fastpath.check import fill_text
from serving.schema import MAX_TEXT_CHARS, RecordSchema

log = logging.getLogger(__name__)

FAST_PATH_TOLERANCE = 1e-6
POINTER = "champion.json"


class VersionRejected(DriftloopError):
    """The version failed its load-time check; the app keeps what it serves."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    alias: str
    estimator: Any
    spec: DatasetSpec
    schema: RecordSchema
    fast: FastPath | None
    fast_path: str   # linear | trees | text-linear | multiclass-linear | arrays | sklearn
    fast_path_reason: str
    loaded_at: datetime
    source: str                     # registry | cache
    #: a multi-class version's classes (as text) in its predict_proba order; None: binary
    classes: tuple[str, ...] | None = None
    text_profiles: Mapping[str, TextProfile] = field(default_factory=dict)

    def score_one(self, record: dict[str, Any]) -> float:
        """Binary: the positive-class probability; multi-class: the top probability."""
        if self.fast is not None:
            return self.fast.score(record)
        if self.classes is not None:
            return max(self.proba_one(record))
        return float(self.score_many([record])[0])

    def score_many(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """One DataFrame, one ``predict_proba``: the positive-class column (binary), the
        top probability (multi-class)."""
        proba = self.proba_many(records)
        return proba.max(axis=1) if self.classes is not None else proba[:, 1]

    def proba_one(self, record: dict[str, Any]) -> list[float]:
        """Every class's probability, in ``classes`` order."""
        if self.fast is not None and self.fast.proba is not None:
            return self.fast.proba(record)
        return [float(p) for p in self.proba_many([record])[0]]

    def proba_many(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(frame_of(records, self.schema)),
                          dtype=float)

    def describe(self) -> dict[str, Any]:
        features = {"numerical": list(self.schema.numerical),
                    "categorical": list(self.schema.categorical)}
        if self.schema.text:
            features["text"] = list(self.schema.text)
        out = {"name": self.name, "version": self.version, "alias": self.alias,
               "loaded_at": self.loaded_at.isoformat(), "source": self.source,
               "fast_path": self.fast_path, "fast_path_reason": self.fast_path_reason,
               "features": features}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.text_profiles:
            out["text_profiles"] = {
                name: {"vocabulary_words": len(p.vocabulary), "ood_oov_share": p.ood_oov_share,
                       "threshold_source": p.threshold_source, "patterns": list(p.patterns)}
                for name, p in self.text_profiles.items()}
        return out


def top(probabilities: Sequence[float]) -> int:
    """The index of the largest probability, the first on ties (as ``numpy.argmax``)."""
    return list(probabilities).index(max(probabilities))


def frame_of(records: Sequence[dict[str, Any]], schema: RecordSchema) -> pd.DataFrame:
    """Validated records as the DataFrame the pipeline was fitted on (missing as NaN;
    a missing text as the empty text)."""
    columns: dict[str, Any] = {}
    for name in schema.numerical:
        columns[name] = np.array([math.nan if r[name] is None else r[name] for r in records],
                                 dtype=float)
    for name in schema.categorical:
        columns[name] = np.array([math.nan if r[name] is None else r[name] for r in records],
                                 dtype=object)
    for name in schema.text:
        columns[name] = np.array(["" if r[name] is None else r[name] for r in records],
                                 dtype=object)
    return pd.DataFrame(columns, columns=list(schema.features))


def check(estimator: Any, sample: pd.DataFrame, columns: Sequence[str],
          classes: Sequence[str] | None = None, text: Sequence[str] = ()) -> None:
    """Raise ``VersionRejected`` unless the model scores ``sample`` sanely: one column per
    class (two for a binary version), in the order ``classes`` records."""
    if classes is not None:
        fitted = [str(c) for c in getattr(estimator, "classes_", classes)]
        if fitted != list(classes):
            raise VersionRejected(f"the model's classes {fitted} are not the version's "
                                  f"recorded classes {list(classes)}")
    width = 2 if classes is None else len(classes)
    try:
        proba = np.asarray(estimator.predict_proba(fill_text(sample[list(columns)], text)),
                           dtype=float)
    except Exception as exc:  # a broken model may raise anything
        raise VersionRejected(f"scoring the reference sample failed: {exc!r}") from exc
    if proba.shape != (len(sample), width):
        raise VersionRejected(f"predict_proba returned shape {proba.shape}, "
                              f"expected {(len(sample), width)}")
    bad = int(np.sum(~np.isfinite(proba)))
    if bad:
        raise VersionRejected(f"{bad} non-finite scores on the reference sample")
    if proba.min() < 0 or proba.max() > 1:
        raise VersionRejected("scores outside [0, 1] on the reference sample")


def _sample(reference: pd.DataFrame, rows: int) -> pd.DataFrame:
    if len(reference) > rows:
        return reference.sample(rows, random_state=0)
    return reference


def _classes(bundle: Bundle) -> tuple[str, ...] | None:
    """The version's classes; ``VersionRejected`` for a multi-class spec without them."""
    classes = bundle.classes
    if classes is None and bundle.spec.is_multiclass:
        raise VersionRejected("multi-class spec, but the version records no classes.json")
    return None if classes is None else tuple(classes)


def _compile_fast(estimator: Any, spec: DatasetSpec, sample: pd.DataFrame,
                  multiclass: bool) -> tuple[FastPath | None, str, str]:
    """The fast path when it matches ``predict_proba``: (path or None, kind, why)."""
    try:
        candidate = compile_pipeline(estimator)
        if multiclass and candidate.proba is None:
            return None, "sklearn", f"{candidate.kind} path has no class probabilities"
        diff = verify(candidate, estimator, sample, spec.features.all,
                      spec.features.categorical, spec.features.text)
    except NotCompilable as exc:
        return None, "sklearn", f"not compilable: {exc}"
    except Exception as exc:  # a fast path is an optimisation: never fail a load for it
        return None, "sklearn", f"compiling failed: {exc!r}"
    if diff > FAST_PATH_TOLERANCE:
        return None, "sklearn", f"compiled path differs from predict_proba by {diff:.3g}"
    probes = "missing-value, unseen-category" + (" and missing, empty and unseen-word text"
                                                  if spec.features.text else "")
    return candidate, candidate.kind, (f"matches predict_proba within {diff:.1e} on "
                                       f"{len(sample)} reference rows and their {probes} probes")


def build(name: str, version: int, alias: str, estimator: Any, bundle: Bundle, *,
          source: str, check_rows: int = 2000, fast_path: bool = True,
          max_text_chars: int = MAX_TEXT_CHARS) -> LoadedModel:
    spec = bundle.spec
    reference = bundle.reference
    if len(reference) == 0:
        raise VersionRejected("the version has an empty reference sample")
    features = spec.features.all
    missing = [c for c in features if c not in reference.columns]
    if missing:
        raise VersionRejected(f"reference sample lacks features {missing}")
    classes = _classes(bundle)
    sample = _sample(reference, check_rows)
    check(estimator, sample, features, classes, spec.features.text)
    fast, kind, reason = None, "sklearn", "disabled by DRIFTLOOP_SERVING_FAST_PATH=false"
    if fast_path:
        fast, kind, reason = _compile_fast(estimator, spec, sample, classes is not None)
    profiles = bundle.text_profiles
    unprofiled = [c for c in spec.features.text if c not in profiles]
    if unprofiled:
        log.warning("%s v%s: no text profile for %s: their OOV share and OOD are not counted",
                    name, version, unprofiled)
    log.info("%s v%s (%s): fast path %s (%s)", name, version, alias, kind, reason)
    schema = RecordSchema.from_spec(spec, reference, max_text_chars=max_text_chars)
    return LoadedModel(name, version, alias, estimator, spec, schema, fast, kind, reason,
                       datetime.now(UTC), source, classes,
                       {c: p for c, p in profiles.items() if c in spec.features.text})


class BundleCache:
    """Downloaded versions under ``<home>/cache/<model>/v<N>`` plus a pointer to the last
    champion, so a restart during a registry outage still serves it."""

    def __init__(self, root: Path, name: str, keep: int = 3) -> None:
        self.dir = Path(root) / name
        self.keep = keep

    def path(self, version: int) -> Path:
        return self.dir / f"v{int(version)}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.dir / ".lock"):  # exclusive, blocking: several workers share the cache
            yield

    def fetch(self, registry: ModelRegistry, name: str, version: int) -> Bundle:
        """The version's bundle, downloading it unless a complete copy is cached
        (versions are immutable)."""
        with self._lock():
            bundle = Bundle(self.path(version))
            if not bundle.is_complete():
                registry.download(name, version, self.path(version))
                bundle = Bundle(self.path(version))
            return bundle

    def remember(self, version: int) -> None:
        with self._lock():
            tmp = self.dir / f".{POINTER}.{os.getpid()}"
            tmp.write_text(json.dumps({"version": int(version),
                                       "saved_at": datetime.now(UTC).isoformat()}))
            tmp.replace(self.dir / POINTER)
            self._prune(int(version))

    def _prune(self, current: int) -> None:
        versions = sorted((int(p.name[1:]) for p in self.dir.glob("v*") if p.name[1:].isdigit()),
                          reverse=True)
        extra = [v for v in versions if v != current][self.keep - 1:]
        for v in extra:
            shutil.rmtree(self.path(v), ignore_errors=True)

    def last(self) -> Bundle | None:
        """The last champion's bundle when it is complete on disk."""
        try:
            version = int(json.loads((self.dir / POINTER).read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None
        bundle = Bundle(self.path(version))
        return bundle if bundle.is_complete() else None

    @staticmethod
    def version_of(bundle: Bundle) -> int:
        return int(bundle.root.name[1:])
