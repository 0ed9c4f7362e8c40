"""Exact pure-Python fast paths compiled from the fitted training pipeline.

``training/pipeline.py`` builds ``Pipeline([pre: ColumnTransformer([num: impute(median) ->
scale, cat: impute(constant) -> one-hot(ignore unknown)]), model])``. Scoring one record
through it costs milliseconds (a one-row DataFrame, the ColumnTransformer, the estimator's
own per-call checks); the same arithmetic on plain Python floats costs microseconds.
``compile_pipeline`` reads the fitted parameters and returns a scorer:

* ``linear`` (logistic regression, ``linear.py``): imputation and scaling folded into the
  weights, ``expit(b + sum(a_j * x_j) + sum(w[feature][category]))``;
* ``trees`` (HistGradientBoostingClassifier, ``trees.py``): the preprocessed row as a
  list of floats, every tree walked over flat lists of nodes;
* ``text-linear`` / ``multiclass-linear`` (logistic regression over text columns, or with
  more than two classes, ``text.py``): each ``TfidfVectorizer`` as its analyzer, a dict and
  the idf and norm arithmetic, the tabular columns as above, a sparse dot product, then
  the sigmoid or the softmax;
* ``arrays`` (any other binary estimator with ``predict_proba`` on tabular columns): the
  preprocessing in Python, the estimator on a 1 x k array.

The caller only uses the result after ``verify`` (``check.py``) shows it matches the
pipeline's ``predict_proba`` within a tolerance on the version's reference rows and
their probes (missing values, unseen categories); anything this package does not
recognise raises ``NotCompilable`` and serving falls back to scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.fastpath.base import FastPath, NotCompilable, Record
from serving.fastpath.check import records_of, verify
from serving.fastpath.linear import linear_scorer
from serving.fastpath.preprocess import compile_preprocessor
from serving.fastpath.text import sparse_linear
from serving.fastpath.trees import tree_scorer

__all__ = ["FastPath", "NotCompilable", "Record", "compile_pipeline", "records_of", "verify"]


def compile_pipeline(pipeline: Any) -> FastPath:
    """Compile a fitted ``Pipeline([pre, model])``; raise ``NotCompilable`` otherwise."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise NotCompilable("not a two-step Pipeline(pre, model)")
    pre = compile_preprocessor(pipeline.steps[0][1])
    model = pipeline.steps[1][1]
    classes = list(getattr(model, "classes_", []))
    if len(classes) < 2:
        raise NotCompilable(f"not a classifier (classes {classes})")
    if pre.text or len(classes) > 2:
        return sparse_linear(pre, model)
    if type(model) is LogisticRegression:
        return FastPath("linear", linear_scorer(pre, model))
    if type(model) is HistGradientBoostingClassifier:
        return FastPath("trees", tree_scorer(pre, model))
    if not hasattr(model, "predict_proba"):
        raise NotCompilable("estimator has no predict_proba")
    values = pre.row_function()

    def score(record: Record) -> float:
        return float(model.predict_proba(np.array([values(record)]))[0, 1])

    return FastPath("arrays", score)
