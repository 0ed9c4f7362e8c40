"""The backtest's adapters: policy overrides, an in-process launcher, a registry on the clock.

The backtest runs the live controller shell (controller/reconcile.py) unchanged; these are
the few ports it plugs in instead of the live ones:

- :func:`load_policy` turns a YAML file of overrides into the same ``ControllerSettings``
  the live controller builds (environment first, then the file), plus two switches that
  only a backtest needs (``drift_trigger``, ``performance_trigger``).
- :class:`InProcessLauncher` runs ``training.train.train`` (what ``driftloop train`` runs)
  in this process instead of a child process; the version is tagged with the cycle id, so
  the shell learns the outcome from the registry exactly as it does live.
- :class:`ClockedRegistry` is the in-memory registry with versions stamped on the
  simulated clock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from controller.launcher import LaunchRequest, LaunchStatus
from controller.settings import ControllerPolicy, ControllerSettings
from kernel.errors import DriftloopError, UsageError
from kernel.spec import DatasetSpec
from registry import TAG_PREFIX, NewVersion, VersionInfo
from registry.memory import InMemoryRegistry

log = logging.getLogger(__name__)

#: Backtest-only switches a policy file may set (everything else is a ControllerSettings field).
SWITCHES = {"drift_trigger": True, "performance_trigger": True}
#: Friendly duration keys -> the ControllerSettings field (seconds) they set.
DURATIONS = {"cooldown": "controller_cooldown_seconds",
             "failed_backoff": "controller_failed_backoff_seconds",
             "training_timeout": "controller_training_timeout_seconds",
             "evaluation_timeout": "controller_evaluation_timeout_seconds",
             "probation": "controller_probation_seconds"}
#: The policy a file may set: ``ControllerPolicy``'s fields; the rest of ControllerSettings
#: (addresses, tokens, stores, launchers, loop periods) is wiring the backtest sets itself.
POLICY_FIELDS = frozenset(ControllerPolicy.model_fields)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | float | int, *, option: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``1d``, ``2w`` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value))
    if not match:
        raise UsageError(f"{option}: not a duration: {value!r} (e.g. 30m, 6h, 1d, 2w)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def parse_period(value: str, *, option: str = "--period") -> tuple[timedelta, int]:
    """A period: a fixed length (:func:`parse_duration`) or calendar months (``1mo``,
    ``3mo``); returns (length, months), months 0 for a fixed length."""
    match = re.fullmatch(r"\s*(\d+)\s*mo\s*", str(value))
    if match is None:
        return parse_duration(value, option=option), 0
    months = int(match.group(1))
    if months < 1:
        raise UsageError(f"{option}: months must be at least 1, got {value!r}")
    return timedelta(days=30 * months), months


@dataclass(frozen=True)
class BacktestPolicy:
    settings: ControllerSettings
    drift_trigger: bool = True
    performance_trigger: bool = True
    overrides: Mapping[str, Any] = None  # type: ignore[assignment]

    def describe(self) -> dict[str, Any]:
        """The policy as logged: every policy field (the defaults and the overrides)."""
        s = self.settings
        out = {k: v for k, v in s.model_dump().items() if k in POLICY_FIELDS}
        out.update(drift_trigger=self.drift_trigger, performance_trigger=self.performance_trigger)
        return out


def policy_overrides(data: Mapping[str, Any] | None, *, source: str = "policy") -> tuple[
        dict[str, Any], dict[str, bool]]:
    """(ControllerSettings field overrides, backtest switches) from a parsed policy mapping."""
    fields = set(ControllerSettings.model_fields)
    overrides: dict[str, Any] = {}
    switches = dict(SWITCHES)
    for key, value in (data or {}).items():
        key = str(key)
        if key in SWITCHES:
            if not isinstance(value, bool):
                raise UsageError(f"{source}: {key} must be true or false, got {value!r}")
            switches[key] = value
            continue
        if key in DURATIONS:
            overrides[DURATIONS[key]] = parse_duration(value, option=f"{source}: {key}"
                                                       ).total_seconds()
            continue
        name = key if key.startswith("controller_") else f"controller_{key}"
        if name not in POLICY_FIELDS and (name in fields or key in fields):
            raise UsageError(f"{source}: {key} is wiring, not policy; a backtest sets it itself")
        if name not in POLICY_FIELDS:
            known = sorted({*SWITCHES, *DURATIONS,
                            *(f.removeprefix("controller_") for f in POLICY_FIELDS)})
            raise UsageError(f"{source}: unknown policy key {key!r}; known: {', '.join(known)}")
        overrides[name] = value
    return overrides, switches


def load_policy(path: Path | None, *, home: Path) -> BacktestPolicy:
    """The live ``ControllerSettings`` (environment, defaults) with the file's overrides."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise UsageError(f"--policy: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"--policy: {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"--policy: {path} must be a mapping of policy keys")
    overrides, switches = policy_overrides(data, source=str(path or "policy"))
    try:
        settings = ControllerSettings(
            **overrides, home=home,
            # Wiring for a replay: evaluate on every simulated tick, check labels every tick.
            controller_evaluate_every_seconds=0, controller_labels_check_seconds=0,
            controller_specs="", controller_notify_url=None, serving_url=None)
    except Exception as exc:  # pydantic ValidationError: name the bad value
        raise UsageError(f"--policy: {exc}".splitlines()[0] + " " + str(exc).splitlines()[-1]
                         ) from None
    return BacktestPolicy(settings, overrides=overrides, **switches)


