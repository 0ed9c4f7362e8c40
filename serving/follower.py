"""Follows ``models:/NAME@champion`` (and ``@challenger`` for shadow scoring).

``refresh`` reads the aliases once and, when the champion moved, loads and checks the new
version and swaps it in with one attribute assignment: a request reads ``champion`` once
and keeps that object to the end, so a swap never fails a request. A version failing its
check is remembered as rejected (counted and logged once) and the old one keeps serving.
Registry errors are counted and retried on the next poll; once a model is loaded they
never stop serving. With no model and no registry, the last champion in the local cache
is served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kernel.spec import DatasetSpec
from registry.bundle import Bundle
from registry.port import ALIAS_CHALLENGER, ALIAS_CHAMPION, ModelRegistry
from serving.metrics import ServingMetrics
from serving.model import BundleCache, LoadedModel, VersionRejected, build
from serving.schema import MAX_TEXT_CHARS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    outcome: str            # loaded | unchanged | rejected | error
    version: int | None     # the champion version served after the refresh
    detail: str


class ModelFollower:
    def __init__(self, name: str, registry: ModelRegistry, cache: BundleCache, *,
                 metrics: ServingMetrics | None = None, shadow: bool = True,
                 check_rows: int = 2000, fast_path: bool = True,
                 max_text_chars: int = MAX_TEXT_CHARS,
                 poll_interval: float = 5.0, retry_interval: float = 2.0,
                 on_load: Callable[[DatasetSpec], None] | None = None) -> None:
        self.name = name
        self.on_load = on_load  # told each loaded version's spec (the log types its rows)
        self.registry = registry
        self.cache = cache
        self.metrics = metrics
        self.shadow = shadow
        self.check_rows = check_rows
        self.fast_path = fast_path
        self.max_text_chars = max_text_chars
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.champion: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        self.rejected: dict[int, str] = {}
        self.last_error: str | None = None
        self.last_check: datetime | None = None
        self.registry_reachable: bool | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading -----------------------------------------------------------------

    def _load(self, version: int, alias: str) -> LoadedModel:
        bundle = self.cache.fetch(self.registry, self.name, version)
        estimator = self.registry.load_model(bundle.root)
        return build(self.name, version, alias, estimator, bundle, source="registry",
                     check_rows=self.check_rows, fast_path=self.fast_path,
                     max_text_chars=self.max_text_chars)

    def _load_cached(self) -> LoadedModel | None:
        bundle: Bundle | None = self.cache.last()
        if bundle is None:
            return None
        version = BundleCache.version_of(bundle)
        try:
            estimator = self.registry.load_model(bundle.root)
            return build(self.name, version, ALIAS_CHAMPION, estimator, bundle, source="cache",
                         check_rows=self.check_rows, fast_path=self.fast_path,
                         max_text_chars=self.max_text_chars)
        except Exception:
            log.exception("cannot serve the cached %s v%s", self.name, version)
            return None

    def _set_champion(self, model: LoadedModel) -> None:
        if self.on_load is not None:
            self.on_load(model.spec)
        self.champion = model  # the atomic swap
        if self.metrics:
            self.metrics.set_live(ALIAS_CHAMPION, model.version)

    def _set_challenger(self, model: LoadedModel | None) -> None:
        if self.on_load is not None and model is not None:
            self.on_load(model.spec)
        self.challenger = model
        if self.metrics:
            self.metrics.set_live(ALIAS_CHALLENGER, None if model is None else model.version)

    def _count(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.reloads.labels(self.name, outcome).inc()

    # -- one refresh ---------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        with self._lock:
            result = self._refresh()
        self._count(result.outcome)
        return result

    def _refresh(self) -> RefreshResult:
        self.last_check = datetime.now(UTC)
        current = self.champion.version if self.champion else None
        try:
            aliases = self.registry.aliases(self.name)
            self.registry_reachable = True
        except Exception as exc:
            self.registry_reachable = False
            self.last_error = f"registry unavailable: {exc}"
            log.warning("%s: %s", self.name, self.last_error)
            if self.champion is None:
                cached = self._load_cached()
                if cached is not None:
                    self._set_champion(cached)
                    log.warning("serving the cached %s v%s until the registry answers",
                                self.name, cached.version)
                    return RefreshResult("loaded", cached.version,
                                         f"registry unavailable; serving cached v{cached.version}")
            return RefreshResult("error", current, self.last_error)
        self._refresh_challenger(aliases.get(ALIAS_CHALLENGER))
        wanted = aliases.get(ALIAS_CHAMPION)
        if wanted is None:
            if self.champion is None:
                self.last_error = f"no @{ALIAS_CHAMPION} alias on registered model {self.name!r}"
                return RefreshResult("error", None, self.last_error)
            return RefreshResult("unchanged", current,
                                 f"@{ALIAS_CHAMPION} is unset; keeping v{current}")
        if wanted == current and (self.champion is None or self.champion.source == "registry"):
            self.last_error = None
            return RefreshResult("unchanged", current, f"v{current} is @{ALIAS_CHAMPION}")
        if wanted in self.rejected:
            return RefreshResult("unchanged", current,
                                 f"v{wanted} was rejected: {self.rejected[wanted]}")
        try:
            model = self._load(wanted, ALIAS_CHAMPION)
        except VersionRejected as exc:
            self.rejected[wanted] = str(exc)
            log.error("%s v%s refused, keeping v%s: %s", self.name, wanted, current, exc)
            return RefreshResult("rejected", current, f"v{wanted} refused: {exc}")
        except Exception as exc:
            self.last_error = f"loading v{wanted} failed: {exc}"
            log.exception("%s: %s", self.name, self.last_error)
            return RefreshResult("error", current, self.last_error)
        self._set_champion(model)
        self.last_error = None
        try:
            self.cache.remember(model.version)
        except OSError:
            log.exception("could not record v%s in the local cache", model.version)
        log.info("%s now serving v%s (was v%s)", self.name, model.version, current)
        return RefreshResult("loaded", model.version, f"serving v{model.version}")

    def _refresh_challenger(self, version: int | None) -> None:
        if not self.shadow or version is None:
            if self.challenger is not None:
                self._set_challenger(None)
            return
        if self.challenger is not None and self.challenger.version == version:
            return
        if version in self.rejected:
            self._set_challenger(None)
            return
        try:
            self._set_challenger(self._load(version, ALIAS_CHALLENGER))
        except VersionRejected as exc:
            self.rejected[version] = str(exc)
            self._set_challenger(None)
            log.error("%s challenger v%s refused for shadow scoring: %s", self.name, version, exc)
        except Exception:
            log.exception("%s: loading challenger v%s failed; retrying next poll",
                          self.name, version)

    # -- background polling --------------------------------------------------------

    def start(self) -> ModelFollower:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alias-poll", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.retry_interval if self.champion is None
                                  else self.poll_interval):
            try:
                self.refresh()
            except Exception:  # never let the poller die
                log.exception("alias poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        champion, challenger = self.champion, self.challenger
        return {
            "model": self.name,
            "ready": champion is not None,
            "champion": champion.describe() if champion else None,
            "challenger": challenger.describe() if challenger else None,
            "rejected": {str(v): reason for v, reason in sorted(self.rejected.items())},
            "registry_reachable": self.registry_reachable,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
        }
