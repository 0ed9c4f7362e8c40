"""The registry port on MLflow 3 (aliases and tags, no stages).

Works on the embedded sqlite store and on a tracking server alike. Only the
client API is used (no fluent global state), so several threads and tests with
their own stores can share a process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from registry.bundle import write_reference_files
from registry.port import (
    ANY,
    BUNDLE_DIR,
    DECISIONS_EXPERIMENT,
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND_TRAINING,
    MODEL_DIR,
    TAG_PREFIX,
    TRAINING_EXPERIMENT,
    UI_TRAINING_VIEW,
    AliasConflict,
    DecisionRecord,
    NewVersion,
    RegistryError,
    RegistryUnavailable,
    VersionInfo,
    VersionNotFound,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class _QuietPickleWarning(logging.Filter):
    """cloudpickle is chosen on purpose (skops loads 2-3x slower and needs trusted types for
    HistGradientBoosting); the store is ours, so MLflow's warning on every save is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format" not in record.getMessage()


logging.getLogger("mlflow.sklearn").addFilter(_QuietPickleWarning())

_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
_UNAVAILABLE_CODES = {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED",
                      "ENDPOINT_NOT_FOUND", "SERVICE_UNDER_MAINTENANCE"}
_RECORD_TAG = TAG_PREFIX + "record"


def _mlflow_unavailable(exc: BaseException) -> bool:
    import requests
    import sqlalchemy.exc

    return isinstance(exc, requests.exceptions.RequestException | sqlalchemy.exc.OperationalError
                      | ConnectionError | TimeoutError)


