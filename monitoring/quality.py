"""Data quality per column against the version's reference sample.

Three signals a distance test can miss or blur: a rise in the missing share, values of
a categorical column the model never saw, numerical values outside the range the model
was trained on. Shares are of all rows of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
                   categorical: list[str], thresholds: QualityThresholds = QualityThresholds()
                   ) -> list[ColumnQuality]:
    rows = len(current)
    out = []
    for col in [*numerical, *categorical]:
        values = current[col]
        missing = float(values.isna().mean()) if rows else 0.0
        ref_missing = profile.missing.get(col, 0.0)
        unseen: list[str] = []
        unseen_share = out_of_range = 0.0
        if col in profile.categories and rows:
            present = values.dropna().astype(str)
            known = profile.categories[col]
            mask = ~present.isin(known)
            unseen = sorted(present[mask].unique().tolist())[:MAX_LISTED_CATEGORIES]
            unseen_share = float(mask.sum()) / rows
        elif col in profile.ranges and rows:
            low, high = profile.ranges[col]
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            outside = (numbers < low) | (numbers > high) | np.isinf(numbers)
            out_of_range = float(np.count_nonzero(outside)) / rows
        flagged = (missing - ref_missing > thresholds.missing_increase
                   or unseen_share > thresholds.unseen_share
                   or out_of_range > thresholds.out_of_range_share)
        out.append(ColumnQuality(column=col, missing_share=missing,
                                 reference_missing_share=ref_missing,
                                 unseen_categories=unseen, unseen_share=unseen_share,
                                 out_of_range_share=out_of_range, flagged=flagged))
    return out
