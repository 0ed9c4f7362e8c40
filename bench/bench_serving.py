"""Serving speed: driftloop /predict with monitoring on (metrics + log + shadow) and off,
``mlflow models serve`` and MLServer's scikit-learn runtime on the same fitted pipeline, in
one run with interleaved slices, for one pipeline of each estimator kind (``--kinds``). One
worker each, loopback, 16 connections, ``--duration`` seconds per server (20 by default, in
``--rounds`` slices). Reported: requests/s, p50/p99, and the server's CPU per request.
MLServer runs from its own venv (``.bench-venvs/mlserver``; docs/serving.md says how to make
it) and is skipped, saying so, without it. Load generator: wrk with a Lua POST script, or an
httpx async loop when wrk is not installed. Writes docs/bench/serving.md
(``--breakdown``: also monitoring on with each of its parts switched off in turn, written
to docs/bench/serving-breakdown.md instead)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench" / "serving.md"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    cpu_seconds: float = float("nan")  # the server's CPU (process tree) during the run
    cpu_us: float = float("nan")    # that per request, microseconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready: {url}\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _no_cpu() -> float:
    return float("nan")


def run_wrk(name: str, url: str, body: str, seconds: int, connections: int,
            cpu: Callable[[], float] = _no_cpu) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                     f"wrk.body = {json.dumps(body)}\n")
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", "-s", script.name, url],
                   check=True, capture_output=True)  # warm-up
    cpu_before = cpu()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "--timeout", "10s", "-s", script.name, url],
                         check=True, capture_output=True, text=True).stdout
    cpu_seconds = cpu() - cpu_before
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(name, rps, p50, p99, total, errors, "wrk", cpu_seconds,
                  cpu_seconds / max(1, total) * 1e6)


def run_httpx(name: str, url: str, body: str, seconds: int, connections: int,
              cpu: Callable[[], float] = _no_cpu) -> Result:
    import httpx

    async def main() -> Result:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            headers = {"content-type": "application/json"}

            async def worker(until: float, record: bool) -> None:
                nonlocal errors
                while time.perf_counter() < until:
                    t = time.perf_counter()
                    r = await client.post(url, content=body, headers=headers)
                    if record:
                        latencies.append(time.perf_counter() - t)
                        errors += r.status_code >= 300

            warm = time.perf_counter() + 2
            await asyncio.gather(*(worker(warm, False) for _ in range(connections)))
            cpu_before, start = cpu(), time.perf_counter()
            await asyncio.gather(*(worker(start + seconds, True) for _ in range(connections)))
            elapsed, cpu_seconds = time.perf_counter() - start, cpu() - cpu_before
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        return Result(name, len(latencies) / elapsed, pick(0.5), pick(0.99), len(latencies),
                      errors, "httpx", cpu_seconds, cpu_seconds / max(1, len(latencies)) * 1e6)

    return asyncio.run(main())


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


KINDS = ("logistic_regression", "hist_gradient_boosting")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_serving", description=__doc__)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating slices per driftloop configuration")
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load generator")
    parser.add_argument("--skip-mlflow", action="store_true", help="no mlflow models serve")
    parser.add_argument("--skip-mlserver", action="store_true",
                        help="no MLServer (otherwise run from .bench-venvs/mlserver when it "
                        "exists; see docs/serving.md)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure monitoring on with the log, shadow scoring or "
                        "metrics switched off (written to docs/bench/serving-breakdown.md)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="estimator kinds, one pipeline each, measured in this order")
    args = parser.parse_args(argv)

    from training.generate import generate

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    frame = generate(10, rows_per_day=1000, seed=3)
    data = work / "churn.parquet"
    frame.to_parquet(data, index=False)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    runs = [measure_kind(kind, work, data, frame, args, use_wrk)
            for kind in args.kinds.split(",") if kind]
    for run in runs:
        for r in run.results:
            print(f"{run.kind} / {r.name}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                  f"p99 {r.p99_ms:.2f} ms, {r.errors} errors")
    load = (load_before, os.getloadavg()[0])
    write_report(runs, args, argv or [], use_wrk, load)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.errors == 0 for run in runs for r in run.results) else 1


@dataclass
class KindRun:
    kind: str
    champion: int
    challenger: int
    fast_path: str                  # what the champion's GET /model says is live
    results: list[Result]
    spread: float = 0.0             # largest difference in the record's probability


MLSERVER_VENV = ROOT / ".bench-venvs" / "mlserver"
ON, OFF = "driftloop, metrics + log + shadow on", "driftloop, monitoring off"
#: ``--breakdown``: monitoring on with one part switched off, to see where its cost goes.
PARTS = {"driftloop, on without the log": {"DRIFTLOOP_SERVING_LOG": "false"},
         "driftloop, on without shadow scoring": {"DRIFTLOOP_SERVING_SHADOW": "false"},
         "driftloop, on without metrics": {"DRIFTLOOP_SERVING_METRICS": "false"}}
BREAKDOWN_OUT = ROOT / "docs" / "bench" / "serving-breakdown.md"
MLFLOW, MLSERVER = "mlflow models serve", "MLServer (mlserver-sklearn)"


@dataclass
class Server:
    name: str
    url: str                        # the scoring endpoint
    body: str
    process: subprocess.Popen[bytes]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants (Linux /proc)."""
    tick, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def mlserver_setup(work: Path, estimator: Any, name: str) -> Path | None:
    """A model repository for ``mlserver start`` (the fitted pipeline as model.pkl,
    answering ``predict_proba``), or None when the MLServer venv is missing."""
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        return None
    repo = work / f"mlserver-{name}"
    model_dir = repo / name
    model_dir.mkdir(parents=True)
    with open(model_dir / "model.pkl", "wb") as f:  # mlserver-sklearn reads it with joblib
        pickle.dump(estimator, f)
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.pkl", "extra": {"predict_fn": "predict_proba"}}}))
    return repo


