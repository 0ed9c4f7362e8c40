"""Text columns and multi-class logistic regression, without pandas or the ColumnTransformer.

A fitted ``TfidfVectorizer`` on one column becomes a :class:`TextBlock`: its own analyzer
(``build_analyzer()``: the same preprocessing, tokenising, stop words and n-grams as
``transform``) on the string, vocabulary lookups in a dict, then the arithmetic of
``TfidfTransformer.transform`` on the few terms found (binary counts, ``1 + log(tf)`` when
sublinear, times ``idf_``, divided by the row's l2 or l1 norm). A missing text is the empty
text (serving scores it so; serving/model.py ``frame_of``).

:func:`sparse_linear` then scores ``b + W x`` with the tabular columns as the dense row of
``Preprocessor.row_function`` and each text block as a sparse dot product, followed by the
sigmoid (binary) or the softmax (multi-class: ``LogisticRegression.predict_proba`` is
multinomial there). Every number is float64, as scikit-learn's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.fastpath.base import FastPath, NotCompilable, Record
from serving.fastpath.linear import expit
from serving.fastpath.preprocess import Preprocessor

NORMS = ("l2", "l1", None)


@dataclass(frozen=True)
class TextBlock:
    """One fitted ``TfidfVectorizer`` on ``column``; its terms start at ``offset`` in the
    ColumnTransformer's output."""

    column: str
    offset: int
    width: int
    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray | None
    norm: str | None
    sublinear: bool
    binary: bool

    def vector(self, text: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The non-zero terms of ``transform([text])``: (term indices, values)."""
        counts: dict[int, int] = {}
        vocabulary = self.vocabulary
        for term in self.analyzer(text if isinstance(text, str) else ""):
            j = vocabulary.get(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        if self.binary:
            values = np.ones(len(counts), dtype=np.float64)
        else:
            values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear:
            values = np.log(values) + 1.0
        if self.idf is not None:
            values *= self.idf[index]
        if self.norm is not None and len(values):
            total = math.sqrt(float(values @ values)) if self.norm == "l2" \
                else float(np.abs(values).sum())
            if total > 0:
                values /= total
        return index, values


def text_block(vectorizer: Any, column: str, offset: int) -> TextBlock:
    """The block of a fitted ``TfidfVectorizer``; ``NotCompilable`` for what it cannot copy
    exactly (a callable analyzer, file input, a float32 output)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if type(vectorizer) is not TfidfVectorizer:
        raise NotCompilable(f"text column {column!r}: unsupported transformer {vectorizer!r}")
    if callable(vectorizer.analyzer) or vectorizer.input != "content":
        raise NotCompilable(f"text column {column!r}: a callable analyzer or non-text input")
    if np.dtype(vectorizer.dtype) != np.float64 or vectorizer.norm not in NORMS:
        raise NotCompilable(f"text column {column!r}: dtype {vectorizer.dtype}, "
                            f"norm {vectorizer.norm!r}")
    vocabulary = {str(term): int(j) for term, j in vectorizer.vocabulary_.items()}
    idf = np.asarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None
    return TextBlock(column, offset, len(vocabulary), vectorizer.build_analyzer(), vocabulary,
                     idf, vectorizer.norm, bool(vectorizer.sublinear_tf),
                     bool(vectorizer.binary))


def softmax(z: np.ndarray) -> list[float]:
    e = np.exp(z - z.max())
    return (e / e.sum()).tolist()


def _logits(pre: Preprocessor, model: Any) -> Callable[[Record], np.ndarray]:
    """``record -> b + W x`` over the tabular row and the text blocks."""
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64).copy()
    if coef.shape[1] != pre.total_width:
        raise NotCompilable(f"model has {coef.shape[1]} inputs, the columns give "
                            f"{pre.total_width}")
    dense_weights = np.ascontiguousarray(coef[:, list(pre.dense_columns())])
    blocks = tuple((b, np.ascontiguousarray(coef[:, b.offset:b.offset + b.width].T))
                   for b in pre.text)
    row = pre.row_function() if pre.width else None

    def logits(record: Record) -> np.ndarray:
        z = intercept.copy()
        if row is not None:
            z += dense_weights @ np.asarray(row(record), dtype=np.float64)
        for block, weights in blocks:
            index, values = block.vector(record[block.column])
            if len(index):
                z += values @ weights[index]
        return z

    return logits


def sparse_linear(pre: Preprocessor, model: Any) -> FastPath:
    """Logistic regression over tabular and text columns: binary (``score``) or
    multi-class (``proba``, in ``model.classes_`` order)."""
    from sklearn.linear_model import LogisticRegression

    if type(model) is not LogisticRegression:
        raise NotCompilable(f"text or multi-class columns need LogisticRegression, got "
                            f"{type(model).__name__}")
    logits = _logits(pre, model)
    if len(model.classes_) == 2:
        def score(record: Record) -> float:
            return expit(float(logits(record)[0]))

        return FastPath("text-linear", score)

    def proba(record: Record) -> list[float]:
        return softmax(logits(record))

    def top(record: Record) -> float:
        return max(proba(record))

    return FastPath("text-linear" if pre.text else "multiclass-linear", top, proba)
