"""The prediction log store: one-second flush files from two serving workers at 1,000
requests/s for one model, before and after compaction (files, bytes, the drift check's window
read: time and peak memory), and the controller's reads per pass with the full reader and
the incremental one while new rows arrive.

The traffic is generated straight into ``PredictionLogWriter`` (the serving path's epoch-float
time stamps) with a simulated clock: each flush carries one simulated second of rows, so a
simulated hour takes a few minutes instead of an hour. The default measures one hour
(``--seconds 3600``) and extrapolates to a day by x24, as the page says."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.common import BIN, machine, measure, write_section

MODEL = "bench"
START = datetime(2026, 3, 1, tzinfo=UTC)
NUMERICAL = [f"x{i}" for i in range(5)]
CATEGORICAL = ["plan", "region", "device"]
CATEGORIES = [["basic", "plus", "pro"], ["eu", "us", "apac", "latam"], ["ios", "android", "web"]]

READ = '''
import sys, time
from datetime import datetime
from monitoring.predlog import open_log
_, reader = open_log(sys.argv[1])
since, until = datetime.fromisoformat(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
started = time.perf_counter()
frame = reader.window("bench", since, until, version=1, columns=sys.argv[4].split(",") + ["score"],
                      categorical=sys.argv[5].split(","))
print(len(frame), time.perf_counter() - started, reader.stats.files_opened,
      reader.stats.bytes_opened)
'''


def _flush_rows(rng: np.random.Generator, second: int, worker: int, rows: int,
                counter: int) -> list[dict[str, object]]:
    base = START.timestamp() + second
    stamps = base + np.sort(rng.random(rows))
    numbers = rng.normal(size=(rows, len(NUMERICAL)))
    picks = [rng.integers(0, len(c), rows) for c in CATEGORIES]
    scores = rng.random(rows)
    out = []
    for i in range(rows):
        row: dict[str, object] = {
            "ts": float(stamps[i]), "request_id": f"w{worker}-{counter + i}", "model_name": MODEL,
            "model_version": 1, "score": float(scores[i]), "prediction": int(scores[i] > 0.5),
            "shadow_version": None, "shadow_score": None, "latency_ms": 1.0}
        for name, value in zip(NUMERICAL, numbers[i], strict=True):
            row[name] = float(value)
        for name, values, pick in zip(CATEGORICAL, CATEGORIES, picks, strict=True):
            row[name] = values[pick[i]]
        out.append(row)
    return out


def _traffic(store: object, first: int, seconds: int, rate: int, workers: int,
             rng: np.random.Generator) -> int:
    """``seconds`` simulated seconds from ``first`` on: one flush per worker per second."""
    from monitoring.predlog import PredictionLogWriter

    writers = [PredictionLogWriter(store, flush_interval=3600) for _ in range(workers)]  # type: ignore[arg-type]
    per_flush = rate // workers
    rows = 0
    for second in range(first, first + seconds):
        for w, writer in enumerate(writers):
            for row in _flush_rows(rng, second, w, per_flush, second * per_flush):
                writer.append(row)
            rows += writer.flush()
    for writer in writers:
        writer.close()
    return rows


def _size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*.parquet") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _read(uri: str, until: datetime) -> tuple[float, float, int, int, int]:
    """The drift check's window read in a fresh process: seconds, peak MiB, rows, files."""
    done = measure([str(BIN / "python"), "-c", READ, uri, START.isoformat(), until.isoformat(),
                    ",".join(NUMERICAL + CATEGORICAL), ",".join(CATEGORICAL)])
    assert done.returncode == 0, done.output
    rows, seconds, files, size = done.output.split()[:4]
    return float(seconds), done.peak_rss_mib, int(rows), int(files), int(size)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_logstore", description=__doc__)
    parser.add_argument("--seconds", type=int, default=3600, help="simulated seconds of traffic")
    parser.add_argument("--rate", type=int, default=1000, help="requests per simulated second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=5, help="controller passes in part 2")
    parser.add_argument("--pass-seconds", type=int, default=60,
                        help="simulated seconds of new traffic between two passes")
    args = parser.parse_args(argv)
    from monitoring.predlog import LogStore
    from monitoring.predlog.compact import Compactor
    from monitoring.predlog.reader import IncrementalLogReader, PredictionLogReader

    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "log"
        store = LogStore(root)
        started = time.perf_counter()
        rows = _traffic(store, 0, args.seconds, args.rate, args.workers, rng)
        generated = time.perf_counter() - started
        until = START + timedelta(seconds=args.seconds)
        files_before, bytes_before = _size(root)
        before = _read(str(root), until)
        started = time.perf_counter()
        report = Compactor(store, older_than=timedelta(0)).run(
            now=datetime.now(UTC) + timedelta(hours=2))
        compact_seconds = time.perf_counter() - started
        files_after, bytes_after = _size(root)
        after = _read(str(root), until)
        assert before[2] == after[2] == rows, (before, after, rows)

        # part 2: the controller's pass, every --pass-seconds of new traffic
        full, incremental = PredictionLogReader(store), IncrementalLogReader(store)
        passes = []
        clock = args.seconds
        for n in range(args.passes):
            if n:
                _traffic(store, clock, args.pass_seconds, args.rate, args.workers, rng)
                clock += args.pass_seconds
            now = START + timedelta(seconds=clock)
            line = [n]
            for reader in (full, incremental):
                opened, decoded = reader.stats.files_opened, reader.stats.rows_decoded
                t0 = time.perf_counter()
                frame = reader.window(MODEL, START, now, labels_as_of=now)
                line += [reader.stats.files_opened - opened, reader.stats.rows_decoded - decoded,
                         time.perf_counter() - t0, len(frame)]
            assert line[4] == line[8], line
            passes.append(line)

    day = 86_400 / args.seconds
    command = (f"python -m bench --only logstore  # seconds={args.seconds} rate={args.rate} "
               f"workers={args.workers} passes={args.passes} pass-seconds={args.pass_seconds}")
    pass_rows = "\n".join(
        f"| {n} | {fo:,} | {fr:,} | {ft:.2f} s | {io:,} | {ir:,} | {it:.2f} s | {rows_:,} |"
        for n, fo, fr, ft, rows_, io, ir, it, _ in passes)
    text = f"""## Log store: compaction and incremental reads (issue: log store)

`{command}` on {machine()}.

**What was measured.** {args.seconds:,} simulated seconds of traffic for one model at
{args.rate:,} requests/s from {args.workers} `PredictionLogWriter` instances, each flushing once
per simulated second ({args.rate // args.workers} rows a file, 5 numerical and 3 categorical
features), on a local disk; the clock is simulated (time stamps step one second per flush),
so generating it took {generated:.0f} s. A day is {day:.0f}x this; the day figures below are
that extrapolation, not a measurement. The window read is the drift check's (`reader.window`
with the features and score, categoricals as `category`), in a fresh process, imports
excluded from the time; peak memory is that process's resident set (GNU time).

| | files | bytes | window read | peak memory | files opened |
|---|---:|---:|---:|---:|---:|
| before compaction | {files_before:,} | {bytes_before / 2**20:.1f} MiB | {before[0]:.2f} s | {before[1]:.0f} MiB | {before[3]:,} |
| after compaction (`Compactor`, one file per partition and hour) | {files_after:,} | {bytes_after / 2**20:.1f} MiB | {after[0]:.2f} s | {after[1]:.0f} MiB | {after[3]:,} |
| a day, extrapolated (x{day:.0f}; compacted: one file an hour) | {files_before * day:,.0f} -> 24 | {bytes_before * day / 2**30:.1f} -> {bytes_after * day / 2**30:.1f} GiB | | | |

{rows:,} rows read both times. Compaction took {compact_seconds:.1f} s for {report.files_in:,}
files ({report.rows:,} rows). Compacted files are grouped by the UTC hour in the flush files'
names, i.e. the hour they were *written* in this run, so the simulated hour may land in one or
two compacted files.

**The controller's pass** (`window(model, start, now, labels_as_of=now)` over the whole log,
{args.pass_seconds} simulated seconds of new flush files between passes, after the compaction
above): the full reader (`PredictionLogReader`) opens and decodes everything every pass; the
incremental one (`IncrementalLogReader`, which `controller/parts.py` builds) only the new files.
Both then do the same rest of a pass: filter the window by time, join the labels and build the
pandas frame of every row in it, which is most of the incremental reader's time here.

| pass | full: files opened | full: rows decoded | full: time | incremental: files opened | incremental: rows decoded | incremental: time | rows in window |
|---:|---:|---:|---:|---:|---:|---:|---:|
{pass_rows}
"""
    print(write_section("logstore", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
