"""The coverage audit of a retraining set (``retrain.coverage``; docs/controller.md,
"Coverage audit"): a gate before fitting.

The current champion scores the retraining rows; every decile of the champion's own
validation scores must hold at least ``min_decile_share`` of them (a retraining set that
lost the champion's low-confidence region, or its high-score tail, would train a model blind
there). With ``min_segment_share`` and ``drift.segments``, every segment of the champion's
reference (of at least ``drift.segments.min_rows`` rows) must hold at least that share of the
retraining rows too. Below a floor the retrain fails with :class:`CoverageError` (a
DataError: ``driftloop train`` exits 2 with the reason in one line, and the controller
records the cycle as failed with it); no version is registered.

The audit itself (:func:`audit`) is pure: rows, the champion's scores of them, its
validation scores and reference in, a :class:`CoverageReport` out. :func:`load_champion`
is the I/O around it (the registry's bundle of the champion).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kernel.errors import DataError
from kernel.frames import fill_missing_text
from kernel.segments import segment_keys
from kernel.spec import DatasetSpec
from registry import ALIAS_CHAMPION, ModelRegistry
from registry.bundle import Bundle

DECILES = 10


class CoverageError(DataError):
    """The retraining set is below a coverage floor: the retrain fails with this reason."""


@dataclass(frozen=True)
class Champion:
    """What the audit needs of the current champion: its model and its own spec (the
    columns it scores), its validation scores and its drift reference."""

    version: int
    model: Any
    spec: DatasetSpec
    validation_scores: np.ndarray
    reference: pd.DataFrame


@dataclass(frozen=True)
class DecileShare:
    decile: int              # 1 (lowest champion scores) .. 10 (highest)
    low: float               # score range of the decile on the champion's validation scores
    high: float
    validation_share: float  # share of the champion's validation rows (about 0.1; 0 with ties)
    rows: int                # retraining rows the champion scores into it
    share: float


@dataclass(frozen=True)
class SegmentShare:
    segment: str
    reference_rows: int
    rows: int                # retraining rows of the segment
    share: float


@dataclass(frozen=True)
class CoverageReport:
    champion_version: int
    rows: int
    min_decile_share: float
    min_segment_share: float | None
    deciles: tuple[DecileShare, ...]
    segments: tuple[SegmentShare, ...] = ()
    failures: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # parts not judged, and why

    @property
    def passed(self) -> bool:
        return not self.failures

    def reason(self) -> str:
        """One line: the first failure (and how many more)."""
        if not self.failures:
            return "coverage audit passed"
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return (f"coverage audit against champion v{self.champion_version}: "
                f"{self.failures[0]}{more}")

    def summary(self) -> str:
        """One line for the version's ``driftloop.coverage`` tag."""
        judged = [d for d in self.deciles if d.validation_share > 0]
        low = min(judged, key=lambda d: d.share) if judged else None
        parts = [f"{'passed' if self.passed else 'failed'} against champion "
                 f"v{self.champion_version} ({self.rows} rows)"]
        if low is not None:
            parts.append(f"smallest decile {low.decile}: {low.share:.1%} (floor "
                         f"{self.min_decile_share:.1%})")
        if self.segments and self.min_segment_share is not None:
            seg = min(self.segments, key=lambda s: s.share)
            parts.append(f"smallest segment {seg.segment}: {seg.share:.1%} (floor "
                         f"{self.min_segment_share:.1%})")
        parts += [f"skipped: {s}" for s in self.skipped]
        return "; ".join(parts)

    def params(self) -> dict[str, str]:
        """The audit's figures as MLflow run params (logged with the version)."""
        out = {"coverage.champion_version": str(self.champion_version),
               "coverage.rows": str(self.rows),
               "coverage.min_decile_share": str(self.min_decile_share),
               "coverage.decile_shares": json.dumps([round(d.share, 6) for d in self.deciles])}
        if self.min_segment_share is not None:
            out["coverage.min_segment_share"] = str(self.min_segment_share)
            out["coverage.segment_shares"] = json.dumps(
                {s.segment: round(s.share, 6) for s in self.segments})
        if self.skipped:
            out["coverage.skipped"] = "; ".join(self.skipped)
        return out


def decile_edges(validation_scores: np.ndarray) -> np.ndarray:
    """The nine inner edges of the deciles of ``validation_scores``."""
    scores = np.asarray(validation_scores, dtype=float)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise DataError("coverage audit: the champion has no finite validation scores")
    return np.quantile(scores, np.arange(1, DECILES) / DECILES)


