"""Synthetic support tickets: deterministic by seed, each scenario measurably does what it
says (against the pre-onset vocabulary, class shares and lengths), a TF-IDF + logistic
regression learns the quiet data imperfectly and loses network tickets to slang, the
``driftloop generate --kind tickets`` command, and the example spec parses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline

from driftloop.cli import main
from kernel.spec import load_spec
from kernel.text import TextProfile, words
from tests.conftest import ROOT
from training import generate as churn
from training.generate import Scenario
from training.generate_tickets import CLASSES, SCENARIOS, SLANG, generate

TICKETS_SPEC = ROOT / "examples" / "tickets" / "spec.yaml"
DAYS, ONSET, ROWS = 6, 3, 1000
NEW_WORDS = {"crypto", "wallet", "nft", "staking", "blockchain", "tokens"}


def _days(frame: pd.DataFrame) -> np.ndarray:
    day = frame["ts"].dt.normalize()
    return np.searchsorted(np.sort(day.unique()), day)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {name: generate(DAYS, rows_per_day=ROWS, seed=5, scenario=Scenario(name, ONSET))
            for name in SCENARIOS}


@pytest.fixture(scope="module")
def profile(frames: dict[str, pd.DataFrame]) -> TextProfile:
    """The vocabulary of the quiet days before the onset (as training would record it)."""
    before = frames["none"][_days(frames["none"]) < ONSET]
    return TextProfile.fit("body", before["body"], before["body"].iloc[-ROWS:])


def test_deterministic_by_seed() -> None:
    a = generate(2, rows_per_day=200, seed=3, scenario=Scenario("slang", 1))
    b = generate(2, rows_per_day=200, seed=3, scenario=Scenario("slang", 1))
    c = generate(2, rows_per_day=200, seed=4, scenario=Scenario("slang", 1))
    assert a.equals(b)
    assert not a["body"].equals(c["body"])


def test_shape_and_columns(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["none"]
    assert list(frame.columns) == ["ticket_id", "ts", "body", "channel", "account_age_days",
                                   "label"]
    assert len(frame) == DAYS * ROWS
    assert frame["ts"].is_monotonic_increasing
    assert (np.bincount(_days(frame)) == ROWS).all()
    assert frame["ts"].min() >= pd.Timestamp(churn.DEFAULT_START)
    assert frame["ticket_id"].is_unique
    assert set(frame["label"]) == set(CLASSES)
    assert set(frame["channel"]) == {"email", "chat", "phone", "app"}
    assert frame["account_age_days"].dtype.kind == "i" and (frame["account_age_days"] >= 0).all()
    shares = frame["label"].value_counts(normalize=True)
    assert shares["billing"] == pytest.approx(0.2, abs=0.03)
    assert shares["other"] < 0.12                       # rare in training
    assert frame["body"].str.len().between(10, 200).all()


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"none"}))
def test_nothing_changes_before_the_onset(frames: dict[str, pd.DataFrame], name: str) -> None:
    before = _days(frames["none"]) < ONSET
    assert frames[name][before].equals(frames["none"][before])
    assert not frames[name][~before].equals(frames["none"][~before])


def _oov(bodies: pd.Series, profile: TextProfile) -> float:
    return float(np.mean([profile.oov(text) for text in bodies]))


def test_slang_raises_the_oov_share_of_network_tickets_only(
        frames: dict[str, pd.DataFrame], profile: TextProfile) -> None:
    quiet, slang = frames["none"], frames["slang"]
    after = _days(slang) >= ONSET
    network = (slang["label"] == "network").to_numpy()
    assert _oov(quiet.loc[after & network, "body"], profile) < 0.02
    assert _oov(slang.loc[after & network, "body"], profile) > 0.12
    # other classes' tickets are those of the quiet world, row for row
    assert slang.loc[~network, "body"].equals(quiet.loc[~network, "body"])
    assert slang["label"].equals(quiet["label"])
    # OOD by the profile's rule: rare before, about the slang share of tickets after
    ood = np.array([profile.is_ood(text) for text in slang["body"]])
    assert ood[~after].mean() < 0.02
    assert ood[after].mean() > 0.1
    # the slang share grows day by day: 40% of network tickets on the onset day, more later
    slang_words = {w for phrase in SLANG for w in words(phrase)} - profile.vocabulary
    uses = np.array([bool(set(words(text)) & slang_words) for text in slang["body"]])
    day = _days(slang)
    first = uses[network & (day == ONSET)].mean()
    last = uses[network & (day == DAYS - 1)].mean()
    assert first == pytest.approx(0.4, abs=0.06)
    assert last > first + 0.05
    assert not uses[~network].any()


def test_new_topic_words_appear_only_after_the_onset(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["new_topic"]
    after = _days(frame) >= ONSET
    new = np.array([bool(set(words(text)) & NEW_WORDS) for text in frame["body"]])
    assert not new[~after].any()
    assert new[after].mean() == pytest.approx(0.25, abs=0.03)
    assert (frame.loc[new, "label"] == "other").all()
    other = frame["label"] == "other"
    assert other[~after].mean() < 0.12 and other[after].mean() > 0.25   # class drift
    assert not any(set(words(text)) & NEW_WORDS for text in frames["none"]["body"])


def test_class_mix_moves_billing_without_new_words(
        frames: dict[str, pd.DataFrame], profile: TextProfile) -> None:
    frame = frames["class_mix"]
    after = _days(frame) >= ONSET
    billing = frame["label"] == "billing"
    assert billing[~after].mean() == pytest.approx(0.2, abs=0.03)
    assert billing[after].mean() == pytest.approx(0.5, abs=0.03)
    assert _oov(frame.loc[after, "body"], profile) == pytest.approx(
        _oov(frames["none"].loc[after, "body"], profile), abs=0.01)
    # the other classes keep their relative shares
    rest = frame.loc[after & ~billing, "label"].value_counts(normalize=True)
    assert rest["network"] / rest["account"] == pytest.approx(0.30 / 0.22, rel=0.15)


def test_length_appends_logs_and_signatures(frames: dict[str, pd.DataFrame]) -> None:
    quiet, long = frames["none"], frames["length"]
    after = _days(long) >= ONSET
    ratio = long.loc[after, "body"].str.len().mean() / quiet.loc[after, "body"].str.len().mean()
    assert ratio > 2.5
    assert long.loc[~after, "body"].str.len().mean() == quiet.loc[~after, "body"].str.len().mean()
    grown = long["body"].str.len() > quiet["body"].str.len()
    assert grown[after].mean() == pytest.approx(0.6, abs=0.04)
    assert all(b.startswith(q) for b, q in zip(long["body"], quiet["body"], strict=True))
    assert long["label"].equals(quiet["label"])


def test_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        generate(1, scenario=Scenario("covariate"))


def _fit(frame: pd.DataFrame) -> Pipeline:
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(C=5.0, max_iter=2000))
    return model.fit(frame["body"], frame["label"])


def test_a_tfidf_model_learns_the_quiet_tickets_imperfectly_and_loses_network_to_slang(
        frames: dict[str, pd.DataFrame]) -> None:
    quiet, slang = frames["none"], frames["slang"]
    before = _days(quiet) < ONSET
    model = _fit(quiet[before])
    later = quiet[~before]
    macro = f1_score(later["label"], model.predict(later["body"]), average="macro")
    assert 0.78 < macro < 0.95                     # learnable, not perfect
    network = {name: f1_score(frame.loc[~before, "label"] == "network",
                              model.predict(frame.loc[~before, "body"]) == "network")
               for name, frame in (("none", quiet), ("slang", slang))}
    assert network["none"] > 0.8
    assert network["slang"] < network["none"] - 0.07
    # the new topic's money words make the old model say billing: class (prediction) drift
    topic = frames["new_topic"]
    billing = {name: (model.predict(frame.loc[~before, "body"]) == "billing").mean()
               for name, frame in (("none", quiet), ("new_topic", topic))}
    assert billing["new_topic"] > billing["none"] + 0.1
    assert f1_score(topic.loc[~before, "label"], model.predict(topic.loc[~before, "body"]),
                    average="macro") < macro - 0.1


def test_cli_writes_tickets_and_keeps_churn_the_default(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--kind", "tickets", "--scenario", "slang", "--days", "2",
                 "--rows-per-day", "50", "--onset-day", "1", "--seed", "3",
                 "--out", str(tmp_path)]) == 0
    assert "wrote 100 tickets over 2 days" in capsys.readouterr().out
    written = pd.read_parquet(tmp_path / "tickets.parquet")
    expected = generate(2, rows_per_day=50, seed=3, scenario=Scenario("slang", 1))
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert main(["generate", "--days", "1", "--rows-per-day", "20", "--out", str(tmp_path)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "churn.parquet"),
                                  churn.generate(1, rows_per_day=20), check_dtype=False)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--kind", "tickets", "--scenario", "covariate"],
     "--scenario: 'covariate' is a churn scenario, not a tickets one"),
    (["--scenario", "slang"], "--scenario: 'slang' is a tickets scenario, not a churn one"),
    (["--kind", "tickets", "--scenario", "meteor"], "--scenario: unknown 'meteor'"),
    (["--kind", "images"], "--kind: unknown 'images'; choose from churn, tickets"),
])
def test_cli_refuses_a_scenario_of_another_kind(argv: list[str], fragment: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", *argv, "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + fragment) and err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_cli_help_describes_the_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--kind" in text and "tickets" in text and "slang" in text


def test_the_example_spec_parses() -> None:
    spec = load_spec(TICKETS_SPEC)
    assert spec.is_multiclass and spec.listed_classes == list(CLASSES)
    assert spec.metric == "macro_f1" and spec.estimator.kind == "logistic_regression"
    assert spec.features.text == ["body"]
    frame = generate(1, rows_per_day=20)
    assert set(frame.columns) == {spec.target, spec.timestamp_column, spec.id_column,
                                  *spec.features.all}
    # its OOD pattern marks a pasted log line, not a quiet ticket
    profile = TextProfile.fit("body", frame["body"], [], ood_oov_share=1.0,
                              patterns=spec.text.ood_patterns)
    longer = generate(2, rows_per_day=200, scenario=Scenario("length", 1))
    logs = longer["body"].str.contains(" Log: [", regex=False)
    assert logs.any()
    assert all(profile.is_ood(text) for text in longer.loc[logs, "body"])
    assert not any(profile.is_ood(text) for text in longer.loc[~logs, "body"])
