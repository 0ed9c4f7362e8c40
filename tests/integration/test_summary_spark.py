"""The Spark engine for real, in local mode (local[2]): the same day summaries as the local
engine, so the same verdict as the exact path. One session for the module (start-up is slow)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitoring.job import run_drift_check
from monitoring.predlog import LogStore
from monitoring.summary.engine import SummaryEngine
from monitoring.summary.window import check_summary
from tests.integration.test_drift_check import DAY, world  # noqa: F401 (the fixture)
from tests.integration.test_summary_engine import DAY0, MODEL, _exact, _reference, _same, _write_day

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("no Java (.ci/ensure-binaries installs openjdk-17-jre-headless)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("driftloop-test")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    yield session
    session.stop()


def test_spark_engine_gives_the_local_engines_summaries_and_the_exact_verdict(
        spark, tmp_path: Path) -> None:  # noqa: ANN001
    from monitoring.summary.spark import SparkSummaryEngine

    root = tmp_path / "log"
    for day in range(2):
        _write_day(root, day, shift=day == 1)
    reference = _reference()
    since, until = DAY0 + timedelta(hours=3), DAY0 + timedelta(days=2)  # an edge day and a whole one
    store = LogStore(root)
    engine = SparkSummaryEngine(store, reference, spark=spark, use_store=False)
    window = engine.window(MODEL, 1, since, until)
    local = SummaryEngine(store, reference, use_store=False).window(MODEL, 1, since, until)
    assert window.rows == local.rows == engine.stats.rows_read
    for col, s in window.columns.items():
        other = local.columns[col]
        assert (s.n, s.missing, s.values) == (other.n, other.missing, other.values), col
    labelled, perf = engine.labelled(MODEL, 1, since, until)
    verdict = check_summary(reference, engine.ref, window, model=MODEL, version=1,
                            window_start=since, window_end=until, now=until,
                            labelled_rows=labelled, performance=perf, engine="spark")
    assert verdict.engine == "spark"
    exact = _exact(root, reference, since, until)
    _same(verdict.model_copy(update={"engine": "summary"}), exact)
    # stored like the local engine's: the whole day and the reference's summary are reused,
    # the edge day read again
    first = SparkSummaryEngine(store, reference, spark=spark)
    first.window(MODEL, 1, since, until)
    assert first.stats.reference_summarised == 1  # then stored beside the log
    again = SparkSummaryEngine(store, reference, spark=spark)
    rerun = again.window(MODEL, 1, since, until)
    assert (again.stats.partitions_reused, again.stats.partitions_summarised) == (1, 1)
    assert (again.stats.reference_reused, again.stats.reference_summarised) == (1, 0)
    assert 0 < again.stats.rows_read < rerun.rows == window.rows


def test_drift_check_with_the_spark_engine(spark, world) -> None:  # noqa: ANN001, F811
    """`driftloop drift-check` as a function with DRIFTLOOP_DRIFT_ENGINE=spark: the session
    it asks for is the running one (getOrCreate), the verdict the exact engine's."""
    spec, registry, settings, v1, _ = world
    until = DAY + timedelta(days=1)
    exact = run_drift_check(settings, registry, model=spec.model_name, version=v1, since=DAY,
                            until=until, report=False).verdict
    verdict = run_drift_check(settings.model_copy(update={"drift_engine": "spark"}), registry,
                              model=spec.model_name, version=v1, since=DAY, until=until).verdict
    assert verdict.engine == "spark" and verdict.report_path is None
    _same(verdict.model_copy(update={"engine": "summary"}), exact)
