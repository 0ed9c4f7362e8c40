"""What every compiled scorer shares: the record type, the refusal, the result."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Record = Mapping[str, Any]


class NotCompilable(Exception):
    """The fitted pipeline has a shape this compiler does not know."""


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class FastPath:
    """``score``: the positive-class probability (binary), or the top probability; ``proba``:
    every class's probability in ``classes_`` order (multi-class versions only)."""

    kind: str               # "linear", "trees", "text-linear", "multiclass-linear" or "arrays"
    score: Callable[[Record], float]
    proba: Callable[[Record], list[float]] | None = None
