"""The spool: log rows the store could not take at shutdown, kept on local disk until it can.

A spool file is one Arrow IPC file holding one partition's rows, at the same relative path
the store would have used (``predictions/model=<m>/date=<d>/`` or ``labels/model=<m>/
date=<d>/``), named ``spool-<ms>-<pid>-<hex>-n<rows>.arrow`` so pending rows are counted
from a listing. A file is written under a hidden name, fsynced and renamed, so it is whole
or absent. Replay claims a file by renaming it (``….<pid>.replaying``; one process wins when
several workers share the directory), writes it to the store and deletes it. A crash between
the store's write and the delete replays that file once more: replay is at least once.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from monitoring.predlog.store import LogStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^spool-\d+-(?P<pid>\d+)-[0-9a-f]+-n(?P<rows>\d+)\.arrow$")
_CLAIMED = re.compile(r"^(?P<name>spool-.+\.arrow)\.(?P<pid>\d+)\.replaying$")
_TMP = re.compile(r"^\.spool-\d+-(?P<pid>\d+)-.+\.tmp$")


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    relative: str  # the partition directory under the store's root
    rows: int

    @property
    def kind(self) -> str:
        return self.relative.split("/", 1)[0]  # "predictions" or "labels"


@dataclass
class ReplayResult:
    rows: dict[str, int] = field(default_factory=dict)  # kind -> rows now in the store
    corrupt: dict[str, int] = field(default_factory=dict)  # kind -> rows of unreadable files
    error: BaseException | None = None  # the store's failure that stopped the replay


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a claim of this pid before this process began replaying: stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """A local directory of Arrow IPC files waiting to be written to the log store."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def put(self, relative: str, table: pa.Table) -> Path:
        """Write ``table`` (one partition's rows) durably; returns the file's path."""
        folder = self.directory / relative
        folder.mkdir(parents=True, exist_ok=True)
        name = (f"spool-{int(time.time() * 1000)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                f"-n{table.num_rows}.arrow")
        tmp, final = folder / f".{name}.tmp", folder / name
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return final

    def recover(self) -> None:
        """Release claims and remove temporary files left by processes that died."""
        if not self.directory.is_dir():
            return
        for path in self.directory.rglob("*"):
            claimed, tmp = _CLAIMED.match(path.name), _TMP.match(path.name)
            if claimed and not _alive(int(claimed["pid"])):
                os.replace(path, path.with_name(claimed["name"]))
            elif tmp and not _alive(int(tmp["pid"])):
                path.unlink(missing_ok=True)

    def pending(self) -> list[SpoolFile]:
        """Spool files waiting for the store, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.rglob("spool-*.arrow"):
            match = _NAME.match(path.name)
            if match:
                relative = path.parent.relative_to(self.directory).as_posix()
                found.append(SpoolFile(path, relative, int(match["rows"])))
        return sorted(found, key=lambda f: f.path.name)

    def pending_rows(self) -> int:
        return sum(f.rows for f in self.pending())

    def replay(self, store: LogStore, *, max_files: int | None = None) -> ReplayResult:
        """Write pending files to ``store`` (at most ``max_files``), deleting each once it is
        written. Stops at the first failure of the store, leaving that file pending."""
        result = ReplayResult()
        for item in self.pending()[:max_files]:
            claim = item.path.with_name(f"{item.path.name}.{os.getpid()}.replaying")
            try:
                os.replace(item.path, claim)
            except FileNotFoundError:
                continue  # another worker claimed it
            try:
                with pa.memory_map(str(claim)) as source:
                    table = pa.ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                log.error("spool file %s is unreadable (%s); moved aside, %d rows lost",
                          item.path, exc, item.rows)
                os.replace(claim, item.path.with_name(f"{item.path.name}.corrupt"))
                result.corrupt[item.kind] = result.corrupt.get(item.kind, 0) + item.rows
                continue
            try:
                store.write(table, store.path(*item.relative.split("/")))
            except Exception as exc:
                os.replace(claim, item.path)
                result.error = exc
                break
            claim.unlink(missing_ok=True)
            result.rows[item.kind] = result.rows.get(item.kind, 0) + table.num_rows
        return result


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