def mlserver_body(record: dict[str, Any]) -> str:
    """One record in the V2 inference protocol, decoded as a DataFrame (pandas codec)."""
    inputs = [{"name": k, "shape": [1],
               "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
              for k, v in record.items()]
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs})


def start_servers(kind: str, spec: Any, record: dict[str, Any], estimator: Any, work: Path,
                  env: dict[str, str], args: argparse.Namespace) -> list[Server]:
    servers: list[Server] = []
    configs = [(ON, {}), (OFF, {"DRIFTLOOP_SERVING_METRICS": "false",
                               "DRIFTLOOP_SERVING_LOG": "false",
                               "DRIFTLOOP_SERVING_SHADOW": "false"})]
    if args.breakdown:
        configs[1:1] = list(PARTS.items())
    for name, extra in configs:
        port = free_port()
        log = work / f"driftloop-{port}.log"
        process = start([sys.executable, "-m", "driftloop.cli", "serve", "--port", str(port)],
                        {**env, **extra}, log)
        servers.append(Server(name, f"http://127.0.0.1:{port}/predict", json.dumps(record),
                              process))
        wait_ready(f"http://127.0.0.1:{port}/readyz", process, log)
    if not args.skip_mlflow:
        port = free_port()
        log = work / f"mlflow-{port}.log"
        process = start([str(VENV_BIN / "mlflow"), "models", "serve", "-m",
                         f"models:/{spec.model_name}@champion", "--env-manager", "local",
                         "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env, log)
        servers.append(Server(MLFLOW, f"http://127.0.0.1:{port}/invocations",
                              json.dumps({"dataframe_records": [record]}), process))
        wait_ready(f"http://127.0.0.1:{port}/ping", process, log)
    repo = None if args.skip_mlserver else mlserver_setup(work, estimator, kind.replace("_", "-"))
    if repo is not None:
        port, name = free_port(), kind.replace("_", "-")
        (repo / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "host": "127.0.0.1"}))
        log = work / f"mlserver-{port}.log"
        menv = {**env, "PYTHONPATH": str(ROOT)}
        process = start([str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)], menv, log)
        servers.append(Server(MLSERVER, f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                              mlserver_body(record), process))
        wait_ready(f"http://127.0.0.1:{port}/v2/models/{name}/ready", process, log)
    return servers


def peer_scores(servers: list[Server]) -> dict[str, float]:
    """Each server's positive-class probability for the benchmark record (checked equal
    before anything is timed)."""
    import httpx

    out = {}
    for s in servers:
        answer = httpx.post(s.url, content=s.body, timeout=30,
                            headers={"content-type": "application/json"}).json()
        if s.name in (ON, OFF, *PARTS):
            out[s.name] = float(answer["score"])
        elif s.name == MLFLOW:
            out[s.name] = float(answer["predictions"][0][1])
        else:
            out[s.name] = float(answer["outputs"][0]["data"][1])
    return out


