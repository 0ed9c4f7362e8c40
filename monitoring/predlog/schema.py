"""The columns of the log: reserved prediction columns and their types, the label rows, and
the feature types a model's spec declares (numerical: float64, categorical and text: string).

A model's prediction files always carry these declared types, whatever one batch's values
look like (a batch whose categorical values are all null is still ``string``), so every
day of a model reads back as one table."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from kernel.spec import RESERVED_COLUMNS, DatasetSpec

META_TYPES = {
    "ts": pa.timestamp("us", tz="UTC"), "request_id": pa.string(), "model_name": pa.string(),
    "model_version": pa.int64(), "score": pa.float64(), "prediction": pa.int8(),
    "shadow_version": pa.int64(), "shadow_score": pa.float64(), "latency_ms": pa.float32(),
}
#: A multi-class model's rows (``spec.classes`` set): ``prediction`` is the predicted class
#: as text, ``score`` its probability, ``probabilities`` every class's probability in the
#: serving version's class order (recorded with the version), and ``shadow_probabilities``
#: the challenger's in its own version's order (``shadow_score``: its top probability).
MULTICLASS_TYPES = {
    "prediction": pa.string(), "probabilities": pa.list_(pa.float64()),
    "shadow_probabilities": pa.list_(pa.float64()),
}
REPEATING = frozenset({"model_version", "prediction", "shadow_version"})
UNIQUE = frozenset({"request_id"})
LABEL_SCHEMA = pa.schema([("request_id", pa.string()), ("label", pa.string()),
                           ("received_at", pa.timestamp("us", tz="UTC"))])
#: The type of a column the spec does not declare whose values are all null in a batch.
UNDECLARED_NULL_TYPE = pa.string()


def feature_types(spec: DatasetSpec) -> dict[str, pa.DataType]:
    """The declared type of each feature column of ``spec``."""
    types: dict[str, pa.DataType] = {name: pa.float64() for name in spec.features.numerical}
    types.update({name: pa.string() for name in spec.features.categorical})
    types.update({name: pa.string() for name in spec.features.text})
    return types


def prediction_types(spec: DatasetSpec) -> dict[str, pa.DataType]:
    """Every declared column of ``spec``'s prediction rows: the reserved ones, then features."""
    multiclass = MULTICLASS_TYPES if spec.is_multiclass else {}
    return {**META_TYPES, **multiclass, **feature_types(spec)}


# --- rows to typed Arrow tables -------------------------------------------------------------


def escape_text(value: str) -> str:
    """``value`` as storable UTF-8: lone surrogates (``"\\ud800"``) become the six characters
    ``\\ud800``; anything already encodable comes back unchanged."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def escape_row(row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``row`` with every unencodable key and string value escaped; True when one was."""
    out: dict[str, Any] = {}
    changed = False
    for key, value in row.items():
        if isinstance(key, str) and not _encodable(key):
            key, changed = escape_text(key), True
        if isinstance(value, str) and not _encodable(value):
            value, changed = escape_text(value), True
        out[key] = value
    return out, changed


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def columns(rows: list[dict[str, Any]]) -> dict[str, Sequence[Any]]:
    """Rows to columns. The common case (every row has the same keys) transposes in C
    (itemgetter + zip), which keeps the flush thread's hold on the GIL short."""
    keys = list(rows[0])
    try:
        if set(map(len, rows)) == {len(keys)}:  # counted in C
            picked = map(operator.itemgetter(*keys), rows)
            values = list(zip(*picked, strict=True)) if len(keys) > 1 else [
                [row[keys[0]] for row in rows]]
            return dict(zip(keys, values, strict=True))
    except KeyError:
        pass
    names = dict.fromkeys(k for row in rows for k in row)
    return {name: [row.get(name) for row in rows] for name in names}


def prediction_table(rows: list[dict[str, Any]],
                     types: Mapping[str, pa.DataType] = META_TYPES) -> pa.Table:
    """Prediction rows as a table: declared columns (``types``) with their declared types,
    other columns inferred from their values (``string`` when all null, text when mixed).
    Raises on a value the declared type cannot hold or on unencodable text."""
    arrays, names = [], []
    for name, values in columns(rows).items():
        kind = types.get(name)
        if name == "ts" and values and type(values[0]) is float:
            # epoch seconds -> microseconds, converted in one vectorised step
            micros = np.rint(np.asarray(values, dtype=np.float64) * 1e6).astype(np.int64)
            array = pa.array(micros, type=pa.int64()).cast(types.get("ts", META_TYPES["ts"]))
        elif kind is None:
            try:
                array = pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                array = pa.array(_texts(values), type=pa.string())
            if pa.types.is_null(array.type):
                array = array.cast(UNDECLARED_NULL_TYPE)
        elif pa.types.is_string(kind):
            try:
                array = pa.array(values, type=kind, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers sent for a category
                array = pa.array(_texts(values), type=kind)
        else:
            array = pa.array(values, type=kind, from_pandas=True)
        arrays.append(array)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _texts(values: Sequence[Any]) -> list[str | None]:
    return [None if v is None or v != v else v if isinstance(v, str) else str(v)
            for v in values]


def label_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


def salvage(rows: list[dict[str, Any]], build: Callable[[list[dict[str, Any]]], pa.Table]
            ) -> tuple[pa.Table | None, list[dict[str, Any]], int, int]:
    """The slow path for a batch ``build`` refused: escape unencodable text, then leave out
    the rows that still cannot be stored (found by halving). Returns the table (None when no
    row is left), the rows in it, how many rows were escaped and how many left out."""
    escaped = 0
    fixed = []
    for row in rows:
        clean, changed = escape_row(row)
        fixed.append(clean)
        escaped += changed
    try:
        return build(fixed), fixed, escaped, 0
    except Exception:
        pass
    good, bad = _split(fixed, build)
    if not good:
        return None, [], escaped, bad
    try:
        return build(good), good, escaped, bad
    except Exception:
        return None, [], escaped, len(rows)


def _split(rows: list[dict[str, Any]], build: Callable[[list[dict[str, Any]]], pa.Table]
           ) -> tuple[list[dict[str, Any]], int]:
    try:
        build(rows)
        return rows, 0
    except Exception:
        if len(rows) == 1:
            return [], 1
    mid = len(rows) // 2
    left, bad_left = _split(rows[:mid], build)
    right, bad_right = _split(rows[mid:], build)
    return left + right, bad_left + bad_right


__all__ = ["LABEL_SCHEMA", "META_TYPES", "MULTICLASS_TYPES", "REPEATING", "RESERVED_COLUMNS",
           "UNDECLARED_NULL_TYPE", "UNIQUE", "columns", "escape_row", "escape_text",
           "feature_types", "label_table", "prediction_table", "prediction_types", "salvage"]
