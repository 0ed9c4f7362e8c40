"""The fitted ColumnTransformer as plain tuples.

``Preprocessor.values(record)`` is one row of ``pre.transform`` as a list of Python floats,
computed with the same float64 operations as scikit-learn (impute, ``(x - mean) / scale``,
one-hot), so a scorer reading it sees bit-identical inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.fastpath.base import NotCompilable, Record, is_missing

if TYPE_CHECKING:
    from serving.fastpath.text import TextBlock


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
    """The ColumnTransformer as arrays: ``row_function()(record)`` equals the tabular
    columns of ``pre.transform`` of one row; text columns are ``text`` blocks
    (serving/fastpath/text.py), placed in the output by ``order``."""

    numeric: tuple[_Numeric, ...]
    categorical: tuple[_Categorical, ...]
    order: tuple[tuple[str, int], ...]       # ("num"|"cat"|"text", block index) in output order
    width: int                               # of the tabular (dense) row
    text: tuple[TextBlock, ...] = ()

    @property
    def total_width(self) -> int:
        return self.width + sum(block.width for block in self.text)

    def dense_columns(self) -> list[int]:
        """Where each value of the tabular row sits in the whole output."""
        out: list[int] = []
        pos = 0
        for kind, i in self.order:
            if kind == "text":
                pos += self.text[i].width
                continue
            n = len(self.numeric[i].columns) if kind == "num" else sum(self.categorical[i].widths)
            out.extend(range(pos, pos + n))
            pos += n
        return out

    def row_function(self) -> Callable[[Record], list[float]]:
        """A function giving one row of ``pre.transform`` as Python floats, its lookups
        resolved once here rather than per record."""
        numeric: list[tuple[int, str, float, float, float]] = []  # pos, name, fill, mean, scale
        categorical: list[tuple[str, Any, dict[Any, int]]] = []   # name, fill, value -> pos
        pos = 0
        for kind, i in self.order:
            if kind == "text":
                continue
            if kind == "num":
                block = self.numeric[i]
                for j, name in enumerate(block.columns):
                    numeric.append((pos + j, name, block.fill[j], block.mean[j], block.scale[j]))
                pos += len(block.columns)
            else:
                cblock = self.categorical[i]
                for j, name in enumerate(cblock.columns):
                    at = {value: pos + k for value, k in cblock.categories[j].items()}
                    categorical.append((name, cblock.fill[j], at))
                    pos += cblock.widths[j]
        numeric_t, categorical_t, width = tuple(numeric), tuple(categorical), self.width

        def values(record: Record) -> list[float]:
            out = [0.0] * width
            for at, name, fill, mean, scale in numeric_t:
                v = record[name]
                out[at] = ((fill if is_missing(v) else float(v)) - mean) / scale
            for name, fill, positions in categorical_t:
                v = record[name]
                k = positions.get(fill if is_missing(v) else v)
                if k is not None:
                    out[k] = 1.0
            return out

        return values



def compile_preprocessor(pre: Any) -> Preprocessor:
    from sklearn.compose import ColumnTransformer

    from serving.fastpath.text import text_block

    if type(pre) is not ColumnTransformer:
        raise NotCompilable("first step is not a ColumnTransformer")
    numeric: list[_Numeric] = []
    categorical: list[_Categorical] = []
    text: list[TextBlock] = []
    order: list[tuple[str, int]] = []
    width = offset = 0   # the tabular row's width; the whole output's
    for name, transformer, columns in pre.transformers_:
        if transformer == "drop" or name == "remainder":
            if transformer not in ("drop",) and len(columns):
                raise NotCompilable("remainder columns are passed through")
            continue
        if isinstance(columns, str):   # one column as a 1-D input: a text vectoriser
            block = text_block(transformer, columns, offset)
            order.append(("text", len(text)))
            text.append(block)
            offset += block.width
            continue
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise NotCompilable("columns must be selected by name")
        steps = [s for _, s in _steps(transformer)]
        if any(type(s).__name__ == "OneHotEncoder" for s in steps):
            cblock = _categorical_block(transformer, list(columns))
            order.append(("cat", len(categorical)))
            categorical.append(cblock)
            added = sum(cblock.widths)
        else:
            nblock = _numeric_block(transformer, list(columns))
            order.append(("num", len(numeric)))
            numeric.append(nblock)
            added = len(nblock.columns)
        width += added
        offset += added
    return Preprocessor(tuple(numeric), tuple(categorical), tuple(order), width, tuple(text))