class MlflowRegistry:
    """``ModelRegistry`` on MLflow. ``lock_dir`` serialises alias moves across processes
    on one machine; across machines the controller's state database guarantees that a
    single replica moves aliases (see controller/store.py)."""

    def __init__(self, tracking_uri: str, *, registry_uri: str | None = None,
                 artifact_root: str | None = None, lock_dir: Path | None = None) -> None:
        # Fail fast instead of MLflow's default minutes of HTTP retries: callers own retrying.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)
        self._artifact_root = artifact_root
        self._lock_dir = lock_dir
        self._thread_lock = threading.Lock()
        self._experiments: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> MlflowRegistry:
        """Build from ``kernel.settings.CommonSettings`` (or a subclass)."""
        return cls(settings.resolved_tracking_uri, registry_uri=settings.registry_uri,
                   artifact_root=settings.resolved_artifact_root,
                   lock_dir=settings.home_dir / "locks")

    # -- plumbing -----------------------------------------------------------------

    def _call(self, fn: Callable[[], T], *, what: str) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return fn()
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if code in _NOT_FOUND_CODES:
                raise VersionNotFound(f"{what}: {exc.message}") from exc
            if code in _UNAVAILABLE_CODES or _mlflow_unavailable(exc.__cause__ or exc):
                raise RegistryUnavailable(f"{what}: registry unavailable: {exc.message}") from exc
            raise RegistryError(f"{what}: {exc.message}") from exc
        except Exception as exc:
            if _mlflow_unavailable(exc):
                raise RegistryUnavailable(f"{what}: registry unavailable: {exc}") from exc
            raise

    def _experiment_id(self, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]

        def get_or_create() -> str:
            from mlflow.exceptions import MlflowException

            found = self._client.get_experiment_by_name(name)
            if found is not None:
                if EXPERIMENT_KIND_TAG not in (found.tags or {}):  # made by an older driftloop
                    self._client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                                    EXPERIMENT_KIND_TRAINING)
                return found.experiment_id
            location = f"{self._artifact_root.rstrip('/')}/{name}" if self._artifact_root else None
            try:
                return self._client.create_experiment(
                    name, artifact_location=location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING})
            except MlflowException:  # created concurrently
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

        self._experiments[name] = self._call(get_or_create, what=f"experiment {name}")
        return self._experiments[name]

    @contextlib.contextmanager
    def _alias_lock(self, name: str) -> Iterator[None]:
        with self._thread_lock:
            if self._lock_dir is None:
                yield
                return
            self._lock_dir.mkdir(parents=True, exist_ok=True)
            # exclusive and blocking; a new FileLock per use, so other threads and
            # processes wait on the same file as with a plain flock
            with FileLock(self._lock_dir / f"alias-{name}.lock"):
                yield

    @staticmethod
    def _info(mv: Any) -> VersionInfo:
        created = (datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
                   if mv.creation_timestamp else None)
        return VersionInfo(name=mv.name, version=int(mv.version), run_id=mv.run_id,
                           source=mv.source, tags=dict(mv.tags or {}),
                           aliases=tuple(getattr(mv, "aliases", []) or ()), created_at=created,
                           description=mv.description or None)

    # -- versions -----------------------------------------------------------------

    def register(self, new: NewVersion) -> VersionInfo:
        import mlflow.sklearn
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.models import infer_signature

        exp = self._experiment_id(TRAINING_EXPERIMENT)
        run = self._call(lambda: self._client.create_run(
            exp, run_name=new.run_name,
            tags={TAG_PREFIX + "model": new.name, **dict(new.tags)}), what="create run")
        run_id = run.info.run_id
        try:
            now = int(datetime.now(UTC).timestamp() * 1000)
            self._client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in new.metrics.items()],
                params=[Param(k, str(v)[:6000]) for k, v in new.params.items()],
                tags=[RunTag("mlflow.note.content", _train_note(new))],
            )
            with tempfile.TemporaryDirectory(prefix="driftloop-model-") as tmp:
                model_path = Path(tmp) / MODEL_DIR
                proba = new.model.predict_proba(new.input_example)
                mlflow.sklearn.save_model(
                    new.model, str(model_path),
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                    signature=infer_signature(new.input_example, proba),
                    input_example=new.input_example,
                    pip_requirements=list(new.pip_requirements) or None,
                    pyfunc_predict_fn="predict_proba",
                )
                self._client.log_artifacts(run_id, str(model_path), MODEL_DIR)
                ref_dir = write_reference_files(new, Path(tmp) / BUNDLE_DIR)
                self._client.log_artifacts(run_id, str(ref_dir), BUNDLE_DIR)
            with contextlib.suppress(MlflowException):
                self._client.create_registered_model(
                    new.name, description="Managed by driftloop: the serving app follows "
                    "@champion; the controller moves it only through the promotion gate.")
            mv = self._client.create_model_version(
                new.name, source=f"{run.info.artifact_uri}/{MODEL_DIR}", run_id=run_id,
                tags=dict(new.tags), description=_train_note(new))
            self._client.set_terminated(run_id, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id, "FAILED")
            raise
        return self._info(mv)

    def get_version(self, name: str, version: int) -> VersionInfo:
        return self._info(self._call(lambda: self._client.get_model_version(name, str(version)),
                                     what=f"{name} v{version}"))

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        def get() -> Any:
            try:
                return self._client.get_model_version_by_alias(name, alias)
            except MlflowException as exc:
                if exc.error_code in _NOT_FOUND_CODES | {"INVALID_PARAMETER_VALUE"}:
                    return None
                raise

        mv = self._call(get, what=f"{name}@{alias}")
        return None if mv is None else self._info(mv)

    def aliases(self, name: str) -> dict[str, int]:
        try:
            model = self._call(lambda: self._client.get_registered_model(name), what=name)
        except VersionNotFound:
            return {}
        return {alias: int(v) for alias, v in (model.aliases or {}).items()}

    def set_alias(self, name: str, alias: str, version: int, *, expected: Any = ANY) -> None:
        with self._alias_lock(name):
            if expected is not ANY:
                actual = self.aliases(name).get(alias)
                if actual != expected:
                    raise AliasConflict(name, alias, expected, actual)
            self._call(lambda: self._client.set_registered_model_alias(name, alias, str(version)),
                       what=f"set {name}@{alias}")
        log.info("alias %s@%s -> %s", name, alias, version)

    def delete_alias(self, name: str, alias: str, *, expected: Any = ANY) -> None:
        with self._alias_lock(name):
            actual = self.aliases(name).get(alias)
            if expected is not ANY and actual != expected:
                raise AliasConflict(name, alias, expected, actual)
            if actual is not None:
                self._call(lambda: self._client.delete_registered_model_alias(name, alias),
                           what=f"delete {name}@{alias}")

    def set_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call(partial(self._client.set_model_version_tag, name, str(version), key,
                               str(value)), what=f"tag {name} v{version}")

    def set_description(self, name: str, version: int, text: str) -> None:
        self._call(partial(self._client.update_model_version, name, str(version),
                           description=text), what=f"describe {name} v{version}")

    def find_versions(self, name: str, tags: Mapping[str, str]) -> list[VersionInfo]:
        found = self._call(lambda: self._client.search_model_versions(
            f"name = '{_quote(name)}'", max_results=10_000), what=f"search {name}")
        infos = [self._info(mv) for mv in found]
        matching = [i for i in infos if all(i.tags.get(k) == str(v) for k, v in tags.items())]
        return sorted(matching, key=lambda i: i.version, reverse=True)

    def download(self, name: str, version: int, dest: Path) -> Path:
        import mlflow.artifacts

        info = self.get_version(name, version)
        if not info.run_id:
            raise RegistryError(f"{name} v{version} has no run: not a driftloop version")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
        try:
            for sub in (MODEL_DIR, BUNDLE_DIR):
                self._call(partial(mlflow.artifacts.download_artifacts, run_id=info.run_id,
                                   artifact_path=sub, dst_path=str(staging),
                                   tracking_uri=self.tracking_uri), what=f"download {name} v{version}")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)  # atomic on one filesystem: a bundle is whole or absent
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return dest

    def load_model(self, bundle: Path) -> Any:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(Path(bundle) / MODEL_DIR))

    # -- runs ---------------------------------------------------------------------

    def record_decision(self, record: DecisionRecord) -> DecisionRecord:
        """Record a decision once per (cycle, kind): safe to repeat and to interrupt anywhere.

        The run is created with its identifying tags, then filled (metrics, params, the record
        tag, ``decision.json``) and terminated last. A run found without its record tag or not
        terminated was interrupted (the registry failed between steps): it is completed here,
        never a reason to fail forever. Duplicates from a race are deleted, oldest kept."""
        exp = self._experiment_id(DECISIONS_EXPERIMENT)
        found = self._call(lambda: self._client.search_runs(
            [exp], filter_string=(f"tags.`{TAG_PREFIX}cycle_id` = '{_quote(record.cycle_id)}' "
                                  f"and tags.`{TAG_PREFIX}kind` = '{_quote(record.kind)}'"),
            order_by=["attributes.start_time ASC"], max_results=10), what="search decisions")
        for extra in found[1:]:
            self._call(partial(self._client.delete_run, extra.info.run_id), what="decision run")
        if found and _RECORD_TAG in found[0].data.tags and found[0].info.status == "FINISHED":
            return DecisionRecord.from_json(found[0].data.tags[_RECORD_TAG])
        if found:
            run_id = found[0].info.run_id
            log.warning("completing the decision run %s of cycle %s (interrupted earlier)",
                        run_id, record.cycle_id)
        else:
            tags = {**_decision_tags(record), **self._decision_links(record)}
            tags["mlflow.note.content"] = _decision_note(record, tags)
            run = self._call(lambda: self._client.create_run(
                exp, run_name=record.title, tags=tags), what="decision run")
            run_id = run.info.run_id
        return self._complete_decision(run_id, record)

    def _complete_decision(self, run_id: str, record: DecisionRecord) -> DecisionRecord:
        from dataclasses import replace

        from mlflow.entities import Metric, Param, RunTag

        saved = replace(record, run_id=run_id)
        now = int(record.decided_at.timestamp() * 1000)
        # Repeating these is harmless: the same params, the same metric points, the same tag.
        self._call(lambda: self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in _decision_numbers(record).items()],
            params=[Param(k, v) for k, v in _decision_params(record).items()],
            tags=[RunTag(_RECORD_TAG, saved.to_json()[:7900])]), what="decision run")
        self._call(lambda: self._client.log_text(run_id, saved.to_json(), "decision.json"),
                   what="decision run")
        self._call(partial(self._client.set_terminated, run_id, "FINISHED"), what="decision run")
        return saved

    def _decision_links(self, record: DecisionRecord) -> dict[str, str]:
        """Tags that tie a decision run to the model versions it judged (their training runs)
        and to the run of the verdict that triggered it. Best effort: a missing one is left out."""
        links: dict[str, str] = {}
        for role, version in (("champion", record.champion_version),
                              ("challenger", record.challenger_version),
                              ("new_champion", record.new_champion_version)):
            if version is None:
                continue
            with contextlib.suppress(RegistryError):
                info = self.get_version(record.model, version)
                if info.run_id:
                    links[f"{TAG_PREFIX}{role}_run_id"] = info.run_id
        if record.trigger_run_id:
            with contextlib.suppress(Exception):
                run = self._client.get_run(record.trigger_run_id)
                links[f"{TAG_PREFIX}trigger_experiment_id"] = run.info.experiment_id
        return links

    def list_decisions(self, name: str, limit: int = 50) -> list[DecisionRecord]:
        exp = self._experiment_id(DECISIONS_EXPERIMENT)
        runs = self._call(lambda: self._client.search_runs(
            [exp], filter_string=f"tags.`{TAG_PREFIX}model` = '{_quote(name)}'",
            order_by=["attributes.start_time DESC"], max_results=limit), what="list decisions")
        return [DecisionRecord.from_json(r.data.tags[_RECORD_TAG]) for r in runs
                if _RECORD_TAG in r.data.tags]

    def log_run(self, experiment: str, run_name: str, *, params: Mapping[str, Any] = {},
                metrics: Mapping[str, float] = {}, tags: Mapping[str, str] = {},
                files: Sequence[Path] = ()) -> str:
        from mlflow.entities import Metric, Param

        exp = self._experiment_id(experiment)
        run = self._call(lambda: self._client.create_run(
            exp, run_name=run_name, tags={k: str(v) for k, v in tags.items()}), what="log run")
        now = int(datetime.now(UTC).timestamp() * 1000)
        self._call(lambda: self._client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()]), what="log run")
        for path in files:
            self._call(partial(self._client.log_artifact, run.info.run_id, str(path)),
                       what="log artifact")
        self._client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _train_note(new: NewVersion) -> str:
    lines = [f"**driftloop training run** for `{new.name}`", ""]
    lines += [f"- {k}: `{v}`" for k, v in sorted(new.tags.items())]
    lines += [f"- validation {k}: {v:.4f}" for k, v in sorted(new.metrics.items())]
    return "\n".join(lines)