class ClockedRegistry(InMemoryRegistry):
    """The in-memory registry, with version creation times on the simulated clock."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self.clock = clock
        self._ready: dict[tuple[str, int], datetime] = {}

    def ready_at(self, name: str, version: int, when: datetime) -> None:
        """The version exists for readers from ``when`` on (a retrain that takes simulated
        time): :meth:`find_versions` hides it before then and its creation time is ``when``."""
        with self._lock:
            self._ready[(name, version)] = when
            key = (name, version)
            self._versions[key] = replace(self._versions[key], created_at=when)

    def find_versions(self, name: str, tags: Mapping[str, str]) -> list[VersionInfo]:
        now = self.clock()
        return [v for v in super().find_versions(name, tags)
                if self._ready.get((name, v.version), now) <= now]

    def register(self, new: NewVersion) -> VersionInfo:
        info = super().register(new)
        with self._lock:
            stamped = replace(self._versions[(new.name, info.version)], created_at=self.clock())
            self._versions[(new.name, info.version)] = stamped
        return replace(info, created_at=stamped.created_at)


@dataclass
class Trained:
    version: int | None
    seconds: float
    error: str | None = None
    ready_at: datetime | None = None   # when the simulated training ends


class InProcessLauncher:
    """Runs the retrain in this process: ``training.train.train`` on the request's data. The
    retrain takes simulated time, its measured wall time: the version is registered at once but
    stays hidden from the controller (and the launch ``running``) until the clock passes it."""

    def __init__(self, spec: DatasetSpec, registry: ClockedRegistry, *, seed: int = 0) -> None:
        self.spec = spec
        self.registry = registry
        self.seed = seed
        self.runs: dict[tuple[str, int], Trained] = {}

    def launch(self, request: LaunchRequest) -> str:
        from training.train import train

        key = (request.cycle_id, request.attempt)
        if key in self.runs:
            return f"already ran {request.cycle_id} attempt {request.attempt}"
        tags = {TAG_PREFIX + "cycle_id": request.cycle_id,
                TAG_PREFIX + "trigger": request.reason[:200],
                TAG_PREFIX + "attempt": str(request.attempt)}
        try:
            result = train(self.spec, list(request.data_paths), self.registry,
                           since=request.since, until=request.until, tags=tags, seed=self.seed)
        except DriftloopError as exc:  # what `driftloop train` reports with exit code 2
            self.runs[key] = Trained(None, 0.0, str(exc))
            log.info("%s attempt %d: training refused: %s", request.cycle_id, request.attempt, exc)
            return f"training refused: {exc}"
        ready = self.registry.clock() + timedelta(seconds=result.seconds)
        self.registry.ready_at(self.spec.model_name, result.version.version, ready)
        self.runs[key] = Trained(result.version.version, result.seconds, ready_at=ready)
        return (f"trained v{result.version.version} in process ({result.rows} rows, "
                f"{result.seconds:.1f}s of simulated time)")

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        run = self.runs.get((cycle_id, attempt))
        if run is None:
            return LaunchStatus("gone", None, "never launched in this replay")
        if run.error is not None:
            return LaunchStatus("exited", 2, run.error)
        if run.ready_at is not None and self.registry.clock() < run.ready_at:
            return LaunchStatus("running", None, f"training until {run.ready_at.isoformat()}")
        return LaunchStatus("exited", 0, f"v{run.version}")
