"""One access-log line per `/v1` call, written when the call ends.

Built from the call's bookkeeping and its ledger row, never from the request or answer bodies,
so no prompt text or key material can reach the log. A line is one `os.write` of bytes built
with orjson: no logging records, handlers or locks on the hot path (see docs/observability.md
for the measured cost).
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import orjson

if TYPE_CHECKING:
    from agentwatch.proxy.call import Call
    from agentwatch.usage.recorder import UsageEvent

LogFormat = Literal["json", "text"]
NANOUSD_PER_USD = 1_000_000_000
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')
MAX_MODEL_CHARS = 200  # the model name is the client's string: keep a line a line


class AccessLog:
    """Writes the lines to a file descriptor (stdout by default), JSON or `key=value` text."""

    def __init__(self, log_format: LogFormat = "json", fd: int = 1) -> None:
        self._fd = fd
        self._render = _json_line if log_format == "json" else _text_line

    def write(self, fields: dict[str, object]) -> None:
        try:
            os.write(self._fd, self._render(fields))
        except OSError:
            # A closed or full stdout must not fail the call it describes; the ledger row
            # holds the same facts.
            return


def request_fields(call: Call, event: UsageEvent | None) -> dict[str, object]:
    """The line's fields. `event` (the ledger row) is None when no caller was identified."""
    fields: dict[str, object] = {
        "ts": datetime.now(UTC),
        "event": "request",
        "request_id": call.request_id,
        "endpoint": call.endpoint,
        "status": call.status,
        "error_type": call.error_type,
        "stream": call.stream,
        "model": call.model[:MAX_MODEL_CHARS] or None,
    }
    if event is None:
        fields["latency_ms"] = round((time.perf_counter() - call.started) * 1000, 3)
        return fields
    cost = event.cost_nanousd
    fields.update(
        org_id=event.org_id,
        tenant_id=event.tenant_id,
        api_key_id=event.api_key_id,
        provider=event.provider,
        upstream_model=event.upstream_model,
        latency_ms=event.latency_ms,
        ttft_ms=event.ttft_ms,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens,
        reasoning_tokens=event.reasoning_tokens,
        cost_usd=None if cost is None else cost / NANOUSD_PER_USD,
        attempts=event.attempts,
    )
    if call.dlp is not None and call.dlp.events:
        fields["dlp_action"] = call.dlp.strongest_action
        fields["dlp_findings"] = len(call.dlp.events)
    return fields


def _json_line(fields: dict[str, object]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)


def _text_line(fields: dict[str, object]) -> bytes:
    """logfmt: `key=value` pairs, values with spaces, quotes or `=` JSON-quoted."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if value is True or value is False:
            text = "true" if value else "false"
        elif isinstance(value, datetime):
            text = value.isoformat()
        else:
            text = str(value)
        if not text or _NEEDS_QUOTES.search(text) is not None:
            text = orjson.dumps(text).decode()
        parts.append(f"{key}={text}")
    return (" ".join(parts) + "\n").encode()
