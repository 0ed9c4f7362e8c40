"""Where serving's monitoring costs go, per request, in process (no network, no load tool).

Two copies of the app run in one process on the same model (champion and challenger
trained here): monitoring on (metrics, log, shadow) and off. They answer /predict in
alternating chunks, so slow drift in the shared machine's speed hits both alike. Reported:
the event-loop thread's CPU per request for each (median over chunks, and the median of the
paired differences), and the CPU each background thread spent per request. This separates
the request path from the log writer and the shadow scorer, which an end-to-end load test
(bench_serving) sees only as a throughput ratio. Writes docs/bench/serving_cost.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, write_section


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per native thread id (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _measure(apps: dict[str, Any], body: bytes, rounds: int, chunk: int
                   ) -> dict[str, list[float]]:
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/predict",
             "raw_path": b"/predict", "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def burst(app: Any, n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    for app in apps.values():
        await burst(app, 1000)  # warm
    per_request: dict[str, list[float]] = {name: [] for name in apps}
    for i in range(rounds):
        for name in (list(apps) if i % 2 == 0 else list(apps)[::-1]):
            started = time.thread_time()
            await burst(apps[name], chunk)
            per_request[name].append((time.thread_time() - started) / chunk * 1e6)
    assert statuses == {200}, statuses
    return per_request


async def _run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, float]]:
    import pandas as pd

    from kernel.settings import CommonSettings
    from kernel.spec import load_spec
    from registry import open_registry
    from serving.app import create_app
    from serving.settings import ServingSettings
    from training.generate import generate
    from training.train import train

    work = Path(tempfile.mkdtemp(prefix="bench-serving-cost-"))
    home = work / "home"
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    spec = spec.model_copy(update={"model_name": f"bench-{uuid.uuid4().hex[:6]}"})
    frame: pd.DataFrame = generate(10, rows_per_day=1000, seed=3)
    data = work / "churn.parquet"
    frame.to_parquet(data, index=False)
    registry = open_registry(CommonSettings(home=home))
    train(spec, [data], registry, alias="champion", seed=0)
    train(spec, [data], registry, alias="challenger", seed=1)
    row = frame.iloc[0]
    record: dict[str, Any] = {c: float(row[c]) for c in spec.features.numerical}
    record.update({c: str(row[c]) for c in spec.features.categorical})
    body = json.dumps(record).encode()
    apps, contexts = {}, []
    for name, on in (("on", True), ("off", False)):
        settings = ServingSettings(home=home, model=spec.model_name, serving_metrics=on,
                                   serving_log=on, serving_shadow=on,
                                   log_uri=str(work / f"log-{name}"))
        app = create_app(settings, registry=registry)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        for _ in range(300):
            state = app.state.serving
            if state.champion is not None and (not on or state.follower.challenger is not None):
                break
            await asyncio.sleep(0.1)
        apps[name] = app
    main_thread = str(threading.get_native_id())
    before = _thread_cpu()
    per_request = await _measure(apps, body, args.rounds, args.chunk)
    after = _thread_cpu()
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    on_app = apps["on"].state.serving
    on_threads = {t.native_id for t in (on_app.shadow._thread, on_app.writer._thread) if t}
    total = args.rounds * args.chunk
    background: dict[str, float] = {}
    for tid, cpu in after.items():
        if tid == main_thread or tid not in names:
            continue
        which = "on" if int(tid) in on_threads else "either"
        key = f"{names[tid]} ({which})"
        background[key] = background.get(key, 0.0) + (cpu - before.get(tid, 0.0)) / total * 1e6
    for context in contexts:
        await context.__aexit__(None, None, None)
    return per_request, background


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_serving_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=2000)
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    per_request, background = asyncio.run(_run(args))
    on, off = per_request["on"], per_request["off"]
    diffs = [a - b for a, b in zip(on, off, strict=True)]
    q1, _, q3 = statistics.quantiles(diffs, n=4)
    rows = "\n".join(f"| {name} | {us:.1f} µs |" for name, us in sorted(background.items())
                     if us >= 0.05)
    command = f"python -m bench --only serving_cost  # rounds={args.rounds} chunk={args.chunk}"
    text = f"""## Serving: where monitoring's cost goes, in process

`{command}` on {machine()}.

Two copies of the serving app in one process, same champion and challenger, monitoring on
(metrics, prediction log, shadow scoring) and off, answering `POST /predict` through ASGI in
{args.rounds} alternating chunks of {args.chunk:,} requests (no network, no load tool).

| | CPU per request |
|---|---:|
| event loop, monitoring on (median of chunks) | {statistics.median(on):.1f} µs |
| event loop, monitoring off | {statistics.median(off):.1f} µs |
| event loop, on minus off (median of paired chunks; quartiles {q1:.1f} to {q3:.1f}) | {statistics.median(diffs):.1f} µs |

Background threads, CPU per request of the run (threads marked "on" exist only in the
monitored copy; "either" rows sum both copies' threads of that name, so the monitored copy's
share is the difference from the unmonitored one's idle polling):

| thread | CPU per request |
|---|---:|
{rows}

The request path records metrics by appending to a tally folded into prometheus_client in
bulk (serving/metrics.py); the shadow scorer scores whole queued batches and counts once per
batch; the log writer dictionary-encodes only columns whose values repeat.
"""
    print(write_section("serving_cost", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
