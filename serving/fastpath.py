"""An exact array-only fast path compiled from the fitted training pipeline.

``training/pipeline.py`` builds ``Pipeline([pre: ColumnTransformer([num: impute(median) ->
scale, cat: impute(constant) -> one-hot(ignore unknown)]), model])``. Scoring one record
through it costs milliseconds (a one-row DataFrame and the ColumnTransformer); the same
arithmetic on plain Python floats costs microseconds. ``compile_pipeline`` reads the
fitted parameters and returns a scorer:

* logistic regression: imputation and scaling are folded into the weights, so a record
  is scored as ``expit(b + sum(a_j * x_j) + sum(w[feature][category]))`` in pure Python;
* any other estimator with ``predict_proba`` on arrays (HistGradientBoosting): the
  preprocessing is done on a numpy vector and the estimator gets a 1 x k array.

The caller only uses the result after ``verify`` shows it matches the pipeline's
``predict_proba`` within a tolerance on the version's reference sample; anything this
module does not recognise raises ``NotCompilable`` and serving falls back to sklearn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kernel.frames import none_for_missing_array

Record = Mapping[str, Any]


class NotCompilable(Exception):
    """The fitted pipeline has a shape this compiler does not know."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class _Numeric:
    columns: tuple[str, ...]
    fill: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]


@dataclass(frozen=True)
class _Categorical:
    columns: tuple[str, ...]
    fill: tuple[Any, ...]
    categories: tuple[dict[Any, int], ...]   # value -> index within that column's block
    widths: tuple[int, ...]


def _steps(transformer: Any) -> list[tuple[str, Any]]:
    from sklearn.pipeline import Pipeline

    if isinstance(transformer, Pipeline):
        return list(transformer.steps)
    return [("only", transformer)]


def _imputer_fill(imputer: Any, n: int) -> list[Any]:
    from sklearn.impute import SimpleImputer

    if type(imputer) is not SimpleImputer or getattr(imputer, "add_indicator", False):
        raise NotCompilable(f"unsupported imputer {imputer!r}")
    stats = list(imputer.statistics_)
    if len(stats) != n:
        raise NotCompilable("imputer dropped columns")
    return stats


def _numeric_block(transformer: Any, columns: list[str]) -> _Numeric:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    n = len(columns)
    fill, mean, scale = [math.nan] * n, [0.0] * n, [1.0] * n
    for _, step in _steps(transformer):
        if isinstance(step, SimpleImputer):
            fill = [float(v) for v in _imputer_fill(step, n)]
        elif type(step) is StandardScaler:
            if step.with_mean:
                mean = [float(v) for v in step.mean_]
            if step.with_std:
                scale = [float(v) for v in step.scale_]
        else:
            raise NotCompilable(f"unsupported numeric step {step!r}")
    if any(math.isnan(v) for v in fill):
        raise NotCompilable("numeric columns without imputation")
    return _Numeric(tuple(columns), tuple(fill), tuple(mean), tuple(scale))


def _categorical_block(transformer: Any, columns: list[str]) -> _Categorical:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    n = len(columns)
    fill: list[Any] | None = None
    encoder = None
    for _, step in _steps(transformer):
        if isinstance(step, SimpleImputer):
            if step.strategy != "constant":
                raise NotCompilable("categorical imputer must be constant")
            fill = _imputer_fill(step, n)
        elif type(step) is OneHotEncoder:
            encoder = step
        else:
            raise NotCompilable(f"unsupported categorical step {step!r}")
    if encoder is None or encoder.handle_unknown != "ignore" or encoder.drop is not None:
        raise NotCompilable("categorical block needs OneHotEncoder(handle_unknown='ignore')")
    if encoder.max_categories is not None or encoder.min_frequency is not None:
        raise NotCompilable("infrequent categories are not supported")  # public params enable them
    cats = tuple({c: i for i, c in enumerate(list(values))} for values in encoder.categories_)
    return _Categorical(tuple(columns), tuple(fill if fill is not None else [None] * n), cats,
                        tuple(len(c) for c in cats))


@dataclass(frozen=True)
class Preprocessor:
    """The ColumnTransformer as arrays: ``vector(record)`` equals ``pre.transform`` of one row."""

    numeric: tuple[_Numeric, ...]
    categorical: tuple[_Categorical, ...]
    order: tuple[tuple[str, int], ...]       # ("num"|"cat", block index) in output order
    width: int

    def vector(self, record: Record) -> np.ndarray:
        out = np.zeros(self.width)
        pos = 0
        for kind, i in self.order:
            if kind == "num":
                block = self.numeric[i]
                for j, name in enumerate(block.columns):
                    v = record[name]
                    x = block.fill[j] if _is_missing(v) else float(v)
                    out[pos + j] = (x - block.mean[j]) / block.scale[j]
                pos += len(block.columns)
            else:
                cblock = self.categorical[i]
                for j, name in enumerate(cblock.columns):
                    v = record[name]
                    if _is_missing(v):
                        v = cblock.fill[j]
                    k = cblock.categories[j].get(v)
                    if k is not None:
                        out[pos + k] = 1.0
                    pos += cblock.widths[j]
        return out


