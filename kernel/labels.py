"""The one label decoder: what a label value means, defined by the spec.

Labels reach driftloop as JSON at ``/feedback``, as text in the label log, as a target
column in training files and in a backtest's history. Every reader (the gate, the drift
check's realised performance, the retrain export, training, the backtest) decodes them
here, so ``1.0`` cannot be a positive for one and a negative for another.

A binary spec names its positive label and (optionally) its negative one:

- numbers (``positive_label: 1``, ``negative_label: 0``): the number itself, the same value
  as a float (``1.0``), its text (``"1"``, ``"1.0"``), and for 1/0 the booleans ``true`` /
  ``false`` and their text (``"true"``/``"True"``);
- booleans: ``true``/``false``, 1/0 and their text, as above;
- text (``positive_label: churned``): the exact string only.

Anything else (``" 1"``, ``"yes"`` for a numeric label, ``2``, NaN, null) is refused with
``LabelError`` naming the value. Stored labels are kept in their canonical text
(``canonical``): ``"1"`` / ``"0"`` or the spec's exact strings.

A multi-class spec (``classes:``) decodes with :class:`ClassCodec`: a label is one of the
classes, as text. A class given as a number (``classes: [1, 2, 3]``) matches the same
number sent as a float or as its text (``2``, ``2.0``, ``"2"`` are all ``"2"``); a text class
matches its exact string only. With ``classes: infer`` the version's recorded classes are
the list (serving, the gate); before a version exists (training) any non-empty text or
finite number is a class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel.errors import DataError


class LabelError(DataError):
    """A label value the spec does not define."""

    def __init__(self, value: Any, expected: str) -> None:
        super().__init__(f"label {value!r} is not one of the spec's labels ({expected})")
        self.value = value


def _number(value: Any) -> float | None:
    """The value as a number if it is one or is the text of one (never for bools)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str) and value == value.strip() and value:
        lowered = value.lower()
        if lowered in ("true", "false"):
            return 1.0 if lowered == "true" else 0.0
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _is_numeric_label(label: Any) -> bool:
    return isinstance(label, bool | int | float | np.integer | np.floating)


@dataclass(frozen=True)
class LabelCodec:
    """Decodes label values to 1 (positive) and 0 (negative) for one binary spec."""

    positive: Any
    negative: Any | None = None

    def __post_init__(self) -> None:
        if self.negative is None and _is_numeric_label(self.positive) and \
                float(self.positive) in (0.0, 1.0):
            object.__setattr__(self, "negative", type(self.positive)(1 - float(self.positive)))

    @property
    def expected(self) -> str:
        if self.negative is None:
            return f"positive {self.positive!r}, anything else negative"
        return f"positive {self.positive!r}, negative {self.negative!r}"

    def _matches(self, value: Any, label: Any) -> bool:
        if _is_numeric_label(label):
            if isinstance(value, bool) and float(label) not in (0.0, 1.0):
                return False
            number = _number(value)
            if isinstance(value, str) and value.lower() in ("true", "false") and \
                    float(label) not in (0.0, 1.0):
                return False
            return number is not None and number == float(label)
        return isinstance(value, str) and value == str(label)

    def decode(self, value: Any) -> int:
        """1 for the positive label, 0 for the negative one; ``LabelError`` otherwise.

        With no negative label declared and a text positive label (older specs), every
        other non-empty text or number is negative, as before."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise LabelError(value, self.expected)
        if self._matches(value, self.positive):
            return 1
        if self.negative is None:
            if isinstance(value, str | int | float) and not isinstance(value, bool) and \
                    str(value).strip():
                return 0
            raise LabelError(value, self.expected)
        if self._matches(value, self.negative):
            return 0
        raise LabelError(value, self.expected)

    def canonical(self, value: Any) -> str:
        """The text a decoded label is stored as: the spec's own label, as text."""
        decoded = self.decode(value)
        label = self.positive if decoded == 1 else self.negative
        if label is None:  # an undeclared negative: keep what was sent, as text
            return str(value)
        if isinstance(label, bool):
            return "1" if label else "0"
        if isinstance(label, float) and label.is_integer():
            return str(int(label))
        return str(label)

    def decode_many(self, values: Iterable[Any], *, strict: bool = True) -> np.ndarray:
        """An array of 1/0, each distinct value decoded once (a window of a million text
        labels holds two). ``strict=False`` turns values it cannot decode into -1 (readers
        of old logs count and drop them instead of failing a whole window)."""
        import pandas as pd

        codes, uniques = pd.factorize(pd.Series(list(values) if not isinstance(
            values, pd.Series | np.ndarray) else values, dtype=object), use_na_sentinel=True)
        decoded = np.empty(len(uniques) + 1, dtype=np.int64)
        decoded[-1] = -1  # missing (code -1 indexes the last slot)
        for i, value in enumerate(uniques):
            try:
                decoded[i] = self.decode(value)
            except LabelError:
                if strict:
                    raise
                decoded[i] = -1
        if strict and (codes < 0).any():
            raise LabelError(None, self.expected)
        return decoded[codes]


