"""Alembic's environment: migrations run on the connection the store hands over in
``config.attributes["connection"]``, inside the transaction the store opened (which holds
the schema lock), so Alembic neither connects nor commits by itself."""

from __future__ import annotations

from alembic import context

from controller.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("controller migrations run through Store.migrate(), which passes its "
                       "connection in config.attributes['connection']")
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
