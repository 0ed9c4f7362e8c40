"""Alembic migrations of the controller's state store (``controller.store``).

``upgrade(connection)`` brings a database to the newest revision through Alembic's API, on
the connection and inside the transaction the store opened (``Store.migrate()``, at
start-up); nobody runs a CLI. A database made by the release before migrations (its tables,
no revision table) is stamped at the baseline first, then upgraded.

To add a revision: a module in ``versions/`` whose ``down_revision`` is the current head
(``alembic revision`` with ``script_location`` pointing here renders ``script.py.mako``), and
the same change to ``controller/store.py``'s tables, which
``tests/integration/test_controller_migrations.py`` holds equal to the migrated schema.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from kernel.errors import DriftloopError

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"   # the schema the release before migrations made with create_all
# Not Alembic's default "alembic_version": MLflow keeps its own revision there, and the two
# may share one database (they did before migrations, with distinct table names).
VERSION_TABLE = "controller_alembic_version"
BASELINE_TABLES = frozenset({"model_state", "notifications", "triggers", "cycles", "decisions",
                             "leases"})


class SchemaError(DriftloopError):
    """The store's schema is one this release cannot bring to its head (newer, or partial)."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for these migrations, for the API (``alembic.command``); with a
    connection, env.py runs on it."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    revision = _script().get_current_head()
    assert revision is not None, "the migrations have one head"
    return revision


def current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}
                                      ).get_current_revision()


def upgrade(connection: sa.Connection) -> str | None:
    """Migrate to head on ``connection`` (already in a transaction; the caller commits and
    holds whatever lock keeps replicas apart). Returns the revision it started from (None:
    an empty database)."""
    found = current(connection)
    if found == head():
        return found
    if found is not None and found not in {s.revision for s in _script().walk_revisions()}:
        raise SchemaError(f"the controller's database is at schema revision {found}, which this "
                          f"release does not know (its newest is {head()}): it was migrated by a "
                          "newer driftloop; run that release, or restore a backup")
    config = alembic_config(connection)
    if found is None:
        tables = set(sa.inspect(connection).get_table_names()) & BASELINE_TABLES
        if tables == BASELINE_TABLES:
            log.info("controller database made before migrations: stamping it at %s", BASELINE)
            command.stamp(config, BASELINE)
        elif tables:
            raise SchemaError("the controller's database has some of its tables but not all "
                              f"(missing: {', '.join(sorted(BASELINE_TABLES - tables))}) and no "
                              f"{VERSION_TABLE}: not a schema any release made")
    log.info("controller database: schema %s -> %s", found or "none", head())
    command.upgrade(config, "head")
    return found
