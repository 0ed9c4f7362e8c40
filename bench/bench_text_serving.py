"""Serving speed of a multi-class text model (issue 16): driftloop /predict with monitoring on
(metrics + prediction log + shadow, bench_serving's "monitoring on") against
``mlflow models serve`` on the same registered version, in one run with interleaved slices.

The model: the example ticket spec (examples/tickets/spec.yaml: the ``body`` text as TF-IDF
word and char n-grams, ``account_age_days`` and ``channel`` beside it, logistic regression over
five classes) trained on ``driftloop generate --kind tickets`` data (training/generate_tickets.py)
into a local MLflow file registry; a second version is the challenger driftloop scores in
shadow. Before anything is timed both servers answer the same records (tickets of the
``slang`` scenario among them, so unseen words are scored too) and must give every class the
same probability. Then one record per request, one worker each, loopback, ``--connections``
connections, ``--duration`` seconds per server in ``--rounds`` slices, load by wrk (or an httpx
loop without it), with bench_serving's helpers. Reported: requests/s, p50/p99, the server's
CPU per request, and the ratio. Writes docs/bench/text_serving.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.bench_serving import (
    MLFLOW,
    ON,
    VENV_BIN,
    Result,
    Server,
    combine,
    free_port,
    measure_interleaved,
    run_httpx,
    run_wrk,
    start,
    stop,
    wait_ready,
)
from bench.common import ROOT, load_average, machine, write_section

SPEC = ROOT / "examples" / "tickets" / "spec.yaml"
CHECKED = 40          # records both servers answer before the timing, compared class by class
TOLERANCE = 1e-6      # largest allowed difference of one class's probability


def record_of(row: Mapping[Any, Any], text: Sequence[str], numerical: Sequence[str],
              categorical: Sequence[str]) -> dict[str, Any]:
    """One ticket as the JSON record both servers take: texts and categories as strings,
    numbers as floats (the registered signature's double; driftloop reads them alike)."""
    record: dict[str, Any] = {c: str(row[c]) for c in text}
    record.update({c: float(row[c]) for c in numerical})
    record.update({c: str(row[c]) for c in categorical})
    return record


def probabilities(name: str, answer: Mapping[str, Any], classes: Sequence[str]) -> list[float]:
    """Every class's probability in ``classes`` order from one server's answer: driftloop's
    ``{"probabilities": {class: p}}``, MLflow's ``{"predictions": [[p, ...]]}`` (predict_proba
    in the model's class order, which classes.json records)."""
    if name == MLFLOW:
        (row,) = answer["predictions"]
        if len(row) != len(classes):
            raise ValueError(f"{name}: {len(row)} probabilities for {len(classes)} classes")
        return [float(p) for p in row]
    given = answer["probabilities"]
    if sorted(given) != sorted(classes):
        raise ValueError(f"{name}: classes {sorted(given)}, expected {sorted(classes)}")
    return [float(given[c]) for c in classes]


def largest_difference(answers: Mapping[str, Sequence[Sequence[float]]]) -> float:
    """The largest difference between two servers' probability of one class for one record
    (``answers``: server -> one probability row per record, rows in the same record order)."""
    rows = list(answers.values())
    if len(rows) < 2:
        return 0.0
    if len({len(r) for r in rows}) != 1:
        raise ValueError("the servers answered different numbers of records")
    worst = 0.0
    for per_record in zip(*rows, strict=True):
        if len({len(p) for p in per_record}) != 1:
            raise ValueError("the servers answered different numbers of classes")
        for per_class in zip(*per_record, strict=True):
            worst = max(worst, max(per_class) - min(per_class))
    return worst


@dataclass
class TextRun:
    champion: int
    challenger: int
    classes: list[str]
    fast_path: str
    checked: int
    spread: float
    results: list[Result]
    rows: int
    macro_f1: float
    record: dict[str, Any]


def body(name: str, record: Mapping[str, Any]) -> str:
    return json.dumps({"dataframe_records": [record]} if name == MLFLOW else record)


def start_both(spec: Any, record: Mapping[str, Any], work: Path,
               env: dict[str, str]) -> list[Server]:
    """driftloop serving with monitoring on (the defaults: metrics, log, shadow) and
    ``mlflow models serve`` on the same @champion, both ready."""
    servers: list[Server] = []
    port = free_port()
    log = work / f"driftloop-{port}.log"
    process = start([sys.executable, "-m", "driftloop.cli", "serve", "--port", str(port)],
                    env, log)
    servers.append(Server(ON, f"http://127.0.0.1:{port}/predict", body(ON, record), process))
    wait_ready(f"http://127.0.0.1:{port}/readyz", process, log)
    port = free_port()
    log = work / f"mlflow-{port}.log"
    process = start([str(VENV_BIN / "mlflow"), "models", "serve", "-m",
                     f"models:/{spec.model_name}@champion", "--env-manager", "local",
                     "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env, log)
    servers.append(Server(MLFLOW, f"http://127.0.0.1:{port}/invocations",
                          body(MLFLOW, record), process))
    wait_ready(f"http://127.0.0.1:{port}/ping", process, log)
    return servers


def same_answers(servers: list[Server], records: list[dict[str, Any]],
                 classes: Sequence[str]) -> float:
    """Both servers' probabilities for every record; the largest difference of one class's."""
    import httpx

    answers: dict[str, list[list[float]]] = {}
    for s in servers:
        for record in records:
            reply = httpx.post(s.url, content=body(s.name, record), timeout=30,
                               headers={"content-type": "application/json"})
            reply.raise_for_status()
            answers.setdefault(s.name, []).append(probabilities(s.name, reply.json(), classes))
    return largest_difference(answers)


def measure(args: argparse.Namespace, work: Path, use_wrk: bool) -> TextRun:
    import httpx

    from kernel.settings import CommonSettings
    from kernel.spec import load_spec
    from registry import open_registry
    from training.generate import Scenario
    from training.generate_tickets import generate
    from training.train import train

    frame = generate(args.days, rows_per_day=args.rows_per_day, seed=3)
    data = work / "tickets.parquet"
    frame.to_parquet(data, index=False)
    spec = load_spec(SPEC)
    spec = spec.model_copy(update={"model_name": f"bench-text-{uuid.uuid4().hex[:6]}"})
    home = work / "home"
    settings = CommonSettings(home=home)
    registry = open_registry(settings)
    trained = train(spec, [data], registry, alias="champion", seed=0)
    champion = trained.version.version
    challenger = train(spec, [data], registry, alias="challenger", seed=1).version.version
    macro_f1 = float(trained.metrics.get("macro_f1", float("nan")))
    # Records neither version saw, half of the network tickets in slang (unseen words).
    fresh = generate(1, rows_per_day=CHECKED, seed=11, scenario=Scenario("slang"))
    features = spec.features
    records = [record_of(row, features.text, features.numerical, features.categorical)
               for row in fresh.to_dict("records")]
    record = records[0]

    load = run_wrk if use_wrk else run_httpx
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    env.update({"DRIFTLOOP_HOME": str(home), "DRIFTLOOP_MODEL": spec.model_name,
                "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    servers: list[Server] = []
    slices: dict[str, list[Result]] = {}
    rounds = max(1, args.rounds)
    try:
        servers = start_both(spec, record, work, env)
        described = httpx.get(servers[0].url.removesuffix("/predict") + "/model",
                              timeout=5).json()["champion"]
        classes = [str(c) for c in described["classes"]]
        spread = same_answers(servers, records, classes)
        if spread > TOLERANCE:
            raise RuntimeError(f"the servers disagree on a class probability by {spread:.2e}")
        measure_interleaved(servers, load, args, rounds, slices)
    finally:
        for s in servers:
            stop(s.process)
    return TextRun(champion, challenger, classes, str(described["fast_path"]), len(records),
                   spread, [combine(name, parts) for name, parts in slices.items()], len(frame),
                   macro_f1, record)


def report(run: TextRun, args: argparse.Namespace, argv: Sequence[str], use_wrk: bool,
           load: tuple[str, str]) -> str:
    flags = " ".join(argv)
    command = ("python -m bench --only text_serving" if not argv
               else f"python -m bench.bench_text_serving {flags}")
    slice_s = max(1, args.duration // max(1, args.rounds))
    tool = (f"wrk -t1 -c{args.connections} -d{slice_s}s --latency (Lua POST script)"
            if use_wrk else f"an httpx async loop, {args.connections} concurrent requests")
    by = {r.name: r for r in run.results}
    on, peer = by[ON], by[MLFLOW]
    ratio, cpu_ratio = on.rps / peer.rps, peer.cpu_us / on.cpu_us
    lines = [
        "## Serving a multi-class text model (issue 16)", "",
        f"`{command}` on {machine()}; fastapi {metadata.version('fastapi')}, uvicorn "
        f"{metadata.version('uvicorn')}.", "",
        f"The example ticket spec (`examples/tickets/spec.yaml`: the `body` text as TF-IDF word "
        "1-2-grams and char_wb 2-4-grams, with one numerical (`account_age_days`) and one "
        f"categorical (`channel`) column, logistic regression over {len(run.classes)} classes: "
        f"{', '.join(run.classes)}) trained on {run.rows:,} tickets of `driftloop generate "
        f"--kind tickets` (training/generate_tickets.py, scenario none; validation macro-F1 "
        f"{run.macro_f1:.3f}) into a local MLflow file registry: champion v{run.champion}, "
        f"challenger v{run.challenger} (driftloop "
        f"scores it in shadow). driftloop's live path: `{run.fast_path}` (GET /model). "
        f"Before the timing both servers answered the same {run.checked} fresh tickets (the "
        "`slang` scenario: unseen words among them): every class's probability within "
        f"{run.spread:.1e} of the other server's.", "",
        "driftloop answers `POST /predict` with monitoring on (Prometheus metrics, the "
        "prediction log, shadow scoring of the challenger: bench_serving's \"monitoring on\"); "
        "MLflow `POST /invocations` with `{\"dataframe_records\": [...]}` (`mlflow models serve "
        "-m models:/NAME@champion --env-manager local -w 1`, the registered pyfunc answering "
        f"predict_proba). One worker per server, loopback, one ticket per request (every request "
        f"`{json.dumps(run.record)}`), load by "
        f"{tool} after a 2 s warm-up per slice, on the same 2 cores as the load generator. "
        f"Both servers run at once and are measured in {args.rounds} interleaved slices each "
        "(requests/s and CPU per request over all slices, p50/p99 the median of the slices). "
        "CPU per request is the server's whole process tree (user + system, /proc) over the "
        f"timed part of its slices. Load average (1, 5, 15 min) of the shared machine (another "
        f"engineer runs tests): {load[0]} before the run, {load[1]} after.", "",
        "| server | requests/s | p50 | p99 | CPU per request | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.results:
        lines.append(f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | "
                     f"{r.cpu_us:,.0f} µs | {r.requests:,} | {r.errors} |")
    lines += [
        "",
        f"- driftloop (monitoring on) vs mlflow models serve: **{ratio:.1f}x** the requests/s "
        f"(target at least 20x: {'met' if ratio >= 20 else 'MISSED'}), {cpu_ratio:.1f}x less "
        f"CPU per request, p50 {on.p50_ms:.2f} vs {peer.p50_ms:.2f} ms, p99 {on.p99_ms:.2f} "
        f"vs {peer.p99_ms:.2f} ms ({on.p99_ms / peer.p99_ms:.3f} of the peer's).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_text_serving",
                                     description=__doc__)
    parser.add_argument("--duration", type=int, default=20, help="seconds per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per server")
    parser.add_argument("--days", type=int, default=10, help="days of tickets to train on")
    parser.add_argument("--rows-per-day", type=int, default=1000)
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load generator")
    args = parser.parse_args(argv)
    before = load_average()
    work = Path(tempfile.mkdtemp(prefix="bench-text-serving-"))
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    try:
        run = measure(args, work, use_wrk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in run.results:
        print(f"{r.name}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
              f"{r.cpu_us:.0f} us CPU per request, {r.errors} errors")
    print(write_section("text_serving", report(run, args, argv or [], use_wrk,
                                               (before, load_average()))))
    return 0 if all(r.errors == 0 for r in run.results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
