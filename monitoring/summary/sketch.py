"""Column summaries that merge: what a drift check needs of a column, in a few kilobytes.

A summary is made against a **basis**, the reference's own facts about the column (for a
numerical column its mean, std, min and max and, when it has at most ``VALUE_CAP`` distinct
values, those values; for a categorical column its categories). Every partition of one model
version is summarised against the same basis, so summaries of partitions merge exactly into
the summary of a window: ``merge(a, b)`` is associative and commutative (counts are integers;
the moments merge by Chan's formulas, equal to a whole pass up to float rounding).

Numerical (``NumericSummary``):

* counts: finite values ``n``, ``missing`` (NaN), ``infinite``, ``outside`` (finite values
  outside the basis' [min, max]), exact ``min``/``max``, mean and M2 (for the std), the sum
  of |z| (for the error bound), where ``z = (x - mean_ref) / std_ref``;
* ``buckets``: a relative-accuracy histogram of z (DDSketch's log buckets): bucket ``k``
  holds ``ZMIN * GAMMA**(k-1) <= |z| < ZMIN * GAMMA**k`` with the sign of z, bucket 0 holds
  ``|z| < ZMIN``; its representative is within ``ALPHA`` relative of every value in it;
* ``values``: exact counts of distinct values (``Counts``): all of them while there are at
  most ``VALUE_CAP`` outside the basis' own, then only the basis' own (saturated).

Categorical (``CategoricalSummary``): ``missing`` and ``Counts`` of the values as text.

``Counts`` keeps every key of the basis and at most ``cap`` others (categorical: those with
the smallest hash; numerical: all or none), rules that do not depend on the order of merges;
the rest is one ``other`` count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALPHA = 1e-3                      # relative accuracy of a bucket's representative
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = float(np.log(GAMMA))
ZMIN = 1e-9                       # |z| below this is bucket 0 (representative 0)
VALUE_CAP = 1024                  # distinct values kept beyond the basis' own
CATEGORY_CAP = 10_000


def _hash(key: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big")


@dataclass
class Counts:
    """Exact counts of the kept keys, and ``other``: rows whose key was folded away."""

    counts: dict[Any, int] = field(default_factory=dict)
    other: int = 0

    @property
    def exact(self) -> bool:
        return self.other == 0

    def add(self, keys: Any, counts: Any, protected: frozenset, cap: int) -> None:
        for k, c in zip(keys, counts, strict=True):
            self.counts[k] = self.counts.get(k, 0) + int(c)
        self.fold(protected, cap)

    def fold(self, protected: frozenset, cap: int, saturate: bool = False) -> None:
        """Keep at most ``cap`` keys outside ``protected``: those with the smallest hash, or
        none once there are more (``saturate``: numerical values, where a kept subset is of
        no use and hashing every distinct value would cost more than the summary)."""
        extra = [k for k in self.counts if k not in protected]
        if len(extra) <= cap and not (saturate and self.other):
            return
        for k in (extra if saturate else sorted(extra, key=_hash)[cap:]):
            self.other += self.counts.pop(k)

    def merged(self, other: Counts, protected: frozenset, cap: int,
               saturate: bool = False) -> Counts:
        out = Counts(dict(self.counts), self.other + other.other)
        for k, c in other.counts.items():
            out.counts[k] = out.counts.get(k, 0) + c
        out.fold(protected, cap, saturate)
        return out


@dataclass(frozen=True)
class NumericBasis:
    center: float
    scale: float
    low: float                    # the reference's finite min and max (NaN when none)
    high: float
    values: frozenset             # the reference's distinct values, when few


@dataclass(frozen=True)
class CategoricalBasis:
    categories: frozenset


def numeric_basis(values: np.ndarray) -> NumericBasis:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return NumericBasis(0.0, 1.0, float("nan"), float("nan"), frozenset())
    center = float(arr.mean())
    scale = float(arr.std())
    if not np.isfinite(center):
        center = 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    distinct = np.unique(arr)
    kept = frozenset(distinct.tolist()) if distinct.size <= VALUE_CAP else frozenset()
    return NumericBasis(center, scale, float(arr.min()), float(arr.max()), kept)


def bucket_index(z: np.ndarray) -> np.ndarray:
    mag = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = np.floor(np.log(mag / ZMIN) / LOG_GAMMA) + 1
    k = np.where(mag < ZMIN, 0, np.nan_to_num(k, nan=0.0, posinf=1e6, neginf=0.0))
    return (np.sign(z) * k).astype(np.int64)


def representative(index: np.ndarray) -> np.ndarray:
    """Each bucket's representative z: within ALPHA relative of every value it holds."""
    k = np.abs(index).astype(np.float64)
    rep = ZMIN * GAMMA ** (k - 1) * 2 * GAMMA / (1 + GAMMA)
    return np.where(index == 0, 0.0, np.sign(index) * rep)


