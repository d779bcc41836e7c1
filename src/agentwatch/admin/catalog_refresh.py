"""The admin API's writes reach this process's routing table and DLP policies at once."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from agentwatch.admin.deps import AdminContext

log = logging.getLogger(__name__)


async def refresh_routing_table(ctx: AdminContext) -> None:
    """Rebuild this process's routing table (and the DLP policies loaded with it) after a
    committed write, as the app's background refresh does every 10 s (which is how other
    replicas and a failure here catch up)."""
    try:
        await ctx.state.reload_catalog()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("routing table not refreshed after an admin write, retried in 10 s: %s", exc)
