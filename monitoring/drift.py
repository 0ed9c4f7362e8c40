"""Evidently, behind one module (import-linter keeps evidently out of every other package).

Three uses:

* ``render_report``: the HTML report a person opens (DataDriftPreset over the
  features plus ValueDrift on the score), on a capped sample for large windows;
* ``column_drift``: the fallback for per-column methods the fast path
  (monitoring/stats.py) does not implement (psi, kl_div, ...), through
  Evidently's own stat-test registry;
* ``evidently_drift``: Evidently's own per-column methods, scores and verdicts for
  a frame pair, used by the equivalence test and the benchmark.

Evidently is imported inside the functions: ``import evidently`` costs seconds.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy, pandas and scipy (through monitoring.stats) are imported where used: starting a
# ReportRenderer then costs no imports, so the child's evidently import begins at once.
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from monitoring.stats import ColumnResult, Kind

log = logging.getLogger(__name__)


_LOAD_LOCK = threading.Lock()
_loaded = False


def _load(pause_gc: bool = False) -> None:
    """Import evidently once, quietly: its UI package imports litestar, whose deprecation
    warnings (not ours to fix) would fail test runs that treat warnings as errors.
    ``pause_gc``: with the garbage collector paused and everything frozen after
    (kernel/imports.py), for the short-lived report process only."""
    global _loaded
    if _loaded:
        return
    from contextlib import nullcontext

    from kernel.imports import gc_paused

    with _LOAD_LOCK:
        if _loaded:
            return
        with warnings.catch_warnings(), (gc_paused() if pause_gc else nullcontext()):
            warnings.simplefilter("ignore", DeprecationWarning)
            import evidently  # noqa: F401
            import evidently.presets  # noqa: F401
        _loaded = True


def _method_ids() -> dict[str, str]:
    """Evidently's display names ("K-S p_value") to method ids ("ks"), from the stat tests
    its public ``stattests`` package exports (each a ``StatTest`` with ``name`` and
    ``display_name``)."""
    _load()
    from evidently.legacy.calculations import stattests

    out: dict[str, str] = {}
    for export in stattests.__all__:
        test = getattr(stattests, export)
        if isinstance(test, stattests.StatTest):
            out[test.display_name] = test.name
            out[test.name] = test.name
    return out


def _definition(numerical: Sequence[str], categorical: Sequence[str]):  # noqa: ANN202
    from evidently import DataDefinition

    return DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))


def _prepare(frame: pd.DataFrame, numerical: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    from kernel.frames import none_for_missing

    out = pd.DataFrame(index=range(len(frame)))
    for col in numerical:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64").to_numpy()
    for col in categorical:
        out[col] = none_for_missing(frame[col]).to_numpy()
    return out


@dataclass(frozen=True)
class EvidentlyDrift:
    columns: list[ColumnResult]
    drifted_count: int
    share: float


def evidently_drift(reference: pd.DataFrame, current: pd.DataFrame, *,
                    numerical: Sequence[str], categorical: Sequence[str],
                    drift_share: float = 0.5,
                    per_column_method: Mapping[str, str] | None = None,
                    per_column_threshold: Mapping[str, float] | None = None) -> EvidentlyDrift:
    """Run Evidently's DataDriftPreset and read back each column's method, score, verdict."""
    import numpy as np

    from monitoring.stats import ColumnResult

    _load()
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = _definition(numerical, categorical)
    preset = DataDriftPreset(drift_share=drift_share,
                             per_column_method=dict(per_column_method or {}) or None,
                             per_column_threshold=dict(per_column_threshold or {}) or None)
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(_prepare(current, numerical, categorical), data_definition=definition),
            Dataset.from_pandas(_prepare(reference, numerical, categorical),
                                data_definition=definition),
        )
    data = snapshot.dict()
    ids = _method_ids()
    failed = {t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
              for t in data["tests"] if t.get("id") == "drift"}
    kinds: dict[str, Kind] = {**{c: "numerical" for c in numerical},
                              **{c: "categorical" for c in categorical}}
    columns, count, share = [], 0, 0.0
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            col = config["column"]
            columns.append(ColumnResult(col, kinds[col], ids.get(config["method"], config["method"]),
                                        float(metric["value"]), float(config["threshold"]),
                                        failed[col]))
    return EvidentlyDrift(columns, count, share)


def column_drift(column: str, reference: pd.Series, current: pd.Series, kind: Kind, *,
                 method: str, threshold: float | None) -> ColumnResult:
    """One column through Evidently's stat-test registry (methods the fast path lacks)."""
    import numpy as np

    from monitoring.stats import ColumnResult

    _load()
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical
    if kind == "categorical":  # plain values, whatever the frame's dtype (category...)
        reference, current = reference.astype(object), current.astype(object)
    ref = reference.replace([-np.inf, np.inf], np.nan).dropna()
    cur = current.replace([-np.inf, np.inf], np.nan).dropna()
    test = get_stattest(ref, cur, ctype, method)
    if ref.empty or cur.empty:
        limit = test.default_threshold if threshold is None else threshold
        return ColumnResult(column, kind, method, float("nan"), limit, cur.empty and not ref.empty)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = test(ref, cur, ctype, threshold)
    return ColumnResult(column, kind, method, float(result.drift_score),
                        float(result.actual_threshold), bool(result.drifted))