def measure_kind(kind: str, work: Path, data: Path, frame: Any, args: argparse.Namespace,
                 use_wrk: bool) -> KindRun:
    """Train a champion and a challenger of ``kind``; start driftloop (monitoring on and
    off), ``mlflow models serve`` and MLServer on that champion, check they give the same
    probability, and measure them in interleaved slices (CPU per request of each server's
    process tree alongside)."""
    import httpx

    from kernel.settings import CommonSettings
    from kernel.spec import load_spec
    from registry import open_registry
    from training.train import train

    home = work / f"home-{kind}"
    spec = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    if kind != spec.estimator.kind:
        spec = spec.model_copy(update={"estimator": spec.estimator.model_copy(
            update={"kind": kind, "params": {}})})
    spec = spec.model_copy(update={"model_name": f"bench-{uuid.uuid4().hex[:6]}"})
    settings = CommonSettings(home=home)
    registry = open_registry(settings)
    champion = train(spec, [data], registry, alias="champion", seed=0).version.version
    challenger = train(spec, [data], registry, alias="challenger", seed=1).version.version
    estimator = registry.load_model(registry.download(spec.model_name, champion,
                                                      work / f"bundle-{kind}"))
    row = frame.iloc[0]
    record: dict[str, Any] = {c: float(row[c]) for c in spec.features.numerical}
    record.update({c: str(row[c]) for c in spec.features.categorical})

    load = run_wrk if use_wrk else run_httpx
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    env.update({"DRIFTLOOP_HOME": str(home), "DRIFTLOOP_MODEL": spec.model_name,
                "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    servers: list[Server] = []
    slices: dict[str, list[Result]] = {}
    rounds = max(1, args.rounds)
    try:
        servers = start_servers(kind, spec, record, estimator, work, env, args)
        scores = peer_scores(servers)
        spread = max(scores.values()) - min(scores.values())
        if spread > 1e-6:
            raise RuntimeError(f"{kind}: the servers disagree on the record: {scores}")
        base = servers[0].url.removesuffix("/predict")
        fast_path = httpx.get(base + "/model", timeout=5).json()["champion"]["fast_path"]
        measure_interleaved(servers, load, args, rounds, slices, label=f"{kind}: ")
    finally:
        for s in servers:
            stop(s.process)
    return KindRun(kind, champion, challenger, fast_path,
                   [combine(name, parts) for name, parts in slices.items()], spread)


def measure_interleaved(servers: Sequence[Server], load: Any, args: argparse.Namespace,
                        rounds: int, slices: dict[str, list[Result]], *, label: str = "") -> None:
    """Every server measured in each round, one after the other, so a change in background
    load on the shared machine hits them all alike; each slice appended to ``slices``."""
    for i in range(rounds):
        for s in servers:
            print(f"-- {label}{s.name} (slice {i + 1}/{rounds})", flush=True)
            pid = s.process.pid
            slices.setdefault(s.name, []).append(load(
                s.name, s.url, s.body, max(1, args.duration // rounds), args.connections,
                lambda pid=pid: process_cpu(pid)))


def combine(name: str, results: list[Result]) -> Result:
    """One server's slices: requests/s and CPU per request over all of them, p50/p99 the
    median of the slices."""
    seconds = sum(r.requests / r.rps for r in results)
    requests = sum(r.requests for r in results)
    cpu = sum(r.cpu_seconds for r in results)
    return Result(name, requests / seconds, statistics.median(r.p50_ms for r in results),
                  statistics.median(r.p99_ms for r in results), requests,
                  sum(r.errors for r in results), results[0].tool, cpu,
                  cpu / max(1, requests) * 1e6)


def write_report(runs: list[KindRun], args: argparse.Namespace, argv: list[str],
                 use_wrk: bool,
                 load: tuple[float, float] = (float("nan"), float("nan"))) -> None:
    flags = " ".join(argv)
    command = ("python -m bench --only serving" if not argv
               else f"python -m bench.bench_serving {flags}")
    slice_s = max(1, args.duration // max(1, args.rounds))
    tool = (f"wrk -t1 -c{args.connections} -d{slice_s}s --latency (Lua POST script)"
            if use_wrk else f"httpx async loop, {args.connections} concurrent requests")
    pipelines = "; ".join(f"{run.kind} (champion v{run.champion}, challenger "
                          f"v{run.challenger}, fast path `{run.fast_path}`, the servers' "
                          f"probabilities for the record within {run.spread:.1e})"
                          for run in runs)
    mlserver = (metadata_of(MLSERVER_VENV, "mlserver") or "not installed")
    lines = [
        ("## Serving: monitoring's cost by part, each switched off in turn (issues 12, 21)"
         if args.breakdown else
         "## Serving (issue 3, both estimator kinds and the monitoring overhead: issues 12, 21)"),
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, mlflow {metadata.version('mlflow')}, fastapi "
        f"{metadata.version('fastapi')}, uvicorn {metadata.version('uvicorn')}, scikit-learn "
        f"{metadata.version('scikit-learn')}, MLServer {mlserver} (its own venv, "
        f"`.bench-venvs/mlserver`); {datetime.now(UTC):%Y-%m-%d}.", "",
        f"One churn pipeline per estimator kind, measured one kind after the other: {pipelines}. "
        "For each, the same fitted champion in every server (the challenger for driftloop's "
        "shadow scoring), one worker per server, loopback, one record per request, load by "
        f"{tool} after a 2 s warm-up per slice, on the same 2 cores as the load generator. "
        "driftloop answers `POST /predict`; MLflow `POST /invocations` with "
        "`{\"dataframe_records\": [...]}` (`mlflow models serve -m models:/NAME@champion "
        "--env-manager local -w 1`); MLServer `POST /v2/models/NAME/infer` (V2 protocol, "
        "pandas codec, `mlserver_sklearn.SKLearnModel` with `predict_fn: predict_proba`, "
        "`parallel_workers: 0`). All servers of a kind run at once and are measured in "
        f"{args.rounds} interleaved slices each (requests/s and CPU per request over all "
        "slices, p50/p99 the median of the slices), so background load on the shared machine "
        "hits them alike. CPU per request is the server's whole process tree (user + system, "
        "/proc) over the timed part of its slices: less sensitive to other load than "
        f"requests/s. Load average (1 min) before and after the run: {load[0]:.2f} and "
        f"{load[1]:.2f}.", "",
        "| estimator | server | requests/s | p50 | p99 | CPU per request | requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for r in run.results:
            lines.append(f"| {run.kind} | {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | "
                         f"{r.p99_ms:.2f} ms | {r.cpu_us:,.0f} µs | {r.requests:,} | "
                         f"{r.errors} |")
    lines.append("")
    for run in runs:
        lines += verdicts(run)
    out = BREAKDOWN_OUT if args.breakdown else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def metadata_of(venv: Path, package: str) -> str | None:
    """``package``'s version in another venv (from its dist-info), or None."""
    found = sorted(venv.glob(f"lib/python*/site-packages/{package}-*.dist-info"))
    return found[-1].name.removeprefix(f"{package}-").removesuffix(".dist-info") if found \
        else None


def verdicts(run: KindRun) -> list[str]:
    """The targets of issues 12 and 21 for one kind, each with its figures."""
    by = {r.name: r for r in run.results}
    on, off = by[ON], by[OFF]
    overhead, p99 = 1 - on.rps / off.rps, on.p99_ms / off.p99_ms
    cpu = on.cpu_us / off.cpu_us - 1
    ok = overhead <= 0.10 and p99 <= 1.5
    lines = [f"- {run.kind}: monitoring overhead (metrics + log + shadow on vs off, same app): "
             f"{overhead:.1%} fewer requests/s (target at most 10%), p99 {on.p99_ms:.2f} vs "
             f"{off.p99_ms:.2f} ms = {p99:.2f}x (target at most 1.5x), CPU per request "
             f"{cpu:+.1%}: {'met' if ok else 'MISSED'}."]
    for part in PARTS:
        if part in by:
            saved = by[part].rps / on.rps - 1
            lines.append(f"- {run.kind}: {part}: {by[part].rps:,.0f} requests/s, {saved:+.1%} "
                         f"against all of monitoring on; p99 {by[part].p99_ms:.2f} ms.")
    for peer in (MLFLOW, MLSERVER):
        if peer not in by:
            lines.append(f"- {run.kind}: {peer} was not measured in this run.")
            continue
        ratio, cpu_ratio = on.rps / by[peer].rps, by[peer].cpu_us / on.cpu_us
        lines.append(f"- {run.kind}: driftloop (monitoring on) vs {peer}: {ratio:.1f}x the "
                     f"requests/s (target at least 20x: {'met' if ratio >= 20 else 'MISSED'}), "
                     f"{cpu_ratio:.1f}x less CPU per request, p99 "
                     f"{on.p99_ms / by[peer].p99_ms:.3f} of the peer's.")
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
