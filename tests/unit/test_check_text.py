"""The drift check on a multi-class text model: descriptors and content drift per text
column, OOD shares by the version's profile, class drift on the predicted classes, realised
macro-F1 from the logged class probabilities (held to scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from kernel.spec import DatasetSpec
from kernel.text import TextProfile
from monitoring import stats
from monitoring.check import Reference, check_frames, class_drift
from tests.textmodels import CLASSES, ticket_frame, ticket_pipeline, ticket_spec
from training.generate_tickets import CLASSES as TICKET_CLASSES
from training.generate_tickets import MIX_BILLING, PRIORS

SLANG = ["wifi kaput", "5g gone", "rip net", "net ded fr", "no bars lol", "bruh router ded"]


def _scored(model: Any, frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    out = frame[features].copy()
    proba = model.predict_proba(frame[features])
    out["score"] = proba.max(axis=1)
    out["prediction"] = np.asarray(CLASSES, dtype=object)[proba.argmax(axis=1)]
    out["probabilities"] = list(proba)
    out["label"] = frame["label"].to_numpy()
    return out


@pytest.fixture(scope="module")
def world() -> tuple[DatasetSpec, Reference, Any]:
    spec = ticket_spec("tickets")
    spec = spec.model_copy(update={"drift": spec.drift.model_copy(update={
        "min_rows": 50, "min_labelled_rows": 50})})
    train = ticket_frame(2400, seed=1)
    model = ticket_pipeline(train[:1200])   # validated on rows it did not see
    features = spec.features.all
    profile = TextProfile.fit("body", train["body"][:1200], train["body"][1200:])
    validation = _scored(model, train[1200:], features)
    macro = f1_score(validation["label"], validation["prediction"], average="macro")
    reference = Reference(spec, train[features][:1200].reset_index(drop=True),
                          validation["score"].to_numpy(), {"macro_f1": macro}, None,
                          CLASSES, validation["prediction"].reset_index(drop=True),
                          {"body": profile})
    return spec, reference, model


def test_a_window_like_the_reference_is_ok(world):
    spec, reference, model = world
    current = _scored(model, ticket_frame(800, seed=9), spec.features.all)
    verdict = check_frames(reference, current)
    assert verdict.status == "ok", verdict.reasons
    names = [c.column for c in verdict.columns]
    assert names == ["account_age_days", "plan", "body:length", "body:words",
                     "body:oov_share", "body:non_letter_share"]
    (text,) = verdict.text_columns
    assert text.column == "body" and not text.drifted
    assert text.ood_share is not None and text.ood_share < 0.05
    assert verdict.prediction_drift is not None and verdict.prediction_drift.column == "prediction"
    assert not verdict.prediction_drift.drifted
    assert verdict.estimated is not None and "binary" in (verdict.estimated.note or "")


def test_new_slang_is_content_drift_out_of_vocabulary_and_out_of_distribution(world):
    spec, reference, model = world
    frame = ticket_frame(800, seed=9)
    rng = np.random.default_rng(4)
    network = frame["label"] == "network"
    frame.loc[network, "body"] = [str(rng.choice(SLANG)) for _ in range(int(network.sum()))]
    verdict = check_frames(reference, _scored(model, frame, spec.features.all))
    (text,) = verdict.text_columns
    assert text.drifted and text.auc > text.threshold
    assert text.ood_share is not None and text.reference_ood_share is not None
    assert text.oov_share is not None and text.reference_oov_share is not None
    assert text.ood_share > 0.15 > text.reference_ood_share
    assert text.oov_share > text.reference_oov_share
    assert "body" in verdict.drifted_columns and "body:oov_share" in verdict.drifted_columns
    assert any(r.startswith("text content drift on body") for r in verdict.reasons)
    assert any("out of distribution" in r for r in verdict.reasons)
    assert verdict.status in ("drift", "degraded")


def test_realised_macro_f1_is_scikit_learns_on_the_logged_probabilities(world):
    spec, reference, model = world
    current = _scored(model, ticket_frame(800, seed=11), spec.features.all)
    current.loc[:3, "label"] = "printer"            # no class: left out
    current.loc[4:6, "probabilities"] = None         # no probabilities: left out
    verdict = check_frames(reference, current)
    keep = np.ones(len(current), dtype=bool)
    keep[:7] = False
    expected = f1_score(current["label"][keep], current["prediction"][keep],
                        labels=sorted(set(current["label"][keep])), average="macro")
    assert verdict.performance is not None
    assert verdict.performance.value == pytest.approx(expected)
    assert verdict.performance.metric == "macro_f1"


def test_a_shift_of_predicted_classes_is_class_drift(world):
    spec, reference, model = world
    frame = ticket_frame(1500, seed=12)
    billing = frame[frame["label"] == "billing"]
    frame = pd.concat([frame.head(300), billing], ignore_index=True)   # mostly billing now
    verdict = check_frames(reference, _scored(model, frame, spec.features.all))
    assert verdict.prediction_drift is not None and verdict.prediction_drift.drifted
    assert any(r.startswith("prediction drift") for r in verdict.reasons)


# --- class drift on a small validation slice ------------------------------------------------

def _classes(rng: np.random.Generator, n: int, priors: tuple[float, ...] = PRIORS) -> pd.Series:
    """``n`` predicted classes drawn with the ticket generator's class shares."""
    return pd.Series(np.asarray(TICKET_CLASSES, dtype=object)[
        rng.choice(len(priors), size=n, p=np.asarray(priors) / sum(priors))])


