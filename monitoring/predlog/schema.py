"""The columns of the log: reserved prediction columns and their types, the label rows."""

from __future__ import annotations

import pyarrow as pa

from kernel.spec import RESERVED_COLUMNS

META_TYPES = {
    "ts": pa.timestamp("us", tz="UTC"), "request_id": pa.string(), "model_name": pa.string(),
    "model_version": pa.int64(), "score": pa.float64(), "prediction": pa.int8(),
    "shadow_version": pa.int64(), "shadow_score": pa.float64(), "latency_ms": pa.float32(),
}
REPEATING = frozenset({"model_version", "prediction", "shadow_version"})
UNIQUE = frozenset({"request_id"})
LABEL_SCHEMA = pa.schema([("request_id", pa.string()), ("label", pa.string()),
                           ("received_at", pa.timestamp("us", tz="UTC"))])

__all__ = ["LABEL_SCHEMA", "META_TYPES", "REPEATING", "RESERVED_COLUMNS", "UNIQUE"]
