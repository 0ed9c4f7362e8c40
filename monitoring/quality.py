"""Data quality per column against the version's reference sample.

Three signals a distance test can miss or blur: a rise in the missing share, values of
a categorical column the model never saw, numerical values outside the range the model
was trained on. Shares are of all rows of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring.stats import CategoricalSample, NumericSample, Sample
from monitoring.verdict import ColumnQuality

MAX_LISTED_CATEGORIES = 20


@dataclass(frozen=True)
class QualityThresholds:
    """A column is flagged when any signal is above its limit (absolute shares)."""

    missing_increase: float = 0.05   # current missing share minus the reference's
    unseen_share: float = 0.01
    out_of_range_share: float = 0.02


@dataclass(frozen=True)
class ReferenceProfile:
    """What quality needs from the reference, computed once per version."""

    missing: dict[str, float]
    ranges: dict[str, tuple[float, float]]
    categories: dict[str, frozenset[str]]

    @classmethod
    def of(cls, reference: pd.DataFrame, numerical: list[str], categorical: list[str]
           ) -> ReferenceProfile:
        missing = {c: float(reference[c].isna().mean()) if len(reference) else 0.0
                   for c in [*numerical, *categorical]}
        ranges = {}
        for col in numerical:
            values = pd.to_numeric(reference[col], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                ranges[col] = (float(values.min()), float(values.max()))
        categories = {c: frozenset(str(v) for v in reference[c].dropna().unique())
                      for c in categorical}
        return cls(missing, ranges, categories)


def column_quality(profile: ReferenceProfile, current: pd.DataFrame, numerical: list[str],
                   categorical: list[str], thresholds: QualityThresholds = QualityThresholds(),
                   samples: dict[str, Sample] | None = None) -> list[ColumnQuality]:
    """Per-column quality; ``samples`` (the drift statistics' current samples) saves a pass."""
    rows = len(current)
    samples = samples or {}
    out = []
    for col in [*numerical, *categorical]:
        sample = _sample(current, col, col in categorical, samples.get(col))
        missing = sample.missing / rows if rows else 0.0
        ref_missing = profile.missing.get(col, 0.0)
        unseen: list[str] = []
        unseen_share = out_of_range = 0.0
        if isinstance(sample, CategoricalSample) and col in profile.categories and rows:
            uniques, counts = sample.factorized
            known = profile.categories[col]
            new = [(str(u), int(c)) for u, c in zip(uniques, counts, strict=True)
                   if str(u) not in known]
            unseen = sorted(u for u, _ in new)[:MAX_LISTED_CATEGORIES]
            unseen_share = sum(c for _, c in new) / rows
        elif isinstance(sample, NumericSample) and col in profile.ranges and rows:
            low, high = profile.ranges[col]
            ordered = sample.sorted
            inside = ordered.searchsorted(high, "right") - ordered.searchsorted(low, "left")
            out_of_range = float(sample.n - inside + sample.infinite) / rows
        flagged = (missing - ref_missing > thresholds.missing_increase
                   or unseen_share > thresholds.unseen_share
                   or out_of_range > thresholds.out_of_range_share)
        out.append(ColumnQuality(column=col, missing_share=missing,
                                 reference_missing_share=ref_missing,
                                 unseen_categories=unseen, unseen_share=unseen_share,
                                 out_of_range_share=out_of_range, flagged=flagged))
    return out


def _sample(current: pd.DataFrame, column: str, categorical: bool, given: Sample | None) -> Sample:
    """The drift statistics' sample of the column when it has the right kind, else a new one."""
    if categorical:
        return given if isinstance(given, CategoricalSample) else CategoricalSample(current[column])
    return given if isinstance(given, NumericSample) else NumericSample(current[column])
