"""Anthropic's error bodies and stream error events, as the gateway errors clients and routing
understand. Pure: no I/O."""

from __future__ import annotations

import orjson

from agentwatch.errors import (
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.providers.base import JSONObject


def error_from_response(
    provider: str, status: int, body: bytes, retry_after: str | None
) -> UpstreamError:
    """An Anthropic HTTP error (`{"type": "error", "error": {"type", "message"}}`) as the
    gateway error clients and routing understand."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    kind, message = _error_fields(parsed)
    if message is None:
        message = body.decode(errors="replace").strip()[:500] or f"HTTP {status}"
    text = f"upstream provider '{provider}' returned {status}: {message}"
    return _mapped_error(kind, status, message, text, retry_after)


def error_from_event(provider: str, event: JSONObject) -> UpstreamError:
    """An `error` event sent after the stream began: no HTTP status, only the error type."""
    kind, message = _error_fields(event)
    text = f"upstream provider '{provider}' failed mid-stream: {message or kind or 'error'}"
    return _mapped_error(kind, None, message or "", text, None)


def _error_fields(parsed: object) -> tuple[str | None, str | None]:
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, message = error.get("type"), error.get("message")
    return (
        kind if isinstance(kind, str) else None,
        message if isinstance(message, str) else None,
    )


def _mapped_error(
    kind: str | None, status: int | None, message: str, text: str, retry_after: str | None
) -> UpstreamError:
    if kind == "overloaded_error" or status == 529:
        return UpstreamOverloaded(text)
    if kind == "rate_limit_error" or status == 429:
        return UpstreamRateLimited(
            text, headers={"retry-after": retry_after} if retry_after else {}
        )
    if kind in ("authentication_error", "permission_error") or status in (401, 403):
        # The provider refused the gateway's credential: the client's own key is fine.
        return UpstreamError(text, code="upstream_auth_failed")
    if kind == "billing_error" or status == 402:
        return UpstreamError(text, code="upstream_billing_failed")
    if kind == "not_found_error" or status == 404:
        return UpstreamRejected(text, status=404)
    if kind == "request_too_large" or status == 413:
        return UpstreamRejected(text, code="request_too_large")
    if kind == "invalid_request_error" or status == 400:
        lowered = message.lower()
        too_long = "prompt is too long" in lowered or "context" in lowered
        return UpstreamRejected(text, code="context_length_exceeded" if too_long else None)
    if kind == "timeout_error" or status == 504:
        return UpstreamTimeout(text)
    return UpstreamError(text)