def _cap(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(max_rows, random_state=seed) if len(frame) > max_rows else frame


def _sample_inputs(reference: pd.DataFrame, current: pd.DataFrame, *,
                   numerical: Sequence[str], categorical: Sequence[str],
                   reference_scores: np.ndarray | None, current_scores: np.ndarray | None,
                   max_rows: int, seed: int) -> dict[str, Any]:
    """The report's inputs, capped at ``max_rows`` per side (cheap: sampled before copying)."""
    import numpy as np

    sampled = None
    if len(reference) > max_rows or len(current) > max_rows:
        sampled = min(max(len(reference), len(current)), max_rows)
    # Sample before copying: a day of traffic is millions of rows, the report needs thousands.
    ref = _prepare(_cap(reference, max_rows, seed), numerical, categorical)
    cur = _prepare(_cap(current, max_rows, seed), numerical, categorical)
    if reference_scores is not None and len(reference_scores) > max_rows:
        reference_scores = np.random.default_rng(seed).choice(reference_scores, max_rows,
                                                              replace=False)
    if current_scores is not None and len(current) > max_rows:
        current_scores = np.asarray(current_scores)[
            current.index.get_indexer(_cap(current, max_rows, seed).index)]
    return {"ref": ref, "cur": cur, "reference_scores": reference_scores,
            "current_scores": current_scores, "sampled": sampled}


def _render(path: Path, *, ref: pd.DataFrame, cur: pd.DataFrame, numerical: Sequence[str],
            categorical: Sequence[str], drift_share: float,
            per_column_method: Mapping[str, str] | None,
            per_column_threshold: Mapping[str, float] | None,
            reference_scores: np.ndarray | None, current_scores: np.ndarray | None,
            sampled: int | None) -> None:
    import numpy as np

    _load()
    from evidently import Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    num = list(numerical)
    methods = dict(per_column_method or {})
    thresholds = dict(per_column_threshold or {})
    features = [*numerical, *categorical]
    # DriftedColumnsCount plus one ValueDrift per column: the same per-column results as
    # DataDriftPreset, whose render would compute every column a second time.
    metrics: list = [DriftedColumnsCount(columns=features, drift_share=drift_share,
                                         per_column_method=methods or None,
                                         per_column_threshold=thresholds or None)]
    metrics += [ValueDrift(column=c, method=methods.get(c), threshold=thresholds.get(c))
                for c in features]
    if reference_scores is not None and current_scores is not None:
        # The score is a column of its own in each frame; the lengths differ from the features'.
        ref = _pad_score(ref, reference_scores)
        cur = _pad_score(cur, current_scores)
        num.append("score")
        metrics.append(ValueDrift(column="score"))
    definition = _definition(num, categorical)
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = Report(metrics).run(Dataset.from_pandas(cur, data_definition=definition),
                                       Dataset.from_pandas(ref, data_definition=definition))
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    if sampled:
        _note_sample(path, sampled)


def render_report(reference: pd.DataFrame, current: pd.DataFrame, path: Path, *,
                  numerical: Sequence[str], categorical: Sequence[str], drift_share: float,
                  per_column_method: Mapping[str, str] | None = None,
                  per_column_threshold: Mapping[str, float] | None = None,
                  reference_scores: np.ndarray | None = None,
                  current_scores: np.ndarray | None = None,
                  max_rows: int = 5_000, seed: int = 0) -> int | None:
    """Write Evidently's HTML report; returns the capped row count when it sampled, else None."""
    inputs = _sample_inputs(reference, current, numerical=numerical, categorical=categorical,
                            reference_scores=reference_scores, current_scores=current_scores,
                            max_rows=max_rows, seed=seed)
    _render(path, numerical=numerical, categorical=categorical, drift_share=drift_share,
            per_column_method=per_column_method, per_column_threshold=per_column_threshold,
            **inputs)
    return inputs["sampled"]


class ReportRenderer:
    """``render_report`` in a child process started early: the child imports evidently
    (seconds) on the other core while this process reads the window and checks it, then
    renders the capped sample it is sent. ``submit`` samples here and returns at once;
    ``wait`` returns when the HTML is written. If the child fails, the report is rendered
    in this process instead, so the outcome is the same either way."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._job: dict[str, Any] | None = None
        self._inputs: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._started = time.time()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from monitoring.drift import _render_child; "
                 "_render_child()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            log.warning("cannot start the report process (%s); rendering in process", exc)

    def submit(self, reference: pd.DataFrame, current: pd.DataFrame, path: Path, *,
               numerical: Sequence[str], categorical: Sequence[str], drift_share: float,
               per_column_method: Mapping[str, str] | None = None,
               per_column_threshold: Mapping[str, float] | None = None,
               reference_scores: np.ndarray | None = None,
               current_scores: np.ndarray | None = None,
               max_rows: int = 5_000, seed: int = 0) -> int | None:
        """Same arguments and return value as ``render_report``; does not wait."""
        inputs = _sample_inputs(reference, current, numerical=numerical,
                                categorical=categorical, reference_scores=reference_scores,
                                current_scores=current_scores, max_rows=max_rows, seed=seed)
        self._job = {"path": Path(path), "numerical": list(numerical),
                     "categorical": list(categorical), "drift_share": drift_share,
                     "per_column_method": dict(per_column_method or {}),
                     "per_column_threshold": dict(per_column_threshold or {}), **inputs}
        if self._process is not None:
            try:
                # The inputs go through a file next to the report: a pipe would block this
                # process until the child, still importing evidently, reads it.
                self._inputs = Path(path).with_name(f".{Path(path).name}.inputs.pickle")
                self._inputs.parent.mkdir(parents=True, exist_ok=True)
                with open(self._inputs, "wb") as sink:
                    pickle.dump(self._job, sink, protocol=pickle.HIGHEST_PROTOCOL)
                assert self._process.stdin is not None
                self._process.stdin.write(str(self._inputs).encode() + b"\n")
                self._process.stdin.close()
                self._process.stdin = None  # sent; communicate() then only reads
            except OSError as exc:
                log.warning("the report process is gone (%s); rendering in process", exc)
                self.close()
        return inputs["sampled"]

    def wait(self, timeout: float = 600) -> None:
        """Block until the submitted report is written (raises what rendering raises)."""
        job, self._job = self._job, None
        if job is None:
            raise RuntimeError("nothing submitted")
        if self._process is not None:
            try:
                out, err = self._process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                out, err = b"", b"timed out"
            finally:
                self.close()
            reply = out.decode(errors="replace").split()
            if reply[:1] == ["ok"] and job["path"].exists():
                self._log_timing(reply[1:])
                return
            log.warning("the report process failed; rendering in process: %s",
                        err.decode(errors="replace")[-2000:])
        path = job.pop("path")
        _render(path, **job)

    def _log_timing(self, reply: list[str]) -> None:
        """The child's progress (wall-clock stamps and its peak memory), at INFO."""
        try:
            imported, received, rendered = (float(x) - self._started for x in reply[:3])
            peak_mib = int(reply[3]) / 1024
        except (ValueError, IndexError):
            return
        log.info("report process: evidently imported in %.1f s, waited %.1f s for the sample, "
                 "rendered in %.1f s, peak memory %.0f MiB", imported,
                 max(received - imported, 0.0), rendered - received, peak_mib)

    def close(self) -> None:
        """Stop the child at once (idempotent); a submitted but unawaited report is
        abandoned."""
        if self._inputs is not None:
            self._inputs.unlink(missing_ok=True)
            self._inputs = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:  # nothing to wait for: no report is coming from it
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _render_child() -> None:
    """The child side of ``ReportRenderer``: import evidently now, then render the job
    whose pickle path comes on stdin (nothing on EOF: the parent needed no report)."""
    _load(pause_gc=True)
    imported = time.time()
    inputs = sys.stdin.readline().strip()
    if not inputs:
        return
    received = time.time()
    with open(inputs, "rb") as source:
        job = pickle.load(source)
    path = job.pop("path")
    _render(path, **job)
    import resource

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(f"ok {imported:.3f} {received:.3f} {time.time():.3f} {peak_kib}")
    sys.stdout.flush()
    # The report is written and closed: skip tearing down evidently's modules (a second
    # or so the parent would wait for, as it reads until this process exits).
    os._exit(0)


def _pad_score(frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    import numpy as np

    n = max(len(frame), len(scores))
    out = frame.reindex(range(n))
    column = np.full(n, np.nan)
    column[: len(scores)] = scores
    out["score"] = column
    return out


def _note_sample(path: Path, rows: int) -> None:
    """Say on the page itself that the report shows a sample (the verdict used every row)."""
    note = (f'<div style="padding:8px;background:#fff3cd;font-family:sans-serif">driftloop: this '
            f"report was rendered on a random sample of at most {rows} rows per side; the verdict "
            "(methods, scores, drifted columns) was computed on every row of the window.</div>")
    text = path.read_text()
    at = text.find("<body>")
    text = text[: at + 6] + note + text[at + 6:] if at >= 0 else note + text
    path.write_text(text)
