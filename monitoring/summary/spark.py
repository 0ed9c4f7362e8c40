"""The Spark engine (``DRIFTLOOP_DRIFT_ENGINE=spark``): the local engine's day summaries as
Spark DataFrame aggregations over the same Parquet files.

Listing, stored summaries, edge days and labelled rows are the local engine's
(``SummaryEngine``); only summarising a day's files runs on Spark: one aggregation for counts,
moments, min/max and the time range, then one group-by over (column, z-bucket) pairs and one
over (column, value) pairs, of which only what a summary keeps is collected (a column with
more distinct values than ``VALUE_CAP`` brings back only the reference's values). The bucket
of a value is the same formula as ``sketch.bucket_index``, in Spark SQL; a value that lies
within a float rounding of a bucket edge may land in the neighbouring bucket, which the error
bounds allow (docs/monitoring.md).

The session: ``spark_session()`` takes what ``spark-submit`` or ``spark-defaults.conf`` set
(``spark.master``, ``--conf``), and ``local[*]`` when no master is set.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring.check import SCORE_COLUMN, Reference
from monitoring.predlog.store import LogStore
from monitoring.summary.engine import SummaryEngine
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

    def _summarise(self, files: list[str], version: int, since: datetime | None,
                   until: datetime | None) -> WindowSummary:
        from pyspark.sql import functions as F  # noqa: N812

        out = self.ref.empty()
        if not files:
            return out
        frame = self.spark.read.option("mergeSchema", "true").parquet(
            *[spark_path(self.store, f) for f in files])
        keep = F.col("model_version") == F.lit(int(version))
        if since is not None:
            keep &= F.col("ts") >= F.lit(since)
        if until is not None:
            keep &= F.col("ts") < F.lit(until)
        frame = frame.where(keep)
        numeric = {c: s for c, s in out.columns.items() if isinstance(s, NumericSummary)}
        if out.score is not None:
            numeric[SCORE_COLUMN] = out.score
        present = set(frame.columns)
        numeric = {c: s for c, s in numeric.items() if c in present}
        categorical = {c: s for c, s in out.columns.items()
                       if isinstance(s, CategoricalSummary) and c in present}
        row = frame.agg(*self._aggregates(frame, numeric, categorical)).collect()[0]
        rows = int(row["rows"])
        out.rows = rows
        self.stats.rows_read += rows
        self.stats.files_read += len(files)
        out.ts_min, out.ts_max = row["ts_min"], row["ts_max"]
        for col, s in out.columns.items():
            if col not in present:
                s.missing += rows
        for col, s in numeric.items():
            self._numeric(s, row, col)
        for col, c_summary in categorical.items():
            c_summary.missing = int(row[f"{col}__missing"])
        self._bucket_counts(frame, numeric)
        self._values(frame, numeric, categorical)
        return out

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
        return (frame.select(pairs.alias("p")).select("p.name", "p.v")
                .where(F.col("v").isNotNull()).groupBy("name", "v").count())

    def _bucket_counts(self, frame: DataFrame, numeric: dict[str, NumericSummary]) -> None:
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
        got: dict[str, list[tuple[int, int]]] = {c: [] for c in numeric}
        for r in self._pairs(frame, exprs).collect():
            got[r["name"]].append((int(r["v"]), int(r["count"])))
        for col, s in numeric.items():
            pairs = sorted(got[col])
            s.index = np.array([i for i, _ in pairs], np.int64)
            s.counts = np.array([c for _, c in pairs], np.int64)

    def _values(self, frame: DataFrame, numeric: dict[str, NumericSummary],
                categorical: dict[str, CategoricalSummary]) -> None:
        from pyspark.sql import functions as F  # noqa: N812

        if numeric:
            self._numeric_values(frame, numeric)
        if categorical:
            exprs = {c: F.col(c).cast("string") for c in categorical}
            limit = CATEGORY_CAP * 4
            grouped = self._pairs(frame, exprs).cache()
            try:
                sizes = {r["name"]: int(r["count"])
                         for r in grouped.groupBy("name").count().collect()}
                too_many = [c for c in categorical if sizes.get(c, 0) > limit]
                if too_many:
                    raise ValueError(f"columns {too_many}: more than {limit} categories in one "
                                     "day, more than the Spark engine collects")
                kept: dict[str, list[tuple[str, int]]] = {c: [] for c in categorical}
                for r in grouped.collect():
                    kept[r["name"]].append((r["v"], int(r["count"])))
            finally:
                grouped.unpersist()
            for col, c_summary in categorical.items():
                c_summary.values = Counts()
                c_summary.values.add([v for v, _ in kept[col]], [c for _, c in kept[col]],
                                     c_summary.basis.categories, CATEGORY_CAP)

    def _numeric_values(self, frame: DataFrame, numeric: dict[str, NumericSummary]) -> None:
        """Exact value counts of each numerical column while it has few distinct values;
        past that (saturated) only the reference's values are collected."""
        from pyspark.sql import functions as F  # noqa: N812

        exprs = {c: F.when(self._finite(c), F.col(c).cast("double")) for c in numeric}
        grouped = self._pairs(frame, exprs).cache()
        try:
            sizes = {r["name"]: int(r["count"]) for r in grouped.groupBy("name").count().collect()}
            small = [c for c in numeric if sizes.get(c, 0) <= VALUE_CAP + self._protected(c)]
            wanted = F.col("name").isin(small) if small else F.lit(False)
            for col, s in numeric.items():
                if col not in small and s.basis.values:
                    wanted = wanted | ((F.col("name") == col)
                                       & F.col("v").isin([float(v) for v in s.basis.values]))
            kept: dict[str, list[tuple[float, int]]] = {c: [] for c in numeric}
            for r in grouped.where(wanted).collect():
                kept[r["name"]].append((float(r["v"]), int(r["count"])))
        finally:
            grouped.unpersist()
        for col, s in numeric.items():
            counts = dict(kept[col])
            if col in small:
                s.values = Counts(counts)
                s.values.fold(s.basis.values, VALUE_CAP, saturate=True)
            else:
                s.values = Counts(counts, s.n - sum(counts.values()))

    def _protected(self, col: str) -> int:
        basis = self.ref.score_basis if col == SCORE_COLUMN else self.ref.bases.get(col)
        return len(basis.values) if isinstance(basis, NumericBasis) else 0
