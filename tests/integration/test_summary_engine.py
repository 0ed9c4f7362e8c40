"""The local summary engine on a real on-disk prediction log: the same verdict as the exact
path (reader.window + check_frames) over several days with two versions, labels and a
compaction; stored day summaries reused, so the next day's check reads only that day's rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.bench_drift import CATEGORICAL, NUMERICAL, _features
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference, check_frames
from monitoring.job import run_drift_check
from monitoring.predlog import LogStore, open_log
from monitoring.predlog.compact import Compactor
from monitoring.summary.engine import SummaryEngine, summary_check
from monitoring.summary.window import SUMMARY_FORMAT, check_summary
from tests.integration.test_drift_check import DAY, world  # noqa: F401 (the fixture)

MODEL = "sumtest"
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
ROWS_PER_DAY = 6000


def _spec() -> DatasetSpec:
    return parse_spec({"model_name": MODEL, "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": NUMERICAL, "categorical": CATEGORICAL},
                       "metric": "roc_auc", "drift": {"drift_share": 0.3, "min_rows": 200}})


def _reference() -> Reference:
    rng = np.random.default_rng(0)
    return Reference(_spec(), _features(rng, 5000, shift=False), rng.uniform(0, 1, 3000),
                     {"roc_auc": 0.6})


def _write_day(root: Path, day: int, *, shift: bool, files: int = 3) -> None:
    rng = np.random.default_rng(100 + day)
    n = ROWS_PER_DAY
    start = DAY0 + timedelta(days=day)
    frame = _features(rng, n, shift=shift)
    scores = rng.uniform(0, 1, n)
    ids = [f"d{day}-r{i}" for i in range(n)]
    ts = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.uniform(0, 86_399, n)), "s")
    table = pd.DataFrame({"ts": ts.astype("datetime64[us, UTC]"), "request_id": ids,
                          "model_name": MODEL,
                          "model_version": np.where(np.arange(n) % 5 == 0, 2, 1).astype(np.int64),
                          "score": scores, "prediction": (scores >= 0.5).astype(np.int8)})
    table = pd.concat([table, frame], axis=1)
    out = root / "predictions" / f"model={MODEL}" / f"date={start.date()}"
    out.mkdir(parents=True, exist_ok=True)
    stamp = int(start.timestamp() * 1000)
    for i, part in enumerate(np.array_split(np.arange(n), files)):
        pq.write_table(pa.Table.from_pandas(table.iloc[part], preserve_index=False),
                       out / f"part-{stamp + i}-1-{i:08x}.parquet")
    labelled = np.arange(0, n, 7)
    label_dir = root / "labels" / f"model={MODEL}" / f"date={start.date()}"
    label_dir.mkdir(parents=True, exist_ok=True)
    y = (rng.random(labelled.size) < scores[labelled]).astype(int)
    pq.write_table(pa.table({"request_id": [ids[i] for i in labelled],
                             "label": [str(v) for v in y],
                             "received_at": pa.array([start + timedelta(hours=23)] * labelled.size,
                                                     pa.timestamp("us", tz="UTC"))}),
                   label_dir / f"part-{stamp + 99}-1-0000abcd.parquet")


def _exact(root: Path, reference: Reference, since: datetime, until: datetime):  # noqa: ANN202
    _, reader = open_log(root)
    spec = reference.spec
    current = reader.window(MODEL, since, until, version=1,
                            columns=[*spec.features.all, "score"],
                            categorical=spec.features.categorical)
    return check_frames(reference, current, version=1, window_start=since, window_end=until,
                        now=until)


def _same(summary, exact) -> None:  # noqa: ANN001
    assert summary.engine == "summary" and exact.engine == "exact"
    assert (summary.status, summary.rows, summary.labelled_rows, summary.drifted_columns) == (
        exact.status, exact.rows, exact.labelled_rows, exact.drifted_columns)
    for a, e in zip(summary.columns, exact.columns, strict=True):
        assert (a.column, a.method, a.drifted) == (e.column, e.method, e.drifted)
        assert abs(a.score - e.score) <= (a.score_bound or 0.0) + 1e-9
    assert summary.data_quality == exact.data_quality
    assert summary.performance == exact.performance
    assert summary.prediction_drift is not None and exact.prediction_drift is not None
    assert summary.prediction_drift.drifted == exact.prediction_drift.drifted


def test_summary_engine_verdicts_equal_the_exact_paths_and_reuse_stored_days(tmp_path: Path) -> None:
    root = tmp_path / "log"
    for day in range(3):
        _write_day(root, day, shift=day >= 1)
    reference = _reference()
    since, until = DAY0, DAY0 + timedelta(days=3)
    store = LogStore(root)

    engine = SummaryEngine(store, reference, memory_mib=16)  # small batches: several per file
    window = engine.window(MODEL, 1, since, until)
    labelled, perf = engine.labelled(MODEL, 1, since, until)
    first = check_summary(reference, engine.ref, window, model=MODEL, version=1,
                          window_start=since, window_end=until, now=until,
                          labelled_rows=labelled, performance=perf)
    exact = _exact(root, reference, since, until)
    _same(first, exact)
    assert exact.drifted_columns  # the shifted days show
    version_rows = exact.rows
    assert engine.stats.rows_read == version_rows
    assert (engine.stats.partitions_summarised, engine.stats.partitions_stored) == (3, 3)
    stored = sorted((root / "summaries" / f"model={MODEL}" / "version=1").glob("*.json"))
    assert [p.name for p in stored] == [f"date={(DAY0 + timedelta(days=d)).date()}.json"
                                        for d in range(3)] + ["reference.json"]
    assert json.loads(stored[0].read_text())["format"] == SUMMARY_FORMAT

    # the next day: only its rows are read; the stored days are reused
    _write_day(root, 3, shift=False)
    until = DAY0 + timedelta(days=4)
    engine = SummaryEngine(store, reference)
    window = engine.window(MODEL, 1, since, until)
    exact = _exact(root, reference, since, until)
    assert engine.stats.partitions_reused == 3 and engine.stats.partitions_summarised == 1
    assert engine.stats.rows_read == exact.rows - version_rows
    labelled, perf = engine.labelled(MODEL, 1, since, until)
    _same(check_summary(reference, engine.ref, window, model=MODEL, version=1,
                        window_start=since, window_end=until, now=until,
                        labelled_rows=labelled, performance=perf), exact)

    # a compaction changes a day's files: that day is summarised again, same verdict
    Compactor(store, older_than=timedelta(0)).run(model=MODEL, now=until + timedelta(days=30))
    engine = SummaryEngine(store, reference)
    engine.window(MODEL, 1, since, until)
    assert engine.stats.partitions_summarised >= 1
    _same(summary_check(str(root), reference, model=MODEL, version=1, since=since, until=until,
                        now=until), _exact(root, reference, since, until))


def test_partial_days_are_read_with_their_bounds_and_not_stored(tmp_path: Path) -> None:
    root = tmp_path / "log"
    for day in range(2):
        _write_day(root, day, shift=False)
    reference = _reference()
    since, until = DAY0 + timedelta(hours=6), DAY0 + timedelta(days=1, hours=12)
    engine = SummaryEngine(LogStore(root), reference)
    engine.window(MODEL, 1, since, until)
    assert engine.stats.partitions_stored == 0
    _same(summary_check(str(root), reference, model=MODEL, version=1, since=since, until=until,
                        now=until), _exact(root, reference, since, until))


def test_a_stored_summary_of_another_format_is_recomputed(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _write_day(root, 0, shift=False)
    reference = _reference()
    since, until = DAY0, DAY0 + timedelta(days=1)
    SummaryEngine(LogStore(root), reference).window(MODEL, 1, since, until)
    path = next((root / "summaries").rglob("date=*.json"))
    doc = json.loads(path.read_text())
    doc["format"] = SUMMARY_FORMAT + 1
    path.write_text(json.dumps(doc))
    engine = SummaryEngine(LogStore(root), reference)
    engine.window(MODEL, 1, since, until)
    assert (engine.stats.partitions_reused, engine.stats.partitions_summarised) == (0, 1)
    assert json.loads(path.read_text())["format"] == SUMMARY_FORMAT


def _reference_file(root: Path, version: int = 1) -> Path:
    return root / "summaries" / f"model={MODEL}" / f"version={version}" / "reference.json"


def test_the_reference_summary_is_computed_once_per_version_and_stored(tmp_path: Path) -> None:
    root = tmp_path / "log"
    _write_day(root, 0, shift=True)
    reference = _reference()
    since, until = DAY0, DAY0 + timedelta(days=1)
    first = SummaryEngine(LogStore(root), reference)
    first.window(MODEL, 1, since, until)
    assert (first.stats.reference_summarised, first.stats.reference_reused) == (1, 0)
    doc = json.loads(_reference_file(root).read_text())
    assert doc["format"] == SUMMARY_FORMAT and doc["reference"]

    second = SummaryEngine(LogStore(root), reference)
    second.window(MODEL, 1, since, until)
    assert (second.stats.reference_summarised, second.stats.reference_reused) == (0, 1)
    assert second.ref.fingerprint() == first.ref.fingerprint()
    assert second.ref.to_dict() == first.ref.to_dict()
    assert second.stats.partitions_reused == 1  # the day summaries match the stored reference
    _same(summary_check(str(root), reference, model=MODEL, version=1, since=since, until=until,
                        now=until), _exact(root, reference, since, until))

    # another version has its own; another reference under the same number is not trusted
    other = SummaryEngine(LogStore(root), reference)
    other.window(MODEL, 2, since, until)
    assert other.stats.reference_summarised == 1 and _reference_file(root, 2).exists()
    rng = np.random.default_rng(7)
    changed = Reference(reference.spec, _features(rng, 5000, shift=True),
                        reference.validation_scores, reference.metrics)
    third = SummaryEngine(LogStore(root), changed)
    third.window(MODEL, 1, since, until)
    assert (third.stats.reference_summarised, third.stats.partitions_reused) == (1, 0)


@pytest.mark.parametrize("damage", ["format", "truncated", "not json", "wrong shape",
                                    "a column missing", "empty"])
def test_a_stale_or_corrupt_stored_reference_is_recomputed_and_overwritten(
        tmp_path: Path, damage: str) -> None:
    root = tmp_path / "log"
    _write_day(root, 0, shift=False)
    reference = _reference()
    since, until = DAY0, DAY0 + timedelta(days=1)
    SummaryEngine(LogStore(root), reference).window(MODEL, 1, since, until)
    path = _reference_file(root)
    good = path.read_text()
    doc = json.loads(good)
    if damage == "format":
        doc["format"] = SUMMARY_FORMAT + 1
        path.write_text(json.dumps(doc))
    elif damage == "truncated":
        path.write_text(good[: len(good) // 2])
    elif damage == "not json":
        path.write_bytes(b"\x00\xff garbage")
    elif damage == "wrong shape":
        path.write_text(json.dumps([1, 2, 3]))
    elif damage == "a column missing":
        del doc["summary"]["bases"][NUMERICAL[0]]
        path.write_text(json.dumps(doc))
    else:
        path.write_text("")
    engine = SummaryEngine(LogStore(root), reference)
    engine.window(MODEL, 1, since, until)
    assert (engine.stats.reference_summarised, engine.stats.reference_reused) == (1, 0)
    assert json.loads(path.read_text()) == json.loads(good)  # overwritten with a good one
    _same(summary_check(str(root), reference, model=MODEL, version=1, since=since, until=until,
                        now=until), _exact(root, reference, since, until))


def test_drift_check_on_the_summary_engine_gives_the_exact_engines_verdict(world) -> None:  # noqa: ANN001, F811
    """`driftloop drift-check` as a function with DRIFTLOOP_DRIFT_ENGINE=summary, on a log
    written by the real writer: same verdict as the exact engine, for both versions."""
    spec, registry, settings, v1, v2 = world
    until = DAY + timedelta(days=1)
    for version in (v1, v2):
        exact = run_drift_check(settings, registry, model=spec.model_name, version=version,
                                since=DAY, until=until, report=False).verdict
        summary = run_drift_check(settings.model_copy(update={"drift_engine": "summary"}),
                                  registry, model=spec.model_name, version=version, since=DAY,
                                  until=until).verdict
        assert summary.report_path is None and summary.labels_unmatched == exact.labels_unmatched
        _same(summary, exact)