def _decision_numbers(r: DecisionRecord) -> dict[str, float]:
    """The metrics of a decision run: the same names for gate decisions, rollbacks and
    overrides, unknown ones left out (never logged as a placeholder)."""
    numbers = {"n": r.n, "champion_metric": r.champion_metric,
               "challenger_metric": r.challenger_metric, "difference": r.difference,
               "ci_low": r.ci_low, "ci_high": r.ci_high, "margin": r.margin, **r.extra}
    return {k: float(v) for k, v in numbers.items() if v is not None}


def _decision_params(r: DecisionRecord) -> dict[str, str]:
    """The params of a decision run, the same keys for every kind; unknown ones omitted."""
    params = {"model": r.model, "kind": r.kind, "outcome": r.outcome, "metric": r.metric,
              "evidence": r.evidence, "margin": r.margin, "actor": r.actor, "alias": r.alias,
              "champion_version": r.champion_version,
              "challenger_version": r.challenger_version,
              "new_champion_version": r.new_champion_version}
    return {k: str(v)[:6000] for k, v in params.items() if v is not None}


def _decision_tags(record: DecisionRecord) -> dict[str, str]:
    """The tags a decision run is created with: enough to find it again by cycle and kind,
    and to read it in the UI (its name, who made it, the versions it judged)."""
    tags = {
        "mlflow.runName": record.title,
        "mlflow.user": record.actor,
        TAG_PREFIX + "model": record.model,
        TAG_PREFIX + "kind": record.kind,
        TAG_PREFIX + "outcome": record.outcome,
        TAG_PREFIX + "cycle_id": record.cycle_id,
        TAG_PREFIX + "actor": record.actor,
        TAG_PREFIX + "evidence": str(record.evidence),
        TAG_PREFIX + "triggers": ", ".join(record.triggers)[:4000],
        TAG_PREFIX + "reasons": "; ".join(record.reasons)[:4000],
    }
    for role, version in (("champion_version", record.champion_version),
                          ("challenger_version", record.challenger_version),
                          ("new_champion_version", record.new_champion_version)):
        if version is not None:
            tags[TAG_PREFIX + role] = str(version)
    if record.trigger_run_id:
        tags[TAG_PREFIX + "trigger_run_id"] = record.trigger_run_id
    return tags


