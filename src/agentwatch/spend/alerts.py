"""Budget alerts: when a budget's spend crosses its soft threshold, 80 % or 100 % of its
amount, say so once per threshold and period: a log line, and a POST to the organisation's
webhook signed with HMAC-SHA256. The `budget_alerts` table's unique key makes "once" hold
across replicas: the replica whose insert wins sends it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence

import orjson
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.crypto import DecryptionError, Keys, decrypt_secret
from agentwatch.db.models import BudgetAlert
from agentwatch.http_client import HttpClient, HttpClientError
from agentwatch.limits.types import LimitStore
from agentwatch.spend.book import Webhook
from agentwatch.spend.gate import BudgetHold

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "x-agentwatch-signature"


def thresholds(hold: BudgetHold) -> list[tuple[str, float]]:
    """(name, share of the amount) in ascending order: soft (if set), 80, 100."""
    marks = [("80", 0.8), ("100", 1.0)]
    if hold.spec.soft_pct is not None:
        marks.append(("soft", hold.spec.soft_pct / 100))
    return sorted(marks, key=lambda mark: mark[1])


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (timestamp: replay guard)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class BudgetAlerts:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: Keys,
        http: HttpClient,
        on_spent: Callable[[str, int, str, float], None] | None = None,
    ) -> None:
        """`on_spent(scope, id, period, remaining_usd)`: told each budget's standing (metrics)."""
        self._sessions = sessions
        self._keys = keys
        self._http = http
        self._on_spent = on_spent
        self._sent: set[tuple[str, str]] = set()  # (budget key, threshold) done here
        self._tasks: set[asyncio.Task[None]] = set()

    def check_soon(
        self,
        store: LimitStore,
        org_id: int,
        holds: Sequence[BudgetHold],
        webhook: Webhook | None,
    ) -> None:
        """Check in the background: never on the answer's path."""
        pending = [h for h in holds if any((h.key, t) not in self._sent for t, _ in thresholds(h))]
        if not pending and self._on_spent is None:
            return
        pending = list(holds) if self._on_spent is not None else pending
        task = asyncio.create_task(self._check(store, org_id, pending, webhook))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the checks and deliveries under way (at shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _check(
        self,
        store: LimitStore,
        org_id: int,
        holds: Sequence[BudgetHold],
        webhook: Webhook | None,
    ) -> None:
        for hold in holds:
            try:
                spent = await store.spent(hold.key)
            except Exception:  # the store is away: the next settle checks again
                log.exception("cannot read the spend of %s for alerts", hold.key)
                continue
            if spent is None:
                continue
            limit = hold.spec.limit_nanousd
            if self._on_spent is not None:
                self._on_spent(hold.scope, hold.entity, hold.spec.period, (limit - spent) / 1e9)
            for name, share in thresholds(hold):
                if spent < share * limit or (hold.key, name) in self._sent:
                    continue
                self._sent.add((hold.key, name))
                if await self._claim(org_id, hold, name, spent):
                    await self._announce(org_id, hold, name, spent, webhook)

    async def _claim(self, org_id: int, hold: BudgetHold, name: str, spent: int) -> bool:
        """True for the one replica whose row went in first."""
        try:
            async with self._sessions.begin() as session:
                session.add(
                    BudgetAlert(
                        org_id=org_id,
                        scope=hold.scope,
                        scope_id=hold.entity,
                        period_start=hold.period_start,
                        threshold=name,
                        spent_nanousd=spent,
                        limit_nanousd=hold.spec.limit_nanousd,
                    )
                )
        except IntegrityError:
            return False
        except SQLAlchemyError:
            # Without the database nobody can claim it: say it here rather than not at all.
            log.exception("could not record a budget alert; announcing it anyway")
        return True

    async def _announce(
        self, org_id: int, hold: BudgetHold, name: str, spent: int, webhook: Webhook | None
    ) -> None:
        event = {
            "type": "budget.threshold_crossed",
            "org_id": org_id,
            "scope": hold.scope,
            "scope_id": hold.entity,
            "threshold": name,
            "threshold_pct": round(dict(thresholds(hold))[name] * 100, 2),
            "spent_usd": spent / 1e9,
            "amount_usd": hold.spec.amount_usd,
            "hard": hold.spec.hard,
            "period": hold.spec.period,
            "period_start": hold.period_start.isoformat(),
            "period_end": hold.period_end.isoformat(),
        }
        log.warning(
            "budget alert: %s %s crossed %s (%.4f of %.4f USD this %s period)",
            hold.scope,
            hold.entity,
            name,
            spent / 1e9,
            hold.spec.amount_usd,
            hold.spec.period,
        )
        if webhook is not None:
            await self._deliver(webhook, orjson.dumps(event))

    async def _deliver(self, webhook: Webhook, body: bytes) -> None:
        secret = None
        if webhook.secret is not None:
            try:
                secret = decrypt_secret(webhook.secret, self._keys)
            except DecryptionError:
                log.error("the alert webhook secret cannot be decrypted; sending unsigned")
        headers = {"content-type": "application/json", "user-agent": "agentwatch-alerts"}
        if secret is not None:
            stamp = str(int(time.time()))
            headers["x-agentwatch-timestamp"] = stamp
            headers[SIGNATURE_HEADER] = sign(secret, stamp, body)
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                response = await self._http.request(
                    "POST",
                    webhook.url,
                    headers=headers,
                    body=body,
                    read_timeout=WEBHOOK_TIMEOUT_SECONDS,
                    connect_timeout=WEBHOOK_TIMEOUT_SECONDS,
                )
                await response.read()
                response.release()
                if response.status < 300:
                    return
                log.warning("alert webhook answered %d (attempt %d)", response.status, attempt + 1)
            except (HttpClientError, OSError, TimeoutError) as exc:
                log.warning("alert webhook failed (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(0.5 * 2**attempt)
        log.error("alert webhook gave up after %d attempts", WEBHOOK_ATTEMPTS)
