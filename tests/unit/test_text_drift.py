"""Text content drift matches Evidently's text_content_drift step for step; descriptors,
OOD share and multi-class performance against hand and scikit-learn computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from kernel.text import TextProfile
from monitoring import text_drift

INTENTS = {"network": ["wifi down", "no internet", "router blinking", "signal lost"],
           "billing": ["wrong invoice", "double charge", "refund please", "bill too high"]}
SLANG = ["wifi kaput", "5g gone", "rip net", "net ded fr"]


def _texts(rng: np.random.Generator, n: int, slang: float = 0.0) -> list[str]:
    phrases = [p for ps in INTENTS.values() for p in ps]
    out = []
    for _ in range(n):
        pool = SLANG if rng.random() < slang else phrases
        out.append(f"{rng.choice(pool)} {rng.choice(['please help', 'since monday', 'again'])}")
    return out


@pytest.mark.parametrize(("n_ref", "slang"), [(400, 0.0), (400, 0.5), (1500, 0.0), (1500, 0.3)])
def test_content_drift_equals_evidentlys(n_ref, slang):
    from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score

    rng = np.random.default_rng(n_ref)
    reference, current = _texts(rng, n_ref), _texts(rng, 600, slang)
    ours = text_drift.content_drift("body", reference, current)
    bootstrap = n_ref <= text_drift.SMALL_REFERENCE
    auc, drifted = calculate_text_drift_score(pd.Series(reference), pd.Series(current),
                                              bootstrap=bootstrap, p_value=0.05)
    assert ours.auc == pytest.approx(auc, abs=1e-12)
    assert ours.drifted == bool(drifted) == (slang > 0)
    assert ours.method == ("perc_text_content_drift" if bootstrap else "abs_text_content_drift")
    if slang:
        assert set(ours.typical_current) & {"kaput", "5g", "gone", "rip", "net", "ded", "fr"}


def test_content_drift_on_no_words_is_no_drift():
    result = text_drift.content_drift("body", ["", None] * 50, ["!!", ""] * 50)  # type: ignore[list-item]
    assert not result.drifted and result.auc == 0.5


def test_descriptor_frame_and_ood_share():
    profile = TextProfile.fit("body", ["wifi down", "wrong invoice"] * 5, ["wifi down"])
    frame = pd.DataFrame({"body": ["wifi down", "wifi kaput", None], "other": [1, 2, 3]})
    out = text_drift.descriptor_frame(frame, {"body": profile})
    assert list(out.columns) == text_drift.descriptor_columns("body")
    assert out["body:oov_share"].tolist()[:2] == [0.0, 0.5]
    assert text_drift.ood_share(frame["body"].tolist(), profile) == pytest.approx(1 / 3)


def test_multiclass_performance_equals_sklearn():
    rng = np.random.default_rng(1)
    classes = ["account", "billing", "network"]
    y = rng.integers(0, 2, size=300)                  # "network" is never a label
    p = rng.dirichlet(np.ones(3), size=300)
    labels = [classes[i] for i in y] + ["hardware"]   # one label of no class
    out = text_drift.multiclass_performance(labels, np.vstack([p, p[:1]]), classes)
    pred = p.argmax(axis=1)
    assert out["left_out"] == 1 and out["rows"] == 300
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro"))
    assert out["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    assert "recall.network" not in out and 0 <= out["recall.billing"] <= 1


@pytest.mark.parametrize(("n", "share"), [(40, 0.5), (333, 0.3), (600, 0.5), (901, 0.8)])
def test_the_ranked_random_auc_percentile_equals_evidentlys_loop(n: int, share: float) -> None:
    y = (np.random.default_rng(n).random(n) < share).astype(int)
    assert text_drift.random_auc_percentile(y) == pytest.approx(
        text_drift.random_auc_percentile_loop(y), abs=1e-12)
    labels = np.where(y == 1, "current", "reference")   # the positive class: the greater
    assert text_drift.random_auc_percentile(labels, 0.9, iterations=200, seed=3) == \
        pytest.approx(text_drift.random_auc_percentile_loop(labels, 0.9, 200, 3), abs=1e-12)