def _decision_note(r: DecisionRecord, tags: Mapping[str, str]) -> str:
    """The run's description: what was decided, on which versions (linked), with what numbers."""
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    def link(version: int | None) -> str:
        if version is None:
            return "none"
        return f"[{r.model} v{version}](#/models/{r.model}/versions/{version})"

    rollback = r.kind in ("rollback", "manual_rollback")
    lines = [f"**{r.title}**", "",
             f"- {r.kind}: **{r.outcome}**, cycle `{r.cycle_id}`, by **{r.actor}**, "
             f"at {r.decided_at.isoformat()}",
             f"- @{r.alias} before: {link(r.champion_version)}; after: "
             f"{link(r.new_champion_version)}" if r.kind == "foreign" else
             f"- champion before: {link(r.champion_version)}; "
             f"{'restored' if rollback else 'challenger'}: {link(r.challenger_version)}; "
             f"champion after: {link(r.new_champion_version)}"]
    if r.metric is not None or r.n is not None or r.difference is not None:
        lines.append(f"- evidence: {r.evidence}, metric: {r.metric}"
                     + (f", n = {r.n}" if r.n is not None else ""))
    if r.champion_metric is not None or r.challenger_metric is not None:
        lines.append(f"- champion {fmt(r.champion_metric)}, "
                     f"{'restored' if rollback else 'challenger'} {fmt(r.challenger_metric)}, "
                     f"difference {fmt(r.difference)}, 95% CI [{fmt(r.ci_low)}, {fmt(r.ci_high)}]"
                     f", margin {fmt(r.margin)}")
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(r.extra.items())]
    trigger = ", ".join(r.triggers) or "none"
    if r.trigger_run_id and tags.get(TAG_PREFIX + "trigger_experiment_id"):
        exp = tags[TAG_PREFIX + "trigger_experiment_id"]
        trigger += (f" ([verdict run](#/experiments/{exp}/runs/{r.trigger_run_id}"
                    f"{UI_TRAINING_VIEW}))")
    lines.append(f"- triggered by: {trigger}")
    lines += [f"- reason: {reason}" for reason in r.reasons]
    return "\n".join(lines) + "\n"
