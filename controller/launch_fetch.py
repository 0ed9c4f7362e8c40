"""``python -m controller.launch_fetch SRC DEST``: copy one object (an ``s3://`` URI or a path)
to a local file. The Kubernetes Job's init container runs it to fetch the cycle's recent
labelled rows that the controller uploaded (:func:`controller.launcher.upload_recent`), so
``driftloop train --data`` reads a local file as it does under the local launcher.

Exit codes: 0 copied, 1 the copy failed (the object store, a missing object), 2 bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

from controller.launcher import object_path


def fetch(source: str, dest: Path) -> None:
    import pyarrow.fs as pafs

    fs, path = object_path(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest.resolve()), source_filesystem=fs)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m controller.launch_fetch SRC DEST\n")
        return 2
    try:
        fetch(argv[0], Path(argv[1]))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"cannot fetch {argv[0]}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
