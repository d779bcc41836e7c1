"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from agentwatch.db.engine import create_engine
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import Base
from agentwatch.settings import normalise_database_url
from tests.conftest import BACKENDS
from tests.support import database


async def schema_differences(url: str) -> list[object]:
    engine = create_engine(normalise_database_url(url))
    try:
        await upgrade_database(engine)

        def differences(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        async with engine.connect() as connection:
            return await connection.run_sync(differences)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_match_the_models(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        assert asyncio.run(schema_differences(url)) == []