def decile_of(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each score's decile index 0..9 (a score on an edge belongs to the upper decile)."""
    return np.searchsorted(edges, np.asarray(scores, dtype=float), side="right")


def decile_shares(scores: np.ndarray, validation_scores: np.ndarray) -> tuple[DecileShare, ...]:
    """The share of ``scores`` (the champion's scores of the retraining rows) in each decile
    of its ``validation_scores``."""
    edges = decile_edges(validation_scores)
    valid = np.asarray(validation_scores, dtype=float)
    valid = valid[np.isfinite(valid)]
    got = np.bincount(decile_of(scores, edges), minlength=DECILES)
    ref = np.bincount(decile_of(valid, edges), minlength=DECILES)
    bounds = [float(valid.min()), *map(float, edges), float(valid.max())]
    n = max(len(scores), 1)
    return tuple(DecileShare(i + 1, bounds[i], bounds[i + 1], float(ref[i] / valid.size),
                             int(got[i]), float(got[i] / n)) for i in range(DECILES))


def segment_shares(rows: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, *,
                   reference_time: str | None = None
                   ) -> tuple[tuple[SegmentShare, ...], str | None]:
    """The share of ``rows`` in each segment of the champion's ``reference`` with at least
    ``drift.segments.min_rows`` rows there; and why segments were not judged (None: they
    were), when the reference does not carry the segment column. ``reference_time`` names
    the reference's timestamp column when it is not the spec's (the champion's spec)."""
    settings = spec.drift.segments
    assert settings is not None
    try:
        ref_keys = segment_keys(reference, spec, column=reference_time)
    except DataError as exc:  # a champion trained before segments: its reference lacks them
        return (), f"segments ({exc})"
    counts = {str(k): int(c) for k, c in ref_keys.value_counts().items()}
    keys = {str(k): int(c) for k, c in segment_keys(rows, spec).value_counts().items()}
    n = max(len(rows), 1)
    return tuple(SegmentShare(k, counts[k], keys.get(k, 0), keys.get(k, 0) / n)
                 for k in sorted(counts) if counts[k] >= settings.min_rows), None


def champion_scores(champion: Champion, rows: pd.DataFrame) -> np.ndarray | None:
    """The champion's score of each row as it records validation scores: the positive-class
    probability (binary) or the top class probability (multi-class); None when the rows
    lack a column the champion reads (a schema change: deciles are not judged)."""
    spec = champion.spec
    if any(c not in rows.columns for c in spec.features.all):
        return None
    proba = np.asarray(champion.model.predict_proba(
        fill_missing_text(rows[spec.features.all], spec.features.text)), dtype=float)
    return proba[:, 1] if not spec.is_multiclass else proba.max(axis=1)


def audit(rows: pd.DataFrame, scores: np.ndarray | None, champion: Champion,
          spec: DatasetSpec) -> CoverageReport:
    """Judge the retraining ``rows`` (scored ``scores`` by ``champion``; None: it could not
    score them) against the floors of ``spec.retrain.coverage``."""
    settings = spec.retrain.coverage
    assert settings is not None
    skipped: list[str] = []
    deciles: tuple[DecileShare, ...] = ()
    if scores is None:
        lacking = [c for c in champion.spec.features.all if c not in rows.columns]
        skipped.append(f"deciles (the rows lack champion columns {lacking})")
    else:
        deciles = decile_shares(scores, champion.validation_scores)
    failures = [f"decile {d.decile} of its validation scores ({d.low:.3f}-{d.high:.3f}) "
                f"holds {d.share:.2%} of the {len(rows)} retraining rows ({d.rows}), below "
                f"retrain.coverage.min_decile_share {settings.min_decile_share:.2%}"
                for d in deciles
                if d.validation_share > 0 and d.share < settings.min_decile_share]
    segments: tuple[SegmentShare, ...] = ()
    floor = settings.min_segment_share
    if floor is not None and spec.drift.segments is not None:
        segments, why = segment_shares(rows, champion.reference, spec,
                                       reference_time=champion.spec.timestamp_column)
        if why:
            skipped.append(why)
        by = spec.drift.segments.by
        failures += [f"segment {by}={s.segment} holds {s.share:.2%} of the {len(rows)} "
                     f"retraining rows ({s.rows}), below retrain.coverage.min_segment_share "
                     f"{floor:.2%}" for s in segments if s.share < floor]
    return CoverageReport(champion.version, len(rows), settings.min_decile_share, floor,
                          deciles, segments, tuple(failures), tuple(skipped))


@contextmanager
def load_champion(registry: ModelRegistry, name: str) -> Iterator[Champion | None]:
    """The current champion of ``name`` from its bundle (downloaded to a temporary
    directory for the block), or None when the model has no champion yet."""
    info = registry.get_alias(name, ALIAS_CHAMPION)
    if info is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="driftloop-coverage-") as tmp:
        bundle = Bundle(Path(tmp))
        registry.download(name, info.version, bundle.root)
        validation = bundle.validation
        yield Champion(info.version, registry.load_model(bundle.root), bundle.spec,
                       validation["score"].to_numpy(dtype=float), bundle.reference)


def check(rows: pd.DataFrame, spec: DatasetSpec, champion: Champion) -> CoverageReport:
    """Score ``rows`` with ``champion`` and audit them; raise CoverageError below a floor."""
    report = audit(rows, champion_scores(champion, rows), champion, spec)
    if not report.passed:
        raise CoverageError(report.reason())
    return report
