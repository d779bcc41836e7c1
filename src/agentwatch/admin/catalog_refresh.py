"""The admin API's writes reach this process's routing table at once."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from agentwatch.admin.deps import AdminContext
from agentwatch.catalog import load_catalog
from agentwatch.crypto import Keyring

log = logging.getLogger(__name__)


async def refresh_routing_table(ctx: AdminContext) -> None:
    """Rebuild this process's routing table after a committed write, as the app's background
    refresh does every 10 s (which is how other replicas and a failure here catch up)."""
    state = ctx.state
    try:
        async with state.sessions() as session:
            keyring = Keyring.from_settings(state.settings)
            state.catalog = await load_catalog(session, keyring, state.upstream)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("routing table not refreshed after an admin write, retried in 10 s: %s", exc)
