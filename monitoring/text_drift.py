"""Drift on text columns and on a multi-class model's outputs. No I/O.

- **Content drift** (:func:`content_drift`): a domain classifier told reference texts from
  current texts, the method of Evidently's ``text_content_drift`` stattests, matched here
  step for step so that the verdicts are the same (docs/monitoring.md, "Text"): the texts of
  both sides split 50/50 (``random_state=42``), TF-IDF (``sublinear_tf``, ``max_df=0.5``,
  English stop words) and an L1 ``SGDClassifier`` (modified Huber loss), ROC AUC on the held
  half. With more than 1,000 reference texts the column drifts when the AUC is above 0.55
  (Evidently's ``abs_text_content_drift``); with fewer, when it is above the 95th percentile of
  a random classifier's AUC on the same held labels (``perc_text_content_drift``). Each side
  is sampled to at most ``max_rows`` texts first (Evidently reads them all): say so when
  comparing. The words most typical of each side come with the result.
- **Descriptors** (:func:`descriptor_frame`): each text column as numerical columns
  ``<column>:<descriptor>`` (kernel/text.py's length, words, OOV share against the version's
  vocabulary, non-letter share), compared with the reference like any numerical feature.
  Each text is split into words once (:func:`text_stats_of`, kernel/text.py's
  ``text_stats``): the descriptors, the OOD share and the mean OOV share read that one pass.
- **Class drift**: a multi-class model's predicted classes are a categorical column
  (``prediction``), compared with the validation slice's predicted classes.
- **Multi-class performance** (:func:`multiclass_performance`): accuracy, macro-F1, log loss
  and per-class recall of labelled rows, held equal to scikit-learn's in tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kernel.text import DESCRIPTORS, TextProfile, TextStats, text_stats

ABS_THRESHOLD = 0.55          # Evidently's abs_text_content_drift default
PERC_CONFIDENCE = 0.95        # Evidently's perc_text_content_drift default
SMALL_REFERENCE = 1000        # at or below: the percentile test, as Evidently chooses
MAX_ROWS = 20_000             # texts a side the classifier reads at most
TYPICAL_WORDS = 10


@dataclass(frozen=True)
class ContentDrift:
    column: str
    method: str                 # abs_text_content_drift | perc_text_content_drift
    auc: float
    threshold: float
    drifted: bool
    rows_per_side: tuple[int, int]
    typical_current: list[str] = field(default_factory=list)
    typical_reference: list[str] = field(default_factory=list)


def _sample(texts: Sequence[str | None], rows: int, seed: int) -> list[str]:
    values = ["" if not isinstance(t, str) else t for t in texts]
    if len(values) <= rows:
        return values
    picked = np.random.default_rng(seed).choice(len(values), size=rows, replace=False)
    return [values[i] for i in np.sort(picked)]


def random_auc_percentile(y: np.ndarray, confidence: float = PERC_CONFIDENCE,
                          iterations: int = 1000, seed: int = 42) -> float:
    """The ``confidence`` percentile of a random classifier's ROC AUC on labels ``y`` (what
    Evidently's percentile test compares with; the same seeds, so the same random scores).

    Evidently calls scikit-learn's ``roc_auc_score`` once per seed; here the AUCs of all the
    seeds' scores come from one rank computation (the Mann-Whitney form: continuous random
    scores have no ties, where it equals the ROC curve's area), about 50x faster on a few
    hundred held-out texts. :func:`random_auc_percentile_loop` is Evidently's loop, kept to
    hold this one to it."""
    labels = np.asarray(y)
    values = np.unique(labels)
    if values.size != 2:
        return random_auc_percentile_loop(labels, confidence, iterations, seed)
    positive = labels == values[1]            # roc_auc_score's positive class: the greater
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    np.random.seed(seed)  # Evidently's own sequence of seeds, for the same threshold
    seeds = np.random.randint(0, iterations * 10, size=iterations)
    scores = np.empty((iterations, labels.size))
    for i, s in enumerate(seeds):
        np.random.seed(s)
        scores[i] = np.random.rand(labels.size)
    ranks = scores.argsort(axis=1).argsort(axis=1) + 1.0
    aucs = (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(np.percentile(aucs, 100 * confidence))


def random_auc_percentile_loop(y: np.ndarray, confidence: float = PERC_CONFIDENCE,
                               iterations: int = 1000, seed: int = 42) -> float:
    """Evidently's computation of :func:`random_auc_percentile`, one ``roc_auc_score`` a seed."""
    from sklearn.metrics import roc_auc_score

    np.random.seed(seed)
    seeds = np.random.randint(0, iterations * 10, size=iterations)
    values = []
    for s in seeds:
        np.random.seed(s)
        values.append(roc_auc_score(y, np.random.rand(len(y))))
    return float(np.percentile(values, 100 * confidence))


