"""Summaries stored beside the prediction log: JSON documents written whole (a local store
writes a temporary file and renames it; an object store's put is atomic already).

The reference's summary of a version is computed once and stored with the version's day
summaries::

    summaries/model=<m>/version=<v>/reference.json

holding the summary format, a digest of the reference's rows (features and validation
scores, so a registry rebuilt with another version under the same number is noticed) and
the ``ReferenceSummary``. A check loads it when format and digest match and it parses; a
missing, stale or corrupt file is never trusted: the summary is recomputed and the file
overwritten.

Why beside the log and not as an artifact of the MLflow version: the day summaries made
against it live there already (their fingerprint is the reference summary's), the Spark
driver reads the same store, and a drift check needs no write access to the registry's
artifact store (a version's run stays what training logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from monitoring.check import Reference
from monitoring.predlog.store import LogStore
from monitoring.summary.window import SUMMARY_FORMAT, ReferenceSummary

log = logging.getLogger(__name__)


def read_json(store: LogStore, path: str) -> Any:
    """The document at ``path``, or None when it is missing or does not parse."""
    try:
        with store.fs.open_input_stream(path) as source:
            return json.loads(source.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


def write_json(store: LogStore, path: str, doc: Any) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    directory, name = path.rsplit("/", 1)
    store.fs.create_dir(directory, recursive=True)
    target = f"{directory}/.{name}.tmp" if store.local else path
    with store.fs.open_output_stream(target) as sink:
        sink.write(data)
    if store.local:
        store.fs.move(target, path)


def reference_path(store: LogStore, model: str, version: int) -> str:
    return store.path("summaries", f"model={model}", f"version={version}", "reference.json")


def reference_digest(reference: Reference) -> str:
    """A digest of the rows the reference summary is made of (about a tenth of its cost)."""
    columns = list(reference.spec.features.all)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr([(c, reference.kind(c)) for c in columns]).encode())
    digest.update(pd.util.hash_pandas_object(reference.features[columns],
                                             index=False).to_numpy().tobytes())
    if reference.validation_scores is not None:
        digest.update(np.ascontiguousarray(reference.validation_scores, np.float64).tobytes())
    return digest.hexdigest()


def stored_reference(store: LogStore, model: str, version: int, reference: Reference
                     ) -> tuple[ReferenceSummary, bool]:
    """(the version's reference summary, whether it was read from the store): the stored
    one when its format and digest match and it parses, else computed and stored."""
    path = reference_path(store, model, version)
    digest = reference_digest(reference)
    doc = read_json(store, path)
    if doc is not None:
        try:
            if doc["format"] == SUMMARY_FORMAT and doc["reference"] == digest:
                loaded = ReferenceSummary.from_dict(doc["summary"])
                if (set(loaded.bases) != set(reference.spec.features.all)
                        or (loaded.score_basis is None) != (reference.validation_scores is None)):
                    raise ValueError("its columns are not the reference's")
                return loaded, True
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("summary engine: %s is corrupt (%s): recomputed", path, exc)
    summary = ReferenceSummary.of(reference)
    try:
        write_json(store, path, {"format": SUMMARY_FORMAT, "reference": digest,
                                 "summary": summary.to_dict()})
    except OSError as exc:  # a read-only store still gets its verdict
        log.warning("summary engine: cannot store %s: %s", path, exc)
    return summary, False
