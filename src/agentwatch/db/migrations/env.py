"""Alembic environment: migrations run on a connection handed in by agentwatch.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from agentwatch.db.models import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `agentwatch db upgrade`")
run_migrations(connection)
