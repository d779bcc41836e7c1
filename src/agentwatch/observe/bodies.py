"""Request and answer bodies in the request log, for organisations that ask for them:
`organizations.settings` `{"log_bodies": true, "log_retention_days": 30}`. What is stored is
what left the gateway after DLP (a blocked call stores nothing), and it is deleted once older
than the retention."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.db.models import Conversation, Organization
from agentwatch.dlp.inspect import REQUEST_FIELDS, Inspection, TextSlot, text_slots

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650
RETENTION_SWEEP_SECONDS = 3600.0
MAX_STORED_CHARS = 1_000_000  # per call: a longer answer is cut, and says so


class BodyLogging(BaseModel):
    """The two `organizations.settings` keys that turn body logging on."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    log_bodies: bool = False
    log_retention_days: int = Field(DEFAULT_RETENTION_DAYS, ge=1, le=MAX_RETENTION_DAYS)


async def load_body_logging(session: AsyncSession) -> dict[int, BodyLogging]:
    """Organisations that log bodies (the rest do not)."""
    found: dict[int, BodyLogging] = {}
    for org_id, settings in await session.execute(select(Organization.id, Organization.settings)):
        if not isinstance(settings, dict) or not settings.get("log_bodies"):
            continue
        try:
            found[org_id] = BodyLogging.model_validate(settings)
        except ValidationError as exc:
            log.warning("organisation %s: invalid body-logging settings: %s", org_id, exc)
    return found


def logged_messages(
    endpoint: str,
    payload: dict[str, Any] | None,
    answer: str | None,
) -> list[dict[str, object]]:
    """The request's text fields (already redacted in place by DLP) and the answer."""
    messages: list[dict[str, object]] = []
    if payload is not None:
        fields = {
            name: payload[name] for name in REQUEST_FIELDS.get(endpoint, ()) if name in payload
        }
        messages.append({"role": "request", "content": _bounded(fields)})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer[:MAX_STORED_CHARS]})
    return messages


def answer_text(body: bytes) -> str | None:
    """The text strings of a JSON answer, joined (ids, enums and usage left out)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return "\n".join(slot.text for slot in text_slots(document))


def redacted(text: str, inspection: Inspection | None) -> str:
    """A streamed answer's text as DLP would have let it out (the stream guard redacted the
    events the client got; this is the upstream's text, so it is redacted again here)."""
    if inspection is None or not text:
        return text
    holder = {"text": text}
    blocking = inspection.inspect([TextSlot(holder, "text", ("text",), text)], "log", record=False)
    return "" if blocking else holder["text"]


def _bounded(value: object) -> object:
    if len(orjson.dumps(value)) <= MAX_STORED_CHARS:
        return value
    return {"truncated": True}


async def delete_expired(
    sessions: async_sessionmaker[AsyncSession], orgs: dict[int, BodyLogging], now: datetime
) -> int:
    """Delete each logging organisation's rows older than its retention; rows deleted."""
    deleted = 0
    async with sessions.begin() as session:
        for org_id, settings in orgs.items():
            cutoff = now - timedelta(days=settings.log_retention_days)
            result = await session.execute(
                delete(Conversation).where(
                    Conversation.org_id == org_id, Conversation.created_at < cutoff
                )
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted


async def retention_forever(state: Any, interval: float = RETENTION_SWEEP_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await delete_expired(state.sessions, state.body_logging, datetime.now(UTC))
            if removed:
                log.info("request log retention removed %d rows", removed)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("request log retention skipped: %s", exc)
