"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from agentwatch.db.engine import create_engine
from agentwatch.db.migrate import alembic_config, upgrade_database
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


async def dlp_round_trip(url: str) -> tuple[list[object], list[object], list[object]]:
    """0004 with a conversation and an organisation in it, up to head, down to 0004, up again:
    (the old rows as head sees them, the org after the downgrade, schema differences)."""
    engine = create_engine(normalise_database_url(url))

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")

    try:
        await upgrade_database(engine, "0004")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO organizations (id, name, settings, created_at) "
                    "VALUES (7, 'old', '{}', CURRENT_TIMESTAMP)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO conversations (org_id, request_id, messages, dlp_events, "
                    "risk_score, created_at) VALUES (7, 'req-1', '[]', '[]', 0.5, "
                    "CURRENT_TIMESTAMP)"
                )
            )
        await upgrade_database(engine)
        async with engine.connect() as connection:
            upgraded = list(
                (
                    await connection.execute(
                        text(
                            "SELECT o.dlp_policy IS NULL, c.api_key_id, c.team_id, c.model, "
                            "c.endpoint, c.status, c.dlp_action, c.risk_score FROM conversations c "
                            "JOIN organizations o ON o.id = c.org_id"
                        )
                    )
                ).one()
            )
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
        async with engine.connect() as connection:
            kept = list(
                (await connection.execute(text("SELECT id, name FROM organizations"))).one()
            )
        return upgraded, kept, await schema_differences(url)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dlp_migration_keeps_rows_and_downgrades(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        upgraded, kept, differences = asyncio.run(dlp_round_trip(url))
    assert upgraded == [True, None, None, "", "", 200, None, 0.5]
    assert kept == [7, "old"]
    assert differences == []
