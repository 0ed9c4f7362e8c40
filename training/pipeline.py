"""The scikit-learn pipeline a spec describes.

Imputation, scaling, one-hot encoding (unknown categories ignored) and the
estimator. The structure is deliberately plain so that serving can compile an
exact array-only fast path from the fitted pipeline (see serving/fastpath/).
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from kernel.spec import DatasetSpec

MISSING_CATEGORY = "__missing__"


def build_pipeline(spec: DatasetSpec, *, seed: int = 0) -> Pipeline:
    parts = []
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
    pre = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    params = dict(spec.estimator.params)
    if spec.estimator.kind == "logistic_regression":
        params.setdefault("max_iter", 1000)
        model = LogisticRegression(**params)
    else:
        params.setdefault("random_state", seed)
        model = HistGradientBoostingClassifier(**params)
    return Pipeline([("pre", pre), ("model", model)])
