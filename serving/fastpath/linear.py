"""Logistic regression with imputation and scaling folded into the weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.fastpath.base import NotCompilable, Record
from serving.fastpath.preprocess import Preprocessor


def expit(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def linear_scorer(pre: Preprocessor, model: Any) -> Callable[[Record], float]:
    """Pure Python arithmetic per record: ``expit(b + sum(a_j x_j) + sum(w[feature][value]))``."""
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
        return expit(z)

    return score