def compile_preprocessor(pre: Any) -> Preprocessor:
    from sklearn.compose import ColumnTransformer

    if type(pre) is not ColumnTransformer:
        raise NotCompilable("first step is not a ColumnTransformer")
    numeric: list[_Numeric] = []
    categorical: list[_Categorical] = []
    order: list[tuple[str, int]] = []
    width = 0
    for name, transformer, columns in pre.transformers_:
        if transformer == "drop" or name == "remainder":
            if transformer not in ("drop",) and len(columns):
                raise NotCompilable("remainder columns are passed through")
            continue
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise NotCompilable("columns must be selected by name")
        steps = [s for _, s in _steps(transformer)]
        if any(type(s).__name__ == "OneHotEncoder" for s in steps):
            block = _categorical_block(transformer, list(columns))
            order.append(("cat", len(categorical)))
            categorical.append(block)
            width += sum(block.widths)
        else:
            nblock = _numeric_block(transformer, list(columns))
            order.append(("num", len(numeric)))
            numeric.append(nblock)
            width += len(nblock.columns)
    return Preprocessor(tuple(numeric), tuple(categorical), tuple(order), width)


def _expit(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _linear_scorer(pre: Preprocessor, model: Any) -> Callable[[Record], float]:
    """Fold imputation and scaling into the weights: pure Python arithmetic per record."""
    coef = np.asarray(model.coef_, dtype=float)
    if coef.shape[0] != 1:
        raise NotCompilable("multi-class logistic regression")
    w = coef[0]
    bias = float(model.intercept_[0])
    numeric: list[tuple[str, float, float]] = []   # name, weight per raw unit, fill contribution
    categorical: list[tuple[str, Any, dict[Any, float]]] = []
    pos = 0
    for kind, i in pre.order:
        if kind == "num":
            block = pre.numeric[i]
            for j, name in enumerate(block.columns):
                a = float(w[pos + j]) / block.scale[j]
                bias -= a * block.mean[j]
                numeric.append((name, a, a * block.fill[j]))
            pos += len(block.columns)
        else:
            cblock = pre.categorical[i]
            for j, name in enumerate(cblock.columns):
                table = {c: float(w[pos + k]) for c, k in cblock.categories[j].items()}
                categorical.append((name, cblock.fill[j], table))
                pos += cblock.widths[j]
    numeric_t, categorical_t = tuple(numeric), tuple(categorical)

    def score(record: Record) -> float:
        z = bias
        for name, a, filled in numeric_t:
            v = record[name]
            z += filled if v is None or v != v else a * v
        for name, fill, table in categorical_t:
            v = record[name]
            z += table.get(fill if v is None else v, 0.0)
        return _expit(z)

    return score


@dataclass(frozen=True)
class FastPath:
    kind: str                                 # "linear" (pure Python) or "arrays" (numpy + model)
    score: Callable[[Record], float]


def compile_pipeline(pipeline: Any) -> FastPath:
    """Compile a fitted ``Pipeline([pre, model])``; raise ``NotCompilable`` otherwise."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise NotCompilable("not a two-step Pipeline(pre, model)")
    pre = compile_preprocessor(pipeline.steps[0][1])
    model = pipeline.steps[1][1]
    classes = list(getattr(model, "classes_", []))
    if len(classes) != 2:
        raise NotCompilable(f"not a binary classifier (classes {classes})")
    if type(model) is LogisticRegression:
        return FastPath("linear", _linear_scorer(pre, model))
    if not hasattr(model, "predict_proba"):
        raise NotCompilable("estimator has no predict_proba")

    def score(record: Record) -> float:
        return float(model.predict_proba(pre.vector(record).reshape(1, -1))[0, 1])

    return FastPath("arrays", score)


def records_of(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows as plain dicts with ``None`` for missing values (what a JSON request carries)."""
    names = [str(c) for c in columns]
    return [dict(zip(names, row, strict=True))
            for row in none_for_missing_array(frame[list(columns)]).tolist()]


def verify(fast: FastPath, pipeline: Any, sample: pd.DataFrame, columns: Sequence[str],
           tolerance: float = 1e-6) -> float:
    """Largest absolute difference between the fast path and ``predict_proba`` on ``sample``."""
    expected = pipeline.predict_proba(sample[list(columns)])[:, 1]
    got = np.array([fast.score(r) for r in records_of(sample, columns)])
    if got.shape != expected.shape:
        return math.inf
    diff = np.abs(got - expected)
    return float(np.max(diff)) if len(diff) else 0.0