def _class_mix() -> tuple[float, ...]:
    """The class_mix scenario's shares: billing at MIX_BILLING, the others scaled down."""
    billing = TICKET_CLASSES.index("billing")
    rest = sum(p for i, p in enumerate(PRIORS) if i != billing)
    return tuple(MIX_BILLING if i == billing else p * (1 - MIX_BILLING) / rest
                 for i, p in enumerate(PRIORS))


def _predicted_only(predictions: pd.Series) -> Reference:
    return Reference(ticket_spec("tickets"), pd.DataFrame(), None, {}, None,
                     TICKET_CLASSES, predictions)


def test_class_drift_on_a_small_slice_is_scipys_test_of_homogeneity():
    from scipy.stats import chi2_contingency

    rng = np.random.default_rng(0)
    validation, window = _classes(rng, 360), _classes(rng, 600)
    window[:3] = None                                       # missing predictions: left out
    result = check_text_class_drift(_predicted_only(validation), window)
    keys = sorted(set(validation))
    table = [[int((validation == k).sum()) for k in keys],
             [int((window == k).sum()) for k in keys]]
    assert result.method == "chisquare_homogeneity" and result.threshold == 0.05
    assert result.score == pytest.approx(chi2_contingency(table, correction=False).pvalue,
                                         rel=1e-12)


def test_class_drift_false_alarms_at_its_level_and_a_class_mix_shift_still_flags():
    """An unchanged world (both sides drawn from the same class shares: 360 validation rows,
    600-row windows, as a small ticket model sees) is flagged near the test's 5%, where
    Evidently's goodness-of-fit chi-square (the reference shares taken as exact) flagged
    about half of the windows; billing going from 20% to 50% (class_mix) is flagged in every
    300-row window."""
    rng = np.random.default_rng(16)
    trials, fixed, goodness_of_fit, shifted = 300, 0, 0, 0
    mix = _class_mix()
    for _ in range(trials):
        reference = _predicted_only(_classes(rng, 360))
        window = _classes(rng, 600)
        fixed += check_text_class_drift(reference, window).drifted
        assert reference.prediction_sample is not None
        old = stats.column_drift("prediction", reference.prediction_sample,
                                 stats.sample_of(window, "categorical"), "categorical")
        assert old.method == "chisquare"
        goodness_of_fit += old.drifted
        shifted += check_text_class_drift(reference, _classes(rng, 300, mix)).drifted
    assert goodness_of_fit / trials > 0.35          # the false alarms of before
    assert fixed / trials < 0.09                    # about the nominal 0.05
    assert shifted == trials


def test_class_drift_on_a_large_slice_is_evidentlys_jensen_shannon():
    rng = np.random.default_rng(2)
    reference = _predicted_only(_classes(rng, 1500))
    result = check_text_class_drift(reference, _classes(rng, 400))
    assert result.method == "jensenshannon" and not result.drifted


def check_text_class_drift(reference: Reference, window: pd.Series) -> Any:
    result = class_drift(reference, pd.DataFrame({"prediction": window}))
    assert result is not None
    return result


# --- text descriptors: a distance that must also be significant ---------------------------


def test_a_descriptor_drifts_on_a_distance_the_ks_test_also_finds_significant(world):
    """Descriptors of a reference above 1,000 rows: normed Wasserstein at or above 0.1 (the
    score, as Evidently's) *and* scipy's two-sample KS p below 0.05. A window of 40 tickets
    from the same world reaches the distance by chance and is not flagged; the same tickets
    with a pasted log line are."""
    from scipy.stats import ks_2samp

    from kernel.text import descriptors
    from monitoring.check import feature_drift

    spec, reference, _ = world
    assert len(reference.features) > 1000
    small = ticket_frame(40, seed=21)
    longer = small.assign(body=small["body"] + " [2024-01-02 10:00:00] ERROR modem reset 0x1f")
    profile = reference.text_profiles["body"]
    ref_values = descriptors(reference.features["body"].tolist(), profile)
    noise = []
    for frame, shifted in ((small, False), (longer, True)):
        results = {r.column: r for r in feature_drift(reference, frame)}
        values = descriptors(frame["body"].tolist(), profile)
        for name in ("length", "words", "oov_share", "non_letter_share"):
            r = results[f"body:{name}"]
            expected = stats.column_drift(r.column, stats.NumericSample(ref_values[name]),
                                          stats.NumericSample(values[name]), "numerical")
            assert r.score == expected.score and r.threshold == expected.threshold
            if expected.method != "wasserstein":      # few values: Evidently's choice as is
                assert (r.method, r.drifted) == (expected.method, expected.drifted)
                continue
            assert r.method == "wasserstein_ks" and r.threshold == 0.1
            p = ks_2samp(ref_values[name], values[name]).pvalue
            assert r.drifted == (r.score >= 0.1 and p < 0.05)
            if not shifted and r.score >= 0.1:
                noise.append((name, r.drifted))
        if shifted:
            assert results["body:length"].drifted and results["body:non_letter_share"].drifted
    assert noise and not any(drifted for _, drifted in noise), noise   # the distance by chance
