"""Small support-ticket text models for the serving tests (until training fits them).

``ticket_frame`` makes a few hundred short ticket texts over four classes, with a numerical
and a categorical column; ``ticket_pipeline`` fits ColumnTransformer(TF-IDF word and char
n-grams on the text, one-hot, scaling) + LogisticRegression on it, as training will;
``ticket_version`` wraps it as a registry ``NewVersion`` with classes.json and
text_profiles.json (kernel.text.TextProfile)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kernel.spec import DatasetSpec, parse_spec
from kernel.text import TextProfile
from registry.port import NewVersion

CLASSES = ("account", "billing", "hardware", "network")
WORDS = {
    "network": ["wifi", "internet", "router", "connection", "signal", "slow", "dropping",
                "offline", "latency", "network"],
    "billing": ["invoice", "charge", "refund", "payment", "bill", "overcharged", "price",
                "card", "subscription", "fee"],
    "account": ["password", "login", "account", "email", "reset", "locked", "username",
                "profile", "verify", "access"],
    "hardware": ["screen", "battery", "keyboard", "broken", "cracked", "charger", "device",
                 "laptop", "phone", "repair"],
}
FILLER = ["my", "the", "is", "not", "working", "please", "help", "since", "yesterday", "again",
          "i", "cannot", "why", "still", "urgent"]


def ticket_text(rng: np.random.Generator, label: str) -> str:
    own = rng.choice(WORDS[label], size=int(rng.integers(1, 4)))
    other = rng.choice(WORDS[str(rng.choice(CLASSES))], size=int(rng.integers(0, 2)))
    filler = rng.choice(FILLER, size=int(rng.integers(1, 6)))
    words = [*own, *other, *filler]
    rng.shuffle(words)
    text = " ".join(words)
    return text.capitalize() + ("!" if rng.random() < 0.2 else "")


def ticket_frame(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, size=rows)
    return pd.DataFrame({
        "body": [ticket_text(rng, str(c)) for c in labels],
        "account_age_days": rng.integers(1, 2000, size=rows).astype(float),
        "plan": rng.choice(["basic", "plus", "pro"], size=rows),
        "label": labels,
    })


def ticket_spec(name: str | None = None, *, tabular: bool = True) -> DatasetSpec:
    data: dict[str, Any] = {
        "model_name": name or f"tickets-{uuid.uuid4().hex[:8]}", "target": "label",
        "timestamp_column": "ts",
        "classes": list(CLASSES),
        "features": {"text": ["body"], **({"numerical": ["account_age_days"],
                                           "categorical": ["plan"]} if tabular else {})}}
    return parse_spec(data)


def ticket_pipeline(frame: pd.DataFrame, *, tabular: bool = True, sublinear: bool = True,
                    classes: tuple[str, ...] = CLASSES) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts: list[Any] = [
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=sublinear), "body"),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2,
                                 sublinear_tf=sublinear), "body")]
    if tabular:
        parts += [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                              ("scale", StandardScaler())]), ["account_age_days"]),
            ("cat", Pipeline([("impute", SimpleImputer(strategy="constant",
                                                       fill_value="missing")),
                              ("onehot", OneHotEncoder(handle_unknown="ignore"))]), ["plan"])]
    features = ["body", "account_age_days", "plan"] if tabular else ["body"]
    pipeline = Pipeline([("pre", ColumnTransformer(parts)),
                         ("model", LogisticRegression(C=5.0, max_iter=2000))])
    mask = frame["label"].isin(classes)
    target = frame.loc[mask, "label"]
    if len(classes) == 2:
        target = (target == classes[1]).astype(int)
    return pipeline.fit(frame.loc[mask, features], target)


def ticket_version(spec: DatasetSpec, frame: pd.DataFrame | None = None,
                   model: Any = None, classes: tuple[str, ...] | None = CLASSES) -> NewVersion:
    """A registry version of a fitted ticket pipeline with its classes and text profile."""
    frame = ticket_frame() if frame is None else frame
    model = ticket_pipeline(frame, tabular=bool(spec.features.tabular)) if model is None \
        else model
    features = spec.features.all
    train, validation = frame.iloc[: len(frame) * 4 // 5], frame.iloc[len(frame) * 4 // 5:]
    profile = TextProfile.fit("body", train["body"], validation["body"], min_df=2)
    scored = validation[features].copy()
    scored["label"] = validation["label"].astype(str)
    scored["score"] = model.predict_proba(validation[features]).max(axis=1)
    return NewVersion(
        name=spec.model_name, model=model, spec_yaml=yaml.safe_dump(
            yaml.safe_load(spec.to_yaml())), input_example=frame[features].head(3),
        reference=train[features].reset_index(drop=True), validation=scored, metrics={
            "macro_f1": 0.9}, params={}, tags={}, classes=classes,
        text_profiles={"body": profile.to_dict()})
