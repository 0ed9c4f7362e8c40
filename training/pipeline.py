"""The scikit-learn pipeline a spec describes.

Imputation, scaling, one-hot encoding (unknown categories ignored), TF-IDF on each text
column (word n-grams, character n-grams within word boundaries, or both: ``text.analyzer``)
and the estimator. The structure is deliberately plain so that serving can compile an
exact array-only fast path from the fitted pipeline (see serving/fastpath/): each vectoriser
takes its column as one 1-D input (the column named by a string), texts as strings (a
missing text is the empty text: kernel.frames.fill_missing_text, before fit and predict).

A multi-class target is fitted on the class texts, so ``classes_`` (the order of
``predict_proba``'s columns, recorded with the version) is the sorted class texts.
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from kernel.spec import DatasetSpec

MISSING_CATEGORY = "__missing__"


def text_vectorisers(spec: DatasetSpec, column: str) -> list[tuple[str, TfidfVectorizer, str]]:
    """The TF-IDF vectoriser(s) of one text column, by the spec's ``text`` settings:
    sublinear term frequencies, l2-normalised, ``min_df`` and ``max_features`` per analyzer."""
    settings = spec.text
    out = []
    if settings.analyzer in ("word", "word+char"):
        out.append((f"text_word:{column}", TfidfVectorizer(
            analyzer="word", ngram_range=tuple(settings.word_ngrams), min_df=settings.min_df,
            max_features=settings.max_features, sublinear_tf=True), column))
    if settings.analyzer in ("char_wb", "word+char"):
        out.append((f"text_char:{column}", TfidfVectorizer(
            analyzer="char_wb", ngram_range=tuple(settings.char_ngrams), min_df=settings.min_df,
            max_features=settings.max_features, sublinear_tf=True), column))
    return out


def build_pipeline(spec: DatasetSpec, *, seed: int = 0) -> Pipeline:
    parts: list[tuple[str, Any, str | list[str]]] = []
    if spec.features.numerical:
        numeric = Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
        ])
        parts.append(("num", numeric, list(spec.features.numerical)))
    if spec.features.categorical:
        categorical = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])
        parts.append(("cat", categorical, list(spec.features.categorical)))
    for column in spec.features.text:
        parts.extend(text_vectorisers(spec, column))
    pre = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    params = dict(spec.estimator.params)
    if spec.estimator.kind == "logistic_regression":
        params.setdefault("max_iter", 1000)
        model = LogisticRegression(**params)
    else:
        params.setdefault("random_state", seed)
        model = HistGradientBoostingClassifier(**params)
    return Pipeline([("pre", pre), ("model", model)])
