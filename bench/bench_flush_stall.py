"""How long the prediction log's flush keeps other threads from running (the GIL).

The serving app answers requests on one event-loop thread; the log writer's thread turns
buffered row dicts into Arrow arrays once a second, and that conversion holds the GIL. This
benchmark builds one second of rows as serving logs them (churn features, 5,500 rows: about
one second at the measured request rate), runs a "ticker" thread that sleeps 0.2 ms in a loop
and records how late each wake-up was, and times the flush's encoding step while the ticker
runs: in one piece (``prediction_table`` on all rows, as before) and in the writer's pieces
(``PredictionLogWriter._encode``). Reported: the encode time alone, the longest wake-up delay
and its 99.9th percentile. Writes docs/bench/flush_stall.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

from bench.common import machine, write_section

NUMERICAL = ("tenure_months", "monthly_charges", "total_charges", "support_tickets")
CATEGORICAL = ("contract_type", "payment_method", "internet_service")


def rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` log rows shaped as serving/api/predict.py's ``row()`` makes them."""
    rng = random.Random(seed)
    now = time.time()
    return [{"ts": now + i / n, "request_id": f"{rng.getrandbits(128):032x}",
             "model_name": "churn", "model_version": 1, "score": rng.random(),
             "prediction": rng.randint(0, 1), "shadow_version": None, "shadow_score": None,
             "latency_ms": rng.uniform(0.5, 3.0),
             **{c: rng.uniform(0, 100) for c in NUMERICAL},
             **{c: rng.choice(("a", "b", "c", "d")) for c in CATEGORICAL}} for i in range(n)]


def stalls(encode: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """(median encode ms, longest ticker delay ms, 99.9th percentile delay ms) while the
    ticker runs beside ``encode``."""
    delays: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.0002)
            now = time.perf_counter()
            delays.append(now - last)
            last = now

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    time.sleep(0.1)
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode()
        took.append(time.perf_counter() - start)
        time.sleep(0.05)
    stop.set()
    thread.join()
    ordered = sorted(delays)
    return (1000 * statistics.median(took), 1000 * ordered[-1],
            1000 * ordered[int(len(ordered) * 0.999)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_flush_stall",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5500, help="rows in the flush")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    import pyarrow as pa

    from monitoring.predlog import LogStore, PredictionLogWriter
    from monitoring.predlog import writer as writer_module
    from monitoring.predlog.schema import META_TYPES, prediction_table

    types = {**META_TYPES, **{c: pa.float64() for c in NUMERICAL},
             **{c: pa.string() for c in CATEGORICAL}}
    batch = rows(args.rows)
    gc.freeze()  # as the serving app does after start-up
    writer = PredictionLogWriter(LogStore("/nonexistent-flush-stall"))

    def build(part: list[dict[str, Any]]) -> pa.Table:
        return prediction_table(part, types)

    def whole() -> Any:
        return build(batch)

    def pieces() -> Any:
        return writer._encode(batch, build, {})[0]

    assert whole().equals(pieces()), "the pieces must make the same table"
    load_before = os.getloadavg()[0]
    results = []
    for label, fn in (("one piece", whole), (f"pieces of {writer_module._ENCODE_CHUNK}", pieces)):
        alone = 1000 * min(timeit.repeat(fn, number=1, repeat=args.repeats))
        median, longest, p999 = stalls(fn, args.repeats)
        results.append((label, alone, median, longest, p999))
        print(f"{label}: encode {alone:.2f} ms alone, {median:.2f} ms beside the ticker; "
              f"longest delay {longest:.2f} ms, p99.9 {p999:.2f} ms", flush=True)
    lines = [
        "## Serving: how long a log flush stalls the request thread (issues 12, 21)",
        "",
        f"`python -m bench --only flush_stall` on {machine()}.",
        "",
        f"{args.rows:,} log rows (one second at about the measured request rate) encoded to "
        "Arrow as the writer's flush does, in one piece and in the writer's pieces, while a "
        "second thread sleeps 0.2 ms in a loop and records how late it wakes: the request "
        "thread's view of the GIL. Encode time alone is the best of "
        f"{args.repeats}; beside the ticker the median. Load average (1 min) before the run: "
        f"{load_before:.2f} (other load on the 2 cores delays the ticker too).",
        "",
        "| encoding | encode alone | encode beside the ticker | longest delay | p99.9 delay |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {alone:.2f} ms | {median:.2f} ms | {longest:.2f} ms | {p999:.2f} ms |"
          for label, alone, median, longest, p999 in results],
    ]
    print(f"wrote {write_section('flush_stall', chr(10).join(lines))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