def bucket_bounds(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each bucket's interval of z, low < high (bucket 0: [-ZMIN, ZMIN])."""
    k = np.abs(index).astype(np.float64)
    inner = np.where(index == 0, 0.0, ZMIN * GAMMA ** (k - 1))
    outer = np.where(index == 0, ZMIN, ZMIN * GAMMA ** k)
    low = np.where(index < 0, -outer, np.where(index == 0, -ZMIN, inner))
    high = np.where(index < 0, -inner, outer)
    return low, high


def _merge_buckets(ia: np.ndarray, ca: np.ndarray, ib: np.ndarray,
                   cb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, inverse = np.unique(np.concatenate((ia, ib)), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate((ca, cb)), minlength=keys.size)
    return keys, counts.astype(np.int64)


@dataclass
class NumericSummary:
    basis: NumericBasis
    n: int = 0
    missing: int = 0
    infinite: int = 0
    outside: int = 0
    min: float = float("inf")
    max: float = float("-inf")
    mean: float = 0.0
    m2: float = 0.0
    abs_z: float = 0.0
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: Counts = field(default_factory=Counts)

    kind = "numerical"

    @property
    def rows(self) -> int:
        return self.n + self.missing + self.infinite

    @property
    def std(self) -> float:
        """The population std (ddof 0), as Evidently's ``np.std`` of a pandas Series."""
        return float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")

    def add(self, values: np.ndarray) -> None:
        """Fold a batch of raw values in (NaN missing, +-inf infinite)."""
        arr = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(arr)
        nan = int(np.count_nonzero(np.isnan(arr)))
        x = arr[finite]
        part = NumericSummary(self.basis, missing=nan, infinite=int(arr.size - x.size - nan))
        if x.size:
            b = self.basis
            part.n = int(x.size)
            part.min, part.max = float(x.min()), float(x.max())
            part.mean = float(x.mean())
            part.m2 = float(np.sum((x - part.mean) ** 2))
            if np.isfinite(b.low):
                part.outside = int(np.count_nonzero((x < b.low) | (x > b.high)))
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x - b.center) / b.scale
            part.abs_z = float(np.sum(np.abs(z)))
            part.index, part.counts = np.unique(bucket_index(z), return_counts=True)
            part.counts = part.counts.astype(np.int64)
            keys, counts = np.unique(x, return_counts=True)
            known = (np.isin(keys, np.fromiter(b.values, float, len(b.values))) if b.values
                     else np.zeros(keys.size, bool))
            if keys.size - int(known.sum()) > VALUE_CAP:  # saturated: the basis' values only
                part.values = Counts(dict(zip(keys[known].tolist(), counts[known].tolist(),
                                              strict=True)), int(counts[~known].sum()))
            else:
                part.values = Counts(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        merged = self.merge(part)
        self.__dict__.update(merged.__dict__)

    def merge(self, other: NumericSummary) -> NumericSummary:
        if other.basis != self.basis:
            raise ValueError("summaries made against different references do not merge")
        n = self.n + other.n
        if self.n and other.n:
            delta = other.mean - self.mean
            mean = self.mean + delta * other.n / n
            m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        else:
            mean, m2 = (self.mean, self.m2) if self.n else (other.mean, other.m2)
        index, counts = _merge_buckets(self.index, self.counts, other.index, other.counts)
        return NumericSummary(
            self.basis, n, self.missing + other.missing, self.infinite + other.infinite,
            self.outside + other.outside, min(self.min, other.min), max(self.max, other.max),
            mean, m2, self.abs_z + other.abs_z, index, counts,
            self.values.merged(other.values, self.basis.values, VALUE_CAP, saturate=True))

    def nunique(self) -> int | None:
        """Distinct finite values, or None when more than were kept."""
        return len(self.values.counts) if self.values.exact else None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "missing": self.missing, "infinite": self.infinite,
                "outside": self.outside, "min": self.min, "max": self.max, "mean": self.mean,
                "m2": self.m2, "abs_z": self.abs_z, "index": self.index.tolist(),
                "counts": self.counts.tolist(), "values": list(self.values.counts.items()),
                "other": self.values.other}

    @classmethod
    def from_dict(cls, basis: NumericBasis, d: dict[str, Any]) -> NumericSummary:
        return cls(basis, d["n"], d["missing"], d["infinite"], d["outside"], float(d["min"]),
                   float(d["max"]), d["mean"], d["m2"], d["abs_z"],
                   np.asarray(d["index"], np.int64), np.asarray(d["counts"], np.int64),
                   Counts({float(k): int(c) for k, c in d["values"]}, int(d["other"])))


@dataclass
class CategoricalSummary:
    basis: CategoricalBasis
    missing: int = 0
    values: Counts = field(default_factory=Counts)

    kind = "categorical"

    @property
    def n(self) -> int:
        return sum(self.values.counts.values()) + self.values.other

    @property
    def rows(self) -> int:
        return self.n + self.missing

    def add_counts(self, keys: list[str], counts: list[int], missing: int) -> None:
        self.missing += int(missing)
        self.values.add(keys, counts, self.basis.categories, CATEGORY_CAP)

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        if other.basis != self.basis:
            raise ValueError("summaries made against different references do not merge")
        return CategoricalSummary(self.basis, self.missing + other.missing,
                                  self.values.merged(other.values, self.basis.categories,
                                                     CATEGORY_CAP))

    def to_dict(self) -> dict[str, Any]:
        return {"missing": self.missing, "values": list(self.values.counts.items()),
                "other": self.values.other}

    @classmethod
    def from_dict(cls, basis: CategoricalBasis, d: dict[str, Any]) -> CategoricalSummary:
        return cls(basis, d["missing"],
                   Counts({str(k): int(c) for k, c in d["values"]}, int(d["other"])))


ColumnSummary = NumericSummary | CategoricalSummary


def merge(a: ColumnSummary, b: ColumnSummary) -> ColumnSummary:
    """``a`` and ``b`` as one summary (of the same column, against the same basis)."""
    if isinstance(a, NumericSummary) and isinstance(b, NumericSummary):
        return a.merge(b)
    if isinstance(a, CategoricalSummary) and isinstance(b, CategoricalSummary):
        return a.merge(b)
    raise ValueError("a numerical and a categorical summary do not merge")
