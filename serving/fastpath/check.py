"""The load-time comparison of a compiled scorer with the pipeline's ``predict_proba``.

The version's reference rows are scored both ways, together with copies of some of them
that have missing values in every column and unseen categories (text columns: missing,
empty, and with words no training text had), so the paths a request can take that the
reference rows may not exercise are compared as well. A multi-class path is compared on
every class's probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kernel.frames import fill_missing_text, none_for_missing_array
from serving.fastpath.base import FastPath

UNSEEN = "\x00driftloop-unseen-category"
UNSEEN_WORDS = " zqxwv kaputtt 5g-gone ## \u00e9t\u00e9"
PROBE_ROWS = 50


def fill_text(frame: pd.DataFrame, text: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its missing texts as the empty text (what serving scores them as)."""
    return fill_missing_text(frame, text)


def records_of(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows as plain dicts with ``None`` for missing values (what a JSON request carries)."""
    names = [str(c) for c in columns]
    return [dict(zip(names, row, strict=True))
            for row in none_for_missing_array(frame[list(columns)]).tolist()]


def with_probes(sample: pd.DataFrame, columns: Sequence[str], categorical: Sequence[str],
                rows: int = PROBE_ROWS, text: Sequence[str] = ()) -> pd.DataFrame:
    """``sample`` plus three copies of its first ``rows`` rows in which every third value
    of each column is missing (numeric and categorical) or an unseen category. Columns
    named in ``categorical``, or not of a numeric dtype, get the unseen values; those in
    ``text`` are missing, empty, or get unseen words appended."""
    head = sample[list(columns)].head(rows).reset_index(drop=True)
    kinds, texts = set(categorical), set(text)
    copies = []
    for shift in range(3):
        frame = head.copy()
        for k, name in enumerate(columns):
            mask = (np.arange(len(frame)) + k + shift) % 3 == 0
            numeric = pd.api.types.is_numeric_dtype(frame[name])
            if name in texts:
                column = frame[name].astype(object)
                if shift == 2:
                    column[mask] = column[mask].fillna("") + UNSEEN_WORDS
                else:
                    column[mask] = np.nan if shift == 0 else ""
                frame[name] = column
            elif name in kinds or not numeric:
                unseen = _unseen_number(sample[name]) if numeric else UNSEEN
                frame[name] = frame[name].astype(object)
                frame.loc[mask, name] = unseen if shift == 2 else np.nan
            else:
                frame[name] = frame[name].astype(float)
                frame.loc[mask, name] = np.nan
        copies.append(frame)
    return pd.concat([sample[list(columns)].reset_index(drop=True), *copies],
                     ignore_index=True)


def _unseen_number(column: pd.Series) -> float:
    """A value a numeric categorical column never takes (a string would mix types, which
    the encoder refuses)."""
    values = column.dropna()
    return float(values.max()) + 1.0 if len(values) else -1.0


def verify(fast: FastPath, pipeline: Any, sample: pd.DataFrame, columns: Sequence[str],
           categorical: Sequence[str] = (), text: Sequence[str] = ()) -> float:
    """Largest absolute difference between the fast path and ``predict_proba`` on
    ``sample`` and its probes (``categorical`` names the columns that get unseen values,
    ``text`` the text columns); every class's probability when the path has ``proba``."""
    rows = with_probes(sample, columns, categorical, text=text)
    records = records_of(rows, columns)
    expected = np.asarray(pipeline.predict_proba(fill_text(rows, text)), dtype=float)
    if fast.proba is not None:
        got = np.array([fast.proba(r) for r in records], dtype=float)
    else:
        expected = expected[:, 1]
        got = np.array([fast.score(r) for r in records])
    if got.shape != expected.shape:
        return math.inf
    diff = np.abs(got - expected)
    if np.any(np.isnan(diff)):
        return math.inf
    return float(np.max(diff)) if len(diff) else 0.0
