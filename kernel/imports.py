"""Heavy imports without the cyclic garbage collector running through them.

Importing MLflow or Evidently creates hundreds of thousands of objects, nearly all of
which live until the process exits; the collector's generation-2 passes walk them again
and again while they are created (about a fifth of MLflow's import time here). Pausing
the collector for the import and then freezing (``gc.freeze``: later passes skip the
frozen objects) is the remedy CPython documents for this case. The freeze takes every
object alive at that moment, not only the import's, and a frozen object that later becomes
cyclic garbage is never collected: use it in short-lived processes (a CLI command, the
report's child), not in servers. Cycles made afterwards are collected as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block (a burst of imports) with the collector off; freeze what it made."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
