"""The Spark engine (``DRIFTLOOP_DRIFT_ENGINE=spark``): the local engine's day summaries as
Spark DataFrame aggregations over the same Parquet files.

Listing, stored summaries (the days' and the reference's), edge days and labelled rows are
the local engine's (``SummaryEngine``); only summarising a day's files runs on Spark: one
aggregation for counts, moments, min/max and the time range, then one group-by over
(column, z-bucket) pairs and one over (column, value) pairs, of which only what a summary
keeps is collected (a column with more distinct values than ``VALUE_CAP`` brings back only
the reference's values). The bucket of a value is the same formula as
``sketch.bucket_index``, in Spark SQL; a value that lies within a float rounding of a bucket
edge may land in the neighbouring bucket, which the error bounds allow (docs/monitoring.md).

The session: ``spark_session()`` takes what ``spark-submit`` or ``spark-defaults.conf`` set
(``spark.master``, ``--conf``), and ``local[*]`` when no master is set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring.check import SCORE_COLUMN, Reference
from monitoring.predlog.reader import LogReadError
from monitoring.predlog.store import LogStore
from monitoring.summary.engine import _RELISTS, SummaryEngine, _days, _Vanished
from monitoring.summary.sketch import (
    CATEGORY_CAP,
    LOG_GAMMA,
    VALUE_CAP,
    ZMIN,
    CategoricalSummary,
    Counts,
    NumericBasis,
    NumericSummary,
)
from monitoring.summary.window import WindowSummary

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)


def spark_session() -> SparkSession:
    """The session ``spark-submit`` configured, or a local one."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    conf = SparkConf()
    builder = SparkSession.builder.appName("driftloop-drift-check").config(conf=conf)
    if not conf.contains("spark.master"):
        builder = builder.master("local[*]")
    return builder.getOrCreate()


def spark_path(store: LogStore, path: str) -> str:
    """A store path as Spark (Hadoop) names it: ``s3a://`` for S3, a local path as is."""
    if store.local:
        return path
    scheme = store.uri.split("://", 1)[0]
    return f"{'s3a' if scheme == 's3' else scheme}://{path}"


