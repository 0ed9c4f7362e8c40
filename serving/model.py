"""A loaded model version: downloaded (or taken from the local cache), checked, compiled.

``load_version`` is the only way a version gets into the app. It scores the version's
reference sample with the fitted pipeline (shape and finite scores in [0, 1]) and refuses
the version otherwise (``VersionRejected``); it then compiles the fast path and keeps it
only when it matches ``predict_proba`` within ``FAST_PATH_TOLERANCE`` on that sample and
its probes (missing values and unseen categories; see serving/fastpath/check.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from kernel.errors import DriftloopError
from kernel.spec import DatasetSpec
from registry.bundle import Bundle
from registry.port import ModelRegistry
from serving.fastpath import FastPath, NotCompilable, compile_pipeline, verify
from serving.schema import RecordSchema

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
    fast_path: str                  # linear | trees | arrays | sklearn
    fast_path_reason: str
    loaded_at: datetime
    source: str                     # registry | cache

    def score_one(self, record: dict[str, Any]) -> float:
        if self.fast is not None:
            return self.fast.score(record)
        return float(self.score_many([record])[0])

    def score_many(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """One DataFrame, one ``predict_proba``."""
        return self.estimator.predict_proba(frame_of(records, self.schema))[:, 1]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias,
                "loaded_at": self.loaded_at.isoformat(), "source": self.source,
                "fast_path": self.fast_path, "fast_path_reason": self.fast_path_reason,
                "features": {"numerical": list(self.schema.numerical),
                             "categorical": list(self.schema.categorical)}}


def frame_of(records: Sequence[dict[str, Any]], schema: RecordSchema) -> pd.DataFrame:
    """Validated records as the DataFrame the pipeline was fitted on (missing as NaN)."""
    columns: dict[str, Any] = {}
    for name in schema.numerical:
        columns[name] = np.array([math.nan if r[name] is None else r[name] for r in records],
                                 dtype=float)
    for name in schema.categorical:
        columns[name] = np.array([math.nan if r[name] is None else r[name] for r in records],
                                 dtype=object)
    return pd.DataFrame(columns, columns=list(schema.features))


def check(estimator: Any, sample: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``VersionRejected`` unless the model scores ``sample`` sanely."""
    try:
        proba = np.asarray(estimator.predict_proba(sample[list(columns)]), dtype=float)
    except Exception as exc:  # a broken model may raise anything
        raise VersionRejected(f"scoring the reference sample failed: {exc!r}") from exc
    if proba.shape != (len(sample), 2):
        raise VersionRejected(f"predict_proba returned shape {proba.shape}, "
                              f"expected {(len(sample), 2)}")
    bad = int(np.sum(~np.isfinite(proba)))
    if bad:
        raise VersionRejected(f"{bad} non-finite scores on the reference sample")
    if proba.min() < 0 or proba.max() > 1:
        raise VersionRejected("scores outside [0, 1] on the reference sample")


def _sample(reference: pd.DataFrame, rows: int) -> pd.DataFrame:
    if len(reference) > rows:
        return reference.sample(rows, random_state=0)
    return reference


def build(name: str, version: int, alias: str, estimator: Any, bundle: Bundle, *,
          source: str, check_rows: int = 2000, fast_path: bool = True) -> LoadedModel:
    spec = bundle.spec
    reference = bundle.reference
    if len(reference) == 0:
        raise VersionRejected("the version has an empty reference sample")
    features = spec.features.all
    missing = [c for c in features if c not in reference.columns]
    if missing:
        raise VersionRejected(f"reference sample lacks features {missing}")
    sample = _sample(reference, check_rows)
    check(estimator, sample, features)
    fast, kind, reason = None, "sklearn", "disabled by DRIFTLOOP_SERVING_FAST_PATH=false"
    if fast_path:
        try:
            candidate = compile_pipeline(estimator)
            diff = verify(candidate, estimator, sample, features, spec.features.categorical)
            if diff <= FAST_PATH_TOLERANCE:
                fast, kind = candidate, candidate.kind
                reason = (f"matches predict_proba within {diff:.1e} on {len(sample)} reference rows "
                          "and their missing-value and unseen-category probes")
            else:
                reason = f"compiled path differs from predict_proba by {diff:.3g}"
        except NotCompilable as exc:
            reason = f"not compilable: {exc}"
        except Exception as exc:  # a fast path is an optimisation: never fail a load for it
            reason = f"compiling failed: {exc!r}"
    log.info("%s v%s (%s): fast path %s (%s)", name, version, alias, kind, reason)
    return LoadedModel(name, version, alias, estimator, spec, RecordSchema.from_spec(spec, reference),
                       fast, kind, reason, datetime.now(UTC), source)


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