def content_drift(column: str, reference: Sequence[str | None], current: Sequence[str | None],
                  *, threshold: float | None = None, max_rows: int = MAX_ROWS,
                  seed: int = 0) -> ContentDrift:
    """Whether a domain classifier tells ``current`` texts from ``reference`` texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    ref, cur = _sample(reference, max_rows, seed), _sample(current, max_rows, seed + 1)
    texts = pd.Series([*ref, *cur])
    target = pd.Series([0] * len(ref) + [1] * len(cur))
    x_train, x_test, y_train, y_test = train_test_split(texts, target, test_size=0.5,
                                                        random_state=42, shuffle=True)
    pipeline = Pipeline([
        ("vectorization", TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english")),
        ("classification", SGDClassifier(alpha=0.0001, max_iter=50, penalty="l1",
                                         loss="modified_huber", random_state=42)),
    ])
    try:
        pipeline.fit(x_train, y_train)
    except ValueError:  # no words at all (empty vocabulary): nothing tells the sides apart
        return ContentDrift(column, "abs_text_content_drift", 0.5, ABS_THRESHOLD, False,
                            (len(ref), len(cur)))
    auc = float(roc_auc_score(y_test, pipeline.predict_proba(x_test)[:, 1]))
    if len(ref) > SMALL_REFERENCE:
        method, limit = "abs_text_content_drift", ABS_THRESHOLD if threshold is None else threshold
    else:
        method = "perc_text_content_drift"
        limit = random_auc_percentile(y_test.to_numpy(), threshold or PERC_CONFIDENCE)
    current_words, reference_words = _typical_words(pipeline)
    return ContentDrift(column, method, auc, float(limit), auc > limit, (len(ref), len(cur)),
                        current_words, reference_words)


def _typical_words(pipeline: object) -> tuple[list[str], list[str]]:
    """The terms with the largest weights towards current (positive) and reference."""
    vectoriser = pipeline["vectorization"]  # type: ignore[index]
    weights = pipeline["classification"].coef_[0]  # type: ignore[index]
    terms = vectoriser.get_feature_names_out()
    order = np.argsort(weights)
    current = [str(terms[i]) for i in order[::-1][:TYPICAL_WORDS] if weights[i] > 0]
    reference = [str(terms[i]) for i in order[:TYPICAL_WORDS] if weights[i] < 0]
    return current, reference


def descriptor_columns(column: str) -> list[str]:
    """The numerical columns a text column becomes (``body:length``, ...)."""
    return [f"{column}:{name}" for name in DESCRIPTORS]


def text_stats_of(frame: pd.DataFrame,
                  profiles: Mapping[str, TextProfile]) -> dict[str, TextStats]:
    """Every profiled text column of ``frame`` (those it has), each text split once."""
    return {column: text_stats(frame[column].tolist(), profile)
            for column, profile in profiles.items() if column in frame.columns}


def descriptor_frame(frame: pd.DataFrame, profiles: Mapping[str, TextProfile],
                     stats: Mapping[str, TextStats] | None = None) -> pd.DataFrame:
    """The descriptor columns of every profiled text column of ``frame``; ``stats`` are
    those columns' :func:`text_stats_of` when the caller has them already."""
    stats = text_stats_of(frame, profiles) if stats is None else stats
    out: dict[str, np.ndarray] = {}
    for column in profiles:
        if column not in frame.columns:
            continue
        for name, array in stats[column].descriptors().items():
            out[f"{column}:{name}"] = array
    return pd.DataFrame(out, index=frame.index)


def ood_share(texts: Sequence[str | None], profile: TextProfile) -> float:
    """The share of ``texts`` that are out of distribution by the version's rule."""
    return text_stats(texts, profile).ood_share


def multiclass_performance(labels: Sequence[object], probabilities: np.ndarray,
                           classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes among the labels), log loss and per-class
    recall (``recall.<class>``) of labelled rows; labels are matched to ``classes`` as text,
    and rows whose label is no class are left out (``left_out`` counts them)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, recall_score

    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
    known = y >= 0
    p = np.asarray(probabilities, dtype=float).reshape(len(y), -1)[known]
    y = y[known]
    out: dict[str, float] = {"rows": float(len(y)), "left_out": float((~known).sum())}
    if not len(y):
        return out
    pred = p.argmax(axis=1)
    present = np.unique(y)
    out["accuracy"] = float(accuracy_score(y, pred))
    out["macro_f1"] = float(f1_score(y, pred, labels=present, average="macro", zero_division=0))
    out["log_loss"] = float(log_loss(y, np.clip(p, 1e-15, 1), labels=range(len(classes))))
    recalls = recall_score(y, pred, labels=range(len(classes)), average=None, zero_division=0)
    for i, name in enumerate(classes):
        if i in present:
            out[f"recall.{name}"] = float(recalls[i])
    return out
