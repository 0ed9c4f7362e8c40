"""The reader: windows of one model's predictions, by time and version, labels joined."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.predlog.schema import META_TYPES
from monitoring.predlog.store import LogStore

log = logging.getLogger(__name__)




def _days(since: datetime, until: datetime) -> list[str]:
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


class WindowReader(Protocol):
    """What the controller reads from a log: a window of one model's predictions with
    labels joined. ``PredictionLogReader`` is one; the backtest's replay log is another."""

    def window(self, model: str, since: datetime, until: datetime, *,
               version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame: ...


class PredictionLogReader:
    """Windows of the prediction log, by time and model version, with labels joined."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def _read(self, files: Iterable[str], columns: list[str] | None = None) -> pa.Table | None:
        tables = []
        for path in files:
            if columns is None:
                table = pq.read_table(path, filesystem=self.store.fs)
            else:  # decode only the wanted columns (those this file has)
                names = pq.read_schema(path, filesystem=self.store.fs).names
                table = pq.read_table(path, filesystem=self.store.fs,
                                      columns=[c for c in columns if c in names])
            tables.append(table)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def _predictions_table(self, model: str, since: datetime, until: datetime, *,
                           version: int | None, columns: list[str] | None) -> pa.Table | None:
        """The window as one Arrow table: filtered and ordered by ``ts`` in Arrow, each
        step skipped when it would change nothing (a day's partition of one version,
        written in time order, needs neither), so a day of traffic is not copied twice."""
        base = self.store.path("predictions", f"model={model}")
        wanted = None if columns is None else list(dict.fromkeys([*columns, "ts", "model_version"]))
        files = [f for day in _days(since, until) for f in self.store.files(f"{base}/date={day}")]
        table = self._read(files, wanted)
        if table is None:
            return None
        ts = table["ts"]
        keep = pc.and_(pc.greater_equal(ts, pa.scalar(since, ts.type)),
                       pc.less(ts, pa.scalar(until, ts.type)))
        if version is not None:
            keep = pc.and_(keep, pc.equal(table["model_version"], int(version)))
        if keep.null_count or not pc.all(keep).as_py():
            table = table.filter(keep)
        stamps = table["ts"].to_numpy()
        if stamps.size > 1 and not bool(np.all(stamps[1:] >= stamps[:-1])):
            table = table.take(pc.sort_indices(table, [("ts", "ascending")]))  # stable
        return table

    def predictions(self, model: str, since: datetime, until: datetime, *,
                    version: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Rows with ``since <= ts < until`` (and of ``version`` when given), ordered by time."""
        table = self._predictions_table(model, since, until, version=version, columns=columns)
        if table is None:
            return pd.DataFrame(columns=list(META_TYPES))
        return table.to_pandas()

    def labels(self, *, since: datetime | None = None, as_of: datetime | None = None) -> pd.DataFrame:
        """Labels received in ``[since, as_of]``, the last per request id."""
        base = self.store.path("labels")
        days = [p.removeprefix("date=") for p in self.store.partitions(base)]
        if since is not None:
            days = [d for d in days if d >= since.date().isoformat()]
        if as_of is not None:
            days = [d for d in days if d <= as_of.date().isoformat()]
        table = self._read(f for d in days for f in self.store.files(f"{base}/date={d}"))
        if table is None:
            return pd.DataFrame({"request_id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                                 "received_at": pd.Series(dtype="datetime64[us, UTC]")})
        frame = table.to_pandas()
        if as_of is not None:
            frame = frame[frame["received_at"] <= pd.Timestamp(as_of)]
        frame = frame.sort_values("received_at", kind="stable")
        return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               labels_as_of: datetime | None = None, columns: list[str] | None = None,
               categorical: Sequence[str] = ()) -> pd.DataFrame:
        """Predictions in the window with ``label`` and ``label_received_at`` joined (missing
        where none).

        ``labels_as_of`` hides labels received later (backtests and replays must pass it).
        ``columns`` limits the prediction columns read (``ts`` and ``model_version`` always
        come; ``request_id`` is read for the join and kept only when asked for).
        ``categorical`` columns come as pandas ``category`` (dictionary-encoded in Arrow):
        a day of repeated strings is then a column of small codes.
        """
        wanted = None if columns is None else [*columns, "request_id"]
        table = self._predictions_table(model, since, until, version=version, columns=wanted)
        labels = self.labels(since=since, as_of=labels_as_of)
        if table is None:
            frame = pd.DataFrame(columns=list(META_TYPES) if columns is None
                                 else list(dict.fromkeys([*columns, "ts", "model_version"])))
            frame["label"] = pd.Series(dtype=object)
            frame["label_received_at"] = pd.Series(dtype="datetime64[us, UTC]")
            return frame
        # A hash lookup of each request id among the labels' (Arrow, in C++), then a take:
        # the prediction rows keep their order and nothing is merged in pandas.
        at = pc.index_in(table["request_id"], value_set=pa.array(labels["request_id"], pa.string()))
        table = table.append_column("label", pa.array(labels["label"], pa.string()).take(at))
        table = table.append_column("label_received_at", pa.array(
            labels["received_at"], pa.timestamp("us", tz="UTC")).take(at))
        if columns is not None and "request_id" not in columns:
            table = table.drop_columns(["request_id"])
        for name in categorical:
            at_column = table.schema.get_field_index(name)
            if at_column >= 0 and not pa.types.is_dictionary(table.schema.field(name).type):
                table = table.set_column(at_column, name, pc.dictionary_encode(table[name]))
        return table.to_pandas()


def open_log(uri: str | Path) -> tuple[LogStore, PredictionLogReader]:
    store = LogStore(uri)
    return store, PredictionLogReader(store)