def class_text(value: Any) -> str | None:
    """A label as class text: a non-empty string unchanged, a finite number as its shortest
    text (``2.0`` -> ``"2"``); None for anything else (missing, NaN, bools, empty text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    return None


@dataclass(frozen=True)
class ClassCodec:
    """Decodes the labels of a multi-class spec to class text (``canonical``) or to the
    index of the class in ``classes`` (``decode_many``). ``classes`` None: any class (a
    ``classes: infer`` spec before its version records them)."""

    classes: tuple[str, ...] | None = None

    @property
    def expected(self) -> str:
        if self.classes is None:
            return "any non-empty text or number"
        return "one of " + ", ".join(repr(c) for c in self.classes)

    def canonical(self, value: Any) -> str:
        """The class text of ``value``; ``LabelError`` for a value that is no class."""
        text = class_text(value)
        if text is not None and self.classes is not None and text not in self.classes:
            text = self._numeric_alias(value)
        if text is None:
            raise LabelError(value, self.expected)
        return text

    def _numeric_alias(self, value: Any) -> str | None:
        """A number's text that is a listed class (``"2.0"`` or ``2.0`` for class ``"2"``)."""
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return None
        number = _number(value)
        alias = class_text(number) if number is not None else None
        return alias if self.classes is not None and alias in self.classes else None

    def canonical_many(self, values: Iterable[Any], *, strict: bool = True) -> np.ndarray:
        """Class texts (object array); ``strict=False`` gives None where a value is no class."""
        import pandas as pd

        codes, uniques = pd.factorize(pd.Series(list(values) if not isinstance(
            values, pd.Series | np.ndarray) else values, dtype=object), use_na_sentinel=True)
        decoded = np.empty(len(uniques) + 1, dtype=object)
        decoded[-1] = None
        for i, value in enumerate(uniques):
            try:
                decoded[i] = self.canonical(value)
            except LabelError:
                if strict:
                    raise
                decoded[i] = None
        if strict and (codes < 0).any():
            raise LabelError(None, self.expected)
        return decoded[codes]

    def decode_many(self, values: Iterable[Any], *, strict: bool = True) -> np.ndarray:
        """The index of each label's class in ``classes`` (-1 where it is none with
        ``strict=False``); needs ``classes``."""
        if self.classes is None:
            raise ValueError("decode_many needs the classes (classes: infer records them "
                             "with the version)")
        index = {c: i for i, c in enumerate(self.classes)}
        texts = self.canonical_many(values, strict=strict)
        return np.array([index.get(t, -1) if t is not None else -1 for t in texts],
                        dtype=np.int64)


__all__ = ["ClassCodec", "LabelCodec", "LabelError", "class_text"]