class SparkSummaryEngine(SummaryEngine):
    def __init__(self, store: LogStore, reference: Reference, *,
                 spark: SparkSession | None = None, **kwargs: Any) -> None:
        super().__init__(store, reference, **kwargs)
        self.spark = spark or spark_session()

    def window(self, model: str, version: int, since: datetime, until: datetime) -> WindowSummary:
        """The local engine's window (stored days reused, the rest stored), with every day
        still to summarise computed in one set of Spark jobs, grouped by day."""
        self.prepare(model, version)
        plan: list[tuple[str, list[str], bool]] = []
        total = self.ref.empty()
        for day in _days(since, until):
            directory = self.store.path("predictions", f"model={model}", f"date={day}")
            start = datetime.fromisoformat(day).replace(tzinfo=since.tzinfo)
            whole = since <= start and start + timedelta(days=1) <= until
            files = self._listed(directory)
            if whole and files and self.use_store:
                cached = self._load(self._stored_path(model, version, day), files)
                if cached is not None:
                    self.stats.partitions_reused += 1
                    total = total.merge(cached)
                    continue
            plan.append((day, files, whole))
        summaries = self._summarise_days(plan, version, since, until)
        for day, files, whole in plan:
            self.stats.partitions_summarised += 1
            summary = summaries[day]
            if whole and files and self.use_store:
                stored = self._stored_path(model, version, day)
                try:
                    self._save(stored, files, summary)
                except OSError as exc:
                    log.warning("spark engine: cannot store %s: %s", stored, exc)
            total = total.merge(summary)
        return total

    def _listed(self, directory: str) -> list[str]:
        for _ in range(_RELISTS):
            try:
                return self._effective(directory)
            except _Vanished:
                continue
        raise LogReadError(f"{directory}: files kept vanishing between listing and reading")

    def _summarise(self, files: list[str], version: int, since: datetime | None,
                   until: datetime | None) -> WindowSummary:
        return self._summarise_days([("day", files, since is None)], version, since,
                                    until)["day"]

    def _summarise_days(self, plan: list[tuple[str, list[str], bool]], version: int,
                        since: datetime | None, until: datetime | None
                        ) -> dict[str, WindowSummary]:
        from pyspark.sql import functions as F  # noqa: N812

        out = {day: self.ref.empty() for day, _, _ in plan}
        paths = {spark_path(self.store, f): day for day, files, _ in plan for f in files}
        if not paths:
            return out
        frame = self.spark.read.option("mergeSchema", "true").parquet(*paths)
        # a row's day: its file's partition directory (the local engine's day, too)
        frame = frame.withColumn("_day", F.regexp_extract(
            F.input_file_name(), r"date=(\d{4}-\d{2}-\d{2})/[^/]*$", 1))
        if len(plan) == 1 and plan[0][0] == "day":
            frame = frame.withColumn("_day", F.lit("day"))
        keep = F.col("model_version") == F.lit(int(version))
        bounded = [day for day, _, whole in plan if not whole]
        if bounded and (since is not None or until is not None):
            inside = F.lit(True)
            if since is not None:
                inside &= F.col("ts") >= F.lit(since)
            if until is not None:
                inside &= F.col("ts") < F.lit(until)
            keep &= ~F.col("_day").isin(bounded) | inside
        frame = frame.where(keep)
        empty = self.ref.empty()
        numeric = {c: s for c, s in empty.columns.items() if isinstance(s, NumericSummary)}
        if empty.score is not None:
            numeric[SCORE_COLUMN] = empty.score
        present = set(frame.columns)
        numeric = {c: s for c, s in numeric.items() if c in present}
        categorical = {c: s for c, s in empty.columns.items()
                       if isinstance(s, CategoricalSummary) and c in present}
        for row in frame.groupBy("_day").agg(
                *self._aggregates(frame, numeric, categorical)).collect():
            day = row["_day"]
            summary = out[day]
            rows = int(row["rows"])
            summary.rows = rows
            self.stats.rows_read += rows
            summary.ts_min, summary.ts_max = row["ts_min"], row["ts_max"]
            for col, s in summary.columns.items():
                if col not in present:
                    s.missing += rows
                elif isinstance(s, NumericSummary):
                    self._numeric(s, row, col)
                else:
                    s.missing = int(row[f"{col}__missing"])
            if summary.score is not None and SCORE_COLUMN in numeric:
                self._numeric(summary.score, row, SCORE_COLUMN)
        self.stats.files_read += len(paths)
        self._bucket_counts(frame, numeric, out)
        self._values(frame, numeric, categorical, out)
        return out

    @staticmethod
    def _column(summary: WindowSummary, col: str) -> Any:
        return summary.score if col == SCORE_COLUMN else summary.columns[col]

    @staticmethod
    def _finite(col: str) -> Column:
        from pyspark.sql import functions as F  # noqa: N812

        x = F.col(col).cast("double")
        return x.isNotNull() & ~F.isnan(x) & (F.abs(x) != F.lit(float("inf")))

    def _aggregates(self, frame: DataFrame, numeric: dict[str, NumericSummary],
                    categorical: dict[str, CategoricalSummary]) -> list[Column]:
        from pyspark.sql import functions as F  # noqa: N812

        aggs = [F.count(F.lit(1)).alias("rows"), F.min("ts").alias("ts_min"),
                F.max("ts").alias("ts_max")]
        for col, s in numeric.items():
            b = s.basis
            x = F.col(col).cast("double")
            finite = self._finite(col)
            fx = F.when(finite, x)
            aggs += [
                F.count(fx).alias(f"{col}__n"),
                F.count(F.when(x.isNull() | F.isnan(x), 1)).alias(f"{col}__missing"),
                F.count(F.when(x.isNotNull() & ~F.isnan(x) & ~finite, 1)).alias(f"{col}__inf"),
                F.min(fx).alias(f"{col}__min"), F.max(fx).alias(f"{col}__max"),
                F.avg(fx).alias(f"{col}__mean"), F.var_pop(fx).alias(f"{col}__var"),
                F.sum(F.abs((fx - F.lit(b.center)) / F.lit(b.scale))).alias(f"{col}__absz"),
            ]
            if np.isfinite(b.low):
                aggs.append(F.count(F.when(finite & ((x < F.lit(b.low)) | (x > F.lit(b.high))),
                                           1)).alias(f"{col}__outside"))
        for col in categorical:
            aggs.append(F.count(F.when(F.col(col).isNull(), 1)).alias(f"{col}__missing"))
        return aggs

    @staticmethod
    def _numeric(s: NumericSummary, row: Any, col: str) -> None:
        n = int(row[f"{col}__n"])
        s.n, s.missing, s.infinite = n, int(row[f"{col}__missing"]), int(row[f"{col}__inf"])
        s.outside = int(row[f"{col}__outside"]) if np.isfinite(s.basis.low) else 0
        if n:
            s.min, s.max = float(row[f"{col}__min"]), float(row[f"{col}__max"])
            s.mean = float(row[f"{col}__mean"])
            s.m2 = float(row[f"{col}__var"]) * n
            s.abs_z = float(row[f"{col}__absz"])

    def _pairs(self, frame: DataFrame, values: dict[str, Column]) -> DataFrame:
        from pyspark.sql import functions as F  # noqa: N812

        pairs = F.explode(F.array(*[F.struct(F.lit(name).alias("name"), v.alias("v"))
                                    for name, v in values.items()]))
        return (frame.select("_day", pairs.alias("p")).select("_day", "p.name", "p.v")
                .where(F.col("v").isNotNull()).groupBy("_day", "name", "v").count())

    def _bucket_counts(self, frame: DataFrame, numeric: dict[str, NumericSummary],
                       out: dict[str, WindowSummary]) -> None:
        from pyspark.sql import functions as F  # noqa: N812

        if not numeric:
            return
        exprs = {}
        for col, s in numeric.items():
            z = (F.col(col).cast("double") - F.lit(s.basis.center)) / F.lit(s.basis.scale)
            k = F.floor(F.log(F.abs(z) / F.lit(ZMIN)) / F.lit(LOG_GAMMA)) + 1
            k = F.when(F.abs(z) < F.lit(ZMIN), F.lit(0)).otherwise(
                F.least(k, F.lit(1_000_000)))
            exprs[col] = F.when(self._finite(col), (F.signum(z) * k).cast("long"))
        got: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for r in self._pairs(frame, exprs).collect():
            got.setdefault((r["_day"], r["name"]), []).append((int(r["v"]), int(r["count"])))
        for day, summary in out.items():
            for col in numeric:
                pairs = sorted(got.get((day, col), []))
                target = self._column(summary, col)
                target.index = np.array([i for i, _ in pairs], np.int64)
                target.counts = np.array([c for _, c in pairs], np.int64)

    def _values(self, frame: DataFrame, numeric: dict[str, NumericSummary],
                categorical: dict[str, CategoricalSummary],
                out: dict[str, WindowSummary]) -> None:
        from pyspark.sql import functions as F  # noqa: N812

        if numeric:
            self._numeric_values(frame, numeric, out)
        if not categorical:
            return
        exprs = {c: F.col(c).cast("string") for c in categorical}
        limit = CATEGORY_CAP * 4
        grouped = self._pairs(frame, exprs).cache()
        try:
            sizes = grouped.groupBy("_day", "name").count().collect()
            too_many = sorted({r["name"] for r in sizes if int(r["count"]) > limit})
            if too_many:
                raise ValueError(f"columns {too_many}: more than {limit} categories in one "
                                 "day, more than the Spark engine collects")
            kept: dict[tuple[str, str], list[tuple[str, int]]] = {}
            for r in grouped.collect():
                kept.setdefault((r["_day"], r["name"]), []).append((r["v"], int(r["count"])))
        finally:
            grouped.unpersist()
        for day, summary in out.items():
            for col in categorical:
                target = summary.columns[col]
                assert isinstance(target, CategoricalSummary)
                pairs = kept.get((day, col), [])
                target.values = Counts()
                target.values.add([v for v, _ in pairs], [c for _, c in pairs],
                                  target.basis.categories, CATEGORY_CAP)

    def _numeric_values(self, frame: DataFrame, numeric: dict[str, NumericSummary],
                        out: dict[str, WindowSummary]) -> None:
        """Exact value counts of each numerical column of a day while it has few distinct
        values; past that (saturated) only the reference's values are collected."""
        from pyspark.sql import functions as F  # noqa: N812

        exprs = {c: F.when(self._finite(c), F.col(c).cast("double")) for c in numeric}
        grouped = self._pairs(frame, exprs).cache()
        try:
            small = {f"{r['_day']}|{r['name']}"
                     for r in grouped.groupBy("_day", "name").count().collect()
                     if int(r["count"]) <= VALUE_CAP + self._protected(r["name"])}
            wanted = F.concat_ws("|", "_day", "name").isin(sorted(small)) if small else F.lit(False)
            for col, s in numeric.items():
                if s.basis.values:
                    wanted = wanted | ((F.col("name") == col)
                                       & F.col("v").isin([float(v) for v in s.basis.values]))
            kept: dict[tuple[str, str], list[tuple[float, int]]] = {}
            for r in grouped.where(wanted).collect():
                kept.setdefault((r["_day"], r["name"]), []).append((float(r["v"]),
                                                                    int(r["count"])))
        finally:
            grouped.unpersist()
        for day, summary in out.items():
            for col in numeric:
                target = self._column(summary, col)
                counts = dict(kept.get((day, col), []))
                if f"{day}|{col}" in small:
                    target.values = Counts(counts)
                    target.values.fold(target.basis.values, VALUE_CAP, saturate=True)
                else:
                    target.values = Counts(counts, target.n - sum(counts.values()))

    def _protected(self, col: str) -> int:
        basis = self.ref.score_basis if col == SCORE_COLUMN else self.ref.bases.get(col)
        return len(basis.values) if isinstance(basis, NumericBasis) else 0
