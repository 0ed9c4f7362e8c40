"""The multi-class gate through the evaluator: shadow pairs read from the log's probability
lists and an offline replay both judge a text challenger against the champion by macro-F1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from controller.evidence import Evaluator, ModelCache
from controller.gate import GatePolicy
from kernel.spec import DatasetSpec, parse_spec
from registry import NewVersion
from registry.memory import InMemoryRegistry

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WORDS = {"network": ["wifi", "router", "signal", "internet", "outage"],
         "billing": ["invoice", "charge", "refund", "payment", "bill"],
         "account": ["password", "login", "email", "profile", "username"]}
CLASSES = sorted(WORDS)
SPEC = parse_spec({"model_name": "tickets", "target": "category", "timestamp_column": "ts",
                   "features": {"text": ["body"]}, "classes": CLASSES})


def _tickets(rng: np.random.Generator, n: int) -> pd.DataFrame:
    labels = rng.choice(CLASSES, size=n)
    filler = ["my", "the", "is", "not", "working", "please", "help", "again"]
    bodies = []
    for label in labels:
        # two words of the class, two from a random class (ambiguity), filler
        other = CLASSES[int(rng.integers(len(CLASSES)))]
        picked = [*rng.choice(WORDS[label], 2), *rng.choice(WORDS[other], 2), *rng.choice(filler, 3)]
        bodies.append(" ".join(rng.permutation(picked)))
    return pd.DataFrame({"body": bodies, "category": labels})


def _fit(frame: pd.DataFrame, labels: np.ndarray) -> Pipeline:
    pipe = Pipeline([("pre", ColumnTransformer([("text", TfidfVectorizer(), "body")])),
                     ("model", LogisticRegression(max_iter=500))])
    return pipe.fit(frame[["body"]], labels)


def _register(registry: InMemoryRegistry, model: Pipeline, reference: pd.DataFrame) -> int:
    validation = reference.assign(label=reference.pop("category") if "category" in reference
                                  else "network", score=0.5)
    return registry.register(NewVersion(
        "tickets", model, SPEC.to_yaml(), reference[["body"]].head(5), reference[["body"]],
        validation, {}, {}, {}, classes=[str(c) for c in model.classes_])).version


class Log:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def window(self, model: str, since: datetime, until: datetime, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        return self.frame


@pytest.fixture(scope="module")
def world() -> dict:
    rng = np.random.default_rng(0)
    train = _tickets(rng, 600)
    good = _fit(train, train["category"].to_numpy())
    weak = _fit(train.head(60), rng.permutation(train["category"].head(60).to_numpy()))
    live = _tickets(rng, 800)
    return {"train": train, "good": good, "weak": weak, "live": live}


def _evaluate(tmp_path: Path, world: dict, champion_model: str, challenger_model: str,
              evidence: str, spec: DatasetSpec = SPEC):
    registry = InMemoryRegistry()
    champion = _register(registry, world[champion_model], world["train"].head(300).copy())
    challenger = _register(registry, world[challenger_model], world["train"].head(300).copy())
    registry.set_alias("tickets", "champion", champion)
    live = world["live"]
    frame = pd.DataFrame({
        "ts": [NOW - timedelta(minutes=i) for i in range(len(live))][::-1],
        "body": live["body"], "label": live["category"], "model_version": champion,
        "shadow_version": challenger,
        "probabilities": list(world[champion_model].predict_proba(live[["body"]])),
        "shadow_probabilities": list(world[challenger_model].predict_proba(live[["body"]])),
    })
    evaluator = Evaluator(registry, Log(frame), ModelCache(registry, tmp_path),  # type: ignore[arg-type]
                          GatePolicy(min_pairs=200))
    decision, _ = evaluator.evaluate(spec, challenger, shadow_since=NOW - timedelta(days=1),
                                     holdout_from=None, now=NOW, evidence=evidence)
    return decision


@pytest.mark.parametrize("evidence", ["shadow", "offline_replay"])
def test_a_better_text_challenger_is_promoted_and_a_worse_one_rejected(tmp_path, world, evidence):
    better = _evaluate(tmp_path / "a", world, "weak", "good", evidence)
    assert better.outcome == "promote", better.reasons
    assert better.metric == "macro_f1" and better.n == 800 and better.difference > 0.1
    worse = _evaluate(tmp_path / "b", world, "good", "weak", evidence)
    assert worse.outcome == "reject", worse.reasons


def test_labels_of_no_class_are_left_out_and_said(tmp_path, world):
    world = {**world, "live": world["live"].assign(
        category=lambda f: np.where(np.arange(len(f)) < 10, "hardware", f["category"]))}
    decision = _evaluate(tmp_path, world, "weak", "good", "shadow")
    assert decision.n == 790
    assert "10 labelled rows left out" in decision.reasons[-1]
