"""Missing values as ``None``: what JSON, Evidently's categorical columns and the label log
expect, where pandas would leave NaN or NaT."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def none_for_missing(values: pd.Series) -> pd.Series:
    """An object Series with ``None`` wherever ``values`` is missing (NaN, NaT, None, NA)."""
    out = values.to_numpy(dtype=object, copy=True)
    out[pd.isna(out)] = None
    return pd.Series(out, index=values.index, name=values.name, dtype=object)


def none_for_missing_array(values: pd.DataFrame) -> np.ndarray:
    """The frame's cells as a 2-D object array with ``None`` for missing values."""
    out = values.to_numpy(dtype=object, copy=True)
    out[pd.isna(out)] = None
    return out


def fill_missing_text(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with each of ``columns`` as text, a missing value as the empty text (what
    training fits on and serving scores: a TF-IDF vectoriser takes strings only)."""
    if not columns:
        return frame
    frame = frame.copy()
    for name in columns:
        values = frame[name].astype(object)
        frame[name] = values.where(values.notna(), "").map(str)
    return frame
