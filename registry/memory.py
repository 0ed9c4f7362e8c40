"""An in-memory ``ModelRegistry``: the same contract as the MLflow adapter, no I/O but
``download``.

Two users: the backtest, which replays a history through the real controller against a
registry that lives only as long as the replay, and the unit tests, which use it as their
fake (``down = True`` simulates an outage). The contract tests in
``tests/unit/test_registry_contract.py`` hold it and the MLflow adapter to the same
behaviour, so what the backtest decides is what a real registry would let it decide."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.bundle import write_reference_files
from registry.port import (
    ANY,
    BUNDLE_DIR,
    MODEL_DIR,
    AliasConflict,
    DecisionRecord,
    NewVersion,
    RegistryUnavailable,
    VersionInfo,
    VersionNotFound,
)


class InMemoryRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], VersionInfo] = {}
        self._payload: dict[tuple[str, int], NewVersion] = {}
        self._aliases: dict[str, dict[str, int]] = {}
        self.decisions: list[DecisionRecord] = []
        self.runs: list[dict[str, Any]] = []
        self.down = False  # set True to simulate an outage
        #: when versions are made (the backtest and tests may hand it their simulated clock)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _check_up(self) -> None:
        if self.down:
            raise RegistryUnavailable("in-memory registry is down (simulated outage)")

    def register(self, new: NewVersion) -> VersionInfo:
        self._check_up()
        with self._lock:
            version = 1 + max((v for (n, v) in self._versions if n == new.name), default=0)
            info = VersionInfo(new.name, version, run_id=f"run-{new.name}-{version}",
                               source=f"memory://{new.name}/{version}", tags=dict(new.tags),
                               created_at=self.clock())
            self._versions[(new.name, version)] = info
            self._payload[(new.name, version)] = new
        return self._with_aliases(info)

    def _with_aliases(self, info: VersionInfo) -> VersionInfo:
        names = tuple(a for a, v in self._aliases.get(info.name, {}).items() if v == info.version)
        return replace(info, aliases=names)

    def get_version(self, name: str, version: int) -> VersionInfo:
        self._check_up()
        try:
            return self._with_aliases(self._versions[(name, int(version))])
        except KeyError:
            raise VersionNotFound(f"{name} v{version} not found") from None

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        self._check_up()
        version = self._aliases.get(name, {}).get(alias)
        return None if version is None else self.get_version(name, version)

    def aliases(self, name: str) -> dict[str, int]:
        self._check_up()
        return dict(self._aliases.get(name, {}))

    def set_alias(self, name: str, alias: str, version: int, *, expected: Any = ANY) -> None:
        self._check_up()
        with self._lock:
            if (name, int(version)) not in self._versions:
                raise VersionNotFound(f"{name} v{version} not found")
            current = self._aliases.get(name, {}).get(alias)
            if expected is not ANY and current != expected:
                raise AliasConflict(name, alias, expected, current)
            self._aliases.setdefault(name, {})[alias] = int(version)

    def delete_alias(self, name: str, alias: str, *, expected: Any = ANY) -> None:
        self._check_up()
        with self._lock:
            current = self._aliases.get(name, {}).get(alias)
            if expected is not ANY and current != expected:
                raise AliasConflict(name, alias, expected, current)
            self._aliases.get(name, {}).pop(alias, None)

    def set_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        info = self.get_version(name, version)
        with self._lock:
            merged = {**info.tags, **{k: str(v) for k, v in tags.items()}}
            self._versions[(name, int(version))] = replace(info, tags=merged, aliases=())

    def set_description(self, name: str, version: int, text: str) -> None:
        info = self.get_version(name, version)
        with self._lock:
            self._versions[(name, int(version))] = replace(info, description=text, aliases=())

    def find_versions(self, name: str, tags: Mapping[str, str]) -> list[VersionInfo]:
        self._check_up()
        found = [self._with_aliases(i) for (n, _), i in self._versions.items() if n == name
                 and all(i.tags.get(k) == str(v) for k, v in tags.items())]
        return sorted(found, key=lambda i: i.version, reverse=True)

    def download(self, name: str, version: int, dest: Path) -> Path:
        self.get_version(name, version)
        new = self._payload[(name, int(version))]
        dest = Path(dest)
        (dest / MODEL_DIR).mkdir(parents=True, exist_ok=True)
        (dest / MODEL_DIR / "model.pkl").write_bytes(pickle.dumps(new.model))
        write_reference_files(new, dest / BUNDLE_DIR)
        return dest

    def load_model(self, bundle: Path) -> Any:
        return pickle.loads((Path(bundle) / MODEL_DIR / "model.pkl").read_bytes())

    def record_decision(self, record: DecisionRecord) -> DecisionRecord:
        self._check_up()
        with self._lock:
            for saved in self.decisions:
                if saved.cycle_id == record.cycle_id and saved.kind == record.kind:
                    return saved
            saved = replace(record, run_id=f"decision-{len(self.decisions) + 1}")
            self.decisions.append(saved)
            return saved

    def list_decisions(self, name: str, limit: int = 50) -> list[DecisionRecord]:
        self._check_up()
        mine = [d for d in self.decisions if d.model == name]
        return list(reversed(mine))[:limit]

    def log_run(self, experiment: str, run_name: str, *, params: Mapping[str, Any] = {},
                metrics: Mapping[str, float] = {}, tags: Mapping[str, str] = {},
                files: Sequence[Path] = ()) -> str:
        self._check_up()
        run_id = f"run-{len(self.runs) + 1}"
        self.runs.append({"id": run_id, "experiment": experiment, "name": run_name,
                          "params": dict(params), "metrics": dict(metrics), "tags": dict(tags),
                          "files": [str(f) for f in files]})
        return run_id
