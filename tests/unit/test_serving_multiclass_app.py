"""The serving app on text and multi-class versions (in process, InMemoryRegistry, the real
prediction log on a temporary directory): answers held to scikit-learn's predict_proba,
refusals naming the text field, logged rows read back (class text, probability lists, the
challenger's in its own class order), feedback decoded by the version's classes, and the
per-class and text metrics; a binary tabular app answers, logs and counts as before."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from kernel.spec import DatasetSpec
from kernel.text import TextProfile
from monitoring.predlog import LogStore, PredictionLogReader, PredictionLogWriter
from registry.memory import InMemoryRegistry
from registry.port import NewVersion
from serving.app import create_app
from serving.fastpath.check import fill_text
from serving.metrics import MULTICLASS, OOV_SHARE_BUCKETS, TEXT_LENGTH_BUCKETS, ServingMetrics
from serving.model import top
from tests.textmodels import CLASSES, ticket_frame, ticket_pipeline, ticket_spec, ticket_version
from tests.unit.test_serving_app import (
    FEEDBACK,
    make_settings,
    running,
    sample_record,
    value,
)
from training.train import train

pytestmark = pytest.mark.anyio
NORMAL = "My router is offline again"
SLANG = "wifi kaput 5g gone rip net"
FEATURES = ["body", "account_age_days", "plan"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return ticket_frame()


@pytest.fixture(scope="module")
def champion_version(frame: pd.DataFrame) -> NewVersion:
    return ticket_version(ticket_spec("tickets"), frame)


@pytest.fixture
def fake(champion_version: NewVersion) -> InMemoryRegistry:
    registry = InMemoryRegistry()
    version = registry.register(champion_version).version
    registry.set_alias(champion_version.name, "champion", version)
    return registry


def records(frame: pd.DataFrame, rows: range) -> list[dict[str, Any]]:
    out = []
    for i in rows:
        r = frame.iloc[i]
        out.append({"body": str(r["body"]), "account_age_days": float(r["account_age_days"]),
                    "plan": str(r["plan"])})
    return out


def expected_proba(model: Any, items: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray(model.predict_proba(fill_text(pd.DataFrame(items)[FEATURES], ["body"])))


def window(store: LogStore, name: str) -> pd.DataFrame:
    now = datetime.now(UTC)
    return PredictionLogReader(store).window(name, now - timedelta(hours=1),
                                             now + timedelta(hours=1))


@pytest.mark.parametrize("fast_path", [True, False])
async def test_answers_are_scikit_learns_class_probabilities(
        home: Path, fake: InMemoryRegistry, champion_version: NewVersion, frame: pd.DataFrame,
        fast_path: bool) -> None:
    spec = ticket_spec("tickets")
    app = create_app(make_settings(home, spec, serving_fast_path=fast_path), registry=fake)
    items = records(frame, range(12)) + [{"body": None, "account_age_days": None,
                                          "plan": None}]
    expected = expected_proba(champion_version.model, items)
    async with running(app) as client:
        described = (await client.get("/model")).json()["champion"]
        assert described["classes"] == list(CLASSES)
        assert described["fast_path"] == ("text-linear" if fast_path else "sklearn")
        for item, proba in zip(items, expected, strict=True):
            body = (await client.post("/predict", json=item)).json()
            assert list(body) == ["request_id", "prediction", "score", "probabilities",
                                  "model_version"]
            assert list(body["probabilities"]) == list(CLASSES)   # the version's order
            assert np.allclose(list(body["probabilities"].values()), proba, atol=1e-9)
            assert body["prediction"] == CLASSES[int(np.argmax(proba))]
            assert body["score"] == pytest.approx(proba.max(), abs=1e-9)
        r = await client.post("/predict/batch", json={"records": items})
        assert r.status_code == 200
        answered = r.json()["predictions"]
        assert len(answered) == len(items)
        got = np.array([list(a["probabilities"].values()) for a in answered])
        assert np.allclose(got, expected, atol=1e-12)  # one predict_proba for the batch
        assert [a["prediction"] for a in answered] == [CLASSES[i] for i in
                                                       expected.argmax(axis=1)]
        assert [a["score"] for a in answered] == pytest.approx(expected.max(axis=1).tolist())


class Even:
    """Every class equally likely: the prediction must be the first class, as argmax."""

    classes_ = np.array(CLASSES)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.full((len(X), len(CLASSES)), 1 / len(CLASSES))


async def test_ties_go_to_the_first_class(home: Path, frame: pd.DataFrame) -> None:
    spec = ticket_spec("even")
    registry = InMemoryRegistry()
    version = registry.register(ticket_version(spec, frame, Even())).version
    registry.set_alias(spec.model_name, "champion", version)
    assert top([0.4, 0.4, 0.2]) == int(np.argmax([0.4, 0.4, 0.2])) == 0
    assert top([0.1, 0.45, 0.45]) == int(np.argmax([0.1, 0.45, 0.45])) == 1
    async with running(create_app(make_settings(home, spec), registry=registry)) as client:
        body = (await client.post("/predict", json=records(frame, range(1))[0])).json()
        assert body["prediction"] == CLASSES[0] and body["score"] == 0.25
        batch = (await client.post("/predict/batch",
                                   json={"records": records(frame, range(3))})).json()
        assert [p["prediction"] for p in batch["predictions"]] == [CLASSES[0]] * 3


async def test_text_fields_are_refused_with_their_reason(
        home: Path, fake: InMemoryRegistry, frame: pd.DataFrame) -> None:
    spec = ticket_spec("tickets")
    app = create_app(make_settings(home, spec, serving_max_text_chars=40), registry=fake)
    good = records(frame, range(1))[0] | {"body": "router offline"}
    async with running(app) as client:
        r = await client.post("/predict", json=good | {"body": 42})
        assert r.status_code == 422
        assert r.json()["errors"] == {"body": "expected a string or null, got number"}
        r = await client.post("/predict", json=good | {"body": "x" * 41})
        assert r.status_code == 422
        assert r.json()["errors"]["body"] == ("text of 41 characters is over the limit of 40 "
                                              "(DRIFTLOOP_SERVING_MAX_TEXT_CHARS)")
        r = await client.post("/predict", json=good | {"body": ["router"]})
        assert r.status_code == 422 and "got array" in r.json()["errors"]["body"]
        r = await client.post("/predict/batch", json={"records": [good, good | {"body": 1.5}]})
        assert r.status_code == 422 and set(r.json()["errors"]) == {"records[1].body"}
        assert (await client.post("/predict", json=good | {"body": "x" * 40})).status_code == 200


async def test_logged_rows_and_feedback_read_back(
        home: Path, fake: InMemoryRegistry, champion_version: NewVersion,
        frame: pd.DataFrame) -> None:
    spec = ticket_spec("tickets")
    store = LogStore(home / "log")
    app = create_app(make_settings(home, spec), registry=fake,
                     log_writer=PredictionLogWriter(store, flush_interval=0.2))
    items = records(frame, range(6))
    answers: dict[str, dict[str, Any]] = {}
    async with running(app) as client:
        for i, item in enumerate(items[:3]):
            body = (await client.post("/predict", json=item | {"request_id": f"r{i}"})).json()
            answers[body["request_id"]] = body
        batch = (await client.post("/predict/batch", json={"records": [
            item | {"request_id": f"r{i}"} for i, item in enumerate(items[3:], 3)]})).json()
        answers.update({p["request_id"]: p for p in batch["predictions"]})
        r = await client.post("/feedback", json={"request_id": "r0", "label": "network"},
                              headers=FEEDBACK)
        assert r.status_code == 202 and r.json() == {"accepted": 1}
        r = await client.post("/feedback", json={"request_id": "r1", "label": "printer"},
                              headers=FEEDBACK)
        assert r.status_code == 422
        assert r.json()["errors"]["label"] == (
            "label 'printer' is not one of the spec's labels (one of 'account', 'billing', "
            "'hardware', 'network')")
        r = await client.post("/feedback", json={"labels": [
            {"request_id": "r1", "label": "billing"}, {"request_id": "r2", "label": 1}]},
            headers=FEEDBACK)
        assert r.status_code == 422 and list(r.json()["errors"]) == ["labels[1].label"]
        r = await client.post("/feedback", json={"labels": [
            {"request_id": "r1", "label": "billing"}, {"request_id": "r2", "label": "account"}]},
            headers=FEEDBACK)
        assert r.status_code == 202 and r.json() == {"accepted": 2}
    rows = window(store, spec.model_name).set_index("request_id")
    assert sorted(rows.index) == sorted(answers)
    expected = expected_proba(champion_version.model, items)
    for i, proba in enumerate(expected):
        logged, answer = rows.loc[f"r{i}"], answers[f"r{i}"]
        assert logged["prediction"] == answer["prediction"] == CLASSES[int(proba.argmax())]
        assert isinstance(logged["prediction"], str)
        assert np.allclose(np.asarray(logged["probabilities"], dtype=float), proba, atol=1e-9)
        assert logged["score"] == pytest.approx(answer["score"])
        assert logged["body"] == items[i]["body"]
        assert logged["shadow_probabilities"] is None and np.isnan(logged["shadow_score"])
    assert rows.loc["r0", "label"] == "network"
    assert rows.loc["r1", "label"] == "billing" and rows.loc["r2", "label"] == "account"
    assert pd.isna(rows.loc["r3", "label"])


async def test_a_multiclass_challenger_is_logged_in_its_own_class_order(
        home: Path, fake: InMemoryRegistry, champion_version: NewVersion,
        frame: pd.DataFrame) -> None:
    spec = ticket_spec("tickets")
    three = ("account", "billing", "network")
    other = ticket_frame(400, seed=8)
    challenger_model = ticket_pipeline(other, classes=three)
    challenger = fake.register(ticket_version(spec, other, challenger_model, classes=three))
    fake.set_alias(spec.model_name, "challenger", challenger.version)
    store = LogStore(home / "log")
    metrics = CollectorRegistry()
    app = create_app(make_settings(home, spec, serving_shadow_adaptive=False), registry=fake,
                     log_writer=PredictionLogWriter(store), metrics_registry=metrics)
    items = records(frame, range(10))
    async with running(app) as client:
        assert (await client.get("/model")).json()["challenger"]["classes"] == list(three)
        for i, item in enumerate(items[:4]):
            assert (await client.post("/predict", json=item | {"request_id": f"r{i}"})
                    ).status_code == 200
        r = await client.post("/predict/batch", json={"records": [
            item | {"request_id": f"r{i}"} for i, item in enumerate(items[4:], 4)]})
        assert r.status_code == 200
    rows = window(store, spec.model_name).set_index("request_id")
    theirs = expected_proba(challenger_model, items)
    assert theirs.shape == (10, 3)
    mine = expected_proba(champion_version.model, items)
    for i in range(10):
        logged = rows.loc[f"r{i}"]
        assert logged["shadow_version"] == challenger.version
        assert np.allclose(np.asarray(logged["shadow_probabilities"], dtype=float), theirs[i],
                           atol=1e-9)
        assert logged["shadow_score"] == pytest.approx(theirs[i].max(), abs=1e-9)
        assert len(logged["probabilities"]) == 4
    agreed = sum(three[int(t.argmax())] == CLASSES[int(m.argmax())]
                 for t, m in zip(theirs, mine, strict=True))
    assert value(metrics, "driftloop_shadow_scored_total", model=spec.model_name) == 10
    assert value(metrics, "driftloop_shadow_agreed_total", model=spec.model_name) == agreed


async def test_class_and_text_metrics(home: Path, fake: InMemoryRegistry,
                                      champion_version: NewVersion, frame: pd.DataFrame) -> None:
    spec = ticket_spec("tickets")
    name, version = spec.model_name, "1"
    profile = TextProfile.from_dict(dict(champion_version.text_profiles["body"]))
    assert profile.is_ood(SLANG) and not profile.is_ood(NORMAL)  # the world the test assumes
    metrics = CollectorRegistry()
    app = create_app(make_settings(home, spec), registry=fake, metrics_registry=metrics)
    base = {"account_age_days": 30.0, "plan": "basic"}
    texts = [NORMAL, SLANG, None, *[r["body"] for r in records(frame, range(5))]]
    async with running(app) as client:
        predicted = [(await client.post("/predict", json=base | {"body": text})).json()
                     ["prediction"] for text in texts[:3]]
        batch = (await client.post("/predict/batch", json={"records": [
            base | {"body": t} for t in texts[3:]]})).json()
        predicted += [p["prediction"] for p in batch["predictions"]]
        exposed = (await client.get("/metrics")).text
    for cls, n in collections.Counter(predicted).items():
        assert value(metrics, "driftloop_predictions_by_class_total", model=name,
                     version=version, **{"class": cls}) == n
    assert value(metrics, "driftloop_predictions_total", model=name, version=version,
                 predicted_class=MULTICLASS) == len(texts)
    assert value(metrics, "driftloop_prediction_score_count", model=name) == len(texts)
    labels = {"model": name, "version": version, "column": "body"}
    lengths = [0 if t is None else len(t) for t in texts]
    assert value(metrics, "driftloop_text_length_characters_count", **labels) == len(texts)
    assert value(metrics, "driftloop_text_length_characters_sum", **labels) == sum(lengths)
    assert value(metrics, "driftloop_text_length_characters_bucket", **labels, le="0.0") == 1
    for bound in TEXT_LENGTH_BUCKETS:
        assert value(metrics, "driftloop_text_length_characters_bucket", **labels,
                     le=str(float(bound))) == sum(n <= bound for n in lengths)
    shares = [profile.oov(t) for t in texts]
    assert shares[0] == 0.0 and shares[1] == pytest.approx(6 / 7)  # only "wifi" is known
    assert value(metrics, "driftloop_text_oov_share_sum", **labels) == pytest.approx(sum(shares))
    for share_bound in OOV_SHARE_BUCKETS:
        assert value(metrics, "driftloop_text_oov_share_bucket", **labels,
                     le=str(float(share_bound))) == sum(s <= share_bound for s in shares)
    assert value(metrics, "driftloop_text_ood_total", **labels) == sum(map(profile.is_ood,
                                                                           texts)) == 1
    assert value(metrics, "driftloop_missing_values_total", model=name, feature="body") == 1
    assert 'driftloop_text_ood_total{column="body",model="tickets",version="1"} 1.0' in exposed


def test_folded_class_and_text_tally_equals_observing_each() -> None:
    profile = TextProfile("body", frozenset({"router", "offline", "wifi"}), 0.5)
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = ServingMetrics(direct_registry, "m")
    tallied = ServingMetrics(tallied_registry, "m")
    direct.tally.buffered = False  # multiprocess mode: each observation at once
    rng = np.random.default_rng(0)
    texts = [None, "", NORMAL, SLANG, "router offline", "x" * 20_000]
    stream = [(1 + i % 2, CLASSES[int(rng.integers(4))], float(rng.random()),
               texts[i % len(texts)]) for i in range(300)]
    for version, cls, score, text in stream:
        for metrics in (direct, tallied):
            metrics.tally.classified(version, cls, score)
            metrics.tally.text(version, "body", profile, text)
            metrics.tally.text(version, "note", None, text)  # no profile: length only

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in registry.collect() for s in family.samples
                if not s.name.endswith("_created")}

    folded, each = samples(tallied_registry), samples(direct_registry)
    assert folded.keys() == each.keys()
    for key, v in each.items():
        assert folded[key] == pytest.approx(v, abs=1e-12), key
    for version in (1, 2):
        mine = [s for s in stream if s[0] == version]
        key = ("driftloop_text_ood_total", (("column", "body"), ("model", "m"),
                                            ("version", str(version))))
        assert folded[key] == sum(profile.is_ood(t) for *_, t in mine)
        for cls in CLASSES:
            key = ("driftloop_predictions_by_class_total", (("class", cls), ("model", "m"),
                                                            ("version", str(version))))
            assert folded.get(key, 0) == sum(c == cls for _, c, _, _ in mine)
    assert not any(n.startswith(("driftloop_text_oov", "driftloop_text_ood"))
                   and ("column", "note") in labels for n, labels in folded)


def _no_text_or_class_series(metrics: CollectorRegistry) -> Iterator[str]:
    for family in metrics.collect():
        for s in family.samples:
            if s.name.startswith(("driftloop_text_", "driftloop_predictions_by_class")):
                yield s.name


async def test_a_binary_tabular_app_is_unchanged(home: Path, unique_model_spec: DatasetSpec,
                                                 churn_file: Path, churn_frame: Any) -> None:
    spec = unique_model_spec
    registry = InMemoryRegistry()
    version = train(spec, [churn_file], registry, alias="champion").version.version
    metrics = CollectorRegistry()
    store = LogStore(home / "log")
    app = create_app(make_settings(home, spec), registry=registry, metrics_registry=metrics,
                     log_writer=PredictionLogWriter(store))
    async with running(app) as client:
        assert "classes" not in (await client.get("/model")).json()["champion"]
        body = (await client.post("/predict", json=sample_record(churn_frame, spec))).json()
        assert list(body) == ["request_id", "prediction", "score", "model_version"]
        assert body["prediction"] == int(body["score"] > 0.5)
        batch = (await client.post("/predict/batch", json={"records": [
            sample_record(churn_frame, spec, i) for i in range(3)]})).json()
        assert [list(p) for p in batch["predictions"]] == [["request_id", "prediction",
                                                            "score"]] * 3
        r = await client.post("/feedback", json={"request_id": body["request_id"],
                                                 "label": "network"}, headers=FEEDBACK)
        assert r.status_code == 422 and "positive" in r.json()["errors"]["label"]
    assert list(_no_text_or_class_series(metrics)) == []
    assert sum(value(metrics, "driftloop_predictions_total", model=spec.model_name,
                     version=str(version), predicted_class=c) for c in ("0", "1")) == 4
    rows = window(store, spec.model_name)
    assert len(rows) == 4 and "probabilities" not in rows and "shadow_probabilities" not in rows
    assert set(rows["prediction"].tolist()) <= {0, 1}


async def test_a_binary_text_version_answers_binary_and_counts_its_texts(
        home: Path, frame: pd.DataFrame) -> None:
    pair = ("billing", "network")
    spec = ticket_spec("pair").model_copy(update={"classes": None, "metric": "roc_auc"})
    pipeline = ticket_pipeline(frame, classes=pair)
    registry = InMemoryRegistry()
    new = ticket_version(spec, frame, pipeline, classes=None)
    registry.set_alias(spec.model_name, "champion", registry.register(new).version)
    metrics = CollectorRegistry()
    store = LogStore(home / "log")
    app = create_app(make_settings(home, spec), registry=registry, metrics_registry=metrics,
                     log_writer=PredictionLogWriter(store))
    item = {"body": SLANG, "account_age_days": 3.0, "plan": "pro"}
    async with running(app) as client:
        body = (await client.post("/predict", json=item)).json()
        assert list(body) == ["request_id", "prediction", "score", "model_version"]
        expected = pipeline.predict_proba(pd.DataFrame([item])[FEATURES])[0, 1]
        assert body["score"] == pytest.approx(expected, abs=1e-9)
        assert body["prediction"] == int(expected > 0.5)
    labels = {"model": spec.model_name, "version": "1", "column": "body"}
    assert value(metrics, "driftloop_text_ood_total", **labels) == 1
    assert value(metrics, "driftloop_text_length_characters_sum", **labels) == len(SLANG)
    assert list(s for s in _no_text_or_class_series(metrics)
                if s.startswith("driftloop_predictions_by_class")) == []
    rows = window(store, spec.model_name)
    assert rows["prediction"].tolist() == [body["prediction"]]
    assert rows["body"].tolist() == [SLANG]


def test_the_log_types_multiclass_rows_and_reads_them_back_compacted(tmp_path: Path) -> None:
    from monitoring.predlog.compact import Compactor

    spec = ticket_spec("typed")
    store = LogStore(tmp_path / "log")
    writer = PredictionLogWriter(store)
    writer.register_spec(spec)
    now = datetime.now(UTC)
    base = {"model_name": "typed", "model_version": 1, "shadow_version": None,
            "shadow_score": None, "latency_ms": 1.0, "account_age_days": 3.0, "plan": None}
    first = [{**base, "ts": (now - timedelta(hours=2)).timestamp(), "request_id": f"a{i}",
              "score": 0.7, "prediction": "network", "probabilities": [0.1, 0.1, 0.1, 0.7],
              "shadow_probabilities": None, "body": None} for i in range(3)]
    writer.append(first[0])
    writer.flush()
    for row in first[1:]:
        writer.append(row)
    writer.flush()
    writer.append({**base, "ts": (now - timedelta(hours=2)).timestamp(), "request_id": "b",
                   "score": 0.5, "prediction": "billing", "probabilities": [0.2, 0.5, 0.2, 0.1],
                   "shadow_version": 2, "shadow_score": 0.6,
                   "shadow_probabilities": [0.3, 0.6, 0.1], "body": "wifi"})
    writer.flush()
    assert writer.stats.rows_written == 4 and not writer.stats.rows_lost
    later = datetime.now(UTC) + timedelta(hours=2)  # the files' hour is closed by then
    report = Compactor(store, older_than=timedelta(minutes=1)).run(now=later)
    assert report.files_in == 3 and report.files_out == 1
    reader = PredictionLogReader(store)
    rows = reader.predictions("typed", now - timedelta(hours=3), now).set_index("request_id")
    assert not reader.stats.files_skipped
    assert rows["prediction"].tolist() == ["network"] * 3 + ["billing"]
    assert [list(p) for p in rows["probabilities"]] == [[0.1, 0.1, 0.1, 0.7]] * 3 + [
        [0.2, 0.5, 0.2, 0.1]]
    assert np.asarray(rows.loc["b", "shadow_probabilities"]).tolist() == [0.3, 0.6, 0.1]
    assert rows.loc["a0", "shadow_probabilities"] is None
    assert rows["body"].tolist() == [None, None, None, "wifi"]
