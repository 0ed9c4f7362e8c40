"""What a version knows of its text columns, and the descriptors every part computes alike.

Training fits a :class:`TextProfile` per text column (its word vocabulary and the
out-of-distribution rule), the version stores it (``TextProfile.to_dict``), serving counts
out-of-vocabulary shares and out-of-distribution requests with it, and the drift check
compares the same descriptors (:func:`descriptors`) between the reference and a window,
reading them and the OOD flags from one split of each text into words (:func:`text_stats`).

Words are what :func:`words` finds: runs of letters, or runs of digits, lower-cased
(``"WiFi kaput!! 5g"`` -> ``["wifi", "kaput", "5", "g"]``). It is deliberately not the
TF-IDF vectoriser's tokenizer (which drops one-character tokens and is configurable): the
OOV share means the same thing for every spec.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_WORD = re.compile(r"[^\W\d_]+|\d+")
#: The quantile of the validation rows' OOV shares that sets the OOD threshold when the
#: spec does not (``text.ood_oov_share``).
OOD_QUANTILE = 0.99
#: The profile's format; a stored profile of another format is refused, not misread.
PROFILE_FORMAT = 1


def words(text: str | None) -> list[str]:
    """The lower-cased words of ``text`` (none for None or non-text)."""
    if not isinstance(text, str):
        return []
    return _WORD.findall(text.lower())


def oov_share(tokens: Sequence[str], vocabulary: frozenset[str] | set[str]) -> float:
    """The share of ``tokens`` not in ``vocabulary``; 0.0 for no tokens (nothing is unknown)."""
    if not tokens:
        return 0.0
    unknown = sum(1 for token in tokens if token not in vocabulary)
    return unknown / len(tokens)


def non_letter_share(text: str | None) -> float:
    """The share of characters that are neither letters nor whitespace (0.0 for empty)."""
    if not isinstance(text, str) or not text:
        return 0.0
    other = sum(1 for ch in text if not (ch.isalpha() or ch.isspace()))
    return other / len(text)


@dataclass(frozen=True)
class TextProfile:
    """One text column's reference: the training vocabulary (words in at least ``min_df``
    training rows, at most ``max_words`` of the most frequent) and the OOD rule (OOV share
    above ``ood_oov_share``, or a match of one of ``patterns``)."""

    column: str
    vocabulary: frozenset[str]
    ood_oov_share: float
    patterns: tuple[str, ...] = ()
    threshold_source: str = "validation"   # "validation" quantile, or "spec"
    train_rows: int = 0
    #: ``patterns`` compiled into one case-insensitive expression (None without patterns).
    matcher: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE) \
            if self.patterns else None
        object.__setattr__(self, "matcher", compiled)

    def oov(self, text: str | None) -> float:
        return oov_share(words(text), self.vocabulary)

    def is_ood(self, text: str | None, share: float | None = None) -> bool:
        """Out of distribution: OOV share strictly above the threshold, or a pattern match.
        ``share`` is the OOV share when the caller has it already."""
        value = self.oov(text) if share is None else share
        if value > self.ood_oov_share:
            return True
        return bool(self.matcher is not None and isinstance(text, str)
                    and self.matcher.search(text))

    @classmethod
    def fit(cls, column: str, train: Iterable[str | None], validation: Iterable[str | None], *,
            min_df: int = 2, max_words: int = 50_000, ood_oov_share: float | None = None,
            patterns: Sequence[str] = ()) -> TextProfile:
        """The profile of ``column`` from its training texts; the threshold from the
        validation texts' OOV shares (their ``OOD_QUANTILE``) unless the spec sets it."""
        document_frequency: Counter[str] = Counter()
        rows = 0
        for text in train:
            rows += 1
            document_frequency.update(set(words(text)))
        kept = [w for w, n in document_frequency.most_common() if n >= min_df][:max_words]
        vocabulary = frozenset(kept)
        source = "spec"
        if ood_oov_share is None:
            shares = [oov_share(words(t), vocabulary) for t in validation]
            ood_oov_share = float(np.quantile(shares, OOD_QUANTILE)) if shares else 0.5
            source = "validation"
        return cls(column, vocabulary, float(ood_oov_share), tuple(patterns), source, rows)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, "column": self.column,
                "vocabulary": sorted(self.vocabulary), "ood_oov_share": self.ood_oov_share,
                "patterns": list(self.patterns), "threshold_source": self.threshold_source,
                "train_rows": self.train_rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"text profile format {data.get('format')!r}, "
                             f"expected {PROFILE_FORMAT}")
        return cls(str(data["column"]), frozenset(data["vocabulary"]),
                   float(data["ood_oov_share"]), tuple(data.get("patterns", ())),
                   str(data.get("threshold_source", "validation")),
                   int(data.get("train_rows", 0)))


#: The descriptors of a text column, in the order :func:`descriptors` returns them.
DESCRIPTORS = ("length", "words", "oov_share", "non_letter_share")


@dataclass(frozen=True)
class TextStats:
    """What a drift check reads of one text column, per text, from one split of each text
    into words (:func:`text_stats`): the four descriptors (NaN for a missing text) and
    whether the text is out of distribution by the profile's rule (a missing text is judged
    as the empty text, as :meth:`TextProfile.is_ood` judges None)."""

    length: np.ndarray
    words: np.ndarray
    oov_share: np.ndarray
    non_letter_share: np.ndarray
    ood: np.ndarray

    def descriptors(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in DESCRIPTORS}

    @property
    def ood_share(self) -> float:
        """The share of the texts (missing ones included) out of distribution; 0.0 for none."""
        return float(np.mean(self.ood)) if self.ood.size else 0.0

    @property
    def mean_oov(self) -> float | None:
        """The mean OOV share of the texts present; None when there are none."""
        present = self.oov_share[~np.isnan(self.length)]
        return float(np.mean(present)) if present.size else None


def text_stats(texts: Iterable[str | None], profile: TextProfile) -> TextStats:
    """Per text: its length in characters, its number of words, its OOV share against
    ``profile``, its share of non-letter characters and its OOD flag, each text split into
    words once; None (missing) gives NaN for the descriptors."""
    length: list[float] = []
    count: list[float] = []
    oov: list[float] = []
    non_letter: list[float] = []
    ood: list[bool] = []
    vocabulary = profile.vocabulary
    for text in texts:
        if not isinstance(text, str):
            length.append(math.nan)
            count.append(math.nan)
            oov.append(math.nan)
            non_letter.append(math.nan)
            ood.append(profile.is_ood(text, 0.0))   # words(None) is no words: share 0.0
            continue
        tokens = words(text)
        share = oov_share(tokens, vocabulary)
        length.append(float(len(text)))
        count.append(float(len(tokens)))
        oov.append(share)
        non_letter.append(non_letter_share(text))
        ood.append(profile.is_ood(text, share))
    return TextStats(np.asarray(length, dtype=np.float64), np.asarray(count, dtype=np.float64),
                     np.asarray(oov, dtype=np.float64),
                     np.asarray(non_letter, dtype=np.float64), np.asarray(ood, dtype=bool))


def descriptors(texts: Iterable[str | None], profile: TextProfile) -> dict[str, np.ndarray]:
    """Per text: its length in characters, its number of words, its OOV share against
    ``profile`` and its share of non-letter characters; None (missing) gives NaN for all."""
    return text_stats(texts, profile).descriptors()
